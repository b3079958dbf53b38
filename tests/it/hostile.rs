//! Hostile peers against `tapes serve` (SPEC.md §15.6, §7; `src/peer/guard.rs`): a peer that
//! sends garbage, one that stalls after the handshake (with and without a stream), one that
//! trickles a byte a second, one that announces big frames on many streams and never finishes
//! them, and one that opens streams by the thousand. Each is disconnected and named in the
//! server's log, while a good client's fetch runs beside them and completes in full.
//!
//! The server runs with short waits ([`Limits`]) so that the test does not sit out the
//! production ones; the rules are the same. Nothing here asserts a duration: the good fetch's
//! time is printed, and every wait for a cut is bounded only by a generous sanity limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::protocol::Router;
use tapes::identity::{Identity, Profile};
use tapes::import::ingest::{ingest, Incoming};
use tapes::peer::addr::PeerAddr;
use tapes::peer::client::connect;
use tapes::peer::endpoint::{bind, EndpointConfig};
use tapes::peer::guard::Limits;
use tapes::peer::server::{Server, StoreHandle};
use tapes::protocol::sync::ALPN;
use tapes::session::sample::{self, Shape};
use tapes::share::{Audience, SecretPolicy, ShareOptions};
use tapes::store::Store;
use tapes::testing::{member, Node as TestNode};

/// How long any one misbehaving peer may last before the test calls the server unprotected.
const SANITY: Duration = Duration::from_secs(120);
const SESSIONS: usize = 12;

fn limits() -> Limits {
    Limits {
        streams: 64,
        stream_grace: Duration::from_secs(1),
        request: Duration::from_secs(3),
        idle: Duration::from_secs(4),
        frame: Duration::from_secs(3),
        min_rate: 16 << 10,
        buffered: 8 << 20,
    }
}

/// A server with `SESSIONS` public sessions, its log, and its ticket.
struct Alice {
    router: Router,
    log: Arc<Mutex<Vec<String>>>,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

async fn alice() -> Alice {
    let dir = tempfile::tempdir().unwrap();
    let identity = Arc::new(
        Identity::generate(Profile {
            name: "alice".into(),
            email: None,
        })
        .unwrap(),
    );
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    store.set_local_owner(&member(&identity)).unwrap();
    let shape = Shape {
        tool_rounds: 40,
        ..Shape::default()
    };
    let incoming: Vec<Incoming> = (0..SESSIONS)
        .map(|i| Incoming {
            session: sample::session(0x0b0d, i, shape),
            path: String::new(),
        })
        .collect();
    let report = ingest(&store, &incoming, 0).unwrap();
    for s in &report.sessions {
        tapes::share::share(
            &store,
            &identity,
            &s.id,
            &ShareOptions {
                audience: Audience::Public,
                title: None,
                note: None,
                expires_ms: None,
                secrets: SecretPolicy::Allow,
            },
            tapes::now_ms(),
        )
        .unwrap();
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let endpoint = bind(&identity, &EndpointConfig::loopback()).await.unwrap();
    let server = Server::new(
        StoreHandle::Shared(store.clone()),
        identity,
        Arc::new(move |line| sink.lock().unwrap().push(line)),
    )
    .with_limits(limits());
    let router = Router::builder(endpoint).accept(ALPN, server).spawn();
    Alice {
        router,
        log,
        store,
        _dir: dir,
    }
}

/// A misbehaving peer: its own identity and endpoint, and a raw connection to the server.
struct Evil {
    name: String,
    short: String,
    conn: Connection,
    _node: TestNode,
}

async fn evil(name: &str, to: &PeerAddr) -> Evil {
    let node = TestNode::new(name).await.unwrap();
    let conn = node
        .router
        .endpoint()
        .connect(to.endpoint_addr().unwrap(), ALPN)
        .await
        .unwrap();
    Evil {
        name: name.to_string(),
        short: node.id().short(),
        conn,
        _node: node,
    }
}

/// Waits until the server closes the connection; returns the reason it gave.
async fn cut(conn: &Connection, who: &str) -> String {
    match tokio::time::timeout(SANITY, conn.closed()).await {
        Ok(reason) => reason.to_string(),
        Err(_) => panic!("{who} was still connected after {} s", SANITY.as_secs()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misbehaving_peers_are_cut_off_and_named_while_a_good_client_is_served() {
    // The server runs on a runtime of its own, so that what the peers cost it can be counted.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let alice = runtime.spawn(alice()).await.unwrap();
    let metrics = runtime.metrics();
    let addr = PeerAddr::of_endpoint(alice.router.endpoint());
    let tasks_before = metrics.num_alive_tasks();
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(tasks_before));
    let sampler = {
        let (peak, metrics) = (peak.clone(), metrics.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(
                    metrics.num_alive_tasks(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let began = Instant::now();

    let mut bad = tokio::task::JoinSet::new();

    // Garbage: a frame whose bytes are no request.
    let garbage = evil("garbage", &addr).await;
    let expect_garbage = garbage.short.clone();
    bad.spawn(async move {
        let (mut send, _recv) = garbage.conn.open_bi().await.unwrap();
        let mut frame = 200u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0xff; 200]);
        let _ = send.write_all(&frame).await;
        (
            garbage.name.clone(),
            cut(&garbage.conn, "garbage").await,
            garbage,
        )
    });

    // Stalls after the handshake: no stream at all.
    let silent = evil("silent", &addr).await;
    let expect_silent = silent.short.clone();
    bad.spawn(async move {
        (
            silent.name.clone(),
            cut(&silent.conn, "silent").await,
            silent,
        )
    });

    // Stalls on a stream: half a frame head, then nothing.
    let staller = evil("staller", &addr).await;
    let expect_staller = staller.short.clone();
    bad.spawn(async move {
        let (mut send, _recv) = staller.conn.open_bi().await.unwrap();
        let _ = send.write_all(&[1, 0]).await;
        (
            staller.name.clone(),
            cut(&staller.conn, "staller").await,
            staller,
        )
    });

    // Trickles: a 100-byte frame, one byte a second.
    let trickler = evil("trickler", &addr).await;
    let expect_trickler = trickler.short.clone();
    bad.spawn(async move {
        let (mut send, _recv) = trickler.conn.open_bi().await.unwrap();
        let _ = send.write_all(&100u32.to_le_bytes()).await;
        let conn = trickler.conn.clone();
        let drip = tokio::spawn(async move {
            for _ in 0..100 {
                if send.write_all(&[0]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let reason = cut(&conn, "trickler").await;
        drip.abort();
        (trickler.name.clone(), reason, trickler)
    });

    // Hoards: announces 64 MiB frames on many streams and sends 1 MiB of each.
    let hoarder = evil("hoarder", &addr).await;
    let expect_hoarder = hoarder.short.clone();
    bad.spawn(async move {
        let mut streams = Vec::new();
        for _ in 0..16 {
            let Ok((mut send, recv)) = hoarder.conn.open_bi().await else {
                break;
            };
            let mut part = (64u32 << 20).to_le_bytes().to_vec();
            part.extend_from_slice(&vec![0u8; 1 << 20]);
            if send.write_all(&part).await.is_err() {
                break;
            }
            streams.push((send, recv));
        }
        (
            hoarder.name.clone(),
            cut(&hoarder.conn, "hoarder").await,
            hoarder,
        )
    });

    // Opens 1,000 streams, each with one byte in it.
    let opener = evil("opener", &addr).await;
    let expect_opener = opener.short.clone();
    bad.spawn(async move {
        let mut streams = Vec::new();
        for _ in 0..1000 {
            let Ok((mut send, recv)) = opener.conn.open_bi().await else {
                break;
            };
            if send.write_all(&[0]).await.is_err() {
                break;
            }
            streams.push((send, recv));
        }
        let opened = streams.len();
        let reason = cut(&opener.conn, "opener").await;
        assert!(
            opened < 1000,
            "the server let one peer open {opened} streams"
        );
        (opener.name.clone(), reason, opener)
    });

    // Meanwhile a good client fetches everything.
    let bob = TestNode::new("bob").await.unwrap();
    let started = Instant::now();
    let conn = connect(bob.router.endpoint(), &addr, "alice")
        .await
        .unwrap();
    let report = conn.fetch(&bob.store, &bob.identity).await.unwrap();
    conn.close();
    let took = started.elapsed();
    let still_connected = bad.len();
    assert_eq!(report.new_sessions, SESSIONS, "{report:?}");
    bob.fsck_clean().unwrap();
    println!(
        "good fetch of {SESSIONS} sessions ({} nodes) beside {still_connected} hostile peers: {:.2} s",
        report.nodes,
        took.as_secs_f64()
    );

    // Every bad peer is cut off; keep them (and their endpoints) until all are.
    let mut done = Vec::new();
    while let Some(result) = bad.join_next().await {
        let (name, reason, peer) = result.unwrap();
        println!(
            "{name} cut after {:.1} s: {reason}",
            began.elapsed().as_secs_f64()
        );
        done.push(peer);
    }
    let log = alice.log.lock().unwrap().clone();
    let named = |short: &str, what: &str| {
        assert!(
            log.iter()
                .any(|l| l.contains("disconnected") && l.contains(short) && l.contains(what)),
            "no log line names {short} for {what}: {log:#?}"
        )
    };
    named(&expect_garbage, "broke the protocol");
    named(&expect_silent, "idle");
    named(&expect_staller, "sent no request");
    named(&expect_trickler, "slower than");
    named(&expect_hoarder, "unfinished frames");
    named(&expect_opener, "streams at once");
    drop(done);

    // The server still serves: a second fetch finds nothing new, duplicates nothing.
    let conn = connect(bob.router.endpoint(), &addr, "alice")
        .await
        .unwrap();
    let again = conn.fetch(&bob.store, &bob.identity).await.unwrap();
    conn.close();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(bob.sessions().unwrap(), SESSIONS);

    // What the bad peers cost the server is gone with them: no task of theirs survives.
    // (iroh may keep a little state per remote for a while; the stream tasks, up to 64 per
    // peer, must all be gone.)
    let waited = Instant::now();
    let mut tasks_after = metrics.num_alive_tasks();
    while tasks_after > tasks_before && waited.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tasks_after = metrics.num_alive_tasks();
    }
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "server tasks alive: {tasks_before} before the peers came, {peak} at most, {tasks_after} after"
    );
    assert!(
        tasks_after <= tasks_before + 2 * 7,
        "{tasks_after} server tasks alive after the hostile peers left, {tasks_before} before"
    );
    drop(alice.store);
    alice.router.shutdown().await.unwrap();
    runtime.shutdown_background();
}
