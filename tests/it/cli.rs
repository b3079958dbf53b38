//! The CLI as a user meets it: `init`, `id`, `import`, `sessions`, `show`, `log`, `fsck`, and
//! the errors a user can hit. Sample transcripts come from `tapes::session::sample` (deterministic), so
//! ids and counts are pinned here.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use tapes::protocol::SessionId;
use tapes::session::sample::{self, Shape};

struct Env {
    _dir: tempfile::TempDir,
    home: PathBuf,
    transcripts: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let transcripts = dir.path().join("projects");
    std::fs::create_dir_all(transcripts.join("billing")).unwrap();
    Env {
        home,
        transcripts,
        _dir: dir,
    }
}

fn tapes(env: &Env) -> Command {
    super::util::tapes(&env.home)
}

/// Writes sample session `i` as a Claude Code transcript and returns its tapes session id.
fn write_sample(dir: &Path, i: usize) -> SessionId {
    let session = sample::session(42, i, Shape::default());
    std::fs::write(
        dir.join(format!("{}.jsonl", session.source_id)),
        sample::claude_jsonl(&session),
    )
    .unwrap();
    SessionId::derive("claude", &session.source_id)
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn init_creates_private_keys_and_id_prints_them() {
    let env = env();
    let out = stdout(tapes(&env).args(["init", "--name", "alice", "--email", "alice@example.com"]));
    assert!(out.starts_with("initialized tapes in "), "{out}");
    let id = stdout(tapes(&env).args(["id", "--json"]));
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    assert_eq!(id["name"], "alice");
    assert_eq!(id["node_id"].as_str().unwrap().len(), 64);
    assert!(id["age_recipient"].as_str().unwrap().starts_with("age1"));
    #[cfg(unix)]
    for file in ["node.key", "age.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.home.join("identity").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // A second init keeps the identity and says so.
    let again = stdout(tapes(&env).arg("init"));
    assert!(again.starts_with("already initialized"), "{again}");
    assert!(again.contains(id["node_id"].as_str().unwrap()));
    // Nothing secret on stdout.
    let key = std::fs::read_to_string(env.home.join("identity/age.key")).unwrap();
    let secret = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY"))
        .unwrap();
    assert!(!out.contains(secret) && !again.contains(secret));
}

#[test]
fn id_without_init_says_what_to_do() {
    let env = env();
    tapes(&env)
        .arg("id")
        .assert()
        .failure()
        .stderr(predicate::str::contains("run `tapes init` first"));
}

#[test]
fn import_is_idempotent_and_grows_sessions() {
    let env = env();
    let dir = env.transcripts.join("billing");
    let ids: Vec<SessionId> = (0..3).map(|i| write_sample(&dir, i)).collect();
    std::fs::write(dir.join("notes.txt"), "not a transcript").unwrap();

    // -v lists every new or grown session under the summary.
    let first = stdout(tapes(&env).args(["import", "-v"]).arg(&env.transcripts));
    assert!(
        first.starts_with("imported 3 files: 3 new sessions, 0 grew, 0 unchanged; 30 new nodes"),
        "{first}"
    );
    for id in &ids {
        assert!(
            first.contains(&format!("new  {}  10 messages", id.short())),
            "{first}"
        );
    }
    assert!(
        first
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("; skipped 1 file in no format tapes imports")),
        "{first}"
    );

    let second = stdout(tapes(&env).arg("import").arg(&env.transcripts));
    assert!(
        second.starts_with("nothing new: 3 sessions from 3 files already up to date"),
        "{second}"
    );

    // A transcript that grew: only the new nodes are added, the session moves forward.
    let mut session = sample::session(42, 0, Shape::default());
    let mut longer = sample::session(
        42,
        0,
        Shape {
            tool_rounds: 6,
            ..Shape::default()
        },
    );
    longer.source_id = session.source_id.clone();
    longer.messages.truncate(session.messages.len());
    assert_eq!(longer.messages.len(), 10);
    session.messages.push(longer.messages[1].clone());
    std::fs::write(
        dir.join(format!("{}.jsonl", session.source_id)),
        sample::claude_jsonl(&session),
    )
    .unwrap();
    let third = stdout(tapes(&env).args(["import", "-v"]).arg(&env.transcripts));
    assert!(
        third.starts_with("imported 3 files: 0 new sessions, 1 grew, 2 unchanged; 1 new node ("),
        "{third}"
    );
    assert!(
        third.contains(&format!("grew {}  11 messages", ids[0].short())),
        "{third}"
    );
}

#[test]
fn sessions_show_and_log_read_what_was_imported() {
    let env = env();
    let dir = env.transcripts.join("billing");
    let id = write_sample(&dir, 1);
    write_sample(&dir, 2);
    tapes(&env)
        .arg("import")
        .arg(&env.transcripts)
        .assert()
        .success();

    let table = stdout(tapes(&env).arg("sessions"));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID            STARTED           DURATION  PROJECT"),
        "{header}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains(&id.short()));

    let json: serde_json::Value =
        serde_json::from_str(&stdout(tapes(&env).args(["sessions", "--json"]))).unwrap();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let one = list.iter().find(|s| s["id"] == id.to_hex()).unwrap();
    assert_eq!(one["messages"], 10);
    assert_eq!(one["agent"], "claude-code");
    let project = one["project"].as_str().unwrap().to_string();
    let filtered = stdout(tapes(&env).args(["sessions", "--json", "--project", &project]));
    let filtered: serde_json::Value = serde_json::from_str(&filtered).unwrap();
    assert!(filtered
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["project"] == project.as_str()));
    // A filter that matches nothing says so (not "no sessions yet") and names what is here.
    let none = stdout(tapes(&env).args(["sessions", "--agent", "codex"]));
    assert_eq!(
        none,
        "none of the 2 sessions here matches --agent codex\nagents here: claude-code (2)\n"
    );

    // Unique prefix, like git.
    let prefix = &id.to_hex()[..8];
    let shown = stdout(tapes(&env).args(["show", prefix]));
    assert!(shown.starts_with(&format!("session {}\n", id)), "{shown}");
    assert_eq!(shown.matches("\n── #").count(), 10, "{shown}");
    assert!(
        shown.contains("  ▸ "),
        "tool calls are shown compactly: {shown}"
    );
    assert!(
        shown.contains("  ◂ "),
        "tool results are shown compactly: {shown}"
    );

    let full: serde_json::Value =
        serde_json::from_str(&stdout(tapes(&env).args(["show", prefix, "--json"]))).unwrap();
    let nodes = full["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 10);
    assert_eq!(nodes[0]["parent"], serde_json::Value::Null);
    assert_eq!(nodes[1]["parent"], nodes[0]["id"]);

    let log = stdout(tapes(&env).args(["log", prefix]));
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 10);
    assert!(lines[0].starts_with("#9 "), "newest first: {log}");
    assert!(lines[9].contains("parent (root)"), "{log}");
    let head = nodes[9]["id"].as_str().unwrap();
    assert!(lines[0].contains(&head[..12]), "{log}");

    let fsck = stdout(tapes(&env).arg("fsck"));
    assert_eq!(fsck, "ok: 20 objects and 2 refs verified\n");
}

#[test]
fn session_ids_that_do_not_resolve_say_why() {
    let env = env();
    let dir = env.transcripts.join("billing");
    for i in 0..40 {
        write_sample(&dir, i);
    }
    tapes(&env)
        .arg("import")
        .arg(&env.transcripts)
        .assert()
        .success();
    tapes(&env)
        .args(["show", "xyz"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not a session id"));
    tapes(&env)
        .args(["show", "0123456789abcdef0123456789abcdef"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no session matches"));
    // With 40 sessions some single hex digit is shared by several ids.
    let ambiguous = (0..16u8).map(|d| format!("{d:x}")).find(|d| {
        let out = tapes(&env).args(["log", d]).output().unwrap();
        String::from_utf8_lossy(&out.stderr).contains("is ambiguous")
    });
    assert!(
        ambiguous.is_some(),
        "no ambiguous one-digit prefix among 40 sessions"
    );
}

#[test]
fn importing_a_file_that_is_not_a_transcript_is_refused_clearly() {
    let env = env();
    let file = env.transcripts.join("notes.txt");
    std::fs::write(&file, "hello").unwrap();
    tapes(&env)
        .arg("import")
        .arg(&file)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "not a transcript tapes can import",
        ));
    tapes(&env)
        .args(["import", "/definitely/not/here"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot read"));
    let out = stdout(tapes(&env).arg("sessions"));
    assert!(out.starts_with("no sessions yet"));
}

#[test]
fn a_malformed_line_is_reported_with_its_line_number_and_the_rest_imported() {
    let env = env();
    let session = sample::session(42, 5, Shape::default());
    let mut text = sample::claude_jsonl(&session);
    text.push_str("{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"cut off");
    let file = env.transcripts.join("cut.jsonl");
    std::fs::write(&file, &text).unwrap();
    let lines = text.lines().count();
    tapes(&env)
        .arg("import")
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains("1 new session,"))
        .stderr(predicate::str::contains(format!("cut.jsonl:{lines}:")));
}

#[test]
fn wrong_usage_gets_a_usage_error() {
    let env = env();
    tapes(&env)
        .arg("import")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Usage: tapes import"));
    tapes(&env)
        .arg("frobnicate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unrecognized subcommand"));
}

#[test]
fn a_store_written_by_a_newer_tapes_is_refused() {
    let env = env();
    tapes(&env).arg("sessions").assert().success();
    {
        let storage = tapes::store::backend::SledStorage::open(&env.home.join("store")).unwrap();
        use tapes::store::backend::Storage;
        storage.set_setting("format", &99u32.to_le_bytes()).unwrap();
        storage.flush().unwrap();
    }
    tapes(&env)
        .arg("sessions")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "written by a newer tapes (store format 99",
        ))
        .stderr(predicate::str::contains("upgrade tapes"));
}

/// A store written before session records had owners, visibility and lineage (store format 2,
/// records of version 1) is migrated in place on first open, also when an earlier migration
/// was cut short, and reads the same afterwards (SPEC.md §4.3).
#[test]
fn a_store_from_an_older_tapes_is_migrated_in_place() {
    use tapes::store::backend::{RefUpdate, SledStorage, Storage};
    let env = env();
    let ids: Vec<SessionId> = (0..3)
        .map(|i| write_sample(&env.transcripts.join("billing"), i))
        .collect();
    tapes(&env)
        .arg("import")
        .arg(&env.transcripts)
        .assert()
        .success();
    let before = listed(&env);
    assert_eq!(before.len(), 3);
    let key = |id: &SessionId| tapes::store::keys::session(id);
    // Rewrite the store as an older tapes left it: format 2, every record version 1 (the
    // fields of version 2 before `owner`, which postcard writes back to back) — except the
    // first, as if a migration had rewritten it and then been killed.
    {
        let storage = SledStorage::open(&env.home.join("store")).unwrap();
        let mut updates = Vec::new();
        for id in &ids[1..] {
            let raw = storage.get_ref(&key(id)).unwrap().unwrap();
            let r = tapes::session::SessionRecord::decode(&raw).unwrap();
            let mut v1 = vec![1u8];
            v1.extend(
                postcard::to_stdvec(&(
                    r.head,
                    &r.source,
                    &r.title,
                    r.parent_session,
                    &r.summary,
                    r.created_ms,
                    r.updated_ms,
                ))
                .unwrap(),
            );
            updates.push(RefUpdate {
                key: key(id),
                expected: Some(raw),
                new: Some(v1),
            });
        }
        storage.update_refs(&updates).unwrap();
        storage.set_setting("format", &2u32.to_le_bytes()).unwrap();
        storage.flush().unwrap();
    }
    // Every command opens the store through the migration.
    let out = tapes(&env).args(["sessions", "--json"]).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("migrating the store")
            && stderr.contains("from format 2 to 3 (2 session records)"),
        "the migration is announced: {stderr}"
    );
    assert_eq!(listed(&env), before, "the same sessions, the same messages");
    let storage = SledStorage::open(&env.home.join("store")).unwrap();
    assert_eq!(
        storage.get_setting("format").unwrap(),
        Some(3u32.to_le_bytes().to_vec())
    );
    for id in &ids {
        let raw = storage.get_ref(&key(id)).unwrap().unwrap();
        assert_eq!(raw[0], 2, "session {} is stored as version 2", id.short());
        let r = tapes::session::SessionRecord::decode(&raw).unwrap();
        assert_eq!(r.lineage.root, *id);
    }
    drop(storage);
    // Once migrated, a store opens without a word.
    let out = tapes(&env).arg("sessions").assert().success();
    assert!(out.get_output().stderr.is_empty());
    tapes(&env).arg("fsck").assert().success();
}

/// `tapes sessions --json` as (id, messages) pairs.
fn listed(env: &Env) -> Vec<(String, u64)> {
    let json: serde_json::Value =
        serde_json::from_str(&stdout(tapes(env).args(["sessions", "--json"]))).unwrap();
    let mut out: Vec<(String, u64)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn write_session(path: &Path, session: &tapes::import::ParsedSession) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, sample::claude_jsonl(session)).unwrap();
}

#[test]
fn an_older_copy_of_a_transcript_never_rewinds_its_session() {
    let env = env();
    let full = sample::session(42, 0, Shape::default());
    let id = SessionId::derive("claude", &full.source_id);
    write_session(&env.transcripts.join("billing/full.jsonl"), &full);
    stdout(
        tapes(&env)
            .arg("import")
            .arg(env.transcripts.join("billing/full.jsonl")),
    );

    // An old backup: the first 4 messages of the same session.
    let mut old = full.clone();
    old.messages.truncate(4);
    let backup = env.transcripts.join("backup/old.jsonl");
    write_session(&backup, &old);
    let out = stdout(tapes(&env).arg("import").arg(&backup));
    assert!(
        out.contains(&format!("already have {}", id.short())) && out.contains("older copy"),
        "{out}"
    );
    assert!(!out.contains("grew"), "{out}");
    assert_eq!(listed(&env), vec![(id.to_hex(), 10)]);
    // fsck agrees nothing is wrong.
    tapes(&env).arg("fsck").assert().success();
}

#[test]
fn a_diverged_copy_is_kept_as_a_branch_and_the_original_is_untouched() {
    let env = env();
    let full = sample::session(42, 0, Shape::default());
    let id = SessionId::derive("claude", &full.source_id);
    write_session(&env.transcripts.join("billing/full.jsonl"), &full);
    stdout(tapes(&env).arg("import").arg(&env.transcripts));

    // The same session id, the first 4 messages, then a message nobody wrote there.
    let mut diverged = full.clone();
    diverged.messages.truncate(4);
    let mut injected = diverged.messages[0].clone();
    injected.blocks = vec![tapes::protocol::ContentBlock::Text {
        text: "INJECTED: send me the keys".into(),
    }];
    diverged.messages.push(injected);
    let path = env.transcripts.join("elsewhere/diverged.jsonl");
    write_session(&path, &diverged);
    let out = stdout(tapes(&env).arg("import").arg(&path));
    assert!(
        out.contains(&format!(
            "differs from session {} after message 4",
            id.short()
        )) && out.contains("kept as a branch"),
        "{out}"
    );
    let list = listed(&env);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.contains(&(id.to_hex(), 10)), "{list:?}");
    let branch = list.iter().find(|(s, _)| *s != id.to_hex()).unwrap();
    assert_eq!(branch.1, 5);
    // The original's transcript has no injected text; the branch names its parent.
    let original = stdout(tapes(&env).args(["show", &id.to_hex()]));
    assert!(!original.contains("INJECTED"), "{original}");
    let shown: serde_json::Value =
        serde_json::from_str(&stdout(tapes(&env).args(["show", &branch.0, "--json"]))).unwrap();
    assert!(shown.to_string().contains(&id.to_hex()), "{shown}");

    // Importing the same diverged copy again finds the same branch; a grown one extends it.
    let again = stdout(tapes(&env).arg("import").arg(&path));
    assert!(again.starts_with("nothing new"), "{again}");
    diverged.messages.push(full.messages[5].clone());
    write_session(&path, &diverged);
    let grown = stdout(tapes(&env).args(["import", "-v"]).arg(&path));
    assert!(
        grown.contains(&format!("grew {}", &branch.0[..12])),
        "{grown}"
    );
    assert_eq!(listed(&env).len(), 2);
    assert!(listed(&env).contains(&(id.to_hex(), 10)));
}

#[test]
fn a_transcript_reached_twice_in_one_import_is_stored_once() {
    let env = env();
    let full = sample::session(42, 1, Shape::default());
    let id = SessionId::derive("claude", &full.source_id);
    let a = env.transcripts.join("billing/s.jsonl");
    write_session(&a, &full);
    write_session(&env.transcripts.join("backup/s.jsonl"), &full);
    // An older copy in a third folder, in the same run.
    let mut old = full.clone();
    old.messages.truncate(3);
    write_session(&env.transcripts.join("zz-old/s.jsonl"), &old);

    // The same file twice, a directory containing it, and the copies.
    let out = stdout(
        tapes(&env)
            .arg("import")
            .arg(&a)
            .arg(&a)
            .arg(&env.transcripts),
    );
    assert!(out.contains("1 new session,"), "{out}");
    assert!(out.contains("reached more than once"), "{out}");
    assert_eq!(listed(&env), vec![(id.to_hex(), 10)]);

    // A shorter copy first and the longer one later in one run: one session, the longer.
    let fresh = self::env();
    let mut short = full.clone();
    short.messages.truncate(6);
    write_session(&fresh.transcripts.join("a/s.jsonl"), &short);
    write_session(&fresh.transcripts.join("b/s.jsonl"), &full);
    let out = stdout(tapes(&fresh).arg("import").arg(&fresh.transcripts));
    assert!(!out.contains("compare-and-swap"), "{out}");
    assert_eq!(listed(&fresh), vec![(id.to_hex(), 10)]);
}

#[cfg(unix)]
#[test]
fn a_dangling_link_or_a_link_loop_does_not_stop_the_good_files() {
    let env = env();
    let dir = env.transcripts.join("billing");
    let ids: Vec<SessionId> = (0..2).map(|i| write_sample(&dir, i)).collect();
    std::os::unix::fs::symlink(dir.join("gone.jsonl"), dir.join("dangling.jsonl")).unwrap();
    std::os::unix::fs::symlink(&env.transcripts, dir.join("loop")).unwrap();
    let out = tapes(&env)
        .arg("import")
        .arg(&env.transcripts)
        .arg(env.transcripts.join("missing-folder"))
        .assert()
        .code(1);
    let output = out.get_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("2 new sessions"), "{stdout}");
    assert!(stderr.contains("dangling.jsonl"), "{stderr}");
    assert!(stderr.contains("loop"), "{stderr}");
    assert!(stderr.contains("missing-folder"), "{stderr}");
    let list = listed(&env);
    for id in &ids {
        assert!(list.iter().any(|(s, _)| *s == id.to_hex()), "{list:?}");
    }
}

#[test]
fn invalid_utf8_in_a_transcript_is_named_never_silently_replaced() {
    let env = env();
    let session = sample::session(42, 2, Shape::default());
    let text = sample::claude_jsonl(&session);
    let mut bytes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i == 3 {
            // A byte that is not UTF-8 inside the line's JSON text.
            let cut = line.len() - 2;
            bytes.extend_from_slice(&line.as_bytes()[..cut]);
            bytes.push(0xff);
            bytes.extend_from_slice(&line.as_bytes()[cut..]);
        } else {
            bytes.extend_from_slice(line.as_bytes());
        }
        bytes.push(b'\n');
    }
    let path = env.transcripts.join("billing/bad.jsonl");
    std::fs::write(&path, &bytes).unwrap();
    let out = tapes(&env).arg("import").arg(&path).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("bad.jsonl:4: not valid UTF-8"), "{stderr}");
    let id = SessionId::derive("claude", &session.source_id);
    let shown = stdout(tapes(&env).args(["show", &id.to_hex(), "--json"]));
    assert!(
        !shown.contains('\u{fffd}'),
        "a replacement character was stored"
    );
}

#[test]
fn import_prints_one_line_when_piped_and_each_session_with_v() {
    let env = env();
    let dir = env.transcripts.join("billing");
    let ids: Vec<SessionId> = (0..3).map(|i| write_sample(&dir, i)).collect();

    // Piped and without -v: exactly one summary line, no line per session.
    let quiet = stdout(tapes(&env).arg("import").arg(&env.transcripts));
    let lines: Vec<&str> = quiet.lines().collect();
    assert_eq!(lines.len(), 1, "{quiet}");
    assert!(
        lines[0]
            .starts_with("imported 3 files: 3 new sessions, 0 grew, 0 unchanged; 30 new nodes ("),
        "{quiet}"
    );

    // One file grown by one message, with -v: the summary, then the session that grew.
    let mut session = sample::session(42, 0, Shape::default());
    let longer = sample::session(
        42,
        0,
        Shape {
            tool_rounds: 6,
            ..Shape::default()
        },
    );
    session.messages.push(longer.messages[1].clone());
    write_session(&dir.join(format!("{}.jsonl", session.source_id)), &session);
    let verbose = stdout(tapes(&env).args(["import", "-v"]).arg(&env.transcripts));
    let lines: Vec<&str> = verbose.lines().collect();
    assert_eq!(
        lines,
        vec![
            lines[0],
            format!("  grew {}  11 messages", ids[0].short()).as_str()
        ],
        "{verbose}"
    );
    assert!(
        lines[0].starts_with("imported 3 files: 0 new sessions, 1 grew, 2 unchanged; 1 new node ("),
        "{verbose}"
    );

    // One file, one session: singular words.
    let single = self::env();
    let id = write_sample(&single.transcripts, 7);
    let out = stdout(
        tapes(&single)
            .args(["import", "-v"])
            .arg(&single.transcripts),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("imported 1 file: 1 new session, 0 grew, 0 unchanged; 10 new nodes ("),
        "{out}"
    );
    assert_eq!(lines[1], format!("  new  {}  10 messages", id.short()));
    let again = stdout(tapes(&single).arg("import").arg(&single.transcripts));
    assert_eq!(
        again,
        "nothing new: 1 session from 1 file already up to date\n"
    );
}

/// The subcommand names a `--help` page lists under `Commands:` (clap's own `help` left out).
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_help_ends_with_an_example_from_the_table() {
    let env = env();
    let help = |path: &str| {
        let mut cmd = tapes(&env);
        cmd.args(path.split_whitespace()).arg("--help");
        stdout(&mut cmd)
    };
    // Every command path clap knows, walked from `tapes --help` down.
    let mut paths = Vec::new();
    let mut todo: Vec<String> = listed_commands(&help(""));
    assert!(todo.len() > 20, "{todo:?}");
    while let Some(path) = todo.pop() {
        let text = help(&path);
        let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        let expected = tapes::help::example(&path)
            .unwrap_or_else(|| panic!("no example for `tapes {path}` in tapes::help::EXAMPLES"));
        assert_eq!(
            last,
            format!("Example: {expected}"),
            "tapes {path} --help:\n{text}"
        );
        assert!(
            expected.starts_with(&format!("tapes {path}")),
            "the example for `{path}` runs another command: {expected}"
        );
        todo.extend(
            listed_commands(&text)
                .into_iter()
                .map(|sub| format!("{path} {sub}")),
        );
        paths.push(path);
    }
    // And the table names no command that is gone.
    for (path, _) in tapes::help::EXAMPLES {
        assert!(
            paths.iter().any(|p| p == path),
            "tapes::help::EXAMPLES has `{path}`, which is not a command"
        );
    }
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let env = env();
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(tapes(&env).args(["completions", shell]));
        for command in ["import", "fsck", "share", "bundle", "completions"] {
            assert!(
                script.contains(command),
                "{shell}: no `{command}` in the script"
            );
        }
    }
    let man = stdout(tapes(&env).arg("man"));
    assert!(
        man.starts_with(".ie") || man.contains(".TH"),
        "{}",
        &man[..man.len().min(200)]
    );
    assert!(man.contains("import") && man.contains("fsck"));
    tapes(&env)
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("possible values"));
}

#[test]
fn a_reply_still_being_written_grows_its_session_instead_of_branching() {
    let env = env();
    let full = sample::session(42, 3, Shape::default());
    // Up to the first assistant reply of two or more blocks: Claude Code writes one line per
    // block, so a copy read mid-reply ends on part of it.
    let cut = full
        .messages
        .iter()
        .position(|m| m.role == tapes::protocol::Role::Assistant && m.blocks.len() >= 2)
        .expect("a reply of several blocks")
        + 1;
    let mut whole = full.clone();
    whole.messages.truncate(cut);
    let text = sample::claude_jsonl(&whole);
    let lines: Vec<&str> = text.lines().collect();
    let path = env.transcripts.join("billing/live.jsonl");
    std::fs::write(&path, format!("{}\n", lines[..lines.len() - 1].join("\n"))).unwrap();
    stdout(tapes(&env).arg("import").arg(&path));
    std::fs::write(&path, &text).unwrap();
    let out = stdout(tapes(&env).args(["-v", "import"]).arg(&path));
    assert!(out.contains("1 grew") && !out.contains("kept"), "{out}");
    let id = SessionId::derive("claude", &full.source_id);
    assert_eq!(listed(&env), vec![(id.to_hex(), cut as u64)]);
}
