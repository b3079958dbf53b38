//! Crash safety beyond import (SPEC.md §6): `kill -9` at pseudo-random moments of a fetch (the
//! fetching `tapes fetch`, and the answering `tapes serve`), a push (`tapes sync`), a bundle
//! import and a search index rebuild, through the real binary. After every kill: `tapes fsck`
//! passes on every store involved, every session present is whole and at a head its source
//! really had (no partial session), every push that printed success is present at the peer,
//! and the next run converges (a fetch then finds nothing new, nothing is duplicated).
//!
//! Kills per scenario: `TAPES_CRASH_OPS_KILLS` (default 8, the CI run); `scripts/torture` asks
//! for 50. A kill that comes after the process already finished is not counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapes::protocol::{NodeId, SessionId};
use tapes::session::sample::{self, Rng, Shape};
use tapes::store::Store;

/// A delay between `lo` and `hi` milliseconds.
pub(super) fn pick(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + rng.below(hi.max(lo + 1) - lo))
}

fn kills_wanted() -> usize {
    std::env::var("TAPES_CRASH_OPS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

use super::util::{ok, plain_bundle, std_tapes as tapes};

/// Every session of the store in `home`: head and message count. The store is opened in this
/// process (through its holder if one runs) and closed again before returning.
pub(super) fn sessions(home: &Path) -> BTreeMap<SessionId, (NodeId, u64)> {
    let store = Store::open(&home.join("store")).unwrap();
    store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|(id, record)| (id, (record.head, record.summary.messages)))
        .collect()
}

pub(super) fn fsck_clean(home: &Path, after: &str) {
    let out = tapes(home).arg("fsck").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l.starts_with("ok: ")),
        "fsck of {} after {after}: {}\n{stdout}{}",
        home.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every session of `got` is one of `source`'s, whole, at the source's head.
pub(super) fn whole_or_absent(
    got: &BTreeMap<SessionId, (NodeId, u64)>,
    source: &BTreeMap<SessionId, (NodeId, u64)>,
    after: &str,
) {
    for (id, have) in got {
        if let Some(want) = source.get(id) {
            assert_eq!(have, want, "session {} after {after}", id.short());
        }
    }
}

/// Starts `cmd`, kills it with SIGKILL after a random delay up to `*window`, and says whether
/// the kill landed while it ran. A run that finished first shrinks the window to its duration;
/// a kill that landed widens it.
fn kill_during(mut cmd: Command, rng: &mut Rng, window: &mut Duration) -> bool {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let delay = pick(rng, 20, window.as_millis() as u64);
    while started.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            *window = started
                .elapsed()
                .mul_f64(0.9)
                .max(Duration::from_millis(40));
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let landed = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    if landed {
        // Kills that keep landing widen the window, so that a run slower than it (a loaded
        // machine, a server still busy with the killed clients' streams) gets to finish:
        // without this a loop that waits for one uncut run could kill every run for ever.
        *window = window.mul_f64(1.25).min(Duration::from_secs(30));
    }
    landed
}

use super::util::{serve, Serve};

/// The port a ticket's first address names (`<id>@127.0.0.1:<port>…`).
fn port_of(ticket: &str) -> u16 {
    let at = ticket
        .find("127.0.0.1:")
        .expect("a loopback address in the ticket")
        + 10;
    ticket[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Writes `count` sample transcripts (seed `seed`) into `dir`.
pub(super) fn transcripts(dir: &Path, seed: u64, from: usize, count: usize, rounds: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in from..from + count {
        let session = sample::session(
            seed,
            i,
            Shape {
                tool_rounds: rounds,
                ..Shape::default()
            },
        );
        std::fs::write(
            dir.join(format!("{}.jsonl", session.source_id)),
            sample::claude_jsonl(&session),
        )
        .unwrap();
    }
}

fn ids(home: &Path) -> Vec<String> {
    sessions(home).keys().map(|id| id.to_hex()).collect()
}

/// Alice with a team `core`, `count` sessions shared with it, serving on loopback.
fn alice(tmp: &Path, count: usize) -> (PathBuf, Serve) {
    let alice = tmp.join("alice");
    ok(&alice, &["init", "--name", "alice"]);
    ok(&alice, &["team", "create", "core"]);
    transcripts(&tmp.join("alice-agent"), 0xa11ce, 0, count, 60);
    ok(
        &alice,
        &["import", tmp.join("alice-agent").to_str().unwrap()],
    );
    let mut args = vec!["share", "--team", "core", "--allow-secrets"];
    let list = ids(&alice);
    args.extend(list.iter().map(String::as_str));
    ok(&alice, &args);
    let server = serve(&alice, "127.0.0.1:0");
    (alice, server)
}

/// A new teammate `name` of alice's team, with alice as remote `alice`.
fn teammate(tmp: &Path, alice: &Path, ticket: &str, name: &str) -> PathBuf {
    let home = tmp.join(name);
    ok(&home, &["init", "--name", name]);
    let code = ok(alice, &["team", "invite"]).trim().to_string();
    ok(&home, &["team", "join", &code]);
    ok(&home, &["remote", "add", "alice", ticket]);
    home
}

#[test]
fn fetch_killed_on_either_side_leaves_whole_sessions_and_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, mut server) = alice(tmp.path(), 30);
    let bind = format!("127.0.0.1:{}", port_of(&server.ticket));
    let ticket = server.ticket.clone();
    let source = sessions(&alice);
    let mut rng = Rng::new(0xfe7c);
    let wanted = kills_wanted();
    let (mut client_kills, mut server_kills, mut epochs) = (0, 0, 0);
    let mut window = Duration::from_secs(3);
    let mut server_window = Duration::from_secs(3);
    while client_kills < wanted || server_kills < wanted {
        epochs += 1;
        let bob = teammate(tmp.path(), &alice, &ticket, &format!("bob{epochs}"));
        loop {
            let kill_server =
                server_kills < wanted && (client_kills >= wanted || rng.below(2) == 1);
            if kill_server {
                // The fetch runs to its end or its error; the server dies under it.
                let mut fetch = tapes(&bob)
                    .args(["--timeout", "20s", "fetch", "alice"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let started = Instant::now();
                let delay = pick(&mut rng, 20, server_window.as_millis() as u64);
                while started.elapsed() < delay && fetch.try_wait().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if fetch.try_wait().unwrap().is_none() {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    server_kills += 1;
                    let _ = fetch.wait();
                    fsck_clean(&alice, "a kill of serve");
                    assert_eq!(
                        sessions(&alice),
                        source,
                        "alice's store after a kill of serve"
                    );
                    server = serve(&alice, &bind);
                    assert_eq!(server.ticket, ticket, "serve came back at the same address");
                } else {
                    server_window = started
                        .elapsed()
                        .mul_f64(0.9)
                        .max(Duration::from_millis(40));
                }
            } else if client_kills >= wanted {
                // Enough kills: this client's fetch runs to its end.
                ok(&bob, &["fetch", "alice"]);
            } else {
                let mut cmd = tapes(&bob);
                cmd.args(["fetch", "alice"]);
                if kill_during(cmd, &mut rng, &mut window) {
                    client_kills += 1;
                }
            }
            fsck_clean(&bob, "a kill during fetch");
            let got = sessions(&bob);
            whole_or_absent(&got, &source, "a kill during fetch");
            if got.len() == source.len() {
                break;
            }
        }
        // The next fetch converges (what a kill cut short, e.g. share records after their
        // sessions); the one after it has nothing left to do.
        ok(&bob, &["fetch", "alice"]);
        let again = ok(&bob, &["fetch", "alice"]);
        assert!(again.contains("up to date"), "{again}");
        assert_eq!(sessions(&bob), source);
        if client_kills >= wanted && server_kills >= wanted {
            break;
        }
    }
    println!(
        "fetch: {client_kills} client kills, {server_kills} server kills over {epochs} fresh clients; every store clean, every session whole"
    );
}

#[test]
fn push_killed_never_loses_an_acknowledged_push() {
    let tmp = tempfile::tempdir().unwrap();
    let (alice, server) = alice(tmp.path(), 2);
    let bob = teammate(tmp.path(), &alice, &server.ticket, "bob");
    let agent = tmp.path().join("bob-agent");
    let alices = sessions(&alice);
    let mut rng = Rng::new(0x9054);
    let wanted = kills_wanted();
    let mut acknowledged: BTreeMap<SessionId, (NodeId, u64)> = BTreeMap::new();
    let (mut kills, mut round) = (0, 0);
    let mut window = Duration::from_secs(3);
    while kills < wanted {
        // Bob's agent makes three more sessions; he shares them and syncs.
        transcripts(&agent, 0xb0b, round * 3, 3, 40);
        round += 1;
        ok(&bob, &["import", agent.to_str().unwrap()]);
        let mine: BTreeMap<SessionId, (NodeId, u64)> = sessions(&bob)
            .into_iter()
            .filter(|(id, _)| !alices.contains_key(id))
            .collect();
        let mut args = vec![
            "share".to_string(),
            "--team".into(),
            "core".into(),
            "--allow-secrets".into(),
        ];
        args.extend(mine.keys().map(|id| id.to_hex()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&bob, &args);
        let mut cmd = tapes(&bob);
        cmd.args(["sync", "alice"]);
        let started = Instant::now();
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = pick(&mut rng, 20, window.as_millis() as u64);
        while started.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        match child.try_wait().unwrap() {
            Some(status) => {
                // It printed its result: what it pushed is acknowledged.
                assert!(status.success(), "sync failed without a kill");
                acknowledged.extend(mine.clone());
                window = started
                    .elapsed()
                    .mul_f64(0.9)
                    .max(Duration::from_millis(40));
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                kills += 1;
            }
        }
        fsck_clean(&alice, "a kill during push");
        fsck_clean(&bob, "a kill during push");
        let at_alice = sessions(&alice);
        for (id, head) in &acknowledged {
            assert_eq!(
                at_alice.get(id),
                Some(head),
                "acknowledged push of {} lost",
                id.short()
            );
        }
        whole_or_absent(&at_alice, &sessions(&bob), "a kill during push");
    }
    // The next sync converges: every session of bob's at alice, whole.
    ok(&bob, &["sync", "alice"]);
    let at_alice = sessions(&alice);
    for (id, head) in sessions(&bob) {
        if !acknowledged.contains_key(&id) && !at_alice.contains_key(&id) {
            continue;
        }
        assert_eq!(at_alice.get(&id), Some(&head));
    }
    println!(
        "push: {kills} kills, {} sessions acknowledged, none lost",
        acknowledged.len()
    );
    drop(server);
}

#[test]
fn bundle_import_killed_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = tmp.path().join("alice");
    ok(&alice, &["init", "--name", "alice"]);
    transcripts(&tmp.path().join("agent"), 0xb0d1e, 0, 30, 60);
    ok(
        &alice,
        &["import", tmp.path().join("agent").to_str().unwrap()],
    );
    let bundle = tmp.path().join("all.tape");
    plain_bundle(&alice, &bundle);
    let source = sessions(&alice);
    let mut rng = Rng::new(0xb0d1);
    let wanted = kills_wanted();
    let (mut kills, mut epochs) = (0, 0);
    let mut window = Duration::from_secs(3);
    while kills < wanted {
        epochs += 1;
        let bob = tmp.path().join(format!("bob{epochs}"));
        ok(&bob, &["init", "--name", "bob"]);
        loop {
            let mut cmd = tapes(&bob);
            cmd.args(["bundle", "import", bundle.to_str().unwrap()]);
            if kill_during(cmd, &mut rng, &mut window) {
                kills += 1;
            }
            fsck_clean(&bob, "a kill during bundle import");
            let got = sessions(&bob);
            assert!(
                got.is_empty() || got == source,
                "a killed bundle import left {} of {} sessions",
                got.len(),
                source.len()
            );
            if !got.is_empty() {
                break;
            }
        }
        let again = ok(&bob, &["bundle", "import", bundle.to_str().unwrap()]);
        assert_eq!(sessions(&bob), source, "{again}");
    }
    println!("bundle import: {kills} kills over {epochs} stores; each all or nothing");
}

#[test]
fn index_rebuild_killed_leaves_search_working() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    ok(&home, &["init", "--name", "x"]);
    transcripts(&tmp.path().join("agent"), 0x1d3, 0, 30, 60);
    ok(
        &home,
        &["import", tmp.path().join("agent").to_str().unwrap()],
    );
    let expected = ok(&home, &["search", "--reindex", "--json", "the"]);
    let mut rng = Rng::new(0x1d3);
    let wanted = kills_wanted();
    let (mut kills, mut tries) = (0, 0);
    let mut window = Duration::from_secs(3);
    while kills < wanted && tries < wanted * 10 {
        tries += 1;
        let mut cmd = tapes(&home);
        cmd.args(["search", "--reindex", "the"]);
        if kill_during(cmd, &mut rng, &mut window) {
            kills += 1;
        }
        let after = ok(&home, &["search", "--json", "the"]);
        assert_eq!(after, expected, "search after a killed rebuild");
        fsck_clean(&home, "a kill during index rebuild");
    }
    assert!(kills > 0, "no kill landed during a rebuild");
    println!("index rebuild: {kills} kills; search answers the same after each");
}
