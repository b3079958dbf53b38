//! Search: build the index over N synthetic messages, then time queries, beside `rg` over the
//! same content written as JSONL.
//!
//! `cargo bench --bench search -- [--nodes 1000000] [--queries 200]`
//!
//! Reported: ingest time (not the subject, for scale), index build time, opening the index,
//! a no-op catch-up sync (what every `tapes search` does first), and per-query latency p50/p99
//! of `SearchIndex::search` (filters, tantivy query, per-session aggregation, sort, records and
//! snippets of the top 20). Then `rg -c -i <word>` over one JSONL file holding the same
//! messages, for the same queries, when `rg` is on PATH. Then `tapes search` as a user runs it,
//! process start to exit (top 20 as a table; every match piped as ids), beside the target
//! (p50 < 50 ms) and rg. `--keep DIR` leaves the home there; `TAPES_BENCH_BIN` times another
//! `tapes` binary, `TAPES_BENCH_BASELINE` times an older one after it.

use std::io::Write as _;
use std::time::{Duration, Instant};

use tapes::import::ingest::{ingest, Incoming};
use tapes::session::pricing::PriceTable;
use tapes::session::sample::{self, Shape};
use tapes::store::Store;
use tapes::views::search::{self, SearchIndex, SearchQuery};

#[global_allocator]
static GLOBAL: tapes::allocator::MiMalloc = tapes::allocator::MiMalloc;

fn main() {
    // As the `tapes` binary does, so the memory figures are the ones a user sees.
    tapes::allocator::purge_freed_memory_at_once();
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = flag(&args, "--nodes").unwrap_or(1_000_000);
    let queries: usize = flag(&args, "--queries").unwrap_or(200);
    let shape = Shape::default();
    let per_session = 2 + shape.tool_rounds * 2;
    let sessions = nodes.div_ceil(per_session);
    let dir = tempfile::tempdir().expect("temp dir");
    // `--keep DIR`: build in DIR and leave it there (to profile the CLI against it afterwards).
    let kept = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from);
    let dir = match &kept {
        Some(path) => {
            std::fs::create_dir_all(path).expect("--keep dir");
            Dir::Kept(path.clone())
        }
        None => Dir::Temp(dir),
    };
    // `<home>/store` and `<home>/index`, as `tapes` lays them out, so the CLI runs below use them.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let store = Store::open(&home.join("store")).expect("open store");
    println!(
        "search benchmark: {sessions} sessions x {per_session} messages = {} messages",
        sessions * per_session
    );

    // Ingest (no index yet, so ingest does not index) and write the same content as JSONL.
    let started = Instant::now();
    let jsonl_path = dir.path().join("messages.jsonl");
    let mut jsonl = std::io::BufWriter::new(std::fs::File::create(&jsonl_path).expect("jsonl"));
    let mut batch = Vec::new();
    let mut batch_nodes = 0;
    for i in 0..sessions {
        let session = sample::session(11, i, shape);
        let id = tapes::protocol::SessionId::derive("claude", &session.source_id);
        for m in &session.messages {
            let line = serde_json::json!({
                "session": id.to_hex(),
                "role": m.role.as_str(),
                "model": m.model,
                "content": m.blocks,
            });
            writeln!(jsonl, "{line}").expect("write jsonl");
        }
        batch_nodes += session.messages.len();
        batch.push(Incoming {
            session,
            path: String::new(),
        });
        if batch_nodes >= tapes::import::walk::BATCH_NODES || i + 1 == sessions {
            ingest(&store, &batch, tapes::now_ms()).expect("ingest");
            batch.clear();
            batch_nodes = 0;
        }
    }
    jsonl.flush().expect("flush jsonl");
    drop(jsonl);
    let jsonl_bytes = std::fs::metadata(&jsonl_path).map_or(0, |m| m.len());
    println!(
        "ingested and wrote {:.1} MB of JSONL in {:.2?} (setup, not measured)",
        jsonl_bytes as f64 / 1e6,
        started.elapsed()
    );

    // Index build from scratch.
    let index_dir = search::index_dir(&store);
    let started = Instant::now();
    let mut index = SearchIndex::open(&index_dir).expect("open index");
    let report = index.sync(&store, None).expect("build index");
    let build = started.elapsed();
    println!(
        "index build: {} sessions, {} messages in {:.2?} = {:.0} messages/s; index {:.1} MB",
        report.sessions,
        report.nodes,
        build,
        report.nodes as f64 / build.as_secs_f64(),
        dir_size(&index_dir) as f64 / 1e6
    );
    drop(index);
    let started = Instant::now();
    let mut index = SearchIndex::open(&index_dir).expect("reopen index");
    let open = started.elapsed();
    let started = Instant::now();
    let noop = index.sync(&store, None).expect("sync");
    assert_eq!(noop.sessions, 0);
    println!(
        "open index: {:.2?}; catch-up check with nothing to do: {:.2?}",
        open,
        started.elapsed()
    );

    // Queries: common and rare words of the sample vocabulary, ticket numbers, phrases, pairs.
    const WORDS: &[&str] = &[
        "invoice",
        "webhook",
        "tests",
        "compute",
        "refactor",
        "rounding",
        "csv",
        "session",
        "makefile",
        "auth",
        "grep",
        "nocapture",
        "\"run the tests\"",
        "fix invoice",
        "webhook retries",
        "zzznotthere",
    ];
    let mut rng = sample::Rng::new(99);
    let words: Vec<String> = (0..queries)
        .map(|i| {
            if i % 3 == 2 {
                format!("{}", 1000 + rng.below(9000))
            } else {
                WORDS[rng.below(WORDS.len() as u64) as usize].to_string()
            }
        })
        .collect();
    let prices = PriceTable::defaults();
    let mut times = Vec::with_capacity(words.len());
    let mut total_hits = 0usize;
    for w in &words {
        let q = SearchQuery {
            text: w.clone(),
            limit: Some(20),
            snippets: true,
            ..SearchQuery::default()
        };
        let started = Instant::now();
        let hits = index.search(&store, &q, &prices).expect("search");
        times.push(started.elapsed());
        total_hits += hits.len();
    }
    report_latency("tapes search (top 20, with snippets)", &mut times);
    println!("  ({} results over {} queries)", total_hits, words.len());
    // The same with no limit: every matching session (what a pipe gets).
    let mut times = Vec::new();
    for w in words.iter().take(50) {
        let q = SearchQuery {
            text: w.clone(),
            ..SearchQuery::default()
        };
        let started = Instant::now();
        let _ = index.search_ids(&q, &prices).expect("search");
        times.push(started.elapsed());
    }
    report_latency(
        "tapes search (every match, ids as piped: no limit, no snippets, no records)",
        &mut times,
    );

    match which_rg() {
        None => println!("rg: not on PATH; skipped (apt-get install ripgrep to compare)"),
        Some(rg) => {
            let mut times = Vec::new();
            for w in words.iter().take(50) {
                let pattern = w.trim_matches('"').replace(' ', ".*");
                let started = Instant::now();
                let out = std::process::Command::new(&rg)
                    .args(["-c", "-i", &pattern])
                    .arg(&jsonl_path)
                    .output()
                    .expect("run rg");
                times.push(started.elapsed());
                let _ = out.stdout;
            }
            let rg_p50 = report_latency("rg -c -i over the JSONL (50 of the queries)", &mut times);
            cli(&home, &words, Some(rg_p50), &index_dir, store, index);
            return;
        }
    }
    cli(&home, &words, None, &index_dir, store, index);
}

/// `tapes search` as a user runs it: process start to exit, the store and index closed by this
/// process first (a running holder would serve the store over its socket instead).
fn cli(
    home: &std::path::Path,
    words: &[String],
    rg_p50: Option<Duration>,
    index_dir: &std::path::Path,
    store: Store,
    index: SearchIndex,
) {
    drop(index);
    drop(store);
    // `TAPES_BENCH_BIN`: time that binary instead (a shared target dir's `tapes` may be another
    // checkout's build); `TAPES_BENCH_BASELINE`: then time this one too (an older build, which
    // rebuilds the index in its own format first).
    let ours = std::env::var("TAPES_BENCH_BIN").unwrap_or(env!("CARGO_BIN_EXE_tapes").into());
    let mut runs = vec![("this build", ours)];
    if let Ok(baseline) = std::env::var("TAPES_BENCH_BASELINE") {
        runs.push(("baseline", baseline));
    }
    for (name, bin) in runs {
        println!("CLI: {name} ({bin})");
        cli_runs(home, words, rg_p50, &bin);
    }
    let _ = index_dir;
}

fn cli_runs(home: &std::path::Path, words: &[String], rg_p50: Option<Duration>, bin: &str) {
    let run = |args: &[&str]| {
        let started = Instant::now();
        let out = std::process::Command::new(bin)
            .env("TAPES_HOME", home)
            .env_remove("RUST_LOG")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run tapes");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "tapes {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (took, out)
    };
    // Warm the page cache (and catch up, should anything be pending: timed, it is what a
    // user would wait for).
    let (warm, _) = run(&["search", "warmup"]);
    println!("  first search (page cache cold or index to build): {warm:.2?}");
    let mut top = Vec::new();
    let mut piped = Vec::new();
    let mut ids = 0usize;
    for w in words.iter().take(50) {
        top.push(run(&["search", "--table", "--limit", "20", w]).0);
        let (took, out) = run(&["search", w]);
        piped.push(took);
        ids += out
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    }
    let top_p50 = report_latency(
        "`tapes search --table --limit 20 WORD` (process start to exit)",
        &mut top,
    );
    println!(
        "  target: p50 < 50 ms; ratio to target {:.2}",
        top_p50.as_secs_f64() / 0.050
    );
    let piped_p50 = report_latency(
        "`tapes search WORD | …` every match, ids (process start to exit)",
        &mut piped,
    );
    println!("  ({ids} ids over {} queries)", piped.len());
    if let Some(rg) = rg_p50 {
        println!(
            "  anchor rg -c -i p50 {:.2?}; tapes/rg = {:.2} (below 1 is faster than rg)",
            rg,
            piped_p50.as_secs_f64() / rg.as_secs_f64()
        );
    }
    // Where a command's time goes, from its own trace (`-vv`).
    let (_, out) = run(&["-vv", "search", "invoice"]);
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if line.contains("search index") || line.contains("catch-up") {
            println!("  trace: {}", line.trim());
        }
    }
}

enum Dir {
    Temp(tempfile::TempDir),
    Kept(std::path::PathBuf),
}

impl Dir {
    fn path(&self) -> &std::path::Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}

fn report_latency(what: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let pick = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "{what}: {} queries, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        times.len(),
        pick(0.50),
        pick(0.99),
        times[times.len() - 1]
    );
    pick(0.50)
}

fn which_rg() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("rg"))
        .find(|p| p.is_file())
}

fn dir_size(dir: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.replace('_', "").parse().ok()
}
