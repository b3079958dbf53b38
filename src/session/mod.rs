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
pub mod tombstone;

use tapes_protocol::SessionId;

pub use tapes_protocol::record::{
    Lineage, RecordError, SessionRecord, SessionSource, SessionSummary, Visibility,
};

/// Prefix of session refs in the ref namespace.
pub const SESSION_REF_PREFIX: &[u8] = crate::store::keys::SESSION;

pub fn session_ref_key(id: &SessionId) -> Vec<u8> {
    crate::store::keys::session(id)
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
}
