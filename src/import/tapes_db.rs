//! Import of the original Go tapes tool's SQLite database (`~/.tapes/tapes.sqlite`).
//!
//! Owns: reading its `nodes` table, a Merkle DAG of messages keyed by a SHA-256 hash in which
//! every row names its parent, and turning it into [`ParsedSession`]s.
//!
//! Format decisions, and why:
//! - A session is the chain from a root to a LEAF (a node no other node names as parent). The
//!   Go tool stored no sessions, only the DAG; every conversation it recorded ends in a leaf, and
//!   a branch is a conversation of its own. Branches repeat their shared prefix here; ingest
//!   dedupes identical nodes by content, so that costs nothing in storage.
//! - `source_id` is the leaf's hash as bare hex (any `sha256:` prefix stripped, so both spellings
//!   of a hash name the same session). Every message keeps its original hash in
//!   `meta.origin_id` as `sha256:<hex>`, so a node can be traced back to the old database.
//! - Columns win; `bucket` (the JSON the Go tool hashed) fills in role, content, model, provider
//!   and agent when a column is NULL, because rows written by older versions (or by a later
//!   migration that added a column) have the data only there.
//! - Only `hash` and `parent_hash` are required. A missing optional column reads as NULL
//!   (checked with `PRAGMA table_info`), so databases from any Go tapes version import.
//! - A session is all or nothing: if its chain holds an unreadable row (bad content JSON, no
//!   usable role), a parent that is not in the database, or a parent cycle, the session is
//!   skipped with one [`Warning`] naming the leaf and the offending hash. Other sessions, even
//!   ones sharing rows with it, are unaffected. A half session would store a conversation that
//!   never happened.
//! - Warnings carry `line = 0`: rows have no line numbers and a rowid means nothing to a user;
//!   the message names the hash instead, which is the row's real identity.
//! - The model is set on assistant messages only. The Go tool also recorded the requested model
//!   on user and tool messages, but the node model means "who produced this", and keeping it off
//!   the others lets the same history imported from a transcript dedupe with this one.
//! - `created_at` is parsed from whatever the Go SQLite drivers wrote: RFC 3339, SQLite's
//!   `2026-02-14 09:30:00` (UTC, as `CURRENT_TIMESTAMP` writes it), mattn's `... 09:30:00-05:00`,
//!   modernc's Go `time.String()` form `... 09:30:00.5 -0500 EST m=+0.01`, or a Unix number.
//! - The database is opened read-only: importing must never change the source.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value};
use tapes_protocol::{ContentBlock, NodeMeta, Role, ToolResultPart, Usage};

use super::messages_json::{
    image_from_base64, image_from_url, other_block, str_field, tool_result_parts,
};
use super::{json_text, FileReport, ImportError, ParsedMessage, ParsedSession, Warning};

const SOURCE_KIND: &str = "tapes-db";

/// Columns without which there is no DAG to walk.
const REQUIRED_COLUMNS: [&str; 2] = ["hash", "parent_hash"];

/// Columns read when present; selected as NULL when the database predates them.
const OPTIONAL_COLUMNS: [&str; 14] = [
    "bucket",
    "role",
    "content",
    "model",
    "provider",
    "agent_name",
    "stop_reason",
    "prompt_tokens",
    "completion_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_duration_ns",
    "project",
    "created_at",
];

pub fn parse(path: &Path) -> Result<FileReport, ImportError> {
    let conn = open(path)?;
    let columns = node_columns(&conn, path)?;
    let mut report = FileReport::default();
    let rows = load_rows(&conn, path, &columns, &mut report.warnings)?;
    build_sessions(&rows, &mut report);
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Reading the table
// ---------------------------------------------------------------------------------------------

/// One row of `nodes`, decoded as far as a session needs it.
struct Row {
    /// Bare hex hash of the parent; `None` for a root.
    parent: Option<String>,
    /// The message, or why this row cannot be one (kept, not dropped, so the sessions through
    /// it can say why they were skipped).
    message: Result<ParsedMessage, String>,
}

/// The raw column values of one row, before any interpretation.
struct RawRow {
    hash: String,
    parent: Option<String>,
    bucket: Option<Vec<u8>>,
    role: Option<String>,
    content: Option<Vec<u8>>,
    model: Option<String>,
    provider: Option<String>,
    agent_name: Option<String>,
    stop_reason: Option<String>,
    project: Option<String>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    cache_write_tokens: Option<i64>,
    cache_read_tokens: Option<i64>,
    duration_ns: Option<i64>,
    timestamp_ms: Option<i64>,
}

fn db_error(path: &Path, message: impl Into<String>) -> ImportError {
    ImportError::Database {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn open(path: &Path) -> Result<Connection, ImportError> {
    // Checked first so a missing file is reported as such, not as SQLite's vaguer
    // "unable to open database file".
    std::fs::metadata(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags)
        .map_err(|e| db_error(path, format!("cannot open: {e}")))
}

/// The (lowercased) column names of `nodes`, after checking it is a tapes table at all.
fn node_columns(conn: &Connection, path: &Path) -> Result<HashSet<String>, ImportError> {
    let read = |e: rusqlite::Error| db_error(path, format!("cannot read: {e}"));
    let mut stmt = conn.prepare("PRAGMA table_info(nodes)").map_err(read)?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>("name"))
        .map_err(read)?;
    let columns = names
        .collect::<Result<HashSet<String>, _>>()
        .map_err(read)?;
    // SQLite column names are case-insensitive; compare them that way.
    let columns: HashSet<String> = columns
        .into_iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if columns.is_empty() {
        return Err(db_error(
            path,
            "no `nodes` table; this SQLite file is not a tapes database",
        ));
    }
    for required in REQUIRED_COLUMNS {
        if !columns.contains(required) {
            return Err(db_error(
                path,
                format!("the `nodes` table has no `{required}` column; not a tapes database"),
            ));
        }
    }
    Ok(columns)
}

/// `SELECT` of every wanted column, with `NULL AS col` standing in for the absent ones so the
/// row reader can always address columns by name.
fn select_sql(columns: &HashSet<String>) -> String {
    let select: Vec<String> = REQUIRED_COLUMNS
        .iter()
        .chain(OPTIONAL_COLUMNS.iter())
        .map(|c| {
            if columns.contains(*c) {
                format!("\"{c}\"")
            } else {
                format!("NULL AS \"{c}\"")
            }
        })
        .collect();
    format!("SELECT {} FROM nodes", select.join(", "))
}

/// Every row, keyed by bare hex hash. Loaded once: sessions share prefixes, so walking them in
/// memory beats one query per step.
fn load_rows(
    conn: &Connection,
    path: &Path,
    columns: &HashSet<String>,
    warnings: &mut Vec<Warning>,
) -> Result<HashMap<String, Row>, ImportError> {
    let read = |e: rusqlite::Error| db_error(path, format!("cannot read nodes: {e}"));
    let mut stmt = conn.prepare(&select_sql(columns)).map_err(read)?;
    let mut query = stmt.query([]).map_err(read)?;
    let mut rows = HashMap::new();
    while let Some(row) = query.next().map_err(read)? {
        let raw = raw_row(row).map_err(read)?;
        if raw.hash.is_empty() {
            warnings.push(Warning {
                line: 0,
                message: "a row with an empty hash was skipped".into(),
            });
            continue;
        }
        if rows.contains_key(&raw.hash) {
            // Only possible when both `sha256:<h>` and `<h>` are stored; they are one node.
            warnings.push(Warning {
                line: 0,
                message: format!("row {}: duplicate hash; the first copy is used", raw.hash),
            });
            continue;
        }
        let decoded = Row {
            parent: raw.parent.clone(),
            message: to_message(&raw),
        };
        rows.insert(raw.hash, decoded);
    }
    Ok(rows)
}

fn raw_row(row: &rusqlite::Row) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        hash: text(row, "hash")?
            .map(|h| bare_hash(&h).to_owned())
            .unwrap_or_default(),
        parent: text(row, "parent_hash")?
            .map(|h| bare_hash(&h).to_owned())
            .filter(|h| !h.is_empty()),
        bucket: bytes(row, "bucket")?,
        role: text(row, "role")?,
        content: bytes(row, "content")?,
        model: text(row, "model")?,
        provider: text(row, "provider")?,
        agent_name: text(row, "agent_name")?,
        stop_reason: text(row, "stop_reason")?,
        project: text(row, "project")?,
        prompt_tokens: integer(row, "prompt_tokens")?,
        completion_tokens: integer(row, "completion_tokens")?,
        cache_write_tokens: integer(row, "cache_creation_input_tokens")?,
        cache_read_tokens: integer(row, "cache_read_input_tokens")?,
        duration_ns: integer(row, "total_duration_ns")?,
        timestamp_ms: timestamp(row.get_ref("created_at")?),
    })
}

/// A hash without the `sha256:` prefix some writers add; the prefix is put back exactly once in
/// `origin_id`.
fn bare_hash(hash: &str) -> &str {
    let hash = hash.trim();
    hash.strip_prefix("sha256:").unwrap_or(hash)
}

/// A text column; BLOBs are read as (lossy) UTF-8 because Go drivers write `[]byte` as BLOB.
fn text(row: &rusqlite::Row, column: &str) -> rusqlite::Result<Option<String>> {
    Ok(match row.get_ref(column)? {
        ValueRef::Null => None,
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
    })
}

/// A JSON column's bytes. ent writes JSON through `[]byte`, which lands as TEXT or BLOB
/// depending on the driver, so both are accepted.
fn bytes(row: &rusqlite::Row, column: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(match row.get_ref(column)? {
        ValueRef::Null => None,
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(b.to_vec()),
        ValueRef::Integer(i) => Some(i.to_string().into_bytes()),
        ValueRef::Real(f) => Some(f.to_string().into_bytes()),
    })
}

/// An integer column, tolerating SQLite's loose typing (a number stored as text or real).
fn integer(row: &rusqlite::Row, column: &str) -> rusqlite::Result<Option<i64>> {
    Ok(match row.get_ref(column)? {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) if f.is_finite() => Some(f as i64),
        ValueRef::Text(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

/// `created_at` in Unix milliseconds, or `None` when it is in no form we recognize (a missing
/// timestamp is better than a wrong one).
fn timestamp(value: ValueRef) -> Option<i64> {
    match value {
        ValueRef::Integer(i) => Some(unix_to_ms(i)),
        ValueRef::Real(f) => real_to_ms(f),
        ValueRef::Text(b) | ValueRef::Blob(b) => parse_time_text(&String::from_utf8_lossy(b)),
        ValueRef::Null => None,
    }
}

/// A Unix number in seconds, milliseconds, microseconds or nanoseconds, told apart by size:
/// any plausible date in one unit is orders of magnitude away from the others.
fn unix_to_ms(n: i64) -> i64 {
    match n.unsigned_abs() {
        0..100_000_000_000 => n.saturating_mul(1000),
        100_000_000_000..100_000_000_000_000 => n,
        100_000_000_000_000..100_000_000_000_000_000 => n / 1000,
        _ => n / 1_000_000,
    }
}

/// A REAL is either a Julian day number (what SQLite's `julianday()` stores) or Unix seconds.
fn real_to_ms(f: f64) -> Option<i64> {
    if !f.is_finite() {
        return None;
    }
    // Julian days from 1970 to ~2700 lie in this range; Unix seconds there would be 1970.
    const UNIX_EPOCH_JULIAN_DAY: f64 = 2_440_587.5;
    if (UNIX_EPOCH_JULIAN_DAY..2_700_000.0).contains(&f) {
        return Some(((f - UNIX_EPOCH_JULIAN_DAY) * 86_400_000.0).round() as i64);
    }
    Some((f * 1000.0).round() as i64)
}

fn parse_time_text(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(unix_to_ms(n));
    }
    // Go's time.String() appends the monotonic clock reading (" m=+0.000123"); it is not time.
    let s = s.split_once(" m=").map_or(s, |(time, _)| time).trim();
    super::parse_timestamp(s)
        .or_else(|| parse_go_string(s))
        .or_else(|| parse_naive_utc(s))
}

/// Go's `time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`. The zone name is dropped:
/// the numeric offset already says everything, and names like `EST` are ambiguous.
fn parse_go_string(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let (date, time, offset) = (parts.next()?, parts.next()?, parts.next()?);
    let joined = format!("{date} {time} {offset}");
    DateTime::parse_from_str(&joined, "%Y-%m-%d %H:%M:%S%.f %z")
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A timestamp without a zone, as SQLite's `CURRENT_TIMESTAMP` writes it: that is UTC.
fn parse_naive_utc(s: &str) -> Option<i64> {
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(s, format).ok())
    .map(|t| t.and_utc().timestamp_millis())
}

// ---------------------------------------------------------------------------------------------
// One row → one message
// ---------------------------------------------------------------------------------------------

fn to_message(raw: &RawRow) -> Result<ParsedMessage, String> {
    // An unreadable bucket only matters when a column needs it as a fallback.
    let bucket: Option<Map<String, Value>> = raw
        .bucket
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        });
    let column_or_bucket = |column: &Option<String>, key: &str| -> Option<String> {
        non_empty(column.clone()).or_else(|| {
            bucket
                .as_ref()
                .and_then(|b| non_empty(Some(str_field(b, key).to_owned())))
        })
    };

    let role_name = column_or_bucket(&raw.role, "role").ok_or("no role")?;
    let role = Role::parse(&role_name).ok_or_else(|| format!("unknown role `{role_name}`"))?;
    let blocks = blocks(&content_value(raw, bucket.as_ref())?)?;
    let model = match role {
        Role::Assistant => column_or_bucket(&raw.model, "model").unwrap_or_default(),
        _ => String::new(),
    };
    let meta = NodeMeta {
        provider: column_or_bucket(&raw.provider, "provider"),
        agent: column_or_bucket(&raw.agent_name, "agent_name"),
        project: non_empty(raw.project.clone()),
        usage: usage(raw),
        stop_reason: non_empty(raw.stop_reason.clone()),
        timestamp_ms: raw.timestamp_ms,
        duration_ms: raw
            .duration_ns
            .and_then(|ns| u64::try_from(ns).ok())
            .map(|ns| ns / 1_000_000),
        origin_id: Some(format!("sha256:{}", raw.hash)),
        ..NodeMeta::default()
    };
    Ok(ParsedMessage {
        role,
        model,
        blocks,
        meta,
    })
}

/// Empty strings are how the Go tool wrote "unknown"; tapes says that with `None`.
fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The content JSON: the column, else the bucket's `content`, else nothing.
fn content_value(raw: &RawRow, bucket: Option<&Map<String, Value>>) -> Result<Value, String> {
    let column = raw
        .content
        .as_deref()
        .filter(|b| !b.trim_ascii().is_empty());
    if let Some(bytes) = column {
        return serde_json::from_slice(bytes)
            .map_err(|e| format!("content is not valid JSON ({e})"));
    }
    if let Some(content) = bucket.and_then(|b| b.get("content")) {
        return Ok(content.clone());
    }
    if raw.bucket.is_some() && bucket.is_none() {
        return Err("content is NULL and bucket is not a JSON object".into());
    }
    Ok(Value::Null)
}

fn blocks(content: &Value) -> Result<Vec<ContentBlock>, String> {
    match content {
        Value::Null => Ok(Vec::new()),
        // Never written by the Go tool, but unambiguous enough to accept.
        Value::String(s) => Ok(vec![ContentBlock::text(s.as_str())]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_object()
                    .map(go_block)
                    .ok_or_else(|| format!("content block {i} is not a JSON object"))
            })
            .collect(),
        _ => Err("content is not a JSON array".into()),
    }
}

/// One Go `llm.ContentBlock`: a flat struct whose `type` says which fields are set, each
/// omitted when empty (so a missing field means the empty value).
fn go_block(obj: &Map<String, Value>) -> ContentBlock {
    let kind = str_field(obj, "type");
    match kind {
        "text" => ContentBlock::text(str_field(obj, "text")),
        "thinking" => ContentBlock::Thinking {
            text: first_non_empty(obj, &["thinking", "text"]).to_owned(),
            signature: non_empty(Some(str_field(obj, "thinking_signature").to_owned())),
        },
        "tool_use" => ContentBlock::ToolUse {
            id: str_field(obj, "tool_use_id").to_owned(),
            name: str_field(obj, "tool_name").to_owned(),
            input: match obj.get("tool_input") {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(input) => json_text(input),
            },
        },
        "tool_result" => ContentBlock::ToolResult {
            // Go names the call in `tool_result_id`; some versions reused `tool_use_id`.
            tool_use_id: first_non_empty(obj, &["tool_result_id", "tool_use_id"]).to_owned(),
            is_error: obj
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            content: go_tool_output(obj),
        },
        "image" => go_image(obj).unwrap_or_else(|| other_block(kind, &Value::Object(obj.clone()))),
        // server_tool_use, web_search_tool_result, redacted thinking, ...: kept whole.
        _ => other_block(kind, &Value::Object(obj.clone())),
    }
}

fn first_non_empty<'a>(obj: &'a Map<String, Value>, keys: &[&str]) -> &'a str {
    keys.iter()
        .map(|k| str_field(obj, k))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

/// `tool_output` text, or the raw `content` payload newer versions keep for server tools.
fn go_tool_output(obj: &Map<String, Value>) -> Vec<ToolResultPart> {
    let output = str_field(obj, "tool_output");
    if !output.is_empty() {
        return vec![ToolResultPart::Text {
            text: output.to_owned(),
        }];
    }
    obj.get("content")
        .map(tool_result_parts)
        .unwrap_or_default()
}

/// A Go image block: `image_base64` + `media_type`, or `image_url`.
fn go_image(obj: &Map<String, Value>) -> Option<ContentBlock> {
    let media_type = str_field(obj, "media_type");
    let data = str_field(obj, "image_base64");
    let url = str_field(obj, "image_url");
    let (media_type, source) = if !data.is_empty() {
        image_from_base64(media_type, data)?
    } else if !url.is_empty() {
        image_from_url(url, media_type)
    } else {
        return None;
    };
    Some(ContentBlock::Image { media_type, source })
}

/// Token usage, when the row recorded any (the Go tool wrote it on responses only).
fn usage(raw: &RawRow) -> Option<Usage> {
    let count = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    let usage = Usage {
        input_tokens: count(raw.prompt_tokens),
        output_tokens: count(raw.completion_tokens),
        cache_read_tokens: count(raw.cache_read_tokens),
        cache_write_tokens: count(raw.cache_write_tokens),
    };
    (!usage.is_zero()).then_some(usage)
}

// ---------------------------------------------------------------------------------------------
// Rows → sessions
// ---------------------------------------------------------------------------------------------

fn build_sessions(rows: &HashMap<String, Row>, report: &mut FileReport) {
    let mut visited: HashSet<&str> = HashSet::with_capacity(rows.len());
    for leaf in leaves(rows) {
        match chain(rows, leaf, &mut visited) {
            Ok(messages) => report.sessions.push(ParsedSession {
                source_kind: SOURCE_KIND,
                source_id: leaf.to_owned(),
                parent_source_id: None,
                title: None,
                messages: messages.into_iter().cloned().collect(),
            }),
            Err(why) => report.warnings.push(Warning {
                line: 0,
                message: format!("session ending at {leaf} skipped: {why}"),
            }),
        }
    }
    // Rows no leaf reaches can only sit on a closed parent cycle; say so rather than drop them
    // silently.
    let orphans = rows.len() - visited.len();
    if orphans > 0 {
        report.warnings.push(Warning {
            line: 0,
            message: format!(
                "{orphans} row(s) belong to no session: their parent links form a cycle"
            ),
        });
    }
}

/// Hashes no row names as parent, oldest first (then by hash) so the output order is stable.
fn leaves(rows: &HashMap<String, Row>) -> Vec<&str> {
    let parents: HashSet<&str> = rows.values().filter_map(|r| r.parent.as_deref()).collect();
    let mut leaves: Vec<&str> = rows
        .keys()
        .map(String::as_str)
        .filter(|h| !parents.contains(h))
        .collect();
    let time = |h: &str| {
        rows.get(h)
            .and_then(|r| r.message.as_ref().ok())
            .and_then(|m| m.meta.timestamp_ms)
    };
    leaves.sort_by(|a, b| time(a).cmp(&time(b)).then_with(|| a.cmp(b)));
    leaves
}

/// The messages from the root down to `leaf`, or the first reason (nearest the leaf) the chain
/// cannot be a session. The walk goes on past a bad row so `visited` covers every row a leaf
/// reaches, and stops after `rows.len()` steps because only a cycle can take longer.
fn chain<'a>(
    rows: &'a HashMap<String, Row>,
    leaf: &'a str,
    visited: &mut HashSet<&'a str>,
) -> Result<Vec<&'a ParsedMessage>, String> {
    let mut messages = Vec::new();
    let mut problem: Option<String> = None;
    let mut current = leaf;
    for _ in 0..=rows.len() {
        let Some((hash, row)) = rows.get_key_value(current) else {
            // Unreachable: `current` is only ever a key that was just looked up.
            break;
        };
        visited.insert(hash.as_str());
        match &row.message {
            Ok(message) => messages.push(message),
            Err(why) => {
                problem.get_or_insert_with(|| format!("row {hash}: {why}"));
            }
        }
        let Some(parent) = &row.parent else {
            return match problem {
                None => Ok(messages.into_iter().rev().collect()),
                Some(why) => Err(why),
            };
        };
        if !rows.contains_key(parent) {
            return Err(problem.unwrap_or_else(|| {
                format!("parent {parent} of row {hash} is not in the database")
            }));
        }
        current = parent;
    }
    Err(problem.unwrap_or_else(|| format!("the parent links above {current} form a cycle")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `nodes` table exactly as the Go tool's ent migration creates it.
    const SCHEMA: &str = "CREATE TABLE `nodes` (`hash` text NOT NULL, `bucket` json NULL, `type` text NULL, \
        `role` text NULL, `content` json NULL, `model` text NULL, `provider` text NULL, `agent_name` text NULL, \
        `stop_reason` text NULL, `prompt_tokens` integer NULL, `completion_tokens` integer NULL, \
        `total_tokens` integer NULL, `cache_creation_input_tokens` integer NULL, \
        `cache_read_input_tokens` integer NULL, `total_duration_ns` integer NULL, `prompt_duration_ns` integer NULL, \
        `project` text NULL, `created_at` datetime NOT NULL DEFAULT (CURRENT_TIMESTAMP), `parent_hash` text NULL, \
        PRIMARY KEY (`hash`), CONSTRAINT `nodes_nodes_parent` FOREIGN KEY (`parent_hash`) REFERENCES `nodes` (`hash`) ON DELETE SET NULL);\
        CREATE INDEX `node_parent_hash` ON `nodes` (`parent_hash`);";

    struct Db {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        conn: Connection,
    }

    fn db() -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tapes.sqlite");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(SCHEMA).expect("schema");
        Db {
            _dir: dir,
            path,
            conn,
        }
    }

    impl Db {
        /// Inserts a node with the columns a test cares about; the rest stay NULL.
        fn node(&self, hash: &str, parent: Option<&str>, role: &str, content: &str) {
            self.conn
                .execute(
                    "INSERT INTO nodes (hash, parent_hash, role, content, model, provider, created_at) \
                     VALUES (?1, ?2, ?3, ?4, 'claude-sonnet-4-5', 'anthropic', '2026-02-14 09:30:00')",
                    rusqlite::params![hash, parent, role, content],
                )
                .expect("insert");
        }

        fn text_node(&self, hash: &str, parent: Option<&str>, role: &str, text: &str) {
            let content = serde_json::json!([{"type": "text", "text": text}]).to_string();
            self.node(hash, parent, role, &content);
        }

        fn parse(&self) -> FileReport {
            parse(&self.path).expect("parse")
        }
    }

    fn texts(session: &ParsedSession) -> Vec<String> {
        session
            .messages
            .iter()
            .map(|m| match m.blocks.first() {
                Some(ContentBlock::Text { text }) => text.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn session<'a>(report: &'a FileReport, leaf: &str) -> &'a ParsedSession {
        report
            .sessions
            .iter()
            .find(|s| s.source_id == leaf)
            .unwrap_or_else(|| panic!("no session {leaf}: {report:#?}"))
    }

    #[test]
    fn each_leaf_is_a_session_sharing_the_prefix() {
        let db = db();
        db.text_node("root", None, "user", "hello");
        db.text_node("a", Some("root"), "assistant", "hi");
        db.text_node("b", Some("a"), "user", "left branch");
        db.text_node("c", Some("a"), "user", "right branch");
        let report = db.parse();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.sessions.len(), 2);
        assert_eq!(texts(session(&report, "b")), ["hello", "hi", "left branch"]);
        assert_eq!(
            texts(session(&report, "c")),
            ["hello", "hi", "right branch"]
        );
        let s = session(&report, "b");
        assert_eq!(s.source_kind, "tapes-db");
        assert_eq!(s.messages[0].model, "", "user messages carry no model");
        assert_eq!(s.messages[1].model, "claude-sonnet-4-5");
        assert_eq!(s.messages[1].meta.provider.as_deref(), Some("anthropic"));
        assert_eq!(s.messages[1].meta.timestamp_ms, Some(1_771_061_400_000));
    }

    #[test]
    fn tool_blocks_origin_hash_and_usage() {
        let db = db();
        let root = "sha256:aaaa";
        let call = serde_json::json!([
            {"type": "thinking", "thinking": "list it", "thinking_signature": "sig"},
            {"type": "tool_use", "tool_use_id": "toolu_1", "tool_name": "ls", "tool_input": {"path": "/tmp", "all": true}}
        ]);
        let result = serde_json::json!([
            {"type": "tool_result", "tool_result_id": "toolu_1", "tool_output": "a.txt", "is_error": true}
        ]);
        db.text_node(root, None, "user", "list /tmp");
        db.node("bbbb", Some(root), "assistant", &call.to_string());
        db.node("cccc", Some("bbbb"), "user", &result.to_string());
        db.conn
            .execute(
                "UPDATE nodes SET prompt_tokens = 10, completion_tokens = 5, cache_read_input_tokens = 100, \
                 cache_creation_input_tokens = 7, total_duration_ns = 2500000000, agent_name = 'claude', \
                 project = 'tapes', stop_reason = 'tool_use' WHERE hash = 'bbbb'",
                [],
            )
            .expect("update");

        let report = db.parse();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let s = session(&report, "cccc");
        let origins: Vec<_> = s
            .messages
            .iter()
            .map(|m| m.meta.origin_id.as_deref())
            .collect();
        assert_eq!(
            origins,
            [
                Some("sha256:aaaa"),
                Some("sha256:bbbb"),
                Some("sha256:cccc")
            ]
        );

        let assistant = &s.messages[1];
        assert_eq!(
            assistant.blocks,
            [
                ContentBlock::Thinking {
                    text: "list it".into(),
                    signature: Some("sig".into())
                },
                ContentBlock::ToolUse {
                    id: "toolu_1".into(),
                    name: "ls".into(),
                    input: r#"{"all":true,"path":"/tmp"}"#.into()
                },
            ]
        );
        assert_eq!(
            assistant.meta.usage,
            Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 100,
                cache_write_tokens: 7
            })
        );
        assert_eq!(assistant.meta.duration_ms, Some(2500));
        assert_eq!(assistant.meta.agent.as_deref(), Some("claude"));
        assert_eq!(assistant.meta.project.as_deref(), Some("tapes"));
        assert_eq!(assistant.meta.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(s.messages[0].meta.usage, None);
        assert_eq!(
            s.messages[2].blocks,
            [ContentBlock::ToolResult {
                tool_use_id: "toolu_1".into(),
                is_error: true,
                content: vec![ToolResultPart::Text {
                    text: "a.txt".into()
                }],
            }]
        );
    }

    #[test]
    fn bucket_fills_null_columns() {
        let db = db();
        let bucket = serde_json::json!({
            "type": "message", "role": "assistant", "model": "gpt-4o", "provider": "openai",
            "content": [{"type": "text", "text": "from the bucket"}]
        });
        db.conn
            .execute("INSERT INTO nodes (hash, bucket, created_at) VALUES ('x', ?1, '2026-02-14T09:30:00Z')", [bucket.to_string()])
            .expect("insert");
        let report = db.parse();
        let m = &session(&report, "x").messages[0];
        assert_eq!(m.role, Role::Assistant);
        assert_eq!(m.model, "gpt-4o");
        assert_eq!(m.meta.provider.as_deref(), Some("openai"));
        assert_eq!(m.blocks, [ContentBlock::text("from the bucket")]);
    }

    #[test]
    fn bad_content_skips_only_its_sessions() {
        let db = db();
        db.text_node("root", None, "user", "hello");
        db.node("bad", Some("root"), "assistant", "{not json");
        db.text_node("below-bad", Some("bad"), "user", "lost");
        db.text_node("good", Some("root"), "assistant", "fine");
        let report = db.parse();
        assert_eq!(report.sessions.len(), 1);
        assert_eq!(texts(session(&report, "good")), ["hello", "fine"]);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        let warning = &report.warnings[0];
        assert_eq!(warning.line, 0);
        assert!(warning.message.contains("below-bad"), "{}", warning.message);
        assert!(
            warning
                .message
                .contains("row bad: content is not valid JSON"),
            "{}",
            warning.message
        );
    }

    #[test]
    fn missing_parent_skips_the_chain() {
        let db = db();
        db.conn
            .execute_batch("PRAGMA foreign_keys = OFF")
            .expect("pragma");
        db.text_node("orphan", Some("gone"), "user", "hello");
        db.text_node("tip", Some("orphan"), "assistant", "hi");
        db.text_node("lonely", None, "user", "a session of one");
        let report = db.parse();
        assert_eq!(report.sessions.len(), 1);
        assert_eq!(report.sessions[0].source_id, "lonely");
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(
            report.warnings[0]
                .message
                .contains("parent gone of row orphan"),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn parent_cycles_do_not_hang() {
        let db = db();
        db.conn
            .execute_batch("PRAGMA foreign_keys = OFF")
            .expect("pragma");
        // x ↔ y with a leaf hanging off it, and a closed loop p ↔ q no leaf reaches.
        db.text_node("x", Some("y"), "user", "x");
        db.text_node("y", Some("x"), "assistant", "y");
        db.text_node("leaf", Some("x"), "user", "leaf");
        db.text_node("p", Some("q"), "user", "p");
        db.text_node("q", Some("p"), "user", "q");
        let report = db.parse();
        assert!(report.sessions.is_empty());
        let messages: Vec<&str> = report.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("session ending at leaf") && messages[0].contains("cycle"),
            "{messages:?}"
        );
        assert!(messages[1].contains("2 row(s)"), "{messages:?}");
    }

    #[test]
    fn unknown_role_is_a_bad_row() {
        let db = db();
        db.text_node("r", None, "narrator", "once upon a time");
        let report = db.parse();
        assert!(report.sessions.is_empty());
        assert!(
            report.warnings[0]
                .message
                .contains("unknown role `narrator`"),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn old_schema_without_optional_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.sqlite");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE nodes (hash TEXT PRIMARY KEY, parent_hash TEXT, role TEXT, content JSON);\
             INSERT INTO nodes VALUES ('r', NULL, 'user', '[{\"type\":\"text\",\"text\":\"hi\"}]');\
             INSERT INTO nodes VALUES ('s', '', 'user', '[{\"type\":\"text\",\"text\":\"empty parent is a root\"}]');",
        )
        .expect("schema");
        let report = parse(&path).expect("parse");
        assert_eq!(report.sessions.len(), 2);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.sessions[0].messages[0].meta.timestamp_ms, None);
    }

    #[test]
    fn non_tapes_database_is_a_database_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("other.sqlite");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE songs (title TEXT)")
            .expect("schema");
        drop(conn);
        match parse(&path) {
            Err(ImportError::Database { message, .. }) => {
                assert!(message.contains("no `nodes` table"), "{message}")
            }
            other => panic!("expected a database error, got {other:?}"),
        }

        let text = dir.path().join("not-sqlite.db");
        std::fs::write(&text, "this is not a database at all, just some text").expect("write");
        assert!(matches!(parse(&text), Err(ImportError::Database { .. })));
        assert!(matches!(
            parse(&dir.path().join("missing.sqlite")),
            Err(ImportError::Io { .. })
        ));
    }

    #[test]
    fn created_at_forms() {
        let utc = Some(1_771_061_400_000);
        assert_eq!(parse_time_text("2026-02-14 09:30:00"), utc);
        assert_eq!(parse_time_text("2026-02-14T09:30:00Z"), utc);
        assert_eq!(parse_time_text("2026-02-14 09:30:00+00:00"), utc);
        assert_eq!(parse_time_text("2026-02-14 04:30:00-05:00"), utc);
        assert_eq!(
            parse_time_text("2026-02-14 04:30:00.000 -0500 EST m=+0.012"),
            utc
        );
        assert_eq!(parse_time_text("2026-02-14 09:30:00 +0000 UTC"), utc);
        assert_eq!(parse_time_text("1771061400"), utc);
        assert_eq!(timestamp(ValueRef::Integer(1_771_061_400_000)), utc);
        assert_eq!(timestamp(ValueRef::Integer(1_771_061_400_000_000_000)), utc);
        assert_eq!(timestamp(ValueRef::Real(2_461_085.895_833_333_5)), utc);
        assert_eq!(parse_time_text("yesterday"), None);
    }
}
