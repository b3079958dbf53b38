//! Crash safety of `tapes import` under `kill -9`: one store takes SIGKILLs at pseudo-random
//! moments of running imports until at least 50 have landed while the import was still running
//! (while the process starts and sled opens, recovers and writes its snapshot, while the
//! transcripts are parsed and hashed, and inside the commit). After every kill the store must
//! reopen, `fsck` must pass, and every session must be whole or absent: its head is the last node
//! of a version of its transcript that was on disk, its stored chain is exactly that version, and
//! the sessions of one import batch moved together or not at all (a batch's refs are one atomic
//! update). At the end a full import brings every session in whole and a second import finds
//! nothing new.
//!
//! The transcripts grow between kills, as an agent's transcript does, so every import has
//! something to write: an import of an unchanged directory writes nothing, and kills of it would
//! only ever interrupt reads. Besides kills at random delays, some watch the store's files and
//! strike when sled starts writing a snapshot file (`snap.*.generating`) or starts the commit.
//!
//! A second test aims its kills at pack files (bulk writes): while a pack is written, just after
//! it is renamed into place, and anywhere, each time into a fresh store.
//!
//! Sizing: 24 sessions of up to 602 messages (about 14k nodes at the end; one import takes
//! about a second in a debug build) keep the whole test near a minute with `fsck`, which verifies
//! every object, after every kill. `TAPES_CRASH_KILLS=<n>` asks for more kills (up to about 250)
//! for a longer hunt.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tapes::import::ingest::build_chain;
use tapes::import::walk::BATCH_NODES;
use tapes::protocol::{NodeId, Role, SessionId};
use tapes::session::sample::{self, Rng, Shape};
use tapes::store::Store;

const SESSIONS: usize = 24;
/// 2 + 2 × 300 = 602 messages per full transcript.
const TOOL_ROUNDS: usize = 300;
/// Kills that must land while the import process is still running (at least; more with
/// `TAPES_CRASH_KILLS`), within a quarter more kills in all.
const KILLS_DURING: usize = 50;
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

/// sled's snapshot files being written (`snap.<lsn>.generating`, renamed when complete), with
/// their sizes.
fn snapshots_in_progress(store_dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(store_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".generating")
                .then(|| (name, e.metadata().map_or(0, |m| m.len())))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Aim {
    /// The first 40 ms: the process is starting and sled is opening (and recovering).
    Open,
    /// The moment a new snapshot file appears while sled opens (after a crash sled recovers and
    /// writes one); if none appears in the first part of the import, whenever that ends.
    Snapshot,
    /// Anywhere over the whole expected duration of the import, and a little past it.
    Anywhere,
    /// Inside the commit: once parsing is under way, the next write to sled's log, then a random
    /// delay within the expected duration of the writes.
    Commit,
}

/// When and how a kill landed.
struct Kill {
    /// `try_wait()` said the import had not exited yet when the kill was sent.
    running: bool,
    /// Since spawn.
    at: Duration,
    /// When the file write the aim waited for was seen (Snapshot and Commit aims).
    seen: Option<Duration>,
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
    let mut seen = None;
    match aim {
        Aim::Open => std::thread::sleep(Duration::from_micros(rng.below(40_000))),
        Aim::Snapshot => {
            let before = snapshots_in_progress(store_dir);
            let give_up = spawned + (commit_at / 2).max(Duration::from_millis(50));
            while Instant::now() < give_up {
                if snapshots_in_progress(store_dir)
                    .iter()
                    .any(|s| !before.contains(s))
                {
                    seen = Some(spawned.elapsed());
                    break;
                }
            }
        }
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
                    seen = Some(spawned.elapsed());
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
    Kill { running, at, seen }
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
        let mut files: Vec<String> = std::fs::read_dir(store_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        panic!("{label}: the store does not reopen: {e}; it holds {files:?}")
    });
    let report = tapes::store::fsck::fsck(&store, |_| {})
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

    let kills_during: usize = std::env::var("TAPES_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(KILLS_DURING, |n: usize| n.max(KILLS_DURING));
    // Room for kills that land after the import finished (a busy or fast machine misjudges
    // the timing now and then); what counts is `kills_during` landing while it ran.
    let max_kills = kills_during * 2;
    // Lengths on disk, from half the transcript (less for long hunts) up to just short of all of
    // it: the first for a calibration, the rest one per kill.
    let first = (full / 2).min(full.saturating_sub(max_kills + 2)).max(2);
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
        let window = Duration::from_micros(1_000 + 40 * (new * SESSIONS) as u64);
        let aim = match rng.below(10) {
            0 => Aim::Open,
            1..=2 => Aim::Snapshot,
            3..=5 => Aim::Anywhere,
            _ => Aim::Commit,
        };
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
        if let (Aim::Commit, Some(seen)) = (aim, kill.seen) {
            seen_per.push(seen.as_secs_f64() / length as f64);
        }
        eprintln!(
            "kill {i:>2}: {aim:?} at {:>4} ms (commit expected at ~{} ms{}), {new} new messages per session: {outcome}",
            kill.at.as_millis(),
            commit_at.as_millis(),
            kill.seen.map_or(String::new(), |t| format!(", its write seen at {} ms", t.as_millis())),
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
        during >= kills_during && after <= during,
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

/// What a pack-writing kill waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PackAim {
    /// A pack being written under its temporary name.
    Staging,
    /// A pack renamed into place: the window before its registration is flushed.
    Placed,
    /// Anywhere over the whole import.
    Anywhere,
}

/// Files in the store's pack directory whose name ends with one of `suffixes`.
fn pack_files(store_dir: &Path, suffixes: &[&str]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(store_dir.join("packs")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| suffixes.iter().any(|s| n.ends_with(s)))
        .collect();
    names.sort();
    names
}

/// Waits until a file with one of `suffixes` appears in the pack directory (or the child
/// exits), then up to `jitter_us` more; kills the child; returns whether it was still running.
fn kill_when_pack_file(
    child: &mut Child,
    store_dir: &Path,
    suffixes: &[&str],
    jitter_us: u64,
    rng: &mut Rng,
) -> bool {
    while child.try_wait().unwrap().is_none() && pack_files(store_dir, suffixes).is_empty() {
        std::thread::sleep(Duration::from_micros(100));
    }
    std::thread::sleep(Duration::from_micros(rng.below(jitter_us)));
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

/// Bulk writes go to pack files (one pack for an import of 24 × 602 nodes). Each round imports
/// every transcript whole into a fresh store and SIGKILLs the import while its pack is being
/// written, just after the pack is renamed into place (before its registration is flushed), or
/// anywhere. After each kill the store must reopen with no temporary or half-registered pack
/// left, pass fsck, and hold every session whole or none; an import run to its end then brings
/// everything in, and a second one finds nothing new.
#[test]
fn sigkill_while_a_pack_is_written_leaves_it_live_or_gone() {
    const ROUNDS: usize = 9;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("projects");
    std::fs::create_dir_all(&dir).unwrap();
    let mut transcripts = transcripts(&dir);
    let full = transcripts[0].messages();
    for t in &mut transcripts {
        t.grow_to(full);
    }
    let versions = [full];
    let (_, calibration) = import_to_end(&tmp.path().join("calibration"), &dir);
    assert_eq!(
        pack_files(&tmp.path().join("calibration").join("store"), &[".pack"]).len(),
        1,
        "an import of {} nodes should write one pack",
        SESSIONS * full
    );
    let mut rng = Rng::new(SEED ^ 0x7061_636b);
    let mut outcomes: BTreeMap<(PackAim, &str), usize> = BTreeMap::new();
    for round in 0..ROUNDS {
        let home = tmp.path().join(format!("home-{round}"));
        let store_dir = home.join("store");
        let aim = match round % 3 {
            0 => PackAim::Staging,
            1 => PackAim::Placed,
            _ => PackAim::Anywhere,
        };
        let mut child = import(&home, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let running = match aim {
            PackAim::Staging => {
                kill_when_pack_file(&mut child, &store_dir, &[".tmp"], 3_000, &mut rng)
            }
            // The registration and its flush follow the rename within a few ms, then the refs.
            PackAim::Placed => {
                kill_when_pack_file(&mut child, &store_dir, &[".pack"], 15_000, &mut rng)
            }
            PackAim::Anywhere => {
                let limit = calibration.as_micros() as u64 * 11 / 10;
                std::thread::sleep(Duration::from_micros(rng.below(limit)));
                let running = child.try_wait().unwrap().is_none();
                child.kill().unwrap();
                child.wait().unwrap();
                running
            }
        };
        let label = format!(
            "round {round} ({aim:?}, {})",
            if running { "killed" } else { "finished first" }
        );
        let (state, _) = check_store(&store_dir, &transcripts, &versions, &label);
        assert_eq!(
            pack_files(&store_dir, &[".tmp"]),
            Vec::<String>::new(),
            "{label}: temporary pack files survived the reopen"
        );
        let packs = pack_files(&store_dir, &[".pack"]);
        let indexes = pack_files(&store_dir, &[".idx"]);
        assert_eq!(
            packs
                .iter()
                .map(|p| p.trim_end_matches(".pack"))
                .collect::<Vec<_>>(),
            indexes
                .iter()
                .map(|p| p.trim_end_matches(".idx"))
                .collect::<Vec<_>>(),
            "{label}: a pack without its index or an index without its pack survived the reopen"
        );
        let outcome = match (state, packs.len()) {
            (Some(_), _) => "sessions whole",
            (None, 1) => "pack live, refs not moved",
            (None, _) => "nothing durable",
        };
        *outcomes.entry((aim, outcome)).or_default() += 1;
        eprintln!("{label}: {outcome}");

        import_to_end(&home, &dir);
        let (state, _) = check_store(
            &store_dir,
            &transcripts,
            &versions,
            &format!("{label}, then a whole import"),
        );
        assert_eq!(
            state,
            Some(full),
            "{label}: the import after the kill left sessions out"
        );
        let (out, _) = import_to_end(&home, &dir);
        assert!(
            out.starts_with("nothing new:"),
            "{label}: a second import wrote something: {out}"
        );
    }
    for ((aim, outcome), n) in &outcomes {
        eprintln!("  {aim:?}: {n} × {outcome}");
    }
}
