//! Fetch across NATs (issue "Reach"): throughput and connect time of `tapes fetch` by node id,
//! direct (hole punched) and relayed, beside the same fetch on a plain LAN and a raw TCP copy.
//!
//! `cargo bench --bench reach` (root: network namespaces; without root it prints one line and
//! stops) builds the topology of `tests/it/nat.rs` — alice and bob behind their own masquerading
//! routers on a small internet, `tapes relay --iroh-relay` on a relay host — and a plain LAN
//! of two namespaces on one veth. Alice imports and shares N generated sessions with her team
//! once; then, in each network, a new teammate joins and runs the real binary:
//!
//! - `fetch`: the first `tapes fetch alice` (every session), wall clock, as sessions/s and MB/s
//!   of transcript JSONL;
//! - `connect`: a no-op `tapes fetch alice` (dial + handshake + one exchange), median of 5,
//!   beside `tapes id` (process start, no network) as the floor;
//! - the ratio of each to the LAN.
//!
//! Networks: LAN (10.77.0.0/24, `TAPES_RELAYS=none`, dialled at the ticket's address); NAT,
//! direct (UDP open between the routers); NAT, relayed (all UDP between the routers dropped,
//! only the iroh relay's TCP path left). The raw TCP copies measure the links themselves.
//!
//! Environment: `TAPES_REACH_SESSIONS` (default 200), `TAPES_REACH_ROUNDS` (tool rounds per
//! session, default 20), `TAPES_REACH_RAW_MB` (raw TCP copy size, default 256),
//! `TAPES_REACH_RELAY_PORT` (the iroh relay's port on the relay host, default 3340).
//! Nothing leaves the namespaces.

#[path = "../tests/it/netns/mod.rs"]
mod netns;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use netns::{Daemon, Lan, Nat, Person};

const BIN: &str = env!("CARGO_BIN_EXE_tapes");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter here.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("reach benchmark skipped: it needs root (network namespaces)");
        return;
    }
    if let Err(e) = netns::Netns::new() {
        println!("reach benchmark skipped: {e}");
        return;
    }
    if let Err(e) = run() {
        eprintln!("reach benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// One network's figures.
struct Row {
    name: &'static str,
    path: String,
    fetch: Duration,
    connect: Duration,
    peers: String,
}

fn run() -> Result<(), String> {
    let count: usize = env_or("TAPES_REACH_SESSIONS", 200);
    let rounds: usize = env_or("TAPES_REACH_ROUNDS", 20);
    let raw_mb: u64 = env_or("TAPES_REACH_RAW_MB", 256);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = dir.path();

    let nat = Nat::build()?;
    let lan = Lan::build()?;
    nat.check(false)?;

    let relay = spawn_relay(&nat, dir)?;
    let url = relay
        .line("iroh relay: ")
        .ok_or_else(|| format!("no `iroh relay:` line:\n{}", relay.lines.join("\n")))?
        .trim()
        .to_string();
    let relays = [("TAPES_RELAYS", url.as_str())];

    let mut alice = Person::init(BIN.as_ref(), &nat.alice, dir, "alice", &relays)?;
    alice.timeout = Duration::from_secs(600);
    alice.ok(&["team", "create", "core"])?;
    let shape = tapes::session::sample::Shape {
        tool_rounds: rounds,
        ..Default::default()
    };
    let (ids, bytes) = alice.import_samples(dir, 7, count, shape)?;
    if ids.len() != count {
        return Err(format!("alice has {} sessions, not {count}", ids.len()));
    }
    let mut share: Vec<&str> = vec!["share"];
    share.extend(ids.iter().map(String::as_str));
    share.extend(["--team", "core", "--allow-secrets"]);
    alice.ok(&share)?;
    let codes = [
        alice.ok(&["team", "invite"])?.trim().to_string(),
        alice.ok(&["team", "invite"])?.trim().to_string(),
    ];
    let alice_id = alice.node_id()?;
    println!("iroh relay: {url}");
    println!(
        "reach benchmark: {count} sessions of {rounds} tool rounds ({:.1} MB of JSONL), {} cores, network namespaces on one machine",
        bytes as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let mut rows = Vec::new();
    // Plain LAN first (the anchor), with alice's same home moved onto it.
    {
        let alice = alice.moved(&lan.a, &[("TAPES_RELAYS", "none")]);
        let served = alice.spawn(
            &["serve", "--bind", "0.0.0.0:0", "--no-mdns"],
            "Ctrl-C",
            Duration::from_secs(60),
        )?;
        let ticket = served
            .line("ticket: ")
            .ok_or("serve prints no ticket")?
            .to_string();
        let code = alice.ok(&["team", "invite"])?.trim().to_string();
        let carol = teammate(&lan.b, dir, "carol", &[("TAPES_RELAYS", "none")])?;
        rows.push(measure(
            "LAN (one veth)",
            &carol,
            &code,
            &ticket,
            count,
            &served,
        )?);
    }
    {
        let served = alice.spawn(
            &["serve", "--bind", "0.0.0.0:0", "--no-mdns"],
            "Ctrl-C",
            Duration::from_secs(60),
        )?;
        let bob = teammate(&nat.bob, dir, "bob", &relays)?;
        rows.push(measure(
            "NAT, UDP open",
            &bob,
            &codes[0],
            &alice_id,
            count,
            &served,
        )?);
        nat.drop_udp_between_routers()?;
        let dave = teammate(&nat.bob, dir, "dave", &relays)?;
        rows.push(measure(
            "NAT, UDP dropped",
            &dave,
            &codes[1],
            &alice_id,
            count,
            &served,
        )?);
    }

    let floor = median(
        &mut (0..5)
            .map(|_| alice.tapes(&["id"]).map(|o| o.took))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let lan_row = &rows[0];
    println!(
        "{:<18} {:<8} {:>9} {:>11} {:>8} {:>11} {:>9}",
        "network", "path", "fetch s", "sessions/s", "MB/s", "connect ms", "vs LAN"
    );
    for row in &rows {
        let secs = row.fetch.as_secs_f64();
        println!(
            "{:<18} {:<8} {:>9.2} {:>11.1} {:>8.2} {:>11.0} {:>4.2}x/{:.2}x",
            row.name,
            row.path,
            secs,
            count as f64 / secs,
            bytes as f64 / 1e6 / secs,
            row.connect.as_secs_f64() * 1e3,
            secs / lan_row.fetch.as_secs_f64(),
            row.connect.as_secs_f64() / lan_row.connect.as_secs_f64(),
        );
    }
    println!(
        "(vs LAN: fetch time x / connect time x; `tapes id`, no network, takes {:.0} ms: the floor under connect)",
        floor.as_secs_f64() * 1e3
    );
    for row in &rows {
        if !row.peers.is_empty() {
            println!("tapes peers, {}: {}", row.name, row.peers);
        }
    }

    // The links themselves: one TCP stream of raw bytes.
    let raw = raw_mb << 20;
    let lan_copy = netns::tcp_copy(
        &lan.b,
        &lan.a,
        SocketAddr::from(([10, 77, 0, 1], 9911)),
        raw,
    )?;
    let nat_copy = netns::tcp_copy(
        &nat.bob,
        &nat.relay,
        SocketAddr::from((netns::RELAY_IP, 9911)),
        raw,
    )?;
    for (name, took) in [
        ("raw TCP, LAN veth", lan_copy),
        ("raw TCP, bob → relay host through his NAT", nat_copy),
    ] {
        println!(
            "{name}: {raw_mb} MiB in {:.2} s = {:.0} MB/s",
            took.as_secs_f64(),
            raw as f64 / 1e6 / took.as_secs_f64()
        );
    }
    drop(relay);
    Ok(())
}

fn spawn_relay(nat: &Nat, dir: &Path) -> Result<Daemon, String> {
    let iroh_relay = format!("203.0.113.3:{}", env_or("TAPES_REACH_RELAY_PORT", 3340u16));
    let operator = Person {
        name: "relay".into(),
        ns: nat.relay.clone(),
        home: dir.join("relay-home"),
        env: vec![
            (
                "TAPES_HOME".into(),
                dir.join("relay-home").display().to_string(),
            ),
            ("TAPES_RELAYS".into(), "none".into()),
        ],
        bin: BIN.into(),
        timeout: Duration::from_secs(60),
    };
    let data = dir.join("relay-data").display().to_string();
    operator.spawn(
        &[
            "relay",
            "--data",
            &data,
            "--bind",
            "203.0.113.3:7448",
            "--iroh-relay",
            &iroh_relay,
        ],
        "Ctrl-C",
        Duration::from_secs(60),
    )
}

fn teammate(ns: &str, dir: &Path, name: &str, env: &[(&str, &str)]) -> Result<Person, String> {
    let mut person = Person::init(BIN.as_ref(), ns, dir, name, env)?;
    person.timeout = Duration::from_secs(600);
    Ok(person)
}

/// Joins with `code`, adds alice as `remote`, times the first fetch and five no-op ones.
fn measure(
    name: &'static str,
    who: &Person,
    code: &str,
    remote: &str,
    count: usize,
    served: &Daemon,
) -> Result<Row, String> {
    let joined = who.retry(&["team", "join", code], Duration::from_secs(30), |o| {
        o.code == 0
    })?;
    if joined.code != 0 {
        return Err(format!(
            "{name}: {} cannot join: {joined:?}\nalice's serve: {}",
            who.name,
            served.stderr()
        ));
    }
    who.ok(&["remote", "add", "alice", remote])?;
    let first = who.tapes(&["fetch", "alice"])?;
    if first.code != 0
        || !first
            .stdout
            .contains(&format!("alice: {count} new sessions"))
    {
        return Err(format!("{name}: the first fetch: {first:?}"));
    }
    let path = ["relayed", "direct"]
        .into_iter()
        .find(|p| {
            first.stdout.contains(&format!("({p})")) || first.stdout.contains(&format!("({p},"))
        })
        .unwrap_or("?")
        .to_string();
    let mut noop = Vec::new();
    for _ in 0..5 {
        let again = who.tapes(&["fetch", "alice"])?;
        if again.code != 0 {
            return Err(format!("{name}: a no-op fetch: {again:?}"));
        }
        noop.push(again.took);
    }
    // What `tapes peers` reports for alice: online, path, round-trip time.
    let peers = who
        .ok(&["peers", "--wait", "1", "--json"])
        .ok()
        .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
        .and_then(|value| {
            let remotes = value["remotes"].as_array()?.clone();
            let alice = remotes.into_iter().find(|r| r["name"] == "alice")?;
            Some(format!(
                "online {}, path {}, rtt {} ms",
                alice["online"], alice["path"], alice["rtt_ms"]
            ))
        })
        .unwrap_or_default();
    eprintln!("{name}: {}", first.stdout.trim());
    Ok(Row {
        name,
        path,
        fetch: first.took,
        connect: median(&mut noop),
        peers,
    })
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
