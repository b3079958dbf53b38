//! `tapes bundle create | verify | import`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use tapes::identity::Identity;
use tapes::protocol::{MemberId, SessionId};
use tapes::session::SessionRecord;
use tapes::store::Store;
use tapes::sync::bundle::{self, BundleInfo, CreateOptions, Outcome, Sealing};
use tapes::team;
use tapes::views::export::Filter;
use tapes::views::render;

#[derive(clap::Subcommand)]
pub enum BundleCommand {
    /// Write sessions to a bundle file, signed by you: sealed to your own key (a personal
    /// backup), to a team (--team: only what it may see), or not at all (--plain). Every
    /// session passes the secret gate first.
    Create(CreateArgs),
    /// Check a bundle without importing it: checksum, nodes, signatures, team; list its sessions.
    Verify(VerifyArgs),
    /// Import a bundle: all or nothing; importing it again adds nothing.
    Import(ImportArgs),
}

/// The session selection shared by `bundle create` and `export`.
#[derive(clap::Args)]
pub struct Selection {
    /// Sessions (ids or unique prefixes); without ids or filters, ids are read from stdin
    /// when it is piped (`tapes search … | tapes bundle create -o x.tape`), else every session
    /// is taken (`--all` says so explicitly).
    pub ids: Vec<String>,
    /// Sessions that started on this UTC day (YYYY-MM-DD).
    #[arg(long)]
    pub date: Option<String>,
    /// Sessions of this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Sessions whose model contains this (e.g. claude-sonnet).
    #[arg(long)]
    pub model: Option<String>,
    /// Sessions active within this long (30m, 12h, 30d, 2w).
    #[arg(long)]
    pub since: Option<String>,
    /// Every session, without reading stdin (for scripts whose stdin is a pipe).
    #[arg(long, conflicts_with_all = ["ids", "date", "project", "model", "since"])]
    pub all: bool,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    select: Selection,
    /// The bundle file to write.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Seal to this team (name or id prefix): the bundle carries only what the team may see,
    /// sessions shared with it (or publicly), plus your own sessions named by id. Default:
    /// sealed to your own key, a personal backup of your own sessions that only you can open.
    #[arg(long, conflicts_with = "plain")]
    team: Option<String>,
    /// Do not seal: anyone holding the file can read it (your own sessions only).
    #[arg(long)]
    plain: bool,
    /// Incremental: leave out what this earlier bundle already carries.
    #[arg(long, visible_alias = "since-bundle", value_name = "BUNDLE")]
    basis: Option<PathBuf>,
    #[command(flatten)]
    gate: super::GateArgs,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    bundle: PathBuf,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    bundle: PathBuf,
}

pub fn run(command: BundleCommand) -> anyhow::Result<ExitCode> {
    match command {
        BundleCommand::Create(args) => create(args),
        BundleCommand::Verify(args) => verify(args),
        BundleCommand::Import(args) => import(args),
    }
}

/// The filter the selection describes, reading ids from stdin when nothing else selects.
pub fn select(
    store: &Store,
    select: &Selection,
    now_ms: i64,
) -> anyhow::Result<(Filter, Vec<(SessionId, SessionRecord)>)> {
    let mut filter = Filter {
        date: select.date.clone(),
        project: select.project.clone(),
        model: select.model.clone(),
        since: select.since.clone(),
        ids: None,
    };
    let mut inputs = select.ids.clone();
    if inputs.is_empty() && filter.is_empty() && !select.all && stdin_is_piped() {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading session ids from stdin")?;
            match line.split_whitespace().next() {
                // Tolerate a header row or comments from whatever produced the list.
                Some(token) if tapes::protocol::id::normalize_prefix(token).is_ok() => {
                    inputs.push(token.to_string())
                }
                _ => {}
            }
        }
        if inputs.is_empty() {
            // An empty search piped in must not turn into "every session".
            bail!("no session ids on stdin, so nothing was selected; pipe in ids (`tapes search … |`), or pass --all for every session");
        }
    }
    if !inputs.is_empty() {
        let mut ids = Vec::with_capacity(inputs.len());
        for input in &inputs {
            ids.push(store.resolve_session(input)?);
        }
        ids.sort();
        ids.dedup();
        filter.ids = Some(ids);
    }
    let sessions = filter.select(store, now_ms)?;
    Ok((filter, sessions))
}

/// True when stdin is a pipe or a file (ids to read), not a terminal or /dev/null.
fn stdin_is_piped() -> bool {
    if std::io::stdin().is_terminal() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata("/dev/stdin").is_ok_and(|m| {
            let t = m.file_type();
            t.is_fifo() || t.is_file() || t.is_socket()
        })
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// How to seal: --plain, --team T, else to your own key.
fn sealing(store: &Store, me: &MemberId, args: &CreateArgs) -> anyhow::Result<Sealing> {
    if args.plain {
        return Ok(Sealing::Plain);
    }
    let Some(team) = &args.team else {
        return Ok(Sealing::Personal);
    };
    let chain = team::resolve(store, Some(team))?;
    if chain.head().manifest.member(me).is_none() {
        bail!(
            "you are not a member of team {}; you can only seal bundles to your own teams",
            chain.head().manifest.name
        );
    }
    Ok(Sealing::Team(Box::new(chain)))
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let identity = Identity::load(&home)?;
    let me = MemberId(identity.verifying_key().to_bytes());
    let now = tapes::now_ms();
    let (filter, sessions) = select(&store, &args.select, now)?;
    if sessions.is_empty() {
        bail!(
            "no session matches the selection; nothing was written (`tapes sessions` lists them)"
        );
    }
    let sealing = sealing(&store, &me, &args)?;
    let named = filter.ids.clone().unwrap_or_default();
    let prepared = bundle::prepare(
        &store,
        &identity,
        sessions,
        &named,
        &sealing,
        args.gate.policy(),
        args.gate.dry_run,
        now,
    )?;
    let mut failed = false;
    for left in &prepared.left_out {
        if left.named {
            eprintln!(
                "error: session {} is left out: {}",
                left.session.short(),
                left.why
            );
            failed = true;
        } else {
            eprintln!(
                "note: session {} is left out: {}",
                left.session.short(),
                left.why
            );
        }
    }
    if args.gate.dry_run {
        for report in &prepared.reports {
            println!("{report}");
        }
        return Ok(exit_code(failed));
    }
    for refused in &prepared.refused {
        eprintln!("error: {refused}");
        failed = true;
    }
    for (original, copy, spans) in &prepared.redacted {
        println!(
            "bundling a redacted copy {} of {} ({} redacted; the original is untouched)",
            copy.short(),
            original.short(),
            render::plural(*spans as usize, "span")
        );
    }
    if prepared.sessions.is_empty() {
        eprintln!("error: no session is left to bundle; nothing was written");
        return Ok(ExitCode::from(1));
    }
    let team = match sealing {
        Sealing::Plain => None,
        Sealing::Team(chain) => Some(*chain),
        Sealing::Personal => Some(bundle::personal_chain(&identity, now)?),
    };
    let personal = args.team.is_none() && !args.plain;
    let bar = super::progress_bar(prepared.sessions.len() as u64, "bundling");
    let created = bundle::create(
        &store,
        &identity,
        &args.output,
        CreateOptions {
            sessions: prepared.sessions,
            filter: filter.describe(),
            team,
            basis: args.basis.as_deref(),
            now_ms: now,
        },
        &mut |n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    let sealing = match &created.team {
        Some(_) if personal => {
            "sealed to your own key (a personal backup: only you can open it)".to_string()
        }
        Some((id, name)) => format!("sealed to team {name} ({})", id.short()),
        None => "plain (not sealed)".into(),
    };
    println!(
        "wrote {}: {}, {} ({}), {}; {}, {}",
        created.path.display(),
        render::plural(created.sessions as usize, "session"),
        render::plural(created.objects as usize, "node"),
        render::bytes(created.object_bytes as usize),
        render::plural(created.shares as usize, "share"),
        render::bytes(created.size as usize),
        sealing
    );
    if let Some(basis) = &args.basis {
        println!(
            "incremental on {}: left out {} and the history it already carries",
            basis.display(),
            render::plural(created.basis_sessions as usize, "session")
        );
    }
    println!("checksum blake3:{}", hex::encode(created.checksum));
    Ok(exit_code(failed))
}

fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn identity_if_any(home: &tapes::home::Home) -> anyhow::Result<Option<Identity>> {
    if Identity::exists(home) {
        Ok(Some(Identity::load(home)?))
    } else {
        Ok(None)
    }
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let identity = identity_if_any(&home)?;
    let bar = super::progress_bar(file_len(&args.bundle), "verifying");
    let info = bundle::verify(&store, identity.as_ref(), &args.bundle, &mut |n| {
        bar.set_position(n)
    })?;
    bar.finish_and_clear();
    print!("{}", describe(&info));
    Ok(ExitCode::SUCCESS)
}

/// The `tapes bundle verify` report.
fn describe(info: &BundleInfo) -> String {
    use std::fmt::Write as _;
    let h = &info.header;
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid tapes bundle", info.path.display());
    let _ = writeln!(
        out,
        "  size      {} ({} bytes), checksum blake3:{}",
        render::bytes(info.size as usize),
        info.size,
        hex::encode(info.checksum)
    );
    let name = if h.creator_name.is_empty() {
        "(no name)"
    } else {
        &h.creator_name
    };
    let _ = writeln!(
        out,
        "  signer    {name} ({}), signature verified",
        h.creator.to_hex()
    );
    let _ = writeln!(out, "  created   {} UTC", render::time(Some(h.created_ms)));
    match (&h.team, &info.team_name) {
        (Some(team), name) => {
            let _ = writeln!(
                out,
                "  team      {} ({}), sealed in {}; you are a member",
                name.as_deref().unwrap_or("?"),
                team.to_hex(),
                render::plural(info.sealed_chunks as usize, "chunk")
            );
        }
        (None, _) => {
            let _ = writeln!(out, "  team      none: plain bundle (not sealed)");
        }
    }
    if !h.filter.is_empty() {
        let parts: Vec<String> = h.filter.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  filter    {}", parts.join(" "));
    }
    match (&h.basis, &h.basis_name) {
        (Some(sum), name) => {
            let _ = writeln!(
                out,
                "  basis     incremental on {} (checksum blake3:{})",
                name.as_deref().unwrap_or("another bundle"),
                hex::encode(sum)
            );
        }
        (None, _) => {
            let _ = writeln!(out, "  basis     none (self-contained)");
        }
    }
    let _ = writeln!(
        out,
        "  contents  {}, {} ({}), {}",
        render::plural(info.sessions.len(), "session"),
        render::plural(info.objects as usize, "node"),
        render::bytes(info.object_bytes as usize),
        render::plural(info.shares as usize, "share")
    );
    let _ = writeln!(
        out,
        "  new here  {} ({}) not in this store",
        render::plural(info.new_objects as usize, "node"),
        render::bytes(info.new_bytes as usize)
    );
    if !info.sessions.is_empty() {
        let rows: Vec<(SessionId, SessionRecord)> = info
            .sessions
            .iter()
            .map(|s| (s.id, s.record.clone()))
            .collect();
        out.push('\n');
        out.push_str(&render::sessions_table(&rows));
    }
    out
}

fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let identity = identity_if_any(&home)?;
    let len = file_len(&args.bundle);
    let bar = super::progress_bar(len, "importing");
    let report = bundle::import(&store, identity.as_ref(), &args.bundle, &mut |n| {
        bar.set_position(n)
    })
    .map_err(|e| {
        if e.rejected_before_writing() && !matches!(e, bundle::BundleError::Raced) {
            anyhow::anyhow!("nothing was imported: {e}")
        } else {
            e.into()
        }
    })?;
    bar.finish_and_clear();
    super::search::keep_index_current(&store);
    let total = report.sessions.len();
    if report.nothing_new() {
        println!(
            "nothing new: {} of {} {} already here",
            if total == 1 {
                "the only session".to_string()
            } else {
                format!("all {total} sessions")
            },
            args.bundle.display(),
            if total == 1 { "is" } else { "are" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "imported {}: {}, {} updated, {} unchanged; {} ({}), {}",
        args.bundle.display(),
        render::plural(report.count(Outcome::Created), "new session"),
        report.count(Outcome::Updated),
        report.count(Outcome::Unchanged) + report.count(Outcome::Newer),
        render::plural(report.objects_written, "new node"),
        render::bytes(report.bytes_written),
        render::plural(report.shares_written, "share")
    );
    Ok(ExitCode::SUCCESS)
}
