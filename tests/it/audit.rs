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
