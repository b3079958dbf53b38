//! Many writers as separate processes (SPEC.md §3.3, §6.1, §16.3; issue 21 item 4): 32 machines
//! of one person (homes with the same keys) carry one session on from one base and run their
//! `tapes` at once, (a) `tapes push` to a teammate's `tapes serve`, (b) `tapes sync` to a relay.
//! Exactly one push per base wins, every other writer exits with the conflict (its hint says
//! what to run), and a checker verifies the recorded history is linearizable as a
//! compare-and-swap register: every acknowledged head extends the one acknowledged before it,
//! a push acknowledged before another began is ordered first, and the session's history at the
//! end holds each acknowledged head, in order, with its node.
//!
//! Each round, 16 writers start from the current head and 16 carry on from their copy of the
//! round before (a stale base, except for that round's winner): the stale ones must all lose.
//! A fresh writer is a copy of a template home: for the peer, one that `tapes pull`s the
//! session; for the relay, a machine of the owner's with an empty store that restores it with
//! `tapes sync` (a fetch never replaces one's own session, SPEC.md §16.4).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tapes::protocol::{NodeId, SessionId, StoredObject};
use tapes::session::sample::{self, Shape};
use tapes::store::Store;

use super::util::{copy_dir, ok, relay_team, serve, std_tapes as tapes, Relay};
use super::writers::{check_linearizable, Op};

const WRITERS: usize = 32;
const ROUNDS: usize = 3;

/// The head of `id` in the store of `home`.
fn head(home: &Path, id: &SessionId) -> NodeId {
    Store::open(&home.join("store"))
        .unwrap()
        .session(id)
        .unwrap()
        .unwrap()
        .head
}

/// Carries the session on by one message in `home`'s store; returns (base, new head).
fn carry_on(home: &Path, id: &SessionId, text: String) -> (NodeId, NodeId) {
    let store = Store::open(&home.join("store")).unwrap();
    let base = store.session(id).unwrap().unwrap().head;
    sample::continue_session(&store, id, &[text]).unwrap();
    (base, store.session(id).unwrap().unwrap().head)
}

/// Checks that `head`'s history holds every acknowledged head after `start`, in order, each
/// one node after the one before.
fn history_holds(store: &Store, start: NodeId, final_head: NodeId, acknowledged: &[NodeId]) {
    let mut chain = Vec::new();
    let mut next = Some(final_head);
    while let Some(node) = next {
        chain.push(node);
        let bytes = store.storage().get_object(&node).unwrap().unwrap();
        next = StoredObject::parent_of(&bytes).unwrap();
    }
    chain.reverse();
    let mut last = chain.iter().position(|c| *c == start).unwrap();
    for h in acknowledged {
        let p = chain
            .iter()
            .position(|c| c == h)
            .expect("an acknowledged head was lost");
        assert_eq!(p, last + 1, "each acknowledged push adds exactly its node");
        last = p;
    }
}

/// How a writer sends: `tapes push bob <id>` or `tapes sync relay`.
#[derive(Clone, Copy)]
enum Via {
    Peer,
    Relay,
}

/// Runs one round: `writers` (home, base, head) all start their `tapes` at once.
fn race(via: Via, id: &SessionId, writers: &[(usize, PathBuf, NodeId, NodeId)]) -> Vec<Op> {
    let hex = id.to_hex();
    let short = id.short();
    let started: Vec<_> = writers
        .iter()
        .map(|(writer, home, base, head)| {
            let mut cmd = tapes(home);
            match via {
                Via::Peer => cmd.args(["--timeout", "60s", "push", "bob", &hex, "--allow-secrets"]),
                Via::Relay => cmd.args(["--timeout", "60s", "sync", "relay"]),
            };
            let invoked = Instant::now();
            let child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (*writer, *base, *head, invoked, child)
        })
        .collect();
    started
        .into_iter()
        .map(|(writer, base, head, invoked, child)| {
            let out = child.wait_with_output().unwrap();
            let answered = Instant::now();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let acknowledged = match via {
                Via::Peer => stdout.contains(&format!("pushed {short} to bob")),
                Via::Relay => stdout.contains(&format!("deposited {short} ")),
            };
            let result = if out.status.success() && acknowledged {
                Ok(())
            } else {
                assert!(
                    !out.status.success() && !acknowledged,
                    "writer {writer}: {}\nstdout: {stdout}\nstderr: {stderr}",
                    out.status
                );
                Err(stderr)
            };
            Op {
                writer,
                base,
                head,
                invoked,
                answered,
                result,
            }
        })
        .collect()
}

/// The rounds: `template` is a home of the owner tracking the session at the remote's current
/// head; `refresh` brings it to the head the remote has now. Returns every op.
fn rounds(
    via: Via,
    tmp: &Path,
    template: &Path,
    id: &SessionId,
    refresh: &dyn Fn(&Path),
) -> (NodeId, Vec<Op>) {
    let start = head(template, id);
    let mut ops = Vec::new();
    let mut at = start;
    for round in 0..ROUNDS {
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let home = tmp.join(format!("w{writer}"));
            // Half the writers take the current head; the other half carry on from their own
            // copy of the round before (in round 0 everybody starts fresh).
            if round == 0 || writer < WRITERS / 2 {
                if home.exists() {
                    std::fs::remove_dir_all(&home).unwrap();
                }
                copy_dir(template, &home);
            }
            let (base, new) = carry_on(&home, id, format!("round {round}, machine {writer}"));
            writers.push((writer, home, base, new));
        }
        let round_ops = race(via, id, &writers);
        let wins: Vec<&Op> = round_ops.iter().filter(|o| o.result.is_ok()).collect();
        assert_eq!(
            wins.len(),
            1,
            "exactly one of {WRITERS} pushes from base {} wins in round {round}: {:?}",
            at.short(),
            wins.iter().map(|o| o.writer).collect::<Vec<_>>()
        );
        assert_eq!(wins[0].base, at, "the winner pushed from the current head");
        at = wins[0].head;
        ops.extend(round_ops);
        refresh(template);
        assert_eq!(head(template, id), at, "the template follows the remote");
    }
    (start, ops)
}

/// A session of the owner's, imported from a sample transcript in `home`; its id.
fn one_session(home: &Path, agent: &Path) -> SessionId {
    let session = sample::session(0x3200, 0, Shape::default());
    std::fs::create_dir_all(agent).unwrap();
    std::fs::write(
        agent.join(format!("{}.jsonl", session.source_id)),
        sample::claude_jsonl(&session),
    )
    .unwrap();
    ok(home, &["import", agent.to_str().unwrap()]);
    SessionId::derive("claude", &session.source_id)
}

fn report(what: &str, ops: &[Op], acknowledged: &[NodeId]) {
    println!(
        "{} pushes by {WRITERS} processes in {ROUNDS} rounds {what}: {} acknowledged, {} conflicts, history linear",
        ops.len(),
        acknowledged.len(),
        ops.len() - acknowledged.len()
    );
}

#[test]
fn thirty_two_push_processes_to_a_peer_are_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let bob = tmp.path().join("bob");
    let alice = tmp.path().join("alice");
    ok(&bob, &["init", "--name", "bob"]);
    ok(&bob, &["team", "create", "core"]);
    ok(&alice, &["init", "--name", "alice"]);
    let server = serve(&bob, "127.0.0.1:0");
    let code = ok(&bob, &["team", "invite"]).trim().to_string();
    ok(&alice, &["team", "join", &code]);
    ok(&alice, &["remote", "add", "bob", &server.ticket]);
    let id = one_session(&alice, &tmp.path().join("agent"));
    let hex = id.to_hex();
    ok(&alice, &["push", "bob", &hex, "--allow-secrets"]);
    // Tracked here from now on: the base of every push is what bob has.
    ok(&alice, &["pull", "--from", "bob", &hex]);

    let refresh = |template: &Path| {
        ok(template, &["pull", "--from", "bob", &hex]);
    };
    let (start, ops) = rounds(Via::Peer, tmp.path(), &alice, &id, &refresh);
    let store = Store::open(&bob.join("store")).unwrap();
    let final_head = store.session(&id).unwrap().unwrap().head;
    let acknowledged = check_linearizable(start, &ops, final_head, "tapes pull");
    history_holds(&store, start, final_head, &acknowledged);
    drop(store);
    report("to a peer", &ops, &acknowledged);
    drop(server);
    let fsck = ok(&bob, &["fsck"]);
    assert!(fsck.lines().any(|l| l.starts_with("ok: ")), "{fsck}");
}

#[test]
fn thirty_two_sync_processes_to_a_relay_are_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(&tmp.path().join("relay-data"));
    let (alice, bob) = relay_team(tmp.path(), &relay);
    // Alice's machine as it was before the session: a fresh machine of hers.
    let empty = tmp.path().join("alice-empty");
    copy_dir(&alice, &empty);
    let id = one_session(&alice, &tmp.path().join("agent"));
    let hex = id.to_hex();
    let share = ["share", "--team", "core", "--allow-secrets", hex.as_str()];
    ok(&alice, &share);
    ok(&alice, &["sync", "relay"]);

    // A fetch never replaces one's own session: the template is a fresh machine each round,
    // which restores the session from the relay at its head.
    let template = tmp.path().join("template");
    let refresh = |template: &Path| {
        if template.exists() {
            std::fs::remove_dir_all(template).unwrap();
        }
        copy_dir(&empty, template);
        ok(template, &["sync", "relay"]);
        ok(template, &share);
    };
    refresh(&template);
    let (start, ops) = rounds(Via::Relay, tmp.path(), &template, &id, &refresh);
    // What the relay holds, as a member fetches it.
    ok(&bob, &["sync", "relay"]);
    let store = Store::open(&bob.join("store")).unwrap();
    let final_head = store.session(&id).unwrap().unwrap().head;
    let acknowledged = check_linearizable(start, &ops, final_head, "tapes branch");
    history_holds(&store, start, final_head, &acknowledged);
    drop(store);
    report("through a relay", &ops, &acknowledged);
    let fsck = ok(&bob, &["fsck"]);
    assert!(fsck.lines().any(|l| l.starts_with("ok: ")), "{fsck}");
}
