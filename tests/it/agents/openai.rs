//! The OpenAI Responses API as Codex 0.171 calls it through a `model_providers.<name>` entry
//! with `wire_api = "responses"` (SPEC.md §17).
//!
//! - `POST <base_url>/responses` (`/v1/responses`): a plain JSON body with `stream: true`
//!   (observed: 0.171 sends no `content-encoding` to a custom provider, although its
//!   `enable_request_compression` feature is on; it sends `accept-encoding: zstd,gzip` and takes
//!   an identity answer), answered with server-sent events. Codex 0.171 accepts a turn from `response.created`,
//!   `response.output_item.added`, `response.output_text.delta`, `response.output_item.done` (the
//!   finished assistant message, which is what it records) and `response.completed` with
//!   `usage` (which ends the turn and feeds its `token_count`).
//! - `GET <base_url>/models`: an empty list, for a CLI that asks which models exist (0.171 does
//!   not with the config the tests write, but answering costs nothing).

use serde_json::{json, Value};

use super::{Recorded, Reply};

pub fn reply(request: &Recorded, text: &str) -> Reply {
    let path = request.path.split('?').next().unwrap_or("");
    if request.method == "POST" && path.ends_with("/responses") {
        return responses(request, text);
    }
    if request.method == "GET" && path.ends_with("/models") {
        return Reply::json(json!({"object": "list", "data": [], "models": []}));
    }
    Reply::not_found(&request.path)
}

/// One streamed assistant message saying `text`.
fn responses(request: &Recorded, text: &str) -> Reply {
    let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("stand-in")
        .to_string();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let response_id = format!("resp_standin_{stamp}");
    let item_id = format!("msg_standin_{stamp}");
    let created = (stamp / 1_000_000_000) as u64;
    let message = |status: &str, content: Value| {
        json!({"type": "message", "id": item_id, "role": "assistant", "status": status,
               "content": content})
    };
    let done = message(
        "completed",
        json!([{"type": "output_text", "text": text, "annotations": []}]),
    );
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": response_id, "object": "response", "created_at": created,
               "status": status, "model": model, "output": output, "usage": usage})
    };
    let usage = json!({
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 105,
    });
    Reply::sse(&[
        (
            Some("response.created"),
            json!({"type": "response.created", "sequence_number": 0,
                   "response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            Some("response.output_item.added"),
            json!({"type": "response.output_item.added", "sequence_number": 1,
                   "output_index": 0, "item": message("in_progress", json!([]))}),
        ),
        (
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta", "sequence_number": 2,
                   "item_id": item_id, "output_index": 0, "content_index": 0, "delta": text}),
        ),
        (
            Some("response.output_item.done"),
            json!({"type": "response.output_item.done", "sequence_number": 3,
                   "output_index": 0, "item": done.clone()}),
        ),
        (
            Some("response.completed"),
            json!({"type": "response.completed", "sequence_number": 4,
                   "response": response("completed", json!([done]), usage)}),
        ),
    ])
}
