//! Import of a plain `{"messages": [...]}` JSON file: the request body of a chat API call, or a
//! conversation saved by hand or by a script.
//!
//! Owns: that file format, and the image / tool-result decoding helpers the tapes DB importer
//! reuses for the same kinds of blocks.
//!
//! Format decisions, and why:
//! - One file is one session, `source_kind` `"messages-json"`, `source_id` the canonicalized
//!   absolute path: the file has no id of its own, and the path is what stays the same when the
//!   same file is imported again (so re-import is idempotent, whatever the working directory).
//! - OpenAI and Anthropic shapes are not told apart per file: every message is read with the
//!   union of both vocabularies (string or array content; `text`, `image_url`, `image`,
//!   `tool_use`, `tool_result`, `thinking` parts; OpenAI `tool_calls` and `tool` messages).
//!   Files mix them in practice (proxies, hand edits), and the part types never collide.
//! - Roles are kept as the source gave them: an Anthropic `user` message holding `tool_result`
//!   blocks stays `user`, so resuming writes back exactly what the provider expects. An OpenAI
//!   `tool` message becomes a `tool` node with one `tool_result` block carrying `tool_call_id`.
//! - The top-level `model` is applied to assistant messages only (a per-message `model` wins):
//!   the node model is "who produced this message", and users and tools are not models.
//! - A top-level Anthropic `system` (string or text blocks) becomes a leading system message.
//! - A message that is not an object, has no or an unknown role, or has unusable content is
//!   skipped with a [`Warning`] whose `line` is the 1-based index of the message in `messages`
//!   (the file is one JSON document, so a line number would say little). An empty `messages`
//!   array yields no session and one warning with `line` 0 (it concerns the whole file).
//! - Part types tapes does not model are kept as [`ContentBlock::Other`] with their JSON, so
//!   nothing is lost and resume can write them back.

use std::path::Path;

use base64::Engine as _;
use serde_json::{Map, Value};
use tapes_protocol::{ContentBlock, ImageSource, NodeMeta, Role, ToolResultPart};

use super::{json_text, FileReport, ImportError, ParsedMessage, ParsedSession, Warning};

const SOURCE_KIND: &str = "messages-json";

pub fn parse(path: &Path, text: &str) -> Result<FileReport, ImportError> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| ImportError::malformed(path, e.line(), format!("invalid JSON: {e}")))?;
    let Some(list) = doc.get("messages").and_then(Value::as_array) else {
        return Err(ImportError::Unrecognized {
            path: path.to_path_buf(),
            why: "a JSON object without a `messages` array".into(),
        });
    };
    let default_model = doc.get("model").and_then(Value::as_str).unwrap_or("");

    let mut report = FileReport::default();
    let mut messages: Vec<ParsedMessage> = system_message(&doc).into_iter().collect();
    for (index, raw) in list.iter().enumerate() {
        match parse_message(raw, default_model) {
            Ok(message) => messages.push(message),
            Err(why) => report.warnings.push(Warning {
                line: index + 1,
                message: format!("message {}: {why}; skipped", index + 1),
            }),
        }
    }
    if list.is_empty() {
        report.warnings.push(Warning {
            line: 0,
            message: "`messages` is empty; nothing to import".into(),
        });
    }
    // A file whose messages were all skipped is not a session: storing an empty one would only
    // leave a confusing entry behind.
    if !messages.is_empty() {
        report.sessions.push(ParsedSession {
            source_kind: SOURCE_KIND,
            source_id: source_id(path),
            parent_source_id: None,
            title: doc.get("title").and_then(Value::as_str).map(str::to_owned),
            messages,
        });
    }
    Ok(report)
}

/// The canonical absolute path, falling back to a merely absolute one (and then to the path as
/// given) so an unusual filesystem degrades idempotence instead of failing the import.
fn source_id(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    absolute.to_string_lossy().into_owned()
}

/// The Anthropic top-level `system` prompt as a leading system message.
fn system_message(doc: &Value) -> Option<ParsedMessage> {
    let blocks = match doc.get("system")? {
        Value::String(s) if !s.is_empty() => vec![ContentBlock::text(s.as_str())],
        Value::Array(parts) => parts.iter().map(part_block).collect(),
        _ => return None,
    };
    if blocks.is_empty() {
        return None;
    }
    Some(message(Role::System, String::new(), blocks))
}

fn message(role: Role, model: String, blocks: Vec<ContentBlock>) -> ParsedMessage {
    ParsedMessage {
        role,
        model,
        blocks,
        meta: NodeMeta::default(),
    }
}

/// One entry of `messages`, or why it was skipped.
fn parse_message(raw: &Value, default_model: &str) -> Result<ParsedMessage, String> {
    let obj = raw.as_object().ok_or("not a JSON object")?;
    let role_name = obj.get("role").and_then(Value::as_str).ok_or("no `role`")?;
    let role = Role::parse(role_name).ok_or_else(|| format!("unknown role `{role_name}`"))?;

    let mut blocks = reasoning_blocks(obj);
    blocks.extend(content_blocks(obj.get("content"))?);
    blocks.extend(tool_call_blocks(obj));
    if role == Role::Tool {
        blocks = wrap_tool_output(obj, blocks);
    }

    let model = match role {
        Role::Assistant => obj
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(default_model)
            .to_owned(),
        _ => String::new(),
    };
    Ok(message(role, model, blocks))
}

/// OpenAI-compatible servers (DeepSeek, vLLM, OpenRouter) put chain of thought next to the
/// content instead of in a block; it is thinking all the same.
fn reasoning_blocks(obj: &Map<String, Value>) -> Vec<ContentBlock> {
    ["reasoning_content", "reasoning"]
        .iter()
        .filter_map(|key| obj.get(*key).and_then(Value::as_str))
        .filter(|text| !text.is_empty())
        .map(|text| ContentBlock::Thinking {
            text: text.to_owned(),
            signature: None,
        })
        .take(1)
        .collect()
}

/// `content` in any of its shapes. Only a scalar other than a string is unusable.
fn content_blocks(content: Option<&Value>) -> Result<Vec<ContentBlock>, String> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        // An empty string is what OpenAI sends next to tool calls: no text at all, not an empty
        // paragraph.
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![ContentBlock::text(s.as_str())]),
        Some(Value::Array(parts)) => Ok(parts.iter().map(part_block).collect()),
        Some(part @ Value::Object(_)) => Ok(vec![part_block(part)]),
        Some(_) => Err("`content` is neither a string nor an array".into()),
    }
}

/// One content part, OpenAI or Anthropic.
fn part_block(part: &Value) -> ContentBlock {
    let Some(obj) = part.as_object() else {
        return match part {
            Value::String(s) => ContentBlock::text(s.as_str()),
            other => other_block("", other),
        };
    };
    let kind = str_field(obj, "type");
    let block = match kind {
        "text" | "input_text" | "output_text" => Some(ContentBlock::text(str_field(obj, "text"))),
        "thinking" => Some(ContentBlock::Thinking {
            text: str_field(obj, "thinking").to_owned(),
            signature: obj
                .get("signature")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }),
        "tool_use" => Some(ContentBlock::ToolUse {
            id: str_field(obj, "id").to_owned(),
            name: str_field(obj, "name").to_owned(),
            input: tool_input(obj.get("input")),
        }),
        "tool_result" => Some(ContentBlock::ToolResult {
            tool_use_id: str_field(obj, "tool_use_id").to_owned(),
            is_error: obj
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            content: obj
                .get("content")
                .map(tool_result_parts)
                .unwrap_or_default(),
        }),
        "image" | "image_url" | "input_image" => {
            image_part(obj).map(|(media_type, source)| ContentBlock::Image { media_type, source })
        }
        _ => None,
    };
    block.unwrap_or_else(|| other_block(kind, part))
}

/// A tool input as JSON text; a missing input is the empty object the tool was called with.
fn tool_input(input: Option<&Value>) -> String {
    match input {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(value) => json_text(value),
    }
}

/// OpenAI `tool_calls` (and the legacy single `function_call`) as tool-use blocks.
fn tool_call_blocks(obj: &Map<String, Value>) -> Vec<ContentBlock> {
    let calls = obj
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let legacy = obj.get("function_call").filter(|v| v.is_object());
    calls.iter().chain(legacy).map(tool_call_block).collect()
}

fn tool_call_block(call: &Value) -> ContentBlock {
    let Some(obj) = call.as_object() else {
        return other_block("tool_call", call);
    };
    // `tool_calls[i]` nests name and arguments under `function`; `function_call` does not.
    let function = obj
        .get("function")
        .and_then(Value::as_object)
        .unwrap_or(obj);
    let Some(name) = function.get("name").and_then(Value::as_str) else {
        return other_block("tool_call", call);
    };
    ContentBlock::ToolUse {
        id: str_field(obj, "id").to_owned(),
        name: name.to_owned(),
        input: arguments(function),
    }
}

/// OpenAI sends arguments as a JSON string. Valid JSON is canonicalized like any tool input;
/// anything else is kept verbatim (the node encoding accepts non-JSON text).
fn arguments(function: &Map<String, Value>) -> String {
    match function.get("arguments") {
        Some(Value::String(s)) => {
            tapes_protocol::canonical_json::canonicalize(s).unwrap_or_else(|| s.clone())
        }
        other => tool_input(other),
    }
}

/// An OpenAI `tool` message: its content is the output of the call named by `tool_call_id`.
/// Anthropic-style content that already holds `tool_result` blocks is left as it is.
fn wrap_tool_output(obj: &Map<String, Value>, blocks: Vec<ContentBlock>) -> Vec<ContentBlock> {
    if blocks
        .iter()
        .any(|b| matches!(b, ContentBlock::ToolResult { .. }))
    {
        return blocks;
    }
    // Legacy `function` messages carry only the function's name; it is the best link left.
    let id = obj
        .get("tool_call_id")
        .or_else(|| obj.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let content = blocks.into_iter().map(result_part).collect();
    vec![ContentBlock::ToolResult {
        tool_use_id: id.to_owned(),
        is_error: false,
        content,
    }]
}

/// A content block as a tool-result part: text and images map directly, anything else keeps
/// its JSON as text so the output is not lost.
fn result_part(block: ContentBlock) -> ToolResultPart {
    match block {
        ContentBlock::Text { text } | ContentBlock::Thinking { text, .. } => {
            ToolResultPart::Text { text }
        }
        ContentBlock::Image { media_type, source } => ToolResultPart::Image { media_type, source },
        ContentBlock::Other { json, .. } => ToolResultPart::Text { text: json },
        other => ToolResultPart::Text {
            text: serde_json::to_string(&other).unwrap_or_default(),
        },
    }
}

/// A tool result's `content`: a string, or an array of text / image parts.
pub(super) fn tool_result_parts(content: &Value) -> Vec<ToolResultPart> {
    match content {
        Value::Null => Vec::new(),
        Value::String(s) => vec![ToolResultPart::Text { text: s.clone() }],
        Value::Array(parts) => parts
            .iter()
            .map(|part| result_part(part_block(part)))
            .collect(),
        other => vec![ToolResultPart::Text {
            text: json_text(other),
        }],
    }
}

/// An Anthropic `image` (`source` base64 / url / file) or OpenAI `image_url` part, as media
/// type and source. `None` when it names no image tapes can hold (the caller keeps the JSON).
fn image_part(obj: &Map<String, Value>) -> Option<(String, ImageSource)> {
    if let Some(image_url) = obj.get("image_url") {
        let url = image_url
            .as_str()
            .or_else(|| image_url.get("url").and_then(Value::as_str))?;
        return Some(image_from_url(url, ""));
    }
    let source = obj.get("source")?.as_object()?;
    let media_type = str_field(source, "media_type");
    match str_field(source, "type") {
        "base64" => image_from_base64(media_type, str_field(source, "data")),
        "url" => Some(image_from_url(str_field(source, "url"), media_type)),
        "file" => Some((
            media_type.to_owned(),
            ImageSource::Reference {
                uri: str_field(source, "file_id").to_owned(),
            },
        )),
        _ => None,
    }
}

/// Decoded base64 image bytes; `None` when `data` is not base64, so the caller can keep the
/// original block as JSON instead of storing garbage bytes.
pub(super) fn image_from_base64(media_type: &str, data: &str) -> Option<(String, ImageSource)> {
    // Wrapped base64 (MIME style, 76 columns) is common in hand-saved files.
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()?;
    Some((media_type.to_owned(), ImageSource::Bytes { data: bytes }))
}

/// An image given by URL. A base64 `data:` URL is decoded so the image travels with the
/// session; any other URL (or an undecodable data URL) is kept as a reference, verbatim.
pub(super) fn image_from_url(url: &str, media_type: &str) -> (String, ImageSource) {
    if let Some((data_media_type, data)) = split_data_url(url) {
        if let Some(image) = image_from_base64(data_media_type, data) {
            return image;
        }
    }
    (
        media_type.to_owned(),
        ImageSource::Reference {
            uri: url.to_owned(),
        },
    )
}

/// `data:image/png;base64,AAAA` → (`image/png`, `AAAA`); `None` for anything not base64 data.
fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let media_type = header.strip_suffix(";base64")?;
    Some((media_type, data))
}

/// A part tapes does not model, kept whole.
pub(super) fn other_block(kind: &str, value: &Value) -> ContentBlock {
    let kind = if kind.is_empty() { "unknown" } else { kind };
    ContentBlock::Other {
        kind: kind.to_owned(),
        json: json_text(value),
    }
}

/// A string field, or "" when absent or not a string: absent text is empty text.
pub(super) fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(json: &str) -> (tempfile::TempDir, std::path::PathBuf, FileReport) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("conversation.json");
        std::fs::write(&path, json).expect("write");
        let report = parse(&path, json).expect("parse");
        (dir, path, report)
    }

    fn only_session(report: &FileReport) -> &ParsedSession {
        assert_eq!(report.sessions.len(), 1, "{report:#?}");
        &report.sessions[0]
    }

    #[test]
    fn openai_tool_calls_and_tool_message() {
        let json = r#"{
          "model": "gpt-4o",
          "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
              {"type": "text", "text": "what is in /tmp?"},
              {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
              {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{\"path\": \"/tmp\", \"all\": true}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb.txt"},
            {"role": "assistant", "content": "Two files."}
          ]
        }"#;
        let (_dir, path, report) = parse_str(json);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let session = only_session(&report);
        assert_eq!(session.source_kind, "messages-json");
        let canonical = std::fs::canonicalize(&path).expect("canonicalize");
        assert_eq!(session.source_id, canonical.to_string_lossy());

        let roles: Vec<Role> = session.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Assistant
            ]
        );
        let models: Vec<&str> = session.messages.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(models, ["", "", "gpt-4o", "", "gpt-4o"]);

        assert_eq!(
            session.messages[1].blocks,
            [
                ContentBlock::text("what is in /tmp?"),
                ContentBlock::Image {
                    media_type: "image/png".into(),
                    source: ImageSource::Bytes {
                        data: b"\x89PNG\r\n\x1a\n".to_vec()
                    },
                },
            ]
        );
        assert_eq!(
            session.messages[2].blocks,
            [ContentBlock::ToolUse {
                id: "call_1".into(),
                name: "ls".into(),
                input: r#"{"all":true,"path":"/tmp"}"#.into()
            }]
        );
        assert_eq!(
            session.messages[3].blocks,
            [ContentBlock::ToolResult {
                tool_use_id: "call_1".into(),
                is_error: false,
                content: vec![ToolResultPart::Text {
                    text: "a.txt\nb.txt".into()
                }],
            }]
        );
    }

    #[test]
    fn anthropic_blocks_and_top_level_system() {
        let json = r#"{
          "model": "claude-sonnet-4-5",
          "system": "You are a coding agent.",
          "messages": [
            {"role": "user", "content": "read the file"},
            {"role": "assistant", "content": [
              {"type": "thinking", "thinking": "use the tool", "signature": "sig"},
              {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "a.rs"}}
            ]},
            {"role": "user", "content": [
              {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [{"type": "text", "text": "no such file"}]}
            ]},
            {"role": "assistant", "content": [
              {"type": "text", "text": "It does not exist."},
              {"type": "redacted_thinking", "data": "xyz"}
            ]}
          ]
        }"#;
        let (_dir, _path, report) = parse_str(json);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let messages = &only_session(&report).messages;
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(
            messages[0].blocks,
            [ContentBlock::text("You are a coding agent.")]
        );
        assert_eq!(
            messages[2].blocks,
            [
                ContentBlock::Thinking {
                    text: "use the tool".into(),
                    signature: Some("sig".into())
                },
                ContentBlock::ToolUse {
                    id: "toolu_1".into(),
                    name: "Read".into(),
                    input: r#"{"path":"a.rs"}"#.into()
                },
            ]
        );
        assert_eq!(messages[2].model, "claude-sonnet-4-5");
        // Tool results stay in the user message that carried them.
        assert_eq!(messages[3].role, Role::User);
        assert_eq!(messages[3].model, "");
        assert_eq!(
            messages[3].blocks,
            [ContentBlock::ToolResult {
                tool_use_id: "toolu_1".into(),
                is_error: true,
                content: vec![ToolResultPart::Text {
                    text: "no such file".into()
                }],
            }]
        );
        assert_eq!(
            messages[4].blocks[1],
            ContentBlock::Other {
                kind: "redacted_thinking".into(),
                json: r#"{"data":"xyz","type":"redacted_thinking"}"#.into()
            }
        );
    }

    #[test]
    fn bad_messages_are_skipped_with_their_index() {
        let json = r#"{"messages": [
            {"role": "user", "content": "hi"},
            "not an object",
            {"role": "narrator", "content": "meanwhile"},
            {"content": "no role"},
            {"role": "user", "content": 42},
            {"role": "assistant", "content": "hello"}
        ]}"#;
        let (_dir, _path, report) = parse_str(json);
        let lines: Vec<usize> = report.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert!(
            report.warnings[1]
                .message
                .contains("unknown role `narrator`"),
            "{:?}",
            report.warnings
        );
        let messages = &only_session(&report).messages;
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].blocks, [ContentBlock::text("hello")]);
        // No top-level model: nothing is invented.
        assert_eq!(messages[1].model, "");
    }

    #[test]
    fn reimport_has_the_same_source_id() {
        let json = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
        let (_dir, path, first) = parse_str(json);
        let second = parse(&path, json).expect("parse again");
        assert_eq!(first, second);
    }

    #[test]
    fn empty_messages_yield_no_session_and_say_so() {
        let (_dir, _path, report) = parse_str(r#"{"messages": []}"#);
        assert!(report.sessions.is_empty());
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].line, 0);
    }

    #[test]
    fn invalid_json_and_missing_messages_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.json");
        assert!(matches!(
            parse(&path, "{\n\"messages\": [,]}"),
            Err(ImportError::Malformed { line: 2, .. })
        ));
        assert!(matches!(
            parse(&path, r#"{"msgs": []}"#),
            Err(ImportError::Unrecognized { .. })
        ));
    }

    #[test]
    fn images_by_reference_and_bad_base64() {
        let json = r#"{"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!not base64!!"}}
        ]}]}"#;
        let (_dir, _path, report) = parse_str(json);
        let blocks = &only_session(&report).messages[0].blocks;
        assert_eq!(
            blocks[0],
            ContentBlock::Image {
                media_type: String::new(),
                source: ImageSource::Reference {
                    uri: "https://example.com/cat.png".into()
                },
            }
        );
        assert!(matches!(&blocks[1], ContentBlock::Other { kind, .. } if kind == "image"));
    }
}
