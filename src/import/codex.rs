//! Codex rollout importer: `~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl`.
//!
//! A rollout holds one session. Each line is `{"timestamp", "type", "payload"}` with `type`
//! one of `session_meta`, `turn_context`, `response_item`, `event_msg` (and `compacted`). Only
//! `response_item` lines are the conversation as the model saw it (Responses API input and
//! output items); the rest is bookkeeping that feeds node metadata at most. Decisions:
//!
//! - **One node per response item.** A model call writes its reasoning, message and tool-call
//!   items one by one, and the watch mode re-imports files that are still growing. Merging the
//!   items of one call into one node would rewrite the last node (and fork the history) each
//!   time another item lands. With one node per item, a file that grows only adds nodes.
//! - **Roles.** Message roles map one-to-one (user, assistant, developer, system). Reasoning,
//!   `function_call`, `custom_tool_call`, `local_shell_call` and `web_search_call` are assistant
//!   nodes. `function_call_output` / `custom_tool_call_output` are **Tool** nodes holding one
//!   `ToolResult`: the Responses API sends them as separate input items, not as user messages.
//!   Exporters that need Anthropic's layout can still turn a Tool node into a user tool_result.
//!   The `user_message` / `agent_message` / `agent_reasoning` events repeat response items for
//!   the UI, so they are skipped. The `instructions` in `session_meta` are also skipped: the
//!   API takes them as a separate field, not as a message.
//! - **Reasoning.** The summary texts become one Thinking block, and raw `reasoning_text`
//!   content (open-weight models) a second one. `encrypted_content` is kept in an
//!   `Other { kind: "reasoning.encrypted_content" }` block. We keep it because dropping it cannot
//!   be undone once Codex deletes the rollout. It does not go in `Thinking.signature`, because
//!   exporters pass signatures on to Anthropic, which would reject an OpenAI blob. A reasoning
//!   item with only encrypted content is still a node, so the fact that the model reasoned at
//!   that point is kept.
//! - **Tool inputs.** `function_call.arguments` is JSON text. When it is valid it is parsed and
//!   canonicalized; otherwise (sanitized logs hold placeholders) the raw text is kept as a JSON
//!   string. `custom_tool_call.input` is freeform by definition (apply_patch bodies), so it is
//!   always kept as a JSON string, even when it happens to parse.
//! - **Tool outputs** are kept word for word, including the
//!   `{"output":…,"metadata":{"exit_code":…}}` wrapper that older CLIs put around shell output,
//!   because that wrapper is what the model read. `is_error` is set only when the output itself
//!   says `success: false`. A nonzero exit code is an answer, not a failed tool call.
//! - **Usage** comes from `event_msg` `token_count`. Codex writes each model call's count right
//!   after the call, then writes it again, with an identical `total_token_usage`, when the next
//!   request starts. A count whose total has not changed is that repeat and is ignored. The
//!   call's `last_token_usage` goes to the last assistant node written since the previous count,
//!   which is the item that ended the call. When there is no such node the count is dropped,
//!   because giving it to an older node could count it twice. OpenAI's `input_tokens` includes
//!   the cached tokens, but tapes keeps the two apart (pricing adds them up), so
//!   `input = input_tokens - cached_input_tokens` and `cache_read = cached_input_tokens`.
//!   `output_tokens` already includes the reasoning tokens.
//! - **Meta.** provider = `session_meta.model_provider`, agent = "codex", model = the latest
//!   `turn_context.model` (assistant nodes only), cwd = the latest `turn_context.cwd` (else the
//!   `session_meta` one), project = the last component of cwd, git branch =
//!   `session_meta.git.branch`, timestamp = the line's `timestamp`. The title is the latest
//!   `thread_name_updated` event.
//! - **Session id** = `session_meta.id`. Without it, the UUID at the end of the file name
//!   (`rollout-<time>-<uuid>.jsonl`, which is the same id) is used, and failing that the file
//!   stem. That way a damaged first line does not change the session.
//! - **skipped_types** counts every line that did not become a node, even when its data went
//!   into the metadata: `session_meta`, `turn_context`, `compacted`, `event_msg:<type>`,
//!   `response_item:<type>` (ghost_snapshot, compaction, unknown kinds), and
//!   `response_item:<type>:empty` for items that have nothing to store.
//! - A line that is not JSON, or a record without the fields it needs, becomes a `Warning` with
//!   its 1-based line number and is skipped. A cut-off file imports whatever it holds. A
//!   `function_call` that has no output stays a ToolUse with no result.

use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Value};
use tapes_protocol::{ContentBlock, ImageSource, NodeMeta, Role, ToolResultPart, Usage};

use super::{
    json_text, parse_timestamp, FileReport, ImportError, ParsedMessage, ParsedSession, Warning,
};

const SOURCE_KIND: &str = "codex";
const AGENT: &str = "codex";
/// `Other` block kind for reasoning the model returned encrypted (named after the Responses API
/// `include` value that asks for it).
pub const ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// Parses one rollout file into (at most) one session.
pub fn parse(path: &Path, text: &str) -> Result<FileReport, ImportError> {
    let mut rollout = Rollout::default();
    for (index, line) in text.lines().enumerate() {
        rollout.line(index + 1, line);
    }
    Ok(rollout.finish(path))
}

/// What a response item turns into: the node's role and blocks, or why it was unusable.
type Converted = Result<(Role, Vec<ContentBlock>), String>;

/// State carried from line to line while reading a rollout.
#[derive(Default)]
struct Rollout {
    report: FileReport,
    messages: Vec<ParsedMessage>,
    session_id: Option<String>,
    title: Option<String>,
    provider: Option<String>,
    git_branch: Option<String>,
    session_cwd: Option<String>,
    /// cwd and model of the current turn (the latest `turn_context`).
    turn_cwd: Option<String>,
    model: String,
    /// The assistant node written since the last token count, which the next count belongs to.
    usage_target: Option<usize>,
    /// `total_token_usage` of the last count, used to recognize the repeats.
    last_total: Option<Value>,
}

impl Rollout {
    fn line(&mut self, no: usize, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let record: Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(e) => return self.warn(no, format!("not valid JSON: {e}")),
        };
        let Some(kind) = str_field(&record, "type") else {
            return self.warn(no, "record without a `type`");
        };
        let timestamp = str_field(&record, "timestamp").and_then(parse_timestamp);
        let payload = record.get("payload").filter(|p| p.is_object());
        match (kind, payload) {
            ("response_item", Some(item)) => self.response_item(no, timestamp, item),
            ("session_meta", Some(meta)) => {
                self.session_meta(meta);
                self.skip("session_meta");
            }
            ("turn_context", Some(context)) => {
                self.turn_context(context);
                self.skip("turn_context");
            }
            ("event_msg", Some(event)) => self.event_msg(event),
            ("response_item" | "session_meta" | "turn_context" | "event_msg", None) => {
                self.warn(no, format!("`{kind}` record without a payload object"))
            }
            (other, _) => self.skip(other),
        }
    }

    fn session_meta(&mut self, meta: &Value) {
        // A resumed or forked rollout can repeat session_meta; the first one names the file's
        // session.
        if self.session_id.is_none() {
            self.session_id = non_empty(meta, "id");
        }
        if let Some(provider) = non_empty(meta, "model_provider") {
            self.provider = Some(provider);
        }
        if let Some(cwd) = non_empty(meta, "cwd") {
            self.session_cwd = Some(cwd);
        }
        if let Some(branch) = meta.get("git").and_then(|git| non_empty(git, "branch")) {
            self.git_branch = Some(branch);
        }
    }

    fn turn_context(&mut self, context: &Value) {
        if let Some(model) = non_empty(context, "model") {
            self.model = model;
        }
        if let Some(cwd) = non_empty(context, "cwd") {
            self.turn_cwd = Some(cwd);
        }
    }

    fn event_msg(&mut self, event: &Value) {
        let kind = str_field(event, "type");
        match kind {
            Some("token_count") => self.token_count(event),
            Some("thread_name_updated") => {
                if let Some(name) = non_empty(event, "thread_name") {
                    self.title = Some(name);
                }
            }
            _ => {}
        }
        match kind {
            Some(kind) => self.skip(&format!("event_msg:{kind}")),
            None => self.skip("event_msg"),
        }
    }

    /// Gives a model call's usage to the assistant node that ended the call (see the module
    /// doc for the repeats and the cached-token split).
    fn token_count(&mut self, event: &Value) {
        let (total, last) = match event.get("info") {
            Some(info) if info.is_object() => {
                (info.get("total_token_usage"), info.get("last_token_usage"))
            }
            // `info: null`: a rate-limit-only count, sent before the first model call.
            Some(_) => return,
            // Older CLIs put the usage fields directly in the event.
            None => (None, Some(event)),
        };
        if let Some(total) = total {
            if self.last_total.as_ref() == Some(total) {
                return;
            }
            self.last_total = Some(total.clone());
        }
        let Some(usage) = last.and_then(usage_from) else {
            return;
        };
        if let Some(message) = self
            .usage_target
            .take()
            .and_then(|i| self.messages.get_mut(i))
        {
            message.meta.usage = Some(usage);
        }
    }

    fn response_item(&mut self, no: usize, timestamp: Option<i64>, item: &Value) {
        let Some(kind) = str_field(item, "type") else {
            return self.warn(no, "response_item without a `type`");
        };
        let converted = match kind {
            "message" => message(item),
            "reasoning" => Ok(reasoning(item)),
            "function_call" => function_call(item),
            "custom_tool_call" => custom_tool_call(item),
            "local_shell_call" => local_shell_call(item),
            "web_search_call" => Ok(web_search_call(item)),
            "function_call_output" | "custom_tool_call_output" => tool_output(item),
            // ghost_snapshot (an undo point), compaction (history replaced by an encrypted
            // summary) and kinds this importer does not know.
            _ => return self.skip(&format!("response_item:{kind}")),
        };
        match converted {
            Err(why) => self.warn(no, format!("{kind}: {why}")),
            Ok((_, blocks)) if blocks.is_empty() => {
                self.skip(&format!("response_item:{kind}:empty"))
            }
            Ok((role, blocks)) => self.push(role, blocks, timestamp),
        }
    }

    fn push(&mut self, role: Role, blocks: Vec<ContentBlock>, timestamp_ms: Option<i64>) {
        let cwd = self.turn_cwd.clone().or_else(|| self.session_cwd.clone());
        let meta = NodeMeta {
            provider: self.provider.clone(),
            agent: Some(AGENT.to_owned()),
            project: cwd.as_deref().and_then(project_name),
            cwd,
            git_branch: self.git_branch.clone(),
            timestamp_ms,
            ..NodeMeta::default()
        };
        let model = if role == Role::Assistant {
            self.usage_target = Some(self.messages.len());
            self.model.clone()
        } else {
            String::new()
        };
        self.messages.push(ParsedMessage {
            role,
            model,
            blocks,
            meta,
        });
    }

    fn finish(mut self, path: &Path) -> FileReport {
        if self.messages.is_empty() {
            return self.report;
        }
        self.backfill_meta();
        let source_id = match self.session_id.take() {
            Some(id) => id,
            None => {
                self.warn(
                    0,
                    "no session_meta with an id; the session id is taken from the file name",
                );
                id_from_file_name(path)
            }
        };
        let mut report = self.report;
        report.sessions.push(ParsedSession {
            source_kind: SOURCE_KIND,
            source_id,
            parent_source_id: None,
            title: self.title,
            messages: self.messages,
        });
        report
    }

    /// session_meta is the first line of every rollout seen so far; this only matters for a
    /// file whose first lines were lost, where nodes were written before session_meta was read.
    fn backfill_meta(&mut self) {
        for message in &mut self.messages {
            let meta = &mut message.meta;
            if meta.provider.is_none() {
                meta.provider = self.provider.clone();
            }
            if meta.git_branch.is_none() {
                meta.git_branch = self.git_branch.clone();
            }
            if meta.cwd.is_none() {
                meta.cwd = self.session_cwd.clone();
                meta.project = meta.cwd.as_deref().and_then(project_name);
            }
        }
    }

    fn skip(&mut self, key: &str) {
        *self.report.skipped_types.entry(key.to_owned()).or_insert(0) += 1;
    }

    fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.report.warnings.push(Warning {
            line,
            message: message.into(),
        });
    }
}

// ---- response items -------------------------------------------------------------------------

fn message(item: &Value) -> Converted {
    let name = str_field(item, "role").ok_or("no `role`")?;
    let role = Role::parse(name).ok_or_else(|| format!("unknown role `{name}`"))?;
    let blocks = match item.get("content") {
        Some(Value::Array(parts)) => parts.iter().map(content_part).collect(),
        Some(Value::String(text)) => vec![ContentBlock::text(text.as_str())],
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("`content` is neither a list nor a string".into()),
    };
    Ok((role, blocks))
}

/// One message content part: `input_text` / `output_text` are text, `input_image` an image;
/// anything else (refusal, input_file, ...) is kept as an `Other` block.
fn content_part(part: &Value) -> ContentBlock {
    let kind = str_field(part, "type").unwrap_or("content_part");
    match (kind, str_field(part, "text"), str_field(part, "image_url")) {
        ("input_text" | "output_text" | "text", Some(text), _) => ContentBlock::text(text),
        ("input_image", _, Some(url)) => {
            let (media_type, source) = image_from_url(url);
            ContentBlock::Image { media_type, source }
        }
        _ => ContentBlock::Other {
            kind: kind.to_owned(),
            json: json_text(part),
        },
    }
}

fn reasoning(item: &Value) -> (Role, Vec<ContentBlock>) {
    let mut blocks = Vec::new();
    for texts in [item.get("summary"), item.get("content")] {
        if let Some(text) = joined_texts(texts) {
            blocks.push(ContentBlock::Thinking {
                text,
                signature: None,
            });
        }
    }
    if let Some(encrypted) = str_field(item, "encrypted_content").filter(|s| !s.is_empty()) {
        blocks.push(ContentBlock::Other {
            kind: ENCRYPTED_REASONING.to_owned(),
            json: json_text(&json!({ "encrypted_content": encrypted })),
        });
    }
    (Role::Assistant, blocks)
}

/// The `text` of each part of a reasoning `summary` / `content` list, blank-line separated.
fn joined_texts(parts: Option<&Value>) -> Option<String> {
    let texts: Vec<&str> = parts?
        .as_array()?
        .iter()
        .filter_map(|part| str_field(part, "text"))
        .filter(|text| !text.is_empty())
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n\n"))
}

fn function_call(item: &Value) -> Converted {
    let (id, name) = call_id_and_name(item)?;
    let input = match item.get("arguments") {
        Some(Value::String(raw)) => arguments_json(raw),
        Some(Value::Null) | None => "{}".to_owned(),
        Some(structured) => json_text(structured),
    };
    Ok((
        Role::Assistant,
        vec![ContentBlock::ToolUse { id, name, input }],
    ))
}

/// Function arguments as canonical JSON when they parse, else the raw text as a JSON string.
fn arguments_json(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(value) => json_text(&value),
        Err(_) => json_text(&Value::String(raw.to_owned())),
    }
}

fn custom_tool_call(item: &Value) -> Converted {
    let (id, name) = call_id_and_name(item)?;
    let raw = str_field(item, "input").unwrap_or("");
    let input = json_text(&Value::String(raw.to_owned()));
    Ok((
        Role::Assistant,
        vec![ContentBlock::ToolUse { id, name, input }],
    ))
}

/// The model's built-in shell tool; its output comes back as a `function_call_output`.
fn local_shell_call(item: &Value) -> Converted {
    let id = str_field(item, "call_id")
        .or_else(|| str_field(item, "id"))
        .ok_or("no `call_id`")?;
    let input = json_text(item.get("action").unwrap_or(&json!({})));
    let block = ContentBlock::ToolUse {
        id: id.to_owned(),
        name: "local_shell".to_owned(),
        input,
    };
    Ok((Role::Assistant, vec![block]))
}

/// A search the API ran on its own. No result item follows, so a ToolUse would be left
/// dangling; it is kept whole as an `Other` block, the way server tools are.
fn web_search_call(item: &Value) -> (Role, Vec<ContentBlock>) {
    let block = ContentBlock::Other {
        kind: "web_search_call".to_owned(),
        json: json_text(item),
    };
    (Role::Assistant, vec![block])
}

fn call_id_and_name(item: &Value) -> Result<(String, String), String> {
    let id = str_field(item, "call_id").ok_or("no `call_id`")?;
    let name = str_field(item, "name").ok_or("no `name`")?;
    Ok((id.to_owned(), name.to_owned()))
}

fn tool_output(item: &Value) -> Converted {
    let id = str_field(item, "call_id").ok_or("no `call_id`")?;
    let (is_error, content) = output_parts(item.get("output").unwrap_or(&Value::Null));
    let block = ContentBlock::ToolResult {
        tool_use_id: id.to_owned(),
        is_error,
        content,
    };
    Ok((Role::Tool, vec![block]))
}

/// A tool output is a string, a list of content items (MCP results with images), or the
/// `{content, success}` object that failed calls and older CLIs use.
fn output_parts(output: &Value) -> (bool, Vec<ToolResultPart>) {
    match output {
        Value::String(text) => (false, vec![ToolResultPart::Text { text: text.clone() }]),
        Value::Array(items) => (false, items.iter().map(output_item).collect()),
        Value::Object(fields) => {
            let is_error = fields.get("success").and_then(Value::as_bool) == Some(false);
            let parts = match (fields.get("content_items"), fields.get("content")) {
                (Some(Value::Array(items)), _) => items.iter().map(output_item).collect(),
                (_, Some(Value::String(text))) => vec![ToolResultPart::Text { text: text.clone() }],
                _ => vec![ToolResultPart::Text {
                    text: json_text(output),
                }],
            };
            (is_error, parts)
        }
        Value::Null => (false, Vec::new()),
        other => (
            false,
            vec![ToolResultPart::Text {
                text: json_text(other),
            }],
        ),
    }
}

fn output_item(item: &Value) -> ToolResultPart {
    if let Some(url) = str_field(item, "image_url") {
        let (media_type, source) = image_from_url(url);
        return ToolResultPart::Image { media_type, source };
    }
    match str_field(item, "text") {
        Some(text) => ToolResultPart::Text {
            text: text.to_owned(),
        },
        None => ToolResultPart::Text {
            text: json_text(item),
        },
    }
}

// ---- small helpers --------------------------------------------------------------------------

fn usage_from(counts: &Value) -> Option<Usage> {
    let count = |key: &str| counts.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cached_input_tokens");
    let usage = Usage {
        input_tokens: count("input_tokens").saturating_sub(cached),
        output_tokens: count("output_tokens"),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
    };
    (!usage.is_zero()).then_some(usage)
}

/// A `data:` URL becomes the image bytes. Any other URL stays a reference, and so does a data
/// URL that does not decode, so that nothing is lost.
fn image_from_url(url: &str) -> (String, ImageSource) {
    if let Some((media_type, data)) = decode_data_url(url) {
        return (media_type, ImageSource::Bytes { data });
    }
    (
        media_type_of(url),
        ImageSource::Reference {
            uri: url.to_owned(),
        },
    )
}

fn decode_data_url(url: &str) -> Option<(String, Vec<u8>)> {
    let (header, payload) = url.strip_prefix("data:")?.split_once(',')?;
    let media_type = header.strip_suffix(";base64")?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .ok()?;
    Some((media_type.to_owned(), data))
}

/// A media type guessed from a URL's extension; empty when it cannot be told.
fn media_type_of(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        _ => "",
    }
    .to_owned()
}

/// The last component of a working directory (POSIX or Windows separators).
fn project_name(cwd: &str) -> Option<String> {
    let trimmed = cwd.trim_end_matches(['/', '\\']);
    let name = trimmed.rsplit(['/', '\\']).next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// `rollout-2026-01-02T18-39-45-<uuid>.jsonl` names the session id; fall back to the stem.
fn id_from_file_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tail = stem
        .len()
        .checked_sub(36)
        .and_then(|start| stem.get(start..));
    match tail {
        Some(tail) if is_uuid(tail) => tail.to_owned(),
        _ if stem.is_empty() => path.display().to_string(),
        _ => stem,
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn non_empty(value: &Value, key: &str) -> Option<String> {
    str_field(value, key)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/agent-transcripts/codex/"
    );
    const CODEMIE: &str =
        "codemie_rollout-2026-01-02T18-39-45-019b7f94-51b4-7593-922e-ba12b5b73b52.jsonl";
    const LOCALPUSH_CUT: &str =
        "localpush_rollout-2026-02-23T13-19-38-019c8a70-dda7-7f33-98ea-f30553347322.jsonl";
    const LOCALPUSH_FULL: &str =
        "localpush_rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl";

    fn read_fixture(name: &str) -> (PathBuf, String) {
        let path = PathBuf::from(DIR).join(name);
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        (path, text)
    }

    /// Parses a fixture that must give one session and no warnings.
    fn session(name: &str) -> (ParsedSession, FileReport) {
        let (path, text) = read_fixture(name);
        let report = parse(&path, &text).expect("parses");
        assert_eq!(report.warnings, vec![], "{name}");
        assert_eq!(report.sessions.len(), 1, "{name}");
        (report.sessions[0].clone(), report)
    }

    /// One letter per node: U user, D developer, A assistant, T tool.
    fn roles(session: &ParsedSession) -> String {
        session
            .messages
            .iter()
            .map(|m| match m.role {
                Role::User => 'U',
                Role::Developer => 'D',
                Role::Assistant => 'A',
                Role::Tool => 'T',
                Role::System => 'S',
            })
            .collect()
    }

    fn skipped(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn tool_use_ids(session: &ParsedSession) -> Vec<String> {
        blocks(session)
            .filter_map(|b| match b {
                ContentBlock::ToolUse { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    fn tool_result_ids(session: &ParsedSession) -> Vec<String> {
        blocks(session)
            .filter_map(|b| match b {
                ContentBlock::ToolResult { tool_use_id, .. } => Some(tool_use_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn blocks(session: &ParsedSession) -> impl Iterator<Item = &ContentBlock> {
        session.messages.iter().flat_map(|m| m.blocks.iter())
    }

    /// Usage summed over the session, plus how many nodes carry usage.
    fn usage_sum(session: &ParsedSession) -> (Usage, usize) {
        let mut sum = Usage::default();
        let mut nodes = 0;
        for usage in session.messages.iter().filter_map(|m| m.meta.usage) {
            sum.input_tokens += usage.input_tokens;
            sum.output_tokens += usage.output_tokens;
            sum.cache_read_tokens += usage.cache_read_tokens;
            nodes += 1;
        }
        (sum, nodes)
    }

    #[test]
    fn every_fixture_is_covered() {
        if !crate::real_fixtures::present() {
            return;
        }
        // Each file in the fixture directory has its own test below; a new file must get one.
        let mut names: Vec<String> = std::fs::read_dir(DIR)
            .expect("fixture dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        names.sort();
        assert_eq!(names, vec![CODEMIE, LOCALPUSH_CUT, LOCALPUSH_FULL]);
        for name in &names {
            session(name);
        }
    }

    // Counted with:
    //   jq -r '.type + (if .type=="response_item" or .type=="event_msg" then ":"+.payload.type
    //     else "" end) + (if .payload.type=="message" then ":"+.payload.role else "" end)' F
    //     | sort | uniq -c
    // codemie (26 lines): message:user 3, reasoning 3, function_call 3, function_call_output 3
    // = 12 nodes; skipped session_meta 1, turn_context 4, ghost_snapshot 1, token_count 6,
    // user_message 1, agent_reasoning 1 = 14; 12 + 14 = 26.
    #[test]
    fn codemie_exec_session() {
        if !crate::real_fixtures::present() {
            return;
        }
        let (s, report) = session(CODEMIE);
        assert_eq!(s.source_kind, "codex");
        assert_eq!(s.source_id, "019b7f94-51b4-7593-922e-ba12b5b73b52");
        assert_eq!(s.title, None);
        assert_eq!(s.messages.len(), 12);
        // Lines 2-4 user; 9 reasoning, 10 call, 12 output; 15, 16, 18; 22, 23, 25.
        assert_eq!(roles(&s), "UUUAATAATAAT");
        assert_eq!(
            report.skipped_types,
            skipped(&[
                ("event_msg:agent_reasoning", 1),
                ("event_msg:token_count", 6),
                ("event_msg:user_message", 1),
                ("response_item:ghost_snapshot", 1),
                ("session_meta", 1),
                ("turn_context", 4),
            ])
        );

        let ids = tool_use_ids(&s);
        assert_eq!(ids.len(), 3);
        assert_eq!(tool_result_ids(&s), ids, "every call answered, in order");
        assert_eq!(ids[0], "call_1sXxutbQI29Z41aSr0GPiMSO");

        // Line 10's arguments are valid JSON, stored canonical (keys sorted).
        assert_eq!(
            s.messages[4].blocks,
            vec![ContentBlock::ToolUse {
                id: "call_1sXxutbQI29Z41aSr0GPiMSO".into(),
                name: "shell".into(),
                input: r#"{"command":["bash","-lc","ls"],"workdir":"/Users/Nikita_Levyankov/repos/EPMCDME/codemie-ai/codemie-code"}"#.into(),
            }]
        );
        // Line 12's output is kept verbatim, the {"output","metadata"} wrapper included.
        match &s.messages[5].blocks[..] {
            [ContentBlock::ToolResult {
                is_error: false,
                content,
                ..
            }] => match &content[..] {
                [ToolResultPart::Text { text }] => {
                    assert!(text.starts_with(r#"{"output":"_bmad\n"#))
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }

        // Line 9: empty summary, encrypted content only -> a node with one Other block.
        match &s.messages[3].blocks[..] {
            [ContentBlock::Other { kind, json }] => {
                assert_eq!(kind, ENCRYPTED_REASONING);
                assert!(json.starts_with(r#"{"encrypted_content":"gAAAAABpV_TV"#));
            }
            other => panic!("{other:?}"),
        }
        // Line 22: summary text -> Thinking, then the encrypted part.
        match &s.messages[9].blocks[..] {
            [ContentBlock::Thinking {
                text,
                signature: None,
            }, ContentBlock::Other { .. }] => {
                assert!(text.starts_with("**Clarifying documentation instructions**"))
            }
            other => panic!("{other:?}"),
        }

        // Usage: token_count lines 11, 17, 24 are new (14 and 20 repeat 11 and 17) and go to
        // the function_call nodes of lines 10, 16, 23. Line 17 last_token_usage: input 7546,
        // cached 7296, output 60 -> input 250.
        assert_eq!(
            s.messages[7].meta.usage,
            Some(Usage {
                input_tokens: 250,
                output_tokens: 60,
                cache_read_tokens: 7296,
                cache_write_tokens: 0
            })
        );
        // Sums equal the last total_token_usage (line 24): input 22474, cached 14848, out 300.
        let (sum, nodes) = usage_sum(&s);
        assert_eq!(nodes, 3);
        assert_eq!(
            (sum.input_tokens, sum.cache_read_tokens, sum.output_tokens),
            (22474 - 14848, 14848, 300)
        );
        assert!(s.messages[4].meta.usage.is_some() && s.messages[10].meta.usage.is_some());

        let assistant = &s.messages[4];
        assert_eq!(assistant.model, "gpt-5-1-codex-2025-11-13");
        assert_eq!(s.messages[0].model, "", "user nodes have no model");
        assert_eq!(s.messages[5].model, "", "tool nodes have no model");
        let meta = &assistant.meta;
        assert_eq!(meta.provider.as_deref(), Some("preview-codex"));
        assert_eq!(meta.agent.as_deref(), Some("codex"));
        assert_eq!(meta.git_branch.as_deref(), Some("codex"));
        assert_eq!(meta.project.as_deref(), Some("codemie-code"));
        assert_eq!(
            meta.cwd.as_deref(),
            Some("/Users/Nikita_Levyankov/repos/EPMCDME/codemie-ai/codemie-code")
        );
        // Line 10: "2026-01-02T16:39:49.666Z".
        assert_eq!(
            meta.timestamp_ms,
            parse_timestamp("2026-01-02T16:39:49.666Z")
        );
    }

    // localpush 13-19 (19 lines, cut off): developer 4, user 4, reasoning 1, assistant 1,
    // function_call 1 = 11 nodes; skipped session_meta 1, turn_context 1, task_started 1,
    // user_message 1, token_count 2, agent_reasoning 1, agent_message 1 = 8; 11 + 8 = 19.
    #[test]
    fn localpush_cut_off_session() {
        if !crate::real_fixtures::present() {
            return;
        }
        let (s, report) = session(LOCALPUSH_CUT);
        assert_eq!(s.source_id, "019c8a70-dda7-7f33-98ea-f30553347322");
        assert_eq!(s.messages.len(), 11);
        // Lines 2,3 D; 4,5 U; 6,7 D; 9,11 U; 15 reasoning, 17 message, 18 function_call.
        assert_eq!(roles(&s), "DDUUDDUUAAA");
        assert_eq!(
            report.skipped_types,
            skipped(&[
                ("event_msg:agent_message", 1),
                ("event_msg:agent_reasoning", 1),
                ("event_msg:task_started", 1),
                ("event_msg:token_count", 2),
                ("event_msg:user_message", 1),
                ("session_meta", 1),
                ("turn_context", 1),
            ])
        );
        // The call at line 18 never got its output: a ToolUse with no ToolResult. Its
        // arguments are a sanitizer placeholder, not JSON, so they are kept as a JSON string.
        assert_eq!(tool_result_ids(&s), Vec::<String>::new());
        assert_eq!(
            s.messages[10].blocks,
            vec![ContentBlock::ToolUse {
                id: "call_UtYwHmwWekzvq83m8Rb9K8jJ".into(),
                name: "exec_command".into(),
                input: r#""[REDACTED_ARGUMENTS len=456 sha=df6be51a]""#.into(),
            }]
        );
        // Line 13 has `info: null`; line 19 (input 34469, cached 3456, output 431) goes to
        // the function_call.
        assert_eq!(
            s.messages[10].meta.usage,
            Some(Usage {
                input_tokens: 34469 - 3456,
                output_tokens: 431,
                cache_read_tokens: 3456,
                cache_write_tokens: 0
            })
        );
        assert_eq!(usage_sum(&s).1, 1);
        assert_eq!(s.messages[9].model, "gpt-5.3-codex");
        assert_eq!(s.messages[0].role, Role::Developer);
        let meta = &s.messages[9].meta;
        assert_eq!(meta.provider.as_deref(), Some("openai"));
        assert_eq!(meta.git_branch.as_deref(), Some("main"));
        assert_eq!(meta.project.as_deref(), Some("da0ba47443"));
    }

    // localpush 20-34 (63 lines): developer 4, user 3, reasoning 6, assistant 6,
    // function_call 5, function_call_output 5 = 29 nodes; skipped session_meta 1,
    // turn_context 6, task_started 1, user_message 1, token_count 12, agent_reasoning 6,
    // agent_message 6, task_complete 1 = 34; 29 + 34 = 63.
    #[test]
    fn localpush_full_session() {
        if !crate::real_fixtures::present() {
            return;
        }
        let (s, report) = session(LOCALPUSH_FULL);
        assert_eq!(s.source_id, "019c8bfe-ec25-79e0-97d7-bda6a9c575ff");
        assert_eq!(s.messages.len(), 29);
        // Four rounds of reasoning, commentary, call, output; then reasoning and final answer.
        assert_eq!(roles(&s), format!("DDUUDDU{}AA", "AAAT".repeat(5)));
        assert_eq!(
            report.skipped_types,
            skipped(&[
                ("event_msg:agent_message", 6),
                ("event_msg:agent_reasoning", 6),
                ("event_msg:task_complete", 1),
                ("event_msg:task_started", 1),
                ("event_msg:token_count", 12),
                ("event_msg:user_message", 1),
                ("session_meta", 1),
                ("turn_context", 6),
            ])
        );
        let ids = tool_use_ids(&s);
        assert_eq!(ids.len(), 5);
        assert_eq!(tool_result_ids(&s), ids);
        // Redacted tool name kept as-is.
        assert!(blocks(&s).any(|b| matches!(b,
            ContentBlock::ToolUse { name, .. } if name == "[REDACTED_NAME len=43 sha=c186413b]")));

        // token_count lines 18, 27, 36, 45, 54, 62 are new; 21, 30, 39, 48, 57 repeat; 12 is
        // `info: null`. Six nodes carry usage: five function_calls and the final answer.
        let (sum, nodes) = usage_sum(&s);
        assert_eq!(nodes, 6);
        // The sums equal the final total_token_usage (line 62): input 298373, cached 238848,
        // output 1123. This shows that no repeat was counted.
        assert_eq!(
            (sum.input_tokens, sum.cache_read_tokens, sum.output_tokens),
            (298373 - 238848, 238848, 1123)
        );
        let last = s.messages.last().expect("nodes");
        assert_eq!(last.role, Role::Assistant);
        assert_eq!(
            last.meta.usage,
            Some(Usage {
                input_tokens: 63441 - 49664,
                output_tokens: 286,
                cache_read_tokens: 49664,
                cache_write_tokens: 0
            })
        );
        assert_eq!(last.model, "gpt-5.3-codex");
        assert_eq!(last.meta.project.as_deref(), Some("ea96e59ed9"));
    }

    #[test]
    fn malformed_lines_are_warned_and_skipped() {
        if !crate::real_fixtures::present() {
            return;
        }
        // codemie lines 1-25 with a garbage line inserted after line 4, and line 25 (a
        // function_call_output) cut in half. In the new text the garbage is line 5 and the
        // cut line is 26.
        let (path, text) = read_fixture(CODEMIE);
        let lines: Vec<&str> = text.lines().take(25).collect();
        let cut = &lines[24][..lines[24].len() / 2];
        let mut damaged: Vec<&str> = lines[..4].to_vec();
        damaged.push("this is {not json");
        damaged.extend_from_slice(&lines[4..24]);
        damaged.push(cut);
        let report = parse(&path, &damaged.join("\n")).expect("parses");

        let warned: Vec<usize> = report.warnings.iter().map(|w| w.line).collect();
        assert_eq!(warned, vec![5, 26], "{:?}", report.warnings);
        let s = &report.sessions[0];
        // 12 nodes minus the lost output; the last turn_context (line 26 of the original) is
        // no longer there either.
        assert_eq!(s.messages.len(), 11);
        assert_eq!(roles(s), "UUUAATAATAA");
        assert_eq!(report.skipped_types.get("turn_context"), Some(&3));
    }

    #[test]
    fn records_without_needed_fields_are_warned() {
        let text = [
            r#"{"type":"session_meta","payload":{"id":"s1","cwd":"C:\\work\\proj\\"}}"#,
            r#"[1,2]"#,
            r#"{"type":"response_item"}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"robot","content":[]}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call","name":"x"}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}}"#,
            r#"{"type":"response_item","payload":{"type":"reasoning","summary":[],"content":null}}"#,
            "",
        ]
        .join("\n");
        let report = parse(Path::new("x.jsonl"), &text).expect("parses");
        let warned: Vec<usize> = report.warnings.iter().map(|w| w.line).collect();
        assert_eq!(warned, vec![2, 3, 4, 5], "{:?}", report.warnings);
        assert_eq!(
            report.skipped_types.get("response_item:reasoning:empty"),
            Some(&1)
        );
        let s = &report.sessions[0];
        assert_eq!(s.source_id, "s1");
        assert_eq!(roles(s), "U");
        assert_eq!(s.messages[0].meta.project.as_deref(), Some("proj"));
    }

    #[test]
    fn other_item_kinds() {
        let text = [
            // No session_meta: the id comes from the file name.
            r#"{"timestamp":"2026-01-01T00:00:00Z","type":"turn_context","payload":{"model":"m1","cwd":"/a/b"}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"look"},{"type":"input_image","image_url":"data:image/png;base64,iVBORw=="}]}}"#,
            r#"{"type":"response_item","payload":{"type":"custom_tool_call","call_id":"c1","name":"apply_patch","input":"*** Begin Patch"}}"#,
            r#"{"type":"event_msg","payload":{"type":"token_count","input_tokens":10,"cached_input_tokens":4,"output_tokens":2}}"#,
            r#"{"type":"response_item","payload":{"type":"custom_tool_call_output","call_id":"c1","output":"Done"}}"#,
            r#"{"type":"response_item","payload":{"type":"local_shell_call","call_id":"c2","status":"completed","action":{"type":"exec","command":["ls"]}}}"#,
            r#"{"type":"response_item","payload":{"type":"function_call_output","call_id":"c2","output":{"content":"boom","success":false}}}"#,
            r#"{"type":"response_item","payload":{"type":"web_search_call","status":"completed","action":{"type":"search","query":"q"}}}"#,
            r#"{"type":"response_item","payload":{"type":"reasoning","summary":[{"type":"summary_text","text":"a"},{"type":"summary_text","text":"b"}],"content":[{"type":"reasoning_text","text":"raw"}]}}"#,
            r#"{"type":"event_msg","payload":{"type":"thread_name_updated","thread_name":"My thread"}}"#,
            r#"{"type":"compacted","payload":{"message":"sum"}}"#,
            r#"{"type":"response_item","payload":{"type":"future_thing"}}"#,
        ]
        .join("\n");
        let path =
            Path::new("/x/rollout-2026-01-01T00-00-00-0199aaaa-bbbb-7ccc-8ddd-eeeeffff0000.jsonl");
        let report = parse(path, &text).expect("parses");
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert_eq!(report.warnings[0].line, 0);
        let s = &report.sessions[0];
        assert_eq!(s.source_id, "0199aaaa-bbbb-7ccc-8ddd-eeeeffff0000");
        assert_eq!(s.title.as_deref(), Some("My thread"));
        assert_eq!(roles(s), "UATATAA");
        assert_eq!(
            s.messages[0].blocks[1],
            ContentBlock::Image {
                media_type: "image/png".into(),
                source: ImageSource::Bytes {
                    data: vec![0x89, b'P', b'N', b'G']
                }
            }
        );
        // Freeform input is a JSON string, never parsed.
        assert_eq!(
            s.messages[1].blocks,
            vec![ContentBlock::ToolUse {
                id: "c1".into(),
                name: "apply_patch".into(),
                input: r#""*** Begin Patch""#.into()
            }]
        );
        // Flat (older) token_count layout.
        assert_eq!(
            s.messages[1].meta.usage,
            Some(Usage {
                input_tokens: 6,
                output_tokens: 2,
                cache_read_tokens: 4,
                cache_write_tokens: 0
            })
        );
        assert_eq!(s.messages[1].model, "m1");
        assert_eq!(s.messages[1].meta.project.as_deref(), Some("b"));
        assert_eq!(s.messages[0].meta.timestamp_ms, None);
        assert!(matches!(&s.messages[3].blocks[0],
            ContentBlock::ToolUse { name, input, .. } if name == "local_shell" && input == r#"{"command":["ls"],"type":"exec"}"#));
        assert!(matches!(&s.messages[4].blocks[0],
            ContentBlock::ToolResult { is_error: true, content, .. }
                if content == &vec![ToolResultPart::Text { text: "boom".into() }]));
        assert!(
            matches!(&s.messages[5].blocks[0], ContentBlock::Other { kind, .. } if kind == "web_search_call")
        );
        assert_eq!(
            s.messages[6].blocks,
            vec![
                ContentBlock::Thinking {
                    text: "a\n\nb".into(),
                    signature: None
                },
                ContentBlock::Thinking {
                    text: "raw".into(),
                    signature: None
                },
            ]
        );
        assert_eq!(report.skipped_types.get("compacted"), Some(&1));
        assert_eq!(
            report.skipped_types.get("response_item:future_thing"),
            Some(&1)
        );
    }

    #[test]
    fn empty_file_has_no_session() {
        let report = parse(Path::new("rollout-x.jsonl"), "").expect("parses");
        assert!(report.sessions.is_empty());
    }
}
