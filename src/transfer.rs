//! Pull and push of one session against a [`Remote`].
//!
//! Pull copies a session you own from a remote: the missing nodes (verified before anything is
//! stored) and its ref. Push sends the nodes after your base and asks the remote to move the
//! ref from your base digest to your head — compare-and-swap, so two people continuing the same
//! session from the same base cannot both win; the loser is told to pull or branch.

use tapes_protocol::{NodeId, SessionId, StoredObject};

use crate::lineage::is_mine;
use crate::remote::{Remote, RemoteError};
use crate::session::{session_ref_key, SessionRecord};
use crate::storage::RefUpdate;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The seed's wording for sessions that do not exist or are not yours to pull.
    #[error("Session not found.")]
    NotFound,
    #[error(
        "session {session}: your base {base} is not in its history here; `tapes pull` it again"
    )]
    BaseNotInHistory { session: String, base: String },
    #[error("node {id} from remote {remote} does not verify: {why}; nothing was stored")]
    BadObject {
        remote: String,
        id: NodeId,
        why: String,
    },
}

/// What a pull brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: SessionRecord,
    pub new_nodes: usize,
    /// The number of messages, which is the base count for a later push.
    pub count: u64,
}

/// Pulls session `id` (yours) from `remote` into `store`.
pub fn pull(store: &Store, remote: &dyn Remote, id: &SessionId) -> Result<Pulled, TransferError> {
    let record = remote.session(id)?.ok_or(TransferError::NotFound)?;
    if !is_mine(&record, store.local_owner()?.as_ref()) {
        return Err(TransferError::NotFound);
    }
    let mut have_error = None;
    let objects = remote.fetch_chain(&record.head, &mut |node| match store.has_node(node) {
        Ok(present) => present,
        Err(e) => {
            have_error = Some(e);
            true
        }
    })?;
    if let Some(e) = have_error {
        return Err(e.into());
    }
    // Verify everything before storing anything, and check the chain links up.
    let mut expected_parent = None;
    for (i, object) in objects.iter().enumerate() {
        let node = StoredObject::verify(&object.id, &object.bytes).map_err(|e| {
            TransferError::BadObject {
                remote: remote.name().into(),
                id: object.id,
                why: e.to_string(),
            }
        })?;
        if i > 0 && node.body.parent != expected_parent {
            return Err(TransferError::BadObject {
                remote: remote.name().into(),
                id: object.id,
                why: "its parent is not the node before it".into(),
            });
        }
        expected_parent = Some(object.id);
    }
    let current = store.session_raw(id)?;
    let update = RefUpdate {
        key: session_ref_key(id),
        expected: current,
        new: Some(record.encode()),
    };
    let new_nodes = store.commit(&objects, &[update])?.objects;
    let count = record.summary.messages;
    Ok(Pulled {
        record,
        new_nodes,
        count,
    })
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub nodes: usize,
    pub head: NodeId,
}

/// Pushes local session `id` to `remote`, expecting the remote to be at `base` (the head you
/// pulled or branched from; `None` for a session the remote does not have yet).
pub fn push(
    store: &Store,
    remote: &dyn Remote,
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<Pushed, TransferError> {
    let record = store.session(id)?.ok_or(TransferError::NotFound)?;
    let chain = store.chain(&record.head)?;
    let start = match base {
        None => 0,
        Some(base) => {
            chain
                .iter()
                .position(|(node, _)| node == base)
                .ok_or_else(|| TransferError::BaseNotInHistory {
                    session: id.short(),
                    base: base.short(),
                })?
                + 1
        }
    };
    let mut objects = Vec::with_capacity(chain.len() - start);
    for (node, _) in &chain[start..] {
        let bytes = store
            .storage()
            .get_object(node)
            .map_err(StoreError::from)?
            .ok_or(StoreError::MissingNode(*node))?;
        objects.push(StoredObject { id: *node, bytes });
    }
    remote.push(id, base, &objects, &record)?;
    Ok(Pushed {
        nodes: objects.len(),
        head: record.head,
    })
}
