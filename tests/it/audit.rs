//! The teams' audit logs (SPEC.md §18) over real loopback iroh endpoints: who shared, who
//! fetched from a member's node and from the relay, who deposited — each writer's chain signed
//! by its node (a member, or the relay the team registered), merged by members on fetch, and
//! checked by `audit verify`, which finds a removed, altered or reordered entry. Entries from a
//! stranger or out of their writer's chain are refused with the reason and change nothing.

use std::sync::Arc;

use tapes::audit::{self, AuditAction, AuditEntry, Event, Filter, SignedAuditEntry};
use tapes::protocol::{MemberId, SessionId};
use tapes::relay::run::start;
use tapes::share::Audience;
use tapes::store::backend::RefUpdate;
use tapes::store::keys;
use tapes::team;
use tapes::testing::Node;

use crate::relay::{options, team_on_relay, Member};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_the_relay_log_every_access_and_members_merge_the_logs() {
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = start(relay_dir.path(), &options(), Arc::new(|_| {}))
        .await
        .unwrap();
    let ticket = relay.ticket.clone();
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team_on_relay(&alice, &ticket, "core").await;
    tapes::testing::join(&alice, &bob, &team).await.unwrap();

    // Alice shares one session; bob fetches it from her node.
    let first = alice.session_with(1, &["first"]);
    alice.share(&first, Audience::Team(team));
    bob.fetch_from(&alice).await.unwrap();
    assert!(bob.has(&first));

    // A second one goes through the relay: alice deposits it, bob fetches it there.
    let second = alice.session_with(2, &["second"]);
    alice.share(&second, Audience::Team(team));
    alice.sync(&ticket).await;
    bob.sync(&ticket).await;
    assert!(bob.has(&second));

    // Bob merges alice's log and the relay's.
    let conn = bob.dial(&alice, "alice").await.unwrap();
    let from_alice = tapes::peer::audit_sync::pull(&conn, &bob.store, &bob.identity)
        .await
        .unwrap();
    assert!(from_alice.refused.is_empty(), "{from_alice:?}");
    assert!(
        from_alice.new >= 3,
        "two shares and bob's fetch: {from_alice:?}"
    );
    let conn = bob.relay(&ticket).await.unwrap();
    let from_relay = tapes::peer::audit_sync::pull(&conn, &bob.store, &bob.identity)
        .await
        .unwrap();
    assert!(from_relay.refused.is_empty(), "{from_relay:?}");
    assert!(
        from_relay.new >= 2,
        "alice's deposit and bob's fetch: {from_relay:?}"
    );

    let rows = audit::list(&bob.store, &Filter::default()).unwrap();
    let has = |action: &str, who: MemberId, session: SessionId, writer: Option<MemberId>| {
        rows.iter().any(|r| {
            r.action == action
                && r.actor == who
                && r.session == Some(session)
                && writer.is_none_or(|w| r.writer == w)
        })
    };
    assert!(has("share", alice.id(), first, Some(alice.id())));
    assert!(has("fetch", bob.id(), first, Some(alice.id())));
    assert!(has("deposit", alice.id(), second, None));
    assert!(has("fetch", bob.id(), second, None));
    // The relay's entries are signed by the relay, whose key bob recorded when syncing.
    assert!(rows
        .iter()
        .any(|r| r.action == "deposit" && r.writer != alice.id() && r.writer != bob.id()));
    let only_first = audit::list(
        &bob.store,
        &Filter {
            session: Some(first),
            ..Filter::default()
        },
    )
    .unwrap();
    assert!(only_first.iter().all(|r| r.session == Some(first)));
    assert_eq!(audit::view_count(&bob.store, &first).unwrap(), 1);
    let report = audit::verify(&bob.store).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.writers >= 2);

    // A second pull brings nothing new.
    let conn = bob.dial(&alice, "alice").await.unwrap();
    let again = tapes::peer::audit_sync::pull(&conn, &bob.store, &bob.identity)
        .await
        .unwrap();
    assert_eq!(again.new, 0, "{again:?}");

    // The relay keeps the log sealed: bob's name is not in its files.
    assert!(crate::relay::files_containing(relay_dir.path(), "at the relay").is_empty());
}

fn event(by: &Node, action: AuditAction, session: SessionId) -> Event {
    Event {
        action,
        actor: by.id(),
        actor_name: by.name.clone(),
        session: Some(session),
        detail: String::new(),
    }
}

/// A snapshot of the refs of `store` under `audit`.
fn audit_refs(node: &Node) -> Vec<(Vec<u8>, Vec<u8>)> {
    node.store
        .storage()
        .refs(b"audit")
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_and_out_of_chain_entries_are_refused_and_tampering_is_found() {
    let alice = Node::new("alice").await.unwrap();
    let bob = Node::new("bob").await.unwrap();
    let mallory = Node::new("mallory").await.unwrap();
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    tapes::testing::join(&alice, &bob, &team).await.unwrap();
    let s = SessionId([7; 16]);

    // Bob writes three entries in his own store; alice merges them.
    let mut bobs = Vec::new();
    for action in [AuditAction::Fetch, AuditAction::Fetch, AuditAction::Share] {
        bobs.push(
            audit::record(&bob.store, &bob.identity, &team, event(&bob, action, s), 1).unwrap(),
        );
    }
    let before = audit_refs(&alice);

    // Out of chain: entry 1 without entry 0.
    let err = audit::receive(&alice.store, vec![bobs[1].clone()]).unwrap_err();
    assert!(
        err.to_string().contains("out of its writer's chain"),
        "{err}"
    );
    // Altered after signing.
    let mut altered = bobs[0].clone();
    altered.entry.actor_name = "carol".into();
    let err = audit::receive(&alice.store, vec![altered]).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    // Signed by a stranger, claiming the team.
    let forged = SignedAuditEntry::sign(
        AuditEntry {
            team,
            writer: mallory.id(),
            seq: 0,
            prev: None,
            at_ms: 1,
            action: AuditAction::Delete,
            actor: mallory.id(),
            actor_name: "mallory".into(),
            session: Some(s),
            detail: String::new(),
        },
        mallory.identity.signing_key(),
    );
    let err = audit::receive(&alice.store, vec![forged]).unwrap_err();
    assert!(
        err.to_string()
            .contains("neither a member of the team nor a relay the team registered"),
        "{err}"
    );
    // Nothing of the refused entries was stored.
    assert_eq!(audit_refs(&alice), before);

    // The real chain merges, once.
    let got = audit::receive(&alice.store, bobs.clone()).unwrap();
    assert_eq!(got.new, 3);
    assert_eq!(audit::receive(&alice.store, bobs.clone()).unwrap().known, 3);
    assert!(audit::verify(&alice.store).unwrap().is_clean());

    // Tampering with the stored log is found: a removed, an altered, a reordered entry.
    let key = |seq| keys::audit_entry(&team, &bob.id(), seq);
    let get = |seq| alice.store.storage().get_ref(&key(seq)).unwrap();
    let set = |seq, value: Option<Vec<u8>>| {
        alice
            .store
            .storage()
            .update_refs(&[RefUpdate {
                key: key(seq),
                expected: get(seq),
                new: value,
            }])
            .unwrap()
    };
    let (one, two) = (get(1), get(2));
    set(1, None);
    let report = audit::verify(&alice.store).unwrap();
    assert!(!report.is_clean(), "a removed entry: {report:?}");
    set(1, one.clone());
    assert!(audit::verify(&alice.store).unwrap().is_clean());
    let mut changed = SignedAuditEntry::decode(one.as_ref().unwrap()).unwrap();
    changed.entry.detail = "nothing happened".into();
    set(1, Some(changed.encode()));
    assert!(
        !audit::verify(&alice.store).unwrap().is_clean(),
        "an altered entry"
    );
    set(1, two.clone());
    set(2, one.clone());
    let report = audit::verify(&alice.store).unwrap();
    assert!(!report.is_clean(), "reordered entries: {report:?}");
    set(1, one);
    set(2, two.clone());
    assert!(audit::verify(&alice.store).unwrap().is_clean());
    // The newest entry removed: the head this store recorded names it.
    set(2, None);
    let report = audit::verify(&alice.store).unwrap();
    assert!(
        report.problems.iter().any(|p| p.what.contains("missing")),
        "{report:?}"
    );
}

/// Members' own entries reach the team through the relay (SPEC §18.3): alice deposits her
/// chain, sealed, when she syncs; carol, who never reaches alice's node, gets alice's entries
/// from the relay and they verify. The relay takes each entry once, keeps it sealed, and refuses
/// a stranger's deposit and one that would leave a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_deposit_their_own_entries_at_the_relay_for_teammates_who_never_meet() {
    use tapes::peer::audit_sync::send_deposit;
    use tapes::peer::PeerError;

    let relay_dir = tempfile::tempdir().unwrap();
    let relay = start(relay_dir.path(), &options(), Arc::new(|_| {}))
        .await
        .unwrap();
    let ticket = relay.ticket.clone();
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let carol = Member::new("carol").await;
    let team = team_on_relay(&alice, &ticket, "core").await;
    tapes::testing::join(&alice, &bob, &team).await.unwrap();
    tapes::testing::join(&alice, &carol, &team).await.unwrap();
    alice.sync(&ticket).await; // the relay learns the manifest with bob and carol

    // Alice shares; bob fetches from her node: both entries are alice's chain.
    let id = alice.session_with(5, &["looked at by bob"]);
    alice.share(&id, Audience::Team(team));
    bob.fetch_from(&alice).await.unwrap();
    let conn = alice.relay(&ticket).await.unwrap();
    let pulled = tapes::peer::audit_sync::pull(&conn, &alice.store, &alice.identity)
        .await
        .unwrap();
    let mine = audit::have(&alice.store, &team)
        .unwrap()
        .into_iter()
        .find(|(w, _)| *w == alice.id())
        .map(|(_, n)| n)
        .unwrap();
    assert!(mine >= 3, "joins, share and bob's fetch: {mine}");
    assert_eq!(pulled.deposited as u64, mine, "{pulled:?}");
    // The next sync sends nothing again.
    let again = tapes::peer::audit_sync::pull(&conn, &alice.store, &alice.identity)
        .await
        .unwrap();
    assert_eq!(again.deposited, 0, "{again:?}");

    // Carol never dials alice: she gets alice's entries from the relay, and they verify.
    let conn = carol.relay(&ticket).await.unwrap();
    let merged = tapes::peer::audit_sync::pull(&conn, &carol.store, &carol.identity)
        .await
        .unwrap();
    assert!(merged.refused.is_empty(), "{merged:?}");
    let rows = audit::list(&carol.store, &Filter::default()).unwrap();
    assert!(
        rows.iter().any(|r| r.action == "fetch"
            && r.actor == bob.id()
            && r.writer == alice.id()
            && r.session == Some(id)),
        "{rows:?}"
    );
    assert_eq!(audit::view_count(&carol.store, &id).unwrap(), 1);
    let report = audit::verify(&carol.store).unwrap();
    assert!(report.is_clean(), "{report:?}");

    // Sealed at the relay: the text of alice's entries is not in its files.
    assert!(crate::relay::files_containing(relay_dir.path(), "looked at by bob").is_empty());
    let detail = rows
        .iter()
        .find(|r| r.writer == alice.id() && r.action == "share")
        .map(|r| r.detail.clone())
        .unwrap();
    assert!(!detail.is_empty());
    assert!(crate::relay::files_containing(relay_dir.path(), &detail).is_empty());

    // A deposit that would leave a gap is refused with the reason; so is a stranger's.
    let conn = bob.relay(&ticket).await.unwrap();
    let sent = send_deposit(&conn, &team, 7, vec![b"sealed".to_vec()]).await;
    match sent {
        Err(PeerError::Refused { reason, .. }) => assert!(reason.contains("gap"), "{reason}"),
        other => panic!("a gap was accepted: {other:?}"),
    }
    let mallory = Member::new("mallory").await;
    let conn = mallory.relay(&ticket).await.unwrap();
    match send_deposit(&conn, &team, 0, vec![b"sealed".to_vec()]).await {
        Err(PeerError::Refused { reason, .. }) => {
            assert!(reason.contains("not a current member"), "{reason}")
        }
        other => panic!("a stranger's deposit was accepted: {other:?}"),
    }
}

/// A fetch of many team sessions from a member's node: the node writes its `fetch` entries in
/// batches (SPEC.md §18.2), and by the time the fetch returns every session is in the log,
/// once, as fetched by bob, in a chain that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_of_a_large_fetch_is_in_the_serving_nodes_log_when_it_returns() {
    let alice = Node::new("alice").await.unwrap();
    let bob = Node::new("bob").await.unwrap();
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    tapes::testing::join(&alice, &bob, &team).await.unwrap();
    // More than one batch of entries (64), and not a multiple of it.
    let shared = alice
        .import_shared(Audience::Team(team), 11, 0, 150, 1)
        .unwrap();
    let report = bob.fetch_from(&alice).await.unwrap();
    assert_eq!(report.new_sessions, 150, "{report:?}");

    let fetched: Vec<SessionId> = audit::list(&alice.store, &Filter::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "fetch" && r.actor == bob.id())
        .filter_map(|r| r.session)
        .collect();
    let mut unique = fetched.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), fetched.len(), "a session logged twice");
    let mut expected: Vec<SessionId> = shared.iter().map(|m| m.id).collect();
    expected.sort();
    assert_eq!(unique, expected);
    let check = audit::verify(&alice.store).unwrap();
    assert!(check.is_clean(), "{check:?}");
}
