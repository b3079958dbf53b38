//! Realistic sample sessions, generated (never copied from real users).
//!
//! Used by the quickstart example, the benchmarks and tests: a deterministic generator of
//! coding-agent sessions with prompts, thinking, tool calls and results, usage and timestamps.
//! It can produce [`ParsedSession`]s directly (to measure the store alone) or Claude Code JSONL
//! files (to exercise the real importer end to end).

use serde_json::json;
use tapes_protocol::{ContentBlock, NodeMeta, Role, ToolResultPart, Usage};

use crate::import::{ParsedMessage, ParsedSession};

/// A small deterministic PRNG (xorshift64*): the same seed gives the same sessions everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const PROJECTS: &[&str] = &[
    "billing-api",
    "web-dashboard",
    "infra",
    "mobile-app",
    "data-pipeline",
];
const MODELS: &[&str] = &[
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1-20250805",
    "claude-haiku-4-5-20251001",
];
const TASKS: &[&str] = &[
    "Refactor the invoice totals module so rounding happens once, at the end",
    "The login page flickers on Safari when the session cookie expires; find out why",
    "Add retries with jittered backoff to the webhook sender",
    "Write tests for the CSV importer, including quoted newlines",
    "Why does the nightly build fail only on arm64?",
    "Migrate the settings screen from class components to hooks",
    "Debug the memory growth in the ingest worker after 6 hours",
    "Add an index for the slow orders-by-customer query",
];
const FILES: &[&str] = &[
    "src/invoice.rs",
    "src/auth/session.ts",
    "lib/webhook.py",
    "tests/csv_test.go",
    "Makefile",
];
const TOOLS: &[&str] = &["Read", "Edit", "Bash", "Grep"];

/// Parameters of a generated session.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Tool round trips per session (each adds an assistant tool call and a tool result).
    pub tool_rounds: usize,
    /// Start of the first session, Unix ms.
    pub start_ms: i64,
}

impl Default for Shape {
    fn default() -> Shape {
        // 2026-02-14 09:00 UTC
        Shape {
            tool_rounds: 4,
            start_ms: 1_771_059_600_000,
        }
    }
}

/// Session `index` of a sample set, as the importer would hand it over.
pub fn session(seed: u64, index: usize, shape: Shape) -> ParsedSession {
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x1000_0001));
    let project = *rng.pick(PROJECTS);
    let model = *rng.pick(MODELS);
    let task = *rng.pick(TASKS);
    let mut t = shape.start_ms + index as i64 * 3_600_000 / 7;
    let mut messages = Vec::with_capacity(2 + shape.tool_rounds * 2);
    let meta = |t: i64, usage: Option<Usage>, stop: Option<&str>| NodeMeta {
        provider: Some("anthropic".into()),
        agent: Some("claude-code".into()),
        project: Some(project.into()),
        cwd: Some(format!("/home/dev/src/{project}")),
        git_branch: Some("main".into()),
        usage,
        stop_reason: stop.map(str::to_string),
        timestamp_ms: Some(t),
        ..NodeMeta::default()
    };
    messages.push(ParsedMessage {
        role: Role::User,
        model: String::new(),
        blocks: vec![ContentBlock::text(format!(
            "{task} (ticket #{})",
            1000 + rng.below(9000)
        ))],
        meta: meta(t, None, None),
    });
    for round in 0..shape.tool_rounds {
        t += 2_000 + rng.below(20_000) as i64;
        let tool = *rng.pick(TOOLS);
        let file = *rng.pick(FILES);
        let call_id = format!("toolu_{:016x}", rng.next_u64());
        let input = match tool {
            "Bash" => {
                json!({ "command": format!("cargo test -p {project} -- --nocapture"), "description": "run the tests" })
            }
            "Grep" => json!({ "pattern": "fn total", "path": file }),
            "Edit" => json!({ "file_path": file, "old_string": "round(x)", "new_string": "x" }),
            _ => json!({ "file_path": file }),
        };
        let usage = Usage {
            input_tokens: 20 + rng.below(400),
            output_tokens: 40 + rng.below(600),
            cache_read_tokens: 8_000 + rng.below(20_000),
            cache_write_tokens: rng.below(3_000),
        };
        messages.push(ParsedMessage {
            role: Role::Assistant,
            model: model.into(),
            blocks: vec![
                ContentBlock::Thinking {
                    text: format!("Step {round}: look at {file} with {tool}."),
                    signature: None,
                },
                ContentBlock::text(format!("Let me check `{file}`.")),
                ContentBlock::ToolUse {
                    id: call_id.clone(),
                    name: tool.into(),
                    input: crate::import::json_text(&input),
                },
            ],
            meta: meta(t, Some(usage), Some("tool_use")),
        });
        t += 300 + rng.below(5_000) as i64;
        let lines = 3 + rng.below(30);
        let output: String = (0..lines)
            .map(|i| {
                format!(
                    "{i:>4}  let value_{i} = compute({}, {});\n",
                    rng.below(1000),
                    rng.below(1000)
                )
            })
            .collect();
        let is_error = rng.below(10) == 0;
        messages.push(ParsedMessage {
            role: Role::User,
            model: String::new(),
            blocks: vec![ContentBlock::ToolResult {
                tool_use_id: call_id,
                is_error,
                content: vec![ToolResultPart::Text { text: output }],
            }],
            meta: meta(t, None, None),
        });
    }
    t += 3_000 + rng.below(10_000) as i64;
    messages.push(ParsedMessage {
        role: Role::Assistant,
        model: model.into(),
        blocks: vec![ContentBlock::text(format!(
            "Done. I changed {} and the tests pass. Summary: {task}.",
            rng.pick(FILES)
        ))],
        meta: meta(
            t,
            Some(Usage {
                input_tokens: 30,
                output_tokens: 200 + rng.below(400),
                cache_read_tokens: 12_000,
                cache_write_tokens: 0,
            }),
            Some("end_turn"),
        ),
    });
    ParsedSession {
        source_kind: "claude",
        source_id: format!("{:08x}-sample-{seed}-{index}", rng.next_u64() as u32),
        parent_source_id: None,
        title: None,
        messages,
    }
}

/// The same session written as a Claude Code transcript (`~/.claude/projects/<p>/<id>.jsonl`):
/// one line per message, assistant replies split one line per block under one message id, as
/// Claude Code itself writes them.
pub fn claude_jsonl(session: &ParsedSession) -> String {
    let mut out = String::new();
    let mut parent: Option<String> = None;
    for (i, message) in session.messages.iter().enumerate() {
        let meta = &message.meta;
        let timestamp = meta
            .timestamp_ms
            .and_then(|ms| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let blocks: Vec<serde_json::Value> = message.blocks.iter().map(claude_block).collect();
        let pieces: Vec<Vec<serde_json::Value>> = if message.role == Role::Assistant {
            blocks.into_iter().map(|b| vec![b]).collect()
        } else {
            vec![blocks]
        };
        let message_id = format!("msg_{:024x}", i as u128 + 1);
        for (part, content) in pieces.into_iter().enumerate() {
            let uuid = format!("{}-{i:04}-{part:02}", session.source_id);
            let inner = if message.role == Role::Assistant {
                let usage = meta.usage.unwrap_or_default();
                json!({
                    "id": message_id, "type": "message", "role": "assistant", "model": message.model,
                    "content": content, "stop_reason": meta.stop_reason,
                    "usage": {
                        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                        "cache_read_input_tokens": usage.cache_read_tokens,
                        "cache_creation_input_tokens": usage.cache_write_tokens,
                    }
                })
            } else {
                json!({ "role": "user", "content": content })
            };
            let line = json!({
                "parentUuid": parent, "isSidechain": false, "userType": "external",
                "cwd": meta.cwd, "sessionId": session.source_id, "version": "2.1.38",
                "gitBranch": meta.git_branch,
                "type": if message.role == Role::Assistant { "assistant" } else { "user" },
                "message": inner, "uuid": uuid, "timestamp": timestamp,
            });
            out.push_str(&line.to_string());
            out.push('\n');
            parent = Some(uuid);
        }
    }
    out
}

fn claude_block(block: &ContentBlock) -> serde_json::Value {
    match block {
        ContentBlock::Text { text } => json!({ "type": "text", "text": text }),
        ContentBlock::Thinking { text, signature } => {
            json!({ "type": "thinking", "thinking": text, "signature": signature.clone().unwrap_or_default() })
        }
        ContentBlock::ToolUse { id, name, input } => {
            let input: serde_json::Value =
                serde_json::from_str(input).unwrap_or(serde_json::Value::Null);
            json!({ "type": "tool_use", "id": id, "name": name, "input": input })
        }
        ContentBlock::ToolResult {
            tool_use_id,
            is_error,
            content,
        } => {
            let text = tapes_protocol::node::tool_result_text(content);
            json!({ "type": "tool_result", "tool_use_id": tool_use_id, "is_error": is_error, "content": text })
        }
        ContentBlock::Image { media_type, .. } => {
            json!({ "type": "text", "text": format!("[image {media_type}]") })
        }
        ContentBlock::Other { json, .. } => {
            serde_json::from_str(json).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// Continues session `id` in `store` by one user message per text, as an agent session goes
/// on: new nodes on the head and the record moved to the last one, in one commit. For tests,
/// examples and benchmarks of what happens after a session grows.
pub fn continue_session(
    store: &crate::store::Store,
    id: &tapes_protocol::SessionId,
    texts: &[String],
) -> Result<(), crate::store::StoreError> {
    use tapes_protocol::{ContentBlock, Node, NodeBody, NodeMeta, Role, StoredObject};
    let mut record = store
        .session(id)?
        .ok_or_else(|| crate::store::StoreError::SessionNotFound(id.short()))?;
    let raw = store.session_raw(id)?;
    let mut objects = Vec::with_capacity(texts.len());
    for text in texts {
        let object = StoredObject::encode(&Node {
            body: NodeBody {
                parent: Some(record.head),
                role: Role::User,
                model: String::new(),
                blocks: vec![ContentBlock::text(text)],
            },
            meta: NodeMeta::default(),
        });
        record.head = object.id;
        record.summary.messages += 1;
        objects.push(object);
    }
    store.commit(
        &objects,
        &[crate::store::backend::RefUpdate {
            key: crate::session::session_ref_key(id),
            expected: raw,
            new: Some(record.encode()),
        }],
    )?;
    Ok(())
}
