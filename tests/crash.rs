//! Crash safety of `tapes import` under `kill -9`: one store takes 60 SIGKILLs at pseudo-random
//! moments of a running import (while sled opens and recovers, while transcripts are parsed and
//! hashed, and right after the commit starts writing), and after every kill the store reopens,
//! `fsck` passes, and every session is whole or absent: its head is the last node of a complete
//! version of its transcript, its chain is exactly that version's prefix, and all sessions of the
//! one import batch moved together or not at all (a batch is one atomic commit). At the end a
//! full import brings every session in whole and a second import finds nothing new.
//!
//! The transcripts grow between kills, as an agent's transcript does, so every import has
//! something to write: an import of an unchanged directory writes nothing, and kills of it would
//! only ever interrupt reads.
//!
//! Sizing: few long sessions (24 × 602 messages, about 14k nodes at the end) rather than thousands
//! of short ones, because `fsck` runs after every kill and `Store::chain` counts every object in
//! the store for each session it walks (sled's `len()` is a full scan), so fsck costs sessions ×
//! objects.

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
/// Kill iterations; each grows every transcript a little first.
const ITERATIONS: usize = 60;
/// Kills that must land while the import process is still running.
const MIN_KILLS_DURING: usize = 50;
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
            .map(|(_, object)| object.id)
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

/// Sizes and modification times of every file under the store: they change when sled writes.
fn disk_stamp(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
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

/// Expected durations of one import, from the calibration.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Reading, parsing and hashing: the whole import when nothing is new.
    parse: Duration,
    /// Writing the new nodes and moving the refs.
    commit: Duration,
}

/// Waits according to `aim`, then SIGKILLs the child if it is still running. Returns whether
/// the kill landed while it ran (`try_wait()` said it had not exited) and when.
fn kill_at(
    child: &mut Child,
    aim: Aim,
    timing: Timing,
    store_dir: &Path,
    rng: &mut Rng,
) -> (bool, Duration) {
    let spawned = Instant::now();
    let micros = |d: Duration| d.as_micros() as u64;
    match aim {
        Aim::Open => std::thread::sleep(Duration::from_micros(rng.below(40_000))),
        Aim::Anywhere => {
            let limit = micros(timing.parse + timing.commit) * 11 / 10;
            std::thread::sleep(Duration::from_micros(rng.below(limit)));
        }
        Aim::Commit => {
            // sled writes while it opens; let that pass, then wait for the next write.
            let grace = (timing.parse / 2).max(Duration::from_millis(100));
            while spawned.elapsed() < grace && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let before = disk_stamp(store_dir);
            let give_up = spawned + (timing.parse + timing.commit) * 3;
            while Instant::now() < give_up && child.try_wait().unwrap().is_none() {
                let now = disk_stamp(store_dir);
                if now != before {
                    eprintln!("DEBUG detect at {:?}: {:?}", spawned.elapsed(), now.iter().filter(|e| !before.contains(e)).collect::<Vec<_>>());
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(Duration::from_micros(rng.below(micros(timing.commit))));
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
    (running, at)
}

/// What the store holds after a kill: verified whole, returns the one message count all sessions
/// share (`None` = no session yet) and the object count.
fn check_store(
    store_dir: &Path,
    transcripts: &[Transcript],
    versions: &[usize],
    label: &str,
) -> (Option<usize>, usize) {
    let store = Store::open(store_dir)
        .unwrap_or_else(|e| panic!("{label}: the store does not reopen: {e}"));
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

    // Lengths on disk before each kill: from half the transcript up to just short of all of it.
    let first = full / 2;
    let schedule: Vec<usize> = (0..ITERATIONS)
        .map(|i| first + (full - first) * i / ITERATIONS)
        .collect();
    assert!(schedule.windows(2).all(|w| w[0] < w[1]) && *schedule.last().unwrap() < full);

    // Calibrate: how long does an import of the first generation take on this machine?
    for t in &mut transcripts {
        t.grow_to(first);
    }
    let scratch = tmp.path().join("calibration");
    let (_, fresh) = import_to_end(&scratch, &dir);
    let (_, again) = import_to_end(&scratch, &dir);
    std::fs::remove_dir_all(&scratch).unwrap();
    // Per unit of transcript length (one message in each of the sessions).
    let parse_per = again / first as u32;
    let commit_per = fresh.saturating_sub(again) / first as u32;
    eprintln!(
        "calibration: import of {} sessions × {first} messages ({} nodes): {fresh:?} into an empty store, {again:?} again",
        SESSIONS,
        SESSIONS * first
    );

    let mut rng = Rng::new(SEED);
    let mut versions: Vec<usize> = Vec::new();
    let mut state: Option<usize> = None;
    let mut objects = 0;
    let mut outcomes: BTreeMap<(Aim, &str), usize> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    for (i, &length) in schedule.iter().enumerate() {
        for t in &mut transcripts {
            t.grow_to(length);
        }
        versions.push(length);
        let new = length - state.unwrap_or(0);
        let timing = Timing {
            parse: parse_per * length as u32,
            // Writing the objects, then the refs: about 3 ms on their own (measured with strace
            // on a small commit), however few the new nodes.
            commit: commit_per * new as u32 + Duration::from_millis(3),
        };
        longest = longest.max(timing.parse + timing.commit);
        let aim = match rng.below(10) {
            0 => Aim::Open,
            1..=5 => Aim::Anywhere,
            _ => Aim::Commit,
        };
        let mut child = import(&home, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (running, at) = kill_at(&mut child, aim, timing, &store_dir, &mut rng);
        let label = format!(
            "kill {i} ({aim:?} at {} ms, {} while running)",
            at.as_millis(),
            if running { "landed" } else { "not" }
        );
        let (now, now_objects) = check_store(&store_dir, &transcripts, &versions, &label);
        assert!(
            now >= state,
            "{label}: sessions went back from {state:?} to {now:?} messages"
        );
        let committed = now == Some(length);
        if !running {
            assert!(committed, "{label}: the import exited by itself yet its sessions are at {now:?}, not {length}");
        }
        let outcome = match (running, committed, now_objects > objects) {
            (false, _, _) => "finished before the kill",
            (true, true, _) => "refs moved, killed on the way out",
            (true, false, true) => "new objects durable, refs not moved",
            (true, false, false) => "nothing of this import durable",
        };
        *outcomes.entry((aim, outcome)).or_default() += 1;
        eprintln!(
            "kill {i:>2}: {aim:?} at {:>4} ms of ~{:>4}+{:>3} ms, {} new messages per session: {outcome}",
            at.as_millis(),
            timing.parse.as_millis(),
            timing.commit.as_millis(),
            new
        );
        state = now;
        objects = now_objects;
    }
    let after = outcomes
        .iter()
        .filter(|((_, o), _)| *o == "finished before the kill")
        .map(|(_, n)| n)
        .sum::<usize>();
    let during = ITERATIONS - after;
    eprintln!(
        "{ITERATIONS} kills: {during} landed while the import ran, {after} after it had finished"
    );
    for ((aim, outcome), n) in &outcomes {
        eprintln!("  {aim:?}: {n} × {outcome}");
    }
    eprintln!("expected import durations up to {longest:?}; sessions ended the loop at {state:?} messages");
    assert!(
        during >= MIN_KILLS_DURING,
        "only {during} of {ITERATIONS} kills landed while the import was running; the delays need tuning"
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
