//! The join exchange: invite codes, join requests and their answers (SPEC.md §9.4).
//!
//! Transport-agnostic on purpose: the same messages travel over an iroh connection to the
//! inviter's `tapes serve`, wait at a relay for an offline inviter, or sit in files. The
//! inviter keeps only a hash of each invite secret; the joiner proves it holds the code by
//! presenting the secret inside a request signed with the joiner's own node key, so a request
//! cannot be replayed for someone else.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::id::{MemberId, TeamId};
use crate::manifest::Member;

const SECRET_HASH_CONTEXT: &str = "tapes 2026-11 invite secret hash v1";
const JOIN_SIGNATURE_CONTEXT: &str = "tapes 2026-11 join request signature v1";

/// What an invite code carries. Its text form is made by the CLI (`tapes-invite1…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub team: TeamId,
    pub team_name: String,
    /// The inviter's node id: who to send the join request to.
    pub inviter: MemberId,
    /// Where the inviter may be reached (`host:port`, relay tickets); hints only.
    pub addrs: Vec<String>,
    pub secret: [u8; 32],
}

impl Invite {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Invite, postcard::Error> {
        match postcard::take_from_bytes(bytes)? {
            (invite, []) => Ok(invite),
            _ => Err(postcard::Error::DeserializeUnexpectedEnd),
        }
    }
}

/// The hash an inviter stores instead of the secret.
pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(SECRET_HASH_CONTEXT);
    h.update(secret);
    *h.finalize().as_bytes()
}

/// The signed part of a join request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequestBody {
    pub team: TeamId,
    pub secret: [u8; 32],
    /// Who wants in (the role field is ignored; the invite decides the role).
    pub member: Member,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub body: JoinRequestBody,
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

/// Why a join request was turned down; shown to the joiner as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JoinRefusal {
    #[error("this invite code is not known to the inviter (mistyped, or for another team)")]
    UnknownInvite,
    #[error("this invite code has expired; ask for a new one")]
    Expired,
    #[error("this invite code has been used as many times as it allows; ask for a new one")]
    Spent,
    #[error("this invite code was revoked; ask for a new one")]
    Revoked,
    #[error("this invite code is for {required}; join with that email (`tapes init --email`) or ask for another code")]
    EmailMismatch { required: String },
    #[error("the join request is not signed by the key it names")]
    BadSignature,
    #[error("you are already a member of this team")]
    AlreadyMember,
    #[error("the inviter can no longer add members: {0}")]
    Unauthorized(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinResponse {
    /// The team's signed manifests, version 0 first, each as `SignedManifest::encode` bytes.
    Accepted {
        #[serde(with = "crate::wire_bytes")]
        manifests: Vec<Vec<u8>>,
    },
    Refused(JoinRefusal),
}

fn message(body: &JoinRequestBody) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(JOIN_SIGNATURE_CONTEXT);
    h.update(&postcard::to_stdvec(body).expect("postcard encoding to a Vec cannot fail"));
    *h.finalize().as_bytes()
}

impl JoinRequest {
    pub fn sign(body: JoinRequestBody, key: &SigningKey) -> JoinRequest {
        let signature = key.sign(&message(&body)).to_bytes();
        JoinRequest { body, signature }
    }

    /// True when the request is signed by the member key it names.
    pub fn verify(&self) -> bool {
        VerifyingKey::from_bytes(self.body.member.id.as_bytes())
            .and_then(|k| {
                k.verify(
                    &message(&self.body),
                    &Signature::from_bytes(&self.signature),
                )
            })
            .is_ok()
    }
}

/// Postcard-encodes any join message.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_stdvec(message).expect("postcard encoding to a Vec cannot fail")
}

/// Decodes a join message strictly (no trailing bytes).
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeUnexpectedEnd),
    }
}

mod sig_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes: Vec<u8> = serde::de::Deserialize::deserialize(d)?;
        <[u8; 64]>::try_from(bytes.as_slice())
            .map_err(|_| serde::de::Error::custom("signature is not 64 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::TeamRole;

    #[test]
    fn a_join_request_binds_the_member_to_its_key() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let member = Member {
            id: MemberId(key.verifying_key().to_bytes()),
            age_recipient: "age1x".into(),
            name: "bob".into(),
            email: None,
            role: TeamRole::Member,
        };
        let req = JoinRequest::sign(
            JoinRequestBody {
                team: TeamId([1; 32]),
                secret: [2; 32],
                member,
                created_ms: 5,
            },
            &key,
        );
        assert!(req.verify());
        let decoded: JoinRequest = decode(&encode(&req)).unwrap();
        assert_eq!(decoded, req);
        let mut stolen = req.clone();
        stolen.body.member.name = "mallory".into();
        assert!(!stolen.verify());
        assert_ne!(secret_hash(&[2; 32]), [2; 32]);
    }
}
