//! The listings as terminal text: the `tapes sessions` table, the `tapes shared` feed (groups
//! TODAY / YESTERDAY / THIS WEEK / EARLIER with relative times) and the facts `tapes show`
//! adds to a transcript's header. Tables fit the given width ([`crate::views::table`]); the
//! `--json` forms carry every field uncut.

use std::fmt::Write as _;

use super::{grouped, relative, Listing, SessionRow};
use crate::views::render;
use crate::views::table::{self, Column};

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn cost(row: &SessionRow) -> String {
    cost_cell(row.cost, !row.unpriced.is_empty())
}

/// `$1.20`, `$1.20+?` when some usage has no price, `?` when none has, `-` when unknown.
pub(super) fn cost_cell(cost: Option<f64>, unpriced: bool) -> String {
    match cost {
        None => "-".into(),
        Some(c) if unpriced && c == 0.0 => "?".into(),
        Some(c) if unpriced => format!("{}+?", render::usd(c)),
        Some(c) => render::usd(c),
    }
}

/// The columns of the `tapes sessions` table (the title gives way first).
pub(super) const SESSION_COLUMNS: [Column; 14] = [
    Column::fixed("ID"),
    Column::fixed("STARTED").optional(3),
    Column::right("DURATION").optional(6),
    Column::left("PROJECT", 8).comfort(14),
    Column::left("AGENT", 6).optional(7).comfort(11),
    Column::left("MODEL", 10).comfort(16),
    Column::left("OWNER", 6).comfort(10),
    Column::left("VISIBILITY", 10).optional(1).comfort(14),
    Column::fixed("STATUS"),
    Column::right("COST"),
    Column::right("MSGS").optional(4),
    Column::right("TOKENS").optional(5),
    Column::left("FROM", 8).optional(2).comfort(24),
    Column::left("TITLE", 12).comfort(30),
];

/// `fork of 3f2a1b0c9d8e #5`: where a branch or fork comes from, or `-`.
pub fn origin(row: &SessionRow) -> String {
    match &row.origin {
        Some(o) => format!(
            "{} of {} #{}",
            o.kind.as_str(),
            o.parent.short(),
            o.base_count
        ),
        None => "-".into(),
    }
}

/// The `tapes sessions` table, fitted to `width` (the title gives way first).
pub fn sessions_table(rows: &[&SessionRow], width: Option<usize>) -> String {
    let columns = SESSION_COLUMNS;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.short(),
                render::time(Some(r.started_ms)),
                render::duration(r.duration_ms),
                or_dash(&r.project),
                or_dash(&r.agent),
                or_dash(&r.model),
                r.owner_name.clone(),
                r.visibility.label().to_string(),
                r.status.map_or("-", |s| s.as_str()).to_string(),
                cost(r),
                r.messages.to_string(),
                render::count(r.tokens),
                origin(r),
                r.title.clone(),
            ]
        })
        .collect();
    table::render(&columns, &cells, width)
}

/// The `tapes shared` feed: rows (indices into `listing`) grouped by when they were shared,
/// `●` marking unread ones.
pub fn shared_feed(
    listing: &Listing,
    indices: &[usize],
    now_ms: i64,
    offset_secs: i32,
    width: Option<usize>,
) -> String {
    let columns = [
        Column::fixed(" "),
        Column::fixed("ID"),
        Column::fixed("WHEN"),
        Column::left("SHARER", 6).comfort(10),
        Column::left("WITH", 6).optional(3).comfort(14),
        Column::left("TITLE", 12).comfort(30),
        Column::left("PROJECT", 8).optional(2).comfort(14),
        Column::left("MODEL", 10).optional(4).comfort(16),
        Column::right("COST"),
        Column::left("NOTE", 8).optional(1).comfort(24),
    ];
    let rows: Vec<&SessionRow> = indices.iter().filter_map(|&i| listing.get(i)).collect();
    let groups = grouped(&rows, |r| r.when_ms(), now_ms, offset_secs)
        .into_iter()
        .map(|(group, members)| {
            let cells = members
                .into_iter()
                .map(|i| {
                    let r = rows[i];
                    let share = r.share.as_ref();
                    vec![
                        if share.is_some_and(|s| s.unread) {
                            "●".into()
                        } else {
                            " ".into()
                        },
                        r.id.short(),
                        relative(r.when_ms(), now_ms),
                        r.who().to_string(),
                        share.map_or_else(|| "-".into(), |s| s.audience.label().to_string()),
                        r.title.clone(),
                        or_dash(&r.project),
                        or_dash(&r.model),
                        cost(r),
                        share
                            .and_then(|s| s.note.clone())
                            .map_or_else(|| "-".into(), |n| format!("\"{n}\"")),
                    ]
                })
                .collect();
            (group.label().to_string(), cells)
        })
        .collect::<Vec<_>>();
    table::render_grouped(&columns, &groups, width)
}

/// What `tapes show` adds under a transcript's first lines: owner, visibility, status, cost;
/// the parent and base of a branch or fork; who shared it with me; its note and tags.
pub fn show_lines(row: &SessionRow, now_ms: i64) -> String {
    let mut out = String::new();
    let mut facts = vec![
        format!("owner {}", row.owner_name),
        format!("visibility {}", visibility(row)),
        format!("status {}", row.status.map_or("-", |s| s.as_str())),
        format!("cost {}", cost(row)),
    ];
    if !row.unpriced.is_empty() {
        facts.push(format!("unpriced {}", row.unpriced.join(", ")));
    }
    let _ = writeln!(
        out,
        "owner   {}",
        facts.join(" · ").trim_start_matches("owner ")
    );
    if let Some(o) = &row.origin {
        let _ = writeln!(
            out,
            "{:<7} of session {} after message {}{}",
            o.kind.as_str(),
            o.parent.short(),
            o.base_count,
            o.base
                .map(|b| format!(" (base node {})", b.short()))
                .unwrap_or_default()
        );
    }
    if let Some(s) = &row.share {
        let _ = writeln!(
            out,
            "shared  by {} with {} {} ({}){}",
            s.sharer_name,
            s.audience.label(),
            relative(s.shared_ms, now_ms),
            render::time(Some(s.shared_ms)),
            s.expires_ms
                .map(|e| format!(" · until {}", render::time(Some(e))))
                .unwrap_or_default()
        );
    }
    if let Some(note) = row.note.as_deref().filter(|n| !n.trim().is_empty()) {
        let _ = writeln!(out, "note    {}", note.trim());
    }
    if !row.tags.is_empty() {
        let _ = writeln!(out, "tags    {}", row.tags.join(", "));
    }
    out
}

/// `private`, `team Paper Compute`, or `public`.
fn visibility(row: &SessionRow) -> String {
    match &row.visibility {
        super::Shown::Team { name, .. } => format!("team {name}"),
        other => other.label().to_string(),
    }
}
