//! Import throughput: generate N synthetic nodes, ingest them into a fresh store, print figures.
//!
//! `cargo bench --bench import -- [--nodes 1000000] [--jsonl]`
//! `cargo bench --bench import -- --big-line 50` (peak memory of `tapes import` of one line)
//! `cargo bench --bench import -- --index` (also: the search index `tapes import` keeps current)
//!
//! Without `--jsonl` sessions go straight to the ingest path (hashing, encoding, sled batches,
//! flushes): the cost of the store itself. With `--jsonl` they are first written as Claude Code
//! transcripts and imported through the real importer, as `tapes import` would.

use std::time::Instant;

use tapes::import::ingest::{ingest, Incoming};
use tapes::import::walk::import_paths;
use tapes::session::sample::{self, Shape};
use tapes::store::Store;

#[global_allocator]
static GLOBAL: tapes::allocator::MiMalloc = tapes::allocator::MiMalloc;

fn main() {
    // As the `tapes` binary does, so the memory figures are the ones a user sees.
    tapes::allocator::purge_freed_memory_at_once();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    if let Some(mb) = flag(&args, "--big-line") {
        big_line(mb);
        return;
    }
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
    let import_secs;
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
        import_secs = started.elapsed().as_secs_f64();
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
        let mut total = tapes::import::ingest::IngestReport::default();
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
        import_secs = started.elapsed().as_secs_f64();
        print_rate(
            "ingest (chain + hash + encode + store + flush)",
            total.new_nodes,
            total.bytes,
            started.elapsed().as_secs_f64(),
        );
        total
    };
    if args.iter().any(|a| a == "--index") {
        index_figures(&store, nodes, shape, per_session, import_secs);
    }
    store.storage().flush().expect("flush");
    let on_disk = store.storage().size_on_disk().expect("size");
    println!(
        "store: {} objects, {} sessions, {} on disk",
        store.storage().object_count(),
        report.sessions.len(),
        human(on_disk as usize)
    );
}

/// Import with the search index kept current (what `tapes import` does since it ends with a
/// catch-up): building the index after the first import, then a small import into an indexed
/// store (the ingest hook indexes its sessions) against the same import with no index.
fn index_figures(store: &Store, nodes: usize, shape: Shape, per_session: usize, import_secs: f64) {
    let started = Instant::now();
    let report = tapes::views::search::catch_up(store, &mut |_| {}).expect("index");
    let index_secs = started.elapsed().as_secs_f64();
    println!(
        "index build after the import: {} messages in {index_secs:.2} s = {:.0} messages/s; import {import_secs:.2} s without indexing, {:.2} s with ({:.2}x)",
        report.nodes,
        report.nodes as f64 / index_secs,
        import_secs + index_secs,
        (import_secs + index_secs) / import_secs
    );
    let started = Instant::now();
    assert!(
        tapes::views::search::catch_up(store, &mut |_| {})
            .expect("check")
            .sessions
            == 0
    );
    println!(
        "catch-up check after it (nothing changed): {:.2?}",
        started.elapsed()
    );
    // 1% more sessions, in import batches: with the index present (kept current by ingest),
    // then the same count into a second store without one.
    let more = (nodes / per_session / 100).max(1);
    let batch = |seed: u64| -> Vec<Incoming> {
        (0..more)
            .map(|i| Incoming {
                session: sample::session(seed, i, shape),
                path: String::new(),
            })
            .collect()
    };
    let small = |store: &Store, seed: u64| {
        let sessions = batch(seed);
        let started = Instant::now();
        for chunk in sessions.chunks(64) {
            ingest(store, chunk, tapes::now_ms()).expect("ingest");
        }
        started.elapsed().as_secs_f64()
    };
    let with = small(store, 8);
    assert!(tapes::views::search::is_current(store).expect("generation"));
    let other = tempfile::tempdir().expect("temp dir");
    let bare = Store::open(&other.path().join("store")).expect("open store");
    let without = small(&bare, 8);
    println!(
        "import of {} more messages in batches of 64 sessions: {with:.2} s into the indexed store (index kept current), {without:.2} s into a store without an index ({:.2}x)",
        more * per_session,
        with / without
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

/// Peak memory of the `tapes import` binary on a transcript whose longest line carries one
/// message of `mb` MB (text with quotes, backslashes, newlines and non-ASCII, so the JSON is
/// escaped), against the anchor of issue "Trust": at most 3x the line.
fn big_line(mb: usize) {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    // Written piece by piece: this process must stay small, since a child's peak RSS as the
    // kernel reports it includes what it inherited before `exec`.
    let file = dir.path().join("big.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("create"));
    let line = |uuid: &str, parent: Option<&str>, kind: &str, message: serde_json::Value| {
        serde_json::json!({
            "parentUuid": parent, "isSidechain": false, "userType": "external",
            "cwd": "/tmp/p", "sessionId": "big-line", "version": "2.1.38", "type": kind,
            "message": message, "uuid": uuid, "timestamp": "2026-02-14T09:00:00.000Z",
        })
        .to_string()
    };
    let first = line(
        "u1",
        None,
        "user",
        serde_json::json!({"role": "user", "content": "hello"}),
    );
    let marker = "@@TEXT@@";
    let second = line(
        "a1",
        Some("u1"),
        "assistant",
        serde_json::json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4", "content": [{"type": "text", "text": marker}],
            "usage": {"input_tokens": 1, "output_tokens": 1}}),
    );
    let (before, after) = second.split_once(marker).expect("marker");
    writeln!(out, "{first}").expect("write");
    out.write_all(before.as_bytes()).expect("write");
    let words = [
        "fn ",
        "let ",
        "\"quoted\" ",
        "C:\\path ",
        "é ",
        "→ ",
        "{ ",
        "}\n",
        "\t",
    ];
    let escaped: Vec<String> = words
        .iter()
        .map(|w| {
            let json = serde_json::to_string(w).expect("escape");
            json[1..json.len() - 1].to_string()
        })
        .collect();
    let (mut text_len, mut i) = (0usize, 0usize);
    let mut longest = before.len() + after.len();
    while text_len < mb << 20 {
        let k = i % words.len();
        out.write_all(escaped[k].as_bytes()).expect("write");
        text_len += words[k].len();
        longest += escaped[k].len();
        i = i.wrapping_mul(31).wrapping_add(7) % 1_000_003;
    }
    writeln!(out, "{after}").expect("write");
    out.flush().expect("flush");
    drop(out);
    let started = Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tapes"))
        .env("TAPES_HOME", dir.path().join("home"))
        .arg("import")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run tapes import");
    assert!(status.success(), "tapes import failed");
    // SAFETY: getrusage fills the zeroed struct it is given.
    let peak_kb = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss as usize
    };
    let peak = peak_kb * 1024;
    println!(
        "big line: {} line imported in {:.2?}; peak RSS {} = {:.2}x the line (anchor: at most 3x)",
        human(longest),
        started.elapsed(),
        human(peak),
        peak as f64 / longest as f64
    );
}
