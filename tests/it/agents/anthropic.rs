//! The Anthropic Messages API as Claude Code calls it: `POST /v1/messages` with `stream: true`
//! answered by the SSE events message_start, content_block_start/delta/stop, message_delta,
//! message_stop; a non-streaming call gets the whole message as JSON.

use serde_json::json;

use super::{Recorded, Reply};

pub fn reply(request: &Recorded, text: &str) -> Reply {
    if request.path.contains("count_tokens") {
        return Reply::json(json!({"input_tokens": 42}));
    }
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap_or_default();
    let model = body["model"]
        .as_str()
        .unwrap_or("claude-sonnet-4-5")
        .to_string();
    let id = format!("msg_standin_{:x}", request.body.len());
    let usage = json!({"input_tokens": 120, "output_tokens": 7,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    if body["stream"].as_bool() != Some(true) {
        return Reply::json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": usage,
        }));
    }
    Reply::sse(&[
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 120, "output_tokens": 1,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 7}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ])
}
