//! The store: sessions and nodes on top of a [`Storage`] backend.
//!
//! This is the API the commands use: read nodes and chains, list and resolve sessions (unique
//! prefixes, like git), and commit a batch of objects plus ref updates in the one order that
//! keeps a crash harmless: objects, flush, refs, flush.

pub mod backend;
pub mod fsck;
pub mod gc;
pub mod generation;
pub mod keys;
pub mod migrate;

use std::path::{Path, PathBuf};

use tapes_protocol::{MemberId, Node, NodeId, ObjectError, SessionId, StoredObject};

use crate::session::{session_ref_key, RecordError, SessionRecord, SESSION_REF_PREFIX};
use crate::store::backend::{RefUpdate, SharedStorage, Storage, StorageError, Written};

/// The on-disk format this build writes. A store stamped with a larger number was written by a
/// newer tapes and is refused rather than misread.
pub const STORE_FORMAT: u32 = 3;
const FORMAT_KEY: &str = "format";
const OWNER_KEY: &str = "owner";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the store at {path} was written by a newer tapes (store format {found}; this tapes reads up to {supported}); upgrade tapes to use it")]
    TooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("no session matches `{0}`; `tapes sessions` lists them")]
    SessionNotFound(String),
    #[error("`{prefix}` is ambiguous: it matches {} sessions ({}); type more characters", .candidates.len(), .candidates.iter().map(|c| c.short()).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        prefix: String,
        candidates: Vec<SessionId>,
    },
    #[error("`{0}` is not a session id: ids are hex (0-9, a-f)")]
    BadId(String),
    #[error("node {0} is missing from the store; run `tapes fsck`")]
    MissingNode(NodeId),
    #[error("node {id} is damaged: {source}; run `tapes fsck`")]
    BadNode { id: NodeId, source: ObjectError },
    #[error("session {id}: {source}")]
    BadRecord { id: String, source: RecordError },
    #[error("the history of {0} loops back on itself; run `tapes fsck`")]
    Cycle(NodeId),
}

pub struct Store {
    storage: Box<dyn Storage>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`. If another tapes process
    /// holds it, this one works through that process (SPEC.md §6.1).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_progress(path, &mut |_| {})
    }

    /// [`Store::open`], reporting the progress of a migration from an older format (SPEC.md
    /// §4.3) to `progress`; a store already at [`STORE_FORMAT`] opens without calling it.
    pub fn open_with_progress(
        path: &Path,
        progress: &mut dyn FnMut(migrate::Progress),
    ) -> Result<Store, StoreError> {
        let storage = SharedStorage::open(path)?;
        let store = Store {
            storage: Box::new(storage),
            path: path.to_path_buf(),
        };
        store.check_format(progress)?;
        Ok(store)
    }

    fn check_format(&self, progress: &mut dyn FnMut(migrate::Progress)) -> Result<(), StoreError> {
        match self.storage.get_setting(FORMAT_KEY)? {
            None => {
                self.storage
                    .set_setting(FORMAT_KEY, &STORE_FORMAT.to_le_bytes())?;
                self.storage.flush()?;
                Ok(())
            }
            Some(raw) => {
                let found = <[u8; 4]>::try_from(raw.as_slice())
                    .map(u32::from_le_bytes)
                    .unwrap_or(u32::MAX);
                if found > STORE_FORMAT {
                    return Err(StoreError::TooNew {
                        path: self.path.display().to_string(),
                        found,
                        supported: STORE_FORMAT,
                    });
                }
                if found < STORE_FORMAT {
                    migrate::migrate(
                        self.storage.as_ref(),
                        &self.path.display().to_string(),
                        found,
                        progress,
                    )?;
                }
                Ok(())
            }
        }
    }

    /// The identity this store belongs to (set by `tapes init`); new sessions are owned by it.
    pub fn local_owner(&self) -> Result<Option<MemberId>, StoreError> {
        Ok(self
            .storage
            .get_setting(OWNER_KEY)?
            .and_then(|raw| MemberId::from_slice(&raw)))
    }

    pub fn set_local_owner(&self, owner: &MemberId) -> Result<(), StoreError> {
        self.storage.set_setting(OWNER_KEY, owner.as_bytes())?;
        self.storage.flush()?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Reads one node, verifying that its bytes still hash to its id.
    pub fn node(&self, id: &NodeId) -> Result<Node, StoreError> {
        let bytes = self
            .storage
            .get_object(id)?
            .ok_or(StoreError::MissingNode(*id))?;
        StoredObject::verify(id, &bytes).map_err(|source| StoreError::BadNode { id: *id, source })
    }

    pub fn has_node(&self, id: &NodeId) -> Result<bool, StoreError> {
        Ok(self.storage.contains_object(id)?)
    }

    /// The chain ending at `head`, root first.
    pub fn chain(&self, head: &NodeId) -> Result<Vec<(NodeId, Node)>, StoreError> {
        let mut out = Vec::new();
        let mut next = Some(*head);
        // Verified nodes cannot form a cycle (that would take a BLAKE3 collision), but a
        // damaged store should give an error, not a hang; a set is cheaper than counting the
        // store (sled's `len` is a full scan).
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = next {
            if !seen.insert(id) {
                return Err(StoreError::Cycle(*head));
            }
            let node = self.node(&id)?;
            next = node.body.parent;
            out.push((id, node));
        }
        out.reverse();
        Ok(out)
    }

    /// The ids of the chain ending at `head`, root first, without decoding the nodes (each
    /// object's parent is read from its header). Cheaper than [`Store::chain`] when only the
    /// shape of a history matters (does one head descend from another, where do two diverge).
    pub fn chain_ids(&self, head: &NodeId) -> Result<Vec<NodeId>, StoreError> {
        let mut out = Vec::new();
        let mut next = Some(*head);
        let mut seen = std::collections::HashSet::new();
        let mut reader = self.storage.chain_reader();
        while let Some(id) = next {
            if !seen.insert(id) {
                return Err(StoreError::Cycle(*head));
            }
            let bytes = reader.get(&id)?.ok_or(StoreError::MissingNode(id))?;
            next = StoredObject::parent_of(&bytes)
                .map_err(|source| StoreError::BadNode { id, source })?;
            out.push(id);
        }
        out.reverse();
        Ok(out)
    }

    pub fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        match self.storage.get_ref(&session_ref_key(id))? {
            None => Ok(None),
            Some(bytes) => {
                SessionRecord::decode(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::BadRecord {
                        id: id.to_hex(),
                        source,
                    })
            }
        }
    }

    /// The raw bytes of a session ref, for compare-and-swap.
    pub fn session_raw(&self, id: &SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.storage.get_ref(&session_ref_key(id))?)
    }

    /// Every session, in id order.
    pub fn sessions(&self) -> Result<Vec<(SessionId, SessionRecord)>, StoreError> {
        self.session_records().collect()
    }

    /// Every session, in id order, one at a time (a listing of 100k sessions keeps only what
    /// it needs of each).
    pub fn session_records(
        &self,
    ) -> impl Iterator<Item = Result<(SessionId, SessionRecord), StoreError>> + '_ {
        self.storage.refs(SESSION_REF_PREFIX).map(|entry| {
            let (key, value) = entry?;
            let id = parse_session_key(&key)?;
            let record = SessionRecord::decode(&value).map_err(|source| StoreError::BadRecord {
                id: id.to_hex(),
                source,
            })?;
            Ok((id, record))
        })
    }

    /// Resolves a full id or a unique prefix to a session id.
    pub fn resolve_session(&self, input: &str) -> Result<SessionId, StoreError> {
        let prefix = tapes_protocol::id::normalize_prefix(input.trim())
            .map_err(|_| StoreError::BadId(input.to_string()))?;
        let mut key = SESSION_REF_PREFIX.to_vec();
        key.extend_from_slice(prefix.as_bytes());
        let mut candidates = Vec::new();
        for entry in self.storage.refs(&key) {
            let (key, _) = entry?;
            candidates.push(parse_session_key(&key)?);
            if candidates.len() > 8 {
                break;
            }
        }
        match candidates.len() {
            0 => Err(StoreError::SessionNotFound(input.to_string())),
            1 => Ok(candidates[0]),
            _ => Err(StoreError::Ambiguous {
                prefix: input.to_string(),
                candidates,
            }),
        }
    }

    /// Commits objects and then ref updates: objects are flushed before any ref can point at
    /// them, so a crash between the two leaves unreferenced objects, never a dangling ref.
    /// Returns what was new.
    pub fn commit(
        &self,
        objects: &[StoredObject],
        refs: &[RefUpdate],
    ) -> Result<Written, StoreError> {
        let started = std::time::Instant::now();
        let full = |e| self.disk_full(e);
        let new = self.storage.put_objects(objects).map_err(full)?;
        let put = started.elapsed();
        if new.objects > 0 {
            self.storage.flush().map_err(full)?;
        }
        let flushed = started.elapsed();
        if !refs.is_empty() {
            self.storage.update_refs(refs).map_err(full)?;
            self.storage.flush().map_err(full)?;
        }
        tracing::trace!(
            put_ms = put.as_millis() as u64,
            flush_ms = (flushed - put).as_millis() as u64,
            refs_ms = (started.elapsed() - flushed).as_millis() as u64,
            "commit"
        );
        Ok(new)
    }

    /// A write that failed because the disk is full says so, naming the store (SPEC.md §6.3):
    /// nothing of it is visible (objects before refs, rules 2–4), so freeing space and running
    /// the command again is all it takes.
    fn disk_full(&self, e: StorageError) -> StorageError {
        let text = e.to_string();
        if text.contains("No space left on device") || text.contains("StorageFull") {
            return StorageError::Backend(format!(
                "no space left on the disk of the store at {}; nothing half-written is visible: free some space and run the command again ({text})",
                self.path.display()
            ));
        }
        e
    }
}

fn parse_session_key(key: &[u8]) -> Result<SessionId, StoreError> {
    let hex = std::str::from_utf8(&key[SESSION_REF_PREFIX.len().min(key.len())..]).unwrap_or("");
    hex.parse().map_err(|_| StoreError::BadRecord {
        id: String::from_utf8_lossy(key).into_owned(),
        source: RecordError::Decode("ref key is not session/<32 hex digits>".into()),
    })
}
