//! A bound on connections under fresh identities (SPEC.md §15.6, §7; issue 21 item 3;
//! `src/peer/guard.rs` `Connections`): 200 nodes nobody knows, each a new identity, connect to
//! a `tapes serve` and hold their connections. The server keeps at most
//! `MAX_STRANGER_CONNECTIONS` of them, refuses the rest as busy and names each in its log,
//! and meanwhile a teammate's fetch completes in full; a stranger who comes later is told the
//! server is busy. Nothing here asserts a duration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::Connection;
use tapes::identity::{Identity, Profile};
use tapes::peer::addr::PeerAddr;
use tapes::peer::client::connect;
use tapes::peer::endpoint::{bind, EndpointConfig};
use tapes::peer::guard::MAX_STRANGER_CONNECTIONS;
use tapes::protocol::sync::ALPN;
use tapes::share::{Audience, SecretPolicy};
use tapes::testing::{add_member, Node as TestNode};

const STRANGERS: usize = 200;
const SESSIONS: usize = 6;
/// How long the test waits for something the server must do before calling it broken.
const SANITY: Duration = Duration::from_secs(120);

/// A node nobody knows: a fresh identity, its endpoint, and a connection to `to`.
async fn stranger(i: usize, to: &PeerAddr) -> (iroh::Endpoint, Connection) {
    let identity = Identity::generate(Profile {
        name: format!("stranger{i}"),
        email: None,
    })
    .unwrap();
    let endpoint = bind(&identity, &EndpointConfig::loopback()).await.unwrap();
    let conn = endpoint
        .connect(to.endpoint_addr().unwrap(), ALPN)
        .await
        .unwrap();
    (endpoint, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_teammate_fetches_while_two_hundred_fresh_identities_hold_connections() {
    // Alice serves team `core` (bob is a member) with its sessions, under the default limits:
    // an idle connection is kept for minutes, so the strangers hold theirs.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    let alice = TestNode::with_log(
        "alice",
        Arc::new(move |line| sink.lock().unwrap().push(line)),
    )
    .await
    .unwrap();
    let bob = TestNode::new("bob").await.unwrap();
    let team = tapes::team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    add_member(
        &alice.store,
        &alice.identity,
        &bob.store,
        &bob.identity,
        &team,
    )
    .unwrap();
    for i in 0..SESSIONS {
        let id = alice.import(0xcab + i as u64, 30).unwrap();
        alice
            .share(&id, Audience::Team(team), SecretPolicy::Allow)
            .unwrap();
        if i == 0 {
            alice
                .share(&id, Audience::Public, SecretPolicy::Allow)
                .unwrap();
        }
    }
    let addr = alice.addr();

    let mut strangers = Vec::new();
    for i in 0..STRANGERS {
        strangers.push(stranger(i, &addr).await);
    }
    // The server refused exactly those over the bound, naming each.
    let refusals = || {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("refused node ") && l.contains("busy"))
            .count()
    };
    let waited = std::time::Instant::now();
    while refusals() < STRANGERS - MAX_STRANGER_CONNECTIONS && waited.elapsed() < SANITY {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        refusals(),
        STRANGERS - MAX_STRANGER_CONNECTIONS,
        "{:#?}",
        log.lock().unwrap()
    );

    // Meanwhile the teammate is served in full.
    let conn = connect(bob.router.endpoint(), &addr, "alice")
        .await
        .unwrap();
    let report = conn.fetch(&bob.store, &bob.identity).await.unwrap();
    conn.close();
    assert_eq!(report.new_sessions, SESSIONS, "{report:?}");
    bob.fsck_clean().unwrap();

    // One more stranger is told the server is busy.
    let (_endpoint, late) = stranger(STRANGERS, &addr).await;
    let reason = tokio::time::timeout(SANITY, late.closed())
        .await
        .expect("a stranger over the bound was kept");
    assert!(reason.to_string().contains("busy"), "{reason}");

    // When the strangers leave, their places are free again: a stranger is served (it
    // fetches the one public session).
    let held = strangers.len();
    for (endpoint, conn) in strangers {
        conn.close(0u32.into(), b"bye");
        endpoint.close().await;
    }
    let later = TestNode::new("later").await.unwrap();
    let waited = std::time::Instant::now();
    loop {
        let fetched = match connect(later.router.endpoint(), &addr, "alice").await {
            Ok(conn) => conn.fetch(&later.store, &later.identity).await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok(report) => {
                assert_eq!(report.new_sessions, 1, "{report:?}");
                break;
            }
            Err(e) => assert!(
                waited.elapsed() < SANITY,
                "the strangers' places were not freed after they left: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{held} fresh identities connected: {} held, {} refused as busy; the teammate fetched {SESSIONS} sessions ({} nodes) meanwhile",
        MAX_STRANGER_CONNECTIONS,
        STRANGERS - MAX_STRANGER_CONNECTIONS,
        report.nodes
    );
}
