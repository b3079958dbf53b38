//! Reach across real NATs, through the real binary (issue "Reach"): alice and bob each sit on
//! a private LAN behind their own router namespace doing masquerading NAT (iptables), on a
//! small "internet" bridge where a third namespace runs `tapes relay` with its iroh relay. They
//! have no route to each other's private addresses. Bob adds alice by node id alone and
//! `tapes fetch alice` succeeds, saying whether the path was direct (hole punched) or relayed,
//! and what he gets equals what alice has. A second case drops all UDP between the routers,
//! so only the relay path is left, and the fetch still succeeds, relayed.
//!
//! Nothing leaves the namespaces: every address is in 203.0.113.0/24 or a private LAN inside
//! them, and every person runs with `TAPES_RELAYS` set to that relay (no public relays, no
//! outside lookups).
//!
//! Needs root, iproute2 and iptables; without them the test says why and skips (set
//! `TAPES_REQUIRE_LAN_TEST=1` to make that a failure, e.g. in CI).

use super::netns;

use std::path::Path;
use std::time::Duration;

use netns::{Daemon, Nat, Person};

const BIN: &str = env!("CARGO_BIN_EXE_tapes");

/// The topology, or None (skip) when it cannot be built here and CI does not require it.
fn nat() -> Option<Nat> {
    match Nat::build() {
        Ok(nat) => Some(nat),
        Err(why) if std::env::var_os("TAPES_REQUIRE_LAN_TEST").is_some() => {
            panic!("TAPES_REQUIRE_LAN_TEST is set but the NAT namespaces cannot be built: {why}")
        }
        Err(why) => {
            eprintln!("skipping the NAT test: {why} (it builds routers, hosts and a relay as network namespaces)");
            None
        }
    }
}

/// `tapes relay` with an iroh relay on the relay host; the iroh relay's URL it prints.
fn relay(nat: &Nat, dir: &Path) -> (Daemon, String) {
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
    let data = dir.join("relay-data");
    let daemon = operator
        .spawn(
            &[
                "relay",
                "--data",
                &data.display().to_string(),
                "--bind",
                "203.0.113.3:7448",
                "--iroh-relay",
                "203.0.113.3:3340",
            ],
            "Ctrl-C",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let url = daemon
        .line("iroh relay: ")
        .unwrap_or_else(|| {
            panic!(
                "`tapes relay --iroh-relay` prints no `iroh relay: <url>` line:\n{}",
                daemon.lines.join("\n")
            )
        })
        .trim()
        .to_string();
    assert!(
        url.starts_with("https://203.0.113.3:3340") && url.contains("#sha256="),
        "the iroh relay URL is its own https address with the certificate pinned: {url}"
    );
    (daemon, url)
}

/// The nodes of a session as `tapes show --json` prints them, without the working directory
/// (only the project's name travels by default, `share.paths`).
fn nodes(person: &Person, session: &str) -> Vec<serde_json::Value> {
    let shown = person.ok(&["show", session, "--json"]).unwrap();
    let value: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let mut nodes = value["nodes"].as_array().cloned().unwrap_or_default();
    assert!(
        !nodes.is_empty(),
        "{} shows no nodes for {session}: {shown}",
        person.name
    );
    for node in &mut nodes {
        if let Some(meta) = node["meta"].as_object_mut() {
            meta.remove("cwd");
        }
    }
    nodes
}

/// Bob's copy of a session equals alice's: the same nodes (ids, parents, roles, blocks, meta).
fn assert_same_session(alice: &Person, bob: &Person, session: &str) {
    let (theirs, ours) = (nodes(alice, session), nodes(bob, session));
    assert_eq!(theirs.len(), ours.len(), "node count of {session}");
    for (a, b) in theirs.iter().zip(&ours) {
        assert_eq!(a, b, "a node of {session} differs between alice and bob");
    }
}

/// Alice serves behind her NAT, bob joins her team and fetches by her node id alone; the path
/// bob's fetch reports ("direct" or "relayed").
fn fetch_across(nat: &Nat, udp_dropped: bool) -> String {
    nat.check(udp_dropped).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_relay, url) = relay(nat, dir.path());
    let env = [("TAPES_RELAYS", url.as_str())];
    let alice = Person::init(BIN.as_ref(), &nat.alice, dir.path(), "alice", &env).unwrap();
    let bob = Person::init(BIN.as_ref(), &nat.bob, dir.path(), "bob", &env).unwrap();

    alice.ok(&["team", "create", "core"]).unwrap();
    // Made before alice serves: the code carries her node id and the relay URL, and works
    // once she is online.
    let code = alice.ok(&["team", "invite"]).unwrap().trim().to_string();
    let served = alice
        .spawn(
            &["serve", "--bind", "0.0.0.0:0", "--no-mdns"],
            "Ctrl-C",
            Duration::from_secs(30),
        )
        .unwrap();
    let ticket = served.line("ticket: ").expect("serve prints its ticket");
    let alice_id = alice.node_id().unwrap();
    assert!(ticket.starts_with(&alice_id), "{ticket}");

    let joined = bob
        .retry(&["team", "join", &code], Duration::from_secs(30), |o| {
            o.code == 0
        })
        .unwrap();
    assert!(
        joined.code == 0 && joined.stdout.contains("joined team \"core\""),
        "bob cannot join alice's team across the NATs: {joined:?}\nalice's serve: {}",
        served.stderr()
    );

    let (sessions, _) = alice
        .import_samples(dir.path(), 4242, 1, Default::default())
        .unwrap();
    let session = &sessions[0];
    alice
        .ok(&["share", session, "--team", "core", "--allow-secrets"])
        .unwrap();

    // The node id alone: no address anywhere in bob's configuration.
    bob.ok(&["remote", "add", "alice", &alice_id]).unwrap();
    let fetched = bob
        .retry(&["fetch", "alice"], Duration::from_secs(30), |o| {
            o.code == 0
        })
        .unwrap();
    assert_eq!(
        fetched.code, 0,
        "bob cannot fetch from alice by node id across the NATs (UDP dropped: {udp_dropped}): {fetched:?}\nalice's serve: {}",
        served.stderr()
    );
    let out = &fetched.stdout;
    assert!(out.contains("alice: 1 new session"), "{out}");
    // `(relayed)` or `(direct)`, possibly with the round-trip time: `(relayed, 3.8 ms)`.
    let path = if out.contains("(relayed)") || out.contains("(relayed,") {
        "relayed"
    } else if out.contains("(direct)") || out.contains("(direct,") {
        "direct"
    } else {
        panic!("`tapes fetch` does not say which path it took: {out}")
    };
    eprintln!(
        "fetch across the NATs (UDP between routers {}): {path} in {:?}: {}",
        if udp_dropped { "dropped" } else { "open" },
        fetched.took,
        out.trim()
    );

    // What bob has equals what alice has, as a LAN fetch would give.
    assert_same_session(&alice, &bob, session);
    let listed = bob.ok(&["sessions"]).unwrap();
    assert!(listed.contains(&session[..8]), "{listed}");

    // `tapes peers` dials each remote: alice is online, with the path and a round-trip time.
    let peers = bob.ok(&["peers", "--wait", "1", "--json"]).unwrap();
    let value: serde_json::Value = serde_json::from_str(&peers).unwrap();
    let remote = value["remotes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "alice"))
        .unwrap_or_else(|| panic!("`tapes peers --json` lists no remote alice: {peers}"));
    assert_eq!(remote["online"], true, "{peers}");
    println!(
        "tapes peers (UDP between routers {}): alice {} {} ms",
        if udp_dropped { "dropped" } else { "open" },
        remote["path"],
        remote["rtt_ms"]
    );
    assert!(
        remote["path"] == "relayed" || remote["path"] == "direct",
        "{peers}"
    );
    if udp_dropped {
        assert_eq!(remote["path"], "relayed", "{peers}");
    }
    assert!(remote["rtt_ms"].as_f64().is_some(), "{peers}");

    // Nothing new the second time.
    let again = bob.ok(&["fetch", "alice"]).unwrap();
    assert!(!again.contains("1 new session"), "{again}");
    path.to_string()
}

#[test]
fn fetch_by_node_id_across_two_nats() {
    let Some(nat) = nat() else { return };
    let path = fetch_across(&nat, false);
    assert!(path == "direct" || path == "relayed");
}

#[test]
fn fetch_by_node_id_over_the_relay_when_udp_between_the_routers_is_dropped() {
    let Some(nat) = nat() else { return };
    nat.drop_udp_between_routers().unwrap();
    let path = fetch_across(&nat, true);
    assert_eq!(path, "relayed");
}

/// The harness itself: the topology is what the other tests rely on, whatever tapes does.
#[test]
fn the_nat_topology_isolates_the_homes() {
    let Some(nat) = nat() else { return };
    nat.check(false).unwrap();
    nat.drop_udp_between_routers().unwrap();
    nat.check(true).unwrap();
    let names: Vec<String> = nat.net.names().to_vec();
    drop(nat);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for name in names {
        assert!(!list.contains(&name), "{name} is left after drop: {list}");
    }
}
