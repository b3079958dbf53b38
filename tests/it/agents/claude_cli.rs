//! Claude Code (the pinned CLI) continues a forked session: alice shares a session with her
//! team, bob forks it with `--platform claude`, runs `claude -p --resume <uuid>` against the
//! stand-in API, `tapes push`es, and alice has the fork with the stand-in's reply last.

use std::path::Path;

use super::people::{alice_shares_with_bob, Person};
use super::{agent_bin, StandIn};

const MARKER: &str = "MARKER-ORIGINAL-7c1e";
const REPLY: &str = "Stand-in reply: the fork goes on.";

/// The environment that keeps Claude Code on 127.0.0.1: the stand-in API, no telemetry, no
/// update checks, no nonessential traffic.
pub fn claude(person: &Person, bin: &Path, api: &StandIn) -> std::process::Command {
    let mut cmd = person.command(bin);
    cmd.env("ANTHROPIC_BASE_URL", &api.url)
        .env("ANTHROPIC_API_KEY", "sk-ant-standin")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env_remove("ANTHROPIC_AUTH_TOKEN");
    cmd
}

pub fn transcript(dir: &Path) -> std::path::PathBuf {
    let session = "0f3c2a5e-1111-4aaa-8bbb-000000000001";
    let line = |uuid: &str, parent: Option<&str>, kind: &str, message: serde_json::Value| {
        serde_json::json!({
            "parentUuid": parent, "isSidechain": false, "userType": "external",
            "cwd": "/home/alice/app", "sessionId": session, "version": "2.1.332",
            "gitBranch": "main", "type": kind, "message": message, "uuid": uuid,
            "timestamp": "2026-12-01T10:00:00.000Z",
        })
        .to_string()
    };
    let text = [
        line("a0000000-0000-4000-8000-000000000001", None, "user",
            serde_json::json!({"role": "user", "content": format!("Plan the cache layer. {MARKER}")})),
        line("a0000000-0000-4000-8000-000000000002", Some("a0000000-0000-4000-8000-000000000001"), "assistant",
            serde_json::json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": "Reading the code first."},
                            {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}})),
        line("a0000000-0000-4000-8000-000000000003", Some("a0000000-0000-4000-8000-000000000002"), "user",
            serde_json::json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "src\nCargo.toml"}]})),
        line("a0000000-0000-4000-8000-000000000004", Some("a0000000-0000-4000-8000-000000000003"), "assistant",
            serde_json::json!({"id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": "A read-through cache in src/cache.rs."}],
                "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": 9}})),
    ]
    .join("\n");
    let path = dir.join("original.jsonl");
    std::fs::write(&path, text + "\n").expect("write transcript");
    path
}

#[test]
fn bob_forks_alices_session_continues_it_in_claude_code_and_pushes_it_back() {
    let Some(bin) = agent_bin("claude") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, bob, _server, original) =
        alice_shares_with_bob(dir.path(), &transcript(dir.path()));

    let forked = bob.ok(&[
        "fork",
        &original,
        "--alias",
        "trial",
        "--platform",
        "claude",
    ]);
    assert!(
        forked.contains("created"),
        "the fork is created on alice: {forked}"
    );
    let tracking: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bob.project.join(".tapes/tracking.json")).expect("tracking"),
    )
    .expect("tracking json");
    let alias = &tracking["aliases"]["trial"];
    assert_eq!(alias["platform"], "claude");
    let file = alias["files"][0]
        .as_str()
        .expect("the agent file")
        .to_string();
    let fork = alias["sessionId"].as_str().expect("fork id").to_string();
    // Claude Code's own place: ~/.claude/projects/<cwd with non-alphanumerics as '-'>/<uuid>.jsonl
    let folder: String = std::fs::canonicalize(&bob.project)
        .unwrap_or(bob.project.clone())
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let expected_dir = bob.home.join(".claude/projects").join(&folder);
    assert_eq!(
        Path::new(&file).parent(),
        Some(expected_dir.as_path()),
        "{file}"
    );
    let uuid = Path::new(&file)
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("uuid")
        .to_string();
    assert!(
        forked.contains(&format!("claude --resume {uuid}")),
        "{forked}"
    );

    let api = StandIn::start(REPLY);
    let out = claude(&bob, &bin, &api)
        .args(["-p", "--resume", &uuid, "Now add eviction."])
        .output()
        .expect("run claude");
    assert!(
        out.status.success(),
        "claude: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(REPLY));
    let calls = api.model_calls();
    let last = calls.last().expect("claude called the stand-in API");
    assert!(last.body.contains(MARKER), "the forked history was sent");
    assert!(
        last.body.contains("toolu_01"),
        "tool_use/tool_result pairs went too"
    );
    assert!(last.body.contains("Now add eviction."));

    let status = bob.ok(&["status"]);
    assert!(
        status.contains("2 new messages not imported yet"),
        "{status}"
    );
    let pushed = bob.ok(&["push"]);
    assert!(pushed.contains("imported the new turns"), "{pushed}");
    assert!(pushed.contains("pushed"), "{pushed}");
    let status = bob.ok(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    assert_eq!(status[0]["not_pushed"], 0, "{status}");
    let fetched = bob.ok(&["status", "--fetch", "--json"]);
    let fetched: serde_json::Value = serde_json::from_str(&fetched).expect("status json");
    assert_eq!(
        fetched[0]["behind"], false,
        "alice holds what bob pushed: {fetched}"
    );
    assert_eq!(fetched[0]["remote_count"], 6, "{fetched}");

    // Alice's store (served) holds the fork, her original untouched, the reply last.
    let texts = alice.texts(&fork);
    assert_eq!(texts.len(), 6, "4 forked + prompt + reply");
    assert!(texts[5].contains(REPLY), "{}", texts[5]);
    assert!(texts[4].contains("Now add eviction."));
    assert_eq!(alice.texts(&original).len(), 4);
}

#[test]
fn checkout_for_claude_round_trips_and_refuses_to_clobber_unstored_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Person::new(dir.path(), "me");
    me.ok(&["import", transcript(dir.path()).to_str().expect("path")]);
    let id = me.sessions()[0]["id"].as_str().expect("id").to_string();
    let out = me.ok(&["checkout", &id, "--platform", "claude"]);
    let file = out
        .lines()
        .find_map(|l| l.strip_prefix("wrote "))
        .expect("a file was written")
        .to_string();
    // Importing what was written adds nothing.
    let again = me.ok(&["import", &file]);
    assert!(again.contains("nothing new"), "{again}");
    assert_eq!(me.sessions().len(), 1);

    // The agent appends a turn; a second checkout must not overwrite it.
    let mut text = std::fs::read_to_string(&file).expect("file");
    let last_uuid = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["uuid"].as_str().map(str::to_owned))
        .expect("uuid");
    text.push_str(
        &serde_json::json!({"parentUuid": last_uuid, "isSidechain": false, "type": "user",
            "sessionId": "0f3c2a5e-1111-4aaa-8bbb-000000000001", "cwd": "/x",
            "uuid": "b0000000-0000-4000-8000-000000000009", "timestamp": "2026-12-02T10:00:00.000Z",
            "message": {"role": "user", "content": "one more thing"}})
        .to_string(),
    );
    text.push('\n');
    std::fs::write(&file, &text).expect("append");
    let refused = me.tapes(&["checkout", &id, "--platform", "claude"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("1 message(s) tapes has not stored"),
        "{stderr}"
    );
    assert!(stderr.contains(&file), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("file"),
        text,
        "untouched"
    );

    // Import takes the turn into the same session.
    me.ok(&["import", &file]);
    let sessions = me.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["messages"], 5);

    // Bad input: an unknown platform, a missing agent for --resume; nothing written.
    let bad = me.tapes(&["checkout", &id, "--platform", "vim"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("unknown platform `vim`"), "{stderr}");
    let missing = me
        .command(Path::new(env!("CARGO_BIN_EXE_tapes")))
        .env("PATH", "/nonexistent")
        .args(["checkout", &id, "--platform", "codex", "--resume"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("`codex` was not found on PATH"), "{stderr}");
    assert!(!me.home.join(".codex").exists(), "nothing written");

    // An agent directory that cannot be written (here: under a file): the error names it.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").expect("file");
    let unwritable = me
        .command(Path::new(env!("CARGO_BIN_EXE_tapes")))
        .env("CLAUDE_CONFIG_DIR", blocker.join(".claude"))
        .args(["checkout", &id, "--platform", "claude"])
        .output()
        .expect("run");
    assert!(!unwritable.status.success());
    let stderr = String::from_utf8_lossy(&unwritable.stderr);
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert!(stderr.contains("not-a-dir/.claude/projects"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&blocker).expect("file"), "x");
}

#[test]
fn an_agent_file_whose_history_was_edited_becomes_a_branch_not_an_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Person::new(dir.path(), "me");
    me.ok(&["import", transcript(dir.path()).to_str().expect("path")]);
    let id = me.sessions()[0]["id"].as_str().expect("id").to_string();
    let out = me.ok(&[
        "branch",
        &id,
        "--at",
        "4",
        "--alias",
        "exp",
        "--platform",
        "claude",
    ]);
    let file = out
        .lines()
        .find_map(|l| l.strip_prefix("wrote "))
        .expect("written")
        .to_string();
    let branch = me
        .sessions()
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .find(|s| *s != id)
        .expect("the branch");
    // Someone edits the third message (the tool result) in the agent's file.
    let text = std::fs::read_to_string(&file).expect("file");
    let edited = text.replacen("src\\nCargo.toml", "src\\nCargo.toml\\nSECRET.txt", 1);
    assert_ne!(edited, text);
    std::fs::write(&file, edited).expect("edit");
    let status = me.ok(&["status"]);
    assert!(status.contains("history changed at message 3"), "{status}");
    let imported = me.ok(&["import", "-v", &file]);
    assert!(imported.contains("kept as a branch"), "{imported}");
    // The tracked branch is as it was; the edit is a session of its own, branched at 2.
    let sessions = me.sessions();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let tracked = sessions
        .iter()
        .find(|s| s["id"] == branch.as_str())
        .expect("branch");
    assert_eq!(tracked["messages"], 4);
    assert_eq!(me.texts(&branch).len(), 4);
    assert!(!me.texts(&branch).iter().any(|t| t.contains("SECRET.txt")));
}

/// Every real Claude transcript: import → checkout --platform claude → import changes nothing.
#[test]
fn every_real_claude_transcript_checks_out_and_imports_as_nothing_new() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Person::new(dir.path(), "me");
    let real = tapes::real_fixtures::dir().join("claude");
    me.ok(&["import", real.to_str().expect("path")]);
    let before = me.sessions();
    let mut files = Vec::new();
    for session in before.iter().filter(|s| s["parent_session"].is_null()) {
        let id = session["id"].as_str().expect("id");
        let out = me.ok(&["checkout", id, "--platform", "claude"]);
        files.extend(
            out.lines()
                .filter_map(|l| l.strip_prefix("wrote "))
                .map(str::to_owned),
        );
    }
    assert!(
        files.iter().any(|f| f.contains("/subagents/agent-")),
        "subagent sessions go in Claude Code's subagent layout: {files:?}"
    );
    let mut args = vec!["import"];
    args.extend(files.iter().map(String::as_str));
    let again = me.ok(&args);
    assert!(again.contains("nothing new"), "{again}");
    let after = me.sessions();
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a["id"], b["id"]);
        assert_eq!(a["head"], b["head"], "{}", a["id"]);
        assert_eq!(a["messages"], b["messages"]);
    }
}

/// `--resume` starts the agent in the project directory on the session's id, with this
/// terminal; when it exits, the turns it appended are stored. The agent here is a stand-in
/// script named `claude` on PATH that appends a prompt and a reply the way Claude Code does.
#[test]
fn resume_starts_the_agent_in_the_project_and_stores_its_turns_when_it_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Person::new(dir.path(), "me");
    me.ok(&["import", transcript(dir.path()).to_str().expect("path")]);
    let id = me.sessions()[0]["id"].as_str().expect("id").to_string();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let script = bin.join("claude");
    std::fs::write(
        &script,
        r#"#!/usr/bin/env python3
import json, os, sys, glob
assert sys.argv[1] == "--resume", sys.argv
uuid = sys.argv[2]
[path] = glob.glob(os.path.join(os.environ["HOME"], ".claude/projects/*/%s.jsonl" % uuid))
folder = "".join(c if c.isascii() and c.isalnum() else "-" for c in os.getcwd())
assert os.path.basename(os.path.dirname(path)) == folder, (path, os.getcwd())
last = json.loads(open(path).read().splitlines()[-1])
def line(u, parent, kind, message):
    return json.dumps({"parentUuid": parent, "isSidechain": False, "type": kind, "sessionId": uuid,
                       "cwd": os.getcwd(), "uuid": u, "timestamp": "2026-12-06T12:00:00.000Z", "message": message})
with open(path, "a") as f:
    f.write(line("d0000000-0000-4000-8000-000000000001", last["uuid"], "user",
                 {"role": "user", "content": "resumed prompt"}) + "\n")
    f.write(line("d0000000-0000-4000-8000-000000000002", "d0000000-0000-4000-8000-000000000001", "assistant",
                 {"id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                  "content": [{"type": "text", "text": "resumed reply"}], "stop_reason": "end_turn"}) + "\n")
"#,
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = me
        .command(Path::new(env!("CARGO_BIN_EXE_tapes")))
        .env("PATH", path)
        .args(["checkout", &id, "--platform", "claude", "--resume"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 new messages recorded from claude"),
        "{stdout}"
    );
    let sessions = me.sessions();
    assert_eq!(sessions.len(), 1, "the same session grew");
    assert_eq!(sessions[0]["messages"], 6);
    assert!(me.texts(&id)[5].contains("resumed reply"));
}
