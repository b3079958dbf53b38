//! `tapes pull` and `tapes push`, with the project's tracking file.
//!
//! Pull brings one of your sessions from a remote and tracks it under an alias (its base is the
//! head the remote has). Push sends what is after the base and moves the base; a remote that
//! moved on in the meantime refuses (the seed's 409) and nothing changes on either side.
//! Before anything is sent, what a push would send passes the secret gate (SPEC.md §11.2): a
//! hit refuses that session's push with the list; `--dry-run` lists, `--allow-secrets`
//! overrides, `--redact` pushes a redacted copy of a session the remote does not hold yet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use tapes::protocol::{SessionId, StoredObject};
use tapes::store::{Store, StoreError};
use tapes::sync::remote::Remote;
use tapes::sync::tracking::{self, TrackedAlias, Tracking};
use tapes::sync::transfer::{self, TransferError};
use tapes::views::render;

use super::remote;

#[derive(clap::Args)]
pub struct PullArgs {
    /// The session: its full id, or a unique prefix of one already here.
    id: String,
    /// The remote to pull from (default: the only remote configured).
    #[arg(long, value_name = "REMOTE")]
    from: Option<String>,
    /// The project whose `.tapes/tracking.json` records it (default: the current directory).
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
    /// Track it under this alias.
    #[arg(long, default_value = "main", conflicts_with = "no_track")]
    alias: String,
    /// Do not record it in the project's tracking file.
    #[arg(long)]
    no_track: bool,
    /// Take the remote's version even though your copy here has messages the remote does not
    /// (they stay in the store; `tapes branch` first keeps them as a session).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    agent: super::resume::PlatformArgs,
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// The remote (default: the tracked session's remote, or the only remote configured).
    remote: Option<String>,
    /// Sessions to push: ids, unique prefixes or tracked aliases (default: the current alias).
    sessions: Vec<String>,
    /// The project whose `.tapes/tracking.json` holds the bases (default: the current directory).
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
    #[command(flatten)]
    gate: super::GateArgs,
}

pub fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let id = pull_target(&store, &args.id)?;
    let project = if args.no_track {
        None
    } else {
        Some(super::project_dir(args.into.as_deref())?)
    };
    let mut tracked = match &project {
        Some(dir) => Some(Tracking::load(dir)?),
        None => None,
    };
    if let (Some(dir), Some(tracking)) = (&project, &tracked) {
        tracking::validate_alias(&args.alias)?;
        if let Some(existing) = tracking.aliases.get(&args.alias) {
            if existing.session() != Some(id) {
                bail!(
                    "alias `{}` in {} already tracks session {}; pick another with --alias <name>, or pass --no-track",
                    args.alias,
                    Tracking::path(dir).display(),
                    existing.session().map_or("(none)".into(), |s| s.short())
                );
            }
        }
    }
    let remote_name = remote::choose(&store, args.from.as_deref(), "--from <name>")?;
    let remote = remote::open(&home, &store, &remote_name)?;
    if !args.force {
        check_not_behind(&store, remote.as_ref(), &id)?;
    }
    let pulled = match transfer::pull(&store, remote.as_ref(), &id) {
        Ok(pulled) => pulled,
        Err(TransferError::NotFound) => {
            // The seed's exact words, for missing sessions and others' alike.
            eprintln!("Session not found.");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    super::search::keep_index_current(&store);
    println!(
        "pulled {} from {remote_name}: {}, {}",
        id.short(),
        render::plural(pulled.new_nodes as usize, "new node"),
        render::plural(pulled.count as usize, "message")
    );
    if let (Some(dir), Some(tracking)) = (&project, &mut tracked) {
        let previous = tracking
            .aliases
            .get(&args.alias)
            .cloned()
            .unwrap_or_default();
        let record = &pulled.record;
        let entry = TrackedAlias {
            session_id: Some(id),
            local_session_id: None,
            parent_id: record.lineage.parent,
            root_id: Some(record.lineage.root),
            base_count: pulled.count,
            base_digest: Some(record.head),
            remote: Some(remote_name.clone()),
            platform: previous.platform,
            files: previous.files,
            last_pulled_at: Some(tracking::now_rfc3339()),
            remote_digest: Some(record.head),
            remote_count: Some(pulled.count),
            remote_checked_at: Some(tracking::now_rfc3339()),
        };
        tracking.set(&args.alias, entry, true)?;
        tracking.save(dir)?;
        println!(
            "tracking it as `{}` in {}",
            args.alias,
            Tracking::path(dir).display()
        );
    }
    if let Some(platform) = &args.agent.platform {
        let agent_dir = super::resume::agent_dir(args.into.as_deref())?;
        super::resume::materialize(
            &store,
            &id,
            platform,
            &agent_dir,
            false,
            args.agent.resume,
            |done| {
                // Recorded before the agent starts, so `tapes status` elsewhere knows it.
                if let (Some(dir), Some(tracking)) = (&project, &mut tracked) {
                    super::resume::track_files(tracking, &args.alias, done);
                    tracking.save(dir)?;
                }
                Ok(())
            },
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A full id (the session may not be here yet), or a unique prefix of a session already here.
fn pull_target(store: &Store, input: &str) -> anyhow::Result<SessionId> {
    let input = input.trim();
    if input.contains("://") {
        return tapes::share::session_from_link(input).with_context(|| {
            format!("`{input}` is not a session link (`https://<relay page>/s/<session id>`); give the session id or the link a share printed")
        });
    }
    if let Ok(id) = input.parse::<SessionId>() {
        return Ok(id);
    }
    match store.resolve_session(input) {
        Ok(id) => Ok(id),
        Err(StoreError::SessionNotFound(_)) => bail!(
            "`{input}` is not a full session id ({} hex digits) and no session here starts with it; give the full id",
            SessionId::LEN * 2
        ),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a pull that would set your copy back: pulling is only a fast-forward of what is here.
/// Says nothing when the remote does not have the session or it is not yours (pull answers
/// "Session not found." then, and must not tell more).
fn check_not_behind(store: &Store, remote: &dyn Remote, id: &SessionId) -> anyhow::Result<()> {
    let Some(local) = store.session(id)? else {
        return Ok(());
    };
    let Some(theirs) = remote.session(id)? else {
        return Ok(());
    };
    if !tapes::session::lineage::is_mine(&theirs, store.local_owner()?.as_ref())
        || local.head == theirs.head
    {
        return Ok(());
    }
    let mut failed = None;
    let missing = remote.fetch_chain(id, &theirs.head, &mut |node| {
        node == &local.head
            || store.has_node(node).unwrap_or_else(|e| {
                failed = Some(e);
                true
            })
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    // Where the walk down the remote's history met what is here.
    let met = match missing.first() {
        None => Some(theirs.head),
        Some(first) => StoredObject::parent_of(&first.bytes).map_err(|e| {
            anyhow::anyhow!(
                "remote {} sent a damaged node {}: {e}",
                remote.name(),
                first.id
            )
        })?,
    };
    if met == Some(local.head) {
        return Ok(());
    }
    bail!(
        "your copy of session {short} has messages that remote {name} does not (here: {here} messages at {lh}; {name}: {there} at {rh}), so pulling would set it back. \
         Push them with `tapes push`, keep them as a new session with `tapes branch {short}`, or take the remote's version with `tapes pull {id} --force`",
        short = id.short(),
        name = remote.name(),
        here = local.summary.messages,
        lh = local.head.short(),
        there = theirs.summary.messages,
        rh = theirs.head.short(),
    )
}

pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    // Every ref update is signed by its owner: no identity, no push.
    let identity = tapes::identity::Identity::load(&home)?;
    let project = super::project_dir(args.into.as_deref())?;
    let mut tracking = Tracking::load(&project)?;
    if let Some(name) = &args.remote {
        if !remote::exists(&store, name)? {
            let is_session =
                tracking.aliases.contains_key(name) || store.resolve_session(name).is_ok();
            if is_session {
                bail!("no remote named `{name}`; to push session `{name}`, name the remote first: `tapes push <remote> {name}` (`tapes remote list` shows them)");
            }
            return Err(tapes::remotes::not_found_in(&store, name)?.into());
        }
    }

    // What to push: (session, the alias tracking it).
    let mut targets: Vec<(SessionId, Option<String>)> = Vec::new();
    if args.sessions.is_empty() {
        let Some((name, alias)) = tracking.current() else {
            bail!(
                "nothing to push: {} has no current tracked session; name one with `tapes push <remote> <session>`, or start tracking with `tapes pull` or `tapes branch`",
                Tracking::path(&project).display()
            );
        };
        let id = alias.session().with_context(|| {
            format!("alias `{name}` names no session; repair or delete the tracking file")
        })?;
        targets.push((id, Some(name.to_string())));
    } else {
        for input in &args.sessions {
            if let Some(alias) = tracking.aliases.get(input) {
                let id = alias.session().with_context(|| {
                    format!("alias `{input}` names no session; repair or delete the tracking file")
                })?;
                targets.push((id, Some(input.clone())));
            } else {
                let id = store.resolve_session(input)?;
                targets.push((id, tracking.find_session(&id).map(|(n, _)| n.to_string())));
            }
        }
    }

    let mut failed = false;
    let mut changed = false;
    for (id, alias_name) in targets {
        let alias = alias_name
            .as_ref()
            .and_then(|n| tracking.aliases.get(n))
            .cloned();
        let remote_name = match (&args.remote, alias.as_ref().and_then(|a| a.remote.clone())) {
            (Some(name), _) => name.clone(),
            (None, Some(name)) => name,
            (None, None) => remote::choose(&store, None, "`tapes push <remote>`")?,
        };
        // The base: what the remote holds for this session as far as this project knows.
        // A pending branch, an untracked session, or a tracked one pushed to another remote
        // than its own, is new there: the remote refuses if it has it already.
        let (base, track) = match &alias {
            None => (None, false),
            Some(a) if a.is_pending() => (None, true),
            Some(a) if a.remote.as_deref().is_none_or(|r| r == remote_name) => {
                (a.base_digest, true)
            }
            Some(_) => (None, false),
        };
        if store.session(&id)?.is_none() {
            eprintln!(
                "error: session {} is not in this store; `tapes pull {}` brings it back, or `tapes sessions` lists what is here",
                id.short(),
                id
            );
            failed = true;
            continue;
        };
        if args.gate.dry_run {
            match transfer::dry_run(&store, &id, base.as_ref()) {
                Ok(report) => println!("{report}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
            continue;
        }
        let remote = remote::open(&home, &store, &remote_name)?;
        // The turns the agent appended to the alias's file come in first (SPEC §17.3).
        if let Some(a) = &alias {
            super::resume::import_before_push(&store, &a.files)?;
        }
        let Some(record) = store.session(&id)? else {
            eprintln!(
                "error: session {} vanished from this store; run `tapes fsck`",
                id.short()
            );
            failed = true;
            continue;
        };
        // Nothing leaves the machine before the secret gate passed what would be sent.
        match transfer::push_gated(
            &store,
            &identity,
            remote.as_ref(),
            &id,
            base.as_ref(),
            args.gate.policy(),
            tapes::now_ms(),
        ) {
            Ok(gated) => {
                let pushed = gated.pushed;
                if gated.session == id {
                    println!(
                        "pushed {} to {remote_name}: {}",
                        id.short(),
                        render::plural(pushed.nodes as usize, "new node")
                    );
                } else {
                    println!(
                        "pushed a redacted copy {} of {} to {remote_name}: {} ({} redacted; the original stays here, unpushed)",
                        gated.session.short(),
                        id.short(),
                        render::plural(pushed.nodes as usize, "new node"),
                        render::plural(gated.redacted_spans as usize, "span")
                    );
                }
                if let (true, Some(name), Some(mut entry)) = (track, &alias_name, alias) {
                    let count = if gated.session == id && pushed.head == record.head {
                        record.summary.messages
                    } else {
                        store.chain(&pushed.head)?.len() as u64
                    };
                    // The alias follows what the remote has: the copy, when one went.
                    entry.session_id = Some(gated.session);
                    entry.local_session_id = None;
                    entry.base_count = count;
                    entry.base_digest = Some(pushed.head);
                    entry.remote_digest = Some(pushed.head);
                    entry.remote_count = Some(count);
                    entry.remote_checked_at = Some(tracking::now_rfc3339());
                    entry.remote = Some(remote_name.clone());
                    tracking.aliases.insert(name.clone(), entry);
                    changed = true;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if changed {
        tracking.save(&project)?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
