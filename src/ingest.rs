//! Ingest: turning parsed sessions into nodes, objects and session refs, in atomic batches.
//!
//! Every importer ends here. For each session the messages are chained (each node's parent is
//! the previous node), hashed, and compared with what the store has: an unchanged head adds
//! nothing, a grown transcript moves the ref forward (compare-and-swap on the record read), a
//! new source creates the ref. A batch is committed with [`Store::commit`], so either all of
//! its sessions land or none do.

use std::collections::HashSet;

use tapes_protocol::{Node, NodeBody, NodeId, SessionId, StoredObject};

use crate::import::ParsedSession;
use crate::session::{
    session_ref_key, Lineage, SessionRecord, SessionSource, SessionSummary, Visibility,
};
use crate::storage::{RefUpdate, StorageError};
use crate::store::{Store, StoreError};

/// What happened to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The session already existed and its head moved (a transcript that grew).
    Updated,
    Unchanged,
    /// The source session had no messages; nothing stored.
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOutcome {
    pub id: SessionId,
    pub outcome: Outcome,
    pub messages: usize,
    pub source_id: String,
}

/// Totals over an ingest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub sessions: Vec<SessionOutcome>,
    pub new_nodes: usize,
    pub bytes: usize,
}

impl IngestReport {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.outcome == outcome)
            .count()
    }

    pub fn merge(&mut self, other: IngestReport) {
        self.sessions.extend(other.sessions);
        self.new_nodes += other.new_nodes;
        self.bytes += other.bytes;
    }
}

/// A parsed session together with the file it came from.
pub struct Incoming {
    pub session: ParsedSession,
    pub path: String,
}

/// Chains a session's messages into stored objects, root first: each message is encoded and
/// hashed once, and its id is the next one's parent.
pub fn build_chain(session: &ParsedSession) -> Vec<StoredObject> {
    let mut parent: Option<NodeId> = None;
    let mut chain = Vec::with_capacity(session.messages.len());
    for m in &session.messages {
        let object =
            StoredObject::encode_parts(parent.as_ref(), m.role, &m.model, &m.blocks, &m.meta);
        parent = Some(object.id);
        chain.push(object);
    }
    chain
}

/// The nodes of a parsed session, as the store will hold them (for callers that want `Node`s).
pub fn build_nodes(session: &ParsedSession) -> Vec<Node> {
    let mut parent: Option<NodeId> = None;
    session
        .messages
        .iter()
        .map(|m| {
            let node = Node {
                body: NodeBody {
                    parent,
                    role: m.role,
                    model: m.model.clone(),
                    blocks: m.blocks.clone(),
                },
                meta: m.meta.clone(),
            };
            parent = Some(node.id());
            node
        })
        .collect()
}

/// Writes `incoming` as one atomic batch. A concurrent writer that moves one of the same refs
/// first makes the batch retry from a fresh read (the CAS loser re-plans; nothing is lost).
pub fn ingest(
    store: &Store,
    incoming: &[Incoming],
    now_ms: i64,
) -> Result<IngestReport, StoreError> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let planned = std::time::Instant::now();
        let plan = plan(store, incoming, now_ms)?;
        let committed = std::time::Instant::now();
        match store.commit(&plan.objects, &plan.refs) {
            Ok(written) => {
                let new_nodes = written.objects;
                tracing::debug!(
                    sessions = incoming.len(),
                    objects = plan.objects.len(),
                    new_nodes,
                    plan_ms = committed.duration_since(planned).as_millis() as u64,
                    commit_ms = committed.elapsed().as_millis() as u64,
                    "ingested a batch"
                );
                let report = IngestReport {
                    new_nodes,
                    bytes: written.bytes,
                    ..plan.report
                };
                // The search index is a derived cache: updated after the store is durable,
                // never able to fail the ingest (SPEC.md, "Search index and analytics").
                crate::search::after_ingest(store, &report);
                return Ok(report);
            }
            Err(StoreError::Storage(StorageError::Conflict { .. })) if attempt < ATTEMPTS => {
                continue
            }
            Err(e) => return Err(e),
        }
    }
}

struct Plan {
    objects: Vec<StoredObject>,
    refs: Vec<RefUpdate>,
    report: IngestReport,
}

fn plan(store: &Store, incoming: &[Incoming], now_ms: i64) -> Result<Plan, StoreError> {
    let mut objects = Vec::new();
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut refs = Vec::new();
    let mut report = IngestReport::default();
    let owner = store.local_owner()?;
    // Hashing and encoding are the CPU-bound part; spread them over the cores, keep the store
    // reads and the bookkeeping below sequential and in input order.
    let chains = build_chains_parallel(incoming);
    for (item, chain) in incoming.iter().zip(chains) {
        let session = &item.session;
        let id = SessionId::derive(session.source_kind, &session.source_id);
        let Some(head) = chain.last().map(|object| object.id) else {
            report.sessions.push(outcome(id, Outcome::Empty, session));
            continue;
        };
        let existing_raw = store.session_raw(&id)?;
        let existing = match &existing_raw {
            Some(raw) => {
                Some(
                    SessionRecord::decode(raw).map_err(|source| StoreError::BadRecord {
                        id: id.to_hex(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        if existing.as_ref().is_some_and(|r| r.head == head) {
            report
                .sessions
                .push(outcome(id, Outcome::Unchanged, session));
            continue;
        }
        let mut summary = SessionSummary::default();
        for m in &session.messages {
            summary.add(m.role, &m.model, &m.blocks, &m.meta);
        }
        for object in chain {
            if seen.insert(object.id) {
                objects.push(object);
            }
        }
        let record = SessionRecord {
            head,
            source: SessionSource {
                kind: session.source_kind.to_string(),
                id: session.source_id.clone(),
                path: item.path.clone(),
            },
            title: session
                .title
                .clone()
                .or_else(|| existing.as_ref().and_then(|r| r.title.clone())),
            parent_session: session
                .parent_source_id
                .as_ref()
                .map(|p| SessionId::derive(session.source_kind, p)),
            summary,
            created_ms: existing.as_ref().map_or(now_ms, |r| r.created_ms),
            updated_ms: now_ms,
            // What the user set on the session (sharing, tags, notes) survives a re-import.
            owner: existing.as_ref().map_or(owner, |r| r.owner),
            visibility: existing
                .as_ref()
                .map_or(Visibility::Private, |r| r.visibility),
            tags: existing
                .as_ref()
                .map(|r| r.tags.clone())
                .unwrap_or_default(),
            description: existing.as_ref().and_then(|r| r.description.clone()),
            note: existing.as_ref().and_then(|r| r.note.clone()),
            expires_ms: existing.as_ref().and_then(|r| r.expires_ms),
            lineage: existing
                .as_ref()
                .map_or(Lineage::original(id), |r| r.lineage),
        };
        let kind = if existing.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        };
        refs.push(RefUpdate {
            key: session_ref_key(&id),
            expected: existing_raw,
            new: Some(record.encode()),
        });
        report.sessions.push(outcome(id, kind, session));
    }
    Ok(Plan {
        objects,
        refs,
        report,
    })
}

fn build_chains_parallel(incoming: &[Incoming]) -> Vec<Vec<StoredObject>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || incoming.len() < 64 {
        return incoming.iter().map(|i| build_chain(&i.session)).collect();
    }
    let per_thread = incoming.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = incoming
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|i| build_chain(&i.session))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A panic in a worker is a bug in encoding; re-raise it rather than lose sessions.
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn outcome(id: SessionId, outcome: Outcome, session: &ParsedSession) -> SessionOutcome {
    SessionOutcome {
        id,
        outcome,
        messages: session.messages.len(),
        source_id: session.source_id.clone(),
    }
}
