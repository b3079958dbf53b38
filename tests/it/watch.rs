//! Watch mode end to end: `tapes import --watch` picks up a new transcript, then the same
//! transcript grown by appended lines (the session moves forward: same id, every message, and the
//! store gains exactly the appended nodes), then another new file; `tapes sessions`, `log` and
//! `fsck` keep working while it watches (it holds the store only while it writes); and Ctrl-C
//! (SIGINT) stops it cleanly. The latency from each write to its being visible is printed; the
//! 20 s deadline only keeps a broken watcher from hanging the test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use tapes::import::ingest::build_chain;
use tapes::protocol::{NodeId, SessionId};
use tapes::session::sample::{self, Shape};
use tapes::store::Store;

const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

use super::util::std_tapes as tapes;

fn run(home: &Path, args: &[&str]) -> String {
    let out: Output = tapes(home).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tapes {args:?} failed while the watcher runs: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `tapes sessions --json`: (id, messages, head) of every session.
fn sessions(home: &Path) -> Vec<(String, u64, String)> {
    let list: serde_json::Value =
        serde_json::from_str(&run(home, &["sessions", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["messages"].as_u64().unwrap(),
                s["head"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Objects in the store, as `tapes fsck` counts them (and it must find the store clean).
fn objects(home: &Path) -> usize {
    let out = run(home, &["fsck"]);
    let count = out
        .strip_prefix("ok: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    count.unwrap_or_else(|| panic!("unexpected fsck output: {out}"))
}

/// Polls `tapes sessions --json` until `done` holds; returns how long that took since `since`.
fn wait_until(
    home: &Path,
    since: Instant,
    what: &str,
    done: impl Fn(&[(String, u64, String)]) -> bool,
) -> Duration {
    loop {
        let list = sessions(home);
        if done(&list) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < DEADLINE,
            "the watcher did not pick up {what} within {DEADLINE:?}; sessions: {list:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// A sample transcript: its id, its JSONL lines and its node ids, root first.
struct Transcript {
    id: SessionId,
    file: String,
    lines: Vec<String>,
    ids: Vec<NodeId>,
}

fn transcript(index: usize) -> Transcript {
    let session = sample::session(77, index, Shape::default());
    let text = sample::claude_jsonl(&session);
    Transcript {
        id: SessionId::derive("claude", &session.source_id),
        file: format!("{}.jsonl", session.source_id),
        lines: text.lines().map(|l| format!("{l}\n")).collect(),
        ids: build_chain(&session).iter().map(|o| o.id).collect(),
    }
}

/// Writes a new file whole: into a name the watcher ignores, then renamed into place.
fn create(dir: &Path, name: &str, content: &str) -> PathBuf {
    let partial = dir.join(format!("{name}.partial"));
    std::fs::write(&partial, content).unwrap();
    let path = dir.join(name);
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// Kills the watcher if the test fails before stopping it.
struct Watcher(Option<Child>);

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn watch_mode_follows_a_growing_transcript_and_a_new_one_then_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dir = tmp.path().join("projects").join("billing-api");
    std::fs::create_dir_all(&dir).unwrap();

    let grown = transcript(0);
    let other = transcript(1);
    assert!(
        grown.ids.iter().all(|id| !other.ids.contains(id)),
        "the two samples share a node"
    );
    let full = grown.ids.len();
    assert_eq!(full, 10, "the default sample shape has 10 messages");
    // The first half of the lines, and how many messages they hold: they must be a prefix of
    // the whole session (the cut falls between messages) for the node count to grow by exactly
    // the appended messages.
    let cut = grown.lines.len() / 2;
    let head_text: String = grown.lines[..cut].concat();
    let half_report = tapes::import::claude::parse(Path::new("half.jsonl"), &head_text).unwrap();
    assert_eq!(half_report.sessions.len(), 1);
    let half_ids: Vec<NodeId> = build_chain(&half_report.sessions[0])
        .iter()
        .map(|o| o.id)
        .collect();
    let half = half_ids.len();
    assert!(
        half > 0 && half < full && half_ids == grown.ids[..half],
        "the cut splits a message"
    );
    let (grown_id, other_id) = (grown.id.to_hex(), other.id.to_hex());

    let child = tapes(&home)
        .args(["import", "--watch"])
        .arg(&dir)
        .args(["--interval-ms", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watcher = Watcher(Some(child));

    // Step 1: a new transcript, half written.
    let written = Instant::now();
    let path = create(&dir, &grown.file, &head_text);
    let first = wait_until(&home, written, "the new half transcript", |list| {
        list.iter()
            .any(|(id, n, _)| *id == grown_id && *n == half as u64)
    });
    let list = sessions(&home);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        list[0].2,
        grown.ids[half - 1].to_hex(),
        "head after the first half"
    );
    let objects_half = objects(&home);
    assert_eq!(objects_half, half);

    // Step 2: the rest of the lines appended to the same file, in one write.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let written = Instant::now();
    file.write_all(grown.lines[cut..].concat().as_bytes())
        .unwrap();
    drop(file);
    let second = wait_until(&home, written, "the appended lines", |list| {
        list.iter()
            .any(|(id, n, _)| *id == grown_id && *n == full as u64)
    });
    let list = sessions(&home);
    assert_eq!(
        list.len(),
        1,
        "the grown transcript must stay one session: {list:?}"
    );
    assert_eq!(
        list[0].2,
        grown.ids[full - 1].to_hex(),
        "head after the append"
    );
    let log = run(&home, &["log", &grown_id[..12]]);
    assert_eq!(
        log.lines().count(),
        full,
        "tapes log shows the whole chain:\n{log}"
    );
    assert_eq!(
        objects(&home) - objects_half,
        full - half,
        "the store grew by other than the appended messages"
    );

    // Step 3: a brand-new file.
    let written = Instant::now();
    create(&dir, &other.file, &other.lines.concat());
    let third = wait_until(&home, written, "the second transcript", |list| {
        list.iter()
            .any(|(id, n, _)| *id == other_id && *n == other.ids.len() as u64)
    });

    // Ctrl-C.
    let mut child = watcher.0.take().unwrap();
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let stopping = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if stopping.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the watcher did not stop within {DEADLINE:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = stopping.elapsed();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the watcher exited with {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(stdout.starts_with("watching "), "{stdout}");
    assert!(stdout.trim_end().ends_with("stopped watching"), "{stdout}");
    assert!(
        !stderr.contains("warning") && !stderr.contains("error"),
        "the watcher complained: {stderr}"
    );

    // The store as the library sees it: two whole sessions and nothing else.
    let store = Store::open(&home.join("store")).unwrap();
    let report = tapes::store::fsck::fsck(&store, |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(store.storage().object_count(), full + other.ids.len());
    for t in [&grown, &other] {
        let record = store.session(&t.id).unwrap().expect("session stored");
        assert_eq!(record.head, *t.ids.last().unwrap());
        assert_eq!(record.summary.messages as usize, t.ids.len());
    }

    eprintln!(
        "watch latencies (write → visible in `tapes sessions`, 200 ms interval, 100 ms polling): \
         new file {first:?}, appended lines {second:?}, second new file {third:?}; stopped {stopped:?} after SIGINT"
    );
    eprintln!("watcher stdout:\n{stdout}");
}
