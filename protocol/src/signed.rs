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

/// One signature to check with [`verify_many`].
pub struct SignatureCheck<'a> {
    pub signer: &'a MemberId,
    pub message: &'a [u8],
    pub signature: &'a [u8],
}

/// Signatures checked in one batch at most: a batch that fails is checked again one by one to
/// find which; 64 amortises the batch's shared work (ed25519-dalek's `verify_batch`, one
/// multiscalar multiplication) while a bad signature costs at most 64 single checks more.
const BATCH: usize = 64;

/// Whether each signature is valid, checked in batches of [`BATCH`] (SPEC.md §15.3, step 4): a
/// batch costs about half as much per signature as single checks, which were a tenth of a
/// fetching node's CPU with ~100 small sessions per MB. A batch that does not verify is checked
/// one by one, so each answer is that of a single check, with one documented difference:
/// besides every signature a single check accepts, a batch may accept one whose `R` or key has
/// a small-order component, a signature only the signer's own key can make (SPEC.md §15.3).
pub fn verify_many(checks: &[SignatureCheck<'_>]) -> Vec<bool> {
    let mut valid = Vec::with_capacity(checks.len());
    for chunk in checks.chunks(BATCH) {
        let parsed: Vec<Option<(VerifyingKey, Signature)>> = chunk
            .iter()
            .map(|c| {
                let signature = <[u8; 64]>::try_from(c.signature).ok()?;
                let key = VerifyingKey::from_bytes(c.signer.as_bytes()).ok()?;
                Some((key, Signature::from_bytes(&signature)))
            })
            .collect();
        if parsed.iter().all(Option::is_some) && chunk.len() > 1 {
            let (keys, signatures): (Vec<VerifyingKey>, Vec<Signature>) =
                parsed.iter().flatten().cloned().unzip();
            let messages: Vec<&[u8]> = chunk.iter().map(|c| c.message).collect();
            if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
                valid.extend(std::iter::repeat_n(true, chunk.len()));
                continue;
            }
        }
        valid.extend(chunk.iter().zip(&parsed).map(|(c, p)| {
            p.as_ref()
                .is_some_and(|(key, signature)| key.verify(c.message, signature).is_ok())
        }));
    }
    valid
}

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
        SignedShare::check_summary(share, bytes)
    }

    /// [`SignedShare::decode`] of many records (a fetch's share records), their signatures
    /// checked in batches ([`verify_many`]).
    pub fn decode_many(list: &[Vec<u8>]) -> Vec<Result<SignedShare, ShareError>> {
        let decoded: Vec<Result<SignedShare, ShareError>> = list
            .iter()
            .map(|bytes| SignedShare::decode_stored(bytes))
            .collect();
        let messages: Vec<[u8; 32]> = decoded
            .iter()
            .map(|d| {
                d.as_ref()
                    .map(|s| share_message(&s.record))
                    .unwrap_or([0; 32])
            })
            .collect();
        let checks: Vec<SignatureCheck> = decoded
            .iter()
            .zip(&messages)
            .filter_map(|(d, message)| {
                let share = d.as_ref().ok()?;
                Some(SignatureCheck {
                    signer: &share.record.sharer,
                    message,
                    signature: &share.signature,
                })
            })
            .collect();
        let mut valid = verify_many(&checks).into_iter();
        decoded
            .into_iter()
            .zip(list)
            .map(|(d, bytes)| {
                let share = d?;
                if !valid.next().unwrap_or(false) {
                    return Err(ShareError::BadSignature);
                }
                SignedShare::check_summary(share, bytes)
            })
            .collect()
    }

    /// A metadata-only share's summary must be the sharer's, about this share (§11.4).
    fn check_summary(share: SignedShare, bytes: &[u8]) -> Result<SignedShare, ShareError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn share(n: u8, key: &SigningKey) -> SignedShare {
        SignedShare::sign(
            ShareRecord {
                session: SessionId([n; 16]),
                head: NodeId([n; 32]),
                audience: Audience::Public,
                sharer: MemberId(key.verifying_key().to_bytes()),
                sharer_name: format!("sharer {n}"),
                title: None,
                note: None,
                shared_ms: i64::from(n),
                expires_ms: None,
                revoked: false,
            },
            key,
        )
    }

    /// Checked in batches, each share gets the answer a single check gives: a batch with a
    /// bad signature (altered, too short, signed by someone else, a key that is not a point)
    /// names exactly the bad ones, across batch boundaries.
    #[test]
    fn shares_checked_in_batches_get_the_answers_of_single_checks() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let other = SigningKey::from_bytes(&[6; 32]);
        let mut shares: Vec<SignedShare> = (0..150).map(|n| share(n, &key)).collect();
        shares[3].signature[10] ^= 1;
        shares[64].signature.truncate(63);
        shares[100] = SignedShare {
            record: shares[100].record.clone(),
            signature: share(100, &other).signature,
        };
        // Not a curve point (y = 2 does not decompress).
        shares[149].record.sharer = MemberId({
            let mut b = [0u8; 32];
            b[0] = 2;
            b
        });
        let mut list: Vec<Vec<u8>> = shares.iter().map(SignedShare::encode).collect();
        list.push(b"not a share".to_vec());
        let batched = SignedShare::decode_many(&list);
        assert_eq!(batched.len(), list.len());
        for (i, (got, bytes)) in batched.iter().zip(&list).enumerate() {
            let single = SignedShare::decode(bytes);
            assert_eq!(got, &single, "share {i}");
            let bad = [3, 64, 100, 149, 150].contains(&i);
            assert_eq!(got.is_err(), bad, "share {i}");
        }
        // Alone, and none at all.
        assert!(SignedShare::decode_many(&list[..1])[0].is_ok());
        assert!(SignedShare::decode_many(&[]).is_empty());
    }
}
