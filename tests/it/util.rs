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

/// Runs `tapes ARGS` in `home` and returns its stdout; fails the test with both streams when
/// the command fails.
pub(crate) fn ok(home: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = output(home, args);
    assert_eq!(
        code,
        0,
        "tapes {args:?} in {}:\nstdout: {stdout}\nstderr: {stderr}",
        home.display()
    );
    stdout
}

/// Copies the directory `from` to `to` (regular files and directories only: a store's socket
/// is its holder's, never copied). Used to give a test a second machine of one person (the
/// same keys, a copy of the store) in one step.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes every session of `home` to the plain bundle `out` (`tapes bundle create --all
/// --plain --allow-secrets -o OUT`).
pub(crate) fn plain_bundle(home: &Path, out: &Path) {
    ok(
        home,
        &[
            "bundle",
            "create",
            "--all",
            "--plain",
            "--allow-secrets",
            "-o",
            out.to_str().unwrap(),
        ],
    );
}

/// Alice and bob in `tmp`: alice creates team `core`, bob joins it (through alice's `tapes
/// serve`, stopped afterwards), alice registers the team on `relay`, and both add it as the
/// remote `relay`. Returns their homes.
pub(crate) fn relay_team(tmp: &Path, relay: &Relay) -> (std::path::PathBuf, std::path::PathBuf) {
    let alice = tmp.join("alice");
    let bob = tmp.join("bob");
    ok(&alice, &["init", "--name", "alice"]);
    ok(&alice, &["team", "create", "core"]);
    ok(&bob, &["init", "--name", "bob"]);
    {
        // Joining talks to the inviter once.
        let _server = serve(&alice, "127.0.0.1:0");
        let code = ok(&alice, &["team", "invite"]).trim().to_string();
        ok(&bob, &["team", "join", &code]);
    }
    ok(
        &alice,
        &["relay", "register", "--team", "core", &relay.ticket],
    );
    for home in [&alice, &bob] {
        ok(home, &["remote", "add", "relay", &relay.remote()]);
    }
    (alice, bob)
}

/// A running `tapes relay --data DATA` on loopback, with the ticket it wrote; killed (SIGKILL)
/// on drop. [`Relay::restart`] brings it back at the same address after a kill.
pub(crate) struct Relay {
    pub(crate) child: std::process::Child,
    /// `<node id>@127.0.0.1:<port>`.
    pub(crate) ticket: String,
    pub(crate) data: std::path::PathBuf,
    bind: String,
}

impl Relay {
    /// Starts a relay in `data` on a free loopback port.
    pub(crate) fn start(data: &Path) -> Relay {
        std::fs::create_dir_all(data).unwrap();
        let (child, ticket) = Relay::spawn(data, "127.0.0.1:0");
        let port = ticket.rsplit(':').next().unwrap().to_string();
        Relay {
            child,
            ticket,
            data: data.to_path_buf(),
            bind: format!("127.0.0.1:{port}"),
        }
    }

    /// The remote target members add: `relay:<ticket>`.
    pub(crate) fn remote(&self) -> String {
        format!("relay:{}", self.ticket)
    }

    fn spawn(data: &Path, bind: &str) -> (std::process::Child, String) {
        let file = data.join("relay-ticket");
        let _ = std::fs::remove_file(&file);
        let mut child = std_tapes(data.join("unused-home"))
            .arg("relay")
            .arg("--data")
            .arg(data)
            .args(["--bind", bind])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..1200 {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if !text.trim().is_empty() {
                    return (child, text.trim().to_string());
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tapes relay in {} exited early: {status}", data.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let _ = child.kill();
        panic!("tapes relay in {} wrote no ticket", data.display());
    }

    /// Kills the relay with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the relay again on its port (after [`Relay::kill`]); it keeps its ticket.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let (child, ticket) = Relay::spawn(&self.data, &self.bind);
        assert_eq!(ticket, self.ticket, "the relay came back at its address");
        self.child = child;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}
