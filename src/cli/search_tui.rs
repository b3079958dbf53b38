//! `tapes search -i`: type to filter (the index is queried again on every key), ↑/↓ move, Tab
//! selects, Enter shows the transcript (↑/↓/PgUp/PgDn scroll, Esc back), Esc quits and returns
//! the selected ids (or the highlighted one); Ctrl-C quits returning nothing.
//!
//! The UI draws on stderr, so stdout stays free for the ids: `tapes search -i | tapes share`.

use std::collections::BTreeSet;
use std::io::IsTerminal;

use anyhow::{bail, Context};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph};
use ratatui::Terminal;
use tapes::protocol::SessionId;
use tapes::session::pricing::PriceTable;
use tapes::store::Store;
use tapes::views::render;
use tapes::views::search::{Hit, SearchIndex, SearchQuery};

struct App<'a> {
    store: &'a Store,
    index: &'a SearchIndex,
    prices: &'a PriceTable,
    base: SearchQuery,
    text: String,
    hits: Vec<Hit>,
    state: ListState,
    selected: BTreeSet<SessionId>,
    /// The transcript being shown and its scroll offset.
    showing: Option<(Vec<String>, u16)>,
    error: Option<String>,
}

impl App<'_> {
    fn refresh(&mut self) {
        let mut q = self.base.clone();
        q.text = self.text.clone();
        match self.index.search(self.store, &q, self.prices) {
            Ok(hits) => {
                self.hits = hits;
                self.error = None;
            }
            Err(e) => self.error = Some(e.to_string()),
        }
        let len = self.hits.len();
        self.state.select(if len == 0 {
            None
        } else {
            Some(self.state.selected().unwrap_or(0).min(len - 1))
        });
    }

    fn current(&self) -> Option<&Hit> {
        self.state.selected().and_then(|i| self.hits.get(i))
    }

    fn show(&mut self) {
        let Some(hit) = self.current() else { return };
        let text = match self.store.chain(&hit.record.head) {
            Ok(chain) => render::transcript(&hit.id, &hit.record, &chain),
            Err(e) => format!("cannot read this session: {e}; run `tapes fsck`"),
        };
        self.showing = Some((text.lines().map(str::to_string).collect(), 0));
    }
}

/// Runs the UI; returns the ids to print.
pub fn run(
    store: &Store,
    index: &SearchIndex,
    prices: &PriceTable,
    base: SearchQuery,
) -> anyhow::Result<Vec<SessionId>> {
    if !std::io::stderr().is_terminal() {
        bail!("`tapes search -i` needs a terminal; without -i, search prints ids for pipes");
    }
    let mut app = App {
        store,
        index,
        prices,
        text: base.text.clone(),
        base,
        hits: Vec::new(),
        state: ListState::default(),
        selected: BTreeSet::new(),
        showing: None,
        error: None,
    };
    app.refresh();
    enable_raw_mode().context("cannot switch the terminal to raw mode")?;
    let mut stderr = std::io::stderr();
    execute!(stderr, EnterAlternateScreen).context("cannot open the alternate screen")?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stderr()))?;
    let result = event_loop(&mut terminal, &mut app);
    // Restore the terminal whatever happened.
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stderr(), LeaveAlternateScreen);
    let _ = terminal.show_cursor();
    result
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<std::io::Stderr>>,
    app: &mut App,
) -> anyhow::Result<Vec<SessionId>> {
    loop {
        terminal.draw(|frame| draw(frame, app))?;
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Ok(Vec::new());
        }
        if let Some((lines, scroll)) = &mut app.showing {
            let max = lines.len().saturating_sub(1) as u16;
            match key.code {
                KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter => app.showing = None,
                KeyCode::Down | KeyCode::Char('j') => *scroll = (*scroll + 1).min(max),
                KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
                KeyCode::PageDown | KeyCode::Char(' ') => *scroll = (*scroll + 20).min(max),
                KeyCode::PageUp => *scroll = scroll.saturating_sub(20),
                KeyCode::Home => *scroll = 0,
                KeyCode::End => *scroll = max,
                _ => {}
            }
            continue;
        }
        match key.code {
            KeyCode::Esc => {
                if app.selected.is_empty() {
                    return Ok(app.current().map(|h| vec![h.id]).unwrap_or_default());
                }
                return Ok(app.selected.iter().copied().collect());
            }
            KeyCode::Enter => app.show(),
            KeyCode::Tab => {
                if let Some(id) = app.current().map(|h| h.id) {
                    if !app.selected.remove(&id) {
                        app.selected.insert(id);
                    }
                    let next = app.state.selected().map_or(0, |i| i + 1);
                    if next < app.hits.len() {
                        app.state.select(Some(next));
                    }
                }
            }
            KeyCode::Down => {
                let next = app.state.selected().map_or(0, |i| i + 1);
                if next < app.hits.len() {
                    app.state.select(Some(next));
                }
            }
            KeyCode::Up => {
                let prev = app.state.selected().map_or(0, |i| i.saturating_sub(1));
                app.state.select(if app.hits.is_empty() {
                    None
                } else {
                    Some(prev)
                });
            }
            KeyCode::Backspace => {
                app.text.pop();
                app.refresh();
            }
            KeyCode::Char(c) => {
                app.text.push(c);
                app.refresh();
            }
            _ => {}
        }
    }
}

fn draw(frame: &mut ratatui::Frame, app: &mut App) {
    let area = frame.area();
    if let Some((lines, scroll)) = &app.showing {
        let text: Vec<Line> = lines.iter().map(|l| Line::raw(l.as_str())).collect();
        let para = Paragraph::new(text).scroll((*scroll, 0)).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" transcript — ↑/↓ PgUp/PgDn scroll, Esc back "),
        );
        frame.render_widget(para, area);
        return;
    }
    let [input, list, help] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(format!("{}▏", app.text))
            .block(Block::default().borders(Borders::ALL).title(" 🔍 Search ")),
        input,
    );
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let items: Vec<ListItem> = app
        .hits
        .iter()
        .map(|h| {
            let s = &h.record.summary;
            let mark = if app.selected.contains(&h.id) {
                "● "
            } else {
                "○ "
            };
            let mut spans = vec![Span::raw(format!(
                "{mark}{}  {:<16}  {:<16}  {:<20}  {:>8}  ",
                h.id.short(),
                render::time(s.started_ms),
                cut(&s.project, 16),
                cut(&s.model, 20),
                tapes::views::render::usd(h.cost),
            ))];
            match &h.snippet {
                Some(snippet) => {
                    let mut at = 0;
                    for r in &snippet.highlights {
                        let (Some(before), Some(word)) =
                            (snippet.text.get(at..r.start), snippet.text.get(r.clone()))
                        else {
                            continue;
                        };
                        spans.push(Span::raw(before.to_string()));
                        spans.push(Span::styled(word.to_string(), bold));
                        at = r.end;
                    }
                    spans.push(Span::raw(snippet.text.get(at..).unwrap_or("").to_string()));
                }
                None => spans.push(Span::raw(s.first_prompt.clone())),
            }
            ListItem::new(Line::from(spans))
        })
        .collect();
    let title = match &app.error {
        Some(e) => format!(" {e} "),
        None => format!(
            " {}, {} selected ",
            tapes::views::render::plural(app.hits.len(), "session"),
            app.selected.len()
        ),
    };
    frame.render_stateful_widget(
        List::new(items)
            .block(Block::default().borders(Borders::ALL).title(title))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        list,
        &mut app.state,
    );
    frame.render_widget(
        Paragraph::new("type to filter · ↑/↓ move · Tab select · Enter show · Esc done (prints ids) · Ctrl-C cancel"),
        help,
    );
}

fn cut(s: &str, max: usize) -> String {
    let s = if s.is_empty() { "-" } else { s };
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
