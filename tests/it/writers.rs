//! Many writers at once (SPEC.md §3.3, §6.1, §10): 32 machines of one person push the same
//! session to a teammate's `tapes serve` at once, in rounds, and a checker verifies that the
//! recorded history is linearizable as a compare-and-swap register (every acknowledged head
//! extends the one acknowledged before it, at most one push wins per base, a push acknowledged
//! before another began comes first, every loser got the conflict); and 8 `tapes import`
//! processes and 8 readers work on one store at once: readers never fail and never see the
//! count of sessions go down, every import succeeds, no session is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tapes::identity::Identity;
use tapes::peer::client::connect;
use tapes::peer::endpoint::{bind, EndpointConfig};
use tapes::peer::PeerError;
use tapes::protocol::{NodeId, SessionId, StoredObject};
use tapes::session::sample::{self, Shape};
use tapes::store::Store;
use tapes::testing::{add_member, member, Node as TestNode};

const WRITERS: usize = 32;
const ROUNDS: usize = 3;

/// One push attempt as the checker sees it (also `writers_procs`' processes).
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub(super) writer: usize,
    pub(super) base: NodeId,
    pub(super) head: NodeId,
    /// Before the push began (for a process: before it was started).
    pub(super) invoked: Instant,
    /// After it was answered (for a process: after it exited).
    pub(super) answered: Instant,
    /// `Ok` when acknowledged; the error's text otherwise.
    pub(super) result: Result<(), String>,
}

/// Checks a history of compare-and-swap pushes against the register's final value and chain;
/// every failure must be the conflict with `hint` (what its message tells the user to run).
/// Returns the acknowledged heads in their linear order.
pub(super) fn check_linearizable(
    start: NodeId,
    ops: &[Op],
    final_head: NodeId,
    hint: &str,
) -> Vec<NodeId> {
    // Every failure is the conflict, with its hint.
    for op in ops {
        if let Err(e) = &op.result {
            assert!(
                e.contains("conflict:") && e.contains(hint),
                "writer {} got {e} instead of the conflict",
                op.writer
            );
        }
    }
    let wins: Vec<&Op> = ops.iter().filter(|o| o.result.is_ok()).collect();
    // At most one win per base.
    let mut by_base: HashMap<NodeId, &Op> = HashMap::new();
    for op in &wins {
        if let Some(other) = by_base.insert(op.base, op) {
            panic!(
                "two pushes from base {} both won: writers {} and {}",
                op.base.short(),
                other.writer,
                op.writer
            );
        }
    }
    // The wins chain from the start: each one's base is the previous one's head.
    let mut order = Vec::new();
    let mut at = start;
    while let Some(op) = by_base.get(&at) {
        order.push(*op);
        at = op.head;
    }
    assert_eq!(
        order.len(),
        wins.len(),
        "{} acknowledged pushes do not extend the history from {}",
        wins.len() - order.len(),
        start.short()
    );
    assert_eq!(
        at, final_head,
        "the last acknowledged head is the session's head"
    );
    // Real time: a win acknowledged before another was invoked comes first.
    for (i, earlier) in order.iter().enumerate() {
        for later in &order[..i] {
            assert!(
                !(earlier.answered < later.invoked),
                "writer {}'s push was acknowledged before writer {}'s began, but is ordered after it",
                earlier.writer,
                later.writer
            );
        }
    }
    order.iter().map(|o| o.head).collect()
}

/// A second machine of `owner`: a fresh store and endpoint.
async fn machine(owner: &Identity, dir: &Path) -> (Arc<Store>, iroh::Endpoint) {
    let store = Arc::new(Store::open(&dir.join("store")).unwrap());
    store.set_local_owner(&member(owner)).unwrap();
    let endpoint = bind(owner, &EndpointConfig::loopback()).await.unwrap();
    (store, endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_machines_push_at_once_and_the_history_is_linearizable() {
    let bob = TestNode::new("bob").await.unwrap();
    let laptop = TestNode::new("alice").await.unwrap();
    let team = tapes::team::create(&bob.store, &bob.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    add_member(
        &bob.store,
        &bob.identity,
        &laptop.store,
        &laptop.identity,
        &team,
    )
    .unwrap();
    let id: SessionId = laptop.import(21, 2).unwrap();
    laptop
        .dial(&bob, "bob")
        .await
        .unwrap()
        .push(&laptop.store, &laptop.identity, id, None)
        .await
        .unwrap();
    let start = bob.store.session(&id).unwrap().unwrap().head;
    let owner = laptop.identity.clone();
    let bob_addr = bob.addr();

    let tmp = tempfile::tempdir().unwrap();
    let mut ops: Vec<Op> = Vec::new();
    for round in 0..ROUNDS {
        // Round 0: every machine pulls first and then all push from that one base. Later
        // rounds: pull, continue and push with no pause, so bases mix as they would.
        let barrier = Arc::new(tokio::sync::Barrier::new(if round == 0 {
            WRITERS
        } else {
            1
        }));
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..WRITERS {
            let dir = tmp.path().join(format!("r{round}-w{writer}"));
            let (owner, addr, barrier) = (owner.clone(), bob_addr.clone(), barrier.clone());
            tasks.spawn(async move {
                let (store, endpoint) = machine(&owner, &dir).await;
                let conn = connect(&endpoint, &addr, "bob").await.unwrap();
                conn.pull(&store, &owner, id).await.unwrap();
                let base = store.session(&id).unwrap().unwrap().head;
                sample::continue_session(
                    &store,
                    &id,
                    &[format!("round {round}, machine {writer} carries on")],
                )
                .unwrap();
                let head = store.session(&id).unwrap().unwrap().head;
                barrier.wait().await;
                let invoked = Instant::now();
                let result = conn.push(&store, &owner, id, Some(base)).await;
                let answered = Instant::now();
                conn.close();
                endpoint.close().await;
                let result = match result {
                    Ok(_) => Ok(()),
                    Err(e @ PeerError::Conflict { .. }) => Err(e.to_string()),
                    Err(e) => panic!("machine {writer} failed otherwise: {e}"),
                };
                Op {
                    writer,
                    base,
                    head,
                    invoked,
                    answered,
                    result,
                }
            });
        }
        let mut round_ops = Vec::new();
        while let Some(op) = tasks.join_next().await {
            round_ops.push(op.unwrap());
        }
        if round == 0 {
            let wins = round_ops.iter().filter(|o| o.result.is_ok()).count();
            assert_eq!(
                wins, 1,
                "exactly one of {WRITERS} pushes from one base wins"
            );
            assert!(round_ops.iter().all(|o| o.base == start));
        }
        ops.extend(round_ops);
    }

    let final_head = bob.store.session(&id).unwrap().unwrap().head;
    let acknowledged = check_linearizable(start, &ops, final_head, "tapes pull");
    // Every acknowledged head is in the session's history, in that order, with its node.
    let mut chain = Vec::new();
    let mut next = Some(final_head);
    while let Some(node) = next {
        chain.push(node);
        let bytes = bob.store.storage().get_object(&node).unwrap().unwrap();
        next = StoredObject::parent_of(&bytes).unwrap();
    }
    chain.reverse();
    let mut positions = acknowledged.iter().map(|h| {
        chain
            .iter()
            .position(|c| c == h)
            .expect("an acknowledged head was lost")
    });
    let mut last = chain.iter().position(|c| *c == start).unwrap();
    for p in positions.by_ref() {
        assert_eq!(p, last + 1, "each acknowledged push adds exactly its node");
        last = p;
    }
    println!(
        "{} pushes by {WRITERS} machines in {ROUNDS} rounds: {} acknowledged, {} conflicts, history linear",
        ops.len(),
        acknowledged.len(),
        ops.len() - acknowledged.len()
    );
    bob.fsck_clean().unwrap();
}

use super::util::std_tapes as tapes;

/// Writes `count` sample sessions of importer `who` as Claude Code transcripts under `dir`.
fn transcripts(dir: &Path, who: usize, count: usize) -> Vec<(SessionId, PathBuf)> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|i| {
            let session = sample::session(
                0x77,
                who * count + i,
                Shape {
                    tool_rounds: 20,
                    ..Shape::default()
                },
            );
            let path = dir.join(format!("{}.jsonl", session.source_id));
            std::fs::write(&path, sample::claude_jsonl(&session)).unwrap();
            (SessionId::derive("claude", &session.source_id), path)
        })
        .collect()
}

/// Readers come and go while the importers run, so the holder of the store changes hands many
/// times; a reader must never lose a session it saw. This once failed under disk load (a reader
/// saw 18 sessions after 24): a `tapes sessions` that held the store exited while one of its
/// connection threads had applied an importer's batch but not yet flushed it; the next holder
/// opened the store without it (SPEC.md §6.1, "Letting go").
#[test]
fn eight_importers_and_eight_readers_share_one_store() {
    const IMPORTERS: usize = 8;
    const PER_IMPORTER: usize = 6;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let out = tapes(&home).args(["init", "--name", "x"]).output().unwrap();
    assert!(out.status.success());
    let mut expected: Vec<String> = Vec::new();
    let dirs: Vec<PathBuf> = (0..IMPORTERS)
        .map(|who| {
            let dir = tmp.path().join(format!("agent{who}"));
            for (id, _) in transcripts(&dir, who, PER_IMPORTER) {
                expected.push(id.to_hex());
            }
            dir
        })
        .collect();
    expected.sort();
    expected.dedup();

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|r| {
            let (home, done) = (home.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen: std::collections::BTreeSet<String> = Default::default();
                let mut reads = 0usize;
                while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
                    let out = tapes(&home).args(["sessions", "--json"]).output().unwrap();
                    assert!(
                        out.status.success(),
                        "reader {r} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    let now: std::collections::BTreeSet<String> = list
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s["id"].as_str().unwrap().to_string())
                        .collect();
                    let lost: Vec<&String> = seen.difference(&now).collect();
                    assert!(
                        lost.is_empty(),
                        "reader {r} saw {} sessions after {}: {} it had seen are gone",
                        now.len(),
                        seen.len(),
                        lost.len()
                    );
                    seen = now;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let importers: Vec<_> = dirs
        .iter()
        .map(|dir| {
            tapes(&home)
                .arg("import")
                .arg(dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut waited = 0;
    for (i, child) in importers.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "import {i} failed: {}\nstderr: {stderr}",
            out.status
        );
        if stderr.contains("waiting for another tapes process") {
            waited += 1;
        }
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();

    let out = tapes(&home).args(["sessions", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, expected, "every imported session is there, once");
    let fsck = tapes(&home).arg("fsck").output().unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    println!(
        "{IMPORTERS} importers, 8 readers: {} sessions, {reads} reads, {waited} importers said they waited",
        ids.len()
    );
}

#[test]
fn the_checker_refuses_a_history_that_is_not_linear() {
    let n = |b: u8| NodeId([b; 32]);
    let t = Instant::now();
    let op = |writer, base, head, ok: bool| Op {
        writer,
        base: n(base),
        head: n(head),
        invoked: t,
        answered: t,
        result: if ok {
            Ok(())
        } else {
            Err("conflict: session x moved on; run `tapes pull x`".into())
        },
    };
    // Linear: 1 -> 2 -> 3, one loser.
    let good = [op(0, 1, 2, true), op(1, 1, 9, false), op(2, 2, 3, true)];
    assert_eq!(
        check_linearizable(n(1), &good, n(3), "tapes pull"),
        vec![n(2), n(3)]
    );
    // Two wins from one base (a lost update).
    let lost = [op(0, 1, 2, true), op(1, 1, 4, true)];
    assert!(
        std::panic::catch_unwind(|| check_linearizable(n(1), &lost, n(4), "tapes pull")).is_err()
    );
    // A win that does not extend the history.
    let fork = [op(0, 1, 2, true), op(1, 7, 8, true)];
    assert!(
        std::panic::catch_unwind(|| check_linearizable(n(1), &fork, n(2), "tapes pull")).is_err()
    );
}
