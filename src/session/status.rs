//! How a session ended, derived from its chain (never stored by hand). SPEC.md §13 is the
//! normative text; each rule there names the transcript that shows it.
//!
//! Many agents record no stop reason: current Claude Code writes `"stop_reason": null` on its
//! final message, Codex and Gemini CLI record none. So the rules read what the transcript shows
//! (who spoke last and what), and use a stop reason only where one is recorded. First match
//! wins:
//!
//! 1. **failed**: the last assistant message stopped on the length limit (`length`,
//!    `max_tokens`, `max_output_tokens`, `model_context_window_exceeded`), or a tool returned an
//!    error that nothing after it recovered from (no later successful tool result, no later
//!    assistant message that finished its turn). A tool call the user *rejected* is not an
//!    error: Claude Code marks it `is_error` with the result text `The user doesn't want to
//!    proceed with this tool use…` (or `[Request interrupted by user…]`), and it does not make
//!    the session failed.
//! 2. **completed**: the session ends on an assistant message that finished its turn: its stop
//!    reason is `end_turn`, `stop` or `stop_sequence`, or, with no stop reason recorded, it says
//!    something (a non-empty text block) and calls no tool. Or any tool call ran `git commit`
//!    or `git push` (a shell command in the tool input's `command`/`cmd`/`commands`/`script`).
//! 3. **abandoned**: the last message is not from the assistant: a prompt nobody answered, a
//!    tool result nobody answered, or the user stopping the agent (Claude Code's
//!    `[Request interrupted by user]` and `[Request interrupted by user for tool use]`, e.g.
//!    after rejecting a tool call).
//! 4. **unknown**: anything else: the session ends on a tool call with no result yet (still
//!    running, or cut off), on thinking alone, or on a stop reason that is no end (`tool_use`).

use serde::{Deserialize, Serialize};
use tapes_protocol::{ContentBlock, Node, Role, ToolResultPart};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Failed,
    Completed,
    Abandoned,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Failed => "failed",
            Status::Completed => "completed",
            Status::Abandoned => "abandoned",
            Status::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Result<Status, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "failed" => Status::Failed,
            "completed" => Status::Completed,
            "abandoned" => Status::Abandoned,
            "unknown" => Status::Unknown,
            other => {
                return Err(format!(
                    "`{other}` is not a status; use failed, completed, abandoned or unknown"
                ))
            }
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_length_stop(reason: &str) -> bool {
    matches!(
        reason.to_ascii_lowercase().as_str(),
        "length" | "max_tokens" | "max_output_tokens" | "model_context_window_exceeded"
    )
}

fn is_turn_end(reason: &str) -> bool {
    matches!(
        reason.to_ascii_lowercase().as_str(),
        "end_turn" | "stop" | "stop_sequence"
    )
}

/// The text Claude Code writes as the result of a tool call the user rejected.
pub const REJECTED_TOOL_USE: &str = "The user doesn't want to proceed with this tool use";

/// The text Claude Code writes (as a user message, or as a tool result) when the user stops
/// the agent; `[Request interrupted by user for tool use]` is the variant after a rejection.
pub const INTERRUPTED_BY_USER: &str = "[Request interrupted by user";

/// Whether a tool result is the user rejecting the call or stopping the agent, not the tool
/// failing.
fn is_rejection(content: &[ToolResultPart]) -> bool {
    content.iter().any(|part| match part {
        ToolResultPart::Text { text } => {
            let text = text.trim_start();
            text.starts_with(REJECTED_TOOL_USE) || text.starts_with(INTERRUPTED_BY_USER)
        }
        _ => false,
    })
}

/// Whether an assistant message finished its turn: a turn-ending stop reason, or, with none
/// recorded, some text and no tool call.
fn finished_turn(node: &Node) -> bool {
    let stop = node.meta.stop_reason.as_deref().unwrap_or("");
    if is_turn_end(stop) {
        return true;
    }
    if !stop.is_empty() {
        return false;
    }
    let mut said_something = false;
    for block in &node.body.blocks {
        match block {
            ContentBlock::ToolUse { .. } => return false,
            ContentBlock::Text { text } if !text.trim().is_empty() => said_something = true,
            _ => {}
        }
    }
    said_something
}

/// The status of a chain given root first.
pub fn derive<'a>(chain: impl IntoIterator<Item = &'a Node>) -> Status {
    let mut unrecovered_error = false;
    let mut git_commit_or_push = false;
    let mut last: Option<&Node> = None;
    let mut last_assistant_stop: Option<&str> = None;
    for node in chain {
        last = Some(node);
        if node.body.role == Role::Assistant {
            last_assistant_stop = node.meta.stop_reason.as_deref();
            if is_turn_end(last_assistant_stop.unwrap_or("")) {
                unrecovered_error = false;
            }
        }
        for block in &node.body.blocks {
            match block {
                ContentBlock::ToolResult {
                    is_error, content, ..
                } => {
                    // A rejection neither fails the session nor recovers an earlier failure.
                    if !(*is_error && is_rejection(content)) {
                        unrecovered_error = *is_error;
                    }
                }
                ContentBlock::ToolUse { input, .. }
                    if !git_commit_or_push && runs_git_commit_or_push(input) =>
                {
                    git_commit_or_push = true;
                }
                _ => {}
            }
        }
    }
    let Some(last) = last else {
        return Status::Unknown;
    };
    let ends_finished = last.body.role == Role::Assistant && finished_turn(last);
    if (unrecovered_error && !ends_finished) || is_length_stop(last_assistant_stop.unwrap_or("")) {
        return Status::Failed;
    }
    if ends_finished || git_commit_or_push {
        return Status::Completed;
    }
    if last.body.role != Role::Assistant {
        return Status::Abandoned;
    }
    Status::Unknown
}

/// Whether a tool input (JSON text) runs `git commit` or `git push` in a shell command.
pub fn runs_git_commit_or_push(input: &str) -> bool {
    // Cheap reject before parsing: most tool inputs never mention git.
    if !input.contains("git") {
        return false;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(input) else {
        return command_runs_git_commit_or_push(input);
    };
    let Some(object) = value.as_object() else {
        return false;
    };
    ["command", "cmd", "commands", "script"]
        .iter()
        .filter_map(|k| object.get(*k))
        .any(|v| match v {
            serde_json::Value::String(s) => command_runs_git_commit_or_push(s),
            serde_json::Value::Array(items) => {
                let joined: Vec<&str> = items.iter().filter_map(|i| i.as_str()).collect();
                command_runs_git_commit_or_push(&joined.join(" "))
            }
            _ => false,
        })
}

/// `git [-C dir] [-c k=v] [--flags] commit|push` anywhere in a shell command line.
fn command_runs_git_commit_or_push(command: &str) -> bool {
    let tokens: Vec<&str> = command
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '"'))
        .filter(|t| !t.is_empty())
        .collect();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "git" || tokens[i].ends_with("/git") {
            let mut j = i + 1;
            while j < tokens.len() && tokens[j].starts_with('-') {
                // Options that take a separate argument.
                if matches!(tokens[j], "-C" | "-c" | "--git-dir" | "--work-tree") {
                    j += 1;
                }
                j += 1;
            }
            if matches!(tokens.get(j), Some(&"commit") | Some(&"push")) {
                return true;
            }
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapes_protocol::{NodeBody, NodeMeta};

    fn node(role: Role, blocks: Vec<ContentBlock>, stop: Option<&str>) -> Node {
        Node {
            body: NodeBody {
                parent: None,
                role,
                model: String::new(),
                blocks,
            },
            meta: NodeMeta {
                stop_reason: stop.map(str::to_string),
                ..NodeMeta::default()
            },
        }
    }
    fn user(text: &str) -> Node {
        node(Role::User, vec![ContentBlock::text(text)], None)
    }
    fn said(stop: Option<&str>) -> Node {
        node(Role::Assistant, vec![ContentBlock::text("ok")], stop)
    }
    fn call(command: &str) -> Node {
        node(
            Role::Assistant,
            vec![ContentBlock::ToolUse {
                id: "t1".into(),
                name: "Bash".into(),
                input: serde_json::json!({ "command": command }).to_string(),
            }],
            Some("tool_use"),
        )
    }
    fn result(is_error: bool) -> Node {
        node(
            Role::User,
            vec![ContentBlock::ToolResult {
                tool_use_id: "t1".into(),
                is_error,
                content: vec![],
            }],
            None,
        )
    }

    fn rejected() -> Node {
        node(
            Role::User,
            vec![ContentBlock::ToolResult {
                tool_use_id: "t1".into(),
                is_error: true,
                content: vec![ToolResultPart::Text {
                    text: format!("{REJECTED_TOOL_USE}. The tool use was rejected."),
                }],
            }],
            None,
        )
    }

    #[test]
    fn each_rule() {
        use Status::*;
        let cases: Vec<(&str, Vec<Node>, Status)> = vec![
            ("empty", vec![], Unknown),
            (
                "end_turn",
                vec![user("hi"), said(Some("end_turn"))],
                Completed,
            ),
            (
                "openai stop",
                vec![user("hi"), said(Some("stop"))],
                Completed,
            ),
            (
                "length stop",
                vec![user("hi"), said(Some("max_tokens"))],
                Failed,
            ),
            (
                "openai length",
                vec![user("hi"), said(Some("length"))],
                Failed,
            ),
            (
                "unrecovered tool error",
                vec![user("hi"), call("cargo test"), result(true)],
                Failed,
            ),
            (
                "error then the agent finished",
                vec![
                    user("hi"),
                    call("cargo test"),
                    result(true),
                    said(Some("end_turn")),
                ],
                Completed,
            ),
            (
                "error then a successful tool call",
                vec![
                    user("hi"),
                    call("cargo test"),
                    result(true),
                    call("cargo build"),
                    result(false),
                ],
                Abandoned,
            ),
            (
                "git commit counts as done",
                vec![
                    user("hi"),
                    call("git add . && git commit -m x"),
                    result(false),
                ],
                Completed,
            ),
            (
                "git -C dir push",
                vec![
                    user("hi"),
                    call("git -C /repo push origin main"),
                    result(false),
                ],
                Completed,
            ),
            ("prompt nobody answered", vec![user("hi")], Abandoned),
            (
                "a new prompt after a finished turn",
                vec![user("hi"), said(Some("end_turn")), user("and now?")],
                Abandoned,
            ),
            (
                "tool result nobody answered",
                vec![user("hi"), call("ls"), result(false)],
                Abandoned,
            ),
            (
                "assistant text without a stop reason (current Claude Code, Codex, Gemini)",
                vec![user("hi"), said(None)],
                Completed,
            ),
            (
                "error, then the agent's last word without a stop reason",
                vec![user("hi"), call("cargo test"), result(true), said(None)],
                Completed,
            ),
            (
                "thinking alone at the end",
                vec![
                    user("hi"),
                    node(
                        Role::Assistant,
                        vec![ContentBlock::Thinking {
                            text: "hmm".into(),
                            signature: None,
                        }],
                        None,
                    ),
                ],
                Unknown,
            ),
            (
                "a tool call with no result and no stop reason: running or cut off",
                vec![user("hi"), {
                    let mut n = call("ls");
                    n.meta.stop_reason = None;
                    n
                }],
                Unknown,
            ),
            (
                "a rejected tool call is not a failure",
                vec![user("hi"), call("rm -rf x"), rejected()],
                Abandoned,
            ),
            (
                "rejected, then the user stopped the agent",
                vec![
                    user("hi"),
                    call("rm -rf x"),
                    rejected(),
                    user("[Request interrupted by user for tool use]"),
                ],
                Abandoned,
            ),
            (
                "a rejection does not recover an earlier error",
                vec![
                    user("hi"),
                    call("cargo test"),
                    result(true),
                    call("rm -rf x"),
                    rejected(),
                ],
                Failed,
            ),
            (
                "rejected, then the agent answered",
                vec![user("hi"), call("rm -rf x"), rejected(), said(None)],
                Completed,
            ),
            (
                "the user interrupted",
                vec![
                    user("hi"),
                    said(None),
                    user("go on"),
                    user("[Request interrupted by user]"),
                ],
                Abandoned,
            ),
            (
                "tool_use stop at the end",
                vec![user("hi"), call("ls")],
                Unknown,
            ),
        ];
        for (name, chain, want) in cases {
            assert_eq!(derive(&chain), want, "{name}");
        }
    }

    #[test]
    fn git_detection_reads_shell_commands_only() {
        assert!(runs_git_commit_or_push(
            r#"{"command":"git commit -am wip"}"#
        ));
        assert!(runs_git_commit_or_push(
            r#"{"command":["bash","-lc","cd x && git push"]}"#
        ));
        assert!(runs_git_commit_or_push(
            r#"{"cmd":"/usr/bin/git -c a=b commit"}"#
        ));
        assert!(!runs_git_commit_or_push(r#"{"command":"git status"}"#));
        assert!(!runs_git_commit_or_push(
            r#"{"command":"git log --grep commit"}"#
        ));
        // Writing a file that mentions git commit is not committing.
        assert!(!runs_git_commit_or_push(
            r#"{"file_path":"README.md","content":"run git commit"}"#
        ));
    }
}
