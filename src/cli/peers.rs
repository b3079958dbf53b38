//! `tapes peers`: which tapes nodes are on this LAN right now, found by mDNS, and who they are
//! to you: their name and teams when they are members of one of your teams, and whether they
//! are configured as peer remotes; configured peers that did not answer are listed too.
//!
//! It then dials each peer remote at once (with the dial timeout) and reports whether it is
//! online, the path the connection took (direct or relayed) and its round-trip time.
//!
//! This module owns the listing. It reads the team manifests and peer remotes in one
//! short look at the store (closed again before listening, so it runs beside a `tapes serve`
//! on the same home), then binds an endpoint on any interface and listens to mDNS without
//! announcing itself: it is not serving, so teammates should not see it. Nothing is dialled and
//! nothing is written. Finding by mDNS itself lives in `tapes::peer::endpoint`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_core::Stream;
use iroh_mdns_address_lookup::DiscoveryEvent;
use tapes::home::Home;
use tapes::identity::Identity;
use tapes::peer::addr::PeerAddr;
use tapes::peer::client::ConnPath;
use tapes::peer::endpoint::{bind, member_of, EndpointConfig};
use tapes::protocol::MemberId;
use tapes::store::Store;

use super::remote;

#[derive(clap::Args)]
pub struct PeersArgs {
    /// Seconds to listen (a running `tapes serve` answers within a second or two).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    wait: u64,
    /// Print JSON: `seen` (nodes found) and `not_seen` (configured peers that did not answer).
    #[arg(long)]
    json: bool,
}

/// What this store knows about people: team members and peer remotes.
struct Directory {
    /// Team name and its current members (id, name).
    teams: Vec<(String, Vec<(MemberId, String)>)>,
    /// Peer remotes: name and address.
    remotes: Vec<(String, PeerAddr)>,
}

/// Who a node id is to you.
struct Known {
    name: Option<String>,
    teams: Vec<String>,
    remotes: Vec<String>,
}

impl Directory {
    /// Reads the teams and peer remotes, holding the store only as long as that takes. A
    /// `tapes serve` on the same home opens the store while a teammate is connected, so a busy
    /// store is retried for a moment before giving up.
    fn load() -> anyhow::Result<Directory> {
        let mut attempts = 0;
        let store = loop {
            match super::open_store() {
                Ok((_, store)) => break store,
                Err(_) if attempts < 15 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e.context(
                    "cannot read your teams and remotes: the store stayed busy (another tapes command, or `tapes serve` answering a teammate); run `tapes peers` again in a moment",
                )),
            }
        };
        Directory::read(&store)
    }

    fn read(store: &Arc<Store>) -> anyhow::Result<Directory> {
        let mut teams = Vec::new();
        for chain in tapes::team::list(store)
            .context("cannot read your teams; `tapes fsck` checks the store")?
        {
            let manifest = &chain.head().manifest;
            let members = manifest
                .members
                .iter()
                .map(|m| (m.id, m.name.clone()))
                .collect();
            teams.push((manifest.name.clone(), members));
        }
        let mut remotes = Vec::new();
        for (name, _) in remote::configured(store)? {
            if let Some(addr) = remote::peer(store, &name)? {
                remotes.push((name, addr));
            }
        }
        Ok(Directory { teams, remotes })
    }

    fn who(&self, id: &MemberId) -> Known {
        let mut name = None;
        let mut teams = Vec::new();
        for (team, members) in &self.teams {
            if let Some((_, member)) = members.iter().find(|(m, _)| m == id) {
                name.get_or_insert_with(|| member.clone());
                teams.push(team.clone());
            }
        }
        let remotes = self
            .remotes
            .iter()
            .filter(|(_, addr)| &addr.id == id)
            .map(|(n, _)| n.clone())
            .collect();
        Known {
            name,
            teams,
            remotes,
        }
    }
}

pub fn run(args: PeersArgs) -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    let identity = Identity::load(&home)?;
    let directory = Directory::load()?;
    let wait = Duration::from_secs(args.wait);
    let runtime = super::runtime()?;
    let seen = runtime.block_on(listen(&identity, wait))?;
    // Each peer remote, dialled at once (what mDNS found added to its addresses): online or
    // not, the path the connection took, its round-trip time.
    let targets: Vec<(String, PeerAddr, bool)> = directory
        .remotes
        .iter()
        .map(|(name, addr)| {
            let mut addr = addr.clone();
            for found in seen.get(&addr.id).into_iter().flatten() {
                if !addr.addrs.contains(found) {
                    addr.addrs.push(*found);
                }
            }
            (name.clone(), addr, false)
        })
        .collect();
    let identity = Arc::new(identity);
    let probes: Vec<Probe> = runtime.block_on(async {
        let dialled = super::peer::dial_all(&identity, &targets).await;
        let mut out = Vec::with_capacity(dialled.len());
        for ((name, _, _), result) in targets.iter().zip(dialled) {
            out.push(match result {
                Ok((endpoint, conn)) => {
                    let path = conn.settled_path(Duration::from_secs(2)).await;
                    conn.close();
                    endpoint.close().await;
                    Probe {
                        name: name.clone(),
                        path: Some(path),
                        error: None,
                    }
                }
                Err(e) => Probe {
                    name: name.clone(),
                    path: None,
                    error: Some(format!("{e:#}")),
                },
            });
        }
        out
    });
    let network = tapes::peer::network::process_mode();
    if args.json {
        let mut value = to_json(&directory, &seen, args.wait);
        value["network"] = serde_json::json!(network.text());
        value["remotes"] = probes
            .iter()
            .map(|p| {
                let (kind, rtt) = match p.path {
                    Some(ConnPath::Direct { rtt }) => ("direct", Some(rtt)),
                    Some(ConnPath::Relayed { rtt }) => ("relayed", Some(rtt)),
                    _ => ("unknown", None),
                };
                serde_json::json!({
                    "name": p.name,
                    "online": p.path.is_some(),
                    "path": p.path.map(|_| kind),
                    "rtt_ms": rtt.map(|r| r.as_secs_f64() * 1000.0),
                    "error": p.error,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("network: {}", network.describe());
        print_text(&directory, &seen, args.wait);
        if !probes.is_empty() {
            println!("peer remotes:");
            for p in &probes {
                match (&p.path, &p.error) {
                    (Some(path), _) => println!("  {:<12} online ({})", p.name, path.describe()),
                    (None, Some(e)) => println!("  {:<12} offline: {e}", p.name),
                    (None, None) => println!("  {:<12} offline", p.name),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What dialling one peer remote found.
struct Probe {
    name: String,
    path: Option<ConnPath>,
    error: Option<String>,
}

/// Listens to mDNS for `wait` and returns the nodes that announced themselves, with their
/// addresses (a node that said goodbye meanwhile is left out).
async fn listen(
    identity: &Identity,
    wait: Duration,
) -> anyhow::Result<BTreeMap<MemberId, BTreeSet<SocketAddr>>> {
    let config = EndpointConfig {
        bind: SocketAddr::from(([0, 0, 0, 0], 0)),
        mdns: false,
        network: tapes::peer::network::NetworkMode::Local,
    };
    let endpoint = bind(identity, &config)
        .await
        .context("cannot open a network endpoint to listen on the LAN; check that this machine has a network interface up")?;
    // Added by hand rather than through `EndpointConfig::mdns`, to keep the handle that
    // subscribes to discoveries, and to listen without announcing.
    let mdns = match tapes::peer::endpoint::mdns()
        .advertise(false)
        .build(endpoint.id())
    {
        Ok(mdns) => mdns,
        Err(e) => {
            endpoint.close().await;
            return Err(anyhow::anyhow!(e).context(
                "cannot listen for mDNS on this machine (it needs IPv4 or IPv6 multicast on a network interface); `tapes remote add <name> <node-id>@<host:port>` reaches a teammate without it",
            ));
        }
    };
    if let Ok(lookup) = endpoint.address_lookup() {
        lookup.add(mdns.clone());
    }
    let mut events = mdns.subscribe().await;
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = BTreeMap::new();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut events).poll_next(cx));
        match tokio::time::timeout_at(deadline, next).await {
            // Listened long enough, or the mDNS service stopped.
            Err(_) | Ok(None) => break,
            Ok(Some(DiscoveryEvent::Discovered { endpoint_info, .. })) => {
                let addrs = endpoint_info.data.ip_addrs().copied().collect();
                seen.insert(member_of(&endpoint_info.endpoint_id), addrs);
            }
            Ok(Some(DiscoveryEvent::Expired { endpoint_id })) => {
                seen.remove(&member_of(&endpoint_id));
            }
            Ok(Some(_)) => {}
        }
    }
    endpoint.close().await;
    Ok(seen)
}

/// Seen nodes in print order: teammates by name, then strangers by id.
fn ordered<'a>(
    directory: &Directory,
    seen: &'a BTreeMap<MemberId, BTreeSet<SocketAddr>>,
) -> Vec<(&'a MemberId, &'a BTreeSet<SocketAddr>, Known)> {
    let mut rows: Vec<_> = seen
        .iter()
        .map(|(id, addrs)| (id, addrs, directory.who(id)))
        .collect();
    rows.sort_by(|a, b| {
        (a.2.name.is_none(), &a.2.name, a.0).cmp(&(b.2.name.is_none(), &b.2.name, b.0))
    });
    rows
}

/// Configured peer remotes that were not seen, in remote name order.
fn not_seen<'a>(
    directory: &'a Directory,
    seen: &BTreeMap<MemberId, BTreeSet<SocketAddr>>,
) -> Vec<&'a (String, PeerAddr)> {
    directory
        .remotes
        .iter()
        .filter(|(_, addr)| !seen.contains_key(&addr.id))
        .collect()
}

/// A remote name for a member: the first word of their name, lowercased, in the characters
/// remote names allow.
fn suggested_remote_name(name: &str) -> String {
    let word: String = name
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    match word.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() => word,
        _ => "teammate".to_string(),
    }
}

fn addr_list(addrs: &BTreeSet<SocketAddr>) -> String {
    if addrs.is_empty() {
        return "(no address announced)".to_string();
    }
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_text(directory: &Directory, seen: &BTreeMap<MemberId, BTreeSet<SocketAddr>>, wait: u64) {
    let rows = ordered(directory, seen);
    if rows.is_empty() {
        println!("no tapes node seen on this LAN in {wait} s (mDNS)");
        println!("  teammates show up while their `tapes serve` runs on the same network with mDNS on (the default); try a longer --wait, or reach them with `tapes remote add <name> <node-id>@<host:port>`");
    } else {
        println!("seen on this LAN in {wait} s (mDNS):");
        let width = rows
            .iter()
            .map(|r| r.2.name.as_deref().unwrap_or("(unknown)").len())
            .max()
            .unwrap_or(1);
        for (id, addrs, known) in &rows {
            let mut about = Vec::new();
            if known.teams.is_empty() {
                about.push("not in your teams".to_string());
            } else {
                about.push(format!(
                    "{} {}",
                    if known.teams.len() == 1 {
                        "team"
                    } else {
                        "teams"
                    },
                    known.teams.join(", ")
                ));
            }
            if !known.remotes.is_empty() {
                about.push(format!(
                    "{} {}",
                    if known.remotes.len() == 1 {
                        "remote"
                    } else {
                        "remotes"
                    },
                    known.remotes.join(", ")
                ));
            }
            println!(
                "  {:width$}  node {}  {}  at {}",
                known.name.as_deref().unwrap_or("(unknown)"),
                id.short(),
                about.join("; "),
                addr_list(addrs)
            );
        }
        for (id, _, known) in &rows {
            if let (Some(name), true) = (&known.name, known.remotes.is_empty()) {
                let remote_name = suggested_remote_name(name);
                println!(
                    "  {name} is not a remote yet: `tapes remote add {remote_name} {}`",
                    id.to_hex()
                );
            }
        }
    }
    let missing = not_seen(directory, seen);
    if !missing.is_empty() {
        println!("not seen on this LAN:");
        for (name, addr) in missing {
            let known = directory.who(&addr.id);
            let who = match (&known.name, known.teams.is_empty()) {
                (Some(member), false) => format!(
                    "{member}, {} {}",
                    if known.teams.len() == 1 {
                        "team"
                    } else {
                        "teams"
                    },
                    known.teams.join(", ")
                ),
                _ => "not in your teams".to_string(),
            };
            println!("  remote {name}  node {}  ({who})", addr.id.short());
        }
        println!("  (not running `tapes serve`, on another network, or serving with --no-mdns; a remote with an address is still reached there)");
    }
}

fn to_json(
    directory: &Directory,
    seen: &BTreeMap<MemberId, BTreeSet<SocketAddr>>,
    wait: u64,
) -> serde_json::Value {
    let seen_rows: Vec<serde_json::Value> = ordered(directory, seen)
        .into_iter()
        .map(|(id, addrs, known)| {
            serde_json::json!({
                "node": id.to_hex(),
                "name": known.name,
                "in_your_teams": !known.teams.is_empty(),
                "teams": known.teams,
                "remotes": known.remotes,
                "addrs": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let missing: Vec<serde_json::Value> = not_seen(directory, seen)
        .into_iter()
        .map(|(name, addr)| {
            let known = directory.who(&addr.id);
            serde_json::json!({
                "remote": name,
                "node": addr.id.to_hex(),
                "name": known.name,
                "teams": known.teams,
                "addrs": addr.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "waited_secs": wait,
        "seen": seen_rows,
        "not_seen": missing,
    })
}

#[cfg(test)]
mod tests {
    use super::suggested_remote_name;

    #[test]
    fn suggested_remote_names_are_valid_remote_names() {
        assert_eq!(suggested_remote_name("Alice Smith"), "alice");
        assert_eq!(suggested_remote_name("Zoë"), "zo");
        assert_eq!(suggested_remote_name("-x"), "teammate");
        assert_eq!(suggested_remote_name(""), "teammate");
    }
}
