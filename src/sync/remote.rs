//! Remotes: other stores that sessions are pushed to and pulled from.
//!
//! [`Remote`] is what push and pull need from the other side; [`PathRemote`] is another
//! `TAPES_HOME` on this machine or a mounted disk (like a git path remote). The iroh peer and
//! the relay implement the same trait later, so push and pull are written once.
//!
//! Pushing is compare-and-swap on the session's head (the seed's base digest): the remote
//! moves its ref only if it still points where the pusher's history starts from. A stale pusher
//! gets [`RemoteError::Conflict`] — the seed's 409 — and nothing is lost: its nodes are stored
//! (content-addressed, harmless) and the winner's ref stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tapes_protocol::{NodeId, SessionId, StoredObject};

use crate::session::{session_ref_key, SessionRecord};
use crate::store::backend::{RefUpdate, StorageError};
use crate::store::{Store, StoreError};

pub use tapes_protocol::signed::RefSignature;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("conflict: session {id} on the remote moved on (it is at {}, your base is {}); run `tapes pull {id}` to refresh your base, or `tapes branch`/`tapes fork` to keep your work as a new session", short(.current), short(.expected))]
    Conflict {
        id: String,
        expected: Option<NodeId>,
        current: Option<NodeId>,
    },
    #[error("remote {name}: {source}")]
    Store { name: String, source: StoreError },
    #[error("remote {name} sent node {id}, which does not verify: {why}; nothing was stored")]
    BadObject {
        name: String,
        id: NodeId,
        why: String,
    },
    #[error("remote {name} refused the update of session {id}: {why}")]
    Unauthorized {
        name: String,
        id: String,
        why: String,
    },
    #[error("remote {name} refused the update of session {id}: its new head {head} does not extend the head {expected} it holds, so it would lose history (a session only moves forward); keep the other history as a new session with `tapes branch`")]
    NotForward {
        name: String,
        id: String,
        expected: String,
        head: String,
    },
    #[error("remote {name} does not have node {id} of the session it lists; the remote store is damaged (`tapes fsck` there)")]
    Missing { name: String, id: NodeId },
    /// The peer behind the remote refused, could not be reached, or broke the protocol (its
    /// message names the peer already).
    #[error(transparent)]
    Peer(Box<crate::peer::PeerError>),
}

fn short(id: &Option<NodeId>) -> String {
    id.map_or("nothing".into(), |i| i.short())
}

/// Everything a push sends, built once by `transfer::plan_push` and sent as is by every transport: a
/// path remote applies it, a peer's `tapes serve` and a relay receive it over `tapes/sync/3`
/// (which adds the signed entry and share records around it).
#[derive(Debug, Clone)]
pub struct PushPlan {
    pub session: SessionId,
    /// The head the remote is expected to hold (`None`: a session new to it).
    pub base: Option<NodeId>,
    /// The nodes after `base`, root first, as they leave (paths reduced, SPEC §11.3).
    pub objects: Vec<StoredObject>,
    /// The record as it leaves (no local source path), which the signature covers.
    pub record: SessionRecord,
    pub signature: RefSignature,
}

/// What push and pull need from the other side.
pub trait Remote: Send + Sync {
    fn name(&self) -> &str;

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, RemoteError>;

    /// The objects of session `session`'s chain ending at `head` that `have` says are missing
    /// here, root first. Stops walking at the first node `have` reports present (its ancestors
    /// are present too).
    fn fetch_chain(
        &self,
        session: &SessionId,
        head: &NodeId,
        have: &mut dyn FnMut(&NodeId) -> bool,
    ) -> Result<Vec<StoredObject>, RemoteError>;

    /// Stores `objects`, then sets session `id` to `record` if the remote's head for it is still
    /// `expected` (`None`: the session must not exist there yet). `signature` must be the
    /// owner's over exactly this update.
    /// Sends a push built by `transfer::plan_push`.
    fn push(&self, plan: &PushPlan) -> Result<u64, RemoteError>;
}

/// Another tapes home reachable as a path.
pub struct PathRemote {
    name: String,
    store: Arc<Store>,
}

impl PathRemote {
    /// Opens the store of the tapes home at `home` (its `store/` directory).
    pub fn open(name: &str, home: &Path) -> Result<PathRemote, RemoteError> {
        let store = Store::open(&home.join("store")).map_err(|source| RemoteError::Store {
            name: name.into(),
            source,
        })?;
        Ok(PathRemote {
            name: name.into(),
            store: Arc::new(store),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    fn err(&self, source: StoreError) -> RemoteError {
        RemoteError::Store {
            name: self.name.clone(),
            source,
        }
    }
}

impl Remote for PathRemote {
    fn name(&self) -> &str {
        &self.name
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, RemoteError> {
        self.store.session(id).map_err(|e| self.err(e))
    }

    fn fetch_chain(
        &self,
        _session: &SessionId,
        head: &NodeId,
        have: &mut dyn FnMut(&NodeId) -> bool,
    ) -> Result<Vec<StoredObject>, RemoteError> {
        // A store walks from the head itself; the session only names what is asked for.
        let mut out = Vec::new();
        let mut next = Some(*head);
        let mut reader = self.store.storage().chain_reader();
        while let Some(id) = next {
            if have(&id) {
                break;
            }
            let bytes = reader
                .get(&id)
                .map_err(|e| self.err(e.into()))?
                .ok_or_else(|| RemoteError::Missing {
                    name: self.name.clone(),
                    id,
                })?;
            next = StoredObject::parent_of(&bytes).map_err(|e| RemoteError::BadObject {
                name: self.name.clone(),
                id,
                why: e.to_string(),
            })?;
            out.push(StoredObject { id, bytes });
        }
        out.reverse();
        Ok(out)
    }

    fn push(&self, plan: &PushPlan) -> Result<u64, RemoteError> {
        let moved = apply_push(
            &self.store,
            &self.name,
            &plan.session,
            plan.base.as_ref(),
            &plan.objects,
            &plan.record,
            &plan.signature,
            &[],
        )?;
        Ok(if moved { plan.objects.len() as u64 } else { 0 })
    }
}

/// The receiving side of a push, for any remote that is a store (a path remote, a peer's
/// `tapes serve`): checks the owner's signature over the update and every object, then moves
/// the ref by compare-and-swap. `name` is how errors name the store. `with` are refs that
/// must move in the same transaction (a peer stores the owner's record signature beside the
/// record, so no reader ever sees one without the other). True when the ref moved; false when
/// the remote already held exactly this record (a retried push: nothing changed).
pub fn apply_push(
    store: &Store,
    name: &str,
    id: &SessionId,
    expected: Option<&NodeId>,
    objects: &[StoredObject],
    record: &SessionRecord,
    signature: &RefSignature,
    with: &[RefUpdate],
) -> Result<bool, RemoteError> {
    let err = |source: StoreError| RemoteError::Store {
        name: name.to_string(),
        source,
    };
    // Only the session's owner moves its ref, and only with a signature over this update.
    let unauthorized = |why: String| RemoteError::Unauthorized {
        name: name.to_string(),
        id: id.short(),
        why,
    };
    if record.owner != Some(signature.signer) {
        return Err(unauthorized(
            "the update is not signed by the owner the record names".into(),
        ));
    }
    if !signature.verify(id, expected, record) {
        return Err(unauthorized("the owner's signature does not verify".into()));
    }
    // The remote verifies what it is given, as any peer would.
    for object in objects {
        StoredObject::verify(&object.id, &object.bytes).map_err(|e| RemoteError::BadObject {
            name: "(pushed)".into(),
            id: object.id,
            why: e.to_string(),
        })?;
    }
    let conflict = |current: Option<NodeId>| RemoteError::Conflict {
        id: id.short(),
        expected: expected.copied(),
        current,
    };
    let raw = store.session_raw(id).map_err(err)?;
    let current = match &raw {
        Some(bytes) => Some(
            SessionRecord::decode(bytes)
                .map_err(|source| {
                    err(StoreError::BadRecord {
                        id: id.to_hex(),
                        source,
                    })
                })?
                .head,
        ),
        None => None,
    };
    // The remote already holds exactly this record (a push retried after its answer was lost,
    // or run twice): nothing to move and nothing to report as a conflict (SPEC.md §10).
    if raw.as_deref() == Some(record.encode().as_slice()) {
        return Ok(false);
    }
    if current.as_ref() != expected {
        return Err(conflict(current));
    }
    // A ref only moves forward (SPEC §3.4): the new head must descend from the one held,
    // through the pushed nodes and then the nodes already here.
    if let Some(expected) = expected {
        let parents: std::collections::HashMap<NodeId, Option<NodeId>> = objects
            .iter()
            .filter_map(|o| Some((o.id, StoredObject::parent_of(&o.bytes).ok()?)))
            .collect();
        let mut next = Some(record.head);
        let mut seen = std::collections::HashSet::new();
        let forward = loop {
            let Some(at) = next else { break false };
            if &at == expected {
                break true;
            }
            if !seen.insert(at) {
                break false;
            }
            next = match parents.get(&at) {
                Some(parent) => *parent,
                None => match store.storage().get_object(&at).map_err(|e| err(e.into()))? {
                    Some(bytes) => StoredObject::parent_of(&bytes).ok().flatten(),
                    None => None,
                },
            };
        };
        if !forward {
            return Err(RemoteError::NotForward {
                name: name.to_string(),
                id: id.short(),
                expected: expected.short(),
                head: record.head.short(),
            });
        }
    }
    if let Some(bytes) = &raw {
        let owner = SessionRecord::decode(bytes).ok().and_then(|r| r.owner);
        if owner.is_some() && owner != Some(signature.signer) {
            return Err(unauthorized(
                "the session on the remote belongs to someone else; fork it".into(),
            ));
        }
    }
    let mut updates = vec![RefUpdate {
        key: session_ref_key(id),
        expected: raw,
        new: Some(record.encode()),
    }];
    updates.extend_from_slice(with);
    match store.commit(objects, &updates) {
        Ok(_) => Ok(true),
        // Someone else's push landed between our read and our write: same answer.
        Err(StoreError::Storage(StorageError::Conflict { current, .. })) => {
            let head = current
                .and_then(|bytes| SessionRecord::decode(&bytes).ok())
                .map(|r| r.head);
            Err(conflict(head))
        }
        Err(e) => Err(err(e)),
    }
}
