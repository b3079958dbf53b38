//! [`Storage`] on sled: one tree per kind of record.
//!
//! - `objects`: node id (32 bytes) → stored object bytes
//! - `refs`: ref key → ref record bytes (updated only through CAS in a transaction)
//! - `settings`: store-wide values such as the format version

use std::path::Path;
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use tapes_protocol::{NodeId, StoredObject};

use super::{RefUpdate, Storage, StorageError, Written};

pub struct SledStorage {
    db: sled::Db,
    objects: sled::Tree,
    refs: sled::Tree,
    settings: sled::Tree,
}

/// How long to wait for another tapes process to release the store before saying so.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl SledStorage {
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let started = Instant::now();
        let mut retried_snapshot = false;
        let db = loop {
            let config = sled::Config::new()
                .path(path)
                // Below ~1.3x the live data sled's page cache thrashes (measured: lookups 4x
                // slower at 1M objects with 512 MiB); this is an upper bound, not an allocation.
                .cache_capacity(1 << 30)
                // Durability comes from our explicit flush per batch, not from a timer.
                .flush_every_ms(None);
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) if is_lock_error(&e) => {
                    return Err(StorageError::Locked {
                        path: path.display().to_string(),
                    })
                }
                // sled 0.34 can pick up a snapshot it was still writing when the process died
                // (`snap.*.generating`, upstream spacejam/sled#1527) and then refuses to open.
                // That file is only a cache of the log; removing it makes sled rebuild it.
                Err(sled::Error::Corruption { at: None, .. })
                    if !retried_snapshot && remove_partial_snapshots(path) =>
                {
                    retried_snapshot = true;
                }
                Err(e) => return Err(backend(e)),
            }
        };
        Ok(SledStorage {
            objects: db.open_tree("objects").map_err(backend)?,
            refs: db.open_tree("refs").map_err(backend)?,
            settings: db.open_tree("settings").map_err(backend)?,
            db,
        })
    }
}

/// Deletes half-written snapshot files in a sled directory; true if there were any.
fn remove_partial_snapshots(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.")
            && name.ends_with(".generating")
            && std::fs::remove_file(entry.path()).is_ok()
        {
            tracing::warn!(file = %entry.path().display(), "removed a half-written sled snapshot left by a crash");
            removed = true;
        }
    }
    removed
}

fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

fn backend(e: sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl Storage for SledStorage {
    fn get_object(&self, id: &NodeId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .objects
            .get(id.as_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn contains_object(&self, id: &NodeId) -> Result<bool, StorageError> {
        self.objects.contains_key(id.as_bytes()).map_err(backend)
    }

    fn put_objects(&self, objects: &[StoredObject]) -> Result<Written, StorageError> {
        // Inserting in key order is about twice as fast as sled's Batch (which applies writes in
        // hash order) and leaves fuller leaves on disk. Atomicity across the objects of a batch
        // is not needed: objects are immutable and unreachable until a ref names them, and refs
        // are written only after the flush that follows this call (SPEC.md §6).
        let mut order: Vec<&StoredObject> = objects.iter().collect();
        order.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut written = Written::default();
        for object in order {
            if !self
                .objects
                .contains_key(object.id.as_bytes())
                .map_err(backend)?
            {
                self.objects
                    .insert(object.id.as_bytes(), object.bytes.as_slice())
                    .map_err(backend)?;
                written.objects += 1;
                written.bytes += object.bytes.len();
            }
        }
        Ok(written)
    }

    fn objects(&self) -> Box<dyn Iterator<Item = Result<(NodeId, Vec<u8>), StorageError>> + '_> {
        Box::new(self.objects.iter().map(|entry| {
            let (k, v) = entry.map_err(backend)?;
            let id = NodeId::from_slice(&k).ok_or_else(|| {
                StorageError::Backend(format!("object key of {} bytes, not 32", k.len()))
            })?;
            Ok((id, v.to_vec()))
        }))
    }

    fn object_count(&self) -> usize {
        self.objects.len()
    }

    fn get_ref(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.refs.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn update_refs(&self, updates: &[RefUpdate]) -> Result<(), StorageError> {
        let result = self.refs.transaction(|tx| {
            for update in updates {
                let current = tx.get(&update.key)?;
                if current.as_deref() != update.expected.as_deref() {
                    return Err(ConflictableTransactionError::Abort(
                        StorageError::Conflict {
                            key: String::from_utf8_lossy(&update.key).into_owned(),
                            current: current.map(|c| c.to_vec()),
                        },
                    ));
                }
                match &update.new {
                    Some(value) => {
                        tx.insert(update.key.as_slice(), value.as_slice())?;
                    }
                    None => {
                        tx.remove(update.key.as_slice())?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    fn refs(
        &self,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + '_> {
        Box::new(self.refs.scan_prefix(prefix).map(|entry| {
            let (k, v) = entry.map_err(backend)?;
            Ok((k.to_vec(), v.to_vec()))
        }))
    }

    fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.settings.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn set_setting(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.settings.insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.db.size_on_disk().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SledStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = SledStorage::open(&dir.path().join("db")).unwrap();
        (dir, storage)
    }

    fn upd(key: &str, expected: Option<&str>, new: Option<&str>) -> RefUpdate {
        RefUpdate {
            key: key.as_bytes().to_vec(),
            expected: expected.map(|s| s.as_bytes().to_vec()),
            new: new.map(|s| s.as_bytes().to_vec()),
        }
    }

    #[test]
    fn cas_rejects_a_stale_writer_and_keeps_the_winner() {
        let (_dir, s) = open();
        s.update_refs(&[upd("r", None, Some("a"))]).unwrap();
        let err = s.update_refs(&[upd("r", None, Some("b"))]).unwrap_err();
        assert!(matches!(err, StorageError::Conflict { current: Some(ref c), .. } if c == b"a"));
        s.update_refs(&[upd("r", Some("a"), Some("c"))]).unwrap();
        assert_eq!(s.get_ref(b"r").unwrap().unwrap(), b"c");
    }

    #[test]
    fn a_batch_of_ref_updates_is_all_or_nothing() {
        let (_dir, s) = open();
        s.update_refs(&[upd("x", None, Some("1"))]).unwrap();
        let err = s.update_refs(&[upd("y", None, Some("2")), upd("x", Some("0"), Some("3"))]);
        assert!(err.is_err());
        assert_eq!(
            s.get_ref(b"y").unwrap(),
            None,
            "first update of a failed batch leaked"
        );
        assert_eq!(s.get_ref(b"x").unwrap().unwrap(), b"1");
    }

    #[test]
    fn a_second_open_of_the_same_store_says_it_is_locked() {
        let (dir, _s) = open();
        match SledStorage::open(&dir.path().join("db")) {
            Err(StorageError::Locked { .. }) => {}
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("expected Locked, opened twice"),
        }
    }
}
