//! `tapes branch` and `tapes fork`.
//!
//! The new session is tracked in the project's `.tapes/tracking.json` (unless `--no-track`)
//! with its branch point as base, and becomes the current alias. Unless `--local`, it is also
//! created on the remote right away (the remote of the tracked source, or the only remote), so
//! its id is known there and `tapes push` appends to it; with `--local`, or when there is no
//! remote to create it on, it is a pending branch that its first `tapes push` creates.
//!
//! Creating it on the remote sends it off the machine, so it passes the secret gate first
//! (SPEC.md §11.2): a finding keeps it here as a pending branch (exit 1) unless
//! `--allow-secrets` (send as is) or `--redact` (a redacted copy goes to the remote and is
//! tracked instead; the branch stays here); `--dry-run` lists and creates nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use tapes::protocol::SessionId;
use tapes::session::lineage::{self, CopyOptions};
use tapes::share::gate::Exit;
use tapes::store::Store;
use tapes::sync::tracking::{self, TrackedAlias, Tracking};
use tapes::sync::transfer::{self, GatedPush, TransferError};

use super::remote;

#[derive(clap::Args)]
pub struct CopyArgs {
    /// Share the first N messages (1-based count), or `head` for all of them.
    #[arg(long, default_value = "head")]
    at: String,
    #[arg(long)]
    title: Option<String>,
    /// Comma-separated tags.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// A longer description.
    #[arg(long)]
    summary: Option<String>,
    /// Make the new session private whatever the original's visibility.
    #[arg(long)]
    private: bool,
    /// Track the new session under this alias (default: its short id).
    #[arg(long, conflicts_with = "no_track")]
    alias: Option<String>,
    /// Keep the new session here until its first `tapes push` (a pending branch).
    #[arg(long)]
    local: bool,
    /// Do not record it in the project's tracking file.
    #[arg(long)]
    no_track: bool,
    /// The project whose `.tapes/tracking.json` records it (default: the current directory).
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
    /// The secret gate in front of creating it on the remote.
    #[command(flatten)]
    gate: super::GateArgs,
    /// Write the new session for an agent (a fresh agent session id) and optionally start it.
    #[command(flatten)]
    agent: super::resume::PlatformArgs,
}

#[derive(clap::Args)]
pub struct BranchArgs {
    /// The session (id or unique prefix); default: the project's current tracked session.
    id: Option<String>,
    #[command(flatten)]
    copy: CopyArgs,
}

#[derive(clap::Args)]
pub struct ForkArgs {
    /// The session (id or unique prefix).
    id: String,
    #[command(flatten)]
    copy: CopyArgs,
    /// Fork even though you own the session (normally `tapes branch`).
    #[arg(long)]
    force: bool,
}

/// A session id, unique prefix, or public page link (the seed's `<sessionId|url>`).
fn resolve(store: &Store, input: &str) -> anyhow::Result<SessionId> {
    if input.contains("://") {
        let id = tapes::share::session_from_link(input).ok_or_else(|| {
            anyhow::anyhow!("`{input}` is not a session link (`https://<relay page>/s/<session id>`); give the session id or the link a share printed")
        })?;
        return Ok(store.resolve_session(&id.to_hex())?);
    }
    Ok(tapes::share::resolve_content(store, input)?)
}

fn options(args: &CopyArgs) -> anyhow::Result<CopyOptions> {
    let at = match args.at.as_str() {
        "head" => None,
        n => Some(
            n.parse::<u64>()
                .map_err(|_| anyhow::anyhow!("--at takes a message count or `head`, not `{n}`"))?,
        ),
    };
    Ok(CopyOptions {
        at,
        title: args.title.clone(),
        tags: args.tags.clone(),
        description: args.summary.clone(),
        private: args.private,
    })
}

/// The project's tracking file, when the new session is to be tracked (or the source is to be
/// taken from it).
struct Project {
    dir: PathBuf,
    tracking: Tracking,
}

fn project(args: &CopyArgs, needed: bool) -> anyhow::Result<Option<Project>> {
    if args.no_track && !needed {
        return Ok(None);
    }
    let dir = super::project_dir(args.into.as_deref())?;
    let tracking = Tracking::load(&dir)?;
    if !args.no_track {
        if let Some(alias) = &args.alias {
            tracking::validate_alias(alias)?;
            if let Some(existing) = tracking.aliases.get(alias) {
                bail!(
                    "alias `{alias}` in {} already tracks session {}; pick another with --alias <name>",
                    Tracking::path(&dir).display(),
                    existing.session().map_or("(none)".into(), |s| s.short())
                );
            }
        }
    }
    Ok(Some(Project { dir, tracking }))
}

pub fn branch(args: BranchArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let project = project(&args.copy, args.id.is_none())?;
    let source = match &args.id {
        Some(id) => resolve(&store, id)?,
        None => {
            let current = project.as_ref().and_then(|p| p.tracking.current());
            match current.and_then(|(_, alias)| alias.session()) {
                Some(id) => id,
                None => bail!(
                    "no session given and {} has no current tracked session; name one: `tapes branch <session>` (`tapes sessions` lists them)",
                    project.as_ref().map_or_else(|| "this project".into(), |p| Tracking::path(&p.dir).display().to_string())
                ),
            }
        }
    };
    if args.copy.gate.dry_run {
        let findings = lineage::scan_copy(&store, &source, &options(&args.copy)?)?;
        println!("{}", findings.dry_run(Exit::Branch));
        return Ok(ExitCode::SUCCESS);
    }
    let id = lineage::branch(&store, &source, &options(&args.copy)?, tapes::now_ms())?;
    report(&store, "branched", &source, &id)?;
    finish(
        &home,
        &store,
        &args.copy,
        project,
        &source,
        &id,
        Exit::Branch,
    )
}

pub fn fork(args: ForkArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let project = project(&args.copy, false)?;
    let source = resolve(&store, &args.id)?;
    if args.copy.gate.dry_run {
        let findings = lineage::scan_copy(&store, &source, &options(&args.copy)?)?;
        println!("{}", findings.dry_run(Exit::Fork));
        return Ok(ExitCode::SUCCESS);
    }
    let id = lineage::fork(
        &store,
        &source,
        &options(&args.copy)?,
        args.force,
        tapes::now_ms(),
    )?;
    report(&store, "forked", &source, &id)?;
    finish(&home, &store, &args.copy, project, &source, &id, Exit::Fork)
}

fn report(store: &Store, verb: &str, source: &SessionId, id: &SessionId) -> anyhow::Result<()> {
    let record = store
        .session(id)?
        .ok_or_else(|| anyhow::anyhow!("the new session vanished; run `tapes fsck`"))?;
    println!(
        "{verb} {} into new session {} ({}, {})",
        source.short(),
        id.short(),
        tapes::views::render::plural(record.lineage.base_count as usize, "shared message"),
        record.visibility.label()
    );
    Ok(())
}

/// Creates the new session on the remote (unless `--local`) and tracks it (unless
/// `--no-track`).
fn finish(
    home: &tapes::home::Home,
    store: &std::sync::Arc<Store>,
    args: &CopyArgs,
    project: Option<Project>,
    source: &SessionId,
    id: &SessionId,
    exit: Exit,
) -> anyhow::Result<ExitCode> {
    let mut record = store
        .session(id)?
        .ok_or_else(|| anyhow::anyhow!("the new session vanished; run `tapes fsck`"))?;
    let mut tracked = *id;
    let mut refused = false;
    // The remote: the tracked source's, else the only one configured.
    let tracked_remote = project
        .as_ref()
        .and_then(|p| p.tracking.find_session(source))
        .and_then(|(_, a)| a.remote.clone());
    let remotes = remote::configured(store)?;
    let remote_name = match tracked_remote {
        Some(name) => Some(name),
        None if remotes.len() == 1 => Some(remotes[0].0.clone()),
        None => None,
    };
    let mut pending = true;
    if !args.local {
        match &remote_name {
            Some(name) => match create_on_remote(home, store, name, id, exit, args.gate) {
                Ok(gated) if gated.session == *id => {
                    pending = false;
                    println!("created {} on {name}", id.short());
                }
                Ok(gated) => {
                    pending = false;
                    println!(
                        "created a redacted copy {} of {} on {name} ({} redacted; {} stays here, untracked)",
                        gated.session.short(),
                        id.short(),
                        tapes::views::render::plural(gated.redacted_spans as usize, "span"),
                        id.short()
                    );
                    tracked = gated.session;
                    record = store.session(&tracked)?.ok_or_else(|| {
                        anyhow::anyhow!("the redacted copy vanished; run `tapes fsck`")
                    })?;
                    // The copy shares no messages with anything: its own head is its base.
                    record.lineage.base_count = record.summary.messages;
                    record.lineage.base_digest = Some(record.head);
                }
                Err(e) if is_refusal(&e) => {
                    eprintln!("error: {e:#}");
                    refused = true;
                }
                Err(e) => eprintln!(
                    "warning: could not create {} on remote {name}: {e:#}; it stays here as a pending branch until `tapes push`",
                    id.short()
                ),
            },
            None if remotes.is_empty() => {
                println!("kept here as a pending branch: no remote is configured (`tapes remote add`, then `tapes push`)")
            }
            None => println!("kept here as a pending branch: several remotes are configured; `tapes push <remote>` creates it on one"),
        }
    }
    let code = if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    let Some(mut project) = project.filter(|_| !args.no_track) else {
        materialize(store, args, None, &tracked)?;
        return Ok(code);
    };
    let alias = args.alias.clone().unwrap_or_else(|| tracked.short());
    let entry = TrackedAlias {
        session_id: if pending { None } else { Some(tracked) },
        local_session_id: if pending { Some(tracked) } else { None },
        parent_id: record.lineage.parent,
        root_id: Some(record.lineage.root),
        base_count: record.lineage.base_count,
        base_digest: record.lineage.base_digest,
        remote: remote_name,
        platform: None,
        files: Vec::new(),
        last_pulled_at: None,
        remote_digest: (!pending).then_some(record.head),
        remote_count: (!pending).then_some(record.summary.messages),
        remote_checked_at: (!pending).then(tracking::now_rfc3339),
    };
    project.tracking.set(&alias, entry, true)?;
    project.tracking.save(&project.dir)?;
    println!(
        "tracking it as `{alias}` in {}",
        Tracking::path(&project.dir).display()
    );
    materialize(store, args, Some((&mut project, &alias)), &tracked)?;
    Ok(code)
}

/// `--platform`: writes the new session for the agent (a fresh agent session id: it is a new
/// session there too), records the files on the alias, and starts the agent on `--resume`.
fn materialize(
    store: &Store,
    args: &CopyArgs,
    project: Option<(&mut Project, &str)>,
    id: &SessionId,
) -> anyhow::Result<()> {
    let Some(platform) = &args.agent.platform else {
        return Ok(());
    };
    let dir = super::resume::agent_dir(args.into.as_deref())?;
    super::resume::materialize(store, id, platform, &dir, true, args.agent.resume, |done| {
        if let Some((project, alias)) = project {
            super::resume::track_files(&mut project.tracking, alias, done);
            project.tracking.save(&project.dir)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// True for the secret gate's refusals (as opposed to a remote that could not be reached).
fn is_refusal(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<TransferError>(),
        Some(TransferError::Gate(_))
    )
}

/// Creates the new session on remote `name` through the secret gate.
fn create_on_remote(
    home: &tapes::home::Home,
    store: &std::sync::Arc<Store>,
    name: &str,
    id: &SessionId,
    exit: Exit,
    gate: super::GateArgs,
) -> anyhow::Result<GatedPush> {
    let remote = remote::open(home, store, name)?;
    let identity = tapes::identity::Identity::load(home)?;
    Ok(transfer::create_gated(
        store,
        &identity,
        remote.as_ref(),
        id,
        exit,
        gate.policy(),
        tapes::now_ms(),
    )?)
}
