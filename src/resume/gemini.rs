//! Writes a session for Gemini CLI 0.61 (SPEC.md §17): its JSONL session log, where
//! `gemini --resume <session id>` finds it.
//!
//! **Where.** Gemini CLI keeps its state in `$GEMINI_CLI_HOME/.gemini` (else `~/.gemini`).
//! `projects.json` there (`{"projects": {"<absolute project dir>": "<project name>"}}`) names
//! each project directory; the name is the directory's base name lowercased, every character
//! outside `[a-z0-9]` turned into `-` (runs squeezed, ends trimmed, `project` when empty), with
//! `-1`, `-2`... added when another directory already has it (in `projects.json`, or as the
//! owner written in `tmp/<name>/.project_root` / `history/<name>/.project_root`). The directory
//! is [`Render::cwd`] with links resolved, as the OS reports the CLI's working directory (the
//! CLI keys it by `path.resolve(process.cwd())`). When it is not registered yet the writer
//! adds it the way the CLI's `ProjectRegistry` would and returns the merged `projects.json`
//! (two-space indented, like `JSON.stringify(data, null, 2)`) in [`Rendered::extra`]; a
//! `projects.json` that is not JSON is refused rather than replaced. The session goes to
//! `tmp/<project name>/chats/session-<YYYY-MM-DDTHH-MM>-<first 8 of the session id>.jsonl`
//! (the time is [`Render::now_ms`], UTC); a file already there for the same session id is
//! rewritten in place instead. A subagent session goes to `chats/<parent id>/<id>.jsonl` with
//! `kind: "subagent"`, as the CLI writes them. `gemini --resume <id>` lists the project's
//! `chats/session-*.json[l]` files, reads each header and picks the one whose `sessionId` is
//! `<id>`.
//!
//! **What.** A header line `{sessionId, projectHash, startTime, lastUpdated, kind: "main",
//! summary?}` (`projectHash` is the SHA-256 hex of the project directory, as the CLI computes
//! it), then one line per message record, each a complete record with its own `id` (the CLI
//! replays the log: a later line with the same id replaces a record, `$set` merges metadata and
//! `$set.messages` replaces the list, `$rewindTo` cuts it; a fresh file needs none of that).
//! Nodes map to records as the importer reads them back (`crate::import::gemini`):
//!
//! - A user node becomes a `user` record whose `content` is a list of parts: text, `thought`
//!   text, images as `inlineData` (base64) / `fileData` (a reference), and an unmodeled
//!   (`Other`) Gemini part written back as the JSON it was.
//! - An assistant node becomes a `gemini` record: its leading thinking blocks are `thoughts`
//!   (`**subject**\n\ndescription` is split back into subject and description, anything else
//!   is a description alone; both read back as the same text), the blocks up to the first tool
//!   call are `content`, and the tool calls are `toolCalls` (`id`, `name`, `args` = the input
//!   JSON, and one shared `timestamp`, so the importer reads them as one model round). `model`
//!   is the node's model; `tokens` are rebuilt from its usage.
//! - The ToolResult blocks of the next Tool (or user) node are put into the calls they answer:
//!   `status` `success` / `error`, and `result` = a `functionResponse` part whose response is
//!   `{"output": text}` (`{"error": text}` for an error; a result text that is a JSON object
//!   is sent as that object) for the first text, then the other parts (text, images). That is
//!   what the CLI sends back to the model when it resumes, and what its importer reads as the
//!   same ToolResult. A call without a result is written without `status`/`result`, as a call
//!   cut off.
//! - Record ids: the node's `origin_id` (the record id it was imported from) when it is unused
//!   so far, else a UUID derived from the session id and the node id, stable across renders.
//!
//! **Lossless for Gemini sessions.** Everything the importer reads back is written from the
//! blocks themselves, one record per assistant node (a record the CLI had filled over several
//! model rounds was split into rounds on import; each round comes back as its own record), so
//! re-importing gives the same roles, models and blocks, hence the same node ids.
//!
//! **Other agents' sessions** keep every message, call and result in order. Consecutive
//! assistant nodes (Codex writes reasoning, text and each call as items of their own) are
//! merged into one `gemini` record while the order thinking → content → calls holds, since the
//! Gemini API wants one model turn per round; results are attached to their calls by id (a
//! Claude user node's text after its tool results becomes a user record after them). What has
//! no Gemini form is rendered as text, never dropped: system and developer messages become
//! user text prefixed `[system]` / `[developer]`, other agents' unmodeled blocks become
//! `[<kind>] <json>` text, a result whose call is not in the file becomes user text naming the
//! call, and a tool input that is not JSON is sent as `{"input": "<text>"}`. Signatures and
//! encrypted reasoning belong to the other provider and are left out.
//!
//! **Resuming.** `gemini --resume <id> -p "<prompt>"` runs one turn non-interactively (`--resume
//! latest` or a 1-based index work too; `--list-sessions` lists them). It appends to this file
//! `{"$set":{"sessionId":…}}`, a `$set.messages` rewrite of the whole history (see the
//! importer for why that reads back as the same nodes), then the new user and gemini records;
//! it also starts a `session-<now>-<id8>.jsonl` holding only a fresh `<session_context>`
//! message (the same file when the minute and id match), which imports as nothing.
//!
//! **ends.** The importer's per-message node counts
//! ([`crate::import::gemini::nodes_per_message`]) over the written records give, per node,
//! how many nodes the file has imported once that node's record (and, for a Tool node, the
//! results in it) has been read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Map, Value};
use tapes_protocol::{ContentBlock, ImageSource, Node, Role, ToolResultPart};

use super::{derived_uuid, timestamp, AgentHomes, Platform, Render, Rendered, ResumeError};
use crate::import::gemini::nodes_per_message;

/// The session file for `req` and, when `req.cwd` was not registered yet, the merged
/// `projects.json`.
pub fn render(req: &Render, homes: &AgentHomes) -> Result<Rendered, ResumeError> {
    // The CLI keys the project by its working directory as the OS reports it (links
    // resolved, e.g. /tmp → /private/tmp on macOS).
    let cwd = std::fs::canonicalize(req.cwd).unwrap_or_else(|_| req.cwd.to_path_buf());
    let root = project_dir(&cwd);
    let (name, registry) = project_name(&homes.gemini, &root)?;
    let chats = homes.gemini.join("tmp").join(&name).join("chats");
    let subagent = req.parent_agent_session_id.is_some();
    let path = match req.parent_agent_session_id {
        Some(parent) => chats
            .join(safe_name(parent))
            .join(format!("{}.jsonl", safe_name(req.agent_session_id))),
        None => existing_file(&chats, req.agent_session_id).unwrap_or_else(|| {
            let time = timestamp(req.now_ms);
            let minute = time
                .get(..16)
                .unwrap_or("1970-01-01T00:00")
                .replace(':', "-");
            let id = safe_name(req.agent_session_id);
            let short: String = id.chars().take(8).collect();
            chats.join(format!("session-{minute}-{short}.jsonl"))
        }),
    };

    let mut writer = Writer::new(req);
    for (index, node) in req.nodes.iter().enumerate() {
        writer.node(index, node);
    }
    let first = req.nodes.first().and_then(|n| n.meta.timestamp_ms);
    let last = req.nodes.iter().rev().find_map(|n| n.meta.timestamp_ms);
    let mut header = Map::new();
    header.insert("sessionId".into(), json!(req.agent_session_id));
    header.insert("projectHash".into(), json!(sha256_hex(root.as_bytes())));
    header.insert(
        "startTime".into(),
        json!(timestamp(first.unwrap_or(req.now_ms))),
    );
    header.insert(
        "lastUpdated".into(),
        json!(timestamp(last.unwrap_or(req.now_ms))),
    );
    header.insert(
        "kind".into(),
        json!(if subagent { "subagent" } else { "main" }),
    );
    if subagent {
        header.insert("directories".into(), json!([root]));
    }
    if let Some(title) = req.record.title.as_deref().filter(|t| !t.is_empty()) {
        header.insert("summary".into(), json!(title));
    }

    let records: Vec<Value> = writer.records.iter().map(|r| r.value()).collect();
    let ends = writer.ends(&records);
    let mut bytes = Value::Object(header).to_string().into_bytes();
    bytes.push(b'\n');
    for record in &records {
        bytes.extend_from_slice(record.to_string().as_bytes());
        bytes.push(b'\n');
    }
    let extra = match registry {
        Some(merged) => vec![(homes.gemini.join("projects.json"), merged)],
        None => Vec::new(),
    };
    Ok(Rendered {
        path,
        bytes,
        ends,
        extra,
    })
}

// ---- where ----------------------------------------------------------------------------------

/// The project directory as the CLI keys it: `path.resolve(cwd)` (absolute, `.`/`..` folded,
/// no trailing separator).
fn project_dir(cwd: &Path) -> String {
    let mut out = PathBuf::new();
    for part in cwd.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}

/// The CLI's `sanitizeFilenamePart`: only `[A-Za-z0-9_-]` kept in a file name.
fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The project's name, and the merged `projects.json` when `root` had to be added to it.
fn project_name(gemini: &Path, root: &str) -> Result<(String, Option<Vec<u8>>), ResumeError> {
    let registry_path = gemini.join("projects.json");
    let mut registry: Value = match std::fs::read_to_string(&registry_path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| ResumeError::Unreadable {
            path: registry_path.clone(),
            why: format!("not JSON: {e}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({"projects": {}}),
        Err(e) => {
            return Err(ResumeError::Unreadable {
                path: registry_path,
                why: e.to_string(),
            })
        }
    };
    let projects = match registry.get_mut("projects") {
        Some(Value::Object(projects)) => projects,
        _ => {
            return Err(ResumeError::Unreadable {
                path: registry_path,
                why: "no `projects` object".into(),
            })
        }
    };
    if let Some(name) = projects.get(root).and_then(Value::as_str) {
        if owner_ok(gemini, name, root) {
            return Ok((name.to_owned(), None));
        }
    }
    let taken: std::collections::HashSet<String> = projects
        .iter()
        .filter(|(path, _)| path.as_str() != root)
        .filter_map(|(_, name)| name.as_str().map(str::to_owned))
        .collect();
    let base = slugify(
        Path::new(root)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .as_deref()
            .unwrap_or(""),
    );
    let mut counter = 0;
    let name = loop {
        let candidate = if counter == 0 {
            base.clone()
        } else {
            format!("{base}-{counter}")
        };
        counter += 1;
        if !taken.contains(&candidate) && owner_ok(gemini, &candidate, root) {
            break candidate;
        }
    };
    projects.insert(root.to_owned(), json!(name));
    let merged = serde_json::to_vec_pretty(&registry).map_err(|e| ResumeError::Render {
        what: "gemini projects.json".into(),
        why: e.to_string(),
    })?;
    Ok((name, Some(merged)))
}

/// False when `tmp/<name>` or `history/<name>` is marked as another directory's.
fn owner_ok(gemini: &Path, name: &str, root: &str) -> bool {
    ["tmp", "history"].iter().all(|base| {
        match std::fs::read_to_string(gemini.join(base).join(name).join(".project_root")) {
            Ok(owner) => project_dir(Path::new(owner.trim())) == root,
            Err(_) => true,
        }
    })
}

/// The CLI's `ProjectRegistry.slugify`.
fn slugify(text: &str) -> String {
    let mut out = String::new();
    for c in text.to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_matches('-');
    if out.is_empty() {
        "project".into()
    } else {
        out.to_owned()
    }
}

/// The `session-*-<short id>.jsonl` already in `chats` whose header names `session_id`.
fn existing_file(chats: &Path, session_id: &str) -> Option<PathBuf> {
    let short: String = safe_name(session_id).chars().take(8).collect();
    let mut found: Vec<PathBuf> = std::fs::read_dir(chats)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("session-") && n.ends_with(&format!("-{short}.jsonl"))
            })
        })
        .filter(|p| {
            std::fs::read_to_string(p).ok().is_some_and(|text| {
                text.lines().any(|line| {
                    serde_json::from_str::<Value>(line).ok().is_some_and(|v| {
                        v.get("projectHash").is_some()
                            && v.get("sessionId").and_then(Value::as_str) == Some(session_id)
                    })
                })
            })
        })
        .collect();
    // A resume can start a second file for the id (only a context message, which the CLI
    // does not list); the session is the largest.
    found.sort_by_key(|p| (std::fs::metadata(p).map_or(0, |m| m.len()), p.clone()));
    found.pop()
}

// ---- what -----------------------------------------------------------------------------------

/// One record being built.
struct Record {
    id: String,
    kind: Kind,
    timestamp: String,
    model: String,
    /// `thoughts` of a gemini record.
    thoughts: Vec<Value>,
    content: Vec<Value>,
    calls: Vec<Value>,
    tokens: Option<Value>,
    /// Whether another assistant node may still be merged into it (other agents' sessions).
    open: bool,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    User,
    Gemini,
}

impl Record {
    fn value(&self) -> Value {
        let mut record = Map::new();
        record.insert("id".into(), json!(self.id));
        record.insert("timestamp".into(), json!(self.timestamp));
        match self.kind {
            Kind::User => {
                record.insert("type".into(), json!("user"));
                record.insert("content".into(), Value::Array(self.content.clone()));
            }
            Kind::Gemini => {
                record.insert("type".into(), json!("gemini"));
                let content = if self.content.is_empty() {
                    json!("")
                } else {
                    Value::Array(self.content.clone())
                };
                record.insert("content".into(), content);
                record.insert("thoughts".into(), Value::Array(self.thoughts.clone()));
                if !self.calls.is_empty() {
                    record.insert("toolCalls".into(), Value::Array(self.calls.clone()));
                }
                if let Some(tokens) = &self.tokens {
                    record.insert("tokens".into(), tokens.clone());
                }
                if !self.model.is_empty() {
                    record.insert("model".into(), json!(self.model));
                }
            }
        }
        Value::Object(record)
    }
}

/// Where a node landed: the record, and whether it is the results put into that record's calls.
#[derive(Clone, Copy)]
struct Landing {
    record: Option<usize>,
    results: bool,
}

struct Writer<'a> {
    req: &'a Render<'a>,
    native: bool,
    records: Vec<Record>,
    used_ids: std::collections::HashSet<String>,
    /// Call id → (record, index in its `toolCalls`), for calls not answered yet.
    pending: HashMap<String, (usize, usize)>,
    landings: Vec<Landing>,
}

impl<'a> Writer<'a> {
    fn new(req: &'a Render<'a>) -> Self {
        Writer {
            req,
            native: req.native(Platform::Gemini),
            records: Vec::new(),
            used_ids: Default::default(),
            pending: HashMap::new(),
            landings: Vec::new(),
        }
    }

    fn node(&mut self, index: usize, node: &Node) {
        let before = self.landings.len();
        match node.body.role {
            Role::Assistant => self.assistant(node),
            Role::User | Role::Tool => self.user_or_tool(node),
            Role::System | Role::Developer => {
                let label = if node.body.role == Role::System {
                    "system"
                } else {
                    "developer"
                };
                let mut parts = vec![json!({"text": format!("[{label}]")})];
                for block in &node.body.blocks {
                    parts.extend(self.content_part(block));
                }
                let record = self.push(node, Kind::User, parts);
                self.land(record, false);
            }
        }
        if self.landings.len() > before + 1 {
            // Several records (or results and text): the node ends with the last of them.
            let last = self.landings[before..]
                .iter()
                .copied()
                .max_by_key(|l| (l.record, l.results));
            self.landings.truncate(before);
            self.landings.extend(last);
        }
        if self.landings.len() == before {
            // Nothing of it could be written (no blocks): it ends where the file is so far.
            let last = self.records.len().checked_sub(1);
            self.landings.push(Landing {
                record: last,
                results: true,
            });
        }
        debug_assert_eq!(self.landings.len(), index + 1);
    }

    fn land(&mut self, record: usize, results: bool) {
        self.landings.push(Landing {
            record: Some(record),
            results,
        });
    }

    fn record_id(&mut self, node: &Node) -> String {
        let id = match node.meta.origin_id.as_deref() {
            Some(origin)
                if self.native && !origin.is_empty() && !self.used_ids.contains(origin) =>
            {
                origin.to_owned()
            }
            _ => derived_uuid(&[
                self.req.agent_session_id.as_bytes(),
                node.id().to_hex().as_bytes(),
                &(self.records.len() as u64).to_le_bytes(),
            ]),
        };
        self.used_ids.insert(id.clone());
        id
    }

    fn push(&mut self, node: &Node, kind: Kind, content: Vec<Value>) -> usize {
        for record in &mut self.records {
            record.open = false;
        }
        let id = self.record_id(node);
        self.records.push(Record {
            id,
            kind,
            timestamp: timestamp(node.meta.timestamp_ms.unwrap_or(self.req.now_ms)),
            model: String::new(),
            thoughts: Vec::new(),
            content,
            calls: Vec::new(),
            tokens: None,
            open: false,
        });
        self.records.len() - 1
    }

    fn assistant(&mut self, node: &Node) {
        let blocks = &node.body.blocks;
        // Split into thinking → content → calls; a block out of that order starts a new record.
        let mut stage = 0; // 0 thoughts, 1 content, 2 calls
        let mut target: Option<usize> = self.mergeable(node);
        if let Some(record) = target {
            let r = &self.records[record];
            stage = if !r.calls.is_empty() {
                2
            } else if !r.content.is_empty() {
                1
            } else {
                0
            };
        }
        let mut wrote_any = false;
        for block in blocks {
            let block_stage = match block {
                ContentBlock::Thinking { .. } if stage == 0 => 0,
                ContentBlock::ToolUse { .. } => 2,
                _ => 1,
            };
            if target.is_none() || block_stage < stage {
                let record = self.push(node, Kind::Gemini, Vec::new());
                self.records[record].model = node.body.model.clone();
                self.records[record].tokens = node.meta.usage.map(tokens);
                target = Some(record);
                stage = 0;
            }
            let Some(record) = target else { continue };
            stage = stage.max(block_stage);
            match block {
                ContentBlock::Thinking { text, .. } if block_stage == 0 => {
                    if text.is_empty() {
                        continue;
                    }
                    let stamp = self.records[record].timestamp.clone();
                    self.records[record].thoughts.push(thought(text, &stamp));
                }
                ContentBlock::ToolUse { id, name, input } => {
                    let args = match serde_json::from_str::<Value>(input) {
                        Ok(args) => args,
                        Err(_) => json!({ "input": input }),
                    };
                    let stamp = self.records[record].timestamp.clone();
                    let calls = &mut self.records[record].calls;
                    calls.push(json!({
                        "id": id,
                        "name": name,
                        "args": args,
                        "timestamp": stamp,
                    }));
                    self.pending.insert(id.clone(), (record, calls.len() - 1));
                }
                other => {
                    let parts = self.content_part(other);
                    self.records[record].content.extend(parts);
                }
            }
            wrote_any = true;
        }
        if let Some(record) = target {
            if !self.native {
                self.records[record].open = true;
            }
            if wrote_any || !blocks.is_empty() {
                self.land(record, false);
            }
        }
    }

    /// The open gemini record an assistant node of another agent can join: same model, no
    /// results in it yet, and the node's blocks keep the thinking → content → calls order.
    fn mergeable(&self, node: &Node) -> Option<usize> {
        if self.native {
            return None;
        }
        let index = self.records.len().checked_sub(1)?;
        let record = &self.records[index];
        if !record.open || record.kind != Kind::Gemini || record.model != node.body.model {
            return None;
        }
        let answered = record
            .calls
            .iter()
            .any(|c| c.get("status").is_some() || c.get("result").is_some());
        if answered {
            return None;
        }
        let first = node.body.blocks.first()?;
        let ok = match first {
            ContentBlock::Thinking { .. } => record.content.is_empty() && record.calls.is_empty(),
            ContentBlock::ToolUse { .. } => true,
            _ => record.calls.is_empty(),
        };
        ok.then_some(index)
    }

    fn user_or_tool(&mut self, node: &Node) {
        let mut parts: Vec<Value> = Vec::new();
        let flush = |writer: &mut Self, parts: &mut Vec<Value>| {
            if !parts.is_empty() {
                let record = writer.push(node, Kind::User, std::mem::take(parts));
                writer.land(record, false);
            }
        };
        for block in &node.body.blocks {
            match block {
                ContentBlock::ToolResult {
                    tool_use_id,
                    is_error,
                    content,
                } => match self.pending.remove(tool_use_id) {
                    Some((record, call)) if parts.is_empty() => {
                        self.answer(record, call, *is_error, content);
                        self.land(record, true);
                    }
                    found => {
                        if let Some((record, call)) = found {
                            // Text came first in this node: keep the order by writing it
                            // before, and the result as text after it.
                            self.pending.insert(tool_use_id.clone(), (record, call));
                        }
                        parts.push(json!({"text": result_text(tool_use_id, *is_error, content)}));
                        parts.extend(content.iter().filter_map(result_image));
                    }
                },
                other => parts.extend(self.content_part(other)),
            }
        }
        flush(self, &mut parts);
    }

    fn answer(&mut self, record: usize, call: usize, is_error: bool, content: &[ToolResultPart]) {
        let Some(Value::Object(entry)) = self.records[record].calls.get_mut(call) else {
            return;
        };
        let id = entry.get("id").cloned().unwrap_or(Value::Null);
        let name = entry.get("name").cloned().unwrap_or(Value::Null);
        let mut result: Vec<Value> = Vec::new();
        for (n, part) in content.iter().enumerate() {
            match part {
                ToolResultPart::Text { text } if n == 0 => {
                    let response = response_object(text, is_error);
                    result.push(json!({"functionResponse": {
                        "id": id, "name": name, "response": response,
                    }}));
                }
                ToolResultPart::Text { text } => result.push(json!({ "text": text })),
                ToolResultPart::Image { media_type, source } => {
                    result.push(image_part(media_type, source))
                }
            }
        }
        entry.insert(
            "status".into(),
            json!(if is_error { "error" } else { "success" }),
        );
        // No parts at all: `result: null`, which reads back as a result without content.
        entry.insert(
            "result".into(),
            if result.is_empty() {
                Value::Null
            } else {
                Value::Array(result)
            },
        );
    }

    /// The part(s) a non-call block becomes in `content`.
    fn content_part(&self, block: &ContentBlock) -> Vec<Value> {
        match block {
            ContentBlock::Text { text } => {
                if text.is_empty() {
                    Vec::new()
                } else {
                    vec![json!({ "text": text })]
                }
            }
            ContentBlock::Thinking { text, .. } => {
                if text.is_empty() {
                    Vec::new()
                } else {
                    vec![json!({"text": text, "thought": true})]
                }
            }
            ContentBlock::Image { media_type, source } => vec![image_part(media_type, source)],
            ContentBlock::Other { kind, json } => {
                if self.native {
                    if let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(json) {
                        return vec![value];
                    }
                }
                vec![json!({ "text": format!("[{kind}] {json}") })]
            }
            ContentBlock::ToolUse { id, name, input } => {
                vec![json!({ "text": format!("[tool call {name} ({id})] {input}") })]
            }
            ContentBlock::ToolResult {
                tool_use_id,
                is_error,
                content,
            } => {
                let mut parts = vec![json!({"text": result_text(tool_use_id, *is_error, content)})];
                parts.extend(content.iter().filter_map(result_image));
                parts
            }
        }
    }

    /// Per node: how many nodes the importer has read from the records once that node's part
    /// of its record was read.
    fn ends(&self, records: &[Value]) -> Vec<u32> {
        let produced = nodes_per_message(records);
        let mut before = Vec::with_capacity(produced.len());
        let mut total = 0usize;
        for n in &produced {
            before.push(total);
            total += n;
        }
        let mut ends = Vec::with_capacity(self.landings.len());
        let mut high = 0usize;
        for landing in &self.landings {
            let end = match landing.record {
                None => 0,
                Some(r) => {
                    let made = produced.get(r).copied().unwrap_or(0);
                    let start = before.get(r).copied().unwrap_or(total);
                    let is_gemini = self.records.get(r).is_some_and(|x| x.kind == Kind::Gemini);
                    if landing.results || !is_gemini {
                        start + made
                    } else {
                        start + made.min(1)
                    }
                }
            };
            high = high.max(end);
            ends.push(u32::try_from(high).unwrap_or(u32::MAX));
        }
        ends
    }
}

/// A thinking block as a `thoughts` entry: `**subject**\n\ndescription` (how the importer
/// rebuilds a thought) is split back; any other text is a description alone.
fn thought(text: &str, stamp: &str) -> Value {
    let (subject, description) = split_thought(text).unwrap_or(("", text));
    json!({"subject": subject, "description": description, "timestamp": stamp})
}

fn split_thought(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("**")?;
    let close = rest.find("**")?;
    let subject = &rest[..close];
    let after = &rest[close + 2..];
    if subject.is_empty() {
        return None;
    }
    let description = if after.is_empty() {
        ""
    } else {
        after.strip_prefix("\n\n").filter(|d| !d.is_empty())?
    };
    // Only when the importer would rebuild exactly this text.
    let rebuilt = if description.is_empty() {
        format!("**{subject}**")
    } else {
        format!("**{subject}**\n\n{description}")
    };
    (rebuilt == text).then_some((subject, description))
}

/// `tokens` as Gemini CLI records them, from tapes usage (input here excludes the cached
/// tokens, which Gemini's `input` includes; thinking tokens are already in `output`).
fn tokens(usage: tapes_protocol::Usage) -> Value {
    let input = usage.input_tokens + usage.cache_read_tokens;
    json!({
        "input": input,
        "output": usage.output_tokens,
        "cached": usage.cache_read_tokens,
        "thoughts": 0,
        "tool": 0,
        "total": input + usage.output_tokens,
    })
}

/// The `response` of a result's `functionResponse` for its first text.
fn response_object(text: &str, is_error: bool) -> Value {
    if !is_error {
        // A JSON object the importer would print back as exactly this text is sent as itself.
        if let Ok(object @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
            let single = object.as_object().is_some_and(|o| {
                o.len() == 1
                    && ["output", "error"]
                        .iter()
                        .any(|k| o.get(*k).is_some_and(Value::is_string))
            });
            if !single && crate::import::json_text(&object) == text {
                return object;
            }
        }
    }
    let key = if is_error { "error" } else { "output" };
    json!({ key: text })
}

fn image_part(media_type: &str, source: &ImageSource) -> Value {
    match source {
        ImageSource::Bytes { data } => json!({"inlineData": {
            "mimeType": media_type,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        }}),
        ImageSource::Reference { uri } => json!({"fileData": {
            "mimeType": media_type,
            "fileUri": uri,
        }}),
    }
}

fn result_image(part: &ToolResultPart) -> Option<Value> {
    match part {
        ToolResultPart::Image { media_type, source } => Some(image_part(media_type, source)),
        ToolResultPart::Text { .. } => None,
    }
}

/// A result that cannot go into its call, as text.
fn result_text(tool_use_id: &str, is_error: bool, content: &[ToolResultPart]) -> String {
    let mut text = format!(
        "[tool result for {tool_use_id}{}]",
        if is_error { ", error" } else { "" }
    );
    for part in content {
        if let ToolResultPart::Text { text: t } = part {
            text.push('\n');
            text.push_str(t);
        }
    }
    text
}

/// SHA-256 as lowercase hex (Gemini CLI's `projectHash`).
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut message = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bits.to_be_bytes());
    for chunk in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (slot, add) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *slot = slot.wrapping_add(add);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::import::ingest::build_nodes;
    use crate::import::{gemini, ParsedSession};
    use crate::session::SessionRecord;
    use tapes_protocol::SessionId;

    const NOW: i64 = 1_765_000_000_000;

    fn homes(gemini: &Path) -> AgentHomes {
        AgentHomes {
            claude: "/h/.claude".into(),
            codex: "/h/.codex".into(),
            gemini: gemini.to_path_buf(),
        }
    }

    fn record(kind: &str, title: Option<&str>) -> SessionRecord {
        crate::resume::test_record(kind, title)
    }

    fn render_nodes(
        nodes: &[Node],
        kind: &str,
        title: Option<&str>,
        gemini_home: &Path,
        cwd: &Path,
    ) -> Rendered {
        let record = record(kind, title);
        let req = Render {
            nodes,
            record: &record,
            session: SessionId([1; 16]),
            agent_session_id: "0f1e2d3c-4b5a-4697-8877-665544332211",
            parent_agent_session_id: None,
            cwd,
            now_ms: NOW,
        };
        render(&req, &homes(gemini_home)).expect("render")
    }

    /// Parses what the writer wrote with the JSONL importer: the one session in it.
    fn reparse(rendered: &Rendered) -> ParsedSession {
        let text = String::from_utf8(rendered.bytes.clone()).expect("utf-8");
        let report = gemini::parse_jsonl(&rendered.path, &text).expect("parses");
        assert_eq!(report.warnings, vec![], "no warnings");
        assert_eq!(report.sessions.len(), 1, "one session");
        report.sessions[0].clone()
    }

    fn ids(nodes: &[Node]) -> Vec<String> {
        nodes.iter().map(|n| n.id().to_hex()).collect()
    }

    /// Every Gemini session the project and the real fixtures hold.
    fn gemini_sessions() -> Vec<(String, ParsedSession)> {
        let mut out = Vec::new();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents/gemini");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if crate::real_fixtures::present() {
            let real = crate::real_fixtures::dir().join("gemini");
            files.extend(
                std::fs::read_dir(real)
                    .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
        }
        files.sort();
        for path in files {
            let Ok(format) = crate::import::detect_format(&path) else {
                continue;
            };
            let report = crate::import::parse_file(&path, format).expect("fixture parses");
            for session in report.sessions {
                out.push((path.display().to_string(), session));
            }
        }
        out
    }

    #[test]
    fn gemini_sessions_round_trip_to_the_same_nodes() {
        let home = tempfile::tempdir().expect("tempdir");
        let sessions = gemini_sessions();
        assert!(sessions.len() >= 2, "the project's fixtures at least");
        for (name, session) in sessions {
            let nodes = build_nodes(&session);
            let rendered = render_nodes(
                &nodes,
                "gemini",
                session.title.as_deref(),
                home.path(),
                Path::new("/work/my project"),
            );
            let back = reparse(&rendered);
            assert_eq!(
                ids(&build_nodes(&back)),
                ids(&nodes),
                "{name}: node ids differ after the round trip"
            );
            assert_eq!(back.title, session.title, "{name}");
            assert_eq!(back.source_id, "0f1e2d3c-4b5a-4697-8877-665544332211");
            let expected: Vec<u32> = (1..=nodes.len() as u32).collect();
            assert_eq!(rendered.ends, expected, "{name}");
            // Origin ids come back as the record ids (a later round of a split record had
            // none and gets a derived one), usage as tokens.
            for (a, b) in nodes.iter().zip(&back.messages) {
                if a.meta.origin_id.is_some() {
                    assert_eq!(a.meta.origin_id, b.meta.origin_id, "{name}");
                }
                assert_eq!(a.meta.usage, b.meta.usage, "{name}");
            }
        }
    }

    /// The blocks a re-import must keep from another agent's session: every call and result
    /// id in order, and every text somewhere.
    fn check_cross(name: &str, session: &ParsedSession, home: &Path) {
        let nodes = build_nodes(session);
        let rendered = render_nodes(&nodes, session.source_kind, None, home, Path::new("/w/p"));
        let back = reparse(&rendered);
        let uses = |blocks: &mut dyn Iterator<Item = &ContentBlock>| -> Vec<String> {
            blocks
                .filter_map(|b| match b {
                    ContentBlock::ToolUse { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect()
        };
        let results = |blocks: &mut dyn Iterator<Item = &ContentBlock>| -> Vec<String> {
            let mut ids: Vec<String> = blocks
                .filter_map(|b| match b {
                    ContentBlock::ToolResult { tool_use_id, .. } => Some(tool_use_id.clone()),
                    _ => None,
                })
                .collect();
            ids.sort();
            ids
        };
        let original = || nodes.iter().flat_map(|n| n.body.blocks.iter());
        let again = || back.messages.iter().flat_map(|m| m.blocks.iter());
        assert_eq!(uses(&mut original()), uses(&mut again()), "{name}: calls");
        // A result whose call is in the file comes back as a ToolResult; one whose call is not
        // (a cut-off transcript) comes back as text naming it.
        let call_ids: std::collections::HashSet<String> =
            uses(&mut original()).into_iter().collect();
        let kept: Vec<String> = results(&mut original())
            .into_iter()
            .filter(|id| call_ids.contains(id))
            .collect();
        assert_eq!(kept, results(&mut again()), "{name}: results");
        let corpus: String = again()
            .map(|b| match b {
                ContentBlock::Text { text } | ContentBlock::Thinking { text, .. } => text.clone(),
                ContentBlock::ToolResult { content, .. } => content
                    .iter()
                    .map(|p| match p {
                        ToolResultPart::Text { text } => text.clone(),
                        ToolResultPart::Image { .. } => String::new(),
                    })
                    .collect(),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        for block in original() {
            let text = match block {
                ContentBlock::Text { text } | ContentBlock::Thinking { text, .. } => text,
                _ => continue,
            };
            assert!(
                corpus.contains(text.as_str()),
                "{name}: text lost: {:?}",
                text.chars().take(80).collect::<String>()
            );
        }
        assert_eq!(rendered.ends.len(), nodes.len(), "{name}");
        assert!(rendered.ends.windows(2).all(|w| w[0] <= w[1]), "{name}");
        assert_eq!(
            rendered.ends.last().copied(),
            Some(back.messages.len() as u32),
            "{name}"
        );
    }

    #[test]
    fn other_agents_sessions_keep_every_message_call_and_result() {
        let home = tempfile::tempdir().expect("tempdir");
        let mut dirs = vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents/claude"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents/codex"),
        ];
        if crate::real_fixtures::present() {
            dirs.push(crate::real_fixtures::dir().join("claude"));
            dirs.push(crate::real_fixtures::dir().join("codex"));
        }
        let mut checked = 0;
        for dir in dirs {
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.sort();
            for path in files {
                let Ok(format) = crate::import::detect_format(&path) else {
                    continue;
                };
                let Ok(report) = crate::import::parse_file(&path, format) else {
                    continue;
                };
                for session in report.sessions {
                    let name = format!("{} {}", path.display(), session.source_id);
                    check_cross(&name, &session, home.path());
                    checked += 1;
                }
            }
        }
        assert!(checked > 0);
    }

    fn node(role: Role, model: &str, blocks: Vec<ContentBlock>) -> ParsedMessageLike {
        ParsedMessageLike(role, model.to_owned(), blocks)
    }

    struct ParsedMessageLike(Role, String, Vec<ContentBlock>);

    fn session_of(kind: &'static str, messages: Vec<ParsedMessageLike>) -> ParsedSession {
        ParsedSession {
            source_kind: kind,
            source_id: "s".into(),
            parent_source_id: None,
            title: None,
            messages: messages
                .into_iter()
                .map(|m| crate::import::ParsedMessage {
                    role: m.0,
                    model: m.1,
                    blocks: m.2,
                    meta: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn codex_items_merge_into_one_model_turn() {
        let home = tempfile::tempdir().expect("tempdir");
        let call = |id: &str| ContentBlock::ToolUse {
            id: id.into(),
            name: "shell".into(),
            input: r#"{"cmd":"ls"}"#.into(),
        };
        let result = |id: &str| ContentBlock::ToolResult {
            tool_use_id: id.into(),
            is_error: id == "b",
            content: vec![ToolResultPart::Text {
                text: format!("out {id}"),
            }],
        };
        let session = session_of(
            "codex",
            vec![
                node(Role::Developer, "", vec![ContentBlock::text("be brief")]),
                node(Role::User, "", vec![ContentBlock::text("go")]),
                node(
                    Role::Assistant,
                    "gpt",
                    vec![ContentBlock::Thinking {
                        text: "hmm".into(),
                        signature: Some("sig".into()),
                    }],
                ),
                node(Role::Assistant, "gpt", vec![ContentBlock::text("running")]),
                node(Role::Assistant, "gpt", vec![call("a")]),
                node(Role::Assistant, "gpt", vec![call("b")]),
                node(Role::Tool, "", vec![result("a")]),
                node(Role::Tool, "", vec![result("b")]),
                node(Role::Tool, "", vec![result("zzz")]),
                node(
                    Role::Assistant,
                    "gpt",
                    vec![ContentBlock::Other {
                        kind: "web_search_call".into(),
                        json: r#"{"q":"x"}"#.into(),
                    }],
                ),
            ],
        );
        let nodes = build_nodes(&session);
        let rendered = render_nodes(&nodes, "codex", None, home.path(), Path::new("/w/p"));
        let back = reparse(&rendered);
        let roles: String = back
            .messages
            .iter()
            .map(|m| match m.role {
                Role::User => 'U',
                Role::Assistant => 'A',
                Role::Tool => 'T',
                _ => '?',
            })
            .collect();
        assert_eq!(roles, "UUATUA");
        assert_eq!(
            back.messages[0].blocks,
            vec![
                ContentBlock::text("[developer]"),
                ContentBlock::text("be brief")
            ]
        );
        assert_eq!(
            back.messages[2].blocks,
            vec![
                ContentBlock::Thinking {
                    text: "hmm".into(),
                    signature: None
                },
                ContentBlock::text("running"),
                call("a"),
                call("b"),
            ]
        );
        assert_eq!(back.messages[2].model, "gpt");
        assert_eq!(back.messages[3].blocks, vec![result("a"), result("b")]);
        assert_eq!(
            back.messages[4].blocks,
            vec![ContentBlock::text("[tool result for zzz]\nout zzz")]
        );
        assert_eq!(
            back.messages[5].blocks,
            vec![ContentBlock::text(r#"[web_search_call] {"q":"x"}"#)]
        );
        // Per node: developer, user, the three items of the model turn, its two results, the
        // stray result, the last reply.
        assert_eq!(rendered.ends, vec![1, 2, 3, 3, 3, 3, 4, 4, 5, 6]);
    }

    #[test]
    fn project_registry_and_paths() {
        let home = tempfile::tempdir().expect("tempdir");
        let gem = home.path();
        let nodes = build_nodes(&session_of(
            "gemini",
            vec![node(Role::User, "", vec![ContentBlock::text("hi")])],
        ));
        // No projects.json yet: the project is added, named after the folder.
        let r = render_nodes(&nodes, "gemini", None, gem, Path::new("/work/My Project/"));
        let (path, merged) = &r.extra[0];
        assert_eq!(path, &gem.join("projects.json"));
        let merged: Value = serde_json::from_slice(merged).expect("json");
        assert_eq!(
            merged,
            json!({"projects": {"/work/My Project": "my-project"}})
        );
        assert_eq!(
            r.path,
            gem.join("tmp/my-project/chats/session-2025-12-06T05-46-0f1e2d3c.jsonl")
        );
        let header: Value = serde_json::from_str(
            std::str::from_utf8(&r.bytes)
                .expect("utf-8")
                .lines()
                .next()
                .expect("line"),
        )
        .expect("header");
        assert_eq!(
            header["projectHash"],
            json!(sha256_hex(b"/work/My Project"))
        );
        assert_eq!(header["kind"], json!("main"));

        // The name is taken by another directory: `-1`; a registered directory keeps its name.
        std::fs::write(
            gem.join("projects.json"),
            r#"{"projects": {"/else/my-project": "my-project", "/w/known": "kn"}}"#,
        )
        .expect("write");
        let r = render_nodes(&nodes, "gemini", None, gem, Path::new("/work/My Project"));
        let merged: Value = serde_json::from_slice(&r.extra[0].1).expect("json");
        assert_eq!(
            merged["projects"]["/work/My Project"],
            json!("my-project-1")
        );
        assert_eq!(merged["projects"]["/else/my-project"], json!("my-project"));
        let r = render_nodes(&nodes, "gemini", None, gem, Path::new("/w/known"));
        assert!(r.extra.is_empty());
        assert!(r.path.starts_with(gem.join("tmp/kn/chats")));

        // A folder marked as another directory's is not reused.
        std::fs::create_dir_all(gem.join("tmp/fresh")).expect("mkdir");
        std::fs::write(gem.join("tmp/fresh/.project_root"), "/other/fresh").expect("write");
        let r = render_nodes(&nodes, "gemini", None, gem, Path::new("/w/Fresh"));
        let merged: Value = serde_json::from_slice(&r.extra[0].1).expect("json");
        assert_eq!(merged["projects"]["/w/Fresh"], json!("fresh-1"));

        // A file already there for the session is rewritten in place.
        let chats = gem.join("tmp/kn/chats");
        std::fs::create_dir_all(&chats).expect("mkdir");
        let old = chats.join("session-2025-01-01T00-00-0f1e2d3c.jsonl");
        let first = render_nodes(&nodes, "gemini", None, gem, Path::new("/w/known"));
        std::fs::write(&old, &first.bytes).expect("write");
        let again = render_nodes(&nodes, "gemini", None, gem, Path::new("/w/known"));
        assert_eq!(again.path, old);

        // A broken projects.json is refused, not overwritten.
        std::fs::write(gem.join("projects.json"), "{oops").expect("write");
        let record = record("gemini", None);
        let req = Render {
            nodes: &nodes,
            record: &record,
            session: SessionId([1; 16]),
            agent_session_id: "0f1e2d3c-4b5a-4697-8877-665544332211",
            parent_agent_session_id: None,
            cwd: Path::new("/w/x"),
            now_ms: NOW,
        };
        assert!(matches!(
            render(&req, &homes(gem)),
            Err(ResumeError::Unreadable { .. })
        ));
    }

    #[test]
    fn subagent_goes_beside_its_parent() {
        let home = tempfile::tempdir().expect("tempdir");
        let nodes = build_nodes(&session_of(
            "gemini",
            vec![node(Role::User, "", vec![ContentBlock::text("task")])],
        ));
        let record = record("gemini", None);
        let req = Render {
            nodes: &nodes,
            record: &record,
            session: SessionId([1; 16]),
            agent_session_id: "child-1",
            parent_agent_session_id: Some("parent-0"),
            cwd: Path::new("/w/p"),
            now_ms: NOW,
        };
        let r = render(&req, &homes(home.path())).expect("render");
        assert_eq!(
            r.path,
            home.path().join("tmp/p/chats/parent-0/child-1.jsonl")
        );
        let back = reparse(&r);
        assert_eq!(back.parent_source_id.as_deref(), Some("parent-0"));
    }

    #[test]
    fn thoughts_and_hashes() {
        assert_eq!(split_thought("**S**\n\nd"), Some(("S", "d")));
        assert_eq!(split_thought("**S**"), Some(("S", "")));
        assert_eq!(split_thought("**S** d"), None);
        assert_eq!(split_thought("plain"), None);
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The fixture session's projectHash, for /tmp/gx/p5.
        assert_eq!(
            sha256_hex(b"/tmp/gx/p5"),
            "7fa4390749e39a7549254385689504120b83c3f023520876f1c69ba87a90fccd"
        );
        assert_eq!(slugify("My Project!!"), "my-project");
        assert_eq!(slugify("..."), "project");
    }
}
