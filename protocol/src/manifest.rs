//! Team manifests: who is in a team, signed link by link (SPEC.md §9).
//!
//! A team is a chain of manifests. Version 0 (genesis) is signed by its creator, an owner listed
//! in it; its id is the team id. Every later version names the id of the version before it and
//! is signed by an owner or admin *of that previous version* — so authority always flows from
//! members everyone already agreed on, never from the new manifest itself. Each manifest also
//! carries the team's current key epoch: the age recipient to seal new content to, and the
//! team's key ring wrapped to every member (opaque bytes here; `tapes::team::keyring` makes them).
//!
//! This module is pure: encoding, ids, signatures and the transition rules. The chain state
//! machine that applies manifests one by one (and detects rollbacks and forks) is
//! [`crate::team_chain`].

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::bytes::{put_bytes, put_opt_str, put_str, put_u32, put_u64, DecodeError, Reader};
use crate::id::{ManifestId, MemberId, TeamId};

/// Format byte that starts every encoded manifest.
pub const MANIFEST_FORMAT: u8 = 1;
/// BLAKE3 derive-key context of manifest ids (and so of team ids).
pub const MANIFEST_ID_CONTEXT: &str = "tapes 2026-11 team manifest id v1";
/// Prefix of the message an ed25519 manifest signature covers: `prefix || manifest id`.
pub const SIGNATURE_PREFIX: &[u8] = b"tapes team manifest signature v1\0";

/// A member's standing in a team. Ordered: Member < Admin < Owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeamRole {
    Member,
    Admin,
    Owner,
}

impl TeamRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TeamRole::Member => "member",
            TeamRole::Admin => "admin",
            TeamRole::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<TeamRole> {
        Some(match s {
            "member" => TeamRole::Member,
            "admin" => TeamRole::Admin,
            "owner" => TeamRole::Owner,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            TeamRole::Member => 0,
            TeamRole::Admin => 1,
            TeamRole::Owner => 2,
        }
    }
}

/// One member of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's ed25519 public key: their node id and signing key.
    pub id: MemberId,
    /// Their age X25519 recipient (`age1…`): team key rings are wrapped to it.
    pub age_recipient: String,
    pub name: String,
    pub email: Option<String>,
    pub role: TeamRole,
}

/// The signed content of one version of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `None` only in genesis, whose id *is* the team id.
    pub team: Option<TeamId>,
    pub version: u64,
    /// The id of version − 1; `None` only in genesis.
    pub prev: Option<ManifestId>,
    pub name: String,
    /// Sorted by id, no duplicates.
    pub members: Vec<Member>,
    pub created_ms: i64,
    /// The key epoch: bumped whenever someone leaves, so they cannot read what comes after.
    pub epoch: u64,
    /// The age recipient of this epoch's team key: what content is sealed to.
    pub epoch_recipient: String,
    /// Every epoch key of the team so far, age-encrypted to every member's recipient.
    pub keyring: Vec<u8>,
}

/// One ed25519 signature over a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSignature {
    pub signer: MemberId,
    pub signature: [u8; 64],
}

/// A manifest and its signatures, as stored and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub signatures: Vec<ManifestSignature>,
}

/// Why a manifest was refused. Each names the problem so a user (or a log) can tell a forgery
/// from a stale peer from a team split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    #[error(
        "manifest signature by {signer} does not verify (tampered bytes or a forged signature)"
    )]
    BadSignature { signer: MemberId },
    #[error("manifest version {version} is signed by {signer}, who is not a member of version {prev_version}")]
    SignerNotMember {
        signer: MemberId,
        version: u64,
        prev_version: u64,
    },
    #[error("manifest version {version} is signed only by {signer}, a plain member of version {prev_version}; only an owner or admin may change the team")]
    SignerNotAdmin {
        signer: MemberId,
        version: u64,
        prev_version: u64,
    },
    #[error(
        "manifest version {version} {what}; only an owner of version {prev_version} may do that"
    )]
    NeedsOwner {
        version: u64,
        what: String,
        prev_version: u64,
    },
    #[error("manifest version {version} leaves the team without an owner; the last owner must hand over before leaving")]
    NoOwner { version: u64 },
    #[error("manifest version {version} removes members without rotating the team key (epoch stays {epoch})")]
    NoRotation { version: u64, epoch: u64 },
    #[error("manifest belongs to team {found}, not to team {expected}")]
    WrongTeam { expected: TeamId, found: TeamId },
    #[error("manifest version {version} follows {prev}, which is not version {prev_version} of this team (unknown previous manifest)")]
    UnknownPrev {
        version: u64,
        prev: ManifestId,
        prev_version: u64,
    },
    #[error("manifest version {offered} is older than the current version {current}; refusing a rollback (replayed manifest)")]
    Rollback { offered: u64, current: u64 },
    #[error("team is forked: two different manifests claim version {version} ({a} and {b}); both are refused until an owner of version {base} signs a manifest that continues one of them")]
    Forked {
        version: u64,
        base: u64,
        a: ManifestId,
        b: ManifestId,
    },
    #[error("manifest skips from version {current} to {offered}; fetch the versions in between")]
    Gap { offered: u64, current: u64 },
}

impl Manifest {
    /// The canonical bytes (SPEC.md §9.1); signatures and ids cover exactly these.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.keyring.len());
        out.push(MANIFEST_FORMAT);
        put_opt_id(&mut out, self.team.as_ref().map(|t| &t.0));
        put_u64(&mut out, self.version);
        put_opt_id(&mut out, self.prev.as_ref().map(|p| &p.0));
        put_str(&mut out, &self.name);
        put_u32(&mut out, self.members.len());
        for m in &self.members {
            out.extend_from_slice(m.id.as_bytes());
            put_str(&mut out, &m.age_recipient);
            put_str(&mut out, &m.name);
            put_opt_str(&mut out, m.email.as_deref());
            out.push(m.role.code());
        }
        put_u64(&mut out, self.created_ms as u64);
        put_u64(&mut out, self.epoch);
        put_str(&mut out, &self.epoch_recipient);
        put_bytes(&mut out, &self.keyring);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != MANIFEST_FORMAT {
            return Err(DecodeError::FormatVersion(format).into());
        }
        let team = read_opt_id(&mut r)?.map(TeamId);
        let version = r.u64()?;
        let prev = read_opt_id(&mut r)?.map(ManifestId);
        let name = r.str()?;
        let count = r.u32()?;
        // A member takes at least 32 + 4 + 4 + 1 + 1 bytes.
        r.need(count.saturating_mul(42))?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let id = MemberId(r.array()?);
            let age_recipient = r.str()?;
            let name = r.str()?;
            let email = r.opt_str()?;
            let role = match r.tag("role", &[0, 1, 2])? {
                0 => TeamRole::Member,
                1 => TeamRole::Admin,
                _ => TeamRole::Owner,
            };
            members.push(Member {
                id,
                age_recipient,
                name,
                email,
                role,
            });
        }
        let created_ms = r.u64()? as i64;
        let epoch = r.u64()?;
        let epoch_recipient = r.str()?;
        let keyring = r.bytes()?;
        r.finish()?;
        let manifest = Manifest {
            team,
            version,
            prev,
            name,
            members,
            created_ms,
            epoch,
            epoch_recipient,
            keyring,
        };
        manifest.check_shape()?;
        Ok(manifest)
    }

    pub fn id(&self) -> ManifestId {
        id_of_bytes(&self.encode())
    }

    /// The team this manifest belongs to: its own id for genesis.
    pub fn team_id(&self) -> TeamId {
        self.team.unwrap_or_else(|| TeamId(self.id().0))
    }

    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.id.cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    pub fn owners(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role == TeamRole::Owner)
    }

    /// Rules that hold for any single manifest, whatever came before.
    pub fn check_shape(&self) -> Result<(), ManifestError> {
        let genesis = self.version == 0;
        if genesis != self.team.is_none() || genesis != self.prev.is_none() {
            return Err(ManifestError::Malformed(
                "version 0 and only version 0 has no team id and no previous manifest".into(),
            ));
        }
        if !self.members.windows(2).all(|w| w[0].id < w[1].id) {
            return Err(ManifestError::Malformed(
                "members are not sorted by id or appear twice".into(),
            ));
        }
        if self.owners().next().is_none() {
            return Err(ManifestError::NoOwner {
                version: self.version,
            });
        }
        Ok(())
    }

    /// Signs this manifest with `key`.
    pub fn sign(&self, key: &SigningKey) -> ManifestSignature {
        let message = signature_message(&self.id());
        ManifestSignature {
            signer: MemberId(key.verifying_key().to_bytes()),
            signature: key.sign(&message).to_bytes(),
        }
    }
}

/// The id of already encoded manifest bytes.
pub fn id_of_bytes(bytes: &[u8]) -> ManifestId {
    let mut h = blake3::Hasher::new_derive_key(MANIFEST_ID_CONTEXT);
    h.update(bytes);
    ManifestId(*h.finalize().as_bytes())
}

fn signature_message(id: &ManifestId) -> Vec<u8> {
    let mut message = SIGNATURE_PREFIX.to_vec();
    message.extend_from_slice(id.as_bytes());
    message
}

fn put_opt_id(out: &mut Vec<u8>, id: Option<&[u8; 32]>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id);
        }
    }
}

fn read_opt_id(r: &mut Reader<'_>) -> Result<Option<[u8; 32]>, DecodeError> {
    Ok(match r.tag("option flag", &[0, 1])? {
        0 => None,
        _ => Some(r.array()?),
    })
}

impl SignedManifest {
    /// Wire/storage form: `u32le len || manifest bytes || list<(signer id32, signature 64)>`.
    pub fn encode(&self) -> Vec<u8> {
        let manifest = self.manifest.encode();
        let mut out = Vec::with_capacity(manifest.len() + 4 + 4 + self.signatures.len() * 96);
        put_bytes(&mut out, &manifest);
        put_u32(&mut out, self.signatures.len());
        for s in &self.signatures {
            out.extend_from_slice(s.signer.as_bytes());
            out.extend_from_slice(&s.signature);
        }
        out
    }

    /// Decodes and checks every signature cryptographically (not who signed: that needs the
    /// previous version, see [`verify_successor`] and [`verify_genesis`]).
    pub fn decode(bytes: &[u8]) -> Result<SignedManifest, ManifestError> {
        let mut r = Reader::new(bytes);
        let manifest_bytes = r.bytes()?;
        let count = r.u32()?;
        r.need(count.saturating_mul(96))?;
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            signatures.push(ManifestSignature {
                signer: MemberId(r.array()?),
                signature: r.array()?,
            });
        }
        r.finish()?;
        let manifest = Manifest::decode(&manifest_bytes)?;
        let signed = SignedManifest {
            manifest,
            signatures,
        };
        signed.check_signatures()?;
        Ok(signed)
    }

    pub fn id(&self) -> ManifestId {
        self.manifest.id()
    }

    fn check_signatures(&self) -> Result<(), ManifestError> {
        if self.signatures.is_empty() {
            return Err(ManifestError::Malformed(
                "manifest carries no signature".into(),
            ));
        }
        let message = signature_message(&self.id());
        for s in &self.signatures {
            let key = VerifyingKey::from_bytes(s.signer.as_bytes())
                .map_err(|_| ManifestError::BadSignature { signer: s.signer })?;
            key.verify(&message, &Signature::from_bytes(&s.signature))
                .map_err(|_| ManifestError::BadSignature { signer: s.signer })?;
        }
        Ok(())
    }

    fn signers(&self) -> impl Iterator<Item = &MemberId> {
        self.signatures.iter().map(|s| &s.signer)
    }
}

/// Checks a genesis manifest: well formed, validly signed, and signed by an owner it lists.
pub fn verify_genesis(genesis: &SignedManifest) -> Result<(), ManifestError> {
    let m = &genesis.manifest;
    if m.version != 0 {
        return Err(ManifestError::Malformed(format!(
            "a team starts at version 0, not {}",
            m.version
        )));
    }
    m.check_shape()?;
    genesis.check_signatures()?;
    let by_owner = genesis
        .signers()
        .any(|s| m.member(s).is_some_and(|mem| mem.role == TeamRole::Owner));
    match genesis.signers().next() {
        Some(_) if by_owner => Ok(()),
        Some(signer) if m.member(signer).is_none() => Err(ManifestError::SignerNotMember {
            signer: *signer,
            version: 0,
            prev_version: 0,
        }),
        Some(signer) => Err(ManifestError::SignerNotAdmin {
            signer: *signer,
            version: 0,
            prev_version: 0,
        }),
        None => Err(ManifestError::Malformed(
            "manifest carries no signature".into(),
        )),
    }
}

/// Checks that `next` may follow `prev` (already verified): same team, consecutive, signed by
/// an owner/admin of `prev` (or a member removing only themselves), and within the role rules.
pub fn verify_successor(prev: &SignedManifest, next: &SignedManifest) -> Result<(), ManifestError> {
    let (p, n) = (&prev.manifest, &next.manifest);
    let team = p.team_id();
    if n.team_id() != team {
        return Err(ManifestError::WrongTeam {
            expected: team,
            found: n.team_id(),
        });
    }
    if n.version != p.version + 1 || n.prev != Some(prev.id()) {
        let prev_id = n.prev.unwrap_or(ManifestId([0; 32]));
        return Err(ManifestError::UnknownPrev {
            version: n.version,
            prev: prev_id,
            prev_version: p.version,
        });
    }
    n.check_shape()?;
    next.check_signatures()?;

    let change = Change::between(p, n);
    // Authority comes from the previous version only.
    let mut best: Option<TeamRole> = None;
    for signer in next.signers() {
        match p.member(signer) {
            None => {
                return Err(ManifestError::SignerNotMember {
                    signer: *signer,
                    version: n.version,
                    prev_version: p.version,
                })
            }
            Some(m) => best = best.max(Some(m.role)),
        }
    }
    // A member leaving signs their own removal but may change nothing else: in particular not
    // the key, or they could wrap the next epoch's key to themselves and keep reading. The
    // remaining members rotate afterwards (see `TeamChain::rotation_owed`).
    let keeps_keys = n.name == p.name
        && n.epoch == p.epoch
        && n.epoch_recipient == p.epoch_recipient
        && n.keyring == p.keyring;
    let self_removal = next.signatures.len() == 1
        && change.removed == [next.signatures[0].signer]
        && change.added.is_empty()
        && change.role_changes.is_empty()
        && keeps_keys;
    // Any member may start a new key epoch when nothing else changes: they hold the key anyway.
    let rotation_only = change.is_empty() && n.name == p.name && n.epoch == p.epoch + 1;
    match best {
        Some(TeamRole::Owner | TeamRole::Admin) => {}
        _ if self_removal || rotation_only => {}
        _ => {
            let signer = next
                .signatures
                .first()
                .map(|s| s.signer)
                .unwrap_or(MemberId([0; 32]));
            return Err(ManifestError::SignerNotAdmin {
                signer,
                version: n.version,
                prev_version: p.version,
            });
        }
    }
    if best != Some(TeamRole::Owner) && !self_removal {
        if let Some(what) = change.owner_only_action(p, n) {
            return Err(ManifestError::NeedsOwner {
                version: n.version,
                what,
                prev_version: p.version,
            });
        }
    }
    if !change.removed.is_empty() && !self_removal && n.epoch <= p.epoch {
        return Err(ManifestError::NoRotation {
            version: n.version,
            epoch: n.epoch,
        });
    }
    if n.epoch < p.epoch {
        return Err(ManifestError::Malformed(format!(
            "key epoch goes back from {} to {}",
            p.epoch, n.epoch
        )));
    }
    Ok(())
}

/// Membership differences between two versions.
struct Change {
    added: Vec<MemberId>,
    removed: Vec<MemberId>,
    /// (member, old role, new role)
    role_changes: Vec<(MemberId, TeamRole, TeamRole)>,
}

impl Change {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.role_changes.is_empty()
    }

    fn between(p: &Manifest, n: &Manifest) -> Change {
        let before: BTreeMap<MemberId, TeamRole> =
            p.members.iter().map(|m| (m.id, m.role)).collect();
        let after: BTreeMap<MemberId, TeamRole> =
            n.members.iter().map(|m| (m.id, m.role)).collect();
        Change {
            added: after
                .keys()
                .filter(|id| !before.contains_key(id))
                .copied()
                .collect(),
            removed: before
                .keys()
                .filter(|id| !after.contains_key(id))
                .copied()
                .collect(),
            role_changes: after
                .iter()
                .filter_map(|(id, new)| {
                    before
                        .get(id)
                        .filter(|old| *old != new)
                        .map(|old| (*id, *old, *new))
                })
                .collect(),
        }
    }

    /// What in this change only an owner may sign, if anything: removing or demoting an admin
    /// or owner, and making anyone an owner.
    fn owner_only_action(&self, p: &Manifest, n: &Manifest) -> Option<String> {
        for id in &self.removed {
            if p.member(id).is_some_and(|m| m.role >= TeamRole::Admin) {
                return Some(format!(
                    "removes {} {}",
                    p.member(id).map_or("", |m| m.role.as_str()),
                    id.short()
                ));
            }
        }
        for (id, old, new) in &self.role_changes {
            if *old >= TeamRole::Admin && new < old {
                return Some(format!(
                    "demotes {} {} to {}",
                    old.as_str(),
                    id.short(),
                    new.as_str()
                ));
            }
            if *new == TeamRole::Owner {
                return Some(format!("makes {} an owner", id.short()));
            }
        }
        for id in &self.added {
            if n.member(id).is_some_and(|m| m.role == TeamRole::Owner) {
                return Some(format!("adds {} as an owner", id.short()));
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn member(seed: u8, role: TeamRole) -> Member {
        Member {
            id: MemberId(key(seed).verifying_key().to_bytes()),
            age_recipient: format!("age1member{seed}"),
            name: format!("m{seed}"),
            email: None,
            role,
        }
    }

    pub(crate) fn genesis() -> SignedManifest {
        let manifest = Manifest {
            team: None,
            version: 0,
            prev: None,
            name: "Paper Compute".into(),
            members: vec![member(1, TeamRole::Owner)],
            created_ms: 1,
            epoch: 0,
            epoch_recipient: "age1epoch0".into(),
            keyring: vec![1, 2, 3],
        };
        let sig = manifest.sign(&key(1));
        SignedManifest {
            manifest,
            signatures: vec![sig],
        }
    }

    pub(crate) fn next(
        prev: &SignedManifest,
        members: Vec<Member>,
        epoch: u64,
        signer: u8,
    ) -> SignedManifest {
        let mut members = members;
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let manifest = Manifest {
            team: Some(prev.manifest.team_id()),
            version: prev.manifest.version + 1,
            prev: Some(prev.id()),
            members,
            epoch,
            created_ms: prev.manifest.created_ms + 1,
            ..prev.manifest.clone()
        };
        let sig = manifest.sign(&key(signer));
        SignedManifest {
            manifest,
            signatures: vec![sig],
        }
    }

    #[test]
    fn encoding_round_trips_and_detects_tampering() {
        let g = genesis();
        let bytes = g.encode();
        assert_eq!(SignedManifest::decode(&bytes).unwrap(), g);
        // Flip a byte of the team name: the signature no longer verifies.
        let mut bad = bytes.clone();
        let at = bad.windows(5).position(|w| w == b"Paper").unwrap();
        bad[at] = b'p';
        assert!(matches!(
            SignedManifest::decode(&bad),
            Err(ManifestError::BadSignature { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(SignedManifest::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn genesis_must_be_signed_by_an_owner_it_lists() {
        verify_genesis(&genesis()).unwrap();
        let mut g = genesis();
        g.signatures = vec![g.manifest.sign(&key(9))];
        assert!(matches!(
            verify_genesis(&g),
            Err(ManifestError::SignerNotMember { .. })
        ));
    }

    #[test]
    fn admins_add_members_plain_members_cannot() {
        let g = genesis();
        let v1 = next(
            &g,
            vec![member(1, TeamRole::Owner), member(2, TeamRole::Admin)],
            0,
            1,
        );
        verify_successor(&g, &v1).unwrap();
        let v2 = next(
            &v1,
            vec![
                member(1, TeamRole::Owner),
                member(2, TeamRole::Admin),
                member(3, TeamRole::Member),
            ],
            0,
            2,
        );
        verify_successor(&v1, &v2).unwrap();
        let v3 = next(
            &v2,
            vec![
                member(1, TeamRole::Owner),
                member(2, TeamRole::Admin),
                member(3, TeamRole::Member),
                member(4, TeamRole::Member),
            ],
            0,
            3,
        );
        assert!(matches!(
            verify_successor(&v2, &v3),
            Err(ManifestError::SignerNotAdmin { .. })
        ));
        let outsider = next(&v2, v2.manifest.members.clone(), 0, 7);
        assert!(matches!(
            verify_successor(&v2, &outsider),
            Err(ManifestError::SignerNotMember { .. })
        ));
    }

    #[test]
    fn only_owners_remove_admins_and_removal_rotates_the_key() {
        let g = genesis();
        let v1 = next(
            &g,
            vec![
                member(1, TeamRole::Owner),
                member(2, TeamRole::Admin),
                member(3, TeamRole::Admin),
            ],
            0,
            1,
        );
        let by_admin = next(
            &v1,
            vec![member(1, TeamRole::Owner), member(2, TeamRole::Admin)],
            1,
            2,
        );
        assert!(matches!(
            verify_successor(&v1, &by_admin),
            Err(ManifestError::NeedsOwner { .. })
        ));
        let by_owner = next(
            &v1,
            vec![member(1, TeamRole::Owner), member(2, TeamRole::Admin)],
            1,
            1,
        );
        verify_successor(&v1, &by_owner).unwrap();
        let no_rotation = next(
            &v1,
            vec![member(1, TeamRole::Owner), member(2, TeamRole::Admin)],
            0,
            1,
        );
        assert!(matches!(
            verify_successor(&v1, &no_rotation),
            Err(ManifestError::NoRotation { .. })
        ));
        let admin_makes_owner = next(
            &v1,
            vec![
                member(1, TeamRole::Owner),
                member(2, TeamRole::Owner),
                member(3, TeamRole::Admin),
            ],
            0,
            2,
        );
        assert!(matches!(
            verify_successor(&v1, &admin_makes_owner),
            Err(ManifestError::NeedsOwner { .. })
        ));
    }

    #[test]
    fn a_member_may_remove_only_themselves_and_the_last_owner_may_not_leave() {
        let g = genesis();
        let v1 = next(
            &g,
            vec![member(1, TeamRole::Owner), member(3, TeamRole::Member)],
            0,
            1,
        );
        let leave = next(&v1, vec![member(1, TeamRole::Owner)], 0, 3);
        verify_successor(&v1, &leave).unwrap();
        // Leaving with a new key of one's own choosing would let the leaver keep reading.
        let leave_with_key = next(&v1, vec![member(1, TeamRole::Owner)], 1, 3);
        assert!(matches!(
            verify_successor(&v1, &leave_with_key),
            Err(ManifestError::SignerNotAdmin { .. })
        ));
        // Any remaining member may rotate when nothing else changes.
        let rotate = next(&leave, leave.manifest.members.clone(), 1, 1);
        verify_successor(&leave, &rotate).unwrap();
        let plain_rotates = next(&v1, v1.manifest.members.clone(), 1, 3);
        verify_successor(&v1, &plain_rotates).unwrap();
        let owner_leaves = next(&v1, vec![member(3, TeamRole::Member)], 1, 1);
        assert!(matches!(
            verify_successor(&v1, &owner_leaves),
            Err(ManifestError::NoOwner { .. })
        ));
    }

    #[test]
    fn a_manifest_of_another_team_is_named_as_such() {
        let g = genesis();
        let mut other = genesis();
        other.manifest.name = "Other".into();
        other.signatures = vec![other.manifest.sign(&key(1))];
        let foreign = next(&other, other.manifest.members.clone(), 0, 1);
        assert!(matches!(
            verify_successor(&g, &foreign),
            Err(ManifestError::WrongTeam { .. })
        ));
    }
}
