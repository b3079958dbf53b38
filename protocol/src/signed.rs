//! Signed records two peers must agree on byte for byte (SPEC.md §10, §11.1, §15.4):
//!
//! - [`RefSignature`]: the owner's signature over one ref update (session, expected head,
//!   encoded [`SessionRecord`]); a remote moves a ref only for its owner.
//! - [`SignedShare`]: a share record (who shared which head with whom, until when) signed by
//!   the sharer.
//! - [`check_entry`] / [`verify_entry_signature`]: the one check of a signed session entry
//!   (`tapes/sync/3` and bundles carry the same [`SessionEntry`]).
//!
//! Each signature is ed25519 over a BLAKE3 `derive_key` hash with its own context string, so a
//! signature for one purpose never verifies for another. Pinned by `protocol/vectors/signed.toml`.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::bundle::SessionEntry;
use crate::record::{RecordError, SessionRecord};
use crate::{MemberId, NodeId, SessionId, TeamId};

pub const REF_UPDATE_CONTEXT: &str = "tapes 2026-11 session ref update signature v1";

/// The owner's signature over one ref update: the session, the head it expects the remote to
/// hold, and the record it wants there (SPEC.md §10). A remote moves a ref only for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSignature {
    pub signer: MemberId,
    pub signature: [u8; 64],
}

/// The 32 bytes a [`RefSignature`] signs: BLAKE3 `derive_key(REF_UPDATE_CONTEXT)` over the
/// session id, `0` or `1 ‖ expected head`, and the encoded record (SPEC.md §10).
pub fn ref_update_message(
    id: &SessionId,
    expected: Option<&NodeId>,
    record: &SessionRecord,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(REF_UPDATE_CONTEXT);
    h.update(id.as_bytes());
    match expected {
        None => {
            h.update(&[0]);
        }
        Some(head) => {
            h.update(&[1]);
            h.update(head.as_bytes());
        }
    }
    h.update(&record.encode());
    *h.finalize().as_bytes()
}

impl RefSignature {
    pub fn sign(
        key: &SigningKey,
        id: &SessionId,
        expected: Option<&NodeId>,
        record: &SessionRecord,
    ) -> RefSignature {
        RefSignature {
            signer: MemberId(key.verifying_key().to_bytes()),
            signature: key
                .sign(&ref_update_message(id, expected, record))
                .to_bytes(),
        }
    }

    pub fn verify(
        &self,
        id: &SessionId,
        expected: Option<&NodeId>,
        record: &SessionRecord,
    ) -> bool {
        VerifyingKey::from_bytes(self.signer.as_bytes())
            .and_then(|k| {
                k.verify(
                    &ref_update_message(id, expected, record),
                    &Signature::from_bytes(&self.signature),
                )
            })
            .is_ok()
    }
}

pub const SHARE_SIGNATURE_CONTEXT: &str = "tapes 2026-11 share record signature v1";

/// Why a share record is refused (SPEC.md §11.1, §11.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("the share record does not decode: {0}")]
    Malformed(String),
    #[error("its signature does not verify")]
    BadSignature,
    #[error(transparent)]
    Summary(#[from] crate::summary::SummaryError),
}

/// Who a share is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Audience {
    Team(TeamId),
    Public,
}

/// The signed content of a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRecord {
    pub session: SessionId,
    pub head: NodeId,
    pub audience: Audience,
    pub sharer: MemberId,
    pub sharer_name: String,
    pub title: Option<String>,
    pub note: Option<String>,
    pub shared_ms: i64,
    pub expires_ms: Option<i64>,
    /// Set by unshare: access ends from `shared_ms` of this record on.
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedShare {
    pub record: ShareRecord,
    pub signature: Vec<u8>,
}

impl SignedShare {
    pub fn sign(record: ShareRecord, key: &SigningKey) -> SignedShare {
        let signature = key.sign(&share_message(&record)).to_bytes().to_vec();
        SignedShare { record, signature }
    }

    /// True when the record is signed by the sharer it names.
    pub fn verify(&self) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(self.signature.as_slice()) else {
            return false;
        };
        VerifyingKey::from_bytes(self.record.sharer.as_bytes())
            .and_then(|key| {
                key.verify(
                    &share_message(&self.record),
                    &Signature::from_bytes(&signature),
                )
            })
            .is_ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedShare, ShareError> {
        let share = SignedShare::decode_stored(bytes)?;
        if !share.verify() {
            return Err(ShareError::BadSignature);
        }
        // A metadata-only share's summary must be the sharer's, about this share (§11.4).
        if let Some(summary) = crate::summary::of_share_bytes(bytes)? {
            crate::summary::check_tail(&share.record, &summary)?;
        }
        Ok(share)
    }

    /// Decodes a share record read back from this store, without checking its signature
    /// again: every path that writes a `share/` ref signs it or verified it first, and
    /// `tapes fsck` re-checks them all. Verifying ~10,000 of them on every sync was half the
    /// cost of answering a no-op fetch.
    pub fn decode_stored(bytes: &[u8]) -> Result<SignedShare, ShareError> {
        match postcard::take_from_bytes::<SignedShare>(bytes) {
            Ok((share, [])) => Ok(share),
            // A metadata-only share carries its summary after the record (§11.4).
            Ok((share, rest)) => Ok(crate::summary::decode_tail(rest).map(|_| share)?),
            Err(e) => Err(ShareError::Malformed(e.to_string())),
        }
    }

    /// Whether the share grants access at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        !self.record.revoked && self.record.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// The 32 bytes a [`SignedShare`] signs: BLAKE3 `derive_key(SHARE_SIGNATURE_CONTEXT)` over
/// `postcard(record)` (SPEC.md §11.1).
pub fn share_message(record: &ShareRecord) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(SHARE_SIGNATURE_CONTEXT);
    h.update(&postcard::to_stdvec(record).expect("postcard encoding to a Vec cannot fail"));
    *h.finalize().as_bytes()
}

/// Why a signed session entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("{0}")]
    Record(String),
    #[error("the record names no owner, so nobody can vouch for it")]
    NoOwner,
    #[error("it is not signed by the session's owner")]
    NotOwner,
    #[error("its signature is not 64 bytes")]
    SignatureLength,
    #[error("the owner's signature does not verify")]
    Signature,
}

impl From<RecordError> for EntryError {
    fn from(e: RecordError) -> EntryError {
        EntryError::Record(e.to_string())
    }
}

/// Checks that `entry`'s signature is its signer's over the ref update "`entry.id` at
/// `record`, from nothing" (the form every entry is signed in).
pub fn verify_entry_signature(
    entry: &SessionEntry,
    record: &SessionRecord,
) -> Result<(), EntryError> {
    let signature: [u8; 64] = entry
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| EntryError::SignatureLength)?;
    let sig = RefSignature {
        signer: entry.signer,
        signature,
    };
    if !sig.verify(&entry.id, None, record) {
        return Err(EntryError::Signature);
    }
    Ok(())
}

/// Checks a session entry: the record decodes, names an owner, and the owner signed it.
pub fn check_entry(entry: &SessionEntry) -> Result<SessionRecord, EntryError> {
    let record = SessionRecord::decode(&entry.record)?;
    let owner = record.owner.ok_or(EntryError::NoOwner)?;
    if entry.signer != owner {
        return Err(EntryError::NotOwner);
    }
    verify_entry_signature(entry, &record)?;
    Ok(record)
}
