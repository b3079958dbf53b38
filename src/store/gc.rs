//! Garbage collection: deleting the objects no session ref reaches (SPEC.md §6 rule 8).
//!
//! An object is *live* when it is on the chain of some session ref's head (a node shared by a
//! branch, a fork or any other session stays live while one of them holds it). Everything
//! else in the store is garbage: what `tapes rm` left behind, and leftovers of interrupted
//! imports. [`collect`] finds the garbage, removes it through
//! [`Storage::remove_objects`](crate::store::backend::Storage::remove_objects) (sled deletes,
//! packs rewritten without it, the journal rewritten), then checks the live set once more and
//! puts back any removed object a ref written meanwhile names.
//!
//! A relay's store holds sealed blobs that no session ref names; collecting it would empty
//! it, so [`collect`] refuses a store with relay registrations (a relay removes content by
//! retention, SPEC.md §16.14).

use std::collections::HashSet;

use tapes_protocol::{NodeId, StoredObject};

use crate::session::{SessionRecord, SESSION_REF_PREFIX};
use crate::store::backend::Written;
use crate::store::{keys, Store, StoreError};

/// What a collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Objects removed, and their size.
    pub removed: Written,
    /// Objects that stay (reached by some session).
    pub live: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store at {0} is a relay's: its content is sealed blobs that no session names; a relay removes content by retention (relay.toml), never by `tapes gc`")]
    RelayStore(String),
}

/// Every object some session ref reaches. A head whose chain is damaged counts as far as it
/// can be read (fsck reports the damage; collection never makes it worse).
pub fn live_objects(store: &Store) -> Result<HashSet<NodeId>, StoreError> {
    let mut live = HashSet::new();
    for entry in store.storage().refs(SESSION_REF_PREFIX) {
        let (_, value) = entry?;
        let Ok(record) = SessionRecord::decode(&value) else {
            continue;
        };
        mark(store, record.head, &mut live)?;
    }
    Ok(live)
}

/// Adds the chain ending at `head` to `live`, stopping at the first node already in it (the
/// rest of that chain is marked already: a node id commits to its ancestry).
fn mark(store: &Store, head: NodeId, live: &mut HashSet<NodeId>) -> Result<(), StoreError> {
    let mut next = Some(head);
    while let Some(id) = next {
        if !live.insert(id) {
            break;
        }
        next = match store.storage().get_object(&id)? {
            Some(bytes) => StoredObject::parent_of(&bytes).unwrap_or(None),
            None => None,
        };
    }
    Ok(())
}

/// Deletes every object no session ref reaches. Safe to run at any time and to repeat; a crash
/// in the middle leaves some garbage for the next run, never a ref to a missing object.
pub fn collect(store: &Store) -> Result<Collected, GcError> {
    if store
        .storage()
        .refs(keys::RELAY_TEAM)
        .next()
        .transpose()
        .map_err(StoreError::from)?
        .is_some()
    {
        return Err(GcError::RelayStore(store.path().display().to_string()));
    }
    let live = live_objects(store)?;
    let mut garbage: Vec<StoredObject> = Vec::new();
    for entry in store.storage().objects() {
        let (id, bytes) = entry.map_err(StoreError::from)?;
        if !live.contains(&id) {
            garbage.push(StoredObject { id, bytes });
        }
    }
    if garbage.is_empty() {
        return Ok(Collected {
            removed: Written::default(),
            live: live.len(),
        });
    }
    let ids: Vec<NodeId> = garbage.iter().map(|o| o.id).collect();
    let removed = store
        .storage()
        .remove_objects(&ids)
        .map_err(StoreError::from)?;
    // A writer that found one of these objects present just before the removal and wrote a
    // ref naming it just after: put such objects back (SPEC.md §6 rule 8).
    let now_live = live_objects(store)?;
    let back: Vec<StoredObject> = garbage
        .into_iter()
        .filter(|o| now_live.contains(&o.id))
        .collect();
    if !back.is_empty() {
        tracing::info!(
            objects = back.len(),
            "a ref written during collection names removed objects; restoring them"
        );
        store.commit(&back, &[])?;
    }
    Ok(Collected {
        removed: Written {
            objects: removed.objects.saturating_sub(back.len()),
            bytes: removed
                .bytes
                .saturating_sub(back.iter().map(|o| o.bytes.len()).sum()),
        },
        live: now_live.len(),
    })
}
