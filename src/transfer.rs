//! Pull and push of one session against a [`Remote`].
//!
//! Pull copies a session you own from a remote: the missing nodes (verified before anything is
//! stored) and its ref. Push sends the nodes after your base and asks the remote to move the
//! ref from your base digest to your head — compare-and-swap, so two people continuing the same
//! session from the same base cannot both win; the loser is told to pull or branch.
//!
//! Like a share, a push leaves the machine, so the CLI runs [`scan_outgoing`] on the nodes it
//! would send first and refuses on a hit ([`secrets_error`]) unless told `--allow-secrets`.

use tapes_protocol::{MemberId, Node, NodeId, SessionId, StoredObject};

use crate::identity::Identity;
use crate::lineage::is_mine;
use crate::remote::{RefSignature, Remote, RemoteError};
use crate::session::{session_ref_key, SessionRecord};
use crate::share::Hit;
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
        "session {0} belongs to someone else; fork it to push your own copy (`tapes fork {0}`)"
    )]
    NotYours(String),
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
    /// The secret scan found something in the nodes a push would send. Redaction is not
    /// offered: it changes node ids, which breaks the chain the remote holds.
    #[error("{count} possible secrets in what would be pushed of session {session}; nothing was pushed.\n{list}\nredacting is not possible for a push (it would change node ids and break the chain the remote holds): share a redacted copy with `tapes share --redact`, or push anyway with --allow-secrets")]
    Secrets {
        session: String,
        count: usize,
        list: String,
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

/// Where the nodes a push sends begin in `chain` (root first): just after `base`, or at the root
/// when the remote does not have the session yet.
fn delta_start(
    chain: &[(NodeId, Node)],
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<usize, TransferError> {
    match base {
        None => Ok(0),
        Some(base) => chain
            .iter()
            .position(|(node, _)| node == base)
            .map(|i| i + 1)
            .ok_or_else(|| TransferError::BaseNotInHistory {
                session: id.short(),
                base: base.short(),
            }),
    }
}

/// The secret scan of a push: every possible secret in the nodes a push of `id` from `base`
/// would send: the nodes after the base (the remote holds the rest already, so refusing over
/// them would change nothing). Indexes are positions in the whole chain, as `tapes share`
/// lists them.
pub fn scan_outgoing(
    store: &Store,
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<Vec<Hit>, TransferError> {
    let record = store.session(id)?.ok_or(TransferError::NotFound)?;
    let chain = store.chain(&record.head)?;
    let start = delta_start(&chain, id, base)?;
    Ok(crate::share::scan_chain(id, &chain, start))
}

/// The error for a push the secret scan stopped.
pub fn secrets_error(id: &SessionId, hits: &[Hit]) -> TransferError {
    TransferError::Secrets {
        session: id.short(),
        count: hits.len(),
        list: hits
            .iter()
            .map(Hit::describe)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// Pushes local session `id` to `remote`, expecting the remote to be at `base` (the head you
/// pulled or branched from; `None` for a session the remote does not have yet).
pub fn push(
    store: &Store,
    identity: &Identity,
    remote: &dyn Remote,
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<Pushed, TransferError> {
    let mut record = store.session(id)?.ok_or(TransferError::NotFound)?;
    let me = MemberId(identity.verifying_key().to_bytes());
    // Sessions imported before `tapes init` have no owner yet; they are this identity's.
    let owner = *record.owner.get_or_insert(me);
    if owner != me {
        return Err(TransferError::NotYours(id.short()));
    }
    let chain = store.chain(&record.head)?;
    let start = delta_start(&chain, id, base)?;
    let mut objects = Vec::with_capacity(chain.len() - start);
    for (node, _) in &chain[start..] {
        let bytes = store
            .storage()
            .get_object(node)
            .map_err(StoreError::from)?
            .ok_or(StoreError::MissingNode(*node))?;
        objects.push(StoredObject { id: *node, bytes });
    }
    let signature = RefSignature::sign(identity.signing_key(), id, base, &record);
    remote.push(id, base, &objects, &record, &signature)?;
    Ok(Pushed {
        nodes: objects.len(),
        head: record.head,
    })
}
