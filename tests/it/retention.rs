//! Retention on a relay (SPEC.md §16.14): a team whose `relay.toml` table sets `retention`
//! loses its deposits at the relay once they are that old (record, blobs and usage), while a
//! team without one keeps them, and members' own stores keep everything. The relay reports
//! what expired. A table may name the team by its name; an unknown or ambiguous name stops
//! the relay's start.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tapes::protocol::sync::Scope;
use tapes::protocol::TeamId;
use tapes::relay::retention;
use tapes::relay::run::{start, RunningRelay};
use tapes::share::Audience;
use tapes::team;

use crate::relay::{add_member, options, Member};

fn create_team(owner: &Member, name: &str) -> TeamId {
    team::create(&owner.store, &owner.identity, name, tapes::now_ms())
        .unwrap()
        .team_id()
}

async fn register(owner: &Member, relay: &RunningRelay, team: &TeamId) {
    owner
        .relay(&relay.ticket)
        .await
        .unwrap()
        .register(&owner.store, team)
        .await
        .unwrap();
}

async fn start_with(data: &Path, config: &str, log: Arc<Mutex<Vec<String>>>) -> RunningRelay {
    std::fs::write(data.join("relay.toml"), config).unwrap();
    start(
        data,
        &options(),
        Arc::new(move |line| log.lock().unwrap().push(line)),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deposits_leave_the_relay_but_not_the_members() {
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let short = create_team(&alice, "short");
    let kept = create_team(&alice, "kept");
    add_member(&alice, &bob, &short);
    add_member(&alice, &bob, &kept);
    let data = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    // Short enough for a test; the sweep runs every second.
    let config = format!("[teams.{}]\nretention = \"3s\"\n", short.to_hex());
    let relay = start_with(data.path(), &config, log.clone()).await;
    register(&alice, &relay, &short).await;
    register(&alice, &relay, &kept).await;

    let gone = alice.session_with(1, &["RETENTION-MARKER-gone"]);
    let stays = alice.session_with(2, &["RETENTION-MARKER-stays"]);
    alice.share(&gone, Audience::Team(short));
    alice.share(&stays, Audience::Team(kept));
    alice.sync(&relay.ticket).await;
    let state = relay.state.clone();
    let (deposited, _) = state
        .deposited(&Scope::Team(short), &gone)
        .unwrap()
        .expect("deposited");
    let blobs: Vec<_> = deposited
        .segments
        .iter()
        .flat_map(|s| s.blobs.clone())
        .collect();
    assert!(!blobs.is_empty());
    assert!(state.usage(&Scope::Team(short)).unwrap().bytes > 0);

    // Wait for the sweep to finish (its last step records what expired; polling, no timing
    // is asserted).
    let mut waited = 0;
    while retention::expired(&state, &Scope::Team(short))
        .unwrap()
        .sessions
        == 0
    {
        assert!(waited < 600, "the deposit never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(state
        .deposited(&Scope::Team(short), &gone)
        .unwrap()
        .is_none());
    // Its blobs and its usage went with it; the other team's deposit stays.
    for blob in &blobs {
        assert!(state.backend().blob(blob).unwrap().is_none());
    }
    assert_eq!(state.usage(&Scope::Team(short)).unwrap().bytes, 0);
    assert!(state
        .deposited(&Scope::Team(kept), &stays)
        .unwrap()
        .is_some());
    let expired = retention::expired(&state, &Scope::Team(short)).unwrap();
    assert_eq!(expired.sessions, 1);
    assert_eq!(expired.bytes, deposited.bytes);
    let lines = retention::describe(&state).unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("3s") && lines[0].contains("1 session"),
        "{lines:?}"
    );
    // The relay says so on its output (the line follows the sweep).
    let mut waited = 0;
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("retention removed 1 session"))
    {
        assert!(waited < 600, "{:?}", log.lock().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }

    // What `tapes storage status` shows a member: the relay's retention for their teams.
    let conn = bob.relay(&relay.ticket).await.unwrap();
    let lines = tapes::peer::tombstone_sync::retention(&conn).await.unwrap();
    assert_eq!(lines, retention::describe(&state).unwrap());

    // Bob, syncing now, gets only what the relay still holds; Alice's store keeps both.
    bob.sync(&relay.ticket).await;
    assert!(!bob.has(&gone));
    assert!(bob.has(&stays));
    assert!(alice.has(&gone) && alice.has(&stays));
    alice.fsck_clean();
    bob.fsck_clean();
    relay.shutdown().await;
}

/// `[teams.<name>]` in relay.toml (SPEC.md §16.14): the table is bound at start to the team
/// registered under that name, whose deposits then expire; a name no registered team has, or
/// that two have, stops the start with the reason and the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_table_may_name_the_team() {
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let short = create_team(&alice, "short");
    let kept = create_team(&alice, "kept");
    let data = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let relay = start_with(data.path(), "", log.clone()).await;
    register(&alice, &relay, &short).await;
    register(&alice, &relay, &kept).await;
    let gone = alice.session_with(11, &["NAMED-RETENTION-gone"]);
    let stays = alice.session_with(12, &["NAMED-RETENTION-stays"]);
    alice.share(&gone, Audience::Team(short));
    alice.share(&stays, Audience::Team(kept));
    alice.sync(&relay.ticket).await;
    relay.shutdown().await;

    // A name no registered team has: the relay does not start, and says which exist.
    std::fs::write(
        data.path().join("relay.toml"),
        "[teams.shrt]\nretention = \"3s\"\n",
    )
    .unwrap();
    let err = start(data.path(), &options(), Arc::new(|_| {}))
        .await
        .err()
        .expect("an unknown team name stops the relay")
        .to_string();
    assert!(
        err.contains("[teams.shrt]") && err.contains("kept, short") && err.contains("relay.toml"),
        "{err}"
    );

    // By its name: the team's deposit expires, the other team's stays.
    let relay = start_with(
        data.path(),
        "[teams.short]\nretention = \"3s\"\n",
        log.clone(),
    )
    .await;
    let state = relay.state.clone();
    assert_eq!(
        state.config().quota(&short).retention_ms,
        Some(3_000),
        "the table is bound to the team's id"
    );
    assert_eq!(state.config().quota(&kept).retention_ms, None);
    let mut waited = 0;
    while retention::expired(&state, &Scope::Team(short))
        .unwrap()
        .sessions
        == 0
    {
        assert!(waited < 600, "the deposit never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(state
        .deposited(&Scope::Team(short), &gone)
        .unwrap()
        .is_none());
    assert!(state
        .deposited(&Scope::Team(kept), &stays)
        .unwrap()
        .is_some());
    let lines = retention::describe(&state).unwrap();
    assert!(
        lines.len() == 1 && lines[0].contains("team short"),
        "{lines:?}"
    );
    assert!(alice.has(&gone));

    // Bob registers a team of the same name: the name is ambiguous from the next start on.
    let twin = create_team(&bob, "short");
    register(&bob, &relay, &twin).await;
    relay.shutdown().await;
    drop(state);
    let err = start(data.path(), &options(), Arc::new(|_| {}))
        .await
        .err()
        .expect("an ambiguous team name stops the relay")
        .to_string();
    assert!(
        err.contains("ambiguous") && err.contains(&short.to_hex()) && err.contains(&twin.to_hex()),
        "{err}"
    );
    // The id still says which one.
    let relay = start_with(
        data.path(),
        &format!("[teams.{}]\nretention = \"3s\"\n", short.to_hex()),
        log,
    )
    .await;
    assert_eq!(relay.state.config().quota(&twin).retention_ms, None);
    relay.shutdown().await;
}
