//! fsck: verify every object and every ref in a store.
//!
//! Objects: the bytes must decode strictly and hash to the key they are stored under, and the
//! parent they name must be present. Refs: the record must decode, its head must be present,
//! and its cached summary must match the chain. Every problem is reported; fsck never repairs.

use std::fmt;

use tapes_protocol::{NodeId, StoredObject};

use crate::session::{SessionRecord, SessionSummary, SESSION_REF_PREFIX};
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
    /// A session whose cached summary differs from its chain.
    StaleSummary { key: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadObject { id, detail } => write!(f, "object {id}: {detail}"),
            Problem::MissingParent { id, parent } => write!(f, "object {id}: parent {parent} is missing"),
            Problem::BadRef { key, detail } => write!(f, "ref {key}: {detail}"),
            Problem::BrokenSession { key, detail } => write!(f, "ref {key}: {detail}"),
            Problem::StaleSummary { key } => write!(f, "ref {key}: cached summary does not match its chain"),
        }
    }
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub objects: usize,
    pub refs: usize,
    pub problems: Vec<Problem>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the whole store. `progress` is called with the number of objects checked so far.
pub fn fsck(store: &Store, mut progress: impl FnMut(usize)) -> Result<FsckReport, StoreError> {
    let mut report = FsckReport::default();
    let storage = store.storage();
    for entry in storage.objects() {
        let (id, bytes) = entry?;
        report.objects += 1;
        if report.objects % 4096 == 0 {
            progress(report.objects);
        }
        match StoredObject::verify(&id, &bytes) {
            Err(e) => report.problems.push(Problem::BadObject { id, detail: e.to_string() }),
            Ok(node) => {
                if let Some(parent) = node.body.parent {
                    if !storage.contains_object(&parent)? {
                        report.problems.push(Problem::MissingParent { id, parent });
                    }
                }
            }
        }
    }
    progress(report.objects);
    for entry in storage.refs(SESSION_REF_PREFIX) {
        let (key, value) = entry?;
        report.refs += 1;
        let key = String::from_utf8_lossy(&key).into_owned();
        let record = match SessionRecord::decode(&value) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(Problem::BadRef { key, detail: e.to_string() });
                continue;
            }
        };
        match store.chain(&record.head) {
            Err(e) => report.problems.push(Problem::BrokenSession { key, detail: e.to_string() }),
            Ok(chain) => {
                if SessionSummary::of_chain(chain.iter().map(|(_, n)| n)) != record.summary {
                    report.problems.push(Problem::StaleSummary { key });
                }
            }
        }
    }
    Ok(report)
}
