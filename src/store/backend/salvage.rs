//! Salvage: reading what survives in a store whose database is damaged (SPEC §6.2).
//!
//! Three sources, each checked on its own: the pack files (opened from their own index, with
//! no help from the registry in sled, and verified in full), the journal (every entry
//! checksummed, see `journal.rs`), and the sled database itself when it still opens (every
//! object it yields is verified; read errors are counted, not fatal). Every object is checked
//! against its id before it is used. Nothing here writes to the damaged store.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tapes_protocol::{NodeId, StoredObject};

use super::journal;
use super::pack::{self, Pack};
use super::{SledStorage, Storage, StorageError};

/// What survives in a damaged store directory.
pub struct Survivors {
    packs: Vec<Pack>,
    /// Packs that could not be opened or whose index does not verify, with why.
    pub damaged_packs: Vec<(PathBuf, String)>,
    journal_objects: HashMap<NodeId, Vec<u8>>,
    /// Offsets of journal entries that did not verify.
    pub journal_damage: Vec<u64>,
    /// The database, when it still opens.
    db: Option<SledStorage>,
    /// Why the database does not open (`None` when it does).
    pub db_error: Option<String>,
    /// Every ref's newest surviving value: the database's where it can be read, else the
    /// journal's.
    pub refs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Refs or objects the database could not read.
    pub db_read_errors: usize,
}

impl Survivors {
    /// Reads the store in `dir` without changing it.
    pub fn read(dir: &Path) -> Result<Survivors, StorageError> {
        let mut packs = Vec::new();
        let mut damaged_packs = Vec::new();
        for (path, opened) in pack::open_unregistered(&dir.join("packs")) {
            match opened {
                Ok(pack) => packs.push(pack),
                Err(e) => damaged_packs.push((path, e.to_string())),
            }
        }
        let replay = journal::replay(&journal::Journal::path(dir))?;
        let mut refs: BTreeMap<Vec<u8>, Vec<u8>> = replay
            .refs
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        let journal_objects = replay
            .objects
            .into_iter()
            .map(|o| (o.id, o.bytes))
            .collect();
        let (db, db_error) = match SledStorage::open(dir) {
            Ok(db) => (Some(db), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut db_read_errors = 0;
        if let Some(db) = &db {
            for entry in db.refs(b"") {
                match entry {
                    Ok((key, value)) => {
                        refs.insert(key, value);
                    }
                    Err(_) => db_read_errors += 1,
                }
            }
        }
        Ok(Survivors {
            packs,
            damaged_packs,
            journal_objects,
            journal_damage: replay.damaged,
            db,
            db_error,
            refs,
            db_read_errors,
        })
    }

    /// The object `id` from any source, verified against its id.
    pub fn object(&self, id: &NodeId) -> Option<Vec<u8>> {
        let verified = |bytes: &[u8]| StoredObject::verify(id, bytes).is_ok();
        for pack in &self.packs {
            if let Ok(Some(bytes)) = pack.get(id) {
                if verified(bytes) {
                    return Some(bytes.to_vec());
                }
            }
        }
        if let Some(bytes) = self.journal_objects.get(id) {
            if verified(bytes) {
                return Some(bytes.clone());
            }
        }
        match self.db.as_ref().map(|db| db.get_object(id)) {
            Some(Ok(Some(bytes))) if verified(&bytes) => Some(bytes),
            _ => None,
        }
    }

    /// Calls `each` with every object that verifies, from every source (an object found in
    /// several is passed more than once; the receiving store keeps one). Returns how many did
    /// not verify.
    pub fn for_each_object(
        &self,
        mut each: impl FnMut(StoredObject) -> Result<(), StorageError>,
    ) -> Result<usize, StorageError> {
        let mut bad = 0;
        for pack in &self.packs {
            for i in 0..pack.len() {
                let id = pack.id_at(i);
                match pack.object_at(i) {
                    Ok(bytes) if StoredObject::verify(&id, bytes).is_ok() => {
                        each(StoredObject {
                            id,
                            bytes: bytes.to_vec(),
                        })?;
                    }
                    _ => bad += 1,
                }
            }
            pack.release();
        }
        for (id, bytes) in &self.journal_objects {
            if StoredObject::verify(id, bytes).is_ok() {
                each(StoredObject {
                    id: *id,
                    bytes: bytes.clone(),
                })?;
            } else {
                bad += 1;
            }
        }
        if let Some(db) = &self.db {
            for entry in db.objects() {
                match entry {
                    Ok((id, bytes)) if StoredObject::verify(&id, &bytes).is_ok() => {
                        each(StoredObject { id, bytes })?;
                    }
                    _ => bad += 1,
                }
            }
        }
        Ok(bad)
    }

    /// The chain ending at `head`, root first, if every node of it survives.
    pub fn complete_chain(&self, head: &NodeId) -> Result<Vec<NodeId>, NodeId> {
        let mut out = Vec::new();
        let mut next = Some(*head);
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = next {
            if !seen.insert(id) {
                return Err(id);
            }
            let bytes = self.object(&id).ok_or(id)?;
            next = StoredObject::parent_of(&bytes).map_err(|_| id)?;
            out.push(id);
        }
        out.reverse();
        Ok(out)
    }
}
