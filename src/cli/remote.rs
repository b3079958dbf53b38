//! `tapes remote add|list|remove`: parses, calls [`tapes::remotes`], prints. The other commands
//! that name a remote (pull, push, fetch, sync, branch) use the same library module, re-exported
//! here for them.

use std::process::ExitCode;

use tapes::remotes::{self, RemoteSpec};

pub use tapes::remotes::{choose, configured, exists, open, peer, relay, relays, save_relay};

#[derive(clap::Subcommand)]
pub enum RemoteCommand {
    /// Add a remote: a teammate's node (`<node-id>[@host:port]`, the ticket `tapes serve`
    /// prints), or another tapes home by path (a shared disk, a mounted server home).
    Add {
        /// A short name for it, used by `tapes fetch`, `tapes pull --from` and `tapes push <remote>`.
        name: String,
        /// The peer's node id or ticket, `relay:<ticket>` for a relay, or the remote's tapes home (the directory holding its
        /// `store/`).
        target: String,
    },
    /// List remotes: name and where they are.
    List,
    /// Forget a remote (nothing on the remote is touched).
    Remove {
        /// The remote's name.
        name: String,
    },
}

pub fn run(command: RemoteCommand) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    match command {
        RemoteCommand::Add { name, target } => match remotes::add(&home, &store, &name, &target)? {
            RemoteSpec::Path(path) => println!("added remote {name}: {}", path.display()),
            RemoteSpec::Relay(addr) => {
                println!("added relay remote `{name}`: node {}", addr.id.short())
            }
            RemoteSpec::Peer(addr) => {
                use tapes::peer::network::{process_mode, NetworkMode};
                let how = match (
                    addr.addrs.is_empty() && addr.relay.is_none(),
                    process_mode(),
                ) {
                    (false, _) => "at the given addresses",
                    (true, NetworkMode::Local) => "found on the LAN by mDNS",
                    (true, NetworkMode::Public) => "found by its node id wherever it is online",
                    (true, NetworkMode::Custom(_)) => "reached through your relays by its node id",
                };
                println!("added remote {name}: node {} ({how})", addr.id.short());
            }
        },
        RemoteCommand::List => {
            let all = remotes::configured(&store)?;
            if all.is_empty() {
                println!("no remotes; `tapes remote add <name> <path>` adds one");
            }
            let width = all.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            for (name, raw) in &all {
                println!("{name:width$}  {}", RemoteSpec::describe(raw));
            }
        }
        RemoteCommand::Remove { name } => {
            remotes::remove(&store, &name)?;
            println!("removed remote {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
