//! The Gemini API as Gemini CLI 0.61 calls it (`GOOGLE_GEMINI_BASE_URL` + `GEMINI_API_KEY`):
//!
//! - `POST /v1beta/models/<model>:streamGenerateContent?alt=sse`: the turn itself. Answered as
//!   server-sent events, each `data:` a `GenerateContentResponse` chunk
//!   (`candidates[0].content.parts`): a thought part, then the text with `finishReason: STOP`
//!   and `usageMetadata`. A prompt containing `USE-TOOL` (and not yet answered by a function
//!   response) gets a thought and a `list_directory` call instead, the way the fixtures in
//!   `tests/fixtures/agents/gemini` were made.
//! - `POST /v1beta/models/<model>:generateContent`: the CLI's side calls, made before each turn
//!   (the model router's classifier) and for summaries or next-speaker checks. A call asking
//!   for JSON (`responseMimeType: application/json`) gets an object with every property of its
//!   `responseJsonSchema` / `responseSchema` filled (strings `"stand-in"`, numbers 1, booleans
//!   false, `next_speaker` `"user"`); any other gets the text.
//! - `POST …:countTokens`: a token count (not called by 0.61 in these runs).
//!
//! Nothing else is called when usage statistics, telemetry and auto-update are off (checked
//! with `strace -e connect`: the only connections go to the stand-in).

use serde_json::{json, Value};

use super::{Recorded, Reply};

pub fn reply(request: &Recorded, text: &str) -> Reply {
    let path = request.path.as_str();
    let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
    let model = path
        .split("/models/")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or("gemini-2.5-pro")
        .to_string();
    let usage = json!({"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17});
    if path.contains(":countTokens") {
        return Reply::json(json!({"totalTokens": 12}));
    }
    if path.contains(":streamGenerateContent") {
        if wants_tool(&body) {
            return Reply::sse(&[
                (
                    None,
                    json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [
                        {"text": "**Listing** I will list the directory.", "thought": true}]}}],
                        "modelVersion": model}),
                ),
                (
                    None,
                    json!({"candidates": [{"index": 0, "finishReason": "STOP",
                        "content": {"role": "model", "parts": [
                            {"functionCall": {"name": "list_directory", "args": {"dir_path": "."}}}]}}],
                        "usageMetadata": usage, "modelVersion": model}),
                ),
            ]);
        }
        let (head, tail) = text.split_at(text.char_indices().nth(5).map_or(0, |(i, _)| i));
        return Reply::sse(&[
            (
                None,
                json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [
                    {"text": "**Answering** Thinking about it.", "thought": true}]}}],
                    "modelVersion": model}),
            ),
            (
                None,
                json!({"candidates": [{"index": 0, "content": {"role": "model",
                    "parts": [{"text": head}]}}], "modelVersion": model}),
            ),
            (
                None,
                json!({"candidates": [{"index": 0, "finishReason": "STOP",
                    "content": {"role": "model", "parts": [{"text": tail}]}}],
                    "usageMetadata": usage, "modelVersion": model}),
            ),
        ]);
    }
    if path.contains(":generateContent") {
        let config = &body["generationConfig"];
        let answer = if config["responseMimeType"] == "application/json" {
            let schema = if config["responseJsonSchema"].is_object() {
                &config["responseJsonSchema"]
            } else {
                &config["responseSchema"]
            };
            fill(schema).to_string()
        } else {
            text.to_string()
        };
        return Reply::json(json!({
            "candidates": [{"index": 0, "finishReason": "STOP",
                "content": {"role": "model", "parts": [{"text": answer}]}}],
            "usageMetadata": usage, "modelVersion": model,
        }));
    }
    Reply::not_found(path)
}

/// The last user turn asks for a tool and is not a function response.
fn wants_tool(body: &Value) -> bool {
    let Some(last) = body["contents"].as_array().and_then(|c| c.last()) else {
        return false;
    };
    let parts = last["parts"].as_array().cloned().unwrap_or_default();
    !parts.iter().any(|p| p.get("functionResponse").is_some())
        && parts
            .iter()
            .any(|p| p["text"].as_str().is_some_and(|t| t.contains("USE-TOOL")))
}

/// A value of a (Gemini or JSON) schema with every property filled.
fn fill(schema: &Value) -> Value {
    let kind = schema["type"]
        .as_str()
        .unwrap_or("object")
        .to_ascii_lowercase();
    match kind.as_str() {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    let value = if name == "next_speaker" {
                        json!("user")
                    } else {
                        fill(property)
                    };
                    out.insert(name.clone(), value);
                }
            }
            Value::Object(out)
        }
        "array" => json!([]),
        "integer" | "number" => json!(1),
        "boolean" => json!(false),
        _ => match schema["enum"].as_array().and_then(|e| e.first()) {
            Some(first) => first.clone(),
            None => json!("stand-in"),
        },
    }
}
