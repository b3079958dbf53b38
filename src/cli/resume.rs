//! `tapes checkout`, `tapes status`, and `--platform`/`--resume` on pull, branch and fork
//! (SPEC.md §17): parse, call `tapes::resume`, render.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tapes::protocol::SessionId;
use tapes::resume::checkout::{self, Checkout};
use tapes::resume::{AgentHomes, Platform};
use tapes::store::Store;
use tapes::sync::tracking::Tracking;

/// `--platform` and `--resume`, shared by checkout, pull, branch and fork.
#[derive(clap::Args, Debug, Clone)]
pub struct PlatformArgs {
    /// Write the session where this agent resumes it: claude, codex, gemini, or file (the
    /// canonical transcript JSON).
    #[arg(long, value_name = "AGENT")]
    pub platform: Option<String>,
    /// Then start the agent on it, in this terminal (needs --platform).
    #[arg(long, requires = "platform")]
    pub resume: bool,
}

#[derive(clap::Args)]
pub struct CheckoutArgs {
    /// The session: its id or a unique prefix.
    id: String,
    /// The agent to write it for: claude, codex, gemini, or file.
    #[arg(long, value_name = "AGENT")]
    platform: String,
    /// The directory the agent will run in (default: the current one); for `file`, where the
    /// JSON goes.
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
    /// Then start the agent on it, in this terminal.
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The project (default: the current directory).
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
    /// Ask each alias's remote now where its session is.
    #[arg(long)]
    fetch: bool,
    /// One JSON object per alias, in an array.
    #[arg(long)]
    json: bool,
}

/// The absolute directory an agent will run in.
pub fn agent_dir(into: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = super::project_dir(into)?;
    std::path::absolute(&dir)
        .with_context(|| format!("cannot make {} absolute; pass --into DIR", dir.display()))
}

/// Writes `id` for `platform` in `dir`, prints what was written and how to resume, lets the
/// caller record it (`written`, before any agent starts), and starts the agent when asked.
pub fn materialize(
    store: &Store,
    id: &SessionId,
    platform: &str,
    dir: &Path,
    fresh_id: bool,
    resume: bool,
    written: impl FnOnce(&Checkout) -> anyhow::Result<()>,
) -> anyhow::Result<Checkout> {
    let platform = Platform::parse(platform)?;
    let options = checkout::Options {
        platform,
        cwd: dir.to_path_buf(),
        homes: AgentHomes::from_env()?,
        now_ms: tapes::now_ms(),
        fresh_id,
    };
    // Before anything is written: `--resume` needs the agent.
    if resume {
        check_agent(platform)?;
    }
    let done = checkout::checkout(store, id, &options)?;
    for file in &done.files {
        let verb = if file.rewritten {
            "wrote"
        } else {
            "up to date:"
        };
        println!("{verb} {}", file.path.display());
    }
    written(&done)?;
    let Some(command) = &done.command else {
        return Ok(done);
    };
    if !resume {
        println!("resume it with: {}", command.display());
        return Ok(done);
    }
    if done.theirs {
        eprintln!(
            "note: session {} is someone else's; resuming sends its content to your own {} model provider",
            id.short(),
            platform
        );
    }
    let status = command.run()?;
    // What the agent appended is stored now, so `tapes status` and `tapes push` see it.
    let files: Vec<PathBuf> = done.files.iter().map(|f| f.path.clone()).collect();
    let summary = tapes::resume::sync::import_agent_files(store, &files, tapes::now_ms())?;
    let new = summary.report.new_nodes;
    if new > 0 {
        println!(
            "{} recorded from {}; `tapes push` sends them",
            tapes::views::render::plural(new, "new message"),
            platform
        );
    }
    if !status.success() {
        eprintln!("{} exited with {status}", command.program);
    }
    Ok(done)
}

/// Refuses `--resume` when the agent's executable is not on PATH (before anything is written).
fn check_agent(platform: Platform) -> anyhow::Result<()> {
    if let Some(command) = checkout::AgentCommand::new(platform, "-", Path::new(".")) {
        if !command.available() {
            return Err(tapes::resume::ResumeError::NoAgent {
                program: command.program,
                package: command.package(),
            }
            .into());
        }
    }
    Ok(())
}

/// Records the agent and its files on `alias` (the tracking file is saved by the caller).
pub fn track_files(tracking: &mut Tracking, alias: &str, done: &Checkout) {
    if let Some(entry) = tracking.aliases.get_mut(alias) {
        entry.platform = Some(done.platform.name().to_string());
        entry.files = done
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
    }
}

/// Imports the agent files of the aliases about to be pushed, so the push carries the turns
/// the agent appended. Says how many came in.
pub fn import_before_push(store: &Store, files: &[String]) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    let summary = tapes::resume::sync::import_agent_files(store, &paths, tapes::now_ms())?;
    for file in summary.refused() {
        if let Some(e) = &file.error {
            eprintln!("warning: {e}");
        }
    }
    for s in &summary.report.sessions {
        match s.outcome {
            tapes::import::ingest::Outcome::Updated | tapes::import::ingest::Outcome::Created => {
                println!("imported the new turns of {} from {}", s.id.short(), s.path)
            }
            tapes::import::ingest::Outcome::Branched => {
                let (from, at) = s.branched_from.unwrap_or((s.id, 0));
                println!(
                    "{} changed the history of {} after message {at}: kept as a new session {} (not pushed; `tapes push {}` sends it)",
                    s.path,
                    from.short(),
                    s.id.short(),
                    s.id.short()
                )
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn checkout(args: CheckoutArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    let id = tapes::share::resolve_content(&store, &args.id)?;
    let dir = agent_dir(args.into.as_deref())?;
    materialize(
        &store,
        &id,
        &args.platform,
        &dir,
        false,
        args.resume,
        |_| Ok(()),
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let project = super::project_dir(args.into.as_deref())?;
    let mut tracking = Tracking::load(&project)?;
    if args.fetch {
        let mut changed = false;
        for (name, alias) in tracking.aliases.iter_mut() {
            let (Some(id), Some(remote_name)) = (alias.session_id, alias.remote.clone()) else {
                continue;
            };
            let asked = super::remote::open(&home, &store, &remote_name)
                .map_err(|e| e.to_string())
                .and_then(|remote| remote.session(&id).map_err(|e| e.to_string()));
            match asked {
                Ok(found) => {
                    alias.remote_digest = found.as_ref().map(|r| r.head);
                    alias.remote_count = found.as_ref().map(|r| r.summary.messages);
                    alias.remote_checked_at = Some(tapes::sync::tracking::now_rfc3339());
                    changed = true;
                }
                Err(e) => eprintln!("warning: `{name}`: could not ask {remote_name}: {e}"),
            }
        }
        if changed {
            tracking.save(&project)?;
        }
    }
    let current = tracking.current.clone();
    let mut rows = Vec::new();
    for (name, alias) in &tracking.aliases {
        rows.push(tapes::resume::sync::alias_status(
            &store,
            name,
            alias,
            current.as_deref() == Some(name.as_str()),
        )?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "{} tracks no session; `tapes pull`, `tapes branch` or `tapes fork` start tracking one",
            Tracking::path(&project).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let color = std::io::stdout().is_terminal();
    for row in &rows {
        let marker = if row.current { "*" } else { " " };
        let short = row.session.get(..12).unwrap_or(&row.session);
        let mut head = format!("{marker} {}  {short}", row.alias);
        if row.pending {
            head.push_str("  (pending: its first push creates it)");
        }
        println!(
            "{}",
            if color {
                format!("\x1b[1m{head}\x1b[0m")
            } else {
                head
            }
        );
        println!(
            "    remote:     {}",
            row.remote.as_deref().unwrap_or("(none)")
        );
        println!(
            "    platform:   {}",
            row.platform.as_deref().unwrap_or("(none)")
        );
        for file in &row.files {
            let mut line = format!("    file:       {}", file.path);
            if file.missing {
                line.push_str("  (missing)");
            } else if let Some(at) = file.diverged_at {
                line.push_str(&format!(
                    "  (history changed at message {at}: import keeps it as a branch)"
                ));
            } else if file.new_turns > 0 {
                line.push_str(&format!(
                    "  ({} not imported yet)",
                    tapes::views::render::plural(file.new_turns, "new message")
                ));
            } else if let Some(why) = &file.unreadable {
                line.push_str(&format!("  (unreadable: {why})"));
            }
            println!("{line}");
        }
        println!(
            "    messages:   {} here, {} on the remote as of the last pull or push",
            row.local_count, row.base_count
        );
        println!("    not pushed: {}", row.not_pushed);
        let remote_line = match (row.behind, &row.remote_checked_at) {
            (Some(true), Some(at)) => format!(
                "moved on: {} there as of {at}; `tapes pull` brings them",
                tapes::views::render::plural(row.remote_count.unwrap_or(0) as usize, "message")
            ),
            (Some(false), Some(at)) => format!("up to date as of {at}"),
            _ => "not asked yet (`tapes status --fetch` asks now)".to_string(),
        };
        println!("    remote is:  {remote_line}");
        if row.diverged {
            println!("    note: the copy here does not continue the remote's; `tapes branch` keeps it as its own session");
        }
    }
    Ok(ExitCode::SUCCESS)
}
