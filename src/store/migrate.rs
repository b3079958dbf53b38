//! Migrating a store in place (SPEC.md §4.3): a store written by an older tapes is brought to
//! [`STORE_FORMAT`] on first open, before anything reads it.
//!
//! | from | to | what changes |
//! |---|---|---|
//! | 1 | 2 | nothing is rewritten: format 2 adds pack files, which a format-1 store has none of |
//! | 2 | 3 | session records of version 1 (before owners, visibility and lineage) are rewritten as version 2 |
//!
//! Crash safety: every rewrite is a compare-and-swap ref transaction from the exact old bytes
//! to the new ones, in batches, each flushed before the next; the format stamp is written
//! last. A migration cut short leaves some records old and some new, both of which the next
//! open reads, and the stamp still old, so the next open simply carries on. A record another
//! process changed meanwhile fails its compare-and-swap and is read again.

use tapes_protocol::SessionId;

use super::backend::{RefUpdate, Storage, StorageError};
use super::keys;
use super::{StoreError, STORE_FORMAT};
use crate::session::SessionRecord;

/// Records rewritten per transaction: small enough that a crash loses little work, large
/// enough that a flush per batch is not the cost (a batch of 1,000 ~300-byte records is one
/// ~300 KB sled write).
const BATCH: usize = 1000;

/// How far a migration is: `done` of `total` records rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub from: u32,
    pub done: usize,
    pub total: usize,
}

/// Brings a store at format `found` to [`STORE_FORMAT`], calling `progress` as it goes, then
/// stamps the format. `path` names the store in errors.
pub fn migrate(
    storage: &dyn Storage,
    path: &str,
    found: u32,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), StoreError> {
    if found < 3 {
        upgrade_records(storage, path, found, progress)?;
    }
    storage.set_setting(super::FORMAT_KEY, &STORE_FORMAT.to_le_bytes())?;
    storage.flush()?;
    tracing::info!(path, from = found, to = STORE_FORMAT, "store migrated");
    Ok(())
}

/// The session refs whose record is version 1: key, id, old bytes.
fn old_records(storage: &dyn Storage) -> Result<Vec<(Vec<u8>, SessionId, Vec<u8>)>, StoreError> {
    let prefix = keys::SESSION;
    let mut out = Vec::new();
    for entry in storage.refs(prefix) {
        let (key, value) = entry?;
        if value.first() != Some(&1) {
            continue;
        }
        let id = std::str::from_utf8(&key[prefix.len().min(key.len())..])
            .ok()
            .and_then(|hex| hex::decode(hex).ok())
            .and_then(|raw| SessionId::from_slice(&raw));
        match id {
            Some(id) => out.push((key, id, value)),
            None => {
                tracing::warn!(key = %String::from_utf8_lossy(&key), "skipping a session ref whose key is not a session id")
            }
        }
    }
    Ok(out)
}

fn upgrade_records(
    storage: &dyn Storage,
    path: &str,
    from: u32,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), StoreError> {
    // A record changed by another process mid-migration is read again; three rounds are
    // plenty (a conflict needs a concurrent writer on that very session).
    for _round in 0..3 {
        let old = old_records(storage)?;
        if old.is_empty() {
            return Ok(());
        }
        let total = old.len();
        let mut done = 0;
        let mut conflicted = false;
        progress(Progress { from, done, total });
        for batch in old.chunks(BATCH) {
            let mut updates = Vec::with_capacity(batch.len());
            for (key, id, value) in batch {
                let (record, _) = SessionRecord::decode_any(id, value).map_err(|source| {
                    StoreError::BadRecord {
                        id: format!("{} (in {path}, while migrating the store)", id.short()),
                        source,
                    }
                })?;
                updates.push(RefUpdate {
                    key: key.clone(),
                    expected: Some(value.clone()),
                    new: Some(record.encode()),
                });
            }
            match storage.update_refs(&updates) {
                Ok(()) => {}
                Err(StorageError::Conflict { .. }) => {
                    conflicted = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            storage.flush()?;
            done += batch.len();
            progress(Progress { from, done, total });
        }
        if !conflicted {
            return Ok(());
        }
    }
    Err(StoreError::Storage(StorageError::Backend(format!(
        "the store in {path} kept changing while it was being migrated; close other tapes processes and run the command again"
    ))))
}
