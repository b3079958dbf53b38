//! The deck's state: three tabs over the listings of [`crate::views::listing`] (SPEC.md §13
//! derived facts, §11 shares), one filter bar, the selection and its preview, the lineage view
//! (SPEC.md §10) and the action dialogs. It takes key events ([`App::on_key`]) and is drawn by
//! [`super::ui`]; nothing here touches the terminal, so tests drive it with keys and read the
//! frame from ratatui's `TestBackend`.
//!
//! Keys (list): ↑/↓ (or k/j) move, PgUp/PgDn page, Home/End, `/` types in the filter bar (the
//! filter applies as you type; ↑/↓ still move, Enter or Esc go back to the list), Ctrl-U clears
//! it, Tab / Shift-Tab switch tabs, Enter focuses the preview (↑/↓ PgUp/PgDn scroll, `t` unfolds
//! tool calls, Esc back), `l` shows the lineage, Space marks, `s` share, `u` unshare, `b`
//! branch, `f` fork, `c` checkout (and resume), `e` export, `B` bundle, `R` reload, `q` or Esc
//! quits.

use std::collections::{BTreeSet, HashSet};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::text::Line;
use tapes_protocol::SessionId;

use super::actions::{self, ActionError, AudienceChoice, Context, CopyKind};
use super::preview::Transcript;
use crate::resume::Platform;
use crate::share::gate::SecretPolicy;
use crate::views::listing::{
    self, Dashboard, Facts, Filter, LineageGraph, Listing, ListingError, LiveFilter, SessionRow,
    Snapshot,
};
use crate::views::search::SearchIndex;

/// The three views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Mine,
    Shared,
    Team,
}

impl Tab {
    pub const ALL: [Tab; 3] = [Tab::Mine, Tab::Shared, Tab::Team];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Mine => "My sessions",
            Tab::Shared => "Shared with me",
            Tab::Team => "Team dashboard",
        }
    }

    fn index(self) -> usize {
        match self {
            Tab::Mine => 0,
            Tab::Shared => 1,
            Tab::Team => 2,
        }
    }
}

/// How the deck starts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these sessions (`tapes search -i`: what the full-text search found).
    pub only: Option<Vec<SessionId>>,
    /// The filter bar's text at the start.
    pub filter: String,
    /// Quitting returns the marked sessions (or the highlighted one) to print.
    pub pick: bool,
}

/// Where status and cost come from, kept for reloads (see [`listing::Facts`]).
pub enum FactSource {
    Index(Box<SearchIndex>),
    Chains,
    Summaries,
}

/// What the keyboard is talking to.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    List,
    Filter,
    Preview,
    Lineage,
    Dialog(Dialog),
}

/// An action waiting for a choice or a confirmation.
#[derive(Debug, Clone, PartialEq)]
pub enum Dialog {
    /// The secret gate's findings are shown before anything is shared.
    Share {
        id: SessionId,
        title: String,
        findings: Result<Vec<String>, String>,
        audiences: Vec<AudienceChoice>,
        choice: usize,
    },
    Unshare {
        id: SessionId,
        title: String,
        live: usize,
    },
    Copy {
        id: SessionId,
        title: String,
        kind: CopyKind,
        /// Messages to share, as typed (empty: all of them).
        at: String,
        messages: u64,
    },
    Checkout {
        id: SessionId,
        title: String,
        platform: usize,
    },
    Save {
        kind: SaveKind,
        ids: Vec<SessionId>,
        path: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveKind {
    Export,
    Bundle,
}

/// The platforms a checkout offers, in order.
pub const PLATFORMS: [Platform; 4] = [
    Platform::Claude,
    Platform::Codex,
    Platform::Gemini,
    Platform::File,
];

/// Something the deck cannot do with the terminal in raw mode: [`super::run`] leaves the
/// screen, does it, and comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Write the session for the agent, run the agent, store its new turns.
    Resume { id: SessionId, platform: Platform },
}

/// How the deck ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Quit,
    /// The sessions picked (pick mode).
    Picked(Vec<SessionId>),
}

/// The status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
}

/// One tab's rows and where the cursor is in them.
pub struct Pane {
    pub listing: Listing,
    live: LiveFilter,
    /// Indices into the listing's rows that pass the filter, in order.
    pub hits: Vec<usize>,
    pub cursor: usize,
    /// First hit shown (kept by the drawing so the cursor stays visible).
    pub offset: usize,
    /// The filter text these hits are for (`None`: not filtered yet).
    applied: Option<String>,
}

impl Pane {
    fn new(listing: Listing) -> Pane {
        let hits = (0..listing.len()).collect();
        Pane {
            listing,
            live: LiveFilter::default(),
            hits,
            cursor: 0,
            offset: 0,
            applied: None,
        }
    }

    pub fn current(&self) -> Option<&SessionRow> {
        self.hits
            .get(self.cursor)
            .and_then(|&i| self.listing.get(i))
    }

    fn move_by(&mut self, delta: isize) {
        if self.hits.is_empty() {
            self.cursor = 0;
            return;
        }
        let last = self.hits.len() - 1;
        self.cursor = self.cursor.saturating_add_signed(delta).min(last);
    }
}

/// The transcript shown for the selection, and its layout for the last width drawn.
pub struct Preview {
    pub id: SessionId,
    pub body: Result<Transcript, String>,
    layout: Option<(usize, bool, Vec<Line<'static>>)>,
}

/// The deck.
pub struct App {
    pub(super) ctx: Context,
    pub(super) now_ms: i64,
    facts: Option<FactSource>,
    pub(super) snapshot: Option<Snapshot>,
    pending_load: Option<std::sync::mpsc::Receiver<Result<Loaded, String>>>,
    /// Why the store could not be read (shown where the rows would be).
    pub(super) load_error: Option<String>,
    only: Option<HashSet<SessionId>>,
    pub(super) pick: bool,
    pub(super) panes: [Pane; 3],
    pub(super) tab: Tab,
    pub(super) filter_text: String,
    pub(super) filter_error: Option<String>,
    pub(super) marked: BTreeSet<SessionId>,
    pub(super) mode: Mode,
    pub(super) preview: Option<Preview>,
    pub(super) unfold: bool,
    pub(super) scroll: usize,
    pub(super) lineage: Option<Result<LineageGraph, String>>,
    pub(super) lineage_scroll: usize,
    pub(super) dashboard: Option<Result<Dashboard, String>>,
    /// The dashboard being computed in the background (it reads every message of the
    /// period, seconds on a big store; the deck stays responsive meanwhile).
    pending_dashboard: Option<std::sync::mpsc::Receiver<Result<Dashboard, String>>>,
    pub(super) notice: Option<Notice>,
    pub(super) outcome: Option<Outcome>,
    request: Option<Request>,
    /// Rows of the list and of the preview at the last draw (for paging).
    pub(super) list_rows: usize,
    pub(super) preview_rows: usize,
}

const DAY_MS: i64 = 86_400_000;

/// What reading the store gives the deck: the snapshot and the three tabs' listings.
pub struct Loaded {
    snapshot: Snapshot,
    listings: [Listing; 3],
    facts: FactSource,
}

/// Reads the store (bringing the search index up to date first when there is one) and builds
/// the three listings, restricted to `only` when given.
fn load(
    ctx: &Context,
    mut facts: FactSource,
    only: Option<&HashSet<SessionId>>,
    now_ms: i64,
) -> Result<Loaded, ListingError> {
    if let FactSource::Index(index) = &mut facts {
        if let Err(e) = index.sync(&ctx.store, None) {
            tracing::warn!(error = %e, "search index not updated; status and cost from summaries");
            facts = FactSource::Summaries;
        }
    }
    let f = match &facts {
        FactSource::Index(index) => Facts::Index(index),
        FactSource::Chains => Facts::Chains,
        FactSource::Summaries => Facts::Summaries,
    };
    let snapshot = Snapshot::load(&ctx.store, f, &ctx.prices, now_ms)?;
    let restrict = |listing: Listing| match only {
        None => listing,
        Some(ids) => {
            let rows = listing
                .rows()
                .iter()
                .filter(|r| ids.contains(&r.id))
                .cloned()
                .collect();
            Listing::new(rows, listing.people().to_vec())
        }
    };
    let listings = [
        restrict(snapshot.my_sessions()),
        restrict(snapshot.shared_with_me()),
        restrict(snapshot.team(None)),
    ];
    Ok(Loaded {
        snapshot,
        listings,
        facts,
    })
}

impl App {
    fn empty(ctx: Context, options: Options, now_ms: i64) -> App {
        App {
            ctx,
            now_ms,
            facts: None,
            panes: [
                Pane::new(Listing::default()),
                Pane::new(Listing::default()),
                Pane::new(Listing::default()),
            ],
            snapshot: None,
            pending_load: None,
            load_error: None,
            only: options.only.map(|ids| ids.into_iter().collect()),
            pick: options.pick,
            tab: Tab::Mine,
            filter_text: options.filter,
            filter_error: None,
            marked: BTreeSet::new(),
            mode: Mode::List,
            preview: None,
            unfold: false,
            scroll: 0,
            lineage: None,
            lineage_scroll: 0,
            dashboard: None,
            pending_dashboard: None,
            notice: None,
            outcome: None,
            request: None,
            list_rows: 20,
            preview_rows: 20,
        }
    }

    /// Reads the store and opens on the My sessions tab.
    pub fn new(
        ctx: Context,
        facts: FactSource,
        options: Options,
        now_ms: i64,
    ) -> Result<App, ListingError> {
        let mut app = App::empty(ctx, options, now_ms);
        let loaded = load(&app.ctx, facts, app.only.as_ref(), now_ms)?;
        app.install(loaded);
        Ok(app)
    }

    /// Opens at once and reads the store in the background (the first frame says so; keys
    /// typed meanwhile, a filter say, apply when the rows arrive). [`App::tick`] takes them in.
    pub fn open(ctx: Context, facts: FactSource, options: Options, now_ms: i64) -> App {
        let mut app = App::empty(ctx, options, now_ms);
        let (tx, rx) = std::sync::mpsc::channel();
        let ctx = app.ctx.clone();
        let only = app.only.clone();
        let spawned = std::thread::Builder::new()
            .name("deck-load".into())
            .spawn(move || {
                let _ =
                    tx.send(load(&ctx, facts, only.as_ref(), now_ms).map_err(|e| e.to_string()));
            });
        match spawned {
            Ok(_) => app.pending_load = Some(rx),
            Err(e) => app.load_error = Some(format!("cannot start reading the store: {e}")),
        }
        app
    }

    /// Whether the store is still being read.
    pub fn loading(&self) -> bool {
        self.pending_load.is_some()
    }

    fn install(&mut self, loaded: Loaded) {
        self.snapshot = Some(loaded.snapshot);
        self.facts = Some(loaded.facts);
        let [mine, shared, team] = loaded.listings;
        self.panes = [Pane::new(mine), Pane::new(shared), Pane::new(team)];
        self.dashboard = None;
        self.load_error = None;
        self.apply_filter();
        self.selection_changed();
        if self.tab == Tab::Team {
            self.load_dashboard();
        }
    }

    /// Reads the store again (after an action), keeping the tab, the filter and, when it is
    /// still listed, the selected session.
    pub fn reload(&mut self) {
        let Some(facts) = self.facts.take() else {
            return; // still loading: what arrives is current
        };
        let keep = self.current().map(|r| r.id);
        self.now_ms = crate::now_ms();
        let loaded = match load(&self.ctx, facts, self.only.as_ref(), self.now_ms) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.facts = Some(FactSource::Summaries);
                self.fail(e.to_string());
                return;
            }
        };
        self.preview = None;
        self.install(loaded);
        if let Some(id) = keep {
            self.select(&id);
            self.selection_changed();
        }
    }

    fn pane(&self) -> &Pane {
        &self.panes[self.tab.index()]
    }

    fn pane_mut(&mut self) -> &mut Pane {
        &mut self.panes[self.tab.index()]
    }

    /// The highlighted session.
    pub fn current(&self) -> Option<&SessionRow> {
        self.pane().current()
    }

    /// Moves the cursor to session `id` when the current tab lists it.
    pub fn select(&mut self, id: &SessionId) {
        let pane = self.pane_mut();
        if let Some(pos) = pane
            .hits
            .iter()
            .position(|&i| pane.listing.get(i).is_some_and(|r| r.id == *id))
        {
            pane.cursor = pos;
        }
    }

    pub fn tab(&self) -> Tab {
        self.tab
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn notice(&self) -> Option<&Notice> {
        self.notice.as_ref()
    }

    pub fn filter_error(&self) -> Option<&str> {
        self.filter_error.as_deref()
    }

    pub fn filter_text(&self) -> &str {
        &self.filter_text
    }

    /// The rows the current tab shows.
    pub fn visible(&self) -> usize {
        self.pane().hits.len()
    }

    /// Set when the deck should end.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// What the runner has to do outside the TUI, taken once.
    pub fn take_request(&mut self) -> Option<Request> {
        self.request.take()
    }

    fn fail(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            error: true,
        });
    }

    fn say(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            error: false,
        });
    }

    /// The result of a [`Request`] the runner carried out.
    pub fn finish_request(&mut self, result: Result<String, ActionError>) {
        self.reload();
        match result {
            Ok(line) => self.say(line),
            Err(e) => self.fail(e.to_string()),
        }
    }

    /// Parses the filter bar and applies it to the current tab. A value that cannot be meant
    /// keeps the previous rows and says what is wrong in place.
    fn apply_filter(&mut self) {
        let parsed = Filter::parse(&self.filter_text, self.now_ms).and_then(|f| {
            self.pane().listing.check(&f)?;
            Ok(f)
        });
        let filter = match parsed {
            Ok(f) => f,
            Err(e) => {
                self.filter_error = Some(e.to_string());
                return;
            }
        };
        self.filter_error = None;
        let text = self.filter_text.clone();
        let pane = self.pane_mut();
        if pane.applied.as_deref() == Some(text.as_str()) {
            return;
        }
        let keep = pane.current().map(|r| r.id);
        let hits = pane.live.apply(&pane.listing, filter).to_vec();
        pane.hits = hits;
        pane.applied = Some(text);
        pane.cursor = 0;
        pane.offset = 0;
        if let Some(id) = keep {
            self.select(&id);
        }
    }

    /// Loads the preview of the highlighted session when it changed.
    fn selection_changed(&mut self) {
        let Some(row) = self.current() else {
            self.preview = None;
            return;
        };
        if self.preview.as_ref().is_some_and(|p| p.id == row.id) {
            return;
        }
        let id = row.id;
        let now = self.now_ms;
        let mut about = Vec::new();
        if let Some(share) = &row.share {
            let mut line = format!(
                "shared with {} by {}, {}",
                share.audience.label(),
                share.sharer_name,
                listing::relative(share.shared_ms, now)
            );
            if let Some(note) = &share.note {
                line.push_str(&format!(" — “{note}”"));
            }
            about.push(line);
        }
        if let Some(origin) = &row.origin {
            about.push(format!(
                "{} of {} after message {}",
                origin.kind.as_str(),
                origin.parent.short(),
                origin.base_count
            ));
        }
        if row.owner_name != "you" {
            about.push(format!("owner {}", row.owner_name));
        }
        let body = listing::transcript(&self.ctx.store, row)
            .map(|(record, chain)| {
                let mut t = Transcript::of_chain(&id, &record, &chain);
                let at = usize::from(record.title.is_some());
                for (i, line) in about.drain(..).enumerate() {
                    t.head.insert(at + i, line);
                }
                t
            })
            .map_err(|e| e.to_string());
        self.preview = Some(Preview {
            id,
            body,
            layout: None,
        });
        self.scroll = 0;
    }

    /// The preview laid out `width` columns wide (cached until the width, the folding or the
    /// selection changes).
    pub fn preview_lines(&mut self, width: usize) -> &[Line<'static>] {
        let unfold = self.unfold;
        let Some(preview) = self.preview.as_mut() else {
            return &[];
        };
        let Ok(transcript) = &preview.body else {
            return &[];
        };
        let fresh = preview
            .layout
            .as_ref()
            .is_none_or(|(w, u, _)| *w != width || *u != unfold);
        if fresh {
            preview.layout = Some((width, unfold, transcript.lines(width, unfold)));
        }
        preview.layout.as_ref().map_or(&[], |(_, _, lines)| lines)
    }

    /// Starts computing the Team dashboard in the background; [`App::tick`] picks it up.
    fn load_dashboard(&mut self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let store = self.ctx.store.clone();
        let prices = self.ctx.prices.clone();
        let now = self.now_ms;
        let spawned = std::thread::Builder::new()
            .name("deck-dashboard".into())
            .spawn(move || {
                let result = Snapshot::load(&store, Facts::Summaries, &prices, now)
                    .and_then(|snapshot| {
                        listing::team_dashboard(&store, &snapshot, None, &prices, 30 * DAY_MS)
                    })
                    .map_err(|e| e.to_string());
                let _ = tx.send(result);
            });
        match spawned {
            Ok(_) => {
                self.dashboard = None;
                self.pending_dashboard = Some(rx);
            }
            Err(e) => {
                self.dashboard = Some(Err(format!(
                    "cannot start computing the dashboard: {e}; `tapes stats` shows the numbers"
                )))
            }
        }
    }

    /// Whether background work is under way (the runner then polls instead of blocking).
    pub fn busy(&self) -> bool {
        self.pending_dashboard.is_some() || self.pending_load.is_some()
    }

    /// Takes in what background work finished; true when something changed on screen.
    pub fn tick(&mut self) -> bool {
        let mut changed = false;
        if let Some(rx) = &self.pending_load {
            match rx.try_recv() {
                Ok(Ok(loaded)) => {
                    self.pending_load = None;
                    self.install(loaded);
                    changed = true;
                }
                Ok(Err(e)) => {
                    self.pending_load = None;
                    self.load_error = Some(e);
                    changed = true;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.pending_load = None;
                    self.load_error = Some("reading the store failed; run `tapes fsck`".into());
                    changed = true;
                }
            }
        }
        let Some(rx) = &self.pending_dashboard else {
            return changed;
        };
        match rx.try_recv() {
            Ok(result) => {
                self.dashboard = Some(result);
                self.pending_dashboard = None;
                true
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => changed,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                self.dashboard = Some(Err(
                    "computing the dashboard failed; `tapes stats` shows the numbers".into(),
                ));
                self.pending_dashboard = None;
                true
            }
        }
    }

    fn switch_tab(&mut self, forward: bool) {
        let i = self.tab.index();
        let next = if forward { (i + 1) % 3 } else { (i + 2) % 3 };
        self.tab = Tab::ALL[next];
        self.apply_filter();
        if self.tab == Tab::Team
            && self.snapshot.is_some()
            && self.dashboard.is_none()
            && self.pending_dashboard.is_none()
        {
            self.load_dashboard();
        }
        self.selection_changed();
    }

    fn clear_filter(&mut self) {
        self.filter_text.clear();
        self.apply_filter();
        self.selection_changed();
    }

    /// Handles one key.
    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            self.outcome = Some(Outcome::Quit);
            return;
        }
        match self.mode.clone() {
            Mode::Dialog(dialog) => self.on_dialog_key(dialog, key),
            Mode::Filter => self.on_filter_key(key),
            Mode::Preview => self.on_preview_key(key),
            Mode::Lineage => self.on_lineage_key(key),
            Mode::List => self.on_list_key(key),
        }
    }

    fn quit(&mut self) {
        self.outcome = Some(if self.pick {
            let picked: Vec<SessionId> = if self.marked.is_empty() {
                self.current().map(|r| vec![r.id]).unwrap_or_default()
            } else {
                self.marked.iter().copied().collect()
            };
            Outcome::Picked(picked)
        } else {
            Outcome::Quit
        });
    }

    /// Keys that move the list, in every mode that shows it.
    fn move_keys(&mut self, key: &KeyEvent) -> bool {
        let page = self.list_rows.max(1) as isize;
        let pane = self.pane_mut();
        match key.code {
            KeyCode::Up => pane.move_by(-1),
            KeyCode::Down => pane.move_by(1),
            KeyCode::PageUp => pane.move_by(-page),
            KeyCode::PageDown => pane.move_by(page),
            _ => return false,
        }
        self.selection_changed();
        true
    }

    fn on_list_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl {
            if key.code == KeyCode::Char('u') {
                self.clear_filter();
            }
            return;
        }
        if self.move_keys(&key) {
            return;
        }
        match key.code {
            KeyCode::Char('k') => {
                self.pane_mut().move_by(-1);
                self.selection_changed();
            }
            KeyCode::Char('j') => {
                self.pane_mut().move_by(1);
                self.selection_changed();
            }
            KeyCode::Home | KeyCode::Char('g') => {
                self.pane_mut().cursor = 0;
                self.selection_changed();
            }
            KeyCode::End | KeyCode::Char('G') => {
                let pane = self.pane_mut();
                pane.cursor = pane.hits.len().saturating_sub(1);
                self.selection_changed();
            }
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Tab => self.switch_tab(true),
            KeyCode::BackTab => self.switch_tab(false),
            KeyCode::Enter => {
                if self.current().is_some() {
                    self.mode = Mode::Preview;
                }
            }
            KeyCode::Esc | KeyCode::Char('q') => self.quit(),
            KeyCode::Char(' ') => {
                if let Some(id) = self.current().map(|r| r.id) {
                    if !self.marked.remove(&id) {
                        self.marked.insert(id);
                    }
                    self.pane_mut().move_by(1);
                    self.selection_changed();
                }
            }
            KeyCode::Char('t') => self.unfold = !self.unfold,
            KeyCode::Char('l') => self.open_lineage(),
            KeyCode::Char('R') => {
                self.reload();
                self.say("reloaded");
            }
            KeyCode::Char('s') => self.open_share(),
            KeyCode::Char('u') => self.open_unshare(),
            KeyCode::Char('b') => self.open_copy(CopyKind::Branch),
            KeyCode::Char('f') => self.open_copy(CopyKind::Fork),
            KeyCode::Char('c') | KeyCode::Char('r') => self.open_checkout(),
            KeyCode::Char('e') => self.open_save(SaveKind::Export),
            KeyCode::Char('B') => self.open_save(SaveKind::Bundle),
            _ => {}
        }
    }

    fn on_filter_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if self.move_keys(&key) {
            return;
        }
        match key.code {
            KeyCode::Char('u') if ctrl => self.clear_filter(),
            KeyCode::Char('w') if ctrl => {
                let trimmed = self.filter_text.trim_end().len();
                self.filter_text.truncate(trimmed);
                let cut = self.filter_text.rfind(' ').map_or(0, |i| i + 1);
                self.filter_text.truncate(cut);
                self.filter_changed();
            }
            KeyCode::Char(c) if !ctrl => {
                self.filter_text.push(c);
                self.filter_changed();
            }
            KeyCode::Backspace => {
                self.filter_text.pop();
                self.filter_changed();
            }
            KeyCode::Enter | KeyCode::Esc => self.mode = Mode::List,
            KeyCode::Tab => self.switch_tab(true),
            KeyCode::BackTab => self.switch_tab(false),
            _ => {}
        }
    }

    fn filter_changed(&mut self) {
        self.apply_filter();
        self.selection_changed();
    }

    fn on_preview_key(&mut self, key: KeyEvent) {
        let page = self.preview_rows.max(1);
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll += 1,
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(page),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll += page,
            KeyCode::Home | KeyCode::Char('g') => self.scroll = 0,
            KeyCode::End | KeyCode::Char('G') => self.scroll = usize::MAX / 2,
            KeyCode::Char('t') => self.unfold = !self.unfold,
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.clear_filter();
                self.mode = Mode::List;
            }
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => self.mode = Mode::List,
            _ => {}
        }
    }

    fn on_lineage_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => {
                self.lineage_scroll = self.lineage_scroll.saturating_sub(1)
            }
            KeyCode::Down | KeyCode::Char('j') => self.lineage_scroll += 1,
            KeyCode::PageUp => {
                self.lineage_scroll = self.lineage_scroll.saturating_sub(self.preview_rows)
            }
            KeyCode::PageDown => self.lineage_scroll += self.preview_rows,
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('l') => {
                self.mode = Mode::List
            }
            _ => {}
        }
    }

    fn open_lineage(&mut self) {
        let Some(row) = self.current() else { return };
        if !row.present {
            self.fail(format!(
                "session {} is shared with you but not in this store yet; `tapes storage sync` fetches it",
                row.id.short()
            ));
            return;
        }
        let id = row.id;
        self.lineage = Some(match &self.snapshot {
            Some(snapshot) => snapshot.lineage(&id).map_err(|e| e.to_string()),
            None => Err("the store is still being read; try again in a moment".into()),
        });
        self.lineage_scroll = 0;
        self.mode = Mode::Lineage;
    }

    /// The highlighted session, or a notice that there is none.
    fn target(&mut self) -> Option<(SessionId, String, bool, u64)> {
        match self.current() {
            Some(r) => Some((r.id, r.title.clone(), r.present, r.messages)),
            None => {
                self.fail("no session is selected; clear the filter (Ctrl-U) or switch tabs (Tab)");
                None
            }
        }
    }

    fn open_share(&mut self) {
        let Some((id, title, present, _)) = self.target() else {
            return;
        };
        if !present {
            self.fail(format!("session {} is not in this store yet", id.short()));
            return;
        }
        let project = self
            .current()
            .map(|r| r.project.clone())
            .unwrap_or_default();
        let audiences = match actions::audiences(&self.ctx, &project) {
            Ok(a) => a,
            Err(e) => return self.fail(e.to_string()),
        };
        let findings = actions::share_findings(&self.ctx, &id)
            .map(|f| actions::finding_lines(&f))
            .map_err(|e| e.to_string());
        self.mode = Mode::Dialog(Dialog::Share {
            id,
            title,
            findings,
            audiences,
            choice: 0,
        });
    }

    fn open_unshare(&mut self) {
        let Some((id, title, _, _)) = self.target() else {
            return;
        };
        match actions::live_shares(&self.ctx, &id, self.now_ms) {
            Ok(0) => self.fail(format!(
                "session {} is not shared; nothing to unshare",
                id.short()
            )),
            Ok(live) => self.mode = Mode::Dialog(Dialog::Unshare { id, title, live }),
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn open_copy(&mut self, kind: CopyKind) {
        let Some((id, title, present, messages)) = self.target() else {
            return;
        };
        if !present {
            self.fail(format!(
                "session {} is not in this store yet; `tapes storage sync` fetches it, then fork it",
                id.short()
            ));
            return;
        }
        self.mode = Mode::Dialog(Dialog::Copy {
            id,
            title,
            kind,
            at: String::new(),
            messages,
        });
    }

    fn open_checkout(&mut self) {
        let Some((id, title, present, _)) = self.target() else {
            return;
        };
        if !present {
            self.fail(format!("session {} is not in this store yet", id.short()));
            return;
        }
        self.mode = Mode::Dialog(Dialog::Checkout {
            id,
            title,
            platform: 0,
        });
    }

    /// The marked sessions, or the highlighted one.
    fn selection(&self) -> Vec<SessionId> {
        if self.marked.is_empty() {
            self.current().map(|r| vec![r.id]).unwrap_or_default()
        } else {
            self.marked.iter().copied().collect()
        }
    }

    fn open_save(&mut self, kind: SaveKind) {
        let ids = self.selection();
        if ids.is_empty() {
            self.fail("no session is selected; clear the filter (Ctrl-U) or switch tabs (Tab)");
            return;
        }
        let extension = match kind {
            SaveKind::Export => "json",
            SaveKind::Bundle => "tape",
        };
        let path = actions::default_path(&self.ctx, &ids, extension)
            .display()
            .to_string();
        self.mode = Mode::Dialog(Dialog::Save { kind, ids, path });
    }

    fn done(&mut self, result: Result<String, ActionError>, reload: bool) {
        self.mode = Mode::List;
        if reload {
            self.reload();
        }
        match result {
            Ok(line) => self.say(line),
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn on_dialog_key(&mut self, dialog: Dialog, key: KeyEvent) {
        let now = crate::now_ms();
        if key.code == KeyCode::Esc {
            self.mode = Mode::List;
            self.say("cancelled; nothing changed");
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match dialog {
            Dialog::Share {
                id,
                title,
                findings,
                audiences,
                choice,
            } => {
                let n = audiences.len().max(1);
                let policy = match key.code {
                    KeyCode::Left | KeyCode::Up | KeyCode::BackTab => {
                        self.mode = Mode::Dialog(Dialog::Share {
                            id,
                            title,
                            findings,
                            audiences,
                            choice: (choice + n - 1) % n,
                        });
                        return;
                    }
                    KeyCode::Right | KeyCode::Down | KeyCode::Tab => {
                        self.mode = Mode::Dialog(Dialog::Share {
                            id,
                            title,
                            findings,
                            audiences,
                            choice: (choice + 1) % n,
                        });
                        return;
                    }
                    KeyCode::Enter | KeyCode::Char('y') => SecretPolicy::Block,
                    KeyCode::Char('r') => SecretPolicy::Redact,
                    KeyCode::Char('a') => SecretPolicy::Allow,
                    _ => return,
                };
                let Some(audience) = audiences.get(choice) else {
                    return self.done(
                        Err(ActionError::Refused("no audience to share with".into())),
                        false,
                    );
                };
                let found = findings.as_ref().map_or(0, |f| f.len());
                if found > 0 && policy == SecretPolicy::Block {
                    // Stay in the dialog: the findings are on screen, the choice is theirs.
                    self.fail(format!(
                        "{} found; press r to share a redacted copy, a to share as is, Esc to cancel",
                        crate::views::render::plural(found, "possible secret")
                    ));
                    return;
                }
                let result = actions::share(&self.ctx, &id, audience, policy, now);
                self.done(result, true);
            }
            Dialog::Unshare { id, .. } => match key.code {
                KeyCode::Enter | KeyCode::Char('y') => {
                    let result = actions::unshare(&self.ctx, &id, now);
                    self.done(result, true);
                }
                KeyCode::Char('n') => {
                    self.mode = Mode::List;
                    self.say("cancelled; nothing changed");
                }
                _ => {}
            },
            Dialog::Copy {
                id,
                title,
                kind,
                mut at,
                messages,
            } => match key.code {
                KeyCode::Char(c) if c.is_ascii_digit() => {
                    at.push(c);
                    self.mode = Mode::Dialog(Dialog::Copy {
                        id,
                        title,
                        kind,
                        at,
                        messages,
                    });
                }
                KeyCode::Backspace => {
                    at.pop();
                    self.mode = Mode::Dialog(Dialog::Copy {
                        id,
                        title,
                        kind,
                        at,
                        messages,
                    });
                }
                KeyCode::Char('u') if ctrl => {
                    self.mode = Mode::Dialog(Dialog::Copy {
                        id,
                        title,
                        kind,
                        at: String::new(),
                        messages,
                    });
                }
                KeyCode::Enter => {
                    let n = if at.is_empty() {
                        None
                    } else {
                        match at.parse::<u64>() {
                            Ok(n) => Some(n),
                            Err(_) => {
                                self.fail(format!("`{at}` is not a message count; type a number or leave it empty for all"));
                                return;
                            }
                        }
                    };
                    match actions::copy(&self.ctx, kind, &id, n, now) {
                        Ok((new, line)) => {
                            self.done(Ok(line), true);
                            self.select(&new);
                            self.selection_changed();
                        }
                        Err(e) => self.done(Err(e), false),
                    }
                }
                _ => {}
            },
            Dialog::Checkout {
                id,
                title,
                platform,
            } => {
                let n = PLATFORMS.len();
                let choose = |p: usize| Dialog::Checkout {
                    id,
                    title: title.clone(),
                    platform: p,
                };
                match key.code {
                    KeyCode::Left | KeyCode::Up | KeyCode::BackTab => {
                        self.mode = Mode::Dialog(choose((platform + n - 1) % n))
                    }
                    KeyCode::Right | KeyCode::Down | KeyCode::Tab => {
                        self.mode = Mode::Dialog(choose((platform + 1) % n))
                    }
                    KeyCode::Char(c @ '1'..='4') => {
                        self.mode = Mode::Dialog(choose(c as usize - '1' as usize))
                    }
                    KeyCode::Enter => {
                        let p = PLATFORMS[platform.min(n - 1)];
                        let result = actions::checkout(&self.ctx, &id, p, now).map(|(_, l)| l);
                        self.done(result, false);
                    }
                    KeyCode::Char('r') => {
                        let p = PLATFORMS[platform.min(n - 1)];
                        if p == Platform::File {
                            self.fail("a file cannot be resumed; pick claude, codex or gemini");
                            return;
                        }
                        if let Err(e) = actions::check_agent(p) {
                            self.done(Err(e), false);
                            return;
                        }
                        self.mode = Mode::List;
                        self.request = Some(Request::Resume { id, platform: p });
                    }
                    _ => {}
                }
            }
            Dialog::Save {
                kind,
                ids,
                mut path,
            } => match key.code {
                KeyCode::Char('u') if ctrl => {
                    path.clear();
                    self.mode = Mode::Dialog(Dialog::Save { kind, ids, path });
                }
                KeyCode::Char(c) if !ctrl => {
                    path.push(c);
                    self.mode = Mode::Dialog(Dialog::Save { kind, ids, path });
                }
                KeyCode::Backspace => {
                    path.pop();
                    self.mode = Mode::Dialog(Dialog::Save { kind, ids, path });
                }
                KeyCode::Enter => {
                    if path.trim().is_empty() {
                        self.fail("type a file name first");
                        return;
                    }
                    let target = std::path::PathBuf::from(path.trim());
                    let target = if target.is_absolute() {
                        target
                    } else {
                        self.ctx.dir.join(target)
                    };
                    let result = match kind {
                        SaveKind::Export => actions::export(&self.ctx, &ids, &target, now),
                        SaveKind::Bundle => actions::bundle(&self.ctx, &ids, &target, now),
                    };
                    // A bundle may have made redacted copies; an export changes nothing.
                    self.done(result, kind == SaveKind::Bundle);
                }
                _ => {}
            },
        }
    }
}
