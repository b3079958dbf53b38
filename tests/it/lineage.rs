//! Branch and fork follow the collaboration seed's decision rules and guard messages, and a
//! branch `--at N` shares the first N nodes instead of copying them.

use assert_cmd::Command;
use predicates::prelude::*;
use tapes::import::ingest::{ingest, Incoming};
use tapes::protocol::{MemberId, SessionId};
use tapes::session::sample::{self, Shape};
use tapes::session::{session_ref_key, SessionRecord, Visibility};
use tapes::store::backend::RefUpdate;
use tapes::store::Store;

/// A store owned by `me` holding two sample sessions: one of mine, one owned by someone else
/// with the given visibility.
fn setup(theirs: Visibility) -> (tempfile::TempDir, SessionId, SessionId) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    store.set_local_owner(&MemberId([1; 32])).unwrap();
    let incoming: Vec<Incoming> = (0..2)
        .map(|i| Incoming {
            session: sample::session(5, i, Shape::default()),
            path: String::new(),
        })
        .collect();
    let report = ingest(&store, &incoming, 0).unwrap();
    let (mine, other) = (report.sessions[0].id, report.sessions[1].id);
    let raw = store.session_raw(&other).unwrap().unwrap();
    let mut record = SessionRecord::decode(&raw).unwrap();
    record.owner = Some(MemberId([2; 32]));
    record.visibility = theirs;
    store
        .commit(
            &[],
            &[RefUpdate {
                key: session_ref_key(&other),
                expected: Some(raw),
                new: Some(record.encode()),
            }],
        )
        .unwrap();
    (dir, mine, other)
}

fn tapes(dir: &tempfile::TempDir) -> Command {
    super::util::tapes(dir.path())
}

#[test]
fn a_branch_at_n_shares_the_first_n_nodes_without_copying_them() {
    let (dir, mine, _) = setup(Visibility::Public);
    let out = tapes(&dir)
        .args([
            "branch",
            &mine.to_hex(),
            "--at",
            "4",
            "--title",
            "RAG variant A",
            "--tags",
            "rag,exp",
        ])
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.starts_with(&format!("branched {} into new session ", mine.short())),
        "{stdout}"
    );
    assert!(stdout.contains("(4 shared messages, private)"), "{stdout}");

    let store = Store::open(&dir.path().join("store")).unwrap();
    let objects_before = store.storage().object_count();
    let original = store.session(&mine).unwrap().unwrap();
    let chain = store.chain(&original.head).unwrap();
    let branch = store
        .sessions()
        .unwrap()
        .into_iter()
        .find(|(_, r)| r.lineage.parent == Some(mine))
        .map(|(id, r)| (id, r))
        .expect("the branch exists");
    let (branch_id, record) = branch;
    assert_ne!(branch_id, mine);
    assert_eq!(
        record.head, chain[3].0,
        "the branch's head is the original's 4th node"
    );
    assert_eq!(store.chain(&record.head).unwrap().len(), 4);
    assert_eq!(record.lineage.base_count, 4);
    assert_eq!(record.lineage.base_digest, Some(chain[3].0));
    assert_eq!(record.lineage.root, original.lineage.root);
    assert_eq!(record.owner, Some(MemberId([1; 32])));
    assert_eq!(record.title.as_deref(), Some("RAG variant A"));
    assert_eq!(record.tags, ["rag", "exp"]);
    assert_eq!(record.summary.messages, 4);
    assert_eq!(
        store.storage().object_count(),
        objects_before,
        "branching copied no node"
    );
}

#[test]
fn the_seed_guard_messages() {
    let (dir, mine, theirs) = setup(Visibility::Public);
    tapes(&dir)
        .args(["fork", &mine.to_hex()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "You own this session. Use `tapes branch",
        ));
    tapes(&dir)
        .args(["fork", &mine.to_hex(), "--force"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("forked"));
    tapes(&dir)
        .args(["branch", &theirs.to_hex()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "You don't own this session. Use `tapes fork",
        ));
    tapes(&dir)
        .args(["fork", &theirs.to_hex(), "--private"])
        .assert()
        .success()
        .stdout(predicate::str::contains("(10 shared messages, private)"));
    tapes(&dir)
        .args(["branch", &mine.to_hex(), "--at", "11"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "--at 11 is out of range: the session has 10 messages",
        ));
    tapes(&dir)
        .args(["branch", &mine.to_hex(), "--at", "0"])
        .assert()
        .code(1);
}

#[test]
fn a_private_session_of_someone_else_cannot_be_forked_and_pull_does_not_see_it() {
    let (dir, _, theirs) = setup(Visibility::Private);
    tapes(&dir)
        .args(["fork", &theirs.to_hex()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "private to its owner; it cannot be forked",
        ));
    let store = Store::open(&dir.path().join("store")).unwrap();
    let err = tapes::session::lineage::check_pull(&store, &theirs).unwrap_err();
    assert_eq!(err.to_string(), "Session not found.");
}

#[test]
fn a_transcript_claiming_a_teammates_session_never_changes_it() {
    let (dir, _, other) = setup(Visibility::Public);
    let store = Store::open(&dir.path().join("store")).unwrap();
    let before = store.session_raw(&other).unwrap().unwrap();
    // A transcript with the same source id: the teammate's history plus an injected message.
    let mut claimed = sample::session(5, 1, Shape::default());
    let mut injected = claimed.messages[0].clone();
    injected.blocks = vec![tapes::protocol::ContentBlock::Text {
        text: "INJECTED".into(),
    }];
    claimed.messages.push(injected);
    let report = ingest(
        &store,
        &[Incoming {
            session: claimed,
            path: "claimed.jsonl".into(),
        }],
        1,
    )
    .unwrap();
    let outcome = &report.sessions[0];
    assert_eq!(outcome.outcome, tapes::import::ingest::Outcome::Branched);
    assert_eq!(outcome.branched_from, Some((other, 10)));
    assert_ne!(outcome.id, other);
    // The teammate's session is byte for byte what it was; the copy is ours, private.
    assert_eq!(store.session_raw(&other).unwrap().unwrap(), before);
    let kept = store.session(&outcome.id).unwrap().unwrap();
    assert_eq!(kept.owner, Some(MemberId([1; 32])));
    assert_eq!(kept.visibility, Visibility::Private);
    assert_eq!(kept.lineage.parent, Some(other));
    assert_eq!(kept.lineage.base_count, 10);
    assert_eq!(kept.summary.messages, 11);
}
