//! Writes a session as a Claude Code transcript (SPEC.md §17.2), where `claude --resume <uuid>`
//! finds it: `<CLAUDE_CONFIG_DIR or ~/.claude>/projects/<cwd, every non-alphanumeric character
//! replaced by '-'>/<uuid>.jsonl`; a subagent session goes beside it, in Claude Code's v2.1
//! subagent layout `<uuid>/subagents/agent-<agentId>.jsonl`.
//!
//! Each line is what Claude Code itself writes: `parentUuid` (the previous line's `uuid`; null
//! on the first), `isSidechain`, `userType`, `cwd` (the directory the agent will run in, so the
//! project folder and the lines agree), `sessionId`, `version`, `gitBranch`, `type`, `message`,
//! `uuid`, `timestamp`. Decisions:
//!
//! - **Lossless for Claude's own sessions.** Blocks are written back as the importer
//!   (`crate::import::claude`) reads them: thinking with its signature, tool_use with its input
//!   object, tool_result with its parts and `is_error`, images as base64 or url sources, and
//!   unmodeled blocks (`Other`) as the JSON they were. One node is one line with a message id of
//!   its own, so importing the file gives back the same node ids (a test checks every fixture).
//!   The original line uuids are reused when they are unique, so a pulled session's file is the
//!   one Claude Code knew.
//! - **Other agents' sessions.** A run of consecutive assistant nodes (Codex writes one node per
//!   response item, Gemini one per model round) becomes one API message: its lines share one
//!   message id, which is how Claude Code itself splits one response over several lines. A
//!   `Tool` node is a user line of tool_result blocks, as the Messages API has it. What Claude
//!   cannot take is rendered as text, never dropped: system and developer messages (a user line
//!   headed `[system]` / `[developer]`), thinking without an Anthropic signature (the API
//!   rejects a thinking block it did not sign), unmodeled blocks (their JSON), a tool input
//!   that is not a JSON object (wrapped as `{"input": …}`).
//! - **Title.** A session with a title gets a `summary` line naming the last line as its leaf,
//!   which is where Claude Code and the importer read it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Map, Value};
use tapes_protocol::{ContentBlock, ImageSource, Node, Role, ToolResultPart};

use super::{derived_uuid, timestamp, AgentHomes, Platform, Render, Rendered, ResumeError};

/// The Claude Code version the lines claim (the one the end-to-end test pins).
const VERSION: &str = "2.1.332";

/// `<claude home>/projects/<cwd with every non-alphanumeric character replaced by '-'>`.
pub fn project_dir(homes: &AgentHomes, cwd: &Path) -> PathBuf {
    let name: String = cwd
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    homes.claude.join("projects").join(name)
}

pub fn render(req: &Render, homes: &AgentHomes) -> Result<Rendered, ResumeError> {
    let native = req.native(Platform::Claude);
    let dir = project_dir(homes, req.cwd);
    let (path, session_id, agent_id) = match req.parent_agent_session_id {
        Some(parent) => (
            dir.join(parent)
                .join("subagents")
                .join(format!("agent-{}.jsonl", req.agent_session_id)),
            parent,
            Some(req.agent_session_id),
        ),
        None => (
            dir.join(format!("{}.jsonl", req.agent_session_id)),
            req.agent_session_id,
            None,
        ),
    };
    let cwd = req.cwd.to_string_lossy();
    let mut lines: Vec<Value> = Vec::with_capacity(req.nodes.len() + 1);
    let mut ends = Vec::with_capacity(req.nodes.len());
    let mut used: HashSet<String> = HashSet::new();
    let mut parent_uuid: Option<String> = None;
    let mut messages = 0u32;
    let mut run_id: Option<String> = None;
    for (index, node) in req.nodes.iter().enumerate() {
        let uuid = line_uuid(req, node, index, native, &mut used);
        let stamp = timestamp(node.meta.timestamp_ms.unwrap_or(req.now_ms));
        let mut line = Map::new();
        line.insert("parentUuid".into(), json!(parent_uuid));
        line.insert("isSidechain".into(), json!(agent_id.is_some()));
        line.insert("userType".into(), json!("external"));
        line.insert("cwd".into(), json!(cwd));
        line.insert("sessionId".into(), json!(session_id));
        line.insert("version".into(), json!(VERSION));
        line.insert(
            "gitBranch".into(),
            json!(node.meta.git_branch.clone().unwrap_or_default()),
        );
        if let Some(agent) = agent_id {
            line.insert("agentId".into(), json!(agent));
        }
        match node.body.role {
            Role::Assistant => {
                // Native: one message id per node (one node per API message). Otherwise a
                // run of assistant nodes is one API message, as Claude Code splits them.
                let id = match (&run_id, native) {
                    (Some(id), false) => id.clone(),
                    _ => {
                        messages += 1;
                        message_id(req, node, index)
                    }
                };
                run_id = Some(id.clone());
                line.insert("type".into(), json!("assistant"));
                line.insert("message".into(), assistant_message(node, &id, native));
            }
            role => {
                run_id = None;
                messages += 1;
                line.insert("type".into(), json!("user"));
                line.insert(
                    "message".into(),
                    json!({"role": "user", "content": user_content(node, role, native)}),
                );
            }
        }
        line.insert("uuid".into(), json!(uuid));
        line.insert("timestamp".into(), json!(stamp));
        lines.push(Value::Object(line));
        ends.push(messages);
        parent_uuid = Some(uuid);
    }
    let mut bytes = Vec::new();
    if let (Some(title), Some(leaf)) = (&req.record.title, &parent_uuid) {
        if agent_id.is_none() {
            let summary = json!({"type": "summary", "summary": title, "leafUuid": leaf});
            bytes.extend_from_slice(summary.to_string().as_bytes());
            bytes.push(b'\n');
        }
    }
    for line in &lines {
        bytes.extend_from_slice(line.to_string().as_bytes());
        bytes.push(b'\n');
    }
    Ok(Rendered {
        path,
        bytes,
        ends,
        extra: Vec::new(),
    })
}

/// The original uuid when the session is Claude's and it is unused in this file; else one
/// derived from the agent session id and the position (stable across re-renders).
fn line_uuid(
    req: &Render,
    node: &Node,
    index: usize,
    native: bool,
    used: &mut HashSet<String>,
) -> String {
    if native {
        if let Some(origin) = &node.meta.origin_id {
            if !origin.is_empty() && used.insert(origin.clone()) {
                return origin.clone();
            }
        }
    }
    let mut salt = 0u32;
    loop {
        let uuid = derived_uuid(&[
            req.agent_session_id.as_bytes(),
            &(index as u64).to_le_bytes(),
            &salt.to_le_bytes(),
        ]);
        if used.insert(uuid.clone()) {
            return uuid;
        }
        salt += 1;
    }
}

/// An API message id; Bedrock and Vertex sessions keep their prefix (the importer reads the
/// provider from it).
fn message_id(req: &Render, node: &Node, index: usize) -> String {
    let prefix = match node.meta.provider.as_deref() {
        Some("bedrock") => "msg_bdrk_",
        Some("vertex") => "msg_vrtx_",
        _ => "msg_",
    };
    let digest = derived_uuid(&[
        req.agent_session_id.as_bytes(),
        node.id().to_hex().as_bytes(),
        &(index as u64).to_le_bytes(),
    ])
    .replace('-', "");
    format!("{prefix}{}", &digest[..24])
}

fn assistant_message(node: &Node, id: &str, native: bool) -> Value {
    let content: Vec<Value> = node.body.blocks.iter().map(|b| block(b, native)).collect();
    let mut message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": node.body.model,
        "content": content,
        "stop_reason": node.meta.stop_reason,
        "stop_sequence": null,
    });
    if let Some(usage) = node.meta.usage {
        message["usage"] = json!({
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
        });
    }
    message
}

fn user_content(node: &Node, role: Role, native: bool) -> Value {
    let mut content: Vec<Value> = Vec::with_capacity(node.body.blocks.len() + 1);
    if matches!(role, Role::System | Role::Developer) {
        content.push(json!({"type": "text", "text": format!("[{}]", role.as_str())}));
    }
    content.extend(node.body.blocks.iter().map(|b| block(b, native)));
    Value::Array(content)
}

/// One content block as the Messages API (and Claude Code's transcript) has it.
fn block(block: &ContentBlock, native: bool) -> Value {
    match block {
        ContentBlock::Text { text } => json!({"type": "text", "text": text}),
        ContentBlock::Thinking { text, signature } if native => json!({
            "type": "thinking",
            "thinking": text,
            "signature": signature.clone().unwrap_or_default(),
        }),
        ContentBlock::Thinking { text, .. } => {
            json!({"type": "text", "text": format!("[thinking]\n{text}")})
        }
        ContentBlock::ToolUse { id, name, input } => {
            let input = match serde_json::from_str::<Value>(input) {
                Ok(Value::Object(map)) => Value::Object(map),
                Ok(other) => json!({ "input": other }),
                Err(_) => json!({ "input": input }),
            };
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        ContentBlock::ToolResult {
            tool_use_id,
            is_error,
            content,
        } => {
            let parts: Vec<Value> = content.iter().map(result_part).collect();
            let mut value =
                json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": parts});
            if *is_error {
                value["is_error"] = json!(true);
            }
            value
        }
        ContentBlock::Image { media_type, source } => image(media_type, source),
        ContentBlock::Other { json, .. } if native => {
            serde_json::from_str(json).unwrap_or_else(|_| json!({"type": "text", "text": json}))
        }
        ContentBlock::Other { kind, json } => {
            json!({"type": "text", "text": format!("[{kind}]\n{json}")})
        }
    }
}

fn result_part(part: &ToolResultPart) -> Value {
    match part {
        ToolResultPart::Text { text } => json!({"type": "text", "text": text}),
        ToolResultPart::Image { media_type, source } => image(media_type, source),
    }
}

fn image(media_type: &str, source: &ImageSource) -> Value {
    match source {
        ImageSource::Bytes { data } => json!({
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": media_type,
                "data": base64::engine::general_purpose::STANDARD.encode(data),
            },
        }),
        ImageSource::Reference { uri } => json!({
            "type": "image",
            "source": {"type": "url", "url": uri, "media_type": media_type},
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::import::ingest::build_nodes;
    use crate::import::ParsedSession;
    use crate::session::SessionRecord;
    use tapes_protocol::SessionId;

    fn homes() -> AgentHomes {
        AgentHomes {
            claude: "/h/.claude".into(),
            codex: "/h/.codex".into(),
            gemini: "/h/.gemini".into(),
        }
    }

    fn record(kind: &str, title: Option<&str>) -> SessionRecord {
        crate::resume::test_record(kind, title)
    }

    /// Renders `session` (as Claude's when `kind` is "claude"), parses the bytes back, and
    /// returns (original nodes, re-imported sessions, rendered).
    fn round_trip(
        session: &ParsedSession,
        kind: &str,
        parent: Option<&str>,
        agent_id: &str,
    ) -> (Vec<Node>, Vec<ParsedSession>, Rendered) {
        let nodes = build_nodes(session);
        let record = record(kind, session.title.as_deref());
        let req = Render {
            nodes: &nodes,
            record: &record,
            session: SessionId([1; 16]),
            agent_session_id: agent_id,
            parent_agent_session_id: parent,
            cwd: Path::new("/work/my project"),
            now_ms: 1_765_000_000_000,
        };
        let rendered = render(&req, &homes()).expect("render");
        let text = String::from_utf8(rendered.bytes.clone()).expect("utf-8");
        let report = crate::import::claude::parse(&rendered.path, &text).expect("parse");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        (nodes, report.sessions, rendered)
    }

    fn ids(nodes: &[Node]) -> Vec<String> {
        nodes.iter().map(|n| n.id().to_hex()).collect()
    }

    fn check_native(session: &ParsedSession) {
        let (agent_id, parent) = match session.source_id.split_once("/agent-") {
            Some((parent, agent)) => (agent.to_owned(), Some(parent.to_owned())),
            None => match session.source_id.split_once('/') {
                Some((parent, child)) => (child.to_owned(), Some(parent.to_owned())),
                None => (session.source_id.clone(), None),
            },
        };
        let (nodes, back, rendered) = round_trip(session, "claude", parent.as_deref(), &agent_id);
        assert_eq!(back.len(), 1, "{}: one session per file", session.source_id);
        assert_eq!(back[0].messages.len(), nodes.len(), "{}", session.source_id);
        assert_eq!(
            ids(&build_nodes(&back[0])),
            ids(&nodes),
            "{}: node ids differ after the round trip",
            session.source_id
        );
        assert_eq!(back[0].title, session.title, "{}", session.source_id);
        assert_eq!(rendered.ends.last().copied(), Some(nodes.len() as u32));
        if let Some(parent) = parent {
            assert_eq!(back[0].parent_source_id.as_deref(), Some(parent.as_str()));
            assert!(rendered
                .path
                .ends_with(format!("{parent}/subagents/agent-{agent_id}.jsonl")));
        }
    }

    #[test]
    fn claude_sessions_round_trip_to_the_same_nodes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents/claude");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if crate::real_fixtures::present() {
            let real = crate::real_fixtures::dir().join("claude");
            files.extend(
                std::fs::read_dir(real)
                    .expect("real fixtures")
                    .flatten()
                    .map(|e| e.path()),
            );
        }
        files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
        assert!(!files.is_empty(), "no Claude fixtures found");
        let mut checked = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).expect("fixture");
            let report = crate::import::claude::parse(&file, &text).expect("fixture parses");
            for session in report.sessions.iter().filter(|s| !s.messages.is_empty()) {
                check_native(session);
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn project_folder_is_the_cwd_with_non_alphanumerics_as_dashes() {
        let dir = project_dir(&homes(), Path::new("/home/bob/my.proj_1"));
        assert_eq!(dir, Path::new("/h/.claude/projects/-home-bob-my-proj-1"));
    }

    #[test]
    fn another_agents_session_keeps_every_call_and_result_in_order() {
        use tapes_protocol::NodeMeta;
        let m = |role, model: &str, blocks| crate::import::ParsedMessage {
            role,
            model: model.into(),
            blocks,
            meta: NodeMeta::default(),
        };
        let session = ParsedSession {
            source_kind: "codex",
            source_id: "s".into(),
            parent_source_id: None,
            title: None,
            messages: vec![
                m(Role::Developer, "", vec![ContentBlock::text("be brief")]),
                m(
                    Role::User,
                    "",
                    vec![ContentBlock::text("list files MARKER")],
                ),
                m(
                    Role::Assistant,
                    "gpt-5",
                    vec![ContentBlock::Thinking {
                        text: "plan".into(),
                        signature: None,
                    }],
                ),
                m(
                    Role::Assistant,
                    "gpt-5",
                    vec![ContentBlock::ToolUse {
                        id: "call_1".into(),
                        name: "shell".into(),
                        input: "{\"cmd\":\"ls\"}".into(),
                    }],
                ),
                m(
                    Role::Assistant,
                    "gpt-5",
                    vec![ContentBlock::ToolUse {
                        id: "call_2".into(),
                        name: "apply_patch".into(),
                        input: "\"*** Begin Patch\"".into(),
                    }],
                ),
                m(
                    Role::Tool,
                    "",
                    vec![ContentBlock::ToolResult {
                        tool_use_id: "call_1".into(),
                        is_error: false,
                        content: vec![ToolResultPart::Text {
                            text: "a.txt".into(),
                        }],
                    }],
                ),
                m(
                    Role::Tool,
                    "",
                    vec![ContentBlock::ToolResult {
                        tool_use_id: "call_2".into(),
                        is_error: true,
                        content: vec![],
                    }],
                ),
                m(
                    Role::Assistant,
                    "gpt-5",
                    vec![
                        ContentBlock::Other {
                            kind: "reasoning.encrypted_content".into(),
                            json: "\"gAAA\"".into(),
                        },
                        ContentBlock::text("done"),
                    ],
                ),
            ],
        };
        let (_, back, rendered) = round_trip(
            &session,
            "codex",
            None,
            "0b6a4f6e-0000-4000-8000-000000000001",
        );
        let msgs = &back[0].messages;
        // The three assistant items of one turn are one API message; everything else 1:1.
        assert_eq!(rendered.ends, vec![1, 2, 3, 3, 3, 4, 5, 6]);
        assert_eq!(msgs.len(), 6);
        let text = String::from_utf8(rendered.bytes).expect("utf-8");
        for needle in [
            "[developer]",
            "be brief",
            "[thinking]\\nplan",
            "call_1",
            "call_2",
            "a.txt",
            "reasoning.encrypted_content",
            "done",
            "{\"input\":\"*** Begin Patch\"}",
        ] {
            assert!(text.contains(needle), "missing {needle}");
        }
        let kinds: Vec<(Role, usize)> = msgs.iter().map(|m| (m.role, m.blocks.len())).collect();
        assert_eq!(
            kinds,
            vec![
                (Role::User, 2),
                (Role::User, 1),
                (Role::Assistant, 3),
                (Role::User, 1),
                (Role::User, 1),
                (Role::Assistant, 2)
            ]
        );
    }
}
