//! fsck: verify every object and every ref in a store.
//!
//! Objects: the bytes must decode strictly and hash to the key they are stored under, and the
//! parent they name must be present. Refs: the record must decode, its head must be present,
//! and its cached summary must match the chain. Every problem is reported; [`fsck`] never
//! repairs. When the database itself is damaged, [`diagnose`] says what survives elsewhere
//! (packs, the journal) and [`repair`] salvages it into a fresh store (SPEC §6.2).

use std::fmt;

use tapes_protocol::{NodeId, StoredObject};

use std::collections::HashSet;

use tapes_protocol::SessionId;

use crate::session::{SessionRecord, SESSION_REF_PREFIX};
use crate::store::backend::salvage::Survivors;
use crate::store::backend::StorageError;
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

/// What can be said about a store whose database does not open (or is otherwise damaged):
/// which parts are damaged and which sessions survive elsewhere (SPEC §6.2).
#[derive(Debug)]
pub struct Diagnosis {
    /// Why the database does not open (`None` when it does).
    pub db_error: Option<String>,
    pub damaged_packs: Vec<(std::path::PathBuf, String)>,
    /// Offsets of journal entries that do not verify.
    pub journal_damage: Vec<u64>,
    /// Sessions whose record and every node survive.
    pub recoverable: Vec<SessionId>,
    /// Sessions whose record survives but not every node: the first missing node.
    pub incomplete: Vec<(SessionId, NodeId)>,
    /// Refs of any kind that survive.
    pub refs: usize,
}

fn session_of_key(key: &[u8]) -> Option<SessionId> {
    let hex = key.strip_prefix(SESSION_REF_PREFIX)?;
    std::str::from_utf8(hex).ok()?.parse().ok()
}

/// Reads what survives in the store directory `dir`, changing nothing.
pub fn diagnose(dir: &std::path::Path) -> Result<Diagnosis, StorageError> {
    Ok(diagnosis_of(&Survivors::read(dir)?))
}

fn diagnosis_of(survivors: &Survivors) -> Diagnosis {
    let mut diagnosis = Diagnosis {
        db_error: survivors.db_error.clone(),
        damaged_packs: survivors.damaged_packs.clone(),
        journal_damage: survivors.journal_damage.clone(),
        recoverable: Vec::new(),
        incomplete: Vec::new(),
        refs: survivors.refs.len(),
    };
    for (key, value) in &survivors.refs {
        let Some(id) = session_of_key(key) else {
            continue;
        };
        let Ok(record) = SessionRecord::decode(value) else {
            continue;
        };
        match survivors.complete_chain(&record.head) {
            Ok(_) => diagnosis.recoverable.push(id),
            Err(missing) => diagnosis.incomplete.push((id, missing)),
        }
    }
    diagnosis
}

/// What `tapes fsck --repair` did.
#[derive(Debug)]
pub struct RepairReport {
    pub diagnosis: Diagnosis,
    /// Objects that verified and were written into the new store.
    pub objects: usize,
    /// Objects found that did not verify (left behind).
    pub bad_objects: usize,
    /// Refs written into the new store.
    pub refs: usize,
    /// Where the damaged store was moved (kept, never deleted).
    pub kept_at: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {what} {path}: {source}; the damaged store is unchanged")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Salvages everything readable in the store at `dir` into a fresh store, which then takes
/// its place; the damaged one is kept beside it as `<dir>.damaged-<time>`. Sessions whose
/// chain is not complete in what survives are left out (listed in the report's diagnosis),
/// never restored half. `progress` gets objects copied so far.
pub fn repair(
    dir: &std::path::Path,
    now_ms: i64,
    mut progress: impl FnMut(usize),
) -> Result<RepairReport, RepairError> {
    let survivors = Survivors::read(dir)?;
    let diagnosis = diagnosis_of(&survivors);
    let stamp = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms)
        .map(|t| t.format("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|| now_ms.to_string());
    let sibling = |suffix: &str| {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{suffix}-{stamp}"));
        dir.with_file_name(name)
    };
    let fresh = sibling("repair");
    let kept_at = sibling("damaged");
    let io = |what, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| RepairError::Io { what, path, source }
    };
    std::fs::create_dir_all(&fresh).map_err(io("create", &fresh))?;
    let store = Store::open(&fresh)?;
    let storage = store.storage();
    let mut batch: Vec<StoredObject> = Vec::new();
    let mut batch_bytes = 0;
    let mut objects = 0;
    let bad_objects = survivors.for_each_object(|object| {
        batch_bytes += object.bytes.len();
        batch.push(object);
        if batch_bytes >= 8 << 20 {
            objects += storage.put_objects(&batch)?.objects;
            progress(objects);
            batch.clear();
            batch_bytes = 0;
        }
        Ok(())
    })?;
    objects += storage.put_objects(&batch)?.objects;
    progress(objects);
    storage.flush()?;
    drop(batch);
    let lost: HashSet<SessionId> = diagnosis.incomplete.iter().map(|(id, _)| *id).collect();
    let mut updates = Vec::new();
    for (key, value) in &survivors.refs {
        if session_of_key(key).is_some_and(|id| lost.contains(&id)) {
            continue;
        }
        updates.push(crate::store::backend::RefUpdate {
            key: key.clone(),
            expected: None,
            new: Some(value.clone()),
        });
    }
    for chunk in updates.chunks(4096) {
        storage.update_refs(chunk)?;
    }
    storage.flush()?;
    let refs = updates.len();
    drop(store);
    drop(survivors);
    std::fs::rename(dir, &kept_at).map_err(io("move the damaged store to", &kept_at))?;
    if let Err(source) = std::fs::rename(&fresh, dir) {
        // Put the damaged store back rather than leave no store at all.
        let _ = std::fs::rename(&kept_at, dir);
        return Err(RepairError::Io {
            what: "move the repaired store to",
            path: dir.to_path_buf(),
            source,
        });
    }
    Ok(RepairReport {
        diagnosis,
        objects,
        bad_objects,
        refs,
        kept_at,
    })
}
