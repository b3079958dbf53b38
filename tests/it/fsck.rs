//! `tapes fsck` finds damage: a flipped byte inside a stored object (in sled or in a pack file),
//! an object whose parent is gone, a session ref to a node that is not there, a damaged or
//! missing pack. The damage is made by writing to the sled trees or the pack files directly, as
//! a failing disk or a buggy tool would, behind tapes' back.

use predicates::prelude::*;
use tapes::import::ingest::{ingest, Incoming};
use tapes::protocol::MemberId;
use tapes::protocol::{NodeId, SessionId};
use tapes::session::sample::{self, Shape};
use tapes::session::{session_ref_key, SessionRecord};
use tapes::share::{share_key, Audience, ShareRecord, SignedShare};
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
    super::util::tapes(home).arg("fsck").assert()
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
        .stdout(predicate::str::contains(" in 30 objects and "));
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
        .stdout("note: 1 unreferenced object left by an interrupted import (harmless)\nok: 29 objects and 2 refs verified\n");
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

#[test]
fn a_share_record_with_a_forged_signature_is_found() {
    // Sync trusts the share records of its own store (their signatures are checked when they
    // are stored), so fsck is where one planted behind tapes' back must show up.
    let (dir, ids) = populated_home();
    let head = Store::open(&dir.path().join("store"))
        .unwrap()
        .session(&ids[0])
        .unwrap()
        .unwrap()
        .head;
    let forged = SignedShare {
        record: ShareRecord {
            session: ids[0],
            head,
            audience: Audience::Public,
            sharer: MemberId([7; 32]),
            sharer_name: "mallory".into(),
            title: None,
            note: None,
            shared_ms: 1,
            expires_ms: None,
            revoked: false,
        },
        signature: vec![0; 64],
    };
    with_trees(dir.path(), |_, refs| {
        let key = share_key(&ids[0], &Audience::Public);
        refs.insert(key, postcard::to_stdvec(&forged).unwrap())
            .unwrap();
    });
    fsck(dir.path())
        .code(1)
        .stdout(predicate::str::contains("signature does not verify"))
        .stdout(predicate::str::contains("and 1 share record;"));
}

/// A store whose nodes sit in a pack file: one batch large enough (over 4096 new nodes), as a
/// bundle import or a fetch writes them. Returns the number of nodes.
fn packed_home() -> (tempfile::TempDir, usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let incoming: Vec<Incoming> = (0..500)
        .map(|i| Incoming {
            session: sample::session(9, i, Shape::default()),
            path: String::new(),
        })
        .collect();
    let report = ingest(&store, &incoming, 0).unwrap();
    assert!(report.new_nodes > 4096, "{}", report.new_nodes);
    (dir, report.new_nodes)
}

/// The store's pack files with the given extension.
fn pack_file(home: &std::path::Path, extension: &str) -> std::path::PathBuf {
    let packs: Vec<std::path::PathBuf> = std::fs::read_dir(home.join("store").join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    packs[0].clone()
}

#[test]
fn a_flipped_byte_in_an_object_inside_a_pack_is_found() {
    let (dir, nodes) = packed_home();
    let (victim, bytes) = {
        let store = Store::open(&dir.path().join("store")).unwrap();
        let picked = store.storage().objects().nth(100).unwrap().unwrap();
        picked
    };
    let path = pack_file(dir.path(), "pack");
    let mut pack = std::fs::read(&path).unwrap();
    let start = pack
        .windows(bytes.len())
        .position(|w| w == bytes.as_slice())
        .expect("the object's bytes are in the pack");
    // Inside the canonical body (past the 5-byte header), where the text lives.
    pack[start + bytes.len() / 3] ^= 0x01;
    std::fs::write(&path, &pack).unwrap();
    fsck(dir.path())
        .code(1)
        .stdout(predicate::str::contains(format!(
            "damaged: object {victim}"
        )))
        .stdout(predicate::str::contains(format!(
            " in {nodes} objects and "
        )));
}

#[test]
fn a_damaged_pack_index_is_reported() {
    let (dir, _) = packed_home();
    let path = pack_file(dir.path(), "idx");
    let mut idx = std::fs::read(&path).unwrap();
    // An entry in the middle (the last 32 bytes are the checksum).
    let at = idx.len() / 2;
    idx[at] ^= 0x01;
    std::fs::write(&path, &idx).unwrap();
    fsck(dir.path()).code(1).stderr(
        predicate::str::contains("is damaged: the index does not match its checksum").and(
            predicate::str::contains(path.display().to_string().replace(".idx", ".pack")),
        ),
    );
}

#[test]
fn a_missing_pack_file_stops_the_store_from_opening() {
    let (dir, _) = packed_home();
    let path = pack_file(dir.path(), "pack");
    std::fs::remove_file(&path).unwrap();
    fsck(dir.path()).code(1).stdout(
        predicate::str::contains("is registered in the store but cannot be opened")
            .and(predicate::str::contains(path.display().to_string()))
            .and(predicate::str::contains("tapes fsck --repair")),
    );
}

fn tapes(home: &std::path::Path, args: &[&str]) -> assert_cmd::assert::Assert {
    super::util::tapes(home).args(args).assert()
}

fn session_count(home: &std::path::Path) -> usize {
    let out = tapes(home, &["sessions", "--json"]).success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    json.as_array().unwrap().len()
}

/// 500 sessions in a pack, then 3 small imports kept in sled (and the journal).
fn packed_and_loose_home() -> tempfile::TempDir {
    let (dir, _) = packed_home();
    let store = Store::open(&dir.path().join("store")).unwrap();
    for i in 500..503 {
        let incoming = [Incoming {
            session: sample::session(9, i, Shape::default()),
            path: String::new(),
        }];
        ingest(&store, &incoming, 0).unwrap();
    }
    drop(store);
    dir
}

#[test]
fn a_lost_database_is_diagnosed_and_repaired_from_the_packs_and_the_journal() {
    let dir = packed_and_loose_home();
    let home = dir.path();
    // Everything sled keeps is gone; the pack files and the journal are left.
    for entry in std::fs::read_dir(home.join("store")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "db" || name == "conf" || name.starts_with("snap.") || name == "blobs" {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    tapes(home, &["fsck"]).code(1).stdout(
        predicate::str::contains("the database was lost or replaced")
            .and(predicate::str::contains("503 sessions survive whole")),
    );
    tapes(home, &["fsck", "--repair"]).success().stdout(
        predicate::str::contains("503 sessions restored whole")
            .and(predicate::str::contains("the damaged store is kept at")),
    );
    assert_eq!(session_count(home), 503);
    tapes(home, &["fsck"]).success();
    let kept: Vec<_> = std::fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("store.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[test]
fn flipped_bytes_in_the_database_never_lose_a_session_that_survives_elsewhere() {
    for fraction in [3, 5, 7, 11] {
        let dir = packed_and_loose_home();
        let home = dir.path();
        let db = home.join("store").join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        let at = bytes.len() / fraction;
        let end = (at + 16).min(bytes.len());
        for b in &mut bytes[at..end] {
            *b ^= 0x5a;
        }
        std::fs::write(&db, &bytes).unwrap();
        // Either the store still opens with every session, or fsck says so and repair
        // brings every one back.
        let opens = super::util::tapes(home)
            .args(["sessions", "--json"])
            .output()
            .unwrap();
        let listed = serde_json::from_slice::<serde_json::Value>(&opens.stdout)
            .ok()
            .and_then(|v| v.as_array().map(|a| a.len()));
        if opens.status.success() && listed == Some(503) {
            continue;
        }
        tapes(home, &["fsck"]).code(1);
        tapes(home, &["fsck", "--repair"]).success();
        assert_eq!(session_count(home), 503, "flip at 1/{fraction}");
        tapes(home, &["fsck"]).success();
    }
}
