//! `tapes rm`, `tapes rm --undo`, `tapes gc` and tombstones (SPEC.md §3.5, §6 rule 8), as a
//! user meets them: a removed session does not come back from its transcript, `--undo`
//! restores it until its messages are collected, a collection removes exactly the messages no
//! other session uses (a branch's shared prefix stays), packs are rewritten without the
//! removed bytes, a `kill -9` in the middle of a collection leaves a store that passes fsck;
//! and signed tombstones from peers: the owner's removes the session, a forged or replayed one
//! is refused with the reason and removes nothing.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tapes::protocol::tombstone::Tombstone;
use tapes::protocol::{ContentBlock, SessionId};
use tapes::session::sample::{self, Shape};
use tapes::session::tombstone::{self, RemoveError};
use tapes::store::Store;

struct Env {
    _dir: tempfile::TempDir,
    home: PathBuf,
    transcripts: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let transcripts = dir.path().join("projects");
    std::fs::create_dir_all(&transcripts).unwrap();
    let env = Env {
        home,
        transcripts,
        _dir: dir,
    };
    ok(&env, &["init", "--name", "alice"]);
    env
}

fn tapes(env: &Env) -> Command {
    super::util::tapes(&env.home)
}

fn ok(env: &Env, args: &[&str]) -> String {
    let out = tapes(env)
        .args(args)
        .assert()
        .success()
        .get_output()
        .clone();
    String::from_utf8(out.stdout).unwrap()
}

fn fails(env: &Env, args: &[&str]) -> String {
    let out = tapes(env)
        .args(args)
        .assert()
        .failure()
        .get_output()
        .clone();
    String::from_utf8(out.stderr).unwrap()
}

/// Writes sample session `i` as a Claude transcript whose every message is one text block
/// `MARK-<tag>-<i>-<n>-<padding>`, so the test can look for each message's bytes on disk.
fn write_marked(dir: &Path, tag: &str, i: usize, padding: usize) -> SessionId {
    let mut session = sample::session(7, i, Shape::default());
    for (n, message) in session.messages.iter_mut().enumerate() {
        message.blocks = vec![ContentBlock::Text {
            text: format!("MARK-{tag}-{i}-{n}-{}", "x".repeat(padding)),
        }];
    }
    std::fs::write(
        dir.join(format!("{}.jsonl", session.source_id)),
        sample::claude_jsonl(&session),
    )
    .unwrap();
    SessionId::derive("claude", &session.source_id)
}

fn sessions(env: &Env) -> Vec<String> {
    let out = ok(env, &["sessions", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Whether `needle` occurs in any file under `dir`.
fn on_disk(dir: &Path, needle: &str) -> bool {
    let needle = needle.as_bytes();
    walk(dir).iter().any(|path| {
        std::fs::read(path)
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn object_count(env: &Env) -> usize {
    let out = ok(env, &["fsck"]);
    let n = out
        .strip_prefix("ok: ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("fsck: {out}"));
    n.replace(',', "").parse().unwrap()
}

#[test]
fn rm_keeps_a_removed_session_out_and_undo_restores_it_until_gc() {
    let env = env();
    let a = write_marked(&env.transcripts, "a", 0, 0);
    let b = write_marked(&env.transcripts, "b", 1, 0);
    ok(&env, &["import", env.transcripts.to_str().unwrap()]);
    let before = object_count(&env);

    let out = ok(&env, &["rm", &a.short()]);
    assert!(out.starts_with(&format!("removed {}", a.short())), "{out}");
    assert!(out.contains("tapes gc") && out.contains("--undo"), "{out}");
    assert_eq!(sessions(&env), vec![b.to_hex()]);
    // The transcript is still there: importing it again (as watch does) does not bring it back.
    ok(&env, &["import", env.transcripts.to_str().unwrap()]);
    assert_eq!(sessions(&env), vec![b.to_hex()]);
    // Its messages are still on disk, so undo restores it exactly.
    assert_eq!(object_count(&env), before);
    let out = ok(&env, &["rm", "--undo", &a.short()]);
    assert!(out.starts_with(&format!("restored {}", a.short())), "{out}");
    let mut both = vec![a.to_hex(), b.to_hex()];
    both.sort();
    assert_eq!(sessions(&env), both);
    ok(&env, &["show", &a.short()]);

    // Removed again, then collected: undo says why it cannot, and the transcript still
    // does not bring it back.
    ok(&env, &["rm", &a.short()]);
    let out = ok(&env, &["gc"]);
    assert!(out.starts_with("removed "), "{out}");
    assert!(object_count(&env) < before);
    let err = fails(&env, &["rm", "--undo", &a.short()]);
    assert!(
        err.contains("cannot be restored") && err.contains("tapes gc"),
        "{err}"
    );
    ok(&env, &["import", env.transcripts.to_str().unwrap()]);
    assert_eq!(sessions(&env), vec![b.to_hex()]);
    // Forgetting the tombstone lets the transcript bring it back.
    ok(&env, &["rm", "--forget", &a.short()]);
    ok(&env, &["import", env.transcripts.to_str().unwrap()]);
    assert_eq!(sessions(&env), both);
    ok(&env, &["fsck"]);
}

#[test]
fn purge_removes_only_what_no_other_session_uses_and_a_branch_keeps_its_prefix() {
    let env = env();
    let a = write_marked(&env.transcripts, "a", 0, 0);
    ok(&env, &["import", env.transcripts.to_str().unwrap()]);
    let messages = sample::session(7, 0, Shape::default()).messages.len();
    assert!(messages > 4, "the sample is long enough to branch");
    let out = ok(&env, &["branch", &a.short(), "--at", "3"]);
    assert!(out.starts_with("branched"), "{out}");
    let branch = sessions(&env)
        .into_iter()
        .find(|s| s != &a.to_hex())
        .unwrap();

    let out = ok(&env, &["rm", &a.short(), "--purge"]);
    assert!(
        out.contains(&format!("{} messages removed from disk", messages - 3)),
        "{out}"
    );
    // The shared prefix stays with the branch, whole; the rest is gone.
    assert_eq!(sessions(&env), vec![branch.clone()]);
    assert_eq!(object_count(&env), 3);
    let shown = ok(&env, &["show", &branch[..12]]);
    for n in 0..3 {
        assert!(shown.contains(&format!("MARK-a-0-{n}-")), "{shown}");
    }
    // Outside sled's own log (which reuses the space of removed values as it compacts, SPEC
    // §6 rule 8), no file of the store holds a removed message: not the journal, not a pack.
    let store = env.home.join("store");
    for n in 3..messages {
        let marker = format!("MARK-a-0-{n}-");
        let journal = std::fs::read(store.join("journal")).unwrap();
        assert!(
            !journal
                .windows(marker.len())
                .any(|w| w == marker.as_bytes()),
            "{marker} in the journal"
        );
        assert!(
            !on_disk(&store.join("packs"), &marker),
            "{marker} in a pack"
        );
    }
    // Removing the branch too, nothing is left; the tombstones keep both out.
    ok(&env, &["rm", &branch[..12], "--purge"]);
    assert_eq!(object_count(&env), 0);
    ok(&env, &["import", env.transcripts.to_str().unwrap()]);
    assert!(sessions(&env).is_empty());
}

/// Sessions big enough that one import makes a pack (SPEC §4: 4 MiB or 4096 objects).
fn packed_store(env: &Env, count: usize) -> Vec<SessionId> {
    let ids: Vec<SessionId> = (0..count)
        .map(|i| write_marked(&env.transcripts, "p", i, 40_000))
        .collect();
    ok(env, &["import", env.transcripts.to_str().unwrap()]);
    let packs = env.home.join("store/packs");
    assert!(
        walk(&packs)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "pack")),
        "the import made a pack"
    );
    ids
}

#[test]
fn purge_rewrites_packs_without_the_removed_bytes() {
    let env = env();
    let ids = packed_store(&env, 12);
    let gone = ids[5];
    let marker = "MARK-p-5-";
    assert!(on_disk(&env.home.join("store/packs"), marker));
    ok(&env, &["rm", &gone.short(), "--purge"]);
    assert!(!on_disk(&env.home.join("store/packs"), marker));
    assert!(on_disk(&env.home.join("store/packs"), "MARK-p-4-"));
    let left = sessions(&env);
    assert_eq!(left.len(), ids.len() - 1);
    assert!(!left.contains(&gone.to_hex()));
    ok(&env, &["fsck"]);
    for id in &ids {
        if id != &gone {
            ok(&env, &["show", &id.short()]);
        }
    }
}

#[test]
fn a_collection_killed_at_any_moment_leaves_a_store_that_passes_fsck() {
    let env = env();
    let ids = packed_store(&env, 12);
    // Remove half (objects stay until gc), then kill `tapes gc` at varying moments.
    for id in ids.iter().step_by(2) {
        ok(&env, &["rm", &id.short()]);
    }
    let mut kept: Vec<String> = ids.iter().skip(1).step_by(2).map(|i| i.to_hex()).collect();
    kept.sort();
    for round in 0..8u64 {
        let mut child = super::util::std_tapes(&env.home)
            .arg("gc")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + round * 35));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        ok(&env, &["fsck"]);
        let mut now = sessions(&env);
        now.sort();
        assert_eq!(now, kept, "round {round}");
    }
    ok(&env, &["gc"]);
    ok(&env, &["fsck"]);
    for id in &kept {
        ok(&env, &["show", &id[..12]]);
    }
    assert!(!on_disk(&env.home.join("store/packs"), "MARK-p-0-"));
}

fn open_store(env: &Env) -> Store {
    Store::open(&env.home.join("store")).unwrap()
}

fn alice_key(env: &Env) -> ed25519_dalek::SigningKey {
    let home = tapes::home::Home::at(env.home.clone());
    tapes::identity::Identity::load(&home)
        .unwrap()
        .signing_key()
        .clone()
}

#[test]
fn a_signed_tombstone_removes_the_owners_session_and_a_forged_or_replayed_one_removes_nothing() {
    let env = env();
    let a = write_marked(&env.transcripts, "a", 0, 0);
    let b = write_marked(&env.transcripts, "b", 1, 0);
    ok(&env, &["import", env.transcripts.to_str().unwrap()]);
    let alice = alice_key(&env);
    let store = open_store(&env);
    let head_a = store.session(&a).unwrap().unwrap().head;
    let far_future = tapes::now_ms() + 60_000;

    // Signed by someone else: refused, naming who signed and who owns it.
    let mallory = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let forged = Tombstone::sign(&mallory, a, head_a, far_future).encode();
    let err = tombstone::apply_signed(&store, &a, &forged, far_future).unwrap_err();
    assert!(matches!(err, RemoveError::Refused(_)), "{err}");
    assert!(err.to_string().contains("only the owner"), "{err}");
    // Altered after signing: refused.
    let mut altered = Tombstone::sign(&alice, a, head_a, far_future).encode();
    altered[100] ^= 1;
    let err = tombstone::apply_signed(&store, &a, &altered, far_future).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    // Alice's tombstone of `a` presented as one of `b`: refused.
    let of_a = Tombstone::sign(&alice, a, head_a, far_future).encode();
    let err = tombstone::apply_signed(&store, &b, &of_a, far_future).unwrap_err();
    assert!(
        err.to_string().contains("replayed for another session"),
        "{err}"
    );
    // An old tombstone (signed before the session last changed): refused.
    let old = Tombstone::sign(&alice, a, head_a, 1).encode();
    let err = tombstone::apply_signed(&store, &a, &old, far_future).unwrap_err();
    assert!(err.to_string().contains("replayed"), "{err}");
    // Nothing was removed by any of them.
    assert!(store.session(&a).unwrap().is_some());
    assert!(store.session(&b).unwrap().is_some());
    assert!(!tombstone::is_removed(&store, &a).unwrap());

    // The owner's own: removed, and kept to be passed on.
    assert!(tombstone::apply_signed(&store, &a, &of_a, far_future).unwrap());
    assert!(store.session(&a).unwrap().is_none());
    assert!(tombstone::is_removed(&store, &a).unwrap());
    assert_eq!(
        tombstone::signed_tombstones(&store).unwrap(),
        vec![(a, of_a.clone())]
    );
    // Applying it again changes nothing.
    assert!(!tombstone::apply_signed(&store, &a, &of_a, far_future).unwrap());
    drop(store);
    assert_eq!(sessions(&env), vec![b.to_hex()]);
}

/// `tapes rm --everywhere` between teammates (SPEC §3.5): Bob's node drops its copy of Alice's
/// session when it next fetches from her, keeps his own fork of it whole (with the prefix it
/// shares), and a stranger's node is told nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_everywhere_reaches_a_teammate_whose_fork_stays() {
    use tapes::session::lineage::{fork, CopyOptions};
    use tapes::share::{Audience, SecretPolicy};
    use tapes::testing::{join, Node};

    let alice = Node::new("alice").await.unwrap();
    let bob = Node::new("bob").await.unwrap();
    let carol = Node::new("carol").await.unwrap();
    let team = tapes::team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    join(&alice, &bob, &team).await.unwrap();
    let gone = alice.import(11, 3).unwrap();
    let other = alice.import(12, 1).unwrap();
    for id in [gone, other] {
        alice
            .share(&id, Audience::Team(team), SecretPolicy::Allow)
            .unwrap();
    }
    let conn = bob.dial(&alice, "alice").await.unwrap();
    conn.fetch(&bob.store, &bob.identity).await.unwrap();
    assert!(bob.has(&gone).unwrap() && bob.has(&other).unwrap());
    let options = CopyOptions {
        at: Some(4),
        title: None,
        tags: Vec::new(),
        description: None,
        private: true,
    };
    let bobs_fork = fork(&bob.store, &gone, &options, false, tapes::now_ms()).unwrap();

    let removed = tombstone::remove(
        &alice.store,
        &gone,
        tapes::now_ms(),
        tombstone::RemoveOptions {
            purge: true,
            everywhere: Some(&alice.identity),
        },
    )
    .unwrap();
    assert!(removed.signed.is_some());
    // The team's audit log says who removed it, once (SPEC §18).
    let deletes: Vec<_> = tapes::audit::all(&alice.store, Some(&team))
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.action == tapes::protocol::audit::AuditAction::Delete)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].entry.session, Some(gone));
    assert_eq!(deletes[0].entry.actor, alice.id());

    let conn = bob.dial(&alice, "alice").await.unwrap();
    conn.fetch(&bob.store, &bob.identity).await.unwrap();
    let pulled = tapes::peer::tombstone_sync::pull(&conn, &bob.store)
        .await
        .unwrap();
    assert_eq!(pulled.removed, vec![gone], "{pulled:?}");
    assert!(pulled.refused.is_empty(), "{pulled:?}");
    assert!(!bob.has(&gone).unwrap());
    assert!(bob.has(&other).unwrap());
    // Bob's fork is his: it stays, and after a collection its whole chain is still there.
    tombstone::collect(&bob.store).unwrap();
    assert!(bob.has(&bobs_fork).unwrap());
    let head = bob.store.session(&bobs_fork).unwrap().unwrap().head;
    assert_eq!(bob.store.chain_ids(&head).unwrap().len(), 4);
    bob.fsck_clean().unwrap();
    // A second fetch does not bring it back, and the tombstone applies once.
    let conn = bob.dial(&alice, "alice").await.unwrap();
    conn.fetch(&bob.store, &bob.identity).await.unwrap();
    let again = tapes::peer::tombstone_sync::pull(&conn, &bob.store)
        .await
        .unwrap();
    assert!(again.removed.is_empty() && again.refused.is_empty());
    assert!(!bob.has(&gone).unwrap());

    // Carol, in no team with Alice, is shown no tombstones.
    let conn = carol.dial(&alice, "alice").await.unwrap();
    let pulled = tapes::peer::tombstone_sync::pull(&conn, &carol.store)
        .await
        .unwrap();
    assert!(pulled.removed.is_empty());
}

/// `tapes rm --everywhere` through a relay (SPEC §3.5): a tombstone not signed by the
/// depositing owner is refused with the reason and removes nothing; the owner's removes the
/// relay's copy (record and blobs), the relay refuses the session afterwards and passes the
/// tombstone on to members, whose copies go at their next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_honours_the_owners_tombstone_and_refuses_a_forged_one() {
    use crate::relay::{add_member, options, Member};
    use tapes::protocol::sync::Scope;
    use tapes::protocol::tombstone::Published;
    use tapes::share::Audience;

    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = tapes::team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    add_member(&alice, &bob, &team);
    let data = tempfile::tempdir().unwrap();
    let relay = tapes::relay::run::start(data.path(), &options(), std::sync::Arc::new(|_| {}))
        .await
        .unwrap();
    alice
        .relay(&relay.ticket)
        .await
        .unwrap()
        .register(&alice.store, &team)
        .await
        .unwrap();
    let gone = alice.session_with(21, &["BURY-MARKER"]);
    alice.share(&gone, Audience::Team(team));
    alice.sync(&relay.ticket).await;
    bob.sync(&relay.ticket).await;
    assert!(bob.has(&gone));
    let scope = Scope::Team(team);
    assert!(relay.state.deposited(&scope, &gone).unwrap().is_some());

    // Bob (a member, not the owner) signs a tombstone for Alice's session: refused.
    let head = alice.store.session(&gone).unwrap().unwrap().head;
    let forged = Tombstone::sign(
        bob.identity.signing_key(),
        gone,
        head,
        tapes::now_ms() + 1000,
    );
    let bob_id = tapes::testing::member(&bob.identity);
    let err = tapes::relay::tombstones::bury(
        &relay.state,
        &bob_id,
        &Published {
            session: gone,
            tombstone: forged.encode(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("only the owner"), "{err}");
    assert!(relay.state.deposited(&scope, &gone).unwrap().is_some());

    // Alice removes it everywhere; her next sync hands the tombstone to the relay.
    tombstone::remove(
        &alice.store,
        &gone,
        tapes::now_ms(),
        tombstone::RemoveOptions {
            purge: false,
            everywhere: Some(&alice.identity),
        },
    )
    .unwrap();
    let conn = alice.relay(&relay.ticket).await.unwrap();
    let pulled = tapes::peer::tombstone_sync::pull(&conn, &alice.store)
        .await
        .unwrap();
    assert!(pulled.refused.is_empty(), "{pulled:?}");
    assert!(relay.state.deposited(&scope, &gone).unwrap().is_none());
    assert!(tapes::relay::tombstones::is_buried(&relay.state, &gone).unwrap());

    // Bob's next sync with the relay removes his copy.
    let conn = bob.relay(&relay.ticket).await.unwrap();
    let pulled = tapes::peer::tombstone_sync::pull(&conn, &bob.store)
        .await
        .unwrap();
    assert_eq!(pulled.removed, vec![gone], "{pulled:?}");
    assert!(!bob.has(&gone));
    bob.fsck_clean();
    relay.shutdown().await;
}
