//! Session records: what a session ref holds.
//!
//! A session is a ref `session/<id>` whose value is a [`SessionRecord`]: the head node plus the
//! session's descriptive metadata and a cached [`SessionSummary`] (counts, tokens, first
//! prompt) so that listing thousands of sessions does not walk every chain. The summary is
//! derived from the chain; `tapes fsck` recomputes it and reports a mismatch.

pub mod lineage;
pub mod pricing;
pub mod sample;
pub mod status;

use serde::{Deserialize, Serialize};
use tapes_protocol::{
    ContentBlock, MemberId, Node, NodeId, NodeMeta, Role, SessionId, TeamId, Usage,
};

/// Prefix of session refs in the ref namespace.
pub const SESSION_REF_PREFIX: &[u8] = crate::store::keys::SESSION;

/// Version byte in front of every encoded record; bump when the layout changes.
const RECORD_VERSION: u8 = 2;

pub fn session_ref_key(id: &SessionId) -> Vec<u8> {
    crate::store::keys::session(id)
}

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

/// Short agent names (the ones `--platform` takes) and the names sessions are stored under.
pub const AGENT_SHORT_NAMES: &[(&str, &str)] = &[
    ("claude", "claude-code"),
    ("codex", "codex"),
    ("gemini", "gemini-cli"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentFilterError {
    #[error("agent {input:?} is ambiguous: it could be {}; type more of the name", candidates.join(", "))]
    Ambiguous {
        input: String,
        candidates: Vec<String>,
    },
}

/// The stored agent name an `--agent` value means, given the agents `present` in the store:
/// a stored name itself, a short name (`claude`, `codex`, `gemini`), or a unique prefix of a
/// present or known agent; case does not matter. `Ok(None)` when it names no agent at all.
pub fn resolve_agent(input: &str, present: &[String]) -> Result<Option<String>, AgentFilterError> {
    let wanted = input.trim().to_lowercase();
    if let Some(name) = present.iter().find(|p| p.to_lowercase() == wanted) {
        return Ok(Some(name.clone()));
    }
    if let Some((_, stored)) = AGENT_SHORT_NAMES
        .iter()
        .find(|(short, stored)| *short == wanted || *stored == wanted)
    {
        return Ok(Some((*stored).to_string()));
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    let mut candidates: Vec<String> = present
        .iter()
        .filter(|p| p.to_lowercase().starts_with(&wanted))
        .cloned()
        .collect();
    if candidates.is_empty() {
        candidates = AGENT_SHORT_NAMES
            .iter()
            .filter(|(_, stored)| stored.starts_with(&wanted))
            .map(|(_, stored)| (*stored).to_string())
            .collect();
    }
    candidates.sort();
    candidates.dedup();
    match candidates.len() {
        0 => Ok(None),
        1 => Ok(candidates.pop()),
        _ => Err(AgentFilterError::Ambiguous {
            input: input.to_string(),
            candidates,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{resolve_agent, AgentFilterError};

    #[test]
    fn agent_names_short_stored_and_prefixes() {
        let present = vec!["claude-code".to_string(), "codex".to_string()];
        let r = |s: &str| resolve_agent(s, &present);
        assert_eq!(r("claude-code"), Ok(Some("claude-code".into())));
        assert_eq!(r("claude"), Ok(Some("claude-code".into())));
        assert_eq!(r("Claude"), Ok(Some("claude-code".into())));
        assert_eq!(r("cl"), Ok(Some("claude-code".into())));
        assert_eq!(r("codex"), Ok(Some("codex".into())));
        assert_eq!(r("gemini"), Ok(Some("gemini-cli".into())));
        assert_eq!(r("gem"), Ok(Some("gemini-cli".into())));
        assert_eq!(r("nope"), Ok(None));
        assert!(matches!(r("c"), Err(AgentFilterError::Ambiguous { .. })));
    }

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
    #[error("session record version {0} was written by an older tapes before its first release; start a fresh TAPES_HOME and import again")]
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
