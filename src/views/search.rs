//! Full-text search over message content, with a tantivy index kept beside the store.
//!
//! The index lives in `$TAPES_HOME/index` (for a store not named `store`, in `<store>.index`).
//! It is *derived data*: everything in it is recomputed from the store, so a damaged, missing or
//! outdated index is simply rebuilt and never affects the store's crash-safety argument
//! (SPEC.md, "Search index and analytics").
//!
//! One tantivy document per (session, node): the message's text, thinking, tool names and
//! inputs and tool outputs, tokenized with English stemming (`refactor` finds `refactoring`).
//! A session's score is the best score of its nodes; its snippet comes from that node.
//!
//! Beside the documents, every commit names a *state* file in its payload (atomically with the
//! documents, `state.rs`): per session, the head that was indexed and facts derived from the
//! chain that listings need without walking it (status, usage per model, node count), and the
//! store generation (`store::generation`) the index is current with. [`SearchIndex::sync`]
//! first compares that generation with the store's (one ref read): equal, nothing changed and
//! nothing else is read. Otherwise it compares the heads with the store's session refs and
//! indexes only what moved: a session whose old head is in its new chain gets just the new
//! nodes; any other change re-indexes the session; a session gone from the store is dropped.
//! `ingest` calls it for the sessions it wrote ([`after_ingest`]) when an index exists, and
//! advances the generation when its own commit was the only change; import, fetch and bundle
//! import call [`catch_up`] at their end; `tapes search` and `tapes stats` call it for every
//! session first, which covers writers that do not (branch, fork, push received).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED,
    STRING,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader,
    TantivyDocument, Term,
};
use tapes_protocol::node::tool_result_text;
use tapes_protocol::{ContentBlock, Node, NodeId, SessionId, Usage};

use crate::session::pricing::{self, PriceTable};
use crate::session::status::{self, Status};
use crate::session::SessionRecord;
use crate::store::generation::Generation;
use crate::store::{Store, StoreError};

mod state;
use state::State;

/// Bump when the schema, the state layout or a derived fact (status, SPEC §13) changes: an index
/// of another version is rebuilt. 3: status rules read what the transcript shows.
/// 4: the state moved from the commit payload to a state file, with the store generation.
const INDEX_VERSION: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the search index in {dir}: {source}; run `tapes search --reindex` to rebuild it (it is derived from the store, nothing is lost)")]
    Index {
        dir: String,
        source: tantivy::TantivyError,
    },
    #[error(
        "another tapes process is updating the search index in {0}; try again when it finishes"
    )]
    Busy(String),
    #[error("cannot reset the search index in {dir}: {source}; remove that directory by hand and search again")]
    Reset { dir: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the index of `store` lives.
pub fn index_dir(store: &Store) -> PathBuf {
    let path = store.path();
    match (path.file_name(), path.parent()) {
        (Some(name), Some(parent)) if name == "store" => parent.join("index"),
        _ => {
            let mut name = path.as_os_str().to_owned();
            name.push(".index");
            PathBuf::from(name)
        }
    }
}

/// What the index remembers about one session (derived from its chain and summary): enough
/// to filter and sort without reading the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionFacts {
    /// The head that was indexed.
    pub head: NodeId,
    pub status: Status,
    pub nodes: u64,
    /// Usage per model as recorded on the nodes (`""` for usage on nodes without a model).
    pub usage: BTreeMap<String, Usage>,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub created_ms: i64,
    pub project: String,
    /// The model of the last assistant message.
    pub model: String,
    pub agent: String,
    /// Dense number of the session in this index (its documents carry it in a fast field).
    pub ordinal: u32,
}

impl SessionFacts {
    /// Facts of a session's chain given root first.
    pub fn of_chain(record: &SessionRecord, chain: &[(NodeId, Node)]) -> SessionFacts {
        let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
        for (_, node) in chain {
            if let Some(u) = node.meta.usage {
                *usage.entry(node.body.model.clone()).or_default() += u;
            }
        }
        let s = &record.summary;
        SessionFacts {
            head: record.head,
            status: status::derive(chain.iter().map(|(_, n)| n)),
            nodes: chain.len() as u64,
            usage,
            started_ms: s.started_ms,
            ended_ms: s.ended_ms,
            created_ms: record.created_ms,
            project: s.project.clone(),
            model: s.model.clone(),
            agent: s.agent.clone(),
            ordinal: 0,
        }
    }

    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.ended_ms? - self.started_ms?)
    }

    /// When the session started (its record's creation when no message has a timestamp).
    pub fn started(&self) -> i64 {
        self.started_ms.unwrap_or(self.created_ms)
    }

    /// The cost of the session at `prices`, and the models it used that have no price.
    pub fn cost(&self, prices: &PriceTable) -> (f64, Vec<String>) {
        self.cost_cached(prices, &mut HashMap::new())
    }

    /// [`Self::cost`] with model lookups remembered across sessions.
    pub fn cost_cached(
        &self,
        prices: &PriceTable,
        cache: &mut HashMap<String, Option<crate::session::pricing::Price>>,
    ) -> (f64, Vec<String>) {
        let mut total = 0.0;
        let mut unpriced = Vec::new();
        for (model, usage) in &self.usage {
            let price = match cache.get(model) {
                Some(p) => *p,
                None => {
                    let p = prices.price(model);
                    cache.insert(model.clone(), p);
                    p
                }
            };
            match price.map(|p| p.cost(usage)) {
                Some(c) => total += c,
                None if usage.is_zero() => {}
                None => unpriced.push(if model.is_empty() {
                    "(no model)".to_string()
                } else {
                    model.clone()
                }),
            }
        }
        (total, unpriced)
    }

    pub fn tokens(&self) -> u64 {
        self.usage.values().map(Usage::total).sum()
    }
}

#[derive(Clone, Copy)]
struct Fields {
    session: Field,
    key: Field,
    node: Field,
    text: Field,
    project: Field,
    model: Field,
    agent: Field,
    role: Field,
    time: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("en_stem")
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        session: b.add_text_field("session", STRING),
        key: b.add_u64_field("session_ord", FAST),
        node: b.add_bytes_field("node", STORED),
        text: b.add_text_field("text", text_options),
        project: b.add_text_field("project", STRING),
        model: b.add_text_field("model", STRING),
        agent: b.add_text_field("agent", STRING),
        role: b.add_text_field("role", STRING),
        time: b.add_i64_field("started_ms", INDEXED | FAST),
    };
    (b.build(), fields)
}

/// The searchable text of a node: text, thinking, tool names and inputs, tool outputs.
pub fn node_text(node: &Node) -> String {
    let mut out = String::new();
    for block in &node.body.blocks {
        let part = match block {
            ContentBlock::Text { text } | ContentBlock::Thinking { text, .. } => text.clone(),
            ContentBlock::ToolUse { name, input, .. } => format!("{name} {}", input_text(input)),
            ContentBlock::ToolResult { content, .. } => tool_result_text(content),
            ContentBlock::Image { .. } | ContentBlock::Other { .. } => continue,
        };
        if part.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&part);
    }
    out
}

/// A tool input for reading: the string values of a JSON object one per line (unescaped, so
/// a command or a patch reads as written), anything else as it is.
fn input_text(input: &str) -> String {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            serde_json::Value::Null => {}
            other => out.push(other.to_string()),
        }
    }
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(value) => {
            let mut parts = Vec::new();
            walk(&value, &mut parts);
            parts.join("\n")
        }
        Err(_) => input.to_string(),
    }
}

/// What one sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub sessions: usize,
    pub nodes: usize,
    pub removed: usize,
    /// Sessions that could not be read (damaged chains): not searchable until `tapes fsck`.
    pub failed: Vec<(SessionId, String)>,
    /// The index was rebuilt from scratch (missing, damaged or of another version).
    pub rebuilt: bool,
    /// The store's session refs were read. A catch-up with nothing changed reads only the
    /// store's generation (one ref) and leaves this false.
    pub scanned: bool,
}

/// How far a sync is, for a progress bar: sessions indexed of the sessions to index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncProgress {
    pub done: u64,
    pub total: u64,
    /// Messages to index in all (known when the sync starts).
    pub messages: u64,
}

/// Which generation a sync may record as the one the index is current with.
#[derive(Clone, Copy)]
enum Stamp {
    /// Every session was compared with the store as of this generation (read before the scan).
    Scanned(Generation),
    /// Only some sessions were looked at: the recorded generation stays.
    Keep,
    /// Exactly one ref transaction (`from` → `to`) changed the sessions given: if the index was
    /// current at `from`, it is current at `to` once they are indexed.
    Advance { from: Generation, to: Generation },
}

pub struct SearchIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    state: State,
    rebuilt: bool,
}

/// The commit payload names the state file of the commit.
const STATE_PREFIX: &str = "tapes-index-state-file:";

impl SearchIndex {
    /// Opens the index in `dir`, creating it, or recreating it when it is damaged or was made
    /// by another version (it is derived data).
    pub fn open(dir: &Path) -> Result<SearchIndex, SearchError> {
        let started = std::time::Instant::now();
        let opened = match Self::try_open(dir) {
            Ok(Some(index)) => Ok(index),
            // Creating (or recreating) wipes the directory: one process at a time, and only if
            // no other process made it meanwhile (concurrent readers of a fresh home).
            _ => Self::create_locked(dir),
        }?;
        tracing::debug!(
            ms = started.elapsed().as_secs_f64() * 1e3,
            segments = opened.reader.searcher().segment_readers().len(),
            sessions = opened.state.len(),
            "search index opened"
        );
        Ok(opened)
    }

    /// Creates the index under an exclusive lock on `<dir>.lock`, unless another process
    /// created a readable one while this one waited for the lock.
    fn create_locked(dir: &Path) -> Result<SearchIndex, SearchError> {
        let _lock = Self::creation_lock(dir)?;
        match Self::try_open(dir) {
            Ok(Some(index)) => Ok(index),
            Ok(None) => Self::create(dir, true),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "search index unreadable; rebuilding it");
                Self::create(dir, true)
            }
        }
    }

    /// The lock every process takes before it wipes and creates the index (released when the
    /// file handle is dropped).
    fn creation_lock(dir: &Path) -> Result<std::fs::File, SearchError> {
        let reset = |source| SearchError::Reset {
            dir: dir.display().to_string(),
            source,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.with_extension("lock"))
            .map_err(reset)?;
        lock.lock().map_err(reset)?;
        Ok(lock)
    }

    /// Deletes and recreates the index.
    pub fn rebuild(dir: &Path) -> Result<SearchIndex, SearchError> {
        let _lock = Self::creation_lock(dir)?;
        Self::create(dir, true)
    }

    fn try_open(dir: &Path) -> Result<Option<SearchIndex>, SearchError> {
        if !dir.join("meta.json").exists() {
            return Ok(None);
        }
        let err = |source| SearchError::Index {
            dir: dir.display().to_string(),
            source,
        };
        let index = Index::open_in_dir(dir).map_err(err)?;
        let (expected, fields) = schema();
        if index.schema() != expected {
            return Ok(None);
        }
        // A commit by another process between reading the metas and the state file deletes the
        // file named: read the metas again.
        let mut state = None;
        for _ in 0..3 {
            let metas = index.load_metas().map_err(err)?;
            let Some(payload) = metas.payload.as_deref() else {
                // Created, nothing committed yet (perhaps by another process right now).
                state = Some(Some(State::empty(INDEX_VERSION)));
                break;
            };
            let Some(name) = payload.strip_prefix(STATE_PREFIX) else {
                return Ok(None);
            };
            if name.contains('/') || name.contains("..") {
                return Ok(None);
            }
            match State::read(&dir.join(name)) {
                Ok(read) => {
                    state = Some(read);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => return Ok(None),
            }
        }
        let Some(Some(state)) = state else {
            return Ok(None);
        };
        if state.version != INDEX_VERSION {
            return Ok(None);
        }
        let reader = reader(&index).map_err(err)?;
        Ok(Some(SearchIndex {
            dir: dir.to_path_buf(),
            index,
            reader,
            fields,
            state,
            rebuilt: false,
        }))
    }

    fn create(dir: &Path, wipe: bool) -> Result<SearchIndex, SearchError> {
        let reset = |source| SearchError::Reset {
            dir: dir.display().to_string(),
            source,
        };
        if wipe && dir.exists() {
            // `meta.json` first: without it the directory is no index at all, so a process
            // killed while the rest is deleted leaves what the next command rebuilds, never
            // an index whose metas name segment files already gone (crash_ops found one).
            match std::fs::remove_file(dir.join("meta.json")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(reset(e)),
                _ => {}
            }
            std::fs::remove_dir_all(dir).map_err(reset)?;
        }
        crate::home::create_private_dir(dir).map_err(|e| match e {
            crate::home::HomeError::Create { source, .. } => reset(source),
            crate::home::HomeError::NoHome => reset(std::io::Error::other("no home")),
        })?;
        let err = |source| SearchError::Index {
            dir: dir.display().to_string(),
            source,
        };
        let (schema, fields) = schema();
        let index = Index::create_in_dir(dir, schema).map_err(err)?;
        let reader = reader(&index).map_err(err)?;
        Ok(SearchIndex {
            dir: dir.to_path_buf(),
            index,
            reader,
            fields,
            state: State::empty(INDEX_VERSION),
            rebuilt: true,
        })
    }

    fn err(&self, source: tantivy::TantivyError) -> SearchError {
        match source {
            tantivy::TantivyError::LockFailure(
                tantivy::directory::error::LockError::LockBusy,
                _,
            ) => SearchError::Busy(self.dir.display().to_string()),
            source => SearchError::Index {
                dir: self.dir.display().to_string(),
                source,
            },
        }
    }

    /// The facts indexed for a session.
    pub fn facts(&self, id: &SessionId) -> Option<&SessionFacts> {
        self.state.facts(self.state.find(id)?)
    }

    /// Number of documents (one per indexed message).
    pub fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Number of tantivy segments (one after a bulk build; a few after small updates).
    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// The store generation the index is current with, if known.
    pub fn generation(&self) -> Option<Generation> {
        self.state.generation
    }

    /// Brings the index up to date with the store: every session (`only == None`, which also
    /// drops sessions gone from the store) or just the given ones. With `only == None` and the
    /// store's generation equal to the one the index recorded, nothing else is read.
    pub fn sync(
        &mut self,
        store: &Store,
        only: Option<&[SessionId]>,
    ) -> Result<SyncReport, SearchError> {
        self.sync_with_progress(store, only, &mut |_| {})
    }

    /// [`Self::sync`], reporting progress while it indexes.
    pub fn sync_with_progress(
        &mut self,
        store: &Store,
        only: Option<&[SessionId]>,
        progress: &mut dyn FnMut(SyncProgress),
    ) -> Result<SyncReport, SearchError> {
        let stamp = match only {
            None => Stamp::Scanned(store.generation()?),
            Some(_) => Stamp::Keep,
        };
        self.sync_inner(store, only, stamp, progress)
    }

    fn sync_inner(
        &mut self,
        store: &Store,
        only: Option<&[SessionId]>,
        stamp: Stamp,
        progress: &mut dyn FnMut(SyncProgress),
    ) -> Result<SyncReport, SearchError> {
        let mut report = SyncReport {
            rebuilt: std::mem::take(&mut self.rebuilt),
            ..SyncReport::default()
        };
        let generation = match stamp {
            Stamp::Scanned(g) => Some(g),
            Stamp::Keep => self.state.generation,
            Stamp::Advance { from, to } => {
                if self.state.generation == Some(from) {
                    Some(to)
                } else {
                    self.state.generation
                }
            }
        };
        if let (Stamp::Scanned(g), false) = (stamp, report.rebuilt) {
            if self.state.generation == Some(g) {
                tracing::debug!(
                    generation = g.count,
                    "search index catch-up: current with the store (one read)"
                );
                return Ok(report);
            }
        }
        let scan_started = std::time::Instant::now();
        let records: Vec<(SessionId, SessionRecord)> = match only {
            None => {
                report.scanned = true;
                store.sessions()?
            }
            Some(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    if let Some(r) = store.session(id)? {
                        out.push((*id, r));
                    }
                }
                out
            }
        };
        let stale: Vec<&(SessionId, SessionRecord)> = records
            .iter()
            .filter(|(id, r)| {
                self.state
                    .find(id)
                    .and_then(|e| self.state.head(e))
                    .is_none_or(|head| head != r.head)
            })
            .collect();
        let removed: Vec<SessionId> = match only {
            None => {
                let live: HashSet<&SessionId> = records.iter().map(|(id, _)| id).collect();
                (0..self.state.len())
                    .map(|e| self.state.id(e))
                    .filter(|id| !live.contains(id))
                    .collect()
            }
            Some(_) => Vec::new(),
        };
        tracing::debug!(
            sessions = records.len(),
            stale = stale.len(),
            removed = removed.len(),
            ms = scan_started.elapsed().as_secs_f64() * 1e3,
            "search index catch-up: compared with the store's refs"
        );
        if stale.is_empty()
            && removed.is_empty()
            && !report.rebuilt
            && generation == self.state.generation
        {
            return Ok(report);
        }
        let pending_nodes: u64 = stale.iter().map(|(_, r)| r.summary.messages).sum();
        let mut done = SyncProgress {
            done: 0,
            total: stale.len() as u64,
            messages: pending_nodes,
        };
        progress(done);
        let threads = if pending_nodes > 20_000 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
        } else {
            1
        };
        let per_thread_mb = if pending_nodes > 20_000 { 96 } else { 24 };
        let budget = (threads * per_thread_mb) << 20;
        let mut writer: IndexWriter<TantivyDocument> = self
            .index
            .writer_with_num_threads(threads, budget)
            .map_err(|e| self.err(e))?;
        let f = self.fields;
        // What changes in the state; the rest is copied as it is.
        let mut changes: BTreeMap<SessionId, Option<SessionFacts>> = BTreeMap::new();
        let mut next_ordinal = self.state.next_ordinal;
        for id in &removed {
            writer.delete_term(Term::from_field_text(f.session, &id.to_hex()));
            changes.insert(*id, None);
            report.removed += 1;
        }
        for (id, record) in stale {
            let chain = match store.chain(&record.head) {
                Ok(chain) => chain,
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "cannot index session");
                    report.failed.push((*id, e.to_string()));
                    continue;
                }
            };
            let hex = id.to_hex();
            // What was indexed of it: its head and ordinal.
            let old = self
                .state
                .find(id)
                .and_then(|e| Some((self.state.head(e)?, self.state.ordinal(e))));
            // Only the nodes after the indexed head, when the session just grew.
            let from = match old {
                Some((old_head, _)) => match chain.iter().position(|(n, _)| *n == old_head) {
                    Some(pos) => pos + 1,
                    None => {
                        writer.delete_term(Term::from_field_text(f.session, &hex));
                        0
                    }
                },
                None => {
                    if !report.rebuilt {
                        writer.delete_term(Term::from_field_text(f.session, &hex));
                    }
                    0
                }
            };
            let ordinal = match old {
                Some((_, ordinal)) => ordinal,
                None => {
                    next_ordinal += 1;
                    next_ordinal - 1
                }
            };
            let key = u64::from(ordinal);
            let summary = &record.summary;
            for (node_id, node) in &chain[from..] {
                let mut doc = TantivyDocument::default();
                doc.add_text(f.session, &hex);
                doc.add_u64(f.key, key);
                doc.add_bytes(f.node, node_id.as_bytes().as_slice());
                doc.add_text(f.text, node_text(node));
                doc.add_text(f.project, &summary.project);
                doc.add_text(f.model, pricing::normalize(&node.body.model));
                doc.add_text(f.agent, &summary.agent);
                doc.add_text(f.role, node.body.role.as_str());
                doc.add_i64(
                    f.time,
                    node.meta.timestamp_ms.or(summary.started_ms).unwrap_or(0),
                );
                writer.add_document(doc).map_err(|e| self.err(e))?;
                report.nodes += 1;
            }
            let mut facts = SessionFacts::of_chain(record, &chain);
            facts.ordinal = ordinal;
            changes.insert(*id, Some(facts));
            report.sessions += 1;
            done.done += 1;
            if done.done % 64 == 0 || done.done == done.total {
                progress(done);
            }
        }
        // Failed sessions were not compared: the index is not current with this generation.
        let generation = if report.failed.is_empty() {
            generation
        } else {
            self.state.generation
        };
        let bytes = self
            .state
            .encode_changed(INDEX_VERSION, next_ordinal, generation, &changes);
        drop(changes);
        let name = self.write_state_file(&bytes)?;
        let mut prepared = writer.prepare_commit().map_err(|e| self.err(e))?;
        prepared.set_payload(&format!("{STATE_PREFIX}{name}"));
        prepared.commit().map_err(|e| self.err(e))?;
        // A bulk build leaves many segments; one costs less to open and to search.
        let segments = self
            .index
            .searchable_segment_ids()
            .map_err(|e| self.err(e))?;
        // A session gone from the store (removed) must leave the index's files too: deleted
        // documents stay in their segment until a merge rewrites it.
        let purge = report.removed > 0 && !segments.is_empty();
        if (report.nodes > 50_000 && segments.len() > 1) || purge {
            let merge_started = std::time::Instant::now();
            writer.merge(&segments).wait().map_err(|e| self.err(e))?;
            tracing::debug!(
                segments = segments.len(),
                ms = merge_started.elapsed().as_millis() as u64,
                "search index: merged segments"
            );
        }
        writer.wait_merging_threads().map_err(|e| self.err(e))?;
        self.remove_old_state_files(&name);
        self.reader.reload().map_err(|e| self.err(e))?;
        self.state = State::from_encoded(bytes).ok_or_else(|| {
            self.err(tantivy::TantivyError::InternalError(
                "the index state just written does not parse".into(),
            ))
        })?;
        Ok(report)
    }

    /// Writes a new state file under a fresh name and returns its name. Not fsynced: it is a
    /// cache, and a file a crash cut short does not open (`state.rs`), so the index is rebuilt.
    fn write_state_file(&self, bytes: &[u8]) -> Result<String, SearchError> {
        use std::io::Write as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("state-{nanos:x}-{}.bin", std::process::id());
        let path = self.dir.join(&name);
        let io = |e: std::io::Error| {
            self.err(tantivy::TantivyError::InternalError(format!(
                "cannot write {}: {e}",
                path.display()
            )))
        };
        let mut file = std::fs::File::create(&path).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        Ok(name)
    }

    /// Deletes state files of earlier commits (called with the writer still held).
    fn remove_old_state_files(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("state-") && name.ends_with(".bin") && name != keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The sessions matching `query` in result order (with at most `query.limit`), without
    /// reading the store: what a pipe gets (`tapes search WORD | …`). The same sessions in the
    /// same order as [`Self::search`] when the index is current.
    pub fn search_ids(
        &self,
        query: &SearchQuery,
        prices: &PriceTable,
    ) -> Result<Vec<SessionId>, SearchError> {
        let mut price_cache = HashMap::new();
        let ranked = self.rank(query, prices, &mut price_cache, false)?;
        Ok(ranked.into_iter().map(|c| c.id).collect())
    }

    /// Candidates that match, ordered and cut to the limit.
    fn rank(
        &self,
        query: &SearchQuery,
        prices: &PriceTable,
        price_cache: &mut HashMap<String, Option<crate::session::pricing::Price>>,
        best_docs: bool,
    ) -> Result<Vec<Candidate>, SearchError> {
        let text = query.text.trim();
        let filtered = query.has_filters();
        let mut found: Vec<Candidate> = Vec::new();
        let by = query.sort.unwrap_or(if text.is_empty() {
            Sort::Date
        } else {
            Sort::Relevance
        });
        let candidate = |e: usize, best: Option<Best>| Candidate {
            entry: e,
            id: self.state.id(e),
            started: self.state.started(e),
            cost: 0.0,
            unpriced: Vec::new(),
            best,
            priced: false,
        };
        if text.is_empty() {
            for e in 0..self.state.len() {
                let Some(facts) = self.state.facts(e) else {
                    continue;
                };
                let (cost, unpriced) = facts.cost_cached(prices, price_cache);
                let id = self.state.id(e);
                if query.includes(&id) && query.accepts(facts, cost) {
                    found.push(Candidate {
                        cost,
                        unpriced,
                        priced: true,
                        ..candidate(e, None)
                    });
                }
            }
        } else {
            // Filters first, as a dense mask over ordinals, so the collector skips the rest.
            let allowed = if filtered {
                let mut mask = vec![false; self.state.next_ordinal as usize];
                for e in 0..self.state.len() {
                    let Some(facts) = self.state.facts(e) else {
                        continue;
                    };
                    let (cost, _) = facts.cost_cached(prices, price_cache);
                    if query.includes(&self.state.id(e)) && query.accepts(facts, cost) {
                        if let Some(slot) = mask.get_mut(facts.ordinal as usize) {
                            *slot = true;
                        }
                    }
                }
                Some(std::sync::Arc::new(mask))
            } else {
                None
            };
            let searcher = self.reader.searcher();
            let parsed = self.parse(text);
            // Scores only order by relevance and pick the snippet's message.
            let scoring = best_docs || by == Sort::Relevance;
            let best = searcher
                .search(
                    &*parsed,
                    &BySession {
                        sessions: self.state.next_ordinal as usize,
                        allowed,
                        scoring,
                    },
                )
                .map_err(|e| self.err(e))?;
            for (ordinal, b) in best.into_iter().enumerate() {
                if b.matches == 0 {
                    continue;
                }
                let Some(e) = self.state.entry_of_ordinal(ordinal) else {
                    continue;
                };
                // Pricing every match is wasted work unless results are ordered by cost.
                if by == Sort::Cost {
                    let Some(facts) = self.state.facts(e) else {
                        continue;
                    };
                    let (cost, unpriced) = facts.cost_cached(prices, price_cache);
                    found.push(Candidate {
                        cost,
                        unpriced,
                        priced: true,
                        ..candidate(e, Some(b))
                    });
                } else {
                    found.push(candidate(e, Some(b)));
                }
            }
        }
        if matches!(by, Sort::Duration | Sort::Tokens) {
            found.retain(|c| self.state.facts(c.entry).is_some());
        }
        let state = &self.state;
        let order = |a: &Candidate, b: &Candidate| {
            let primary = match by {
                Sort::Relevance => {
                    let score = |c: &Candidate| c.best.map_or(0.0, |b| b.score);
                    score(b).total_cmp(&score(a))
                }
                Sort::Date => std::cmp::Ordering::Equal,
                Sort::Cost => b.cost.total_cmp(&a.cost),
                Sort::Duration => {
                    let d = |c: &Candidate| state.facts(c.entry).and_then(|f| f.duration_ms());
                    d(b).cmp(&d(a))
                }
                Sort::Tokens => {
                    let t = |c: &Candidate| state.facts(c.entry).map_or(0, |f| f.tokens());
                    t(b).cmp(&t(a))
                }
            };
            primary
                .then(b.started.cmp(&a.started))
                .then(a.id.cmp(&b.id))
        };
        // With a limit, only the best `limit` need ordering.
        if let Some(limit) = query.limit.filter(|l| *l < found.len()) {
            found.select_nth_unstable_by(limit, order);
            found.truncate(limit);
        }
        found.sort_by(order);
        Ok(found)
    }

    /// Runs a search: sessions matching the filters and, when `query.text` is not empty, whose
    /// messages match it. Filters and sorting use the indexed facts (no store reads); the
    /// store is read only for the sessions returned. Call [`Self::sync`] first.
    pub fn search(
        &self,
        store: &Store,
        query: &SearchQuery,
        prices: &PriceTable,
    ) -> Result<Vec<Hit>, SearchError> {
        let mut price_cache = HashMap::new();
        let text = query.text.trim();
        let mut found = self.rank(query, prices, &mut price_cache, true)?;
        for c in found.iter_mut().filter(|c| !c.priced) {
            if let Some(facts) = self.state.facts(c.entry) {
                (c.cost, c.unpriced) = facts.cost_cached(prices, &mut price_cache);
            }
        }
        let mut hits = Vec::with_capacity(found.len());
        // Many results: one scan of the refs beats a lookup each.
        let bulk = found.len() > 1000;
        let mut all: HashMap<SessionId, SessionRecord> = if bulk {
            store.sessions()?.into_iter().collect()
        } else {
            HashMap::new()
        };
        for c in found {
            let Some(facts) = self.state.facts(c.entry) else {
                continue;
            };
            // A session removed since the last sync is left out.
            let record = match all.remove(&c.id) {
                Some(r) => r,
                None if bulk => continue,
                None => match store.session(&c.id)? {
                    Some(r) => r,
                    None => continue,
                },
            };
            hits.push(Hit {
                id: c.id,
                record,
                status: facts.status,
                cost: c.cost,
                unpriced: c.unpriced,
                tokens: facts.tokens(),
                models: facts
                    .usage
                    .keys()
                    .filter(|m| !m.is_empty())
                    .cloned()
                    .collect(),
                score: c.best.map(|b| b.score),
                matches: c.best.map_or(0, |b| b.matches),
                snippet: None,
                best: c.best.map(|b| b.doc),
            });
        }
        if !text.is_empty() && query.snippets {
            self.snippets(store, text, &mut hits)?;
        }
        Ok(hits)
    }

    fn parse(&self, text: &str) -> Box<dyn tantivy::query::Query> {
        let mut parser = QueryParser::for_index(&self.index, vec![self.fields.text]);
        parser.set_conjunction_by_default();
        match parser.parse_query(text) {
            Ok(q) => q,
            Err(_) => parser.parse_query_lenient(text).0,
        }
    }

    fn snippets(&self, store: &Store, text: &str, hits: &mut [Hit]) -> Result<(), SearchError> {
        let searcher = self.reader.searcher();
        let query = self.parse(text);
        let mut generator =
            tantivy::snippet::SnippetGenerator::create(&searcher, &*query, self.fields.text)
                .map_err(|e| self.err(e))?;
        generator.set_max_num_chars(160);
        for hit in hits {
            let Some(addr) = hit.best else { continue };
            let doc: TantivyDocument = searcher.doc(addr).map_err(|e| self.err(e))?;
            let Some(node_id) = doc
                .get_first(self.fields.node)
                .and_then(|v| v.as_bytes())
                .and_then(NodeId::from_slice)
            else {
                continue;
            };
            let Ok(node) = store.node(&node_id) else {
                continue;
            };
            let text = node_text(&node);
            let snippet = generator.snippet(&text);
            let fragment = snippet.fragment();
            // Snippets are cut on char boundaries by tantivy; flatten whitespace for one line.
            let highlights = snippet.highlighted().to_vec();
            hit.snippet = Some(Snippet::one_line(fragment, &highlights));
        }
        Ok(())
    }
}

/// A session that matched, while results are ranked.
struct Candidate {
    /// Its entry in the state.
    entry: usize,
    id: SessionId,
    started: i64,
    cost: f64,
    unpriced: Vec<String>,
    best: Option<Best>,
    priced: bool,
}

fn reader(index: &Index) -> tantivy::Result<IndexReader> {
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
}

/// Updates an existing index for the sessions an ingest created or moved (`changed`), whose
/// one ref transaction moved the store from generation `before`. Never fails the ingest: the
/// index is a cache, and the next `tapes search` catches up whatever this missed.
pub fn after_ingest(store: &Store, changed: &[SessionId], before: Option<Generation>) {
    let dir = index_dir(store);
    if !dir.join("meta.json").exists() || changed.is_empty() {
        return;
    }
    {
        let mut deferred = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = deferred.as_mut() {
            d.from = d.from.or(before);
            d.commits += 1;
            d.changed.extend_from_slice(changed);
            return;
        }
    }
    let result = (|| {
        let mut index = SearchIndex::open(&dir)?;
        // Only when this ingest's commit was the one step the store took.
        let now = store.generation()?;
        let stamp = match before {
            Some(from) if now == from || now == from.successor() => {
                Stamp::Advance { from, to: now }
            }
            _ => Stamp::Keep,
        };
        index.sync_inner(store, Some(changed), stamp, &mut |_| {})
    })();
    match result {
        Ok(_) => {}
        // Another process (a `tapes search`, a second watcher) is updating it right now and
        // takes these sessions along, or the next command does: nothing for the user to do.
        Err(e @ SearchError::Busy(_)) => {
            tracing::debug!(error = %e, "search index busy; the process updating it, or the next command, catches up")
        }
        Err(e) => {
            tracing::warn!(error = %e, "search index not updated; `tapes search` will catch up")
        }
    }
}

/// What [`after_ingest`] left for the end of a command ([`defer_updates`]): the generation
/// before the first commit, how many commits moved sessions since, and which sessions.
struct Deferred {
    from: Option<Generation>,
    commits: u64,
    changed: Vec<SessionId>,
}

static DEFERRED: std::sync::Mutex<Option<Deferred>> = std::sync::Mutex::new(None);

/// Makes [`after_ingest`] only note what changed in this process from now on: each batch's
/// update would rewrite the index's state. The caller promises a [`catch_up`] when it has
/// written everything (`tapes import` does, after its last batch), which then indexes just the
/// noted sessions when no other writer came in between (else it compares every session).
pub fn defer_updates() {
    let mut deferred = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
    deferred.get_or_insert(Deferred {
        from: None,
        commits: 0,
        changed: Vec::new(),
    });
}

/// The store's generation before a write, when an index exists to be kept current by
/// [`after_ingest`] (one ref read; `None` without an index).
pub fn generation_before_write(store: &Store) -> Option<Generation> {
    if !index_dir(store).join("meta.json").exists() {
        return None;
    }
    store.generation().ok()
}

/// Whether the index of `store` exists and is current with the store's generation: two small
/// file reads and one ref read, without opening the index.
pub fn is_current(store: &Store) -> Result<bool, SearchError> {
    match state::peek(&index_dir(store), STATE_PREFIX) {
        Some((INDEX_VERSION, Some(recorded))) => Ok(recorded == store.generation()?),
        _ => Ok(false),
    }
}

/// Brings the index of `store` up to date after a command wrote sessions (import, fetch,
/// bundle import), creating it if there is none, so the next search starts at once. Returns
/// what the sync did; `progress` sees the indexing.
pub fn catch_up(
    store: &Store,
    progress: &mut dyn FnMut(SyncProgress),
) -> Result<SyncReport, SearchError> {
    let deferred = DEFERRED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if is_current(store)? {
        tracing::debug!("search index catch-up: current with the store (one read)");
        return Ok(SyncReport::default());
    }
    let mut index = SearchIndex::open(&index_dir(store))?;
    // This process's own commits were the only ones since the index was current: index the
    // sessions they changed and advance, without reading every session ref.
    if let Some(Deferred {
        from: Some(from),
        commits,
        mut changed,
    }) = deferred
    {
        let now = store.generation()?;
        let own = now.epoch == from.epoch && now.count == from.count.wrapping_add(commits);
        if own && index.generation() == Some(from) {
            changed.sort();
            changed.dedup();
            tracing::debug!(
                sessions = changed.len(),
                commits,
                "search index catch-up: only this command's writes"
            );
            return index.sync_inner(
                store,
                Some(&changed),
                Stamp::Advance { from, to: now },
                progress,
            );
        }
    }
    index.sync_with_progress(store, None, progress)
}

/// A snippet on one line, with the byte ranges of the matched words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snippet {
    pub text: String,
    pub highlights: Vec<Range<usize>>,
}

impl Snippet {
    /// Replaces newlines and tabs with spaces (byte lengths stay the same, so ranges hold).
    fn one_line(fragment: &str, highlights: &[Range<usize>]) -> Snippet {
        let text: String = fragment
            .chars()
            .map(|c| {
                if c == '\n' || c == '\r' || c == '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        Snippet {
            text,
            highlights: highlights.to_vec(),
        }
    }

    /// The snippet with every match wrapped in `open` … `close` (e.g. ANSI bold).
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::new();
        let mut at = 0;
        for r in &self.highlights {
            if r.start < at || r.end > self.text.len() {
                continue;
            }
            let (Some(before), Some(word)) = (self.text.get(at..r.start), self.text.get(r.clone()))
            else {
                continue;
            };
            out.push_str(before);
            out.push_str(open);
            out.push_str(word);
            out.push_str(close);
            at = r.end;
        }
        out.push_str(self.text.get(at..).unwrap_or(""));
        out
    }
}

/// How results are ordered (always best first: highest score, newest, most expensive, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Relevance,
    Date,
    Cost,
    Duration,
    Tokens,
}

impl Sort {
    pub fn parse(s: &str) -> Result<Sort, String> {
        Ok(match s {
            "relevance" | "score" => Sort::Relevance,
            "date" => Sort::Date,
            "cost" => Sort::Cost,
            "duration" => Sort::Duration,
            "tokens" => Sort::Tokens,
            other => {
                return Err(format!(
                    "`{other}` is not a sort order; use date, cost, duration, tokens or relevance"
                ))
            }
        })
    }
}

/// A search: text (may be empty) and filters.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: String,
    pub project: Option<String>,
    /// Matches a session that used this model, compared normalized (`claude-sonnet` matches
    /// `claude-sonnet-4-5-20250929`).
    pub model: Option<String>,
    /// Sessions started at or after (Unix ms).
    pub from_ms: Option<i64>,
    /// Sessions started before (Unix ms).
    pub to_ms: Option<i64>,
    pub status: Option<Status>,
    pub min_cost: Option<f64>,
    pub max_cost: Option<f64>,
    /// `None`: relevance with text, date without.
    pub sort: Option<Sort>,
    pub limit: Option<usize>,
    /// Find a snippet for each result (reads the best matching message of each).
    pub snippets: bool,
    /// Only these sessions (e.g. the ones shared with me, `tapes search --shared`).
    pub sessions: Option<std::sync::Arc<HashSet<SessionId>>>,
}

impl SearchQuery {
    fn has_filters(&self) -> bool {
        self.project.is_some()
            || self.model.is_some()
            || self.from_ms.is_some()
            || self.to_ms.is_some()
            || self.status.is_some()
            || self.min_cost.is_some()
            || self.max_cost.is_some()
            || self.sessions.is_some()
    }

    fn includes(&self, id: &SessionId) -> bool {
        self.sessions.as_ref().is_none_or(|s| s.contains(id))
    }

    fn accepts(&self, f: &SessionFacts, cost: f64) -> bool {
        if self.project.as_ref().is_some_and(|p| &f.project != p) {
            return false;
        }
        if let Some(wanted) = &self.model {
            if !model_matches(wanted, &f.model) && !f.usage.keys().any(|m| model_matches(wanted, m))
            {
                return false;
            }
        }
        let started = f.started();
        if self.from_ms.is_some_and(|from| started < from) {
            return false;
        }
        if self.to_ms.is_some_and(|to| started >= to) {
            return false;
        }
        if self.status.is_some_and(|st| st != f.status) {
            return false;
        }
        if self.min_cost.is_some_and(|min| cost < min) {
            return false;
        }
        if self.max_cost.is_some_and(|max| cost > max) {
            return false;
        }
        true
    }
}

/// `wanted` names `model` or its family: equal after normalizing, or a prefix ending at `-`.
pub fn model_matches(wanted: &str, model: &str) -> bool {
    let wanted = pricing::normalize(wanted);
    let model = pricing::normalize(model);
    !wanted.is_empty()
        && (model == wanted
            || (model.starts_with(&wanted) && model.as_bytes().get(wanted.len()) == Some(&b'-')))
}

/// One session in the results.
#[derive(Debug, Clone)]
pub struct Hit {
    pub id: SessionId,
    pub record: SessionRecord,
    pub status: Status,
    /// USD at the price table in use.
    pub cost: f64,
    pub unpriced: Vec<String>,
    pub tokens: u64,
    /// Every model that reported usage in the session.
    pub models: Vec<String>,
    /// Best node score (text searches only).
    pub score: Option<f32>,
    /// Matching messages in the session.
    pub matches: u32,
    pub snippet: Option<Snippet>,
    best: Option<DocAddress>,
}

/// Per session ordinal: best score, its document, and how many documents matched.
struct BySession {
    sessions: usize,
    allowed: Option<std::sync::Arc<Vec<bool>>>,
    /// Compute scores (relevance order, the snippet's message); without, every match counts
    /// the same and tantivy skips the scoring.
    scoring: bool,
}

#[derive(Clone, Copy)]
struct Best {
    score: Score,
    doc: DocAddress,
    matches: u32,
}

const NO_MATCH: Best = Best {
    score: f32::NEG_INFINITY,
    doc: DocAddress {
        segment_ord: 0,
        doc_id: 0,
    },
    matches: 0,
};

struct BySessionSegment {
    segment: u32,
    ordinals: Column<u64>,
    allowed: Option<std::sync::Arc<Vec<bool>>>,
    best: Vec<Best>,
}

impl Collector for BySession {
    type Fruit = Vec<Best>;
    type Child = BySessionSegment;

    fn for_segment(&self, segment: u32, reader: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(BySessionSegment {
            segment,
            ordinals: reader.fast_fields().u64("session_ord")?,
            allowed: self.allowed.clone(),
            best: vec![NO_MATCH; self.sessions],
        })
    }

    fn requires_scoring(&self) -> bool {
        self.scoring
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Best>>) -> tantivy::Result<Self::Fruit> {
        let mut out = vec![NO_MATCH; self.sessions];
        for fruit in fruits {
            for (o, b) in out.iter_mut().zip(fruit) {
                if b.matches == 0 {
                    continue;
                }
                o.matches += b.matches;
                if b.score > o.score {
                    o.score = b.score;
                    o.doc = b.doc;
                }
            }
        }
        Ok(out)
    }
}

impl SegmentCollector for BySessionSegment {
    type Fruit = Vec<Best>;

    fn collect(&mut self, doc: u32, score: Score) {
        let Some(ordinal) = self.ordinals.first(doc) else {
            return;
        };
        let ordinal = ordinal as usize;
        if let Some(allowed) = &self.allowed {
            if !allowed.get(ordinal).copied().unwrap_or(false) {
                return;
            }
        }
        // Documents of a session dropped since the state was read have no slot: skip them.
        let Some(b) = self.best.get_mut(ordinal) else {
            return;
        };
        b.matches += 1;
        if score > b.score {
            b.score = score;
            b.doc = DocAddress::new(self.segment, doc);
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.best
    }
}
