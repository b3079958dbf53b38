//! The storage trait: the only door between tapes and its embedded database.
//!
//! Everything tapes persists goes through [`Storage`]: content-addressed objects, refs (small
//! named records updated only by compare-and-swap) and a few store-wide settings. The sled
//! backend lives in [`sled_backend`]; nothing else in the crate names sled, so a relay can put
//! another backend behind the same trait. Large batches of objects go to immutable pack files
//! beside sled (`pack`), registered in sled once they are complete.
//!
//! Crash safety rests on one ordering rule (SPEC.md §6): objects are written and flushed before
//! any ref that points at them, so a ref never names a missing object, whatever moment a
//! process dies at.
//!
//! Only one process can open the database; [`shared`] lets every other process use the store
//! through the one that holds it (SPEC.md §6.1, "Sharing the store between processes").

mod direct;
pub mod journal;
mod merge;
pub(crate) mod pack;
pub mod salvage;
pub mod shared;
pub mod sled_backend;

use tapes_protocol::{NodeId, StoredObject};

pub use shared::SharedStorage;
pub use sled_backend::SledStorage;

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the store at {path} is held by another tapes process that does not answer on {path}/tapes.sock (an older tapes, or a stuck one); wait for it to finish or stop it (find it with `ps`), then retry")]
    Locked { path: String },
    #[error("database error: {0}")]
    Backend(String),
    #[error("ref {key} changed underneath this update (compare-and-swap failed)")]
    Conflict {
        key: String,
        current: Option<Vec<u8>>,
    },
}

/// One ref change applied by [`Storage::update_refs`]: it only happens if the ref still holds
/// `expected` (`None` = must not exist yet). `new = None` deletes the ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub key: Vec<u8>,
    pub expected: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

/// What a write of objects added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Objects that were not stored before.
    pub objects: usize,
    /// Their encoded size.
    pub bytes: usize,
}

/// Objects written ahead of a decision: [`Staging::commit`] adds them to the store, dropping
/// the staging discards them. Bundle import stages every new node while it verifies the
/// bundle, so it reads the file once and yet the store holds nothing of a bundle that fails.
pub trait Staging {
    /// Adds one verified object. Adding an id twice keeps one copy.
    fn add(&mut self, id: &NodeId, bytes: &[u8]) -> Result<(), StorageError>;

    /// Adds what was staged to the store, except objects it holds by now; returns what was
    /// new. Like [`Storage::put_objects`], not durable until [`Storage::flush`] returns.
    fn commit(self: Box<Self>) -> Result<Written, StorageError>;
}

/// Staging in memory, for backends without a cheaper way: committed with one `put_objects`.
struct MemoryStaging<'s, S: ?Sized> {
    storage: &'s S,
    objects: Vec<StoredObject>,
}

impl<S: Storage + ?Sized> Staging for MemoryStaging<'_, S> {
    fn add(&mut self, id: &NodeId, bytes: &[u8]) -> Result<(), StorageError> {
        self.objects.push(StoredObject {
            id: *id,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<Written, StorageError> {
        self.storage.put_objects(&self.objects)
    }
}

/// Reads the nodes of a chain one after the other, head first (see [`Storage::chain_reader`]).
pub trait ChainReader {
    fn get(&mut self, id: &NodeId) -> Result<Option<Vec<u8>>, StorageError>;

    /// Appends the object's bytes to `out` (false, nothing appended, when it is absent): a
    /// walk reads every object into one buffer it reuses instead of a new one per object.
    fn read_into(&mut self, id: &NodeId, out: &mut Vec<u8>) -> Result<bool, StorageError> {
        Ok(self
            .get(id)?
            .map(|bytes| out.extend_from_slice(&bytes))
            .is_some())
    }
}

/// A [`ChainReader`] that reads each object on its own.
pub(crate) struct EachOnItsOwn<'s, S: ?Sized>(pub(crate) &'s S);

impl<S: Storage + ?Sized> ChainReader for EachOnItsOwn<'_, S> {
    fn get(&mut self, id: &NodeId) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.get_object(id)
    }
}

/// What the rest of tapes needs from a database.
pub trait Storage: Send + Sync {
    fn get_object(&self, id: &NodeId) -> Result<Option<Vec<u8>>, StorageError>;

    /// A reader for walking a chain from its head, each object read being the parent of the
    /// one before. Packs keep a batch's objects in the order they were written, root first
    /// (SPEC.md §6), so the sled backend reads a window of the pack ending at the object and
    /// serves the parents that follow from it: one read per window instead of one per node.
    fn chain_reader(&self) -> Box<dyn ChainReader + '_> {
        Box::new(EachOnItsOwn(self))
    }

    fn contains_object(&self, id: &NodeId) -> Result<bool, StorageError>;

    /// Stores a batch of already verified objects and returns how many were new (and their size). Objects
    /// already present are left as they are: ids are content hashes. Not durable (and not
    /// necessarily all present after a crash) until [`Storage::flush`] returns, which is why
    /// refs to them are written only after it.
    fn put_objects(&self, objects: &[StoredObject]) -> Result<Written, StorageError>;

    /// Starts staging objects for one large write (see [`Staging`]). The sled backend streams
    /// them into a pack file that becomes part of the store only on commit; this default keeps
    /// them in memory.
    fn stage(&self) -> Result<Box<dyn Staging + '_>, StorageError> {
        Ok(Box::new(MemoryStaging {
            storage: self,
            objects: Vec::new(),
        }))
    }

    /// Every object, in id order. Used by fsck and by reconciliation.
    fn objects(&self) -> Box<dyn Iterator<Item = Result<(NodeId, Vec<u8>), StorageError>> + '_>;

    fn object_count(&self) -> usize;

    fn get_ref(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Applies all updates atomically, or none if any `expected` does not match (the error names
    /// the first ref that did not match and what it holds now).
    fn update_refs(&self, updates: &[RefUpdate]) -> Result<(), StorageError>;

    /// Refs whose key starts with `prefix`, in key order.
    fn refs(
        &self,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + '_>;

    fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    fn set_setting(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;

    /// Makes everything written so far durable (one fsync for a whole batch).
    fn flush(&self) -> Result<(), StorageError>;

    /// Bytes the database occupies on disk.
    fn size_on_disk(&self) -> Result<u64, StorageError>;

    /// Deletes objects that no ref reaches any more (garbage collection, `store::gc`, SPEC.md
    /// §6 rule 8): from sled, and from every pack that holds one, by rewriting that pack
    /// without them; then rewrites the journal so their bytes leave it too. Returns what was
    /// removed. The caller decides what is unreachable; ids not stored are skipped.
    fn remove_objects(&self, ids: &[NodeId]) -> Result<Written, StorageError> {
        let _ = ids;
        Err(StorageError::Backend(
            "this store backend cannot delete objects".into(),
        ))
    }
}
