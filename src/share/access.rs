//! Access: which records of this store another node may see, as sync items (SPEC.md §15.2),
//! and the signed entry every outgoing record is sent as (§11.3: without local paths).
//!
//! A peer is authenticated by its node id (the QUIC handshake proves it holds the key) and
//! authorized by the *current verified manifest* of each team this node has:
//!
//! * the manifests of a team go to anyone who is, or ever was, in it (a removed member learns
//!   that it was removed, and nothing after);
//! * a share to a team, and the session it shares while the share is live, go to the team's
//!   current members, sealed with the team key when the nodes travel;
//! * a public share, and its session while live, go to anyone;
//! * private sessions go to nobody (their owner moves them with an explicit push or pull).
//!
//! The same function gives both sides of a sync their item sets: the server computes what
//! the client may see, the client what it would be shown by the server, so two nodes that agree
//! on the team manifests reconcile two equal sets when nothing changed.
//!
//! Views are kept current on write (SPEC.md §15.2, "Keeping views current"): each is stamped
//! with the store's access generation, which the backend moves with every ref change a view
//! depends on, and kept in memory and in `<store>/views/`; a fetch brings its own writes into
//! the kept view ([`keep_after_own_writes`]). A fetch with nothing new reads one ref per side.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use tapes_protocol::bundle::SessionEntry;
use tapes_protocol::reconcile::{Reconciler, SortedIds};
use tapes_protocol::sync::{item_session, manifest_item, session_item, share_item, ItemId};
use tapes_protocol::team_chain::TeamChain;
use tapes_protocol::{MemberId, SessionId, TeamId};

use crate::identity::Identity;
use crate::session::SessionRecord;
use crate::share::{share_key, Audience, ShareError};
use crate::store::{Store, StoreError};
use crate::sync::remote::RefSignature;
use crate::team::{self, TeamError};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// Why a peer may see a session, which decides how its nodes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Grant {
    /// Through a live share to this team: nodes travel sealed to it.
    Team(TeamId),
    /// Through a live public share: nodes travel plain.
    Public,
}

/// One item a peer may see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ViewItem {
    Session {
        id: SessionId,
        grant: Grant,
    },
    /// A share record, by its ref key.
    Share {
        key: Vec<u8>,
    },
    Manifest {
        team: TeamId,
        version: u64,
    },
}

/// Everything one peer may see of this store, by item id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct View {
    pub items: BTreeMap<ItemId, ViewItem>,
    /// The first time after the build at which a share of the view expires, changing it.
    pub(crate) horizon: Option<i64>,
}

impl View {
    pub fn ids(&self) -> Vec<ItemId> {
        self.items.keys().copied().collect()
    }

    /// The grant under which `session` is visible, if it is.
    pub fn grant_for(&self, session: &SessionId) -> Option<Grant> {
        self.items.values().find_map(|item| match item {
            ViewItem::Session { id, grant } if id == session => Some(*grant),
            _ => None,
        })
    }
}

/// The signed entry of a session as it is served: the record as it may leave the machine,
/// signed by its owner. This node signs its own sessions afresh, over the record without its
/// local source path and with a project name rather than a path (SPEC.md §11.3,
/// [`crate::share::outgoing::record`]); for others' it keeps the record as received and the owner's
/// signature (`sig/<session hex>`), and serves nothing if that no longer matches the record.
/// Every outgoing entry (peer fetch and push, relay deposit) is made here.
pub fn session_entry(
    store: &Store,
    identity: &Identity,
    id: &SessionId,
) -> Result<Option<SessionEntry>, StoreError> {
    // A push writes the record and its signature in one transaction, but they are read one
    // after the other: a record read just before a push and a signature read just after do
    // not match. Read again while the record keeps moving.
    for _ in 0..TORN_READ_RETRIES {
        match signed_entry(store, identity, id)? {
            Read::Entry(entry) => return Ok(Some(entry)),
            Read::Gone => return Ok(None),
            Read::Moved => continue,
        }
    }
    Ok(None)
}

/// Reads of a record and its signature that may straddle concurrent pushes before
/// [`session_entry`] gives up (each retry means another push landed in between).
const TORN_READ_RETRIES: usize = 64;

enum Read {
    Entry(SessionEntry),
    Gone,
    /// The signature did not match the record read, and the record has changed since.
    Moved,
}

fn signed_entry(store: &Store, identity: &Identity, id: &SessionId) -> Result<Read, StoreError> {
    let Some(raw) = store.session_raw(id)? else {
        return Ok(Read::Gone);
    };
    let Ok(record) = SessionRecord::decode(&raw) else {
        return Ok(Read::Gone);
    };
    let me = MemberId(identity.verifying_key().to_bytes());
    let Some(owner) = record.owner else {
        return Ok(Read::Gone);
    };
    let (raw, signature) = if owner == me {
        let paths = crate::share::outgoing::PathPolicy::load(store)?;
        let record = crate::share::outgoing::record(&record, paths);
        let signature = RefSignature::sign(identity.signing_key(), id, None, &record);
        (record.encode(), signature)
    } else {
        match stored_signature(store, id)? {
            Some(sig) if sig.signer == owner && sig.verify(id, None, &record) => (raw, sig),
            _ if store.session_raw(id)?.as_deref() != Some(raw.as_slice()) => {
                return Ok(Read::Moved)
            }
            _ => return Ok(Read::Gone),
        }
    };
    Ok(Read::Entry(SessionEntry {
        id: *id,
        record: raw,
        signer: signature.signer,
        signature: signature.signature.to_vec(),
    }))
}

/// The ref key holding the owner's signature over the stored record of a session.
pub fn signature_key(id: &SessionId) -> Vec<u8> {
    crate::store::keys::sig(id)
}

/// Encodes a record signature for [`signature_key`].
pub fn encode_signature(sig: &RefSignature) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(sig.signer.as_bytes());
    out.extend_from_slice(&sig.signature);
    out
}

/// The record of session `id` as [`session_entry`] would serve it, and its owner, without
/// the signature work: our own with the outgoing path policy applied, another's as stored when
/// its owner's signature is stored beside it.
fn served_record(
    store: &Store,
    me: &MemberId,
    paths: crate::share::outgoing::PathPolicy,
    id: &SessionId,
) -> Result<Option<(Vec<u8>, MemberId)>, StoreError> {
    let Some(raw) = store.session_raw(id)? else {
        return Ok(None);
    };
    let Ok(record) = SessionRecord::decode(&raw) else {
        return Ok(None);
    };
    let Some(owner) = record.owner else {
        return Ok(None);
    };
    if owner == *me {
        let record = crate::share::outgoing::record(&record, paths);
        return Ok(Some((record.encode(), owner)));
    }
    Ok(match stored_signature(store, id)? {
        Some(sig) if sig.signer == owner => Some((raw, owner)),
        _ => None,
    })
}

fn stored_signature(store: &Store, id: &SessionId) -> Result<Option<RefSignature>, StoreError> {
    let raw = store.storage().get_ref(&signature_key(id))?;
    Ok(raw.and_then(|raw| {
        let signer: [u8; 32] = raw.get(..32)?.try_into().ok()?;
        let signature: [u8; 64] = raw.get(32..96)?.try_into().ok()?;
        Some(RefSignature {
            signer: MemberId(signer),
            signature,
        })
    }))
}

/// What `peer` may see of this store, `me` being this store's node.
pub fn view_for(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
    now_ms: i64,
) -> Result<View, AccessError> {
    view_where(store, identity, now_ms, |chain| {
        let ever = chain
            .versions()
            .iter()
            .any(|v| v.manifest.member(peer).is_some());
        (ever, chain.head().manifest.member(peer).is_some())
    })
}

/// What this node and a relay serving `teams` (the relay's registered teams we are in) have
/// in common: those teams' manifests and shares, and public shares (SPEC.md §16.4).
pub fn view_for_teams(
    store: &Store,
    identity: &Identity,
    teams: &[TeamId],
    now_ms: i64,
) -> Result<View, AccessError> {
    view_where(store, identity, now_ms, |chain| {
        let listed = teams.contains(&chain.team_id());
        (listed, listed)
    })
}

/// [`view_for`], kept between fetches: built once per change of what it depends on, then
/// served from memory or from the file beside the store (see [`cached`]).
pub fn view_for_cached(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
    now_ms: i64,
) -> Result<Arc<View>, AccessError> {
    Ok(whole(store, identity, &Who::Peer(*peer), now_ms)?.view)
}

/// [`view_for_teams`], kept between fetches like [`view_for_cached`].
pub fn view_for_teams_cached(
    store: &Store,
    identity: &Identity,
    teams: &[TeamId],
    now_ms: i64,
) -> Result<Arc<View>, AccessError> {
    let mut sorted = teams.to_vec();
    sorted.sort();
    sorted.dedup();
    Ok(whole(store, identity, &Who::Teams(sorted), now_ms)?.view)
}

/// The whole view of `who`: from memory, brought forward from an older one in memory, from
/// its file or built (see [`cached`]).
fn whole(store: &Store, identity: &Identity, who: &Who, now_ms: i64) -> Result<Found, AccessError> {
    cached(store, identity, who, now_ms, || {
        view_where(store, identity, now_ms, |chain| who.member_of(chain))
    })
}

/// Whose view a [`Kept`] is.
#[derive(Debug, Clone)]
enum Who {
    Peer(MemberId),
    Teams(Vec<TeamId>),
}

impl Who {
    fn key(&self) -> [u8; 32] {
        match self {
            Who::Peer(peer) => cache_key(b"peer", peer.as_bytes()),
            Who::Teams(teams) => {
                let flat: Vec<u8> = teams.iter().flat_map(|t| t.0).collect();
                cache_key(b"teams", &flat)
            }
        }
    }

    fn member_of(&self, chain: &TeamChain) -> (bool, bool) {
        match self {
            Who::Peer(peer) => {
                let ever = chain
                    .versions()
                    .iter()
                    .any(|v| v.manifest.member(peer).is_some());
                (ever, chain.head().manifest.member(peer).is_some())
            }
            Who::Teams(teams) => {
                let listed = teams.contains(&chain.team_id());
                (listed, listed)
            }
        }
    }
}

/// A kept view with the access generation it is current at, so that the process that moves
/// the store on (a fetch) can bring it along ([`keep_after_own_writes`]).
///
/// A kept view read from its cache file starts as the file's header only: its opening
/// reconciliation message ([`Kept::opening`]); the items are read at their first use
/// ([`Kept::view`]), which a fetch that the peer answers with "in sync" never makes.
#[derive(Debug, Clone)]
pub struct Kept {
    view: std::sync::OnceLock<Arc<View>>,
    opening: Option<Vec<u8>>,
    who: Who,
    generation: Option<Vec<u8>>,
    built_ms: i64,
}

impl Kept {
    /// The view's opening reconciliation message (encoded), when it was read from the cache
    /// file's header and the items are not loaded yet; `None` when the view is at hand.
    pub fn opening(&self) -> Option<&[u8]> {
        match self.view.get() {
            Some(_) => None,
            None => self.opening.as_deref(),
        }
    }

    /// The view, read from its cache file (or rebuilt, if the file changed meanwhile) at its
    /// first use.
    pub fn view(
        &self,
        store: &Store,
        identity: &Identity,
        now_ms: i64,
    ) -> Result<Arc<View>, AccessError> {
        if let Some(view) = self.view.get() {
            return Ok(view.clone());
        }
        let found = whole(store, identity, &self.who, now_ms)?;
        Ok(self.view.get_or_init(|| found.view).clone())
    }
}

/// [`view_for_cached`], with what [`keep_after_own_writes`] needs.
pub fn view_for_kept(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
    now_ms: i64,
) -> Result<Kept, AccessError> {
    kept(store, identity, Who::Peer(*peer), now_ms)
}

/// [`view_for_teams_cached`], with what [`keep_after_own_writes`] needs.
pub fn view_for_teams_kept(
    store: &Store,
    identity: &Identity,
    teams: &[TeamId],
    now_ms: i64,
) -> Result<Kept, AccessError> {
    let mut sorted = teams.to_vec();
    sorted.sort();
    sorted.dedup();
    kept(store, identity, Who::Teams(sorted), now_ms)
}

fn kept(store: &Store, identity: &Identity, who: Who, now_ms: i64) -> Result<Kept, AccessError> {
    let key = who.key();
    let generation = generation(store)?;
    let stamp = stamp(identity, generation.as_deref());
    let found = match from_memory(store, &key, &stamp, now_ms) {
        Some((view, built_ms)) => Found {
            view,
            generation,
            built_ms,
        },
        None => {
            let header = load_header(&cache_file(store, &key), &stamp)
                .filter(|h| fresh(h.horizon, h.built_ms, now_ms));
            if let Some(header) = header {
                return Ok(Kept {
                    view: std::sync::OnceLock::new(),
                    opening: Some(header.opening),
                    who,
                    generation,
                    built_ms: header.built_ms,
                });
            }
            whole(store, identity, &who, now_ms)?
        }
    };
    Ok(Kept {
        view: found.view.into(),
        opening: None,
        who,
        generation: found.generation,
        built_ms: found.built_ms,
    })
}

/// Brings a kept view along with what was written since it was returned (a fetch's own
/// sessions and share records, and whatever another writer did meanwhile), through the access
/// log (see [`forward`]), and keeps it: what a fetch stored is then not a rebuild on the next
/// fetch. When the log cannot say (a team chain changed, or it does not reach back) nothing is
/// kept and the next use rebuilds it.
pub fn keep_after_own_writes(
    store: &Store,
    identity: &Identity,
    kept: &Kept,
    now_ms: i64,
) -> Result<(), AccessError> {
    // A view never loaded (the peer had nothing new) has nothing to bring along.
    let Some(kept_view) = kept.view.get() else {
        return Ok(());
    };
    let current = generation(store)?;
    if current == kept.generation {
        return Ok(());
    }
    let old = (kept.generation.as_deref(), kept.built_ms);
    let Some(view) = forward(
        store,
        identity,
        &kept.who,
        kept_view,
        old,
        current.as_deref(),
        now_ms,
    )?
    else {
        return Ok(());
    };
    let key = kept.who.key();
    let stamp = stamp(identity, current.as_deref());
    let view = Arc::new(view);
    keep_file(&cache_file(store, &key), &stamp, now_ms, &view);
    remember(store, memory_key(store, &key), stamp, current, now_ms, view);
    Ok(())
}

/// `view` (of `who`) with the items of `sessions` derived again from the store as it is now:
/// their records, signatures and shares; the manifests and every other session as they were.
fn rederive(
    store: &Store,
    identity: &Identity,
    who: &Who,
    view: &View,
    sessions: &std::collections::BTreeSet<SessionId>,
    now_ms: i64,
) -> Result<View, AccessError> {
    let me = MemberId(identity.verifying_key().to_bytes());
    let mut view = view.clone();
    view.items.retain(|item, entry| {
        matches!(entry, ViewItem::Manifest { .. }) || !sessions.contains(&item_session(item))
    });
    let shared_teams = add_teams(&mut View::default(), store, &me, |c| who.member_of(c))?;
    let mut derive = Sessions {
        store,
        me,
        paths: crate::share::outgoing::PathPolicy::load(store)?,
        served: HashMap::new(),
    };
    for id in sessions {
        for entry in store.storage().refs(&crate::store::keys::shares_of(id)) {
            let (_, raw) = entry.map_err(StoreError::from)?;
            if let Ok(share) = crate::share::SignedShare::decode_stored(&raw) {
                derive.add_share(&mut view, &share, &shared_teams, now_ms)?;
            }
        }
    }
    Ok(view)
}

/// The view of `who` kept in this process's memory at an older access generation, brought to
/// `current` (see [`forward`]).
fn brought_forward(
    store: &Store,
    identity: &Identity,
    who: &Who,
    current: Option<&[u8]>,
    now_ms: i64,
) -> Result<Option<Arc<View>>, AccessError> {
    let Some((view, old, built_ms)) = from_memory_any(store, identity, &who.key()) else {
        return Ok(None);
    };
    let view = forward(
        store,
        identity,
        who,
        &view,
        (old.as_deref(), built_ms),
        current,
        now_ms,
    )?;
    Ok(view.map(Arc::new))
}

/// `view` of `who`, current at access generation `old.0` and built at clock `old.1`, brought
/// to generation `current` through the access log (`store::generation`, SPEC.md §15.2): when
/// every change since touched only sessions' records, signatures and shares, those sessions
/// are derived again and the rest of the view stands. `None` (rebuild) when the view expired,
/// the log no longer reaches back that far, a change touched a team chain or a setting, or the
/// epoch changed.
fn forward(
    store: &Store,
    identity: &Identity,
    who: &Who,
    view: &View,
    old: (Option<&[u8]>, i64),
    current: Option<&[u8]>,
    now_ms: i64,
) -> Result<Option<View>, AccessError> {
    use crate::store::generation::{self, Generation, Touched};
    let (old, built_ms) = old;
    if !fresh(view.horizon, built_ms, now_ms) {
        return Ok(None);
    }
    let (Some(old), Some(now)) = (
        old.and_then(Generation::decode),
        current.and_then(Generation::decode),
    ) else {
        return Ok(None);
    };
    let behind = now.count.wrapping_sub(old.count);
    if old.epoch != now.epoch || behind == 0 || behind > generation::ACCESS_LOG_KEEP {
        return Ok(None);
    }
    let mut sessions = std::collections::BTreeSet::new();
    for count in old.count + 1..=now.count {
        let entry = store
            .storage()
            .get_ref(&generation::access_log_key(count))
            .map_err(StoreError::from)?;
        match entry.and_then(|e| generation::decode_access_log(&e, &now.epoch)) {
            Some(Touched::Sessions(touched)) => sessions.extend(touched),
            Some(Touched::Everything) | None => return Ok(None),
        }
    }
    tracing::debug!(
        changes = behind,
        sessions = sessions.len(),
        "bringing a kept view forward instead of rebuilding it"
    );
    rederive(store, identity, who, view, &sessions, now_ms).map(Some)
}

// ---------------------------------------------------------------------------------------------
// The view cache (SPEC.md §15.2, "Keeping views current").
//
// A view depends on the session records and their signatures, the shares, the team chains,
// the `share.paths` setting, this node's identity and the clock (a share that expires). The
// store's backend moves the *access generation* (`store::keys::ACCESS_GENERATION`) in the same
// transaction as any ref change of the first four, so a view built at generation `g`, for
// identity `i`, is the view as long as the generation is still `g` and no share of it has
// expired since (`View::horizon`). A no-op fetch then costs one ref read on each side.
//
// Entries live in this process's memory (`tapes serve`, the relay client) and in
// `<store>/views/<key>` (a `tapes fetch` process starts cold): `TVC2`, the header's length
// (u32, little-endian), a BLAKE3 of the header, the header (postcard of [`Header`]: stamp,
// clock, horizon, the view's opening reconciliation message and a BLAKE3 of the body), then
// the body (postcard of the items). A fetch reads only the header at first: when the peer
// answers the opening message with "in sync", the items are never decoded (at 200k items they
// were most of a no-op `tapes fetch`: 13 MB read and decoded, ~60 ms). A file that is damaged,
// from another identity or another generation is rebuilt and replaced; it holds item ids and
// share keys, nothing of content.

const CACHE_MAGIC: &[u8; 4] = b"TVC2";
/// A header is a few hundred bytes (the opening message is at most `split` fingerprints or a
/// short id list); anything longer is a damaged file.
const MAX_HEADER: usize = 64 << 10;
const CACHE_DIR: &str = "views";
/// Entries kept in memory (one per peer or relay audience); past it the oldest goes.
const CACHE_ENTRIES: usize = 64;

struct Entry {
    store: std::path::PathBuf,
    stamp: [u8; 32],
    /// The access generation the view is current at (what the stamp was made from).
    generation: Option<Vec<u8>>,
    /// The clock the view was built at: before it (a clock set back) the entry is not used.
    built_ms: i64,
    view: Arc<View>,
    used: u64,
}

/// The in-memory entries by key, with a use clock for evicting the oldest.
type Entries = (u64, HashMap<[u8; 32], Entry>);

static CACHE: LazyLock<Mutex<Entries>> = LazyLock::new(|| Mutex::new((0, HashMap::new())));

/// The head of a view's cache file: what a fetch needs before it knows whether it needs the
/// items at all.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    stamp: [u8; 32],
    built_ms: i64,
    horizon: Option<i64>,
    /// The encoded opening reconciliation message of the view's item ids.
    opening: Vec<u8>,
    /// BLAKE3 of the body (postcard of the items).
    body_sum: [u8; 32],
}

/// The opening reconciliation message of `view`'s items, encoded.
fn opening_of(view: &View) -> Vec<u8> {
    Reconciler::new(SortedIds::new(view.ids()))
        .initiate()
        .encode()
}

/// Forgets the views this process keeps in memory (their files stay): what a new `tapes`
/// process starts with. For tests and benchmarks.
#[doc(hidden)]
pub fn forget_cached_views() {
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).1.clear();
}

/// Whether the view of `peer` kept in `store`'s file is current now, without building it.
/// For tests: a fetch leaves it current ([`keep_after_own_writes`]).
#[doc(hidden)]
pub fn kept_file_is_current(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let stamp = stamp(identity, generation(store)?.as_deref());
    Ok(load(&cache_file(store, &Who::Peer(*peer).key()), &stamp, now_ms).is_some())
}

/// Where the view under `key` is kept.
fn cache_file(store: &Store, key: &[u8; 32]) -> std::path::PathBuf {
    store.path().join(CACHE_DIR).join(hex::encode(key))
}

fn cache_key(kind: &[u8], who: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("tapes 2026-12 view cache key v1");
    h.update(&(kind.len() as u32).to_le_bytes());
    h.update(kind);
    h.update(who);
    *h.finalize().as_bytes()
}

/// The store's access generation as stored (`None` before the first change).
fn generation(store: &Store) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(store
        .storage()
        .get_ref(crate::store::keys::ACCESS_GENERATION)?)
}

/// What a cached view must have been built under: this identity at this access generation.
fn stamp(identity: &Identity, generation: Option<&[u8]>) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("tapes 2026-12 view cache stamp v1");
    h.update(&identity.verifying_key().to_bytes());
    match generation {
        Some(g) => {
            h.update(&[1]);
            h.update(g);
        }
        None => {
            h.update(&[0]);
        }
    }
    *h.finalize().as_bytes()
}

/// Whether a view built at `built_ms`, whose grants change at `horizon`, still holds now.
fn fresh(horizon: Option<i64>, built_ms: i64, now_ms: i64) -> bool {
    built_ms <= now_ms && horizon.is_none_or(|h| now_ms < h)
}

/// The view under `key`: from memory, else from its file, else built by `build` (and kept).
/// The stamp is read before anything else, so a change that lands during a build leaves an
/// entry that is stale by its stamp, never one that looks current and is not.
fn cached(
    store: &Store,
    identity: &Identity,
    who: &Who,
    now_ms: i64,
    build: impl FnOnce() -> Result<View, AccessError>,
) -> Result<Found, AccessError> {
    let key = who.key();
    let generation = generation(store)?;
    let stamp = stamp(identity, generation.as_deref());
    if let Some((view, built_ms)) = from_memory(store, &key, &stamp, now_ms) {
        return Ok(Found {
            view,
            generation,
            built_ms,
        });
    }
    let file = cache_file(store, &key);
    let (view, built_ms) =
        match brought_forward(store, identity, who, generation.as_deref(), now_ms)? {
            Some(view) => {
                keep_file(&file, &stamp, now_ms, &view);
                (view, now_ms)
            }
            None => match load(&file, &stamp, now_ms) {
                Some((view, built_ms)) => (Arc::new(view), built_ms),
                None => {
                    let view = Arc::new(build()?);
                    keep_file(&file, &stamp, now_ms, &view);
                    (view, now_ms)
                }
            },
        };
    remember(
        store,
        memory_key(store, &key),
        stamp,
        generation.clone(),
        built_ms,
        view.clone(),
    );
    Ok(Found {
        view,
        generation,
        built_ms,
    })
}

/// The view under `key` kept in this process's memory, if it was built under `stamp` and is
/// still fresh, with the clock it was built at.
fn from_memory(
    store: &Store,
    key: &[u8; 32],
    stamp: &[u8; 32],
    now_ms: i64,
) -> Option<(Arc<View>, i64)> {
    let mem_key = memory_key(store, key);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let (clock, entries) = &mut *cache;
    *clock += 1;
    let entry = entries.get_mut(&mem_key)?;
    if entry.stamp == *stamp
        && entry.store == store.path()
        && fresh(entry.view.horizon, entry.built_ms, now_ms)
    {
        entry.used = *clock;
        return Some((entry.view.clone(), entry.built_ms));
    }
    None
}

/// What [`cached`] found: the view, the access generation it is current at (as stored) and
/// the clock it was built at.
struct Found {
    view: Arc<View>,
    generation: Option<Vec<u8>>,
    built_ms: i64,
}

fn memory_key(store: &Store, key: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(key);
    h.update(store.path().as_os_str().as_encoded_bytes());
    *h.finalize().as_bytes()
}

/// The view under `key` kept in this process's memory for this identity, whatever access
/// generation it is current at: the view, that generation and the clock it was built at.
fn from_memory_any(
    store: &Store,
    identity: &Identity,
    key: &[u8; 32],
) -> Option<(Arc<View>, Option<Vec<u8>>, i64)> {
    let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let entry = cache.1.get(&memory_key(store, key))?;
    (entry.store == store.path() && entry.stamp == stamp(identity, entry.generation.as_deref()))
        .then(|| (entry.view.clone(), entry.generation.clone(), entry.built_ms))
}

fn remember(
    store: &Store,
    mem_key: [u8; 32],
    stamp: [u8; 32],
    generation: Option<Vec<u8>>,
    built_ms: i64,
    view: Arc<View>,
) {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let (clock, entries) = &mut *cache;
    if entries.len() >= CACHE_ENTRIES && !entries.contains_key(&mem_key) {
        if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) {
            entries.remove(&oldest);
        }
    }
    entries.insert(
        mem_key,
        Entry {
            store: store.path().to_path_buf(),
            stamp,
            generation,
            built_ms,
            view,
            used: *clock,
        },
    );
}

/// Splits a cache file's bytes into its header, checked against `stamp`, and its body.
fn parse_header<'b>(bytes: &'b [u8], stamp: &[u8; 32]) -> Option<(Header, &'b [u8])> {
    let rest = bytes.strip_prefix(CACHE_MAGIC)?;
    let (len, rest) = rest.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    if len > MAX_HEADER {
        return None;
    }
    let (sum, rest) = rest.split_at_checked(32)?;
    let (head, body) = rest.split_at_checked(len)?;
    if blake3::hash(head).as_bytes() != sum {
        return None;
    }
    let header: Header = postcard::from_bytes(head).ok()?;
    (header.stamp == *stamp).then_some((header, body))
}

/// The header of the cache file `file` if it was written under `stamp`, reading only the
/// head of the file.
fn load_header(file: &std::path::Path, stamp: &[u8; 32]) -> Option<Header> {
    open_header(file, stamp).map(|(_, header)| header)
}

/// The cache file `file`, read up to the end of its header, and the header, if it was written
/// under `stamp`.
fn open_header(file: &std::path::Path, stamp: &[u8; 32]) -> Option<(std::fs::File, Header)> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).ok()?;
    let mut head = [0u8; 8];
    f.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[4..8].try_into().ok()?) as usize;
    if len > MAX_HEADER {
        return None;
    }
    let mut bytes = head.to_vec();
    bytes.resize(8 + 32 + len, 0);
    f.read_exact(&mut bytes[8..]).ok()?;
    parse_header(&bytes, stamp).map(|(header, _)| (f, header))
}

/// The view kept in `file` if it was written under `stamp` and still holds at `now_ms`; the
/// body is read only then.
fn load(file: &std::path::Path, stamp: &[u8; 32], now_ms: i64) -> Option<(View, i64)> {
    use std::io::Read;
    let (mut f, header) = open_header(file, stamp)?;
    if !fresh(header.horizon, header.built_ms, now_ms) {
        return None;
    }
    let mut body = Vec::new();
    f.read_to_end(&mut body).ok()?;
    if blake3::hash(&body).as_bytes() != &header.body_sum {
        return None;
    }
    let items: Vec<(ItemId, ViewItem)> = postcard::from_bytes(&body).ok()?;
    let view = View {
        items: items.into_iter().collect(),
        horizon: header.horizon,
    };
    Some((view, header.built_ms))
}

/// [`save`], where a failure only costs a rebuild in the next process (logged, not an error).
fn keep_file(file: &std::path::Path, stamp: &[u8; 32], now_ms: i64, view: &View) {
    if let Err(e) = save(file, stamp, now_ms, view) {
        tracing::debug!(file = %file.display(), "cannot keep the view cache: {e}");
    }
}

fn save(
    file: &std::path::Path,
    stamp: &[u8; 32],
    built_ms: i64,
    view: &View,
) -> std::io::Result<()> {
    let items: Vec<(&ItemId, &ViewItem)> = view.items.iter().collect();
    let body = postcard::to_stdvec(&items).map_err(std::io::Error::other)?;
    let header = Header {
        stamp: *stamp,
        built_ms,
        horizon: view.horizon,
        opening: opening_of(view),
        body_sum: *blake3::hash(&body).as_bytes(),
    };
    let head = postcard::to_stdvec(&header).map_err(std::io::Error::other)?;
    let mut bytes = Vec::with_capacity(body.len() + head.len() + 40);
    bytes.extend_from_slice(CACHE_MAGIC);
    bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
    bytes.extend_from_slice(blake3::hash(&head).as_bytes());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(&body);
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Written aside and renamed over: a reader sees the old file or the new one, whole.
    let temp = file.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temp, &bytes)?;
    std::fs::rename(&temp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// The view for a peer described by `member_of(chain) = (ever a member, a member now)`.
fn view_where(
    store: &Store,
    identity: &Identity,
    now_ms: i64,
    member_of: impl Fn(&TeamChain) -> (bool, bool),
) -> Result<View, AccessError> {
    let me = MemberId(identity.verifying_key().to_bytes());
    let mut view = View::default();
    let shared_teams = add_teams(&mut view, store, &me, member_of)?;
    let paths = crate::share::outgoing::PathPolicy::load(store)?;
    let mut sessions = Sessions {
        store,
        me,
        paths,
        served: HashMap::new(),
    };
    for share in crate::share::all_shares(store)? {
        sessions.add_share(&mut view, &share, &shared_teams, now_ms)?;
    }
    Ok(view)
}

/// Adds the manifests of the teams the peer is or was in with us; returns the teams both are
/// in now.
fn add_teams(
    view: &mut View,
    store: &Store,
    me: &MemberId,
    member_of: impl Fn(&TeamChain) -> (bool, bool),
) -> Result<Vec<TeamId>, AccessError> {
    let mut shared_teams = Vec::new();
    for chain in team::list(store)? {
        let team = chain.team_id();
        let head = &chain.head().manifest;
        if head.member(me).is_none() {
            continue;
        }
        let (ever, now) = member_of(&chain);
        if !ever {
            continue;
        }
        for signed in chain.versions() {
            view.items.insert(
                manifest_item(&team, &signed.encode()),
                ViewItem::Manifest {
                    team,
                    version: signed.manifest.version,
                },
            );
        }
        if now {
            shared_teams.push(team);
        }
    }
    Ok(shared_teams)
}

/// Each shared session's record as it would be served, once per session however many shares
/// it has. No signing or verifying here: the item id hashes the record alone, the stored
/// signatures were verified before they were stored (`receive::apply_session`, the server's
/// push) and the entry actually sent is checked again ([`session_entry`]).
struct Sessions<'a> {
    store: &'a Store,
    me: MemberId,
    paths: crate::share::outgoing::PathPolicy,
    served: HashMap<SessionId, Option<(Vec<u8>, MemberId)>>,
}

impl Sessions<'_> {
    /// Adds a share record and, while it is live, its session.
    fn add_share(
        &mut self,
        view: &mut View,
        share: &crate::share::SignedShare,
        shared_teams: &[TeamId],
        now_ms: i64,
    ) -> Result<(), AccessError> {
        let record = &share.record;
        let grant = match record.audience {
            Audience::Team(team) if shared_teams.contains(&team) => Grant::Team(team),
            Audience::Team(_) => return Ok(()),
            Audience::Public => Grant::Public,
        };
        let entry = match self.served.get(&record.session) {
            Some(entry) => entry,
            None => {
                let entry = served_record(self.store, &self.me, self.paths, &record.session)?;
                self.served.entry(record.session).or_insert(entry)
            }
        };
        // Only the session's owner may share it; anything else is not passed on.
        let Some((served_raw, owner)) = entry else {
            return Ok(());
        };
        if *owner != record.sharer {
            return Ok(());
        }
        view.items.insert(
            share_item(&record.session, &share.encode()),
            ViewItem::Share {
                key: share_key(&record.session, &record.audience),
            },
        );
        if let Some(expires) = record.expires_ms.filter(|e| *e > now_ms && !record.revoked) {
            view.horizon = Some(view.horizon.map_or(expires, |h| h.min(expires)));
        }
        // Issue 23 (metadata-only sharing, SPEC.md §11.4) — please keep this check when
        // editing: a metadata-only share, or a project whose content stays here, puts the
        // share (and its summary) in the view, never the session.
        if share.is_live(now_ms)
            && !crate::share::content_withheld(self.store, &record.session, &record.audience)?
        {
            let item = session_item(&record.session, served_raw);
            // A team grant wins over a public one: team content only travels sealed.
            let keep = matches!(
                view.items.get(&item),
                Some(ViewItem::Session {
                    grant: Grant::Team(_),
                    ..
                })
            );
            if !keep {
                view.items.insert(
                    item,
                    ViewItem::Session {
                        id: record.session,
                        grant,
                    },
                );
            }
        }
        Ok(())
    }
}
