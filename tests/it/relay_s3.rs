//! Relays over one S3-compatible bucket (SPEC.md §16.13), against a real S3-protocol server:
//! `moto_server` (PyPI `moto[server]` 5.2.x), started by each test on 127.0.0.1 on a free port.
//! Without it the tests say so in one line and pass, unless `TAPES_REQUIRE_S3=1` (CI), which
//! makes its absence a failure.
//!
//! First the server itself: it must refuse a second create and a stale `If-Match`, so the
//! compare-and-swap tests below cannot pass by accident; bad configurations stop a relay at
//! start with a clear error and write nothing. Then: two relays on one bucket serve the same
//! teams (alice deposits through one, bob fetches through the other; quotas from the bucket's
//! `relay.toml` and the join mailbox are shared), the bucket never holds a byte of a team
//! session's text, a relay restarted on an empty disk serves everything; two relays racing a
//! deposit of one session: exactly one wins; a relay process killed by SIGKILL mid-deposit
//! leaves the other serving, and the depositor's retry through it converges.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use tapes::import::ingest::{ingest, Incoming};
use tapes::peer::addr::PeerAddr;
use tapes::protocol::MemberId;
use tapes::relay::backend::BucketOptions;
use tapes::relay::run::{start_on, RunningRelay, StartError, StateStore};
use tapes::session::sample::{self, Shape};
use tapes::share::Audience;
use tapes::team;

use super::relay::{add_member, options, second_machine, team_on_relay, Member};

const SECRET: &str = "narwhal-cobalt-ledger-4417";
const SECOND_SECRET: &str = "ibis-tangerine-sextant-0923";

/// A `moto_server` on 127.0.0.1, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts one, or `None` (with a line saying why) when it is not installed and
    /// `TAPES_REQUIRE_S3` is not `1`.
    fn start() -> Option<Moto> {
        Moto::start_with(&[])
    }

    /// One that checks credentials (moto's IAM mode: only keys it issued are taken).
    fn start_checking_credentials() -> Option<Moto> {
        Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with(env: &[(&str, &str)]) -> Option<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                if std::env::var("TAPES_REQUIRE_S3").as_deref() == Ok("1") {
                    panic!("moto_server cannot start ({e}) and TAPES_REQUIRE_S3=1: pip install 'moto[server]==5.2.1'");
                }
                eprintln!("skipped: moto_server is not installed (pip install 'moto[server]==5.2.1'; TAPES_REQUIRE_S3=1 makes this a failure)");
                return None;
            }
        };
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.request("GET", "/", &[], b"").0 == 0 {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP request (moto takes unsigned ones): status and body.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, Vec::new());
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
            return (0, Vec::new());
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| response[at + 4..].to_vec())
            .unwrap_or_default();
        (status, body)
    }

    fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), &[], b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// The same client the relay uses, on `bucket`.
    fn client(&self, bucket: &str) -> AmazonS3 {
        // reqwest is built without a default crypto provider (the relay installs ring too).
        let _ = rustls::crypto::ring::default_provider().install_default();
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap()
    }

    fn options(&self, url: &str) -> BucketOptions {
        let mut options = BucketOptions::new(url);
        options.endpoint = Some(self.endpoint());
        options.region = Some("us-east-1".into());
        options.access_key_id = Some("test".into());
        options.secret_access_key = Some("test".into());
        options
    }

    /// Every object of `bucket`, with its bytes.
    async fn objects(&self, bucket: &str) -> Vec<(String, Vec<u8>)> {
        use futures_core::Stream as _;
        let client = self.client(bucket);
        let mut list = client.list(None);
        let mut metas = Vec::new();
        while let Some(meta) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut list).poll_next(cx)).await
        {
            metas.push(meta.unwrap());
        }
        let mut out = Vec::new();
        for meta in metas {
            let bytes = client
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            out.push((meta.location.to_string(), bytes.to_vec()));
        }
        out
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_bucket(data: &Path, moto: &Moto, url: &str) -> Result<RunningRelay, StartError> {
    start_on(
        data,
        &StateStore::Bucket(moto.options(url)),
        &options(),
        Arc::new(|_| {}),
    )
    .await
}

fn start_error(result: Result<RunningRelay, StartError>) -> String {
    match result {
        Ok(_) => panic!("the relay started"),
        Err(e) => e.to_string(),
    }
}

/// The objects of `bucket` whose bytes contain `needle`.
async fn bucket_containing(moto: &Moto, bucket: &str, needle: &str) -> Vec<String> {
    moto.objects(bucket)
        .await
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(key, _)| key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_server_refuses_stale_writes_and_bad_buckets_stop_the_start() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("cas");
    let s3 = moto.client("cas");
    let path = ObjectPath::from("probe/x");
    let put = |body: &'static str, mode: PutMode| {
        let s3 = s3.clone();
        let path = path.clone();
        async move {
            s3.put_opts(&path, PutPayload::from_static(body.as_bytes()), mode.into())
                .await
        }
    };
    let first = put("1", PutMode::Create).await.unwrap();
    let again = put("2", PutMode::Create).await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "a second create was not refused: {again:?}"
    );
    let stale = UpdateVersion::from(first);
    put("3", PutMode::Update(stale.clone())).await.unwrap();
    let lost = put("4", PutMode::Update(stale)).await;
    assert!(
        matches!(lost, Err(object_store::Error::Precondition { .. })),
        "a stale If-Match write was not refused: {lost:?}"
    );
    let now = s3.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&now[..], b"3");

    // Bad configurations stop the start with the reason and write nothing.
    let data = tempfile::tempdir().unwrap();
    let missing = start_error(start_bucket(data.path(), &moto, "s3://no-such-bucket/p").await);
    assert!(missing.contains("does not exist"), "{missing}");
    let mut unreachable = moto.options("s3://cas/p");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    unreachable.endpoint = Some(format!("http://127.0.0.1:{closed}"));
    let error = start_error(
        start_on(
            data.path(),
            &StateStore::Bucket(unreachable),
            &options(),
            Arc::new(|_| {}),
        )
        .await,
    );
    assert!(error.contains("cannot reach"), "{error}");
    let bad_url = start_error(start_bucket(data.path(), &moto, "cas/p").await);
    assert!(bad_url.contains("s3://<bucket>"), "{bad_url}");
    let checking = Moto::start_checking_credentials().expect("moto_server started above");
    let denied = start_error(start_bucket(data.path(), &checking, "s3://cas/p").await);
    assert!(
        denied.contains("refused these credentials")
            && denied.contains("InvalidAccessKeyId")
            && denied.contains("AWS_ACCESS_KEY_ID"),
        "{denied}"
    );
    assert!(!denied.contains("<Error>"), "{denied}");
    drop(checking);

    moto.create_bucket("newer");
    moto.client("newer")
        .put(
            &ObjectPath::from("p/tapes-relay.json"),
            PutPayload::from_static(br#"{"format": 99}"#),
        )
        .await
        .unwrap();
    let newer = start_error(start_bucket(data.path(), &moto, "s3://newer/p").await);
    assert!(
        newer.contains("newer relay") && newer.contains("upgrade"),
        "{newer}"
    );
    let keys: Vec<String> = moto
        .objects("newer")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec!["p/tapes-relay.json".to_string()]);

    // A good bucket: the relay marks its format and leaves no probe behind.
    let relay = start_bucket(data.path(), &moto, "s3://cas/relays")
        .await
        .unwrap();
    relay.shutdown().await;
    let keys: Vec<String> = moto
        .objects("cas")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("relays/"))
        .collect();
    assert_eq!(keys, vec!["relays/tapes-relay.json".to_string()]);
}

/// The compare-and-swap of two relays' back ends on one bucket, without iroh: both read one
/// record and write it expecting what they read, and exactly one wins; then 8 threads over the
/// two back ends each add 1 to a counter 10 times (read, add, write if unchanged, retry on a
/// lost race), and the counter ends at exactly 80: no increment is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_back_ends_on_one_bucket_compare_and_swap_exactly_once() {
    use tapes::relay::backend::{BucketBackend, RelayBackend, Written};
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("counter");
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = moto.options("s3://counter/c");
    let backends: Vec<Arc<BucketBackend>> = tokio::task::block_in_place(|| {
        vec![
            Arc::new(BucketBackend::open(&options, d1.path()).unwrap()),
            Arc::new(BucketBackend::open(&options, d2.path()).unwrap()),
        ]
    });
    let outcome = tokio::task::block_in_place(|| {
        assert_eq!(
            backends[0].put("usage/x", b"0".to_vec(), None).unwrap(),
            Written::Done
        );
        // A second create loses, whichever relay makes it.
        assert_eq!(
            backends[1].put("usage/x", b"1".to_vec(), None).unwrap(),
            Written::Lost
        );
        let a = backends[0].get("usage/x").unwrap().unwrap();
        let b = backends[1].get("usage/x").unwrap().unwrap();
        assert_eq!(a, b);
        [
            backends[0].put("usage/x", b"a".to_vec(), Some(&a)).unwrap(),
            backends[1].put("usage/x", b"b".to_vec(), Some(&b)).unwrap(),
        ]
    });
    assert_eq!(outcome, [Written::Done, Written::Lost]);

    let threads: Vec<_> = (0..8)
        .map(|i| {
            let backend = backends[i % 2].clone();
            std::thread::spawn(move || {
                let mut lost = 0;
                for _ in 0..10 {
                    loop {
                        let found = backend.get("usage/n").unwrap();
                        let n: u64 = found
                            .as_ref()
                            .map(|v| String::from_utf8_lossy(&v.bytes).parse().unwrap())
                            .unwrap_or(0);
                        let next = (n + 1).to_string().into_bytes();
                        match backend.put("usage/n", next, found.as_ref()).unwrap() {
                            Written::Done => break,
                            Written::Lost => lost += 1,
                        }
                    }
                }
                lost
            })
        })
        .collect();
    let lost: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let n = tokio::task::block_in_place(|| backends[0].get("usage/n").unwrap().unwrap());
    assert_eq!(String::from_utf8_lossy(&n.bytes), "80", "{lost} lost races");
    assert!(lost > 0, "the threads never raced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_bucket_serve_the_same_teams_and_hold_no_plaintext() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("shared");
    // Quotas live in the bucket: two new sessions a month, for every relay on it.
    moto.client("shared")
        .put(
            &ObjectPath::from("teams/relay.toml"),
            PutPayload::from_static(b"[default]\nsessions_per_month = 2\n"),
        )
        .await
        .unwrap();
    let url = "s3://shared/teams";
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = start_bucket(d1.path(), &moto, url).await.unwrap();
    let two = start_bucket(d2.path(), &moto, url).await.unwrap();
    assert_ne!(one.ticket.id, two.ticket.id);

    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    add_member(&alice, &bob, &team);
    // Registered through relay one, served by relay two.
    let conn = alice.relay(&one.ticket).await.unwrap();
    conn.register(&alice.store, &team).await.unwrap();
    let conn = bob.relay(&two.ticket).await.unwrap();
    assert_eq!(conn.hello().await.unwrap(), vec![team]);
    conn.close();

    // Alice deposits through relay one; bob fetches through relay two, byte-equal.
    let first = alice.session_with(1, &[SECRET, SECOND_SECRET]);
    alice.share(&first, Audience::Team(team));
    let report = alice.sync(&one.ticket).await;
    assert_eq!(report.deposited.len(), 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let report = bob.sync(&two.ticket).await;
    assert_eq!(report.fetched.new_sessions, 1, "{report:?}");
    assert_eq!(
        bob.store.session_raw(&first).unwrap(),
        alice.store.session_raw(&first).unwrap()
    );
    bob.fsck_clean();

    // One quota for both relays: the second session lands through relay two, the third is
    // refused through relay one.
    let second = alice.session_with(2, &["second"]);
    alice.share(&second, Audience::Team(team));
    let report = alice.sync(&two.ticket).await;
    assert!(
        report.deposited.iter().any(|(id, _, _)| *id == second),
        "{report:?}"
    );
    let third = alice.session_with(3, &["third"]);
    alice.share(&third, Audience::Team(team));
    let report = alice.sync(&one.ticket).await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let message = report.failed[0].2.to_string();
    assert!(
        message.contains("quota exceeded") && message.contains("sessions_per_month"),
        "{message}"
    );

    // The join mailbox is shared: a request left at relay one waits at relay two.
    let joiner = MemberId([9; 32]);
    let queued = tokio::task::block_in_place(|| one.state.join(&joiner, &team, b"sealed"));
    assert_eq!(queued.unwrap(), None);
    let waiting =
        tokio::task::block_in_place(|| two.state.waiting_joins(&alice.id(), &team)).unwrap();
    assert_eq!(waiting, vec![(joiner, b"sealed".to_vec())]);

    // No byte of the team sessions' text anywhere in the bucket, nor in the relays' caches.
    for needle in [SECRET, SECOND_SECRET] {
        assert_eq!(
            bucket_containing(&moto, "shared", needle).await,
            Vec::<String>::new()
        );
        assert_eq!(
            super::relay::files_containing(d1.path(), needle),
            Vec::<String>::new()
        );
    }
    let objects = moto.objects("shared").await;
    assert!(objects.iter().any(|(k, _)| k.starts_with("teams/blobs/")));

    // A relay started on an empty disk serves everything (with a new node id: the key file
    // was not kept).
    let first_id = one.ticket.id;
    one.shutdown().await;
    two.shutdown().await;
    let d3 = tempfile::tempdir().unwrap();
    let three = start_bucket(d3.path(), &moto, url).await.unwrap();
    assert_ne!(three.ticket.id, first_id);
    let laptop = second_machine(&bob).await;
    team::store_chain(&laptop.store, &team::load(&bob.store, &team).unwrap()).unwrap();
    let report = laptop.sync(&three.ticket).await;
    assert_eq!(report.fetched.new_sessions, 2, "{report:?}");
    assert!(laptop.has(&first) && laptop.has(&second) && !laptop.has(&third));
    laptop.fsck_clean();
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_racing_one_session_exactly_one_push_wins() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("race");
    let url = "s3://race/r";
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = start_bucket(d1.path(), &moto, url).await.unwrap();
    let two = start_bucket(d2.path(), &moto, url).await.unwrap();
    let laptop = Member::new("alice").await;
    let team = team_on_relay(&laptop, &one.ticket, "core").await;
    let desktop = second_machine(&laptop).await;
    team::store_chain(&desktop.store, &team::load(&laptop.store, &team).unwrap()).unwrap();
    // The same session on two machines of one owner, each gone on its own way, never
    // deposited: each deposits it from nothing, at the same moment, through its own relay.
    let id = laptop.session_with(7, &["base"]);
    assert_eq!(desktop.session_with(7, &["base"]), id);
    sample::continue_session(&laptop.store, &id, &["laptop's turn".into()]).unwrap();
    sample::continue_session(&desktop.store, &id, &["desktop's turn".into()]).unwrap();
    laptop.share(&id, Audience::Team(team));
    desktop.share(&id, Audience::Team(team));
    let (a, b) = tokio::join!(laptop.sync(&one.ticket), desktop.sync(&two.ticket));
    assert_eq!(
        a.deposited.len() + b.deposited.len(),
        1,
        "exactly one deposit wins: {a:?} {b:?}"
    );
    let (winner, loser) = if a.deposited.len() == 1 {
        (&laptop, &b)
    } else {
        (&desktop, &a)
    };
    assert_eq!(loser.failed.len(), 1, "{loser:?}");
    let message = loser.failed[0].2.to_string();
    assert!(message.contains("conflict"), "{message}");
    // Both relays serve the winner's session.
    for ticket in [&one.ticket, &two.ticket] {
        let fresh = second_machine(&laptop).await;
        team::store_chain(&fresh.store, &team::load(&laptop.store, &team).unwrap()).unwrap();
        let report = fresh.sync(ticket).await;
        assert_eq!(report.fetched.new_sessions, 1, "{report:?}");
        assert_eq!(
            fresh.store.session_raw(&id).unwrap(),
            winner.store.session_raw(&id).unwrap()
        );
    }
    one.shutdown().await;
    two.shutdown().await;
}

/// A `tapes relay --store` process, killed when dropped.
struct BucketRelayProcess {
    child: Child,
}

impl BucketRelayProcess {
    fn spawn(data: &Path, moto: &Moto, url: &str) -> (BucketRelayProcess, PeerAddr) {
        let ticket_file = data.join("relay-ticket");
        let _ = std::fs::remove_file(&ticket_file);
        let child = Command::new(env!("CARGO_BIN_EXE_tapes"))
            .args(["relay", "--data"])
            .arg(data)
            .args(["--bind", "127.0.0.1:0", "--store", url, "--endpoint"])
            .arg(moto.endpoint())
            .args(["--region", "us-east-1"])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = BucketRelayProcess { child };
        for _ in 0..400 {
            if let Ok(text) = std::fs::read_to_string(&ticket_file) {
                if let Ok(addr) = PeerAddr::parse(text.trim()) {
                    return (process, addr);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the relay did not start");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BucketRelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_deposit_leaves_the_other_serving_and_the_retry_converges() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("crash");
    let url = "s3://crash/c";
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut process, ticket) = BucketRelayProcess::spawn(d1.path(), &moto, url);
    let other = start_bucket(d2.path(), &moto, url).await.unwrap();
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    add_member(&alice, &bob, &team);
    let conn = alice.relay(&ticket).await.unwrap();
    conn.register(&alice.store, &team).await.unwrap();
    let small = alice.session_with(1, &["small"]);
    alice.share(&small, Audience::Team(team));
    let report = alice.sync(&ticket).await;
    assert_eq!(report.deposited.len(), 1, "{report:?}");

    // A session of ~30 MB, so the deposit takes long enough to be cut.
    let report = ingest(
        &alice.store,
        &[Incoming {
            session: sample::session(
                11,
                0,
                Shape {
                    tool_rounds: 6000,
                    ..Shape::default()
                },
            ),
            path: String::new(),
        }],
        0,
    )
    .unwrap();
    let big = report.sessions[0].id;
    alice.share(&big, Audience::Team(team));
    let conn = alice.relay(&ticket).await.unwrap();
    let counters = conn.counters.clone();
    let store = alice.store.clone();
    let identity = alice.identity.clone();
    let deposit = tokio::spawn(async move { conn.relay_sync(&store, &identity).await });
    while counters.sent() < 2 << 20 && !deposit.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!deposit.is_finished(), "the deposit ended before the kill");
    process.kill();
    let cut = deposit.await.unwrap();
    assert!(
        cut.is_err() || !cut.as_ref().unwrap().failed.is_empty(),
        "{cut:?}"
    );

    // The other relay goes on serving what was committed, and nothing of the cut deposit.
    let report = bob.sync(&other.ticket).await;
    assert_eq!(report.fetched.new_sessions, 1, "{report:?}");
    assert!(bob.has(&small) && !bob.has(&big), "{report:?}");
    // The depositor's retry through it converges; bob then gets the whole session.
    let report = alice.sync(&other.ticket).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(
        report.deposited.iter().any(|(id, _, _)| *id == big),
        "{report:?}"
    );
    let report = bob.sync(&other.ticket).await;
    assert_eq!(report.fetched.new_sessions, 1, "{report:?}");
    assert_eq!(
        bob.store.session_raw(&big).unwrap(),
        alice.store.session_raw(&big).unwrap()
    );
    bob.fsck_clean();
    other.shutdown().await;
}
