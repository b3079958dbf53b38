//! Session status (SPEC.md §13, "Status"), derived through the CLI (`tapes import`, then the
//! `status` field of `tapes search --json`).
//!
//! - One test per rule on the project's own synthetic Claude Code transcripts in
//!   `tests/fixtures/status/` (written for tapes; each file name starts with the status it must
//!   get). They record no stop reason where current Claude Code records none.
//! - A conformance test on the real transcripts in `../shared/fixtures/agent-transcripts`
//!   (read by hand; the reason for each expected status is written beside it). When that
//!   directory is absent the test says so in one line and passes, unless
//!   `TAPES_REQUIRE_FIXTURES` is set (e.g. in CI), which makes that a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const OWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/status");
const REAL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/agent-transcripts"
);

use super::util::tapes;

fn json(home: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = tapes(home)
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

/// Imports `path` into a fresh store; the status of every session, by its source id.
fn statuses(path: &Path) -> BTreeMap<String, String> {
    let home = tempfile::tempdir().unwrap();
    tapes(home.path())
        .arg("import")
        .arg(path)
        .assert()
        .success();
    let status: BTreeMap<String, String> = json(home.path(), &["search", "--json"])
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    json(home.path(), &["sessions", "--json"])
        .iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap();
            (
                s["source"]["id"].as_str().unwrap().to_string(),
                status[id].clone(),
            )
        })
        .collect()
}

/// The status of the one session in an own fixture file.
fn status_of(file: &str) -> String {
    let path = PathBuf::from(OWN).join(file);
    let all = statuses(&path);
    assert_eq!(all.len(), 1, "{file}: one session, got {all:?}");
    let status = all.into_values().next().unwrap();
    assert!(
        file.starts_with(&status),
        "the file name says the status it must get"
    );
    status
}

// Rule 2: completed.

#[test]
fn assistant_text_at_the_end_without_a_stop_reason_is_completed() {
    assert_eq!(
        status_of("completed_text_without_stop_reason.jsonl"),
        "completed"
    );
}

#[test]
fn a_turn_ending_stop_reason_is_completed() {
    assert_eq!(status_of("completed_end_turn.jsonl"), "completed");
}

#[test]
fn git_commit_in_a_bash_call_is_completed_even_if_a_prompt_follows() {
    assert_eq!(status_of("completed_git_commit.jsonl"), "completed");
}

#[test]
fn a_rejected_tool_call_the_agent_then_answered_is_completed() {
    assert_eq!(status_of("completed_after_rejection.jsonl"), "completed");
}

// Rule 1: failed.

#[test]
fn an_unrecovered_tool_error_is_failed() {
    assert_eq!(status_of("failed_tool_error.jsonl"), "failed");
}

#[test]
fn a_length_stop_is_failed() {
    assert_eq!(status_of("failed_max_tokens.jsonl"), "failed");
}

// Rule 3: abandoned.

#[test]
fn a_rejected_tool_call_is_not_a_failure() {
    // `is_error: true` with "The user doesn't want to proceed with this tool use", then
    // "[Request interrupted by user for tool use]".
    assert_eq!(status_of("abandoned_rejected_tool_call.jsonl"), "abandoned");
}

#[test]
fn the_user_interrupting_is_abandoned() {
    assert_eq!(status_of("abandoned_interrupted.jsonl"), "abandoned");
}

#[test]
fn a_prompt_nobody_answered_is_abandoned() {
    assert_eq!(status_of("abandoned_prompt.jsonl"), "abandoned");
}

// Rule 4: unknown.

#[test]
fn a_tool_call_with_no_result_is_unknown() {
    assert_eq!(status_of("unknown_pending_tool_call.jsonl"), "unknown");
}

/// Every session of the real transcripts, by source id: status and why.
const REAL_STATUSES: &[(&str, &str, &str)] = &[
    // claude/
    (
        "1af7fc5e-8455-4414-9ccd-011d40f70b2a",
        "completed",
        "ccv_1af7fc5e: the Write was denied (is_error), a later TodoWrite succeeded, and the \
         last message is assistant text with stop_reason end_turn",
    ),
    (
        "5c0375b4-57a5-4f26-b12d-d022ee4e51b7",
        "completed",
        "ccv_5c0375b4 main: ends on assistant text (the CLAUDE.md update summary), no stop \
         reason recorded",
    ),
    (
        "5c0375b4-57a5-4f26-b12d-d022ee4e51b7/sidechain-6340ddef-f656-4b72-a065-82390f637678",
        "completed",
        "ccv_5c0375b4 sidechain: ends on the package.json summary, stop_reason end_turn",
    ),
    (
        "5c0375b4-57a5-4f26-b12d-d022ee4e51b7/sidechain-83e2917c-8940-4df6-a5a5-f2514f0d08c5",
        "completed",
        "ccv_5c0375b4 sidechain: ends on the agent's analysis text, no stop reason",
    ),
    (
        "4c2ddfdc-b619-4525-8d03-1950fb1b0257",
        "completed",
        "codemie_4c2ddfdc: last prompt `delete js`, the rm ran, then assistant text with \
         end_turn",
    ),
    (
        "4c2ddfdc-b619-4525-8d03-1950fb1b0257/agent-36541525",
        "completed",
        "codemie_agent-36541525: the Warmup prompt answered by assistant text, no stop reason",
    ),
    (
        "9eda1058-9706-484a-b992-d03f9cfa2546",
        "completed",
        "codemie_9eda1058: a rejected tool call and an interruption mid-session, but it ends \
         on assistant text with end_turn after the `what else?` prompt",
    ),
    (
        "55604662-cf2a-4331-851a-ec234028f8ca",
        "abandoned",
        "spotter_short: both tool calls rejected (is_error, `The user doesn't want to proceed \
         with this tool use`) then `[Request interrupted by user for tool use]`: the user \
         stopped it, no tool failed",
    ),
    (
        "d6e0bada-1959-4eec-a9d2-0bfade768d8f",
        "abandoned",
        "spotter_tool_heavy: Read and WebFetch returned fine, then `[Request interrupted by \
         user]` ends the file",
    ),
    (
        "491e126e-1e71-469c-ade2-fcc8af567c74",
        "completed",
        "spotter_subagent-parent: tool errors mid-session were followed by successful calls; \
         ends on the `## Beads Created` assistant text, no stop reason",
    ),
    (
        "ae4a77f8-aedd-4bc1-888f-c94edc91af04/agent-aac57f5",
        "completed",
        "spotter agent-aac57f5: ends on the subagent's version recommendations text",
    ),
    (
        "fa812bfe-b295-4cca-9c2f-fdf01028cb46/agent-acompact-70d8e7",
        "completed",
        "spotter agent-acompact: the compaction prompt answered by the summary text",
    ),
    // codex/
    (
        "019b7f94-51b4-7593-922e-ba12b5b73b52",
        "abandoned",
        "codemie rollout: the file ends on a function_call_output (then a turn_context) that \
         no assistant message answered",
    ),
    (
        "019c8bfe-ec25-79e0-97d7-bda6a9c575ff",
        "completed",
        "localpush 20-34-25: ends on an assistant message (then task_complete); Codex records \
         no stop reason",
    ),
    (
        "019c8a70-dda7-7f33-98ea-f30553347322",
        "unknown",
        "localpush 13-19-38: cut off after an exec_command function_call with no output, no \
         task_complete",
    ),
    // gemini/
    (
        "5b959dae-8655-4cd1-b10f-720b8c336ea2",
        "completed",
        "gemini 5b959dae: ends on the gemini message saying lead_gemini.txt was created",
    ),
    (
        "37b7abef-713d-4522-85f0-8ff15a4e6d17",
        "completed",
        "gemini 37b7abef: ends on the gemini message saying the lines were removed",
    ),
];

#[test]
fn real_transcripts_get_the_status_they_show() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let got = statuses(Path::new(REAL));
    assert_eq!(got.len(), REAL_STATUSES.len(), "{got:?}");
    for (source, want, why) in REAL_STATUSES {
        let status = got
            .get(*source)
            .unwrap_or_else(|| panic!("no session {source}"));
        assert_eq!(status, want, "{source}: {why}");
    }
}
