//! Gemini CLI (the pinned 0.61) opens a session file tapes wrote for it: the writer
//! (`tapes::resume::gemini`) materializes a stored session into a temporary `GEMINI_CLI_HOME`,
//! `gemini --resume <session id> -p "…"` continues it against the stand-in API on 127.0.0.1,
//! the request carries the materialized history, and the file the CLI appended to re-imports as
//! the original nodes plus the new turn.
//!
//! What keeps the CLI on 127.0.0.1: `GOOGLE_GEMINI_BASE_URL` (the stand-in), `GEMINI_API_KEY`,
//! `security.auth.selectedType = "gemini-api-key"`, `privacy.usageStatisticsEnabled = false`
//! (no Clearcut logging), `telemetry.enabled = false` (and `GEMINI_TELEMETRY_ENABLED=false`),
//! `general.enableAutoUpdate` / `enableAutoUpdateNotification = false` (no update check);
//! `GEMINI_CLI_TRUST_WORKSPACE=true` skips the folder-trust prompt and `GEMINI_CLI_NO_RELAUNCH`
//! the child-process relaunch. The environment is cleared first, so no real key leaks, and
//! every proxy variable names the stand-in, so a request to anywhere else would be recorded
//! there (a `CONNECT`) and fail the test. (Checked by hand too: under `strace -e connect` in an
//! empty network namespace, the CLI's only connections went to the stand-in.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tapes::import::ingest::build_nodes;
use tapes::import::{detect_format, parse_file, ParsedSession};
use tapes::resume::{AgentHomes, Render, Rendered};
use tapes::session::{Lineage, SessionRecord, SessionSource, SessionSummary, Visibility};
use tapes_protocol::{ContentBlock, Node, Role, SessionId};

use super::{agent_bin, StandIn};

const REPLY: &str = "Stand-in reply: resumed in Gemini.";
const PROMPT: &str = "Now the next step. MARKER-NEW-PROMPT-5d2";

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agents")
        .join(path)
}

/// The settings that keep Gemini CLI on the stand-in and quiet.
pub fn write_settings(home: &Path) {
    let dir = home.join(".gemini");
    std::fs::create_dir_all(&dir).expect("mkdir .gemini");
    let settings = serde_json::json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
        "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
    });
    std::fs::write(dir.join("settings.json"), settings.to_string()).expect("settings");
}

/// `gemini` with a cleared environment pointing at the stand-in, run in `project`.
pub fn gemini(bin: &Path, home: &Path, project: &Path, api: &StandIn) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GEMINI_CLI_HOME", home)
        .env("GEMINI_API_KEY", "test-key-standin")
        .env("GOOGLE_GEMINI_BASE_URL", &api.url)
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
        .env("GEMINI_TELEMETRY_ENABLED", "false")
        .env("GEMINI_CLI_NO_RELAUNCH", "true")
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .current_dir(project)
        .stdin(Stdio::null());
    // Anything that still tried to leave would reach the stand-in as a `CONNECT` (or an
    // absolute-form request), which [`assert_stayed_local`] fails on.
    for proxy in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(proxy, &api.url);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    cmd
}

/// Every request the stand-in received was addressed to it.
pub fn assert_stayed_local(api: &StandIn) {
    for request in api.requests() {
        assert!(
            request.method != "CONNECT" && request.path.starts_with('/'),
            "gemini tried to leave 127.0.0.1: {} {}",
            request.method,
            request.path
        );
    }
}

/// Runs `cmd`, killing it after three minutes.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gemini");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "gemini did not finish in 180 s:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn record(kind: &str, title: Option<&str>) -> SessionRecord {
    SessionRecord {
        head: tapes_protocol::NodeId([0; 32]),
        source: SessionSource {
            kind: kind.into(),
            id: "x".into(),
            path: String::new(),
        },
        title: title.map(str::to_owned),
        parent_session: None,
        summary: SessionSummary::default(),
        created_ms: 0,
        updated_ms: 0,
        owner: None,
        visibility: Visibility::Private,
        tags: Vec::new(),
        description: None,
        note: None,
        expires_ms: None,
        lineage: Lineage::original(SessionId([0; 16])),
    }
}

/// The one session of a transcript, read by tapes' importers.
fn import(path: &Path) -> ParsedSession {
    let format = detect_format(path).expect("a known format");
    let report = parse_file(path, format).expect("parses");
    report
        .sessions
        .into_iter()
        .max_by_key(|s| s.messages.len())
        .expect("a session")
}

/// Writes `session` for Gemini CLI into `home`, as if run in `project`.
fn materialize(
    session: &ParsedSession,
    home: &Path,
    project: &Path,
    id: &str,
    age_ms: i64,
) -> Rendered {
    let nodes = build_nodes(session);
    let record = record(session.source_kind, session.title.as_deref());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        - age_ms;
    let req = Render {
        nodes: &nodes,
        record: &record,
        session: SessionId([7; 16]),
        agent_session_id: id,
        parent_agent_session_id: None,
        cwd: project,
        now_ms,
    };
    let homes = AgentHomes::from_vars(|name| match name {
        "HOME" | "GEMINI_CLI_HOME" => Some(home.as_os_str().to_owned()),
        _ => None,
    })
    .expect("homes");
    let rendered = tapes::resume::render(tapes::resume::Platform::Gemini, &req, &homes)
        .expect("render for gemini");
    for (path, bytes) in std::iter::once((&rendered.path, &rendered.bytes))
        .chain(rendered.extra.iter().map(|(p, b)| (p, b)))
    {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
    rendered
}

fn ids(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.id().to_hex()).collect()
}

/// Materializes `session`, resumes it in the real CLI with [`PROMPT`], checks what the stand-in
/// received (`markers`), and returns (nodes the written file imported as, nodes after the CLI).
///
/// `age_ms` dates the written file back: the CLI, resuming in a later minute, then starts a
/// second (context-only) file beside it; in the same minute it appends all to the one file.
fn resume_in_gemini(
    session: &ParsedSession,
    markers: &[&str],
    age_ms: i64,
) -> Option<(Vec<Node>, Vec<Node>)> {
    let bin = agent_bin("gemini")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let project = dir.path().join("my project");
    std::fs::create_dir_all(&project).expect("mkdir project");
    write_settings(&home);
    let id = "3f0e5a1c-2b4d-4e6f-8a9b-0c1d2e3f4a5b";
    let rendered = materialize(session, &home, &project, id, age_ms);
    assert!(
        rendered
            .path
            .starts_with(home.join(".gemini/tmp/my-project/chats")),
        "{}",
        rendered.path.display()
    );
    let written = build_nodes(&import(&rendered.path));

    let api = StandIn::start(REPLY);
    let out = run({
        let mut cmd = gemini(&bin, &home, &project, &api);
        cmd.args(["--resume", id, "-p", PROMPT]);
        cmd
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gemini: {stdout}\n{stderr}");
    assert!(stdout.contains(REPLY), "{stdout}\n{stderr}");

    assert_stayed_local(&api);
    // Every request went to the stand-in; the turn itself carried the materialized history.
    // (`StandIn::model_calls` matches `generateContent`, not `streamGenerateContent`.)
    let turns: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(":streamGenerateContent"))
        .collect();
    let turn = turns.last().expect("gemini called streamGenerateContent");
    assert_eq!(turn.header("x-goog-api-key"), Some("test-key-standin"));
    for marker in markers.iter().chain([&PROMPT]) {
        assert!(turn.body.contains(marker), "`{marker}` was not sent");
    }

    // The file the CLI appended to re-imports as the written nodes plus the new turn; anything
    // else the CLI left in the chats folder (the file a resume starts beside) imports as nothing.
    let after = import(&rendered.path);
    assert_eq!(after.source_id, id);
    let chats = rendered.path.parent().expect("chats");
    let mut others = 0;
    for entry in std::fs::read_dir(chats).expect("chats").flatten() {
        let path = entry.path();
        if path != rendered.path && path.extension().is_some_and(|e| e == "jsonl") {
            let format = detect_format(&path).expect("format");
            let report = parse_file(&path, format).expect("parses");
            assert!(report.sessions.is_empty(), "{}", path.display());
            others += 1;
        }
    }
    if age_ms >= 120_000 {
        assert_eq!(
            others, 1,
            "the resume's own file for the session, beside it"
        );
    }
    Some((written, build_nodes(&after)))
}

fn text_of(node: &Node) -> String {
    node.body
        .blocks
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn check_new_turn(written: &[Node], after: &[Node]) {
    assert_eq!(
        ids(&after[..written.len()]),
        ids(written),
        "the written history comes back unchanged"
    );
    assert_eq!(after.len(), written.len() + 2, "the prompt and the reply");
    let (prompt, reply) = (&after[written.len()], &after[written.len() + 1]);
    assert_eq!(prompt.body.role, Role::User);
    assert_eq!(text_of(prompt), PROMPT);
    assert_eq!(prompt.body.parent, written.last().map(Node::id));
    assert_eq!(reply.body.role, Role::Assistant);
    assert_eq!(text_of(reply), REPLY);
}

#[test]
fn gemini_resumes_a_gemini_session_tapes_wrote() {
    // A session the real CLI wrote (a tool round, a reply, a resumed second turn).
    let session = import(&fixture("gemini/session-2026-12-06T18-53-24000f74.jsonl"));
    let original = build_nodes(&session);
    let Some((written, after)) = resume_in_gemini(
        &session,
        &[
            "MARKER-FIX-1",
            "MARKER-FIX-2",
            "list_directory",
            "Directory listing for /tmp/gx/p5",
        ],
        // Written two hours ago: the resume starts its second file beside this one.
        2 * 3600 * 1000,
    ) else {
        return;
    };
    assert_eq!(ids(&written), ids(&original), "lossless for Gemini's own");
    check_new_turn(&written, &after);
}

#[test]
fn gemini_resumes_a_claude_session_tapes_wrote() {
    let session = import(&fixture("claude/claude_2.1.332_resumed.jsonl"));
    let original = build_nodes(&session);
    let first_text = original
        .iter()
        .find(|n| n.body.role == Role::User && !text_of(n).is_empty())
        .map(text_of)
        .expect("a user text");
    let marker: String = first_text.chars().take(24).collect();
    let call = original
        .iter()
        .flat_map(|n| n.body.blocks.iter())
        .find_map(|b| match b {
            ContentBlock::ToolUse { id, .. } => Some(id.clone()),
            _ => None,
        });
    let mut markers = vec![marker.as_str()];
    if let Some(call) = &call {
        markers.push(call);
    }
    // Written now: the resume appends its header and rewrite to this very file.
    let Some((written, after)) = resume_in_gemini(&session, &markers, 0) else {
        return;
    };
    check_new_turn(&written, &after);
}

/// The loop with Gemini CLI: alice shares a Gemini session, bob forks it with
/// `--platform gemini`, continues it with `gemini --resume <id> -p …`, pushes, and alice has
/// the fork with the stand-in's reply last.
#[test]
fn bob_forks_alices_session_continues_it_in_gemini_and_pushes_it_back() {
    use super::people::alice_shares_with_bob;
    let Some(bin) = agent_bin("gemini") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let transcript = dir.path().join("original.jsonl");
    std::fs::copy(
        fixture("gemini/session-2026-12-06T18-53-24000f74.jsonl"),
        &transcript,
    )
    .expect("copy the fixture");
    let (alice, bob, _server, original) = alice_shares_with_bob(dir.path(), &transcript);
    let forked = bob.ok(&[
        "fork",
        &original,
        "--alias",
        "trial",
        "--platform",
        "gemini",
    ]);
    let tracking: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bob.project.join(".tapes/tracking.json")).expect("tracking"),
    )
    .expect("tracking json");
    let alias = &tracking["aliases"]["trial"];
    assert_eq!(alias["platform"], "gemini");
    let file = PathBuf::from(alias["files"][0].as_str().expect("the agent file"));
    let fork = alias["sessionId"].as_str().expect("fork id").to_string();
    // Gemini CLI's own place: ~/.gemini/tmp/<project name>/chats/session-<time>-<id8>.jsonl,
    // the project named in ~/.gemini/projects.json.
    let registry: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bob.home.join(".gemini/projects.json")).expect("projects.json"),
    )
    .expect("projects json");
    let root = std::fs::canonicalize(&bob.project).expect("project");
    assert_eq!(
        registry["projects"][root.to_string_lossy().as_ref()],
        "project"
    );
    assert!(
        file.starts_with(bob.home.join(".gemini/tmp/project/chats")),
        "{}",
        file.display()
    );
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&file)
            .expect("file")
            .lines()
            .next()
            .expect("header"),
    )
    .expect("header json");
    let id = header["sessionId"].as_str().expect("sessionId").to_string();
    assert!(
        forked.contains(&format!("gemini --resume {id}")),
        "{forked}"
    );

    write_settings(&bob.home);
    let api = StandIn::start(REPLY);
    let out = run({
        let mut cmd = gemini(&bin, &bob.home, &bob.project, &api);
        cmd.args(["--resume", &id, "-p", PROMPT]);
        cmd
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(REPLY),
        "gemini: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_stayed_local(&api);
    let turn = api
        .requests()
        .into_iter()
        .rfind(|r| r.path.contains(":streamGenerateContent"))
        .expect("a turn");
    assert!(
        turn.body.contains("MARKER-FIX-1"),
        "the forked history was sent"
    );
    assert!(turn.body.contains(PROMPT));

    let pushed = bob.ok(&["push"]);
    assert!(pushed.contains("pushed"), "{pushed}");
    let texts = alice.texts(&fork);
    assert_eq!(texts.len(), 6 + 2, "6 forked + prompt + reply");
    assert!(texts[7].contains(REPLY), "{}", texts[7]);
    assert!(texts[6].contains("MARKER-NEW-PROMPT"));
    assert_eq!(alice.texts(&original).len(), 6);
}
