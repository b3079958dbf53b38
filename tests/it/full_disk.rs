//! A full disk (SPEC.md §6, §7): the tapes home on a small tmpfs that fills up during an
//! import, a fetch and a bundle import. Each fails with a clear "no space left" error naming
//! the store, leaves nothing half applied (fsck passes once there is room to open the store;
//! every session present is whole), and works again after space is freed.
//!
//! Mounting needs root (CI runs as root); elsewhere each test says so in one line and passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tapes::protocol::{NodeId, SessionId};
use tapes::session::sample::{self, Shape};
use tapes::store::Store;

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB, or `None` (with a note) when this process may not mount.
    fn mount(mib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs {
                path: dir.path().to_path_buf(),
                _dir: dir,
            }),
            other => {
                println!("skipped: cannot mount a tmpfs (needs root): {other:?}");
                None
            }
        }
    }

    /// Frees space: the filesystem grows to `mib` MiB.
    fn grow(&self, mib: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

use super::util::{plain_bundle, std_tapes as tapes};

fn run(home: &Path, args: &[&str]) -> Output {
    tapes(home).args(args).output().unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(
        out.status.success(),
        "tapes {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command failed because the disk is full, and said so naming the store.
fn full(out: &Output, store: &Path, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded on a full disk");
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("no space left"),
        "{what} on a full disk did not say so: {stderr}"
    );
    assert!(
        stderr.contains(&store.display().to_string()),
        "{what} on a full disk did not name the store {}: {stderr}",
        store.display()
    );
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
}

/// Writes `count` sample transcripts into `dir`.
fn transcripts(dir: &Path, seed: u64, count: usize, rounds: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let session = sample::session(
            seed,
            i,
            Shape {
                tool_rounds: rounds,
                ..Shape::default()
            },
        );
        std::fs::write(
            dir.join(format!("{}.jsonl", session.source_id)),
            sample::claude_jsonl(&session),
        )
        .unwrap();
    }
}

fn sessions(home: &Path) -> BTreeMap<SessionId, (NodeId, u64)> {
    let store = Store::open(&home.join("store")).unwrap();
    store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|(id, r)| (id, (r.head, r.summary.messages)))
        .collect()
}

/// After space came back: fsck passes and every session is whole (its count matches `full`'s).
fn clean_and_whole(home: &Path, whole: &BTreeMap<SessionId, (NodeId, u64)>) {
    let fsck = ok(home, &["fsck"]);
    assert!(fsck.lines().any(|l| l.starts_with("ok: ")), "{fsck}");
    for (id, have) in sessions(home) {
        if let Some(want) = whole.get(&id) {
            assert_eq!(&have, want, "session {} is partial", id.short());
        }
    }
}

const SMALL_MIB: u64 = 12;
const BIG_MIB: u64 = 512;

/// A source home with `count` large sessions (far more than `SMALL_MIB`).
fn source(tmp: &Path, count: usize) -> (PathBuf, PathBuf) {
    let home = tmp.join("alice");
    ok(&home, &["init", "--name", "alice"]);
    let agent = tmp.join("agent");
    transcripts(&agent, 0xd15c, count, 400);
    ok(&home, &["import", agent.to_str().unwrap()]);
    (home, agent)
}

#[test]
fn import_on_a_full_disk_fails_clearly_and_works_after_space_is_freed() {
    let Some(fs) = Tmpfs::mount(SMALL_MIB) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (alice, agent) = source(tmp.path(), 40);
    let whole = sessions(&alice);
    let home = fs.path.join("home");
    ok(&home, &["init", "--name", "x"]);
    let out = run(&home, &["import", agent.to_str().unwrap()]);
    full(&out, &home.join("store"), "import");
    fs.grow(BIG_MIB);
    clean_and_whole(&home, &whole);
    ok(&home, &["import", agent.to_str().unwrap()]);
    assert_eq!(sessions(&home), whole);
    clean_and_whole(&home, &whole);
}

#[test]
fn bundle_import_on_a_full_disk_is_all_or_nothing() {
    let Some(fs) = Tmpfs::mount(SMALL_MIB) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (alice, _) = source(tmp.path(), 40);
    let whole = sessions(&alice);
    let bundle = tmp.path().join("all.tape");
    plain_bundle(&alice, &bundle);
    let home = fs.path.join("home");
    ok(&home, &["init", "--name", "x"]);
    let out = run(&home, &["bundle", "import", bundle.to_str().unwrap()]);
    full(&out, &home.join("store"), "bundle import");
    fs.grow(BIG_MIB);
    clean_and_whole(&home, &whole);
    assert!(
        sessions(&home).is_empty(),
        "a failed bundle import added sessions"
    );
    ok(&home, &["bundle", "import", bundle.to_str().unwrap()]);
    assert_eq!(sessions(&home), whole);
}

/// A running `tapes serve`, killed on drop.
use super::util::serve;

#[test]
fn fetch_on_a_full_disk_fails_clearly_and_converges_after_space_is_freed() {
    let Some(fs) = Tmpfs::mount(SMALL_MIB) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (alice, _) = source(tmp.path(), 40);
    ok(&alice, &["team", "create", "core"]);
    let whole = sessions(&alice);
    let mut args = vec!["share", "--team", "core", "--allow-secrets"];
    let ids: Vec<String> = whole.keys().map(|id| id.to_hex()).collect();
    args.extend(ids.iter().map(String::as_str));
    ok(&alice, &args);
    let server = serve(&alice, "127.0.0.1:0");
    let home = fs.path.join("home");
    ok(&home, &["init", "--name", "bob"]);
    let code = ok(&alice, &["team", "invite"]).trim().to_string();
    ok(&home, &["team", "join", &code]);
    ok(&home, &["remote", "add", "alice", &server.ticket]);
    let out = run(&home, &["fetch", "alice"]);
    full(&out, &home.join("store"), "fetch");
    fs.grow(BIG_MIB);
    clean_and_whole(&home, &whole);
    ok(&home, &["fetch", "alice"]);
    assert_eq!(sessions(&home), whole);
    clean_and_whole(&home, &whole);
}
