//! `tapes sessions`, `tapes show`, `tapes log`.

use std::process::ExitCode;

use tapes::session::pricing::PriceTable;
use tapes::views::listing::{self, Facts, Snapshot};
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
    /// Draw the session's family instead: the original, its branches and forks and theirs,
    /// with who made each, when, and after which message.
    #[arg(long)]
    graph: bool,
    /// With --graph: print the graph as JSON (nodes and edges).
    #[arg(long, requires = "graph")]
    json: bool,
}

pub fn list(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let prices = PriceTable::load(home.root())?;
    let index = super::search::open_index(&store, false)?;
    let now = tapes::now_ms();
    let snapshot = Snapshot::load(&store, Facts::Index(&index), &prices, now)?;
    drop(index);
    let all = snapshot.all();
    let stored = all.len();
    let agents = present(all.rows().iter().map(|r| r.agent.as_str()));
    let projects = present(all.rows().iter().map(|r| r.project.as_str()));
    let names: Vec<String> = agents.iter().map(|(name, _)| name.clone()).collect();
    let agent = match &args.agent {
        Some(input) => Some(tapes::session::resolve_agent(input, &names)?),
        None => None,
    };
    // Newest first; ties (no timestamps) by id so the order is stable.
    let rows: Vec<&listing::SessionRow> = all
        .rows()
        .iter()
        .filter(|r| {
            args.project.as_ref().is_none_or(|p| &r.project == p)
                && agent
                    .as_ref()
                    .is_none_or(|a| a.as_ref().is_some_and(|a| &r.agent == a))
        })
        .collect();
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|row| {
                let mut v = match snapshot.record(&row.id) {
                    Some(record) => render::session_json(&row.id, record),
                    None => serde_json::json!({}),
                };
                if let Some(map) = v.as_object_mut() {
                    map.insert("title_shown".into(), row.title.clone().into());
                    map.insert(
                        "title_from".into(),
                        serde_json::to_value(row.title_from).unwrap_or_default(),
                    );
                    map.insert("owner_name".into(), row.owner_name.clone().into());
                    map.insert("mine".into(), row.mine.into());
                    map.insert("visibility_name".into(), row.visibility.label().into());
                    map.insert(
                        "status".into(),
                        serde_json::to_value(row.status).unwrap_or_default(),
                    );
                    map.insert("cost_usd".into(), row.cost.into());
                    map.insert("unpriced_models".into(), row.unpriced.clone().into());
                    map.insert("tokens".into(), row.tokens.into());
                    map.insert(
                        "origin".into(),
                        serde_json::to_value(&row.origin).unwrap_or_default(),
                    );
                }
                v
            })
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
        print!(
            "{}",
            listing::text::sessions_table(&rows, tapes::views::table::terminal_width())
        );
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
    let (home, store) = super::open_store()?;
    let prices = PriceTable::load(home.root())?;
    let (id, record, chain) = load(&store, &args.id)?;
    let now = tapes::now_ms();
    let row = listing::describe(&store, &id, &chain, &prices, now)?;
    if args.json {
        let mut v = render::transcript_json(&id, &record, &chain);
        if let Some(map) = v.as_object_mut() {
            let extra = listing::row_json(&row, now);
            for key in [
                "title_from",
                "owner_name",
                "mine",
                "status",
                "cost",
                "unpriced",
                "tokens",
                "origin",
                "share",
            ] {
                if let Some(value) = extra.get(key) {
                    let name = match key {
                        "cost" => "cost_usd",
                        "unpriced" => "unpriced_models",
                        other => other,
                    };
                    map.insert(name.into(), value.clone());
                }
            }
            map.insert("title_shown".into(), row.title.clone().into());
            map.insert(
                "view_count".into(),
                tapes::audit::view_count(&store, &id)?.into(),
            );
            map.insert("visibility_name".into(), row.visibility.label().into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let extra = listing::text::show_lines(&row, now);
        print!("{}", render::transcript_with(&id, &record, &chain, &extra));
        if let Some(line) = listing::view_count_line(&store, &id)? {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn log(args: LogArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    if args.graph {
        let id = store.resolve_session(&args.id)?;
        let now = tapes::now_ms();
        let graph = listing::lineage_graph(&store, &id, now)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&graph)?);
        } else {
            print!(
                "{}",
                graph.picture(now, tapes::views::table::terminal_width())
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
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
    let id = tapes::share::resolve_content(store, input)?;
    let record = store
        .session(&id)?
        .ok_or_else(|| tapes::store::StoreError::SessionNotFound(input.to_string()))?;
    let chain = store.chain(&record.head)?;
    Ok((id, record, chain))
}
