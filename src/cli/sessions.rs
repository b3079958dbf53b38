//! `tapes sessions`, `tapes show`, `tapes log`.

use std::process::ExitCode;

use tapes::views::render;

#[derive(clap::Args)]
pub struct SessionsArgs {
    /// Only sessions of this project.
    #[arg(long)]
    project: Option<String>,
    /// Only sessions recorded by this agent: claude-code, codex, gemini-cli, their short
    /// names (claude, gemini), or a unique prefix.
    #[arg(long)]
    agent: Option<String>,
    /// Print as JSON (one array).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// Session id or unique prefix.
    id: String,
    /// Print the session and every node as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct LogArgs {
    /// Session id or unique prefix.
    id: String,
}

pub fn list(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    let mut rows = store.sessions()?;
    let stored = rows.len();
    let agents = present(rows.iter().map(|(_, r)| r.summary.agent.as_str()));
    let projects = present(rows.iter().map(|(_, r)| r.summary.project.as_str()));
    let names: Vec<String> = agents.iter().map(|(name, _)| name.clone()).collect();
    let agent = match &args.agent {
        Some(input) => Some(tapes::session::resolve_agent(input, &names)?),
        None => None,
    };
    rows.retain(|(_, r)| {
        args.project
            .as_ref()
            .is_none_or(|p| &r.summary.project == p)
            && agent
                .as_ref()
                .is_none_or(|a| a.as_ref().is_some_and(|a| &r.summary.agent == a))
    });
    // Newest first; ties (no timestamps) by id so the order is stable.
    rows.sort_by(|a, b| {
        b.1.summary
            .started_ms
            .cmp(&a.1.summary.started_ms)
            .then(a.0.cmp(&b.0))
    });
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(id, r)| render::session_json(id, r))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if stored == 0 {
        println!("no sessions yet; `tapes import ~/.claude/projects` brings yours in");
    } else if rows.is_empty() {
        let mut what = Vec::new();
        if let Some(input) = &args.agent {
            match agent.as_ref().and_then(|a| a.as_ref()) {
                Some(name) if name != input => what.push(format!("--agent {input} ({name})")),
                _ => what.push(format!("--agent {input}")),
            }
        }
        if let Some(project) = &args.project {
            what.push(format!("--project {project}"));
        }
        let filter = what.join(" and ");
        if stored == 1 {
            println!("the only session here does not match {filter}");
        } else {
            println!("none of the {stored} sessions here matches {filter}");
        }
        if args.agent.is_some() {
            println!("agents here: {}", listing(&agents));
        }
        if args.project.is_some() {
            println!("projects here: {}", listing(&projects));
        }
    } else {
        print!("{}", render::sessions_table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// The distinct non-empty values with how many sessions have each, by name.
fn present<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for v in values.filter(|v| !v.is_empty()) {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect()
}

/// `claude-code (3), codex (1)`, or `none recorded`.
fn listing(values: &[(String, usize)]) -> String {
    if values.is_empty() {
        return "none recorded".into();
    }
    values
        .iter()
        .map(|(name, n)| format!("{name} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    let (id, record, chain) = load(&store, &args.id)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&render::transcript_json(&id, &record, &chain))?
        );
    } else {
        print!("{}", render::transcript(&id, &record, &chain));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn log(args: LogArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    let (_, _, chain) = load(&store, &args.id)?;
    let mut sizes = Vec::with_capacity(chain.len());
    for (node_id, _) in &chain {
        sizes.push(store.storage().get_object(node_id)?.map_or(0, |b| b.len()));
    }
    print!("{}", render::log(&chain, &sizes));
    Ok(ExitCode::SUCCESS)
}

/// A session by id or prefix, with its record and chain (root first).
fn load(
    store: &tapes::store::Store,
    input: &str,
) -> anyhow::Result<(
    tapes::protocol::SessionId,
    tapes::session::SessionRecord,
    Vec<(tapes::protocol::NodeId, tapes::protocol::Node)>,
)> {
    let id = store.resolve_session(input)?;
    let record = store
        .session(&id)?
        .ok_or_else(|| tapes::store::StoreError::SessionNotFound(input.to_string()))?;
    let chain = store.chain(&record.head)?;
    Ok((id, record, chain))
}
