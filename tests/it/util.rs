//! What every module that runs the `tapes` binary shares (as ripgrep's `tests/util.rs`): one
//! place that says how a test runs a command, so every test runs it the same way.
//!
//! A command gets its own `TAPES_HOME`, starts in that home (branch, fork and checkout write
//! the tracking file of the current directory, SPEC.md §17.4: it must land in the temporary
//! directory, never in the repository the tests run from), and is silent (`RUST_LOG` removed).
//! The workspace's `.cargo/config.toml` sets `TAPES_RELAYS=none`, which every command
//! inherits: tests contact nothing but loopback and their own namespaces.

use std::path::Path;

/// `tapes` with `home` as `TAPES_HOME` and current directory, as a plain process (to spawn,
/// kill or wait on it).
pub(crate) fn std_tapes(home: impl AsRef<Path>) -> std::process::Command {
    let home = home.as_ref();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tapes"));
    cmd.env("TAPES_HOME", home)
        .env_remove("RUST_LOG")
        .current_dir(existing_dir(home));
    cmd
}

/// `tapes` with `home` as `TAPES_HOME` and current directory, for assertions.
pub(crate) fn tapes(home: impl AsRef<Path>) -> assert_cmd::Command {
    assert_cmd::Command::from_std(std_tapes(home))
}

/// Runs `tapes ARGS` in `home`; returns its exit code, stdout and stderr.
pub(crate) fn output(home: impl AsRef<Path>, args: &[&str]) -> (i32, String, String) {
    let out = tapes(home).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The home itself when it exists (`tapes init` creates it); its parent before that, which
/// the test created (a temporary directory).
fn existing_dir(home: &Path) -> &Path {
    if home.is_dir() {
        return home;
    }
    home.parent().filter(|p| p.is_dir()).unwrap_or(home)
}

/// A running `tapes serve` (no mDNS) of `home` bound to `bind`, with the ticket it printed;
/// killed on drop.
pub(crate) struct Serve {
    pub(crate) child: std::process::Child,
    pub(crate) ticket: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tapes serve --bind BIND --no-mdns` in `home` and waits for its ticket.
pub(crate) fn serve(home: &Path, bind: &str) -> Serve {
    use std::io::{BufRead, BufReader};
    let mut child = std_tapes(home)
        .args(["serve", "--bind", bind, "--no-mdns"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ticket = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(t) = line.strip_prefix("ticket: ") {
            ticket = Some(t.to_string());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        ticket: ticket.expect("serve prints its ticket"),
    }
}
