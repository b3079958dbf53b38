//! Drawing the deck: tabs, the filter bar (with what is wrong with it, in place), the list of
//! the current tab (only the rows on screen are built, so a frame costs the same at 100,000
//! sessions as at 10), the preview or lineage pane, the Team tab's dashboard (SPEC.md §13
//! stats), dialogs, and a status line of keys. Pure: it reads [`App`] and writes a frame.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Tabs, Wrap,
};
use ratatui::Frame;

use super::app::{App, Dialog, Mode, SaveKind, Tab, PLATFORMS};
use super::preview::{cut, printable};
use crate::views::listing::{group_of, relative, Dashboard, SessionRow};
use crate::views::render::{plural, usd};

const ACCENT: Color = Color::Cyan;
const DIM: Style = Style::new().fg(Color::DarkGray);
const BAD: Style = Style::new().fg(Color::Red);
const GOOD: Style = Style::new().fg(Color::Green);
const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);

/// Draws the whole deck.
pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    let [tabs, bar, main, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tabs(frame, app, tabs);
    draw_filter(frame, app, bar);
    let main = if app.tab == Tab::Team {
        let [dash, rest] =
            Layout::vertical([Constraint::Length(9), Constraint::Min(3)]).areas(main);
        draw_dashboard(frame, app, dash);
        rest
    } else {
        main
    };
    let [list, side] =
        Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(main);
    draw_list(frame, app, list);
    match app.mode {
        Mode::Lineage => draw_lineage(frame, app, side),
        _ => draw_preview(frame, app, side),
    }
    draw_status(frame, app, status);
    if let Mode::Dialog(dialog) = &app.mode {
        let dialog = dialog.clone();
        draw_dialog(frame, app, &dialog, area);
    }
}

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let titles: Vec<Line> = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if app.loading() {
                return Line::raw(format!(" {} (…) ", t.title()));
            }
            let n = app.panes[i].listing.len();
            Line::raw(format!(" {} ({n}) ", t.title()))
        })
        .collect();
    let selected = Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0);
    let [left, right] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(12)]).areas(area);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(
                Style::new()
                    .fg(Color::Black)
                    .bg(ACCENT)
                    .add_modifier(Modifier::BOLD),
            )
            .divider("│"),
        left,
    );
    frame.render_widget(
        Paragraph::new(Line::styled("tapes deck ", DIM)).right_aligned(),
        right,
    );
}

fn draw_filter(frame: &mut Frame, app: &App, area: Rect) {
    let typing = app.mode == Mode::Filter;
    let border = match (&app.filter_error, typing) {
        (Some(_), _) => BAD,
        (None, true) => Style::new().fg(ACCENT),
        (None, false) => DIM,
    };
    let pane = &app.panes[Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0)];
    let count = format!(
        " {} of {} ",
        pane.hits.len(),
        plural(pane.listing.len(), "session")
    );
    let cursor = if typing { "▏" } else { "" };
    let text = if app.filter_text.is_empty() && !typing {
        Line::styled("press / to filter", DIM)
    } else {
        Line::from(vec![
            Span::raw(app.filter_text.clone()),
            Span::styled(cursor, Style::new().fg(ACCENT)),
        ])
    };
    let second = match &app.filter_error {
        Some(e) => Line::styled(format!("✗ {e}"), BAD),
        None => Line::styled(
            "project: model: teammate: status: since: until: cost: vis: is:  · words match by prefix · Ctrl-U clears",
            DIM,
        ),
    };
    frame.render_widget(
        Paragraph::new(vec![text, second]).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(border)
                .title(" / Filter ")
                .title_top(Line::raw(count).right_aligned()),
        ),
        area,
    );
}

/// `claude-sonnet-4-5-20250929` → `sonnet-4-5`.
fn short_model(model: &str) -> String {
    let model = printable(model);
    let m = model.strip_prefix("claude-").unwrap_or(&model);
    match m.rsplit_once('-') {
        Some((head, date)) if date.len() == 8 && date.chars().all(|c| c.is_ascii_digit()) => {
            head.to_string()
        }
        _ => m.to_string(),
    }
}

fn cost_text(row: &SessionRow) -> String {
    match row.cost {
        Some(c) if row.unpriced.is_empty() => usd(c),
        Some(c) => format!("{}?", usd(c)),
        None => "-".into(),
    }
}

/// One row of the list of `tab`.
fn row_of(
    tab: Tab,
    r: &SessionRow,
    marked: &std::collections::BTreeSet<tapes_protocol::SessionId>,
    now: i64,
) -> Row<'static> {
    let mark = if marked.contains(&r.id) { "●" } else { " " };
    let unread = r.share.as_ref().is_some_and(|s| s.unread);
    let title_style = if unread { BOLD } else { Style::new() };
    let title = Cell::from(Span::styled(printable(&r.title).into_owned(), title_style));
    let cost = Cell::from(Line::raw(cost_text(r)).right_aligned());
    let status = Cell::from(r.status.map_or("-", |s| s.as_str()));
    let cells: Vec<Cell> = match tab {
        Tab::Mine => vec![
            Cell::from(mark),
            Cell::from(relative(r.when_ms(), now)),
            title,
            Cell::from(printable(&r.project).into_owned()),
            Cell::from(short_model(&r.model)),
            status,
            cost,
            Cell::from(r.visibility.label().to_string()),
        ],
        Tab::Shared => vec![
            Cell::from(if unread && mark == " " {
                Span::styled("●", Style::new().fg(ACCENT))
            } else {
                Span::raw(mark)
            }),
            Cell::from(relative(r.when_ms(), now)),
            Cell::from(printable(r.who()).into_owned()),
            title,
            Cell::from(printable(&r.project).into_owned()),
            Cell::from(short_model(&r.model)),
            cost,
            Cell::from(printable(r.note.as_deref().unwrap_or_default()).into_owned()),
        ],
        Tab::Team => vec![
            Cell::from(mark),
            Cell::from(relative(r.when_ms(), now)),
            Cell::from(printable(&r.owner_name).into_owned()),
            title,
            Cell::from(printable(&r.project).into_owned()),
            Cell::from(short_model(&r.model)),
            status,
            cost,
        ],
    };
    Row::new(cells)
}

/// The header and column widths of `tab`'s list (the title takes what is left).
fn columns(tab: Tab) -> (Vec<&'static str>, Vec<Constraint>) {
    use Constraint::{Length, Min};
    match tab {
        Tab::Mine => (
            vec![
                "", "WHEN", "TITLE", "PROJECT", "MODEL", "STATUS", "COST", "VISIBLE",
            ],
            vec![
                Length(1),
                Length(10),
                Min(16),
                Length(12),
                Length(10),
                Length(9),
                Length(8),
                Length(9),
            ],
        ),
        Tab::Shared => (
            vec![
                "", "WHEN", "FROM", "TITLE", "PROJECT", "MODEL", "COST", "NOTE",
            ],
            vec![
                Length(1),
                Length(10),
                Length(9),
                Min(16),
                Length(12),
                Length(10),
                Length(8),
                Length(16),
            ],
        ),
        Tab::Team => (
            vec![
                "", "WHEN", "WHO", "TITLE", "PROJECT", "MODEL", "STATUS", "COST",
            ],
            vec![
                Length(1),
                Length(10),
                Length(9),
                Min(16),
                Length(12),
                Length(10),
                Length(9),
                Length(8),
            ],
        ),
    }
}

fn draw_list(frame: &mut Frame, app: &mut App, area: Rect) {
    let tab = app.tab;
    let focused = matches!(app.mode, Mode::List | Mode::Filter);
    let height = area.height.saturating_sub(3) as usize; // borders and header
    app.list_rows = height.max(1);
    let now = app.now_ms;
    let offset_secs = crate::views::listing::local_offset_secs();
    let loading = app.loading();
    let load_error = app.load_error.clone();
    let marked = app.marked.clone();
    let i = Tab::ALL.iter().position(|t| *t == tab).unwrap_or(0);
    let pane = &mut app.panes[i];
    if pane.cursor < pane.offset {
        pane.offset = pane.cursor;
    }
    if height > 0 && pane.cursor >= pane.offset + height {
        pane.offset = pane.cursor + 1 - height;
    }
    // The Shared tab puts a group heading (TODAY, YESTERDAY, THIS WEEK, EARLIER) above the
    // first row of each group on screen; headings take rows, so the window may have to start
    // later for the cursor to stay visible. Only the rows on screen are built.
    let mut rows: Vec<Row> = Vec::with_capacity(height);
    let mut selected_at = 0;
    loop {
        rows.clear();
        let mut last_group = None;
        let mut seen_cursor = false;
        for (n, &index) in pane.hits.iter().enumerate().skip(pane.offset) {
            if rows.len() >= height {
                break;
            }
            let Some(r) = pane.listing.get(index) else {
                continue;
            };
            if tab == Tab::Shared {
                let group = group_of(r.when_ms(), now, offset_secs);
                if last_group != Some(group) {
                    last_group = Some(group);
                    rows.push(Row::new(vec![
                        Cell::from(""),
                        Cell::from(Span::styled(
                            group.label(),
                            Style::new().fg(ACCENT).add_modifier(Modifier::BOLD),
                        )),
                    ]));
                    if rows.len() >= height {
                        break;
                    }
                }
            }
            if n == pane.cursor {
                selected_at = rows.len();
                seen_cursor = true;
            }
            rows.push(row_of(tab, r, &marked, now));
        }
        if seen_cursor || pane.offset >= pane.cursor {
            break;
        }
        pane.offset += 1;
    }
    let border = if focused {
        Style::new().fg(ACCENT)
    } else {
        DIM
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(border)
        .title(format!(" {} ", tab.title()));
    if pane.hits.is_empty() {
        let (why, style) = match load_error {
            Some(e) => (format!("✗ cannot read the store: {e}"), BAD),
            None if loading => (
                "reading the store (and bringing the search index up to date)…".to_string(),
                DIM,
            ),
            None if pane.listing.is_empty() => (
                match tab {
                    Tab::Mine => "no sessions yet: `tapes import ~/.claude/projects` brings your agent sessions in",
                    Tab::Shared => "nothing is shared with you yet; `tapes storage sync` fetches what your teams share",
                    Tab::Team => "no team sessions: create or join a team (`tapes team create NAME`)",
                }
                .to_string(),
                DIM,
            ),
            None => ("nothing matches the filter; Ctrl-U clears it".to_string(), DIM),
        };
        frame.render_widget(
            Paragraph::new(Line::styled(why, style))
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let (header, widths) = columns(tab);
    let mut state = TableState::default();
    state.select(Some(selected_at));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(DIM))
        .row_highlight_style(
            Style::new()
                .bg(Color::DarkGray)
                .add_modifier(Modifier::BOLD),
        )
        .block(block);
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_preview(frame: &mut Frame, app: &mut App, area: Rect) {
    let focused = app.mode == Mode::Preview;
    let inner_width = area.width.saturating_sub(2) as usize;
    let height = area.height.saturating_sub(2) as usize;
    app.preview_rows = height.max(1);
    let fold = if app.unfold { "t folds" } else { "t unfolds" };
    let title = if focused {
        format!(" Preview — ↑↓ PgUp/PgDn scroll · {fold} · Esc back ")
    } else {
        " Preview — Enter to read ".to_string()
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(if focused {
            Style::new().fg(ACCENT)
        } else {
            DIM
        })
        .title(title);
    let error = match &app.preview {
        None => Some("nothing selected".to_string()),
        Some(p) => p.body.as_ref().err().cloned(),
    };
    if let Some(e) = error {
        frame.render_widget(
            Paragraph::new(Line::styled(e, BAD))
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let scroll = app.scroll;
    let lines = app.preview_lines(inner_width);
    let max = lines.len().saturating_sub(height);
    let top = scroll.min(max);
    let shown: Vec<Line> = lines.iter().skip(top).take(height).cloned().collect();
    let total = lines.len();
    app.scroll = top;
    let block = if total > height {
        block.title_bottom(
            Line::styled(
                format!(" {}–{} of {total} ", top + 1, (top + height).min(total)),
                DIM,
            )
            .right_aligned(),
        )
    } else {
        block
    };
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

fn draw_lineage(frame: &mut Frame, app: &mut App, area: Rect) {
    let width = area.width.saturating_sub(2) as usize;
    let height = area.height.saturating_sub(2) as usize;
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(ACCENT))
        .title(" Lineage — branches and forks · ↑↓ scroll · Esc back ");
    let lines: Vec<Line> = match &app.lineage {
        None => vec![Line::styled("no lineage", DIM)],
        Some(Err(e)) => vec![Line::styled(e.clone(), BAD)],
        Some(Ok(graph)) => {
            let mut out: Vec<Line> = graph
                .picture(app.now_ms, Some(width))
                .lines()
                .map(|l| {
                    let l = printable(l).into_owned();
                    if l.ends_with('◀') {
                        Line::styled(l, BOLD)
                    } else {
                        Line::raw(l)
                    }
                })
                .collect();
            if graph.nodes.len() <= 1 {
                out.push(Line::raw(""));
                out.push(Line::styled(
                    "no branches or forks yet: b branches it, f forks a teammate's",
                    DIM,
                ));
            }
            out
        }
    };
    let max = lines.len().saturating_sub(height);
    app.lineage_scroll = app.lineage_scroll.min(max);
    let shown: Vec<Line> = lines
        .into_iter()
        .skip(app.lineage_scroll)
        .take(height)
        .collect();
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

fn delta(change: Option<f64>) -> Span<'static> {
    match change {
        Some(c) if c > 0.5 => Span::styled(format!(" ▲{c:.0}%"), GOOD),
        Some(c) if c < -0.5 => Span::styled(format!(" ▼{:.0}%", -c), BAD),
        Some(_) => Span::styled(" =", DIM),
        None => Span::raw(""),
    }
}

fn bar(value: f64, max: f64, width: usize) -> String {
    if max <= 0.0 {
        return String::new();
    }
    let n = ((value / max) * width as f64).round() as usize;
    "█".repeat(n.min(width))
}

fn dashboard_lines(d: &Dashboard, width: usize) -> Vec<Line<'static>> {
    let s = &d.stats;
    let c = &s.current;
    let mut out = vec![
        Line::from(vec![
            Span::styled(format!("{} ", d.scope), BOLD),
            Span::styled(
                format!(
                    "· {} · last {} days",
                    plural(d.members, "member"),
                    d.period_ms / 86_400_000
                ),
                DIM,
            ),
        ]),
        Line::from(vec![
            Span::raw(format!("sessions {}", c.sessions)),
            delta(s.change.sessions),
            Span::raw(format!("   cost {}", usd(c.cost))),
            delta(s.change.cost),
            Span::raw(format!("   avg {}", usd(c.avg_cost))),
            delta(s.change.avg_cost),
            Span::raw(format!(
                "   tokens {}",
                crate::views::render::count(c.tokens)
            )),
            delta(s.change.tokens),
        ]),
    ];
    let days: Vec<f64> = s.by_day.iter().map(|r| r.cost).collect();
    let spark = crate::views::stats::sparkline(&days);
    out.push(Line::from(vec![
        Span::styled("cost per day ", DIM),
        Span::styled(
            cut(&spark, width.saturating_sub(14)),
            Style::new().fg(ACCENT),
        ),
    ]));
    let half = width / 2;
    let max_member = s.by_member.iter().map(|r| r.cost).fold(0.0, f64::max);
    let max_model = s.by_model.iter().map(|r| r.cost).fold(0.0, f64::max);
    for i in 0..3 {
        let left = s.by_member.get(i).map_or(String::new(), |r| {
            format!(
                "{:<12} {:>8} {}",
                cut(&r.label, 12),
                usd(r.cost),
                bar(r.cost, max_member, 12)
            )
        });
        let right = s.by_model.get(i).map_or(String::new(), |r| {
            format!(
                "{:<18} {:>8} {}",
                cut(&r.label, 18),
                usd(r.cost),
                bar(r.cost, max_model, 12)
            )
        });
        let label_l = if i == 0 { "by member " } else { "          " };
        let label_r = if i == 0 { "by model " } else { "         " };
        out.push(Line::from(vec![
            Span::styled(label_l, DIM),
            Span::raw(format!(
                "{:<w$}",
                cut(&left, half.saturating_sub(10)),
                w = half.saturating_sub(10)
            )),
            Span::styled(label_r, DIM),
            Span::raw(right),
        ]));
    }
    if let Some(share) = d.recent_shares.first() {
        let who = share.share.as_ref().map_or("", |s| s.sharer_name.as_str());
        out.push(Line::from(vec![
            Span::styled("latest share ", DIM),
            Span::raw(printable(&format!("{who}: {}", share.title)).into_owned()),
        ]));
    }
    out
}

fn draw_dashboard(frame: &mut Frame, app: &App, area: Rect) {
    let width = area.width.saturating_sub(2) as usize;
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(DIM)
        .title(" Team ");
    let lines = match &app.dashboard {
        None => vec![Line::styled("loading…", DIM)],
        Some(Err(e)) => vec![Line::styled(e.clone(), BAD)],
        Some(Ok(d)) => dashboard_lines(d, width),
    };
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let line = match (&app.notice, &app.mode) {
        (Some(n), _) if n.error => Line::styled(format!("✗ {}", n.text), BAD),
        (Some(n), _) => Line::styled(format!("✓ {}", n.text), GOOD),
        (None, Mode::Filter) => Line::styled(
            "typing filters as you go · ↑↓ move · Enter/Esc back to the list · Ctrl-U clears · Tab next tab",
            DIM,
        ),
        (None, _) if app.pick => Line::styled(
            "↑↓ move · / filter · Space mark · Enter read · Tab tabs · q/Esc done (prints the ids) · Ctrl-C cancel",
            DIM,
        ),
        (None, _) => Line::styled(
            "↑↓ move · / filter · Tab · Enter read · l lineage · Space mark · s share · u unshare · b branch · f fork · c checkout/resume · e export · B bundle · q quit",
            DIM,
        ),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn draw_dialog(frame: &mut Frame, app: &App, dialog: &Dialog, area: Rect) {
    let width = area.width.saturating_sub(8).min(100);
    let inner = width.saturating_sub(4) as usize;
    let mut lines: Vec<Line> = Vec::new();
    let title;
    match dialog {
        Dialog::Share {
            id,
            title: t,
            findings,
            audiences,
            choice,
        } => {
            title = " Share ".to_string();
            lines.push(Line::from(vec![
                Span::raw(format!("{}  ", id.short())),
                Span::styled(cut(&printable(t), inner.saturating_sub(14)), BOLD),
            ]));
            lines.push(Line::raw(""));
            let mut with = vec![Span::raw("with  ")];
            for (i, a) in audiences.iter().enumerate() {
                let style = if i == *choice {
                    Style::new().fg(Color::Black).bg(ACCENT)
                } else {
                    Style::new()
                };
                with.push(Span::styled(format!(" {} ", a.label), style));
                with.push(Span::raw(" "));
            }
            lines.push(Line::from(with));
            lines.push(Line::styled("      ←/→ chooses", DIM));
            lines.push(Line::raw(""));
            match findings {
                Err(e) => lines.push(Line::styled(format!("the secret scan failed: {e}"), BAD)),
                Ok(found) if found.is_empty() => {
                    lines.push(Line::styled("secret scan: nothing found", GOOD))
                }
                Ok(found) => {
                    lines.push(Line::styled(
                        format!(
                            "secret scan: {} (masked):",
                            plural(found.len(), "possible secret")
                        ),
                        BAD,
                    ));
                    for f in found.iter().take(8) {
                        lines.push(Line::styled(
                            format!("  {}", cut(f, inner.saturating_sub(2))),
                            BAD,
                        ));
                    }
                    if found.len() > 8 {
                        lines.push(Line::styled(
                            format!("  … and {} more", found.len() - 8),
                            BAD,
                        ));
                    }
                }
            }
            lines.push(Line::raw(""));
            let found = findings.as_ref().map_or(0, |f| f.len());
            lines.push(Line::styled(
                if found == 0 {
                    "Enter shares · Esc cancels"
                } else {
                    "r shares a redacted copy (the original stays here) · a shares as is · Esc cancels"
                },
                BOLD,
            ));
        }
        Dialog::Unshare { id, title: t, live } => {
            title = " Unshare ".to_string();
            lines.push(Line::from(vec![
                Span::raw(format!("{}  ", id.short())),
                Span::styled(cut(&printable(t), inner.saturating_sub(14)), BOLD),
            ]));
            lines.push(Line::raw(""));
            lines.push(Line::raw(format!(
                "Revoke {} of this session? Access ends now.",
                plural(*live, "live share")
            )));
            lines.push(Line::raw(""));
            lines.push(Line::styled("y/Enter unshares · n/Esc cancels", BOLD));
        }
        Dialog::Copy {
            id,
            title: t,
            kind,
            at,
            messages,
        } => {
            let verb = match kind {
                super::actions::CopyKind::Branch => "Branch",
                super::actions::CopyKind::Fork => "Fork",
            };
            title = format!(" {verb} ");
            lines.push(Line::from(vec![
                Span::raw(format!("{}  ", id.short())),
                Span::styled(cut(&printable(t), inner.saturating_sub(14)), BOLD),
            ]));
            lines.push(Line::raw(""));
            lines.push(Line::from(vec![
                Span::raw("share the first "),
                Span::styled(
                    if at.is_empty() {
                        format!("{messages} (all)")
                    } else {
                        at.clone()
                    },
                    Style::new().fg(ACCENT).add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(
                    " of {} (type a number)",
                    plural(*messages as usize, "message")
                )),
            ]));
            lines.push(Line::styled(
                "the new session is yours and stays here until `tapes push`",
                DIM,
            ));
            lines.push(Line::raw(""));
            let enter = match kind {
                super::actions::CopyKind::Branch => "Enter branches · Esc cancels",
                super::actions::CopyKind::Fork => "Enter forks · Esc cancels",
            };
            lines.push(Line::styled(enter, BOLD));
        }
        Dialog::Checkout {
            id,
            title: t,
            platform,
        } => {
            title = " Checkout / resume ".to_string();
            lines.push(Line::from(vec![
                Span::raw(format!("{}  ", id.short())),
                Span::styled(cut(&printable(t), inner.saturating_sub(14)), BOLD),
            ]));
            lines.push(Line::raw(""));
            let mut choice = vec![Span::raw("for  ")];
            for (i, p) in PLATFORMS.iter().enumerate() {
                let style = if i == *platform {
                    Style::new().fg(Color::Black).bg(ACCENT)
                } else {
                    Style::new()
                };
                choice.push(Span::styled(format!(" {} {} ", i + 1, p.name()), style));
                choice.push(Span::raw(" "));
            }
            lines.push(Line::from(choice));
            lines.push(Line::styled(format!("into {}", app.ctx.dir.display()), DIM));
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                "Enter writes it for the agent · r also resumes it here (the deck comes back) · Esc cancels",
                BOLD,
            ));
        }
        Dialog::Save { kind, ids, path } => {
            let (name, what) = match kind {
                SaveKind::Export => (" Export ", "json, jsonl or csv, from the extension"),
                SaveKind::Bundle => (" Bundle ", "sealed to your own key: a personal backup"),
            };
            title = name.to_string();
            lines.push(Line::raw(format!(
                "{} ({what}); every session passes the secret gate",
                plural(ids.len(), "session")
            )));
            lines.push(Line::raw(""));
            lines.push(Line::from(vec![
                Span::raw("to "),
                Span::styled(format!("{path}▏"), Style::new().fg(ACCENT)),
            ]));
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                "Enter writes · Ctrl-U clears · Esc cancels",
                BOLD,
            ));
        }
    }
    let height = (lines.len() as u16 + 2).min(area.height);
    let rect = centered(area, width, height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(Style::new().fg(ACCENT))
                .title(title),
        ),
        rect,
    );
}
