//! The bundle file format (SPEC.md §12): sessions, their nodes and their share records in one
//! file, for transfer without a network (a USB stick, an air-gapped site) and for archives.
//!
//! ```text
//! bundle  := magic "TAPESBDL" version:u8 (=1) header_len:u32le header:postcard(Header)
//!            frame* trailer
//! frame   := kind:u8 (0x01..=0x06) len:u32le payload
//! trailer := 0xFF checksum:[32]     -- BLAKE3-derive-key(CHECKSUM_CONTEXT, every byte before it)
//! ```
//!
//! This module is sans-IO: it encodes and decodes the prelude, frames and the payloads whose
//! layout two peers must agree on, and computes the digests and signatures. Reading files,
//! sealing and writing to a store live in `tapes::sync::bundle`. Every decoder here takes untrusted
//! bytes, never panics, and never allocates more than the input it was given could hold.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::id::{MemberId, NodeId, SessionId, TeamId};

pub const MAGIC: &[u8; 8] = b"TAPESBDL";
pub const VERSION: u8 = 1;
/// Bytes before the header: magic, version, header length.
pub const PRELUDE_LEN: usize = 13;
/// Bytes of a frame's kind and length.
pub const FRAME_HEAD_LEN: usize = 5;
/// Bytes of the trailer: its kind byte and the checksum.
pub const TRAILER_LEN: usize = 33;
/// The largest header a reader accepts.
pub const MAX_HEADER_LEN: usize = 1 << 20;
/// The largest frame payload a reader accepts (a sealed chunk holds about 1 MiB; one node
/// with large images may be bigger).
pub const MAX_FRAME_LEN: usize = 256 << 20;

pub const CHECKSUM_CONTEXT: &str = "tapes 2026-11 bundle checksum v1";
pub const REFS_SIGNATURE_CONTEXT: &str = "tapes 2026-11 bundle refs signature v1";
pub const ENTRY_DIGEST_CONTEXT: &str = "tapes 2026-11 bundle entry digest v1";
pub const OBJECT_LIST_CONTEXT: &str = "tapes 2026-11 bundle object list v1";

/// Frame kinds.
pub mod kind {
    /// A signed team manifest (SPEC.md §9.1), in the clear; sealed bundles carry the chain.
    pub const TEAM: u8 = 0x01;
    /// `id:id32 object` (SPEC.md §2.5).
    pub const OBJECT: u8 = 0x02;
    /// postcard([`super::SessionEntry`]).
    pub const SESSION: u8 = 0x03;
    /// A postcard `SignedShare` (SPEC.md §11.1).
    pub const SHARE: u8 = 0x04;
    /// Team-sealed content (`TSEAL1…`, SPEC.md §9.6) whose plaintext is a run of frames.
    pub const SEALED: u8 = 0x05;
    /// postcard([`super::SignedRefs`]): the creator's signed manifest of everything included.
    pub const REFS: u8 = 0x06;
    /// The trailer.
    pub const END: u8 = 0xFF;
}

/// Why bytes are not a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a tapes bundle (no TAPESBDL magic)")]
    Magic,
    #[error("bundle format version {0} is newer than this tapes reads (version {VERSION}); upgrade tapes")]
    Version(u8),
    #[error("the bundle header is {0} bytes, more than the {MAX_HEADER_LEN} allowed")]
    HeaderTooLong(usize),
    #[error("the bundle header does not decode: {0}")]
    Header(String),
    #[error("unknown frame kind {kind:#04x} at offset {offset}")]
    Kind { kind: u8, offset: u64 },
    #[error(
        "a frame at offset {offset} claims {len} bytes, more than the {MAX_FRAME_LEN} allowed"
    )]
    FrameTooLong { offset: u64, len: usize },
    #[error("{what} does not decode: {why}")]
    Payload { what: &'static str, why: String },
}

/// What a bundle says about itself. Not secret: a sealed bundle shows it to anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Whoever made and signed the bundle (their node id).
    pub creator: MemberId,
    pub creator_name: String,
    pub created_ms: i64,
    /// The selection that made it, as the creator typed it (`project`, `date`, `since`, ...).
    pub filter: BTreeMap<String, String>,
    /// The team the contents are sealed to; `None` for a plain bundle.
    pub team: Option<TeamId>,
    /// The checksum of the bundle this one is incremental on.
    pub basis: Option<[u8; 32]>,
    /// That bundle's file name, for messages.
    pub basis_name: Option<String>,
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Header, FormatError> {
        strict(bytes, "the bundle header").map_err(|e| match e {
            FormatError::Payload { why, .. } => FormatError::Header(why),
            other => other,
        })
    }
}

/// The prelude of a bundle with `header`: magic, version, header length, header.
pub fn encode_prelude(header_bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRELUDE_LEN + header_bytes.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(header_bytes);
    out
}

/// Checks the fixed part of a prelude (its first [`PRELUDE_LEN`] bytes) and returns the
/// header length that follows.
pub fn decode_prelude(fixed: &[u8; PRELUDE_LEN]) -> Result<usize, FormatError> {
    if &fixed[..8] != MAGIC {
        return Err(FormatError::Magic);
    }
    if fixed[8] != VERSION {
        return Err(FormatError::Version(fixed[8]));
    }
    let len = u32::from_le_bytes([fixed[9], fixed[10], fixed[11], fixed[12]]) as usize;
    if len > MAX_HEADER_LEN {
        return Err(FormatError::HeaderTooLong(len));
    }
    Ok(len)
}

/// Appends one frame.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.reserve(FRAME_HEAD_LEN + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What a frame head announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHead {
    Frame {
        kind: u8,
        len: usize,
    },
    /// The trailer: 32 checksum bytes follow.
    End,
}

/// Decodes a frame head: the kind byte, and for a frame its length (`rest` must hold the 4
/// length bytes; the trailer has none). `offset` is only for messages.
pub fn decode_frame_head(kind: u8, len: [u8; 4], offset: u64) -> Result<FrameHead, FormatError> {
    match kind {
        kind::END => Ok(FrameHead::End),
        kind::TEAM..=kind::REFS => {
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_FRAME_LEN {
                return Err(FormatError::FrameTooLong { offset, len });
            }
            Ok(FrameHead::Frame { kind, len })
        }
        _ => Err(FormatError::Kind { kind, offset }),
    }
}

/// Splits a run of frames held in memory (a sealed chunk's plaintext) into `(kind, payload)`.
/// Trailers and nested sealed chunks are not allowed inside.
pub fn split_frames(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, FormatError> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    while !bytes.is_empty() {
        if bytes.len() < FRAME_HEAD_LEN {
            return Err(payload_err("a sealed chunk", "it ends inside a frame head"));
        }
        let kind = bytes[0];
        let len = [bytes[1], bytes[2], bytes[3], bytes[4]];
        let len = match decode_frame_head(kind, len, offset)? {
            FrameHead::Frame { kind, len } if kind != kind::SEALED && kind != kind::TEAM => len,
            _ => {
                return Err(FormatError::Kind { kind, offset });
            }
        };
        let rest = &bytes[FRAME_HEAD_LEN..];
        if rest.len() < len {
            return Err(payload_err("a sealed chunk", "it ends inside a frame"));
        }
        out.push((kind, &rest[..len]));
        bytes = &rest[len..];
        offset += (FRAME_HEAD_LEN + len) as u64;
    }
    Ok(out)
}

/// The payload of an object frame.
pub fn encode_object(out: &mut Vec<u8>, id: &NodeId, object: &[u8]) {
    let mut payload = Vec::with_capacity(32 + object.len());
    payload.extend_from_slice(id.as_bytes());
    payload.extend_from_slice(object);
    encode_frame(out, kind::OBJECT, &payload);
}

/// Splits an object frame's payload into the id it claims and the object bytes (which the
/// caller verifies against that id).
pub fn decode_object(payload: &[u8]) -> Result<(NodeId, &[u8]), FormatError> {
    if payload.len() < 32 {
        return Err(payload_err("an object frame", "shorter than its id"));
    }
    let id = NodeId::from_slice(&payload[..32])
        .ok_or_else(|| payload_err("an object frame", "bad id"))?;
    Ok((id, &payload[32..]))
}

/// A session ref as a bundle carries it: the encoded session record (SPEC.md §3.2) and the
/// creator's ref signature over it (SPEC.md §10, with no expected head).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub id: SessionId,
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
    pub signer: MemberId,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl SessionEntry {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<SessionEntry, FormatError> {
        strict(bytes, "a session frame")
    }
}

/// One session in the refs manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEntry {
    pub session: SessionId,
    pub head: NodeId,
    /// [`entry_digest`] of the session frame's payload.
    pub digest: [u8; 32],
}

/// The manifest of refs and shares: everything the bundle includes, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refs {
    pub sessions: Vec<RefEntry>,
    /// [`entry_digest`] of each share frame's payload.
    pub shares: Vec<[u8; 32]>,
    pub objects: u64,
    /// [`ObjectList`] over the object ids, in file order.
    pub object_list: [u8; 32],
}

/// The refs manifest with the creator's signature over it and the exact header bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRefs {
    pub refs: Refs,
    pub signature: Vec<u8>,
}

fn refs_message(header_bytes: &[u8], refs: &Refs) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(REFS_SIGNATURE_CONTEXT);
    h.update(&(header_bytes.len() as u64).to_le_bytes());
    h.update(header_bytes);
    h.update(&postcard::to_stdvec(refs).expect("postcard encoding to a Vec cannot fail"));
    *h.finalize().as_bytes()
}

impl SignedRefs {
    pub fn sign(key: &SigningKey, header_bytes: &[u8], refs: Refs) -> SignedRefs {
        let signature = key
            .sign(&refs_message(header_bytes, &refs))
            .to_bytes()
            .to_vec();
        SignedRefs { refs, signature }
    }

    /// True when `signer` signed exactly these refs under exactly this header.
    pub fn verify(&self, signer: &MemberId, header_bytes: &[u8]) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(self.signature.as_slice()) else {
            return false;
        };
        VerifyingKey::from_bytes(signer.as_bytes())
            .and_then(|key| {
                key.verify(
                    &refs_message(header_bytes, &self.refs),
                    &Signature::from_bytes(&signature),
                )
            })
            .is_ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedRefs, FormatError> {
        strict(bytes, "the refs manifest")
    }
}

/// The digest of a session or share frame's payload, as listed in [`Refs`].
pub fn entry_digest(payload: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key(ENTRY_DIGEST_CONTEXT)
        .update(payload)
        .finalize()
        .as_bytes()
}

/// The running digest of the object ids of a bundle, in file order.
pub struct ObjectList(blake3::Hasher);

impl Default for ObjectList {
    fn default() -> Self {
        ObjectList(blake3::Hasher::new_derive_key(OBJECT_LIST_CONTEXT))
    }
}

impl ObjectList {
    pub fn add(&mut self, id: &NodeId) {
        self.0.update(id.as_bytes());
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// The running checksum of a bundle's bytes.
pub struct Checksum(blake3::Hasher);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT))
    }
}

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        // The rayon-free SIMD path is fast enough for one core; update_rayon would need a
        // thread pool in a sans-IO crate.
        self.0.update(bytes);
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// The checksum of a whole bundle held in memory (tests, small bundles).
pub fn checksum_of(bytes_before_checksum: &[u8]) -> [u8; 32] {
    let mut c = Checksum::default();
    c.update(bytes_before_checksum);
    c.finish()
}

fn payload_err(what: &'static str, why: &str) -> FormatError {
    FormatError::Payload {
        what,
        why: why.into(),
    }
}

fn strict<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, FormatError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(FormatError::Payload {
            what,
            why: format!("{} trailing bytes", rest.len()),
        }),
        Err(e) => Err(FormatError::Payload {
            what,
            why: e.to_string(),
        }),
    }
}

/// The top-level frames of a bundle: `(kind, payload)`.
pub type Frames<'a> = Vec<(u8, &'a [u8])>;

/// Parses a whole bundle held in memory into its header and top-level frames, checking the
/// trailer's checksum and that nothing follows it. The file reader in `tapes::sync::bundle` does the
/// same incrementally; this is the reference for tests and small inputs.
pub fn parse(bytes: &[u8]) -> Result<(Header, Frames<'_>), ParseError> {
    if bytes.len() < PRELUDE_LEN {
        return Err(ParseError::Truncated(bytes.len() as u64));
    }
    let mut fixed = [0u8; PRELUDE_LEN];
    fixed.copy_from_slice(&bytes[..PRELUDE_LEN]);
    let header_len = decode_prelude(&fixed)?;
    let mut pos = PRELUDE_LEN;
    let header_bytes = bytes
        .get(pos..pos + header_len)
        .ok_or(ParseError::Truncated(bytes.len() as u64))?;
    let header = Header::decode(header_bytes)?;
    pos += header_len;
    let mut frames = Vec::new();
    loop {
        let kind = *bytes
            .get(pos)
            .ok_or(ParseError::Truncated(bytes.len() as u64))?;
        let len = match bytes.get(pos + 1..pos + 5) {
            Some(l) => [l[0], l[1], l[2], l[3]],
            None if kind == kind::END => [0; 4],
            None => return Err(ParseError::Truncated(bytes.len() as u64)),
        };
        match decode_frame_head(kind, len, pos as u64)? {
            FrameHead::End => {
                let sum = bytes
                    .get(pos + 1..pos + TRAILER_LEN)
                    .ok_or(ParseError::Truncated(bytes.len() as u64))?;
                if checksum_of(&bytes[..pos + 1]) != sum {
                    return Err(ParseError::Checksum);
                }
                let end = pos + TRAILER_LEN;
                if end != bytes.len() {
                    return Err(ParseError::Trailing((bytes.len() - end) as u64));
                }
                return Ok((header, frames));
            }
            FrameHead::Frame { kind, len } => {
                let start = pos + FRAME_HEAD_LEN;
                let payload = bytes
                    .get(start..start + len)
                    .ok_or(ParseError::Truncated(bytes.len() as u64))?;
                frames.push((kind, payload));
                pos = start + len;
            }
        }
    }
}

/// Why [`parse`] refused a whole bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the bundle is truncated: it ends at byte {0} before its trailer")]
    Truncated(u64),
    #[error("the bundle's checksum does not match its contents")]
    Checksum,
    #[error("{0} bytes of trailing garbage follow the bundle's trailer")]
    Trailing(u64),
    #[error(transparent)]
    Format(#[from] FormatError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            creator: MemberId([7; 32]),
            creator_name: "alice".into(),
            created_ms: 1_771_059_600_000,
            filter: BTreeMap::from([("project".to_string(), "infra".to_string())]),
            team: None,
            basis: None,
            basis_name: None,
        }
    }

    fn sample() -> Vec<u8> {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut h = header();
        h.creator = MemberId(key.verifying_key().to_bytes());
        let header_bytes = h.encode();
        let mut out = encode_prelude(&header_bytes);
        let id = NodeId([9; 32]);
        encode_object(&mut out, &id, b"\x01object bytes");
        let entry = SessionEntry {
            id: SessionId([1; 16]),
            record: vec![2, 0, 1],
            signer: h.creator,
            signature: vec![0; 64],
        };
        let payload = entry.encode();
        encode_frame(&mut out, kind::SESSION, &payload);
        let mut list = ObjectList::default();
        list.add(&id);
        let refs = Refs {
            sessions: vec![RefEntry {
                session: entry.id,
                head: id,
                digest: entry_digest(&payload),
            }],
            shares: vec![],
            objects: 1,
            object_list: list.finish(),
        };
        let signed = SignedRefs::sign(&key, &header_bytes, refs);
        assert!(signed.verify(&h.creator, &header_bytes));
        assert!(!signed.verify(&MemberId([7; 32]), &header_bytes));
        assert!(!signed.verify(&h.creator, b"another header"));
        encode_frame(&mut out, kind::REFS, &signed.encode());
        out.push(kind::END);
        let sum = checksum_of(&out);
        out.extend_from_slice(&sum);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let (h, frames) = parse(&bytes).unwrap();
        assert_eq!(h.creator_name, "alice");
        assert_eq!(
            frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            vec![kind::OBJECT, kind::SESSION, kind::REFS]
        );
        let (id, object) = decode_object(frames[0].1).unwrap();
        assert_eq!(id, NodeId([9; 32]));
        assert_eq!(object, b"\x01object bytes");
        assert_eq!(
            SessionEntry::decode(frames[1].1).unwrap().id,
            SessionId([1; 16])
        );
        SignedRefs::decode(frames[2].1).unwrap();
    }

    #[test]
    fn every_truncation_flip_and_extension_is_refused() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "truncated at {cut} accepted");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(parse(&bad).is_err(), "flip at {i} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(parse(&longer).unwrap_err(), ParseError::Trailing(1));
    }

    #[test]
    fn prelude_rejects_other_files_and_newer_versions() {
        let mut fixed = [0u8; PRELUDE_LEN];
        fixed[..8].copy_from_slice(b"NOTABUND");
        assert_eq!(decode_prelude(&fixed), Err(FormatError::Magic));
        fixed[..8].copy_from_slice(MAGIC);
        fixed[8] = 2;
        assert_eq!(decode_prelude(&fixed), Err(FormatError::Version(2)));
        fixed[8] = 1;
        fixed[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_prelude(&fixed),
            Err(FormatError::HeaderTooLong(_))
        ));
    }

    #[test]
    fn split_frames_refuses_nesting_and_short_runs() {
        let mut run = Vec::new();
        encode_frame(&mut run, kind::OBJECT, &[0; 40]);
        encode_frame(&mut run, kind::SHARE, b"x");
        assert_eq!(split_frames(&run).unwrap().len(), 2);
        for cut in 1..run.len() {
            if cut == 45 {
                continue; // a clean frame boundary
            }
            assert!(split_frames(&run[..cut]).is_err(), "cut at {cut}");
        }
        let mut nested = Vec::new();
        encode_frame(&mut nested, kind::SEALED, b"x");
        assert!(split_frames(&nested).is_err());
        assert!(split_frames(&[kind::END]).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
            let _ = split_frames(&bytes);
            let _ = Header::decode(&bytes);
            let _ = SessionEntry::decode(&bytes);
            let _ = SignedRefs::decode(&bytes);
            let _ = decode_object(&bytes);
            if bytes.len() >= PRELUDE_LEN {
                let mut fixed = [0u8; PRELUDE_LEN];
                fixed.copy_from_slice(&bytes[..PRELUDE_LEN]);
                let _ = decode_prelude(&fixed);
            }
        }

        #[test]
        fn mutated_bundles_never_panic(i in 0usize..4096, byte in any::<u8>(), cut in 0usize..4096) {
            let mut bytes = sample();
            let n = bytes.len();
            bytes[i % n] = byte;
            bytes.truncate(cut % (n + 1));
            let _ = parse(&bytes);
        }
    }
}
