//! The documented pipes (README: `tapes search … | tapes export`, `| tapes bundle create`,
//! `| tapes share --dry-run`) work every time: both ends of a pipe open the store at once, and
//! the one that does not hold it works through the one that does (SPEC §6, "Sharing the store
//! between processes"). Each pipe runs 100 times in a row against one store.

use std::path::{Path, PathBuf};
use std::process::Command;

use tapes::import::ingest::{ingest, Incoming};
use tapes::session::sample::{self, Shape};

const RUNS: usize = 100;

struct Home {
    _dir: tempfile::TempDir,
    home: PathBuf,
    out: PathBuf,
}

fn home_with_sessions() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tapes"))
        .env("TAPES_HOME", &home)
        .args(["init", "--name", "alice"])
        .output()
        .unwrap()
        .status;
    assert!(status.success());
    let store = tapes::store::Store::open(&home.join("store")).unwrap();
    let incoming: Vec<Incoming> = (0..12)
        .map(|i| Incoming {
            session: sample::session(3, i, Shape::default()),
            path: String::new(),
        })
        .collect();
    ingest(&store, &incoming, 0).unwrap();
    drop(store);
    Home {
        _dir: dir,
        home,
        out,
    }
}

/// Runs `tapes search value | tapes <consumer>` through `sh`, returning (status, stdout,
/// stderr) of the whole pipeline (`pipefail`, so either end failing fails it).
fn pipe(home: &Path, consumer: &str) -> (bool, String, String) {
    let tapes = env!("CARGO_BIN_EXE_tapes");
    let script = format!("set -o pipefail; '{tapes}' search value | '{tapes}' {consumer}");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("TAPES_HOME", home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_100(consumer: impl Fn(usize) -> String, check: impl Fn(usize, &str)) -> Home {
    let home = home_with_sessions();
    // The first search builds the index; every run after it is the ordinary case.
    let first = Command::new(env!("CARGO_BIN_EXE_tapes"))
        .env("TAPES_HOME", &home.home)
        .args(["search", "value"])
        .output()
        .unwrap();
    assert!(first.status.success());
    assert!(!first.stdout.is_empty(), "the search matches nothing");
    for run in 0..RUNS {
        let (ok, out, err) = pipe(
            &home.home,
            &consumer(run).replace("{out}", &home.out.display().to_string()),
        );
        assert!(ok, "run {run} failed:\n{out}\n{err}");
        assert!(!err.contains("in use"), "run {run}: {err}");
        check(run, &out);
    }
    home
}

/// The files the runs wrote, each non-empty.
fn written(home: &Home) -> usize {
    std::fs::read_dir(&home.out)
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.metadata().unwrap().len() > 0
                && !e.file_name().to_string_lossy().ends_with(".partial")
        })
        .count()
}

#[test]
fn search_piped_to_export_works_100_times() {
    let home = run_100(
        |run| format!("export -o {{out}}/export-{run}.json"),
        |_, _| {},
    );
    assert_eq!(written(&home), RUNS);
}

#[test]
fn search_piped_to_bundle_create_works_100_times() {
    let home = run_100(
        |run| format!("bundle create --plain -o {{out}}/b-{run}.tape"),
        |_, _| {},
    );
    assert_eq!(written(&home), RUNS);
}

#[test]
fn search_piped_to_share_dry_run_works_100_times() {
    run_100(
        |_| "share --dry-run".to_string(),
        |run, out| assert!(!out.trim().is_empty(), "run {run}: no dry-run report"),
    );
}
