//! fsck: verify every object and every ref in a store.
//!
//! Objects: the bytes must decode strictly and hash to the key they are stored under, and the
//! parent they name must be present. Refs: the record must decode, its head must be present,
//! and its cached summary must match the chain. Every problem is reported; fsck never repairs.

use std::fmt;

use tapes_protocol::{NodeId, StoredObject};

use std::collections::HashSet;

use crate::session::{SessionRecord, SESSION_REF_PREFIX};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The object's bytes do not decode or do not hash to its id.
    BadObject { id: NodeId, detail: String },
    /// The object names a parent the store does not have.
    MissingParent { id: NodeId, parent: NodeId },
    /// A ref record that does not decode.
    BadRef { key: String, detail: String },
    /// A session whose head (or an ancestor) is missing or damaged.
    BrokenSession { key: String, detail: String },
    /// A session whose cached message count differs from its chain.
    StaleSummary { key: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadObject { id, detail } => write!(f, "object {id}: {detail}"),
            Problem::MissingParent { id, parent } => {
                write!(f, "object {id}: parent {parent} is missing")
            }
            Problem::BadRef { key, detail } => write!(f, "ref {key}: {detail}"),
            Problem::BrokenSession { key, detail } => write!(f, "ref {key}: {detail}"),
            Problem::StaleSummary { key } => write!(
                f,
                "ref {key}: cached message count does not match its chain"
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub objects: usize,
    pub refs: usize,
    /// Share records checked (their signatures, see [`fsck`]).
    pub shares: usize,
    pub problems: Vec<Problem>,
    /// Objects no session reaches whose parent is missing: what a crash mid-import leaves.
    /// Harmless; the next import of the same transcript completes them.
    pub leftovers: usize,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the whole store. `progress` is called with the number of objects checked so far.
///
/// An object whose parent is missing is damage only if a session reaches it; otherwise it is a
/// leftover of an interrupted import (objects are written before refs, SPEC.md §6) and is
/// counted in [`FsckReport::leftovers`], as git calls such objects dangling.
pub fn fsck(store: &Store, mut progress: impl FnMut(usize)) -> Result<FsckReport, StoreError> {
    let mut report = FsckReport::default();
    let storage = store.storage();
    let mut orphans: Vec<(NodeId, NodeId)> = Vec::new();
    for entry in storage.objects() {
        let (id, bytes) = entry?;
        report.objects += 1;
        if report.objects % 4096 == 0 {
            progress(report.objects);
        }
        match StoredObject::verify(&id, &bytes) {
            Err(e) => report.problems.push(Problem::BadObject {
                id,
                detail: e.to_string(),
            }),
            Ok(node) => {
                if let Some(parent) = node.body.parent {
                    if !storage.contains_object(&parent)? {
                        orphans.push((id, parent));
                    }
                }
            }
        }
    }
    progress(report.objects);
    let mut reachable: HashSet<NodeId> = HashSet::new();
    for entry in storage.refs(SESSION_REF_PREFIX) {
        let (key, value) = entry?;
        report.refs += 1;
        let key = String::from_utf8_lossy(&key).into_owned();
        let record = match SessionRecord::decode(&value) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(Problem::BadRef {
                    key,
                    detail: e.to_string(),
                });
                continue;
            }
        };
        mark_reachable(store, &record.head, &mut reachable);
        match store.chain(&record.head) {
            Err(e) => report.problems.push(Problem::BrokenSession {
                key,
                detail: e.to_string(),
            }),
            // The summary's timestamps and usage come from the session's own transcript, while
            // a node shared with another session keeps the metadata of whoever stored it first;
            // only the count is a property of the chain itself.
            Ok(chain) => {
                if chain.len() as u64 != record.summary.messages {
                    report.problems.push(Problem::StaleSummary { key });
                }
            }
        }
    }
    // Share records decide who may fetch what; the sync paths trust the signatures checked
    // when the records were stored (`SignedShare::decode_stored`), so this is where a
    // damaged or planted one is found.
    for entry in storage.refs(crate::share::SHARE_REF_PREFIX) {
        let (key, value) = entry?;
        report.shares += 1;
        if let Err(why) = crate::share::SignedShare::decode(&value) {
            report.problems.push(Problem::BadRef {
                key: String::from_utf8_lossy(&key).into_owned(),
                detail: format!("share record: {why}"),
            });
        }
    }
    for (id, parent) in orphans {
        if reachable.contains(&id) {
            report.problems.push(Problem::MissingParent { id, parent });
        } else {
            report.leftovers += 1;
        }
    }
    Ok(report)
}

/// Adds every node reachable from `head` (as far as the chain is present) to `seen`.
fn mark_reachable(store: &Store, head: &NodeId, seen: &mut HashSet<NodeId>) {
    let mut next = Some(*head);
    while let Some(id) = next {
        if !seen.insert(id) {
            return;
        }
        next = match store.storage().get_object(&id) {
            Ok(Some(bytes)) => StoredObject::parent_of(&bytes).ok().flatten(),
            _ => None,
        };
    }
}
