//! Importing every real transcript in `../shared/fixtures/agent-transcripts` through the CLI:
//! the counts below were checked by hand against the files (see the importer unit tests for
//! the per-file reasoning), and a second import adds nothing.

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/agent-transcripts"
);

use super::util::tapes;

#[test]
fn every_fixture_imports_once() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tapes(home.path())
        .args(["import", FIXTURES])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    // 10 Claude files → 12 sessions (two inline sidechains), 3 Codex, 2 Gemini chats;
    // SOURCES.md and the Gemini prompt log are passed over.
    assert!(
        out.starts_with("imported 15 files: 17 new sessions, 0 grew, 0 unchanged; 285 new nodes"),
        "{out}"
    );
    assert!(
        out.contains("skipped 2 files in no format tapes imports"),
        "{out}"
    );
    assert!(
        out.contains("16 summary")
            && out.contains("69 progress")
            && out.contains("16 file-history-snapshot"),
        "{out}"
    );

    let again = tapes(home.path())
        .args(["import", FIXTURES])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(again)
        .unwrap()
        .starts_with("nothing new: 17 sessions from 15 files already up to date"));

    let json = tapes(home.path())
        .args(["sessions", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let sessions: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    assert_eq!(sessions.len(), 17);
    let by_source = |id: &str| {
        sessions
            .iter()
            .find(|s| s["source"]["id"] == id)
            .unwrap()
            .clone()
    };
    let count = |agent: &str| sessions.iter().filter(|s| s["agent"] == agent).count();
    assert_eq!(
        (count("claude-code"), count("codex"), count("gemini-cli")),
        (12, 3, 2)
    );

    // Subagents are their own sessions, linked to the session that spawned them.
    let parent = by_source("4c2ddfdc-b619-4525-8d03-1950fb1b0257");
    let warmup = by_source("4c2ddfdc-b619-4525-8d03-1950fb1b0257/agent-36541525");
    assert_eq!(warmup["parent_session"], parent["id"]);
    assert_eq!(
        (parent["messages"].as_u64(), warmup["messages"].as_u64()),
        (Some(16), Some(2))
    );
    let inline_children: Vec<_> = sessions
        .iter()
        .filter(|s| {
            s["source"]["id"]
                .as_str()
                .unwrap()
                .starts_with("5c0375b4-57a5-4f26-b12d-d022ee4e51b7/sidechain-")
        })
        .collect();
    assert_eq!(inline_children.len(), 2);
    let main = by_source("5c0375b4-57a5-4f26-b12d-d022ee4e51b7");
    assert!(inline_children
        .iter()
        .all(|c| c["parent_session"] == main["id"]));

    tapes(home.path())
        .arg("fsck")
        .assert()
        .success()
        .stdout("ok: 285 objects and 17 refs verified\n");
}
