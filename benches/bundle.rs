//! Bundle throughput: generate about N MB of sessions, then create a plain and a sealed bundle
//! of all of them and import each into a fresh store, printing MB/s per phase.
//!
//! `cargo bench --bench bundle -- [--mb 1024]`
//!
//! MB/s is bundle bytes per second of wall time. Import is one pass that verifies every node,
//! signature and chunk while staging the new nodes in a pack file, then commits the pack and
//! the refs (with fsyncs); "verify" is the same pass without staging or writing.

use std::time::Instant;

use tapes::identity::{Identity, Profile};
use tapes::import::ingest::{ingest, Incoming};
use tapes::import::ParsedSession;
use tapes::protocol::{ContentBlock, MemberId, ToolResultPart};
use tapes::session::sample::{self, Rng, Shape};
use tapes::store::Store;
use tapes::sync::bundle::{self, CreateOptions};
use tapes::team;

#[global_allocator]
static GLOBAL: tapes::allocator::MiMalloc = tapes::allocator::MiMalloc;

/// A sample session whose tool results are `kb` KiB each (so size grows fast).
fn big_session(index: usize, kb: usize) -> ParsedSession {
    let shape = Shape {
        tool_rounds: 8,
        ..Shape::default()
    };
    let mut session = sample::session(3, index, shape);
    let mut rng = Rng::new(index as u64);
    for m in &mut session.messages {
        for block in &mut m.blocks {
            if let ContentBlock::ToolResult { content, .. } = block {
                let mut text = String::with_capacity(kb * 1024 + 64);
                let mut i = 0;
                while text.len() < kb * 1024 {
                    text.push_str(&format!(
                        "{i:>5}  let value_{i} = compute({}, {}); // {:016x}\n",
                        rng.below(1000),
                        rng.below(1000),
                        rng.next_u64()
                    ));
                    i += 1;
                }
                *content = vec![ToolResultPart::Text { text }];
            }
        }
    }
    session
}

fn main() {
    // As the `tapes` binary does, so the memory figures are the ones a user sees.
    tapes::allocator::purge_freed_memory_at_once();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let mb: usize = flag(&args, "--mb").unwrap_or(1024);
    let kb = 32;
    let per_session = 8 * kb * 1024 + 4096;
    let sessions = (mb * 1_000_000).div_ceil(per_session);
    let dir = tempfile::tempdir().expect("temp dir");
    let me = Identity::generate(Profile {
        name: "bench".into(),
        email: None,
    })
    .expect("identity");
    let owner = MemberId(me.verifying_key().to_bytes());

    let source = Store::open(&dir.path().join("source")).expect("open store");
    source.set_local_owner(&owner).expect("owner");
    let started = Instant::now();
    let mut from = 0;
    while from < sessions {
        let to = (from + 500).min(sessions);
        let batch: Vec<Incoming> = (from..to)
            .map(|i| Incoming {
                session: big_session(i, kb),
                path: String::new(),
            })
            .collect();
        ingest(&source, &batch, tapes::now_ms()).expect("ingest");
        from = to;
    }
    println!(
        "bundle benchmark: {sessions} sessions, {} objects, generated and stored in {:.1?} (not counted)",
        source.storage().object_count(),
        started.elapsed()
    );
    let chain = team::create(&source, &me, "Bench", tapes::now_ms()).expect("team");

    for (label, team) in [("plain", None), ("sealed", Some(chain.clone()))] {
        let path = dir.path().join(format!("{label}.tape"));
        let started = Instant::now();
        let created = bundle::create(
            &source,
            &me,
            &path,
            CreateOptions {
                sessions: source.sessions().expect("sessions"),
                filter: Default::default(),
                team,
                basis: None,
                now_ms: tapes::now_ms(),
            },
            &mut |_| {},
        )
        .expect("create");
        rate(
            &format!("create {label}"),
            created.size,
            started.elapsed().as_secs_f64(),
        );

        let target = Store::open(&dir.path().join(format!("target-{label}"))).expect("open");
        team::store_chain(&target, &chain).expect("team chain");
        let started = Instant::now();
        let info = bundle::verify(&target, Some(&me), &path, &mut |_| {}).expect("verify");
        rate(
            &format!("verify {label}"),
            info.size,
            started.elapsed().as_secs_f64(),
        );
        let started = Instant::now();
        let report = bundle::import(&target, Some(&me), &path, &mut |_| {}).expect("import");
        rate(
            &format!("import {label}"),
            info.size,
            started.elapsed().as_secs_f64(),
        );
        assert_eq!(report.objects_written as u64, created.objects);
        drop(target);
        let _ = std::fs::remove_dir_all(dir.path().join(format!("target-{label}")));
        let _ = std::fs::remove_file(&path);
    }
}

fn rate(what: &str, bytes: u64, secs: f64) {
    println!(
        "{what:<15} {:>8.1} MB in {secs:>6.2} s = {:>6.1} MB/s",
        bytes as f64 / 1e6,
        bytes as f64 / secs / 1e6
    );
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.replace('_', "").parse().ok()
}
