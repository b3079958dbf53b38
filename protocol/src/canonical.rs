//! The canonical encoding of a node body and the node id derived from it (SPEC.md §2.2).
//!
//! One body has exactly one encoding and one encoding decodes to exactly one body: the decoder
//! rejects anything the encoder would not have produced (unknown tags, non-canonical JSON,
//! trailing bytes, booleans other than 0/1). That is what makes "same bytes, same id" hold for
//! bytes that arrive from a peer or a bundle.

use crate::bytes::{put_bytes, put_str, put_u32, Reader};
use crate::canonical_json;

pub use crate::bytes::DecodeError;
use crate::id::NodeId;
use crate::node::{ContentBlock, ImageSource, NodeBody, Role, ToolResultPart};

/// The encoding version byte that starts every canonical body.
pub const BODY_VERSION: u8 = 1;

/// The BLAKE3 derive-key context for node ids: the domain separator.
pub const NODE_ID_CONTEXT: &str = "tapes 2026-11 node id v1";

/// Canonical bytes of `body`.
///
/// JSON fields (`ToolUse::input`, `Other::json`) are canonicalized here; text that is not JSON
/// at all is encoded as a JSON string holding that text, so every body has an encoding.
pub fn encode_body(body: &NodeBody) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode_body_into(
        &mut out,
        body.parent.as_ref(),
        body.role,
        &body.model,
        &body.blocks,
    );
    out
}

/// Appends the canonical encoding of a body given by its parts (no need to own a
/// [`NodeBody`]: the ingest path encodes straight from what an importer parsed).
pub fn encode_body_into(
    out: &mut Vec<u8>,
    parent: Option<&NodeId>,
    role: Role,
    model: &str,
    blocks: &[ContentBlock],
) {
    out.push(BODY_VERSION);
    match parent {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id.as_bytes());
        }
    }
    put_str(out, role.as_str());
    put_str(out, model);
    put_u32(out, blocks.len());
    for block in blocks {
        encode_block(out, block);
    }
}

/// The node id of `body`: BLAKE3 in derive-key mode with [`NODE_ID_CONTEXT`] over its
/// canonical encoding.
pub fn node_id(body: &NodeBody) -> NodeId {
    node_id_of_bytes(&encode_body(body))
}

/// The node id of already encoded canonical body bytes.
pub fn node_id_of_bytes(canonical: &[u8]) -> NodeId {
    let mut h = blake3::Hasher::new_derive_key(NODE_ID_CONTEXT);
    h.update(canonical);
    NodeId(*h.finalize().as_bytes())
}

/// Turns JSON-ish text into its canonical form (see [`encode_body`]).
pub fn canonical_json_field(text: &str) -> String {
    canonical_json::canonicalize(text)
        .unwrap_or_else(|| canonical_json::canonical_value(&serde_json::Value::String(text.into())))
}

fn encode_block(out: &mut Vec<u8>, block: &ContentBlock) {
    match block {
        ContentBlock::Text { text } => {
            out.push(0x01);
            put_str(out, text);
        }
        ContentBlock::Thinking { text, signature } => {
            out.push(0x02);
            put_str(out, text);
            match signature {
                None => out.push(0),
                Some(sig) => {
                    out.push(1);
                    put_str(out, sig);
                }
            }
        }
        ContentBlock::ToolUse { id, name, input } => {
            out.push(0x03);
            put_str(out, id);
            put_str(out, name);
            put_str(out, &canonical_json_field(input));
        }
        ContentBlock::ToolResult {
            tool_use_id,
            is_error,
            content,
        } => {
            out.push(0x04);
            put_str(out, tool_use_id);
            out.push(u8::from(*is_error));
            put_u32(out, content.len());
            for part in content {
                match part {
                    ToolResultPart::Text { text } => {
                        out.push(0x01);
                        put_str(out, text);
                    }
                    ToolResultPart::Image { media_type, source } => {
                        out.push(0x02);
                        put_image(out, media_type, source);
                    }
                }
            }
        }
        ContentBlock::Image { media_type, source } => {
            out.push(0x05);
            put_image(out, media_type, source);
        }
        ContentBlock::Other { kind, json } => {
            out.push(0x06);
            put_str(out, kind);
            put_str(out, &canonical_json_field(json));
        }
    }
}

fn put_image(out: &mut Vec<u8>, media_type: &str, source: &ImageSource) {
    put_str(out, media_type);
    match source {
        ImageSource::Bytes { data } => {
            out.push(0x01);
            put_bytes(out, data);
        }
        ImageSource::Reference { uri } => {
            out.push(0x02);
            put_str(out, uri);
        }
    }
}

/// Decodes canonical body bytes, rejecting any non-canonical input.
pub fn decode_body(bytes: &[u8]) -> Result<NodeBody, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8()?;
    if version != BODY_VERSION {
        return Err(DecodeError::Version(version));
    }
    let parent = match r.tag("parent", &[0, 1])? {
        0 => None,
        _ => Some(NodeId(r.array()?)),
    };
    let role_str = r.str()?;
    let role = Role::parse(&role_str)
        .filter(|role| role.as_str() == role_str)
        .ok_or(DecodeError::Role(role_str))?;
    let model = r.str()?;
    let count = r.u32()?;
    // Each block takes at least 5 bytes, so a count larger than what is left is a lie; checking
    // it first keeps a forged count from reserving gigabytes.
    r.need(count.saturating_mul(5))?;
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        blocks.push(decode_block(&mut r)?);
    }
    if r.pos != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - r.pos));
    }
    Ok(NodeBody {
        parent,
        role,
        model,
        blocks,
    })
}

fn decode_block(r: &mut Reader<'_>) -> Result<ContentBlock, DecodeError> {
    Ok(match r.tag("block", &[1, 2, 3, 4, 5, 6])? {
        0x01 => ContentBlock::Text { text: r.str()? },
        0x02 => {
            let text = r.str()?;
            let signature = match r.tag("signature flag", &[0, 1])? {
                0 => None,
                _ => Some(r.str()?),
            };
            ContentBlock::Thinking { text, signature }
        }
        0x03 => {
            let id = r.str()?;
            let name = r.str()?;
            let input = read_canonical_json(r, "tool input")?;
            ContentBlock::ToolUse { id, name, input }
        }
        0x04 => {
            let tool_use_id = r.str()?;
            let is_error = r.tag("error flag", &[0, 1])? == 1;
            let count = r.u32()?;
            r.need(count.saturating_mul(5))?;
            let mut content = Vec::with_capacity(count);
            for _ in 0..count {
                content.push(match r.tag("tool result part", &[1, 2])? {
                    0x01 => ToolResultPart::Text { text: r.str()? },
                    _ => {
                        let (media_type, source) = read_image(r)?;
                        ToolResultPart::Image { media_type, source }
                    }
                });
            }
            ContentBlock::ToolResult {
                tool_use_id,
                is_error,
                content,
            }
        }
        0x05 => {
            let (media_type, source) = read_image(r)?;
            ContentBlock::Image { media_type, source }
        }
        _ => {
            let kind = r.str()?;
            let json = read_canonical_json(r, "block json")?;
            ContentBlock::Other { kind, json }
        }
    })
}

fn read_canonical_json(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let s = r.str()?;
    match canonical_json::canonicalize(&s) {
        Some(c) if c == s => Ok(s),
        _ => Err(DecodeError::NonCanonicalJson(what)),
    }
}

fn read_image(r: &mut Reader<'_>) -> Result<(String, ImageSource), DecodeError> {
    let media_type = r.str()?;
    let source = match r.tag("image source", &[1, 2])? {
        0x01 => ImageSource::Bytes { data: r.bytes()? },
        _ => ImageSource::Reference { uri: r.str()? },
    };
    Ok((media_type, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> NodeBody {
        NodeBody {
            parent: Some(NodeId([9; 32])),
            role: Role::Assistant,
            model: "claude-sonnet-4".into(),
            blocks: vec![
                ContentBlock::Thinking {
                    text: "hm".into(),
                    signature: Some("sig".into()),
                },
                ContentBlock::text("hello"),
                ContentBlock::ToolUse {
                    id: "t1".into(),
                    name: "Bash".into(),
                    input: r#"{"b":1, "a":2}"#.into(),
                },
                ContentBlock::ToolResult {
                    tool_use_id: "t1".into(),
                    is_error: true,
                    content: vec![
                        ToolResultPart::Text {
                            text: "boom".into(),
                        },
                        ToolResultPart::Image {
                            media_type: "image/png".into(),
                            source: ImageSource::Bytes {
                                data: vec![1, 2, 3],
                            },
                        },
                    ],
                },
                ContentBlock::Image {
                    media_type: "image/jpeg".into(),
                    source: ImageSource::Reference {
                        uri: "file-1".into(),
                    },
                },
                ContentBlock::Other {
                    kind: "redacted_thinking".into(),
                    json: "{\"data\":\"x\"}".into(),
                },
            ],
        }
    }

    #[test]
    fn decode_inverts_encode_after_canonicalization() {
        let body = sample();
        let bytes = encode_body(&body);
        let decoded = decode_body(&bytes).unwrap();
        assert_eq!(encode_body(&decoded), bytes);
        assert_eq!(node_id(&decoded), node_id(&body));
    }

    #[test]
    fn json_key_order_does_not_change_the_id() {
        let mut a = sample();
        let mut b = sample();
        a.blocks[2] = ContentBlock::ToolUse {
            id: "t".into(),
            name: "n".into(),
            input: r#"{"x":1,"y":2}"#.into(),
        };
        b.blocks[2] = ContentBlock::ToolUse {
            id: "t".into(),
            name: "n".into(),
            input: r#"{ "y": 2, "x": 1 }"#.into(),
        };
        assert_eq!(node_id(&a), node_id(&b));
    }

    #[test]
    fn parent_and_content_change_the_id() {
        let a = sample();
        let mut b = sample();
        b.parent = None;
        assert_ne!(node_id(&a), node_id(&b));
        let mut c = sample();
        c.blocks[1] = ContentBlock::text("hellp");
        assert_ne!(node_id(&a), node_id(&c));
    }

    #[test]
    fn rejects_every_truncation_and_trailing_bytes() {
        let bytes = encode_body(&sample());
        for cut in 0..bytes.len() {
            assert!(
                decode_body(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_body(&longer), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn rejects_huge_counts_without_allocating() {
        let mut bytes = vec![BODY_VERSION, 0];
        bytes.extend_from_slice(&4u32.to_le_bytes());
        bytes.extend_from_slice(b"user");
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_body(&bytes),
            Err(DecodeError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_body(&bytes);
        }

        #[test]
        fn text_bodies_round_trip(texts in proptest::collection::vec(".*", 0..4), model in "[a-z0-9-]{0,12}") {
            let body = NodeBody {
                parent: None,
                role: Role::User,
                model,
                blocks: texts.into_iter().map(ContentBlock::text).collect(),
            };
            let bytes = encode_body(&body);
            prop_assert_eq!(decode_body(&bytes).unwrap(), body);
        }
    }
}
