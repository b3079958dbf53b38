//! Writes a session as a Codex rollout (SPEC.md §17), where `codex resume <uuid>` and
//! `codex exec resume <uuid> <prompt>` find it:
//! `<CODEX_HOME or ~/.codex>/sessions/YYYY/MM/DD/rollout-<YYYY-MM-DDTHH-MM-SS>-<uuid>.jsonl`.
//! Codex 0.171 names the folder and the file in **local** time (observed: under
//! `TZ=Asia/Tokyo` a session started at 18:48 UTC is `…/12/07/rollout-…T03-48-…`) while every
//! line's `timestamp` is UTC with `Z`; the writer does the same. Resume by id found files
//! written by hand in any date folder, also when its state database (`state_5.sqlite`) already
//! existed and did not list them, so the date part only orders the picker.
//!
//! The file is the classic rollout layout that every Codex version reads, one JSON object a line,
//! `{"timestamp","type","payload"}`:
//!
//! 1. `session_meta`: `id` (the agent session id), `timestamp`, `cwd` (the directory the agent
//!    will run in), `originator`, `cli_version` ("0.171.0"), `source` ("cli"), `model_provider`,
//!    and `git.branch` when the nodes know one. No `base_instructions`: Codex then uses its own.
//!    0.171 writes more (`ordinal` on every line, `history_mode: "paginated"`, `world_state`
//!    lines) but resumes this layout as it is and appends to it in the same layout.
//!    `model_provider` is the one `$CODEX_HOME/config.toml` selects (its top-level
//!    `model_provider`, else Codex's default `openai`), not the recorded one: 0.171 refuses to
//!    resume a thread whose provider differs from the configured one ("Cannot change this
//!    thread's model provider from `openai` to `x` on resume"). The provider is node metadata,
//!    not part of a node id, so this costs nothing in the round trip.
//! 2. `turn_context` (`cwd`, `approval_policy`, `sandbox_policy`, `model`, `summary`) before an
//!    assistant node whose model differs from the current one: the importer gives assistant
//!    nodes the model of the latest `turn_context`, and the model is part of the node id.
//! 3. One or more `response_item`s per node, plus the `event_msg` `user_message` /
//!    `agent_message` lines Codex writes beside them for its UI (the importer skips them), and a
//!    `thread_name_updated` event for the session title.
//!
//! Decisions:
//!
//! - **Lossless for Codex's own sessions** ([`Render::native`]). The importer
//!   (`crate::import::codex`) makes one node per response item, so each node is written back as
//!   the one item it came from: a message (text as `input_text` / `output_text`, images as
//!   `input_image` data or URL, unmodeled parts as the JSON they were), a `reasoning` item
//!   (first thinking block = summary, second = raw content, `Other`
//!   `reasoning.encrypted_content` = `encrypted_content`), `function_call` (arguments = the
//!   input JSON text), `custom_tool_call` (an input kept as a JSON string: freeform tools such as
//!   apply_patch), `local_shell_call` (tool `local_shell` with an object input), a
//!   `web_search_call` item as it was, and `function_call_output` / `custom_tool_call_output`
//!   (after the call of that kind) with the output as a string, a content-item list (images), or
//!   the `{content|content_items, success: false}` object of a failed call. Re-importing the
//!   bytes gives the same node ids (a test checks every fixture). Codex 0.171 itself cannot read
//!   that failed-call object (nor a `null` output); it treats such a call as "aborted", exactly
//!   as it does with the original file.
//! - **Other agents' sessions** (Claude, Gemini, the canonical JSON): every message, tool call
//!   and tool result is written in order; one node may become several items (a Claude assistant
//!   node [thinking, text, tool_use, tool_use] is one message and two `function_call`s; a user
//!   node of tool_result blocks is one `function_call_output` each), which is what
//!   [`Rendered::ends`] counts. Tool inputs are `function_call` arguments (JSON text; a non-JSON
//!   input as a JSON string). What Codex cannot take is rendered as text, never dropped:
//!   thinking (a foreign reasoning item without OpenAI's `encrypted_content` is not fed to the
//!   model, and the API may reject it) as `[thinking]\n…` output text, with a Claude signature
//!   as a `[thinking signature] …` line; unmodeled blocks as `[<kind>] <json>`; an image in an
//!   assistant message (the Responses API takes images only as input) as `[image …]` text; a
//!   failed tool result as output text headed `[tool error]`; a system message (0.171 leaves
//!   `system` items out of the request) as a developer message; text in a Tool node as a user
//!   message; a tool result whose call is not before it (Codex leaves such an output out of the
//!   request) as a user message headed `[tool result for <id>]`. Images in user messages and
//!   tool results stay images (0.171 reads content-item lists in outputs).
//! - **Subagents**: a subagent session is its own rollout in the same folder, its
//!   `session_meta.source` naming the parent thread (`{"subagent":{"thread_spawn":{…}}}`, which
//!   0.171 parses; resuming such a file appends to it like any other).
//! - **Writing again**: when a rollout for the agent session id already exists anywhere under
//!   `sessions/`, its path is reused, so a session checked out twice stays one file.
//!
//! Codex 0.171 facts this rests on (found against a stand-in on 127.0.0.1, see
//! `tests/it/agents/codex_cli.rs`): `codex exec resume <uuid> <prompt>` resumes non-interactively
//! and appends the new turn (after a developer and an `<environment_context>` user message of
//! its own) to the same file; the file needs only `session_meta` and response items (no
//! `turn_context`, `ordinal` or `base_instructions`); a `session_meta` that does not parse fails
//! the resume ("does not start with session metadata"); items that do not parse are left out of
//! the request, and a call left without a readable output gets an "aborted" one.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Map, Value};
use tapes_protocol::{ContentBlock, ImageSource, Node, Role, ToolResultPart};

use super::{timestamp, AgentHomes, Platform, Render, Rendered, ResumeError};
use crate::import::codex::ENCRYPTED_REASONING;

/// The Codex version the rollout claims (the one the end-to-end test pins).
pub const CLI_VERSION: &str = "0.171.0";
/// What the interactive CLI writes as `originator`.
const ORIGINATOR: &str = "codex_cli_rs";
/// Codex's provider when `config.toml` names none.
const DEFAULT_PROVIDER: &str = "openai";

/// `<codex home>/sessions/YYYY/MM/DD/rollout-<YYYY-MM-DDTHH-MM-SS>-<id>.jsonl`, in local time
/// as Codex names it.
pub fn rollout_path(homes: &AgentHomes, agent_session_id: &str, now_ms: i64) -> PathBuf {
    let local = chrono::DateTime::from_timestamp_millis(now_ms)
        .map(|utc| utc.with_timezone(&chrono::Local).naive_local())
        .unwrap_or_default();
    homes
        .codex
        .join("sessions")
        .join(local.format("%Y").to_string())
        .join(local.format("%m").to_string())
        .join(local.format("%d").to_string())
        .join(format!(
            "rollout-{}-{agent_session_id}.jsonl",
            local.format("%Y-%m-%dT%H-%M-%S")
        ))
}

/// The rollout already written for `agent_session_id` (a session checked out before, which
/// Codex may have grown), so that writing it again replaces that file instead of leaving two
/// files with one id (Codex resumes by the id in the name). Only file names are read.
pub fn existing_rollout(homes: &AgentHomes, agent_session_id: &str) -> Option<PathBuf> {
    let suffix = format!("-{agent_session_id}.jsonl");
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    };
    for year in dirs(&homes.codex.join("sessions")) {
        for month in dirs(&year) {
            for day in dirs(&month) {
                let hit = dirs(&day).into_iter().find(|file| {
                    file.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("rollout-") && n.ends_with(&suffix))
                });
                if hit.is_some() {
                    return hit;
                }
            }
        }
    }
    None
}

/// The provider id `$CODEX_HOME/config.toml` selects (top-level `model_provider`), else
/// `openai`. A config that does not parse counts as none: Codex will say what is wrong with it.
pub fn configured_provider(codex_home: &Path) -> String {
    std::fs::read_to_string(codex_home.join("config.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            table
                .get("model_provider")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| DEFAULT_PROVIDER.to_owned())
}

pub fn render(req: &Render, homes: &AgentHomes) -> Result<Rendered, ResumeError> {
    if req.nodes.is_empty() {
        return Err(ResumeError::Empty(req.session.short()));
    }
    let path = existing_rollout(homes, req.agent_session_id)
        .unwrap_or_else(|| rollout_path(homes, req.agent_session_id, req.now_ms));
    let mut writer = Writer {
        native: req.native(Platform::Codex),
        cwd: req.cwd.to_string_lossy().into_owned(),
        calls: call_kinds(req.nodes),
        written_calls: HashSet::new(),
        lines: Vec::new(),
        items: 0,
        model: String::new(),
        stamp: String::new(),
    };
    writer.session_meta(req, &configured_provider(&homes.codex));
    let mut ends = Vec::with_capacity(req.nodes.len());
    for node in req.nodes {
        writer.node(node, req.now_ms);
        ends.push(writer.items);
    }
    if let Some(title) = req.record.title.as_deref().filter(|t| !t.is_empty()) {
        let event = json!({
            "type": "thread_name_updated",
            "thread_id": req.agent_session_id,
            "thread_name": title,
        });
        writer.line("event_msg", event);
    }
    let mut bytes = Vec::new();
    for line in &writer.lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    Ok(Rendered {
        path,
        bytes,
        ends,
        extra: Vec::new(),
    })
}

/// How a tool call is written, which decides how its output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Function,
    Custom,
    LocalShell,
}

/// The call kind of every tool use, by id (outputs must name the kind of their call).
fn call_kinds(nodes: &[Node]) -> HashMap<String, CallKind> {
    let mut kinds = HashMap::new();
    for node in nodes {
        for block in &node.body.blocks {
            if let ContentBlock::ToolUse { id, name, input } = block {
                kinds.insert(id.clone(), native_call_kind(name, input));
            }
        }
    }
    kinds
}

/// The item a Codex tool use came from, told from its input: an object input of `local_shell`
/// is a `local_shell_call`; an input that is a JSON string is a freeform `custom_tool_call`
/// (the importer parses `function_call` arguments, so a string there holds text that was not
/// JSON, which freeform input is by definition); anything else is a `function_call`.
fn native_call_kind(name: &str, input: &str) -> CallKind {
    match serde_json::from_str::<Value>(input) {
        Ok(Value::Object(_)) if name == "local_shell" => CallKind::LocalShell,
        Ok(Value::String(_)) | Err(_) => CallKind::Custom,
        Ok(_) => CallKind::Function,
    }
}

struct Writer {
    native: bool,
    cwd: String,
    calls: HashMap<String, CallKind>,
    /// Tool calls written so far (an output for none of them is orphaned).
    written_calls: HashSet<String>,
    lines: Vec<String>,
    /// Response items written that the importer turns into a node.
    items: u32,
    /// The model of the latest `turn_context` written.
    model: String,
    /// The timestamp of the node being written.
    stamp: String,
}

/// Text and content parts waiting to become one message item.
#[derive(Default)]
struct Pending {
    parts: Vec<Value>,
    /// Summary text, raw text and encrypted content of a reasoning item being gathered.
    thoughts: Vec<String>,
    encrypted: Option<String>,
}

impl Writer {
    fn line(&mut self, kind: &str, payload: Value) {
        let line = json!({ "timestamp": self.stamp, "type": kind, "payload": payload });
        self.lines.push(line.to_string());
    }

    fn session_meta(&mut self, req: &Render, provider: &str) {
        self.stamp = timestamp(req.now_ms);
        let mut meta = Map::new();
        meta.insert("id".into(), json!(req.agent_session_id));
        meta.insert("timestamp".into(), json!(self.stamp));
        meta.insert("cwd".into(), json!(self.cwd));
        meta.insert("originator".into(), json!(ORIGINATOR));
        meta.insert("cli_version".into(), json!(CLI_VERSION));
        let source = match req.parent_agent_session_id {
            Some(parent) => json!({
                "subagent": {"thread_spawn": {"parent_thread_id": parent, "depth": 1}}
            }),
            None => json!("cli"),
        };
        meta.insert("source".into(), source);
        meta.insert("model_provider".into(), json!(provider));
        let branch = req.nodes.iter().find_map(|n| n.meta.git_branch.as_deref());
        if let Some(branch) = branch {
            meta.insert("git".into(), json!({ "branch": branch }));
        }
        self.line("session_meta", Value::Object(meta));
    }

    fn turn_context(&mut self, model: &str) {
        self.model = model.to_owned();
        let context = json!({
            "cwd": self.cwd,
            "approval_policy": "on-request",
            "sandbox_policy": {"type": "read-only"},
            "model": model,
            "summary": "auto",
        });
        self.line("turn_context", context);
    }

    /// A response item that becomes one node on import.
    fn item(&mut self, item: Value) {
        self.items += 1;
        self.line("response_item", item);
    }

    fn node(&mut self, node: &Node, now_ms: i64) {
        self.stamp = timestamp(node.meta.timestamp_ms.unwrap_or(now_ms));
        let role = node.body.role;
        if role == Role::Assistant && !node.body.model.is_empty() && node.body.model != self.model {
            self.turn_context(&node.body.model);
        }
        let mut pending = Pending::default();
        for block in &node.body.blocks {
            self.block(role, block, &mut pending);
        }
        self.flush(role, &mut pending);
    }

    fn block(&mut self, role: Role, block: &ContentBlock, pending: &mut Pending) {
        match block {
            ContentBlock::Text { text } => {
                self.flush_reasoning(pending);
                pending.parts.push(text_part(role, text));
            }
            ContentBlock::Image { media_type, source } => {
                self.flush_reasoning(pending);
                if role == Role::Assistant && !self.native {
                    let text = format!("[image {}]", image_label(media_type, source));
                    pending.parts.push(text_part(role, &text));
                } else {
                    pending.parts.push(image_part(media_type, source));
                }
            }
            ContentBlock::Thinking { text, signature } if self.native && signature.is_none() => {
                self.flush_message(role, pending);
                if pending.thoughts.len() == 2 || pending.encrypted.is_some() {
                    self.flush_reasoning(pending);
                }
                pending.thoughts.push(text.clone());
            }
            ContentBlock::Thinking { text, signature } => {
                self.flush_reasoning(pending);
                let mut shown = format!("[thinking]\n{text}");
                if let Some(signature) = signature {
                    shown.push_str(&format!("\n[thinking signature] {signature}"));
                }
                pending.parts.push(text_part(role, &shown));
            }
            ContentBlock::Other { kind, json } if self.native && kind == ENCRYPTED_REASONING => {
                let encrypted = serde_json::from_str::<Value>(json).ok().and_then(|v| {
                    v.get("encrypted_content")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                match encrypted {
                    Some(encrypted) => {
                        self.flush_message(role, pending);
                        if pending.encrypted.is_some() {
                            self.flush_reasoning(pending);
                        }
                        pending.encrypted = Some(encrypted);
                    }
                    None => self.other_part(role, kind, json, pending),
                }
            }
            ContentBlock::Other { kind, json } if self.native && kind == "web_search_call" => {
                match serde_json::from_str::<Value>(json) {
                    Ok(item)
                        if item.get("type").and_then(Value::as_str) == Some("web_search_call") =>
                    {
                        self.flush(role, pending);
                        self.item(item);
                    }
                    _ => self.other_part(role, kind, json, pending),
                }
            }
            ContentBlock::Other { kind, json } => self.other_part(role, kind, json, pending),
            ContentBlock::ToolUse { id, name, input } => {
                self.flush(role, pending);
                self.written_calls.insert(id.clone());
                let item = self.tool_call(id, name, input);
                self.item(item);
            }
            ContentBlock::ToolResult {
                tool_use_id,
                is_error,
                content,
            } if !self.native && !self.written_calls.contains(tool_use_id) => {
                // Codex drops an output whose call is not before it; as text it is kept.
                self.flush_reasoning(pending);
                let error = if *is_error { " (error)" } else { "" };
                let head = format!("[tool result for {tool_use_id}{error}]");
                pending.parts.push(text_part(role, &head));
                for part in content {
                    pending.parts.push(match part {
                        ToolResultPart::Text { text } => text_part(role, text),
                        ToolResultPart::Image { media_type, source } if role != Role::Assistant => {
                            image_part(media_type, source)
                        }
                        ToolResultPart::Image { media_type, source } => text_part(
                            role,
                            &format!("[image {}]", image_label(media_type, source)),
                        ),
                    });
                }
            }
            ContentBlock::ToolResult {
                tool_use_id,
                is_error,
                content,
            } => {
                self.flush(role, pending);
                let item = self.tool_output(tool_use_id, *is_error, content);
                self.item(item);
            }
        }
    }

    /// An unmodeled block: a Codex content part as it was, else its JSON as text.
    fn other_part(&mut self, role: Role, kind: &str, json: &str, pending: &mut Pending) {
        self.flush_reasoning(pending);
        if self.native {
            if let Ok(part) = serde_json::from_str::<Value>(json) {
                pending.parts.push(part);
                return;
            }
        }
        pending
            .parts
            .push(text_part(role, &format!("[{kind}] {json}")));
    }

    fn flush(&mut self, role: Role, pending: &mut Pending) {
        self.flush_message(role, pending);
        self.flush_reasoning(pending);
    }

    fn flush_reasoning(&mut self, pending: &mut Pending) {
        if pending.thoughts.is_empty() && pending.encrypted.is_none() {
            return;
        }
        let mut thoughts = std::mem::take(&mut pending.thoughts).into_iter();
        let summary: Vec<Value> = thoughts
            .next()
            .map(|text| json!({"type": "summary_text", "text": text}))
            .into_iter()
            .collect();
        let content = thoughts
            .next()
            .map(|text| json!([{"type": "reasoning_text", "text": text}]))
            .unwrap_or(Value::Null);
        let mut item = json!({"type": "reasoning", "summary": summary, "content": content});
        if let Some(encrypted) = pending.encrypted.take() {
            item["encrypted_content"] = json!(encrypted);
        }
        self.item(item);
    }

    fn flush_message(&mut self, role: Role, pending: &mut Pending) {
        if pending.parts.is_empty() {
            return;
        }
        let parts = std::mem::take(&mut pending.parts);
        let name = match role {
            Role::System if !self.native => "developer",
            Role::Tool => "user",
            other => other.as_str(),
        };
        let texts: Vec<&str> = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let event = match role {
            Role::User if !texts.is_empty() && !is_context(texts[0]) => Some(json!({
                "type": "user_message",
                "message": texts.join("\n"),
                "images": [],
                "local_images": [],
                "text_elements": [],
            })),
            Role::Assistant if !texts.is_empty() => Some(json!({
                "type": "agent_message",
                "message": texts.join("\n"),
            })),
            _ => None,
        };
        self.item(json!({"type": "message", "role": name, "content": parts}));
        if let Some(event) = event {
            self.line("event_msg", event);
        }
    }

    fn tool_call(&self, id: &str, name: &str, input: &str) -> Value {
        let kind = if self.native {
            native_call_kind(name, input)
        } else {
            CallKind::Function
        };
        match kind {
            CallKind::LocalShell => {
                let action = serde_json::from_str::<Value>(input).unwrap_or(Value::Null);
                json!({"type": "local_shell_call", "call_id": id, "status": "completed",
                       "action": action})
            }
            CallKind::Custom => {
                let raw = match serde_json::from_str::<Value>(input) {
                    Ok(Value::String(raw)) => raw,
                    _ => input.to_owned(),
                };
                json!({"type": "custom_tool_call", "status": "completed", "call_id": id,
                       "name": name, "input": raw})
            }
            CallKind::Function => {
                let arguments = match serde_json::from_str::<Value>(input) {
                    Ok(_) => input.to_owned(),
                    Err(_) => Value::String(input.to_owned()).to_string(),
                };
                json!({"type": "function_call", "name": name, "arguments": arguments,
                       "call_id": id})
            }
        }
    }

    fn tool_output(&self, call_id: &str, is_error: bool, content: &[ToolResultPart]) -> Value {
        let custom = self.native && self.calls.get(call_id) == Some(&CallKind::Custom);
        let kind = if custom {
            "custom_tool_call_output"
        } else {
            "function_call_output"
        };
        let output = if self.native {
            native_output(is_error, content)
        } else {
            foreign_output(is_error, content)
        };
        json!({"type": kind, "call_id": call_id, "output": output})
    }
}

/// A tool output as the importer reads it back to the same block.
fn native_output(is_error: bool, content: &[ToolResultPart]) -> Value {
    match (is_error, content) {
        (false, []) => Value::Null,
        (false, [ToolResultPart::Text { text }]) => json!(text),
        (false, parts) => Value::Array(parts.iter().map(output_item).collect()),
        (true, [ToolResultPart::Text { text }]) => json!({"content": text, "success": false}),
        (true, parts) => json!({
            "content_items": parts.iter().map(output_item).collect::<Vec<_>>(),
            "success": false,
        }),
    }
}

/// Another agent's tool output: a string, or a content-item list when it has images or several
/// parts; a failure says so in its text (0.171 reads no `success` flag).
fn foreign_output(is_error: bool, content: &[ToolResultPart]) -> Value {
    let head = if is_error { "[tool error]" } else { "" };
    match content {
        [] => json!(head),
        [ToolResultPart::Text { text }] if is_error => json!(format!("{head}\n{text}")),
        [ToolResultPart::Text { text }] => json!(text),
        parts => {
            let mut items: Vec<Value> = parts.iter().map(output_item).collect();
            if is_error {
                items.insert(0, json!({"type": "input_text", "text": head}));
            }
            Value::Array(items)
        }
    }
}

fn output_item(part: &ToolResultPart) -> Value {
    match part {
        ToolResultPart::Text { text } => json!({"type": "input_text", "text": text}),
        ToolResultPart::Image { media_type, source } => image_part(media_type, source),
    }
}

fn text_part(role: Role, text: &str) -> Value {
    let kind = if role == Role::Assistant {
        "output_text"
    } else {
        "input_text"
    };
    json!({"type": kind, "text": text})
}

fn image_part(media_type: &str, source: &ImageSource) -> Value {
    json!({"type": "input_image", "image_url": image_url(media_type, source)})
}

/// A data URL for image bytes (what the importer decodes back), or the reference as it was.
fn image_url(media_type: &str, source: &ImageSource) -> String {
    match source {
        ImageSource::Bytes { data } => format!(
            "data:{media_type};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(data)
        ),
        ImageSource::Reference { uri } => uri.clone(),
    }
}

fn image_label(media_type: &str, source: &ImageSource) -> String {
    match source {
        ImageSource::Bytes { .. } => format!("{media_type}: {}", image_url(media_type, source)),
        ImageSource::Reference { uri } => format!("{media_type}: {uri}"),
    }
}

/// User messages Codex adds itself (environment, AGENTS.md instructions): its UI does not show
/// them as prompts, so they get no `user_message` event.
fn is_context(text: &str) -> bool {
    let text = text.trim_start();
    [
        "<environment_context>",
        "<user_instructions>",
        "# AGENTS.md instructions",
        "<INSTRUCTIONS>",
    ]
    .iter()
    .any(|prefix| text.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::ingest::build_nodes;
    use crate::import::{ParsedMessage, ParsedSession};
    use crate::session::SessionRecord;
    use tapes_protocol::{NodeMeta, SessionId};

    const ID: &str = "0b6a4f6e-0000-4000-8000-00000000c0de";
    const NOW: i64 = 1_765_000_000_000;

    fn homes() -> AgentHomes {
        AgentHomes {
            claude: "/h/.claude".into(),
            codex: "/nonexistent-tapes-test/.codex".into(),
            gemini: "/h/.gemini".into(),
        }
    }

    fn record(kind: &str, title: Option<&str>) -> SessionRecord {
        crate::resume::test_record(kind, title)
    }

    fn render_nodes(nodes: &[Node], kind: &str, title: Option<&str>) -> Rendered {
        let record = record(kind, title);
        let req = Render {
            nodes,
            record: &record,
            session: SessionId([1; 16]),
            agent_session_id: ID,
            parent_agent_session_id: None,
            cwd: Path::new("/work/my project"),
            now_ms: NOW,
        };
        render(&req, &homes()).expect("render")
    }

    /// Parses rendered bytes with the Codex importer: the one session, no warnings.
    fn reparse(rendered: &Rendered) -> ParsedSession {
        let text = String::from_utf8(rendered.bytes.clone()).expect("utf-8");
        let report = crate::import::codex::parse(&rendered.path, &text).expect("parse");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.sessions.len(), 1);
        report.sessions[0].clone()
    }

    fn ids(nodes: &[Node]) -> Vec<String> {
        nodes.iter().map(|n| n.id().to_hex()).collect()
    }

    /// `ends[i]` is what the importer reads from the file of nodes `..=i` (the writer is
    /// prefix-stable: a longer session only adds lines).
    fn check_ends(nodes: &[Node], kind: &str, rendered: &Rendered) {
        assert_eq!(rendered.ends.len(), nodes.len());
        for i in 0..nodes.len() {
            let prefix = render_nodes(&nodes[..=i], kind, None);
            let text = String::from_utf8(prefix.bytes.clone()).expect("utf-8");
            let report = crate::import::codex::parse(&prefix.path, &text).expect("parse");
            let count = report.sessions.first().map_or(0, |s| s.messages.len());
            assert_eq!(rendered.ends[i] as usize, count, "node {i}");
        }
    }

    fn check_native(session: &ParsedSession) {
        let nodes = build_nodes(session);
        let rendered = render_nodes(&nodes, "codex", session.title.as_deref());
        let back = reparse(&rendered);
        assert_eq!(back.source_id, ID);
        assert_eq!(back.messages.len(), nodes.len(), "{}", session.source_id);
        assert_eq!(
            ids(&build_nodes(&back)),
            ids(&nodes),
            "{}: node ids differ after the round trip",
            session.source_id
        );
        assert_eq!(back.title, session.title);
        let one_each: Vec<u32> = (1..=nodes.len() as u32).collect();
        assert_eq!(rendered.ends, one_each, "{}", session.source_id);
    }

    fn fixture_files() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents/codex");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if crate::real_fixtures::present() {
            let real = crate::real_fixtures::dir().join("codex");
            files.extend(
                std::fs::read_dir(real)
                    .expect("real fixtures")
                    .flatten()
                    .map(|e| e.path()),
            );
        }
        files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
        files.sort();
        files
    }

    #[test]
    fn codex_sessions_round_trip_to_the_same_nodes() {
        let files = fixture_files();
        assert!(!files.is_empty(), "no Codex fixtures found");
        let mut checked = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).expect("fixture");
            let report = crate::import::codex::parse(&file, &text).expect("fixture parses");
            for session in report.sessions.iter().filter(|s| !s.messages.is_empty()) {
                check_native(session);
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    /// Every item kind the importer knows, including the ones no fixture has.
    #[test]
    fn every_codex_item_kind_round_trips() {
        let text = [
            r#"{"timestamp":"2026-01-01T00:00:00Z","type":"session_meta","payload":{"id":"s1","cwd":"/a/b","model_provider":"openai","git":{"branch":"main"}}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"developer","content":"be brief"}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"look"},{"type":"input_image","image_url":"data:image/png;base64,iVBORw=="},{"type":"input_image","image_url":"https://x/y.jpg"},{"type":"input_file","file_id":"f1"},"bare"]}}"#,
            r#"{"type":"response_item","payload":{"type":"reasoning","summary":[],"content":null,"encrypted_content":"gAAA"}}"#,
            r#"{"type":"turn_context","payload":{"model":"m1","cwd":"/a/b"}}"#,
            r#"{"type":"response_item","payload":{"type":"reasoning","summary":[{"type":"summary_text","text":"a"},{"type":"summary_text","text":"b"}],"content":[{"type":"reasoning_text","text":"raw"}],"encrypted_content":"gAAB"}}"#,
            r#"{"type":"response_item","payload":{"type":"custom_tool_call","call_id":"c1","name":"apply_patch","input":"*** Begin Patch"}}"#,
            r#"{"type":"response_item","payload":{"type":"custom_tool_call","call_id":"c1b","name":"freeform","input":"{\"looks\":\"like json\"}"}}"#,
            r#"{"type":"response_item","payload":{"type":"custom_tool_call_output","call_id":"c1","output":"Done"}}"#,
            r#"{"type":"turn_context","payload":{"model":"m2","cwd":"/a/b"}}"#,
            r#"{"type":"response_item","payload":{"type":"local_shell_call","call_id":"c2","status":"completed","action":{"type":"exec","command":["ls"]}}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call_output","call_id":"c2","output":{"content":"boom","success":false}}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call","call_id":"c3","name":"shell","arguments":"[REDACTED]"}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call","call_id":"c4","name":"view","arguments":"{\"b\": 1, \"a\": [2]}"}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call_output","call_id":"c4","output":[{"type":"input_text","text":"see"},{"type":"input_image","image_url":"data:image/gif;base64,R0lG"}]}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call_output","call_id":"c3","output":{"content_items":[{"type":"input_text","text":"x"}],"success":false}}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call_output","call_id":"c5","output":null}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call_output","call_id":"c6","output":{"other":1}}}"#,
            r#"{"type":"response_item","payload":{"type":"web_search_call","status":"completed","action":{"type":"search","query":"q"}}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"},{"type":"refusal","refusal":"no"}]}}"#,
            r#"{"type":"event_msg","payload":{"type":"thread_name_updated","thread_name":"My thread"}}"#,
        ]
        .join("\n");
        let report = crate::import::codex::parse(Path::new("/x/r.jsonl"), &text).expect("parses");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let session = &report.sessions[0];
        assert_eq!(session.messages.len(), 17);
        check_native(session);
        let nodes = build_nodes(session);
        let rendered = render_nodes(&nodes, "codex", session.title.as_deref());
        let back = reparse(&rendered);
        let models: Vec<&str> = back.messages.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(models[2..6], ["", "m1", "m1", "m1"]);
        assert_eq!(back.messages[7].model, "m2");
        assert_eq!(back.messages[0].meta.git_branch.as_deref(), Some("main"));
    }

    fn m(role: Role, model: &str, blocks: Vec<ContentBlock>) -> ParsedMessage {
        ParsedMessage {
            role,
            model: model.into(),
            blocks,
            meta: NodeMeta::default(),
        }
    }

    fn text_result(id: &str, text: &str, is_error: bool) -> ContentBlock {
        ContentBlock::ToolResult {
            tool_use_id: id.into(),
            is_error,
            content: vec![ToolResultPart::Text { text: text.into() }],
        }
    }

    /// A Claude-shaped session: assistant nodes of [thinking, text, tool_use...], user nodes of
    /// tool_result blocks, a system prompt, an image in a tool result, an unmodeled block.
    fn claude_shaped() -> ParsedSession {
        let png = ImageSource::Bytes {
            data: vec![0x89, b'P', b'N', b'G'],
        };
        ParsedSession {
            source_kind: "claude",
            source_id: "s".into(),
            parent_source_id: None,
            title: Some("from claude".into()),
            messages: vec![
                m(Role::System, "", vec![ContentBlock::text("be brief SYS")]),
                m(
                    Role::User,
                    "",
                    vec![ContentBlock::text("list files MARKER")],
                ),
                m(
                    Role::Assistant,
                    "claude-opus-4-5",
                    vec![
                        ContentBlock::Thinking {
                            text: "plan it".into(),
                            signature: Some("SIG123".into()),
                        },
                        ContentBlock::text("Looking."),
                        ContentBlock::ToolUse {
                            id: "toolu_1".into(),
                            name: "Bash".into(),
                            input: r#"{"command":"ls"}"#.into(),
                        },
                        ContentBlock::ToolUse {
                            id: "toolu_2".into(),
                            name: "Read".into(),
                            input: "not json".into(),
                        },
                    ],
                ),
                m(
                    Role::User,
                    "",
                    vec![
                        text_result("toolu_1", "a.txt", false),
                        ContentBlock::ToolResult {
                            tool_use_id: "toolu_2".into(),
                            is_error: true,
                            content: vec![
                                ToolResultPart::Text {
                                    text: "denied".into(),
                                },
                                ToolResultPart::Image {
                                    media_type: "image/png".into(),
                                    source: png.clone(),
                                },
                            ],
                        },
                        ContentBlock::text("and also this"),
                    ],
                ),
                m(
                    Role::Assistant,
                    "claude-opus-4-5",
                    vec![
                        ContentBlock::Other {
                            kind: "server_tool_use".into(),
                            json: r#"{"id":"srv_1","name":"web_search"}"#.into(),
                        },
                        ContentBlock::Image {
                            media_type: "image/png".into(),
                            source: png,
                        },
                    ],
                ),
                m(Role::Tool, "", vec![text_result("toolu_3", "late", false)]),
                m(
                    Role::Assistant,
                    "gemini-2.5-pro",
                    vec![ContentBlock::text("done")],
                ),
            ],
        }
    }

    #[test]
    fn another_agents_session_keeps_every_call_and_result_in_order() {
        let session = claude_shaped();
        let nodes = build_nodes(&session);
        let rendered = render_nodes(&nodes, "claude", Some("from claude"));
        let back = reparse(&rendered);
        // system 1; user 1; assistant message + 2 calls = 3; 2 outputs + 1 message = 3;
        // assistant message 1; tool output 1; assistant 1.
        assert_eq!(rendered.ends, vec![1, 2, 5, 8, 9, 10, 11]);
        check_ends(&nodes, "claude", &rendered);
        assert_eq!(back.messages.len(), 11);
        assert_eq!(back.title.as_deref(), Some("from claude"));

        let calls: Vec<String> = back
            .messages
            .iter()
            .flat_map(|msg| msg.blocks.iter())
            .filter_map(|b| match b {
                ContentBlock::ToolUse { id, .. } => Some(format!("use {id}")),
                ContentBlock::ToolResult { tool_use_id, .. } => {
                    Some(format!("result {tool_use_id}"))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            calls,
            [
                "use toolu_1",
                "use toolu_2",
                "result toolu_1",
                "result toolu_2",
            ]
        );
        // The output of a call the session does not hold (toolu_3) is text.
        assert_eq!(
            back.messages[9].blocks[0],
            ContentBlock::text("[tool result for toolu_3]")
        );
        let roles: Vec<Role> = back.messages.iter().map(|msg| msg.role).collect();
        use Role::*;
        assert_eq!(
            roles,
            [
                Developer, User, Assistant, Assistant, Assistant, Tool, Tool, User, Assistant,
                User, Assistant
            ]
        );
        // Models follow the nodes (a turn_context where they change).
        assert_eq!(back.messages[2].model, "claude-opus-4-5");
        assert_eq!(back.messages[10].model, "gemini-2.5-pro");
        // Thinking and its signature, the non-JSON input, the error, the image, the unmodeled
        // block: all there, as text where Codex has no place for them.
        match &back.messages[2].blocks[..] {
            [ContentBlock::Text { text: thinking }, ContentBlock::Text { text }] => {
                assert_eq!(thinking, "[thinking]\nplan it\n[thinking signature] SIG123");
                assert_eq!(text, "Looking.");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&back.messages[4].blocks[0],
            ContentBlock::ToolUse { input, .. } if input == r#""not json""#));
        match &back.messages[6].blocks[0] {
            ContentBlock::ToolResult { content, .. } => {
                assert_eq!(content.len(), 3);
                assert_eq!(
                    content[0],
                    ToolResultPart::Text {
                        text: "[tool error]".into()
                    }
                );
                assert!(
                    matches!(&content[2], ToolResultPart::Image { media_type, .. } if media_type == "image/png")
                );
            }
            other => panic!("{other:?}"),
        }
        match &back.messages[8].blocks[..] {
            [ContentBlock::Text { text: other }, ContentBlock::Text { text: image }] => {
                assert!(other.starts_with("[server_tool_use] {"), "{other}");
                assert!(
                    image.starts_with("[image image/png: data:image/png;base64,"),
                    "{image}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            back.messages[0].blocks,
            vec![ContentBlock::text("be brief SYS")]
        );
    }

    #[test]
    fn an_output_without_its_call_is_kept_as_text() {
        let session = ParsedSession {
            source_kind: "gemini",
            source_id: "g".into(),
            parent_source_id: None,
            title: None,
            messages: vec![
                m(Role::User, "", vec![ContentBlock::text("go")]),
                m(
                    Role::Tool,
                    "",
                    vec![text_result("lost_1", "orphan output", true)],
                ),
                m(
                    Role::Assistant,
                    "gemini-2.5-pro",
                    vec![ContentBlock::text("ok")],
                ),
            ],
        };
        let nodes = build_nodes(&session);
        let rendered = render_nodes(&nodes, "gemini", None);
        check_ends(&nodes, "gemini", &rendered);
        let back = reparse(&rendered);
        assert_eq!(
            back.messages[1].blocks,
            vec![
                ContentBlock::text("[tool result for lost_1 (error)]"),
                ContentBlock::text("orphan output")
            ]
        );
        assert_eq!(back.messages[1].role, Role::User);
    }

    #[test]
    fn native_ends_agree_with_the_parse() {
        let text = [
            r#"{"type":"session_meta","payload":{"id":"s1","cwd":"/a"}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"user","content":"hi"}}"#,
            r#"{"type":"turn_context","payload":{"model":"m1"}}"#,
            r#"{"type":"response_item","payload":{"type":"reasoning","summary":[{"type":"summary_text","text":"t"}]}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call","call_id":"c","name":"f","arguments":"{}"}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call_output","call_id":"c","output":"o"}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"bye"}]}}"#,
        ]
        .join("\n");
        let report = crate::import::codex::parse(Path::new("r.jsonl"), &text).expect("parses");
        let nodes = build_nodes(&report.sessions[0]);
        let rendered = render_nodes(&nodes, "codex", None);
        check_ends(&nodes, "codex", &rendered);
    }

    #[test]
    fn path_and_header_are_what_codex_reads() {
        let session = claude_shaped();
        let nodes = build_nodes(&session);
        let rendered = render_nodes(&nodes, "claude", None);
        let local = chrono::DateTime::from_timestamp_millis(NOW)
            .expect("time")
            .with_timezone(&chrono::Local);
        let expected = Path::new("/nonexistent-tapes-test/.codex/sessions")
            .join(local.format("%Y/%m/%d").to_string())
            .join(format!(
                "rollout-{}-{ID}.jsonl",
                local.format("%Y-%m-%dT%H-%M-%S")
            ));
        assert_eq!(rendered.path, expected);
        let text = String::from_utf8(rendered.bytes).expect("utf-8");
        let first: Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert_eq!(first["type"], "session_meta");
        assert_eq!(first["timestamp"], "2025-12-06T05:46:40.000Z");
        let meta = &first["payload"];
        assert_eq!(meta["id"], ID);
        assert_eq!(meta["cwd"], "/work/my project");
        assert_eq!(meta["cli_version"], CLI_VERSION);
        assert_eq!(meta["model_provider"], DEFAULT_PROVIDER);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("every line is JSON");
            assert!(
                v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{line}"
            );
        }
    }

    #[test]
    fn a_session_written_before_keeps_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let homes = AgentHomes {
            codex: dir.path().to_path_buf(),
            ..homes()
        };
        assert_eq!(existing_rollout(&homes, ID), None);
        let old = dir.path().join(format!(
            "sessions/2025/01/02/rollout-2025-01-02T03-04-05-{ID}.jsonl"
        ));
        std::fs::create_dir_all(old.parent().expect("dir")).expect("mkdir");
        std::fs::write(&old, "").expect("write");
        assert_eq!(existing_rollout(&homes, ID), Some(old.clone()));
        let nodes = build_nodes(&claude_shaped());
        let record = record("claude", None);
        let req = Render {
            nodes: &nodes,
            record: &record,
            session: SessionId([1; 16]),
            agent_session_id: ID,
            parent_agent_session_id: None,
            cwd: Path::new("/w"),
            now_ms: NOW,
        };
        assert_eq!(render(&req, &homes).expect("render").path, old);
    }

    #[test]
    fn provider_comes_from_the_codex_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(configured_provider(dir.path()), "openai");
        std::fs::write(
            dir.path().join("config.toml"),
            "model = \"m\"\nmodel_provider = \"standin\"\n[model_providers.standin]\nbase_url = \"http://127.0.0.1:1/v1\"\n",
        )
        .expect("write");
        assert_eq!(configured_provider(dir.path()), "standin");
        std::fs::write(dir.path().join("config.toml"), "not = [toml").expect("write");
        assert_eq!(configured_provider(dir.path()), "openai");
    }

    #[test]
    fn a_subagent_names_its_parent() {
        let nodes = build_nodes(&claude_shaped());
        let record = record("codex", None);
        let req = Render {
            nodes: &nodes,
            record: &record,
            session: SessionId([1; 16]),
            agent_session_id: ID,
            parent_agent_session_id: Some("0b6a4f6e-0000-4000-8000-000000000001"),
            cwd: Path::new("/w"),
            now_ms: NOW,
        };
        let rendered = render(&req, &homes()).expect("render");
        let text = String::from_utf8(rendered.bytes).expect("utf-8");
        assert!(text.lines().next().is_some_and(|l| l.contains(
            r#""source":{"subagent":{"thread_spawn":{"depth":1,"parent_thread_id":"0b6a4f6e-0000-4000-8000-000000000001"}}}"#
        )), "{text}");
    }
}
