//! The node model: one message of an agent session.
//!
//! A node is split in two on purpose. [`NodeBody`] is what was said and by whom (parent, role,
//! model, content blocks); it is hashed into the node id, so identical history dedupes across
//! sessions, machines and importers. [`NodeMeta`] is what was observed about that message
//! (usage, timestamp, provider, agent, project, ...); it travels and is stored with the node but
//! is not hashed, because two recordings of the same conversation must not split history just
//! because their clocks or token counters differ. SPEC.md §2 lists which field is which.

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// Who produced a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" | "human" => Role::User,
            "assistant" | "model" | "gemini" => Role::Assistant,
            "tool" | "function" => Role::Tool,
            _ => return None,
        })
    }
}

/// Where an image's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// The image bytes themselves (decoded, not base64).
    Bytes {
        #[serde(with = "hex_or_raw_bytes")]
        data: Vec<u8>,
    },
    /// A reference (URL or file id) to an image kept elsewhere.
    Reference { uri: String },
}

/// One part of a tool result: text or an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolResultPart {
    Text {
        text: String,
    },
    Image {
        media_type: String,
        source: ImageSource,
    },
}

/// One content block of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    Thinking {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    ToolUse {
        id: String,
        name: String,
        /// The tool input as JSON text. It is canonicalized (keys sorted, no whitespace) when
        /// hashed, so `{"a":1, "b":2}` and `{"b":2,"a":1}` give the same node.
        input: String,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        is_error: bool,
        #[serde(default)]
        content: Vec<ToolResultPart>,
    },
    Image {
        media_type: String,
        source: ImageSource,
    },
    /// A block kind tapes does not model (redacted thinking, server tools, ...), kept as JSON so
    /// nothing an agent wrote is lost and resume can write it back.
    Other {
        kind: String,
        json: String,
    },
}

impl ContentBlock {
    pub fn text(s: impl Into<String>) -> Self {
        ContentBlock::Text { text: s.into() }
    }
}

/// The hashed part of a node: what was said, by whom, after what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<NodeId>,
    pub role: Role,
    /// The model that produced the message; empty for messages no model produced.
    #[serde(default)]
    pub model: String,
    pub blocks: Vec<ContentBlock>,
}

/// Token usage of one model call, as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }
}

/// The text parts of a tool result joined by newlines (images left out).
pub fn tool_result_text(content: &[ToolResultPart]) -> String {
    let texts: Vec<&str> = content
        .iter()
        .filter_map(|p| match p {
            ToolResultPart::Text { text } => Some(text.as_str()),
            ToolResultPart::Image { .. } => None,
        })
        .collect();
    texts.join("\n")
}

/// Unhashed observations about a node. Field order is part of the stored format (postcard,
/// which is not self-describing: never add `skip_serializing_if` here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeMeta {
    pub provider: Option<String>,
    pub agent: Option<String>,
    pub project: Option<String>,
    pub cwd: Option<String>,
    pub git_branch: Option<String>,
    pub usage: Option<Usage>,
    pub stop_reason: Option<String>,
    /// Milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: Option<i64>,
    /// How long the model call took, when the source recorded it.
    pub duration_ms: Option<u64>,
    /// The message's id in the system it was imported from (Claude uuid, the original tapes
    /// database's `sha256:` hash, ...).
    pub origin_id: Option<String>,
}

/// A node as the rest of tapes handles it: body (hashed) + meta (not hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(flatten)]
    pub body: NodeBody,
    #[serde(default)]
    pub meta: NodeMeta,
}

impl Node {
    /// The node id: BLAKE3 over the canonical encoding of the body (SPEC.md §2.2).
    pub fn id(&self) -> NodeId {
        self.body.id()
    }
}

impl NodeBody {
    pub fn id(&self) -> NodeId {
        crate::canonical::node_id(self)
    }

    /// All text in the message, for previews and search: text, thinking, tool inputs/outputs.
    pub fn plain_text(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            let piece: &str = match block {
                ContentBlock::Text { text } | ContentBlock::Thinking { text, .. } => text,
                ContentBlock::ToolUse { input, .. } => input,
                ContentBlock::ToolResult { content, .. } => {
                    push_line(&mut out, &tool_result_text(content));
                    continue;
                }
                ContentBlock::Image { .. } | ContentBlock::Other { .. } => continue,
            };
            push_line(&mut out, piece);
        }
        out
    }
}

fn push_line(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(s);
}

/// Image bytes are hex in human-readable formats (vectors, JSON) and plain bytes in postcard.
mod hex_or_raw_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            hex::decode(s).map_err(serde::de::Error::custom)
        } else {
            serde_bytes_compat::deserialize(d)
        }
    }

    mod serde_bytes_compat {
        use serde::de::{Deserializer, Error, SeqAccess, Visitor};
        use std::fmt;

        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            d.deserialize_bytes(BytesVisitor)
        }
    }
}
