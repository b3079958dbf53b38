//! `tapes import [--watch] PATH...`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tapes::import::ingest::Outcome;
use tapes::import::walk::{import_found, Found, ImportSummary};
use tapes::import::watch::Watcher;
use tapes::views::render;

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

pub fn run(args: ImportArgs, verbose: u8) -> anyhow::Result<ExitCode> {
    if args.watch {
        return watch(args, verbose);
    }
    let (_home, store) = super::open_store()?;
    let mut found = Found::default();
    for root in &args.paths {
        found.add(root);
    }
    let bar = super::progress_bar(found.files.len() as u64, "importing");
    // One catch-up of the search index at the end instead of one update per batch.
    tapes::views::search::defer_updates();
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
    super::search::keep_index_current(&store);
    print_summary(&summary, verbose);
    Ok(if summary.refused().next().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn watch(args: ImportArgs, verbose: u8) -> anyhow::Result<ExitCode> {
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
                print_summary(summary, verbose);
            }
        },
        |e| eprintln!("warning: {e}"),
    );
    println!("stopped watching");
    Ok(ExitCode::SUCCESS)
}

/// Prints what an import did. Without `-v` that is one line of counts, followed only by what
/// needs a reader's attention (branched and older copies, duplicates, records that are not
/// messages; warnings and refused files on stderr); `-v` adds a line per new or grown session.
fn print_summary(summary: &ImportSummary, verbose: u8) {
    let r = &summary.report;
    println!("{}", summary_line(summary));
    if verbose > 0 {
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
            (Outcome::Removed, _) => println!(
                "  not imported {}: removed with `tapes rm` (`tapes rm --forget {}` lets it back)",
                s.id.short(),
                s.id.short()
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
    for file in &summary.files {
        for w in &file.warnings {
            eprintln!("warning: {}:{}: {}", file.path.display(), w.line, w.message);
        }
        if let Some(e) = &file.error {
            eprintln!("error: {e} (nothing from this path was stored; the rest was imported)");
        }
    }
}

/// The one line every import prints: files, sessions new / grown / unchanged (and branched),
/// the nodes written, and the files skipped or refused.
fn summary_line(summary: &ImportSummary) -> String {
    let r = &summary.report;
    let created = r.count(Outcome::Created);
    let updated = r.count(Outcome::Updated);
    let unchanged = r.count(Outcome::Unchanged);
    let branched = r.count(Outcome::Branched);
    let files = summary.files.iter().filter(|f| f.error.is_none()).count();
    let mut line = if created + updated + branched == 0 && r.new_nodes == 0 {
        format!(
            "nothing new: {} from {} already up to date",
            render::plural(unchanged, "session"),
            render::plural(files, "file")
        )
    } else {
        let branched = if branched > 0 {
            format!(", {} kept", render::plural(branched, "branch"))
        } else {
            String::new()
        };
        format!(
            "imported {}: {}, {updated} grew, {unchanged} unchanged{branched}; {} ({})",
            render::plural(files, "file"),
            render::plural(created, "new session"),
            render::plural(r.new_nodes, "new node"),
            render::bytes(r.bytes)
        )
    };
    if summary.passed_over > 0 {
        line.push_str(&format!(
            "; skipped {} in no format tapes imports",
            render::plural(summary.passed_over, "file")
        ));
    }
    let refused = summary.refused().count();
    if refused > 0 {
        line.push_str(&format!("; refused {}", render::plural(refused, "file")));
    }
    line
}
