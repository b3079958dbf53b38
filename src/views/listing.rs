//! The data behind every view of sessions: `tapes sessions`, `tapes shared`, `tapes deck` and
//! `tapes web` read the same rows (SPEC.md §3.2 records, §10 lineage, §11 shares, §13 derived
//! facts). Views read the store; they never change a session.
//!
//! A [`Snapshot`] is read once (every session record, every share record, the teams and their
//! members' names, and per session its status and cost) and then answers the three views
//! without touching the store again:
//!
//! - [`Snapshot::my_sessions`]: sessions this store's identity owns;
//! - [`Snapshot::shared_with_me`]: live shares by others to my teams or the public, one row per
//!   session, newest share first (SPEC.md §11.1);
//! - [`Snapshot::team`]: sessions of my teams' members and sessions shared with my teams;
//!   [`dashboard::team_dashboard`] adds the totals, trends and breakdowns of
//!   [`crate::views::stats`].
//!
//! `tapes sessions` itself does not build a [`Listing`]: [`sessions`] streams its table from
//! compact rows, reading the facts of the rows it shows only.
//!
//! Each is a [`Listing`]: rows plus, per row, a lowercase haystack of its words and its
//! lowercase fields, so a [`Filter`] (the filter bar, [`filter`]) is applied with no store read
//! and no allocation per row — typing stays under a frame at 100,000 sessions, and
//! [`Listing::narrow`] filters only the previous matches when the new text narrows the old.
//!
//! A row's title is the session's title (for Claude Code sessions, the transcript's summary),
//! else the share's title, else the record's description, else the first prompt. Status and
//! cost come from the search index's facts when it has indexed the session's current head
//! ([`Facts::Index`]), from reading each chain ([`Facts::Chains`], exact but slow on a big
//! store), or from the record's summary alone ([`Facts::Summaries`]: cost from the summed usage
//! at the last model's price, status unknown).

pub mod dashboard;
pub mod filter;
pub mod graph;
pub mod sessions;
pub mod text;
pub mod when;

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tapes_protocol::{MemberId, Node, NodeId, SessionId, TeamId};

use crate::session::lineage::is_mine;
use crate::session::pricing::PriceTable;
use crate::session::status::Status;
use crate::session::{SessionRecord, Visibility};
use crate::share::{self, Audience, ShareError, SignedShare};
use crate::store::{Store, StoreError};
use crate::team::{self, TeamError};
use crate::views::search::{SearchIndex, SessionFacts};

pub use dashboard::{team_dashboard, Dashboard};
pub use filter::{CostRange, Filter, FilterError, Flag, VisibilityKind};
pub use graph::{lineage_graph, EdgeKind, GraphEdge, GraphNode, LineageGraph};
pub use when::{group_of, grouped, local_offset_secs, relative, Group};

/// Why a view could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Agent(#[from] crate::session::AgentFilterError),
    #[error(
        "cannot write the list: {0}; check where the output goes (a full disk, a closed pipe)"
    )]
    Write(#[source] std::io::Error),
    #[error("session {id} is no longer in this store (it was removed or replaced after the list was read); reload the list")]
    Gone { id: String },
    #[error("session {id} is shared with you but not in this store yet; `tapes storage sync` fetches what your teams share")]
    NotFetched { id: String },
}

/// Where status and cost come from (see the module documentation).
#[derive(Clone, Copy)]
pub enum Facts<'a> {
    /// The search index's facts (call [`SearchIndex::sync`] first); sessions it has not
    /// indexed at their current head fall back to summaries.
    Index(&'a SearchIndex),
    /// Read every chain: exact, for small stores and tests.
    Chains,
    /// The record's summary only: no status, cost at the last model's price.
    Summaries,
}

/// Who may see a session, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Shown {
    Private,
    Team { id: TeamId, name: String },
    Public,
}

impl Shown {
    /// `private`, the team's name, or `public`.
    pub fn label(&self) -> &str {
        match self {
            Shown::Private => "private",
            Shown::Team { name, .. } => name,
            Shown::Public => "public",
        }
    }

    pub fn kind(&self) -> VisibilityKind {
        match self {
            Shown::Private => VisibilityKind::Private,
            Shown::Team { .. } => VisibilityKind::Team,
            Shown::Public => VisibilityKind::Public,
        }
    }
}

/// Where the title of a row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TitleFrom {
    /// The session's title (a Claude Code transcript's summary, or one given to branch/fork).
    Title,
    /// The title its sharer gave the share.
    Share,
    /// The record's description (`--summary` of branch/fork).
    Description,
    FirstPrompt,
    /// Nothing to show: `(no prompt)`.
    Nothing,
}

/// Whether a session with a parent was branched (same owner) or forked (another owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    Branch,
    Fork,
    /// The parent is not in this store, so whose it was is not known.
    Copy,
}

impl OriginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::Branch => "branch",
            OriginKind::Fork => "fork",
            OriginKind::Copy => "copy",
        }
    }
}

/// A branch's or fork's parent and base (SPEC.md §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub kind: OriginKind,
    pub parent: SessionId,
    /// How many messages it shares with the parent (it starts after message `base_count`).
    pub base_count: u64,
    pub base: Option<NodeId>,
    pub root: SessionId,
}

/// How a session reached me (rows of [`Snapshot::shared_with_me`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShareInfo {
    pub sharer: MemberId,
    pub sharer_name: String,
    pub shared_ms: i64,
    pub expires_ms: Option<i64>,
    pub audience: Shown,
    pub title: Option<String>,
    pub note: Option<String>,
    pub unread: bool,
}

/// One session in a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    pub id: SessionId,
    pub title: String,
    pub title_from: TitleFrom,
    /// The session's record is in this store (a shared session may not be fetched yet; then
    /// only the share's fields are known).
    pub present: bool,
    pub project: String,
    pub agent: String,
    /// The model of the last assistant message.
    pub model: String,
    /// Every model that reported usage.
    pub models: Vec<String>,
    pub owner: Option<MemberId>,
    /// `you`, the member's name in a team manifest, or the key's short form.
    pub owner_name: String,
    pub mine: bool,
    pub visibility: Shown,
    /// `None` when not derived (see [`Facts::Summaries`]).
    pub status: Option<Status>,
    /// USD; `None` when unknown (not fetched).
    pub cost: Option<f64>,
    pub unpriced: Vec<String>,
    pub tokens: u64,
    pub messages: u64,
    /// First message (record creation when no message has a time).
    pub started_ms: i64,
    /// Last message (last record change when no message has a time).
    pub updated_ms: i64,
    pub duration_ms: Option<i64>,
    pub note: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub first_prompt: String,
    pub origin: Option<Origin>,
    /// The session that spawned this one (a subagent's parent).
    pub spawned_by: Option<SessionId>,
    pub share: Option<ShareInfo>,
}

impl SessionRow {
    /// The time the views sort, group and filter by: when it was shared with me for a shared
    /// row, else when it started.
    pub fn when_ms(&self) -> i64 {
        self.share.as_ref().map_or(self.started_ms, |s| s.shared_ms)
    }

    /// The owner, or for a shared row the sharer: who a teammate filter names.
    pub fn who(&self) -> &str {
        match &self.share {
            Some(s) => &s.sharer_name,
            None => &self.owner_name,
        }
    }
}

/// The lowercased words of a row (see [`filter::push_words`]): all of them for free text, and
/// the project's, the models' and the people's for field filters. A field filter is a phrase
/// of word prefixes, so every check is one substring search.
#[derive(Debug, Clone)]
struct Keys {
    hay: String,
    project: String,
    /// Each model's words, models separated by a newline (a phrase never spans two).
    models: String,
    /// The owner's and the sharer's words, separated likewise.
    people: String,
}

impl Keys {
    fn of(row: &SessionRow) -> Keys {
        let mut hay = String::with_capacity(256);
        let p = filter::push_words;
        p(&mut hay, &row.id.to_hex());
        p(&mut hay, &row.title);
        if row.first_prompt != row.title {
            p(&mut hay, &row.first_prompt);
        }
        p(&mut hay, &row.project);
        p(&mut hay, &row.agent);
        for m in std::iter::once(&row.model).chain(&row.models) {
            p(&mut hay, m);
        }
        p(&mut hay, &row.owner_name);
        p(&mut hay, row.visibility.label());
        if let Some(s) = row.status {
            p(&mut hay, s.as_str());
        }
        for text in [&row.note, &row.description].into_iter().flatten() {
            p(&mut hay, text);
        }
        for tag in &row.tags {
            p(&mut hay, tag);
        }
        if let Some(o) = &row.origin {
            p(&mut hay, o.kind.as_str());
        }
        let mut people = String::new();
        p(&mut people, &row.owner_name);
        if let Some(s) = &row.share {
            p(&mut hay, &s.sharer_name);
            for text in [&s.title, &s.note].into_iter().flatten() {
                p(&mut hay, text);
            }
            people.push('\n');
            p(&mut people, &s.sharer_name);
        }
        let mut models = String::new();
        for m in std::iter::once(&row.model).chain(&row.models) {
            p(&mut models, m);
            models.push('\n');
        }
        let mut project = String::new();
        p(&mut project, &row.project);
        hay.shrink_to_fit();
        Keys {
            hay,
            project,
            models,
            people,
        }
    }
}

/// `" word1 word2"`: what a field filter looks for in a row's words.
fn phrase(prefix: &str) -> String {
    let mut out = String::new();
    filter::push_words(&mut out, prefix);
    if out.is_empty() {
        out.push(' ');
    }
    out
}

/// A filter ready to run: its needles built once.
struct Compiled<'a> {
    filter: &'a Filter,
    words: Vec<String>,
    project: Vec<String>,
    model: Vec<String>,
    teammate: Vec<String>,
}

impl<'a> Compiled<'a> {
    fn new(filter: &'a Filter) -> Compiled<'a> {
        let all = |list: &[String]| list.iter().map(|p| phrase(p)).collect();
        Compiled {
            filter,
            words: filter.words.iter().map(|w| format!(" {w}")).collect(),
            project: all(&filter.project),
            model: all(&filter.model),
            teammate: all(&filter.teammate),
        }
    }

    fn accepts(&self, row: &SessionRow, keys: &Keys) -> bool {
        let f = self.filter;
        if f.status.is_some() && f.status != row.status {
            return false;
        }
        let when = row.when_ms();
        if f.from_ms.is_some_and(|from| when < from) || f.to_ms.is_some_and(|to| when >= to) {
            return false;
        }
        if let Some(range) = &f.cost {
            if !row.cost.is_some_and(|c| range.contains(c)) {
                return false;
            }
        }
        if f.visibility.is_some_and(|v| v != row.visibility.kind()) {
            return false;
        }
        let has = |hay: &str, needles: &[String]| needles.iter().all(|n| hay.contains(n.as_str()));
        if !has(&keys.project, &self.project)
            || !has(&keys.models, &self.model)
            || !has(&keys.people, &self.teammate)
        {
            return false;
        }
        for flag in &f.flags {
            let ok = match flag {
                Flag::Unread => row.share.as_ref().is_some_and(|s| s.unread),
                Flag::Mine => row.mine,
                Flag::Branch => row
                    .origin
                    .as_ref()
                    .is_some_and(|o| o.kind == OriginKind::Branch),
                Flag::Fork => row
                    .origin
                    .as_ref()
                    .is_some_and(|o| o.kind == OriginKind::Fork),
            };
            if !ok {
                return false;
            }
        }
        has(&keys.hay, &self.words)
    }
}

/// Rows of one view, ready to filter.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    rows: Vec<SessionRow>,
    keys: Vec<Keys>,
    /// Names a teammate filter may start: members of the teams here, owners and sharers.
    people: Vec<String>,
}

impl Listing {
    /// A listing of `rows` as given (the views sort them first).
    pub fn new(rows: Vec<SessionRow>, people: Vec<String>) -> Listing {
        let keys = rows.iter().map(Keys::of).collect();
        let mut people: Vec<String> = people
            .into_iter()
            .chain(rows.iter().map(|r| r.owner_name.clone()))
            .chain(
                rows.iter()
                    .filter_map(|r| r.share.as_ref().map(|s| s.sharer_name.clone())),
            )
            .filter(|n| !n.is_empty())
            .collect();
        people.sort_by_key(|n| n.to_lowercase());
        people.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        Listing { rows, keys, people }
    }

    pub fn rows(&self) -> &[SessionRow] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&SessionRow> {
        self.rows.get(index)
    }

    /// The row of a session, by id.
    pub fn find(&self, id: &SessionId) -> Option<&SessionRow> {
        self.rows.iter().find(|r| r.id == *id)
    }

    /// The names a `teammate:` filter can start (sorted, case-insensitively distinct).
    pub fn people(&self) -> &[String] {
        &self.people
    }

    /// Distinct non-empty projects, sorted.
    pub fn projects(&self) -> Vec<String> {
        distinct(self.rows.iter().map(|r| r.project.as_str()))
    }

    /// Distinct models used, sorted.
    pub fn models(&self) -> Vec<String> {
        distinct(self.rows.iter().flat_map(|r| {
            std::iter::once(r.model.as_str()).chain(r.models.iter().map(String::as_str))
        }))
    }

    /// Checks what a filter names against this listing: a `teammate:` that nobody here has
    /// is an error listing who is here (a project or word that matches nothing is just an
    /// empty result).
    pub fn check(&self, filter: &Filter) -> Result<(), FilterError> {
        for wanted in &filter.teammate {
            let known = self
                .people
                .iter()
                .any(|p| filter::field_matches(&p.to_lowercase(), wanted));
            if !known {
                return Err(FilterError::UnknownTeammate {
                    name: wanted.clone(),
                    known: self.people.clone(),
                });
            }
        }
        Ok(())
    }

    /// Indices of the rows `filter` accepts, in listing order.
    pub fn matching(&self, filter: &Filter) -> Vec<usize> {
        if filter.is_empty() {
            return (0..self.rows.len()).collect();
        }
        let compiled = Compiled::new(filter);
        (0..self.rows.len())
            .filter(|&i| compiled.accepts(&self.rows[i], &self.keys[i]))
            .collect()
    }

    /// Indices among `within` that `filter` accepts: use with the previous matches when
    /// `filter.narrows(previous filter)`.
    pub fn narrow(&self, filter: &Filter, within: &[usize]) -> Vec<usize> {
        let compiled = Compiled::new(filter);
        within
            .iter()
            .copied()
            .filter(|&i| i < self.rows.len() && compiled.accepts(&self.rows[i], &self.keys[i]))
            .collect()
    }

    /// Whether row `index` is accepted by `filter`.
    pub fn accepts(&self, index: usize, filter: &Filter) -> bool {
        match (self.rows.get(index), self.keys.get(index)) {
            (Some(row), Some(keys)) => Compiled::new(filter).accepts(row, keys),
            _ => false,
        }
    }
}

/// A filter applied as someone types: keeps the last filter and its matches, and filters only
/// those again when the new text narrows the old one.
#[derive(Debug, Clone, Default)]
pub struct LiveFilter {
    filter: Filter,
    hits: Option<Vec<usize>>,
}

impl LiveFilter {
    /// Applies `filter` to `listing`, reusing the previous matches when possible.
    pub fn apply(&mut self, listing: &Listing, filter: Filter) -> &[usize] {
        let hits = match self.hits.take() {
            Some(previous) if filter.narrows(&self.filter) => listing.narrow(&filter, &previous),
            _ => listing.matching(&filter),
        };
        self.filter = filter;
        self.hits.insert(hits)
    }

    /// Forgets the previous matches (after the listing changed).
    pub fn reset(&mut self) {
        self.hits = None;
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }
}

fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut set: Vec<String> = values
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    set.sort();
    set
}

/// A team this store knows, with its members.
#[derive(Debug, Clone, Serialize)]
pub struct TeamInfo {
    pub id: TeamId,
    pub name: String,
    /// Everyone who was ever a member (so history stays attributed after someone leaves).
    pub members: Vec<MemberId>,
    /// Members now (whose shares to the team count).
    pub current: Vec<MemberId>,
    /// This store's identity is a member now.
    pub mine: bool,
}

/// Status, cost and usage of one session.
#[derive(Debug, Clone, Default)]
struct Derived {
    status: Option<Status>,
    cost: f64,
    unpriced: Vec<String>,
    tokens: u64,
    models: Vec<String>,
}

impl Derived {
    fn of_facts(facts: &SessionFacts, prices: &PriceTable, cache: &mut PriceCache) -> Derived {
        let (cost, unpriced) = facts.cost_cached(prices, cache);
        Derived {
            status: Some(facts.status),
            cost,
            unpriced,
            tokens: facts.tokens(),
            models: facts
                .usage
                .keys()
                .filter(|m| !m.is_empty())
                .cloned()
                .collect(),
        }
    }

    /// Status, cost and usage of session `id` (its `record`) as `facts` give them: from the
    /// index when it holds the record's head, from the chain, or from the record's summary
    /// (also when the chain cannot be read, which is logged).
    pub(crate) fn derive(
        facts: Facts<'_>,
        store: &Store,
        id: &SessionId,
        record: &SessionRecord,
        prices: &PriceTable,
        cache: &mut PriceCache,
    ) -> Derived {
        match facts {
            Facts::Index(index) => match index.facts(id) {
                Some(f) if f.head == record.head => Derived::of_facts(f, prices, cache),
                _ => Derived::of_summary(record, prices),
            },
            Facts::Chains => match store.chain(&record.head) {
                Ok(chain) => {
                    Derived::of_facts(&SessionFacts::of_chain(record, &chain), prices, cache)
                }
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "cannot read the chain; showing the summary");
                    Derived::of_summary(record, prices)
                }
            },
            Facts::Summaries => Derived::of_summary(record, prices),
        }
    }

    fn of_summary(record: &SessionRecord, prices: &PriceTable) -> Derived {
        let s = &record.summary;
        Derived::of_usage(&s.model, &s.usage, prices)
    }

    /// From a summary's last model and summed usage (see [`Derived::of_summary`]).
    fn of_usage(model: &str, usage: &tapes_protocol::Usage, prices: &PriceTable) -> Derived {
        let (cost, unpriced) = match prices.cost(model, usage) {
            Some(c) => (c, Vec::new()),
            None if usage.is_zero() => (0.0, Vec::new()),
            None => (
                0.0,
                vec![if model.is_empty() {
                    "(no model)".into()
                } else {
                    model.to_string()
                }],
            ),
        };
        Derived {
            status: None,
            cost,
            unpriced,
            tokens: usage.total(),
            models: if model.is_empty() {
                Vec::new()
            } else {
                vec![model.to_string()]
            },
        }
    }
}

/// `tapes show`'s line about a shared session's `view_count` (SPEC.md §18.4): how often
/// teammates fetched it, by the audit logs held here; `None` for a session never shared with a
/// team and never fetched.
pub fn view_count_line(store: &Store, id: &SessionId) -> Result<Option<String>, ListingError> {
    let n = crate::audit::view_count(store, id)?;
    let shared = share::shares_of(store, id)?
        .iter()
        .any(|(_, s)| matches!(s.record.audience, Audience::Team(_)));
    Ok((shared || n > 0).then(|| {
        format!(
            "views: {} by teammates (`tapes audit --session {}` lists who and when)",
            n,
            id.short()
        )
    }))
}

/// The row of a session shared with me as metadata only: its fields from the signed summary
/// (SPEC.md §11.4); `present` is false, since no message of it is here.
fn summary_row(sum: &tapes_protocol::summary::ShareSummary, info: ShareInfo) -> SessionRow {
    let prompt = sum.first_prompt.clone().unwrap_or_default();
    let (title, title_from) = match sum.title.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => (t.to_string(), TitleFrom::Share),
        _ if !prompt.trim().is_empty() => (prompt.clone(), TitleFrom::FirstPrompt),
        _ => (
            "(metadata only: content not shared)".to_string(),
            TitleFrom::Nothing,
        ),
    };
    let started = sum.started_ms.unwrap_or(info.shared_ms);
    SessionRow {
        id: sum.session,
        title,
        title_from,
        present: false,
        project: sum.project.clone(),
        agent: sum.agent.clone(),
        model: sum.model.clone(),
        models: if sum.model.is_empty() {
            Vec::new()
        } else {
            vec![sum.model.clone()]
        },
        owner: Some(sum.sharer),
        owner_name: info.sharer_name.clone(),
        mine: false,
        visibility: info.audience.clone(),
        status: Status::parse(&sum.status).ok(),
        cost: sum.cost_usd(),
        unpriced: Vec::new(),
        tokens: sum.usage.total(),
        messages: sum.messages,
        started_ms: started,
        updated_ms: sum.ended_ms.unwrap_or(started).max(started),
        duration_ms: sum.duration_ms(),
        note: info.note.clone(),
        description: None,
        tags: Vec::new(),
        first_prompt: prompt,
        origin: None,
        spawned_by: None,
        share: Some(info),
    }
}

/// Everything the views show, read once.
pub struct Snapshot {
    pub now_ms: i64,
    /// This store's identity.
    pub me: Option<MemberId>,
    /// Member names from every team manifest this store holds.
    pub names: HashMap<MemberId, String>,
    pub teams: Vec<TeamInfo>,
    sessions: Vec<(SessionId, SessionRecord)>,
    index: HashMap<SessionId, usize>,
    derived: Vec<Derived>,
    shares: Vec<SignedShare>,
    /// Read markers of the shares with me.
    read: HashSet<(SessionId, Audience)>,
    /// Summaries of metadata-only shares (SPEC.md §11.4), by session and audience.
    summaries: HashMap<(SessionId, Audience), tapes_protocol::summary::ShareSummary>,
}

/// Prices looked up so far, by model: a listing prices each model once.
pub(crate) type PriceCache = HashMap<String, Option<crate::session::pricing::Price>>;

impl Snapshot {
    /// Rebuilds the index of `sessions` by id (after they were set or added to).
    pub(crate) fn reindex(&mut self) {
        self.index = self
            .sessions
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
    }

    /// Reads every session, share and team of `store`.
    pub fn load(
        store: &Store,
        facts: Facts<'_>,
        prices: &PriceTable,
        now_ms: i64,
    ) -> Result<Snapshot, ListingError> {
        let mut snapshot = Snapshot::empty(store, now_ms)?;
        let sessions = store.sessions()?;
        let mut derived = Vec::with_capacity(sessions.len());
        let mut cache = HashMap::new();
        for (id, record) in &sessions {
            derived.push(Derived::derive(
                facts, store, id, record, prices, &mut cache,
            ));
        }
        snapshot.sessions = sessions;
        snapshot.reindex();
        snapshot.derived = derived;
        snapshot.shares = share::all_shares(store)?;
        snapshot.summaries = share::all_summaries(store)?
            .into_iter()
            .map(|s| ((s.summary.session, s.summary.audience), s.summary))
            .collect();
        let mut read = HashSet::new();
        for s in snapshot.live_shares_with_me() {
            if share::is_read(store, &s.record)? {
                read.insert((s.record.session, s.record.audience));
            }
        }
        snapshot.read = read;
        Ok(snapshot)
    }

    /// A snapshot with the teams and names but no sessions or shares yet.
    fn empty(store: &Store, now_ms: i64) -> Result<Snapshot, ListingError> {
        let me = store.local_owner()?;
        let mut names = HashMap::new();
        let mut teams = Vec::new();
        for chain in team::list(store)? {
            let mut members = Vec::new();
            for version in chain.versions() {
                for m in &version.manifest.members {
                    names.insert(m.id, m.name.clone());
                    if !members.contains(&m.id) {
                        members.push(m.id);
                    }
                }
            }
            let head = &chain.head().manifest;
            teams.push(TeamInfo {
                id: chain.team_id(),
                name: head.name.clone(),
                members,
                current: head.members.iter().map(|m| m.id).collect(),
                mine: me.is_some_and(|me| head.member(&me).is_some()),
            });
        }
        Ok(Snapshot {
            now_ms,
            me,
            names,
            teams,
            sessions: Vec::new(),
            index: HashMap::new(),
            derived: Vec::new(),
            shares: Vec::new(),
            read: HashSet::new(),
            summaries: HashMap::new(),
        })
    }

    /// The record of a session, as read.
    pub fn record(&self, id: &SessionId) -> Option<&SessionRecord> {
        self.index.get(id).map(|&i| &self.sessions[i].1)
    }

    /// How many sessions the store holds.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn my_team_ids(&self) -> Vec<TeamId> {
        self.teams.iter().filter(|t| t.mine).map(|t| t.id).collect()
    }

    /// Shares by others, live now, to a team I am in (the sharer a member of it now: the
    /// signature proves who shared, the team's verified manifest that they may) or public.
    fn live_shares_with_me(&self) -> Vec<&SignedShare> {
        let mine = self.my_team_ids();
        self.shares
            .iter()
            .filter(|s| Some(s.record.sharer) != self.me && s.is_live(self.now_ms))
            .filter(|s| match s.record.audience {
                Audience::Public => true,
                Audience::Team(t) => {
                    mine.contains(&t)
                        && self
                            .teams
                            .iter()
                            .any(|team| team.id == t && team.current.contains(&s.record.sharer))
                }
            })
            .collect()
    }

    /// The display name of a member: `you` for this store's identity.
    pub fn name_of(&self, member: Option<MemberId>) -> String {
        let Some(id) = member.or(self.me) else {
            return "you".into();
        };
        if Some(id) == self.me {
            return "you".into();
        }
        match self.names.get(&id) {
            Some(name) if !name.is_empty() => name.clone(),
            _ => id.short(),
        }
    }

    fn shown(&self, visibility: &Visibility) -> Shown {
        match visibility {
            Visibility::Private => Shown::Private,
            Visibility::Public => Shown::Public,
            Visibility::Team(t) => Shown::Team {
                id: *t,
                name: self.team_name(t),
            },
        }
    }

    fn audience(&self, audience: &Audience) -> Shown {
        match audience {
            Audience::Public => Shown::Public,
            Audience::Team(t) => Shown::Team {
                id: *t,
                name: self.team_name(t),
            },
        }
    }

    /// A team's name, or its id's short form when this store does not hold it.
    pub fn team_name(&self, id: &TeamId) -> String {
        self.teams
            .iter()
            .find(|t| t.id == *id)
            .map_or_else(|| id.short(), |t| t.name.clone())
    }

    /// The row of a session in the store (`None` when it is not here).
    pub fn row(&self, id: &SessionId) -> Option<SessionRow> {
        let &i = self.index.get(id)?;
        Some(self.row_at(i))
    }

    fn row_at(&self, i: usize) -> SessionRow {
        self.row_with(i, &self.derived[i])
    }

    /// The row of session `i` with `d` as its status, cost and usage.
    fn row_with(&self, i: usize, d: &Derived) -> SessionRow {
        let (id, r) = &self.sessions[i];
        let s = &r.summary;
        let (title, title_from) = title_of(r, None);
        let origin = r.lineage.parent.map(|parent| {
            let kind = match self.record(&parent) {
                Some(p) if p.owner.or(self.me) == r.owner.or(self.me) => OriginKind::Branch,
                Some(_) => OriginKind::Fork,
                None => OriginKind::Copy,
            };
            Origin {
                kind,
                parent,
                base_count: r.lineage.base_count,
                base: r.lineage.base_digest,
                root: r.lineage.root,
            }
        });
        SessionRow {
            id: *id,
            title,
            title_from,
            present: true,
            project: s.project.clone(),
            agent: s.agent.clone(),
            model: s.model.clone(),
            models: d.models.clone(),
            owner: r.owner.or(self.me),
            owner_name: self.name_of(r.owner),
            mine: is_mine(r, self.me.as_ref()),
            visibility: self.shown(&r.visibility),
            status: d.status,
            cost: Some(d.cost),
            unpriced: d.unpriced.clone(),
            tokens: d.tokens,
            messages: s.messages,
            started_ms: s.started_ms.unwrap_or(r.created_ms),
            updated_ms: s
                .ended_ms
                .unwrap_or(r.updated_ms)
                .max(s.started_ms.unwrap_or(r.created_ms)),
            duration_ms: s.duration_ms(),
            note: r.note.clone(),
            description: r.description.clone(),
            tags: r.tags.clone(),
            first_prompt: s.first_prompt.clone(),
            origin,
            spawned_by: r.parent_session,
            share: None,
        }
    }

    fn people(&self) -> Vec<String> {
        self.names.values().cloned().collect()
    }

    /// Every session in the store, newest first (`tapes sessions`).
    pub fn all(&self) -> Listing {
        let rows = self.sorted_rows(|_| true);
        Listing::new(rows, self.people())
    }

    fn sorted_rows(&self, keep: impl Fn(&SessionRecord) -> bool) -> Vec<SessionRow> {
        let mut rows: Vec<SessionRow> = (0..self.sessions.len())
            .filter(|&i| keep(&self.sessions[i].1))
            .map(|i| self.row_at(i))
            .collect();
        rows.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(a.id.cmp(&b.id)));
        rows
    }

    /// Sessions this store's identity owns, newest first.
    pub fn my_sessions(&self) -> Listing {
        let me = self.me;
        let rows = self.sorted_rows(|r| is_mine(r, me.as_ref()));
        Listing::new(rows, self.people())
    }

    /// What is shared with me: one row per session (its newest live share), newest first.
    pub fn shared_with_me(&self) -> Listing {
        let mut newest: HashMap<SessionId, &SignedShare> = HashMap::new();
        for s in self.live_shares_with_me() {
            let slot = newest.entry(s.record.session).or_insert(s);
            if s.record.shared_ms > slot.record.shared_ms {
                *slot = s;
            }
        }
        let mut rows: Vec<SessionRow> = newest.into_values().map(|s| self.shared_row(s)).collect();
        rows.sort_by(|a, b| b.when_ms().cmp(&a.when_ms()).then(a.id.cmp(&b.id)));
        Listing::new(rows, self.people())
    }

    fn shared_row(&self, s: &SignedShare) -> SessionRow {
        let r = &s.record;
        let names = self.names.get(&r.sharer).filter(|n| !n.is_empty());
        let info = ShareInfo {
            sharer: r.sharer,
            sharer_name: if r.sharer_name.is_empty() {
                names.cloned().unwrap_or_else(|| r.sharer.short())
            } else {
                r.sharer_name.clone()
            },
            shared_ms: r.shared_ms,
            expires_ms: r.expires_ms,
            audience: self.audience(&r.audience),
            title: r.title.clone(),
            note: r.note.clone(),
            // My own shares are never news to me.
            unread: Some(r.sharer) != self.me && !self.read.contains(&(r.session, r.audience)),
        };
        match self.index.get(&r.session) {
            Some(&i) => {
                let mut row = self.row_at(i);
                let record = &self.sessions[i].1;
                (row.title, row.title_from) = title_of(record, r.title.as_deref());
                if row.note.is_none() {
                    row.note = r.note.clone();
                }
                row.share = Some(info);
                row
            }
            None if self.summaries.contains_key(&(r.session, r.audience)) => {
                let sum = &self.summaries[&(r.session, r.audience)];
                summary_row(sum, info)
            }
            None => {
                let (title, title_from) = match r.title.as_deref().map(str::trim) {
                    Some(t) if !t.is_empty() => (t.to_string(), TitleFrom::Share),
                    _ => ("(not fetched yet)".to_string(), TitleFrom::Nothing),
                };
                SessionRow {
                    id: r.session,
                    title,
                    title_from,
                    present: false,
                    project: String::new(),
                    agent: String::new(),
                    model: String::new(),
                    models: Vec::new(),
                    owner: Some(r.sharer),
                    owner_name: info.sharer_name.clone(),
                    mine: false,
                    visibility: info.audience.clone(),
                    status: None,
                    cost: None,
                    unpriced: Vec::new(),
                    tokens: 0,
                    messages: 0,
                    started_ms: r.shared_ms,
                    updated_ms: r.shared_ms,
                    duration_ms: None,
                    note: r.note.clone(),
                    description: None,
                    tags: Vec::new(),
                    first_prompt: String::new(),
                    origin: None,
                    spawned_by: None,
                    share: Some(info),
                }
            }
        }
    }

    /// Whether `session` reached this store as a metadata-only share (its content was not
    /// shared; SPEC.md §11.4).
    pub fn is_metadata_only(&self, session: &SessionId) -> bool {
        !self.index.contains_key(session) && self.summaries.keys().any(|(id, _)| id == session)
    }

    /// Sessions of a team: owned by anyone who was ever its member, or shared with it;
    /// `team == None`: every team I am in. Newest first.
    pub fn team(&self, team: Option<&TeamId>) -> Listing {
        let teams: Vec<&TeamInfo> = self
            .teams
            .iter()
            .filter(|t| match team {
                Some(id) => t.id == *id,
                None => t.mine,
            })
            .collect();
        let members: HashSet<MemberId> = teams
            .iter()
            .flat_map(|t| t.members.iter().copied())
            .collect();
        let ids: HashSet<TeamId> = teams.iter().map(|t| t.id).collect();
        let shared: HashSet<SessionId> = self
            .shares
            .iter()
            .filter(|s| s.is_live(self.now_ms))
            .filter(|s| matches!(s.record.audience, Audience::Team(t) if ids.contains(&t)))
            .map(|s| s.record.session)
            .collect();
        let me = self.me;
        let mut rows: Vec<SessionRow> = (0..self.sessions.len())
            .filter(|&i| {
                let (id, r) = &self.sessions[i];
                r.owner.or(me).is_some_and(|o| members.contains(&o))
                    || matches!(r.visibility, Visibility::Team(t) if ids.contains(&t))
                    || shared.contains(id)
            })
            .map(|i| self.row_at(i))
            .collect();
        rows.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(a.id.cmp(&b.id)));
        Listing::new(rows, self.people())
    }

    /// Live shares to my teams (by anyone, me included), newest first: the dashboard's
    /// "recent shares".
    pub fn team_shares(&self, limit: usize) -> Vec<SessionRow> {
        let mine = self.my_team_ids();
        let mut shares: Vec<&SignedShare> = self
            .shares
            .iter()
            .filter(|s| s.is_live(self.now_ms))
            .filter(|s| matches!(s.record.audience, Audience::Team(t) if mine.contains(&t)))
            .collect();
        shares.sort_by_key(|s| std::cmp::Reverse(s.record.shared_ms));
        shares
            .into_iter()
            .take(limit)
            .map(|s| self.shared_row(s))
            .collect()
    }
}

/// A row's title and where it came from (see the module documentation).
pub fn title_of(record: &SessionRecord, share_title: Option<&str>) -> (String, TitleFrom) {
    // Runs of whitespace become one space (one allocation: every record of a big store
    // passes here when it is listed).
    let clean = |s: Option<&str>| {
        let s = s?;
        let mut out = String::with_capacity(s.len());
        for word in s.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
        (!out.is_empty()).then_some(out)
    };
    if let Some(t) = clean(record.title.as_deref()) {
        return (t, TitleFrom::Title);
    }
    if let Some(t) = clean(share_title) {
        return (t, TitleFrom::Share);
    }
    if let Some(t) = clean(record.description.as_deref()) {
        return (t, TitleFrom::Description);
    }
    if let Some(t) = clean(Some(record.summary.first_prompt.as_str())) {
        return (t, TitleFrom::FirstPrompt);
    }
    ("(no prompt)".into(), TitleFrom::Nothing)
}

/// The row of one session for `tapes show`: like a [`Snapshot`] row, but reading only this
/// session, its parent, the teams and the session's shares (`chain` is its chain, root first,
/// for status and cost).
pub fn describe(
    store: &Store,
    id: &SessionId,
    chain: &[(NodeId, Node)],
    prices: &PriceTable,
    now_ms: i64,
) -> Result<SessionRow, ListingError> {
    let record = store
        .session(id)?
        .ok_or_else(|| ListingError::Gone { id: id.short() })?;
    let mut snapshot = Snapshot::empty(store, now_ms)?;
    let derived = Derived::of_facts(
        &SessionFacts::of_chain(&record, chain),
        prices,
        &mut HashMap::new(),
    );
    let parent = record.lineage.parent;
    snapshot.sessions.push((*id, record));
    snapshot.derived.push(derived);
    if let Some(parent) = parent {
        if let Some(p) = store.session(&parent)? {
            snapshot.sessions.push((parent, p));
            snapshot.derived.push(Derived::default());
        }
    }
    snapshot.reindex();
    snapshot.shares = share::shares_of(store, id)?
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let mut row = snapshot.row_at(0);
    if let Some(s) = snapshot
        .live_shares_with_me()
        .into_iter()
        .max_by_key(|s| s.record.shared_ms)
    {
        let shared = snapshot.shared_row(s);
        row.share = shared.share;
        if row.note.is_none() {
            row.note = shared.note;
        }
    }
    Ok(row)
}

/// The ids of the sessions shared with me now (for `tapes search --shared`).
pub fn shared_ids(store: &Store, now_ms: i64) -> Result<HashSet<SessionId>, ListingError> {
    let mut snapshot = Snapshot::empty(store, now_ms)?;
    snapshot.shares = share::all_shares(store)?;
    Ok(snapshot
        .live_shares_with_me()
        .into_iter()
        .map(|s| s.record.session)
        .collect())
}

/// A row as JSON for scripts: every field of the row, plus `ago` (relative to `now_ms`).
pub fn row_json(row: &SessionRow, now_ms: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(row).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut v {
        map.insert(
            "ago".into(),
            serde_json::Value::String(relative(row.when_ms(), now_ms)),
        );
    }
    v
}

/// Sessions this store's identity owns (reads the store once; see [`Snapshot`]).
pub fn my_sessions(
    store: &Store,
    facts: Facts<'_>,
    prices: &PriceTable,
    now_ms: i64,
) -> Result<Listing, ListingError> {
    Ok(Snapshot::load(store, facts, prices, now_ms)?.my_sessions())
}

/// What is shared with me (reads the store once; see [`Snapshot`]).
pub fn shared_with_me(
    store: &Store,
    facts: Facts<'_>,
    prices: &PriceTable,
    now_ms: i64,
) -> Result<Listing, ListingError> {
    Ok(Snapshot::load(store, facts, prices, now_ms)?.shared_with_me())
}

/// A session's record and chain for a preview or a page; [`ListingError::Gone`] when it left
/// the store after the listing was read, [`ListingError::NotFetched`] for a share whose session
/// never arrived.
pub fn transcript(
    store: &Store,
    row: &SessionRow,
) -> Result<(SessionRecord, Vec<(NodeId, Node)>), ListingError> {
    let record = match store.session(&row.id)? {
        Some(r) => r,
        None if !row.present => return Err(ListingError::NotFetched { id: row.id.short() }),
        None => return Err(ListingError::Gone { id: row.id.short() }),
    };
    match store.chain(&record.head) {
        Ok(chain) => Ok((record, chain)),
        // The ref moved (or was removed) between reading it and its chain.
        Err(StoreError::MissingNode(_)) if store.session(&row.id)?.is_none() => {
            Err(ListingError::Gone { id: row.id.short() })
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
