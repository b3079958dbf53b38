//! Teams on disk and the operations that change them: create, invite, join, remove, leave,
//! change roles.
//!
//! Every change is a new signed manifest built here, then checked by the same
//! [`TeamChain::apply`] any peer runs, then stored with compare-and-swap on the team's head, so
//! this node never writes a manifest its teammates would refuse, and two local writers cannot
//! both extend the same version.
//!
//! Refs (SPEC.md §9.5):
//! - `team/<team id>/v/<version, 20 digits>` → signed manifest bytes
//! - `team/<team id>/head` → `version u64le || manifest id`
//! - `team/<team id>/fork` → `base u64le || their signed manifest bytes` while forked
//! - `invite/<secret hash hex>` → [`InviteRecord`] (postcard); the secret itself is never stored

pub mod keyring;

use serde::{Deserialize, Serialize};
use tapes_protocol::join::{self, Invite, JoinRefusal, JoinRequest, JoinRequestBody, JoinResponse};
use tapes_protocol::manifest::{Manifest, ManifestError, Member, SignedManifest, TeamRole};
use tapes_protocol::team_chain::{Applied, Fork, TeamChain};
use tapes_protocol::{MemberId, TeamId};

use crate::identity::Identity;
use crate::store::backend::{RefUpdate, StorageError};
use crate::store::{Store, StoreError};
use crate::team::keyring::{KeyError, KeyRing};

#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no team matches `{0}`; `tapes team list` shows your teams")]
    NotFound(String),
    #[error("`{input}` matches several teams: {}; use more of the name or of the team id", .candidates.join(", "))]
    Ambiguous {
        input: String,
        candidates: Vec<String>,
    },
    #[error("you are in {0} teams; say which with --team")]
    WhichTeam(usize),
    #[error("you are in no team yet; `tapes team create NAME` or `tapes team join CODE`")]
    NoTeams,
    #[error("no member of the team matches `{0}`; `tapes team members` lists them")]
    NoSuchMember(String),
    #[error("`{0}` matches several members; use more of their node id")]
    AmbiguousMember(String),
    #[error("you are {role} of this team; only an owner or admin can {action}")]
    NotAllowed {
        role: &'static str,
        action: &'static str,
    },
    #[error("you are not a member of team {0}")]
    NotMember(TeamId),
    #[error("team {0} is forked; an owner must resolve it first (see `tapes team members`)")]
    Forked(TeamId),
    #[error("join refused: {0}")]
    Refused(JoinRefusal),
    #[error("the team changed while this change was being made; run the command again")]
    Raced,
    #[error("this is not an invite code: {0}")]
    BadCode(String),
    #[error("no invite matches `{0}`; `tapes team invites` lists them")]
    NoSuchInvite(String),
    #[error("stored team data is damaged: {0}; run `tapes fsck`")]
    Damaged(String),
}

/// What the inviter keeps about an invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    pub team: TeamId,
    pub secret_hash: [u8; 32],
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub max_uses: u32,
    pub uses: u32,
    pub email: Option<String>,
    pub role: TeamRole,
    pub revoked: bool,
}

impl InviteRecord {
    /// Short id shown to the inviter (the first hex digits of the secret hash).
    pub fn id(&self) -> String {
        hex::encode(&self.secret_hash[..6])
    }
}

/// Options of `tapes team invite`.
#[derive(Debug, Clone)]
pub struct InviteOptions {
    pub expires_ms: Option<i64>,
    pub max_uses: u32,
    pub email: Option<String>,
    pub role: TeamRole,
    pub addrs: Vec<String>,
}

const INVITE_PREFIX: &str = "tapes-invite1-";

/// The text form of an invite code.
pub fn invite_to_code(invite: &Invite) -> String {
    use base64::Engine;
    format!(
        "{INVITE_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(invite.encode())
    )
}

pub fn code_to_invite(code: &str) -> Result<Invite, TeamError> {
    use base64::Engine;
    let body = code
        .trim()
        .strip_prefix(INVITE_PREFIX)
        .ok_or_else(|| TeamError::BadCode(format!("it does not start with `{INVITE_PREFIX}`")))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TeamError::BadCode("it is damaged (not base64url); copy it again".into()))?;
    Invite::decode(&bytes)
        .map_err(|_| TeamError::BadCode("it is damaged or truncated; copy it again".into()))
}

fn version_key(team: &TeamId, version: u64) -> Vec<u8> {
    crate::store::keys::team_version(team, version)
}

fn head_key(team: &TeamId) -> Vec<u8> {
    crate::store::keys::team_head(team)
}

fn fork_key(team: &TeamId) -> Vec<u8> {
    crate::store::keys::team_fork(team)
}

/// What changes whenever a team's stored chain changes (its head and fork records), so a
/// loaded chain can be cached and reused while this stays the same.
pub fn chain_stamp(store: &Store, team: &TeamId) -> Result<Vec<u8>, TeamError> {
    let storage = store.storage();
    let mut stamp = storage
        .get_ref(&head_key(team))
        .map_err(StoreError::from)?
        .unwrap_or_default();
    stamp.push(0xff);
    if let Some(fork) = storage.get_ref(&fork_key(team)).map_err(StoreError::from)? {
        stamp.extend_from_slice(&fork);
    }
    Ok(stamp)
}

fn head_value(m: &SignedManifest) -> Vec<u8> {
    let mut v = m.manifest.version.to_le_bytes().to_vec();
    v.extend_from_slice(m.id().as_bytes());
    v
}

fn invite_key(hash: &[u8; 32]) -> Vec<u8> {
    crate::store::keys::invite(&hex::encode(hash))
}

fn me(identity: &Identity) -> MemberId {
    MemberId(identity.verifying_key().to_bytes())
}

/// The member entry for this identity.
pub fn member_for(identity: &Identity, role: TeamRole) -> Member {
    Member {
        id: me(identity),
        age_recipient: identity.age_recipient().to_string(),
        name: identity.profile.name.clone(),
        email: identity.profile.email.clone(),
        role,
    }
}

/// Loads a team's chain from the store, verifying every link again.
pub fn load(store: &Store, team: &TeamId) -> Result<TeamChain, TeamError> {
    let storage = store.storage();
    let mut versions = Vec::new();
    for entry in storage.refs(&crate::store::keys::team_versions(team)) {
        let (_, bytes) = entry.map_err(StoreError::from)?;
        versions.push(SignedManifest::decode(&bytes)?);
    }
    if versions.is_empty() {
        return Err(TeamError::NotFound(team.to_hex()));
    }
    let fork = match storage.get_ref(&fork_key(team)).map_err(StoreError::from)? {
        Some(raw) if raw.len() > 8 => {
            let mut base = [0u8; 8];
            base.copy_from_slice(&raw[..8]);
            Some(Fork {
                base: u64::from_le_bytes(base),
                theirs: SignedManifest::decode(&raw[8..])?,
            })
        }
        Some(_) => {
            return Err(TeamError::Damaged(format!(
                "fork record of team {team} is truncated"
            )))
        }
        None => None,
    };
    Ok(TeamChain::from_versions(versions, fork)?)
}

/// Every team this store knows, by id.
pub fn list(store: &Store) -> Result<Vec<TeamChain>, TeamError> {
    let mut ids = Vec::new();
    for entry in store.storage().refs(crate::store::keys::TEAM) {
        let (key, _) = entry.map_err(StoreError::from)?;
        if let Some(hex) = crate::store::keys::team_of_head(&key) {
            let key = String::from_utf8_lossy(&key);
            ids.push(
                hex.parse::<TeamId>()
                    .map_err(|_| TeamError::Damaged(format!("ref {key}")))?,
            );
        }
    }
    ids.iter().map(|id| load(store, id)).collect()
}

/// Finds a team by id prefix or exact name; with `None`, the only team there is.
pub fn resolve(store: &Store, input: Option<&str>) -> Result<TeamChain, TeamError> {
    let teams = list(store)?;
    let Some(input) = input else {
        return match teams.len() {
            0 => Err(TeamError::NoTeams),
            1 => Ok(teams.into_iter().next().ok_or(TeamError::NoTeams)?),
            n => Err(TeamError::WhichTeam(n)),
        };
    };
    // An exact name (any case) wins; else a unique prefix of a name (any case) or of an id.
    let lower = input.trim().to_lowercase();
    let (exact, rest): (Vec<TeamChain>, Vec<TeamChain>) = teams
        .into_iter()
        .partition(|t| t.head().manifest.name.to_lowercase() == lower);
    let mut matches = if exact.is_empty() {
        rest.into_iter()
            .filter(|t| {
                !lower.is_empty()
                    && (t.head().manifest.name.to_lowercase().starts_with(&lower)
                        || t.team_id().to_hex().starts_with(&lower))
            })
            .collect()
    } else {
        exact
    };
    match matches.len() {
        0 => Err(TeamError::NotFound(input.to_string())),
        1 => Ok(matches.remove(0)),
        _ => Err(TeamError::Ambiguous {
            input: input.to_string(),
            candidates: matches
                .iter()
                .map(|t| format!("{} ({})", t.head().manifest.name, t.team_id().short()))
                .collect(),
        }),
    }
}

/// Writes `next` as the successor of `chain`'s head after checking it as any peer would.
fn commit(store: &Store, chain: &mut TeamChain, next: SignedManifest) -> Result<(), TeamError> {
    let team = chain.team_id();
    let old_head = head_value(chain.head());
    match chain.apply(next.clone())? {
        Applied::AlreadyKnown => return Ok(()),
        Applied::Appended | Applied::Resolved => {}
    }
    let updates = [
        RefUpdate {
            key: head_key(&team),
            expected: Some(old_head),
            new: Some(head_value(&next)),
        },
        RefUpdate {
            key: version_key(&team, next.manifest.version),
            expected: None,
            new: Some(next.encode()),
        },
    ];
    store.storage().update_refs(&updates).map_err(|e| match e {
        StorageError::Conflict { .. } => TeamError::Raced,
        other => TeamError::Store(other.into()),
    })?;
    store.storage().flush().map_err(StoreError::from)?;
    Ok(())
}

/// Stores a whole verified chain (a join answer, manifests from a peer, a resolved fork):
/// every version, the head, no version above the head (a fork resolved toward the other side
/// can leave some), and the fork record — in one CAS transaction.
pub fn store_chain(store: &Store, chain: &TeamChain) -> Result<(), TeamError> {
    let team = chain.team_id();
    let storage = store.storage();
    let existing = storage
        .get_ref(&head_key(&team))
        .map_err(StoreError::from)?;
    let mut updates = vec![RefUpdate {
        key: head_key(&team),
        expected: existing,
        new: Some(head_value(chain.head())),
    }];
    for v in chain.versions() {
        let key = version_key(&team, v.manifest.version);
        let current = storage.get_ref(&key).map_err(StoreError::from)?;
        let new = v.encode();
        if current.as_deref() != Some(new.as_slice()) {
            updates.push(RefUpdate {
                key,
                expected: current,
                new: Some(new),
            });
        }
    }
    let head_version = chain.head().manifest.version;
    for entry in storage.refs(&crate::store::keys::team_versions(&team)) {
        let (key, value) = entry.map_err(StoreError::from)?;
        let version = String::from_utf8_lossy(&key)
            .rsplit('/')
            .next()
            .and_then(|v| v.parse::<u64>().ok());
        if version.is_some_and(|v| v > head_version) {
            updates.push(RefUpdate {
                key,
                expected: Some(value),
                new: None,
            });
        }
    }
    let fork_now = storage
        .get_ref(&fork_key(&team))
        .map_err(StoreError::from)?;
    let fork_new = chain.fork().map(|fork| {
        let mut raw = fork.base.to_le_bytes().to_vec();
        raw.extend_from_slice(&fork.theirs.encode());
        raw
    });
    if fork_now != fork_new {
        updates.push(RefUpdate {
            key: fork_key(&team),
            expected: fork_now,
            new: fork_new,
        });
    }
    storage.update_refs(&updates).map_err(|e| match e {
        StorageError::Conflict { .. } => TeamError::Raced,
        other => TeamError::Store(other.into()),
    })?;
    storage.flush().map_err(StoreError::from)?;
    Ok(())
}

/// `tapes team create`: a genesis manifest with this identity as owner and a fresh key ring.
pub fn create(
    store: &Store,
    identity: &Identity,
    name: &str,
    now_ms: i64,
) -> Result<TeamChain, TeamError> {
    let chain = genesis(identity, name, now_ms)?;
    store_chain(store, &chain)?;
    Ok(chain)
}

/// A new team chain with `identity` as its only member (the owner), not stored anywhere: what
/// [`create`] stores, and what a personal backup bundle is sealed to (SPEC.md §12.3).
pub fn genesis(identity: &Identity, name: &str, now_ms: i64) -> Result<TeamChain, TeamError> {
    let (ring, epoch_recipient) = KeyRing::genesis();
    let members = vec![member_for(identity, TeamRole::Owner)];
    let keyring = ring.wrap_for(&members)?;
    let manifest = Manifest {
        team: None,
        version: 0,
        prev: None,
        name: name.to_string(),
        members,
        created_ms: now_ms,
        epoch: 0,
        epoch_recipient,
        keyring,
    };
    let signature = manifest.sign(identity.signing_key());
    let genesis = SignedManifest {
        manifest,
        signatures: vec![signature],
    };
    Ok(TeamChain::new(genesis)?)
}

/// Builds, signs and commits the successor of `chain`'s head with `members`; `rotate` starts
/// a new key epoch (whenever anyone leaves).
fn change_members(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    mut members: Vec<Member>,
    rotate: bool,
    now_ms: i64,
) -> Result<(), TeamError> {
    if chain.fork().is_some() {
        return Err(TeamError::Forked(chain.team_id()));
    }
    let head = chain.head().manifest.clone();
    let mut ring = KeyRing::unwrap_from(&head, identity.age_identity())?;
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let (epoch, epoch_recipient) = if rotate {
        let epoch = head.epoch + 1;
        (epoch, ring.add_epoch(epoch))
    } else {
        (head.epoch, head.epoch_recipient.clone())
    };
    let keyring = ring.wrap_for(&members)?;
    let manifest = Manifest {
        team: Some(chain.team_id()),
        version: head.version + 1,
        prev: Some(chain.head().id()),
        name: head.name.clone(),
        members,
        created_ms: now_ms.max(head.created_ms),
        epoch,
        epoch_recipient,
        keyring,
    };
    let signature = manifest.sign(identity.signing_key());
    commit(
        store,
        chain,
        SignedManifest {
            manifest,
            signatures: vec![signature],
        },
    )
}

fn require_admin(
    chain: &TeamChain,
    identity: &Identity,
    action: &'static str,
) -> Result<TeamRole, TeamError> {
    match chain.head().manifest.member(&me(identity)) {
        None => Err(TeamError::NotMember(chain.team_id())),
        Some(m) if m.role == TeamRole::Member => Err(TeamError::NotAllowed {
            role: "a member",
            action,
        }),
        Some(m) => Ok(m.role),
    }
}

/// Finds a member by node id prefix, exact name or exact email.
pub fn find_member<'a>(manifest: &'a Manifest, input: &str) -> Result<&'a Member, TeamError> {
    let lower = input.to_ascii_lowercase();
    let matches: Vec<&Member> = manifest
        .members
        .iter()
        .filter(|m| {
            m.name == input
                || m.email.as_deref() == Some(input)
                || m.id.to_hex().starts_with(&lower)
        })
        .collect();
    match matches.as_slice() {
        [] => Err(TeamError::NoSuchMember(input.to_string())),
        [one] => Ok(one),
        _ => Err(TeamError::AmbiguousMember(input.to_string())),
    }
}

/// `tapes team remove`: a new manifest without the member, in a new key epoch.
pub fn remove(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    member: &MemberId,
    now_ms: i64,
) -> Result<(), TeamError> {
    require_admin(chain, identity, "remove members")?;
    let members = chain
        .head()
        .manifest
        .members
        .iter()
        .filter(|m| &m.id != member)
        .cloned()
        .collect();
    change_members(store, identity, chain, members, true, now_ms)
}

/// `tapes team leave`: this identity removes itself. It changes nothing else — in particular
/// not the key (SPEC.md §9.2): the remaining members rotate it before sealing anything new.
pub fn leave(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    now_ms: i64,
) -> Result<(), TeamError> {
    let me = me(identity);
    if chain.head().manifest.member(&me).is_none() {
        return Err(TeamError::NotMember(chain.team_id()));
    }
    if chain.fork().is_some() {
        return Err(TeamError::Forked(chain.team_id()));
    }
    let head = &chain.head().manifest;
    let manifest = Manifest {
        team: Some(chain.team_id()),
        version: head.version + 1,
        prev: Some(chain.head().id()),
        members: head
            .members
            .iter()
            .filter(|m| m.id != me)
            .cloned()
            .collect(),
        created_ms: now_ms.max(head.created_ms),
        ..head.clone()
    };
    let signature = manifest.sign(identity.signing_key());
    commit(
        store,
        chain,
        SignedManifest {
            manifest,
            signatures: vec![signature],
        },
    )
}

/// `tapes team rotate`: starts a new key epoch wrapped to the current members (any member may).
pub fn rotate(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    now_ms: i64,
) -> Result<(), TeamError> {
    if chain.head().manifest.member(&me(identity)).is_none() {
        return Err(TeamError::NotMember(chain.team_id()));
    }
    let members = chain.head().manifest.members.clone();
    change_members(store, identity, chain, members, true, now_ms)
}

/// Seals content for a team, rotating the key first if someone left since the last rotation.
pub fn seal_for(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    plaintext: &[u8],
    now_ms: i64,
) -> Result<crate::team::keyring::Sealed, TeamError> {
    rotate_if_owed(store, identity, chain, now_ms)?;
    Ok(crate::team::keyring::seal(chain, plaintext)?)
}

/// [`seal_for`] into the encoded form, for the wire (see [`crate::team::keyring::seal_encoded`]).
pub fn seal_encoded_for(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    plaintext: &[u8],
    now_ms: i64,
) -> Result<Vec<u8>, TeamError> {
    rotate_if_owed(store, identity, chain, now_ms)?;
    Ok(crate::team::keyring::seal_encoded(chain, plaintext)?)
}

/// Rotates the team key first when someone who left still knows the current one.
fn rotate_if_owed(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    now_ms: i64,
) -> Result<(), TeamError> {
    if !chain.rotation_owed().is_empty() {
        rotate(store, identity, chain, now_ms)?;
    }
    Ok(())
}

/// Which side of a fork an owner keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Ours,
    Theirs,
}

/// `tapes team resolve`: as an owner of the version before the split, sign a manifest that
/// continues one side (unchanged); every peer that sees it follows that side.
pub fn resolve_fork(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    keep: Side,
    now_ms: i64,
) -> Result<(), TeamError> {
    let fork = chain
        .fork()
        .cloned()
        .ok_or_else(|| TeamError::Damaged("the team is not forked".into()))?;
    let tip = match keep {
        Side::Ours => chain.head().clone(),
        Side::Theirs => fork.theirs.clone(),
    };
    let t = &tip.manifest;
    let manifest = Manifest {
        team: Some(chain.team_id()),
        version: t.version + 1,
        prev: Some(tip.id()),
        created_ms: now_ms.max(t.created_ms),
        ..t.clone()
    };
    let signature = manifest.sign(identity.signing_key());
    let next = SignedManifest {
        manifest,
        signatures: vec![signature],
    };
    chain.apply(next)?;
    store_chain(store, chain)
}

/// `tapes team promote`: changes a member's role.
pub fn set_role(
    store: &Store,
    identity: &Identity,
    chain: &mut TeamChain,
    member: &MemberId,
    role: TeamRole,
    now_ms: i64,
) -> Result<(), TeamError> {
    require_admin(chain, identity, "change roles")?;
    let members = chain
        .head()
        .manifest
        .members
        .iter()
        .map(|m| {
            if &m.id == member {
                Member { role, ..m.clone() }
            } else {
                m.clone()
            }
        })
        .collect();
    change_members(store, identity, chain, members, false, now_ms)
}

/// `tapes team invite`: records the invite (hash only) and returns the code to hand out.
pub fn invite(
    store: &Store,
    identity: &Identity,
    chain: &TeamChain,
    options: InviteOptions,
    now_ms: i64,
) -> Result<(String, InviteRecord), TeamError> {
    require_admin(chain, identity, "invite")?;
    if options.role == TeamRole::Owner {
        return Err(TeamError::NotAllowed {
            role: "not an owner",
            action: "invite owners",
        });
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| TeamError::Damaged(format!("no randomness: {e}")))?;
    let record = InviteRecord {
        team: chain.team_id(),
        secret_hash: join::secret_hash(&secret),
        created_ms: now_ms,
        expires_ms: options.expires_ms,
        max_uses: options.max_uses.max(1),
        uses: 0,
        email: options.email,
        role: options.role,
        revoked: false,
    };
    let key = invite_key(&record.secret_hash);
    store
        .storage()
        .update_refs(&[RefUpdate {
            key,
            expected: None,
            new: Some(join::encode(&record)),
        }])
        .map_err(StoreError::from)?;
    store.storage().flush().map_err(StoreError::from)?;
    let invite = Invite {
        team: chain.team_id(),
        team_name: chain.head().manifest.name.clone(),
        inviter: me(identity),
        addrs: options.addrs,
        secret,
    };
    Ok((invite_to_code(&invite), record))
}

/// The invites this node issued for `team`.
pub fn invites(store: &Store, team: &TeamId) -> Result<Vec<InviteRecord>, TeamError> {
    let mut out = Vec::new();
    for entry in store.storage().refs(crate::store::keys::INVITE) {
        let (key, value) = entry.map_err(StoreError::from)?;
        let record: InviteRecord = join::decode(&value).map_err(|_| {
            TeamError::Damaged(format!("invite record {}", String::from_utf8_lossy(&key)))
        })?;
        if &record.team == team {
            out.push(record);
        }
    }
    Ok(out)
}

/// `tapes team invite --revoke`: by the code itself or by the invite's short id.
pub fn revoke(store: &Store, code_or_id: &str) -> Result<InviteRecord, TeamError> {
    // Errors name the invite by its short id: the code itself carries the secret.
    let (hash_prefix, shown) = match code_to_invite(code_or_id) {
        Ok(invite) => {
            let hash = hex::encode(join::secret_hash(&invite.secret));
            let shown = format!("the code's invite {}", &hash[..12]);
            (hash, shown)
        }
        Err(_) => (
            code_or_id.trim().to_ascii_lowercase(),
            code_or_id.trim().to_string(),
        ),
    };
    let mut found = None;
    for entry in store
        .storage()
        .refs(&crate::store::keys::invite(&hash_prefix))
    {
        let (key, value) = entry.map_err(StoreError::from)?;
        if found.is_some() {
            return Err(TeamError::NoSuchInvite(format!(
                "{shown} (ambiguous: type more of the id)"
            )));
        }
        found = Some((key, value));
    }
    let (key, value) = found.ok_or(TeamError::NoSuchInvite(shown))?;
    let mut record: InviteRecord =
        join::decode(&value).map_err(|_| TeamError::Damaged("invite record".into()))?;
    record.revoked = true;
    store
        .storage()
        .update_refs(&[RefUpdate {
            key,
            expected: Some(value),
            new: Some(join::encode(&record)),
        }])
        .map_err(|_| TeamError::Raced)?;
    store.storage().flush().map_err(StoreError::from)?;
    Ok(record)
}

/// The invite hints that let a joiner leave a request at `relay` while the inviter is
/// offline: the relay's ticket and the inviter's age recipient, which the request is sealed to
/// (it carries the invite secret, which the relay must not learn).
pub fn relay_hints(identity: &Identity, relay_ticket: &str) -> Vec<String> {
    vec![
        format!("relay:{relay_ticket}"),
        format!("age:{}", identity.age_recipient()),
    ]
}

/// The inviter's age recipient from an invite's `age:` hint.
pub fn inviter_recipient(invite: &Invite) -> Option<age::x25519::Recipient> {
    invite
        .addrs
        .iter()
        .find_map(|h| h.strip_prefix("age:"))
        .and_then(|r| r.parse().ok())
}

/// The joiner's side, step 1: a signed request for the team in `code`.
pub fn join_request(
    identity: &Identity,
    code: &str,
    now_ms: i64,
) -> Result<(Invite, JoinRequest), TeamError> {
    let invite = code_to_invite(code)?;
    let body = JoinRequestBody {
        team: invite.team,
        secret: invite.secret,
        member: member_for(identity, TeamRole::Member),
        created_ms: now_ms,
    };
    let request = JoinRequest::sign(body, identity.signing_key());
    Ok((invite, request))
}

/// The inviter's side: checks a join request against the stored invite and, if it holds,
/// adds the member (with the invite's role) in a new manifest and answers with the chain.
/// A refusal is an answer, not an error: it goes back to the joiner.
pub fn accept_join(
    store: &Store,
    identity: &Identity,
    request: &JoinRequest,
    now_ms: i64,
) -> Result<JoinResponse, TeamError> {
    if !request.verify() {
        return Ok(JoinResponse::Refused(JoinRefusal::BadSignature));
    }
    let hash = join::secret_hash(&request.body.secret);
    let key = invite_key(&hash);
    let Some(raw) = store.storage().get_ref(&key).map_err(StoreError::from)? else {
        return Ok(JoinResponse::Refused(JoinRefusal::UnknownInvite));
    };
    let mut record: InviteRecord =
        join::decode(&raw).map_err(|_| TeamError::Damaged("invite record".into()))?;
    if record.team != request.body.team {
        return Ok(JoinResponse::Refused(JoinRefusal::UnknownInvite));
    }
    let refusal = if record.revoked {
        Some(JoinRefusal::Revoked)
    } else if record.expires_ms.is_some_and(|t| now_ms >= t) {
        Some(JoinRefusal::Expired)
    } else if record.uses >= record.max_uses {
        Some(JoinRefusal::Spent)
    } else {
        match &record.email {
            Some(required)
                if request
                    .body
                    .member
                    .email
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    != Some(required.to_ascii_lowercase()) =>
            {
                Some(JoinRefusal::EmailMismatch {
                    required: required.clone(),
                })
            }
            _ => None,
        }
    };
    if let Some(refusal) = refusal {
        return Ok(JoinResponse::Refused(refusal));
    }
    let mut chain = load(store, &record.team)?;
    if chain
        .head()
        .manifest
        .member(&request.body.member.id)
        .is_some()
    {
        return Ok(JoinResponse::Refused(JoinRefusal::AlreadyMember));
    }
    if let Err(e) = require_admin(&chain, identity, "add members") {
        return Ok(JoinResponse::Refused(JoinRefusal::Unauthorized(
            e.to_string(),
        )));
    }
    let mut members = chain.head().manifest.members.clone();
    members.push(Member {
        role: record.role,
        ..request.body.member.clone()
    });
    change_members(store, identity, &mut chain, members, false, now_ms)?;
    // Count the use only after the member is in; a crash in between costs a use, never a
    // member admitted beyond the limit.
    record.uses += 1;
    store
        .storage()
        .update_refs(&[RefUpdate {
            key,
            expected: Some(raw),
            new: Some(join::encode(&record)),
        }])
        .map_err(|_| TeamError::Raced)?;
    store.storage().flush().map_err(StoreError::from)?;
    Ok(JoinResponse::Accepted {
        manifests: chain
            .versions()
            .iter()
            .map(SignedManifest::encode)
            .collect(),
    })
}

/// The joiner's side, step 2: verifies the answer (the whole chain from genesis, that it is the
/// team of the invite, that this identity is in it and can open its key ring) and stores it.
pub fn complete_join(
    store: &Store,
    identity: &Identity,
    team: &TeamId,
    response: JoinResponse,
) -> Result<TeamChain, TeamError> {
    let manifests = match response {
        JoinResponse::Refused(reason) => return Err(TeamError::Refused(reason)),
        JoinResponse::Accepted { manifests } => manifests,
    };
    let versions = manifests
        .iter()
        .map(|b| SignedManifest::decode(b))
        .collect::<Result<Vec<_>, _>>()?;
    let chain = TeamChain::from_versions(versions, None)?;
    if &chain.team_id() != team {
        return Err(ManifestError::WrongTeam {
            expected: *team,
            found: chain.team_id(),
        }
        .into());
    }
    if chain.head().manifest.member(&me(identity)).is_none() {
        return Err(TeamError::NotMember(chain.team_id()));
    }
    KeyRing::unwrap_from(&chain.head().manifest, identity.age_identity())?;
    store_chain(store, &chain)?;
    Ok(chain)
}

/// Applies manifests received from a teammate to the stored chain (newer versions, or a fork
/// to record). Returns what happened to each.
pub fn receive(
    store: &Store,
    team: &TeamId,
    manifests: Vec<SignedManifest>,
) -> Result<Vec<Result<Applied, ManifestError>>, TeamError> {
    let mut chain = load(store, team)?;
    let mut results = Vec::new();
    for m in manifests {
        let result = if m.manifest.version <= chain.head().manifest.version
            && chain
                .versions()
                .get(m.manifest.version as usize)
                .is_some_and(|v| v.id() == m.id())
        {
            Ok(Applied::AlreadyKnown)
        } else {
            chain.apply(m)
        };
        results.push(result);
    }
    store_chain(store, &chain)?;
    Ok(results)
}

/// Remembers that a join request for `team` (named `name`) was written to a file, so the
/// answer file `tapes team join --answer` brings can be checked against what was asked.
pub fn remember_pending_join(store: &Store, team: &TeamId, name: &str) -> Result<(), TeamError> {
    let key = crate::store::keys::pending_join(team);
    let current = store.storage().get_ref(&key).map_err(StoreError::from)?;
    store
        .storage()
        .update_refs(&[crate::store::backend::RefUpdate {
            key,
            expected: current,
            new: Some(name.as_bytes().to_vec()),
        }])
        .map_err(StoreError::from)?;
    store.storage().flush().map_err(StoreError::from)?;
    Ok(())
}

/// The teams this store asked to join by request file and has no answer for yet.
pub fn pending_joins(store: &Store) -> Result<Vec<TeamId>, TeamError> {
    let mut out = Vec::new();
    for entry in store.storage().refs(crate::store::keys::PENDING_JOIN) {
        let (key, _) = entry.map_err(StoreError::from)?;
        let hex =
            String::from_utf8_lossy(&key[crate::store::keys::PENDING_JOIN.len()..]).into_owned();
        out.push(
            hex.parse::<TeamId>()
                .map_err(|_| TeamError::Damaged(format!("pending join record {hex}")))?,
        );
    }
    Ok(out)
}

/// Forgets the pending join of `team` (its answer came).
pub fn forget_pending_join(store: &Store, team: &TeamId) -> Result<(), TeamError> {
    let key = crate::store::keys::pending_join(team);
    let current = store.storage().get_ref(&key).map_err(StoreError::from)?;
    store
        .storage()
        .update_refs(&[crate::store::backend::RefUpdate {
            key,
            expected: current,
            new: None,
        }])
        .map_err(StoreError::from)?;
    store.storage().flush().map_err(StoreError::from)?;
    Ok(())
}
