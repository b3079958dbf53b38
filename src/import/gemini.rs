//! Gemini CLI chat-session importer (SPEC.md §17 for the writer that is its inverse): the older
//! `~/.gemini/tmp/<projectHash>/chats/session-*.json` files ([`parse`]) and Gemini CLI 0.61's
//! JSONL logs `~/.gemini/tmp/<project name>/chats/session-<YYYY-MM-DDTHH-MM>-<id8>.jsonl`
//! ([`parse_jsonl`]). `~/.gemini/projects.json` maps project directories to those names, and the
//! CLI marks each `tmp/<project name>/` folder with a `.project_root` file holding the directory;
//! [`fill_project`] sets every node's `cwd` and `project` from them when they are there.
//!
//! A JSON session file is one object: `{sessionId, projectHash, startTime, lastUpdated,
//! summary?, messages: [...]}`. Each message has `type` user, gemini, info, error or warning.
//! Only user and gemini messages were part of the conversation.
//!
//! **The JSONL log** (0.61, read off its `ChatRecordingService` and checked by running it) is
//! replayed line by line the way the CLI's own `loadConversationRecord` does:
//!
//! - a line with `sessionId` and `projectHash` (the header; a resume appends another) merges
//!   into the metadata (`startTime`, `lastUpdated`, `kind` main / subagent, `summary`,
//!   `directories`); messages it lists are added;
//! - a line with a string `id` is a whole message record: it is added, or replaces the record
//!   with that id in place (the CLI re-appends a gemini record as tokens and tool calls arrive);
//! - `{"$set": {...}}` merges metadata; `$set.messages` replaces the whole message list;
//! - `{"$rewindTo": id}` drops that message and every later one (all of them when the id is
//!   unknown);
//! - blank lines are skipped; a line that is not JSON is skipped with a warning naming it (the
//!   CLI skips it silently); any other line is counted as `line:unknown`.
//!
//! Two things the CLI does on resume need care, so that a resumed file imports as the nodes it
//! had plus the new turn. (1) It rewrites the list with `$set.messages` built from the history
//! it sends the model, which drops `model`, `tokens`, `thoughts` and `toolCalls` (thoughts and
//! calls come back as `thought` / `functionCall` parts of `content`, thoughts as `**subject**
//! description`): a `$set.messages` entry whose type and visible (non-thought) text equal those
//! of the record last written as a line under its id keeps that record; a changed one is taken
//! as it is. (2) The function responses of each batch are recorded as a user message of
//! `functionResponse` parts beside the calls' `result` (and the rewrite adds `<id>_response`):
//! in a log, a user message made only of responses to calls whose results are already stored
//! is skipped (`user:function_response`). The `<session_context>` (or `<hook_context>`) user
//! message the CLI puts first is rebuilt by it on every start and left out of a resumed history,
//! so a log's copy is skipped too (`user:context`); a file holding nothing else (the one a
//! resume starts beside the resumed file) imports as no session. The session's source id is
//! the `sessionId`, the same for the JSON file and the JSONL the CLI converts it to, and a
//! subagent log (`chats/<parent id>/<id>.jsonl`, `kind: "subagent"`) names its parent. A log
//! without a header is `ImportError::Malformed`. Everything below applies to both formats.
//!
//! Decisions:
//!
//! - **A gemini record becomes one assistant node per model round.** Gemini CLI appends the tool
//!   calls of the next model responses to the same record until the model writes text again.
//!   The fixtures show this: in one record a todo goes from in_progress to completed, and in
//!   another a file is read, written, then read back. Each batch of calls carries one shared
//!   `timestamp`, so a run of calls with the same timestamp is taken as one round, and each
//!   round becomes an assistant node followed by its Tool node. Keeping them in one node would
//!   claim that the model made its later calls before it saw the earlier results, and a resumed
//!   session would then replay a history that never happened. The first round holds the
//!   thoughts stamped before its calls, the `content` (a text reply starts a new record, so the
//!   text always belongs to the first round), its calls, and the record's id and `tokens`. The
//!   tokens are the first round's: their `input` follows on from the previous record, and the
//!   later rounds' usage is not in the file. Each later round holds its calls and the thoughts
//!   stamped between the previous batch and its own. Thought text is rebuilt as
//!   `**subject**\n\ndescription`, because Gemini CLI cut the subject out of that bold header.
//! - **Tool results go in one Tool node per round**, holding one ToolResult per call in call
//!   order: Gemini CLI sends a batch's function responses back to the model in one turn.
//!   tool_use_id is the call's `id`; is_error is set when `status` is `error` or `cancelled`.
//!   The content is taken from `result[].functionResponse.response`: a lone `output` / `error`
//!   string becomes text, and any other response becomes its canonical JSON. Inline images
//!   become image parts. When a finished call has no `result`, its `resultDisplay` text is used
//!   instead. A call that was still running when the file was saved (any other status, no
//!   result) gets no ToolResult, the same as a Codex call that was cut off.
//! - **Usage** comes from `tokens{input,output,cached,thoughts,tool,total}` (`total = input +
//!   output + thoughts + tool`). Gemini's `input` (promptTokenCount) includes the cached tokens,
//!   but tapes keeps the two apart (pricing adds them up). So `input = input + tool - cached`,
//!   `cache_read = cached`, and `output = output + thoughts`, because thinking tokens are billed
//!   as output.
//! - **Meta.** provider "google", agent "gemini-cli", model = the record's `model` (assistant
//!   nodes only). The timestamp is the record's `timestamp` for its first round, and the batch's
//!   for later rounds and Tool nodes. origin_id = the record's `id`, on its first node only. The
//!   file has only a hash of the project path, so project and cwd stay empty. The title is the
//!   session's `summary`.
//! - **skipped_types** counts the messages that did not become nodes, keyed by their type:
//!   `info`, `error`, `warning`, any unknown type, and `user:empty` / `gemini:empty` for
//!   messages that have nothing to store.
//! - **Errors.** A file that is not JSON at all is `ImportError::Malformed`, with serde_json's
//!   line. A bad message record becomes a `Warning` with `line: 0` (the file is one JSON
//!   document, not a line format, so a line number would mislead), and its message names the
//!   record as `messages[i]` (0-based, the way jq counts). That record is skipped.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;
use tapes_protocol::{ContentBlock, ImageSource, NodeMeta, Role, ToolResultPart, Usage};

use super::{
    json_text, parse_timestamp, FileReport, ImportError, ParsedMessage, ParsedSession, Warning,
};

const SOURCE_KIND: &str = "gemini";
const PROVIDER: &str = "google";
const AGENT: &str = "gemini-cli";

/// Parses one chat-session file into (at most) one session.
pub fn parse(path: &Path, text: &str) -> Result<FileReport, ImportError> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| ImportError::malformed(path, e.line(), format!("not valid JSON: {e}")))?;
    let messages = root
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ImportError::malformed(path, 0, "no `messages` list: not a Gemini CLI chat session")
        })?;
    let mut chat = Chat::default();
    for (index, message) in messages.iter().enumerate() {
        chat.message(index, message);
    }
    Ok(chat.finish(path, &root))
}

/// Parses one Gemini CLI 0.61 JSONL session log into (at most) one session (see the module doc
/// for how the log is replayed).
pub fn parse_jsonl(path: &Path, text: &str) -> Result<FileReport, ImportError> {
    let log = replay(text);
    let session_id = log.meta.get("sessionId").and_then(Value::as_str);
    let project_hash = log.meta.get("projectHash").and_then(Value::as_str);
    if session_id.is_none() || project_hash.is_none() {
        return Err(ImportError::malformed(
            path,
            0,
            "no header line with `sessionId` and `projectHash`: not a Gemini CLI session log",
        ));
    }
    let mut chat = Chat {
        report: FileReport {
            warnings: log.warnings,
            skipped_types: log.skipped,
            ..FileReport::default()
        },
        lines: Some(log.messages.iter().map(|(line, _)| *line).collect()),
        ..Chat::default()
    };
    for (index, (_, message)) in log.messages.iter().enumerate() {
        chat.message(index, message);
    }
    let root = Value::Object(log.meta.clone());
    let mut report = chat.finish(path, &root);
    // A subagent's log lives in `chats/<parent session id>/<id>.jsonl`.
    if str_field(&root, "kind") == Some("subagent") {
        let parent = path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != "chats");
        for session in &mut report.sessions {
            session.parent_source_id = parent.clone();
        }
    }
    Ok(report)
}

/// How many nodes each message of a JSONL log's final list becomes (0 for a skipped one), in
/// order. The writer uses it to say where each of its nodes ends in its own file.
pub fn nodes_per_message(messages: &[Value]) -> Vec<usize> {
    let mut chat = Chat {
        lines: Some(vec![0; messages.len()]),
        ..Chat::default()
    };
    messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let before = chat.nodes.len();
            chat.message(index, message);
            chat.nodes.len() - before
        })
        .collect()
}

/// A JSONL log replayed the way Gemini CLI's `loadConversationRecord` does.
#[derive(Default)]
struct Log {
    meta: serde_json::Map<String, Value>,
    /// The final message list, each with the (1-based) line it was read from.
    messages: Vec<(usize, Value)>,
    warnings: Vec<Warning>,
    skipped: std::collections::BTreeMap<String, usize>,
}

fn replay(text: &str) -> Log {
    use std::collections::HashMap;
    let mut log = Log::default();
    // Message ids in first-seen order (a JS Map: a later record with the same id replaces the
    // earlier one in place), and the current record of each.
    let mut order: Vec<String> = Vec::new();
    let mut current: HashMap<String, (usize, Value)> = HashMap::new();
    // The latest record of each id written as a line of its own: what `$set.messages` entries
    // are compared with (see `same_turn`).
    let mut written: HashMap<String, Value> = HashMap::new();
    fn set(
        order: &mut Vec<String>,
        current: &mut HashMap<String, (usize, Value)>,
        id: &str,
        line: usize,
        record: Value,
    ) {
        if current.insert(id.to_owned(), (line, record)).is_none() {
            order.push(id.to_owned());
        }
    }
    fn from_list(
        order: &mut Vec<String>,
        current: &mut HashMap<String, (usize, Value)>,
        written: &mut HashMap<String, Value>,
        list: &[Value],
        line: usize,
    ) {
        for entry in list {
            let Some(id) = str_field(entry, "id") else {
                continue;
            };
            let chosen = match written.get(id) {
                Some(earlier) if same_turn(earlier, entry) => earlier.clone(),
                _ => {
                    written.insert(id.to_owned(), entry.clone());
                    entry.clone()
                }
            };
            set(order, current, id, line, chosen);
        }
    }
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let record: Value = match serde_json::from_str(raw) {
            Ok(record) => record,
            Err(e) => {
                log.warnings.push(Warning {
                    line,
                    message: format!("not valid JSON ({e}); the line was skipped"),
                });
                continue;
            }
        };
        if let Some(target) = str_field(&record, "$rewindTo") {
            match order.iter().position(|id| id == target) {
                Some(at) => {
                    for id in order.drain(at..) {
                        current.remove(&id);
                    }
                }
                None => {
                    order.clear();
                    current.clear();
                }
            }
        } else if let Some(id) = str_field(&record, "id") {
            written.insert(id.to_owned(), record.clone());
            set(&mut order, &mut current, id, line, record.clone());
        } else if let Some(update) = record.get("$set").and_then(Value::as_object) {
            if let Some(list) = update.get("messages").and_then(Value::as_array) {
                order.clear();
                current.clear();
                from_list(&mut order, &mut current, &mut written, list, line);
            }
            for (key, value) in update {
                if key != "messages" {
                    log.meta.insert(key.clone(), value.clone());
                }
            }
        } else if str_field(&record, "sessionId").is_some()
            && str_field(&record, "projectHash").is_some()
        {
            if let Some(fields) = record.as_object() {
                for (key, value) in fields {
                    if key != "messages" {
                        log.meta.insert(key.clone(), value.clone());
                    }
                }
            }
            if let Some(list) = record.get("messages").and_then(Value::as_array) {
                from_list(&mut order, &mut current, &mut written, list, line);
            }
        } else {
            *log.skipped.entry("line:unknown".to_owned()).or_insert(0) += 1;
        }
    }
    log.messages = order.iter().filter_map(|id| current.remove(id)).collect();
    log
}

/// Whether a `$set.messages` entry is the same turn as the record written earlier under its
/// id: same type and same visible text. Gemini CLI's resume rewrites every message from the
/// history it sends the model, which drops `model`, `tokens`, `thoughts` and `toolCalls` (the
/// thoughts and calls come back as `thought` / `functionCall` parts of `content`), so the
/// earlier, whole record is the one kept; an entry whose text changed is taken as it is.
fn same_turn(earlier: &Value, entry: &Value) -> bool {
    str_field(earlier, "type") == str_field(entry, "type")
        && visible_text(earlier.get("content")) == visible_text(entry.get("content"))
}

fn visible_text(content: Option<&Value>) -> String {
    let part_text = |part: &Value| -> String {
        match part {
            Value::String(text) => text.clone(),
            _ if part.get("thought").and_then(Value::as_bool) == Some(true) => String::new(),
            _ => str_field(part, "text").unwrap_or("").to_owned(),
        }
    };
    match content {
        Some(Value::Array(parts)) => parts.iter().map(part_text).collect(),
        Some(part) => part_text(part),
        None => String::new(),
    }
}

/// The project directory a Gemini CLI session file belongs to: the `.project_root` marker of
/// its `tmp/<project name>/` folder, else the entry naming that folder in `projects.json`.
pub fn project_root(path: &Path) -> Option<String> {
    let chats = path
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "chats"))?;
    let project_dir = chats.parent()?;
    if let Ok(root) = std::fs::read_to_string(project_dir.join(".project_root")) {
        let root = root.trim();
        if !root.is_empty() {
            return Some(root.to_owned());
        }
    }
    let name = project_dir.file_name()?.to_str()?;
    let home = project_dir.parent()?.parent()?;
    let registry: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("projects.json")).ok()?).ok()?;
    registry
        .get("projects")?
        .as_object()?
        .iter()
        .find(|(_, slug)| slug.as_str() == Some(name))
        .map(|(root, _)| root.clone())
}

/// Fills `cwd` and `project` of every message from [`project_root`], when it is known.
pub fn fill_project(path: &Path, report: &mut FileReport) {
    let Some(root) = project_root(path) else {
        return;
    };
    let project = Path::new(&root)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    for message in report
        .sessions
        .iter_mut()
        .flat_map(|s| s.messages.iter_mut())
    {
        message.meta.cwd.get_or_insert_with(|| root.clone());
        if let Some(project) = &project {
            message.meta.project.get_or_insert_with(|| project.clone());
        }
    }
}

#[derive(Default)]
struct Chat {
    report: FileReport,
    nodes: Vec<ParsedMessage>,
    /// Set for the JSONL log: the line each message was read from (for warnings), and the
    /// JSONL-only rules (context and duplicate function-response messages are skipped).
    lines: Option<Vec<usize>>,
    /// Ids of the calls whose results are already in a Tool node.
    answered: std::collections::HashSet<String>,
}

impl Chat {
    fn message(&mut self, index: usize, message: &Value) {
        if !message.is_object() {
            return self.warn(index, "not an object");
        }
        let Some(kind) = str_field(message, "type") else {
            return self.warn(index, "no `type`");
        };
        match kind {
            "user" => self.user(message),
            "gemini" => self.gemini(index, message),
            // info / error / warning are CLI notices shown to the user, never sent to the model.
            other => self.skip(other),
        }
    }

    fn user(&mut self, message: &Value) {
        if self.lines.is_some() {
            if is_context(message.get("content")) {
                return self.skip("user:context");
            }
            if self.answers_known_calls(message.get("content")) {
                return self.skip("user:function_response");
            }
        }
        let blocks = content_blocks(message.get("content"));
        if blocks.is_empty() {
            return self.skip("user:empty");
        }
        let meta = node_meta(message, timestamp(message));
        self.nodes.push(ParsedMessage {
            role: Role::User,
            model: String::new(),
            blocks,
            meta,
        });
    }

    /// One gemini record becomes one assistant node plus a Tool node per batch of tool calls
    /// (see the module doc for why a record can hold several model rounds).
    fn gemini(&mut self, index: usize, message: &Value) {
        let calls = self.tool_calls(index, message.get("toolCalls"));
        let rounds = batches(&calls);
        let mut thoughts = thoughts_by_round(message.get("thoughts"), &rounds);
        let model = str_field(message, "model").unwrap_or("").to_owned();
        let mut wrote = false;
        for (round, batch) in rounds.iter().enumerate() {
            let mut blocks = std::mem::take(&mut thoughts[round]);
            if round == 0 {
                blocks.extend(content_blocks(message.get("content")));
            }
            blocks.extend(batch.iter().map(|call| call.tool_use.clone()));
            if blocks.is_empty() {
                continue;
            }
            let meta = if round == 0 {
                // The record's id, time and tokens belong to the round that created it.
                let mut meta = node_meta(message, timestamp(message));
                meta.usage = message.get("tokens").and_then(usage_from);
                meta
            } else {
                let mut meta = node_meta(message, batch_time(batch));
                meta.origin_id = None;
                meta
            };
            self.nodes.push(ParsedMessage {
                role: Role::Assistant,
                model: model.clone(),
                blocks,
                meta,
            });
            self.tool_results(message, batch);
            wrote = true;
        }
        if !wrote {
            self.skip("gemini:empty");
        }
    }

    /// The Tool node answering one batch of calls; none when no call in it has finished.
    fn tool_results(&mut self, message: &Value, batch: &[ToolCall<'_>]) {
        let results: Vec<ContentBlock> = batch.iter().filter_map(ToolCall::result).collect();
        if results.is_empty() {
            return;
        }
        for result in &results {
            if let ContentBlock::ToolResult { tool_use_id, .. } = result {
                self.answered.insert(tool_use_id.clone());
            }
        }
        let mut meta = node_meta(message, batch_time(batch).or_else(|| timestamp(message)));
        // The origin id belongs to the gemini message node; this node has no id of its own.
        meta.origin_id = None;
        self.nodes.push(ParsedMessage {
            role: Role::Tool,
            model: String::new(),
            blocks: results,
            meta,
        });
    }

    fn tool_calls<'a>(&mut self, index: usize, calls: Option<&'a Value>) -> Vec<ToolCall<'a>> {
        let Some(list) = calls.and_then(Value::as_array) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (n, record) in list.iter().enumerate() {
            match ToolCall::new(record) {
                Some(call) => out.push(call),
                None => self.warn(index, format!("toolCalls[{n}] without an `id` and `name`")),
            }
        }
        out
    }

    fn finish(mut self, path: &Path, root: &Value) -> FileReport {
        if self.nodes.is_empty() {
            return self.report;
        }
        let source_id = match str_field(root, "sessionId").filter(|s| !s.is_empty()) {
            Some(id) => id.to_owned(),
            None => {
                self.report.warnings.push(Warning {
                    line: 0,
                    message: "no `sessionId`; the session id is taken from the file name".into(),
                });
                file_stem(path)
            }
        };
        let title = str_field(root, "summary")
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        self.report.sessions.push(ParsedSession {
            source_kind: SOURCE_KIND,
            source_id,
            parent_source_id: None,
            title,
            messages: self.nodes,
        });
        self.report
    }

    fn skip(&mut self, key: &str) {
        *self.report.skipped_types.entry(key.to_owned()).or_insert(0) += 1;
    }

    fn warn(&mut self, index: usize, why: impl std::fmt::Display) {
        let line = self
            .lines
            .as_ref()
            .and_then(|lines| lines.get(index).copied())
            .unwrap_or(0);
        self.report.warnings.push(Warning {
            line,
            message: format!("messages[{index}]: {why}"),
        });
    }

    /// A user message made only of `functionResponse` parts that answer calls already stored
    /// with their results (Gemini CLI 0.61 records each batch's responses twice: in the
    /// call's `result` and as a user message; its resume rewrite adds a third `<id>_response`).
    fn answers_known_calls(&self, content: Option<&Value>) -> bool {
        let Some(Value::Array(parts)) = content else {
            return false;
        };
        !parts.is_empty()
            && parts.iter().all(|part| {
                part.get("functionResponse")
                    .and_then(|r| str_field(r, "id"))
                    .is_some_and(|id| self.answered.contains(id))
            })
    }
}

/// The context block Gemini CLI puts in front of a session (`<session_context>`, a hook's
/// `<hook_context>`): rebuilt by the CLI on every start and left out of a resumed history.
fn is_context(content: Option<&Value>) -> bool {
    let text = match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(text) => Some(text.as_str()),
                _ => str_field(p, "text"),
            })
            .collect(),
        Some(part) => str_field(part, "text").unwrap_or("").to_owned(),
        None => String::new(),
    };
    let text = text.trim_start();
    text.starts_with("<session_context>") || text.starts_with("<hook_context>")
}

/// One `toolCalls[]` entry: the ToolUse it becomes, and the record for its result.
struct ToolCall<'a> {
    record: &'a Value,
    id: String,
    tool_use: ContentBlock,
}

impl<'a> ToolCall<'a> {
    fn new(record: &'a Value) -> Option<Self> {
        let id = str_field(record, "id")?.to_owned();
        let name = str_field(record, "name")?.to_owned();
        let input = match record.get("args") {
            Some(Value::Null) | None => "{}".to_owned(),
            Some(args) => json_text(args),
        };
        let tool_use = ContentBlock::ToolUse {
            id: id.clone(),
            name,
            input,
        };
        Some(ToolCall {
            record,
            id,
            tool_use,
        })
    }

    fn stamp(&self) -> Option<&'a str> {
        str_field(self.record, "timestamp")
    }

    /// The ToolResult for a finished call; None while it is still running.
    fn result(&self) -> Option<ContentBlock> {
        let status = str_field(self.record, "status");
        let result = self.record.get("result").filter(|r| !r.is_null());
        let finished = matches!(status, Some("success" | "error" | "cancelled"));
        if result.is_none() && !finished {
            return None;
        }
        let mut content = result.map(result_parts).unwrap_or_default();
        if content.is_empty() {
            if let Some(display) = str_field(self.record, "resultDisplay").filter(|s| !s.is_empty())
            {
                content.push(ToolResultPart::Text {
                    text: display.to_owned(),
                });
            }
        }
        let is_error = matches!(status, Some("error" | "cancelled"));
        Some(ContentBlock::ToolResult {
            tool_use_id: self.id.clone(),
            is_error,
            content,
        })
    }
}

/// Splits a record's calls into model rounds: a run of calls with the same `timestamp` is one
/// batch (Gemini CLI stamps a batch once). A call without a timestamp joins the batch before
/// it. There is always at least one batch, empty when the record made no calls.
fn batches<'c, 'a>(calls: &'c [ToolCall<'a>]) -> Vec<&'c [ToolCall<'a>]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut current = calls.first().and_then(ToolCall::stamp);
    for (i, call) in calls.iter().enumerate().skip(1) {
        let Some(stamp) = call.stamp() else { continue };
        if current.is_some_and(|c| c != stamp) {
            out.push(&calls[start..i]);
            start = i;
        }
        current = Some(stamp);
    }
    out.push(&calls[start..]);
    out
}

/// When a batch was made: the latest time stamped on its calls.
fn batch_time(batch: &[ToolCall<'_>]) -> Option<i64> {
    batch.iter().filter_map(|call| timestamp(call.record)).max()
}

/// Thinking blocks per round. A thought goes to the first round whose calls are stamped at or
/// after it, the last round if it came after all of them, and the first if it has no time.
fn thoughts_by_round(list: Option<&Value>, rounds: &[&[ToolCall<'_>]]) -> Vec<Vec<ContentBlock>> {
    let mut out = vec![Vec::new(); rounds.len()];
    let times: Vec<Option<i64>> = rounds.iter().map(|batch| batch_time(batch)).collect();
    let Some(list) = list.and_then(Value::as_array) else {
        return out;
    };
    for thought in list {
        let Some(text) = thought_text(thought) else {
            continue;
        };
        let round = match timestamp(thought) {
            None => 0,
            Some(t) => times
                .iter()
                .position(|batch| batch.is_some_and(|b| b >= t))
                .unwrap_or(rounds.len() - 1),
        };
        out[round].push(ContentBlock::Thinking {
            text,
            signature: None,
        });
    }
    out
}

// ---- content --------------------------------------------------------------------------------

/// A message's `content`: a string, one Part, or a list of Parts (`PartListUnion`).
fn content_blocks(content: Option<&Value>) -> Vec<ContentBlock> {
    match content {
        Some(Value::Array(parts)) => parts.iter().filter_map(part_block).collect(),
        Some(part) => part_block(part).into_iter().collect(),
        None => Vec::new(),
    }
}

fn part_block(part: &Value) -> Option<ContentBlock> {
    if let Value::String(text) = part {
        return (!text.is_empty()).then(|| ContentBlock::text(text.as_str()));
    }
    if !part.is_object() {
        return None;
    }
    if let Some(text) = str_field(part, "text") {
        if text.is_empty() {
            return None;
        }
        // A thought part the model returned inline.
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            return Some(ContentBlock::Thinking {
                text: text.to_owned(),
                signature: None,
            });
        }
        return Some(ContentBlock::text(text));
    }
    if let Some((media_type, source)) = image(part) {
        return Some(ContentBlock::Image { media_type, source });
    }
    // functionCall / functionResponse / executableCode / non-image files: kept whole.
    let kind = part
        .as_object()
        .and_then(|o| o.keys().next())
        .map_or("part", String::as_str);
    Some(ContentBlock::Other {
        kind: kind.to_owned(),
        json: json_text(part),
    })
}

/// `inlineData` (base64) or `fileData` (a URI) with an image media type.
fn image(part: &Value) -> Option<(String, ImageSource)> {
    if let Some(inline) = part.get("inlineData") {
        let media_type = str_field(inline, "mimeType").filter(|m| m.starts_with("image/"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(str_field(inline, "data")?.trim())
            .ok()?;
        return Some((media_type.to_owned(), ImageSource::Bytes { data }));
    }
    let file = part.get("fileData")?;
    let media_type = str_field(file, "mimeType").filter(|m| m.starts_with("image/"))?;
    let uri = str_field(file, "fileUri")?;
    Some((
        media_type.to_owned(),
        ImageSource::Reference {
            uri: uri.to_owned(),
        },
    ))
}

fn thought_text(thought: &Value) -> Option<String> {
    let subject = str_field(thought, "subject").unwrap_or("");
    let description = str_field(thought, "description").unwrap_or("");
    match (subject.is_empty(), description.is_empty()) {
        (true, true) => None,
        (true, false) => Some(description.to_owned()),
        (false, true) => Some(format!("**{subject}**")),
        (false, false) => Some(format!("**{subject}**\n\n{description}")),
    }
}

/// A call's `result` (`PartListUnion`): mostly one `functionResponse` part.
fn result_parts(result: &Value) -> Vec<ToolResultPart> {
    match result {
        Value::Array(parts) => parts.iter().filter_map(result_part).collect(),
        part => result_part(part).into_iter().collect(),
    }
}

fn result_part(part: &Value) -> Option<ToolResultPart> {
    if let Value::String(text) = part {
        return Some(ToolResultPart::Text { text: text.clone() });
    }
    if let Some(response) = part.get("functionResponse") {
        let text = response_text(response.get("response").unwrap_or(&Value::Null));
        return Some(ToolResultPart::Text { text });
    }
    if let Some(text) = str_field(part, "text") {
        return Some(ToolResultPart::Text {
            text: text.to_owned(),
        });
    }
    if let Some((media_type, source)) = image(part) {
        return Some(ToolResultPart::Image { media_type, source });
    }
    (!part.is_null()).then(|| ToolResultPart::Text {
        text: json_text(part),
    })
}

/// `{"output": "..."}` (or `{"error": "..."}`) is how Gemini CLI wraps a tool's text; anything
/// richer is kept as JSON.
fn response_text(response: &Value) -> String {
    if let Some(fields) = response.as_object() {
        if fields.len() == 1 {
            if let Some(text) = ["output", "error"]
                .iter()
                .find_map(|k| str_field(response, k))
            {
                return text.to_owned();
            }
        }
    }
    match response {
        Value::String(text) => text.clone(),
        other => json_text(other),
    }
}

// ---- meta -----------------------------------------------------------------------------------

fn node_meta(message: &Value, timestamp_ms: Option<i64>) -> NodeMeta {
    NodeMeta {
        provider: Some(PROVIDER.to_owned()),
        agent: Some(AGENT.to_owned()),
        timestamp_ms,
        origin_id: str_field(message, "id").map(str::to_owned),
        ..NodeMeta::default()
    }
}

fn usage_from(tokens: &Value) -> Option<Usage> {
    let count = |key: &str| tokens.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cached");
    let usage = Usage {
        input_tokens: (count("input") + count("tool")).saturating_sub(cached),
        output_tokens: count("output") + count("thoughts"),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
    };
    (!usage.is_zero()).then_some(usage)
}

fn timestamp(record: &Value) -> Option<i64> {
    str_field(record, "timestamp").and_then(parse_timestamp)
}

fn file_stem(path: &Path) -> String {
    match path.file_stem() {
        Some(stem) => stem.to_string_lossy().into_owned(),
        None => path.display().to_string(),
    }
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/agent-transcripts/gemini/"
    );
    const HI_SESSION: &str = "codemie_session-2025-12-01T21-45-5b959dae.json";
    const FILE_OPS: &str = "codemie_session-2026-01-16T11-01-file-ops-37b7abef.json";
    const LOGS: &str = "codemie_logs.json";

    fn read_fixture(name: &str) -> (PathBuf, String) {
        let path = PathBuf::from(DIR).join(name);
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        (path, text)
    }

    /// Parses a fixture that must give one session and no warnings or skips.
    fn session(name: &str) -> ParsedSession {
        let (path, text) = read_fixture(name);
        let report = parse(&path, &text).expect("parses");
        assert_eq!(report.warnings, vec![], "{name}");
        assert!(
            report.skipped_types.is_empty(),
            "{name}: {:?}",
            report.skipped_types
        );
        assert_eq!(report.sessions.len(), 1, "{name}");
        report.sessions[0].clone()
    }

    /// One letter per node: U user, A assistant, T tool.
    fn roles(session: &ParsedSession) -> String {
        session
            .messages
            .iter()
            .map(|m| match m.role {
                Role::User => 'U',
                Role::Assistant => 'A',
                Role::Tool => 'T',
                Role::Developer => 'D',
                Role::System => 'S',
            })
            .collect()
    }

    fn roles_of(messages: &[ParsedMessage]) -> String {
        let session = ParsedSession {
            source_kind: SOURCE_KIND,
            source_id: String::new(),
            parent_source_id: None,
            title: None,
            messages: messages.to_vec(),
        };
        roles(&session)
    }

    fn blocks(session: &ParsedSession) -> impl Iterator<Item = &ContentBlock> {
        session.messages.iter().flat_map(|m| m.blocks.iter())
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
                ContentBlock::ToolResult {
                    tool_use_id,
                    is_error: false,
                    ..
                } => Some(tool_use_id.clone()),
                ContentBlock::ToolResult { .. } => panic!("no fixture call failed"),
                _ => None,
            })
            .collect()
    }

    fn thinking_count(session: &ParsedSession) -> usize {
        blocks(session)
            .filter(|b| matches!(b, ContentBlock::Thinking { .. }))
            .count()
    }

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
        // Each session file has its own test below; logs.json is a prompt log, not a session.
        let mut names: Vec<String> = std::fs::read_dir(DIR)
            .expect("fixture dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        assert_eq!(names, vec![LOGS, HI_SESSION, FILE_OPS]);
        session(HI_SESSION);
        session(FILE_OPS);
    }

    #[test]
    fn prompt_log_is_not_a_session() {
        if !crate::real_fixtures::present() {
            return;
        }
        // detect.rs routes it elsewhere already; if it gets here anyway it is refused whole.
        let (path, text) = read_fixture(LOGS);
        assert!(matches!(
            parse(&path, &text),
            Err(ImportError::Malformed { line: 0, .. })
        ));
    }

    // Counted with:
    //   jq -r '[.messages[] | if .type=="user" then "U" elif .type=="gemini" then
    //     ("A" + (if (.toolCalls|length)>0 then "T" else "" end)) else "?" end] | join("")' F
    //   jq '[.messages[] | (.thoughts // []) | length] | add' F          (thinking blocks)
    //   jq '[.messages[] | (.toolCalls // []) | length] | add' F         (tool calls)
    //   jq '[.messages[] | select(.tokens) | .tokens] | {input: (map(.input - .cached +
    //     (.tool//0))|add), output: (map(.output + (.thoughts//0))|add), cached: (map(.cached)|add)}' F
    // Rounds: python3 groups each record's toolCalls by consecutive equal `timestamp`
    //   (itertools.groupby) and prints A + T per group, A for a record without calls.
    // HI_SESSION: 14 messages (3 user, 11 gemini, 8 of them with tool calls; messages[10]
    // holds 3 rounds of 1 call each) -> 3 + 13 assistant + 10 tool = 26 nodes, 18 thoughts,
    // 10 calls all `success`; usage sums input 45092, output 4227, cached 56538.
    #[test]
    fn hi_session() {
        if !crate::real_fixtures::present() {
            return;
        }
        let s = session(HI_SESSION);
        assert_eq!(s.source_kind, "gemini");
        assert_eq!(s.source_id, "5b959dae-8655-4cd1-b10f-720b8c336ea2");
        assert_eq!(s.title, None);
        assert_eq!(s.messages.len(), 26);
        assert_eq!(roles(&s), "UAUATATATATATAUATATATATATA");
        assert_eq!(thinking_count(&s), 18);
        let ids = tool_use_ids(&s);
        assert_eq!(ids.len(), 10);
        assert_eq!(tool_result_ids(&s), ids, "every call answered, in order");

        // messages[1]: two thoughts, then the reply; tokens input 2752, output 55, thoughts 156.
        let first = &s.messages[1];
        assert_eq!(first.model, "gemini-3-pro-image-preview");
        assert_eq!(
            first.meta.origin_id.as_deref(),
            Some("7fa73d7e-c906-4ab4-a4c8-b1faf5acccd7")
        );
        assert_eq!(first.meta.provider.as_deref(), Some("google"));
        assert_eq!(first.meta.agent.as_deref(), Some("gemini-cli"));
        assert_eq!(
            first.meta.timestamp_ms,
            parse_timestamp("2025-12-01T21:45:40.110Z")
        );
        assert_eq!(
            first.meta.usage,
            Some(Usage {
                input_tokens: 2752,
                output_tokens: 55 + 156,
                cache_read_tokens: 0,
                cache_write_tokens: 0
            })
        );
        match &first.blocks[..] {
            [ContentBlock::Thinking { text, .. }, ContentBlock::Thinking { .. }, ContentBlock::Text { text: reply }] =>
            {
                assert!(text.starts_with("**Assessing the Prompt's Intent**\n\n"));
                assert!(reply.starts_with("Hello! I see we're all set up"));
            }
            other => panic!("{other:?}"),
        }
        // messages[3]: a thought and a list_directory call, answered by node 4.
        assert_eq!(
            s.messages[3].blocks[1],
            ContentBlock::ToolUse {
                id: "list_directory-1764625554423-6b5d2c6179cc4".into(),
                name: "list_directory".into(),
                input:
                    r#"{"dir_path":"/Users/Jane_Smith/Documents/projects/epm-cdme/assistants/"}"#
                        .into(),
            }
        );
        let tool = &s.messages[4];
        assert_eq!(
            (
                tool.model.as_str(),
                tool.meta.usage,
                tool.meta.origin_id.as_deref()
            ),
            ("", None, None)
        );
        match &tool.blocks[..] {
            [ContentBlock::ToolResult {
                tool_use_id,
                content,
                ..
            }] => {
                assert_eq!(tool_use_id, "list_directory-1764625554423-6b5d2c6179cc4");
                match &content[..] {
                    [ToolResultPart::Text { text }] => {
                        assert!(text.starts_with("Directory listing for /Users/Jane_Smith"))
                    }
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        // messages[10] holds three rounds (read_file 21:48:11, write_file 21:49:35, read_file
        // 21:49:40): nodes 15-20. Its two thoughts (21:48:11.23) and tokens are the first round's.
        let rounds = &s.messages[15..21];
        assert_eq!(roles_of(rounds), "ATATAT");
        assert_eq!(rounds[0].blocks.len(), 2 + 1);
        assert_eq!(
            rounds[0].meta.origin_id.as_deref(),
            Some("1c56e562-8e2e-41cc-8b6b-d0623b5bbbe0")
        );
        assert_eq!(
            rounds[0].meta.usage,
            Some(Usage {
                input_tokens: 11826,
                output_tokens: 37 + 175,
                cache_read_tokens: 0,
                cache_write_tokens: 0
            })
        );
        assert!(
            matches!(&rounds[2].blocks[..], [ContentBlock::ToolUse { name, .. }] if name == "write_file")
        );
        assert_eq!(rounds[2].model, "gemini-3-pro-image-preview");
        assert_eq!(
            (rounds[2].meta.usage, rounds[2].meta.origin_id.as_deref()),
            (None, None)
        );
        assert_eq!(
            rounds[2].meta.timestamp_ms,
            parse_timestamp("2025-12-01T21:49:35.822Z")
        );
        assert_eq!(
            rounds[3].meta.timestamp_ms,
            parse_timestamp("2025-12-01T21:49:35.822Z")
        );

        let (sum, nodes) = usage_sum(&s);
        assert_eq!(nodes, 11);
        assert_eq!(
            (sum.input_tokens, sum.output_tokens, sum.cache_read_tokens),
            (45092, 4227, 56538)
        );
        assert!(s
            .messages
            .iter()
            .filter(|m| m.role != Role::Assistant)
            .all(|m| m.model.is_empty()));
    }

    // FILE_OPS: 14 messages (5 user, 9 gemini, 4 with tool calls: 9 + 1 + 2 + 2, in rounds
    // [2,4,3], [1], [1,1], [1,1]) -> 5 + 13 assistant + 8 tool = 26 nodes, no thoughts,
    // 14 calls all `success`; usage input 25301, output 4355, cached 62117.
    #[test]
    fn file_ops_session() {
        if !crate::real_fixtures::present() {
            return;
        }
        let s = session(FILE_OPS);
        assert_eq!(s.source_id, "37b7abef-713d-4522-85f0-8ff15a4e6d17");
        assert_eq!(s.messages.len(), 26);
        assert_eq!(roles(&s), "UAUATATATAUATAUATATAUATATA");
        assert_eq!(thinking_count(&s), 0);
        let ids = tool_use_ids(&s);
        assert_eq!(ids.len(), 14);
        assert_eq!(tool_result_ids(&s), ids);
        // messages[3] holds nine calls in three rounds: write_todos + delegate_to_agent
        // (11:04:00), write_todos + 3 read_file (11:04:13), write_todos + search + read (11:04:26).
        let sizes: Vec<usize> = s.messages[3..9].iter().map(|m| m.blocks.len()).collect();
        assert_eq!(sizes, vec![2, 2, 4, 4, 3, 3]);
        assert!(matches!(&s.messages[3].blocks[1],
            ContentBlock::ToolUse { name, .. } if name == "delegate_to_agent"));
        assert_eq!(s.messages[3].model, "gemini-3-pro");
        // messages[3] tokens: input 5054, cached 2745, output 269, thoughts 1627.
        assert_eq!(
            s.messages[3].meta.usage,
            Some(Usage {
                input_tokens: 5054 - 2745,
                output_tokens: 269 + 1627,
                cache_read_tokens: 2745,
                cache_write_tokens: 0
            })
        );
        let (sum, nodes) = usage_sum(&s);
        assert_eq!(nodes, 9);
        assert_eq!(
            (sum.input_tokens, sum.output_tokens, sum.cache_read_tokens),
            (25301, 4355, 62117)
        );
        assert_eq!(s.messages[0].blocks, vec![ContentBlock::text("show tools")]);
    }

    #[test]
    fn invalid_json_is_malformed_with_its_line() {
        if !crate::real_fixtures::present() {
            return;
        }
        // The file cut in the middle: serde_json reports the line where the text ends.
        let (path, text) = read_fixture(HI_SESSION);
        let cut = &text[..text.len() / 2];
        let expected = cut.lines().count();
        match parse(&path, cut) {
            Err(ImportError::Malformed { line, .. }) => assert_eq!(line, expected),
            other => panic!("{other:?}"),
        }
        // Garbage in the middle of the document.
        let lines: Vec<&str> = text.lines().collect();
        let garbled = [&lines[..10], &["this is {not json"], &lines[10..]]
            .concat()
            .join("\n");
        match parse(&path, &garbled) {
            Err(ImportError::Malformed { line: 11, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_records_are_warned_and_skipped() {
        if !crate::real_fixtures::present() {
            return;
        }
        // The HI_SESSION fixture with junk put in front of messages[2]: a number, a record
        // without a type, an info notice, an empty user message and a tool call without an id.
        let (path, text) = read_fixture(HI_SESSION);
        let mut root: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let messages = root["messages"].as_array_mut().expect("messages");
        let junk = [
            json!(42),
            json!({"id": "x", "content": "no type"}),
            json!({"id": "i", "type": "info", "content": "Switched model"}),
            json!({"id": "e", "type": "user", "content": ""}),
            json!({"id": "g", "type": "gemini", "content": "ok", "toolCalls": [{"name": "nameless"}]}),
        ];
        for (n, record) in junk.into_iter().enumerate() {
            messages.insert(2 + n, record);
        }
        let report = parse(&path, &root.to_string()).expect("parses");
        let warned: Vec<(usize, &str)> = report
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        assert_eq!(
            warned,
            vec![
                (0, "messages[2]: not an object"),
                (0, "messages[3]: no `type`"),
                (0, "messages[6]: toolCalls[0] without an `id` and `name`"),
            ]
        );
        assert_eq!(report.skipped_types.get("info"), Some(&1));
        assert_eq!(report.skipped_types.get("user:empty"), Some(&1));
        // 26 fixture nodes plus the "ok" reply (its bad call dropped, no Tool node).
        let s = &report.sessions[0];
        assert_eq!(s.messages.len(), 27);
        assert_eq!(s.messages[2].blocks, vec![ContentBlock::text("ok")]);
    }

    #[test]
    fn statuses_parts_and_title() {
        let png = base64::engine::general_purpose::STANDARD.encode([0x89, b'P', b'N', b'G']);
        let doc = json!({
            "projectHash": "h",
            "summary": "Fix the build",
            "messages": [
                {"id": "u1", "type": "user", "content": [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": png}}]},
                {"id": "g1", "type": "gemini", "model": "gemini-2.5-pro",
                 "content": [{"text": "hmm", "thought": true}, {"text": "running"}],
                 "thoughts": [{"subject": "", "description": "only a description"}],
                 "toolCalls": [
                    {"id": "a", "name": "run", "args": {"cmd": "ls"}, "status": "error",
                     "result": [{"functionResponse": {"id": "a", "name": "run", "response": {"error": "denied"}}}]},
                    {"id": "b", "name": "run", "args": {}, "status": "cancelled", "resultDisplay": "Cancelled by user"},
                    {"id": "c", "name": "read", "args": {}, "status": "success",
                     "result": [{"functionResponse": {"id": "c", "name": "read", "response": {"output": "x", "extra": 1}}},
                                {"inlineData": {"mimeType": "image/png", "data": png}}]},
                    {"id": "d", "name": "slow", "args": {}, "status": "executing"}
                 ],
                 "tokens": {"input": 100, "output": 10, "cached": 40, "thoughts": 5, "tool": 3, "total": 118}},
                {"id": "g2", "type": "gemini", "content": ""},
                {"id": "w", "type": "warning", "content": "careful"}
            ]
        });
        let path = Path::new("/tmp/chats/session-2026-01-01T00-00-abcd1234.json");
        let report = parse(path, &doc.to_string()).expect("parses");
        // No sessionId: one whole-file warning, id from the file name.
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].line, 0);
        let s = &report.sessions[0];
        assert_eq!(s.source_id, "session-2026-01-01T00-00-abcd1234");
        assert_eq!(s.title.as_deref(), Some("Fix the build"));
        assert_eq!(roles(s), "UAT");
        let image = ToolResultPart::Image {
            media_type: "image/png".into(),
            source: ImageSource::Bytes {
                data: vec![0x89, b'P', b'N', b'G'],
            },
        };
        assert!(
            matches!(&s.messages[0].blocks[1], ContentBlock::Image { media_type, .. } if media_type == "image/png")
        );
        let a = &s.messages[1];
        assert_eq!(a.model, "gemini-2.5-pro");
        assert_eq!(
            a.blocks.len(),
            2 + 1 + 4,
            "1 thought + thought part + text + 4 calls"
        );
        assert_eq!(
            a.blocks[0],
            ContentBlock::Thinking {
                text: "only a description".into(),
                signature: None
            }
        );
        assert_eq!(
            a.blocks[1],
            ContentBlock::Thinking {
                text: "hmm".into(),
                signature: None
            }
        );
        assert_eq!(
            a.meta.usage,
            Some(Usage {
                input_tokens: 100 + 3 - 40,
                output_tokens: 15,
                cache_read_tokens: 40,
                cache_write_tokens: 0
            })
        );
        let text = |t: &str| ToolResultPart::Text { text: t.into() };
        assert_eq!(
            s.messages[2].blocks,
            vec![
                ContentBlock::ToolResult {
                    tool_use_id: "a".into(),
                    is_error: true,
                    content: vec![text("denied")]
                },
                ContentBlock::ToolResult {
                    tool_use_id: "b".into(),
                    is_error: true,
                    content: vec![text("Cancelled by user")]
                },
                ContentBlock::ToolResult {
                    tool_use_id: "c".into(),
                    is_error: false,
                    content: vec![text(r#"{"extra":1,"output":"x"}"#), image],
                },
                // "d" was still executing: no result.
            ]
        );
        assert_eq!(report.skipped_types.get("gemini:empty"), Some(&1));
        assert_eq!(report.skipped_types.get("warning"), Some(&1));
    }

    #[test]
    fn rounds_split_by_call_time() {
        let doc = json!({"sessionId": "s", "messages": [
            {"id": "g", "type": "gemini", "timestamp": "2026-01-01T00:00:01Z", "content": "plan",
             "thoughts": [
                {"subject": "first", "description": "", "timestamp": "2026-01-01T00:00:00Z"},
                {"subject": "second", "description": "", "timestamp": "2026-01-01T00:00:05Z"},
                {"subject": "late", "description": "", "timestamp": "2026-01-01T00:00:30Z"},
                {"subject": "undated", "description": ""}],
             "toolCalls": [
                {"id": "1", "name": "a", "args": {}, "status": "success", "timestamp": "2026-01-01T00:00:01Z", "result": "r1"},
                {"id": "2", "name": "b", "args": {}, "status": "success", "timestamp": "2026-01-01T00:00:01Z", "result": "r2"},
                {"id": "3", "name": "c", "args": {}, "status": "success", "result": "r3"},
                {"id": "4", "name": "d", "args": {}, "status": "success", "timestamp": "2026-01-01T00:00:09Z", "result": "r4"}],
             "tokens": {"input": 5, "output": 1, "cached": 0}}]});
        let report = parse(Path::new("s.json"), &doc.to_string()).expect("parses");
        let s = &report.sessions[0];
        assert_eq!(roles(s), "ATAT");
        let names = |m: &ParsedMessage| -> Vec<String> {
            m.blocks
                .iter()
                .map(|b| match b {
                    ContentBlock::Thinking { text, .. } => format!("think {text}"),
                    ContentBlock::Text { text } => format!("text {text}"),
                    ContentBlock::ToolUse { id, .. } => format!("use {id}"),
                    ContentBlock::ToolResult { tool_use_id, .. } => format!("result {tool_use_id}"),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        // An undated call (3) stays in the batch before it; an undated thought goes first.
        assert_eq!(
            names(&s.messages[0]),
            [
                "think **first**",
                "think **undated**",
                "text plan",
                "use 1",
                "use 2",
                "use 3"
            ]
        );
        assert_eq!(names(&s.messages[1]), ["result 1", "result 2", "result 3"]);
        assert_eq!(
            names(&s.messages[2]),
            ["think **second**", "think **late**", "use 4"]
        );
        assert_eq!(names(&s.messages[3]), ["result 4"]);
        assert!(s.messages[0].meta.usage.is_some() && s.messages[2].meta.usage.is_none());
        assert_eq!(
            s.messages[2].meta.timestamp_ms,
            parse_timestamp("2026-01-01T00:00:09Z")
        );
    }

    #[test]
    fn no_messages_no_session() {
        let doc = json!({"sessionId": "s", "projectHash": "h", "messages": []});
        let report = parse(Path::new("s.json"), &doc.to_string()).expect("parses");
        assert!(report.sessions.is_empty() && report.warnings.is_empty());
    }

    // ---- JSONL (Gemini CLI 0.61) --------------------------------------------------------------

    const JSONL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agents/gemini/");
    /// One tool round and a reply, then `--resume latest -p ...` a minute later.
    const RESUMED: &str = "session-2026-12-06T18-53-24000f74.jsonl";
    /// The file that resume started beside it: the same session id, only the context message.
    const STRAY: &str = "session-2026-12-06T18-54-24000f74.jsonl";
    const HELLO: &str = "session-2026-12-06T18-54-aa7d5eb1.jsonl";

    fn jsonl(name: &str) -> (PathBuf, String, FileReport) {
        let path = PathBuf::from(JSONL_DIR).join(name);
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        let report = parse_jsonl(&path, &text).expect("parses");
        assert_eq!(report.warnings, vec![], "{name}");
        (path, text, report)
    }

    fn node_ids(session: &ParsedSession) -> Vec<String> {
        crate::import::ingest::build_nodes(session)
            .iter()
            .map(|n| n.id().to_hex())
            .collect()
    }

    #[test]
    fn jsonl_fixtures_are_detected_as_gemini_logs() {
        for name in [RESUMED, STRAY, HELLO] {
            let path = PathBuf::from(JSONL_DIR).join(name);
            assert_eq!(
                crate::import::detect_format(&path),
                Ok(crate::import::SourceFormat::GeminiLog),
                "{name}"
            );
        }
    }

    #[test]
    fn jsonl_resumed_session_is_the_first_run_plus_the_new_turn() {
        let (path, text, report) = jsonl(RESUMED);
        assert_eq!(report.sessions.len(), 1);
        let s = &report.sessions[0];
        assert_eq!(s.source_kind, "gemini");
        assert_eq!(s.source_id, "24000f74-1547-4404-a9a1-d6b512c55ea9");
        assert_eq!(roles(s), "UATAUA");
        assert_eq!(
            s.messages[0].blocks,
            vec![ContentBlock::text(
                "List the files here, USE-TOOL please. MARKER-FIX-1"
            )]
        );
        let call_id = match &s.messages[1].blocks[..] {
            [ContentBlock::Thinking { text, .. }, ContentBlock::ToolUse { id, name, input }] => {
                assert_eq!(text, "**Listing**\n\nI will list the directory.");
                assert_eq!(name, "list_directory");
                assert_eq!(input, r#"{"dir_path":"."}"#);
                id.clone()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(s.messages[1].model, "gemini-3.8-flash");
        assert_eq!(
            s.messages[2].blocks,
            vec![ContentBlock::ToolResult {
                tool_use_id: call_id,
                is_error: false,
                content: vec![ToolResultPart::Text {
                    text: "Directory listing for /tmp/gx/p5:\nnotes.txt (6 bytes)".into()
                }],
            }]
        );
        assert_eq!(
            s.messages[3].blocks,
            vec![
                ContentBlock::Thinking {
                    text: "**Answering**\n\nThinking about it.".into(),
                    signature: None
                },
                ContentBlock::text("Stand-in reply.")
            ]
        );
        assert_eq!(
            s.messages[4].blocks,
            vec![ContentBlock::text("Thanks. MARKER-FIX-2")]
        );
        assert_eq!(
            s.messages[5].blocks[1],
            ContentBlock::text("Stand-in reply.")
        );
        assert_eq!(
            s.messages[1].meta.usage,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 5,
                cache_read_tokens: 0,
                cache_write_tokens: 0
            })
        );
        // The context message (twice: before and after the resume's rewrite) and the
        // function-response user messages (recorded by the CLI, then again as `<id>_response`)
        // are skipped.
        assert_eq!(report.skipped_types.get("user:context"), Some(&1));
        assert_eq!(report.skipped_types.get("user:function_response"), Some(&2));

        // The file as the first run left it (before the resume's `$set {sessionId}` line)
        // gives the first four nodes: resuming only appended.
        let cut: String = text
            .lines()
            .take_while(|l| !l.starts_with(r#"{"$set":{"sessionId""#))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(cut.len() < text.len());
        let before = parse_jsonl(&path, &cut).expect("parses");
        let before = &before.sessions[0];
        assert_eq!(roles(before), "UATA");
        assert_eq!(node_ids(before)[..], node_ids(s)[..4]);
    }

    #[test]
    fn jsonl_stray_resume_file_is_no_session() {
        let (_, _, report) = jsonl(STRAY);
        assert!(report.sessions.is_empty());
        assert_eq!(report.skipped_types.get("user:context"), Some(&1));
    }

    #[test]
    fn jsonl_hello() {
        let (_, _, report) = jsonl(HELLO);
        let s = &report.sessions[0];
        assert_eq!(s.source_id, "aa7d5eb1-4a68-4559-8e86-46e3857cdf7b");
        assert_eq!(roles(s), "UA");
        assert_eq!(
            s.messages[0].blocks,
            vec![ContentBlock::text("Say hello. MARKER-FIX-3")]
        );
        assert_eq!(s.messages[1].meta.provider.as_deref(), Some("google"));
    }

    #[test]
    fn jsonl_replay_follows_the_cli() {
        let lines = [
            json!({"sessionId": "s1", "projectHash": "h", "startTime": "2026-01-01T00:00:00Z", "kind": "main"}).to_string(),
            json!({"id": "u1", "type": "user", "content": [{"text": "first"}]}).to_string(),
            json!({"id": "g1", "type": "gemini", "content": "draft", "model": "m"}).to_string(),
            // A later line with the same id replaces the record in place.
            json!({"id": "g1", "type": "gemini", "content": "answer", "model": "m"}).to_string(),
            "this is {not json".to_owned(),
            json!({"id": "u2", "type": "user", "content": "second"}).to_string(),
            json!({"id": "g2", "type": "gemini", "content": "two", "model": "m"}).to_string(),
            // Rewind removes u2 and everything after it.
            json!({"$rewindTo": "u2"}).to_string(),
            json!({"id": "u3", "type": "user", "content": "third"}).to_string(),
            json!({"$set": {"summary": "A title", "lastUpdated": "2026-01-01T00:01:00Z"}}).to_string(),
            json!({"unknown": true}).to_string(),
            String::new(),
        ];
        let text = lines.join("\n");
        let report = parse_jsonl(Path::new("x.jsonl"), &text).expect("parses");
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].line, 5);
        assert_eq!(report.skipped_types.get("line:unknown"), Some(&1));
        let s = &report.sessions[0];
        assert_eq!(s.source_id, "s1");
        assert_eq!(s.title.as_deref(), Some("A title"));
        assert_eq!(roles(s), "UAU");
        assert_eq!(s.messages[1].blocks, vec![ContentBlock::text("answer")]);
        assert_eq!(s.messages[2].blocks, vec![ContentBlock::text("third")]);

        // `$set.messages` replaces the list; an entry with the text of a record written
        // earlier keeps that record (its model, thoughts and calls), a changed one is taken.
        let lines = [
            json!({"sessionId": "s1", "projectHash": "h"}).to_string(),
            json!({"id": "u1", "type": "user", "content": [{"text": "hi"}]}).to_string(),
            json!({"id": "g1", "type": "gemini", "content": "", "model": "m",
                   "thoughts": [{"subject": "S", "description": "d"}],
                   "toolCalls": [{"id": "c1", "name": "t", "args": {}, "status": "success",
                                  "result": [{"functionResponse": {"id": "c1", "name": "t", "response": {"output": "ok"}}}]}]}).to_string(),
            json!({"id": "g2", "type": "gemini", "content": "old", "model": "m"}).to_string(),
            json!({"$set": {"messages": [
                {"id": "u1", "type": "user", "content": [{"text": "hi"}]},
                {"id": "g1", "type": "gemini", "content": [{"text": "**S** d", "thought": true},
                    {"functionCall": {"id": "c1", "name": "t", "args": {}}}]},
                {"id": "g1_response", "type": "user", "content": [{"functionResponse": {"id": "c1", "name": "t", "response": {"output": "ok"}}}]},
                {"id": "g2", "type": "gemini", "content": [{"text": "new"}]}
            ]}}).to_string(),
        ];
        let report = parse_jsonl(Path::new("x.jsonl"), &lines.join("\n")).expect("parses");
        let s = &report.sessions[0];
        assert_eq!(roles(s), "UATA");
        assert_eq!(s.messages[1].model, "m");
        assert_eq!(s.messages[3].blocks, vec![ContentBlock::text("new")]);
        assert_eq!(s.messages[3].model, "");
        assert_eq!(report.skipped_types.get("user:function_response"), Some(&1));

        // No header: not a session log.
        let report = parse_jsonl(Path::new("x.jsonl"), &lines[1]);
        assert!(matches!(
            report,
            Err(ImportError::Malformed { line: 0, .. })
        ));
    }

    #[test]
    fn jsonl_project_from_the_cli_layout() {
        let home = tempfile::tempdir().expect("tempdir");
        let chats = home.path().join("tmp/my-project/chats");
        std::fs::create_dir_all(&chats).expect("mkdir");
        let file = chats.join(HELLO);
        std::fs::copy(PathBuf::from(JSONL_DIR).join(HELLO), &file).expect("copy");
        std::fs::write(
            home.path().join("projects.json"),
            r#"{"projects": {"/work/My Project": "my-project"}}"#,
        )
        .expect("write");
        let report = crate::import::parse_file(&file, crate::import::SourceFormat::GeminiLog)
            .expect("parses");
        let meta = &report.sessions[0].messages[0].meta;
        assert_eq!(meta.cwd.as_deref(), Some("/work/My Project"));
        assert_eq!(meta.project.as_deref(), Some("My Project"));
        // The folder's `.project_root` marker wins.
        std::fs::write(
            chats.parent().expect("dir").join(".project_root"),
            "/else/where",
        )
        .expect("write");
        let report = crate::import::parse_file(&file, crate::import::SourceFormat::GeminiLog)
            .expect("parses");
        assert_eq!(
            report.sessions[0].messages[0].meta.cwd.as_deref(),
            Some("/else/where")
        );
    }

    #[test]
    fn a_gemini_home_is_walked_to_its_session_logs() {
        let home = tempfile::tempdir().expect("tempdir");
        let g = home.path().join(".gemini");
        let chats = g.join("tmp/p/chats");
        std::fs::create_dir_all(&chats).expect("mkdir");
        std::fs::create_dir_all(g.join("history/p")).expect("mkdir");
        for (path, text) in [
            (g.join("projects.json"), r#"{"projects": {"/w/p": "p"}}"#),
            (g.join("settings.json"), r#"{"security": {}}"#),
            (g.join("tmp/p/.project_root"), "/w/p"),
            (g.join("history/p/.project_root"), "/w/p"),
            (g.join("tmp/p/logs.json"), "[]"),
        ] {
            std::fs::write(path, text).expect("write");
        }
        for name in [HELLO, STRAY] {
            std::fs::copy(PathBuf::from(JSONL_DIR).join(name), chats.join(name)).expect("copy");
        }
        let (files, passed_over) = crate::import::walk::find_importable(home.path()).expect("walk");
        let names: Vec<(String, crate::import::SourceFormat)> = files
            .iter()
            .map(|(p, f)| {
                (
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    *f,
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                (STRAY.to_owned(), crate::import::SourceFormat::GeminiLog),
                (HELLO.to_owned(), crate::import::SourceFormat::GeminiLog),
            ]
        );
        assert_eq!(passed_over, 5);
        let report = crate::import::parse_file(&files[1].0, files[1].1).expect("parses");
        assert_eq!(
            report.sessions[0].messages[0].meta.cwd.as_deref(),
            Some("/w/p")
        );
    }
}
