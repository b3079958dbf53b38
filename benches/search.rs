//! Search: build the index over N synthetic messages, then time queries, beside `rg` over the
//! same content written as JSONL.
//!
//! `cargo bench --bench search -- [--nodes 1000000] [--queries 200]`
//!
//! Reported: ingest time (not the subject, for scale), index build time, opening the index,
//! a no-op catch-up sync (what every `tapes search` does first), and per-query latency p50/p99
//! of `SearchIndex::search` (filters, tantivy query, per-session aggregation, sort, records and
//! snippets of the top 20). Then `rg -c -i <word>` over one JSONL file holding the same
//! messages, for the same queries, when `rg` is on PATH.

use std::io::Write as _;
use std::time::{Duration, Instant};

use tapes::import::ingest::{ingest, Incoming};
use tapes::session::pricing::PriceTable;
use tapes::session::sample::{self, Shape};
use tapes::store::Store;
use tapes::views::search::{self, SearchIndex, SearchQuery};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = flag(&args, "--nodes").unwrap_or(1_000_000);
    let queries: usize = flag(&args, "--queries").unwrap_or(200);
    let shape = Shape::default();
    let per_session = 2 + shape.tool_rounds * 2;
    let sessions = nodes.div_ceil(per_session);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store")).expect("open store");
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
        let _ = index.search(&store, &q, &prices).expect("search");
        times.push(started.elapsed());
    }
    report_latency(
        "tapes search (every match, ids as piped: no limit, no snippets)",
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
            report_latency("rg -c -i over the JSONL (50 of the queries)", &mut times);
        }
    }
}

fn report_latency(what: &str, times: &mut [Duration]) {
    times.sort();
    let pick = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "{what}: {} queries, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        times.len(),
        pick(0.50),
        pick(0.99),
        times[times.len() - 1]
    );
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
