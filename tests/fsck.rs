//! `tapes fsck` finds damage: a flipped byte inside a stored object, an object whose parent is
//! gone, a session ref to a node that is not there. The damage is made by writing to the sled
//! trees directly, as a failing disk or a buggy tool would, behind tapes' back.

use assert_cmd::Command;
use predicates::prelude::*;
use tapes::ingest::{ingest, Incoming};
use tapes::protocol::{NodeId, SessionId};
use tapes::sample::{self, Shape};
use tapes::session::{session_ref_key, SessionRecord};
use tapes::store::Store;

fn populated_home() -> (tempfile::TempDir, Vec<SessionId>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let incoming: Vec<Incoming> = (0..3)
        .map(|i| Incoming {
            session: sample::session(9, i, Shape::default()),
            path: String::new(),
        })
        .collect();
    let report = ingest(&store, &incoming, 0).unwrap();
    assert_eq!(report.new_nodes, 30);
    (dir, report.sessions.iter().map(|s| s.id).collect())
}

fn fsck(home: &std::path::Path) -> assert_cmd::assert::Assert {
    Command::cargo_bin("tapes")
        .unwrap()
        .env("TAPES_HOME", home)
        .arg("fsck")
        .assert()
}

fn with_trees(home: &std::path::Path, f: impl FnOnce(&sled::Tree, &sled::Tree)) {
    // sled's background threads may hold the previous handle for a moment after drop.
    let db = (0..100)
        .find_map(|_| {
            sled::open(home.join("store")).ok().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                None
            })
        })
        .expect("store stays locked");
    f(
        &db.open_tree("objects").unwrap(),
        &db.open_tree("refs").unwrap(),
    );
    db.flush().unwrap();
}

#[test]
fn a_clean_store_passes() {
    let (dir, _) = populated_home();
    fsck(dir.path())
        .success()
        .stdout("ok: 30 objects and 3 refs verified\n");
}

#[test]
fn a_flipped_byte_in_an_object_is_found() {
    let (dir, _) = populated_home();
    let mut victim = None;
    with_trees(dir.path(), |objects, _| {
        let (key, value) = objects.iter().nth(7).unwrap().unwrap();
        let mut bytes = value.to_vec();
        // Inside the canonical body (past the 5-byte header), where the text lives.
        let at = bytes.len() / 3;
        bytes[at] ^= 0x01;
        objects.insert(&key, bytes).unwrap();
        victim = NodeId::from_slice(&key);
    });
    let victim = victim.unwrap();
    fsck(dir.path())
        .code(1)
        .stdout(predicate::str::contains(format!(
            "damaged: object {victim}"
        )))
        .stdout(predicate::str::contains("problems in 30 objects"));
}

#[test]
fn a_missing_node_breaks_its_parent_link_and_its_session() {
    let (dir, ids) = populated_home();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let head = store.session(&ids[0]).unwrap().unwrap().head;
    let chain = store.chain(&head).unwrap();
    let (middle, child) = (chain[4].0, chain[5].0);
    drop(store);
    with_trees(dir.path(), |objects, _| {
        objects.remove(middle.as_bytes()).unwrap();
    });
    fsck(dir.path())
        .code(1)
        .stdout(predicate::str::contains(format!(
            "node {middle} is missing"
        )))
        .stdout(predicate::str::contains(format!(
            "object {child}: parent {middle} is missing"
        )));
}

#[test]
fn a_missing_head_is_found() {
    let (dir, ids) = populated_home();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let head = store.session(&ids[0]).unwrap().unwrap().head;
    drop(store);
    with_trees(dir.path(), |objects, _| {
        objects.remove(head.as_bytes()).unwrap();
    });
    fsck(dir.path())
        .code(1)
        .stdout(predicate::str::contains(format!("node {head} is missing")));
}

#[test]
fn leftovers_of_an_interrupted_import_are_not_damage() {
    // What a kill between the object writes and the ref update leaves: objects no session
    // reaches, some without their parent.
    let (dir, ids) = populated_home();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let head = store.session(&ids[2]).unwrap().unwrap().head;
    let middle = store.chain(&head).unwrap()[3].0;
    drop(store);
    with_trees(dir.path(), |objects, refs| {
        refs.remove(session_ref_key(&ids[2])).unwrap();
        objects.remove(middle.as_bytes()).unwrap();
    });
    fsck(dir.path())
        .success()
        .stdout("note: 1 unreferenced objects left by an interrupted import (harmless)\nok: 29 objects and 2 refs verified\n");
}

#[test]
fn a_ref_to_a_node_that_never_existed_is_found() {
    let (dir, ids) = populated_home();
    with_trees(dir.path(), |_, refs| {
        let key = session_ref_key(&ids[1]);
        let mut record = SessionRecord::decode(&refs.get(&key).unwrap().unwrap()).unwrap();
        record.head = NodeId([0xab; 32]);
        refs.insert(key, record.encode()).unwrap();
    });
    fsck(dir.path())
        .code(1)
        .stdout(predicate::str::contains(format!(
            "node {} is missing",
            NodeId([0xab; 32])
        )));
}
