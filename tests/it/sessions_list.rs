//! `tapes sessions` on a long list (issue "Speed"): at a terminal the newest screenful and a
//! footer saying how many older sessions there are and how to see them; piped output, JSON and
//! filtered lists keep every row unless `--limit` is given. The terminal is a real
//! pseudo-terminal (Linux), so the binary decides as it does for a user.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tapes::session::sample::{self, Shape};

/// Sessions imported (more than the 10-row page of a 14-line terminal).
const SESSIONS: usize = 13;
/// `LINES` of the simulated terminal: a page of 14 - 4 = 10 rows.
const LINES: usize = 14;

struct Env {
    _dir: tempfile::TempDir,
    home: PathBuf,
}

fn env_with_sessions() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let projects = dir.path().join("projects");
    std::fs::create_dir_all(&projects).unwrap();
    for i in 0..SESSIONS {
        let session = sample::session(7, i, Shape::default());
        std::fs::write(
            projects.join(format!("{}.jsonl", session.source_id)),
            sample::claude_jsonl(&session),
        )
        .unwrap();
    }
    let env = Env { _dir: dir, home };
    let (code, _, stderr) = piped(&env.home, &["import", projects.to_str().unwrap()]);
    assert_eq!(code, 0, "import: {stderr}");
    env
}

fn piped(home: &Path, args: &[&str]) -> (i32, String, String) {
    super::util::output(home, args)
}

/// Runs `tapes ARGS` with stdout on a pseudo-terminal of `LINES` lines and 200 columns;
/// returns what the terminal showed (without the terminal's carriage returns).
#[cfg(target_os = "linux")]
fn at_terminal(home: &Path, args: &[&str]) -> String {
    use std::ffi::CStr;
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: plain libc calls on a descriptor this function owns; the master is wrapped in a
    // File (closed on drop) right after it is opened.
    let (master, slave_path) = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt");
        let master = std::fs::File::from_raw_fd(fd);
        assert_eq!(libc::grantpt(fd), 0, "grantpt");
        assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
        let name = libc::ptsname(fd);
        assert!(!name.is_null(), "ptsname");
        let path = CStr::from_ptr(name).to_str().unwrap().to_string();
        let size = libc::winsize {
            ws_row: LINES as u16,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        libc::ioctl(fd, libc::TIOCSWINSZ, &size);
        (master, path)
    };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)
        .unwrap();
    let mut child = {
        let mut cmd = super::util::std_tapes(home);
        cmd.args(args)
            .env("LINES", LINES.to_string())
            .env("COLUMNS", "200")
            .stdin(Stdio::null())
            .stdout(slave)
            .stderr(Stdio::null());
        cmd.spawn().unwrap()
        // The command, and with it this process's copy of the terminal's other end, is
        // dropped here: reading ends when the child closes its copy.
    };
    let mut shown = Vec::new();
    let mut master = master;
    let mut chunk = [0u8; 8192];
    loop {
        match master.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => shown.extend_from_slice(&chunk[..n]),
            // EIO: every writer is gone.
            Err(_) => break,
        }
    }
    assert!(
        child.wait().unwrap().success(),
        "tapes {args:?} at a terminal"
    );
    String::from_utf8(shown).unwrap().replace('\r', "")
}

/// The short ids of the newest-first list, as `--json` (every row) gives them.
fn newest_first(home: &Path) -> Vec<String> {
    let (code, out, err) = piped(home, &["sessions", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    list.iter()
        .map(|s| s["id"].as_str().unwrap()[..12].to_string())
        .collect()
}

/// The ids in a table's rows (first column), header and footer left out.
fn ids(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("… "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn a_terminal_shows_the_newest_screenful_and_says_how_many_are_older() {
    let env = env_with_sessions();
    let order = newest_first(&env.home);
    assert_eq!(order.len(), SESSIONS);

    let page = at_terminal(&env.home, &["sessions"]);
    let lines: Vec<&str> = page.lines().collect();
    assert!(lines[0].starts_with("ID "), "{page}");
    assert_eq!(ids(&page), order[..10], "{page}");
    assert_eq!(
        lines.last().copied(),
        Some("… 3 older sessions not shown: --all lists every one, --limit N the newest N"),
        "{page}"
    );

    // --all: every session, no footer.
    let all = at_terminal(&env.home, &["sessions", "--all"]);
    assert_eq!(ids(&all), order, "{all}");
    assert!(!all.contains("older session"), "{all}");

    // --limit N at a terminal: the newest N, and the footer counts the rest.
    let three = at_terminal(&env.home, &["sessions", "--limit", "3"]);
    assert_eq!(ids(&three), order[..3], "{three}");
    assert!(
        three.ends_with(
            "… 10 older sessions not shown: --all lists every one, --limit N the newest N\n"
        ),
        "{three}"
    );

    // A filter lists every match, even at a terminal.
    let filtered = at_terminal(&env.home, &["sessions", "--agent", "claude"]);
    assert_eq!(ids(&filtered), order, "{filtered}");
}

#[test]
fn piped_output_keeps_every_row_unless_limited() {
    let env = env_with_sessions();
    let order = newest_first(&env.home);

    let (code, all, _) = piped(&env.home, &["sessions"]);
    assert_eq!(code, 0);
    assert_eq!(ids(&all), order, "{all}");
    assert!(!all.contains("older session"), "{all}");

    let (code, three, _) = piped(&env.home, &["sessions", "--limit", "3"]);
    assert_eq!(code, 0);
    assert_eq!(three.lines().count(), 1 + 3, "{three}");
    assert_eq!(ids(&three), order[..3], "{three}");

    let (code, json, _) = piped(&env.home, &["sessions", "--json", "--limit", "2"]);
    assert_eq!(code, 0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let got: Vec<&str> = list
        .iter()
        .map(|s| &s["id"].as_str().unwrap()[..12])
        .collect();
    assert_eq!(got, order[..2]);

    let (code, none, _) = piped(&env.home, &["sessions", "--limit", "0"]);
    assert_eq!(code, 0);
    assert_eq!(none.lines().count(), 1, "only the header: {none}");

    // --all and --limit contradict each other.
    let (code, _, err) = piped(&env.home, &["sessions", "--all", "--limit", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--limit"), "{err}");
}
