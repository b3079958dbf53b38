//! `tapes branch` and `tapes fork`.

use std::process::ExitCode;

use tapes::lineage::{self, CopyOptions};

#[derive(clap::Args)]
pub struct CopyArgs {
    /// The session (id or unique prefix).
    id: String,
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
}

#[derive(clap::Args)]
pub struct ForkArgs {
    #[command(flatten)]
    copy: CopyArgs,
    /// Fork even though you own the session (normally `tapes branch`).
    #[arg(long)]
    force: bool,
}

fn options(args: &CopyArgs) -> anyhow::Result<CopyOptions> {
    let at = match args.at.as_str() {
        "head" => None,
        n => Some(n.parse::<u64>().map_err(|_| anyhow::anyhow!("--at takes a message count or `head`, not `{n}`"))?),
    };
    Ok(CopyOptions {
        at,
        title: args.title.clone(),
        tags: args.tags.clone(),
        description: args.summary.clone(),
        private: args.private,
    })
}

pub fn branch(args: CopyArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    let source = store.resolve_session(&args.id)?;
    let id = lineage::branch(&store, &source, &options(&args)?, tapes::now_ms())?;
    report(&store, "branched", &source, &id)
}

pub fn fork(args: ForkArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    let source = store.resolve_session(&args.copy.id)?;
    let id = lineage::fork(&store, &source, &options(&args.copy)?, args.force, tapes::now_ms())?;
    report(&store, "forked", &source, &id)
}

fn report(store: &tapes::store::Store, verb: &str, source: &tapes::protocol::SessionId, id: &tapes::protocol::SessionId) -> anyhow::Result<ExitCode> {
    let record = store.session(id)?.ok_or_else(|| anyhow::anyhow!("the new session vanished"))?;
    println!(
        "{verb} {} into new session {} ({} shared messages, {})",
        source.short(),
        id.short(),
        record.lineage.base_count,
        record.visibility.label()
    );
    Ok(ExitCode::SUCCESS)
}
