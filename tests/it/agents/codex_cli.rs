//! The real Codex 0.171 CLI resumes a rollout that tapes wrote (SPEC.md §17): the writer
//! (`tapes::resume::codex`) puts a session in a temporary `CODEX_HOME`, `codex exec resume
//! <uuid> <prompt>` sends its history to the stand-in, appends the new turn to the same file,
//! and importing the file gives the original nodes followed by the new ones.
//!
//! Nothing leaves 127.0.0.1: `config.toml` points a `model_providers.standin` entry at the
//! stand-in and turns off analytics, feedback, OpenTelemetry, the update check and the plugin,
//! app and marketplace features (which otherwise reach github.com, api.github.com and
//! chatgpt.com); every proxy variable names the stand-in too, so anything that still tried to
//! leave would be recorded there as a `CONNECT`, and the test fails on one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapes::import::ingest::build_nodes;
use tapes::import::{ParsedMessage, ParsedSession};
use tapes::resume::{self, AgentHomes, Render};
use tapes::session::{Lineage, SessionRecord, SessionSource, SessionSummary, Visibility};
use tapes_protocol::{ContentBlock, Node, NodeMeta, Role, SessionId, ToolResultPart};

use super::{agent_bin, Recorded, StandIn};

const REPLY: &str = "Stand-in reply: CODEX-RESUMED-OK";
/// A Codex session the real CLI wrote (tests/fixtures/agents/codex/README.md).
const FIXTURE: &str =
    "tests/fixtures/agents/codex/rollout-2026-12-06T18-53-45-01a24cb4-7a6d-7a52-8f86-baf1fc318cc1.jsonl";

/// `$CODEX_HOME/config.toml` pointing Codex at the stand-in, with everything that phones
/// home turned off.
pub fn write_config(home: &Path, standin: &StandIn) {
    let config = format!(
        r#"model = "gpt-5.1-codex"
model_provider = "standin"
check_for_update_on_startup = false

[model_providers.standin]
name = "Stand-in"
base_url = "{url}/v1"
wire_api = "responses"
env_key = "STANDIN_API_KEY"

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[features]
plugins = false
remote_plugin = false
apps = false
plugin_sharing = false
in_app_updates = false
tool_suggest = false
skill_mcp_dependency_install = false
daemon_auto_start = false
"#,
        url = standin.url
    );
    std::fs::create_dir_all(home).expect("codex home");
    std::fs::write(home.join("config.toml"), config).expect("config.toml");
}

fn record(kind: &str) -> SessionRecord {
    SessionRecord {
        head: tapes_protocol::NodeId([0; 32]),
        source: SessionSource {
            kind: kind.into(),
            id: "x".into(),
            path: String::new(),
        },
        title: None,
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

/// Writes `nodes` for Codex under `home` with a fresh agent session id; (id, file).
fn materialize(nodes: &[Node], kind: &str, home: &Path, work: &Path) -> (String, PathBuf) {
    let id = resume::new_agent_session_id();
    let record = record(kind);
    let homes = AgentHomes {
        claude: home.join("unused-claude"),
        codex: home.to_path_buf(),
        gemini: home.join("unused-gemini"),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let req = Render {
        nodes,
        record: &record,
        session: SessionId([7; 16]),
        agent_session_id: &id,
        parent_agent_session_id: None,
        cwd: work,
        now_ms,
    };
    let rendered = resume::render(resume::Platform::Codex, &req, &homes).expect("render");
    assert!(rendered.extra.is_empty());
    let dir = rendered.path.parent().expect("session folder");
    std::fs::create_dir_all(dir).expect("session folder");
    std::fs::write(&rendered.path, &rendered.bytes).expect("write rollout");
    (id, rendered.path)
}

/// `codex exec resume <id> <prompt>` in `work`, with a two-minute limit.
pub fn codex_resume(
    bin: &Path,
    home: &Path,
    work: &Path,
    standin: &StandIn,
    id: &str,
    prompt: &str,
) -> Output {
    let mut command = Command::new(bin);
    command
        .args(["exec", "--skip-git-repo-check", "resume", id, prompt])
        .current_dir(work)
        .env("CODEX_HOME", home)
        .env("HOME", home.join("user-home"))
        .env("STANDIN_API_KEY", "stand-in-key")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("CODEX_API_KEY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for proxy in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env(proxy, &standin.url);
    }
    command
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    let child = command.spawn().expect("start codex");
    let pid = child.id();
    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    loop {
        if let Ok(output) = done_rx.recv_timeout(Duration::from_millis(200)) {
            return output.expect("codex output");
        }
        if started.elapsed() > Duration::from_secs(120) {
            // Our own child, by its id.
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("codex exec resume did not finish in 120 s");
        }
    }
}

/// The `input` items of the last model call, and that nothing tried to leave the machine.
fn last_input(standin: &StandIn) -> Vec<Value> {
    let requests = standin.requests();
    let escaped: Vec<&Recorded> = requests.iter().filter(|r| r.method == "CONNECT").collect();
    assert!(
        escaped.is_empty(),
        "codex tried to reach the network: {escaped:?}"
    );
    let calls = standin.model_calls();
    let last = calls.last().expect("codex called the stand-in");
    assert_eq!(
        last.header("content-encoding"),
        None,
        "request body is plain JSON"
    );
    let body: Value = serde_json::from_str(&last.body).expect("request body is JSON");
    body["input"].as_array().cloned().unwrap_or_default()
}

fn import(path: &Path) -> ParsedSession {
    let text = std::fs::read_to_string(path).expect("rollout after resume");
    let report = tapes::import::codex::parse(path, &text).expect("rollout parses");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.sessions.len(), 1);
    report.sessions[0].clone()
}

fn ids(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.id().to_hex()).collect()
}

/// After the resume the file imports as the original nodes, then the prompt and the reply.
fn assert_grown(path: &Path, nodes: &[Node], prompt: &str) {
    let after = build_nodes(&import(path));
    assert!(
        after.len() > nodes.len(),
        "no new turn in {}",
        path.display()
    );
    assert_eq!(
        ids(&after[..nodes.len()]),
        ids(nodes),
        "the history changed"
    );
    let new = &after[nodes.len()..];
    let said = |role: Role, text: &str| {
        new.iter().any(|n| {
            n.body.role == role
                && n.body
                    .blocks
                    .iter()
                    .any(|b| matches!(b, ContentBlock::Text { text: t } if t == text))
        })
    };
    assert!(
        said(Role::User, prompt),
        "the prompt is not in the new turn"
    );
    assert!(
        said(Role::Assistant, REPLY),
        "the reply is not in the new turn"
    );
}

#[test]
fn codex_resumes_its_own_session_written_by_tapes() {
    let Some(bin) = agent_bin("codex") else {
        return;
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let input = resume_native(&bin, &fixture);
    // The history went to the model: the code word from the fixture and its earlier reply.
    let text = serde_json::to_string(&input).expect("json");
    assert!(
        text.contains("PELICAN-7"),
        "history marker not sent: {text}"
    );
    assert!(text.contains("Stand-in reply: noted."));
}

/// The real Codex transcripts too (what users will pull), each in its own `CODEX_HOME`.
#[test]
fn codex_resumes_the_real_transcripts_written_by_tapes() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let Some(bin) = agent_bin("codex") else {
        return;
    };
    let dir = tapes::real_fixtures::dir().join("codex");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("real Codex transcripts")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let nodes = build_nodes(&import(&file));
        let input = resume_native(&bin, &file);
        // Every user text of the history was sent, word for word.
        let sent: Vec<String> = input
            .iter()
            .filter(|item| item["type"] == "message")
            .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
            .filter_map(|part| part["text"].as_str().map(str::to_owned))
            .collect();
        for node in nodes.iter().filter(|n| n.body.role == Role::User) {
            for block in &node.body.blocks {
                if let ContentBlock::Text { text } = block {
                    assert!(
                        sent.contains(text),
                        "{}: a user text was not sent",
                        file.display()
                    );
                }
            }
        }
    }
}

/// Imports a Codex rollout, writes it with a fresh id in a temporary `CODEX_HOME`, resumes it
/// with the real CLI and checks the file grew by the new turn; returns the model call's input.
fn resume_native(bin: &Path, file: &Path) -> Vec<Value> {
    let nodes = build_nodes(&import(file));
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, work) = (tmp.path().join("codex-home"), tmp.path().join("project"));
    std::fs::create_dir_all(&work).expect("work dir");
    let standin = StandIn::start(REPLY);
    write_config(&home, &standin);
    let (id, path) = materialize(&nodes, "codex", &home, &work);
    assert_eq!(ids(&build_nodes(&import(&path))), ids(&nodes), "lossless");

    let prompt = "Continue from tapes: NEW-PROMPT-MARKER";
    let output = codex_resume(bin, &home, &work, &standin, &id, prompt);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}: codex failed: {stderr}",
        file.display()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(REPLY));
    let input = last_input(&standin);
    assert!(serde_json::to_string(&input)
        .expect("json")
        .contains("NEW-PROMPT-MARKER"));
    assert_grown(&path, &nodes, prompt);
    input
}

fn message(role: Role, model: &str, blocks: Vec<ContentBlock>) -> ParsedMessage {
    ParsedMessage {
        role,
        model: model.into(),
        blocks,
        meta: NodeMeta::default(),
    }
}

#[test]
fn codex_resumes_a_claude_session_written_by_tapes() {
    let Some(bin) = agent_bin("codex") else {
        return;
    };
    let result = |id: &str, text: &str| ContentBlock::ToolResult {
        tool_use_id: id.into(),
        is_error: false,
        content: vec![ToolResultPart::Text { text: text.into() }],
    };
    let session = ParsedSession {
        source_kind: "claude",
        source_id: "claude-session".into(),
        parent_source_id: None,
        title: None,
        messages: vec![
            message(
                Role::User,
                "",
                vec![ContentBlock::text("Find the file with CLAUDE-MARKER-31")],
            ),
            message(
                Role::Assistant,
                "claude-opus-4-5",
                vec![
                    ContentBlock::Thinking {
                        text: "list first".into(),
                        signature: Some("c2lnbmF0dXJl".into()),
                    },
                    ContentBlock::text("Listing."),
                    ContentBlock::ToolUse {
                        id: "toolu_01".into(),
                        name: "Bash".into(),
                        input: r#"{"command":"ls"}"#.into(),
                    },
                    ContentBlock::ToolUse {
                        id: "toolu_02".into(),
                        name: "Read".into(),
                        input: r#"{"file_path":"notes.txt"}"#.into(),
                    },
                ],
            ),
            message(
                Role::User,
                "",
                vec![
                    result("toolu_01", "notes.txt"),
                    result("toolu_02", "TOOL-OUTPUT-MARKER"),
                ],
            ),
            message(
                Role::Assistant,
                "claude-opus-4-5",
                vec![ContentBlock::text("It is notes.txt.")],
            ),
        ],
    };
    let nodes = build_nodes(&session);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, work) = (tmp.path().join("codex-home"), tmp.path().join("project"));
    std::fs::create_dir_all(&work).expect("work dir");
    let standin = StandIn::start(REPLY);
    write_config(&home, &standin);
    let (id, path) = materialize(&nodes, "claude", &home, &work);
    let before = build_nodes(&import(&path));
    assert_eq!(
        before.len(),
        7,
        "user, message + 2 calls, 2 outputs, message"
    );

    let prompt = "And now? CROSS-PROMPT";
    let output = codex_resume(&bin, &home, &work, &standin, &id, prompt);
    assert!(
        output.status.success(),
        "codex failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Codex sent every call and its real output, in order (an output it could not read would
    // have become "aborted").
    let input = last_input(&standin);
    let calls: Vec<String> = input
        .iter()
        .filter_map(|item| match item["type"].as_str()? {
            "function_call" => Some(format!(
                "call {} {}",
                item["call_id"].as_str()?,
                item["name"].as_str()?
            )),
            "function_call_output" => Some(format!(
                "output {} {}",
                item["call_id"].as_str()?,
                item["output"].as_str()?
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        [
            "call toolu_01 Bash",
            "call toolu_02 Read",
            "output toolu_01 notes.txt",
            "output toolu_02 TOOL-OUTPUT-MARKER",
        ]
    );
    let text = serde_json::to_string(&input).expect("json");
    for needle in [
        "CLAUDE-MARKER-31",
        "[thinking]\\nlist first",
        "It is notes.txt.",
        "CROSS-PROMPT",
    ] {
        assert!(text.contains(needle), "{needle} not sent: {text}");
    }
    // The file is the rendered history (as the importer reads it) plus the new turn.
    assert_grown(&path, &before, prompt);
}

/// The issue's loop across agents: alice shares a Claude Code session, bob forks it with
/// `--platform codex`, continues it with the real Codex against the stand-in, `tapes push`es,
/// and alice has the fork: the Claude nodes, then Codex's turn with the stand-in's reply.
#[test]
fn bob_forks_alices_claude_session_into_codex_and_pushes_the_new_turns() {
    let Some(bin) = agent_bin("codex") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let transcript = super::claude_cli::transcript(dir.path());
    let (alice, bob, _server, original) =
        super::people::alice_shares_with_bob(dir.path(), &transcript);
    let standin = StandIn::start(REPLY);
    let codex_home = bob.home.join(".codex");
    write_config(&codex_home, &standin);
    let forked = bob.ok(&["fork", &original, "--alias", "trial", "--platform", "codex"]);
    let file = forked
        .lines()
        .find_map(|l| l.strip_prefix("wrote "))
        .expect("the rollout was written")
        .to_string();
    assert!(
        file.starts_with(codex_home.join("sessions").to_str().expect("utf-8")),
        "{file}"
    );
    let uuid = forked
        .lines()
        .find_map(|l| l.split("codex resume ").nth(1))
        .expect("the resume command")
        .trim()
        .to_string();
    let out = codex_resume(
        &bin,
        &codex_home,
        &bob.project,
        &standin,
        &uuid,
        "Port it to Codex.",
    );
    assert!(
        out.status.success(),
        "codex: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = standin.model_calls();
    let last = calls.last().expect("codex called the stand-in");
    assert!(
        last.body.contains("MARKER-ORIGINAL-7c1e"),
        "the forked history was sent"
    );
    assert!(
        last.body.contains("toolu_01"),
        "the Claude tool call went as a function call"
    );

    let pushed = bob.ok(&["push"]);
    assert!(pushed.contains("imported the new turns"), "{pushed}");
    let tracking: Value = serde_json::from_str(
        &std::fs::read_to_string(bob.project.join(".tapes/tracking.json")).expect("tracking"),
    )
    .expect("json");
    let fork = tracking["aliases"]["trial"]["sessionId"]
        .as_str()
        .expect("fork id")
        .to_string();
    let texts = alice.texts(&fork);
    assert!(texts.len() > 4, "{texts:?}");
    assert!(
        texts[0].contains("MARKER-ORIGINAL-7c1e"),
        "the Claude nodes stay first"
    );
    assert!(texts.iter().any(|t| t.contains("Port it to Codex.")));
    assert!(
        texts.last().expect("last").contains(REPLY),
        "{:?}",
        texts.last()
    );
    assert_eq!(alice.texts(&original).len(), 4, "the original is untouched");
}
