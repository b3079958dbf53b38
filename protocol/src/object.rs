//! The stored object: how a node sits in a store, a bundle or on the wire (SPEC.md §2.4).
//!
//! ```text
//! object := format:u8 (=1) || body_len:u32le || body (canonical, hashed) || meta (postcard)
//! ```
//! The key of an object is the BLAKE3 id of `body`; verifying an object means recomputing that
//! id from these exact bytes and decoding both parts strictly.

use crate::canonical::{self, DecodeError};
use crate::id::NodeId;
use crate::node::{ContentBlock, Node, NodeMeta, Role};

pub const OBJECT_FORMAT: u8 = 1;

/// Why bytes are not a valid stored object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("object is {0} bytes, shorter than its 5-byte header")]
    TooShort(usize),
    #[error("object format {0} is newer than this tapes understands (format {OBJECT_FORMAT}); upgrade tapes")]
    Format(u8),
    #[error("object body length {claimed} exceeds the {available} bytes present")]
    BodyLength { claimed: usize, available: usize },
    #[error("object body is not canonical: {0}")]
    Body(#[from] DecodeError),
    #[error("object metadata does not decode: {0}")]
    Meta(String),
    #[error("object hashes to {actual}, not to the id {expected} it was stored or sent under")]
    IdMismatch { expected: NodeId, actual: NodeId },
}

/// An encoded object together with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub id: NodeId,
    pub bytes: Vec<u8>,
}

impl StoredObject {
    /// Encodes a node; the id is computed from the canonical body.
    pub fn encode(node: &Node) -> StoredObject {
        let b = &node.body;
        StoredObject::encode_parts(b.parent.as_ref(), b.role, &b.model, &b.blocks, &node.meta)
    }

    /// Encodes a node given by its parts, writing the body straight into the object buffer.
    pub fn encode_parts(
        parent: Option<&NodeId>,
        role: Role,
        model: &str,
        blocks: &[ContentBlock],
        meta: &NodeMeta,
    ) -> StoredObject {
        // Sized up front: a message of tens of MB would otherwise be copied at every doubling
        // and end with up to twice its size reserved.
        let mut bytes = Vec::with_capacity(512 + blocks.iter().map(size_hint).sum::<usize>());
        bytes.push(OBJECT_FORMAT);
        bytes.extend_from_slice(&[0; 4]);
        canonical::encode_body_into(&mut bytes, parent, role, model, blocks);
        let body_len = bytes.len() - 5;
        bytes[1..5].copy_from_slice(&(body_len as u32).to_le_bytes());
        let id = canonical::node_id_of_bytes(&bytes[5..]);
        bytes.extend(postcard::to_stdvec(meta).expect("postcard encoding to a Vec cannot fail"));
        StoredObject { id, bytes }
    }

    /// Decodes and verifies `bytes` as the object `expected`: the body must hash to it.
    pub fn verify(expected: &NodeId, bytes: &[u8]) -> Result<Node, ObjectError> {
        let (body_bytes, meta_bytes) = split(bytes)?;
        let actual = canonical::node_id_of_bytes(body_bytes);
        if &actual != expected {
            return Err(ObjectError::IdMismatch {
                expected: *expected,
                actual,
            });
        }
        let body = canonical::decode_body(body_bytes)?;
        let meta = decode_meta(meta_bytes)?;
        Ok(Node { body, meta })
    }

    /// Checks `bytes` as the object `expected` the way a receiver of a chain does (SPEC.md
    /// §15.4): the body hashes to `expected` and the metadata decodes; returns the parent id
    /// read from the body's head. The rest of the body is not decoded: its bytes are fixed by
    /// the id, and through the parent links by the owner's signature over the head, so only
    /// the session's owner could have written a body that does not decode, and a reader
    /// reports that as the owner's. Four times cheaper than [`StoredObject::verify`] on
    /// ~1 KB nodes (the strict decode allocates every string).
    pub fn verify_link(expected: &NodeId, bytes: &[u8]) -> Result<Option<NodeId>, ObjectError> {
        let (body_bytes, meta_bytes) = split(bytes)?;
        let actual = canonical::node_id_of_bytes(body_bytes);
        if &actual != expected {
            return Err(ObjectError::IdMismatch {
                expected: *expected,
                actual,
            });
        }
        decode_meta(meta_bytes)?;
        Self::parent_of(bytes)
    }

    /// Decodes without checking the id (for bytes a verified store already holds).
    pub fn decode(bytes: &[u8]) -> Result<Node, ObjectError> {
        let (body_bytes, meta_bytes) = split(bytes)?;
        Ok(Node {
            body: canonical::decode_body(body_bytes)?,
            meta: decode_meta(meta_bytes)?,
        })
    }

    /// The metadata of encoded object bytes, without decoding the body.
    pub fn meta_of(bytes: &[u8]) -> Result<NodeMeta, ObjectError> {
        let (_, meta) = split(bytes)?;
        decode_meta(meta)
    }

    /// `bytes` with the metadata replaced by `meta`. The body, and so the id, is unchanged
    /// (metadata is not hashed, SPEC.md §2.5): what a sender strips from the metadata on the way
    /// out does not change history.
    pub fn with_meta(bytes: &[u8], meta: &NodeMeta) -> Result<Vec<u8>, ObjectError> {
        let (body, _) = split(bytes)?;
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(&bytes[..5 + body.len()]);
        out.extend(postcard::to_stdvec(meta).expect("postcard encoding to a Vec cannot fail"));
        Ok(out)
    }

    /// The bytes before the metadata (format, body length, body) and the metadata's bytes.
    pub fn split_meta(bytes: &[u8]) -> Result<(&[u8], &[u8]), ObjectError> {
        let (body, _) = split(bytes)?;
        Ok(bytes.split_at(5 + body.len()))
    }

    /// The length of the leading metadata fields that can hold local paths (`provider`,
    /// `agent`, `project`, `cwd`: the first four of [`NodeMeta`], each an optional string) in
    /// encoded metadata, or `None` when they do not parse. A sender that strips paths (SPEC.md
    /// §11.3) rewrites only these bytes, and nodes of one session mostly share them.
    pub fn path_fields_len(meta: &[u8]) -> Option<usize> {
        type PathFields<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let (_, rest) = postcard::take_from_bytes::<PathFields<'_>>(meta).ok()?;
        Some(meta.len() - rest.len())
    }

    /// The parent id, read from the body without decoding the rest (for walking chains fast).
    pub fn parent_of(bytes: &[u8]) -> Result<Option<NodeId>, ObjectError> {
        let (body, _) = split(bytes)?;
        match body.get(1) {
            Some(0) => Ok(None),
            Some(1) if body.len() >= 34 => Ok(NodeId::from_slice(&body[2..34])),
            _ => Err(ObjectError::Body(DecodeError::Truncated {
                offset: 1,
                needed: 1,
            })),
        }
    }
}

fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), ObjectError> {
    if bytes.len() < 5 {
        return Err(ObjectError::TooShort(bytes.len()));
    }
    if bytes[0] != OBJECT_FORMAT {
        return Err(ObjectError::Format(bytes[0]));
    }
    let claimed = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let rest = &bytes[5..];
    if claimed > rest.len() {
        return Err(ObjectError::BodyLength {
            claimed,
            available: rest.len(),
        });
    }
    Ok(rest.split_at(claimed))
}

fn decode_meta(bytes: &[u8]) -> Result<NodeMeta, ObjectError> {
    match postcard::take_from_bytes::<NodeMeta>(bytes) {
        Ok((meta, [])) => Ok(meta),
        Ok((_, rest)) => Err(ObjectError::Meta(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(ObjectError::Meta(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{ContentBlock, NodeBody, Role, Usage};

    fn node() -> Node {
        Node {
            body: NodeBody {
                parent: None,
                role: Role::User,
                model: String::new(),
                blocks: vec![ContentBlock::text("hi")],
            },
            meta: NodeMeta {
                usage: Some(Usage {
                    input_tokens: 3,
                    ..Usage::default()
                }),
                timestamp_ms: Some(1_700_000_000_000),
                ..NodeMeta::default()
            },
        }
    }

    #[test]
    fn verify_accepts_its_own_encoding() {
        let obj = StoredObject::encode(&node());
        assert_eq!(StoredObject::verify(&obj.id, &obj.bytes).unwrap(), node());
        assert_eq!(StoredObject::parent_of(&obj.bytes).unwrap(), None);
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let obj = StoredObject::encode(&node());
        for i in 0..obj.bytes.len() {
            let mut bad = obj.bytes.clone();
            bad[i] ^= 0x40;
            let verdict = StoredObject::verify(&obj.id, &bad);
            // Flips in the metadata may still decode; they must not change the body.
            if let Ok(n) = verdict {
                assert!(
                    i >= 5 + canonical::encode_body(&node().body).len(),
                    "body flip at {i} accepted"
                );
                assert_eq!(n.body, node().body);
            }
        }
    }

    #[test]
    fn with_meta_keeps_the_body_and_id() {
        let object = StoredObject::encode(&node());
        let mut meta = StoredObject::meta_of(&object.bytes).unwrap();
        assert_eq!(meta, node().meta);
        meta.cwd = Some("elsewhere".into());
        let bytes = StoredObject::with_meta(&object.bytes, &meta).unwrap();
        let back = StoredObject::verify(&object.id, &bytes).unwrap();
        assert_eq!(back.body, node().body);
        assert_eq!(back.meta, meta);
    }

    #[test]
    fn meta_is_not_hashed() {
        let mut other = node();
        other.meta.timestamp_ms = Some(1);
        assert_eq!(
            StoredObject::encode(&other).id,
            StoredObject::encode(&node()).id
        );
    }
}

/// About how many bytes `block` takes encoded (its strings, plus a little for the framing).
fn size_hint(block: &crate::ContentBlock) -> usize {
    use crate::{ContentBlock, ImageSource, ToolResultPart};
    let image = |source: &ImageSource| match source {
        ImageSource::Bytes { data } => data.len(),
        ImageSource::Reference { uri } => uri.len(),
    };
    32 + match block {
        ContentBlock::Text { text } => text.len(),
        ContentBlock::Thinking { text, signature } => {
            text.len() + signature.as_ref().map_or(0, String::len)
        }
        ContentBlock::ToolUse { id, name, input } => id.len() + name.len() + input.len(),
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            ..
        } => {
            tool_use_id.len()
                + content
                    .iter()
                    .map(|part| {
                        16 + match part {
                            ToolResultPart::Text { text } => text.len(),
                            ToolResultPart::Image { media_type, source } => {
                                media_type.len() + image(source)
                            }
                        }
                    })
                    .sum::<usize>()
        }
        ContentBlock::Image { media_type, source } => media_type.len() + image(source),
        ContentBlock::Other { kind, json } => kind.len() + json.len(),
    }
}
