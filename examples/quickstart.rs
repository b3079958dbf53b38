//! The main job on the embedded default: generate realistic sample sessions as Claude Code
//! transcripts, import them into a fresh tapes store, import again (nothing new), grow one
//! transcript (only its new nodes are added), then list, show, log and fsck — printing what
//! happened at each step. Everything runs in a temporary directory; nothing touches ~/.tapes.
//!
//! `cargo run --release --example quickstart [-- --sessions N]`

use std::time::Instant;

use tapes::fsck::fsck;
use tapes::identity::{Identity, Profile};
use tapes::import::walk::import_paths;
use tapes::ingest::Outcome;
use tapes::protocol::SessionId;
use tapes::sample::{self, Shape};
use tapes::store::Store;
use tapes::{home::Home, render};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sessions: usize = args
        .iter()
        .position(|a| a == "--sessions")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let home = Home::at(dir.path().join("tapes-home"));
    home.ensure()?;

    let identity = Identity::generate(Profile {
        name: "alice".into(),
        email: None,
    })?;
    identity.save(&home)?;
    println!(
        "1. tapes init: node id {} (keys in 0600 files)",
        &identity.node_id_hex()[..16]
    );

    let projects = dir.path().join("claude-projects");
    let shape = Shape::default();
    for i in 0..sessions {
        let session = sample::session(2026, i, shape);
        let project = session.messages[0].meta.project.clone().unwrap_or_default();
        let folder = projects.join(format!("-home-dev-src-{project}"));
        std::fs::create_dir_all(&folder)?;
        std::fs::write(
            folder.join(format!("{}.jsonl", session.source_id)),
            sample::claude_jsonl(&session),
        )?;
    }
    println!(
        "2. generated {sessions} Claude Code transcripts under {}",
        projects.display()
    );

    let store = Store::open(&home.store_dir())?;
    let started = Instant::now();
    let first = import_paths(&store, &[projects.clone()], tapes::now_ms(), |_| {})?;
    println!(
        "3. tapes import: {} new sessions, {} new nodes ({}) in {:.0?}",
        first.report.count(Outcome::Created),
        first.report.new_nodes,
        render::bytes(first.report.bytes),
        started.elapsed()
    );

    let second = import_paths(&store, &[projects.clone()], tapes::now_ms(), |_| {})?;
    println!(
        "4. tapes import again: {} new nodes, {} sessions unchanged (idempotent)",
        second.report.new_nodes,
        second.report.count(Outcome::Unchanged)
    );

    // The agent keeps working in session 0: its transcript grows by two rounds.
    let grown = sample::session(
        2026,
        0,
        Shape {
            tool_rounds: shape.tool_rounds + 2,
            ..shape
        },
    );
    let mut original = sample::session(2026, 0, shape);
    let keep = original.messages.len() - 1;
    original.messages.truncate(keep);
    original
        .messages
        .extend(grown.messages[keep..].iter().cloned());
    let project = original.messages[0]
        .meta
        .project
        .clone()
        .unwrap_or_default();
    let path = projects
        .join(format!("-home-dev-src-{project}"))
        .join(format!("{}.jsonl", original.source_id));
    std::fs::write(&path, sample::claude_jsonl(&original))?;
    let third = import_paths(&store, &[projects], tapes::now_ms(), |_| {})?;
    println!(
        "5. a transcript grew: {} session updated, {} new nodes (shared history is not stored twice)",
        third.report.count(Outcome::Updated),
        third.report.new_nodes
    );

    let mut rows = store.sessions()?;
    rows.sort_by(|a, b| b.1.summary.started_ms.cmp(&a.1.summary.started_ms));
    println!("6. tapes sessions (newest 5 of {}):", rows.len());
    for line in render::sessions_table(&rows[..rows.len().min(5)]).lines() {
        println!("   {line}");
    }

    let id = SessionId::derive("claude", &original.source_id);
    let record = store
        .session(&id)?
        .ok_or_else(|| anyhow::anyhow!("session {id} vanished"))?;
    let chain = store.chain(&record.head)?;
    println!("7. tapes show {} (first 12 lines):", id.short());
    for line in render::transcript(&id, &record, &chain).lines().take(12) {
        println!("   {line}");
    }

    let report = fsck(&store, |_| {})?;
    println!(
        "8. tapes fsck: {} objects and {} refs verified, {} problems; store is {} on disk",
        report.objects,
        report.refs,
        report.problems.len(),
        render::bytes(store.storage().size_on_disk()? as usize)
    );
    Ok(())
}
