//! Replication over iroh between several real nodes on 127.0.0.1 (relays and discovery off):
//! join over the connection, what members, non-members and removed members get, a push race,
//! an interrupted transfer that resumes, and a peer that sends a forged node.

use std::sync::Arc;

use iroh::protocol::Router;
use tapes::identity::{Identity, Profile};
use tapes::import::ingest::{ingest, Incoming};
use tapes::peer::addr::PeerAddr;
use tapes::peer::client::connect;
use tapes::peer::PeerError;
use tapes::protocol::{ContentBlock, Node, NodeBody, NodeMeta, Role, SessionId, StoredObject};
use tapes::session::sample::{self, Shape};
use tapes::session::session_ref_key;
use tapes::share::{Audience, SecretPolicy};
use tapes::store::backend::RefUpdate;
use tapes::store::Store;
use tapes::team::{self};

use tapes::testing::{join, Node as TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_get_team_shares_others_only_public_and_removed_members_nothing_new() {
    let alice = TestNode::new("alice").await.unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    let carol = TestNode::new("carol").await.unwrap();
    let dave = TestNode::new("dave").await.unwrap();
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    join(&alice, &bob, &team).await.unwrap();
    join(&alice, &dave, &team).await.unwrap();

    let team_session = alice.import(1, 2).unwrap();
    let public_session = alice.import(2, 1).unwrap();
    let private_session = alice.import(3, 1).unwrap();
    alice
        .share(&team_session, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    alice
        .share(&public_session, Audience::Public, SecretPolicy::Allow)
        .unwrap();

    // Bob, a member: the team share and the public one; never the private session.
    let conn = bob.dial(&alice, "alice").await.unwrap();
    let report = conn.fetch(&bob.store, &bob.identity).await.unwrap();
    assert_eq!(report.new_sessions, 2, "{report:?}");
    assert!(bob.has(&team_session).unwrap() && bob.has(&public_session).unwrap());
    assert!(!bob.has(&private_session).unwrap());
    assert_eq!(
        bob.store.session(&team_session).unwrap().unwrap(),
        alice.store.session(&team_session).unwrap().unwrap()
    );
    assert_eq!(report.shares, 2);
    bob.fsck_clean().unwrap();

    // Nothing changed: one round trip, a few hundred bytes.
    let again = bob.dial(&alice, "alice").await.unwrap();
    let noop = again.fetch(&bob.store, &bob.identity).await.unwrap();
    assert!(noop.is_empty(), "{noop:?}");
    assert_eq!(noop.round_trips, 1);
    assert!(noop.bytes_sent + noop.bytes_received < 1024, "{noop:?}");

    // Carol is in no team with alice: only the public share.
    let conn = carol.dial(&alice, "alice").await.unwrap();
    let report = conn.fetch(&carol.store, &carol.identity).await.unwrap();
    assert_eq!(report.new_sessions, 1);
    assert!(carol.has(&public_session).unwrap());
    assert!(!carol.has(&team_session).unwrap() && !carol.has(&private_session).unwrap());

    // Dave got the team share while a member; after alice removes him, a new share does not
    // reach him.
    let conn = dave.dial(&alice, "alice").await.unwrap();
    conn.fetch(&dave.store, &dave.identity).await.unwrap();
    assert!(dave.has(&team_session).unwrap());
    let mut chain = team::load(&alice.store, &team).unwrap();
    team::remove(
        &alice.store,
        &alice.identity,
        &mut chain,
        &dave.id(),
        tapes::now_ms(),
    )
    .unwrap();
    let later = alice.import(4, 1).unwrap();
    alice
        .share(&later, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    let conn = dave.dial(&alice, "alice").await.unwrap();
    let report = conn.fetch(&dave.store, &dave.identity).await.unwrap();
    assert!(!dave.has(&later).unwrap());
    assert_eq!(
        report.new_sessions + report.updated_sessions,
        0,
        "{report:?}"
    );
    // Bob still gets it, sealed under the rotated key.
    let conn = bob.dial(&alice, "alice").await.unwrap();
    let report = conn.fetch(&bob.store, &bob.identity).await.unwrap();
    assert!(bob.has(&later).unwrap(), "{report:?}");
    bob.fsck_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_pushing_is_refused_and_changes_nothing() {
    let alice = TestNode::new("alice").await.unwrap();
    let mallory = TestNode::new("mallory").await.unwrap();
    team::create(&alice.store, &alice.identity, "core", tapes::now_ms()).unwrap();
    let id = mallory.import(5, 1).unwrap();
    let conn = mallory.dial(&alice, "alice").await.unwrap();
    let err = conn
        .push(&mallory.store, &mallory.identity, id, None)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("none of this node's teams"),
        "{err}"
    );
    assert!(!alice.has(&id).unwrap());
    let err = conn
        .fetch(&mallory.store, &mallory.identity)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shares nothing with you"), "{err}");
}

/// Appends one node to a session in `node`'s store, as continuing it would.
fn append(node: &TestNode, id: &SessionId, text: &str) {
    sample::continue_session(&node.store, id, &[text.to_string()]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_machines_pushing_from_one_base_one_wins_the_other_gets_the_conflict_hint() {
    let bob = TestNode::new("bob").await.unwrap();
    let laptop = TestNode::new("alice").await.unwrap();
    // The same identity on a second machine.
    let key = laptop.identity.signing_key().to_bytes();
    let desktop = TestNode::with_identity(
        Identity::from_parts(
            ed25519_dalek::SigningKey::from_bytes(&key),
            laptop.identity.age_identity().clone(),
            Profile {
                name: "alice".into(),
                email: None,
            },
        ),
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    let team = team::create(&bob.store, &bob.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    join(&bob, &laptop, &team).await.unwrap();
    let id = laptop.import(6, 1).unwrap();
    let base = laptop.store.session(&id).unwrap().unwrap().head;
    laptop
        .dial(&bob, "bob")
        .await
        .unwrap()
        .push(&laptop.store, &laptop.identity, id, None)
        .await
        .unwrap();
    // The desktop pulls its own session, then both machines continue it.
    let report = desktop
        .dial(&bob, "bob")
        .await
        .unwrap()
        .pull(&desktop.store, &desktop.identity, id)
        .await
        .unwrap();
    assert_eq!(report.new_sessions, 1, "{report:?}");
    append(&laptop, &id, "from the laptop");
    append(&desktop, &id, "from the desktop");
    let a = laptop.dial(&bob, "bob").await.unwrap();
    let b = desktop.dial(&bob, "bob").await.unwrap();
    let (ra, rb) = tokio::join!(
        a.push(&laptop.store, &laptop.identity, id, Some(base)),
        b.push(&desktop.store, &desktop.identity, id, Some(base)),
    );
    let (won, lost) = match (ra, rb) {
        (Ok(_), Err(e)) => (&laptop, e),
        (Err(e), Ok(_)) => (&desktop, e),
        other => panic!("exactly one push must win: {other:?}"),
    };
    assert!(matches!(lost, PeerError::Conflict { .. }), "{lost}");
    assert!(lost.to_string().contains("tapes pull"), "{lost}");
    assert_eq!(
        bob.store.session(&id).unwrap().unwrap().head,
        won.store.session(&id).unwrap().unwrap().head
    );
    bob.fsck_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_without_resending_and_converges() {
    let alice = TestNode::new("alice").await.unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    join(&alice, &bob, &team).await.unwrap();
    let big = alice.import(7, 4000).unwrap();
    alice
        .share(&big, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    let nodes = alice
        .store
        .chain(&alice.store.session(&big).unwrap().unwrap().head)
        .unwrap()
        .len();

    // Cut the connection once about a third of the session has arrived.
    let conn = bob.dial(&alice, "alice").await.unwrap();
    let watcher = conn.clone();
    let cut = tokio::spawn(async move {
        while watcher.counters.received() < 1_500_000 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        watcher.close();
    });
    let first = conn.fetch(&bob.store, &bob.identity).await;
    cut.await.unwrap();
    assert!(
        first.is_err(),
        "the cut must interrupt the fetch: {first:?}"
    );
    assert!(
        !bob.has(&big).unwrap(),
        "no ref before all nodes are stored"
    );
    bob.fsck_clean().unwrap();

    let conn = bob.dial(&alice, "alice").await.unwrap();
    let second = conn.fetch(&bob.store, &bob.identity).await.unwrap();
    assert_eq!(second.new_sessions, 1, "{second:?}");
    assert!(
        second.nodes < nodes,
        "resumed: {} of {nodes} nodes sent again",
        second.nodes
    );
    assert_eq!(
        bob.store.session(&big).unwrap().unwrap(),
        alice.store.session(&big).unwrap().unwrap()
    );
    bob.fsck_clean().unwrap();
    let third = bob
        .dial(&alice, "alice")
        .await
        .unwrap()
        .fetch(&bob.store, &bob.identity)
        .await
        .unwrap();
    assert!(third.is_empty(), "{third:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_id_does_not_match_is_rejected_and_nothing_is_stored() {
    forged_node_is_rejected(false).await;
}

/// The same through a team share: the batch travels keyed (SPEC.md §15.3) and is checked
/// after it is opened exactly as a plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_node_in_a_keyed_team_batch_is_rejected_and_nothing_is_stored() {
    forged_node_is_rejected(true).await;
}

async fn forged_node_is_rejected(team_share: bool) {
    let alice = TestNode::new("alice").await.unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    let id = alice.import(8, 1).unwrap();
    let audience = if team_share {
        let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
            .unwrap()
            .team_id();
        join(&alice, &bob, &team).await.unwrap();
        Audience::Team(team)
    } else {
        Audience::Public
    };
    alice.share(&id, audience, SecretPolicy::Allow).unwrap();
    // Alice's store is tampered with: a node stored under an id that is not its hash ends
    // the session (written past verification, as a broken or hostile peer would serve it).
    let mut record = alice.store.session(&id).unwrap().unwrap();
    let raw = alice.store.session_raw(&id).unwrap();
    let forged = StoredObject::encode(&Node {
        body: NodeBody {
            parent: Some(record.head),
            role: Role::Assistant,
            model: String::new(),
            blocks: vec![ContentBlock::text("not what the id says")],
        },
        meta: NodeMeta::default(),
    });
    let fake = tapes::protocol::NodeId([0xab; 32]);
    record.head = fake;
    alice
        .store
        .commit(
            &[StoredObject {
                id: fake,
                bytes: forged.bytes,
            }],
            &[RefUpdate {
                key: session_ref_key(&id),
                expected: raw,
                new: Some(record.encode()),
            }],
        )
        .unwrap();
    let before = snapshot(&bob.store);
    let err = bob
        .dial(&alice, "alice")
        .await
        .unwrap()
        .fetch(&bob.store, &bob.identity)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PeerError::BadObject { .. }), "{text}");
    assert!(
        text.contains("alice") && text.contains(&fake.short()),
        "{text}"
    );
    assert!(!bob.has(&id).unwrap());
    assert_eq!(
        snapshot(&bob.store),
        before,
        "a rejected batch leaves nothing behind"
    );
}

/// Every object and ref of a store, to compare before and after.
fn snapshot(store: &Store) -> (Vec<tapes::protocol::NodeId>, Vec<(Vec<u8>, Vec<u8>)>) {
    let objects = store.storage().objects().map(|o| o.unwrap().0).collect();
    let refs = store.storage().refs(b"").map(|r| r.unwrap()).collect();
    (objects, refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_peer_receives_carries_no_local_paths() {
    let alice = TestNode::new("alice").await.unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    join(&alice, &bob, &team).await.unwrap();
    let transcript = "/home/alice/.claude/projects/-home-alice-src-app/0a1b2c3d.jsonl";
    let report = ingest(
        &alice.store,
        &[Incoming {
            session: sample::session(8, 0, Shape::default()),
            path: transcript.into(),
        }],
        0,
    )
    .unwrap();
    let id = report.sessions[0].id;
    alice
        .share(&id, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();

    let conn = bob.dial(&alice, "alice").await.unwrap();
    conn.fetch(&bob.store, &bob.identity).await.unwrap();
    let ours = alice.store.session(&id).unwrap().unwrap();
    let theirs = bob.store.session(&id).unwrap().unwrap();
    assert_eq!(ours.source.path, transcript, "kept here");
    assert_eq!(theirs.source.path, "", "never sent");
    assert_eq!(theirs.head, ours.head);
    for (_, node) in bob.store.chain(&theirs.head).unwrap() {
        let meta = format!("{:?}", node.meta);
        assert!(!meta.contains("/home/"), "{meta}");
        assert_eq!(node.meta.cwd, node.meta.project, "{meta}");
    }
    bob.fsck_clean().unwrap();

    // What alice serves is stable: fetching again brings nothing.
    let again = bob.dial(&alice, "alice").await.unwrap();
    let noop = again.fetch(&bob.store, &bob.identity).await.unwrap();
    assert!(noop.is_empty(), "{noop:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_an_older_history_never_rewinds_mine() {
    let alice = TestNode::new("alice").await.unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    join(&alice, &bob, &team).await.unwrap();
    let id = alice.import(21, 2).unwrap();
    append(&alice, &id, "the newest message");
    alice
        .share(&id, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    bob.dial(&alice, "alice")
        .await
        .unwrap()
        .fetch(&bob.store, &bob.identity)
        .await
        .unwrap();
    let newest = bob.store.session(&id).unwrap().unwrap();
    assert_eq!(newest.summary.messages, 7);

    // Alice's store goes back to an older head (an old backup restored), signed by her as
    // every served record is.
    let raw = alice.store.session_raw(&id).unwrap().unwrap();
    let mut older = tapes::session::SessionRecord::decode(&raw).unwrap();
    let chain = alice.store.chain_ids(&older.head).unwrap();
    older.head = chain[3];
    older.summary.messages = 4;
    alice
        .store
        .commit(
            &[],
            &[RefUpdate {
                key: session_ref_key(&id),
                expected: Some(raw),
                new: Some(older.encode()),
            }],
        )
        .unwrap();
    bob.dial(&alice, "alice")
        .await
        .unwrap()
        .fetch(&bob.store, &bob.identity)
        .await
        .unwrap();
    assert_eq!(bob.store.session(&id).unwrap().unwrap(), newest);
    bob.fsck_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_added_after_a_share_wait_for_the_secret_gate_before_they_are_served() {
    let alice = TestNode::new("alice").await.unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    join(&alice, &bob, &team).await.unwrap();
    let id = alice.import(22, 1).unwrap();
    let other = alice.import(23, 1).unwrap();
    alice
        .share(&id, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    alice
        .share(&other, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    bob.dial(&alice, "alice")
        .await
        .unwrap()
        .fetch(&bob.store, &bob.identity)
        .await
        .unwrap();
    let shared = bob.store.session(&id).unwrap().unwrap();

    // Alice goes on in the session and pastes a key; the other session grows harmlessly.
    append(
        &alice,
        &id,
        "use AKIAIOSFODNN7EXAMPLE with the secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    append(&alice, &other, "nothing secret here");
    let report = bob
        .dial(&alice, "alice")
        .await
        .unwrap()
        .fetch(&bob.store, &bob.identity)
        .await
        .unwrap();
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert!(report.rejected[0].contains("secret gate"), "{report:?}");
    assert_eq!(bob.store.session(&id).unwrap().unwrap(), shared);
    // The rest of the fetch went on.
    assert_eq!(
        bob.store.session(&other).unwrap().unwrap().summary.messages,
        alice
            .store
            .session(&other)
            .unwrap()
            .unwrap()
            .summary
            .messages
    );
    assert!(!bob
        .store
        .chain(&bob.store.session(&id).unwrap().unwrap().head)
        .unwrap()
        .iter()
        .any(|(_, n)| format!("{:?}", n.body.blocks).contains("AKIA")));

    // Sharing again (here: allowing it) passes the gate; the session then travels.
    alice
        .share(&id, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    bob.dial(&alice, "alice")
        .await
        .unwrap()
        .fetch(&bob.store, &bob.identity)
        .await
        .unwrap();
    assert_eq!(
        bob.store.session(&id).unwrap().unwrap().head,
        alice.store.session(&id).unwrap().unwrap().head
    );
}

/// A peer that speaks another `tapes/sync` version: the dial says so, naming both versions,
/// instead of a TLS alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaking_another_protocol_version_is_named_as_such() {
    #[derive(Debug, Clone)]
    struct Nothing;
    impl iroh::protocol::ProtocolHandler for Nothing {
        async fn accept(
            &self,
            _conn: iroh::endpoint::Connection,
        ) -> Result<(), iroh::protocol::AcceptError> {
            Ok(())
        }
    }
    let future = Identity::generate(Profile {
        name: "future".into(),
        email: None,
    })
    .unwrap();
    let endpoint = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .secret_key(tapes::peer::endpoint::secret_key(&future))
        .alpns(vec![b"tapes/sync/9".to_vec()])
        .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap()
        .bind()
        .await
        .unwrap();
    let router = Router::builder(endpoint.clone())
        .accept(b"tapes/sync/9".to_vec(), Nothing)
        .spawn();
    let me = TestNode::new("me").await.unwrap();
    let addr = PeerAddr::of_endpoint(router.endpoint());
    let err = match connect(me.router.endpoint(), &addr, "future").await {
        Ok(_) => panic!("a peer on another protocol version answered"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("tapes/sync/3") && err.contains("another version of the tapes protocol"),
        "{err}"
    );
    router.shutdown().await.unwrap();
}
