//! `tapes search` and `tapes pricing` on the real fixture transcripts: the ids below were found
//! by hand (grep over `../shared/fixtures/agent-transcripts`), e.g. "phoenix" occurs only in the
//! spotter sessions (an Elixir/Phoenix project) and "refactor"/"refactoring" in four sessions of
//! three other sources. Costs are checked against a session whose arithmetic is written out.

use std::collections::BTreeSet;
use std::path::Path;

use assert_cmd::Command;
use tapes::home::Home;
use tapes::import::ingest::{ingest, Incoming};
use tapes::import::{ParsedMessage, ParsedSession};
use tapes::protocol::{ContentBlock, NodeMeta, Role, SessionId, Usage};
use tapes::store::Store;
use tapes::views::search::{self, SearchIndex};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/agent-transcripts"
);

use super::util::tapes;

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(cmd.assert().success().get_output().stdout.clone()).unwrap()
}

fn imported() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    tapes(home.path())
        .args(["import", FIXTURES])
        .assert()
        .success();
    home
}

/// Short ids (12 hex digits) printed by a piped search, one per line.
fn ids(home: &Path, args: &[&str]) -> Vec<String> {
    let out = stdout(tapes(home).arg("search").args(args));
    out.lines()
        .map(|l| {
            assert_eq!(l.len(), 32, "one full id per line: {l:?}");
            l[..12].to_string()
        })
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn as_set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

// The fixture sessions these tests name (short ids; `tapes sessions` lists them).
const SPOTTER_SEARCH_HEX: &str = "8b28ab223e53"; // spotter-4te, claude-sonnet-4-5, "Search hex.pm …"
const SPOTTER_BEADS: &str = "64e398210a79"; // spotter, claude-opus-4-6, most expensive spotter one
const SPOTTER_PHOENIX_BG: &str = "c57959c09546"; // spotter, ends on a prompt: abandoned
                                                 // spotter: two tool calls the user rejected, then the user's interrupt: abandoned (a rejected
                                                 // call is the user's choice, not a failure; SPEC §13).
const SPOTTER_PHX_SERVER: &str = "3e49f157e463";
const SPOTTER_COMPACT: &str = "d5571c67eedd"; // spotter-a0y compaction agent
const CODEMIE_REPO: &str = "309ac54a6f55"; // claude, "show tools …", most expensive overall
const CODEX_CODEMIE: &str = "7cbd2bd8569d"; // codex, gpt-5-1-codex-2025-11-13
const GEMINI_FILE_OPS: &str = "151fcc133286"; // gemini-3-pro
const CLAUDE_WARMUP: &str = "be6bcc297efc"; // claude sidechain "Warmup"
const CCV_INIT: &str = "8ea22deacdec"; // claude-code-viewer `/init`

#[test]
fn full_text_search_finds_the_sessions_that_mention_a_word() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let home = imported();
    let h = home.path();
    assert_eq!(
        as_set(ids(h, &["phoenix"])),
        set(&[
            SPOTTER_SEARCH_HEX,
            SPOTTER_BEADS,
            SPOTTER_PHOENIX_BG,
            SPOTTER_PHX_SERVER,
            SPOTTER_COMPACT
        ])
    );
    // Stemmed: "refactor" also finds "Refactoring".
    assert_eq!(
        as_set(ids(h, &["refactor"])),
        set(&[CODEMIE_REPO, CODEX_CODEMIE, GEMINI_FILE_OPS, CLAUDE_WARMUP])
    );
    // Every word must occur in one message; a phrase must occur as written.
    assert_eq!(ids(h, &["phoenix", "refactor"]), Vec::<String>::new());
    assert_eq!(
        as_set(ids(h, &["\"mix phx.server\""])),
        set(&[SPOTTER_PHX_SERVER, SPOTTER_PHOENIX_BG])
    );
    assert!(ids(h, &["zzzunheardofword"]).is_empty());
}

#[test]
fn filters_narrow_the_results() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let home = imported();
    let h = home.path();
    // claude-opus matches claude-opus-4-6 (normalized family match); the sonnet one drops out.
    assert_eq!(
        as_set(ids(h, &["phoenix", "--model", "claude-opus"])),
        set(&[
            SPOTTER_BEADS,
            SPOTTER_PHOENIX_BG,
            SPOTTER_PHX_SERVER,
            SPOTTER_COMPACT
        ])
    );
    assert_eq!(
        as_set(ids(h, &["phoenix", "--project", "spotter"])),
        set(&[SPOTTER_BEADS, SPOTTER_PHOENIX_BG, SPOTTER_PHX_SERVER])
    );
    assert!(ids(h, &["phoenix", "--status", "failed"]).is_empty());
    assert_eq!(
        as_set(ids(h, &["phoenix", "--status", "abandoned"])),
        set(&[SPOTTER_PHOENIX_BG, SPOTTER_PHX_SERVER])
    );
    // No words: the filters alone, newest first.
    assert_eq!(
        ids(h, &["--from", "2026-02-10", "--to", "2026-02-12"]),
        vec![
            SPOTTER_COMPACT,
            SPOTTER_SEARCH_HEX,
            SPOTTER_PHOENIX_BG,
            SPOTTER_BEADS,
            SPOTTER_PHX_SERVER
        ]
    );
    assert_eq!(
        ids(h, &["--sort", "cost", "--limit", "2"]),
        vec![CODEMIE_REPO, SPOTTER_BEADS]
    );
    assert_eq!(ids(h, &["--model", "gpt-5.1-codex"]), vec![CODEX_CODEMIE]);
    // Cost range, checked against the JSON costs.
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(tapes(h).args(["search", "--json"]))).unwrap();
    assert_eq!(json.len(), 17);
    let expensive: BTreeSet<String> = json
        .iter()
        .filter(|s| s["cost_usd"].as_f64().unwrap() >= 0.3)
        .map(|s| s["id"].as_str().unwrap()[..12].to_string())
        .collect();
    assert_eq!(expensive, set(&[CODEMIE_REPO, SPOTTER_BEADS]));
    assert_eq!(as_set(ids(h, &["--min-cost", "0.3"])), expensive);
    assert_eq!(
        ids(h, &["--min-cost", "0.3", "--max-cost", "0.5"]),
        vec![SPOTTER_BEADS]
    );
    // Statuses derived from the fixtures.
    let status = |id: &str| {
        json.iter()
            .find(|s| s["id"].as_str().unwrap().starts_with(id))
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status(SPOTTER_PHX_SERVER), "abandoned");
    assert_eq!(status(SPOTTER_PHOENIX_BG), "abandoned");
    assert_eq!(status(CODEMIE_REPO), "completed");
    assert_eq!(status(CCV_INIT), "completed");
    // Ends on the model's answer: completed.
    assert_eq!(status(GEMINI_FILE_OPS), "completed");

    // Bad filters say what to do.
    for (args, hint) in [
        (vec!["--status", "done"], "use failed, completed"),
        (vec!["--sort", "size"], "use date, cost"),
        (vec!["--from", "14/02/2026"], "use YYYY-MM-DD"),
        (vec!["--since", "7q"], "use s, m, h, d, w or y"),
        (vec!["--min-cost", "2", "--max-cost", "1"], "swap them"),
    ] {
        let out = tapes(h).arg("search").args(&args).assert().failure();
        let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
        assert!(err.contains(hint), "{args:?}: {err}");
    }
}

#[test]
fn json_and_table_show_cost_status_and_the_highlighted_snippet() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let home = imported();
    let h = home.path();
    let json: Vec<serde_json::Value> = serde_json::from_str(&stdout(tapes(h).args([
        "search",
        "phx.server",
        "--status",
        "abandoned",
        "--json",
    ])))
    .unwrap();
    // Both abandoned spotter sessions mention it; the one that ran the server is the hit here.
    let hit = json
        .iter()
        .find(|h| h["id"].as_str().unwrap().starts_with(SPOTTER_PHX_SERVER))
        .expect("the phx.server session is found");
    assert_eq!(hit["project"], "spotter");
    assert_eq!(hit["model"], "claude-opus-4-6");
    assert!(hit["cost_usd"].as_f64().unwrap() > 0.0);
    let snippet = hit["snippet"]["text"].as_str().unwrap();
    let first = &hit["snippet"]["highlights"][0];
    let (s, e) = (
        first["start"].as_u64().unwrap() as usize,
        first["end"].as_u64().unwrap() as usize,
    );
    assert!(snippet[s..e].eq_ignore_ascii_case("phx"), "{snippet}");

    // --table off a terminal marks matches with [ ] (ANSI bold on a terminal).
    let table = stdout(tapes(h).args(["search", "phoenix", "--project", "spotter", "--table"]));
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("spotter") && table.contains("claude-opus-4-6") && table.contains('$'));
    assert!(table.to_lowercase().contains("[phoenix]"), "{table}");
    assert!(
        !table.contains("\x1b["),
        "no escapes off a terminal: {table}"
    );
}

#[test]
fn piped_ids_feed_share() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let home = imported();
    let h = home.path();
    tapes(h)
        .args(["init", "--name", "alice"])
        .assert()
        .success();
    let out = tapes(h)
        .args(["share", "--dry-run"])
        .write_stdin(stdout(tapes(h).args([
            "search",
            "phoenix",
            "--project",
            "spotter",
        ])))
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for id in [SPOTTER_BEADS, SPOTTER_PHOENIX_BG, SPOTTER_PHX_SERVER] {
        assert!(text.contains(id), "{text}");
    }
}

/// A session whose cost is worked out by hand.
fn priced_session() -> ParsedSession {
    let msg = |role, model: &str, text: &str, usage: Option<Usage>| ParsedMessage {
        role,
        model: model.into(),
        blocks: vec![ContentBlock::text(text)],
        meta: NodeMeta {
            usage,
            project: Some("ledger".into()),
            timestamp_ms: Some(1_771_059_600_000),
            stop_reason: (role == Role::Assistant).then(|| "end_turn".to_string()),
            ..NodeMeta::default()
        },
    };
    let u = |input, output, cache_read, cache_write| {
        Some(Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
        })
    };
    ParsedSession {
        source_kind: "messages-json",
        source_id: "priced".into(),
        parent_source_id: None,
        title: None,
        messages: vec![
            msg(Role::User, "", "reconcile the quarterly ledger", None),
            msg(
                Role::Assistant,
                "claude-sonnet-4-5-20250929",
                "ledger reconciled",
                u(1000, 500, 20_000, 4_000),
            ),
            msg(Role::User, "", "now summarize", None),
            msg(
                Role::Assistant,
                "gpt-4o-2024-08-06",
                "summary of the ledger",
                u(2000, 1000, 1000, 0),
            ),
            msg(Role::User, "", "and once more", None),
            msg(
                Role::Assistant,
                "mystery-model-1",
                "done",
                u(100, 100, 0, 0),
            ),
        ],
    }
}

#[test]
fn cost_of_a_hand_computed_session_and_price_overrides() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    {
        let store = Store::open(&Home::at(h).store_dir()).unwrap();
        ingest(
            &store,
            &[Incoming {
                session: priced_session(),
                path: String::new(),
            }],
            0,
        )
        .unwrap();
    }
    let cost = |extra: &[&str]| {
        let json: Vec<serde_json::Value> = serde_json::from_str(&stdout(
            tapes(h).args(["search", "ledger", "--json"]).args(extra),
        ))
        .unwrap();
        assert_eq!(json.len(), 1);
        (
            json[0]["cost_usd"].as_f64().unwrap(),
            json[0]["unpriced_models"].clone(),
            json[0]["status"].clone(),
        )
    };
    // claude-sonnet-4-5 (3 / 15 / 0.30 / 3.75 per 1M):
    //   1000·3 + 500·15 + 20000·0.30 + 4000·3.75 = 3000 + 7500 + 6000 + 15000 = 31500 → $0.0315
    // gpt-4o (2.50 / 10 / 1.25 / 2.50):
    //   2000·2.5 + 1000·10 + 1000·1.25 + 0 = 5000 + 10000 + 1250 = 16250 → $0.01625
    // mystery-model-1: no price → $0, listed as unpriced.
    // Total $0.04775.
    let (c, unpriced, status) = cost(&[]);
    assert!((c - 0.04775).abs() < 1e-9, "{c}");
    assert_eq!(unpriced, serde_json::json!(["mystery-model-1"]));
    assert_eq!(status, "completed");

    // An override file: validate and show, then install; the mystery model gets a price.
    let file = h.join("mine.json");
    std::fs::write(
        &file,
        r#"{"mystery-model": {"input": 10, "output": 10, "cache_read": 1, "cache_write": 1}}"#,
    )
    .unwrap();
    let shown = stdout(tapes(h).args(["pricing", "--file"]).arg(&file));
    assert!(
        shown.contains("mystery-model") && shown.contains("override"),
        "{shown}"
    );
    assert!(!h.join("prices.json").exists(), "--file alone only shows");
    tapes(h)
        .args(["pricing", "--install", "--file"])
        .arg(&file)
        .assert()
        .success();
    // + (100·10 + 100·10)/1e6 = $0.002
    let (c, unpriced, _) = cost(&[]);
    assert!((c - 0.04975).abs() < 1e-9, "{c}");
    assert_eq!(unpriced, serde_json::json!([]));
    let table: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(tapes(h).args(["pricing", "--json"]))).unwrap();
    assert!(table
        .iter()
        .any(|e| e["model"] == "mystery-model" && e["source"] == "override"));

    std::fs::write(&file, r#"{"x": {"input": "cheap"}}"#).unwrap();
    let out = tapes(h)
        .args(["pricing", "--file"])
        .arg(&file)
        .assert()
        .failure();
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains("is not valid") && err.contains("USD per 1M"),
        "{err}"
    );
}

#[test]
fn the_index_follows_imports_and_survives_damage() {
    if !tapes::real_fixtures::present() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    tapes(h)
        .args(["import", &format!("{FIXTURES}/claude")])
        .assert()
        .success();
    // The first search builds the index.
    assert_eq!(ids(h, &["ledger"]), Vec::<String>::new());
    let index_dir = h.join("index");
    assert!(index_dir.join("meta.json").exists());

    // A later import updates the existing index from `ingest` itself: a sync finds nothing to do.
    let id = {
        let store = Store::open(&Home::at(h).store_dir()).unwrap();
        ingest(
            &store,
            &[Incoming {
                session: priced_session(),
                path: String::new(),
            }],
            0,
        )
        .unwrap();
        let mut index = SearchIndex::open(&search::index_dir(&store)).unwrap();
        let report = index.sync(&store, None).unwrap();
        assert_eq!((report.sessions, report.nodes), (0, 0), "{report:?}");
        SessionId::derive("messages-json", "priced")
    };
    assert_eq!(ids(h, &["ledger"]), vec![id.short()]);

    // A session that grows: only its new node is indexed.
    {
        let store = Store::open(&Home::at(h).store_dir()).unwrap();
        let mut grown = priced_session();
        grown.messages.push(ParsedMessage {
            role: Role::User,
            model: String::new(),
            blocks: vec![ContentBlock::text("also check the escrow account")],
            meta: NodeMeta::default(),
        });
        // Keep the index out of ingest's way to see sync pick it up.
        std::fs::rename(&index_dir, h.join("index.off")).unwrap();
        ingest(
            &store,
            &[Incoming {
                session: grown,
                path: String::new(),
            }],
            0,
        )
        .unwrap();
        std::fs::rename(h.join("index.off"), &index_dir).unwrap();
        let mut index = SearchIndex::open(&index_dir).unwrap();
        let before = index.documents();
        let report = index.sync(&store, None).unwrap();
        assert_eq!((report.sessions, report.nodes), (1, 1), "{report:?}");
        assert_eq!(index.documents(), before + 1);
        // Now abandoned: the last message is a prompt nobody answered.
        assert_eq!(index.facts(&id).unwrap().status.as_str(), "abandoned");
    }
    assert_eq!(ids(h, &["escrow"]), vec![id.short()]);

    // A damaged index is rebuilt, not an error.
    std::fs::write(index_dir.join("meta.json"), b"{ not json").unwrap();
    assert_eq!(ids(h, &["escrow"]), vec![id.short()]);
    assert_eq!(ids(h, &["escrow", "--reindex"]), vec![id.short()]);
}

/// A `{"messages":[...]}` transcript whose one user message says `text`.
fn write_transcript(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.json"));
    let json = serde_json::json!({
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": format!("done: {text}")},
        ]
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// Stderr of `tapes -vv search WORDS` (piped: ids on stdout).
fn traced_search(home: &Path, words: &[&str]) -> (Vec<String>, String) {
    let out = tapes(home)
        .arg("-vv")
        .arg("search")
        .args(words)
        .assert()
        .success()
        .get_output()
        .clone();
    let ids = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l[..12].to_string())
        .collect();
    (ids, String::from_utf8(out.stderr).unwrap())
}

const CURRENT: &str = "current with the store (one read)";
const SCANNED: &str = "compared with the store's refs";

#[test]
fn import_keeps_the_index_current_so_search_starts_at_once() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let files = tempfile::tempdir().unwrap();
    let first = write_transcript(files.path(), "first", "calibrate the flux capacitor");
    tapes(h)
        .args(["import", first.to_str().unwrap()])
        .assert()
        .success();
    // The import built the index: the first search neither builds nor scans.
    assert!(h.join("index").join("meta.json").exists());
    let (found, trace) = traced_search(h, &["capacitor"]);
    assert_eq!(found.len(), 1, "{trace}");
    assert!(trace.contains(CURRENT), "{trace}");
    assert!(!trace.contains(SCANNED), "{trace}");

    // A second import: the new session is searchable without a catch-up or rebuild.
    let second = write_transcript(files.path(), "second", "polish the gyroscope bearings");
    tapes(h)
        .args(["import", second.to_str().unwrap()])
        .assert()
        .success();
    let (found, trace) = traced_search(h, &["gyroscope"]);
    assert_eq!(found.len(), 1, "{trace}");
    assert_ne!(found, traced_search(h, &["capacitor"]).0);
    assert!(trace.contains(CURRENT), "{trace}");
    assert!(!trace.contains(SCANNED), "{trace}");
    assert!(!trace.contains("rebuilding"), "{trace}");
    // Table and pipe agree on the sessions and their order.
    let table = stdout(tapes(h).args(["search", "--table", "done"]));
    let piped = ids(h, &["done"]);
    assert_eq!(piped.len(), 2);
    for id in &piped {
        assert!(table.contains(id.as_str()), "{table}");
    }
}

#[test]
fn a_catch_up_with_nothing_changed_reads_only_the_generation() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(&Home::at(home.path()).store_dir()).unwrap();
    ingest(
        &store,
        &[Incoming {
            session: priced_session(),
            path: String::new(),
        }],
        0,
    )
    .unwrap();
    let dir = search::index_dir(&store);
    let mut index = SearchIndex::open(&dir).unwrap();
    let first = index.sync(&store, None).unwrap();
    assert!(first.scanned && first.rebuilt, "{first:?}");
    assert_eq!(index.generation(), Some(store.generation().unwrap()));
    assert!(search::is_current(&store).unwrap());
    // Nothing changed: no scan of the refs, in this process or the next.
    let again = index.sync(&store, None).unwrap();
    assert_eq!(again, search::SyncReport::default());
    drop(index);
    let mut reopened = SearchIndex::open(&dir).unwrap();
    assert!(!reopened.sync(&store, None).unwrap().scanned);
    // A write that is not a session's (a setting) does not move the generation.
    let before = store.generation().unwrap();
    tapes::settings::set(&store, "default-visibility.ledger", "private").unwrap();
    assert_eq!(store.generation().unwrap(), before);
    // An ingest through the library advances the index with it.
    let mut grown = priced_session();
    grown.messages.push(ParsedMessage {
        role: Role::User,
        model: String::new(),
        blocks: vec![ContentBlock::text("and the escrow")],
        meta: NodeMeta::default(),
    });
    ingest(
        &store,
        &[Incoming {
            session: grown,
            path: String::new(),
        }],
        0,
    )
    .unwrap();
    assert_ne!(store.generation().unwrap(), before);
    assert!(search::is_current(&store).unwrap());
    let mut index = SearchIndex::open(&dir).unwrap();
    assert!(!index.sync(&store, None).unwrap().scanned);
    let ids = index
        .search_ids(
            &search::SearchQuery {
                text: "escrow".into(),
                ..Default::default()
            },
            &tapes::session::pricing::PriceTable::defaults(),
        )
        .unwrap();
    assert_eq!(ids, vec![SessionId::derive("messages-json", "priced")]);
}

#[test]
fn an_index_of_an_older_generation_is_caught_up() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let files = tempfile::tempdir().unwrap();
    let first = write_transcript(files.path(), "first", "tune the theremin");
    tapes(h)
        .args(["import", first.to_str().unwrap()])
        .assert()
        .success();
    let index_dir = h.join("index");
    let old = {
        let store = Store::open(&Home::at(h).store_dir()).unwrap();
        let old = SearchIndex::open(&index_dir).unwrap().generation().unwrap();
        assert_eq!(old, store.generation().unwrap());
        // A write the index does not see (it is out of the way): the store moves on.
        std::fs::rename(&index_dir, h.join("index.off")).unwrap();
        ingest(
            &store,
            &[Incoming {
                session: priced_session(),
                path: String::new(),
            }],
            0,
        )
        .unwrap();
        std::fs::rename(h.join("index.off"), &index_dir).unwrap();
        assert!(!search::is_current(&store).unwrap());
        old
    };
    let (found, trace) = traced_search(h, &["ledger"]);
    assert_eq!(
        found,
        vec![SessionId::derive("messages-json", "priced").short()],
        "{trace}"
    );
    assert!(trace.contains(SCANNED), "{trace}");
    assert!(!trace.contains("rebuilding"), "{trace}");
    let store = Store::open(&Home::at(h).store_dir()).unwrap();
    let now = SearchIndex::open(&index_dir).unwrap().generation().unwrap();
    assert_ne!(now, old);
    assert_eq!(now, store.generation().unwrap());
    // The old session is still found: caught up, not rebuilt.
    drop(store);
    assert_eq!(traced_search(h, &["theremin"]).0.len(), 1);
}
