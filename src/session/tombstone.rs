//! Removing a session: `tapes rm`, `tapes rm --undo`, `tapes gc`, and the local tombstone that
//! keeps a removed session from coming back (SPEC.md §3.4, §3.5, §4.1, §6 rule 8).
//!
//! [`remove`] is the one deliberate exception to "a ref only moves forward": in one
//! compare-and-swap transaction it deletes the session's ref and the refs that only make sense
//! with it (its owner signature `sig/`, its share records `share/`, its read marks `read/`)
//! and writes `tombstone/<session>`, which keeps a copy of all of them. Its nodes stay until
//! the next collection ([`collect`], `tapes gc`, or `tapes rm --purge`), so [`undo`] can put
//! the session back exactly as it was. A collection removes every node no other session
//! reaches and then forgets the kept copy (the tombstone keeps the session id, the head and
//! the time only), so nothing of the session's content or record survives on disk in tapes'
//! files.
//!
//! The tombstone is what import, watch and fetch consult ([`is_removed`]): a transcript still
//! on disk, or a peer that still holds the session, never brings it back. A signed tombstone
//! from the owner (`tapes rm --everywhere`, [`tapes_protocol::tombstone`]) is kept in it to be
//! published to peers and relays; one received from a peer is applied by [`apply_signed`].

use serde::{Deserialize, Serialize};
use tapes_protocol::tombstone::{SignedTombstone, Tombstone, TombstoneError};
use tapes_protocol::{MemberId, NodeId, SessionId};

use crate::session::SessionRecord;
use crate::store::backend::{RefUpdate, StorageError};
use crate::store::gc::{self, Collected, GcError};
use crate::store::{keys, Store, StoreError};

const VERSION: u8 = 1;

/// The value of `tombstone/<session>`: `0x01 || postcard(LocalTombstone)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTombstone {
    pub removed_ms: i64,
    /// The head the session had.
    pub head: NodeId,
    /// The session's owner (`None`: this store's identity).
    pub owner: Option<MemberId>,
    /// The refs removed with the session (its record first), for `--undo`; emptied by the
    /// collection that removes its nodes.
    pub kept: Vec<(Vec<u8>, Vec<u8>)>,
    /// The owner's signed tombstone, when the removal is everywhere.
    pub signed: Option<Vec<u8>>,
}

impl LocalTombstone {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<LocalTombstone, String> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((v, _)) => Err(format!(
                "tombstone version {v} is newer than this tapes understands; upgrade tapes"
            )),
            None => Err("empty tombstone".into()),
        }
    }

    /// Whether `--undo` can still restore it.
    pub fn undoable(&self) -> bool {
        !self.kept.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gc(#[from] GcError),
    #[error("session {0} was changed by another tapes process while it was being removed; nothing was removed, run the command again")]
    Raced(String),
    #[error("session {0} is not removed; `tapes sessions` lists it")]
    NotRemoved(String),
    #[error("session {0} cannot be restored: `tapes gc` (or `rm --purge`) removed its messages since; fetch it again from a teammate who has it, after `tapes rm --forget {0}`")]
    Collected(String),
    #[error("session {0} exists again (it was re-created since it was removed); nothing restored")]
    Exists(String),
    #[error("tombstone of session {id} is damaged: {why}; run `tapes fsck`")]
    Damaged { id: String, why: String },
    #[error("session {session} is owned by {owner}, not by you: only its owner can remove it everywhere (remove your copy with `tapes rm {session}`)")]
    NotYours { session: String, owner: String },
    #[error("refused tombstone: session {session} changed after the tombstone was signed (an old tombstone replayed); nothing was removed")]
    Replayed { session: String },
    #[error("refused tombstone: {0}; nothing was removed")]
    Refused(#[from] TombstoneError),
}

/// What [`remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub id: SessionId,
    pub messages: u64,
    pub title: Option<String>,
    /// Nodes only this session reached: what a collection will remove.
    pub exclusive_nodes: usize,
    /// Filled when the removal collected at once (`--purge`).
    pub collected: Option<Collected>,
    /// The signed tombstone to publish (`--everywhere`).
    pub signed: Option<Vec<u8>>,
}

/// How to remove.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoveOptions<'k> {
    /// Collect at once instead of at the next `tapes gc` (no undo).
    pub purge: bool,
    /// Sign a tombstone as this identity, the session's owner, for peers and relays; the
    /// removal is also recorded in the audit log of every team it was shared with (SPEC.md
    /// §18).
    pub everywhere: Option<&'k crate::identity::Identity>,
}

/// Is `session` removed here (a tombstone exists)? Import, watch and fetch skip it.
pub fn is_removed(store: &Store, session: &SessionId) -> Result<bool, StoreError> {
    Ok(store
        .storage()
        .get_ref(&keys::tombstone(session))?
        .is_some())
}

/// The tombstone of `session`, if any.
pub fn tombstone(
    store: &Store,
    session: &SessionId,
) -> Result<Option<LocalTombstone>, RemoveError> {
    match store
        .storage()
        .get_ref(&keys::tombstone(session))
        .map_err(StoreError::from)?
    {
        None => Ok(None),
        Some(raw) => LocalTombstone::decode(&raw)
            .map(Some)
            .map_err(|why| RemoveError::Damaged {
                id: session.to_hex(),
                why,
            }),
    }
}

/// Every tombstone, in session order.
pub fn tombstones(store: &Store) -> Result<Vec<(SessionId, LocalTombstone)>, RemoveError> {
    let mut out = Vec::new();
    for entry in store.storage().refs(keys::TOMBSTONE) {
        let (key, value) = entry.map_err(StoreError::from)?;
        let hex = std::str::from_utf8(&key[keys::TOMBSTONE.len()..]).unwrap_or("");
        let Ok(id) = hex.parse::<SessionId>() else {
            continue;
        };
        let t = LocalTombstone::decode(&value).map_err(|why| RemoveError::Damaged {
            id: hex.to_string(),
            why,
        })?;
        out.push((id, t));
    }
    Ok(out)
}

/// Removes `session` from this store: its ref and the refs that go with it, replaced by a
/// tombstone, in one transaction (then flushed). Its nodes go at the next collection, or now
/// with `purge`.
pub fn remove(
    store: &Store,
    session: &SessionId,
    now_ms: i64,
    options: RemoveOptions<'_>,
) -> Result<Removed, RemoveError> {
    let raw = store
        .session_raw(session)?
        .ok_or_else(|| StoreError::SessionNotFound(session.to_hex()))?;
    let record = SessionRecord::decode(&raw).map_err(|source| StoreError::BadRecord {
        id: session.to_hex(),
        source,
    })?;
    let signed = match options.everywhere {
        None => None,
        Some(identity) => {
            let key = identity.signing_key();
            let me = MemberId(key.verifying_key().to_bytes());
            let owner = record.owner.or(store.local_owner()?);
            if owner.is_some_and(|o| o != me) {
                return Err(RemoveError::NotYours {
                    session: session.to_hex(),
                    owner: owner.map(|o| o.to_hex()).unwrap_or_default(),
                });
            }
            Some(Tombstone::sign(key, *session, record.head, now_ms).encode())
        }
    };
    let mut kept = vec![(keys::session(session), raw.clone())];
    let mut updates = vec![RefUpdate {
        key: keys::session(session),
        expected: Some(raw),
        new: None,
    }];
    let mut related = Vec::new();
    if let Some(sig) = store
        .storage()
        .get_ref(&keys::sig(session))
        .map_err(StoreError::from)?
    {
        related.push((keys::sig(session), sig));
    }
    for prefix in [keys::shares_of(session), keys::reads_of(session)] {
        for entry in store.storage().refs(&prefix) {
            related.push(entry.map_err(StoreError::from)?);
        }
    }
    for (key, value) in related {
        updates.push(RefUpdate {
            key: key.clone(),
            expected: Some(value.clone()),
            new: None,
        });
        kept.push((key, value));
    }
    let exclusive_nodes = exclusive_nodes(store, session, &record.head)?;
    let stone = LocalTombstone {
        removed_ms: now_ms,
        head: record.head,
        owner: record.owner,
        kept,
        signed: signed.clone(),
    };
    // A tombstone left from an earlier removal of the same id (re-created since by hand) is
    // replaced.
    let previous = store
        .storage()
        .get_ref(&keys::tombstone(session))
        .map_err(StoreError::from)?;
    updates.push(RefUpdate {
        key: keys::tombstone(session),
        expected: previous,
        new: Some(stone.encode()),
    });
    apply(store, session, &updates)?;
    if let Some(identity) = options.everywhere {
        audit_removal(store, identity, session, &stone.kept, now_ms);
    }
    let collected = if options.purge {
        Some(collect(store)?)
    } else {
        None
    };
    Ok(Removed {
        id: *session,
        messages: record.summary.messages,
        title: record.title,
        exclusive_nodes,
        collected,
        signed,
    })
}

/// Records the removal everywhere in the log of each team the session was shared with (its
/// share records are among the refs removed with it). Best effort, as every audit hook: the
/// removal stands even when a log cannot be written, which the log reports.
fn audit_removal(
    store: &Store,
    identity: &crate::identity::Identity,
    session: &SessionId,
    removed: &[(Vec<u8>, Vec<u8>)],
    now_ms: i64,
) {
    let me = MemberId(identity.verifying_key().to_bytes());
    let teams = removed.iter().filter_map(|(_, value)| {
        match crate::share::SignedShare::decode_stored(value)
            .ok()?
            .record
            .audience
        {
            crate::share::Audience::Team(team) => Some(team),
            crate::share::Audience::Public => None,
        }
    });
    for team in teams.collect::<std::collections::BTreeSet<_>>() {
        let event = crate::audit::Event {
            action: tapes_protocol::audit::AuditAction::Delete,
            actor: me,
            actor_name: identity.profile.name.clone(),
            session: Some(*session),
            detail: "everywhere".into(),
        };
        if let Err(e) = crate::audit::record(store, identity, &team, event, now_ms) {
            tracing::warn!(error = %e, session = %session.short(), "could not append a removal to the audit log");
        }
    }
}

/// The nodes of the chain at `head` that no session but `session` reaches.
fn exclusive_nodes(store: &Store, session: &SessionId, head: &NodeId) -> Result<usize, StoreError> {
    let chain = store.chain_ids(head).unwrap_or_default();
    let mut shared = std::collections::HashSet::new();
    for (id, record) in store.sessions()? {
        if &id == session {
            continue;
        }
        for node in store.chain_ids(&record.head).unwrap_or_default() {
            shared.insert(node);
        }
    }
    Ok(chain.iter().filter(|n| !shared.contains(n)).count())
}

fn apply(store: &Store, session: &SessionId, updates: &[RefUpdate]) -> Result<(), RemoveError> {
    match store.storage().update_refs(updates) {
        Ok(()) => {}
        Err(StorageError::Conflict { .. }) => return Err(RemoveError::Raced(session.to_hex())),
        Err(e) => return Err(StoreError::from(e).into()),
    }
    store.storage().flush().map_err(StoreError::from)?;
    Ok(())
}

/// Puts a removed session back as it was, while its nodes remain.
pub fn undo(store: &Store, session: &SessionId) -> Result<SessionRecord, RemoveError> {
    let raw = store
        .storage()
        .get_ref(&keys::tombstone(session))
        .map_err(StoreError::from)?
        .ok_or_else(|| RemoveError::NotRemoved(session.to_hex()))?;
    let stone = LocalTombstone::decode(&raw).map_err(|why| RemoveError::Damaged {
        id: session.to_hex(),
        why,
    })?;
    if !stone.undoable() {
        return Err(RemoveError::Collected(session.to_hex()));
    }
    // Every node of the chain must still be here: a ref never names a missing object.
    if store.chain_ids(&stone.head).is_err() {
        return Err(RemoveError::Collected(session.to_hex()));
    }
    if store.session_raw(session)?.is_some() {
        return Err(RemoveError::Exists(session.to_hex()));
    }
    let mut updates = vec![RefUpdate {
        key: keys::tombstone(session),
        expected: Some(raw),
        new: None,
    }];
    let mut record = None;
    for (key, value) in &stone.kept {
        if key == &keys::session(session) {
            record = SessionRecord::decode(value).ok();
        }
        updates.push(RefUpdate {
            key: key.clone(),
            expected: None,
            new: Some(value.clone()),
        });
    }
    let record = record.ok_or_else(|| RemoveError::Damaged {
        id: session.to_hex(),
        why: "it keeps no session record".into(),
    })?;
    apply(store, session, &updates)?;
    Ok(record)
}

/// Forgets a tombstone without restoring anything: the session may come back from its
/// transcript or a peer again.
pub fn forget(store: &Store, session: &SessionId) -> Result<(), RemoveError> {
    let raw = store
        .storage()
        .get_ref(&keys::tombstone(session))
        .map_err(StoreError::from)?
        .ok_or_else(|| RemoveError::NotRemoved(session.to_hex()))?;
    apply(
        store,
        session,
        &[RefUpdate {
            key: keys::tombstone(session),
            expected: Some(raw),
            new: None,
        }],
    )
}

/// Collects garbage (`tapes gc`): first the copies removed sessions keep for `--undo` are
/// dropped for every session whose head no remaining session reaches (their nodes are about
/// to go), then every unreachable object is removed (`store::gc`).
pub fn collect(store: &Store) -> Result<Collected, RemoveError> {
    let live = gc::live_objects(store)?;
    for (id, stone) in tombstones(store)? {
        if !stone.undoable() || live.contains(&stone.head) {
            continue;
        }
        let old = stone.encode();
        let forgotten = LocalTombstone {
            kept: Vec::new(),
            ..stone
        };
        apply(
            store,
            &id,
            &[RefUpdate {
                key: keys::tombstone(&id),
                expected: Some(old),
                new: Some(forgotten.encode()),
            }],
        )?;
    }
    Ok(gc::collect(store)?)
}

/// Applies a signed tombstone received from a peer or a relay (`--everywhere` elsewhere):
/// verified against this store's copy of the session (its id and owner) before anything
/// changes. Returns `Ok(true)` when the session was removed here, `Ok(false)` when there was
/// nothing to remove (not held, or removed already). Someone's fork of the session is a session of its own and
/// stays; nodes it shares stay with it.
pub fn apply_signed(
    store: &Store,
    session: &SessionId,
    bytes: &[u8],
    now_ms: i64,
) -> Result<bool, RemoveError> {
    let signed = SignedTombstone::decode(bytes)?;
    if &signed.tombstone.session != session {
        // Checked before anything is read: a tombstone is only ever about the session it names.
        signed.check(session, &signed.tombstone.owner)?;
    }
    let session = *session;
    // A session not held here is not recorded: without this store's copy there is no owner
    // to check the signature against, and an unchecked tombstone must not block anything.
    let Some(raw) = store.session_raw(&session)? else {
        return Ok(false);
    };
    let record = SessionRecord::decode(&raw).map_err(|source| StoreError::BadRecord {
        id: session.to_hex(),
        source,
    })?;
    let owner = match record.owner.or(store.local_owner()?) {
        Some(owner) => owner,
        None => {
            return Err(TombstoneError::NotOwner {
                session: session.to_hex(),
                signer: signed.tombstone.owner.to_hex(),
                owner: "this store (no identity yet)".into(),
            }
            .into())
        }
    };
    signed.check(&session, &owner)?;
    if record.updated_ms > signed.tombstone.removed_ms {
        return Err(RemoveError::Replayed {
            session: session.to_hex(),
        });
    }
    remove(store, &session, now_ms, RemoveOptions::default())?;
    // Record the owner's signed tombstone so this node can pass it on.
    if let Some(mut stone) = tombstone(store, &session)? {
        let old = stone.encode();
        stone.signed = Some(bytes.to_vec());
        apply(
            store,
            &session,
            &[RefUpdate {
                key: keys::tombstone(&session),
                expected: Some(old),
                new: Some(stone.encode()),
            }],
        )?;
    }
    Ok(true)
}

/// The signed tombstones this store holds (its own `--everywhere` removals and those received),
/// to pass on to peers and relays, with the session each is for.
pub fn signed_tombstones(store: &Store) -> Result<Vec<(SessionId, Vec<u8>)>, RemoveError> {
    Ok(tombstones(store)?
        .into_iter()
        .filter_map(|(id, t)| Some((id, t.signed?)))
        .collect())
}

/// Resolves a full id or unique prefix among removed sessions (for `--undo`, `--forget`).
pub fn resolve_removed(store: &Store, input: &str) -> Result<SessionId, RemoveError> {
    let prefix = tapes_protocol::id::normalize_prefix(input.trim())
        .map_err(|_| StoreError::BadId(input.to_string()))?;
    let mut key = keys::TOMBSTONE.to_vec();
    key.extend_from_slice(prefix.as_bytes());
    let mut candidates = Vec::new();
    for entry in store.storage().refs(&key) {
        let (key, _) = entry.map_err(StoreError::from)?;
        if let Ok(id) = std::str::from_utf8(&key[keys::TOMBSTONE.len()..])
            .unwrap_or("")
            .parse::<SessionId>()
        {
            candidates.push(id);
        }
        if candidates.len() > 8 {
            break;
        }
    }
    match candidates.len() {
        0 => Err(RemoveError::NotRemoved(input.to_string())),
        1 => Ok(candidates[0]),
        _ => Err(StoreError::Ambiguous {
            prefix: input.to_string(),
            candidates,
        }
        .into()),
    }
}
