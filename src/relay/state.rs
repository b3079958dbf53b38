//! What a relay keeps (SPEC.md §16.2) and the rules it applies to changing it: registered teams
//! and their verified manifest chains, deposited sessions (opaque sealed segments plus the few
//! facts it needs in the clear), per-team usage against quotas, and join requests waiting for
//! an admin. Everything lives behind the [`RelayBackend`] trait (SPEC.md §16.2, §16.13): the
//! relay's own store under `--data`, or a bucket shared by several relay processes. Every
//! change is a compare-and-swap on one record (a session's record and ids are one), so the
//! rules hold across processes: a lost race is retried where it is the relay's own business
//! (usage, chains) and answered as a conflict where it is the caller's (a session's head).
//!
//! The relay holds no team key. For a team it can check who is asking (the QUIC handshake),
//! whether they are a current member (the verified manifest chain) and whether a deposit
//! builds on what it has (compare-and-swap on the head); it cannot check what a sealed segment
//! contains. Members check that when they open it, exactly as they check a peer's objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tapes_protocol::join::JoinResponse;
use tapes_protocol::manifest::{SignedManifest, TeamRole};
use tapes_protocol::sync::{decode_batch, encode_batch, manifest_item, Deposit, ItemId, Scope};
use tapes_protocol::team_chain::{Applied, TeamChain};
use tapes_protocol::{MemberId, NodeId, SessionId, StoredObject, TeamId};

use super::backend::{blob_id, LocalBackend, RelayBackend, SessionDoc, Versioned, Written};
use super::config::{Quota, RelayConfig};
use super::RelayError;
use crate::peer::receive::{check_entry, ChainCheck};
use crate::session::SessionRecord;
use crate::share::{Audience, SignedShare};
use crate::store::Store;
use crate::team::keyring::Sealed;

/// Join requests one team may have waiting at once.
const MAX_WAITING_JOINS: usize = 64;

/// Compare-and-swaps a request retries on the relay's own records (usage, a team's chain)
/// before it answers *busy*: each lost round means another request made progress.
const CAS_ATTEMPTS: usize = 64;

/// Waits before retrying a lost compare-and-swap: a random time that grows with the attempt
/// (below 128 ms), so requests racing on one record spread out instead of colliding again.
fn back_off(attempt: usize) {
    if attempt == 0 {
        return;
    }
    let mut bytes = [0u8; 2];
    let _ = getrandom::fill(&mut bytes);
    let cap = 2u64 << attempt.min(6);
    let ms = u64::from(u16::from_le_bytes(bytes)) % cap;
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// One deposit's objects: a run of the chain, `ids[start..end]`, as one or more blobs (sealed
/// batches for a team, plain batches for the public) stored as content-addressed objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub blobs: Vec<NodeId>,
}

/// A deposited session, as the relay sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposited {
    pub owner: MemberId,
    pub head: NodeId,
    /// The signed entry (sealed for a team).
    pub entry: Vec<u8>,
    pub session_item: ItemId,
    /// The signed share record (sealed for a team).
    pub share: Vec<u8>,
    pub share_item: ItemId,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
    pub segments: Vec<Segment>,
    pub bytes: u64,
    pub updated_ms: i64,
}

impl Deposited {
    pub fn is_live(&self, now_ms: i64) -> bool {
        !self.revoked && self.expires_ms.is_none_or(|e| now_ms < e)
    }

    /// A metadata-only share's record (SPEC.md §11.4, §16.3 summary deposits): the share and
    /// its signed summary, no entry, no node. The relay lists its share item only and serves
    /// no content of it.
    pub fn is_summary(&self) -> bool {
        self.entry.is_empty()
    }

    /// The head a content deposit builds on: none for a summary record (it holds no node).
    pub fn content_head(&self) -> Option<NodeId> {
        (!self.is_summary()).then_some(self.head)
    }

    fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    fn decode(bytes: &[u8]) -> Result<Deposited, RelayError> {
        postcard::from_bytes(bytes).map_err(|e| RelayError::Damaged(format!("deposit record: {e}")))
    }
}

/// A team's use of the relay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// `YYYY-MM` (UTC) the session count is for.
    pub month: String,
    pub sessions_this_month: u64,
    pub bytes: u64,
    pub sessions: u64,
}

/// A join request waiting at the relay, and the admin's answer once there is one.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JoinWait {
    request: Vec<u8>,
    response: Option<Vec<u8>>,
}

/// Something a member may fetch from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayItem {
    Manifest { team: TeamId, version: u64 },
    Session { scope: Scope, session: SessionId },
    Share { scope: Scope, session: SessionId },
}

/// A deposit checked against the relay's state, waiting for its objects.
pub struct PendingDeposit {
    pub deposit: Deposit,
    owner: MemberId,
    /// The session's record as read when the deposit began: its compare-and-swap expects it.
    current: Option<Versioned>,
    previous: Option<Deposited>,
    /// The chain's ids as stored when the deposit began (compared again when it lands).
    ids_raw: Option<Vec<u8>>,
    check: Option<ChainCheck>,
    blobs: Vec<StoredObject>,
    /// Bytes this deposit may still add before a quota or the per-deposit cap stops it: a
    /// deposit is held in memory until it is whole, so it is cut off early, not at the end.
    room: u64,
}

/// The most one deposit may hold in memory.
const MAX_DEPOSIT_BYTES: u64 = 512 << 20;

/// What a deposit adds to its scope's usage.
struct Charge {
    new_session: bool,
    bytes: u64,
}

impl Charge {
    fn is_empty(&self) -> bool {
        !self.new_session && self.bytes == 0
    }
}

/// What a deposit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositOutcome {
    Stored {
        nodes: u64,
    },
    /// A summary deposit landed (SPEC.md §16.3): `withdrawn` bytes of content the record held
    /// before were removed from the relay.
    Summary {
        withdrawn: u64,
    },
    Conflict {
        current: Option<NodeId>,
    },
}

/// A session as the public page shows it.
pub struct PublicSession {
    pub id: SessionId,
    pub record: SessionRecord,
    pub share: SignedShare,
    pub objects: Vec<StoredObject>,
}

/// The relay's state over its back end.
pub struct RelayState {
    backend: Arc<dyn RelayBackend>,
    config: RelayConfig,
    /// Verified chains by the version of their record: a chain is verified again only when
    /// its record changed (here or in another relay process over the same bucket).
    chains: Mutex<HashMap<TeamId, (String, TeamChain)>>,
    /// The relay's node key, which signs the relay's own audit entries (`relay::audit_log`).
    pub(crate) audit_key: std::sync::OnceLock<ed25519_dalek::SigningKey>,
}

const TEAMS: &str = "team/";

fn team_key(team: &TeamId) -> String {
    format!("{TEAMS}{}", team.to_hex())
}

fn scope_part(scope: &Scope) -> String {
    match scope {
        Scope::Team(t) => t.to_hex(),
        Scope::Public => "public".into(),
    }
}

/// `buried/<session>`: the owner's tombstone of a session removed everywhere (SPEC.md §3.5;
/// `relay::tombstones`).
pub(crate) fn buried_key(session: &SessionId) -> String {
    format!("buried/{}", session.to_hex())
}

pub(crate) fn deposit_prefix(scope: &Scope) -> String {
    format!("s/{}/", scope_part(scope))
}

fn deposit_key(scope: &Scope, session: &SessionId) -> String {
    format!("{}{}", deposit_prefix(scope), session.to_hex())
}

fn usage_key(scope: &Scope) -> String {
    format!("usage/{}", scope_part(scope))
}

fn join_prefix(team: &TeamId) -> String {
    format!("join/{}/", team.to_hex())
}

fn join_key(team: &TeamId, joiner: &MemberId) -> String {
    format!("{}{}", join_prefix(team), joiner.to_hex())
}

/// A session's record and ids from its stored document.
pub(crate) fn open_doc(found: &Versioned) -> Result<(Deposited, Vec<u8>), RelayError> {
    let doc = SessionDoc::decode(&found.bytes)?;
    Ok((Deposited::decode(&doc.record)?, doc.ids))
}

/// The `YYYY-MM` (UTC) of a time in milliseconds.
pub fn month_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m").to_string())
        .unwrap_or_default()
}

fn decode_ids(bytes: &[u8]) -> Vec<NodeId> {
    bytes
        .chunks_exact(32)
        .filter_map(NodeId::from_slice)
        .collect()
}

fn encode_ids(ids: &[NodeId]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.0).collect()
}

impl RelayState {
    /// A relay over its own store (`--data DIR`, SPEC.md §16.2).
    pub fn open(store: Arc<Store>, config: RelayConfig) -> Result<RelayState, RelayError> {
        RelayState::with_backend(Arc::new(LocalBackend::new(store)), config)
    }

    /// A relay over any back end; every registered chain is verified again from genesis (one
    /// that does not verify stops the start as damaged).
    pub fn with_backend(
        backend: Arc<dyn RelayBackend>,
        config: RelayConfig,
    ) -> Result<RelayState, RelayError> {
        let mut state = RelayState {
            backend,
            config,
            chains: Mutex::new(HashMap::new()),
            audit_key: std::sync::OnceLock::new(),
        };
        let teams = state.teams_checked()?;
        // Tables of relay.toml that name a team by its name are bound to its id now (§16.14).
        if !state.config.named.is_empty() {
            let registered: Vec<(TeamId, String)> = teams
                .iter()
                .map(|c| (c.team_id(), c.head().manifest.name.clone()))
                .collect();
            state.config =
                state
                    .config
                    .resolve_names(&registered)
                    .map_err(|why| RelayError::Config {
                        path: "relay.toml".into(),
                        why,
                    })?;
        }
        Ok(state)
    }

    pub fn backend(&self) -> &Arc<dyn RelayBackend> {
        &self.backend
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// A chain's record, verified (again only when it changed since this process last did).
    fn verified(&self, found: &Versioned) -> Result<TeamChain, RelayError> {
        let mut cache = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(chain) = cache
            .values()
            .find(|(tag, _)| *tag == found.tag)
            .map(|(_, c)| c.clone())
        {
            return Ok(chain);
        }
        drop(cache);
        let chain = decode_chain(&found.bytes)?;
        cache = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(chain.team_id(), (found.tag.clone(), chain.clone()));
        Ok(chain)
    }

    /// A registered team's chain and the version of its record.
    fn load_chain(&self, team: &TeamId) -> Result<Option<(TeamChain, Versioned)>, RelayError> {
        let Some(found) = self.backend.get(&team_key(team))? else {
            return Ok(None);
        };
        let chain = self.verified(&found)?;
        if chain.team_id() != *team {
            return Err(RelayError::Damaged(format!(
                "the record of team {} holds the chain of team {}",
                team.short(),
                chain.team_id().short()
            )));
        }
        Ok(Some((chain, found)))
    }

    fn chain(&self, team: &TeamId) -> Result<TeamChain, RelayError> {
        self.load_chain(team)?
            .map(|(chain, _)| chain)
            .ok_or_else(|| RelayError::NotRegistered(team.short()))
    }

    fn teams_checked(&self) -> Result<Vec<TeamChain>, RelayError> {
        let mut list = Vec::new();
        for (_, found) in self.backend.list(TEAMS)? {
            list.push(self.verified(&found)?);
        }
        list.sort_by_key(|c| c.team_id());
        Ok(list)
    }

    /// Registered teams, with their chains (none when the back end cannot be read: the error
    /// is logged, and a request that needs a team reports it).
    pub fn teams(&self) -> Vec<TeamChain> {
        self.teams_checked().unwrap_or_else(|e| {
            tracing::warn!("cannot list the registered teams: {e}");
            Vec::new()
        })
    }

    /// Registered teams `peer` is a current member of.
    pub fn teams_of(&self, peer: &MemberId) -> Vec<TeamId> {
        self.teams()
            .iter()
            .filter(|c| c.head().manifest.member(peer).is_some())
            .map(TeamChain::team_id)
            .collect()
    }

    fn require_member(&self, team: &TeamId, peer: &MemberId) -> Result<TeamChain, RelayError> {
        let chain = self.chain(team)?;
        if chain.head().manifest.member(peer).is_none() {
            return Err(RelayError::NotMember(team.short()));
        }
        Ok(chain)
    }

    /// The members quota stops a team from growing past it; a manifest that removes members
    /// is always taken, so the relay never keeps serving someone the team removed.
    fn check_members(
        &self,
        chain: &TeamChain,
        before: Option<&TeamChain>,
    ) -> Result<(), RelayError> {
        let quota = self.config.quota(&chain.team_id());
        let members = chain.head().manifest.members.len() as u64;
        let previous = before.map_or(0, |c| c.head().manifest.members.len() as u64);
        if let Some(limit) = quota.members {
            if members > limit && members > previous {
                return Err(RelayError::Quota(format!(
                    "team {} has {members} members and this relay allows {limit} per team; the relay's operator raises `members` in relay.toml",
                    chain.team_id().short()
                )));
            }
        }
        Ok(())
    }

    /// One compare-and-swap of a chain's record: [`Written::Lost`] when another request
    /// changed it since `previous` was read.
    fn store_chain(
        &self,
        chain: &TeamChain,
        previous: Option<&Versioned>,
    ) -> Result<Written, RelayError> {
        self.backend
            .put(&team_key(&chain.team_id()), encode_chain(chain), previous)
    }

    /// `tapes relay register`: `peer` must be an admin or owner of the chain's verified head.
    /// Registering again with a longer chain brings it up to date.
    pub fn register(&self, peer: &MemberId, manifests: &[Vec<u8>]) -> Result<TeamId, RelayError> {
        let versions = manifests
            .iter()
            .map(|m| SignedManifest::decode(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RelayError::BadChain(e.to_string()))?;
        let chain = TeamChain::from_versions(versions, None)
            .map_err(|e| RelayError::BadChain(e.to_string()))?;
        let team = chain.team_id();
        match chain.head().manifest.member(peer) {
            Some(m) if m.role != TeamRole::Member => {}
            _ => return Err(RelayError::NotAdmin(team.short())),
        }
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt);
            match self.load_chain(&team)? {
                Some((current, version)) => {
                    let versions = chain.versions()
                        [current.versions().len().min(chain.versions().len())..]
                        .to_vec();
                    if self.extend(&current, &version, versions)?.is_some() {
                        return Ok(team);
                    }
                }
                None => {
                    self.check_members(&chain, None)?;
                    if self.store_chain(&chain, None)? == Written::Done {
                        return Ok(team);
                    }
                }
            }
        }
        Err(RelayError::Busy)
    }

    /// Newer manifests of a registered team from one of its members.
    pub fn update_manifests(
        &self,
        peer: &MemberId,
        team: &TeamId,
        manifests: &[Vec<u8>],
    ) -> Result<usize, RelayError> {
        let versions = manifests
            .iter()
            .map(|m| SignedManifest::decode(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RelayError::BadChain(e.to_string()))?;
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt);
            let Some((current, version)) = self.load_chain(team)? else {
                return Err(RelayError::NotRegistered(team.short()));
            };
            // A member removed by one of these manifests still delivers them: it is how the
            // relay learns of the removal.
            if current.head().manifest.member(peer).is_none() {
                return Err(RelayError::NotMember(team.short()));
            }
            if let Some(new) = self.extend(&current, &version, versions.clone())? {
                return Ok(new);
            }
        }
        Err(RelayError::Busy)
    }

    /// Appends `versions` to `current` (read at `version`) in one compare-and-swap: the
    /// number of new manifests, or `None` when another request changed the chain first (the
    /// caller reads it again and retries).
    fn extend(
        &self,
        current: &TeamChain,
        version: &Versioned,
        mut versions: Vec<SignedManifest>,
    ) -> Result<Option<usize>, RelayError> {
        versions.sort_by_key(|m| m.manifest.version);
        let mut chain = current.clone();
        let mut new = 0;
        for m in versions {
            let known = chain
                .versions()
                .get(m.manifest.version as usize)
                .is_some_and(|v| v.id() == m.id());
            if known {
                continue;
            }
            match chain
                .apply(m)
                .map_err(|e| RelayError::BadChain(e.to_string()))?
            {
                Applied::AlreadyKnown => {}
                _ => new += 1,
            }
        }
        if new > 0 {
            self.check_members(&chain, Some(current))?;
            if self.store_chain(&chain, Some(version))? == Written::Lost {
                return Ok(None);
            }
        }
        Ok(Some(new))
    }

    /// Everything `peer` may fetch, by item id.
    pub fn view(
        &self,
        peer: &MemberId,
        now_ms: i64,
    ) -> Result<BTreeMap<ItemId, RelayItem>, RelayError> {
        let mut items = BTreeMap::new();
        let mut scopes = vec![Scope::Public];
        for chain in self.teams() {
            if chain.head().manifest.member(peer).is_none() {
                continue;
            }
            let team = chain.team_id();
            for signed in chain.versions() {
                items.insert(
                    manifest_item(&team, &signed.encode()),
                    RelayItem::Manifest {
                        team,
                        version: signed.manifest.version,
                    },
                );
            }
            scopes.push(Scope::Team(team));
        }
        for scope in scopes {
            for (key, found) in self.backend.list(&deposit_prefix(&scope))? {
                let Some(session) = session_of_key(&key) else {
                    continue;
                };
                let (deposited, _) = open_doc(&found)?;
                items.insert(deposited.share_item, RelayItem::Share { scope, session });
                // A summary record (a metadata-only share) has no content to list (§11.4).
                if deposited.is_live(now_ms) && !deposited.is_summary() {
                    items.insert(
                        deposited.session_item,
                        RelayItem::Session { scope, session },
                    );
                }
            }
        }
        Ok(items)
    }

    /// A deposited session and its chain's ids.
    pub fn deposited(
        &self,
        scope: &Scope,
        session: &SessionId,
    ) -> Result<Option<(Deposited, Vec<NodeId>)>, RelayError> {
        let Some(found) = self.backend.get(&deposit_key(scope, session))? else {
            return Ok(None);
        };
        let (deposited, ids) = open_doc(&found)?;
        Ok(Some((deposited, decode_ids(&ids))))
    }

    /// A stored blob of a segment.
    pub fn blob(&self, id: &NodeId) -> Result<Vec<u8>, RelayError> {
        self.backend
            .blob(id)?
            .ok_or_else(|| RelayError::Damaged(format!("segment blob {} is missing", id.short())))
    }

    /// Checks a deposit before its objects arrive: who may deposit what, and where it lands.
    pub fn begin_deposit(
        &self,
        peer: &MemberId,
        deposit: Deposit,
    ) -> Result<PendingDeposit, RelayError> {
        let scope = deposit.scope;
        if self.backend.get(&buried_key(&deposit.session))?.is_some() {
            return Err(RelayError::Malformed(format!(
                "session {} was removed everywhere by its owner (`tapes rm --everywhere`); the relay takes it no more",
                deposit.session.short()
            )));
        }
        // A share-only deposit (no entry, no ids) keeps the record's head, entry and nodes and
        // replaces its share: how a revocation or a new expiry lands without any object, so
        // that no quota stands in its way. It needs a record of the caller's at that head.
        let share_only = is_share_only(&deposit);
        // A summary deposit (no entry, no ids, no expected head) replaces the record with the
        // share and its summary alone, withdrawing any content held (§11.4, §16.3).
        let summary = is_summary_deposit(&deposit);
        if let Scope::Team(team) = &scope {
            self.require_member(team, peer)?;
            let sealed_records = if share_only || summary {
                vec![&deposit.share]
            } else {
                vec![&deposit.entry, &deposit.share]
            };
            for sealed in sealed_records {
                let sealed =
                    Sealed::decode(sealed).map_err(|e| RelayError::Malformed(e.to_string()))?;
                if sealed.team != *team {
                    return Err(RelayError::Malformed(
                        "a sealed record names another team".into(),
                    ));
                }
            }
        } else {
            // Public content is plain, so the relay checks it like a peer would.
            if !share_only && !summary {
                let entry: tapes_protocol::bundle::SessionEntry =
                    postcard::from_bytes(&deposit.entry)
                        .map_err(|e| RelayError::Malformed(format!("session entry: {e}")))?;
                let record =
                    check_entry(&entry).map_err(|e| RelayError::Malformed(e.to_string()))?;
                if entry.signer != *peer
                    || entry.id != deposit.session
                    || record.head != deposit.head
                {
                    return Err(RelayError::NotOwner(deposit.session.short()));
                }
            }
            let share = SignedShare::decode(&deposit.share)
                .map_err(|e| RelayError::Malformed(e.to_string()))?;
            if share.record.sharer != *peer
                || share.record.session != deposit.session
                || share.record.audience != Audience::Public
                || share.record.revoked != deposit.revoked
                || share.record.expires_ms != deposit.expires_ms
            {
                return Err(RelayError::Malformed(
                    "the public share record does not match the deposit".into(),
                ));
            }
            if summary {
                check_public_summary(&deposit.share)?;
            }
        }
        if !summary
            && (deposit.ids.last().is_some_and(|last| *last != deposit.head)
                || (deposit.ids.is_empty() && deposit.expected != Some(deposit.head)))
        {
            return Err(RelayError::Malformed(
                "the deposited ids do not end at its head".into(),
            ));
        }
        let current = self.backend.get(&deposit_key(&scope, &deposit.session))?;
        let (previous, ids_raw) = match current.as_ref().map(open_doc).transpose()? {
            Some((previous, ids)) => (Some(previous), Some(ids)),
            None => (None, None),
        };
        if let Some(previous) = &previous {
            if previous.owner != *peer {
                return Err(RelayError::NotOwner(deposit.session.short()));
            }
        }
        let check = (scope == Scope::Public && !summary)
            .then(|| ChainCheck::new(deposit.ids.clone(), 0, deposit.expected));
        let quota = match scope {
            Scope::Team(team) => self.config.quota(&team),
            Scope::Public => self.config.default,
        };
        let used = self.usage(&scope)?.bytes;
        let room = quota.bytes.map_or(MAX_DEPOSIT_BYTES, |limit| {
            limit.saturating_sub(used).min(MAX_DEPOSIT_BYTES)
        });
        Ok(PendingDeposit {
            deposit,
            owner: *peer,
            current,
            previous,
            ids_raw,
            check,
            blobs: Vec::new(),
            room,
        })
    }

    /// One `Upload` of a deposit: a sealed batch for a team, a plain one for the public
    /// (checked object by object).
    pub fn add_batch(
        &self,
        pending: &mut PendingDeposit,
        objects: tapes_protocol::sync::Objects,
    ) -> Result<(), RelayError> {
        use tapes_protocol::sync::Objects;
        if is_summary_deposit(&pending.deposit) {
            return Err(RelayError::Malformed(
                "a summary deposit (a metadata-only share) carries no objects".into(),
            ));
        }
        let bytes = match (&pending.deposit.scope, objects) {
            (
                Scope::Team(team),
                Objects::Sealed {
                    team: sealed_to,
                    sealed,
                },
            ) if sealed_to == *team => {
                let parsed =
                    Sealed::decode(&sealed).map_err(|e| RelayError::Malformed(e.to_string()))?;
                if parsed.team != *team {
                    return Err(RelayError::Malformed(
                        "a sealed batch names another team".into(),
                    ));
                }
                sealed
            }
            (Scope::Public, Objects::Plain(list)) => {
                let check = pending.check.as_mut().expect("public deposits are checked");
                for bytes in &list {
                    check
                        .check(bytes.clone())
                        .map_err(|(id, why)| RelayError::Malformed(format!("node {id}: {why}")))?;
                }
                encode_batch(&list)
            }
            (Scope::Team(_), _) => {
                return Err(RelayError::Malformed(
                    "team content reaches a relay only sealed to that team".into(),
                ))
            }
            (Scope::Public, _) => {
                return Err(RelayError::Malformed(
                    "public content is deposited plain".into(),
                ))
            }
        };
        let size = bytes.len() as u64;
        if size > pending.room {
            return Err(RelayError::Quota(format!(
                "this deposit does not fit: the relay takes at most {} per deposit and within the scope's `bytes` quota; ask the relay's operator to raise `bytes` in relay.toml",
                crate::views::render::bytes(MAX_DEPOSIT_BYTES as usize)
            )));
        }
        pending.room -= size;
        pending.blobs.push(StoredObject {
            id: blob_id(&bytes),
            bytes,
        });
        Ok(())
    }

    /// Stores a deposit whose objects all arrived: the blobs first (durable), then the scope's
    /// usage, then the record with its ids in one compare-and-swap (SPEC.md §16.9, §16.13).
    pub fn finish_deposit(
        &self,
        pending: PendingDeposit,
        now_ms: i64,
    ) -> Result<DepositOutcome, RelayError> {
        let PendingDeposit {
            deposit,
            owner,
            current,
            previous,
            ids_raw,
            check,
            blobs,
            room: _,
        } = pending;
        if is_summary_deposit(&deposit) {
            return self.finish_summary(deposit, owner, current, previous, now_ms);
        }
        if check.as_ref().is_some_and(|c| !c.is_complete()) {
            return Err(RelayError::Malformed("fewer objects than announced".into()));
        }
        if !deposit.ids.is_empty() && blobs.is_empty() {
            return Err(RelayError::Malformed(
                "a deposit with ids but no objects".into(),
            ));
        }
        // A share-only deposit lands at the record's head (a summary record's is all zeros);
        // a content deposit builds on the nodes held, none for a summary record.
        let share_only = is_share_only(&deposit);
        let relay_head = match &previous {
            Some(p) if share_only => Some(p.head),
            Some(p) => p.content_head(),
            None => None,
        };
        if relay_head != deposit.expected {
            return Ok(DepositOutcome::Conflict {
                current: relay_head,
            });
        }
        let scope = deposit.scope;
        let added: u64 = blobs.iter().map(|b| b.bytes.len() as u64).sum();
        let mut ids = ids_raw.as_deref().map(decode_ids).unwrap_or_default();
        let start = ids.len() as u64;
        ids.extend_from_slice(&deposit.ids);
        let mut segments = previous
            .as_ref()
            .map(|p| p.segments.clone())
            .unwrap_or_default();
        if !blobs.is_empty() {
            segments.push(Segment {
                start,
                end: ids.len() as u64,
                blobs: blobs.iter().map(|b| b.id).collect(),
            });
        }
        let record = match (&previous, share_only) {
            // Share-only (the compare-and-swap above put `previous` at `expected`): the
            // record's head, entry, segments and size stay; the share and its facts change.
            (Some(previous), true) => Deposited {
                share: deposit.share.clone(),
                share_item: deposit.share_item,
                expires_ms: deposit.expires_ms,
                revoked: deposit.revoked,
                updated_ms: now_ms,
                ..previous.clone()
            },
            _ => Deposited {
                owner,
                head: deposit.head,
                entry: deposit.entry.clone(),
                session_item: deposit.session_item,
                share: deposit.share.clone(),
                share_item: deposit.share_item,
                expires_ms: deposit.expires_ms,
                revoked: deposit.revoked,
                segments,
                bytes: previous.as_ref().map_or(0, |p| p.bytes) + added,
                updated_ms: now_ms,
            },
        };
        if !blobs.is_empty() {
            self.backend.put_blobs(&blobs)?;
        }
        let quota = match scope {
            Scope::Team(team) => self.config.quota(&team),
            Scope::Public => self.config.default,
        };
        // The usage is charged first (its own compare-and-swap, retried: concurrent deposits
        // of the scope share it), so racing deposits cannot together pass a quota; then the
        // session's compare-and-swap, the deposit's own, decides it. A deposit that loses it
        // gives its charge back (SPEC.md §16.13).
        let charge = Charge {
            new_session: previous.is_none(),
            bytes: added,
        };
        self.charge(&scope, Some(&quota), &charge, now_ms)?;
        let doc = SessionDoc {
            record: record.encode(),
            ids: encode_ids(&ids),
        };
        let key = deposit_key(&scope, &deposit.session);
        match self.backend.put(&key, doc.encode(), current.as_ref())? {
            Written::Done => Ok(DepositOutcome::Stored {
                nodes: deposit.ids.len() as u64,
            }),
            Written::Lost => {
                if let Err(e) = self.refund(&scope, &charge, now_ms) {
                    tracing::warn!(
                        "a deposit that lost its race could not give back its usage: {e}"
                    );
                }
                let now = self
                    .deposited(&scope, &deposit.session)?
                    .and_then(|(d, _)| {
                        if share_only {
                            Some(d.head)
                        } else {
                            d.content_head()
                        }
                    });
                Ok(DepositOutcome::Conflict { current: now })
            }
        }
    }

    /// Lands a summary deposit (SPEC.md §16.3): one compare-and-swap replaces the record read
    /// at the start with the share and its summary alone (no entry, no ids, no segment), then
    /// the content that record held is withdrawn (`relay::withdraw`). A new record counts as a
    /// session against `sessions_per_month`; no bytes are charged.
    fn finish_summary(
        &self,
        deposit: Deposit,
        owner: MemberId,
        current: Option<Versioned>,
        previous: Option<Deposited>,
        now_ms: i64,
    ) -> Result<DepositOutcome, RelayError> {
        let scope = deposit.scope;
        let record = Deposited {
            owner,
            head: NodeId([0; 32]),
            entry: Vec::new(),
            session_item: NodeId([0; 32]),
            share: deposit.share,
            share_item: deposit.share_item,
            expires_ms: deposit.expires_ms,
            revoked: deposit.revoked,
            segments: Vec::new(),
            bytes: 0,
            updated_ms: now_ms,
        };
        let quota = match scope {
            Scope::Team(team) => self.config.quota(&team),
            Scope::Public => self.config.default,
        };
        let charge = Charge {
            new_session: previous.is_none(),
            bytes: 0,
        };
        self.charge(&scope, Some(&quota), &charge, now_ms)?;
        let doc = SessionDoc {
            record: record.encode(),
            ids: Vec::new(),
        };
        let key = deposit_key(&scope, &deposit.session);
        match self.backend.put(&key, doc.encode(), current.as_ref())? {
            Written::Done => {
                let withdrawn = match &previous {
                    Some(previous) => self.withdraw_content(&scope, &key, previous, now_ms)?,
                    None => 0,
                };
                Ok(DepositOutcome::Summary { withdrawn })
            }
            Written::Lost => {
                if let Err(e) = self.refund(&scope, &charge, now_ms) {
                    tracing::warn!(
                        "a summary deposit that lost its race could not give back its usage: {e}"
                    );
                }
                // The member sends it again: no node depends on it.
                let now = self
                    .deposited(&scope, &deposit.session)?
                    .and_then(|(d, _)| d.content_head());
                Ok(DepositOutcome::Conflict { current: now })
            }
        }
    }

    /// Adds a deposit to its scope's usage, checking the quota (none for a refund).
    fn charge(
        &self,
        scope: &Scope,
        quota: Option<&Quota>,
        charge: &Charge,
        now_ms: i64,
    ) -> Result<(), RelayError> {
        if charge.is_empty() {
            return Ok(());
        }
        self.change_usage(scope, now_ms, |usage| {
            if charge.new_session {
                usage.sessions_this_month += 1;
                usage.sessions += 1;
            }
            usage.bytes += charge.bytes;
            match quota {
                Some(quota) => check_quota(scope, quota, usage, charge.new_session, charge.bytes),
                None => Ok(()),
            }
        })
    }

    /// Takes back the charge of a deposit that lost its compare-and-swap.
    fn refund(&self, scope: &Scope, charge: &Charge, now_ms: i64) -> Result<(), RelayError> {
        if charge.is_empty() {
            return Ok(());
        }
        self.change_usage(scope, now_ms, |usage| {
            if charge.new_session {
                usage.sessions_this_month = usage.sessions_this_month.saturating_sub(1);
                usage.sessions = usage.sessions.saturating_sub(1);
            }
            usage.bytes = usage.bytes.saturating_sub(charge.bytes);
            Ok(())
        })
    }

    /// One change of a scope's usage, as a compare-and-swap retried while other requests win.
    pub(crate) fn change_usage(
        &self,
        scope: &Scope,
        now_ms: i64,
        change: impl Fn(&mut Usage) -> Result<(), RelayError>,
    ) -> Result<(), RelayError> {
        let key = usage_key(scope);
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt);
            let found = self.backend.get(&key)?;
            let mut usage: Usage = found
                .as_ref()
                .and_then(|v| postcard::from_bytes(&v.bytes).ok())
                .unwrap_or_default();
            let month = month_of(now_ms);
            if usage.month != month {
                usage.month = month;
                usage.sessions_this_month = 0;
            }
            change(&mut usage)?;
            let bytes =
                postcard::to_stdvec(&usage).expect("postcard encoding to a Vec cannot fail");
            if self.backend.put(&key, bytes, found.as_ref())? == Written::Done {
                return Ok(());
            }
        }
        Err(RelayError::Busy)
    }

    /// A team's usage of the relay (for `tapes relay` status and errors).
    pub fn usage(&self, scope: &Scope) -> Result<Usage, RelayError> {
        Ok(self
            .backend
            .get(&usage_key(scope))?
            .and_then(|v| postcard::from_bytes(&v.bytes).ok())
            .unwrap_or_default())
    }

    /// A join request from its joiner, sealed to the inviter: the answer if an admin left one,
    /// or it waits. The relay sees only who asks for which team.
    pub fn join(
        &self,
        peer: &MemberId,
        team: &TeamId,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, RelayError> {
        self.chain(team)?;
        if sealed.len() > 64 << 10 {
            return Err(RelayError::Malformed(
                "a join request larger than 64 KiB".into(),
            ));
        }
        let key = join_key(team, peer);
        let current = self.backend.get(&key)?;
        if let Some(found) = &current {
            let wait: JoinWait = postcard::from_bytes(&found.bytes)
                .map_err(|e| RelayError::Damaged(format!("join record: {e}")))?;
            if let Some(response) = wait.response {
                // Delivered: the record has done its job.
                if let Err(e) = self.backend.delete(&key, found) {
                    tracing::warn!("a delivered join answer stays at the relay: {e}");
                }
                return Ok(Some(response));
            }
        } else if self.backend.list(&join_prefix(team))?.len() >= MAX_WAITING_JOINS {
            return Err(RelayError::Quota(format!(
                "{MAX_WAITING_JOINS} join requests already wait for team {}; ask an admin to sync",
                team.short()
            )));
        }
        let wait = JoinWait {
            request: sealed.to_vec(),
            response: None,
        };
        let bytes = postcard::to_stdvec(&wait).expect("postcard encoding to a Vec cannot fail");
        match self.backend.put(&key, bytes, current.as_ref())? {
            Written::Done => Ok(None),
            Written::Lost => Err(RelayError::Busy),
        }
    }

    /// The unanswered join requests of `team` (who left each, sealed to its inviter), for one
    /// of its admins.
    pub fn waiting_joins(
        &self,
        peer: &MemberId,
        team: &TeamId,
    ) -> Result<Vec<(MemberId, Vec<u8>)>, RelayError> {
        self.require_admin(team, peer)?;
        let mut out = Vec::new();
        for (key, found) in self.backend.list(&join_prefix(team))? {
            let Some(joiner) = key
                .rsplit('/')
                .next()
                .and_then(|h| h.parse::<MemberId>().ok())
            else {
                continue;
            };
            if let Ok(wait) = postcard::from_bytes::<JoinWait>(&found.bytes) {
                if wait.response.is_none() {
                    out.push((joiner, wait.request));
                }
            }
        }
        Ok(out)
    }

    /// An admin's answer to a waiting join request.
    pub fn answer_join(
        &self,
        peer: &MemberId,
        team: &TeamId,
        joiner: &MemberId,
        response: Vec<u8>,
    ) -> Result<(), RelayError> {
        self.require_admin(team, peer)?;
        postcard::from_bytes::<JoinResponse>(&response)
            .map_err(|e| RelayError::Malformed(format!("join answer: {e}")))?;
        let key = join_key(team, joiner);
        let Some(found) = self.backend.get(&key)? else {
            return Err(RelayError::Malformed(
                "no join request of that node waits here".into(),
            ));
        };
        let mut wait: JoinWait = postcard::from_bytes(&found.bytes)
            .map_err(|e| RelayError::Damaged(format!("join record: {e}")))?;
        wait.response = Some(response);
        let bytes = postcard::to_stdvec(&wait).expect("postcard encoding to a Vec cannot fail");
        match self.backend.put(&key, bytes, Some(&found))? {
            Written::Done => Ok(()),
            Written::Lost => Err(RelayError::Busy),
        }
    }

    fn require_admin(&self, team: &TeamId, peer: &MemberId) -> Result<(), RelayError> {
        match self.chain(team)?.head().manifest.member(peer) {
            Some(m) if m.role != TeamRole::Member => Ok(()),
            _ => Err(RelayError::NotAdmin(team.short())),
        }
    }

    /// A live public share with its session, for the public page; `None` once unshared or
    /// expired (and for anything shared only with a team: those are never looked up here).
    pub fn public_session(
        &self,
        session: &SessionId,
        now_ms: i64,
    ) -> Result<Option<PublicSession>, RelayError> {
        let Some((deposited, ids)) = self.deposited(&Scope::Public, session)? else {
            return Ok(None);
        };
        if !deposited.is_live(now_ms) || deposited.is_summary() {
            return Ok(None);
        }
        let entry: tapes_protocol::bundle::SessionEntry = postcard::from_bytes(&deposited.entry)
            .map_err(|e| RelayError::Damaged(format!("public entry: {e}")))?;
        let record =
            SessionRecord::decode(&entry.record).map_err(|e| RelayError::Damaged(e.to_string()))?;
        let share = SignedShare::decode(&deposited.share)
            .map_err(|e| RelayError::Damaged(e.to_string()))?;
        let mut objects = Vec::with_capacity(ids.len());
        for segment in &deposited.segments {
            for blob in &segment.blobs {
                let list = decode_batch(&self.blob(blob)?)
                    .map_err(|e| RelayError::Damaged(e.to_string()))?;
                for bytes in list {
                    let id = ids
                        .get(objects.len())
                        .copied()
                        .ok_or_else(|| RelayError::Damaged("more objects than ids".into()))?;
                    objects.push(StoredObject { id, bytes });
                }
            }
        }
        Ok(Some(PublicSession {
            id: *session,
            record,
            share,
            objects,
        }))
    }

    /// The segment blobs a deposit's chain needs from index `from` on: those of the segment
    /// holding `from` and of every later one (the receiver aligns on the first object).
    pub fn blobs_from(deposited: &Deposited, from: u64) -> Vec<NodeId> {
        deposited
            .segments
            .iter()
            .filter(|segment| segment.end > from)
            .flat_map(|segment| segment.blobs.iter().copied())
            .collect()
    }
}

/// A deposit of the share record alone (SPEC.md §16.3): no entry and no ids, at the relay's
/// head (`expected = head`, checked like every deposit's).
fn is_share_only(deposit: &Deposit) -> bool {
    deposit.entry.is_empty() && deposit.ids.is_empty() && deposit.expected.is_some()
}

/// A summary deposit (SPEC.md §11.4, §16.3): a metadata-only share and its summary, with no
/// entry, no ids and no expected head. It replaces whatever record the caller has there.
pub(crate) fn is_summary_deposit(deposit: &Deposit) -> bool {
    deposit.entry.is_empty() && deposit.ids.is_empty() && deposit.expected.is_none()
}

fn check_quota(
    scope: &Scope,
    quota: &Quota,
    usage: &Usage,
    new_session: bool,
    added: u64,
) -> Result<(), RelayError> {
    let who = match scope {
        Scope::Team(t) => format!("team {}", t.short()),
        Scope::Public => "public shares".to_string(),
    };
    if new_session {
        if let Some(limit) = quota.sessions_per_month {
            if usage.sessions_this_month > limit {
                return Err(RelayError::Quota(format!(
                    "{who} has deposited its {limit} sessions for {} on this relay; new sessions are taken again next month, or when the relay's operator raises `sessions_per_month` in relay.toml",
                    usage.month
                )));
            }
        }
    }
    if added > 0 {
        if let Some(limit) = quota.bytes {
            if usage.bytes > limit {
                return Err(RelayError::Quota(format!(
                    "{who} would hold {} on this relay, over its {} limit; ask the relay's operator to raise `bytes` in relay.toml",
                    crate::views::render::bytes(usage.bytes as usize),
                    crate::views::render::bytes(limit as usize)
                )));
            }
        }
    }
    Ok(())
}

fn session_of_key(key: &str) -> Option<SessionId> {
    key.rsplit('/').next()?.parse().ok()
}

fn encode_chain(chain: &TeamChain) -> Vec<u8> {
    let list: Vec<Vec<u8>> = chain
        .versions()
        .iter()
        .map(SignedManifest::encode)
        .collect();
    postcard::to_stdvec(&list).expect("postcard encoding to a Vec cannot fail")
}

fn decode_chain(bytes: &[u8]) -> Result<TeamChain, RelayError> {
    let list: Vec<Vec<u8>> =
        postcard::from_bytes(bytes).map_err(|e| RelayError::Damaged(format!("team chain: {e}")))?;
    let versions = list
        .iter()
        .map(|m| SignedManifest::decode(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RelayError::Damaged(format!("team chain: {e}")))?;
    TeamChain::from_versions(versions, None)
        .map_err(|e| RelayError::Damaged(format!("team chain: {e}")))
}

/// A public summary deposit must carry what it claims: a share record followed by a summary
/// that its sharer signed about that share (the relay can read public shares, so it checks).
fn check_public_summary(share: &[u8]) -> Result<(), RelayError> {
    match tapes_protocol::summary::of_share_bytes(share) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(RelayError::Malformed(
            "a summary deposit whose share record carries no summary; deposit the session's content instead".into(),
        )),
        Err(e) => Err(RelayError::Malformed(format!(
            "the summary of the public share: {e}"
        ))),
    }
}
