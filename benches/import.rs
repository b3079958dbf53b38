//! Import throughput: generate N synthetic nodes, ingest them into a fresh store, print figures.
//!
//! `cargo bench --bench import -- [--nodes 1000000] [--jsonl]`
//!
//! Without `--jsonl` sessions go straight to the ingest path (hashing, encoding, sled batches,
//! flushes): the cost of the store itself. With `--jsonl` they are first written as Claude Code
//! transcripts and imported through the real importer, as `tapes import` would.

use std::time::Instant;

use tapes::import::walk::import_paths;
use tapes::ingest::{ingest, Incoming};
use tapes::sample::{self, Shape};
use tapes::store::Store;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = flag(&args, "--nodes").unwrap_or(1_000_000);
    let jsonl = args.iter().any(|a| a == "--jsonl");
    let shape = Shape::default();
    let per_session = 2 + shape.tool_rounds * 2;
    let sessions = nodes.div_ceil(per_session);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store")).expect("open store");

    println!(
        "import benchmark: {sessions} sessions x {per_session} nodes = {} nodes",
        sessions * per_session
    );
    let started = Instant::now();
    let report = if jsonl {
        let src = dir.path().join("transcripts");
        std::fs::create_dir_all(&src).expect("mkdir");
        let mut bytes = 0usize;
        for i in 0..sessions {
            let text = sample::claude_jsonl(&sample::session(7, i, shape));
            bytes += text.len();
            std::fs::write(src.join(format!("s{i:07}.jsonl")), text).expect("write transcript");
        }
        println!(
            "wrote {} of Claude Code JSONL in {:.2?}",
            human(bytes),
            started.elapsed()
        );
        let started = Instant::now();
        let summary = import_paths(&store, &[src], tapes::now_ms(), |_| {}).expect("import");
        print_rate(
            "import from JSONL",
            summary.report.new_nodes,
            summary.report.bytes,
            started.elapsed().as_secs_f64(),
        );
        summary.report
    } else {
        let generated = Instant::now();
        let sessions: Vec<Incoming> = (0..sessions)
            .map(|i| Incoming {
                session: sample::session(7, i, shape),
                path: String::new(),
            })
            .collect();
        println!(
            "generated in {:.2?} (not counted below)",
            generated.elapsed()
        );
        let started = Instant::now();
        let mut total = tapes::ingest::IngestReport::default();
        let mut from = 0;
        while from < sessions.len() {
            let mut to = from;
            let mut batch_nodes = 0;
            while to < sessions.len() && batch_nodes < tapes::import::walk::BATCH_NODES {
                batch_nodes += sessions[to].session.messages.len();
                to += 1;
            }
            total.merge(ingest(&store, &sessions[from..to], tapes::now_ms()).expect("ingest"));
            from = to;
        }
        print_rate(
            "ingest (chain + hash + encode + store + flush)",
            total.new_nodes,
            total.bytes,
            started.elapsed().as_secs_f64(),
        );
        total
    };
    store.storage().flush().expect("flush");
    let on_disk = store.storage().size_on_disk().expect("size");
    println!(
        "store: {} objects, {} sessions, {} on disk",
        store.storage().object_count(),
        report.sessions.len(),
        human(on_disk as usize)
    );
}

fn print_rate(what: &str, nodes: usize, bytes: usize, secs: f64) {
    println!(
        "{what}: {nodes} nodes, {} in {secs:.2} s = {:.0} nodes/s, {:.1} MB/s",
        human(bytes),
        nodes as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}

fn human(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.replace('_', "").parse().ok()
}
