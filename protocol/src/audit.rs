//! Audit log entries (SPEC.md §18): one signed, hash-chained record per access to a shared
//! session — share, unshare, fetch, deposit, delete, join, removal — in a per-team log.
//!
//! Each node that writes to a team's log (a member, or a relay the team registered) keeps its
//! own chain: entry `seq` n names the id of the same writer's entry n−1 (`prev`), so a removed,
//! altered or reordered entry breaks the chain of its writer ([`check_chain`]). An entry's id is
//! the BLAKE3 `derive_key(AUDIT_ID_CONTEXT)` hash of `postcard(entry)`; the writer signs
//! `derive_key(AUDIT_SIGNATURE_CONTEXT)` of that id. Who may write to a team's log is decided by
//! the caller (membership and relay registration are not this crate's business). Pinned by
//! `protocol/vectors/audit.toml`.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{MemberId, SessionId, TeamId};

pub const AUDIT_ID_CONTEXT: &str = "tapes 2026-12 audit entry id v1";
pub const AUDIT_SIGNATURE_CONTEXT: &str = "tapes 2026-12 audit entry signature v1";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AuditAction {
    /// `actor` shared `session` with the team (`detail`: `content` or `metadata only`).
    Share,
    /// `actor` revoked its share of `session`.
    Unshare,
    /// `actor` fetched `session` from the writer (a member's node or a relay).
    Fetch,
    /// `actor` deposited `session` at the writer (a relay).
    Deposit,
    /// `actor` deleted `session`.
    Delete,
    /// `actor` joined the team.
    Join,
    /// `actor` was removed from the team (or left).
    Remove,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Share => "share",
            AuditAction::Unshare => "unshare",
            AuditAction::Fetch => "fetch",
            AuditAction::Deposit => "deposit",
            AuditAction::Delete => "delete",
            AuditAction::Join => "join",
            AuditAction::Remove => "remove",
        }
    }

    /// The action named by [`AuditAction::as_str`].
    pub fn from_str_name(name: &str) -> Option<AuditAction> {
        [
            AuditAction::Share,
            AuditAction::Unshare,
            AuditAction::Fetch,
            AuditAction::Deposit,
            AuditAction::Delete,
            AuditAction::Join,
            AuditAction::Remove,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }

    /// The past tense a listing prints: `shared`, `fetched`, …
    pub fn past(self) -> &'static str {
        match self {
            AuditAction::Share => "shared",
            AuditAction::Unshare => "unshared",
            AuditAction::Fetch => "fetched",
            AuditAction::Deposit => "deposited",
            AuditAction::Delete => "deleted",
            AuditAction::Join => "joined",
            AuditAction::Remove => "was removed from",
        }
    }
}

/// A 32-byte audit entry id (hex in JSON and TOML, raw bytes in postcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub [u8; 32]);

impl Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let bytes = hex::decode(&s).map_err(serde::de::Error::custom)?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map(EntryId)
                .map_err(|_| serde::de::Error::custom("an entry id has 64 hex digits"))
        } else {
            <[u8; 32]>::deserialize(d).map(EntryId)
        }
    }
}

impl EntryId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

/// One event in a team's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub team: TeamId,
    /// The node that wrote and signs this entry.
    pub writer: MemberId,
    /// Its position in the writer's chain for this team, from 0.
    pub seq: u64,
    /// The id of the writer's entry `seq − 1` (`None` exactly when `seq` is 0).
    pub prev: Option<EntryId>,
    pub at_ms: i64,
    pub action: AuditAction,
    /// Who did it: the sharer, the fetcher, the depositor, the member who joined.
    pub actor: MemberId,
    /// The actor's name as the writer knew it (display only).
    pub actor_name: String,
    pub session: Option<SessionId>,
    /// Free text: `metadata only`, the head that was served, …
    pub detail: String,
}

impl AuditEntry {
    pub fn id(&self) -> EntryId {
        let mut h = blake3::Hasher::new_derive_key(AUDIT_ID_CONTEXT);
        h.update(&postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail"));
        EntryId(*h.finalize().as_bytes())
    }
}

/// The 32 bytes the writer signs for entry `id`.
pub fn signature_message(id: &EntryId) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(AUDIT_SIGNATURE_CONTEXT);
    h.update(&id.0);
    *h.finalize().as_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAuditEntry {
    pub entry: AuditEntry,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why an entry or a chain of entries is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the entry does not decode: {0}")]
    Malformed(String),
    #[error("entry {seq} of writer {writer} is not signed by that writer (altered or forged)")]
    Signature { writer: String, seq: u64 },
    #[error("entry {seq} of writer {writer} does not follow the writer's entry {prev}: an entry was removed, altered or reordered")]
    Chain { writer: String, seq: u64, prev: u64 },
    #[error("writer {writer}'s chain starts at entry {seq}, not 0: its first entries are missing")]
    Start { writer: String, seq: u64 },
    #[error("entry {seq} of writer {writer} belongs to another writer's or team's chain")]
    Foreign { writer: String, seq: u64 },
}

impl SignedAuditEntry {
    pub fn sign(entry: AuditEntry, key: &SigningKey) -> SignedAuditEntry {
        let signature = key
            .sign(&signature_message(&entry.id()))
            .to_bytes()
            .to_vec();
        SignedAuditEntry { entry, signature }
    }

    pub fn id(&self) -> EntryId {
        self.entry.id()
    }

    /// True when the writer the entry names signed it.
    pub fn verify(&self) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(self.signature.as_slice()) else {
            return false;
        };
        VerifyingKey::from_bytes(self.entry.writer.as_bytes())
            .and_then(|key| {
                key.verify(
                    &signature_message(&self.entry.id()),
                    &Signature::from_bytes(&signature),
                )
            })
            .is_ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedAuditEntry, AuditError> {
        match postcard::take_from_bytes::<SignedAuditEntry>(bytes) {
            // One entry, one encoding: postcard also reads overlong varints, which would let a
            // relay re-encode an entry into bytes a merge refuses as "another entry".
            Ok((entry, [])) if entry.encode() == bytes => Ok(entry),
            Ok((_, [])) => Err(AuditError::Malformed("not in canonical encoding".into())),
            Ok(_) => Err(AuditError::Malformed("trailing bytes".into())),
            Err(e) => Err(AuditError::Malformed(e.to_string())),
        }
    }

    /// Checks the signature and that the entry follows `previous` (the same writer's entry
    /// `seq − 1`, `None` for the first).
    pub fn check_after(&self, previous: Option<&SignedAuditEntry>) -> Result<(), AuditError> {
        let e = &self.entry;
        let writer = e.writer.short();
        if !self.verify() {
            return Err(AuditError::Signature { writer, seq: e.seq });
        }
        match previous {
            None if e.seq == 0 && e.prev.is_none() => Ok(()),
            None => Err(AuditError::Start { writer, seq: e.seq }),
            Some(p) if p.entry.writer != e.writer || p.entry.team != e.team => {
                Err(AuditError::Foreign { writer, seq: e.seq })
            }
            Some(p) if p.entry.seq + 1 == e.seq && e.prev == Some(p.id()) => Ok(()),
            Some(p) => Err(AuditError::Chain {
                writer,
                seq: e.seq,
                prev: p.entry.seq,
            }),
        }
    }
}

/// Checks one writer's chain given in the order it is held (it must be `seq` 0, 1, 2, …):
/// every signature, every `prev` link. Returns the number of entries.
pub fn check_chain(entries: &[SignedAuditEntry]) -> Result<usize, AuditError> {
    let mut previous: Option<&SignedAuditEntry> = None;
    for entry in entries {
        entry.check_after(previous)?;
        previous = Some(entry);
    }
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &SigningKey, n: u64) -> Vec<SignedAuditEntry> {
        let mut out: Vec<SignedAuditEntry> = Vec::new();
        for seq in 0..n {
            let entry = AuditEntry {
                team: TeamId([3; 32]),
                writer: MemberId(key.verifying_key().to_bytes()),
                seq,
                prev: out.last().map(|p| p.id()),
                at_ms: seq as i64,
                action: AuditAction::Fetch,
                actor: MemberId([4; 32]),
                actor_name: "bob".into(),
                session: Some(SessionId([5; 16])),
                detail: String::new(),
            };
            out.push(SignedAuditEntry::sign(entry, key));
        }
        out
    }

    #[test]
    fn removed_altered_and_reordered_entries_break_the_chain() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let good = chain(&key, 4);
        assert_eq!(check_chain(&good), Ok(4));
        let mut removed = good.clone();
        removed.remove(1);
        assert!(matches!(
            check_chain(&removed),
            Err(AuditError::Chain { seq: 2, .. })
        ));
        let mut altered = good.clone();
        altered[2].entry.actor_name = "mallory".into();
        assert!(matches!(
            check_chain(&altered),
            Err(AuditError::Signature { seq: 2, .. })
        ));
        let mut reordered = good.clone();
        reordered.swap(1, 2);
        assert!(check_chain(&reordered).is_err());
        assert!(matches!(
            check_chain(&good[1..]),
            Err(AuditError::Start { seq: 1, .. })
        ));
        let bytes = good[3].encode();
        assert_eq!(SignedAuditEntry::decode(&bytes).unwrap(), good[3]);
    }
}
