//! `tapes rm <id> [--everywhere] [--purge]`, `tapes rm --undo <id>`, `tapes rm --forget <id>`,
//! `tapes gc` (SPEC.md §3.5, §6 rule 8): parsing and rendering around
//! `tapes::session::tombstone`.

use std::process::ExitCode;

use tapes::identity::Identity;
use tapes::session::tombstone::{self, RemoveOptions};
use tapes::views::render::plural;

#[derive(clap::Args)]
pub struct RmArgs {
    /// Session id or unique prefix (with --undo or --forget: of a removed session).
    id: String,
    /// Also ask every peer and relay that holds it to drop it (you must own it): a signed
    /// tombstone goes out with your next `tapes sync`/`tapes serve`; teammates' forks stay.
    #[arg(long)]
    everywhere: bool,
    /// Remove its messages from disk now (no undo); otherwise they go at the next `tapes gc`.
    #[arg(long, conflicts_with_all = ["undo", "forget"])]
    purge: bool,
    /// Restore a removed session, while its messages are still on disk.
    #[arg(long, conflicts_with_all = ["everywhere", "forget"])]
    undo: bool,
    /// Forget that a session was removed: it may come back from its transcript or a peer.
    #[arg(long, conflicts_with = "everywhere")]
    forget: bool,
}

#[derive(clap::Args)]
pub struct GcArgs {}

pub fn run(args: RmArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let now = tapes::now_ms();
    if args.undo {
        let id = tombstone::resolve_removed(&store, &args.id)?;
        let record = tombstone::undo(&store, &id)?;
        println!(
            "restored {}  {} ({})",
            id.short(),
            record.title.as_deref().unwrap_or("(untitled)"),
            plural(record.summary.messages as usize, "message")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.forget {
        let id = tombstone::resolve_removed(&store, &args.id)?;
        tombstone::forget(&store, &id)?;
        println!(
            "forgot that {} was removed: importing or fetching it brings it back",
            id.short()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let id = store.resolve_session(&args.id)?;
    let identity = if args.everywhere {
        Some(Identity::load(&home)?)
    } else {
        None
    };
    let options = RemoveOptions {
        purge: args.purge,
        everywhere: identity.as_ref(),
    };
    let removed = tombstone::remove(&store, &id, now, options)?;
    println!(
        "removed {}  {} ({})",
        id.short(),
        removed.title.as_deref().unwrap_or("(untitled)"),
        plural(removed.messages as usize, "message")
    );
    match removed.collected {
        Some(c) => println!(
            "  {} removed from disk",
            plural(c.removed.objects, "message")
        ),
        None => println!(
            "  {} only it used stay on disk until `tapes gc`; until then `tapes rm --undo {}` restores it",
            plural(removed.exclusive_nodes, "message"),
            id.short()
        ),
    }
    if removed.signed.is_some() {
        println!("  peers and relays drop it at their next sync with this node (`tapes sync`, `tapes serve`)");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(_args: GcArgs) -> anyhow::Result<ExitCode> {
    let (_home, store) = super::open_store()?;
    let collected = tombstone::collect(&store)?;
    println!(
        "removed {} ({} bytes) that no session reaches; {} kept",
        plural(collected.removed.objects, "object"),
        collected.removed.bytes,
        plural(collected.live, "object")
    );
    Ok(ExitCode::SUCCESS)
}
