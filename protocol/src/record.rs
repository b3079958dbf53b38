//! Session records (SPEC.md §4.2, §10): the value of a `session/<id>` ref — the head node plus
//! the session's metadata and a cached summary — and its versioned byte encoding. The record's
//! bytes are what a ref signature covers ([`crate::signed::RefSignature`]), so two peers must
//! encode it identically: it lives here, pinned by `protocol/vectors/signed.toml`.

use serde::{Deserialize, Serialize};

use crate::{ContentBlock, MemberId, Node, NodeId, NodeMeta, Role, SessionId, TeamId, Usage};

/// Version byte in front of every encoded record; bump when the layout changes.
pub const RECORD_VERSION: u8 = 2;

/// Where a session came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSource {
    /// Importer name ("claude", "codex", ...), or "tapes" for sessions made here.
    pub kind: String,
    /// The source's own id for the session (see `ParsedSession::source_id`).
    pub id: String,
    /// The file it was last imported from.
    pub path: String,
}

/// Numbers about a session's chain, kept with the ref so listings are cheap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub messages: u64,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub usage: Usage,
    /// The model of the last assistant message.
    pub model: String,
    pub project: String,
    pub agent: String,
    /// The first user text, cut to 200 characters.
    pub first_prompt: String,
}

impl SessionSummary {
    /// Summarizes a chain given root first.
    pub fn of_chain<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> SessionSummary {
        let mut s = SessionSummary::default();
        for node in nodes {
            s.add(
                node.body.role,
                &node.body.model,
                &node.body.blocks,
                &node.meta,
            );
        }
        s
    }

    /// Adds the next message of the chain.
    pub fn add(&mut self, role: Role, model: &str, blocks: &[ContentBlock], meta: &NodeMeta) {
        self.messages += 1;
        if let Some(t) = meta.timestamp_ms {
            self.started_ms = Some(self.started_ms.map_or(t, |v| v.min(t)));
            self.ended_ms = Some(self.ended_ms.map_or(t, |v| v.max(t)));
        }
        if let Some(u) = meta.usage {
            self.usage += u;
        }
        if role == Role::Assistant && !model.is_empty() {
            self.model = model.to_string();
        }
        if self.project.is_empty() {
            self.project = meta.project.clone().unwrap_or_default();
        }
        if self.agent.is_empty() {
            self.agent = meta.agent.clone().unwrap_or_default();
        }
        if self.first_prompt.is_empty() && role == Role::User {
            self.first_prompt = first_prompt_text(blocks);
        }
    }

    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.ended_ms? - self.started_ms?)
    }
}

fn first_prompt_text(blocks: &[ContentBlock]) -> String {
    let text = blocks
        .iter()
        .find_map(|b| match b {
            ContentBlock::Text { text } => prompt_preview(text),
            _ => None,
        })
        .unwrap_or_default();
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}

/// What a person typed, without the scaffolding agents wrap around it: `<system-reminder>`
/// blocks are dropped, a slash command shows as `/name args`, and messages that are only
/// injected context (AGENTS.md, environment context, caveats) do not count as the prompt.
fn prompt_preview(text: &str) -> Option<String> {
    if let Some(name) = between(text, "<command-name>", "</command-name>") {
        let args = between(text, "<command-args>", "</command-args>").unwrap_or("");
        return Some(
            format!("{} {}", name.trim(), args.trim())
                .trim()
                .to_string(),
        );
    }
    let mut rest = text.to_string();
    while let (Some(start), Some(end)) = (
        rest.find("<system-reminder>"),
        rest.find("</system-reminder>"),
    ) {
        if end < start {
            break;
        }
        rest.replace_range(start..end + "</system-reminder>".len(), "");
    }
    let rest = rest.trim();
    const INJECTED: [&str; 4] = [
        "# AGENTS.md instructions",
        "<environment_context>",
        "<user_instructions>",
        "Caveat: ",
    ];
    if rest.is_empty() || INJECTED.iter().any(|p| rest.starts_with(p)) {
        return None;
    }
    Some(rest.to_string())
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// Who may see a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Visibility {
    /// Only its owner.
    #[default]
    Private,
    /// Members of one team.
    Team(TeamId),
    /// Anyone with the id or link.
    Public,
}

impl Visibility {
    pub fn label(&self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Team(_) => "team",
            Visibility::Public => "public",
        }
    }
}

/// Where a session comes from in the branch/fork family (seed: rootId, parentId, baseCount,
/// baseDigest). `base_digest` is the id of the last shared node: because node ids chain, it
/// commits to the whole shared prefix, so comparing it is comparing the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The first session of the family (itself for an original).
    pub root: SessionId,
    /// The session this one was branched or forked from.
    pub parent: Option<SessionId>,
    /// How many nodes it shares with `parent`.
    pub base_count: u64,
    /// The id of the last shared node (`None` when nothing is shared).
    pub base_digest: Option<NodeId>,
}

impl Lineage {
    /// The lineage of a session that starts a family.
    pub fn original(id: SessionId) -> Lineage {
        Lineage {
            root: id,
            parent: None,
            base_count: 0,
            base_digest: None,
        }
    }
}

/// The value of a session ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub head: NodeId,
    pub source: SessionSource,
    pub title: Option<String>,
    /// The session that spawned this one (a subagent's parent).
    pub parent_session: Option<SessionId>,
    pub summary: SessionSummary,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The identity that owns the session; `None` for sessions imported before `tapes init`,
    /// which belong to this store's identity.
    pub owner: Option<MemberId>,
    pub visibility: Visibility,
    pub tags: Vec<String>,
    /// A longer description (the seed's `--summary`).
    pub description: Option<String>,
    pub note: Option<String>,
    pub expires_ms: Option<i64>,
    pub lineage: Lineage,
}

/// Why a ref record does not decode.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("session record version {0} is newer than this tapes understands; upgrade tapes")]
    Version(u8),
    #[error("session record version {0} was written by an older tapes; open the store once with this tapes to migrate it (`tapes fsck` does)")]
    Old(u8),
    #[error("session record is empty")]
    Empty,
    #[error("session record does not decode: {0}")]
    Decode(String),
}

impl SessionRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        out.extend(postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, RecordError> {
        let (&version, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
        if version > RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        if version < RECORD_VERSION {
            return Err(RecordError::Old(version));
        }
        match postcard::take_from_bytes(rest) {
            Ok((record, [])) => Ok(record),
            Ok((_, trailing)) => Err(RecordError::Decode(format!(
                "{} trailing bytes",
                trailing.len()
            ))),
            Err(e) => Err(RecordError::Decode(e.to_string())),
        }
    }
}

/// Version 1 of the record (before owners, visibility and lineage): a prefix of version 2.
#[derive(Deserialize)]
struct RecordV1 {
    head: NodeId,
    source: SessionSource,
    title: Option<String>,
    parent_session: Option<SessionId>,
    summary: SessionSummary,
    created_ms: i64,
    updated_ms: i64,
}

impl SessionRecord {
    /// Reads a record of any version this tapes knows; a version-1 record of session `id` is
    /// upgraded: no owner (it belongs to the store's own identity, as sessions imported before
    /// `tapes init` do), private, no tags or note, and a family of its own. Returns whether it
    /// was upgraded, so a migration knows to write it back.
    pub fn decode_any(id: &SessionId, bytes: &[u8]) -> Result<(SessionRecord, bool), RecordError> {
        match bytes.first() {
            Some(1) => {
                let v1: RecordV1 = match postcard::take_from_bytes(&bytes[1..]) {
                    Ok((record, [])) => record,
                    Ok((_, trailing)) => {
                        return Err(RecordError::Decode(format!(
                            "{} trailing bytes",
                            trailing.len()
                        )))
                    }
                    Err(e) => return Err(RecordError::Decode(e.to_string())),
                };
                Ok((
                    SessionRecord {
                        head: v1.head,
                        source: v1.source,
                        title: v1.title,
                        parent_session: v1.parent_session,
                        summary: v1.summary,
                        created_ms: v1.created_ms,
                        updated_ms: v1.updated_ms,
                        owner: None,
                        visibility: Visibility::Private,
                        tags: Vec::new(),
                        description: None,
                        note: None,
                        expires_ms: None,
                        lineage: Lineage::original(*id),
                    },
                    true,
                ))
            }
            _ => Ok((SessionRecord::decode(bytes)?, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prompt_preview;

    #[test]
    fn prompt_preview_strips_agent_scaffolding() {
        assert_eq!(
            prompt_preview("<command-message>init is analyzing</command-message>\n<command-name>/init</command-name>").as_deref(),
            Some("/init")
        );
        assert_eq!(
            prompt_preview("<system-reminder>hook</system-reminder>fix the bug").as_deref(),
            Some("fix the bug")
        );
        assert_eq!(prompt_preview("# AGENTS.md instructions for /repo"), None);
        assert_eq!(prompt_preview("  "), None);
    }
}
