//! Relays over one bucket (SPEC.md §16.13) against one relay on `--data` (§16.2): sessions/s
//! and MB/s of deposits and fetches by 50 concurrent clients, over iroh on 127.0.0.1.
//!
//! `cargo bench --bench relay_s3` starts `moto_server` (PyPI `moto[server]` 5.2.x) on a free
//! port of 127.0.0.1 (it prints one line and stops when moto_server is absent) and runs two
//! setups with the same team and data:
//!
//! * anchor: one relay with its state in its own `--data` store;
//! * bucket: two relays on one bucket (`--store s3://bench/relays`, each with its own data
//!   directory and blob cache), the clients spread over them by index.
//!
//! Each setup: a fresh team (an owner, N depositors, N fetchers, each its own identity, store
//! and endpoint); the owner registers it (through the first relay); then
//!
//! 1. deposit: the N depositors dial at once, then each runs `relay_sync` (fetch, then deposit
//!    every session it shares with the team). Timed from all connected to the last done;
//! 2. fetch: the N fetchers dial at once, then each fetches everything (every session of the
//!    round, opened, verified, stored), so N times the round's data moves.
//!
//! Then every deposit is checked (each depositor's report names each of its sessions, no
//! failure), and every fetcher holds every session at its head; any difference is an error,
//! counted and printed (the bench fails if any). MB = plaintext object bytes of the sessions
//! (1 MB = 1e6 B). The relays, the clients and moto_server share this machine's cores; moto is
//! a single-process Python server, so the bucket rows are a floor for a real S3.
//!
//! Environment: `TAPES_BENCH_S3_CLIENTS` (default 50), `TAPES_BENCH_S3_SESSIONS` (default 100,
//! split over the depositors, rounded up to a multiple of N), `TAPES_BENCH_S3_ROUNDS` (default
//! 50 tool rounds a session, ~60 KB).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tapes::peer::addr::PeerAddr;
use tapes::protocol::TeamId;
use tapes::relay::backend::BucketOptions;
use tapes::relay::run::{start_on, RelayOptions, RunningRelay, StateStore};
use tapes::share::Audience;
use tapes::team::{self};
use tapes::testing::Node as Member;

#[global_allocator]
static GLOBAL: tapes::allocator::MiMalloc = tapes::allocator::MiMalloc;

fn main() -> Result<()> {
    // As the `tapes` binary does, so the memory figures are the ones a user sees.
    tapes::allocator::purge_freed_memory_at_once();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let clients = env_or("TAPES_BENCH_S3_CLIENTS", 50);
    let sessions = env_or("TAPES_BENCH_S3_SESSIONS", 100).div_ceil(clients) * clients;
    let rounds = env_or("TAPES_BENCH_S3_ROUNDS", 50);
    let Some(moto) = Moto::start()? else {
        println!(
            "relay_s3: skipped, moto_server is not installed (pip install 'moto[server]==5.2.1')"
        );
        return Ok(());
    };
    moto.create_bucket("bench")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "relay_s3: {clients} concurrent clients, {sessions} sessions of {rounds} tool rounds per round; the relays, the clients and moto_server share {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("deposit: N depositors run relay_sync at once; fetch: N fresh members fetch everything at once (N x the round's data)");
    let anchor = runtime.block_on(round(&moto, None, clients, sessions, rounds))?;
    let bucket = runtime.block_on(round(
        &moto,
        Some("s3://bench/relays"),
        clients,
        sessions,
        rounds,
    ))?;
    println!();
    println!(
        "{:<38} {:>11} {:>9} {:>11} {:>9} {:>7} {:>7}",
        "setup", "deposit s/s", "MB/s", "fetch s/s", "MB/s", "errors", "lost"
    );
    for (name, r) in [
        ("anchor: 1 relay on --data", &anchor),
        ("bucket: 2 relays on one bucket (moto)", &bucket),
    ] {
        println!(
            "{:<38} {:>11.1} {:>9.2} {:>11.1} {:>9.2} {:>7} {:>7}",
            name,
            r.deposit_rate(),
            r.deposit_mb(),
            r.fetch_rate(),
            r.fetch_mb(),
            r.errors,
            r.lost
        );
    }
    println!(
        "{:<38} {:>11.2} {:>9.2} {:>11.2} {:>9.2}",
        "ratio bucket / anchor",
        bucket.deposit_rate() / anchor.deposit_rate(),
        bucket.deposit_mb() / anchor.deposit_mb(),
        bucket.fetch_rate() / anchor.fetch_rate(),
        bucket.fetch_mb() / anchor.fetch_mb()
    );
    if anchor.errors + anchor.lost + bucket.errors + bucket.lost > 0 {
        bail!("errors or lost sessions (above)");
    }
    Ok(())
}

/// One setup's figures.
struct Figures {
    sessions: usize,
    bytes: u64,
    deposit: Duration,
    fetched_sessions: usize,
    fetch: Duration,
    errors: usize,
    lost: usize,
}

impl Figures {
    fn deposit_rate(&self) -> f64 {
        self.sessions as f64 / self.deposit.as_secs_f64()
    }
    fn deposit_mb(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.deposit.as_secs_f64()
    }
    fn fetch_rate(&self) -> f64 {
        self.fetched_sessions as f64 / self.fetch.as_secs_f64()
    }
    fn fetch_mb(&self) -> f64 {
        // Each fetcher moves the round's data.
        let fetchers = self.fetched_sessions as f64 / self.sessions.max(1) as f64;
        self.bytes as f64 * fetchers / 1e6 / self.fetch.as_secs_f64()
    }
}

async fn round(
    moto: &Moto,
    bucket: Option<&str>,
    clients: usize,
    sessions: usize,
    rounds: usize,
) -> Result<Figures> {
    let setup = if bucket.is_some() { "bucket" } else { "anchor" };
    let relay_options = RelayOptions {
        bind: "127.0.0.1:0".parse()?,
        http: None,
        network: tapes::peer::network::NetworkMode::Local,
        public_url: None,
    };
    let unlimited = "[default]\nsessions_per_month = 0\nmembers = 0\nbytes = 0\n";
    let mut dirs = Vec::new();
    let mut relays: Vec<RunningRelay> = Vec::new();
    for _ in 0..if bucket.is_some() { 2 } else { 1 } {
        let dir = tempfile::tempdir()?;
        let state = match bucket {
            None => {
                std::fs::write(dir.path().join("relay.toml"), unlimited)?;
                StateStore::Local
            }
            Some(url) => {
                moto.put("bench", "relays/relay.toml", unlimited.as_bytes())
                    .await?;
                let mut options = BucketOptions::new(url);
                options.endpoint = Some(moto.endpoint());
                options.region = Some("us-east-1".into());
                options.access_key_id = Some("bench".into());
                options.secret_access_key = Some("bench".into());
                StateStore::Bucket(options)
            }
        };
        relays.push(start_on(dir.path(), &state, &relay_options, Arc::new(|_| {})).await?);
        dirs.push(dir);
    }
    let tickets: Vec<PeerAddr> = relays.iter().map(|r| r.ticket.clone()).collect();
    let ticket_of = |i: usize| tickets[i % tickets.len()].clone();

    let owner = new_member("owner").await?;
    let team = team::create(&owner.store, &owner.identity, "bench", tapes::now_ms())?.team_id();
    let mut depositors = Vec::new();
    let mut fetchers = Vec::new();
    for i in 0..clients {
        let d = new_member(&format!("depositor {i}")).await?;
        add_member(&owner, &d, &team)?;
        depositors.push(d);
        let f = new_member(&format!("fetcher {i}")).await?;
        add_member(&owner, &f, &team)?;
        fetchers.push(f);
    }
    let chain = team::load(&owner.store, &team)?;
    for m in depositors.iter().chain(fetchers.iter()) {
        team::store_chain(&m.store, &chain)?;
    }
    owner
        .relay(&tickets[0])
        .await?
        .register(&owner.store, &team)
        .await?;
    let per = sessions / clients;
    let mut made = Vec::new();
    for (i, d) in depositors.iter().enumerate() {
        made.push(d.import_shared(Audience::Team(team), 7, i * per, per, rounds)?);
    }
    let bytes: u64 = made.iter().flatten().map(|m| m.bytes).sum();

    // Deposit.
    let mut conns = Vec::new();
    for (i, d) in depositors.iter().enumerate() {
        conns.push(d.relay(&ticket_of(i)).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (conn, d) in conns.into_iter().zip(depositors.iter()) {
        let store = d.store.clone();
        let identity = d.identity.clone();
        tasks.push(tokio::spawn(async move {
            let report = conn.relay_sync(&store, &identity).await;
            conn.close();
            report
        }));
    }
    let mut errors = 0;
    for (task, mine) in tasks.into_iter().zip(made.iter()) {
        match task.await? {
            Ok(report) => {
                for m in mine {
                    if !report.deposited.iter().any(|(id, _, _)| *id == m.id) {
                        errors += 1;
                        eprintln!("{setup}: session {} was not deposited", m.id.short());
                    }
                }
                for failed in &report.failed {
                    errors += 1;
                    eprintln!("{setup}: a deposit failed: {failed:?}");
                }
            }
            Err(e) => {
                errors += 1;
                eprintln!("{setup}: a depositor's sync failed: {e}");
            }
        }
    }
    let deposit = started.elapsed();

    // Fetch.
    let mut conns = Vec::new();
    for (i, f) in fetchers.iter().enumerate() {
        conns.push(f.relay(&ticket_of(i)).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (conn, f) in conns.into_iter().zip(fetchers.iter()) {
        let store = f.store.clone();
        let identity = f.identity.clone();
        tasks.push(tokio::spawn(async move {
            let report = conn.fetch(&store, &identity).await;
            conn.close();
            report
        }));
    }
    let mut fetched_sessions = 0;
    for task in tasks {
        match task.await? {
            Ok(report) => fetched_sessions += report.new_sessions,
            Err(e) => {
                errors += 1;
                eprintln!("{setup}: a fetch failed: {e}");
            }
        }
    }
    let fetch = started.elapsed();
    // Nothing lost: every fetcher holds every session at its head.
    let mut lost = 0;
    for f in &fetchers {
        for m in made.iter().flatten() {
            if f.store.session(&m.id)?.map(|s| s.head) != Some(m.head) {
                lost += 1;
            }
        }
    }
    if lost > 0 {
        eprintln!("{setup}: {lost} (fetcher, session) pairs missing or at another head");
    }
    for relay in relays {
        relay.shutdown().await;
    }
    for m in depositors.iter().chain(fetchers.iter()).chain([&owner]) {
        m.router.endpoint().close().await;
    }
    println!(
        "{setup}: deposited {} sessions ({:.1} MB) in {:.2} s, fetched {fetched_sessions} in {:.2} s",
        sessions,
        bytes as f64 / 1e6,
        deposit.as_secs_f64(),
        fetch.as_secs_f64()
    );
    drop(dirs);
    Ok(Figures {
        sessions,
        bytes,
        deposit,
        fetched_sessions,
        fetch,
        errors,
        lost,
    })
}

/// A team member's machine: the shared harness node (`tapes::testing`).
async fn new_member(name: &str) -> Result<Member> {
    Ok(Member::new(name).await?)
}

/// Adds `joiner` to `owner`'s team without the network (invite, request, accept, complete).
fn add_member(owner: &Member, joiner: &Member, team: &TeamId) -> Result<()> {
    tapes::testing::add_member(
        &owner.store,
        &owner.identity,
        &joiner.store,
        &joiner.identity,
        team,
    )?;
    Ok(())
}

/// A `moto_server` on 127.0.0.1, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Result<Option<Moto>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let Ok(child) = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return Ok(None);
        };
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto
            .request("GET", "/", b"")
            .map(|s| s != 200)
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                bail!("moto_server did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Some(moto))
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain, unsigned HTTP request (moto takes them): the status.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<u16> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        stream.write_all(body)?;
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        Ok(response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    fn create_bucket(&self, bucket: &str) -> Result<()> {
        match self.request("PUT", &format!("/{bucket}"), b"")? {
            200 => Ok(()),
            status => bail!("creating bucket {bucket}: HTTP {status}"),
        }
    }

    /// Writes an object with the client the relays use (signed).
    async fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Result<()> {
        use object_store::ObjectStoreExt;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("bench")
            .with_secret_access_key("bench")
            .build()?;
        client
            .put(
                &object_store::path::Path::from(key),
                object_store::PutPayload::from(body.to_vec()),
            )
            .await
            .with_context(|| format!("writing {bucket}/{key}"))?;
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}
