//! Branch and fork: new sessions that share history with an existing one.
//!
//! The rules are the collaboration seed's (`seeds/sessionbase-collaborate-commands.txt`):
//! - your own session: `branch` makes a new child you own; `fork` is refused with a hint to use
//!   `branch` (`--force` overrides);
//! - someone else's: `branch` is refused with a hint to use `fork`; `fork` works unless the
//!   session is private; `pull` answers "Session not found." by design.
//!
//! A branch at `--at N` is a new ref whose head is the N-th node of the original: the first N
//! nodes are shared, not copied (node ids chain, so the prefix is the same objects).

use tapes_protocol::{MemberId, SessionId};

use crate::session::{Lineage, SessionRecord, SessionSource, SessionSummary, Visibility};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The seed's wording, kept exactly.
    #[error("Session not found.")]
    NotFound,
    #[error("You don't own this session. Use `tapes fork {0}`.")]
    NotOwnerUseFork(String),
    #[error(
        "You own this session. Use `tapes branch {0}` to create a copy (or `tapes fork --force`)."
    )]
    OwnUseBranch(String),
    #[error("This session is private to its owner; it cannot be forked.")]
    PrivateNotOwned,
    #[error(
        "--at {at} is out of range: the session has {count} messages (use 1..={count} or head)"
    )]
    AtOutOfRange { at: u64, count: u64 },
    #[error("cannot make a new session id: {0}")]
    Random(String),
}

/// Options shared by branch and fork (the seed's `--at`, `--title`, `--tags`, `--summary`,
/// `--private`).
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Share the first `at` nodes; `None` = the whole session (head).
    pub at: Option<u64>,
    pub title: Option<String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub private: bool,
}

/// True when `record` belongs to the identity `me` (sessions without an owner were imported
/// here before `tapes init` and are this store's).
pub fn is_mine(record: &SessionRecord, me: Option<&MemberId>) -> bool {
    match (&record.owner, me) {
        (None, _) => true,
        (Some(owner), Some(me)) => owner == me,
        (Some(_), None) => false,
    }
}

/// `tapes pull` on a session id: only your own sessions; others' are "not found" by design.
pub fn check_pull(store: &Store, id: &SessionId) -> Result<SessionRecord, LineageError> {
    let record = store.session(id)?.ok_or(LineageError::NotFound)?;
    if !is_mine(&record, store.local_owner()?.as_ref()) {
        return Err(LineageError::NotFound);
    }
    Ok(record)
}

/// `tapes branch`: a new session you own, sharing history with your own session `source`.
pub fn branch(
    store: &Store,
    source: &SessionId,
    options: &CopyOptions,
    now_ms: i64,
) -> Result<SessionId, LineageError> {
    let record = store.session(source)?.ok_or(LineageError::NotFound)?;
    let me = store.local_owner()?;
    if !is_mine(&record, me.as_ref()) {
        return Err(LineageError::NotOwnerUseFork(source.short()));
    }
    copy(store, source, &record, me, options, now_ms)
}

/// `tapes fork`: a new session you own from someone else's visible session (`force` allows
/// forking your own).
pub fn fork(
    store: &Store,
    source: &SessionId,
    options: &CopyOptions,
    force: bool,
    now_ms: i64,
) -> Result<SessionId, LineageError> {
    let record = store.session(source)?.ok_or(LineageError::NotFound)?;
    let me = store.local_owner()?;
    if is_mine(&record, me.as_ref()) {
        if !force {
            return Err(LineageError::OwnUseBranch(source.short()));
        }
    } else if record.visibility == Visibility::Private {
        return Err(LineageError::PrivateNotOwned);
    }
    copy(store, source, &record, me, options, now_ms)
}

/// What `branch` / `fork` of `source` with `options` would carry, for the secret gate's
/// `--dry-run` (SPEC.md §11.2): its shared messages and its record's texts. Nothing is
/// written.
pub fn scan_copy(
    store: &Store,
    source: &SessionId,
    options: &CopyOptions,
) -> Result<crate::share::gate::Findings, LineageError> {
    let record = store.session(source)?.ok_or(LineageError::NotFound)?;
    let chain = store.chain(&record.head)?;
    let count = chain.len() as u64;
    let at = options.at.unwrap_or(count);
    if at == 0 || at > count {
        return Err(LineageError::AtOutOfRange { at, count });
    }
    let mut texts = Vec::new();
    if let Some(title) = options.title.as_ref().or(record.title.as_ref()) {
        texts.push(("title", title.as_str()));
    }
    if let Some(description) = &options.description {
        texts.push(("description", description.as_str()));
    }
    let tags = if options.tags.is_empty() {
        &record.tags
    } else {
        &options.tags
    };
    for tag in tags {
        texts.push(("tag", tag.as_str()));
    }
    Ok(crate::share::gate::Findings {
        session: *source,
        nodes: crate::share::gate::scan_chain(source, &chain[..at as usize], 0),
        fields: crate::share::gate::scan_texts(source, "record", &texts),
    })
}

fn copy(
    store: &Store,
    source: &SessionId,
    record: &SessionRecord,
    me: Option<MemberId>,
    options: &CopyOptions,
    now_ms: i64,
) -> Result<SessionId, LineageError> {
    let chain = store.chain(&record.head)?;
    let count = chain.len() as u64;
    let at = options.at.unwrap_or(count);
    if at == 0 || at > count {
        return Err(LineageError::AtOutOfRange { at, count });
    }
    let shared = &chain[..at as usize];
    let base = shared[shared.len() - 1].0;
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| LineageError::Random(e.to_string()))?;
    let id = SessionId(raw);
    let new = SessionRecord {
        head: base,
        source: SessionSource {
            kind: "tapes".into(),
            id: id.to_hex(),
            path: String::new(),
        },
        title: options.title.clone().or_else(|| record.title.clone()),
        parent_session: None,
        summary: SessionSummary::of_chain(shared.iter().map(|(_, n)| n)),
        created_ms: now_ms,
        updated_ms: now_ms,
        owner: me,
        visibility: if options.private {
            Visibility::Private
        } else {
            record.visibility
        },
        tags: if options.tags.is_empty() {
            record.tags.clone()
        } else {
            options.tags.clone()
        },
        description: options.description.clone(),
        note: None,
        expires_ms: None,
        lineage: Lineage {
            root: record.lineage.root,
            parent: Some(*source),
            base_count: at,
            base_digest: Some(base),
        },
    };
    let update = crate::store::backend::RefUpdate {
        key: crate::session::session_ref_key(&id),
        expected: None,
        new: Some(new.encode()),
    };
    store.commit(&[], &[update])?;
    Ok(id)
}
