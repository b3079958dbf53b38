//! `tapes export --format json|jsonl|csv`: every session through the secret gate first
//! (SPEC.md §11.2, §12.6).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use tapes::identity::Identity;
use tapes::views::export::{self, ExportMeta, Format};

use super::bundle::{select, Selection};

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    select: Selection,
    /// json (one document, the RFC bundle shape with every node), jsonl (one session per
    /// line) or csv (metadata only, one row per session). Default: from -o's extension, else json.
    #[arg(long)]
    format: Option<String>,
    /// Write here instead of stdout.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// The secret gate: a session with a finding is left out (exit 1) unless --redact
    /// (written redacted) or --allow-secrets (written as is, not scanned).
    #[command(flatten)]
    gate: super::GateArgs,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = match (&args.format, &args.output) {
        (Some(text), _) => Format::parse(text)
            .with_context(|| format!("--format {text}: unknown format; use json, jsonl or csv"))?,
        (None, Some(path)) => path
            .extension()
            .and_then(|e| Format::parse(&e.to_string_lossy()))
            .unwrap_or(Format::Json),
        (None, None) => Format::Json,
    };
    let (home, store) = super::open_store()?;
    let now = tapes::now_ms();
    let (filter, sessions) = select(&store, &args.select, now)?;
    if sessions.is_empty() && !args.select.ids.is_empty() {
        bail!("none of the sessions named matches the filters; nothing was exported");
    }
    let exported_by = match Identity::exists(&home) {
        true => {
            let me = Identity::load(&home)?;
            if me.profile.name.is_empty() {
                me.node_id_hex()
            } else {
                me.profile.name.clone()
            }
        }
        false => String::new(),
    };
    if args.gate.dry_run {
        for report in export::dry_run(&store, &sessions)? {
            println!("{report}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let prices = tapes::session::pricing::PriceTable::load(home.root())?;
    let meta = ExportMeta {
        exported_at_ms: now,
        prices,
        exported_by,
        filter: filter.describe(),
        secrets: args.gate.policy(),
        paths: tapes::share::outgoing::PathPolicy::load(&store)?,
    };
    let bar = super::progress_bar(sessions.len() as u64, "exporting");
    match &args.output {
        Some(path) => {
            // Through a temporary file, so a failed export never leaves half a file behind.
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let result = export::export(&store, &sessions, format, &meta, &mut out, |n| {
                bar.set_position(n as u64)
            });
            let result = result.map_err(anyhow::Error::from).and_then(|n| {
                out.flush()?;
                drop(out);
                std::fs::rename(&partial, path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(n)
            });
            bar.finish_and_clear();
            match result {
                Ok(report) => {
                    eprintln!(
                        "exported {} to {}{}",
                        tapes::views::render::plural(report.written, "session"),
                        path.display(),
                        redacted_note(&report)
                    );
                    Ok(refusals(&report))
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    Err(e)
                }
            }
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let report = export::export(&store, &sessions, format, &meta, &mut out, |n| {
                bar.set_position(n as u64)
            })?;
            bar.finish_and_clear();
            if report.redacted > 0 {
                eprintln!(
                    "exported {}{}",
                    tapes::views::render::plural(report.written, "session"),
                    redacted_note(&report)
                );
            }
            Ok(refusals(&report))
        }
    }
}

fn redacted_note(report: &export::Exported) -> String {
    match report.redacted {
        0 => String::new(),
        n => format!(" ({n} with their secrets redacted)"),
    }
}

/// Prints each session the secret gate left out; exit 1 when there was one.
fn refusals(report: &export::Exported) -> ExitCode {
    for refused in &report.refused {
        eprintln!("error: {refused}");
    }
    if report.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
