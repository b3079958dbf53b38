//! Bringing an agent's new turns back (SPEC.md §17.3), and what `tapes status` reports.
//!
//! - [`import_agent_files`]: imports the files tapes wrote for a tracked alias (what `tapes
//!   push` does before it sends, so exactly the turns the agent appended go to the remote).
//! - [`file_state`]: without storing anything, what a file holds beyond what tapes last synced
//!   with it (new turns, or the message where the agent rewrote history).
//! - [`alias_status`]: one alias of a project's tracking file, as `tapes status` shows it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tapes_protocol::history::{relate, Relation};
use tapes_protocol::NodeId;

use super::mapping;
use crate::import::walk::{import_paths, ImportSummary, WalkError};
use crate::store::{Store, StoreError};
use crate::sync::tracking::TrackedAlias;

/// Imports each of `files` that exists (a file the agent or the user removed is left out:
/// what it held is in the store already).
pub fn import_agent_files(
    store: &Store,
    files: &[PathBuf],
    now_ms: i64,
) -> Result<ImportSummary, WalkError> {
    let present: Vec<PathBuf> = files.iter().filter(|p| p.is_file()).cloned().collect();
    if present.is_empty() {
        return Ok(ImportSummary::default());
    }
    import_paths(store, &present, now_ms, |_| {})
}

/// A file tapes wrote, compared with its record now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileState {
    pub path: String,
    /// The file is gone.
    pub missing: bool,
    /// Messages the agent appended that import has not stored yet.
    pub new_turns: usize,
    /// The agent changed the file's history at this message (1-based); import keeps such a
    /// file as a branch.
    pub diverged_at: Option<usize>,
    /// The file cannot be read as a transcript any more.
    pub unreadable: Option<String>,
}

/// What `path` holds beyond its record, without storing anything.
pub fn file_state(store: &Store, path: &Path) -> Result<FileState, StoreError> {
    let mut state = FileState {
        path: path.display().to_string(),
        ..FileState::default()
    };
    if !path.is_file() {
        state.missing = true;
        return Ok(state);
    }
    let report = match crate::import::detect_format(path)
        .map_err(|why| why.to_string())
        .and_then(|format| crate::import::parse_file(path, format).map_err(|e| e.to_string()))
    {
        Ok(report) => report,
        Err(why) => {
            state.unreadable = Some(why);
            return Ok(state);
        }
    };
    for session in report.sessions {
        let Some((_, file)) = mapping::lookup(store, session.source_kind, &session.source_id)?
        else {
            continue;
        };
        let ids: Vec<NodeId> = crate::import::ingest::build_chain(&session)
            .iter()
            .map(|o| o.id)
            .collect();
        match relate(&file.file_ids, &ids) {
            Relation::Same | Relation::Older { .. } => {}
            Relation::Extends { new } => state.new_turns += new,
            Relation::Diverged { common } => {
                state.diverged_at = Some(common + 1);
                state.new_turns += ids.len() - common;
            }
        }
    }
    Ok(state)
}

/// One alias of the project, for `tapes status`.
#[derive(Debug, Clone, Serialize)]
pub struct AliasStatus {
    pub alias: String,
    pub current: bool,
    /// Full session id (the pending branch's id while it is pending).
    pub session: String,
    pub pending: bool,
    pub remote: Option<String>,
    pub platform: Option<String>,
    pub files: Vec<FileState>,
    /// Messages the remote holds as far as this project knows (the alias's base).
    pub base_count: u64,
    /// Messages in the store's copy.
    pub local_count: u64,
    /// Messages here (stored, or still only in the agent's file) that the remote does not have.
    pub not_pushed: u64,
    /// The remote's count when it was last asked (pull, push, `status --fetch`).
    pub remote_count: Option<u64>,
    /// The remote has moved on past the base (someone pushed); `tapes pull` brings it.
    pub behind: Option<bool>,
    pub remote_checked_at: Option<String>,
    /// The store's copy is not a continuation of the base (it was replaced or rewound).
    pub diverged: bool,
}

/// Computes one alias's status from the store and its files.
pub fn alias_status(
    store: &Store,
    name: &str,
    alias: &TrackedAlias,
    current: bool,
) -> Result<AliasStatus, StoreError> {
    let session = alias.session();
    let record = match session {
        Some(id) => store.session(&id)?,
        None => None,
    };
    let local_count = record.as_ref().map_or(0, |r| r.summary.messages);
    let mut diverged = false;
    let stored_ahead = match (&record, &alias.base_digest) {
        (Some(r), Some(base)) if r.head == *base => 0,
        (Some(r), Some(base)) => {
            let ids = store.chain_ids(&r.head)?;
            match ids.iter().position(|id| id == base) {
                Some(at) => (ids.len() - at - 1) as u64,
                None => {
                    diverged = true;
                    local_count
                }
            }
        }
        (Some(r), None) => r.summary.messages.saturating_sub(alias.base_count),
        (None, _) => 0,
    };
    let mut files = Vec::with_capacity(alias.files.len());
    let mut unimported = 0;
    for path in &alias.files {
        let state = file_state(store, Path::new(path))?;
        if state.diverged_at.is_none() {
            unimported += state.new_turns as u64;
        }
        files.push(state);
    }
    let behind = match (&alias.remote_digest, &alias.base_digest) {
        (Some(remote), Some(base)) => Some(remote != base),
        (Some(_), None) => Some(true),
        _ => None,
    };
    Ok(AliasStatus {
        alias: name.to_string(),
        current,
        session: session.map_or_else(String::new, |s| s.to_hex()),
        pending: alias.is_pending(),
        remote: alias.remote.clone(),
        platform: alias.platform.clone(),
        files,
        base_count: alias.base_count,
        local_count,
        not_pushed: stored_ahead + unimported,
        remote_count: alias.remote_count,
        behind,
        remote_checked_at: alias.remote_checked_at.clone(),
        diverged,
    })
}
