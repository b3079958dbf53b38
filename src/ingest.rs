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
use crate::session::{session_ref_key, SessionRecord, SessionSource, SessionSummary};
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
        self.sessions.iter().filter(|s| s.outcome == outcome).count()
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

/// Chains a session's messages into nodes, root first, each with its encoded object (the body
/// is encoded and hashed once; the id of each object is the next node's parent).
pub fn build_chain(session: &ParsedSession) -> Vec<(Node, StoredObject)> {
    let mut parent: Option<NodeId> = None;
    let mut chain = Vec::with_capacity(session.messages.len());
    for message in &session.messages {
        let body = NodeBody {
            parent,
            role: message.role,
            model: message.model.clone(),
            blocks: message.blocks.clone(),
        };
        let node = Node { body, meta: message.meta.clone() };
        let object = StoredObject::encode(&node);
        parent = Some(object.id);
        chain.push((node, object));
    }
    chain
}

/// Writes `incoming` as one atomic batch. A concurrent writer that moves one of the same refs
/// first makes the batch retry from a fresh read (the CAS loser re-plans; nothing is lost).
pub fn ingest(store: &Store, incoming: &[Incoming], now_ms: i64) -> Result<IngestReport, StoreError> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let plan = plan(store, incoming, now_ms)?;
        match store.commit(&plan.objects, &plan.refs) {
            Ok(new_nodes) => return Ok(IngestReport { new_nodes, ..plan.report }),
            Err(StoreError::Storage(StorageError::Conflict { .. })) if attempt < ATTEMPTS => continue,
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
    for item in incoming {
        let session = &item.session;
        let id = SessionId::derive(session.source_kind, &session.source_id);
        let chain = build_chain(session);
        let Some(head) = chain.last().map(|(_, object)| object.id) else {
            report.sessions.push(outcome(id, Outcome::Empty, session));
            continue;
        };
        let existing_raw = store.session_raw(&id)?;
        let existing = match &existing_raw {
            Some(raw) => Some(
                SessionRecord::decode(raw).map_err(|source| StoreError::BadRecord { id: id.to_hex(), source })?,
            ),
            None => None,
        };
        if existing.as_ref().is_some_and(|r| r.head == head) {
            report.sessions.push(outcome(id, Outcome::Unchanged, session));
            continue;
        }
        let summary = SessionSummary::of_chain(chain.iter().map(|(node, _)| node));
        for (_, object) in chain {
            if seen.insert(object.id) {
                report.bytes += object.bytes.len();
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
            title: session.title.clone().or_else(|| existing.as_ref().and_then(|r| r.title.clone())),
            parent_session: session
                .parent_source_id
                .as_ref()
                .map(|p| SessionId::derive(session.source_kind, p)),
            summary,
            created_ms: existing.as_ref().map_or(now_ms, |r| r.created_ms),
            updated_ms: now_ms,
        };
        let kind = if existing.is_some() { Outcome::Updated } else { Outcome::Created };
        refs.push(RefUpdate { key: session_ref_key(&id), expected: existing_raw, new: Some(record.encode()) });
        report.sessions.push(outcome(id, kind, session));
    }
    Ok(Plan { objects, refs, report })
}

fn outcome(id: SessionId, outcome: Outcome, session: &ParsedSession) -> SessionOutcome {
    SessionOutcome { id, outcome, messages: session.messages.len(), source_id: session.source_id.clone() }
}
