//! What a user reads (issue 18): messages that say what happened, in the right words, and the
//! inputs people type (short agent names, a team's name prefix, `1y`, an email without
//! `--email`), through the real binary with one `TAPES_HOME` per test.

use std::path::{Path, PathBuf};

use tapes::home::Home;
use tapes::protocol::SessionId;
use tapes::session::sample::{self, Shape};
use tapes::store::Store;

struct Env {
    dir: tempfile::TempDir,
    home: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    Env { dir, home }
}

impl Env {
    fn run(&self, args: &[&str]) -> Run {
        let out = super::util::tapes(&self.home)
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code,
            0,
            "tapes {}\nstdout: {}\nstderr: {}",
            args.join(" "),
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Requires a failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_ne!(
            run.code,
            0,
            "tapes {} succeeded\nstdout: {}",
            args.join(" "),
            run.stdout
        );
        run.stderr
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Imports sample sessions `0..n` (Claude Code transcripts); returns their ids.
    fn import(&self, n: usize) -> Vec<SessionId> {
        let dir = self.path("projects");
        std::fs::create_dir_all(&dir).unwrap();
        let ids = (0..n).map(|i| write_sample(&dir, i)).collect();
        self.ok(&["import", dir.to_str().unwrap()]);
        ids
    }

    fn store(&self) -> Store {
        Store::open(&Home::at(&self.home).store_dir()).unwrap()
    }
}

fn write_sample(dir: &Path, i: usize) -> SessionId {
    let session = sample::session(42, i, Shape::default());
    std::fs::write(
        dir.join(format!("{}.jsonl", session.source_id)),
        sample::claude_jsonl(&session),
    )
    .unwrap();
    SessionId::derive("claude", &session.source_id)
}

#[test]
fn agent_filter_takes_short_names_and_says_when_nothing_matches() {
    let env = env();
    let ids = env.import(2);
    // The stored name, `--platform`'s short name, any case, and a unique prefix all match.
    for name in ["claude-code", "claude", "Claude", "cl"] {
        let table = env.ok(&["sessions", "--agent", name]);
        assert_eq!(table.lines().count(), 3, "--agent {name}: {table}");
        assert!(table.contains(&ids[0].short()), "{table}");
    }
    assert_eq!(
        env.ok(&["sessions", "--agent", "gemini"]),
        "none of the 2 sessions here matches --agent gemini (gemini-cli)\nagents here: claude-code (2)\n"
    );
    assert_eq!(
        env.ok(&["sessions", "--agent", "nope"]),
        "none of the 2 sessions here matches --agent nope\nagents here: claude-code (2)\n"
    );
    let projects = env.ok(&["sessions", "--project", "nope"]);
    assert!(
        projects.starts_with("none of the 2 sessions here matches --project nope\nprojects here: "),
        "{projects}"
    );
    // An empty store still gets the import advice.
    let empty = self::env();
    assert!(empty
        .ok(&["sessions", "--agent", "claude"])
        .starts_with("no sessions yet;"));
}

#[test]
fn bundle_verify_does_not_claim_an_import_and_import_does() {
    let env = env();
    env.ok(&["init", "--name", "alice"]);
    env.import(1);
    let file = env.path("one.tape");
    let file = file.to_str().unwrap();
    let made = env.ok(&["bundle", "create", "--all", "--plain", "-o", file]);
    assert!(made.contains(": 1 session, 10 nodes ("), "{made}");
    let bytes = std::fs::read(file).unwrap();
    std::fs::write(file, &bytes[..bytes.len() - 20]).unwrap();
    let verify = env.fails(&["bundle", "verify", file]);
    assert!(verify.contains("is truncated"), "{verify}");
    assert!(!verify.contains("imported"), "{verify}");
    let import = env.fails(&["bundle", "import", file]);
    assert!(
        import.contains("nothing was imported: ") && import.contains("is truncated"),
        "{import}"
    );
}

#[test]
fn expiries_take_years_and_weeks_and_refuse_zero() {
    let env = env();
    env.ok(&["init", "--name", "alice"]);
    env.ok(&["team", "create", "Paper Compute"]);
    let run = env.run(&["team", "invite", "--expires", "1y"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = env.run(&["team", "invite", "--expires", "2w"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let zero = env.fails(&["team", "invite", "--expires", "0d"]);
    assert!(
        zero.contains(
            "--expires: `0d` is zero; give a positive duration, e.g. 30m, 12h, 7d, 2w, 1y"
        ),
        "{zero}"
    );
    let negative = env.fails(&["team", "invite", "--expires=-1d"]);
    assert!(negative.contains("`-1d` is negative"), "{negative}");
}

#[test]
fn invite_takes_the_email_positionally_and_teams_match_by_name_prefix() {
    let env = env();
    env.ok(&["init", "--name", "alice"]);
    env.ok(&["team", "create", "Paper Compute"]);
    // The seed's shape: the email as the argument, the team by the start of its name.
    let run = env.run(&["team", "invite", "bob@example.com", "--team", "paper"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let invites = env.ok(&["team", "invites", "--team", "Paper"]);
    assert!(invites.contains("bob@example.com"), "{invites}");
    let not_email = env.fails(&["team", "invite", "Paper"]);
    assert!(
        not_email.contains("`Paper` is not an email address;")
            && not_email.contains("--team Paper"),
        "{not_email}"
    );
    env.ok(&["team", "create", "Paper Mill"]);
    let ambiguous = env.fails(&["team", "members", "--team", "Paper"]);
    assert!(
        ambiguous.contains("`Paper` matches several teams: ")
            && ambiguous.contains("Paper Compute (")
            && ambiguous.contains("Paper Mill ("),
        "{ambiguous}"
    );
    // An exact name wins over a longer one it is the start of.
    env.ok(&["team", "create", "Paper"]);
    let members = env.ok(&["team", "members", "--team", "paper"]);
    assert!(members.starts_with("team \"Paper\" ("), "{members}");
}

#[test]
fn sharing_again_keeps_the_title_note_and_expiry_and_an_empty_unshare_says_so() {
    let env = env();
    env.ok(&["init", "--name", "alice"]);
    let ids = env.import(1);
    let id = ids[0].to_hex();
    env.ok(&["team", "create", "Paper Compute"]);
    let first = env.ok(&[
        "share",
        &id,
        "--team",
        "Paper",
        "--title",
        "The billing fix",
        "--note",
        "read this",
        "--expires",
        "1y",
        "--allow-secrets",
    ]);
    assert!(first.starts_with("shared "), "{first}");
    env.ok(&["share", &id, "--team", "Paper", "--allow-secrets"]);
    let store = env.store();
    let shares = tapes::share::shares_of(&store, &ids[0]).unwrap();
    assert_eq!(shares.len(), 1);
    let record = &shares[0].1.record;
    assert_eq!(record.title.as_deref(), Some("The billing fix"));
    assert_eq!(record.note.as_deref(), Some("read this"));
    assert!(record.expires_ms.is_some(), "{record:?}");
    drop(store);

    let short = ids[0].short();
    assert_eq!(
        env.ok(&["unshare", &id]),
        format!("unshared {short} (1 share revoked; access ends now)\n")
    );
    assert_eq!(
        env.fails(&["unshare", &id]),
        format!("error: session {short} has no share to revoke; nothing changed (`tapes share {short}` shares it)\n")
    );
}

#[test]
fn a_relay_that_does_not_answer_is_called_a_relay() {
    let env = env();
    env.ok(&["init", "--name", "alice"]);
    // Nobody listens on port 9 with this node id.
    let ghost = Env {
        home: env.path("ghost"),
        dir: tempfile::tempdir().unwrap(),
    };
    ghost.ok(&["init", "--name", "ghost"]);
    let id: serde_json::Value = serde_json::from_str(&ghost.ok(&["id", "--json"])).unwrap();
    let ticket = format!("relay:{}@127.0.0.1:9", id["node_id"].as_str().unwrap());
    let added = env.ok(&["remote", "add", "relay", &ticket]);
    assert!(
        added.starts_with("added relay remote `relay`: node "),
        "{added}"
    );
    let err = env.fails(&["sync", "relay"]);
    assert!(
        err.contains("cannot reach the relay: ") && err.contains("is `tapes relay` running there"),
        "{err}"
    );
    assert!(!err.contains("tapes serve"), "{err}");
}
