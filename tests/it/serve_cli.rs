//! The replication commands through the real binary, one `TAPES_HOME` per person, on
//! 127.0.0.1 without mDNS: `tapes serve`, `tapes team join <code>` against it, `tapes remote
//! add` with the ticket, `tapes fetch`, `tapes sync`, and the refusal a stranger gets.

use std::path::{Path, PathBuf};

use super::util::{ok, output as tapes, serve};

fn person(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    ok(&home, &["init", "--name", name]);
    home
}

fn import_sample(home: &Path, dir: &Path, name: &str) -> String {
    let file = dir.join(format!("{name}.jsonl"));
    let seed = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let session = tapes::session::sample::session(seed, 0, Default::default());
    std::fs::write(&file, tapes::session::sample::claude_jsonl(&session)).unwrap();
    ok(home, &["import", file.to_str().unwrap()]);
    let list = ok(home, &["sessions", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&list).unwrap();
    value[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn join_share_fetch_and_sync_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let alice = person(dir.path(), "alice");
    let bob = person(dir.path(), "bob");
    let stranger = person(dir.path(), "eve");
    ok(&alice, &["team", "create", "core"]);
    let server = serve(&alice, "127.0.0.1:0");
    assert!(
        ok(&alice, &["id"]).contains(&server.ticket),
        "`tapes id` shows the ticket"
    );

    // The invite carries serve's address, so joining completes over the network.
    let code = ok(&alice, &["team", "invite"]).trim().to_string();
    let joined = ok(&bob, &["team", "join", &code]);
    assert!(joined.contains("joined team \"core\""), "{joined}");

    let session = import_sample(&alice, dir.path(), "alice");
    ok(
        &alice,
        &["share", &session[..12], "--team", "core", "--allow-secrets"],
    );
    ok(&bob, &["remote", "add", "alice", &server.ticket]);
    let fetched = ok(&bob, &["fetch", "alice"]);
    assert!(fetched.contains("alice: 1 new session,"), "{fetched}");
    let listed = ok(&bob, &["sessions"]);
    assert!(listed.contains(&session[..8]), "{listed}");
    let again = ok(&bob, &["fetch"]);
    assert!(again.contains("up to date (1 round trip"), "{again}");

    // Bob shares his own session and syncs: alice's node receives it.
    let bobs = import_sample(&bob, dir.path(), "bobby");
    ok(
        &bob,
        &["share", &bobs[..12], "--team", "core", "--allow-secrets"],
    );
    let synced = ok(&bob, &["sync", "alice"]);
    assert!(
        synced.contains(&format!("pushed {}", &bobs[..8])),
        "{synced}"
    );
    drop(server);
    let on_alice = ok(&alice, &["sessions"]);
    assert!(on_alice.contains(&bobs[..8]), "{on_alice}");

    // A stranger is refused with a reason.
    let server = serve(&alice, "127.0.0.1:0");
    ok(&stranger, &["remote", "add", "alice", &server.ticket]);
    let (code, _, stderr) = tapes(&stranger, &["fetch"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("shares nothing with you"), "{stderr}");
}

#[test]
fn remote_add_refuses_a_malformed_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let home = person(dir.path(), "alice");
    let id = ok(&home, &["id"]);
    let node = id
        .lines()
        .find_map(|l| l.strip_prefix("node id: "))
        .unwrap()
        .to_string();
    let bad = format!("{node}@nowhere");
    let (code, _, stderr) = tapes(&home, &["remote", "add", "bob", &bad]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a host:port address"), "{stderr}");
    let (code, stdout, _) = tapes(&home, &["remote", "list"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("no remotes"), "{stdout}");
}
