//! Ingest: turning parsed sessions into nodes, objects and session refs, in atomic batches.
//!
//! Every importer ends here. For each session the messages are chained (each node's parent is
//! the previous node), hashed, and compared with what the store has: an unchanged head adds
//! nothing, a grown transcript moves the ref forward (compare-and-swap on the record read), a
//! new source creates the ref. A batch is committed with [`Store::commit`], so either all of
//! its sessions land or none do.

use std::collections::{HashMap, HashSet};

use tapes_protocol::history::{relate, Relation};
use tapes_protocol::{ContentBlock, Node, NodeBody, NodeId, SessionId, StoredObject};

use crate::import::ParsedSession;
use crate::resume::mapping::Graft;
use crate::session::{
    session_ref_key, Lineage, SessionRecord, SessionSource, SessionSummary, Visibility,
};
use crate::store::backend::{RefUpdate, StorageError};
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
    /// An older copy: its history is a prefix of what the store holds. Nothing changed (a ref
    /// only moves forward; SPEC §3.4).
    Older,
    /// The copy diverged from the session its source names (or would have extended a session
    /// someone else owns): kept as a session of its own, branched at the divergence point.
    Branched,
    /// The same history was reached a second time in this run (a copy of the same file).
    Duplicate,
    /// The session was removed with `tapes rm` (its tombstone, SPEC §3.5): not brought back.
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOutcome {
    pub id: SessionId,
    pub outcome: Outcome,
    pub messages: usize,
    pub source_id: String,
    /// The file the copy came from.
    pub path: String,
    /// For [`Outcome::Branched`]: the session it diverged from and the messages they share.
    pub branched_from: Option<(SessionId, u64)>,
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

    /// The sessions this ingest created or moved (what derived data must catch up on).
    pub fn changed(&self) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|s| {
                matches!(
                    s.outcome,
                    Outcome::Created | Outcome::Updated | Outcome::Branched
                )
            })
            .map(|s| s.id)
            .collect()
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
        let Plan {
            objects,
            refs,
            report,
        } = plan(store, incoming, now_ms)?;
        let committed = std::time::Instant::now();
        let generation = crate::views::search::generation_before_write(store);
        let result = store.commit(&objects, &refs);
        let object_count = objects.len();
        // The encoded nodes are on disk now: free them before the search index reads them
        // back (memory stays within a small multiple of the largest message).
        drop(objects);
        match result {
            Ok(written) => {
                let new_nodes = written.objects;
                tracing::debug!(
                    sessions = incoming.len(),
                    objects = object_count,
                    new_nodes,
                    plan_ms = committed.duration_since(planned).as_millis() as u64,
                    commit_ms = committed.elapsed().as_millis() as u64,
                    "ingested a batch"
                );
                let report = IngestReport {
                    new_nodes,
                    bytes: written.bytes,
                    ..report
                };
                // The search index is a derived cache: updated after the store is durable,
                // never able to fail the ingest (SPEC.md, "Search index and analytics").
                crate::views::search::after_ingest(store, &report.changed(), generation);
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

/// A session a copy is compared with: one already in the store, or one planned earlier in the
/// same batch (the same transcript reached twice in one run).
struct Held {
    /// The ref's bytes as read from the store: the compare-and-swap's expectation.
    raw: Option<Vec<u8>>,
    record: SessionRecord,
    /// The chain's ids, root first, when known without reading the store.
    ids: Option<Vec<NodeId>>,
    /// Set when planned in this batch: its place in `refs`.
    planned: Option<usize>,
}

/// Sessions planned in this batch, so a second copy compares with the first instead of
/// racing it (two updates of one ref in one batch would fail the batch's compare-and-swap).
#[derive(Default)]
struct Planned {
    by_id: HashMap<SessionId, PlannedRef>,
}

struct PlannedRef {
    /// Its place in `refs`.
    at: usize,
    ids: Vec<NodeId>,
    record: SessionRecord,
    /// The ref as read from the store before this batch.
    raw: Option<Vec<u8>>,
}

fn held(store: &Store, planned: &Planned, id: &SessionId) -> Result<Option<Held>, StoreError> {
    if let Some(p) = planned.by_id.get(id) {
        return Ok(Some(Held {
            raw: p.raw.clone(),
            record: p.record.clone(),
            ids: Some(p.ids.clone()),
            planned: Some(p.at),
        }));
    }
    let Some(raw) = store.session_raw(id)? else {
        return Ok(None);
    };
    let record = SessionRecord::decode(&raw).map_err(|source| StoreError::BadRecord {
        id: id.to_hex(),
        source,
    })?;
    Ok(Some(Held {
        raw: Some(raw),
        record,
        ids: None,
        planned: None,
    }))
}

/// How `copy` (ids root first) relates to `held`. The common cases (unchanged, grown) are
/// decided from the copy alone; only an older or diverged copy reads the held chain.
fn relation(store: &Store, held: &Held, copy: &[NodeId]) -> Result<Relation, StoreError> {
    if let Some(ids) = &held.ids {
        return Ok(relate(ids, copy));
    }
    if let Some(at) = copy.iter().position(|id| *id == held.record.head) {
        return Ok(if at + 1 == copy.len() {
            Relation::Same
        } else {
            Relation::Extends {
                new: copy.len() - at - 1,
            }
        });
    }
    Ok(relate(&store.chain_ids(&held.record.head)?, copy))
}

/// True when the held session ends at position `at` of the copy with a message that the
/// copy's message at `at` completes: same role and model, the held blocks a prefix of the
/// copy's (the last held text block may itself have grown). SPEC §3.4.
fn tail_grew(
    store: &Store,
    held: &Held,
    copy: &[NodeId],
    session: &ParsedSession,
    at: usize,
) -> Result<bool, StoreError> {
    if held.planned.is_some() {
        return Ok(false);
    }
    let Some(grown) = session.messages.get(at) else {
        return Ok(false);
    };
    let last = store.node(&held.record.head)?;
    let parent_here = at.checked_sub(1).map(|i| copy[i]);
    if last.body.parent != parent_here
        || last.body.role != grown.role
        || last.body.model != grown.model
        || last.body.blocks.len() > grown.blocks.len()
        || last.body.blocks.is_empty()
    {
        return Ok(false);
    }
    let n = last.body.blocks.len();
    let same_before = last.body.blocks[..n - 1] == grown.blocks[..n - 1];
    let last_grew = match (&last.body.blocks[n - 1], &grown.blocks[n - 1]) {
        (ContentBlock::Text { text: a }, ContentBlock::Text { text: b }) => {
            b.starts_with(a.as_str())
        }
        (a, b) => a == b,
    };
    Ok(same_before && last_grew)
}

/// The id of the session that keeps a copy which diverged from session `from` of its source.
/// It is derived from the source id and the copy's first node after the shared prefix, so
/// importing the same diverged copy again (or a grown one) finds the same branch, and a second,
/// different divergence at the same point gets a branch of its own.
fn branch_id(kind: &str, source_id: &str, first_own: &NodeId) -> SessionId {
    SessionId::derive(kind, &format!("{source_id}@{}", first_own.to_hex()))
}

fn plan(store: &Store, incoming: &[Incoming], now_ms: i64) -> Result<Plan, StoreError> {
    let mut objects = Vec::new();
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut refs: Vec<RefUpdate> = Vec::new();
    let mut report = IngestReport::default();
    let mut planned = Planned::default();
    let owner = store.local_owner()?;
    // Hashing and encoding are the CPU-bound part; spread them over the cores, keep the store
    // reads and the bookkeeping below sequential and in input order.
    let mut chains = build_chains_parallel(incoming);
    // A file tapes wrote for an agent stands for the session it was written from: its new
    // messages are grafted onto that session (SPEC §17.3).
    let mut grafts: Vec<Option<Graft>> = Vec::with_capacity(incoming.len());
    for (item, chain) in incoming.iter().zip(chains.iter_mut()) {
        let file_ids: Vec<NodeId> = chain.iter().map(|o| o.id).collect();
        let graft = crate::resume::mapping::graft(store, &item.session, &file_ids)?;
        if let Some(g) = &graft {
            *chain = build_chain(&g.session);
        }
        grafts.push(graft);
    }
    for ((item, chain), graft) in incoming.iter().zip(chains).zip(&grafts) {
        let session = graft.as_ref().map_or(&item.session, |g| &g.session);
        let source_id = match graft {
            Some(g) => g.target,
            None => SessionId::derive(session.source_kind, &session.source_id),
        };
        if crate::session::tombstone::is_removed(store, &source_id)? {
            let removed = outcome(source_id, Outcome::Removed, session, item);
            report.sessions.push(removed);
            continue;
        }
        let Some(head) = chain.last().map(|object| object.id) else {
            report
                .sessions
                .push(outcome(source_id, Outcome::Empty, session, item));
            continue;
        };
        let ids: Vec<NodeId> = chain.iter().map(|o| o.id).collect();
        // Walk from the session the source names to the one this copy belongs to: the same
        // session when the copy is the same, older or longer history; else the branch kept for
        // it (each step shares a strictly longer prefix with the copy, so this ends).
        let mut id = source_id;
        let mut branched_from: Option<(SessionId, u64)> = None;
        let mut existing: Option<Held> = None;
        let mut settled: Option<Outcome> = None;
        for _ in 0..=ids.len() {
            let Some(current) = held(store, &planned, &id)? else {
                break;
            };
            let relation = relation(store, &current, &ids)?;
            let theirs = !crate::session::lineage::is_mine(&current.record, owner.as_ref());
            let common = match relation {
                Relation::Same if current.planned.is_some() => {
                    settled = Some(Outcome::Duplicate);
                    break;
                }
                Relation::Same => {
                    settled = Some(Outcome::Unchanged);
                    break;
                }
                Relation::Older { .. } => {
                    settled = Some(Outcome::Older);
                    break;
                }
                // A copy never writes into a session someone else owns: a longer copy of a
                // teammate's session is kept as this identity's own branch of it.
                Relation::Extends { new } if theirs => ids.len() - new,
                Relation::Extends { .. } => {
                    existing = Some(current);
                    break;
                }
                // The copy's last shared message is the held one, grown: a reply still being
                // written when the held copy was read (an agent writes a reply's blocks one
                // line at a time, and the importer joins them). Nothing held is lost.
                Relation::Diverged { common }
                    if !theirs && tail_grew(store, &current, &ids, session, common)? =>
                {
                    existing = Some(current);
                    break;
                }
                Relation::Diverged { common } => common,
            };
            branched_from = Some((id, common as u64));
            id = branch_id(session.source_kind, &session.source_id, &ids[common]);
        }
        if let Some(kind) = settled {
            report.sessions.push(outcome(id, kind, session, item));
            continue;
        }
        let grafted_here = graft.as_ref().filter(|g| g.target == id);
        let mut summary = SessionSummary::default();
        for m in &session.messages {
            summary.add(m.role, &m.model, &m.blocks, &m.meta);
        }
        for object in chain {
            if seen.insert(object.id) {
                objects.push(object);
            }
        }
        let lineage = match (&existing, branched_from) {
            (Some(current), _) => current.record.lineage,
            (None, Some((from, common))) => {
                let root = held(store, &planned, &from)?.map_or(from, |h| h.record.lineage.root);
                Lineage {
                    root,
                    parent: Some(from),
                    base_count: common,
                    base_digest: common.checked_sub(1).map(|i| ids[i as usize]),
                }
            }
            (None, None) => Lineage::original(id),
        };
        let prior = existing.as_ref().map(|h| &h.record);
        let record = SessionRecord {
            head,
            // A session grafted from an agent file keeps the source it had: the file is
            // where it was continued, not what it is (the mapping records the file).
            source: match (prior, grafted_here) {
                (Some(prior), Some(_)) => prior.source.clone(),
                _ => SessionSource {
                    kind: session.source_kind.to_string(),
                    id: session.source_id.clone(),
                    path: item.path.clone(),
                },
            },
            title: session
                .title
                .clone()
                .or_else(|| prior.and_then(|r| r.title.clone())),
            parent_session: session
                .parent_source_id
                .as_ref()
                .map(|p| SessionId::derive(session.source_kind, p)),
            summary,
            created_ms: prior.map_or(now_ms, |r| r.created_ms),
            updated_ms: now_ms,
            // What the user set on the session (sharing, tags, notes) survives a re-import;
            // a branch kept for a diverged copy starts private and is this identity's.
            owner: prior.map_or(owner, |r| r.owner),
            visibility: prior.map_or(Visibility::Private, |r| r.visibility),
            tags: prior.map(|r| r.tags.clone()).unwrap_or_default(),
            description: prior.and_then(|r| r.description.clone()),
            note: prior.and_then(|r| r.note.clone()),
            expires_ms: prior.and_then(|r| r.expires_ms),
            lineage,
        };
        let kind = match (&existing, branched_from) {
            (Some(_), _) => Outcome::Updated,
            (None, Some(_)) => Outcome::Branched,
            (None, None) => Outcome::Created,
        };
        let mut result = outcome(id, kind, session, item);
        if existing.is_none() {
            result.branched_from = branched_from;
        }
        let raw = existing.as_ref().and_then(|h| h.raw.clone());
        let at = match existing.as_ref().and_then(|h| h.planned) {
            // A longer copy of a session planned earlier in this batch: still one update of
            // the ref, now to the longer history.
            Some(at) => {
                refs[at].new = Some(record.encode());
                at
            }
            None => {
                refs.push(RefUpdate {
                    key: session_ref_key(&id),
                    expected: raw.clone(),
                    new: Some(record.encode()),
                });
                refs.len() - 1
            }
        };
        if let Some(g) = grafted_here {
            refs.push(crate::resume::mapping::update(
                &g.synced(head),
                Some(g.raw.clone()),
            ));
        }
        planned.by_id.insert(
            id,
            PlannedRef {
                at,
                ids,
                record,
                raw,
            },
        );
        report.sessions.push(result);
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

fn outcome(
    id: SessionId,
    outcome: Outcome,
    session: &ParsedSession,
    item: &Incoming,
) -> SessionOutcome {
    SessionOutcome {
        id,
        outcome,
        messages: session.messages.len(),
        source_id: session.source_id.clone(),
        path: item.path.clone(),
        branched_from: None,
    }
}
