//! Rendering sessions and nodes for people (tables, transcripts) and for programs (JSON).
//!
//! Pure functions from records and nodes to strings, so CLI output is testable without a TTY.

use std::fmt::Write as _;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use tapes_protocol::node::tool_result_text;
use tapes_protocol::{ContentBlock, ImageSource, Node, NodeId, SessionId};

use crate::session::SessionRecord;

/// `2025-09-18 10:00` in UTC (stable across machines; the JSON forms carry milliseconds).
pub fn time(ms: Option<i64>) -> String {
    let mut out = String::with_capacity(16);
    write_time(&mut out, ms);
    out
}

/// [`time`] appended to `out` (a listing writes one per row, without a `String` each).
pub fn write_time(out: &mut String, ms: Option<i64>) {
    use chrono::{Datelike, Timelike};
    match ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()) {
        // Written field by field: `format` parses its pattern on every call.
        Some(t) if (0..=9999).contains(&t.year()) => {
            let _ = write!(
                out,
                "{:04}-{:02}-{:02} {:02}:{:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute()
            );
        }
        Some(t) => {
            let _ = write!(out, "{}", t.format("%Y-%m-%d %H:%M"));
        }
        None => out.push('-'),
    }
}

fn clock(ms: Option<i64>) -> String {
    match ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()) {
        Some(t) => t.format("%H:%M:%S").to_string(),
        None => "--:--:--".into(),
    }
}

/// `1h 02m`, `5m 07s`, `42s`.
pub fn duration(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|ms| *ms >= 0) else {
        return "-".into();
    };
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `950`, `12.3k`, `4.1M`.
pub fn count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

pub fn bytes(n: usize) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

fn cut(s: &str, max: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// The `tapes sessions` table.
pub fn sessions_table(rows: &[(SessionId, SessionRecord)]) -> String {
    let mut out = format!(
        "{:<12}  {:<16}  {:>8}  {:<18}  {:<12}  {:<24}  {:>5}  {:>7}  {}\n",
        "ID", "STARTED", "DURATION", "PROJECT", "AGENT", "MODEL", "MSGS", "TOKENS", "FIRST PROMPT"
    );
    for (id, r) in rows {
        let s = &r.summary;
        let _ = writeln!(
            out,
            "{:<12}  {:<16}  {:>8}  {:<18}  {:<12}  {:<24}  {:>5}  {:>7}  {}",
            id.short(),
            time(s.started_ms),
            duration(s.duration_ms()),
            cut(or_dash(&s.project), 18),
            cut(or_dash(&s.agent), 12),
            cut(or_dash(&s.model), 24),
            s.messages,
            count(s.usage.total()),
            cut(&s.first_prompt, 60),
        );
    }
    out
}

/// One session as JSON (for `tapes sessions --json`).
pub fn session_json(id: &SessionId, r: &SessionRecord) -> Value {
    let s = &r.summary;
    json!({
        "id": id.to_hex(),
        "head": r.head.to_hex(),
        "title": r.title,
        "source": { "kind": r.source.kind, "id": r.source.id, "path": r.source.path },
        "parent_session": r.parent_session.map(|p| p.to_hex()),
        "started_ms": s.started_ms,
        "ended_ms": s.ended_ms,
        "duration_ms": s.duration_ms(),
        "project": s.project,
        "agent": s.agent,
        "model": s.model,
        "messages": s.messages,
        "usage": s.usage,
        "first_prompt": s.first_prompt,
        "owner": r.owner.map(|o| o.to_hex()),
        "visibility": r.visibility.label(),
        "team": match r.visibility { crate::session::Visibility::Team(t) => Some(t.to_hex()), _ => None },
        "tags": r.tags,
        "description": r.description,
        "note": r.note,
        "expires_ms": r.expires_ms,
        "lineage": {
            "root": r.lineage.root.to_hex(),
            "parent": r.lineage.parent.map(|p| p.to_hex()),
            "base_count": r.lineage.base_count,
            "base_digest": r.lineage.base_digest.map(|d| d.to_hex()),
        },
    })
}

/// The readable transcript of `tapes show`.
pub fn transcript(id: &SessionId, r: &SessionRecord, chain: &[(NodeId, Node)]) -> String {
    transcript_with(id, r, chain, "")
}

/// [`transcript`] with `extra` header lines (each ending in a newline) after the first facts.
pub fn transcript_with(
    id: &SessionId,
    r: &SessionRecord,
    chain: &[(NodeId, Node)],
    extra: &str,
) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let _ = writeln!(out, "session {}", id);
    if let Some(title) = &r.title {
        let _ = writeln!(out, "title   {title}");
    }
    let _ = writeln!(
        out,
        "agent   {} · model {} · project {}",
        or_dash(&s.agent),
        or_dash(&s.model),
        or_dash(&s.project)
    );
    let _ = writeln!(
        out,
        "started {} · duration {} · {} messages · tokens {} in / {} out / {} cache read / {} cache write",
        time(s.started_ms),
        duration(s.duration_ms()),
        s.messages,
        count(s.usage.input_tokens),
        count(s.usage.output_tokens),
        count(s.usage.cache_read_tokens),
        count(s.usage.cache_write_tokens),
    );
    out.push_str(extra);
    if let Some(parent) = r.parent_session {
        let _ = writeln!(out, "spawned by session {}", parent.short());
    }
    for (index, (_, node)) in chain.iter().enumerate() {
        let mut header = format!("\n── #{index} {}", node.body.role.as_str());
        if !node.body.model.is_empty() {
            let _ = write!(header, " · {}", node.body.model);
        }
        let _ = write!(header, " · {}", clock(node.meta.timestamp_ms));
        out.push_str(&header);
        out.push('\n');
        for block in &node.body.blocks {
            render_block(&mut out, block);
        }
    }
    out
}

fn render_block(out: &mut String, block: &ContentBlock) {
    match block {
        ContentBlock::Text { text } => {
            out.push_str(text.trim_end());
            out.push('\n');
        }
        ContentBlock::Thinking { text, .. } => {
            let _ = writeln!(out, "  (thinking) {}", cut(text, 160));
        }
        ContentBlock::ToolUse { name, input, .. } => {
            let _ = writeln!(out, "  ▸ {name} {}", cut(input, 160));
        }
        ContentBlock::ToolResult {
            is_error, content, ..
        } => {
            let joined = tool_result_text(content);
            let lines = joined.lines().count();
            let status = if *is_error { "error" } else { "ok" };
            let _ = writeln!(out, "  ◂ {status} ({lines} lines) {}", cut(&joined, 160));
        }
        ContentBlock::Image { media_type, source } => {
            let what = match source {
                ImageSource::Bytes { data } => bytes(data.len()),
                ImageSource::Reference { uri } => uri.clone(),
            };
            let _ = writeln!(out, "  [image {media_type} {what}]");
        }
        ContentBlock::Other { kind, json } => {
            let _ = writeln!(out, "  [{kind} {}]", cut(json, 80));
        }
    }
}

/// One node as JSON, its id included.
pub fn node_json(id: &NodeId, node: &Node) -> Value {
    let mut v = serde_json::to_value(node).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("id".into(), Value::String(id.to_hex()));
    }
    v
}

/// `tapes show --json`: the record and every node in full.
pub fn transcript_json(id: &SessionId, r: &SessionRecord, chain: &[(NodeId, Node)]) -> Value {
    let mut session = session_json(id, r);
    let nodes: Vec<Value> = chain
        .iter()
        .map(|(node_id, node)| node_json(node_id, node))
        .collect();
    if let Value::Object(map) = &mut session {
        map.insert("nodes".into(), Value::Array(nodes));
    }
    session
}

/// The `tapes log` chain, newest first like `git log`: index, id, parent, role, size, preview.
pub fn log(chain: &[(NodeId, Node)], sizes: &[usize]) -> String {
    let mut out = String::new();
    for (index, ((id, node), size)) in chain.iter().zip(sizes).enumerate().rev() {
        let parent = node.body.parent.map_or("(root)".to_string(), |p| p.short());
        let _ = writeln!(
            out,
            "#{index:<4} {}  parent {:<12}  {:<9}  {:>9}  {}",
            id.short(),
            parent,
            node.body.role.as_str(),
            bytes(*size),
            cut(&node.body.plain_text(), 60)
        );
    }
    out
}

/// `n` and the noun, plural unless `n` is 1: "1 file", "3 files", "2 copies".
/// `$0.42`; `<$0.01` for a cost that rounds to zero but is not (search, stats, the public page).
pub fn usd(cost: f64) -> String {
    if cost > 0.0 && cost < 0.005 {
        "<$0.01".into()
    } else {
        format!("${cost:.2}")
    }
}

pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let plural = match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{stem}ies"),
        _ if noun.ends_with('s') || noun.ends_with("sh") || noun.ends_with("ch") => {
            format!("{noun}es")
        }
        _ => format!("{noun}s"),
    };
    format!("{n} {plural}")
}
