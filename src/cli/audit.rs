//! `tapes audit` and `tapes audit verify`: the teams' access logs (SPEC.md §18).

use std::process::ExitCode;

use tapes::audit::{self, Filter};
use tapes::duration::parse_duration_ms;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only this team's log (name or id prefix).
    #[arg(long)]
    team: Option<String>,
    /// Only entries about this session (id or unique prefix).
    #[arg(long)]
    session: Option<String>,
    /// Only entries within this long (30m, 12h, 7d, 2w).
    #[arg(long)]
    since: Option<String>,
    /// Print as JSON (one array, every field).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check every writer's hash chain and signatures; a removed, altered or reordered entry
    /// is named (exit code 1).
    Verify {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    if let Some(AuditCommand::Verify { json }) = args.command {
        let report = audit::verify(&store)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else if report.is_clean() {
            println!(
                "audit log verified: {} in {} from {}; every hash chain and signature checks",
                tapes::views::render::plural(report.entries, "entry"),
                tapes::views::render::plural(report.teams, "team"),
                tapes::views::render::plural(report.writers, "writer"),
            );
        } else {
            for p in &report.problems {
                println!(
                    "team {} writer {}: {}",
                    p.team.short(),
                    p.writer.short(),
                    p.what
                );
            }
            eprintln!(
                "error: the audit log is not intact ({} found); entries were removed, altered or reordered",
                tapes::views::render::plural(report.problems.len(), "problem")
            );
        }
        return Ok(if report.is_clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let now = tapes::now_ms();
    let filter = Filter {
        team: match &args.team {
            Some(t) => Some(tapes::team::resolve(&store, Some(t))?.team_id()),
            None => None,
        },
        session: match &args.session {
            Some(s) => Some(store.resolve_session(s).or_else(|e| {
                // A session not held here (fetched by others, deleted) is named by its full id.
                s.parse().map_err(|_| e)
            })?),
            None => None,
        },
        since_ms: match &args.since {
            Some(text) => {
                Some(now - parse_duration_ms(text).map_err(|e| anyhow::anyhow!("--since: {e}"))?)
            }
            None => None,
        },
    };
    let rows = audit::list(&store, &filter)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "no audit entries match; sharing with a team and teammates fetching are recorded here"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let team_names: std::collections::HashMap<_, _> = tapes::team::list(&store)?
        .into_iter()
        .map(|c| (c.team_id(), c.head().manifest.name.clone()))
        .collect();
    for row in rows {
        let when = chrono::DateTime::from_timestamp_millis(row.at_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| row.at_ms.to_string());
        let who = if row.actor_name.is_empty() {
            row.actor.short()
        } else {
            row.actor_name.clone()
        };
        let action = tapes::protocol::audit::AuditAction::from_str_name(row.action)
            .map_or(row.action, |a| a.past());
        let what = row
            .session
            .map(|s| format!(" session {}", s.short()))
            .unwrap_or_default();
        let team = team_names
            .get(&row.team)
            .cloned()
            .unwrap_or_else(|| row.team.short());
        let detail = if row.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", row.detail)
        };
        let by = if row.writer == row.actor {
            String::new()
        } else {
            format!(" [logged by {}]", row.writer.short())
        };
        println!("{when}  {team}  {who} {action}{what}{detail}{by}");
    }
    Ok(ExitCode::SUCCESS)
}
