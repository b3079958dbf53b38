//! Signed tombstones (SPEC.md §3.5): the owner of a session asks every peer and relay that
//! holds it to drop it (`tapes rm --everywhere`).
//!
//! A tombstone names the session, its owner, the head the owner removed and when. It is signed
//! by the owner's node key over a BLAKE3 `derive_key` hash with its own context string, so no
//! other signature of tapes verifies as a tombstone. A receiver checks it against the session
//! it is asked to drop (the session id must be the one named: a tombstone replayed for another
//! session is refused) and against the owner its own copy of the session names (a tombstone
//! signed by anyone else is refused). Pinned by `protocol/vectors/tombstones.toml`.
//!
//! Encoding (153 bytes): `version u8 (=1) || session [16] || owner [32] || head [32] ||
//! removed_ms i64le || signature [64]`; the signature is over
//! `BLAKE3-derive-key(TOMBSTONE_CONTEXT, the first 89 bytes)`.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::{MemberId, NodeId, SessionId};

pub const TOMBSTONE_CONTEXT: &str = "tapes 2026-12 session tombstone signature v1";
pub const TOMBSTONE_VERSION: u8 = 1;
const SIGNED_LEN: usize = 1 + 16 + 32 + 32 + 8;
pub const TOMBSTONE_LEN: usize = SIGNED_LEN + 64;

/// What the owner removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    pub session: SessionId,
    pub owner: MemberId,
    /// The head the owner held when removing it.
    pub head: NodeId,
    pub removed_ms: i64,
}

/// A [`Tombstone`] with the owner's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTombstone {
    pub tombstone: Tombstone,
    pub signature: [u8; 64],
}

/// Why a tombstone is refused; nothing is deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TombstoneError {
    #[error("a tombstone is {TOMBSTONE_LEN} bytes, this one {0}")]
    Length(usize),
    #[error("tombstone version {0} is not one this tapes reads (1); upgrade tapes")]
    Version(u8),
    #[error("the tombstone's signature does not verify: it was altered or forged")]
    BadSignature,
    #[error(
        "the tombstone is for session {named}, not {asked}: it was replayed for another session"
    )]
    OtherSession { named: String, asked: String },
    #[error("the tombstone is signed by {signer}, but session {session} is owned by {owner}: only the owner can remove it everywhere")]
    NotOwner {
        session: String,
        signer: String,
        owner: String,
    },
}

impl Tombstone {
    /// The signed bytes: everything but the signature.
    fn signed_bytes(&self) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        out[0] = TOMBSTONE_VERSION;
        out[1..17].copy_from_slice(self.session.as_bytes());
        out[17..49].copy_from_slice(self.owner.as_bytes());
        out[49..81].copy_from_slice(self.head.as_bytes());
        out[81..89].copy_from_slice(&self.removed_ms.to_le_bytes());
        out
    }

    /// The 32 bytes the owner signs.
    pub fn message(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(TOMBSTONE_CONTEXT);
        h.update(&self.signed_bytes());
        *h.finalize().as_bytes()
    }

    /// Signs as `key`, which becomes the tombstone's owner.
    pub fn sign(
        key: &SigningKey,
        session: SessionId,
        head: NodeId,
        removed_ms: i64,
    ) -> SignedTombstone {
        let tombstone = Tombstone {
            session,
            owner: MemberId(key.verifying_key().to_bytes()),
            head,
            removed_ms,
        };
        SignedTombstone {
            signature: key.sign(&tombstone.message()).to_bytes(),
            tombstone,
        }
    }
}

impl SignedTombstone {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOMBSTONE_LEN);
        out.extend_from_slice(&self.tombstone.signed_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes and verifies the signature (by the owner the tombstone names); whether that
    /// owner owns the session is [`SignedTombstone::check`]'s business.
    pub fn decode(bytes: &[u8]) -> Result<SignedTombstone, TombstoneError> {
        if bytes.len() != TOMBSTONE_LEN {
            return Err(TombstoneError::Length(bytes.len()));
        }
        if bytes[0] != TOMBSTONE_VERSION {
            return Err(TombstoneError::Version(bytes[0]));
        }
        let arr = |range: std::ops::Range<usize>| bytes[range].to_vec();
        let session = SessionId::from_slice(&arr(1..17)).ok_or(TombstoneError::Length(0))?;
        let owner = MemberId::from_slice(&arr(17..49)).ok_or(TombstoneError::Length(0))?;
        let head = NodeId::from_slice(&arr(49..81)).ok_or(TombstoneError::Length(0))?;
        let removed_ms = i64::from_le_bytes(bytes[81..89].try_into().unwrap_or([0; 8]));
        let signature: [u8; 64] = bytes[89..].try_into().unwrap_or([0; 64]);
        let signed = SignedTombstone {
            tombstone: Tombstone {
                session,
                owner,
                head,
                removed_ms,
            },
            signature,
        };
        let verified = VerifyingKey::from_bytes(owner.as_bytes())
            .and_then(|k| {
                k.verify(
                    &signed.tombstone.message(),
                    &Signature::from_bytes(&signature),
                )
            })
            .is_ok();
        if !verified {
            return Err(TombstoneError::BadSignature);
        }
        Ok(signed)
    }

    /// The receiver's check: this tombstone may remove `session`, which the receiver's copy
    /// says `owner` owns.
    pub fn check(&self, session: &SessionId, owner: &MemberId) -> Result<(), TombstoneError> {
        if &self.tombstone.session != session {
            return Err(TombstoneError::OtherSession {
                named: self.tombstone.session.to_hex(),
                asked: session.to_hex(),
            });
        }
        if &self.tombstone.owner != owner {
            return Err(TombstoneError::NotOwner {
                session: session.to_hex(),
                signer: self.tombstone.owner.to_hex(),
                owner: owner.to_hex(),
            });
        }
        Ok(())
    }
}

/// A tombstone as it travels in `tapes/sync/3` (`Response::Tombstones`, SPEC.md §3.5): the
/// session the sender says it is for, and the encoded [`SignedTombstone`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub session: SessionId,
    #[serde(with = "serde_bytes")]
    pub tombstone: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let bytes = Tombstone::sign(&key, SessionId([1; 16]), NodeId([2; 32]), 5).encode();
        assert!(SignedTombstone::decode(&bytes).is_ok());
        for i in 1..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(SignedTombstone::decode(&bad).is_err(), "byte {i}");
        }
        assert_eq!(
            SignedTombstone::decode(&bytes[..10]),
            Err(TombstoneError::Length(10))
        );
    }
}
