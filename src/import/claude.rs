//! Claude Code importer: one `~/.claude/projects/<project>/*.jsonl` transcript (a main session,
//! a v2.0.x top-level `agent-<id>.jsonl`, or a v2.1.x `<session>/subagents/agent-*.jsonl`) into
//! [`ParsedSession`]s. It only parses; building nodes and writing happen in `crate::ingest`.
//!
//! Format decisions, and why:
//!
//! - **Which lines are messages.** Only `user` and `assistant` lines. `summary`, `progress`,
//!   `queue-operation`, `file-history-snapshot` and `system` lines are counted in
//!   [`FileReport::skipped_types`] under their `type`, and so is any type this importer does not
//!   know (new Claude Code versions add some; that must not fail an import). `system` lines
//!   (`turn_duration`, `local_command`, `stop_hook_summary`, `compact_boundary`) are Claude Code's
//!   own bookkeeping and UI echo: the model never saw them, so they are not conversation.
//! - **One node per API message.** Claude Code writes one line per content block, every line
//!   repeating the same `message.id`. All lines of one id in one session become one node, blocks
//!   in file order, placed where the id first appeared. The lines need not be adjacent: v2.1.x
//!   writes a tool's result line as soon as the tool ran, before the rest of the same response
//!   (fixture `spotter_tool_heavy`, lines 34/36/37), so merging only adjacent lines would cut one
//!   API response in two. Usage is the last line's (each line repeats the counter so far; the last
//!   one is the final count), and so is a non-null `stop_reason`; timestamp, uuid (`origin_id`),
//!   cwd and branch are the first line's, i.e. when the response started.
//! - **Tool results stay `Role::User`**, as the Anthropic Messages API and the transcript have
//!   them, so writing the session back for `claude --resume` needs no role mapping.
//! - **Which session a line belongs to.** A line with an `agentId` belongs to the subagent
//!   session `<sessionId>/agent-<agentId>` (v2.0.x and v2.1.x subagent files; their `sessionId` is
//!   the parent's). A v1.0.x inline sidechain line (`isSidechain: true`, no `agentId`) belongs to
//!   `<sessionId>/sidechain-<root uuid>`, the root being the first sidechain line reached by
//!   following `parentUuid` (one Task run = one root). Anything else belongs to its `sessionId`.
//!   Subagents and sidechains get `parent_source_id = sessionId`. A file holding only subagent
//!   lines yields only the subagent session; sessions come out in order of first appearance.
//! - **Order is file order, no branch pruning.** Claude Code records parallel tool results as
//!   siblings in the `parentUuid` tree (each result's parent is the line holding its own tool_use),
//!   so walking back from the leaf would drop real tool results. The price: a conversation
//!   rewound and re-run inside one file is imported with both branches, in file order.
//! - **Title** = the `summary` text of a summary line whose `leafUuid` is a line of the session
//!   (the one whose leaf is latest), which is how Claude Code's own resume picker matches them.
//!   Summaries naming leaves outside the file describe other transcripts of the project (all 16
//!   in fixture `codemie_9eda1058` do, several on unrelated topics), so they title nothing.
//! - **Provider** is "bedrock" for message ids starting `msg_bdrk_`, "vertex" for `msg_vrtx_`,
//!   else "anthropic"; user messages get the provider of the session's first assistant message,
//!   since they were sent to that backend. `project` is the last component of `cwd`;
//!   `git_branch` is None when Claude Code wrote "" (no repository).
//! - **Blocks.** `text`, `thinking` (an empty signature is None), `tool_use` (input as canonical
//!   JSON), `tool_result` (string content = one text part; list parts of unknown kind are kept as
//!   their JSON in a text part) and `image` (base64 decoded, `url`/`file` sources as references)
//!   are modeled; any other block, or a modeled one missing a required field, is kept whole as
//!   `ContentBlock::Other` so nothing the agent wrote is lost. A plain-string `content` is one
//!   text block.
//! - **Bad input.** An invalid JSON line, a non-object line, a line without `type`, a message line
//!   without `sessionId` or `message.content`, and a repeated `uuid` each give a [`Warning`] with
//!   the 1-based line number and are skipped. An empty (or blank) file is an empty report: Claude
//!   Code creates the file before writing to it, and a watcher may see it then. A non-blank file in
//!   which no line is a JSON object is [`ImportError::Malformed`]: it is not a transcript, and a
//!   successful import of nothing would hide that.

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};
use tapes_protocol::{ContentBlock, ImageSource, NodeMeta, Role, ToolResultPart, Usage};

use super::{json_text, parse_timestamp, FileReport, ImportError, ParsedMessage, ParsedSession, Warning};

const SOURCE_KIND: &str = "claude";
const AGENT: &str = "claude-code";
const DEFAULT_PROVIDER: &str = "anthropic";

/// Parses one Claude Code transcript already read into `text`.
pub fn parse(path: &Path, text: &str) -> Result<FileReport, ImportError> {
    let mut report = FileReport::default();
    let records = read_records(path, text, &mut report.warnings)?;
    let tree = LineTree::new(&records);
    let mut sessions = SessionSet::default();
    let mut summaries = Vec::new();
    for record in &records {
        let Some(kind) = str_field(&record.value, "type") else {
            report.warnings.push(warning(record.line, "line has no string `type`"));
            continue;
        };
        let role = match kind {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => {
                *report.skipped_types.entry(kind.to_owned()).or_default() += 1;
                if kind == "summary" {
                    summaries.extend(Summary::read(record));
                }
                continue;
            }
        };
        match read_message(record, role, &tree) {
            Ok(line) => sessions.add(line, &mut report.warnings),
            Err(why) => report.warnings.push(warning(record.line, why)),
        }
    }
    report.sessions = sessions.finish(&summaries, &records, &tree);
    Ok(report)
}

/// One JSON object line of the file.
struct Record {
    /// 1-based line number.
    line: usize,
    value: Map<String, Value>,
}

/// Splits `text` into JSON object lines, warning about (and skipping) every other non-blank line.
fn read_records(path: &Path, text: &str, warnings: &mut Vec<Warning>) -> Result<Vec<Record>, ImportError> {
    let mut records = Vec::new();
    let mut first_error: Option<Warning> = None;
    // A UTF-8 byte order mark is not part of the first record.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let problem = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(value)) => {
                records.push(Record { line, value });
                continue;
            }
            Ok(_) => "line is JSON but not an object".to_owned(),
            Err(e) => format!("invalid JSON: {e}"),
        };
        let w = warning(line, problem);
        first_error.get_or_insert_with(|| w.clone());
        warnings.push(w);
    }
    match first_error {
        Some(w) if records.is_empty() => Err(ImportError::malformed(path, w.line, format!("no Claude Code record in the file; first problem: {}", w.message))),
        _ => Ok(records),
    }
}

/// The `parentUuid` links of every line that has a `uuid`, and the root of every inline
/// sidechain line, worked out once for the whole file.
struct LineTree<'a> {
    /// uuid -> (parentUuid, isSidechain)
    links: HashMap<&'a str, (Option<&'a str>, bool)>,
    /// uuid of a sidechain line -> uuid of its sidechain's root line
    roots: HashMap<&'a str, &'a str>,
}

impl<'a> LineTree<'a> {
    fn new(records: &'a [Record]) -> Self {
        let mut links = HashMap::new();
        for record in records {
            if let Some(uuid) = str_field(&record.value, "uuid") {
                let parent = str_field(&record.value, "parentUuid");
                links.entry(uuid).or_insert((parent, is_sidechain(&record.value)));
            }
        }
        let mut tree = LineTree { links, roots: HashMap::new() };
        for record in records {
            if let (Some(uuid), true) = (str_field(&record.value, "uuid"), is_sidechain(&record.value)) {
                let root = tree.find_root(uuid);
                tree.roots.insert(uuid, root);
            }
        }
        tree
    }

    /// Follows `parentUuid` from `uuid` while the parent is a sidechain line of this file.
    fn find_root(&self, uuid: &'a str) -> &'a str {
        let mut current = uuid;
        // Bounded by the number of lines, so a parent cycle in a corrupt file cannot loop forever.
        for _ in 0..=self.links.len() {
            // Parents are normally written before their children, so their root is often known.
            if current != uuid {
                if let Some(root) = self.roots.get(current) {
                    return root;
                }
            }
            match self.links.get(current) {
                Some((Some(parent), _)) if matches!(self.links.get(parent), Some((_, true))) => current = parent,
                _ => break,
            }
        }
        current
    }

    fn root_of(&self, uuid: &'a str) -> &'a str {
        self.roots.get(uuid).copied().unwrap_or(uuid)
    }
}

/// Which session a line belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionKey {
    source_id: String,
    parent_source_id: Option<String>,
}

/// The session of any line carrying a `sessionId` (see the module doc for the rules).
fn session_key(value: &Map<String, Value>, tree: &LineTree) -> Option<SessionKey> {
    let session_id = non_empty(str_field(value, "sessionId"))?;
    let child = |suffix: String| SessionKey {
        source_id: format!("{session_id}/{suffix}"),
        parent_source_id: Some(session_id.to_owned()),
    };
    if let Some(agent_id) = non_empty(str_field(value, "agentId")) {
        return Some(child(format!("agent-{agent_id}")));
    }
    if is_sidechain(value) {
        // A sidechain line without uuid cannot be placed in its run; they share one session.
        return Some(match str_field(value, "uuid") {
            Some(uuid) => child(format!("sidechain-{}", tree.root_of(uuid))),
            None => child("sidechain".to_owned()),
        });
    }
    Some(SessionKey { source_id: session_id.to_owned(), parent_source_id: None })
}

/// One `user`/`assistant` line, read.
struct LineMessage {
    line: usize,
    key: SessionKey,
    uuid: Option<String>,
    /// The API message id of an assistant line: lines sharing it are one message.
    message_id: Option<String>,
    message: ParsedMessage,
}

fn read_message(record: &Record, role: Role, tree: &LineTree) -> Result<LineMessage, String> {
    let value = &record.value;
    let key = session_key(value, tree).ok_or("message line has no `sessionId`")?;
    let message = value.get("message").and_then(Value::as_object).ok_or("message line has no `message` object")?;
    let content = message.get("content").ok_or("`message` has no `content`")?;
    let blocks = content_blocks(content)?;
    let message_id = match role {
        Role::Assistant => non_empty(str_field(message, "id")).map(str::to_owned),
        _ => None,
    };
    let model = match role {
        Role::Assistant => str_field(message, "model").unwrap_or("").to_owned(),
        _ => String::new(),
    };
    let uuid = non_empty(str_field(value, "uuid")).map(str::to_owned);
    let mut meta = line_meta(value, uuid.clone());
    if role == Role::Assistant {
        meta.provider = Some(provider_of(message_id.as_deref().unwrap_or("")).to_owned());
        meta.usage = usage(message);
        meta.stop_reason = non_empty(str_field(message, "stop_reason")).map(str::to_owned);
    }
    Ok(LineMessage { line: record.line, key, uuid, message_id, message: ParsedMessage { role, model, blocks, meta } })
}

/// The meta every message line carries; provider, usage and stop reason are added by the caller.
fn line_meta(value: &Map<String, Value>, uuid: Option<String>) -> NodeMeta {
    let cwd = non_empty(str_field(value, "cwd"));
    NodeMeta {
        agent: Some(AGENT.to_owned()),
        project: cwd.and_then(project_name),
        cwd: cwd.map(str::to_owned),
        git_branch: non_empty(str_field(value, "gitBranch")).map(str::to_owned),
        timestamp_ms: str_field(value, "timestamp").and_then(parse_timestamp),
        origin_id: uuid,
        ..NodeMeta::default()
    }
}

/// The project name: the last component of the working directory (Unix or Windows separators).
fn project_name(cwd: &str) -> Option<String> {
    let trimmed = cwd.trim_end_matches(['/', '\\']);
    trimmed.rsplit(['/', '\\']).next().filter(|name| !name.is_empty()).map(str::to_owned)
}

/// Claude Code on Bedrock and Vertex keeps the provider's own message id prefix.
fn provider_of(message_id: &str) -> &'static str {
    if message_id.starts_with("msg_bdrk_") {
        "bedrock"
    } else if message_id.starts_with("msg_vrtx_") {
        "vertex"
    } else {
        DEFAULT_PROVIDER
    }
}

fn usage(message: &Map<String, Value>) -> Option<Usage> {
    let usage = message.get("usage")?.as_object()?;
    let count = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        input_tokens: count("input_tokens"),
        output_tokens: count("output_tokens"),
        cache_read_tokens: count("cache_read_input_tokens"),
        cache_write_tokens: count("cache_creation_input_tokens"),
    })
}

fn content_blocks(content: &Value) -> Result<Vec<ContentBlock>, String> {
    match content {
        Value::String(text) => Ok(vec![ContentBlock::text(text.clone())]),
        Value::Array(items) => Ok(items.iter().map(content_block).collect()),
        _ => Err("`message.content` is neither a string nor a list".to_owned()),
    }
}

/// One content block; anything not modeled (or malformed) is kept whole as `Other`.
fn content_block(block: &Value) -> ContentBlock {
    let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
    let modeled = match kind {
        "text" => block.get("text").and_then(Value::as_str).map(ContentBlock::text),
        "thinking" => thinking_block(block),
        "tool_use" => tool_use_block(block),
        "tool_result" => tool_result_block(block),
        "image" => image(block).map(|(media_type, source)| ContentBlock::Image { media_type, source }),
        _ => None,
    };
    modeled.unwrap_or_else(|| ContentBlock::Other {
        kind: if kind.is_empty() { "unknown".to_owned() } else { kind.to_owned() },
        json: json_text(block),
    })
}

fn thinking_block(block: &Value) -> Option<ContentBlock> {
    let text = block.get("thinking")?.as_str()?.to_owned();
    let signature = block.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    Some(ContentBlock::Thinking { text, signature })
}

fn tool_use_block(block: &Value) -> Option<ContentBlock> {
    let id = block.get("id")?.as_str()?.to_owned();
    let name = block.get("name")?.as_str()?.to_owned();
    // The API requires an input object; a missing one means "no arguments".
    let input = block.get("input").map_or_else(|| "{}".to_owned(), json_text);
    Some(ContentBlock::ToolUse { id, name, input })
}

fn tool_result_block(block: &Value) -> Option<ContentBlock> {
    let tool_use_id = block.get("tool_use_id")?.as_str()?.to_owned();
    let is_error = block.get("is_error").and_then(Value::as_bool).unwrap_or(false);
    let content = match block.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![ToolResultPart::Text { text: text.clone() }],
        Some(Value::Array(parts)) => parts.iter().map(tool_result_part).collect(),
        Some(other) => vec![ToolResultPart::Text { text: json_text(other) }],
    };
    Some(ContentBlock::ToolResult { tool_use_id, is_error, content })
}

/// A tool result part; kinds other than text and image keep their JSON as text, so the result
/// keeps its tool_use id and its place instead of becoming an opaque block.
fn tool_result_part(part: &Value) -> ToolResultPart {
    let modeled = match part.get("type").and_then(Value::as_str) {
        Some("text") => part.get("text").and_then(Value::as_str).map(|text| ToolResultPart::Text { text: text.to_owned() }),
        Some("image") => image(part).map(|(media_type, source)| ToolResultPart::Image { media_type, source }),
        _ => None,
    };
    modeled.unwrap_or_else(|| ToolResultPart::Text { text: json_text(part) })
}

/// An image block's media type and source, or None when its source is unusable.
fn image(block: &Value) -> Option<(String, ImageSource)> {
    let source = block.get("source")?;
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    let media_type = field("media_type").or_else(|| block.get("media_type").and_then(Value::as_str)).unwrap_or("").to_owned();
    let image_source = match field("type")? {
        "base64" => ImageSource::Bytes { data: base64_lenient().decode(field("data")?).ok()? },
        "url" => ImageSource::Reference { uri: field("url")?.to_owned() },
        "file" => ImageSource::Reference { uri: field("file_id")?.to_owned() },
        _ => return None,
    };
    Some((media_type, image_source))
}

/// Standard alphabet, padding optional: some writers drop it, and the bytes are the same.
fn base64_lenient() -> GeneralPurpose {
    GeneralPurpose::new(&base64::alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent))
}

/// A `summary` line: a title for the conversation ending at `leaf_uuid`.
struct Summary<'a> {
    line: usize,
    leaf_uuid: &'a str,
    text: &'a str,
}

impl<'a> Summary<'a> {
    fn read(record: &'a Record) -> Option<Self> {
        Some(Summary {
            line: record.line,
            leaf_uuid: non_empty(str_field(&record.value, "leafUuid"))?,
            text: non_empty(str_field(&record.value, "summary"))?,
        })
    }
}

/// The sessions of one file, in order of first appearance.
#[derive(Default)]
struct SessionSet {
    sessions: Vec<SessionBuilder>,
    by_source_id: HashMap<String, usize>,
}

struct SessionBuilder {
    key: SessionKey,
    messages: Vec<ParsedMessage>,
    /// message.id -> index in `messages`, to merge the per-block lines of one response.
    by_message_id: HashMap<String, usize>,
    /// uuid -> line it was first seen on, to drop repeated lines.
    seen_uuids: HashMap<String, usize>,
}

impl SessionSet {
    fn add(&mut self, line: LineMessage, warnings: &mut Vec<Warning>) {
        let session = self.session_mut(&line.key);
        if let Some(uuid) = &line.uuid {
            if let Some(first) = session.seen_uuids.get(uuid) {
                warnings.push(warning(line.line, format!("uuid {uuid} repeats line {first}; skipped")));
                return;
            }
            session.seen_uuids.insert(uuid.clone(), line.line);
        }
        if let Some(id) = line.message_id {
            if let Some(&index) = session.by_message_id.get(&id) {
                if let Some(earlier) = session.messages.get_mut(index) {
                    merge_into(earlier, line.message);
                    return;
                }
            }
            session.by_message_id.insert(id, session.messages.len());
        }
        session.messages.push(line.message);
    }

    fn session_mut(&mut self, key: &SessionKey) -> &mut SessionBuilder {
        let index = match self.by_source_id.get(&key.source_id) {
            Some(&index) => index,
            None => {
                self.sessions.push(SessionBuilder {
                    key: key.clone(),
                    messages: Vec::new(),
                    by_message_id: HashMap::new(),
                    seen_uuids: HashMap::new(),
                });
                self.by_source_id.insert(key.source_id.clone(), self.sessions.len() - 1);
                self.sessions.len() - 1
            }
        };
        &mut self.sessions[index]
    }

    fn finish(self, summaries: &[Summary], records: &[Record], tree: &LineTree) -> Vec<ParsedSession> {
        let titles = titles(summaries, records, tree);
        self.sessions
            .into_iter()
            .map(|builder| {
                let mut messages = builder.messages;
                fill_user_provider(&mut messages);
                ParsedSession {
                    source_kind: SOURCE_KIND,
                    title: titles.get(&builder.key.source_id).cloned(),
                    source_id: builder.key.source_id,
                    parent_source_id: builder.key.parent_source_id,
                    messages,
                }
            })
            .collect()
    }
}

/// Adds a later line of the same API response to the message its first line started.
fn merge_into(earlier: &mut ParsedMessage, later: ParsedMessage) {
    earlier.blocks.extend(later.blocks);
    // Each line repeats the usage counted so far; the last line's is the response's total.
    if later.meta.usage.is_some() {
        earlier.meta.usage = later.meta.usage;
    }
    if later.meta.stop_reason.is_some() {
        earlier.meta.stop_reason = later.meta.stop_reason;
    }
    if earlier.model.is_empty() {
        earlier.model = later.model;
    }
}

/// User messages went to the same backend as the session's assistant replies.
fn fill_user_provider(messages: &mut [ParsedMessage]) {
    let provider = messages.iter().find_map(|m| m.meta.provider.clone()).unwrap_or_else(|| DEFAULT_PROVIDER.to_owned());
    for message in messages.iter_mut().filter(|m| m.meta.provider.is_none()) {
        message.meta.provider = Some(provider.clone());
    }
}

/// source_id -> title, from the summaries whose leaf is a line of that session; the summary of
/// the latest leaf wins (it describes the most of the conversation), then the latest summary.
fn titles(summaries: &[Summary], records: &[Record], tree: &LineTree) -> HashMap<String, String> {
    let mut owner: HashMap<&str, (SessionKey, usize)> = HashMap::new();
    for record in records {
        if let (Some(uuid), Some(key)) = (str_field(&record.value, "uuid"), session_key(&record.value, tree)) {
            owner.entry(uuid).or_insert((key, record.line));
        }
    }
    let mut best: HashMap<String, ((usize, usize), &str)> = HashMap::new();
    for summary in summaries {
        let Some((key, leaf_line)) = owner.get(summary.leaf_uuid) else { continue };
        let rank = (*leaf_line, summary.line);
        let slot = best.entry(key.source_id.clone()).or_insert((rank, summary.text));
        if rank >= slot.0 {
            *slot = (rank, summary.text);
        }
    }
    best.into_iter().map(|(source_id, (_, text))| (source_id, text.to_owned())).collect()
}

fn str_field<'a>(value: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn is_sidechain(value: &Map<String, Value>) -> bool {
    value.get("isSidechain").and_then(Value::as_bool).unwrap_or(false)
}

fn warning(line: usize, message: impl Into<String>) -> Warning {
    Warning { line, message: message.into() }
}
