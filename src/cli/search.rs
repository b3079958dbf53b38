//! `tapes search`, `tapes stats`, `tapes pricing`.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::json;
use tapes::duration::parse_duration_ms;
use tapes::home::Home;
use tapes::session::pricing::{PriceSource, PriceTable, OVERRIDE_FILE};
use tapes::session::status::Status;
use tapes::store::Store;
use tapes::views::render;
use tapes::views::search::{self, Hit, SearchIndex, SearchQuery, Sort};
use tapes::views::stats::{self, Row, Scope, Stats};

#[derive(clap::Args)]
pub struct SearchArgs {
    /// Words to find in messages (text, tool calls, tool output). All words must occur in one
    /// message; "quoted phrases", `a OR b` and `-word` work. Empty: list sessions by filters.
    query: Vec<String>,
    /// Interactive: the deck (`tapes deck`) over the sessions found; / filters further,
    /// ↑/↓ move, Space marks, Enter reads the transcript, q or Esc quits and prints the
    /// marked ids (or the highlighted one).
    #[arg(short, long)]
    interactive: bool,
    /// Only sessions of this project.
    #[arg(long)]
    project: Option<String>,
    /// Only sessions that used this model or family (`claude-sonnet`, `gpt-5`; normalized).
    #[arg(long)]
    model: Option<String>,
    /// Only sessions started within this long (30m, 12h, 7d, 2w).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    since: Option<String>,
    /// Only sessions started on or after this day (YYYY-MM-DD, UTC).
    #[arg(long)]
    from: Option<String>,
    /// Only sessions started on or before this day (YYYY-MM-DD, UTC).
    #[arg(long)]
    to: Option<String>,
    /// failed, completed, abandoned or unknown.
    #[arg(long)]
    status: Option<String>,
    /// Only sessions that cost at least this many USD.
    #[arg(long)]
    min_cost: Option<f64>,
    /// Only sessions that cost at most this many USD.
    #[arg(long)]
    max_cost: Option<f64>,
    /// date, cost, duration, tokens or relevance (default: relevance with words, else date).
    #[arg(long)]
    sort: Option<String>,
    /// At most this many sessions (default: 20 on a terminal, all when piped or --json).
    #[arg(long)]
    limit: Option<usize>,
    /// Print as JSON (one array).
    #[arg(long)]
    json: bool,
    /// Print the table even when stdout is not a terminal (default there: one id per line).
    #[arg(long, conflicts_with = "json")]
    table: bool,
    /// Rebuild the search index from the store before searching.
    #[arg(long)]
    reindex: bool,
    /// Only sessions shared with you (by teammates or publicly) that are in this store.
    #[arg(long)]
    shared: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Member,
    Model,
    Project,
    Day,
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// A team (name or id prefix): sessions of its members and sessions shared with it.
    /// Default: every session in this store.
    #[arg(long)]
    team: Option<String>,
    /// The period (30m, 12h, 7d, 2w); compared with the period of the same length before it.
    #[arg(long, default_value = "30d")]
    since: String,
    /// Show only this breakdown (default: all of them).
    #[arg(long, value_enum)]
    by: Option<By>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PricingArgs {
    /// A price file to check and show merged over the built-in table (without it: the table
    /// in use, i.e. the built-in one merged with $TAPES_HOME/prices.json).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Copy --file to $TAPES_HOME/prices.json so search and stats use it.
    #[arg(long, requires = "file")]
    install: bool,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// The search index, brought up to date with the store (a busy index is used as it is). A
/// catch-up that has to index shows a progress bar on a terminal.
pub fn open_index(store: &Store, reindex: bool) -> anyhow::Result<SearchIndex> {
    let dir = search::index_dir(store);
    let mut index = if reindex {
        SearchIndex::rebuild(&dir)?
    } else {
        SearchIndex::open(&dir)?
    };
    let mut bar = None;
    let result = index.sync_with_progress(store, None, &mut |p| progress(&mut bar, p));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(report) => {
            if report.sessions > 100 && std::io::stderr().is_terminal() {
                eprintln!(
                    "indexed {} ({})",
                    tapes::views::render::plural(report.sessions, "session"),
                    tapes::views::render::plural(report.nodes, "message")
                );
            }
            warn_failed(&report);
        }
        Err(search::SearchError::Busy(dir)) => {
            eprintln!("note: another tapes is updating the index in {dir}; results may miss its latest sessions");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(index)
}

/// A progress bar for indexing (hidden when stderr is not a terminal), made when there is
/// something to index.
fn progress(bar: &mut Option<indicatif::ProgressBar>, p: search::SyncProgress) {
    if p.total == 0 {
        return;
    }
    let bar = bar.get_or_insert_with(|| {
        let bar = super::progress_bar(p.total, "indexing");
        bar.set_message(format!(
            "sessions ({})",
            tapes::views::render::plural(p.messages as usize, "message")
        ));
        bar
    });
    bar.set_position(p.done);
}

fn warn_failed(report: &search::SyncReport) {
    if !report.failed.is_empty() {
        eprintln!(
            "warning: {} could not be read and {} not searchable; run `tapes fsck`",
            tapes::views::render::plural(report.failed.len(), "session"),
            if report.failed.len() == 1 {
                "is"
            } else {
                "are"
            }
        );
    }
}

/// Brings the search index up to date at the end of a command that wrote sessions (import,
/// fetch, pull, bundle import), with a progress bar on a terminal, so the next `tapes search`
/// starts at once. A cache: a failure is a warning, never the command's failure.
pub fn keep_index_current(store: &Store) {
    let mut bar = None;
    let result = search::catch_up(store, &mut |p| progress(&mut bar, p));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(report) => warn_failed(&report),
        // Whoever holds the index is updating it.
        Err(search::SearchError::Busy(_)) => {}
        Err(e) => eprintln!(
            "warning: the search index was not updated ({e}); `tapes search` will catch up"
        ),
    }
}

fn parse_day(text: &str, flag: &str) -> anyhow::Result<i64> {
    let date = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").with_context(|| {
        format!("{flag} {text}: not a date; use YYYY-MM-DD (UTC), e.g. 2026-02-14")
    })?;
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .with_context(|| format!("{flag} {text}: not a date; use YYYY-MM-DD"))?;
    Ok(midnight.and_utc().timestamp_millis())
}

fn build_query(args: &SearchArgs, now_ms: i64, tty: bool) -> anyhow::Result<SearchQuery> {
    let mut q = SearchQuery {
        text: args.query.join(" "),
        project: args.project.clone(),
        model: args.model.clone(),
        min_cost: args.min_cost,
        max_cost: args.max_cost,
        ..SearchQuery::default()
    };
    if let Some(since) = &args.since {
        let ms = parse_duration_ms(since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        q.from_ms = Some(now_ms - ms);
    }
    if let Some(from) = &args.from {
        q.from_ms = Some(parse_day(from, "--from")?);
    }
    if let Some(to) = &args.to {
        q.to_ms = Some(parse_day(to, "--to")? + 86_400_000);
    }
    if let (Some(f), Some(t)) = (q.from_ms, q.to_ms) {
        if f >= t {
            bail!("--from is after --to; swap them");
        }
    }
    if let Some(status) = &args.status {
        q.status = Some(Status::parse(status).map_err(|e| anyhow::anyhow!("--status: {e}"))?);
    }
    if let Some(sort) = &args.sort {
        q.sort = Some(Sort::parse(sort).map_err(|e| anyhow::anyhow!("--sort: {e}"))?);
    }
    if let (Some(min), Some(max)) = (q.min_cost, q.max_cost) {
        if min > max {
            bail!("--min-cost {min} is above --max-cost {max}; swap them");
        }
    }
    // Piped ids need no snippets.
    q.snippets = tty || args.json || args.table || args.interactive;
    q.limit = match args.limit {
        Some(0) => bail!("--limit 0 shows nothing; give a positive number"),
        Some(n) => Some(n),
        None if tty && !args.json => Some(20),
        None => None,
    };
    Ok(q)
}

pub fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let prices = PriceTable::load(home.root())?;
    let tty = std::io::stdout().is_terminal();
    let mut query = build_query(&args, tapes::now_ms(), tty)?;
    if args.shared {
        let ids = tapes::views::listing::shared_ids(&store, tapes::now_ms())?;
        if ids.is_empty() && !args.json {
            println!("nothing is shared with you yet; `tapes shared` lists what is");
            return Ok(ExitCode::SUCCESS);
        }
        query.sessions = Some(std::sync::Arc::new(ids));
    }
    let index = open_index(&store, args.reindex)?;
    if args.interactive {
        // The deck over what the search found, in pick mode: quitting prints the marked ids.
        query.limit = args.limit;
        query.snippets = false;
        let hits = index.search(&store, &query, &prices)?;
        if hits.is_empty() {
            bail!("no sessions match; loosen the filters or try other words");
        }
        drop(index);
        let ctx = tapes::views::deck::Context {
            store,
            home: Some(home),
            prices,
            dir: super::project_dir(None)?,
        };
        let options = tapes::views::deck::Options {
            only: Some(hits.iter().map(|h| h.id).collect()),
            filter: String::new(),
            pick: true,
        };
        if let tapes::views::deck::Outcome::Picked(ids) = tapes::views::deck::run(ctx, options)? {
            for id in ids {
                println!("{id}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !(args.json || tty || args.table) {
        // Piped: ids only, in the same order, without reading the store's records.
        let ids = index.search_ids(&query, &prices)?;
        let mut out = String::with_capacity(ids.len() * 33);
        for id in &ids {
            let _ = writeln!(out, "{id}");
        }
        std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .context("writing the results")?;
        return Ok(ExitCode::SUCCESS);
    }
    let hits = index.search(&store, &query, &prices)?;
    if args.json {
        let list: Vec<_> = hits.iter().map(hit_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if tty || args.table {
        if hits.is_empty() {
            println!("no sessions match; loosen the filters or try other words");
        } else {
            print!("{}", hits_table(&hits, tty));
        }
    } else {
        let mut out = String::new();
        for hit in &hits {
            let _ = writeln!(out, "{}", hit.id);
        }
        print!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

pub fn hits_table(hits: &[Hit], color: bool) -> String {
    let mut out = format!(
        "{:<12}  {:<16}  {:<18}  {:<22}  {:<9}  {:>8}  {}\n",
        "ID", "STARTED", "PROJECT", "MODEL", "STATUS", "COST", "MATCH"
    );
    for h in hits {
        let s = &h.record.summary;
        let text = match &h.snippet {
            Some(snippet) if color => snippet.marked(BOLD, RESET),
            Some(snippet) => snippet.marked("[", "]"),
            None => cut(&s.first_prompt, 80),
        };
        let _ = writeln!(
            out,
            "{:<12}  {:<16}  {:<18}  {:<22}  {:<9}  {:>8}  {}",
            h.id.short(),
            render::time(s.started_ms),
            cut(
                if s.project.is_empty() {
                    "-"
                } else {
                    &s.project
                },
                18
            ),
            cut(if s.model.is_empty() { "-" } else { &s.model }, 22),
            h.status.as_str(),
            render::usd(h.cost),
            text.trim(),
        );
    }
    out
}

pub fn hit_json(h: &Hit) -> serde_json::Value {
    let s = &h.record.summary;
    json!({
        "id": h.id.to_hex(),
        "started_ms": s.started_ms,
        "duration_ms": s.duration_ms(),
        "project": s.project,
        "agent": s.agent,
        "model": s.model,
        "models": h.models,
        "messages": s.messages,
        "status": h.status,
        "cost_usd": h.cost,
        "unpriced_models": h.unpriced,
        "tokens": h.tokens,
        "usage": s.usage,
        "score": h.score,
        "matches": h.matches,
        "snippet": h.snippet,
        "first_prompt": s.first_prompt,
        "owner": h.record.owner.map(|o| o.to_hex()),
    })
}

pub fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let prices = PriceTable::load(home.root())?;
    let period = parse_duration_ms(&args.since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    if period <= 0 {
        bail!("--since must be longer than 0; e.g. 30d");
    }
    let (scope, team_name) = match &args.team {
        Some(t) => {
            let scope = Scope::team(&store, Some(t))?;
            let name = scope
                .team
                .and_then(|id| tapes::team::load(&store, &id).ok())
                .map(|c| c.head().manifest.name.clone());
            (scope, name)
        }
        None => (Scope::all(&store)?, None),
    };
    let stats = stats::compute(&store, &scope, &prices, tapes::now_ms(), period)?;
    if args.json {
        let mut value = serde_json::to_value(&stats)?;
        if let (Some(by), Some(object)) = (args.by, value.as_object_mut()) {
            for (key, which) in [
                ("by_member", By::Member),
                ("by_model", By::Model),
                ("by_project", By::Project),
                ("by_day", By::Day),
            ] {
                if which != by {
                    object.remove(key);
                }
            }
        }
        if let Some(object) = value.as_object_mut() {
            object.insert("team".into(), json!(team_name));
            object.insert("period".into(), json!(args.since));
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let tty = std::io::stdout().is_terminal();
        print!(
            "{}",
            stats_text(&stats, &args.since, team_name.as_deref(), args.by, tty)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn arrow(change: Option<f64>) -> String {
    match change {
        None => "-".into(),
        Some(c) if c > 0.0 => format!("↑ {:.0}%", c),
        Some(c) if c < 0.0 => format!("↓ {:.0}%", -c),
        Some(_) => "= 0%".into(),
    }
}

fn bar(share: f64, width: usize) -> String {
    let n = (share * width as f64).round() as usize;
    format!("{:<width$}", "█".repeat(n.min(width)), width = width)
}

fn breakdown(out: &mut String, title: &str, rows: &[Row], by_sessions: bool) {
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (nothing in this period)");
        return;
    }
    let total: f64 = if by_sessions {
        rows.iter().map(|r| r.sessions as f64).sum()
    } else {
        rows.iter().map(|r| r.cost).sum()
    };
    for r in rows {
        let value = if by_sessions {
            r.sessions as f64
        } else {
            r.cost
        };
        let share = if total > 0.0 { value / total } else { 0.0 };
        let _ = writeln!(
            out,
            "  {} {:<24} {:>4.0}%  {:>5} sessions  {:>9}  {:>7} tokens",
            bar(share, 12),
            cut(&r.label, 24),
            share * 100.0,
            r.sessions,
            render::usd(r.cost),
            render::count(r.tokens)
        );
    }
}

pub fn stats_text(
    s: &Stats,
    period: &str,
    team: Option<&str>,
    only: Option<By>,
    tty: bool,
) -> String {
    let mut out = format!(
        "Last {period} ({} – {}){}\n\n",
        render::time(Some(s.from_ms)),
        render::time(Some(s.to_ms)),
        team.map(|t| format!(", team {t}")).unwrap_or_default()
    );
    let c = &s.current;
    let _ = writeln!(
        out,
        "{:<14}{:<14}{:<14}TOTAL TOKENS",
        "SESSIONS", "TOTAL COST", "AVG/SESSION"
    );
    let _ = writeln!(
        out,
        "{:<14}{:<14}{:<14}{}",
        c.sessions,
        render::usd(c.cost),
        render::usd(c.avg_cost),
        render::count(c.tokens)
    );
    let _ = writeln!(
        out,
        "{:<14}{:<14}{:<14}{}",
        arrow(s.change.sessions),
        arrow(s.change.cost),
        arrow(s.change.avg_cost),
        arrow(s.change.tokens)
    );
    let _ = writeln!(
        out,
        "(previous {period}: {}, {}, {} tokens)",
        tapes::views::render::plural(s.previous.sessions as usize, "session"),
        render::usd(s.previous.cost),
        render::count(s.previous.tokens)
    );
    let show = |b: By| only.is_none_or(|o| o == b);
    if show(By::Member) {
        breakdown(
            &mut out,
            "By member (share of sessions)",
            &s.by_member,
            true,
        );
    }
    if show(By::Model) {
        breakdown(&mut out, "By model (share of cost)", &s.by_model, false);
    }
    if show(By::Project) {
        breakdown(&mut out, "By project (share of cost)", &s.by_project, false);
    }
    if show(By::Day) {
        let _ = writeln!(out, "\nBy day (sessions)");
        if tty {
            let values: Vec<f64> = s.by_day.iter().map(|r| r.sessions as f64).collect();
            let _ = writeln!(out, "  {}", stats::sparkline(&values));
            if let (Some(first), Some(last)) = (s.by_day.first(), s.by_day.last()) {
                let _ = writeln!(out, "  {} … {}", first.key, last.key);
            }
        } else {
            for r in s.by_day.iter().filter(|r| r.sessions > 0) {
                let _ = writeln!(
                    out,
                    "  {}  {:>5} sessions  {:>9}  {:>7} tokens",
                    r.key,
                    r.sessions,
                    render::usd(r.cost),
                    render::count(r.tokens)
                );
            }
        }
    }
    if s.duplicate_sessions > 0 {
        let _ = writeln!(
            out,
            "\n{} whose history was already counted elsewhere {} counted once",
            tapes::views::render::plural(s.duplicate_sessions as usize, "session"),
            if s.duplicate_sessions == 1 {
                "was"
            } else {
                "were"
            }
        );
    }
    if !s.unpriced.is_empty() {
        let _ = writeln!(
            out,
            "\nunpriced models (counted as $0): {}; add them to $TAPES_HOME/{OVERRIDE_FILE} (`tapes pricing --help`)",
            s.unpriced.join(", ")
        );
    }
    out
}

pub fn pricing(args: PricingArgs) -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    let mut table = PriceTable::load(home.root())?;
    let installed = home.root().join(OVERRIDE_FILE);
    let mut note = if installed.exists() {
        format!("overrides from {}", installed.display())
    } else {
        format!(
            "built-in prices; put overrides in {} (or `tapes pricing --file F --install`)",
            installed.display()
        )
    };
    if let Some(file) = &args.file {
        let n = table.merge_file(file)?;
        note = format!(
            "{} from {} merged over the table in use",
            tapes::views::render::plural(n as usize, "entry"),
            file.display()
        );
        if args.install {
            home.ensure()?;
            std::fs::copy(file, &installed).with_context(|| {
                format!(
                    "copying {} to {}; check that {} is writable",
                    file.display(),
                    installed.display(),
                    home.root().display()
                )
            })?;
            note = format!(
                "installed {} as {}: search and stats use it from now on",
                file.display(),
                installed.display()
            );
        }
    }
    if args.json {
        let entries: Vec<_> = table
            .entries()
            .map(|(model, p, source)| {
                json!({
                    "model": model, "input": p.input, "output": p.output,
                    "cache_read": p.cache_read, "cache_write": p.cache_write, "source": source,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{:<24}  {:>8}  {:>8}  {:>10}  {:>11}  {}\n",
        "MODEL", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "SOURCE"
    );
    for (model, p, source) in table.entries() {
        let _ = writeln!(
            out,
            "{:<24}  {:>8.3}  {:>8.3}  {:>10.4}  {:>11.4}  {}",
            model,
            p.input,
            p.output,
            p.cache_read,
            p.cache_write,
            match source {
                PriceSource::Default => "built-in",
                PriceSource::Override => "override",
            }
        );
    }
    let _ = writeln!(
        out,
        "USD per 1M tokens; model names match by family (dates and provider prefixes ignored).\n{note}"
    );
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
