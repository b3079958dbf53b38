//! Crash safety of `tapes import` under `kill -9`: one store takes 60 SIGKILLs at pseudo-random
//! moments of a running import (while the process starts and sled opens and recovers, while the
//! transcripts are parsed and hashed, and inside the commit), and after every kill the store
//! reopens, `fsck` passes, and every session is whole or absent: its head is the last node of a
//! version of its transcript that was on disk, its stored chain is exactly that version, and the
//! sessions of one import batch moved together or not at all (a batch is one atomic commit). At
//! the end a full import brings every session in whole and a second import finds nothing new.
//!
//! The transcripts grow between kills, as an agent's transcript does, so every import has
//! something to write (an import of an unchanged directory writes nothing, so kills of it would
//! only ever interrupt reads). A third of the kills watch sled's log file and strike within a
//! window after the commit's first write; the window adapts (wider after a kill that left nothing
//! of the import durable, narrower after one that let the refs move), so those kills settle
//! around the moment between the objects and the refs becoming durable.
//!
//! Sizing: few long sessions (24 × 602 messages, about 14k nodes at the end) rather than
//! thousands of short ones, because `fsck` runs after every kill and costs sessions × objects:
//! `Store::chain` counts every object of the store (sled's `len()` is a full scan) for each
//! session it walks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tapes::import::walk::BATCH_NODES;
use tapes::ingest::build_chain;
use tapes::protocol::{NodeId, Role, SessionId};
use tapes::sample::{self, Rng, Shape};
use tapes::store::Store;

const SESSIONS: usize = 24;
/// 2 + 2 × 300 = 602 messages per full transcript.
const TOOL_ROUNDS: usize = 300;
/// Kills that must land while the import process is still running...
const KILLS_DURING: usize = 50;
/// ...within this many kills (each grows every transcript a little first).
const MAX_KILLS: usize = 64;
const SEED: u64 = 0x6b69_6c6c;

/// One generated transcript and what a whole import of any prefix of it must look like.
struct Transcript {
    id: SessionId,
    path: PathBuf,
    /// The full Claude Code JSONL rendering.
    text: String,
    /// `ends[k - 1]`: byte length of the rendering of the first `k` messages.
    ends: Vec<usize>,
    /// Node ids of the full chain, root first; a prefix of `k` messages ends at `ids[k - 1]`.
    ids: Vec<NodeId>,
    /// Messages currently written to `path`.
    written: usize,
}

impl Transcript {
    fn messages(&self) -> usize {
        self.ids.len()
    }

    /// Appends messages `written..upto` to the file (whole lines only).
    fn grow_to(&mut self, upto: usize) {
        use std::io::Write;
        let from = if self.written == 0 {
            0
        } else {
            self.ends[self.written - 1]
        };
        let to = self.ends[upto - 1];
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
        file.write_all(self.text[from..to].as_bytes()).unwrap();
        file.sync_all().unwrap();
        self.written = upto;
    }
}

/// Sample sessions sharing no node with each other. (Node ids hash the body only, so two sample
/// sessions that open with the same prompt share their root node but not its metadata; the
/// first writer's metadata wins and fsck then reports the other session's summary as stale.
/// That is a separate matter from crash safety, so such sessions are left out here.)
fn transcripts(dir: &Path) -> Vec<Transcript> {
    let shape = Shape {
        tool_rounds: TOOL_ROUNDS,
        ..Shape::default()
    };
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut out = Vec::new();
    let mut index = 0;
    while out.len() < SESSIONS {
        let session = sample::session(SEED, index, shape);
        index += 1;
        let ids: Vec<NodeId> = build_chain(&session)
            .iter()
            .map(|object| object.id)
            .collect();
        if ids.iter().any(|id| seen.contains(id)) {
            continue;
        }
        seen.extend(ids.iter().copied());
        let text = sample::claude_jsonl(&session);
        // The renderer writes one line per user message and one per block of an assistant
        // message; find where each message's lines end.
        let newlines: Vec<usize> = text.match_indices('\n').map(|(at, _)| at + 1).collect();
        let mut ends = Vec::with_capacity(session.messages.len());
        let mut line = 0;
        for message in &session.messages {
            line += if message.role == Role::Assistant {
                message.blocks.len()
            } else {
                1
            };
            ends.push(newlines[line - 1]);
        }
        assert_eq!(line, newlines.len(), "every line belongs to a message");
        // A truncated session renders as a prefix of the full rendering.
        let mut half = session.clone();
        half.messages.truncate(session.messages.len() / 2 + 1);
        assert_eq!(
            sample::claude_jsonl(&half),
            text[..ends[half.messages.len() - 1]]
        );
        out.push(Transcript {
            id: SessionId::derive("claude", &session.source_id),
            path: dir.join(format!("{:03}-{}.jsonl", out.len(), session.source_id)),
            text,
            ends,
            ids,
            written: 0,
        });
    }
    out
}

fn import(home: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapes"));
    cmd.arg("import")
        .arg(dir)
        .env("TAPES_HOME", home)
        .env_remove("RUST_LOG");
    cmd
}

/// Runs an import to completion, asserting success; returns stdout and the duration.
fn import_to_end(home: &Path, dir: &Path) -> (String, Duration) {
    let started = Instant::now();
    let out = import(home, dir).output().unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, took)
}

/// Size and modification time of sled's log file: they change when sled writes. (One `stat`,
/// so a write is seen within tens of microseconds.)
fn db_stamp(store_dir: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(store_dir.join("db")).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Aim {
    /// The first 40 ms: the process is starting and sled is opening (and recovering).
    Open,
    /// Anywhere over the whole expected duration of the import, and a bit past it.
    Anywhere,
    /// Somewhere in the commit: after the store's files start changing once parsing is under
    /// way, within the expected duration of the writes.
    Commit,
}

/// When and how a kill landed.
struct Kill {
    /// `try_wait()` said the import had not exited yet when the kill was sent.
    running: bool,
    /// Since spawn.
    at: Duration,
    /// When sled's log file first changed after the open (Commit aim only).
    commit_seen: Option<Duration>,
}

/// Waits according to `aim`, then SIGKILLs the child if it is still running. `commit_at` is the
/// expected time from spawn to the commit's first write, `window` how long after that write to
/// strike at most.
fn kill_at(
    child: &mut Child,
    aim: Aim,
    commit_at: Duration,
    window: Duration,
    store_dir: &Path,
    rng: &mut Rng,
) -> Kill {
    let spawned = Instant::now();
    let micros = |d: Duration| d.as_micros() as u64;
    let mut commit_seen = None;
    match aim {
        Aim::Open => std::thread::sleep(Duration::from_micros(rng.below(40_000))),
        Aim::Anywhere => {
            // The whole import, its commit and exit included, and a little past it.
            let limit = micros(commit_at + window) * 11 / 10 + 10_000;
            std::thread::sleep(Duration::from_micros(rng.below(limit)));
        }
        Aim::Commit => {
            // sled writes while it opens (the first ~50 ms); let that pass, then wait for the
            // next write, which is the commit's.
            let grace = (commit_at * 2 / 5).max(Duration::from_millis(80));
            while spawned.elapsed() < grace && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let before = db_stamp(store_dir);
            while child.try_wait().unwrap().is_none() {
                if db_stamp(store_dir) != before {
                    commit_seen = Some(spawned.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            std::thread::sleep(Duration::from_micros(rng.below(micros(window))));
        }
    }
    let running = child.try_wait().unwrap().is_none();
    let at = spawned.elapsed();
    // Child::kill is SIGKILL on Unix, and a no-op for a child already reaped.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    if !running {
        assert!(
            status.success(),
            "an import that ran to its end failed: {status}"
        );
    }
    Kill {
        running,
        at,
        commit_seen,
    }
}

/// What the store holds after a kill: verified whole, returns the one message count all sessions
/// share (`None` = no session yet) and the object count.
fn check_store(
    store_dir: &Path,
    transcripts: &[Transcript],
    versions: &[usize],
    label: &str,
) -> (Option<usize>, usize) {
    let store = Store::open(store_dir).unwrap_or_else(|e| {
        let keep = format!("/tmp/crash_corrupt_{}", std::process::id());
        let _ = std::process::Command::new("cp").arg("-a").arg(store_dir).arg(&keep).status();
        panic!("{label}: the store does not reopen: {e} (copy kept in {keep})")
    });
    let report = tapes::fsck::fsck(&store, |_| {})
        .unwrap_or_else(|e| panic!("{label}: fsck failed to run: {e}"));
    assert!(
        report.is_clean(),
        "{label}: fsck found {} problems, first: {}",
        report.problems.len(),
        report
            .problems
            .iter()
            .take(5)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
    let by_id: HashMap<SessionId, &Transcript> = transcripts.iter().map(|t| (t.id, t)).collect();
    let sessions = store.sessions().unwrap();
    assert_eq!(
        report.refs,
        sessions.len(),
        "{label}: fsck saw another number of refs"
    );
    let mut counts = HashSet::new();
    for (id, record) in &sessions {
        let t = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{label}: session {id} was never written"));
        let n = record.summary.messages as usize;
        assert!(
            versions.contains(&n),
            "{label}: session {id} has {n} messages, a length its transcript never had on disk (had: {versions:?})"
        );
        assert_eq!(
            record.head,
            t.ids[n - 1],
            "{label}: session {id} head is not the last node of its {n} messages"
        );
        let chain: Vec<NodeId> = store
            .chain(&record.head)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            chain,
            t.ids[..n],
            "{label}: session {id}: the stored chain is not its first {n} messages"
        );
        counts.insert(n);
    }
    assert!(
        sessions.is_empty() || (sessions.len() == transcripts.len() && counts.len() == 1),
        "{label}: one import batch landed in part: {} of {} sessions present, lengths {counts:?}",
        sessions.len(),
        transcripts.len()
    );
    (counts.into_iter().next(), store.storage().object_count())
}

#[test]
fn sigkill_during_import_leaves_every_session_whole_or_absent() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("projects");
    std::fs::create_dir_all(&dir).unwrap();
    let home = tmp.path().join("home");
    let store_dir = home.join("store");
    let mut transcripts = transcripts(&dir);
    let full = transcripts[0].messages();
    assert!(transcripts.iter().all(|t| t.messages() == full));
    assert!(
        SESSIONS * full < BATCH_NODES,
        "the test expects one commit batch per import (it checks that a batch lands all or nothing)"
    );

    // Lengths on disk, from half the transcript up to just short of all of it: the first for a
    // calibration, the rest one per kill.
    let stress: usize = std::env::var("CRASH_STRESS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let first = if stress > 0 { full / 8 } else { full / 2 };
    let _stress: usize = std::env::var("CRASH_STRESS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let (kills_during, max_kills) = if stress > 0 { (stress, stress + stress / 4) } else { (KILLS_DURING, MAX_KILLS) };
    let lengths: Vec<usize> = (0..=max_kills)
        .map(|k| first + (full - first) * k / (max_kills + 1))
        .collect();
    assert!(lengths.windows(2).all(|w| w[0] < w[1]) && *lengths.last().unwrap() < full);

    // Calibrate on a scratch store: how long an import takes here, per message of length.
    let scratch = tmp.path().join("calibration");
    for t in &mut transcripts {
        t.grow_to(first);
    }
    let (_, calibration) = import_to_end(&scratch, &dir);
    std::fs::remove_dir_all(&scratch).unwrap();
    eprintln!(
        "calibration: import of {SESSIONS} sessions × {first} messages ({} nodes) into an empty store: {calibration:?}",
        SESSIONS * first
    );
    // Time from spawn to the commit's first write, per message of length: the calibration, then
    // the median of the latest commits seen (the machine may be busy with other work).
    let mut seen_per: Vec<f64> = vec![calibration.as_secs_f64() / first as f64];

    let mut rng = Rng::new(SEED);
    let mut versions: Vec<usize> = vec![first];
    let mut state: Option<usize> = None;
    let mut objects = 0;
    let mut outcomes: BTreeMap<(Aim, &str), usize> = BTreeMap::new();
    let (mut kills, mut during) = (0, 0);
    let mut latest = Duration::ZERO;
    let mut checking = Duration::ZERO;
    for &length in &lengths[1..] {
        if during == kills_during {
            break;
        }
        let i = kills;
        kills += 1;
        for t in &mut transcripts {
            t.grow_to(length);
        }
        versions.push(length);
        let new = length - state.unwrap_or(0);
        let mut recent: Vec<f64> = seen_per.iter().rev().take(7).copied().collect();
        recent.sort_by(f64::total_cmp);
        let commit_at = Duration::from_secs_f64(recent[recent.len() / 2] * length as f64);
        // About 40 µs a node to write, then two small syncs (strace: ~1 ms in all for a
        // 120-node commit).
        let mut window = Duration::from_micros(1_000 + 40 * (new * SESSIONS) as u64);
        if stress > 0 { window = Duration::from_micros(1_500); }
        let open_only = std::env::var("CRASH_AIMS").map_or(false, |v| v == "open");
        if open_only && i == 0 {
            let _ = import_to_end(&home, &dir);
            let (n, o) = check_store(&store_dir, &transcripts, &versions, "populate");
            state = n;
            objects = o;
        }
        let aim = if open_only { Aim::Open } else if stress > 0 { match rng.below(3) { 0 => Aim::Open, 1 => Aim::Anywhere, _ => Aim::Commit } } else { match rng.below(10) {
            0 => Aim::Open,
            1..=5 => Aim::Anywhere,
            _ => Aim::Commit,
        } };
        let mut child = import(&home, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill = kill_at(&mut child, aim, commit_at, window, &store_dir, &mut rng);
        let label = format!(
            "kill {i} ({aim:?} at {} ms, {} while running)",
            kill.at.as_millis(),
            if kill.running { "landed" } else { "not" }
        );
        let check_started = Instant::now();
        let (now, now_objects) = check_store(&store_dir, &transcripts, &versions, &label);
        checking += check_started.elapsed();
        assert!(
            now >= state,
            "{label}: sessions went back from {state:?} to {now:?} messages"
        );
        let committed = now == Some(length);
        if !kill.running {
            assert!(
                committed,
                "{label}: the import exited by itself yet its sessions are at {now:?}, not {length}"
            );
        }
        let outcome = match (kill.running, committed, now_objects > objects) {
            (false, _, _) => "finished before the kill",
            (true, true, _) => "refs moved, killed on the way out",
            (true, false, true) => "new objects durable, refs not moved",
            (true, false, false) => "nothing of this import durable",
        };
        *outcomes.entry((aim, outcome)).or_default() += 1;
        during += kill.running as usize;
        latest = latest.max(kill.at);
        if let Some(seen) = kill.commit_seen {
            seen_per.push(seen.as_secs_f64() / length as f64);
        }
        eprintln!(
            "kill {i:>2}: {aim:?} at {:>4} ms (commit expected at ~{} ms{}), {new} new messages per session: {outcome}",
            kill.at.as_millis(),
            commit_at.as_millis(),
            kill.commit_seen.map_or(String::new(), |t| format!(", seen at {} ms", t.as_millis())),
        );
        state = now;
        objects = now_objects;
    }
    let after = kills - during;
    eprintln!("{kills} kills: {during} landed while the import ran, {after} after it had finished");
    for ((aim, outcome), n) in &outcomes {
        eprintln!("  {aim:?}: {n} × {outcome}");
    }
    eprintln!(
        "latest kill {latest:?} after spawn; sessions ended the loop at {state:?} messages; \
         reopening and checking after the kills took {checking:?}"
    );
    assert!(
        during >= kills_during && after * 4 <= during,
        "{during} of {kills} kills landed while the import was running; the delays need tuning"
    );

    // Let the last version in, whole, then nothing is new.
    for t in &mut transcripts {
        t.grow_to(full);
    }
    versions.push(full);
    let (out, took) = import_to_end(&home, &dir);
    eprintln!(
        "final import: {took:?}: {}",
        out.lines().next().unwrap_or("")
    );
    let (now, _) = check_store(
        &store_dir,
        &transcripts,
        &versions,
        "after the final import",
    );
    assert_eq!(
        now,
        Some(full),
        "the final import left sessions at {now:?} messages, not {full}"
    );
    let (out, _) = import_to_end(&home, &dir);
    assert!(
        out.starts_with("nothing new:"),
        "a second import wrote something: {out}"
    );
    eprintln!("whole test: {:?}", started.elapsed());
}

#[test]
#[ignore]
fn probe_write_files() {
    let dir = PathBuf::from(std::env::var("PROBE_DIR").unwrap());
    let len: usize = std::env::var("PROBE_LEN").unwrap().parse().unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let mut ts = transcripts(&dir);
    for t in &mut ts {
        let _ = std::fs::remove_file(&t.path);
        t.grow_to(len);
    }
}
