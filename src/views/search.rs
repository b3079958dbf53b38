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
//! Beside the documents, every commit carries a *state* as its payload (atomically with the
//! documents): per session, the head that was indexed and facts derived from the chain that
//! listings need without walking it (status, usage per model, node count). [`SearchIndex::sync`]
//! compares those heads with the store's session refs and indexes only what moved: a session
//! whose old head is in its new chain gets just the new nodes; any other change re-indexes the
//! session; a session gone from the store is dropped. `ingest` calls it for the sessions it
//! wrote ([`after_ingest`]) when an index exists; `tapes search` and `tapes stats` call it for
//! every session first, which covers writers that do not (branch, fork, pull, bundles).

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
use crate::store::{Store, StoreError};

/// Bump when the schema, the state layout or a derived fact (status, SPEC §13) changes: an index
/// of another version is rebuilt. 3: status rules read what the transcript shows.
const INDEX_VERSION: u32 = 3;

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

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    /// The next unused ordinal.
    next_ordinal: u32,
    sessions: BTreeMap<SessionId, SessionFacts>,
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
}

pub struct SearchIndex {
    /// Ordinal → session.
    ordinals: Vec<Option<SessionId>>,
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    state: State,
    rebuilt: bool,
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it, or recreating it when it is damaged or was made
    /// by another version (it is derived data).
    pub fn open(dir: &Path) -> Result<SearchIndex, SearchError> {
        match Self::try_open(dir) {
            Ok(Some(index)) => Ok(index),
            Ok(None) => Self::create(dir, true),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "search index unreadable; rebuilding it");
                Self::create(dir, true)
            }
        }
    }

    /// Deletes and recreates the index.
    pub fn rebuild(dir: &Path) -> Result<SearchIndex, SearchError> {
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
        let metas = index.load_metas().map_err(err)?;
        let state = match metas.payload.as_deref().map(decode_state) {
            Some(Some(state)) => state,
            None => State {
                version: INDEX_VERSION,
                ..State::default()
            },
            Some(None) => return Ok(None),
        };
        if state.version != INDEX_VERSION {
            return Ok(None);
        }
        let reader = reader(&index).map_err(err)?;
        Ok(Some(SearchIndex {
            ordinals: ordinals(&state),
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
            ordinals: Vec::new(),
            dir: dir.to_path_buf(),
            index,
            reader,
            fields,
            state: State {
                version: INDEX_VERSION,
                ..State::default()
            },
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
        self.state.sessions.get(id)
    }

    /// Number of documents (one per indexed message).
    pub fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Brings the index up to date with the store: every session (`only == None`, which also
    /// drops sessions gone from the store) or just the given ones.
    pub fn sync(
        &mut self,
        store: &Store,
        only: Option<&[SessionId]>,
    ) -> Result<SyncReport, SearchError> {
        let mut report = SyncReport {
            rebuilt: std::mem::take(&mut self.rebuilt),
            ..SyncReport::default()
        };
        let records: Vec<(SessionId, SessionRecord)> = match only {
            None => store.sessions()?,
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
            .filter(|(id, r)| self.state.sessions.get(id).is_none_or(|f| f.head != r.head))
            .collect();
        let removed: Vec<SessionId> = match only {
            None => {
                let live: HashSet<&SessionId> = records.iter().map(|(id, _)| id).collect();
                self.state
                    .sessions
                    .keys()
                    .filter(|id| !live.contains(id))
                    .copied()
                    .collect()
            }
            Some(_) => Vec::new(),
        };
        if stale.is_empty() && removed.is_empty() && !report.rebuilt {
            return Ok(report);
        }
        let pending_nodes: u64 = stale.iter().map(|(_, r)| r.summary.messages).sum();
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
        for id in &removed {
            writer.delete_term(Term::from_field_text(f.session, &id.to_hex()));
            self.state.sessions.remove(id);
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
            // Only the nodes after the indexed head, when the session just grew.
            let from = match self.state.sessions.get(id) {
                Some(old) => match chain.iter().position(|(n, _)| *n == old.head) {
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
            let ordinal = match self.state.sessions.get(id) {
                Some(old) => old.ordinal,
                None => {
                    self.state.next_ordinal += 1;
                    self.state.next_ordinal - 1
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
            self.state.sessions.insert(*id, facts);
            report.sessions += 1;
        }
        let payload = encode_state(&self.state)
            .map_err(|e| self.err(tantivy::TantivyError::InternalError(e)))?;
        let mut prepared = writer.prepare_commit().map_err(|e| self.err(e))?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(|e| self.err(e))?;
        writer.wait_merging_threads().map_err(|e| self.err(e))?;
        self.reader.reload().map_err(|e| self.err(e))?;
        self.ordinals = ordinals(&self.state);
        Ok(report)
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
        struct Candidate<'a> {
            id: SessionId,
            facts: &'a SessionFacts,
            cost: f64,
            unpriced: Vec<String>,
            best: Option<Best>,
            priced: bool,
        }
        let mut price_cache = HashMap::new();
        let text = query.text.trim();
        let filtered = query.has_filters();
        let mut found: Vec<Candidate> = Vec::new();
        if text.is_empty() {
            for (id, facts) in &self.state.sessions {
                let (cost, unpriced) = facts.cost_cached(prices, &mut price_cache);
                if query.includes(id) && query.accepts(facts, cost) {
                    found.push(Candidate {
                        id: *id,
                        facts,
                        cost,
                        unpriced,
                        best: None,
                        priced: true,
                    });
                }
            }
        } else {
            // Filters first, as a dense mask over ordinals, so the collector skips the rest.
            let allowed = if filtered {
                let mut mask = vec![false; self.ordinals.len()];
                for (id, facts) in &self.state.sessions {
                    let (cost, _) = facts.cost_cached(prices, &mut price_cache);
                    if query.includes(id) && query.accepts(facts, cost) {
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
            let best = searcher
                .search(
                    &*parsed,
                    &BySession {
                        sessions: self.ordinals.len(),
                        allowed,
                    },
                )
                .map_err(|e| self.err(e))?;
            for (ordinal, b) in best.into_iter().enumerate() {
                if b.matches == 0 {
                    continue;
                }
                let Some(Some(id)) = self.ordinals.get(ordinal) else {
                    continue;
                };
                let Some(facts) = self.state.sessions.get(id) else {
                    continue;
                };
                // Pricing every match is wasted work unless results are ordered by cost.
                let (cost, unpriced, priced) = if query.sort == Some(Sort::Cost) {
                    let (c, u) = facts.cost_cached(prices, &mut price_cache);
                    (c, u, true)
                } else {
                    (0.0, Vec::new(), false)
                };
                found.push(Candidate {
                    id: *id,
                    facts,
                    cost,
                    unpriced,
                    best: Some(b),
                    priced,
                });
            }
        }
        let by = query.sort.unwrap_or(if text.is_empty() {
            Sort::Date
        } else {
            Sort::Relevance
        });
        let order = |a: &Candidate, b: &Candidate| {
            let (fa, fb) = (a.facts, b.facts);
            let primary = match by {
                Sort::Relevance => {
                    let score = |c: &Candidate| c.best.map_or(0.0, |b| b.score);
                    score(b).total_cmp(&score(a))
                }
                Sort::Date => std::cmp::Ordering::Equal,
                Sort::Cost => b.cost.total_cmp(&a.cost),
                Sort::Duration => fb.duration_ms().cmp(&fa.duration_ms()),
                Sort::Tokens => fb.tokens().cmp(&fa.tokens()),
            };
            primary
                .then(fb.started().cmp(&fa.started()))
                .then(a.id.cmp(&b.id))
        };
        // With a limit, only the best `limit` need ordering.
        if let Some(limit) = query.limit.filter(|l| *l < found.len()) {
            found.select_nth_unstable_by(limit, order);
            found.truncate(limit);
        }
        found.sort_by(order);
        for c in found.iter_mut().filter(|c| !c.priced) {
            (c.cost, c.unpriced) = c.facts.cost_cached(prices, &mut price_cache);
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
                status: c.facts.status,
                cost: c.cost,
                unpriced: c.unpriced,
                tokens: c.facts.tokens(),
                models: c
                    .facts
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

/// The state as a commit payload: `tapes-index-state:` + base64(postcard) — compact, because it
/// is rewritten with every commit and read on every open.
const STATE_PREFIX: &str = "tapes-index-state:";

fn encode_state(state: &State) -> Result<String, String> {
    use base64::Engine as _;
    let bytes = postcard::to_stdvec(state).map_err(|e| e.to_string())?;
    Ok(format!(
        "{STATE_PREFIX}{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    ))
}

fn decode_state(payload: &str) -> Option<State> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(payload.strip_prefix(STATE_PREFIX)?)
        .ok()?;
    postcard::from_bytes(&bytes).ok()
}

fn ordinals(state: &State) -> Vec<Option<SessionId>> {
    let mut out = vec![None; state.next_ordinal as usize];
    for (id, facts) in &state.sessions {
        if let Some(slot) = out.get_mut(facts.ordinal as usize) {
            *slot = Some(*id);
        }
    }
    out
}

fn reader(index: &Index) -> tantivy::Result<IndexReader> {
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
}

/// Updates an existing index for the sessions an ingest created or moved (`changed`). Never
/// fails the ingest: the index is a cache, and the next `tapes search` catches up whatever this
/// missed.
pub fn after_ingest(store: &Store, changed: &[SessionId]) {
    let dir = index_dir(store);
    if !dir.join("meta.json").exists() || changed.is_empty() {
        return;
    }
    let result = SearchIndex::open(&dir).and_then(|mut index| index.sync(store, Some(changed)));
    if let Err(e) = result {
        tracing::warn!(error = %e, "search index not updated; `tapes search` will catch up");
    }
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
        true
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
