//! `tapes sessions`, `tapes show`, `tapes log`.

use std::process::ExitCode;

use tapes::session::pricing::PriceTable;
use tapes::views::listing::{self, Facts};
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
    /// Print only the newest N sessions (at a terminal, one screenful is the default;
    /// piped, every session is).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    limit: Option<usize>,
    /// Print every session, also at a terminal (which shows one screenful by default).
    #[arg(long)]
    all: bool,
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
    use std::io::{IsTerminal, Write};
    use tapes::views::listing::sessions::{self, Form, Outcome, Query};
    use tapes::views::table;

    let (home, store) = super::open_store()?;
    let prices = PriceTable::load(home.root())?;
    let index = super::search::open_index(&store, false)?;
    let now = tapes::now_ms();
    let tty = std::io::stdout().is_terminal();
    let mut query = Query {
        project: args.project.clone(),
        agent: args.agent.clone(),
        limit: None,
    };
    let page = sessions::page_rows(table::terminal_height());
    query.limit = sessions::rows_to_show(
        tty,
        args.all,
        args.limit,
        query.filters() || args.json,
        page,
    );
    let form = if args.json {
        Form::Json
    } else {
        Form::Table {
            width: table::terminal_width(),
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let outcome = sessions::write(
        &store,
        Facts::Index(&index),
        &prices,
        now,
        &query,
        form,
        &mut out,
    )?;
    match outcome {
        Outcome::Listed { matched, shown, .. } => {
            if tty && !args.json && shown < matched {
                writeln!(out, "{}", sessions::older_footer(matched - shown))?;
            }
        }
        Outcome::Empty => {
            writeln!(
                out,
                "no sessions yet; `tapes import ~/.claude/projects` brings yours in"
            )?;
        }
        Outcome::NoMatch {
            stored,
            agent,
            agents,
            projects,
        } => {
            let mut what = Vec::new();
            if let Some(input) = &args.agent {
                match &agent {
                    Some(name) if name != input => what.push(format!("--agent {input} ({name})")),
                    _ => what.push(format!("--agent {input}")),
                }
            }
            if let Some(project) = &args.project {
                what.push(format!("--project {project}"));
            }
            let filter = what.join(" and ");
            if stored == 1 {
                writeln!(out, "the only session here does not match {filter}")?;
            } else {
                writeln!(out, "none of the {stored} sessions here matches {filter}")?;
            }
            if args.agent.is_some() {
                writeln!(out, "agents here: {}", listing(&agents))?;
            }
            if args.project.is_some() {
                writeln!(out, "projects here: {}", listing(&projects))?;
            }
        }
    }
    out.flush()?;
    drop(out);
    // The process ends right after this: the index holds the facts decoded for every row
    // listed (100,000 small maps on a big store), and freeing them one by one only delays the
    // exit (~5% of the run). It holds no lock or buffered write, so it is not dropped.
    std::mem::forget(index);
    Ok(ExitCode::SUCCESS)
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
