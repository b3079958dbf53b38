//! Crash safety of the relay and of the store's pack merge (SPEC.md §6, issue 21 item 2):
//! `kill -9` at pseudo-random moments of
//! - a deposit: the member's `tapes sync <relay>` killed, or the `tapes relay` process killed
//!   under it (and started again at its address);
//! - the relay serving a member: `tapes relay` killed while a member's `tapes sync` fetches;
//! - a pack merge: `tapes bundle import` into a store that holds the most live packs, so that
//!   registering the import's pack merges the 16 smallest (`src/store/backend/sled_backend.rs`).
//!
//! After every kill: `tapes fsck` passes on every store involved (the relay's own store too),
//! every session present is whole and at a head its owner really had (no partial session),
//! every deposit of a sync that exited 0 is served by the relay after it restarts (a member
//! fetches it), every object the store held before a merge is still there, and the next run
//! converges (a second sync or import finds nothing left to do).
//!
//! The `#[test]`s run a few kills each (CI); the `#[ignore]`d `_long` ones run
//! `TAPES_CRASH_OPS_KILLS` (at least 50) kills per loop, from `scripts/torture`; the merge loop
//! counts only the kills that land while the merge runs, and stops at 4x as many kills.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tapes::protocol::{
    ContentBlock, Node, NodeBody, NodeId, NodeMeta, Role, SessionId, StoredObject,
};
use tapes::session::sample::Rng;
use tapes::store::Store;

use super::crash_ops::{fsck_clean, pick, sessions, transcripts, whole_or_absent};
use super::util::{copy_dir, ok, plain_bundle, relay_team, std_tapes as tapes, Relay};

/// Kills per loop in the CI run.
const SHORT: usize = 3;

/// Kills per loop in the long run: `TAPES_CRASH_OPS_KILLS`, at least 50.
fn long() -> usize {
    std::env::var("TAPES_CRASH_OPS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .max(50)
}

/// Runs `tapes sync relay` in `home` in the background.
fn spawn_sync(home: &Path) -> Child {
    tapes(home)
        .args(["--timeout", "20s", "sync", "relay"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits up to `delay` for `child`; `Some(success)` if it ended first, else `None` (still
/// running).
fn wait_up_to(child: &mut Child, delay: Duration) -> Option<bool> {
    let started = Instant::now();
    while started.elapsed() < delay {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.success());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.try_wait().unwrap().map(|s| s.success())
}

/// A window that a run finished inside shrinks to its length, so later kills land inside.
fn shrink(window: &mut Duration, took: Duration) {
    *window = took.mul_f64(0.9).max(Duration::from_millis(40));
}

/// Alice (owner of team `core`, registered on a relay) and bob (a member), both with the
/// relay as remote `relay`.
struct Team {
    relay: Relay,
    alice: PathBuf,
    bob: PathBuf,
}

fn team(tmp: &Path) -> Team {
    // The long deposit loop adds 3 sessions a round: past the default monthly quota (100).
    let data = tmp.join("relay-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("relay.toml"),
        "[default]\nsessions_per_month = 100000\n",
    )
    .unwrap();
    let relay = Relay::start(&data);
    let (alice, bob) = relay_team(tmp, &relay);
    Team { relay, alice, bob }
}

/// Alice's agent writes `count` more sessions; she imports them and shares all of hers with
/// the team.
fn alice_writes(alice: &Path, agent: &Path, from: usize, count: usize) {
    transcripts(agent, 0xa11ce, from, count, 60);
    ok(alice, &["import", agent.to_str().unwrap()]);
    let ids: Vec<String> = sessions(alice).keys().map(|id| id.to_hex()).collect();
    let mut args = vec!["share", "--team", "core", "--allow-secrets"];
    args.extend(ids.iter().map(String::as_str));
    ok(alice, &args);
}

/// The relay's own store after a kill (the relay is down: nobody holds it). It holds sealed
/// segments, which `tapes fsck` cannot read: every object must be a whole blob (its id is its
/// hash) or a whole plain object. That every deposit is whole is checked by fetching it.
fn relay_fsck(relay: &Relay, after: &str) {
    let store = Store::open(&relay.data.join("store"))
        .unwrap_or_else(|e| panic!("the relay's store after {after} does not open: {e}"));
    for entry in store.storage().objects() {
        let (id, bytes) = entry.unwrap_or_else(|e| panic!("the relay's store after {after}: {e}"));
        let mut hash = blake3::Hasher::new_derive_key("tapes 2026-11 relay blob v1");
        hash.update(&bytes);
        let blob = NodeId(*hash.finalize().as_bytes());
        assert!(
            blob == id || StoredObject::verify(&id, &bytes).is_ok(),
            "the relay's store after {after}: object {} is damaged",
            id.short()
        );
    }
}

fn deposit_killed(wanted: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let Team {
        mut relay,
        alice,
        bob,
    } = team(tmp.path());
    let agent = tmp.path().join("alice-agent");
    let mut rng = Rng::new(0xde90);
    let mut acknowledged: BTreeMap<SessionId, (NodeId, u64)> = BTreeMap::new();
    let (mut client_kills, mut relay_kills, mut round, mut acks) = (0, 0, 0, 0);
    let mut window = Duration::from_secs(3);
    let mut relay_window = Duration::from_secs(3);
    while client_kills < wanted || relay_kills < wanted {
        alice_writes(&alice, &agent, round * 3, 3);
        round += 1;
        let mine = sessions(&alice);
        let kill_relay = relay_kills < wanted && (client_kills >= wanted || rng.below(2) == 1);
        let mut sync = spawn_sync(&alice);
        let started = Instant::now();
        let delay = if kill_relay {
            pick(&mut rng, 20, relay_window.as_millis() as u64)
        } else {
            pick(&mut rng, 20, window.as_millis() as u64)
        };
        match wait_up_to(&mut sync, delay) {
            Some(success) => {
                // It printed its result: everything it deposited is acknowledged.
                assert!(success, "a sync to the relay failed without a kill");
                acknowledged.extend(mine.clone());
                acks += 1;
                shrink(
                    if kill_relay {
                        &mut relay_window
                    } else {
                        &mut window
                    },
                    started.elapsed(),
                );
            }
            None if kill_relay => {
                relay.kill();
                relay_kills += 1;
                let _ = sync.wait();
                relay_fsck(&relay, "a kill of the relay mid-deposit");
                relay.restart();
            }
            None => {
                let _ = sync.kill();
                let _ = sync.wait();
                client_kills += 1;
            }
        }
        fsck_clean(&alice, "a kill during a deposit");
        assert_eq!(sessions(&alice), mine, "alice's store after a kill");
        // What the relay acknowledged, it serves: bob fetches it whole.
        ok(&bob, &["sync", "relay"]);
        fsck_clean(&bob, "a fetch from the relay after a kill");
        let got = sessions(&bob);
        whole_or_absent(&got, &mine, "a kill during a deposit");
        for (id, head) in &acknowledged {
            assert_eq!(
                got.get(id),
                Some(head),
                "acknowledged deposit of {} lost at the relay",
                id.short()
            );
        }
    }
    // The next sync converges: bob then has every session of alice's, and another sync has
    // nothing left to do.
    ok(&alice, &["sync", "relay"]);
    ok(&bob, &["sync", "relay"]);
    assert_eq!(sessions(&bob), sessions(&alice));
    let again = ok(&bob, &["sync", "relay"]);
    assert!(again.contains("up to date"), "{again}");
    relay.kill();
    relay_fsck(&relay, "the last sync");
    println!(
        "relay deposit: {client_kills} client kills, {relay_kills} relay kills, {acks} syncs acknowledged ({} sessions), none lost",
        acknowledged.len()
    );
}

#[test]
fn relay_deposit_killed_on_either_side_loses_no_acknowledged_deposit() {
    deposit_killed(SHORT);
}

#[test]
#[ignore = "long run (>= 50 kills per side): scripts/torture"]
fn relay_deposit_killed_long() {
    deposit_killed(long());
}

fn serving_killed(wanted: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let Team {
        mut relay,
        alice,
        bob,
    } = team(tmp.path());
    alice_writes(&alice, &tmp.path().join("alice-agent"), 0, 30);
    ok(&alice, &["sync", "relay"]);
    let source = sessions(&alice);
    let mut rng = Rng::new(0x5e7e);
    let (mut kills, mut machines) = (0, 0);
    let mut window = Duration::from_secs(3);
    while kills < wanted {
        // Another machine of bob's, with an empty store, fetches everything.
        machines += 1;
        let machine = tmp.path().join(format!("bob{machines}"));
        copy_dir(&bob, &machine);
        loop {
            let mut sync = spawn_sync(&machine);
            let started = Instant::now();
            let delay = pick(&mut rng, 20, window.as_millis() as u64);
            match wait_up_to(&mut sync, delay) {
                Some(_) => shrink(&mut window, started.elapsed()),
                None => {
                    relay.kill();
                    kills += 1;
                    let _ = sync.wait();
                    relay_fsck(&relay, "a kill of the relay while it served");
                    relay.restart();
                }
            }
            fsck_clean(&machine, "a kill of the relay while it served");
            let got = sessions(&machine);
            whole_or_absent(&got, &source, "a kill of the relay while it served");
            if got.len() == source.len() || kills >= wanted {
                break;
            }
        }
        // The next sync converges; the one after it has nothing left to do.
        ok(&machine, &["sync", "relay"]);
        assert_eq!(sessions(&machine), source);
        let again = ok(&machine, &["sync", "relay"]);
        assert!(again.contains("up to date"), "{again}");
    }
    println!(
        "relay serving: {kills} relay kills over {machines} fetching machines; every store clean, every session whole"
    );
}

#[test]
fn relay_killed_while_serving_leaves_whole_sessions_and_converges() {
    serving_killed(SHORT);
}

#[test]
#[ignore = "long run (>= 50 kills): scripts/torture"]
fn relay_killed_while_serving_long() {
    serving_killed(long());
}

/// The store's bound on live packs (`MAX_PACKS` in `sled_backend.rs`): one more merges.
const MAX_PACKS: usize = 32;
/// Objects per filler pack: a batch of this many is written as a pack.
const PACK_OBJECTS: usize = 4096;

fn pack_files(store: &Path) -> (usize, usize) {
    let (mut packs, mut tmp) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(store.join("packs")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pack") {
                packs += 1;
            } else if name.ends_with(".tmp") {
                tmp += 1;
            }
        }
    }
    (packs, tmp)
}

/// A home whose store holds [`MAX_PACKS`] packs of filler objects (roots, no session: what a
/// store accumulates from bulk writes), and the ids of those objects.
fn full_of_packs(home: &Path) -> Vec<NodeId> {
    ok(home, &["init", "--name", "packs"]);
    let store = Store::open(&home.join("store")).unwrap();
    let mut ids = Vec::new();
    for pack in 0..MAX_PACKS {
        let objects: Vec<StoredObject> = (0..PACK_OBJECTS)
            .map(|i| {
                StoredObject::encode(&Node {
                    body: NodeBody {
                        parent: None,
                        role: Role::User,
                        model: String::new(),
                        blocks: vec![ContentBlock::text(format!(
                            "filler {pack}/{i}: what an earlier bulk write left"
                        ))],
                    },
                    meta: NodeMeta::default(),
                })
            })
            .collect();
        ids.extend(objects.iter().map(|o| o.id));
        store.storage().put_objects(&objects).unwrap();
        store.storage().flush().unwrap();
    }
    drop(store);
    assert_eq!(pack_files(&home.join("store")).0, MAX_PACKS);
    ids
}

fn merge_killed(wanted: usize) {
    let tmp = tempfile::tempdir().unwrap();
    // The bundle: sessions whose import writes one pack of its own.
    let author = tmp.path().join("author");
    ok(&author, &["init", "--name", "author"]);
    transcripts(&tmp.path().join("agent"), 0x3e6e, 0, 4, 1100);
    ok(
        &author,
        &["import", tmp.path().join("agent").to_str().unwrap()],
    );
    let bundle = tmp.path().join("all.tape");
    plain_bundle(&author, &bundle);
    let source = sessions(&author);
    let template = tmp.path().join("template");
    let fillers = full_of_packs(&template);

    // One uncut import: it merges, and how long it takes sets the window.
    let probe = tmp.path().join("probe");
    copy_dir(&template, &probe);
    let started = Instant::now();
    ok(&probe, &["bundle", "import", bundle.to_str().unwrap()]);
    let full = started.elapsed();
    let (after, _) = pack_files(&probe.join("store"));
    assert!(
        after < MAX_PACKS,
        "the import merged the smallest packs ({after} packs left)"
    );

    let mut rng = Rng::new(0x3e6e);
    let (mut kills, mut in_merge, mut epochs) = (0, 0, 0);
    // Where the merge runs, as delays after the start: narrowed by where each kill landed
    // (before the merge began, or after it ended).
    let (mut lo, mut hi) = (0u64, full.as_millis() as u64 * 11 / 10);
    // Kills while the merge ran (the merged pack being written, or written and the victims not
    // yet removed); the loop goes on until `wanted` of them landed (or 8x as many kills).
    while in_merge < wanted && kills < wanted * 8 {
        epochs += 1;
        let home = tmp.path().join(format!("store{epochs}"));
        copy_dir(&template, &home);
        let mut child = tapes(&home)
            .args(["bundle", "import", bundle.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = pick(&mut rng, lo, hi);
        if wait_up_to(&mut child, delay).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            kills += 1;
            let (packs, partial) = pack_files(&home.join("store"));
            // 33 packs and a partial one: the merged pack being written; 34: written, the
            // victims not yet removed; between 18 and 32: victims being removed.
            let merged = MAX_PACKS + 2 - 16;
            if (packs == MAX_PACKS + 1 && partial > 0)
                || packs == MAX_PACKS + 2
                || (packs > merged && packs < MAX_PACKS)
            {
                in_merge += 1;
            } else if packs == merged {
                hi = delay.as_millis() as u64 + 20;
            } else {
                lo = (delay.as_millis() as u64).saturating_sub(20);
            }
        } else {
            let _ = child.wait();
            hi = delay.as_millis() as u64;
        }
        if hi < lo + 60 {
            hi = lo + 60;
        }
        fsck_clean(&home, "a kill during a pack merge");
        let got = sessions(&home);
        assert!(
            got.is_empty() || got == source,
            "a killed import left {} of {} sessions",
            got.len(),
            source.len()
        );
        {
            let store = Store::open(&home.join("store")).unwrap();
            for id in &fillers {
                assert!(
                    store.storage().contains_object(id).unwrap(),
                    "object {} lost by a killed merge",
                    id.short()
                );
            }
        }
        // The next run converges: the import completes, the store has at most the bound of
        // packs, and importing again adds nothing.
        ok(&home, &["bundle", "import", bundle.to_str().unwrap()]);
        assert_eq!(sessions(&home), source);
        assert!(pack_files(&home.join("store")).0 <= MAX_PACKS);
        fsck_clean(&home, "the import after a killed merge");
        std::fs::remove_dir_all(&home).unwrap();
    }
    assert!(
        in_merge > 0,
        "no kill landed during a merge ({kills} kills)"
    );
    println!(
        "pack merge: {kills} kills, {in_merge} of them during the merge; every object kept, every store clean"
    );
}

#[test]
fn pack_merge_killed_keeps_every_object() {
    merge_killed(SHORT);
}

#[test]
#[ignore = "long run (>= 50 kills during the merge): scripts/torture"]
fn pack_merge_killed_long() {
    merge_killed(long());
}
