//! The signed summary of a metadata-only share (SPEC.md §11.4): what teammates learn of a
//! session whose content is not shared — counts, tokens, cost, status, duration, model,
//! project, and the first prompt only when the sharer opted in — signed by the sharer.
//!
//! A summary travels *with its share record*: the bytes of a metadata-only share (its
//! `share/<session>/<audience>` ref value, the sync item's content, a bundle's share) are
//!
//! ```text
//! postcard(SignedShare) ‖ "TSUMMRY1" ‖ postcard(SignedSummary)
//! ```
//!
//! so every path that already carries share records carries the summary, and a share without
//! the tail is an ordinary (content) share. The share's own signature is unchanged (it covers
//! the record only); the summary's signature covers the summary, which names the same session,
//! head, audience, sharer and time as the record ([`check_tail`]). Pinned by
//! `protocol/vectors/summary.toml`.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::signed::{Audience, ShareRecord};
use crate::{MemberId, NodeId, SessionId, Usage};

pub const SUMMARY_SIGNATURE_CONTEXT: &str = "tapes 2026-12 share summary signature v1";

/// What separates a share record from its summary in a metadata-only share's bytes.
pub const SUMMARY_TAIL_MAGIC: &[u8; 8] = b"TSUMMRY1";

/// What a metadata-only share tells its audience about the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSummary {
    pub session: SessionId,
    pub head: NodeId,
    pub audience: Audience,
    pub sharer: MemberId,
    /// The `shared_ms` of the share record it travels with.
    pub shared_ms: i64,
    pub title: Option<String>,
    pub project: String,
    pub agent: String,
    /// The model of the last assistant message.
    pub model: String,
    pub messages: u64,
    pub usage: Usage,
    /// What the session cost at the sharer's prices, in millionths of a US dollar (`None`:
    /// not priced).
    pub cost_micro_usd: Option<u64>,
    /// How the session ended (`completed`, `failed`, …), as the sharer's tapes derived it.
    pub status: String,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    /// The first user prompt, only when the sharer passed `--with-first-prompt`.
    pub first_prompt: Option<String>,
}

impl ShareSummary {
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.ended_ms? - self.started_ms?)
    }

    /// The cost in USD, if priced.
    pub fn cost_usd(&self) -> Option<f64> {
        self.cost_micro_usd.map(|c| c as f64 / 1_000_000.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSummary {
    pub summary: ShareSummary,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The 32 bytes a [`SignedSummary`] signs: BLAKE3 `derive_key(SUMMARY_SIGNATURE_CONTEXT)` over
/// `postcard(summary)`.
pub fn summary_message(summary: &ShareSummary) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(SUMMARY_SIGNATURE_CONTEXT);
    h.update(&postcard::to_stdvec(summary).expect("postcard encoding to a Vec cannot fail"));
    *h.finalize().as_bytes()
}

impl SignedSummary {
    pub fn sign(summary: ShareSummary, key: &SigningKey) -> SignedSummary {
        let signature = key.sign(&summary_message(&summary)).to_bytes().to_vec();
        SignedSummary { summary, signature }
    }

    /// True when the summary is signed by the sharer it names.
    pub fn verify(&self) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(self.signature.as_slice()) else {
            return false;
        };
        VerifyingKey::from_bytes(self.summary.sharer.as_bytes())
            .and_then(|key| {
                key.verify(
                    &summary_message(&self.summary),
                    &Signature::from_bytes(&signature),
                )
            })
            .is_ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedSummary, SummaryError> {
        match postcard::take_from_bytes::<SignedSummary>(bytes) {
            // One summary, one encoding (postcard also reads overlong varints).
            Ok((summary, [])) if summary.encode() == bytes => Ok(summary),
            Ok((_, [])) => Err(SummaryError::Malformed("not in canonical encoding".into())),
            Ok(_) => Err(SummaryError::Trailing),
            Err(e) => Err(SummaryError::Malformed(e.to_string())),
        }
    }
}

/// Why a share's summary is refused (SPEC.md §11.4); the share is refused with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    #[error("its summary does not decode: {0}")]
    Malformed(String),
    #[error("trailing bytes after the summary")]
    Trailing,
    #[error("trailing bytes after the share record that are not a summary")]
    NotASummary,
    #[error("the share record does not decode: {0}")]
    Share(String),
    #[error("its summary belongs to another share")]
    OtherShare,
    #[error("its summary's signature does not verify")]
    BadSignature,
}

/// The bytes of a metadata-only share: the encoded signed share, the magic, the summary.
pub fn attach(share_bytes: &[u8], summary: &SignedSummary) -> Vec<u8> {
    let mut out = share_bytes.to_vec();
    out.extend_from_slice(SUMMARY_TAIL_MAGIC);
    out.extend_from_slice(&summary.encode());
    out
}

/// Decodes what follows a share record in its bytes: nothing (`None`), or a summary.
/// Anything else is an error. Does not check signatures (see [`check_tail`]).
pub fn decode_tail(rest: &[u8]) -> Result<Option<SignedSummary>, SummaryError> {
    if rest.is_empty() {
        return Ok(None);
    }
    let Some(summary) = rest.strip_prefix(SUMMARY_TAIL_MAGIC.as_slice()) else {
        return Err(SummaryError::NotASummary);
    };
    SignedSummary::decode(summary).map(Some)
}

/// Checks a summary against the share record it travels with: signed by the sharer, and
/// naming the same session, head, audience, sharer and share time.
pub fn check_tail(record: &ShareRecord, summary: &SignedSummary) -> Result<(), SummaryError> {
    let s = &summary.summary;
    if s.session != record.session
        || s.head != record.head
        || s.audience != record.audience
        || s.sharer != record.sharer
        || s.shared_ms != record.shared_ms
    {
        return Err(SummaryError::OtherShare);
    }
    if !summary.verify() {
        return Err(SummaryError::BadSignature);
    }
    Ok(())
}

/// Whether the bytes of a share record carry a summary (a metadata-only share), without
/// checking it: what a serving node asks before it serves a session's content.
pub fn has_tail(bytes: &[u8]) -> bool {
    postcard::take_from_bytes::<crate::signed::SignedShare>(bytes)
        .is_ok_and(|(_, rest)| rest.starts_with(SUMMARY_TAIL_MAGIC))
}

/// The summary carried by the bytes of a share record, if it is a metadata-only share.
/// Verifies the summary against its record (not the record's own signature).
pub fn of_share_bytes(bytes: &[u8]) -> Result<Option<SignedSummary>, SummaryError> {
    let (share, rest) = postcard::take_from_bytes::<crate::signed::SignedShare>(bytes)
        .map_err(|e| SummaryError::Share(e.to_string()))?;
    let Some(summary) = decode_tail(rest)? else {
        return Ok(None);
    };
    check_tail(&share.record, &summary)?;
    Ok(Some(summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::SignedShare;

    fn record(key: &SigningKey) -> ShareRecord {
        ShareRecord {
            session: SessionId([1; 16]),
            head: NodeId([2; 32]),
            audience: Audience::Public,
            sharer: MemberId(key.verifying_key().to_bytes()),
            sharer_name: "ada".into(),
            title: None,
            note: None,
            shared_ms: 5,
            expires_ms: None,
            revoked: false,
        }
    }

    fn summary_of(record: &ShareRecord) -> ShareSummary {
        ShareSummary {
            session: record.session,
            head: record.head,
            audience: record.audience,
            sharer: record.sharer,
            shared_ms: record.shared_ms,
            title: Some("t".into()),
            project: "api".into(),
            agent: "claude-code".into(),
            model: "m".into(),
            messages: 3,
            usage: Usage::default(),
            cost_micro_usd: Some(1),
            status: "completed".into(),
            started_ms: Some(1),
            ended_ms: Some(2),
            first_prompt: None,
        }
    }

    #[test]
    fn a_share_with_a_tail_decodes_and_a_foreign_or_forged_tail_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let rec = record(&key);
        let share = SignedShare::sign(rec.clone(), &key);
        let summary = SignedSummary::sign(summary_of(&rec), &key);
        let bytes = attach(&share.encode(), &summary);
        assert_eq!(SignedShare::decode(&bytes).unwrap(), share);
        assert_eq!(of_share_bytes(&bytes).unwrap(), Some(summary.clone()));
        assert_eq!(of_share_bytes(&share.encode()).unwrap(), None);
        // Another share's summary.
        let mut other = summary_of(&rec);
        other.session = SessionId([9; 16]);
        let bytes = attach(&share.encode(), &SignedSummary::sign(other, &key));
        assert!(SignedShare::decode(&bytes).is_err());
        // Signed by someone else.
        let mallory = SigningKey::from_bytes(&[8; 32]);
        let bytes = attach(
            &share.encode(),
            &SignedSummary::sign(summary_of(&rec), &mallory),
        );
        assert!(SignedShare::decode(&bytes).is_err());
        // Junk after the record.
        let mut junk = share.encode();
        junk.push(0);
        assert!(SignedShare::decode_stored(&junk).is_err());
    }
}
