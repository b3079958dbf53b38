//! Storage providers through the real binary, one `TAPES_HOME` per person, on 127.0.0.1:
//! `tapes storage status|sync|set-provider|configure`, the local provider that never dials, a
//! hybrid provider whose relay is down (commands succeed, changes are queued and counted), a
//! cloud provider whose write-through fails loudly, and a real `tapes relay` that takes the
//! queued changes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use super::util::output as tapes;

fn ok(home: &Path, args: &[&str]) -> (String, String) {
    let (code, stdout, stderr) = tapes(home, args);
    assert_eq!(
        code, 0,
        "tapes {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

fn person(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    ok(&home, &["init", "--name", name]);
    home
}

fn node_id(home: &Path) -> String {
    let (out, _) = ok(home, &["id", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    value["node_id"].as_str().unwrap().to_string()
}

/// Imports a sample Claude Code session and returns its id.
fn import_sample(home: &Path, dir: &Path, name: &str) -> (String, String) {
    let file = dir.join(format!("{name}.jsonl"));
    let seed = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let session = tapes::session::sample::session(seed, 0, Default::default());
    std::fs::write(&file, tapes::session::sample::claude_jsonl(&session)).unwrap();
    let before = session_ids(home);
    let (_, stderr) = ok(home, &["import", file.to_str().unwrap()]);
    let new: Vec<String> = session_ids(home)
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "one new session from {name}");
    (new[0].clone(), stderr)
}

fn session_ids(home: &Path) -> Vec<String> {
    let (list, _) = ok(home, &["sessions", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&list).unwrap();
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn status_json(home: &Path) -> serde_json::Value {
    let (out, _) = ok(home, &["storage", "status", "--json"]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_fresh_home_is_local_and_never_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let alice = person(dir.path(), "alice");
    let (out, _) = ok(&alice, &["storage", "status"]);
    assert!(out.contains("Provider: local"), "{out}");
    assert!(out.contains("(0 sessions)"), "{out}");
    assert!(out.contains("Remote: none"), "{out}");
    let json = status_json(&alice);
    assert_eq!(json["provider"], "local");
    assert_eq!(json["local"]["sessions"], 0);

    let (code, _, stderr) = tapes(&alice, &["storage", "sync"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`tapes storage set-provider hybrid`"),
        "{stderr}"
    );

    // Writing commands under the local provider print nothing about syncing.
    let (_, stderr) = import_sample(&alice, dir.path(), "alice");
    assert!(!stderr.contains("relay"), "{stderr}");
    let (out, _) = ok(&alice, &["storage", "status"]);
    assert!(out.contains("(1 session)"), "{out}");
    assert!(!alice.join("storage.toml").exists());
}

#[test]
fn wrong_usage_and_bad_tickets_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let alice = person(dir.path(), "alice");
    let (code, _, stderr) = tapes(&alice, &["storage", "set-provider", "bogus"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("local, cloud, hybrid"), "{stderr}");
    let (code, _, stderr) = tapes(
        &alice,
        &[
            "storage",
            "configure",
            "--relay",
            "x",
            "--sync-interval",
            "soon",
        ],
    );
    assert_eq!(code, 2, "{stderr}");

    for bad in [
        "not-a-ticket",
        "abcd@127.0.0.1:9",
        &format!("{}@nowhere", node_id(&alice)),
    ] {
        let (code, _, stderr) = tapes(&alice, &["storage", "configure", "--relay", bad]);
        assert_eq!(code, 1, "{bad}: {stderr}");
        assert!(
            stderr.contains("neither a relay remote nor a relay ticket"),
            "{stderr}"
        );
        assert!(!alice.join("storage.toml").exists(), "{bad}");
        let (out, _) = ok(&alice, &["remote", "list"]);
        assert!(out.contains("no remotes"), "{out}");
    }

    // Cloud needs a relay first.
    let (code, _, stderr) = tapes(&alice, &["storage", "set-provider", "cloud"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("configure --relay"), "{stderr}");
    assert!(!alice.join("storage.toml").exists());

    // A malformed storage.toml: named, with the fix; other commands still work.
    std::fs::write(alice.join("storage.toml"), "provider = \"floppy\"\n").unwrap();
    let (code, _, stderr) = tapes(&alice, &["storage", "status"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("storage.toml"), "{stderr}");
    assert!(stderr.contains("delete it"), "{stderr}");
    let (_, stderr) = ok(&alice, &["sessions"]);
    assert!(stderr.contains("storage.toml"), "{stderr}");
}

#[test]
fn hybrid_with_the_relay_down_queues_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let alice = person(dir.path(), "alice");
    // Nobody listens on port 9 with this node id.
    let ghost = person(dir.path(), "ghost");
    let ticket = format!("{}@127.0.0.1:9", node_id(&ghost));
    ok(&alice, &["team", "create", "core"]);
    let (out, _) = ok(&alice, &["storage", "configure", "--relay", &ticket]);
    assert!(out.contains("provider: hybrid (was local)"), "{out}");
    let config = std::fs::read_to_string(alice.join("storage.toml")).unwrap();
    assert!(config.contains("provider = \"hybrid\""), "{config}");
    assert!(config.contains("relay = \"relay\""), "{config}");
    let (remotes, _) = ok(&alice, &["remote", "list"]);
    assert!(remotes.contains("relay"), "{remotes}");

    let started = Instant::now();
    let (session, stderr) = import_sample(&alice, dir.path(), "alice");
    assert!(
        stderr.contains("relay unreachable; 0 changes queued; `tapes storage sync` retries"),
        "{stderr}"
    );
    let (_, stderr) = ok(
        &alice,
        &["share", &session[..12], "--team", "core", "--allow-secrets"],
    );
    assert!(
        stderr.contains("relay unreachable; 1 change queued; `tapes storage sync` retries"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    let (out, _) = ok(&alice, &["storage", "status"]);
    assert!(out.contains("Provider: hybrid"), "{out}");
    assert!(out.contains("(1 session)"), "{out}");
    assert!(out.contains("0 synced, 1 pending push"), "{out}");
    assert!(
        out.contains("pending pull unknown (relay unreachable"),
        "{out}"
    );
    assert!(out.contains("Last sync: never (last attempt"), "{out}");
    let (out, _) = ok(&alice, &["storage", "status", "--json", "--offline"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["remote"]["pending_push"], 1);
    assert!(json["remote"]["pending_pull"].is_null());
    assert_eq!(json["remote"]["pending_pull_unknown"], "--offline");

    // An explicit sync fails (exit 1) and says nothing is lost.
    let (code, _, stderr) = tapes(&alice, &["storage", "sync"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(stderr.contains("1 change queued"), "{stderr}");

    // The interval is not due: a read-only command does not dial again.
    let (_, stderr) = ok(&alice, &["sessions"]);
    assert!(!stderr.contains("relay"), "{stderr}");

    // Cloud: the same outage is an error exit, and the change is still queued.
    ok(&alice, &["storage", "set-provider", "cloud"]);
    let (code, _, stderr) = tapes(&alice, &["unshare", &session[..12], "--team", "core"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("it is kept locally and queued"), "{stderr}");
    assert!(stderr.contains("set-provider hybrid"), "{stderr}");

    // Local again: nothing dials, nothing warns.
    ok(&alice, &["storage", "set-provider", "local"]);
    let (_, stderr) = import_sample(&alice, dir.path(), "alice2");
    assert!(!stderr.contains("relay"), "{stderr}");
    let (out, _) = ok(&alice, &["storage", "status"]);
    assert!(out.contains("Provider: local"), "{out}");
    assert!(out.contains("not used by the local provider"), "{out}");
}

/// A running `tapes relay`, stopped on drop (also when the test panics).
struct Relay {
    child: Child,
    ticket: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(data: &Path) -> Relay {
    let child = StdCommand::new(assert_cmd::cargo::cargo_bin("tapes"))
        .env_remove("RUST_LOG")
        .env("TAPES_HOME", data.join("unused-home"))
        .args([
            "relay",
            "--data",
            data.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut relay = Relay {
        child,
        ticket: String::new(),
    };
    let file = data.join("relay-ticket");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(ticket) = std::fs::read_to_string(&file) {
            if !ticket.trim().is_empty() {
                relay.ticket = ticket.trim().to_string();
                break;
            }
        }
        if let Some(status) = relay.child.try_wait().unwrap() {
            panic!("tapes relay exited early: {status}");
        }
        assert!(Instant::now() < deadline, "tapes relay wrote no ticket");
        std::thread::sleep(Duration::from_millis(50));
    }
    relay
}

#[test]
fn hybrid_syncs_through_a_real_relay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay-data");
    std::fs::create_dir_all(&data).unwrap();
    let relay = start_relay(&data);
    let alice = person(dir.path(), "alice");
    ok(&alice, &["team", "create", "core"]);
    ok(
        &alice,
        &["relay", "register", "--team", "core", &relay.ticket],
    );
    ok(
        &alice,
        &[
            "storage",
            "configure",
            "--relay",
            &relay.ticket,
            "--no-sync-on-close",
            "--sync-interval",
            "1h",
        ],
    );
    // Configured but never synced: the first command after it catches up (interval due).
    let (session, _) = import_sample(&alice, dir.path(), "alice");
    ok(
        &alice,
        &["share", &session[..12], "--team", "core", "--allow-secrets"],
    );
    // sync_on_close is off and the interval is an hour: the share is still pending.
    let (out, _) = ok(&alice, &["storage", "status"]);
    assert!(
        out.contains("0 synced, 1 pending push, 0 pending pull"),
        "{out}"
    );

    let (out, _) = ok(&alice, &["storage", "sync"]);
    assert!(
        out.contains(&format!("deposited {}", &session[..8])),
        "{out}"
    );
    // Nothing came back, but something went: not "up to date".
    assert!(out.starts_with("relay: nothing new to fetch ("), "{out}");
    assert!(out.contains(": 10 new nodes\n"), "{out}");
    assert!(out.contains("1 synced, 0 pending push"), "{out}");
    let (out, _) = ok(&alice, &["storage", "status"]);
    assert!(out.contains("Provider: hybrid"), "{out}");
    assert!(
        out.contains("1 synced, 0 pending push, 0 pending pull"),
        "{out}"
    );
    assert!(out.contains("Last sync: just now"), "{out}");
    let json = status_json(&alice);
    assert_eq!(json["remote"]["synced"], 1);
    assert_eq!(json["remote"]["pending_push"], 0);
    assert_eq!(json["remote"]["pending_pull"], 0);

    // Write-through: with the cloud provider a share reaches the relay before exit.
    ok(&alice, &["storage", "set-provider", "cloud"]);
    let (second, _) = import_sample(&alice, dir.path(), "alice-second");
    let (_, stderr) = ok(
        &alice,
        &["share", &second[..12], "--team", "core", "--allow-secrets"],
    );
    assert!(stderr.contains("1 deposited"), "{stderr}");
    let json = status_json(&alice);
    assert_eq!(json["remote"]["synced"], 2, "{json}");
    assert_eq!(json["remote"]["pending_push"], 0, "{json}");

    // Bob joins the team (request and answer files); alice's write-through brings the new
    // manifest to the relay as part of `team accept`.
    let bob = person(dir.path(), "bob");
    let (code, _) = ok(&alice, &["team", "invite"]);
    let request = dir.path().join("bob.request");
    let answer = dir.path().join("bob.answer");
    ok(
        &bob,
        &["team", "join", code.trim(), "-o", request.to_str().unwrap()],
    );
    ok(
        &alice,
        &[
            "team",
            "accept",
            request.to_str().unwrap(),
            "-o",
            answer.to_str().unwrap(),
        ],
    );
    ok(
        &bob,
        &["team", "join", "--answer", answer.to_str().unwrap()],
    );
    ok(&bob, &["storage", "configure", "--relay", &relay.ticket]);
    // Pending pull is asked live: alice's two sessions.
    let (out, _) = ok(&bob, &["storage", "status"]);
    assert!(out.contains("(0 sessions)"), "{out}");
    assert!(
        out.contains("0 synced, 0 pending push, 2 pending pull"),
        "{out}"
    );
    let (out, _) = ok(&bob, &["storage", "sync"]);
    assert!(out.contains("2 new sessions"), "{out}");
    let (out, _) = ok(&bob, &["storage", "status"]);
    assert!(out.contains("(2 sessions)"), "{out}");
    assert!(out.contains("0 pending pull"), "{out}");

    // A removal everywhere travels with the provider's sync too (SPEC §3.5): alice's tombstone
    // goes to the relay at her sync, and bob's sync drops his copy.
    let (third, _) = import_sample(&alice, dir.path(), "alice-third");
    ok(
        &alice,
        &["share", &third[..12], "--team", "core", "--allow-secrets"],
    );
    let (out, _) = ok(&bob, &["storage", "sync"]);
    assert!(out.contains("1 new session"), "{out}");
    ok(&alice, &["rm", &third[..12], "--everywhere"]);
    ok(&alice, &["storage", "sync"]);
    ok(&bob, &["storage", "sync"]);
    let (out, _) = ok(&bob, &["storage", "status"]);
    assert!(
        out.contains("(2 sessions)"),
        "the removed session is gone: {out}"
    );
    let (_, _, err) = tapes(&bob, &["show", &third[..12]]);
    assert!(!err.is_empty(), "bob can no longer open it");

    // An unshare reaches the relay as a revocation and is reported as one, not as a deposit.
    let (_, stderr) = ok(&alice, &["unshare", &second[..12], "--team", "core"]);
    assert!(
        stderr
            .contains("synced with the relay: 0 deposited, 1 share withdrawn, 0 sessions fetched"),
        "{stderr}"
    );
    ok(&alice, &["storage", "set-provider", "hybrid"]);
    ok(&alice, &["unshare", &session[..12], "--team", "core"]);
    let (out, _) = ok(&alice, &["storage", "sync"]);
    assert!(
        out.contains(&format!("unshared {} for team ", &session[..12]))
            && out.contains(" at the relay: it no longer serves it"),
        "{out}"
    );
    assert!(!out.contains("deposited"), "{out}");
    drop(relay);
}

/// A plain HTTP/1.1 GET on loopback: the status line, headers and body as text.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// How often `needle` occurs in a command's stdout and stderr together.
fn occurrences(stdout: &str, stderr: &str, needle: &str) -> usize {
    stdout.matches(needle).count() + stderr.matches(needle).count()
}

#[test]
fn a_refused_item_is_reported_once_and_the_rest_of_the_sync_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay-data");
    std::fs::create_dir_all(&data).unwrap();
    // One member per team and two new public sessions a month.
    std::fs::write(
        data.join("relay.toml"),
        "[default]\nmembers = 1\nsessions_per_month = 2\n",
    )
    .unwrap();
    let relay = start_relay(&data);
    let alice = person(dir.path(), "alice");
    ok(&alice, &["team", "create", "core"]);
    ok(
        &alice,
        &["relay", "register", "--team", "core", &relay.ticket],
    );
    ok(
        &alice,
        &[
            "storage",
            "configure",
            "--relay",
            &relay.ticket,
            "--no-sync-on-close",
            "--sync-interval",
            "1h",
        ],
    );
    let (one, _) = import_sample(&alice, dir.path(), "one");
    let (shared, _) = ok(
        &alice,
        &["share", &one[..12], "--public", "--allow-secrets"],
    );
    // The relay's ticket names its public page: the share says where it is read.
    let link = shared
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:") && w.ends_with(&format!("/s/{one}")))
        .unwrap_or_else(|| panic!("no page link in: {shared}"))
        .to_string();
    let (out, _) = ok(&alice, &["storage", "sync"]);
    assert!(out.contains(&format!("deposited {}", &one[..12])), "{out}");
    // The page serves it, and the link names the session wherever a session is asked for.
    let page = http_get(&link);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let (branched, _) = ok(&alice, &["branch", &link, "--local", "--no-track"]);
    assert!(
        branched.contains(&format!("branched {}", &one[..12])),
        "{branched}"
    );

    // Bob joins (request and answer files): the team now has more members than the relay
    // takes, so it refuses the new manifest. Alice shares two more sessions (the relay takes
    // one more this month) and unshares the first.
    let bob = person(dir.path(), "bob");
    let (code, _) = ok(&alice, &["team", "invite"]);
    let request = dir.path().join("bob.request");
    let answer = dir.path().join("bob.answer");
    ok(
        &bob,
        &["team", "join", code.trim(), "-o", request.to_str().unwrap()],
    );
    ok(
        &alice,
        &[
            "team",
            "accept",
            request.to_str().unwrap(),
            "-o",
            answer.to_str().unwrap(),
        ],
    );
    let (two, _) = import_sample(&alice, dir.path(), "two");
    let (three, _) = import_sample(&alice, dir.path(), "three");
    for id in [&two, &three] {
        ok(&alice, &["share", &id[..12], "--public", "--allow-secrets"]);
    }
    ok(&alice, &["unshare", &one[..12]]);

    let members_reason = "has 2 members and this relay allows 1 per team";
    let sessions_reason = "`sessions_per_month`";
    let (code, out, err) = tapes(&alice, &["storage", "sync"]);
    // Something was refused, so the exit status is 1; everything else went through.
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert_eq!(occurrences(&out, &err, members_reason), 1, "{out}\n{err}");
    assert_eq!(occurrences(&out, &err, sessions_reason), 1, "{out}\n{err}");
    assert!(err.contains("error: manifests of team"), "{err}");
    assert!(err.contains("did not take 2 items"), "{err}");
    // The unshare landed, and one of the two new shares.
    assert!(
        out.contains(&format!(
            "unshared {} for the public at the relay: it no longer serves it",
            &one[..12]
        )),
        "{out}"
    );
    let landed: Vec<&String> = [&two, &three]
        .into_iter()
        .filter(|id| out.contains(&format!("deposited {}", &id[..12])))
        .collect();
    assert_eq!(landed.len(), 1, "{out}");
    let landed = landed[0].clone();
    assert!(out.contains("2 synced, 1 pending push"), "{out}");

    // The next sync sends only what is still pending: nothing is deposited again, and each
    // refusal is said once more.
    let (code, out, err) = tapes(&alice, &["storage", "sync"]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(!out.contains("deposited"), "{out}");
    assert_eq!(occurrences(&out, &err, members_reason), 1, "{out}\n{err}");
    assert_eq!(occurrences(&out, &err, sessions_reason), 1, "{out}\n{err}");
    let (out, _) = ok(&alice, &["storage", "status"]);
    assert!(out.contains("2 synced, 1 pending push"), "{out}");
    assert!(out.contains("with errors"), "{out}");

    // A hybrid sync when a command exits: a warning naming each refusal once, and the
    // command itself succeeds.
    ok(&alice, &["storage", "configure", "--sync-on-close"]);
    let (code, out, err) = tapes(&alice, &["unshare", &landed[..12]]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("warning: the relay did not take 2 items"),
        "{err}"
    );
    assert_eq!(occurrences(&out, &err, members_reason), 1, "{out}\n{err}");
    assert_eq!(occurrences(&out, &err, sessions_reason), 1, "{out}\n{err}");
    drop(relay);
}
