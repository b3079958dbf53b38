//! `tapes serve`, `tapes fetch` and `tapes sync`: replication with teammates over iroh.
//!
//! `serve` answers teammates until Ctrl-C and prints who synced what; it opens the store only
//! while a connection is active, so other `tapes` commands keep working beside it. `fetch`
//! brings what peers share with you; `sync` also pushes your own shared sessions they lack.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use tapes::home::Home;
use tapes::identity::Identity;
use tapes::peer::addr::PeerAddr;
use tapes::peer::client::{connect, PeerConn};
use tapes::peer::endpoint::{bind, EndpointConfig};
use tapes::peer::serve::ServeOptions;
use tapes::store::Store;
use tapes::views::render;

use super::remote;
use super::report::{describe, human_bytes, print_relay_sync};
use super::runtime;

pub use tapes::peer::serve::last_ticket;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Do not announce this node on the LAN or look for teammates there (mDNS).
    #[arg(long)]
    no_mdns: bool,
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The peer (default: the only peer remote configured).
    remote: Option<String>,
    /// Fetch from every peer remote.
    #[arg(long, conflicts_with = "remote")]
    all: bool,
}

#[derive(clap::Args)]
pub struct SyncArgs {
    /// The peer (default: every peer remote; with --team, those in the team).
    remote: Option<String>,
    /// Sync with the configured peers that are members of this team (name or id prefix).
    #[arg(long, conflicts_with = "remote")]
    team: Option<String>,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    home.ensure()?;
    let identity = Arc::new(Identity::load(&home)?);
    let runtime = runtime()?;
    runtime.block_on(async {
        let options = ServeOptions {
            bind: args.bind,
            mdns: !args.no_mdns,
        };
        let log = Arc::new(|line| println!("{}  {line}", tapes::sync::tracking::now_rfc3339()));
        let serving = tapes::peer::serve::start(&home, identity.clone(), &options, log).await?;
        let ticket = serving.ticket.ticket();
        println!(
            "serving as {} (node {})",
            identity.profile.name,
            identity.node_id_hex()
        );
        println!("ticket: {ticket}");
        println!(
            "teammates add it with `tapes remote add {} {ticket}`{}",
            identity
                .profile
                .name
                .split_whitespace()
                .next()
                .unwrap_or("me"),
            if options.mdns {
                "; on this LAN the node id alone is enough (mDNS)"
            } else {
                ""
            }
        );
        // A hybrid or cloud storage provider: catch the relay up every sync interval.
        let storage_sync = super::storage::background_sync(&home);
        println!("Ctrl-C stops");
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        if let Some(task) = storage_sync {
            task.abort();
        }
        serving.shutdown().await;
        println!("stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The peer remotes to talk to: the one named, every one, or the only one.
/// A peer remote to dial: its name, address and whether it is a relay.
type Target = (String, PeerAddr, bool);

fn peers(store: &Store, name: Option<&str>, all: bool) -> anyhow::Result<Vec<Target>> {
    let mut out = Vec::new();
    for (remote_name, _) in remote::configured(store)? {
        if let Some(addr) = remote::peer(store, &remote_name)? {
            out.push((remote_name, addr, false));
        } else if let Some(addr) = remote::relay(store, &remote_name)? {
            out.push((remote_name, addr, true));
        }
    }
    match name {
        Some(name) => {
            let found = out.into_iter().find(|(n, _, _)| n == name);
            match found {
                Some(found) => Ok(vec![found]),
                None if remote::exists(store, name)? => bail!("remote `{name}` is a path remote; `tapes fetch` and `tapes sync` talk to peers (`tapes pull --from {name}` works with paths)"),
                None => Err(tapes::remotes::not_found_in(store, name)?.into()),
            }
        }
        None if all || out.len() <= 1 => {
            if out.is_empty() {
                bail!("no peer is configured; add a teammate with `tapes remote add <name> <node-id>[@host:port]` (their `tapes serve` prints it)");
            }
            Ok(out)
        }
        None => bail!(
            "several peers are configured ({}); name one, or pass --all",
            out.iter()
                .map(|(n, _, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub async fn dial(
    identity: &Identity,
    name: &str,
    addr: &PeerAddr,
) -> anyhow::Result<(iroh::Endpoint, PeerConn)> {
    let endpoint = bind(identity, &EndpointConfig::loopback_or_any(addr)).await?;
    let dialling = dialling_spinner(name);
    let connected = connect(&endpoint, addr, name).await;
    dialling.finish_and_clear();
    match connected {
        Ok(conn) => Ok((endpoint, conn)),
        Err(e) => {
            tapes::peer::endpoint::close_after_failure(endpoint).await;
            Err(e.into())
        }
    }
}

/// Dials every target concurrently (each within the dial timeout).
pub async fn dial_all(
    identity: &Arc<Identity>,
    targets: &[(String, PeerAddr, bool)],
) -> Vec<anyhow::Result<(iroh::Endpoint, PeerConn)>> {
    let mut tasks = Vec::with_capacity(targets.len());
    for (name, addr, relay) in targets.iter().cloned() {
        let identity = identity.clone();
        tasks.push(tokio::spawn(async move {
            if !relay {
                return dial(&identity, &name, &addr).await;
            }
            let endpoint = bind(&identity, &EndpointConfig::loopback_or_any(&addr)).await?;
            match connect(&endpoint, &addr, &name).await {
                Ok(conn) => Ok((endpoint, conn.into_relay())),
                Err(e) => {
                    tapes::peer::endpoint::close_after_failure(endpoint).await;
                    Err(tapes::peer::PeerError::at_relay(e).into())
                }
            }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(match task.await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("dialling stopped: {e}")),
        });
    }
    out
}

/// Runs `op` on a dialled connection with a progress spinner, then closes it.
async fn on_conn<T>(
    endpoint: iroh::Endpoint,
    conn: PeerConn,
    op: impl AsyncFnOnce(&PeerConn) -> Result<T, tapes::peer::PeerError>,
) -> anyhow::Result<T> {
    let name = conn.name.to_string();
    let progress = show_progress(&conn, &name);
    let result = op(&conn).await;
    drop(progress);
    conn.close();
    endpoint.close().await;
    Ok(result?)
}

/// Dials a peer, runs `op` on the connection with a progress spinner, and closes it.
pub async fn with_peer<T>(
    identity: &Identity,
    name: &str,
    addr: &PeerAddr,
    relay: bool,
    op: impl AsyncFnOnce(&PeerConn) -> Result<T, tapes::peer::PeerError>,
) -> anyhow::Result<T> {
    let (endpoint, conn) = if relay {
        let endpoint = bind(identity, &EndpointConfig::loopback_or_any(addr)).await?;
        let conn = match connect(&endpoint, addr, name).await {
            Ok(conn) => conn,
            Err(e) => {
                tapes::peer::endpoint::close_after_failure(endpoint).await;
                return Err(tapes::peer::PeerError::at_relay(e).into());
            }
        };
        (endpoint, conn.into_relay())
    } else {
        dial(identity, name, addr).await?
    };
    let progress = show_progress(&conn, name);
    let result = op(&conn).await;
    drop(progress);
    conn.close();
    endpoint.close().await;
    Ok(result?)
}

/// A spinner with the bytes received so far (on a terminal only); cleared when dropped.
struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// `connecting to <name>…` with a spinner on a TTY while a dial is under way (hidden otherwise).
fn dialling_spinner(name: &str) -> indicatif::ProgressBar {
    let bar = super::progress_bar(0, name);
    if !bar.is_hidden() {
        bar.set_style(indicatif::ProgressStyle::default_spinner());
        bar.set_message(format!("connecting to {name}…"));
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
    }
    bar
}

fn show_progress(conn: &PeerConn, name: &str) -> Progress {
    let bar = super::progress_bar(0, name);
    let conn = conn.clone();
    let ticking = bar.clone();
    let task = tokio::spawn(async move {
        let bar = ticking;
        if bar.is_hidden() {
            return;
        }
        bar.set_style(indicatif::ProgressStyle::default_spinner());
        loop {
            bar.set_message(format!(
                "{}: {} received",
                conn.name,
                human_bytes(conn.counters.received())
            ));
            bar.tick();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    Progress { bar, task }
}

pub fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let identity = Arc::new(Identity::load(&home)?);
    let targets = peers(&store, args.remote.as_deref(), args.all)?;
    let runtime = runtime()?;
    let mut failed = false;
    for (name, addr, relay) in targets {
        let result = runtime.block_on(with_peer(&identity, &name, &addr, relay, async |conn| {
            let report = conn.fetch(&store, &identity).await?;
            tapes::peer::audit_sync::pull_quietly(conn, &store, &identity).await; // SPEC §18.3
            let removed = tapes::peer::tombstone_sync::pull_quietly(conn, &store).await; // §3.5
            removed.iter().for_each(|line| println!("{line}"));
            Ok((report, conn.path()))
        }));
        match result {
            Ok((report, path)) => {
                println!("{} ({})", describe(&name, &report), path.describe());
                for kept in &report.kept {
                    println!("  kept yours: {kept}");
                }
                for rejected in &report.rejected {
                    eprintln!("  rejected: {rejected}");
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    super::search::keep_index_current(&store);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let identity = Arc::new(Identity::load(&home)?);
    let mut targets = peers(&store, args.remote.as_deref(), args.remote.is_none())?;
    if let Some(team) = &args.team {
        let chain = tapes::team::resolve(&store, Some(team))?;
        targets
            .retain(|(_, addr, relay)| *relay || chain.head().manifest.member(&addr.id).is_some());
        if targets.is_empty() {
            bail!("none of your peer remotes is a member of team {}; add one with `tapes remote add <name> <node-id>`", chain.head().manifest.name);
        }
    }
    let runtime = runtime()?;
    let mut failed = false;
    // Every peer is dialled at once: two peers down cost one timeout, not two.
    let dialled = runtime.block_on(dial_all(&identity, &targets));
    for ((name, _, relay), dialled) in targets.into_iter().zip(dialled) {
        let (endpoint, conn) = match dialled {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
                continue;
            }
        };
        if relay {
            let result = runtime.block_on(on_conn(endpoint, conn, async |conn| {
                let report = conn.relay_sync(&store, &identity).await;
                tapes::peer::audit_sync::pull_quietly(conn, &store, &identity).await; // SPEC §18.3
                let removed = tapes::peer::tombstone_sync::pull_quietly(conn, &store).await; // §3.5
                removed.iter().for_each(|line| println!("{line}"));
                report
            }));
            match result {
                Ok(report) => failed |= print_relay_sync(&name, &report),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    failed = true;
                }
            }
            continue;
        }
        let result = runtime.block_on(on_conn(endpoint, conn, async |conn| {
            let synced = conn.sync(&store, &identity).await?;
            tapes::peer::audit_sync::pull_quietly(conn, &store, &identity).await; // SPEC §18.3
            let removed = tapes::peer::tombstone_sync::pull_quietly(conn, &store).await; // §3.5
            removed.iter().for_each(|line| println!("{line}"));
            Ok((synced, conn.path()))
        }));
        match result {
            Ok(((report, pushed), path)) => {
                println!("{} ({})", describe(&name, &report), path.describe());
                for (id, outcome) in pushed {
                    match outcome {
                        Ok(nodes) => println!(
                            "  pushed {}: {}",
                            id.short(),
                            render::plural(nodes as usize, "new node")
                        ),
                        Err(e) => {
                            eprintln!("  error: push of {}: {e}", id.short());
                            failed = true;
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    super::search::keep_index_current(&store);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Leaves a join request at a relay (the inviter is offline), or collects the answer an admin
/// left there since. Remembers the relay as remote `relay` when no remote has that name.
pub fn join_via_relay(
    store: &Store,
    identity: &Identity,
    invite: &tapes::protocol::join::Invite,
    request: &tapes::protocol::join::JoinRequest,
    relay: &PeerAddr,
) -> anyhow::Result<Option<tapes::protocol::team_chain::TeamChain>> {
    let Some(inviter) = tapes::team::inviter_recipient(invite) else {
        bail!("the invite names a relay but not the inviter's key, so the request cannot be sealed for it; ask for a new invite");
    };
    let answer = runtime()?.block_on(with_peer(
        identity,
        "the relay",
        relay,
        true,
        async |conn| conn.join_at_relay(request, &inviter).await,
    ))?;
    if !remote::exists(store, "relay")? {
        remote::save_relay(store, "relay", relay)?;
    }
    match answer {
        None => Ok(None),
        Some(response) => Ok(Some(tapes::team::complete_join(
            store,
            identity,
            &invite.team,
            response,
        )?)),
    }
}

/// `tapes team join <code>` over the network: sends the request to the inviter's node (at the
/// code's addresses, or found on the LAN) and stores the team. `None` when the inviter could not
/// be reached, so the caller falls back to the request file.
pub fn join_online(
    store: &Store,
    identity: &Identity,
    invite: &tapes::protocol::join::Invite,
    request: &tapes::protocol::join::JoinRequest,
) -> anyhow::Result<Option<tapes::protocol::team_chain::TeamChain>> {
    let mut addr = PeerAddr::id_only(invite.inviter);
    for hint in &invite.addrs {
        let parsed = if hint.contains('@') {
            PeerAddr::parse(hint)
        } else {
            PeerAddr::parse(&format!("{}@{hint}", invite.inviter.to_hex()))
        };
        if let Ok(found) = parsed {
            if found.id == invite.inviter {
                addr.addrs.extend(found.addrs);
                addr.relay = addr.relay.or(found.relay);
            }
        }
    }
    let runtime = runtime()?;
    let answer = runtime.block_on(async {
        let endpoint = bind(identity, &EndpointConfig::loopback_or_any(&addr)).await?;
        let attempt = async {
            let conn = connect(&endpoint, &addr, "the inviter").await?;
            let answer = conn.join(request).await;
            conn.close();
            Ok::<_, anyhow::Error>(answer?)
        };
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), attempt).await;
        endpoint.close().await;
        Ok::<_, anyhow::Error>(answer)
    })?;
    match answer {
        Ok(Ok(response)) => Ok(Some(tapes::team::complete_join(
            store,
            identity,
            &invite.team,
            response,
        )?)),
        Ok(Err(e)) => match e.downcast_ref::<tapes::peer::PeerError>() {
            // Just the cause: the peer's advice (`tapes serve`, `tapes remote add`) is not
            // the joiner's to follow; the caller says what happens next.
            Some(tapes::peer::PeerError::Connect { why, .. }) => {
                eprintln!("could not reach the inviter's node: {why}");
                Ok(None)
            }
            _ => Err(e),
        },
        Err(_) => {
            eprintln!("could not reach the inviter's node: no answer within 10 s");
            Ok(None)
        }
    }
}
