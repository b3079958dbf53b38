//! The deck at scale: a store of N sample sessions (default 100,000), then the times a person
//! waits for — reading the store into the deck, the first frame, and each keystroke (key
//! handling plus a full frame) while typing a filter, moving, paging and switching tabs —
//! beside the 50 ms anchor of issue 19 ("first frame and each keystroke under 50 ms").
//!
//! `cargo bench --bench deck -- [--sessions 100000] [--index]`
//!
//! Frames are drawn into ratatui's `TestBackend` at 160×48 (the same drawing code as the
//! terminal; only the final write to the tty is left out). Status and cost come from the
//! records' summaries, or with `--index` from a search index built first (as `tapes deck`
//! does when the index exists).

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tapes::import::ingest::{ingest, Incoming};
use tapes::session::pricing::PriceTable;
use tapes::session::sample::{self, Shape};
use tapes::store::Store;
use tapes::views::deck::app::{App, FactSource, Options};
use tapes::views::deck::{ui, Context};
use tapes::views::search::{self, SearchIndex};

#[global_allocator]
static GLOBAL: tapes::allocator::MiMalloc = tapes::allocator::MiMalloc;

const ANCHOR_MS: f64 = 50.0;

fn flag(args: &[String], name: &str) -> Option<usize> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn line(what: &str, d: f64) {
    println!(
        "  {what:<44} {d:>9.2} ms   (anchor {ANCHOR_MS:.0} ms, {:.2}x of it)",
        d / ANCHOR_MS
    );
}

fn main() {
    // As the `tapes` binary does, so the memory figures are the ones a user sees.
    tapes::allocator::purge_freed_memory_at_once();
    let args: Vec<String> = std::env::args().collect();
    let sessions = flag(&args, "--sessions").unwrap_or(100_000);
    let use_index = args.iter().any(|a| a == "--index");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = std::sync::Arc::new(Store::open(&dir.path().join("store")).expect("store"));
    let shape = Shape {
        tool_rounds: 1,
        start_ms: tapes::now_ms() - sessions as i64 * 3_600_000 / 7,
    };
    println!("deck benchmark: {sessions} sessions, frames of 160x48");
    let started = Instant::now();
    let mut batch = Vec::new();
    for i in 0..sessions {
        batch.push(Incoming {
            session: sample::session(5, i, shape),
            path: String::new(),
        });
        if batch.len() == 5_000 || i + 1 == sessions {
            ingest(&store, &batch, tapes::now_ms()).expect("ingest");
            batch.clear();
        }
    }
    println!(
        "  setup: ingested in {:.1?} (not measured)",
        started.elapsed()
    );
    let facts = if use_index {
        let started = Instant::now();
        let mut index = SearchIndex::open(&search::index_dir(&store)).expect("index");
        index.sync(&store, None).expect("index sync");
        println!("  setup: search index built in {:.1?}", started.elapsed());
        FactSource::Index(Box::new(index))
    } else {
        FactSource::Summaries
    };
    let ctx = Context {
        store: store.clone(),
        home: None,
        prices: PriceTable::defaults(),
        dir: dir.path().to_path_buf(),
    };
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("backend");

    let started = Instant::now();
    let mut app = App::open(ctx, facts, Options::default(), tapes::now_ms());
    terminal.draw(|f| ui::draw(f, &mut app)).expect("draw");
    let first = started.elapsed();
    while app.loading() {
        app.tick();
        std::thread::sleep(Duration::from_micros(200));
    }
    let loaded = started.elapsed();
    let started_rows = Instant::now();
    terminal.draw(|f| ui::draw(f, &mut app)).expect("draw");
    let rows_frame = started_rows.elapsed();
    println!(
        "\nopening (facts from {}):",
        if use_index {
            "the search index"
        } else {
            "summaries"
        }
    );
    line("first frame (the store is read behind it)", ms(first));
    line("store read into the three tabs (background)", ms(loaded));
    line("first frame with rows, once read", ms(rows_frame));

    // A person's keys: type a filter, fix a typo, add words, clear it, move, page, switch tabs.
    let mut keys: Vec<(String, KeyEvent)> = Vec::new();
    let k = |c: KeyCode| KeyEvent::new(c, KeyModifiers::NONE);
    keys.push(("/".into(), k(KeyCode::Char('/'))));
    for c in "project:bil refac".chars() {
        keys.push((format!("type {c:?}"), k(KeyCode::Char(c))));
    }
    for _ in 0..3 {
        keys.push(("Backspace".into(), k(KeyCode::Backspace)));
    }
    for c in "wri cost:>0".chars() {
        keys.push((format!("type {c:?}"), k(KeyCode::Char(c))));
    }
    keys.push((
        "Ctrl-U (clear: every row again)".into(),
        KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL),
    ));
    for c in "fix au".chars() {
        keys.push((format!("type {c:?}"), k(KeyCode::Char(c))));
    }
    keys.push(("Esc".into(), k(KeyCode::Esc)));
    keys.push((
        "Ctrl-U".into(),
        KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL),
    ));
    for _ in 0..20 {
        keys.push(("Down".into(), k(KeyCode::Down)));
    }
    for _ in 0..10 {
        keys.push(("PageDown".into(), k(KeyCode::PageDown)));
    }
    keys.push(("End".into(), k(KeyCode::End)));
    keys.push(("Enter (preview)".into(), k(KeyCode::Enter)));
    keys.push(("PageDown (preview)".into(), k(KeyCode::PageDown)));
    keys.push(("Esc".into(), k(KeyCode::Esc)));
    keys.push(("Tab (shared with me)".into(), k(KeyCode::Tab)));
    keys.push((
        "Tab (team: dashboard in background)".into(),
        k(KeyCode::Tab),
    ));
    keys.push(("Tab (my sessions)".into(), k(KeyCode::Tab)));
    keys.push(("l (lineage)".into(), k(KeyCode::Char('l'))));
    keys.push(("Esc".into(), k(KeyCode::Esc)));

    let mut times: Vec<(f64, String)> = Vec::new();
    for (name, key) in &keys {
        let started = Instant::now();
        app.on_key(*key);
        app.tick();
        terminal.draw(|f| ui::draw(f, &mut app)).expect("draw");
        times.push((ms(started.elapsed()), name.clone()));
    }
    let mut sorted: Vec<f64> = times.iter().map(|(t, _)| *t).collect();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    println!(
        "\neach keystroke, key handling and a full frame ({} keys):",
        keys.len()
    );
    line("median", pct(0.5));
    line("p90", pct(0.9));
    line("p99", pct(0.99));
    line("max", *sorted.last().unwrap_or(&0.0));
    let mut slowest = times.clone();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("  slowest keys:");
    for (t, name) in slowest.iter().take(5) {
        println!("    {t:>8.2} ms  {name}");
    }
    let started = Instant::now();
    while app.busy() {
        app.tick();
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "\nthe Team dashboard (computed in the background, the deck stays responsive): ready {:.1?} after the last key",
        started.elapsed()
    );
    let over = sorted.iter().filter(|t| **t > ANCHOR_MS).count();
    println!(
        "\nkeys over the {ANCHOR_MS:.0} ms anchor: {over} of {}; first frame {}",
        keys.len(),
        if ms(first) > ANCHOR_MS {
            "over the anchor"
        } else {
            "under the anchor"
        }
    );
}
