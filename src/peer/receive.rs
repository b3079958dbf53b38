//! Receiving: everything a peer sends is checked here before it is stored (SPEC.md §15.4).
//!
//! * Nodes arrive as a chain, root first: each object's id is recomputed from its bytes, must
//!   be the next id the sender announced, and its parent must be the node before it. A batch
//!   is stored only when every object in it passed, so a bad object leaves nothing of its batch
//!   behind; earlier batches are whole, verified, parent-first prefixes of the chain, which is
//!   what lets a rerun resume after them.
//! * Session records must carry their owner's signature; a ref only moves forward (the new
//!   chain contains the head we had), never onto another owner's session or one of ours.
//! * Share records must be signed by the sharer, who must own the session.
//! * Manifests extend a team chain only through the verified chain rules of `teams`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use tapes_protocol::batch_key::{ContentKey, KeyId};
use tapes_protocol::bundle::SessionEntry;
use tapes_protocol::manifest::SignedManifest;
use tapes_protocol::sync::{
    batch_spans, decode_batch, keyed_batch_of, plain_batch_of, FrameError, Objects,
};
use tapes_protocol::team_chain::TeamChain;
use tapes_protocol::{MemberId, NodeId, SessionId, TeamId};

pub use tapes_protocol::chain_check::ChainCheck;
pub use tapes_protocol::signed::check_entry;

use super::PeerError;
use crate::identity::Identity;
use crate::session::{session_ref_key, SessionRecord};
use crate::share::access::{encode_signature, signature_key};
use crate::share::{share_key, SignedShare};
use crate::store::backend::RefUpdate;
use crate::store::{Store, StoreError};
use crate::sync::remote::RefSignature;
use crate::team;
use crate::team::keyring::{self, KeyRing};

pub(super) const KEYED_HERE: &str =
    "a batch sealed with a content key that was not sent before it on its stream (SPEC.md §15.3)";

/// Team key rings, opened once per team per sync.
#[derive(Default)]
pub struct Rings {
    rings: HashMap<TeamId, Arc<KeyRing>>,
    /// Content keys of keyed batches (SPEC.md §15.3), unwrapped once per connection.
    keys: HashMap<KeyId, Arc<ContentKey>>,
}

impl Rings {
    /// The key ring of `team`, opened on first use.
    fn ring(
        &mut self,
        store: &Store,
        identity: &Identity,
        team: &TeamId,
    ) -> Result<Arc<KeyRing>, String> {
        if let Some(ring) = self.rings.get(team) {
            return Ok(ring.clone());
        }
        let chain = team::load(store, team).map_err(|e| e.to_string())?;
        let me = MemberId(identity.verifying_key().to_bytes());
        let ring = Arc::new(
            KeyRing::for_member(&chain, &me, identity.age_identity()).map_err(|e| e.to_string())?,
        );
        self.rings.insert(*team, ring.clone());
        Ok(ring)
    }

    /// Opens a batch: plain, or sealed to a team this node is in.
    pub fn open(
        &mut self,
        store: &Store,
        identity: &Identity,
        objects: Objects,
    ) -> Result<Vec<Vec<u8>>, String> {
        match objects {
            Objects::Plain(list) => Ok(list),
            Objects::Sealed { team, sealed } => {
                let plain = self.open_sealed(store, identity, &team, &sealed)?;
                decode_batch(&plain).map_err(|e| e.to_string())
            }
            Objects::Keyed { .. } => Err(KEYED_HERE.into()),
        }
    }

    /// The content key that travelled as `wrapped`, sealed to `team` (SPEC.md §15.3): opened
    /// with the team's ring the first time, then taken from memory.
    pub fn content_key(
        &mut self,
        store: &Store,
        identity: &Identity,
        team: &TeamId,
        wrapped: &[u8],
    ) -> Result<Arc<ContentKey>, String> {
        let id = KeyId::of_wrapped(wrapped);
        if let Some(key) = self.keys.get(&id) {
            return Ok(key.clone());
        }
        let raw = self.open_sealed(store, identity, team, wrapped)?;
        let key = Arc::new(ContentKey::new(&raw, wrapped).map_err(|e| e.to_string())?);
        self.keys.insert(id, key.clone());
        Ok(key)
    }

    /// Opens bytes sealed to `team` (a batch, or a record a relay keeps sealed).
    pub fn open_sealed(
        &mut self,
        store: &Store,
        identity: &Identity,
        team: &TeamId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, String> {
        let ring = self.ring(store, identity, team)?;
        open_with(&ring, team, sealed)
    }
}

fn open_with(ring: &KeyRing, team: &TeamId, sealed: &[u8]) -> Result<Vec<u8>, String> {
    keyring::open_encoded(ring, team, sealed).map_err(|e| e.to_string())
}

/// [`Rings::open`] for streams sharing one set of rings: the lock is held only to look the
/// ring up, so that streams decrypt their batches at the same time. Keyed batches are opened
/// in place where they arrive ([`Received::keyed_frame`]), never here.
pub fn open_batch(
    rings: &Mutex<Rings>,
    store: &Store,
    identity: &Identity,
    objects: Objects,
) -> Result<Received, String> {
    let plain = match objects {
        Objects::Plain(list) => return Ok(Received::from_list(list)),
        Objects::Keyed { .. } => return Err(KEYED_HERE.into()),
        Objects::Sealed { team, sealed } => {
            let ring = rings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ring(store, identity, &team)?;
            open_with(&ring, &team, &sealed)?
        }
    };
    let end = plain.len();
    Received::in_place(plain, 0..end).map_err(|e| e.to_string())
}

/// A batch of objects as it was received: one buffer (a plain batch frame as it arrived, or an
/// opened batch's plaintext) and where each object lies in it. Objects are checked and stored
/// from there, with no buffer of their own (SPEC.md §15.4).
pub struct Received {
    bytes: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl Received {
    /// The batch encoded in `bytes[within]` (`postcard(Vec<Vec<u8>>)`).
    pub fn in_place(bytes: Vec<u8>, within: Range<usize>) -> Result<Received, FrameError> {
        let from = within.start;
        let mut spans = batch_spans(bytes.get(within).unwrap_or_default())?;
        if from > 0 {
            spans
                .iter_mut()
                .for_each(|s| *s = s.start + from..s.end + from);
        }
        Ok(Received { bytes, spans })
    }

    /// A plain batch frame's payload ([`crate::peer::frames::Incoming::PlainBatch`]).
    pub fn plain_frame(payload: Vec<u8>) -> Result<Received, FrameError> {
        let from = payload.len() - plain_batch_of(&payload).map_or(0, <[u8]>::len);
        let end = payload.len();
        Received::in_place(payload, from..end)
    }

    /// A keyed batch frame's payload ([`crate::peer::frames::Incoming::KeyedBatch`]), opened
    /// in place with the stream's content key as batch `index` of `session`'s stream.
    pub fn keyed_frame(
        mut payload: Vec<u8>,
        key: &ContentKey,
        team: &TeamId,
        session: &SessionId,
        index: u64,
    ) -> Result<Received, String> {
        let (nonce, range) = keyed_batch_of(&payload).ok_or("not a keyed batch")?;
        let plain = key
            .open_in_place(team, session, index, &nonce, &mut payload[range.clone()])
            .map_err(|e| e.to_string())?
            .len();
        Received::in_place(payload, range.start..range.start + plain).map_err(|e| e.to_string())
    }

    /// A batch that arrived decoded, one buffer per object.
    pub fn from_list(list: Vec<Vec<u8>>) -> Received {
        let mut bytes = Vec::with_capacity(list.iter().map(Vec::len).sum());
        let spans = list
            .iter()
            .map(|o| {
                bytes.extend_from_slice(o);
                bytes.len() - o.len()..bytes.len()
            })
            .collect();
        Received { bytes, spans }
    }

    /// Checks every object as the next of `check`'s chain, in order; the first that fails is
    /// named (its id, why) and the batch is refused whole.
    pub fn check(self, check: &mut ChainCheck) -> Result<Verified, (String, String)> {
        let mut objects = Vec::with_capacity(self.spans.len());
        for span in self.spans {
            objects.push((check.check_in_place(&self.bytes[span.clone()])?, span));
        }
        Ok(Verified {
            bytes: self.bytes,
            objects,
        })
    }
}

/// A [`Received`] batch whose objects all passed: each object's id and where it lies.
pub struct Verified {
    bytes: Vec<u8>,
    objects: Vec<(NodeId, Range<usize>)>,
}

impl Verified {
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Bytes of the objects.
    pub fn size(&self) -> usize {
        self.objects.iter().map(|(_, r)| r.len()).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &[u8])> {
        self.objects
            .iter()
            .map(|(id, range)| (id, &self.bytes[range.clone()]))
    }

    /// The buffer, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }
}

/// What applying a session entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionApplied {
    New,
    Updated,
    Unchanged,
    /// Ours, or we are ahead / diverged: kept what we have.
    Kept,
}

/// Moves the local ref of a received session to `entry` (after its nodes were stored and
/// flushed): only forward, and only for sessions that are not ours. `forward` says the new
/// chain contains the head we had.
///
/// The update is atomic but not yet durable: the caller flushes once for a whole group of
/// sessions (a fetch of 3,000 sessions flushed after each one spent most of its time in
/// fsync). A crash before that flush loses some of the group's refs, never their nodes, and
/// the next fetch asks for those sessions again.
pub fn apply_session(
    store: &Store,
    me: &MemberId,
    entry: &SessionEntry,
    record: &SessionRecord,
    forward: bool,
) -> Result<SessionApplied, StoreError> {
    let (applied, updates) = plan_session(store, me, entry, record, forward)?;
    if !updates.is_empty() {
        store.storage().update_refs(&updates)?;
    }
    Ok(applied)
}

/// [`apply_session`] for a group of received sessions (`forward` for each): one atomic ref
/// update for the whole group instead of one per session (a fetch of ~3,000 sessions spent a
/// sixth of its CPU in sled's transactions and their log writes). When another writer moved
/// one of the refs meanwhile, each session is applied on its own, as [`apply_session`] does.
pub fn apply_sessions(
    store: &Store,
    me: &MemberId,
    group: &[(&SessionEntry, &SessionRecord)],
) -> Result<Vec<SessionApplied>, StoreError> {
    let mut outcome = Vec::with_capacity(group.len());
    let mut updates = Vec::new();
    for (entry, record) in group {
        let (applied, planned) = plan_session(store, me, entry, record, true)?;
        outcome.push(applied);
        updates.extend(planned);
    }
    if commit_together(store, &updates)? {
        return Ok(outcome);
    }
    group
        .iter()
        .map(|(e, r)| apply_session(store, me, e, r, true))
        .collect()
}

/// Commits ref updates planned one by one as one atomic update; false when they cannot go
/// together (two plans for one key, or another writer moved a ref since they were planned)
/// and must be applied on their own.
fn commit_together(store: &Store, updates: &[RefUpdate]) -> Result<bool, StoreError> {
    if updates.is_empty() {
        return Ok(true);
    }
    let mut keys = std::collections::HashSet::new();
    if !updates.iter().all(|u| keys.insert(&u.key)) {
        return Ok(false);
    }
    match store.storage().update_refs(updates) {
        Ok(()) => Ok(true),
        Err(crate::store::backend::StorageError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What applying a received session does: its outcome and the ref updates that make it
/// (none unless it is new or moves forward).
fn plan_session(
    store: &Store,
    me: &MemberId,
    entry: &SessionEntry,
    record: &SessionRecord,
    forward: bool,
) -> Result<(SessionApplied, Vec<RefUpdate>), StoreError> {
    if crate::session::tombstone::is_removed(store, &entry.id)? {
        // removed here with `tapes rm` (SPEC §3.5)
        return Ok((SessionApplied::Kept, Vec::new()));
    }
    let current = store.session_raw(&entry.id)?;
    if let Some(raw) = &current {
        if raw == &entry.record {
            return Ok((SessionApplied::Unchanged, Vec::new()));
        }
        let local = SessionRecord::decode(raw).ok();
        let local_owner = local.as_ref().and_then(|r| r.owner);
        if local_owner == Some(*me) || local_owner != record.owner || !forward {
            return Ok((SessionApplied::Kept, Vec::new()));
        }
    }
    let signature = RefSignature {
        signer: entry.signer,
        signature: entry.signature.as_slice().try_into().unwrap_or([0; 64]),
    };
    let updates = vec![
        RefUpdate {
            key: session_ref_key(&entry.id),
            expected: current.clone(),
            new: Some(entry.record.clone()),
        },
        RefUpdate {
            key: signature_key(&entry.id),
            expected: store.storage().get_ref(&signature_key(&entry.id))?,
            new: Some(encode_signature(&signature)),
        },
    ];
    let applied = if current.is_some() {
        SessionApplied::Updated
    } else {
        SessionApplied::New
    };
    Ok((applied, updates))
}

/// Stores a received share record if it is valid and newer than ours. Returns whether it
/// changed anything. Like [`apply_session`], the caller flushes.
pub fn apply_share(store: &Store, bytes: &[u8]) -> Result<bool, String> {
    match plan_share(store, SignedShare::decode(bytes), bytes)? {
        Some((update, _)) => {
            store
                .storage()
                .update_refs(&[update])
                .map_err(|e| e.to_string())?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// [`apply_share`] for every share record a fetch received, in one atomic ref update (each on
/// its own when another writer moved one meanwhile). Per record: the session whose share it
/// stored (`None`: ours was as new), or why it was skipped.
pub fn apply_shares(store: &Store, list: &[Vec<u8>]) -> Vec<Result<Option<SessionId>, String>> {
    let mut outcome = Vec::with_capacity(list.len());
    let mut updates = Vec::new();
    // Their signatures checked in batches.
    let decoded = SignedShare::decode_many(list);
    let planned: Vec<_> = decoded
        .into_iter()
        .zip(list)
        .map(|(share, bytes)| plan_share(store, share, bytes))
        .collect();
    for plan in planned {
        outcome.push(plan.map(|planned| {
            planned.map(|(update, session)| {
                updates.push(update);
                session
            })
        }));
    }
    if let Ok(true) = commit_together(store, &updates) {
        return outcome;
    }
    // One by one: a storage error is then reported by each record it stops.
    list.iter()
        .map(|bytes| {
            let Some((update, session)) = plan_share(store, SignedShare::decode(bytes), bytes)?
            else {
                return Ok(None);
            };
            store
                .storage()
                .update_refs(&[update])
                .map_err(|e| e.to_string())?;
            Ok(Some(session))
        })
        .collect()
}

/// The ref update that stores a received share record and its session, or `None` when ours
/// is as new.
fn plan_share(
    store: &Store,
    share: Result<SignedShare, tapes_protocol::signed::ShareError>,
    bytes: &[u8],
) -> Result<Option<(RefUpdate, SessionId)>, String> {
    let share = share.map_err(|e| e.to_string())?;
    let record = &share.record;
    if crate::session::tombstone::is_removed(store, &record.session).map_err(|e| e.to_string())? {
        return Ok(None);
    }
    if let Some(session) = store.session(&record.session).map_err(|e| e.to_string())? {
        if session.owner != Some(record.sharer) {
            return Err("it is signed by someone who does not own the session".into());
        }
    }
    let key = share_key(&record.session, &record.audience);
    let current = store.storage().get_ref(&key).map_err(|e| e.to_string())?;
    if let Some(raw) = &current {
        // Ours was verified when it was stored (`decode_stored`).
        if let Ok(ours) = SignedShare::decode_stored(raw) {
            if ours.record.shared_ms >= record.shared_ms {
                return Ok(None);
            }
        }
    }
    let session = record.session;
    Ok(Some((
        RefUpdate {
            key,
            expected: current,
            new: Some(bytes.to_vec()),
        },
        session,
    )))
}

/// Applies a team's received manifests: extends a known chain, or stores a new chain when it
/// is whole from genesis and lists this node. Returns how many versions were new.
pub fn apply_manifests(
    store: &Store,
    me: &MemberId,
    team: &TeamId,
    mut manifests: Vec<SignedManifest>,
) -> Result<usize, PeerError> {
    manifests.sort_by_key(|m| m.manifest.version);
    match team::load(store, team) {
        Ok(_) => {
            let results = team::receive(store, team, manifests)?;
            let mut new = 0;
            for result in results {
                match result {
                    Ok(tapes_protocol::team_chain::Applied::AlreadyKnown) => {}
                    Ok(_) => new += 1,
                    Err(e) => {
                        return Err(PeerError::BadObject {
                            peer: String::new(),
                            what: "manifest of team",
                            id: team.short(),
                            why: e.to_string(),
                        })
                    }
                }
            }
            Ok(new)
        }
        Err(team::TeamError::NotFound(_)) => {
            let count = manifests.len();
            let chain =
                TeamChain::from_versions(manifests, None).map_err(|e| PeerError::BadObject {
                    peer: String::new(),
                    what: "manifest chain of team",
                    id: team.short(),
                    why: e.to_string(),
                })?;
            if &chain.team_id() != team || chain.head().manifest.member(me).is_none() {
                return Ok(0);
            }
            team::store_chain(store, &chain)?;
            Ok(count)
        }
        Err(e) => Err(e.into()),
    }
}

/// Where a fetch of `session` can start: the first index of `ids` (root first) we do not
/// have. Everything before it is stored (chains are stored parent first).
pub fn first_missing(store: &Store, ids: &[NodeId]) -> Result<usize, StoreError> {
    // A linear scan, not a binary search: a node in the middle may be present for another
    // reason (a fork shares it), and a hole before it must still be filled.
    for (i, id) in ids.iter().enumerate() {
        if !store.has_node(id)? {
            return Ok(i);
        }
    }
    Ok(ids.len())
}

/// The local head of a session, if we have it.
pub fn local_head(store: &Store, id: &SessionId) -> Result<Option<NodeId>, StoreError> {
    Ok(store.session(id)?.map(|r| r.head))
}
