//! `tapes sessions`: the sessions of this store, newest first, as a table or as JSON (SPEC.md
//! §3 session records, §10 lineage for the FROM column, §13 the search index's derived facts
//! for status and cost). Built to stay quick and small at 100,000 sessions:
//!
//! - Each record is decoded once and turned at once into a compact row (the short strings
//!   it shares with other rows, project, agent, model, owner and visibility, are interned, so
//!   a row is its title and a few numbers); the records are never all held at once.
//! - The rows are filtered (`--project`, `--agent`: plain comparisons, no filter-bar keys;
//!   those belong to [`super::Listing`], which the deck and the web view use), sorted newest
//!   first and cut to the rows to show. Only those get their status and cost (the search
//!   index decodes the facts of those sessions only) and their cells, written one after
//!   another into one buffer while each column's widest cell is noted.
//! - The table is laid out once from those widths ([`table::Layout`]) and written line by
//!   line to the writer given (the CLI gives a buffered, locked stdout).
//!
//! At a terminal the CLI shows one screenful ([`page_rows`]) and a footer with how many older
//! sessions there are ([`older_footer`]); piped output, `--json` and filtered lists print every
//! row unless `--limit` says otherwise ([`rows_to_show`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;

use tapes_protocol::{MemberId, NodeId, SessionId, TeamId, Usage};

use super::text::{cost_cell, SESSION_COLUMNS};
use super::{title_of, Derived, Facts, ListingError, OriginKind, PriceCache, Snapshot};
use crate::session::pricing::PriceTable;
use crate::session::{SessionRecord, Visibility};
use crate::store::Store;
use crate::views::render;
use crate::views::table::{self, Layout};

/// Which sessions to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only sessions of this project (exactly).
    pub project: Option<String>,
    /// Only sessions of this agent, as typed: a stored name, a short name (`claude`) or a
    /// unique prefix ([`crate::session::resolve_agent`]).
    pub agent: Option<String>,
    /// At most this many rows, the newest; `None`: every matching row.
    pub limit: Option<usize>,
}

impl Query {
    /// Whether the query narrows the list (a filtered list is never cut to a page).
    pub fn filters(&self) -> bool {
        self.project.is_some() || self.agent.is_some()
    }
}

/// How the list is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The table, fitted to `width` columns when given (never cut otherwise).
    Table { width: Option<usize> },
    /// One pretty-printed JSON array, every field uncut.
    Json,
}

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The list was written: the `shown` newest of the `matched` sessions (of `stored`).
    Listed {
        stored: usize,
        matched: usize,
        shown: usize,
    },
    /// Nothing was written (table form): the store holds no session.
    Empty,
    /// Nothing was written (table form): no session matches the query.
    NoMatch {
        stored: usize,
        /// The stored agent name `--agent` resolved to (`None`: it names no agent).
        agent: Option<String>,
        /// Agents and projects present, with how many sessions have each, by name.
        agents: Vec<(String, usize)>,
        projects: Vec<(String, usize)>,
    },
}

/// How many rows to print: `--limit` when given; else every row when `--all` is given, when
/// stdout is not a terminal (scripts must never lose rows silently), or when the list is
/// filtered or JSON (`keep_all`); else one page of `page` rows.
pub fn rows_to_show(
    is_tty: bool,
    all: bool,
    limit: Option<usize>,
    keep_all: bool,
    page: usize,
) -> Option<usize> {
    if limit.is_some() {
        return limit;
    }
    if all || !is_tty || keep_all {
        return None;
    }
    Some(page)
}

/// How many rows a page holds at a terminal of `height` lines: one screenful, leaving a line
/// each for the header, the footer, the command line and the next prompt. The list is newest
/// first, so a fixed page taller than the screen would scroll the newest sessions, the ones a
/// user looks for, off the top. At least 10; 20 when the height is not known.
pub fn page_rows(height: Option<usize>) -> usize {
    match height {
        Some(h) if h > 0 => h.saturating_sub(4).max(10),
        _ => 20,
    }
}

/// The line under a page: how many older sessions are not shown, and the flags that show
/// them: `… 99,950 older sessions not shown: --all lists every one, --limit N the newest N`.
pub fn older_footer(hidden: usize) -> String {
    if hidden == 1 {
        return "… 1 older session not shown: --all lists it too, --limit N the newest N".into();
    }
    format!(
        "… {} older sessions not shown: --all lists every one, --limit N the newest N",
        thousands(hidden)
    )
}

/// `99,950`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes the sessions of `store` that `query` selects, newest first, in `form` to `out`.
/// Status and cost come from `facts` (see [`Facts`]). Reads the store only.
pub fn write(
    store: &Store,
    facts: Facts<'_>,
    prices: &PriceTable,
    now_ms: i64,
    query: &Query,
    form: Form,
    out: &mut dyn Write,
) -> Result<Outcome, ListingError> {
    match form {
        Form::Table { width } => write_table(store, facts, prices, now_ms, query, width, out),
        Form::Json => write_json(store, facts, prices, now_ms, query, out),
    }
}

fn io(e: std::io::Error) -> ListingError {
    ListingError::Write(e)
}

/// The short strings rows share, each stored once.
#[derive(Default)]
struct Strings {
    ids: HashMap<Box<str>, u32>,
    list: Vec<Box<str>>,
}

impl Strings {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(s.into());
        self.ids.insert(s.into(), i);
        i
    }

    fn find(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn get(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("", |s| s)
    }
}

/// One session, as much as the table needs.
struct Compact {
    id: SessionId,
    head: NodeId,
    started_ms: i64,
    duration_ms: Option<i64>,
    messages: u64,
    /// The summary's summed usage: cost and tokens when the index has no facts.
    usage: Usage,
    project: u32,
    agent: u32,
    model: u32,
    owner_name: u32,
    visibility: u32,
    /// The owner (this store's identity for records without one).
    owner: Option<MemberId>,
    /// Parent and base count of a branch or fork.
    parent: Option<(SessionId, u64)>,
    origin: Option<OriginKind>,
    title: Box<str>,
}

/// Every session of the store as a compact row, in id order, with the strings they share.
fn read_compact(store: &Store, snap: &Snapshot) -> Result<(Vec<Compact>, Strings), ListingError> {
    let mut strings = Strings::default();
    let mut names: HashMap<Option<MemberId>, u32> = HashMap::new();
    let mut teams: HashMap<TeamId, u32> = HashMap::new();
    let private = strings.id("private");
    let public = strings.id("public");
    let mut rows = Vec::new();
    for entry in store.session_records() {
        let (id, r) = entry?;
        let s = &r.summary;
        let owner_name = match names.get(&r.owner) {
            Some(&n) => n,
            None => {
                let n = strings.id(&snap.name_of(r.owner));
                names.insert(r.owner, n);
                n
            }
        };
        let visibility = match &r.visibility {
            Visibility::Private => private,
            Visibility::Public => public,
            Visibility::Team(t) => match teams.get(t) {
                Some(&n) => n,
                None => {
                    let n = strings.id(&snap.team_name(t));
                    teams.insert(*t, n);
                    n
                }
            },
        };
        rows.push(Compact {
            id,
            head: r.head,
            started_ms: s.started_ms.unwrap_or(r.created_ms),
            duration_ms: s.duration_ms(),
            messages: s.messages,
            usage: s.usage,
            project: strings.id(&s.project),
            agent: strings.id(&s.agent),
            model: strings.id(&s.model),
            owner_name,
            visibility,
            owner: r.owner.or(snap.me),
            parent: r.lineage.parent.map(|p| (p, r.lineage.base_count)),
            origin: None,
            title: title_of(&r, None).0.into_boxed_str(),
        });
    }
    if !rows.is_sorted_by_key(|c| c.id) {
        rows.sort_unstable_by_key(|c| c.id);
    }
    // A branch has its parent's owner, a fork another's (SPEC.md §10).
    for i in 0..rows.len() {
        let Some((parent, _)) = rows[i].parent else {
            continue;
        };
        let kind = match rows.binary_search_by_key(&parent, |c| c.id) {
            Ok(j) if rows[j].owner == rows[i].owner => OriginKind::Branch,
            Ok(_) => OriginKind::Fork,
            Err(_) => OriginKind::Copy,
        };
        rows[i].origin = Some(kind);
    }
    Ok((rows, strings))
}

/// Distinct non-empty values with how many rows have each, by name.
fn counted(strings: &Strings, values: impl Iterator<Item = u32>) -> Vec<(String, usize)> {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let sorted: BTreeMap<&str, usize> = counts
        .into_iter()
        .map(|(v, n)| (strings.get(v), n))
        .filter(|(name, _)| !name.is_empty())
        .collect();
    sorted
        .into_iter()
        .map(|(name, n)| (name.to_string(), n))
        .collect()
}

/// Newest first; ties (no timestamps) by id so the order is stable.
fn newest_first(a: &Compact, b: &Compact) -> std::cmp::Ordering {
    b.started_ms.cmp(&a.started_ms).then(a.id.cmp(&b.id))
}

/// Keeps the `limit` first of `rows` in `order` (all when `None`), sorted: a page of a long
/// list is selected without sorting the rest.
fn first_sorted<T>(
    rows: &mut Vec<T>,
    limit: Option<usize>,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) {
    if let Some(n) = limit.filter(|&n| n < rows.len()) {
        if n == 0 {
            rows.clear();
            return;
        }
        rows.select_nth_unstable_by(n - 1, &order);
        rows.truncate(n);
    }
    rows.sort_unstable_by(order);
}

/// Status, cost and usage of a listed session. From the index or the summary the row holds;
/// only [`Facts::Chains`] needs the whole record ([`Derived::derive`]).
fn derived_of(
    c: &Compact,
    model: &str,
    store: &Store,
    facts: Facts<'_>,
    prices: &PriceTable,
    cache: &mut PriceCache,
) -> Result<Derived, ListingError> {
    Ok(match facts {
        Facts::Index(index) => match index.facts(&c.id) {
            Some(f) if f.head == c.head => Derived::of_facts(f, prices, cache),
            _ => Derived::of_usage(model, &c.usage, prices),
        },
        Facts::Chains => match store.session(&c.id)? {
            Some(r) => Derived::derive(facts, store, &c.id, &r, prices, cache),
            None => Derived::of_usage(model, &c.usage, prices),
        },
        Facts::Summaries => Derived::of_usage(model, &c.usage, prices),
    })
}

fn write_table(
    store: &Store,
    facts: Facts<'_>,
    prices: &PriceTable,
    now_ms: i64,
    query: &Query,
    width: Option<usize>,
    out: &mut dyn Write,
) -> Result<Outcome, ListingError> {
    let snap = Snapshot::empty(store, now_ms)?;
    let (mut rows, strings) = read_compact(store, &snap)?;
    let stored = rows.len();
    if stored == 0 {
        return Ok(Outcome::Empty);
    }
    let agents = || counted(&strings, rows.iter().map(|c| c.agent));
    let agent = match &query.agent {
        Some(input) => {
            let names: Vec<String> = agents().into_iter().map(|(name, _)| name).collect();
            Some(crate::session::resolve_agent(input, &names)?)
        }
        None => None,
    };
    let project = query.project.as_deref().map(|p| strings.find(p));
    let agent_id = agent
        .as_ref()
        .map(|a| a.as_deref().and_then(|a| strings.find(a)));
    if project.is_some() || agent_id.is_some() {
        let keep = |c: &Compact| {
            project.is_none_or(|p| p == Some(c.project))
                && agent_id.is_none_or(|a| a == Some(c.agent))
        };
        if !rows.iter().any(keep) {
            return Ok(Outcome::NoMatch {
                stored,
                agent: agent.flatten(),
                agents: agents(),
                projects: counted(&strings, rows.iter().map(|c| c.project)),
            });
        }
        rows.retain(keep);
    }
    let matched = rows.len();
    first_sorted(&mut rows, query.limit, newest_first);

    // The cells of the rows shown, one after another in `text`; `ends` holds where each ends.
    let columns = &SESSION_COLUMNS;
    let n = columns.len();
    let mut natural = table::natural_widths(columns, std::iter::empty::<[&str; 0]>());
    let mut text = String::with_capacity(rows.len() * 192);
    let mut ends: Vec<usize> = Vec::with_capacity(rows.len() * n);
    let mut cache = PriceCache::new();
    for c in &rows {
        let d = derived_of(c, strings.get(c.model), store, facts, prices, &mut cache)?;
        let first = ends.len();
        let start = text.len();
        text.push_str(&c.id.short());
        ends.push(text.len());
        render::write_time(&mut text, Some(c.started_ms));
        ends.push(text.len());
        text.push_str(&render::duration(c.duration_ms));
        ends.push(text.len());
        for s in [c.project, c.agent, c.model] {
            text.push_str(render::or_dash(strings.get(s)));
            ends.push(text.len());
        }
        text.push_str(strings.get(c.owner_name));
        ends.push(text.len());
        text.push_str(strings.get(c.visibility));
        ends.push(text.len());
        text.push_str(d.status.map_or("-", |s| s.as_str()));
        ends.push(text.len());
        text.push_str(&cost_cell(Some(d.cost), !d.unpriced.is_empty()));
        ends.push(text.len());
        let _ = write!(text, "{}", c.messages);
        ends.push(text.len());
        text.push_str(&render::count(d.tokens));
        ends.push(text.len());
        match (c.origin, c.parent) {
            (Some(kind), Some((parent, base))) => {
                let _ = write!(text, "{} of ", kind.as_str());
                text.push_str(&parent.short());
                let _ = write!(text, " #{base}");
            }
            _ => text.push('-'),
        }
        ends.push(text.len());
        text.push_str(&c.title);
        ends.push(text.len());
        let mut from = start;
        table::widen(
            &mut natural,
            ends[first..].iter().map(|&end| {
                let cell = &text[from..end];
                from = end;
                cell
            }),
        );
    }
    let shown = rows.len();
    // The rows are in the cells now; their memory goes back before the table is written.
    drop(rows);

    let layout = Layout::fit(columns, &natural, width);
    let mut line = String::with_capacity(256);
    layout.header_into(&mut line);
    out.write_all(line.as_bytes()).map_err(io)?;
    let mut cells: Vec<&str> = Vec::with_capacity(n);
    let mut from = 0;
    for row in ends.chunks(n) {
        cells.clear();
        for &end in row {
            cells.push(&text[from..end]);
            from = end;
        }
        line.clear();
        layout.row_into(&mut line, &cells);
        out.write_all(line.as_bytes()).map_err(io)?;
    }
    Ok(Outcome::Listed {
        stored,
        matched,
        shown,
    })
}

/// The JSON of one listed session: its record ([`render::session_json`]) plus what the table
/// shows (title, owner, visibility, status, cost, tokens, origin).
fn row_json(snap: &Snapshot, i: usize, d: &Derived) -> serde_json::Value {
    let (id, record) = &snap.sessions[i];
    let row = snap.row_with(i, d);
    let mut v = render::session_json(id, record);
    if let Some(map) = v.as_object_mut() {
        map.insert("title_shown".into(), row.title.into());
        map.insert(
            "title_from".into(),
            serde_json::to_value(row.title_from).unwrap_or_default(),
        );
        map.insert("owner_name".into(), row.owner_name.into());
        map.insert("mine".into(), row.mine.into());
        map.insert("visibility_name".into(), row.visibility.label().into());
        map.insert(
            "status".into(),
            serde_json::to_value(row.status).unwrap_or_default(),
        );
        map.insert("cost_usd".into(), row.cost.into());
        map.insert("unpriced_models".into(), row.unpriced.into());
        map.insert("tokens".into(), row.tokens.into());
        map.insert(
            "origin".into(),
            serde_json::to_value(&row.origin).unwrap_or_default(),
        );
    }
    v
}

fn write_json(
    store: &Store,
    facts: Facts<'_>,
    prices: &PriceTable,
    now_ms: i64,
    query: &Query,
    out: &mut dyn Write,
) -> Result<Outcome, ListingError> {
    let mut snap = Snapshot::empty(store, now_ms)?;
    snap.sessions = store.sessions()?;
    snap.reindex();
    let stored = snap.sessions.len();
    let agent = match &query.agent {
        Some(input) => {
            let mut names: Vec<String> = snap
                .sessions
                .iter()
                .map(|(_, r)| r.summary.agent.clone())
                .filter(|a| !a.is_empty())
                .collect();
            names.sort();
            names.dedup();
            Some(crate::session::resolve_agent(input, &names)?)
        }
        None => None,
    };
    let started = |r: &SessionRecord| r.summary.started_ms.unwrap_or(r.created_ms);
    let mut order: Vec<usize> = (0..stored)
        .filter(|&i| {
            let s = &snap.sessions[i].1.summary;
            query.project.as_ref().is_none_or(|p| &s.project == p)
                && agent
                    .as_ref()
                    .is_none_or(|a| a.as_ref().is_some_and(|a| &s.agent == a))
        })
        .collect();
    let matched = order.len();
    let sessions = &snap.sessions;
    first_sorted(&mut order, query.limit, |&a, &b| {
        let ((ia, ra), (ib, rb)) = (&sessions[a], &sessions[b]);
        started(rb).cmp(&started(ra)).then(ia.cmp(ib))
    });
    // One element at a time, indented as `serde_json::to_string_pretty` indents an array.
    let mut cache = PriceCache::new();
    for (k, &i) in order.iter().enumerate() {
        let (id, record) = &snap.sessions[i];
        let d = Derived::derive(facts, store, id, record, prices, &mut cache);
        let element = serde_json::to_string_pretty(&row_json(&snap, i, &d))
            .map_err(|e| io(std::io::Error::other(e)))?;
        out.write_all(if k == 0 { b"[\n" } else { b",\n" })
            .map_err(io)?;
        for (j, line) in element.lines().enumerate() {
            if j > 0 {
                out.write_all(b"\n").map_err(io)?;
            }
            out.write_all(b"  ").map_err(io)?;
            out.write_all(line.as_bytes()).map_err(io)?;
        }
    }
    out.write_all(if order.is_empty() { b"[]\n" } else { b"\n]\n" })
        .map_err(io)?;
    Ok(Outcome::Listed {
        stored,
        matched,
        shown: order.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_only_an_unfiltered_table_at_a_terminal() {
        // At a terminal: one page, unless --all, a filter or JSON asks for every row.
        assert_eq!(rows_to_show(true, false, None, false, 26), Some(26));
        assert_eq!(rows_to_show(true, true, None, false, 26), None);
        assert_eq!(rows_to_show(true, false, None, true, 26), None);
        // Piped or redirected: every row.
        assert_eq!(rows_to_show(false, false, None, false, 26), None);
        // --limit wins everywhere.
        assert_eq!(rows_to_show(false, false, Some(3), true, 26), Some(3));
        assert_eq!(rows_to_show(true, false, Some(300), false, 26), Some(300));
    }

    #[test]
    fn a_page_is_a_screenful() {
        assert_eq!(page_rows(Some(30)), 26);
        assert_eq!(page_rows(Some(5)), 10);
        assert_eq!(page_rows(None), 20);
        assert_eq!(page_rows(Some(0)), 20);
    }

    #[test]
    fn the_footer_counts_what_is_hidden() {
        assert_eq!(
            older_footer(99_950),
            "… 99,950 older sessions not shown: --all lists every one, --limit N the newest N"
        );
        assert!(older_footer(1).starts_with("… 1 older session not shown"));
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    /// A store of `n` sample sessions in a temporary directory.
    fn store_of(n: usize) -> (tempfile::TempDir, Store) {
        use crate::import::ingest::{ingest, Incoming};
        use crate::session::sample::{self, Shape};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let incoming: Vec<Incoming> = (0..n)
            .map(|i| Incoming {
                session: sample::session(11, i, Shape::default()),
                path: String::new(),
            })
            .collect();
        if n > 0 {
            ingest(&store, &incoming, 0).unwrap();
        }
        (dir, store)
    }

    fn table(store: &Store, query: &Query, width: Option<usize>) -> (String, Outcome) {
        let mut out = Vec::new();
        let outcome = write(
            store,
            Facts::Chains,
            &PriceTable::defaults(),
            0,
            query,
            Form::Table { width },
            &mut out,
        )
        .unwrap();
        (String::from_utf8(out).unwrap(), outcome)
    }

    #[test]
    fn the_streamed_table_is_the_table_of_every_row() {
        let (_dir, store) = store_of(6);
        // A seventh: a branch of the newest, for the FROM column.
        let newest = store
            .sessions()
            .unwrap()
            .into_iter()
            .max_by_key(|(_, r)| r.summary.started_ms)
            .unwrap()
            .0;
        let options = crate::session::lineage::CopyOptions {
            at: Some(3),
            ..Default::default()
        };
        crate::session::lineage::branch(&store, &newest, &options, 5).unwrap();
        let prices = PriceTable::defaults();
        let snapshot = Snapshot::load(&store, Facts::Chains, &prices, 0).unwrap();
        let listing = snapshot.all();
        let rows: Vec<&super::super::SessionRow> = listing.rows().iter().collect();
        assert!(rows.iter().any(|r| r.origin.is_some()));
        for width in [None, Some(200), Some(100), Some(60)] {
            let (text, outcome) = table(&store, &Query::default(), width);
            assert_eq!(
                text,
                super::super::text::sessions_table(&rows, width),
                "{width:?}"
            );
            assert_eq!(
                outcome,
                Outcome::Listed {
                    stored: 7,
                    matched: 7,
                    shown: 7
                }
            );
        }
        // A page: the newest rows, laid out for themselves.
        let query = Query {
            limit: Some(3),
            ..Query::default()
        };
        let (text, outcome) = table(&store, &query, None);
        assert_eq!(text, super::super::text::sessions_table(&rows[..3], None));
        assert_eq!(
            outcome,
            Outcome::Listed {
                stored: 7,
                matched: 7,
                shown: 3
            }
        );
    }

    /// The projects of `store`'s sessions with how many sessions each, by name.
    fn counted_projects(store: &Store) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (_, r) in store.sessions().unwrap() {
            *counts.entry(r.summary.project).or_default() += 1;
        }
        counts.into_iter().filter(|(p, _)| !p.is_empty()).collect()
    }

    #[test]
    fn filters_that_match_nothing_say_what_is_here() {
        let (_dir, store) = store_of(2);
        assert!(!counted_projects(&store).is_empty());
        let query = Query {
            agent: Some("gemini".into()),
            ..Query::default()
        };
        let (text, outcome) = table(&store, &query, None);
        assert!(text.is_empty());
        assert_eq!(
            outcome,
            Outcome::NoMatch {
                stored: 2,
                agent: Some("gemini-cli".into()),
                agents: vec![("claude-code".into(), 2)],
                projects: counted_projects(&store),
            }
        );
        let (_empty_dir, empty) = store_of(0);
        assert_eq!(table(&empty, &Query::default(), None).1, Outcome::Empty);
    }

    #[test]
    fn a_page_is_chosen_without_sorting_everything() {
        let mut v: Vec<u32> = (0..100).rev().collect();
        first_sorted(&mut v, Some(3), |a, b| a.cmp(b));
        assert_eq!(v, [0, 1, 2]);
        let mut v: Vec<u32> = vec![3, 1, 2];
        first_sorted(&mut v, None, |a, b| a.cmp(b));
        assert_eq!(v, [1, 2, 3]);
        first_sorted(&mut v, Some(0), |a, b| a.cmp(b));
        assert!(v.is_empty());
    }
}
