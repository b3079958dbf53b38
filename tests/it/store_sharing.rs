//! Several tapes processes on one store at once (SPEC.md §6, "Sharing the store between
//! processes"): while one process holds the store, `tapes sessions`, `tapes import` and `tapes
//! fsck` work through it without waiting; a process using the store through a holder carries on
//! when that holder is killed; a watcher keeps importing when the holder lets go; and 20
//! imports started at once all land.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tapes::import::SourceFormat;
use tapes::protocol::SessionId;
use tapes::session::sample::{self, Shape};
use tapes::store::Store;

/// Only keeps a broken build from hanging the test; every step normally takes well under a
/// second.
const DEADLINE: Duration = Duration::from_secs(30);
/// What a process prints when it has to wait for the store; none of these cases should wait.
const WAITING: &str = "waiting for another tapes process";
/// Set for the child process `holder_process` runs as: the store it holds.
const HOLD_ENV: &str = "TAPES_TEST_HOLD_STORE";

use super::util::std_tapes as tapes;

/// Runs `tapes ARGS`, which must succeed without waiting for the store; returns its stdout.
fn run(home: &Path, args: &[&str]) -> String {
    let out: Output = tapes(home).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tapes {args:?} failed: {}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    assert!(
        !stderr.contains(WAITING),
        "tapes {args:?} waited for the store: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Session ids that `tapes sessions --json` lists, sorted.
fn listed(home: &Path) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&run(home, &["sessions", "--json"])).unwrap();
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn held(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.to_hex())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&SessionId]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.to_hex()).collect();
    ids.sort();
    ids
}

/// Writes sample session `i` as a Claude Code transcript in `dir`: its id and its file.
fn transcript(dir: &Path, i: usize) -> (SessionId, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let session = sample::session(7, i, Shape::default());
    let path = dir.join(format!("{}.jsonl", session.source_id));
    // Written beside and renamed into place, so a watcher never reads half a file.
    let partial = dir.join(format!("{}.partial", session.source_id));
    std::fs::write(&partial, sample::claude_jsonl(&session)).unwrap();
    std::fs::rename(&partial, &path).unwrap();
    (SessionId::derive("claude", &session.source_id), path)
}

/// A home with an identity and one imported session.
fn home_with_one_session(tmp: &Path) -> (PathBuf, SessionId) {
    let home = tmp.join("home");
    run(&home, &["init", "--name", "x"]);
    let (id, file) = transcript(&tmp.join("first"), 0);
    run(&home, &["import", file.to_str().unwrap()]);
    (home, id)
}

/// A child process, killed if the test fails before it ends.
struct Killed(Option<Child>);

impl Killed {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    fn output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn commands_work_while_another_process_holds_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, first) = home_with_one_session(tmp.path());
    let holder = Store::open(&home.join("store")).unwrap();

    assert_eq!(listed(&home), sorted(&[&first]));
    let (second, file) = transcript(&tmp.path().join("second"), 1);
    let out = run(&home, &["import", file.to_str().unwrap()]);
    assert!(out.contains("1 new session,"), "{out}");
    assert_eq!(listed(&home), sorted(&[&first, &second]));
    let fsck = run(&home, &["fsck"]);
    assert!(fsck.starts_with("ok: "), "{fsck}");
    // The holder sees what the others wrote through it.
    assert_eq!(held(&holder), sorted(&[&first, &second]));
}

/// Not a case of its own: the body of the child process that `a_client_carries_on_when_its_
/// holder_is_killed` starts (this test binary again, with [`HOLD_ENV`] set). It holds the store
/// until its stdin closes or it is killed.
#[test]
fn holder_process() {
    let Ok(path) = std::env::var(HOLD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&path)).unwrap();
    println!("holding {} sessions", store.sessions().unwrap().len());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(store);
}

#[test]
fn a_client_carries_on_when_its_holder_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, first) = home_with_one_session(tmp.path());
    let store_dir = home.join("store");

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "store_sharing::holder_process",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HOLD_ENV, &store_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(Some(child));
    let mut lines = BufReader::new(child.child().stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the holder process ended before holding the store")
            .unwrap();
        // libtest prints `test holder_process ... ` before it on the same line.
        if line.contains("holding") {
            assert!(line.ends_with("holding 1 sessions"), "{line}");
            break;
        }
    }

    // The child holds the store, so this one works through it.
    let store = Store::open(&store_dir).unwrap();
    assert_eq!(held(&store), sorted(&[&first]));
    assert_eq!(listed(&home), sorted(&[&first]), "a third process, too");

    // The holder dies mid-run (SIGKILL: nothing of it runs after this).
    child.child().kill().unwrap();
    child.child().wait().unwrap();

    // This process takes over the store, reads and writes it, and serves it to the next one.
    assert_eq!(held(&store), sorted(&[&first]));
    let (second, file) = transcript(&tmp.path().join("second"), 1);
    let summary = tapes::import::walk::import_files(
        &store,
        &[(file, SourceFormat::Claude)],
        tapes::now_ms(),
        |_| {},
    )
    .unwrap();
    assert_eq!(summary.refused().count(), 0);
    assert_eq!(held(&store), sorted(&[&first, &second]));
    assert_eq!(listed(&home), sorted(&[&first, &second]));
    let fsck = run(&home, &["fsck"]);
    assert!(fsck.starts_with("ok: "), "{fsck}");
}

#[test]
fn a_watcher_keeps_importing_after_the_holder_lets_go() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, first) = home_with_one_session(tmp.path());
    let watched = tmp.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let holder = Store::open(&home.join("store")).unwrap();

    let watcher = tapes(&home)
        .args(["import", "--watch"])
        .arg(&watched)
        .args(["--interval-ms", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watcher = Killed(Some(watcher));

    // While this process holds the store, the watcher writes through it.
    let (second, _) = transcript(&watched, 1);
    let started = Instant::now();
    while held(&holder) != sorted(&[&first, &second]) {
        assert!(
            started.elapsed() < DEADLINE,
            "the watcher did not import through the holder"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The holder lets go; the watcher carries on with the store to itself.
    drop(holder);
    let (third, _) = transcript(&watched, 2);
    let started = Instant::now();
    while listed(&home) != sorted(&[&first, &second, &third]) {
        assert!(
            started.elapsed() < DEADLINE,
            "the watcher did not import after the holder let go"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    watcher.child().kill().unwrap();
    let out = watcher.output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("error"), "the watcher reported: {stderr}");
}

#[test]
fn twenty_imports_at_once_all_land() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    run(&home, &["init", "--name", "x"]);
    let transcripts: Vec<(SessionId, PathBuf)> = (0..20)
        .map(|i| transcript(&tmp.path().join(format!("t{i}")), i))
        .collect();

    let children: Vec<Killed> = transcripts
        .iter()
        .map(|(_, file)| {
            Killed(Some(
                tapes(&home)
                    .arg("import")
                    .arg(file)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            ))
        })
        .collect();
    // They may wait for each other (a holder starting or letting go), but all must succeed.
    for (i, child) in children.into_iter().enumerate() {
        let out = child.output();
        assert!(
            out.status.success(),
            "import {i} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let ids: Vec<&SessionId> = transcripts.iter().map(|(id, _)| id).collect();
    assert_eq!(listed(&home), sorted(&ids));
    let fsck = run(&home, &["fsck"]);
    assert!(fsck.starts_with("ok: "), "{fsck}");
}
