//! Pull and push against a path remote, and 32 writers racing one push from the same base:
//! exactly one wins, every other gets the conflict with its hint, the remote history stays
//! linear and no node of the winner is lost.

use std::sync::Arc;

use tapes::identity::{Identity, Profile};
use tapes::import::ingest::{ingest, Incoming};
use tapes::protocol::{
    ContentBlock, MemberId, Node, NodeBody, NodeMeta, Role, SessionId, StoredObject,
};
use tapes::session::sample::{self, Shape};
use tapes::store::Store;
use tapes::sync::remote::{PathRemote, RefSignature, Remote, RemoteError};
use tapes::sync::transfer::{self, TransferError};

fn me() -> Identity {
    Identity::generate(Profile {
        name: "me".into(),
        email: None,
    })
    .unwrap()
}

fn member(identity: &Identity) -> MemberId {
    MemberId(identity.verifying_key().to_bytes())
}

/// A remote home holding one session owned by `ME`; returns its dir and the session id.
fn remote_with_session(owner: &Identity) -> (tempfile::TempDir, SessionId) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    store.set_local_owner(&member(owner)).unwrap();
    let report = ingest(
        &store,
        &[Incoming {
            session: sample::session(3, 0, Shape::default()),
            path: String::new(),
        }],
        0,
    )
    .unwrap();
    (dir, report.sessions[0].id)
}

fn local(owner: &Identity) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    store.set_local_owner(&member(owner)).unwrap();
    (dir, store)
}

fn reply(parent: tapes::protocol::NodeId, text: &str) -> StoredObject {
    StoredObject::encode(&Node {
        body: NodeBody {
            parent: Some(parent),
            role: Role::User,
            model: String::new(),
            blocks: vec![ContentBlock::text(text)],
        },
        meta: NodeMeta::default(),
    })
}

#[test]
fn pull_then_push_appends_only_the_delta() {
    let me = me();
    let (remote_dir, id) = remote_with_session(&me);
    let remote = PathRemote::open("origin", remote_dir.path()).unwrap();
    let (_dir, store) = local(&me);
    let pulled = transfer::pull(&store, &remote, &id).unwrap();
    assert_eq!((pulled.new_nodes, pulled.count), (10, 10));
    let base = pulled.record.head;

    // Continue the session locally by one message.
    let next = reply(base, "and now add a test for it");
    let mut record = pulled.record.clone();
    record.head = next.id;
    record.summary.messages += 1;
    let raw = store.session_raw(&id).unwrap();
    store
        .commit(
            &[next.clone()],
            &[tapes::store::backend::RefUpdate {
                key: tapes::session::session_ref_key(&id),
                expected: raw,
                new: Some(record.encode()),
            }],
        )
        .unwrap();

    // A second machine of mine continues from the same base, differently.
    let (_other_dir, other) = local(&me);
    transfer::pull(&other, &remote, &id).unwrap();
    let elsewhere = reply(base, "no, refactor it first");
    let mut diverged = pulled.record.clone();
    diverged.head = elsewhere.id;
    diverged.summary.messages += 1;
    other
        .commit(
            &[elsewhere],
            &[tapes::store::backend::RefUpdate {
                key: tapes::session::session_ref_key(&id),
                expected: other.session_raw(&id).unwrap(),
                new: Some(diverged.encode()),
            }],
        )
        .unwrap();

    let pushed = transfer::push(&store, &me, &remote, &id, Some(&base)).unwrap();
    assert_eq!(pushed.nodes, 1, "only the node after the base travels");
    assert_eq!(remote.session(&id).unwrap().unwrap().head, next.id);

    // The same push again (a retry whose answer was lost) finds its update there: no
    // conflict, nothing moves (SPEC.md §10).
    let again = transfer::push(&store, &me, &remote, &id, Some(&base)).unwrap();
    assert_eq!(again.nodes, 0, "a retried push stores nothing new");
    assert_eq!(remote.session(&id).unwrap().unwrap().head, next.id);

    // Another update from the old base is the seed's 409.
    let err = transfer::push(&other, &me, &remote, &id, Some(&base)).unwrap_err();
    assert!(
        matches!(err, TransferError::Remote(RemoteError::Conflict { .. })),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("tapes pull") && text.contains("tapes branch"),
        "{text}"
    );
}

#[test]
fn pulling_someone_elses_session_is_not_found() {
    let (remote_dir, id) = remote_with_session(&me());
    let remote = PathRemote::open("origin", remote_dir.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    store.set_local_owner(&MemberId([9; 32])).unwrap();
    let err = transfer::pull(&store, &remote, &id).unwrap_err();
    assert_eq!(err.to_string(), "Session not found.");
    assert!(store.sessions().unwrap().is_empty(), "nothing was stored");
    let missing = transfer::pull(&store, &remote, &SessionId([1; 16])).unwrap_err();
    assert_eq!(missing.to_string(), "Session not found.");
}

#[test]
fn thirty_two_writers_race_one_push_and_exactly_one_wins() {
    let me = me();
    let (remote_dir, id) = remote_with_session(&me);
    let remote = Arc::new(PathRemote::open("origin", remote_dir.path()).unwrap());
    let start = remote.session(&id).unwrap().unwrap();
    let base = start.head;

    let results: Vec<(StoredObject, Result<u64, RemoteError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let remote = remote.clone();
                let start = start.clone();
                let me = &me;
                scope.spawn(move || {
                    let node = reply(base, &format!("writer {i} continues"));
                    let mut record = start.clone();
                    record.head = node.id;
                    record.summary.messages += 1;
                    let signature = RefSignature::sign(me.signing_key(), &id, Some(&base), &record);
                    let result = remote.push(&plan(&id, Some(&base), &node, &record, &signature));
                    (node, result)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let winners: Vec<&StoredObject> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one push wins");
    let winner = winners[0];
    for (node, result) in &results {
        if let Err(e) = result {
            match e {
                RemoteError::Conflict {
                    current, expected, ..
                } => {
                    assert_eq!(*expected, Some(base));
                    // Losers raced either before the write (they see the winner) or inside it.
                    assert_eq!(
                        *current,
                        Some(winner.id),
                        "loser {} was told the wrong head",
                        node.id.short()
                    );
                }
                other => panic!("a loser got {other} instead of a conflict"),
            }
            assert!(e.to_string().contains("tapes pull"), "{e}");
        }
    }
    // The remote's history is linear: base, then the winner's node; nothing of it is missing.
    let head = remote.session(&id).unwrap().unwrap().head;
    assert_eq!(head, winner.id);
    let mut have = |_: &tapes::protocol::NodeId| false;
    let chain = remote.fetch_chain(&id, &head, &mut have).unwrap();
    assert_eq!(chain.len(), 11);
    assert_eq!(chain[10].id, winner.id);
    assert_eq!(chain[9].id, base);
}

#[test]
fn only_the_owner_moves_a_ref_and_only_with_a_valid_signature() {
    let me = me();
    let mallory = self::me();
    let (remote_dir, id) = remote_with_session(&me);
    let remote = PathRemote::open("origin", remote_dir.path()).unwrap();
    let start = remote.session(&id).unwrap().unwrap();
    let node = reply(start.head, "mallory was here");
    let mut record = start.clone();
    record.head = node.id;

    // Mallory signs an update of my session: the record still names me as owner.
    let forged = RefSignature::sign(mallory.signing_key(), &id, Some(&start.head), &record);
    let err = remote
        .push(&plan(&id, Some(&start.head), &node, &record, &forged))
        .unwrap_err();
    assert!(matches!(err, RemoteError::Unauthorized { .. }), "{err}");
    // ...or claims the session for herself.
    let mut taken = record.clone();
    taken.owner = Some(member(&mallory));
    let claim = RefSignature::sign(mallory.signing_key(), &id, Some(&start.head), &taken);
    let err = remote
        .push(&plan(&id, Some(&start.head), &node, &taken, &claim))
        .unwrap_err();
    assert!(err.to_string().contains("belongs to someone else"), "{err}");
    // A signature over a different update does not carry over.
    let mut other = record.clone();
    other.title = Some("something else".into());
    let mine = RefSignature::sign(me.signing_key(), &id, Some(&start.head), &other);
    let err = remote
        .push(&plan(&id, Some(&start.head), &node, &record, &mine))
        .unwrap_err();
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );
    assert_eq!(
        remote.session(&id).unwrap().unwrap().head,
        start.head,
        "nothing moved"
    );

    let good = RefSignature::sign(me.signing_key(), &id, Some(&start.head), &record);
    remote
        .push(&plan(&id, Some(&start.head), &node, &record, &good))
        .unwrap();
    assert_eq!(remote.session(&id).unwrap().unwrap().head, node.id);
}

/// A push as a transport sends it, here built by hand so a test can forge any part of it.
fn plan(
    id: &SessionId,
    base: Option<&tapes::protocol::NodeId>,
    node: &StoredObject,
    record: &tapes::session::SessionRecord,
    signature: &RefSignature,
) -> tapes::sync::remote::PushPlan {
    tapes::sync::remote::PushPlan {
        session: *id,
        base: base.copied(),
        objects: vec![node.clone()],
        record: record.clone(),
        signature: signature.clone(),
    }
}
