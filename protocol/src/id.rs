//! Identifiers: node ids (BLAKE3 digests of canonical node bodies) and session ids.
//!
//! Both print as lowercase hex. Users may type any unique prefix, like git; resolving a prefix
//! against a store is the store's job, parsing one is ours.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors from parsing an id typed by a user or read from a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("`{0}` is not a hex id (expected only 0-9 and a-f)")]
    NotHex(String),
    #[error("`{input}` has {len} hex digits; a full {kind} id has {expected}")]
    WrongLength {
        input: String,
        kind: &'static str,
        len: usize,
        expected: usize,
    },
}

macro_rules! hex_id {
    ($name:ident, $len:expr, $kind:expr) => {
        /// Serialized as hex in human-readable formats (JSON, TOML) and as raw bytes otherwise.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; $len]>::deserialize(d).map($name)
                }
            }
        }

        impl $name {
            pub const LEN: usize = $len;

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(bytes).ok().map(Self)
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 12 hex digits, for display (git's abbreviated ids).
            pub fn short(&self) -> String {
                hex::encode(&self.0[..6])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                // Decoded in place, either case: every session ref of a store is read through
                // here when it is listed.
                if s.is_empty() || s.len() % 2 == 1 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(IdParseError::NotHex(s.to_string()));
                }
                if s.len() != $len * 2 {
                    return Err(IdParseError::WrongLength {
                        input: s.to_string(),
                        kind: $kind,
                        len: s.len(),
                        expected: $len * 2,
                    });
                }
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(s, &mut bytes)
                    .map_err(|_| IdParseError::NotHex(s.to_string()))?;
                Ok(Self(bytes))
            }
        }
    };
}

hex_id!(NodeId, 32, "node");
hex_id!(SessionId, 16, "session");
hex_id!(TeamId, 32, "team");
hex_id!(ManifestId, 32, "manifest");
hex_id!(MemberId, 32, "member");

impl SessionId {
    /// A session id derived from where a session came from (importer kind + the source's own
    /// id), so importing the same transcript twice lands on the same session.
    pub fn derive(source_kind: &str, source_id: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key("tapes 2026-11 session id from source v1");
        h.update(&(source_kind.len() as u32).to_le_bytes());
        h.update(source_kind.as_bytes());
        h.update(&(source_id.len() as u32).to_le_bytes());
        h.update(source_id.as_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest.as_bytes()[..16]);
        SessionId(id)
    }
}

/// Checks that `s` could be a prefix of a hex id (non-empty, hex digits only) and lowercases it.
pub fn normalize_prefix(s: &str) -> Result<String, IdParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdParseError::NotHex(s.to_string()));
    }
    Ok(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let id = NodeId([7u8; 32]);
        assert_eq!(id.to_hex().parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short().len(), 12);
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        assert!(matches!(
            "abcd".parse::<NodeId>(),
            Err(IdParseError::WrongLength { .. })
        ));
        assert!(matches!(
            "zz".parse::<SessionId>(),
            Err(IdParseError::NotHex(_))
        ));
        assert!(normalize_prefix("").is_err());
        assert_eq!(normalize_prefix("ABC").unwrap(), "abc");
    }

    #[test]
    fn derived_session_ids_separate_source_kinds() {
        let a = SessionId::derive("claude", "x");
        assert_eq!(a, SessionId::derive("claude", "x"));
        assert_ne!(a, SessionId::derive("codex", "x"));
        // length prefixes keep ("ab","c") apart from ("a","bc")
        assert_ne!(SessionId::derive("ab", "c"), SessionId::derive("a", "bc"));
    }
}
