//! The CLI as a user runs it: process start to exit, at ~1M nodes (issue "Speed", item 4).
//!
//! `cargo bench --bench cli -- [--nodes 1000000] [--runs 21]`
//!
//! Builds alice's home (`tapes init`, then ~1M generated nodes ingested through the library and
//! shared publicly), starts `tapes serve` on 127.0.0.1 for it, and gives bob a home that fetches
//! everything once with `tapes fetch` (timed, the first fetch of the whole store). Then each
//! command below runs `--runs` times as a fresh process, and the median, p90 and the target
//! are printed:
//!
//! - `tapes sessions` (alice; her store is held by `tapes serve`, so this goes through the
//!   holder's socket as it does for a user with serve running);
//! - `tapes show <id>` of a ~100-message session;
//! - `tapes search <word> --limit 20` (the index is built once before timing);
//! - `tapes fetch alice` with nothing new (bob).
//!
//! Targets (issue "Speed"): fetch no-op < 100 ms, search < 50 ms; `sessions` and `show` have
//! no number in the issue and are compared with the no-op fetch's budget (100 ms).
//! `TAPES_BENCH_BIN` times another `tapes` binary; `--keep DIR` leaves both homes in DIR.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapes::home::Home;
use tapes::identity::Identity;
use tapes::import::ingest::{ingest, Incoming};
use tapes::session::sample::{self, Shape};
use tapes::share::{self, Audience, SecretPolicy, ShareOptions};
use tapes::store::Store;

#[global_allocator]
static GLOBAL: tapes::allocator::MiMalloc = tapes::allocator::MiMalloc;

fn main() {
    // As the `tapes` binary does, so the memory figures are the ones a user sees.
    tapes::allocator::purge_freed_memory_at_once();
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = flag(&args, "--nodes").unwrap_or(1_000_000);
    let runs: usize = flag(&args, "--runs").unwrap_or(21);
    let bin = std::env::var("TAPES_BENCH_BIN").unwrap_or(env!("CARGO_BIN_EXE_tapes").into());
    let dir = tempfile::tempdir().expect("temp dir");
    // `--keep DIR`: build the homes in DIR and leave them (to profile a command afterwards).
    let root = match args.iter().position(|a| a == "--keep") {
        Some(i) => PathBuf::from(args.get(i + 1).expect("--keep DIR")),
        None => dir.path().to_path_buf(),
    };
    let (alice, bob) = (root.join("alice"), root.join("bob"));
    let shape = Shape::default();
    let per_session = 2 + shape.tool_rounds * 2;
    let sessions = nodes.div_ceil(per_session);
    println!(
        "cli benchmark: {sessions} sessions x {per_session} messages = {} nodes, {} runs per command, 127.0.0.1",
        sessions * per_session,
        runs
    );

    // Alice: an identity, the nodes, every session shared publicly (setup, not measured).
    run(&bin, &alice, &["init", "--name", "alice"]);
    let started = Instant::now();
    let first_id = {
        let home = Home::at(&alice);
        let store = Store::open(&home.store_dir()).expect("open alice's store");
        let identity = Identity::load(&home).expect("alice's identity");
        let mut ids = Vec::new();
        let mut batch = Vec::new();
        let mut batch_nodes = 0;
        for i in 0..sessions {
            let session = sample::session(17, i, shape);
            batch_nodes += session.messages.len();
            batch.push(Incoming {
                session,
                path: String::new(),
            });
            if batch_nodes >= tapes::import::walk::BATCH_NODES || i + 1 == sessions {
                let report = ingest(&store, &batch, tapes::now_ms()).expect("ingest");
                ids.extend(report.sessions.iter().map(|s| s.id));
                batch.clear();
                batch_nodes = 0;
            }
        }
        for id in &ids {
            share::share(
                &store,
                &identity,
                id,
                &ShareOptions {
                    audience: Audience::Public,
                    title: None,
                    note: None,
                    expires_ms: None,
                    secrets: SecretPolicy::Allow,
                },
                tapes::now_ms(),
            )
            .expect("share");
        }
        ids[ids.len() / 2]
    };
    println!(
        "setup: alice ingested and shared {sessions} sessions in {:.1?} (not measured)",
        started.elapsed()
    );
    // The search index, built once as a user's first search (or import) would.
    let started = Instant::now();
    run(&bin, &alice, &["search", "error", "--limit", "1"]);
    println!(
        "setup: search index built in {:.1?} (not measured)",
        started.elapsed()
    );

    let serve = Serve::start(&bin, &alice);
    run(&bin, &bob, &["init", "--name", "bob"]);
    run(&bin, &bob, &["remote", "add", "alice", &serve.ticket]);
    let started = Instant::now();
    run(&bin, &bob, &["fetch", "alice"]);
    let whole = started.elapsed();
    let store_bytes = dir_size(&Home::at(&alice).store_dir());
    println!(
        "first `tapes fetch alice` of everything (plain, public shares): {:.2?} for {:.0} MB of store = {:.0} MB/s, process start to exit",
        whole,
        store_bytes as f64 / 1e6,
        store_bytes as f64 / 1e6 / whole.as_secs_f64()
    );

    println!("\nprocess start to exit, {runs} runs each:");
    let id = first_id.to_hex();
    let cases: [(&str, &Path, Vec<&str>, f64); 4] = [
        ("tapes sessions", &alice, vec!["sessions"], 100.0),
        ("tapes show <id>", &alice, vec!["show", &id], 100.0),
        (
            "tapes search error --limit 20",
            &alice,
            vec!["search", "error", "--limit", "20"],
            50.0,
        ),
        (
            "tapes fetch alice (nothing new)",
            &bob,
            vec!["fetch", "alice"],
            100.0,
        ),
    ];
    for (name, home, words, target_ms) in cases {
        run(&bin, home, &words); // warm the page cache, as a user's second command
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let started = Instant::now();
                run(&bin, home, &words);
                started.elapsed()
            })
            .collect();
        times.sort();
        let p50 = times[times.len() / 2].as_secs_f64() * 1e3;
        let p90 = times[times.len() * 9 / 10].as_secs_f64() * 1e3;
        println!(
            "   {name:<34} p50 {p50:>6.1} ms  p90 {p90:>6.1} ms   target {target_ms:.0} ms: x{:.2} [{}]",
            p50 / target_ms,
            if p50 < target_ms { "ok" } else { "MISSED" }
        );
    }
    drop(serve);
}

/// Runs `tapes ARGS` in `home`, output discarded; panics with its stderr when it fails.
fn run(bin: &str, home: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .env("TAPES_HOME", home)
        .env("TAPES_RELAYS", "none")
        .env_remove("RUST_LOG")
        .current_dir(home.parent().unwrap_or(home))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tapes");
    assert!(
        out.status.success(),
        "tapes {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tapes serve` on 127.0.0.1 for `home` (no mDNS), killed on drop.
struct Serve {
    child: std::process::Child,
    ticket: String,
}

impl Serve {
    fn start(bin: &str, home: &PathBuf) -> Serve {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(bin)
            .env("TAPES_HOME", home)
            .env("TAPES_RELAYS", "none")
            .args(["serve", "--bind", "127.0.0.1:0", "--no-mdns"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tapes serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut ticket = None;
        for line in lines.by_ref() {
            let line = line.expect("serve output");
            if let Some(t) = line.strip_prefix("ticket: ") {
                ticket = Some(t.to_string());
            }
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            ticket: ticket.expect("tapes serve prints its ticket"),
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}
