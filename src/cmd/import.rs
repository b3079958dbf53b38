//! `tapes import [--watch] PATH...`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tapes::import::walk::{import_found, Found, ImportSummary};
use tapes::ingest::Outcome;
use tapes::render;
use tapes::watch::Watcher;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Files or directories (searched recursively), e.g. ~/.claude/projects.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Keep running and import transcripts as they are written or grow, until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// How often watch mode looks for changes, in milliseconds.
    #[arg(long, default_value_t = 500, requires = "watch")]
    interval_ms: u64,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    if args.watch {
        return watch(args);
    }
    let (_home, store) = super::open_store()?;
    let mut found = Found::default();
    for root in &args.paths {
        found.add(root);
    }
    let bar = super::progress_bar(found.files.len() as u64, "importing");
    let summary = import_found(&store, found, tapes::now_ms(), |path| {
        bar.set_message(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        bar.inc(1);
    })
    .context("writing the import to the store")?;
    bar.finish_and_clear();
    print_summary(&summary);
    Ok(if summary.refused().next().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn watch(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    // The watcher opens the store only while it writes; release ours.
    drop(store);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let roots: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
    println!("watching {} (Ctrl-C to stop)", roots.join(", "));
    let mut watcher = Watcher::new(args.paths, home.store_dir());
    watcher.run(
        Duration::from_millis(args.interval_ms),
        &stop,
        |summary| {
            if summary.report.new_nodes > 0 || summary.refused().next().is_some() {
                print_summary(summary);
            }
        },
        |e| eprintln!("warning: {e}"),
    );
    println!("stopped watching");
    Ok(ExitCode::SUCCESS)
}

fn print_summary(summary: &ImportSummary) {
    let r = &summary.report;
    let created = r.count(Outcome::Created);
    let updated = r.count(Outcome::Updated);
    let unchanged = r.count(Outcome::Unchanged);
    let branched = r.count(Outcome::Branched);
    let files = summary.files.iter().filter(|f| f.error.is_none()).count();
    if created + updated + branched == 0 && r.new_nodes == 0 {
        println!(
            "nothing new: {} from {} already up to date",
            render::plural(unchanged, "session"),
            render::plural(files, "file")
        );
    } else {
        println!(
            "imported {}: {created} new sessions, {updated} updated, {unchanged} unchanged; {} new nodes ({})",
            render::plural(files, "file"),
            r.new_nodes,
            render::bytes(r.bytes)
        );
        for s in r
            .sessions
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Created | Outcome::Updated))
        {
            let verb = if s.outcome == Outcome::Created {
                "new"
            } else {
                "grew"
            };
            println!(
                "  {verb:<4} {}  {}",
                s.id.short(),
                render::plural(s.messages, "message")
            );
        }
    }
    for s in &r.sessions {
        match (s.outcome, s.branched_from) {
            (Outcome::Branched, Some((from, common))) => println!(
                "  kept {}  {}: {} differs from session {} after message {common}; kept as a branch of it (a session only moves forward)",
                s.id.short(),
                render::plural(s.messages, "message"),
                s.path,
                from.short(),
            ),
            (Outcome::Older, _) => println!(
                "  already have {}: {} is an older copy ({}); nothing changed",
                s.id.short(),
                s.path,
                render::plural(s.messages, "message"),
            ),
            _ => {}
        }
    }
    let duplicates = r.count(Outcome::Duplicate) + summary.repeated;
    if duplicates > 0 {
        println!(
            "  {} reached more than once in this import, stored once",
            render::plural(duplicates, "copy")
        );
    }
    let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
    for file in &summary.files {
        for (kind, n) in &file.skipped_types {
            *skipped.entry(kind).or_default() += n;
        }
    }
    if !skipped.is_empty() {
        let list: Vec<String> = skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("  not messages (skipped): {}", list.join(", "));
    }
    if summary.passed_over > 0 {
        println!(
            "  passed over {} files in no format tapes imports",
            summary.passed_over
        );
    }
    for file in &summary.files {
        for w in &file.warnings {
            eprintln!("warning: {}:{}: {}", file.path.display(), w.line, w.message);
        }
        if let Some(e) = &file.error {
            eprintln!("error: {e} (nothing from this path was stored; the rest was imported)");
        }
    }
}
