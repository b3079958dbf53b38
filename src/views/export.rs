//! Export for other tools: JSON (the bundle shape of the team-sharing RFC §1.2), JSONL (one
//! session per line) and CSV (metadata only, one row per session), plus the session filter
//! that `tapes export` and `tapes bundle create` share.
//!
//! Everything is streamed: one session's nodes are in memory at a time, whatever the export's
//! size. `total_cost` is each node's usage at its model's price ([`crate::session::pricing`]). The JSON form ends with `"checksum": "blake3:<hex>"` over the exact bytes of its
//! `sessions` array (SPEC.md §12.6).
//!
//! An export leaves the machine as surely as a share, so every session passes the secret gate
//! first ([`crate::share::gate`], §11.2): a finding leaves that session out (the others are written)
//! unless `--redact` (its text is written redacted, under the original node ids) or
//! `--allow-secrets` (no scan). Node metadata carries only the project's name, not the working
//! directory ([`crate::share::outgoing`], §11.3), unless `share.paths` is `full`.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use tapes_protocol::SessionId;

use crate::duration::parse_duration_ms;
use crate::session::pricing::PriceTable;
use crate::session::SessionRecord;
use crate::share::gate::{self, Exit, GateError, SecretPolicy, Verdict};
use crate::share::outgoing::{self, PathPolicy};
use crate::store::{Store, StoreError};

pub const EXPORT_CHECKSUM_CONTEXT: &str = "tapes 2026-11 export checksum v1";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--date `{0}` is not a day; use YYYY-MM-DD (UTC), e.g. 2026-02-14")]
    BadDate(String),
    #[error("--since: {0}")]
    BadDuration(String),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Gate(#[from] GateError),
}

/// Which sessions to take. Every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The UTC day the session started, `YYYY-MM-DD`.
    pub date: Option<String>,
    /// The project, exactly.
    pub project: Option<String>,
    /// Part of the model name (`claude-sonnet` matches `claude-sonnet-4-5-20250929`).
    pub model: Option<String>,
    /// Active within this long before now (`30d`, `12h`): its last message is that recent.
    pub since: Option<String>,
    /// Exactly these sessions (ids piped in from `tapes search`).
    pub ids: Option<Vec<SessionId>>,
}

impl Filter {
    /// True when nothing narrows the selection (every session matches).
    pub fn is_empty(&self) -> bool {
        self.date.is_none()
            && self.project.is_none()
            && self.model.is_none()
            && self.since.is_none()
            && self.ids.is_none()
    }

    /// The filter as recorded in a bundle header or an export.
    pub fn describe(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, value) in [
            ("date", &self.date),
            ("project", &self.project),
            ("model", &self.model),
            ("since", &self.since),
        ] {
            if let Some(v) = value {
                out.insert(key.to_string(), v.clone());
            }
        }
        if let Some(ids) = &self.ids {
            out.insert("ids".into(), format!("{} listed", ids.len()));
        }
        out
    }

    /// The matching sessions, oldest first (ties by id).
    pub fn select(
        &self,
        store: &Store,
        now_ms: i64,
    ) -> Result<Vec<(SessionId, SessionRecord)>, ExportError> {
        let day = match &self.date {
            Some(text) => {
                let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                    .map_err(|_| ExportError::BadDate(text.clone()))?;
                let start = date
                    .and_hms_opt(0, 0, 0)
                    .map(|t| Utc.from_utc_datetime(&t).timestamp_millis())
                    .ok_or_else(|| ExportError::BadDate(text.clone()))?;
                Some((start, start + 86_400_000))
            }
            None => None,
        };
        let cutoff = match &self.since {
            Some(text) => Some(now_ms - parse_duration_ms(text).map_err(ExportError::BadDuration)?),
            None => None,
        };
        let mut out = Vec::new();
        let wanted: Option<std::collections::HashSet<SessionId>> =
            self.ids.as_ref().map(|ids| ids.iter().copied().collect());
        for (id, record) in store.sessions()? {
            let s = &record.summary;
            if wanted.as_ref().is_some_and(|w| !w.contains(&id))
                || self.project.as_ref().is_some_and(|p| &s.project != p)
                || self
                    .model
                    .as_ref()
                    .is_some_and(|m| !s.model.contains(m.as_str()))
                || day.is_some_and(|(from, to)| !s.started_ms.is_some_and(|t| t >= from && t < to))
                || cutoff.is_some_and(|c| s.ended_ms.or(s.started_ms).is_none_or(|t| t < c))
            {
                continue;
            }
            out.push((id, record));
        }
        out.sort_by(|a, b| {
            a.1.summary
                .started_ms
                .cmp(&b.1.summary.started_ms)
                .then(a.0.cmp(&b.0))
        });
        Ok(out)
    }
}

/// What a chain cost in US dollars at `prices`: each node's usage at its own model's price
/// (a session may switch models). Models without a price count 0.
pub fn chain_cost(
    chain: &[(tapes_protocol::NodeId, tapes_protocol::Node)],
    prices: &PriceTable,
) -> f64 {
    chain
        .iter()
        .filter_map(|(_, node)| {
            let usage = node.meta.usage?;
            prices.cost(&node.body.model, &usage)
        })
        .sum()
}

/// Dollars to a millionth (sums of float products otherwise print as 0.30000000000000004).
fn round_cost(cost: f64) -> f64 {
    (cost * 1e6).round() / 1e6
}

/// `2026-02-14T09:30:00Z`, or null.
fn rfc3339(ms: Option<i64>) -> Value {
    match ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()) {
        Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => Value::Null,
    }
}

/// One session as the RFC's bundle shape has it, with every node (as `tapes show --json`).
pub fn session_object(
    store: &Store,
    id: &SessionId,
    record: &SessionRecord,
    prices: &PriceTable,
) -> Result<Value, ExportError> {
    let chain = store.chain(&record.head)?;
    Ok(object_of(id, record, &chain, prices))
}

/// A session after the secret gate, as an export writes it: the record and chain as they may
/// leave (paths reduced, text redacted under `--redact`), or the gate's refusal.
struct Gated {
    record: SessionRecord,
    chain: Vec<(tapes_protocol::NodeId, tapes_protocol::Node)>,
    redacted: bool,
}

fn gated(
    store: &Store,
    id: &SessionId,
    record: &SessionRecord,
    meta: &ExportMeta,
) -> Result<Result<Gated, GateError>, ExportError> {
    let chain = store.chain(&record.head)?;
    let mut out = Gated {
        record: outgoing::record(record, meta.paths),
        chain: chain
            .iter()
            .map(|(id, node)| (*id, outgoing::node(node, meta.paths)))
            .collect(),
        redacted: false,
    };
    if meta.secrets == SecretPolicy::Allow {
        return Ok(Ok(out));
    }
    match findings(id, record, &chain).check(Exit::Export, meta.secrets) {
        Ok(Verdict::Clean | Verdict::Allowed(_)) => {}
        Ok(Verdict::Redact(_)) => {
            for (_, node) in &mut out.chain {
                node.body.blocks = crate::share::secrets::redact_blocks(&node.body.blocks).0;
            }
            let r = &mut out.record;
            r.title = r.title.as_deref().map(redact_text);
            r.summary.first_prompt = redact_text(&r.summary.first_prompt);
            out.redacted = true;
        }
        Err(e) => return Ok(Err(e)),
    }
    Ok(Ok(out))
}

/// What the gate finds in what an export writes of a session: its messages and title.
fn findings(
    id: &SessionId,
    record: &SessionRecord,
    chain: &[(tapes_protocol::NodeId, tapes_protocol::Node)],
) -> gate::Findings {
    let mut texts = Vec::new();
    if let Some(title) = &record.title {
        texts.push(("title", title.as_str()));
    }
    gate::Findings {
        session: *id,
        nodes: gate::scan_chain(id, chain, 0),
        fields: gate::scan_texts(id, "record", &texts),
    }
}

fn redact_text(text: &str) -> String {
    crate::share::secrets::redact_text(text, &crate::share::secrets::scan_text(text))
}

/// `tapes export --dry-run`: the gate's report for each session, writing nothing.
pub fn dry_run(
    store: &Store,
    sessions: &[(SessionId, SessionRecord)],
) -> Result<Vec<String>, ExportError> {
    let mut out = Vec::with_capacity(sessions.len());
    for (id, record) in sessions {
        let chain = store.chain(&record.head)?;
        out.push(findings(id, record, &chain).dry_run(Exit::Export));
    }
    Ok(out)
}

/// One session as the export shape has it (record fields and every node).
pub fn object_of(
    id: &SessionId,
    record: &SessionRecord,
    chain: &[(tapes_protocol::NodeId, tapes_protocol::Node)],
    prices: &PriceTable,
) -> Value {
    let cost = chain_cost(chain, prices);
    let nodes: Vec<Value> = chain
        .iter()
        .map(|(node_id, node)| crate::views::render::node_json(node_id, node))
        .collect();
    let s = &record.summary;
    json!({
        "id": id.to_hex(),
        "head": record.head.to_hex(),
        "title": record.title,
        "project": s.project,
        "agent": s.agent,
        "model": s.model,
        "start_time": rfc3339(s.started_ms),
        "end_time": rfc3339(s.ended_ms),
        "duration_s": s.duration_ms().map(|ms| ms / 1000),
        "messages": s.messages,
        "total_cost": round_cost(cost),
        "input_tokens": s.usage.input_tokens,
        "output_tokens": s.usage.output_tokens,
        "cache_read_tokens": s.usage.cache_read_tokens,
        "cache_write_tokens": s.usage.cache_write_tokens,
        "first_prompt": s.first_prompt,
        "nodes": nodes,
        "facets": {},
    })
}

/// The JSON export document, streamed: the envelope's fields, then the sessions array one
/// session per line, then the checksum over the array's exact bytes (SPEC §12.6).
pub struct JsonDocument<'w> {
    out: &'w mut dyn Write,
    sum: blake3::Hasher,
    first: bool,
}

impl<'w> JsonDocument<'w> {
    pub fn start(
        out: &'w mut dyn Write,
        exported_at_ms: i64,
        exported_by: &str,
        filter: &BTreeMap<String, String>,
    ) -> std::io::Result<JsonDocument<'w>> {
        let head = json!({
            "version": 1,
            "format": "tape-bundle",
            "exported_at": rfc3339(Some(exported_at_ms)),
            "exported_by": exported_by,
            "filter": filter,
        });
        let mut text = serde_json::to_string(&head).unwrap_or_default();
        text.pop(); // the closing brace
        write!(out, "{text},\"sessions\":")?;
        let mut doc = JsonDocument {
            out,
            sum: blake3::Hasher::new_derive_key(EXPORT_CHECKSUM_CONTEXT),
            first: true,
        };
        doc.emit(b"[")?;
        Ok(doc)
    }

    fn emit(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sum.update(bytes);
        self.out.write_all(bytes)
    }

    /// One session object ([`object_of`]).
    pub fn session(&mut self, value: &Value) -> std::io::Result<()> {
        let separator: &[u8] = if self.first { b"\n" } else { b",\n" };
        self.first = false;
        self.emit(separator)?;
        self.emit(serde_json::to_string(value).unwrap_or_default().as_bytes())
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.emit(b"\n]")?;
        writeln!(
            self.out,
            ",\"checksum\":\"blake3:{}\"}}",
            hex::encode(self.sum.finalize().as_bytes())
        )
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Jsonl,
    Csv,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// Who and what an export says it is.
#[derive(Debug, Clone)]
pub struct ExportMeta {
    pub exported_at_ms: i64,
    /// Prices for `total_cost` (`tapes::session::pricing`).
    pub prices: PriceTable,
    pub exported_by: String,
    pub filter: BTreeMap<String, String>,
    /// The secret gate's choice (`--redact`, `--allow-secrets`; default: refuse).
    pub secrets: SecretPolicy,
    /// How much of working directories is written (`share.paths`).
    pub paths: PathPolicy,
}

/// What [`export`] wrote.
#[derive(Debug, Default)]
pub struct Exported {
    /// Sessions written.
    pub written: usize,
    /// Sessions written with redacted text.
    pub redacted: usize,
    /// Sessions the secret gate left out, each with its findings.
    pub refused: Vec<GateError>,
}

/// Writes `sessions` to `out` in `format`, each through the secret gate (a refused session is
/// left out and reported).
pub fn export(
    store: &Store,
    sessions: &[(SessionId, SessionRecord)],
    format: Format,
    meta: &ExportMeta,
    out: &mut dyn Write,
    mut progress: impl FnMut(usize),
) -> Result<Exported, ExportError> {
    let mut report = Exported::default();
    let mut pass = |id: &SessionId, record: &SessionRecord| -> Result<Option<Gated>, ExportError> {
        match gated(store, id, record, meta)? {
            Ok(g) => {
                report.written += 1;
                report.redacted += usize::from(g.redacted);
                Ok(Some(g))
            }
            Err(refused) => {
                report.refused.push(refused);
                Ok(None)
            }
        }
    };
    match format {
        Format::Json => {
            let mut doc =
                JsonDocument::start(out, meta.exported_at_ms, &meta.exported_by, &meta.filter)?;
            for (i, (id, record)) in sessions.iter().enumerate() {
                progress(i + 1);
                let Some(g) = pass(id, record)? else {
                    continue;
                };
                doc.session(&object_of(id, &g.record, &g.chain, &meta.prices))?;
            }
            doc.finish()?;
        }
        Format::Jsonl => {
            for (i, (id, record)) in sessions.iter().enumerate() {
                progress(i + 1);
                let Some(g) = pass(id, record)? else {
                    continue;
                };
                let value = object_of(id, &g.record, &g.chain, &meta.prices);
                writeln!(out, "{}", serde_json::to_string(&value).unwrap_or_default())?;
            }
        }
        Format::Csv => {
            write_csv_row(out, CSV_COLUMNS.iter().map(|c| c.to_string()))?;
            for (i, (id, record)) in sessions.iter().enumerate() {
                progress(i + 1);
                let Some(g) = pass(id, record)? else {
                    continue;
                };
                let cost = chain_cost(&g.chain, &meta.prices);
                write_csv_row(out, csv_fields(id, &g.record, cost).into_iter())?;
            }
        }
    }
    out.flush()?;
    Ok(report)
}

pub const CSV_COLUMNS: [&str; 14] = [
    "id",
    "project",
    "agent",
    "model",
    "start_time",
    "end_time",
    "duration_s",
    "messages",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "total_cost",
    "first_prompt",
];

fn csv_fields(id: &SessionId, r: &SessionRecord, cost: f64) -> Vec<String> {
    let s = &r.summary;
    let time = |ms| match rfc3339(ms) {
        Value::String(t) => t,
        _ => String::new(),
    };
    vec![
        id.to_hex(),
        s.project.clone(),
        s.agent.clone(),
        s.model.clone(),
        time(s.started_ms),
        time(s.ended_ms),
        s.duration_ms()
            .map(|ms| (ms / 1000).to_string())
            .unwrap_or_default(),
        s.messages.to_string(),
        s.usage.input_tokens.to_string(),
        s.usage.output_tokens.to_string(),
        s.usage.cache_read_tokens.to_string(),
        s.usage.cache_write_tokens.to_string(),
        format!("{:.6}", round_cost(cost)),
        s.first_prompt.clone(),
    ]
}

/// One RFC 4180 record: fields separated by commas, CRLF at the end; a field holding a comma,
/// a quote, CR or LF is quoted, with quotes doubled.
fn write_csv_row(out: &mut dyn Write, fields: impl Iterator<Item = String>) -> std::io::Result<()> {
    let mut line = String::new();
    for (i, field) in fields.enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&csv_field(&field));
    }
    line.push_str("\r\n");
    out.write_all(line.as_bytes())
}

pub fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
