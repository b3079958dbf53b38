//! Finding teammates on the LAN with no configuration, through the real binary: two hosts are
//! two network namespaces joined by a veth pair (mDNS does not work on plain loopback), one
//! `TAPES_HOME` per person. Alice serves with mDNS on; bob joins her team with an invite that
//! carries no address, fetches from a remote given by her node id alone, and `tapes peers`
//! lists her by name. Nothing leaves the two namespaces: they have no route anywhere else.
//!
//! Needs root and iproute2 (`ip netns`); without them the test says why and skips (set
//! `TAPES_REQUIRE_LAN_TEST=1` to make that a failure, e.g. in CI).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Two network namespaces joined by veth, deleted on drop (with the veth pair inside them).
struct Lan {
    a: String,
    b: String,
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = StdCommand::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = StdCommand::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Builds the two hosts: 10.77.0.1/24 and 10.77.0.2/24, multicast on, 224.0.0.0/4 routed to
/// the veth (mDNS sends on the default multicast interface). Err says why it cannot.
fn lan() -> Result<Lan, String> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("network namespaces need root".into());
    }
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}x{n}", std::process::id());
    let lan = Lan {
        a: format!("tapesA{tag}"),
        b: format!("tapesB{tag}"),
    };
    // Interface names are at most 15 bytes.
    let (va, vb) = (format!("tva{tag}"), format!("tvb{tag}"));
    ip(&["netns", "add", &lan.a])?;
    ip(&["netns", "add", &lan.b])?;
    ip(&[
        "link", "add", &va, "netns", &lan.a, "type", "veth", "peer", "name", &vb, "netns", &lan.b,
    ])?;
    for (ns, dev, addr) in [(&lan.a, &va, "10.77.0.1/24"), (&lan.b, &vb, "10.77.0.2/24")] {
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "multicast", "on", "up"])?;
        ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
    }
    Ok(lan)
}

/// `tapes <args>` inside namespace `ns` as the person whose home is `home`.
fn tapes(ns: &str, home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = assert_cmd::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(assert_cmd::cargo::cargo_bin("tapes"))
        .args(args)
        .env("TAPES_HOME", home)
        .env_remove("RUST_LOG")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(ns: &str, home: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = tapes(ns, home, args);
    assert_eq!(
        code, 0,
        "tapes {args:?} in {ns}\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

/// A running `tapes serve` in a namespace, stopped on drop.
struct Serve {
    child: Child,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tapes serve` on every interface of `ns` with mDNS on, once it is listening.
fn serve(ns: &str, home: &Path) -> Serve {
    // `ip netns exec` execs the program, so the child is `tapes serve` itself.
    let mut child = StdCommand::new("ip")
        .args(["netns", "exec", ns])
        .arg(assert_cmd::cargo::cargo_bin("tapes"))
        .args(["serve", "--bind", "0.0.0.0:0"])
        .env("TAPES_HOME", home)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut started = false;
    for line in lines.by_ref() {
        if line.unwrap().starts_with("Ctrl-C") {
            started = true;
            break;
        }
    }
    assert!(started, "tapes serve did not start in {ns}");
    // Keep draining what it prints so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Serve { child }
}

fn person(ns: &str, dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    ok(ns, &home, &["init", "--name", name]);
    home
}

fn node_id(ns: &str, home: &Path) -> String {
    ok(ns, home, &["id"])
        .lines()
        .find_map(|l| l.strip_prefix("node id: "))
        .expect("`tapes id` prints the node id")
        .trim()
        .to_string()
}

fn import_sample(ns: &str, home: &Path, dir: &Path, name: &str) -> String {
    let file = dir.join(format!("{name}.jsonl"));
    let session = tapes::session::sample::session(4242, 0, Default::default());
    std::fs::write(&file, tapes::session::sample::claude_jsonl(&session)).unwrap();
    ok(ns, home, &["import", file.to_str().unwrap()]);
    let list = ok(ns, home, &["sessions", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&list).unwrap();
    value[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn teammates_find_each_other_on_the_lan_by_node_id_alone() {
    let lan = match lan() {
        Ok(lan) => lan,
        Err(why) if std::env::var_os("TAPES_REQUIRE_LAN_TEST").is_some() => {
            panic!("TAPES_REQUIRE_LAN_TEST is set but the LAN cannot be built: {why}")
        }
        Err(why) => {
            eprintln!("skipping the LAN discovery test: {why} (it runs two network namespaces joined by veth)");
            return;
        }
    };
    let (a, b) = (lan.a.as_str(), lan.b.as_str());
    let dir = tempfile::tempdir().unwrap();
    let alice = person(a, dir.path(), "alice");
    let bob = person(b, dir.path(), "bob");
    let carol = person(b, dir.path(), "carol");
    ok(a, &alice, &["team", "create", "core"]);
    // Made before alice ever served, so the code carries no address: bob's join finds her
    // node on the LAN.
    let code = ok(a, &alice, &["team", "invite"]).trim().to_string();
    let _server = serve(a, &alice);

    let joined = ok(b, &bob, &["team", "join", &code]);
    assert!(joined.contains("joined team \"core\""), "{joined}");

    let session = import_sample(a, &alice, dir.path(), "alice");
    ok(
        a,
        &alice,
        &["share", &session[..12], "--team", "core", "--allow-secrets"],
    );

    // The node id alone: no address anywhere in bob's configuration.
    let alice_id = node_id(a, &alice);
    let added = ok(b, &bob, &["remote", "add", "alice", &alice_id]);
    assert!(added.contains("found on the LAN by mDNS"), "{added}");
    let start = Instant::now();
    let fetched = loop {
        let (code, stdout, stderr) = tapes(b, &bob, &["fetch", "alice"]);
        if code == 0 {
            break stdout;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "bob could not fetch from alice by node id within 20 s\nstdout: {stdout}\nstderr: {stderr}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(fetched.contains("alice: 1 new session,"), "{fetched}");
    let listed = ok(b, &bob, &["sessions"]);
    assert!(listed.contains(&session[..8]), "{listed}");

    // `tapes peers` names her, with her team and remote; a configured peer that is not on
    // this LAN is listed as not seen.
    let carol_id = node_id(b, &carol);
    ok(b, &bob, &["remote", "add", "carol", &carol_id]);
    let peers = ok(b, &bob, &["peers", "--wait", "5"]);
    let line = peers
        .lines()
        .find(|l| l.contains(&alice_id[..12]))
        .unwrap_or_else(|| panic!("alice's node is not listed\n{peers}"));
    assert!(line.contains("alice"), "{peers}");
    assert!(line.contains("team core"), "{peers}");
    assert!(line.contains("remote alice"), "{peers}");
    assert!(line.contains("10.77.0.1:"), "{peers}");
    assert!(peers.contains("not seen on this LAN"), "{peers}");
    assert!(peers.contains("remote carol"), "{peers}");

    let json = ok(b, &bob, &["peers", "--wait", "3", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let seen = value["seen"].as_array().unwrap();
    assert_eq!(seen.len(), 1, "{json}");
    assert_eq!(seen[0]["node"], alice_id.as_str(), "{json}");
    assert_eq!(seen[0]["name"], "alice", "{json}");
    assert_eq!(seen[0]["teams"][0], "core", "{json}");
    assert_eq!(value["not_seen"][0]["remote"], "carol", "{json}");

    // On her own side nobody is seen: bob is not serving, and `tapes peers` listens without
    // announcing itself.
    let alone = ok(a, &alice, &["peers", "--wait", "2"]);
    assert!(alone.contains("no tapes node seen"), "{alone}");
}
