//! Relay throughput: sessions/s and MB/s through one relay with 1, 10 and 50 concurrent
//! clients, both directions, over iroh on 127.0.0.1 (relays and discovery off).
//!
//! `cargo bench --bench relay` runs, for each N:
//!
//! 1. a fresh relay (its own data directory, `relay.toml` with every quota at 0 = unlimited),
//!    in this process on its own 2-thread tokio runtime; a fresh team of an owner, depositors
//!    and fetchers, each member its own identity, store and endpoint, all given the final team
//!    chain; the owner registers the team at the relay;
//! 2. deposit: the N depositors dial the relay at once (each its own endpoint and connection),
//!    wait for each other, then each pushes its sessions shared with the team: `hello`, then
//!    `PeerConn::deposit` per session (what `relay_sync` does after its fetch): sealed to the
//!    team by the client, stored as opaque segments by the relay. Timed from the moment all
//!    are connected to the moment the last one is done;
//! 3. fetch: the N fetchers, fresh stores in the team, dial at once, then each fetches
//!    everything the relay holds (`PeerConn::fetch` on a relay connection): every session of
//!    the round, opened, verified and stored. So the fetch moves N times the round's data.
//!
//! The data deposited per round is constant across N (TOTAL sessions split over the N
//! depositors), so the deposit rows compare the same work at different concurrency; each
//! fetch row is N clients each fetching all of it. MB = bytes of the sessions' stored objects
//! (the plaintext nodes); "wire" is what the clients' connections counted (frames sent and
//! received, sealed and framed). Every round checks what landed (counts of deposits, nodes,
//! the relay's usage, every fetcher has every session at the right head) and panics if not.
//!
//! The team has the same size in every round by default (an owner, 50 depositors and 50
//! fetchers, of which N of each take part), so the rows differ only in concurrency: a
//! deposit's client cost grows with the team's size and chain. Everything (relay and the N
//! clients) shares this machine's cores; the relay's own CPU is reported apart (its runtime's
//! threads are named `relay-rt`).
//!
//! Environment: `TAPES_BENCH_RELAY_SESSIONS` (default 100) sessions deposited per round, split
//! over the N depositors (rounded up to a multiple of N); `TAPES_BENCH_RELAY_ROUNDS` (default
//! 50, ~60 KB a session) tool rounds per session (~2 nodes each); `TAPES_BENCH_RELAY_CLIENTS`
//! (default `1,10,50`); `TAPES_BENCH_RELAY_TEAM` (`fixed`, the default, or `scaled`: an owner,
//! N depositors and N fetchers); `TAPES_BENCH_RELAY_TIMEOUT` (default 600) seconds a phase may
//! take. The default run moves ~6 MB per deposit round and up to ~300 MB (50 x 6 MB) in the
//! 50-client fetch, into temporary directories, in about a minute on 2 cores.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tapes::protocol::sync::Scope;
use tapes::protocol::TeamId;
use tapes::relay::run::{start, RelayOptions, RunningRelay};
use tapes::share::Audience;
use tapes::team::{self};
use tapes::testing::{Made, Node as Member};
use tokio::sync::Barrier;

#[global_allocator]
static GLOBAL: tapes::allocator::MiMalloc = tapes::allocator::MiMalloc;

const RELAY_THREADS: &str = "relay-rt";
const CLIENT_THREADS: &str = "client-rt";

fn main() -> Result<()> {
    // As the `tapes` binary does, so the memory figures are the ones a user sees.
    tapes::allocator::purge_freed_memory_at_once();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let total: usize = env_or("TAPES_BENCH_RELAY_SESSIONS", 100.0) as usize;
    let rounds: usize = env_or("TAPES_BENCH_RELAY_ROUNDS", 50.0) as usize;
    let timeout = Duration::from_secs_f64(env_or("TAPES_BENCH_RELAY_TIMEOUT", 600.0));
    let clients: Vec<usize> = std::env::var("TAPES_BENCH_RELAY_CLIENTS")
        .unwrap_or_else(|_| "1,10,50".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .context("TAPES_BENCH_RELAY_CLIENTS: numbers, comma-separated")
        })
        .collect::<Result<_>>()?;
    let fixed_team = match std::env::var("TAPES_BENCH_RELAY_TEAM").as_deref() {
        Ok("scaled") => false,
        Ok("fixed") | Err(_) => true,
        Ok(other) => anyhow::bail!("TAPES_BENCH_RELAY_TEAM: `fixed` or `scaled`, not `{other}`"),
    };
    let most = clients.iter().copied().max().unwrap_or(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "relay benchmark: {cores} cores, 127.0.0.1, relays and discovery off; the relay in this process on its own 2-thread runtime, the clients on another"
    );
    println!(
        "data per round: {total} sessions of {rounds} tool rounds (TAPES_BENCH_RELAY_SESSIONS, TAPES_BENCH_RELAY_ROUNDS), constant across N: split over the N depositors"
    );
    if fixed_team {
        println!(
            "team: the same size in every round (TAPES_BENCH_RELAY_TEAM=fixed): an owner and {most} depositors + {most} fetchers = {} members, of which N deposit and N fetch",
            2 * most + 1
        );
    } else {
        println!("team: an owner, N depositors and N fetchers (TAPES_BENCH_RELAY_TEAM=scaled): 2N + 1 members");
    }
    println!("deposit: N clients push their team-shared sessions at once (hello + one deposit per session; sealed by the client, stored by the relay)");
    println!("fetch:   N other fresh members fetch everything the relay holds at once (all the round's sessions each: opened, verified, stored), so N x the round's data moves");
    println!("MB = object bytes of the sessions (1 MB = 1e6 B); sessions/s and MB/s are aggregate over all N clients; wire = frames the clients' connections counted");
    println!("connect = wall time for all N dials (not in the timed window); wall s = from all connected to the last client done");
    println!("CPU during the timed window: relay = the relay runtime's threads (sled's shared io threads not included), ms/session = relay CPU per session deposited or delivered, process = relay + all clients");
    println!("the relay and all N clients share this machine's {cores} cores: the aggregate rates are what one box does for both sides; the relay CPU column is the relay's part\n");

    let relay_rt = runtime(RELAY_THREADS)?;
    let client_rt = runtime(CLIENT_THREADS)?;
    let mut rows = Vec::new();
    for (round, &n) in clients.iter().enumerate() {
        let per_client = total.div_ceil(n).max(1);
        let side = if fixed_team { most } else { n };
        let result = run_round(
            &relay_rt,
            &client_rt,
            round as u64,
            n,
            side,
            per_client,
            rounds,
            timeout,
        )
        .with_context(|| format!("the round with {n} clients"))?;
        result.print_progress();
        rows.push(result);
    }

    println!();
    println!(
        "{:>7} {:<7} {:>8} {:>9} {:>8} {:>10} {:>8} {:>11} {:>17} {:>10} {:>9} {:>10} {:>11}",
        "clients",
        "phase",
        "sessions",
        "MB",
        "wall s",
        "sessions/s",
        "MB/s",
        "MB/s/client",
        "wire MB up/down",
        "connect ms",
        "relay CPU",
        "ms/session",
        "process CPU"
    );
    for r in &rows {
        for p in [&r.deposit, &r.fetch] {
            println!(
                "{:>7} {:<7} {:>8} {:>9.1} {:>8.2} {:>10.1} {:>8.1} {:>11.1} {:>17} {:>10.0} {:>8.2}s {:>10.2} {:>10.2}s",
                r.clients,
                p.name,
                p.sessions,
                p.bytes as f64 / 1e6,
                p.secs,
                p.sessions as f64 / p.secs,
                p.bytes as f64 / p.secs / 1e6,
                p.per_client_mbs,
                format!("{:.1}/{:.1}", p.sent as f64 / 1e6, p.received as f64 / 1e6),
                p.connect_secs * 1e3,
                p.relay_cpu,
                p.relay_cpu * 1e3 / p.sessions.max(1) as f64,
                p.process_cpu
            );
        }
    }
    println!();
    for r in &rows {
        println!(
            "relay data dir at the end of the {}-client round: {:.1} MB ({:.1} MB allocated) for {:.1} MB of objects deposited ({} sessions, {} nodes; relay usage: {:.1} MB of sealed segments)",
            r.clients,
            r.dir_bytes as f64 / 1e6,
            r.dir_allocated as f64 / 1e6,
            r.deposit.bytes as f64 / 1e6,
            r.deposit.sessions,
            r.nodes,
            r.relay_usage_bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// One phase of a round, measured.
struct Phase {
    name: &'static str,
    sessions: usize,
    bytes: u64,
    secs: f64,
    per_client_mbs: f64,
    /// Bytes the clients' connections sent and received.
    sent: u64,
    received: u64,
    connect_secs: f64,
    relay_cpu: f64,
    process_cpu: f64,
}

struct Round {
    clients: usize,
    members: usize,
    nodes: u64,
    deposit: Phase,
    fetch: Phase,
    dir_bytes: u64,
    dir_allocated: u64,
    relay_usage_bytes: u64,
    setup_secs: f64,
}

impl Round {
    fn print_progress(&self) {
        println!(
            "{} clients, team of {} members: setup {:.1} s; deposit {} sessions in {:.2} s; fetch {} x {} sessions in {:.2} s; checked",
            self.clients,
            self.members,
            self.setup_secs,
            self.deposit.sessions,
            self.deposit.secs,
            self.clients,
            self.deposit.sessions,
            self.fetch.secs
        );
    }
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

/// What one client did in the timed window.
struct ClientDone {
    finished: Instant,
    sessions: usize,
    nodes: u64,
    sent: u64,
    received: u64,
}

#[allow(clippy::too_many_arguments)]
fn run_round(
    relay_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
    round: u64,
    n: usize,
    side: usize,
    per_client: usize,
    rounds: usize,
    timeout: Duration,
) -> Result<Round> {
    let setup_started = Instant::now();
    let data = tempfile::tempdir()?;
    std::fs::write(
        data.path().join("relay.toml"),
        "[default]\nmembers = 0\nsessions_per_month = 0\nbytes = 0\n",
    )?;
    let relay: RunningRelay = relay_rt.block_on(start(
        data.path(),
        &RelayOptions {
            bind: "127.0.0.1:0".parse()?,
            http: None,
            network: tapes::peer::network::NetworkMode::Local,
            public_url: None,
        },
        Arc::new(|_| {}),
    ))?;
    let ticket = relay.ticket.clone();

    let (owner, team, depositors, fetchers) = client_rt.block_on(async {
        let owner = new_member("owner").await?;
        let team = team::create(&owner.store, &owner.identity, "bench", tapes::now_ms())?.team_id();
        let mut depositors = Vec::new();
        let mut fetchers = Vec::new();
        for i in 0..side {
            depositors.push(new_member(&format!("depositor{i}")).await?);
            fetchers.push(new_member(&format!("fetcher{i}")).await?);
        }
        tokio::task::block_in_place(|| -> Result<()> {
            for m in depositors.iter().chain(&fetchers) {
                add_member(&owner, m, &team)?;
            }
            // Everyone's chain must be the final one (each joined at a different version).
            let chain = team::load(&owner.store, &team)?;
            for m in depositors.iter().chain(&fetchers) {
                team::store_chain(&m.store, &chain)?;
            }
            Ok(())
        })?;
        let conn = owner.relay(&ticket).await?;
        conn.register(&owner.store, &team).await?;
        conn.close();
        anyhow::Ok((owner, team, depositors, fetchers))
    })?;

    let mut made: Vec<Vec<Made>> = Vec::new();
    for (i, m) in depositors.iter().take(n).enumerate() {
        made.push(m.import_shared(
            Audience::Team(team),
            1000 + round,
            i * per_client,
            per_client,
            rounds,
        )?);
    }
    let all: Vec<Made> = made.iter().flatten().copied().collect();
    let sessions = all.len();
    let nodes: u64 = all.iter().map(|m| m.nodes).sum();
    let bytes: u64 = all.iter().map(|m| m.bytes).sum();
    let setup_secs = setup_started.elapsed().as_secs_f64();

    let depositors = Arc::new(depositors);
    let fetchers = Arc::new(fetchers);
    let made = Arc::new(made);

    // Deposit.
    let usage = Usage::now();
    let (deposit_done, started, connect_secs) = client_rt.block_on(async {
        let barrier = Arc::new(Barrier::new(n + 1));
        let mut tasks = tokio::task::JoinSet::new();
        let dial = Instant::now();
        for i in 0..n {
            let (depositors, made, ticket, barrier) =
                (depositors.clone(), made.clone(), ticket.clone(), barrier.clone());
            tasks.spawn(async move {
                let m = &depositors[i];
                let conn = m.relay(&ticket).await;
                barrier.wait().await;
                let conn = conn.map_err(|e| format!("depositor {i} cannot dial the relay: {e:#}"))?;
                let teams = conn
                    .hello()
                    .await
                    .map_err(|e| format!("depositor {i}: hello: {e}"))?;
                if teams != vec![team] {
                    return Err(format!("depositor {i}: the relay lists teams {teams:?} for it"));
                }
                let mut nodes = 0;
                for s in &made[i] {
                    let stored = conn
                        .deposit(&m.store, &m.identity, Scope::Team(team), s.id)
                        .await
                        .map_err(|e| format!("depositor {i}: deposit of {}: {e}", s.id.short()))?;
                    if stored != s.nodes {
                        return Err(format!(
                            "depositor {i}: the relay stored {stored} nodes of session {}, which has {}",
                            s.id.short(),
                            s.nodes
                        ));
                    }
                    nodes += stored;
                }
                let finished = Instant::now();
                let done = ClientDone {
                    finished,
                    sessions: made[i].len(),
                    nodes,
                    sent: conn.counters.sent(),
                    received: conn.counters.received(),
                };
                conn.close();
                Ok::<_, String>(done)
            });
        }
        barrier.wait().await;
        let started = Instant::now();
        let connect_secs = dial.elapsed().as_secs_f64();
        let done = collect(&mut tasks, timeout, "deposit").await;
        (done, started, connect_secs)
    });
    let (relay_cpu, process_cpu) = usage.since();
    let deposit_done = deposit_done.unwrap_or_else(|e| panic!("{n} clients, deposit: {e}"));
    let deposit = phase(
        "deposit",
        &deposit_done,
        started,
        connect_secs,
        relay_cpu,
        process_cpu,
        bytes,
    );

    // Check what landed.
    let landed: usize = deposit_done.iter().map(|c| c.sessions).sum();
    let landed_nodes: u64 = deposit_done.iter().map(|c| c.nodes).sum();
    assert_eq!(landed, sessions, "{n} clients: deposits that landed");
    assert_eq!(landed_nodes, nodes, "{n} clients: nodes deposited");
    let relay_usage = relay
        .state
        .usage(&Scope::Team(team))
        .unwrap_or_else(|e| panic!("{n} clients: the relay's usage: {e}"));
    assert_eq!(
        relay_usage.sessions as usize, sessions,
        "{n} clients: sessions the relay counts for the team"
    );
    for s in &all {
        let (deposited, ids) = relay
            .state
            .deposited(&Scope::Team(team), &s.id)
            .unwrap_or_else(|e| panic!("{n} clients: the relay's record of {}: {e}", s.id.short()))
            .unwrap_or_else(|| panic!("{n} clients: the relay has no deposit of {}", s.id.short()));
        assert_eq!(
            deposited.head,
            s.head,
            "{n} clients: relay head of {}",
            s.id.short()
        );
        assert_eq!(
            ids.len() as u64,
            s.nodes,
            "{n} clients: relay ids of {}",
            s.id.short()
        );
    }

    // Fetch.
    let usage = Usage::now();
    let (fetch_done, started, connect_secs) = client_rt.block_on(async {
        let barrier = Arc::new(Barrier::new(n + 1));
        let mut tasks = tokio::task::JoinSet::new();
        let dial = Instant::now();
        for i in 0..n {
            let (fetchers, ticket, barrier) = (fetchers.clone(), ticket.clone(), barrier.clone());
            tasks.spawn(async move {
                let m = &fetchers[i];
                let conn = m.relay(&ticket).await;
                barrier.wait().await;
                let conn = conn.map_err(|e| format!("fetcher {i} cannot dial the relay: {e:#}"))?;
                let report = conn
                    .fetch(&m.store, &m.identity)
                    .await
                    .map_err(|e| format!("fetcher {i}: fetch: {e}"))?;
                let finished = Instant::now();
                if report.new_sessions != sessions || report.nodes as u64 != nodes {
                    return Err(format!(
                        "fetcher {i} got {} new sessions and {} nodes of {sessions} and {nodes}: {report:?}",
                        report.new_sessions, report.nodes
                    ));
                }
                let done = ClientDone {
                    finished,
                    sessions: report.new_sessions,
                    nodes: report.nodes as u64,
                    sent: conn.counters.sent(),
                    received: conn.counters.received(),
                };
                conn.close();
                Ok::<_, String>(done)
            });
        }
        barrier.wait().await;
        let started = Instant::now();
        let connect_secs = dial.elapsed().as_secs_f64();
        let done = collect(&mut tasks, timeout, "fetch").await;
        (done, started, connect_secs)
    });
    let (relay_cpu, process_cpu) = usage.since();
    let fetch_done = fetch_done.unwrap_or_else(|e| panic!("{n} clients, fetch: {e}"));
    let fetch = phase(
        "fetch",
        &fetch_done,
        started,
        connect_secs,
        relay_cpu,
        process_cpu,
        bytes * n as u64,
    );
    assert_eq!(
        fetch_done.iter().map(|c| c.nodes).sum::<u64>(),
        nodes * n as u64,
        "{n} clients: nodes fetched"
    );
    for (i, m) in fetchers.iter().take(n).enumerate() {
        for s in &all {
            let record = m
                .store
                .session(&s.id)
                .unwrap_or_else(|e| panic!("{n} clients: fetcher {i}: {e}"))
                .unwrap_or_else(|| {
                    panic!("{n} clients: fetcher {i} lacks session {}", s.id.short())
                });
            assert_eq!(
                record.head,
                s.head,
                "{n} clients: fetcher {i}: head of {}",
                s.id.short()
            );
        }
    }

    relay_rt.block_on(relay.shutdown());
    client_rt.block_on(async {
        for m in depositors.iter().chain(fetchers.iter()).chain([&owner]) {
            m.router.endpoint().close().await;
        }
    });
    // Let sled write out what it keeps in memory before measuring the directory.
    drop(depositors);
    drop(fetchers);
    std::thread::sleep(Duration::from_millis(300));
    let (dir_bytes, dir_allocated) = dir_size(data.path());
    Ok(Round {
        clients: n,
        members: 2 * side + 1,
        nodes,
        deposit,
        fetch,
        dir_bytes,
        dir_allocated,
        relay_usage_bytes: relay_usage.bytes,
        setup_secs,
    })
}

/// Waits for every client; the first error, a panic or the timeout is an error.
async fn collect(
    tasks: &mut tokio::task::JoinSet<Result<ClientDone, String>>,
    timeout: Duration,
    what: &str,
) -> Result<Vec<ClientDone>, String> {
    let mut done = Vec::new();
    let mut first_error = None;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Err(_) => {
                return Err(format!(
                    "{what}: {} clients still running after {timeout:?} ({} done)",
                    tasks.len(),
                    done.len()
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                first_error.get_or_insert(format!("a client task failed: {e}"));
            }
            Ok(Some(Ok(Err(e)))) => {
                first_error.get_or_insert(e);
            }
            Ok(Some(Ok(Ok(c)))) => done.push(c),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

#[allow(clippy::too_many_arguments)]
fn phase(
    name: &'static str,
    done: &[ClientDone],
    started: Instant,
    connect_secs: f64,
    relay_cpu: f64,
    process_cpu: f64,
    bytes: u64,
) -> Phase {
    let last = done.iter().map(|c| c.finished).max().unwrap_or(started);
    let secs = last.duration_since(started).as_secs_f64().max(1e-9);
    let per_client: f64 = done
        .iter()
        .map(|c| {
            let share = bytes as f64 / done.len() as f64;
            share / c.finished.duration_since(started).as_secs_f64().max(1e-9) / 1e6
        })
        .sum::<f64>()
        / done.len().max(1) as f64;
    Phase {
        name,
        sessions: done.iter().map(|c| c.sessions).sum(),
        bytes,
        secs,
        per_client_mbs: per_client,
        sent: done.iter().map(|c| c.sent).sum(),
        received: done.iter().map(|c| c.received).sum(),
        connect_secs,
        relay_cpu,
        process_cpu,
    }
}

/// CPU seconds of the relay runtime's threads and of the whole process.
struct Usage {
    relay: f64,
    process: f64,
}

impl Usage {
    fn now() -> Usage {
        Usage {
            relay: threads_cpu(RELAY_THREADS),
            process: process_cpu(),
        }
    }

    fn since(self) -> (f64, f64) {
        let now = Usage::now();
        (now.relay - self.relay, now.process - self.process)
    }
}

/// User + system CPU seconds of this process's threads whose name starts with `prefix`
/// (runtimes keep their threads alive for the whole run, so none of them exits between two
/// readings).
fn threads_cpu(prefix: &str) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(entries) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        // After the name: state is field 3; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |k: usize| {
            fields
                .get(k - 3)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += field(14) + field(15);
    }
    total as f64 / ticks
}

fn process_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// Apparent and allocated bytes of the files under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut allocated) = (0, 0);
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if let Ok(meta) = entry.metadata() {
            if meta.is_file() {
                len += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    (len, allocated)
}

fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()?)
}

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
