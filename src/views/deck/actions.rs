//! What the deck does to a session, each through the library function its CLI command calls:
//! share and unshare ([`crate::share::share`], [`crate::share::unshare`], after the secret
//! gate's scan [`crate::share::gate::scan_session`], SPEC.md §11), branch and fork
//! ([`crate::session::lineage`], SPEC.md §10), checkout for an agent
//! ([`crate::resume::checkout::checkout`], SPEC.md §17.1), export
//! ([`crate::views::export::export`], SPEC.md §12.6) and bundle
//! ([`crate::sync::bundle::prepare`] and [`crate::sync::bundle::create`], SPEC.md §12.3).
//!
//! Every function returns a one-line report for the deck's status line, or an
//! [`ActionError`] whose text says what happened and what to do next.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tapes_protocol::{MemberId, SessionId, TeamId};

use crate::home::Home;
use crate::identity::{Identity, IdentityError};
use crate::resume::checkout::{self, AgentCommand, Checkout};
use crate::resume::{AgentHomes, Platform, ResumeError};
use crate::session::lineage::{self, CopyOptions, LineageError};
use crate::session::pricing::PriceTable;
use crate::session::SessionRecord;
use crate::share::gate::{Exit, Findings, GateError, SecretPolicy};
use crate::share::{self, Audience, ShareError, ShareOptions};
use crate::store::{Store, StoreError};
use crate::sync::bundle::{self, BundleError, CreateOptions, Sealing};
use crate::team::{self, TeamError};
use crate::views::export::{self, ExportError, ExportMeta, Format};
use crate::views::render::plural;

/// Why an action on the selection did not happen (or only partly).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(
        "this needs your identity and there is none here; run `tapes init --name <you>` first"
    )]
    NoIdentity,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("cannot write {path}: {source}; pick another file name or directory")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` is not a format; end the file name in .json, .jsonl or .csv")]
    Format(String),
    #[error("the agent's new turns were not imported: {0}; run `tapes import` on its file")]
    Import(String),
    #[error("{0}")]
    Refused(String),
}

/// What the deck's actions need besides the session: the store, who I am, where files go.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<Store>,
    /// The home whose identity signs shares and bundles (`None`: read-only, e.g. in tests).
    pub home: Option<Home>,
    pub prices: PriceTable,
    /// Where checkouts write agent files (the agent runs here), and exports and bundles go.
    pub dir: PathBuf,
}

impl Context {
    fn identity(&self) -> Result<Identity, ActionError> {
        match &self.home {
            Some(home) if Identity::exists(home) => Ok(Identity::load(home)?),
            _ => Err(ActionError::NoIdentity),
        }
    }

    fn me(&self) -> Result<Option<MemberId>, ActionError> {
        Ok(self.store.local_owner()?)
    }
}

/// Who a share can be for: my teams, then the public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceChoice {
    pub audience: Audience,
    pub label: String,
}

/// The audiences offered for a share, the project's default first (`tapes config set
/// default-visibility.<project> …`, as `tapes share` reads it), then my teams, then public.
pub fn audiences(ctx: &Context, project: &str) -> Result<Vec<AudienceChoice>, ActionError> {
    let me = ctx.me()?;
    let mut out: Vec<AudienceChoice> = Vec::new();
    for chain in team::list(&ctx.store)? {
        let manifest = &chain.head().manifest;
        if me.is_some_and(|me| manifest.member(&me).is_some()) {
            out.push(AudienceChoice {
                audience: Audience::Team(chain.team_id()),
                label: format!("team {}", manifest.name),
            });
        }
    }
    out.push(AudienceChoice {
        audience: Audience::Public,
        label: "public (anyone with the link)".into(),
    });
    let key = format!("{}{project}", crate::settings::DEFAULT_VISIBILITY);
    let default = crate::settings::get(&ctx.store, &key)?;
    let first = match default.as_deref() {
        Some("public") => out.iter().position(|c| c.audience == Audience::Public),
        Some(team) if team.starts_with("team:") => team::resolve(&ctx.store, team.get(5..))
            .ok()
            .and_then(|chain| {
                let id: TeamId = chain.team_id();
                out.iter().position(|c| c.audience == Audience::Team(id))
            }),
        _ => None,
    };
    if let Some(i) = first {
        let choice = out.remove(i);
        out.insert(0, choice);
    }
    Ok(out)
}

/// What the secret gate finds in session `id` as `tapes share` would send it.
pub fn share_findings(ctx: &Context, id: &SessionId) -> Result<Findings, ActionError> {
    Ok(crate::share::gate::scan_session(&ctx.store, id, None, &[])?)
}

/// `tapes share <id> [--team T | --public] [--redact | --allow-secrets]`.
pub fn share(
    ctx: &Context,
    id: &SessionId,
    audience: &AudienceChoice,
    secrets: SecretPolicy,
    now_ms: i64,
) -> Result<String, ActionError> {
    let me = ctx.identity()?;
    let options = ShareOptions {
        audience: audience.audience,
        title: None,
        note: None,
        expires_ms: None,
        secrets,
    };
    let done = share::share(&ctx.store, &me, id, &options, now_ms)?;
    Ok(if done.session == *id {
        format!("shared {} with {}", id.short(), audience.label)
    } else {
        format!(
            "shared a redacted copy {} of {} with {} ({} redacted; the original is untouched)",
            done.session.short(),
            id.short(),
            audience.label,
            plural(done.redacted_spans, "span")
        )
    })
}

/// Live shares of session `id` (what an unshare revokes).
pub fn live_shares(ctx: &Context, id: &SessionId, now_ms: i64) -> Result<usize, ActionError> {
    Ok(share::shares_of(&ctx.store, id)?
        .iter()
        .filter(|(_, s)| s.is_live(now_ms))
        .count())
}

/// `tapes unshare <id>`: every share of the session.
pub fn unshare(ctx: &Context, id: &SessionId, now_ms: i64) -> Result<String, ActionError> {
    let me = ctx.identity()?;
    let n = share::unshare(&ctx.store, &me, id, None, now_ms)?;
    Ok(format!(
        "unshared {} ({} revoked; access ends now)",
        id.short(),
        plural(n, "share")
    ))
}

/// Branch (my session) or fork (someone else's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Branch,
    Fork,
}

/// `tapes branch <id> --at N --local --no-track` / `tapes fork <id> --at N --local --no-track`:
/// the new session stays here (its first `tapes push` creates it on a remote). Returns the new
/// session and the report.
pub fn copy(
    ctx: &Context,
    kind: CopyKind,
    id: &SessionId,
    at: Option<u64>,
    now_ms: i64,
) -> Result<(SessionId, String), ActionError> {
    let options = CopyOptions {
        at,
        ..CopyOptions::default()
    };
    let new = match kind {
        CopyKind::Branch => lineage::branch(&ctx.store, id, &options, now_ms)?,
        CopyKind::Fork => lineage::fork(&ctx.store, id, &options, false, now_ms)?,
    };
    let record = ctx
        .store
        .session(&new)?
        .ok_or_else(|| StoreError::SessionNotFound(new.short()))?;
    Ok((
        new,
        format!(
            "{} {} into new session {} ({}, {}); `tapes push` sends it to a remote",
            if kind == CopyKind::Branch {
                "branched"
            } else {
                "forked"
            },
            id.short(),
            new.short(),
            plural(record.lineage.base_count as usize, "shared message"),
            record.visibility.label()
        ),
    ))
}

/// `tapes checkout <id> --platform P --into DIR`: writes the session where the agent resumes
/// it. Returns what was written and the line to show.
pub fn checkout(
    ctx: &Context,
    id: &SessionId,
    platform: Platform,
    now_ms: i64,
) -> Result<(Checkout, String), ActionError> {
    let options = checkout::Options {
        platform,
        cwd: ctx.dir.clone(),
        homes: AgentHomes::from_env()?,
        now_ms,
        fresh_id: false,
    };
    let done = checkout::checkout(&ctx.store, id, &options)?;
    let first = done
        .files
        .first()
        .map_or_else(String::new, |f| f.path.display().to_string());
    let line = match &done.command {
        Some(command) => format!(
            "wrote {} for {platform}; resume it with: {}",
            first,
            command.display()
        ),
        None => format!("wrote {first}"),
    };
    Ok((done, line))
}

/// Refuses a resume before anything is written when the agent is not on PATH.
pub fn check_agent(platform: Platform) -> Result<(), ActionError> {
    if let Some(command) = AgentCommand::new(platform, "-", Path::new(".")) {
        if !command.available() {
            return Err(ResumeError::NoAgent {
                program: command.program,
                package: command.package(),
            }
            .into());
        }
    }
    Ok(())
}

/// After the agent ran on a checkout: stores the turns it appended (as `tapes checkout
/// --resume` does). Returns the line to show.
pub fn after_resume(
    ctx: &Context,
    done: &Checkout,
    status: std::process::ExitStatus,
    now_ms: i64,
) -> Result<String, ActionError> {
    let files: Vec<PathBuf> = done.files.iter().map(|f| f.path.clone()).collect();
    let summary = crate::resume::sync::import_agent_files(&ctx.store, &files, now_ms)
        .map_err(|e| ActionError::Import(e.to_string()))?;
    let new = summary.report.new_nodes;
    let mut line = match new {
        0 => format!("back from {}; no new messages", done.platform),
        n => format!(
            "back from {}; {} recorded (`tapes push` sends them)",
            done.platform,
            plural(n, "new message")
        ),
    };
    if !status.success() {
        line.push_str(&format!(" — it exited with {status}"));
    }
    Ok(line)
}

fn records(
    ctx: &Context,
    ids: &[SessionId],
) -> Result<Vec<(SessionId, SessionRecord)>, ActionError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let record = ctx
            .store
            .session(id)?
            .ok_or_else(|| StoreError::SessionNotFound(id.short()))?;
        out.push((*id, record));
    }
    Ok(out)
}

/// The file name an export or bundle of `ids` gets by default, in [`Context::dir`].
pub fn default_path(ctx: &Context, ids: &[SessionId], extension: &str) -> PathBuf {
    let stem = match ids {
        [one] => format!("tapes-{}", one.short()),
        many => format!("tapes-{}-sessions", many.len()),
    };
    ctx.dir.join(format!("{stem}.{extension}"))
}

/// `tapes export <ids> -o PATH` (the format from the extension; the secret gate refuses a
/// session with a finding, as without `--redact` / `--allow-secrets`).
pub fn export(
    ctx: &Context,
    ids: &[SessionId],
    path: &Path,
    now_ms: i64,
) -> Result<String, ActionError> {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let format = Format::parse(&extension).ok_or(ActionError::Format(extension))?;
    let sessions = records(ctx, ids)?;
    let exported_by = match ctx.identity() {
        Ok(me) if !me.profile.name.is_empty() => me.profile.name.clone(),
        Ok(me) => me.node_id_hex(),
        Err(_) => String::new(),
    };
    let meta = ExportMeta {
        exported_at_ms: now_ms,
        prices: ctx.prices.clone(),
        exported_by,
        filter: Default::default(),
        secrets: SecretPolicy::Block,
        paths: crate::share::outgoing::PathPolicy::load(&ctx.store)?,
    };
    // Through a temporary file, so a failed export never leaves half a file behind.
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let write_err = |source| ActionError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(&partial).map_err(write_err)?;
    let mut out = std::io::BufWriter::new(file);
    let result = export::export(&ctx.store, &sessions, format, &meta, &mut out, |_| {});
    drop(out);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, path).map_err(write_err)?;
    let mut line = format!(
        "exported {} to {}",
        plural(report.written, "session"),
        path.display()
    );
    if !report.refused.is_empty() {
        line.push_str(&format!(
            "; the secret gate left out {} (`tapes export {} --dry-run` lists the findings)",
            plural(report.refused.len(), "session"),
            ids.first().map_or_else(String::new, |i| i.short())
        ));
    }
    Ok(line)
}

/// `tapes bundle create <ids> -o PATH`: a personal backup sealed to my own key (only my own
/// sessions), every session through the secret gate.
pub fn bundle(
    ctx: &Context,
    ids: &[SessionId],
    path: &Path,
    now_ms: i64,
) -> Result<String, ActionError> {
    let me = ctx.identity()?;
    let sessions = records(ctx, ids)?;
    let prepared = bundle::prepare(
        &ctx.store,
        &me,
        sessions,
        ids,
        &Sealing::Personal,
        SecretPolicy::Block,
        false,
        now_ms,
    )?;
    let mut problems: Vec<String> = prepared
        .left_out
        .iter()
        .map(|l| format!("{} left out: {}", l.session.short(), l.why))
        .collect();
    problems.extend(prepared.refused.iter().map(|e| match e {
        GateError::Refused { session, count, .. } => format!(
            "{} left out: {} (`tapes bundle create {} --dry-run` lists them)",
            session.short(),
            plural(*count, "possible secret"),
            session.short()
        ),
        other => other.to_string(),
    }));
    if prepared.sessions.is_empty() {
        return Err(ActionError::Refused(format!(
            "nothing was bundled: {}",
            problems.join("; ")
        )));
    }
    let team = bundle::personal_chain(&me, now_ms)?;
    let created = bundle::create(
        &ctx.store,
        &me,
        path,
        CreateOptions {
            sessions: prepared.sessions,
            filter: Default::default(),
            team: Some(team),
            basis: None,
            now_ms,
        },
        &mut |_| {},
    )?;
    let mut line = format!(
        "wrote {}: {}, sealed to your own key",
        created.path.display(),
        plural(created.sessions, "session")
    );
    if !problems.is_empty() {
        line.push_str("; ");
        line.push_str(&problems.join("; "));
    }
    Ok(line)
}

/// The gate's verdict as the share dialog shows it: one line per finding.
pub fn finding_lines(findings: &Findings) -> Vec<String> {
    findings
        .lines()
        .iter()
        .map(|l| l.trim().to_string())
        .collect()
}

/// Whether a redacted copy can be shared instead (always, for a share).
pub fn can_redact() -> bool {
    Exit::Share.can_redact()
}
