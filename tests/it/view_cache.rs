//! The per-peer view kept current on write (SPEC.md §15.2, "Keeping views current"): after a
//! cached view was built, a new share, an unshare, a new push, an expiry and a member's removal
//! are all seen by the next fetch, on both sides, from memory and from the file a new process
//! reads; a damaged cache file is rebuilt.

use tapes::share::access::{
    forget_cached_views, kept_file_is_current, view_for, view_for_cached, ViewItem,
};
use tapes::share::{self, Audience, SecretPolicy, ShareOptions};
use tapes::team;
use tapes::testing::{join, Node as TestNode};

/// The cached view of `peer` in `node`'s store equals the one built from scratch, from memory
/// and from the file alone (a fresh process).
fn cached_is_current(node: &TestNode, peer: &TestNode, now: i64) -> tapes::share::access::View {
    let fresh = view_for(&node.store, &node.identity, &peer.id(), now).unwrap();
    let cached = view_for_cached(&node.store, &node.identity, &peer.id(), now).unwrap();
    assert_eq!(
        *cached, fresh,
        "{}'s cached view of {}",
        node.name, peer.name
    );
    forget_cached_views();
    let from_file = view_for_cached(&node.store, &node.identity, &peer.id(), now).unwrap();
    assert_eq!(
        *from_file, fresh,
        "{}'s view of {} from its file",
        node.name, peer.name
    );
    fresh
}

fn sessions_in(view: &tapes::share::access::View) -> Vec<tapes::protocol::SessionId> {
    view.items
        .values()
        .filter_map(|item| match item {
            ViewItem::Session { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_view_sees_shares_unshares_pushes_and_removals() {
    let alice = TestNode::new("alice").await.unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    let dave = TestNode::new("dave").await.unwrap();
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    join(&alice, &bob, &team).await.unwrap();
    join(&alice, &dave, &team).await.unwrap();
    let first = alice.import(1, 2).unwrap();
    alice
        .share(&first, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    let report = bob.fetch_from(&alice).await.unwrap();
    assert_eq!(report.new_sessions, 1, "{report:?}");
    // Both sides now hold a cached view; nothing changed: one round trip, nothing moved.
    let noop = bob.fetch_from(&alice).await.unwrap();
    assert!(noop.is_empty(), "{noop:?}");
    assert_eq!(noop.round_trips, 1);
    cached_is_current(&alice, &bob, tapes::now_ms());
    cached_is_current(&bob, &alice, tapes::now_ms());

    // A share made after the views were cached reaches the next fetch.
    let second = alice.import(2, 1).unwrap();
    alice
        .share(&second, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    assert!(sessions_in(&cached_is_current(&alice, &bob, tapes::now_ms())).contains(&second));
    let report = bob.fetch_from(&alice).await.unwrap();
    assert_eq!(report.new_sessions, 1, "{report:?}");
    assert!(bob.has(&second).unwrap());
    // Bob's own kept view took in what the fetch stored, without a rebuild.
    assert!(kept_file_is_current(&bob.store, &bob.identity, &alice.id(), tapes::now_ms()).unwrap());
    cached_is_current(&bob, &alice, tapes::now_ms());

    // New nodes on a shared session (what a push or the owner's agent adds).
    tapes::session::sample::continue_session(&alice.store, &first, &["more".to_string()]).unwrap();
    let report = bob.fetch_from(&alice).await.unwrap();
    assert_eq!(report.updated_sessions, 1, "{report:?}");
    assert_eq!(report.nodes, 1, "{report:?}");
    assert_eq!(
        bob.store.session(&first).unwrap().unwrap().head,
        alice.store.session(&first).unwrap().unwrap().head
    );
    assert!(kept_file_is_current(&bob.store, &bob.identity, &alice.id(), tapes::now_ms()).unwrap());
    cached_is_current(&bob, &alice, tapes::now_ms());
    let noop = bob.fetch_from(&alice).await.unwrap();
    assert!(noop.is_empty(), "{noop:?}");
    assert_eq!(noop.round_trips, 1);

    // An unshare: the session leaves the view; bob learns of the revoked share.
    share::unshare(&alice.store, &alice.identity, &first, None, tapes::now_ms()).unwrap();
    let view = cached_is_current(&alice, &bob, tapes::now_ms());
    assert!(!sessions_in(&view).contains(&first));
    let report = bob.fetch_from(&alice).await.unwrap();
    assert_eq!(report.shares, 1, "{report:?}");
    cached_is_current(&bob, &alice, tapes::now_ms());

    // Dave is removed: his cached view loses every team item, and a later share misses him.
    let before = cached_is_current(&alice, &dave, tapes::now_ms());
    assert!(sessions_in(&before).contains(&second));
    let mut chain = team::load(&alice.store, &team).unwrap();
    team::remove(
        &alice.store,
        &alice.identity,
        &mut chain,
        &dave.id(),
        tapes::now_ms(),
    )
    .unwrap();
    let after = cached_is_current(&alice, &dave, tapes::now_ms());
    assert!(sessions_in(&after).is_empty(), "{after:?}");
    let later = alice.import(3, 1).unwrap();
    alice
        .share(&later, Audience::Team(team), SecretPolicy::Allow)
        .unwrap();
    dave.fetch_from(&alice).await.unwrap();
    assert!(!dave.has(&later).unwrap());
    bob.fetch_from(&alice).await.unwrap();
    assert!(bob.has(&later).unwrap());
    bob.fsck_clean().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_view_ends_a_share_at_its_expiry_and_survives_a_damaged_file() {
    let alice = TestNode::new("alice").await.unwrap();
    let carol = TestNode::new("carol").await.unwrap();
    let id = alice.import(7, 1).unwrap();
    let now = tapes::now_ms();
    share::share(
        &alice.store,
        &alice.identity,
        &id,
        &ShareOptions {
            audience: Audience::Public,
            title: None,
            note: None,
            expires_ms: Some(now + 60_000),
            secrets: SecretPolicy::Allow,
        },
        now,
    )
    .unwrap();
    // Cached while the share is live, asked again after it expired: the session is gone
    // without any write to the store.
    assert_eq!(
        sessions_in(&cached_is_current(&alice, &carol, now)),
        vec![id]
    );
    assert!(sessions_in(&cached_is_current(&alice, &carol, now + 60_001)).is_empty());

    // A damaged cache file is rebuilt, not believed.
    let dir = alice.store.path().join("views");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for file in &files {
        let mut bytes = std::fs::read(file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(file, bytes).unwrap();
    }
    forget_cached_views();
    assert_eq!(
        sessions_in(&cached_is_current(&alice, &carol, now)),
        vec![id]
    );
    let report = carol.fetch_from(&alice).await.unwrap();
    assert_eq!(report.new_sessions, 1, "{report:?}");
}

/// A `tapes fetch` process starts with only the head of its kept view's file (the opening
/// reconciliation message): a peer that answers "in sync" never has the items read, and a
/// peer with something new has them read, or rebuilt when the file's body is damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_fetch_reads_only_the_head_of_its_kept_view() {
    let alice = TestNode::new("alice").await.unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    // More items than one reconciliation leaf (16), so that the opening is fingerprints, as
    // in any store of some size.
    for seed in 1..=10 {
        let id = alice.import(seed, 1).unwrap();
        alice
            .share(&id, Audience::Public, SecretPolicy::Allow)
            .unwrap();
    }
    assert_eq!(bob.fetch_from(&alice).await.unwrap().new_sessions, 10);
    // (A process that finds its kept file stale rebuilds it.)
    forget_cached_views();
    assert!(bob.fetch_from(&alice).await.unwrap().is_empty());
    assert!(kept_file_is_current(&bob.store, &bob.identity, &alice.id(), tapes::now_ms()).unwrap());
    let file = bob.store.path().join("views").join(
        std::fs::read_dir(bob.store.path().join("views"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name(),
    );
    let damage_body = || {
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&file, &bytes).unwrap();
        bytes
    };

    // A new process, a damaged body, nothing new: in sync after one round trip, and the file
    // is as it was (its items were never read, so never found damaged and rewritten).
    let damaged = damage_body();
    forget_cached_views();
    let noop = bob.fetch_from(&alice).await.unwrap();
    assert!(noop.is_empty(), "{noop:?}");
    assert_eq!(noop.round_trips, 1);
    assert_eq!(std::fs::read(&file).unwrap(), damaged);

    // Something new: the items are needed, the damaged body is not believed, the view is
    // rebuilt and the fetch gets exactly the new session.
    let second = alice.import(20, 1).unwrap();
    alice
        .share(&second, Audience::Public, SecretPolicy::Allow)
        .unwrap();
    forget_cached_views();
    let report = bob.fetch_from(&alice).await.unwrap();
    assert_eq!(report.new_sessions, 1, "{report:?}");
    assert!(bob.has(&second).unwrap());
    cached_is_current(&bob, &alice, tapes::now_ms());
    forget_cached_views();
    let noop = bob.fetch_from(&alice).await.unwrap();
    assert!(noop.is_empty(), "{noop:?}");

    // A damaged head (its checksum, a length past the bound, the file cut short) is not
    // believed either: the fetch rebuilds the view, finds nothing new and keeps it again.
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("checksum", |b| b[12] ^= 0x55),
        ("length", |b| {
            b[4..8].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
        ("cut short", |b| b.truncate(20)),
    ];
    for (what, damage) in damages {
        let mut bytes = std::fs::read(&file).unwrap();
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        forget_cached_views();
        assert!(
            !kept_file_is_current(&bob.store, &bob.identity, &alice.id(), tapes::now_ms()).unwrap(),
            "{what}"
        );
        let noop = bob.fetch_from(&alice).await.unwrap();
        assert!(noop.is_empty(), "{what}: {noop:?}");
        assert!(
            kept_file_is_current(&bob.store, &bob.identity, &alice.id(), tapes::now_ms()).unwrap(),
            "{what}: the view was not kept again"
        );
    }
    bob.fsck_clean().unwrap();
}
