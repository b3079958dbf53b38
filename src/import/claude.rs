//! Claude Code importer: one `~/.claude/projects/<project>/*.jsonl` transcript (a main session,
//! a v2.0.x top-level `agent-<id>.jsonl`, or a v2.1.x `<session>/subagents/agent-*.jsonl`) into
//! [`ParsedSession`]s. It only parses; building nodes and writing happen in `crate::import::ingest`.
//!
//! Format decisions, and why:
//!
//! - **Which lines are messages.** Only `user` and `assistant` lines. `summary`, `progress`,
//!   `queue-operation`, `file-history-snapshot` and `system` lines are counted in
//!   [`FileReport::skipped_types`] under their `type`, and so is any type this importer does not
//!   know (new Claude Code versions add some; that must not fail an import). `system` lines
//!   (`turn_duration`, `local_command`, `stop_hook_summary`, `compact_boundary`) are Claude Code's
//!   own bookkeeping and UI echo, not sent to the model, so they are not conversation.
//! - **One node per API message.** Claude Code writes one line per content block, every line
//!   repeating the same `message.id`. All lines of one id in one session become one node, blocks
//!   in file order, placed where the id first appeared. The lines need not be adjacent: v2.1.x
//!   writes a tool's result line as soon as the tool ran, before the rest of the same response
//!   (fixture `spotter_tool_heavy`, lines 34/36/37), so merging only adjacent lines would cut one
//!   API response in two. Usage is the last line's (each line repeats the usage as known when it
//!   was written; the last is the most complete), and so is a non-null `stop_reason`; timestamp,
//!   uuid (`origin_id`), cwd and branch are the first line's, i.e. when the response started.
//! - **Tool results stay `Role::User`**, as the Anthropic Messages API and the transcript have
//!   them, so writing the session back for `claude --resume` needs no role mapping.
//! - **Which session a line belongs to.** A line with an `agentId` belongs to the subagent
//!   session `<sessionId>/agent-<agentId>` (v2.0.x and v2.1.x subagent files; their `sessionId` is
//!   the parent's). A v1.0.x inline sidechain line (`isSidechain: true`, no `agentId`) belongs to
//!   `<sessionId>/sidechain-<root uuid>`, the root being its oldest sidechain ancestor along
//!   `parentUuid` (one Task run = one root). Anything else belongs to its `sessionId`.
//!   Subagents and sidechains get `parent_source_id = sessionId`. A file holding only subagent
//!   lines yields only the subagent session; sessions come out in order of first appearance.
//! - **Order is file order, no branch pruning.** Claude Code records parallel tool results as
//!   siblings in the `parentUuid` tree (each result's parent is the line holding its own tool_use),
//!   so walking back from the leaf would drop real tool results. The price: a conversation
//!   rewound and re-run inside one file is imported with both branches, in file order.
//! - **Title** = the `summary` text of a summary line whose `leafUuid` is a line of the session
//!   (the one whose leaf is latest): `leafUuid` names the line the summarized conversation ends
//!   on. Summaries naming leaves outside the file describe other transcripts of the project (all
//!   16 in fixture `codemie_9eda1058` do, several on unrelated topics), so they title nothing.
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

use super::{
    json_text, parse_timestamp, FileReport, ImportError, ParsedMessage, ParsedSession, Warning,
};

const SOURCE_KIND: &str = "claude";
const AGENT: &str = "claude-code";
const DEFAULT_PROVIDER: &str = "anthropic";

/// Parses one Claude Code transcript already read into `text`.
pub fn parse(path: &Path, text: &str) -> Result<FileReport, ImportError> {
    let mut report = FileReport::default();
    let records = read_records(path, text, &mut report.warnings)?;
    parse_records(report, records)
}

/// [`parse`], freeing the text as soon as its lines are read (import's path: memory stays
/// within a small multiple of the longest line).
pub fn parse_owned(path: &Path, text: String) -> Result<FileReport, ImportError> {
    let mut report = FileReport::default();
    let records = read_records(path, &text, &mut report.warnings)?;
    drop(text);
    parse_records(report, records)
}

fn parse_records(mut report: FileReport, records: Vec<Record>) -> Result<FileReport, ImportError> {
    let tree = LineTree::new(&records);
    let mut sessions = SessionSet::default();
    let mut summaries = Vec::new();
    for record in &records {
        let Some(kind) = str_field(&record.value, "type") else {
            report
                .warnings
                .push(warning(record.line, "line has no string `type`"));
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
    /// The line without its `message`.
    value: Map<String, Value>,
    /// The line's `message`, taken out when it is read: a 50 MB reply is held once as JSON and
    /// then once as blocks, never both for the whole file (SPEC §8).
    message: std::cell::RefCell<Option<Value>>,
}

/// Splits `text` into JSON object lines, warning about (and skipping) every other non-blank line.
fn read_records(
    path: &Path,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Record>, ImportError> {
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
            Ok(Value::Object(mut value)) => {
                let message = value.remove("message");
                records.push(Record {
                    line,
                    value,
                    message: std::cell::RefCell::new(message),
                });
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
        Some(w) if records.is_empty() => Err(ImportError::malformed(
            path,
            w.line,
            format!(
                "no Claude Code record in the file; first problem: {}",
                w.message
            ),
        )),
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
                links
                    .entry(uuid)
                    .or_insert((parent, is_sidechain(&record.value)));
            }
        }
        let mut tree = LineTree {
            links,
            roots: HashMap::new(),
        };
        for record in records {
            if let (Some(uuid), true) = (
                str_field(&record.value, "uuid"),
                is_sidechain(&record.value),
            ) {
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
                Some((Some(parent), _)) if matches!(self.links.get(parent), Some((_, true))) => {
                    current = parent
                }
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
    Some(SessionKey {
        source_id: session_id.to_owned(),
        parent_source_id: None,
    })
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
    let taken = record.message.take();
    let message = taken
        .as_ref()
        .and_then(Value::as_object)
        .ok_or("message line has no `message` object")?;
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
    Ok(LineMessage {
        line: record.line,
        key,
        uuid,
        message_id,
        message: ParsedMessage {
            role,
            model,
            blocks,
            meta,
        },
    })
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
    trimmed
        .rsplit(['/', '\\'])
        .next()
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
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
        "text" => block
            .get("text")
            .and_then(Value::as_str)
            .map(ContentBlock::text),
        "thinking" => thinking_block(block),
        "tool_use" => tool_use_block(block),
        "tool_result" => tool_result_block(block),
        "image" => {
            image(block).map(|(media_type, source)| ContentBlock::Image { media_type, source })
        }
        _ => None,
    };
    modeled.unwrap_or_else(|| ContentBlock::Other {
        kind: if kind.is_empty() {
            "unknown".to_owned()
        } else {
            kind.to_owned()
        },
        json: json_text(block),
    })
}

fn thinking_block(block: &Value) -> Option<ContentBlock> {
    let text = block.get("thinking")?.as_str()?.to_owned();
    let signature = block
        .get("signature")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Some(ContentBlock::Thinking { text, signature })
}

fn tool_use_block(block: &Value) -> Option<ContentBlock> {
    let id = block.get("id")?.as_str()?.to_owned();
    let name = block.get("name")?.as_str()?.to_owned();
    // The API requires an input object; a missing one means "no arguments".
    let input = block
        .get("input")
        .map_or_else(|| "{}".to_owned(), json_text);
    Some(ContentBlock::ToolUse { id, name, input })
}

fn tool_result_block(block: &Value) -> Option<ContentBlock> {
    let tool_use_id = block.get("tool_use_id")?.as_str()?.to_owned();
    let is_error = block
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let content = match block.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![ToolResultPart::Text { text: text.clone() }],
        Some(Value::Array(parts)) => parts.iter().map(tool_result_part).collect(),
        Some(other) => vec![ToolResultPart::Text {
            text: json_text(other),
        }],
    };
    Some(ContentBlock::ToolResult {
        tool_use_id,
        is_error,
        content,
    })
}

/// A tool result part; kinds other than text and image keep their JSON as text, so the result
/// keeps its tool_use id and its place instead of becoming an opaque block.
fn tool_result_part(part: &Value) -> ToolResultPart {
    let modeled = match part.get("type").and_then(Value::as_str) {
        Some("text") => part
            .get("text")
            .and_then(Value::as_str)
            .map(|text| ToolResultPart::Text {
                text: text.to_owned(),
            }),
        Some("image") => {
            image(part).map(|(media_type, source)| ToolResultPart::Image { media_type, source })
        }
        _ => None,
    };
    modeled.unwrap_or_else(|| ToolResultPart::Text {
        text: json_text(part),
    })
}

/// An image block's media type and source, or None when its source is unusable.
fn image(block: &Value) -> Option<(String, ImageSource)> {
    let source = block.get("source")?;
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    let media_type = field("media_type")
        .or_else(|| block.get("media_type").and_then(Value::as_str))
        .unwrap_or("")
        .to_owned();
    let image_source = match field("type")? {
        "base64" => ImageSource::Bytes {
            data: base64_lenient().decode(field("data")?).ok()?,
        },
        "url" => ImageSource::Reference {
            uri: field("url")?.to_owned(),
        },
        "file" => ImageSource::Reference {
            uri: field("file_id")?.to_owned(),
        },
        _ => return None,
    };
    Some((media_type, image_source))
}

/// Standard alphabet, padding optional: some writers drop it, and the bytes are the same.
fn base64_lenient() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
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
                warnings.push(warning(
                    line.line,
                    format!("uuid {uuid} repeats line {first}; skipped"),
                ));
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
                self.by_source_id
                    .insert(key.source_id.clone(), self.sessions.len() - 1);
                self.sessions.len() - 1
            }
        };
        &mut self.sessions[index]
    }

    fn finish(
        self,
        summaries: &[Summary],
        records: &[Record],
        tree: &LineTree,
    ) -> Vec<ParsedSession> {
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
    let provider = messages
        .iter()
        .find_map(|m| m.meta.provider.clone())
        .unwrap_or_else(|| DEFAULT_PROVIDER.to_owned());
    for message in messages.iter_mut().filter(|m| m.meta.provider.is_none()) {
        message.meta.provider = Some(provider.clone());
    }
}

/// source_id -> title, from the summaries whose leaf is a line of that session; the summary of
/// the latest leaf wins (it describes the most of the conversation), then the latest summary.
fn titles(summaries: &[Summary], records: &[Record], tree: &LineTree) -> HashMap<String, String> {
    let mut owner: HashMap<&str, (SessionKey, usize)> = HashMap::new();
    for record in records {
        if let (Some(uuid), Some(key)) = (
            str_field(&record.value, "uuid"),
            session_key(&record.value, tree),
        ) {
            owner.entry(uuid).or_insert((key, record.line));
        }
    }
    let mut best: HashMap<String, ((usize, usize), &str)> = HashMap::new();
    for summary in summaries {
        let Some((key, leaf_line)) = owner.get(summary.leaf_uuid) else {
            continue;
        };
        let rank = (*leaf_line, summary.line);
        let slot = best
            .entry(key.source_id.clone())
            .or_insert((rank, summary.text));
        if rank >= slot.0 {
            *slot = (rank, summary.text);
        }
    }
    best.into_iter()
        .map(|(source_id, (_, text))| (source_id, text.to_owned()))
        .collect()
}

fn str_field<'a>(value: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn is_sidechain(value: &Map<String, Value>) -> bool {
    value
        .get("isSidechain")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn warning(line: usize, message: impl Into<String>) -> Warning {
    Warning {
        line,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    //! Expected counts were worked out by hand from the fixtures, independently of this code:
    //! a line-by-line dump (`python3` printing type, uuid, parentUuid, isSidechain, message.id
    //! and block kinds of every line), counting user lines one message each and assistant lines
    //! one message per distinct `message.id` within a session, and `jq -r .type | sort | uniq -c`
    //! for the skipped types. Each fixture test repeats the arithmetic in a comment.

    use std::collections::{BTreeMap, HashSet};
    use std::path::PathBuf;

    use super::*;

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/agent-transcripts/claude/"
    );

    fn fixture_text(name: &str) -> String {
        let path = PathBuf::from(FIXTURES).join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Parses a fixture and checks what holds for all of them: no warnings, and every tool
    /// result answers a tool use seen earlier in the same session.
    fn fixture(name: &str) -> FileReport {
        let path = PathBuf::from(FIXTURES).join(name);
        let report = parse(&path, &fixture_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.warnings, vec![], "{name}");
        for session in &report.sessions {
            assert_tool_ids_round_trip(session);
        }
        report
    }

    fn parse_str(text: &str) -> FileReport {
        parse(Path::new("test.jsonl"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn assert_tool_ids_round_trip(session: &ParsedSession) {
        let mut used = HashSet::new();
        for message in &session.messages {
            for block in &message.blocks {
                match block {
                    ContentBlock::ToolUse { id, .. } => {
                        assert!(
                            used.insert(id.clone()),
                            "{}: tool_use id {id} twice",
                            session.source_id
                        );
                    }
                    ContentBlock::ToolResult { tool_use_id, .. } => {
                        assert!(
                            used.contains(tool_use_id),
                            "{}: result for unknown {tool_use_id}",
                            session.source_id
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    /// (source_id, parent_source_id, message count) of every session.
    fn shape(report: &FileReport) -> Vec<(&str, Option<&str>, usize)> {
        report
            .sessions
            .iter()
            .map(|s| {
                (
                    s.source_id.as_str(),
                    s.parent_source_id.as_deref(),
                    s.messages.len(),
                )
            })
            .collect()
    }

    fn skipped(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn count_role(session: &ParsedSession, role: Role) -> usize {
        session.messages.iter().filter(|m| m.role == role).count()
    }

    fn tool_count(report: &FileReport) -> usize {
        let blocks = report
            .sessions
            .iter()
            .flat_map(|s| &s.messages)
            .flat_map(|m| &m.blocks);
        blocks
            .filter(|b| matches!(b, ContentBlock::ToolUse { .. }))
            .count()
    }

    fn by_origin<'a>(session: &'a ParsedSession, uuid: &str) -> (usize, &'a ParsedMessage) {
        session
            .messages
            .iter()
            .enumerate()
            .find(|(_, m)| m.meta.origin_id.as_deref() == Some(uuid))
            .unwrap_or_else(|| panic!("no message with origin {uuid}"))
    }

    fn kinds(message: &ParsedMessage) -> Vec<&'static str> {
        message
            .blocks
            .iter()
            .map(|b| match b {
                ContentBlock::Text { .. } => "text",
                ContentBlock::Thinking { .. } => "thinking",
                ContentBlock::ToolUse { .. } => "tool_use",
                ContentBlock::ToolResult { .. } => "tool_result",
                ContentBlock::Image { .. } => "image",
                ContentBlock::Other { .. } => "other",
            })
            .collect()
    }

    fn tool_use_ids(message: &ParsedMessage) -> Vec<&str> {
        message
            .blocks
            .iter()
            .filter_map(|b| {
                if let ContentBlock::ToolUse { id, .. } = b {
                    Some(id.as_str())
                } else {
                    None
                }
            })
            .collect()
    }

    fn tool_result_ids(message: &ParsedMessage) -> Vec<&str> {
        let ids = message.blocks.iter().filter_map(|b| match b {
            ContentBlock::ToolResult { tool_use_id, .. } => Some(tool_use_id.as_str()),
            _ => None,
        });
        ids.collect()
    }

    fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
        })
    }

    #[test]
    fn v1_0_98_init_merges_split_assistant_lines() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 29 lines: 14 user + 15 assistant lines. The 15 assistant lines carry 7 message ids:
        // TqDZ (lines 3-4), 018mu (6-10), TRqe (16-18), XP9 (22), RaR4 (24-25), PbR8 (27),
        // EoAx (29). 14 + 7 = 21 messages. 12 tool_use / 12 tool_result blocks.
        let report = fixture("ccv_1af7fc5e_v1.0.98_init.jsonl");
        assert_eq!(
            shape(&report),
            vec![("1af7fc5e-8455-4414-9ccd-011d40f70b2a", None, 21)]
        );
        assert_eq!(report.skipped_types, skipped(&[]));
        let session = &report.sessions[0];
        assert_eq!(
            (
                count_role(session, Role::User),
                count_role(session, Role::Assistant)
            ),
            (14, 7)
        );
        assert_eq!(tool_count(&report), 12);
        assert_eq!(session.title, None);

        // Line 1: a plain-string user content is one text block; no model, provider inherited.
        let first = &session.messages[0];
        assert_eq!(first.blocks, vec![ContentBlock::text("<command-message>init is analyzing your codebase…</command-message>\n<command-name>/init</command-name>")]);
        assert_eq!(first.model, "");
        assert_eq!(first.meta.provider.as_deref(), Some("anthropic"));

        // Lines 6-10 (msg_018mu…): one node, five tool uses, first line's uuid and timestamp,
        // last line's usage (output_tokens 30, 30, 30, 30, then 285).
        let (index, merged) = by_origin(session, "a1bdced2-6cf5-4c3a-b700-d5e13eb64d9d");
        assert_eq!(kinds(merged), vec!["tool_use"; 5]);
        assert_eq!(merged.meta.usage, usage(6, 285, 15550, 304));
        assert_eq!(
            merged.meta.timestamp_ms,
            parse_timestamp("2025-09-03T00:47:28.532Z")
        );
        assert_eq!(merged.model, "claude-sonnet-4-20250514");
        let meta = &merged.meta;
        assert_eq!(meta.provider.as_deref(), Some("anthropic"));
        assert_eq!(meta.agent.as_deref(), Some("claude-code"));
        assert_eq!(
            (meta.project.as_deref(), meta.cwd.as_deref()),
            (Some("Demo"), Some("/path/to/Demo"))
        );
        assert_eq!(meta.git_branch, None, "gitBranch \"\" means no branch");

        // Tool id round trip: the second tool use (line 7) is answered first (line 11).
        assert_eq!(tool_use_ids(merged)[1], "toolu_01MEJ7TRMeoTyDi6EZLHM2zY");
        let answer = &session.messages[index + 1];
        assert_eq!(
            answer.meta.origin_id.as_deref(),
            Some("1e44b866-2276-421f-93a2-84076f656559")
        );
        assert_eq!(
            answer.blocks,
            vec![ContentBlock::ToolResult {
                tool_use_id: "toolu_01MEJ7TRMeoTyDi6EZLHM2zY".into(),
                is_error: false,
                content: vec![ToolResultPart::Text {
                    text: "No files found".into()
                }],
            }]
        );
        if let ContentBlock::ToolUse { name, input, .. } = &merged.blocks[4] {
            assert_eq!(
                (name.as_str(), input.as_str()),
                ("Glob", r#"{"pattern":".cursorrules"}"#)
            );
        } else {
            panic!("line 10 is a tool use");
        }
    }

    #[test]
    fn v1_0_108_inline_sidechains_become_their_own_sessions() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 53 lines, 22 with isSidechain. Main: lines 1-15, 23-25, 41-53 = 15 user lines + 10
        // assistant ids (3LjZ, s9o1, 8jEY, Q2Uf, Efim, X1Tg, 21Lu, g1pF, V3BS, 3JVu) = 25.
        // Sidechain rooted at line 16 (parentUuid null): lines 16-22 = 3 user + 3 ids = 6.
        // Sidechain rooted at line 26: lines 26-40 = 7 user + 7 ids = 14.
        let report = fixture("ccv_5c0375b4_v1.0.108_inline-sidechain.jsonl");
        let main = "5c0375b4-57a5-4f26-b12d-d022ee4e51b7";
        assert_eq!(
            shape(&report),
            vec![
                (main, None, 25),
                ("5c0375b4-57a5-4f26-b12d-d022ee4e51b7/sidechain-6340ddef-f656-4b72-a065-82390f637678", Some(main), 6),
                ("5c0375b4-57a5-4f26-b12d-d022ee4e51b7/sidechain-83e2917c-8940-4df6-a5a5-f2514f0d08c5", Some(main), 14),
            ]
        );
        assert_eq!(report.skipped_types, skipped(&[]));
        assert_eq!(tool_count(&report), 21);
        let sidechain = &report.sessions[1];
        assert!(
            matches!(&sidechain.messages[0].blocks[..], [ContentBlock::Text { text }] if text.starts_with("Examine the package.json"))
        );

        // Line 23: a tool result whose content is a list of text blocks.
        let answer = report.sessions[0]
            .messages
            .iter()
            .find(|m| tool_result_ids(m) == ["toolu_014YF9TXhDRR7BnpasNJ7gjC"])
            .unwrap_or_else(|| panic!("line 23 missing"));
        match &answer.blocks[..] {
            [ContentBlock::ToolResult { content, .. }] => {
                assert!(
                    matches!(&content[..], [ToolResultPart::Text { text }] if text.starts_with("## Package.json Analysis Summary"))
                );
            }
            other => panic!("unexpected blocks {other:?}"),
        }
    }

    #[test]
    fn v2_0_64_bedrock() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 25 lines: 6 file-history-snapshot, 9 user, 10 assistant lines with 7 ids (ihWm on
        // lines 3-6, then one line each) = 16 messages. 6 tool uses, ids `toolu_bdrk_…`.
        let report = fixture("codemie_4c2ddfdc_v2.0.64_bedrock.jsonl");
        assert_eq!(
            shape(&report),
            vec![("4c2ddfdc-b619-4525-8d03-1950fb1b0257", None, 16)]
        );
        assert_eq!(
            report.skipped_types,
            skipped(&[("file-history-snapshot", 6)])
        );
        assert_eq!(tool_count(&report), 6);
        let session = &report.sessions[0];
        assert!(session
            .messages
            .iter()
            .all(|m| m.meta.provider.as_deref() == Some("bedrock")));

        let (index, merged) = by_origin(session, "f4dfad6e-e564-4e66-b8b0-b469f5204e23");
        assert_eq!(
            kinds(merged),
            vec!["text", "tool_use", "tool_use", "tool_use"]
        );
        assert_eq!(
            merged.meta.usage,
            usage(3, 395, 0, 35066),
            "line 6's usage, not line 3's (output 4)"
        );
        assert_eq!(merged.meta.git_branch.as_deref(), Some("analytics-v2"));
        assert_eq!(merged.meta.project.as_deref(), Some("private"));
        assert_eq!(
            tool_use_ids(merged)[0],
            "toolu_bdrk_01QRsKSkDDpcbN5DcZGF6N69"
        );
        assert_eq!(
            tool_result_ids(&session.messages[index + 1]),
            ["toolu_bdrk_01QRsKSkDDpcbN5DcZGF6N69"]
        );
    }

    #[test]
    fn v2_0_64_top_level_agent_file() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 2 lines, both agentId 36541525 with the parent's sessionId: 1 user + 1 assistant.
        let report = fixture("codemie_agent-36541525_v2.0.64_warmup-sidechain.jsonl");
        let parent = "4c2ddfdc-b619-4525-8d03-1950fb1b0257";
        assert_eq!(
            shape(&report),
            vec![(
                "4c2ddfdc-b619-4525-8d03-1950fb1b0257/agent-36541525",
                Some(parent),
                2
            )]
        );
        assert_eq!(report.skipped_types, skipped(&[]));
        assert_eq!(
            report.sessions[0].messages[0].blocks,
            vec![ContentBlock::text("Warmup")]
        );
        assert_eq!(
            report.sessions[0].messages[1].meta.provider.as_deref(),
            Some("bedrock")
        );
    }

    #[test]
    fn v2_1_4_summaries_thinking_and_system_lines() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 40 lines: 3 file-history-snapshot, 16 summary, 2 system (turn_duration), 7 user, 12
        // assistant lines with 5 ids: SkdR (lines 7 and 20, 13 summary lines apart), vqvT
        // (25-27), F4UP (29-30), tFQz (34-36), m9yd (38-39). 7 + 5 = 12 messages.
        let report = fixture("codemie_9eda1058_v2.1.4_summaries.jsonl");
        assert_eq!(
            shape(&report),
            vec![("9eda1058-9706-484a-b992-d03f9cfa2546", None, 12)]
        );
        assert_eq!(
            report.skipped_types,
            skipped(&[("file-history-snapshot", 3), ("summary", 16), ("system", 2)])
        );
        assert_eq!(tool_count(&report), 3);
        let session = &report.sessions[0];
        // None of the 16 leafUuids is a line of this file: they title other transcripts.
        assert_eq!(session.title, None);

        let (_, merged) = by_origin(session, "afa3056f-e8da-4327-bd96-a74df9257044");
        assert_eq!(kinds(merged), vec!["thinking", "text", "tool_use"]);
        assert_eq!(merged.meta.usage.map(|u| u.output_tokens), Some(406));
        assert!(
            matches!(&merged.blocks[0], ContentBlock::Thinking { signature: Some(s), .. } if !s.is_empty())
        );
        let (_, split) = by_origin(session, "81847213-ebd6-4c28-acb2-642b65ce3741");
        assert_eq!(kinds(split), vec!["text", "tool_use"]);
        assert_eq!(split.meta.usage.map(|u| u.output_tokens), Some(1662));
    }

    #[test]
    fn v2_1_38_short_with_progress_lines() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 15 lines: 1 file-history-snapshot, 3 progress, 2 system, 4 user, 5 assistant lines
        // all of id u8pY (lines 5-8 and 10, a progress line between) = 4 + 1 = 5 messages.
        let report = fixture("spotter_short_v2.1.38.jsonl");
        assert_eq!(
            shape(&report),
            vec![("55604662-cf2a-4331-851a-ec234028f8ca", None, 5)]
        );
        assert_eq!(
            report.skipped_types,
            skipped(&[("file-history-snapshot", 1), ("progress", 3), ("system", 2)])
        );
        let (index, merged) =
            by_origin(&report.sessions[0], "1b7d717f-d6a2-46a6-8575-fa4f937450ea");
        assert_eq!(index, 1);
        assert_eq!(
            kinds(merged),
            vec!["text", "thinking", "text", "tool_use", "tool_use"]
        );
        assert_eq!(merged.model, "claude-opus-4-6");
        assert_eq!(merged.meta.usage, usage(3, 13, 11515, 13835));
        assert_eq!(merged.meta.project.as_deref(), Some("spotter"));
    }

    #[test]
    fn v2_1_38_tool_heavy_merges_an_id_split_by_its_own_tool_result() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 39 lines: 3 file-history-snapshot, 10 progress, 2 queue-operation, 2 system, 13 user,
        // 9 assistant lines with 4 ids: uZK7 (5), b8gy (12-13), TgDS (27-30), BN5j (34 and 37,
        // with the result of line 34's tool on line 36 between). 13 + 4 = 17 messages.
        let report = fixture("spotter_tool_heavy_v2.1.38.jsonl");
        assert_eq!(
            shape(&report),
            vec![("d6e0bada-1959-4eec-a9d2-0bfade768d8f", None, 17)]
        );
        assert_eq!(
            report.skipped_types,
            skipped(&[
                ("file-history-snapshot", 3),
                ("progress", 10),
                ("queue-operation", 2),
                ("system", 2)
            ])
        );
        assert_eq!(tool_count(&report), 6);
        let session = &report.sessions[0];
        let (index, merged) = by_origin(session, "9c0157de-950c-4b36-8c81-537b79e0d6b4");
        assert_eq!(
            tool_use_ids(merged),
            [
                "toolu_01VpPeBD2ziigLLpybShAGoU",
                "toolu_017Q5Sr8KaSgowYhbKXBnfV2"
            ]
        );
        assert_eq!(merged.meta.usage, usage(47, 173, 26504, 1115));
        assert_eq!(
            tool_result_ids(&session.messages[index + 1]),
            ["toolu_01VpPeBD2ziigLLpybShAGoU"]
        );
        assert_eq!(
            tool_result_ids(&session.messages[index + 2]),
            ["toolu_017Q5Sr8KaSgowYhbKXBnfV2"]
        );
    }

    #[test]
    fn v2_1_38_subagent_parent() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 96 lines: 3 file-history-snapshot, 44 progress (19 agent_progress), 1 system, 20 user,
        // 28 assistant lines with 12 ids (3xEi 7 lines, 4wfb 4 lines split by a tool result,
        // CYjU 3, WS4a 3, KBrX 2, Rnat 2, DHig 2 split by progress lines, 5 single). 20 + 12 = 32.
        let report = fixture("spotter_subagent-parent_v2.1.38.jsonl");
        assert_eq!(
            shape(&report),
            vec![("491e126e-1e71-469c-ade2-fcc8af567c74", None, 32)]
        );
        assert_eq!(
            report.skipped_types,
            skipped(&[
                ("file-history-snapshot", 3),
                ("progress", 44),
                ("system", 1)
            ])
        );
        assert_eq!(tool_count(&report), 16);
        let (_, merged) = by_origin(&report.sessions[0], "47a27705-fb07-49aa-8748-6610d93a1c68");
        assert_eq!(
            kinds(merged),
            vec!["thinking", "text", "tool_use", "tool_use"]
        );
    }

    #[test]
    fn v2_1_39_subagents_file() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 40 lines, all agentId aac57f5: 12 progress, 13 user, 15 assistant lines with 3 ids
        // (XbuinN lines 2-8, h4fsVE lines 21-24 and 29-31 around two results, 387c line 40).
        let report = fixture("spotter_subagents_agent-aac57f5_v2.1.39.jsonl");
        let parent = "ae4a77f8-aedd-4bc1-888f-c94edc91af04";
        assert_eq!(
            shape(&report),
            vec![(
                "ae4a77f8-aedd-4bc1-888f-c94edc91af04/agent-aac57f5",
                Some(parent),
                16
            )]
        );
        assert_eq!(report.skipped_types, skipped(&[("progress", 12)]));
        assert_eq!(tool_count(&report), 12);
        let (_, merged) = by_origin(&report.sessions[0], "99766122-ecc4-4288-8388-858ddd259564");
        assert_eq!(
            kinds(merged),
            vec!["text", "tool_use", "tool_use", "tool_use", "tool_use", "tool_use", "tool_use"]
        );
    }

    #[test]
    fn v2_1_39_compaction_agent_file() {
        if !crate::real_fixtures::present() {
            return;
        }
        // 15 lines, all agentId acompact-70d8e7: 14 user (13 isMeta + the summary request) and
        // 1 assistant. Every parentUuid points outside the file; the agentId still groups them.
        let report = fixture("spotter_subagents_agent-acompact-70d8e7_v2.1.39.jsonl");
        let parent = "fa812bfe-b295-4cca-9c2f-fdf01028cb46";
        assert_eq!(
            shape(&report),
            vec![(
                "fa812bfe-b295-4cca-9c2f-fdf01028cb46/agent-acompact-70d8e7",
                Some(parent),
                15
            )]
        );
        assert_eq!(report.skipped_types, skipped(&[]));
        assert_eq!(count_role(&report.sessions[0], Role::Assistant), 1);
    }

    /// The last 29 lines of the v1.0.98 fixture end on an assistant line (line 29).
    #[test]
    fn truncated_last_line_warns_and_keeps_the_rest() {
        if !crate::real_fixtures::present() {
            return;
        }
        let text = fixture_text("ccv_1af7fc5e_v1.0.98_init.jsonl");
        let cut = text.trim_end().len() - 40;
        let report = parse_str(&text[..cut]);
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].line, 29);
        assert!(
            report.warnings[0].message.contains("invalid JSON"),
            "{}",
            report.warnings[0].message
        );
        assert_eq!(
            shape(&report),
            vec![("1af7fc5e-8455-4414-9ccd-011d40f70b2a", None, 20)]
        );
    }

    #[test]
    fn garbage_line_in_the_middle_is_skipped() {
        if !crate::real_fixtures::present() {
            return;
        }
        let text = fixture_text("ccv_1af7fc5e_v1.0.98_init.jsonl");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(10, "{\"type\":\"assistant\", garbage");
        lines.insert(11, "[1, 2, 3]");
        let report = parse_str(&lines.join("\n"));
        let warned: Vec<usize> = report.warnings.iter().map(|w| w.line).collect();
        assert_eq!(warned, vec![11, 12]);
        assert_eq!(
            shape(&report),
            vec![("1af7fc5e-8455-4414-9ccd-011d40f70b2a", None, 21)]
        );
    }

    #[test]
    fn empty_file_is_an_empty_report() {
        assert_eq!(parse_str(""), FileReport::default());
        assert_eq!(parse_str("\n  \n\r\n"), FileReport::default());
    }

    #[test]
    fn file_without_any_record_is_malformed() {
        let result = parse(Path::new("x.jsonl"), "\nhello\n{\"type\":");
        assert!(
            matches!(result, Err(ImportError::Malformed { line: 2, .. })),
            "{result:?}"
        );
    }

    fn user(uuid: &str, parent: Option<&str>, content: &str) -> String {
        let parent = parent.map_or("null".to_owned(), |p| format!("\"{p}\""));
        format!(
            r#"{{"type":"user","uuid":"{uuid}","parentUuid":{parent},"sessionId":"s1","cwd":"/home/u/proj/","gitBranch":"main","timestamp":"2025-01-01T00:00:00Z","message":{{"role":"user","content":{content}}}}}"#
        )
    }

    #[test]
    fn message_lines_missing_fields_warn_and_unknown_types_count() {
        let text = [
            r#"{"type":"user","uuid":"a","sessionId":"s1"}"#.to_owned(),
            r#"{"type":"assistant","uuid":"b","message":{"id":"m","content":[]}}"#.to_owned(),
            r#"{"type":"user","uuid":"c","sessionId":"s1","message":{"content":42}}"#.to_owned(),
            r#"{"uuid":"d"}"#.to_owned(),
            r#"{"type":"brand-new-kind","sessionId":"s1"}"#.to_owned(),
            user("e", None, r#""hi""#),
            user("e", None, r#""hi again""#),
        ]
        .join("\n");
        let report = parse_str(&text);
        let warned: Vec<usize> = report.warnings.iter().map(|w| w.line).collect();
        assert_eq!(warned, vec![1, 2, 3, 4, 7]);
        assert_eq!(report.skipped_types, skipped(&[("brand-new-kind", 1)]));
        assert_eq!(shape(&report), vec![("s1", None, 1)]);
        let meta = &report.sessions[0].messages[0].meta;
        assert_eq!(
            meta.project.as_deref(),
            Some("proj"),
            "trailing slash ignored"
        );
        assert_eq!(meta.git_branch.as_deref(), Some("main"));
        assert_eq!(meta.timestamp_ms, Some(1_735_689_600_000));
    }

    #[test]
    fn blocks_images_and_unmodeled_kinds() {
        let content = r#"[
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"aGVsbG8="}},
            {"type":"image","source":{"type":"url","url":"https://example.com/a.png"}},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"%%%"}},
            {"type":"redacted_thinking","data":"opaque"},
            {"type":"text"},
            {"type":"tool_result","tool_use_id":"t1","is_error":true,"content":[
                {"type":"text","text":"boom"},
                {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"aGk"}},
                {"type":"document","x":1}
            ]},
            {"type":"tool_result","tool_use_id":"t2"}
        ]"#
        .replace('\n', " ");
        let report = parse_str(&user("u1", None, &content));
        let blocks = &report.sessions[0].messages[0].blocks;
        assert_eq!(
            blocks[0],
            ContentBlock::Image {
                media_type: "image/png".into(),
                source: ImageSource::Bytes {
                    data: b"hello".to_vec()
                }
            }
        );
        assert_eq!(
            blocks[1],
            ContentBlock::Image {
                media_type: "".into(),
                source: ImageSource::Reference {
                    uri: "https://example.com/a.png".into()
                }
            }
        );
        assert!(
            matches!(&blocks[2], ContentBlock::Other { kind, json } if kind == "image" && json.contains("%%%"))
        );
        assert_eq!(
            blocks[3],
            ContentBlock::Other {
                kind: "redacted_thinking".into(),
                json: r#"{"data":"opaque","type":"redacted_thinking"}"#.into()
            }
        );
        assert_eq!(
            blocks[4],
            ContentBlock::Other {
                kind: "text".into(),
                json: r#"{"type":"text"}"#.into()
            }
        );
        assert_eq!(
            blocks[5],
            ContentBlock::ToolResult {
                tool_use_id: "t1".into(),
                is_error: true,
                content: vec![
                    ToolResultPart::Text {
                        text: "boom".into()
                    },
                    ToolResultPart::Image {
                        media_type: "image/jpeg".into(),
                        source: ImageSource::Bytes {
                            data: b"hi".to_vec()
                        }
                    },
                    ToolResultPart::Text {
                        text: r#"{"type":"document","x":1}"#.into()
                    },
                ],
            }
        );
        assert_eq!(
            blocks[6],
            ContentBlock::ToolResult {
                tool_use_id: "t2".into(),
                is_error: false,
                content: vec![]
            }
        );
    }

    #[test]
    fn assistant_lines_merge_with_final_usage_and_stop_reason() {
        let line = |uuid: &str, block: &str, output: u64, stop: &str| {
            format!(
                r#"{{"type":"assistant","uuid":"{uuid}","sessionId":"s1","message":{{"id":"msg_vrtx_1","model":"claude-x","content":[{block}],"stop_reason":{stop},"usage":{{"input_tokens":5,"output_tokens":{output}}}}}}}"#
            )
        };
        let text = [
            user("u0", None, r#""go""#),
            line(
                "a1",
                r#"{"type":"thinking","thinking":"hmm","signature":""}"#,
                1,
                "null",
            ),
            line(
                "a2",
                r#"{"type":"server_tool_use","id":"s","name":"web_search","input":{}}"#,
                2,
                "null",
            ),
            line(
                "a3",
                r#"{"type":"tool_use","id":"t9","name":"Bash"}"#,
                9,
                r#""tool_use""#,
            ),
        ]
        .join("\n");
        let report = parse_str(&text);
        let session = &report.sessions[0];
        assert_eq!(session.messages.len(), 2);
        let reply = &session.messages[1];
        assert_eq!(kinds(reply), vec!["thinking", "other", "tool_use"]);
        assert_eq!(
            reply.blocks[0],
            ContentBlock::Thinking {
                text: "hmm".into(),
                signature: None
            }
        );
        assert_eq!(
            reply.blocks[2],
            ContentBlock::ToolUse {
                id: "t9".into(),
                name: "Bash".into(),
                input: "{}".into()
            }
        );
        assert_eq!(reply.meta.usage, usage(5, 9, 0, 0));
        assert_eq!(reply.meta.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(reply.meta.origin_id.as_deref(), Some("a1"));
        assert_eq!(reply.meta.provider.as_deref(), Some("vertex"));
        assert_eq!(
            session.messages[0].meta.provider.as_deref(),
            Some("vertex"),
            "the user's provider is the session's"
        );
    }

    #[test]
    fn title_comes_from_a_summary_of_this_session() {
        let text = [
            r#"{"type":"summary","summary":"Other transcript","leafUuid":"elsewhere"}"#.to_owned(),
            r#"{"type":"summary","summary":"Early","leafUuid":"u1"}"#.to_owned(),
            user("u1", None, r#""one""#),
            user("u2", Some("u1"), r#""two""#),
            r#"{"type":"summary","summary":"Latest leaf","leafUuid":"u2"}"#.to_owned(),
        ]
        .join("\n");
        let report = parse_str(&text);
        assert_eq!(report.sessions[0].title.as_deref(), Some("Latest leaf"));
        assert_eq!(report.skipped_types, skipped(&[("summary", 3)]));
    }

    #[test]
    fn inline_sidechain_parent_cycle_terminates() {
        let sidechain = |uuid: &str, parent: &str| {
            format!(
                r#"{{"type":"user","isSidechain":true,"uuid":"{uuid}","parentUuid":"{parent}","sessionId":"s1","message":{{"content":"x"}}}}"#
            )
        };
        let text = [
            sidechain("a", "b"),
            sidechain("b", "a"),
            sidechain("c", "b"),
        ]
        .join("\n");
        let report = parse_str(&text);
        let messages: usize = report.sessions.iter().map(|s| s.messages.len()).sum();
        assert_eq!(messages, 3);
        assert!(report
            .sessions
            .iter()
            .all(|s| s.parent_source_id.as_deref() == Some("s1")));
    }
}
