//! Metadata-only sharing (SPEC.md §11.4): the summary a metadata-only share carries instead of
//! the session's content, and the per-project content policy (`sync.content.<project>`).
//!
//! * [`summarize`] makes the summary of one of our sessions: counts, tokens, cost (at this
//!   home's prices), status, duration, model, project (its name only, §11.3), the title, and
//!   the first prompt only when asked. It is signed and attached to the share record by
//!   [`crate::share::share_metadata_only`].
//! * [`ContentPolicy`]: `tapes config set sync.content.<project> none` keeps a project's content
//!   on this machine: sharing one of its sessions shares the summary only, and push and bundle
//!   refuse it ([`check_may_leave`]).
//! * [`withheld`]: whether a serving node keeps a session's content back for an audience (its
//!   share is metadata-only, or its project's content stays here). The sync view
//!   (`share::access`) and relay deposits ask it before any node travels.

use tapes_protocol::signed::{Audience, ShareRecord};
use tapes_protocol::summary::ShareSummary;
use tapes_protocol::SessionId;

use crate::session::pricing::PriceTable;
use crate::session::SessionRecord;
use crate::store::{Store, StoreError};

/// The prefix of the per-project content settings: `sync.content.<project>`.
pub const CONTENT_SETTING: &str = "sync.content.";

/// Whether a project's session content may leave this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentPolicy {
    /// Content travels to the audiences it is shared with (the default).
    #[default]
    Team,
    /// Content never leaves this machine; shares carry the summary only.
    None,
}

impl ContentPolicy {
    /// The values `sync.content.<project>` takes.
    pub fn parse(value: &str) -> Option<ContentPolicy> {
        match value {
            "team" => Some(ContentPolicy::Team),
            "none" => Some(ContentPolicy::None),
            _ => None,
        }
    }

    /// The policy of `project` (unset or unknown: `team`). The setting names the project as
    /// listings show it; a project recorded as a path matches by its last component too.
    pub fn of_project(store: &Store, project: &str) -> Result<ContentPolicy, StoreError> {
        let name = crate::share::outgoing::project_name(project);
        for candidate in [project, name] {
            if candidate.is_empty() {
                continue;
            }
            let key = crate::store::keys::config(&format!("{CONTENT_SETTING}{candidate}"));
            if let Some(raw) = store.storage().get_ref(&key)? {
                return Ok(
                    ContentPolicy::parse(String::from_utf8_lossy(&raw).trim()).unwrap_or_default()
                );
            }
        }
        Ok(ContentPolicy::Team)
    }
}

/// Refused because a project's content stays on this machine.
#[derive(Debug, Clone, thiserror::Error)]
#[error("session {session} is in project {project}, whose content never leaves this machine (sync.content.{project} = none); nothing was sent. `tapes share {session} --metadata-only` lets teammates see its summary; `tapes config set sync.content.{project} team` lets its content travel")]
pub struct ContentStaysHere {
    pub session: String,
    pub project: String,
}

/// Refuses a session whose project keeps its content here (push, bundle, export to a peer).
pub fn check_may_leave(
    store: &Store,
    id: &SessionId,
    record: &SessionRecord,
) -> Result<Result<(), ContentStaysHere>, StoreError> {
    Ok(
        match ContentPolicy::of_project(store, &record.summary.project)? {
            ContentPolicy::Team => Ok(()),
            ContentPolicy::None => Err(ContentStaysHere {
                session: id.short(),
                project: crate::share::outgoing::project_name(&record.summary.project).to_string(),
            }),
        },
    )
}

/// Whether this node keeps the content of `session` back from `audience`: its share record
/// there is metadata-only, or it is one of ours and its project's content stays here.
pub fn withheld(
    store: &Store,
    session: &SessionId,
    audience: &Audience,
) -> Result<bool, StoreError> {
    let audience_key = match audience {
        Audience::Team(t) => t.to_hex(),
        Audience::Public => "public".into(),
    };
    if let Some(raw) = store
        .storage()
        .get_ref(&crate::store::keys::share(session, &audience_key))?
    {
        if tapes_protocol::summary::has_tail(&raw) {
            return Ok(true);
        }
    }
    let Some(record) = store.session(session)? else {
        return Ok(false);
    };
    let mine = record.owner.is_none() || record.owner == store.local_owner()?;
    Ok(mine && ContentPolicy::of_project(store, &record.summary.project)? == ContentPolicy::None)
}

/// The summary of our session `record` for the share `share` (SPEC.md §11.4).
pub fn summarize(
    store: &Store,
    record: &SessionRecord,
    share: &ShareRecord,
    prices: &PriceTable,
    with_first_prompt: bool,
) -> Result<ShareSummary, StoreError> {
    let chain = store.chain(&record.head)?;
    let status = crate::session::status::derive(chain.iter().map(|(_, node)| node));
    let mut cost = 0.0;
    let mut priced = false;
    for (_, node) in &chain {
        if let Some(usage) = node.meta.usage {
            if let Some(c) = prices.cost(&node.body.model, &usage) {
                cost += c;
                priced = true;
            }
        }
    }
    let s = &record.summary;
    let paths = crate::share::outgoing::PathPolicy::load(store)?;
    let outgoing = crate::share::outgoing::record(record, paths);
    Ok(ShareSummary {
        session: share.session,
        head: share.head,
        audience: share.audience,
        sharer: share.sharer,
        shared_ms: share.shared_ms,
        title: share.title.clone(),
        project: outgoing.summary.project,
        agent: s.agent.clone(),
        model: s.model.clone(),
        messages: s.messages,
        usage: s.usage,
        cost_micro_usd: priced.then(|| (cost * 1_000_000.0).round() as u64),
        status: status.as_str().to_string(),
        started_ms: s.started_ms,
        ended_ms: s.ended_ms,
        first_prompt: with_first_prompt.then(|| s.first_prompt.clone()),
    })
}
