//! People for the end-to-end tests: each a `TAPES_HOME` and a `HOME` (where the agents keep
//! their sessions) under one temp dir, running the real `tapes` binary; and `tapes serve`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Person {
    pub name: String,
    /// TAPES_HOME.
    pub tapes: PathBuf,
    /// HOME: the agents' directories are under it.
    pub home: PathBuf,
    /// The project directory the agent runs in.
    pub project: PathBuf,
}

impl Person {
    pub fn new(dir: &Path, name: &str) -> Person {
        let person = Person {
            name: name.to_string(),
            tapes: dir.join(name).join("tapes"),
            home: dir.join(name).join("home"),
            project: dir.join(name).join("project"),
        };
        std::fs::create_dir_all(&person.home).expect("home");
        std::fs::create_dir_all(&person.project).expect("project");
        person.ok(&["init", "--name", name]);
        person
    }

    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("TAPES_HOME", &self.tapes)
            .env("HOME", &self.home)
            .env_remove("RUST_LOG")
            .env_remove("CLAUDE_CONFIG_DIR")
            .env_remove("CODEX_HOME")
            .env_remove("GEMINI_CLI_HOME")
            .current_dir(&self.project);
        cmd
    }

    pub fn tapes(&self, args: &[&str]) -> Output {
        self.command(Path::new(env!("CARGO_BIN_EXE_tapes")))
            .args(args)
            .output()
            .expect("run tapes")
    }

    /// Runs tapes, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.tapes(args);
        assert!(
            out.status.success(),
            "{}: tapes {args:?}\nstdout: {}\nstderr: {}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tapes sessions --json`.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["sessions", "--json"])).expect("sessions --json")
    }

    /// The node texts of a session, oldest first (`tapes show --json`).
    pub fn texts(&self, id: &str) -> Vec<String> {
        let shown: serde_json::Value =
            serde_json::from_str(&self.ok(&["show", id, "--json"])).expect("show --json");
        shown["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n.to_string())
            .collect()
    }
}

/// A running `tapes serve`, stopped on drop.
pub struct Serve {
    child: Child,
    pub ticket: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(person: &Person) -> Serve {
    let mut child = person
        .command(Path::new(env!("CARGO_BIN_EXE_tapes")))
        .args(["serve", "--bind", "127.0.0.1:0", "--no-mdns"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tapes serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut ticket = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
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

/// Alice (serving) with a team `core` that Bob joined, and a session of hers shared with it
/// that Bob fetched. Returns (alice, bob, serve, session id).
pub fn alice_shares_with_bob(dir: &Path, transcript: &Path) -> (Person, Person, Serve, String) {
    let alice = Person::new(dir, "alice");
    let bob = Person::new(dir, "bob");
    alice.ok(&["team", "create", "core"]);
    let server = serve(&alice);
    let code = alice.ok(&["team", "invite"]).trim().to_string();
    bob.ok(&["team", "join", &code]);
    alice.ok(&["import", transcript.to_str().expect("utf-8 path")]);
    let id = alice.sessions()[0]["id"]
        .as_str()
        .expect("session id")
        .to_string();
    alice.ok(&["share", &id, "--team", "core", "--allow-secrets"]);
    bob.ok(&["remote", "add", "alice", &server.ticket]);
    bob.ok(&["fetch", "alice"]);
    (alice, bob, server, id)
}
