//! `tapes team …` through the real binary, one `TAPES_HOME` per person: the file-based join
//! flow, codes that no longer work, removal with key rotation, usage errors, and no secret in
//! anything the commands print.
//!
//! Tests named `regression_…` pin defects found in review (a leaver picking the next key, a
//! fork resolved toward the other side, secrets in error messages and files) so they stay fixed.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

struct World {
    dir: tempfile::TempDir,
    /// Every command run (`who $ tapes args`) and what it printed (stdout and stderr), for the
    /// secret scan.
    printed: RefCell<Vec<(String, String)>>,
}

struct Person {
    name: &'static str,
    home: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            printed: RefCell::new(Vec::new()),
        }
    }

    fn work(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> String {
        self.work().join(name).display().to_string()
    }

    /// `tapes init` for a new person.
    fn person(&self, name: &'static str, email: Option<&str>) -> Person {
        let person = Person {
            name,
            home: self.work().join(format!("{name}-home")),
        };
        let mut args = vec!["init", "--name", name];
        if let Some(email) = email {
            args.extend(["--email", email]);
        }
        self.ok(&person, &args);
        person
    }

    fn run(&self, who: &Person, args: &[&str]) -> Run {
        let out = super::util::tapes(&who.home)
            .current_dir(self.work())
            .args(args)
            .output()
            .unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        };
        self.printed.borrow_mut().push((
            format!("{} $ tapes {}", who.name, args.join(" ")),
            format!("{}{}", run.stdout, run.stderr),
        ));
        run
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, who: &Person, args: &[&str]) -> String {
        let run = self.run(who, args);
        assert_eq!(
            run.code,
            0,
            "{} $ tapes {}\nstdout: {}\nstderr: {}",
            who.name,
            args.join(" "),
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Runs and requires exit code `code`; returns the run.
    fn fails(&self, who: &Person, args: &[&str], code: i32) -> Run {
        let run = self.run(who, args);
        assert_eq!(
            run.code,
            code,
            "{} $ tapes {}\nstdout: {}\nstderr: {}",
            who.name,
            args.join(" "),
            run.stdout,
            run.stderr
        );
        run
    }

    /// `create` as `owner`, then `invite` with extra args; returns the code.
    fn invite(&self, owner: &Person, extra: &[&str]) -> String {
        let mut args = vec!["team", "invite"];
        args.extend_from_slice(extra);
        let code = self.ok(owner, &args).trim().to_string();
        assert!(code.starts_with("tapes-invite1-"), "{code}");
        assert_eq!(
            code.lines().count(),
            1,
            "stdout is the code alone, for scripts: {code}"
        );
        code
    }

    /// The joiner asks (request file), the inviter answers (answer file); returns the inviter's
    /// run of `accept` and the answer path.
    fn ask(&self, inviter: &Person, joiner: &Person, code: &str) -> (Run, String) {
        let request = self.file(&format!("{}.request", joiner.name));
        let answer = self.file(&format!("{}.answer", joiner.name));
        let out = self.ok(joiner, &["team", "join", code, "-o", &request]);
        assert!(out.contains(&format!("written to {request}")), "{out}");
        assert!(
            out.contains(&format!("tapes team accept {request}")),
            "{out}"
        );
        let run = self.run(
            inviter,
            &["-vvv", "team", "accept", &request, "-o", &answer],
        );
        (run, answer)
    }
}

impl Person {
    /// The identity secrets as written in the 0600 files.
    fn secrets(&self) -> Vec<String> {
        let node = std::fs::read_to_string(self.home.join("identity/node.key")).unwrap();
        let seed = node
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap()
            .trim()
            .to_string();
        let age = std::fs::read_to_string(self.home.join("identity/age.key")).unwrap();
        let age = age
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .to_string();
        vec![
            seed.to_ascii_lowercase(),
            seed.to_ascii_uppercase(),
            age.clone(),
            age.to_ascii_lowercase(),
        ]
    }
}

fn members_json(world: &World, who: &Person) -> Vec<(String, String)> {
    let out = world.ok(who, &["team", "members", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut members: Vec<(String, String)> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    members.sort();
    members
}

#[test]
fn the_file_based_join_flow_end_to_end() {
    let world = World::new();
    let alice = world.person("alice", Some("alice@example.com"));
    let bob = world.person("bob", None);
    let carol = world.person("carol", None);

    let created = world.ok(&alice, &["team", "create", "Paper Compute"]);
    assert!(
        created.starts_with("created team \"Paper Compute\" ("),
        "{created}"
    );
    assert!(created.contains("you are its owner"), "{created}");
    let team = created.split(['(', ')']).nth(1).unwrap().to_string();
    assert_eq!(team.len(), 64, "the full team id is printed: {created}");

    let invite = world.run(&alice, &["team", "invite"]);
    assert_eq!(invite.code, 0, "{}", invite.stderr);
    let code = invite.stdout.trim().to_string();
    assert!(code.starts_with("tapes-invite1-"), "{code}");
    assert!(
        invite.stderr.contains("1 use, expires"),
        "{}",
        invite.stderr
    );
    assert!(
        invite.stderr.contains("tapes team join <code>"),
        "{}",
        invite.stderr
    );

    let (accept, answer) = world.ask(&alice, &bob, &code);
    assert_eq!(accept.code, 0, "{}{}", accept.stdout, accept.stderr);
    assert!(
        accept
            .stdout
            .starts_with("accepted bob into the team; send them "),
        "{}",
        accept.stdout
    );
    assert!(Path::new(&answer).exists());
    let joined = world.ok(&bob, &["-vvv", "team", "join", "--answer", &answer]);
    assert!(
        joined.starts_with("joined team \"Paper Compute\" ("),
        "{joined}"
    );
    assert!(joined.contains("with 2 members"), "{joined}");

    // Both see the same team: two members, roles as given.
    let want = vec![
        ("alice".to_string(), "owner".to_string()),
        ("bob".to_string(), "member".to_string()),
    ];
    assert_eq!(members_json(&world, &alice), want);
    assert_eq!(members_json(&world, &bob), want);
    let members = world.ok(&bob, &["team", "members"]);
    assert!(members.starts_with("team \"Paper Compute\" ("), "{members}");
    assert!(members.contains("version 1, key epoch 0"), "{members}");
    assert!(
        members
            .lines()
            .any(|l| l.contains("owner") && l.contains("alice <alice@example.com>")),
        "{members}"
    );
    assert!(
        members
            .lines()
            .any(|l| l.contains("member") && l.ends_with("bob")),
        "{members}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&world.ok(&bob, &["team", "list", "--json"])).unwrap();
    assert_eq!(list[0]["id"], team.as_str());
    assert_eq!(list[0]["members"], 2);
    assert_eq!(list[0]["forked"], false);

    // The code allowed one use: Carol's request is refused, and she is told why.
    let (refused, carol_answer) = world.ask(&alice, &carol, &code);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stdout
            .contains("refused carol: this invite code has been used as many times as it allows"),
        "{}",
        refused.stdout
    );
    let told = world.fails(&carol, &["team", "join", "--answer", &carol_answer], 1);
    assert!(
        told.stderr.contains("join refused: this invite code has been used as many times as it allows; ask for a new one"),
        "{}",
        told.stderr
    );
    let none = world.ok(&carol, &["team", "list"]);
    assert!(none.starts_with("no teams yet"), "{none}");
    let invites = world.ok(&alice, &["team", "invites"]);
    assert!(invites.contains("1/1 used  spent"), "{invites}");
    assert_eq!(members_json(&world, &alice).len(), 2);

    // Removing Bob rotates the team key, and the command says so.
    let removed = world.ok(&alice, &["team", "remove", "bob"]);
    assert!(removed.starts_with("removed bob ("), "{removed}");
    assert!(
        removed
            .contains("team key rotated to epoch 1: they cannot open anything shared from now on"),
        "{removed}"
    );
    let members = world.ok(&alice, &["team", "members"]);
    assert!(members.contains("version 2, key epoch 1"), "{members}");
    assert!(!members.contains("bob"), "{members}");
    let err = world.fails(&alice, &["team", "remove", "alice"], 1);
    assert!(
        err.stderr.contains("that is you; use `tapes team leave`"),
        "{}",
        err.stderr
    );
    let err = world.fails(&alice, &["team", "remove", "zed"], 1);
    assert!(
        err.stderr.contains("no member of the team matches `zed`"),
        "{}",
        err.stderr
    );

    // Nothing printed holds an identity secret, and only `team invite` printed the code.
    let secrets: Vec<String> = [&alice, &bob, &carol]
        .iter()
        .flat_map(|p| p.secrets())
        .collect();
    let body = code.strip_prefix("tapes-invite1-").unwrap().to_string();
    let printed = world.printed.borrow();
    let invite_outputs = printed
        .iter()
        .filter(|(command, _)| command.ends_with("$ tapes team invite"))
        .count();
    assert_eq!(invite_outputs, 1);
    assert!(printed.len() > 15);
    for (command, text) in printed.iter() {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret key was printed by {command}:\n{text}"
            );
        }
        if !command.ends_with("$ tapes team invite") {
            assert!(
                !text.contains(&body),
                "the invite code was printed again by {command}:\n{text}"
            );
        }
    }
    for person in [&alice, &bob, &carol] {
        #[cfg(unix)]
        for file in ["node.key", "age.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(person.home.join("identity").join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{} {file}", person.name);
        }
    }
}

#[test]
fn codes_that_no_longer_work_say_why_and_plain_members_cannot_invite() {
    let world = World::new();
    let alice = world.person("alice", None);
    let bob = world.person("bob", Some("bob@example.com"));
    let carol = world.person("carol", None);
    world.ok(&alice, &["team", "create", "Paper Compute"]);

    // Revoked.
    let code = world.invite(&alice, &["--uses", "3"]);
    let listed = world.ok(&alice, &["team", "invites"]);
    assert!(listed.contains("member  0/3 used  open until "), "{listed}");
    let revoked = world.ok(&alice, &["team", "invite", "--revoke", &code]);
    assert!(revoked.starts_with("revoked invite "), "{revoked}");
    let listed = world.ok(&alice, &["team", "invites"]);
    assert!(listed.contains("0/3 used  revoked"), "{listed}");
    let (refused, answer) = world.ask(&alice, &bob, &code);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stdout
            .contains("refused bob: this invite code was revoked"),
        "{}",
        refused.stdout
    );
    let told = world.fails(&bob, &["team", "join", "--answer", &answer], 1);
    assert!(
        told.stderr
            .contains("join refused: this invite code was revoked; ask for a new one"),
        "{}",
        told.stderr
    );

    // Expired. (A zero lifetime is refused outright: such a code could never be used.)
    let zero = world.fails(&alice, &["team", "invite", "--expires", "0s"], 1);
    assert!(
        zero.stderr
            .contains("--expires: `0s` is zero; give a positive duration"),
        "{}",
        zero.stderr
    );
    let code = world.invite(&alice, &["--expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (refused, answer) = world.ask(&alice, &bob, &code);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stdout
            .contains("refused bob: this invite code has expired"),
        "{}",
        refused.stdout
    );
    let told = world.fails(&bob, &["team", "join", "--answer", &answer], 1);
    assert!(
        told.stderr
            .contains("join refused: this invite code has expired; ask for a new one"),
        "{}",
        told.stderr
    );

    // For another email.
    let code = world.invite(&alice, &["--email", "carol@example.com"]);
    let (refused, _) = world.ask(&alice, &bob, &code);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stdout
            .contains("this invite code is for carol@example.com"),
        "{}",
        refused.stdout
    );

    // A working one, then Bob (a plain member) may not invite.
    let code = world.invite(&alice, &["--expires", "2h"]);
    let (accepted, answer) = world.ask(&alice, &bob, &code);
    assert_eq!(accepted.code, 0, "{}", accepted.stdout);
    world.ok(&bob, &["team", "join", "--answer", &answer]);
    let err = world.fails(&bob, &["team", "invite"], 1);
    assert!(
        err.stderr.contains("only an owner or admin can invite"),
        "{}",
        err.stderr
    );
    let err = world.fails(&bob, &["team", "promote", "bob", "--role", "admin"], 1);
    assert!(
        err.stderr
            .contains("only an owner or admin can change roles"),
        "{}",
        err.stderr
    );

    // An answer for a team nobody asked to join is not taken.
    let err = world.fails(&carol, &["team", "join", "--answer", &answer], 1);
    assert!(
        err.stderr.contains("which you did not ask to join"),
        "{}",
        err.stderr
    );
    // A file that is not a request is named as such.
    std::fs::write(world.work().join("junk"), b"hello").unwrap();
    let err = world.fails(&alice, &["team", "accept", &world.file("junk")], 1);
    assert!(
        err.stderr.contains("is not a tapes join request"),
        "{}",
        err.stderr
    );
    let err = world.fails(&carol, &["team", "join", "not-a-code"], 1);
    assert!(
        err.stderr.contains("this is not an invite code"),
        "{}",
        err.stderr
    );

    let secrets: Vec<String> = [&alice, &bob, &carol]
        .iter()
        .flat_map(|p| p.secrets())
        .collect();
    for (command, text) in world.printed.borrow().iter() {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret key was printed by {command}:\n{text}"
            );
        }
    }
}

#[test]
fn wrong_usage_is_a_usage_error_with_exit_code_2() {
    let world = World::new();
    let alice = world.person("alice", None);
    world.ok(&alice, &["team", "create", "Paper Compute"]);
    let before = world.ok(&alice, &["team", "members", "--json"]);

    let run = world.fails(&alice, &["team", "promote", "alice"], 2);
    assert!(run.stderr.contains("--role"), "{}", run.stderr);
    assert!(
        run.stderr.contains("Usage: tapes team promote"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    let run = world.fails(&alice, &["team", "promote", "alice", "--role", "king"], 2);
    assert!(
        run.stderr.contains("invalid value 'king'"),
        "{}",
        run.stderr
    );
    let run = world.fails(
        &alice,
        &["team", "invite", "--revoke", "abc", "--uses", "3"],
        2,
    );
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    let run = world.fails(&alice, &["team", "invite", "--role", "owner"], 2);
    assert!(
        run.stderr.contains("invalid value 'owner'"),
        "{}",
        run.stderr
    );
    let run = world.fails(&alice, &["team", "join"], 2);
    assert!(run.stderr.contains("required"), "{}", run.stderr);
    let run = world.fails(&alice, &["team", "invite", "--expires", "soon"], 1);
    assert!(run.stderr.contains("is not a duration"), "{}", run.stderr);

    assert_eq!(
        world.ok(&alice, &["team", "members", "--json"]),
        before,
        "nothing changed"
    );
}

#[test]
fn regression_the_join_request_file_is_private() {
    let world = World::new();
    let alice = world.person("alice", None);
    let bob = world.person("bob", None);
    world.ok(&alice, &["team", "create", "Paper Compute"]);
    let code = world.invite(&alice, &[]);
    let request = world.file("bob.request");
    world.ok(&bob, &["team", "join", &code, "-o", &request]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&request).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the request (which carries the invite secret) is readable by others: {mode:o}"
        );
    }
}

#[test]
fn regression_revoking_a_code_of_someone_else_does_not_print_it() {
    let world = World::new();
    let alice = world.person("alice", None);
    let bob = world.person("bob", None);
    world.ok(&alice, &["team", "create", "Paper Compute"]);
    let code = world.invite(&alice, &[]);
    let run = world.fails(&bob, &["team", "invite", "--revoke", &code], 1);
    assert!(run.stderr.contains("no invite matches"), "{}", run.stderr);
    assert!(
        !run.stderr
            .contains(code.strip_prefix("tapes-invite1-").unwrap()),
        "{}",
        run.stderr
    );
}
