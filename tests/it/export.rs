//! `tapes export`: the JSON bundle shape of the team-sharing RFC (§1.2) with its checksum,
//! JSONL one session per line, CSV with a header row and RFC 4180 quoting; filters and ids on
//! stdin, through the real binary.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tapes::home::Home;
use tapes::import::ingest::{ingest, Incoming};
use tapes::import::ParsedSession;
use tapes::protocol::ContentBlock;
use tapes::session::sample::{self, Shape};
use tapes::store::Store;

const PROMPT: &str = "Fix the parser, then say \"done\", please";
const PROJECT: &str = "odd, \"quoted\"\nproject";

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let world = World {
            dir: tempfile::tempdir().unwrap(),
        };
        world.ok(&["init", "--name", "alice"], None);
        let mut sessions: Vec<ParsedSession> = (0..4)
            .map(|i| sample::session(5, i, Shape::default()))
            .collect();
        let mut odd = sample::session(5, 99, Shape::default());
        odd.messages[0].blocks = vec![ContentBlock::text(PROMPT)];
        for m in &mut odd.messages {
            m.meta.project = Some(PROJECT.into());
        }
        sessions.push(odd);
        // The store is single-process: open, ingest, close before the binary runs.
        let store = Store::open(&Home::at(world.home()).store_dir()).unwrap();
        let incoming: Vec<Incoming> = sessions
            .into_iter()
            .map(|session| Incoming {
                session,
                path: String::new(),
            })
            .collect();
        ingest(&store, &incoming, 1_771_059_600_000).unwrap();
        drop(store);
        world
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = super::util::tapes(self.home());
        cmd.current_dir(self.dir.path()).args(args);
        if let Some(input) = stdin {
            cmd.write_stdin(input);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "tapes {}\n{stdout}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A minimal RFC 4180 reader: records of fields, quotes doubled inside quoted fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "CSV ends mid-record"
    );
    rows
}

#[test]
fn json_has_the_rfc_bundle_shape_with_nodes_and_a_checksum() {
    let world = World::new();
    world.ok(
        &["export", "--format", "json", "-o", "all.json", "--all"],
        None,
    );
    let text = read(&world.path("all.json"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["format"], "tape-bundle");
    assert!(doc["exported_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(doc["exported_by"], "alice");
    assert!(doc["filter"].is_object());
    let sessions = doc["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 5);
    for s in sessions {
        for key in [
            "id",
            "project",
            "model",
            "start_time",
            "end_time",
            "total_cost",
            "input_tokens",
            "output_tokens",
            "nodes",
            "facets",
        ] {
            assert!(s.get(key).is_some(), "session lacks `{key}`: {s}");
        }
        assert_eq!(
            s["nodes"].as_array().unwrap().len() as u64,
            s["messages"].as_u64().unwrap()
        );
        assert!(s["nodes"][0]["id"].as_str().unwrap().len() == 64);
        assert!(
            s["total_cost"].as_f64().unwrap() > 0.0,
            "sample models are priced"
        );
    }
    // The checksum covers the exact bytes of the sessions array.
    let start = text.find("\"sessions\":").unwrap() + "\"sessions\":".len();
    let end = text.rfind(",\"checksum\"").unwrap();
    let sum = blake3::Hasher::new_derive_key(tapes::views::export::EXPORT_CHECKSUM_CONTEXT)
        .update(&text.as_bytes()[start..end])
        .finalize();
    assert_eq!(
        doc["checksum"].as_str().unwrap(),
        format!("blake3:{}", hex::encode(sum.as_bytes()))
    );

    // Filters are recorded and applied.
    let out = world.ok(&["export", "--project", PROJECT], None);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(doc["filter"]["project"], PROJECT);
    let out = world.ok(&["export", "--date", "2026-02-14"], None);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sessions"].as_array().unwrap().len(), 5);
    let out = world.ok(&["export", "--date", "2026-02-13"], None);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["sessions"].as_array().unwrap().len(), 0);
}

#[test]
fn jsonl_is_one_session_per_line_and_takes_ids_on_stdin() {
    let world = World::new();
    let out = world.ok(&["export", "--format", "jsonl", "--all"], None);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5);
    let ids: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["nodes"].is_array());
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    let out = world.ok(
        &["export", "--format", "jsonl"],
        Some(&format!("{}\n{}\n", &ids[1][..10], ids[3])),
    );
    let picked: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut expected = vec![ids[1].clone(), ids[3].clone()];
    expected.sort();
    let mut picked_sorted = picked.clone();
    picked_sorted.sort();
    assert_eq!(picked_sorted, expected);
}

#[test]
fn csv_has_a_header_row_one_row_per_session_and_quotes_properly() {
    let world = World::new();
    world.ok(&["export", "-o", "all.csv", "--all"], None);
    let text = read(&world.path("all.csv"));
    assert!(text.starts_with("id,project,agent,model,start_time,end_time,duration_s,messages,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,total_cost,first_prompt\r\n"));
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 6, "header + 5 sessions");
    assert!(rows.iter().all(|r| r.len() == 14));
    let odd = rows
        .iter()
        .find(|r| r[1] == PROJECT)
        .expect("the odd session");
    assert_eq!(odd[13], PROMPT);
    assert!(text.contains("\"odd, \"\"quoted\"\"\nproject\""));
    assert!(text.contains("\"Fix the parser, then say \"\"done\"\", please\""));
    assert!(odd[12].parse::<f64>().unwrap() > 0.0);
    // No nodes in CSV: metadata only.
    assert!(!text.contains("let value_"));
}

/// Runs `tapes` in `world`; returns (exit code, stdout, stderr).
fn run(world: &World, args: &[&str]) -> (i32, String, String) {
    let out = super::util::tapes(world.home())
        .env_remove("RUST_LOG")
        .current_dir(world.dir.path())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn export_passes_the_secret_gate_and_writes_no_working_directories() {
    let world = World::new();
    // A sixth session with a key in its first message.
    let key = concat!("sk-", "proj-", "Xq7vB2mK9pLw", "4Rt8Yz3Nc6Hd", "1Gf5Js0Ua");
    let mut leaky = sample::session(6, 0, Shape::default());
    leaky.messages[0]
        .blocks
        .push(ContentBlock::text(format!("OPENAI_API_KEY={key}")));
    let store = Store::open(&Home::at(world.home()).store_dir()).unwrap();
    let report = ingest(
        &store,
        &[Incoming {
            session: leaky,
            path: String::new(),
        }],
        1_771_059_600_000,
    )
    .unwrap();
    let leaky_id = report.sessions[0].id;
    drop(store);

    // Refused: the session with the key is left out (exit 1), the others are written.
    let (code, _, err) = run(&world, &["export", "--all", "-o", "out.json"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "1 possible secret in session {}; it was left out of the export.",
            leaky_id.short()
        )),
        "{err}"
    );
    assert!(err.contains("OpenAI API key"), "{err}");
    assert!(!err.contains(key), "{err}");
    let text = read(&world.path("out.json"));
    assert!(!text.contains(key));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["sessions"].as_array().unwrap().len(), 5);
    // Working directories are written as the project's name.
    for s in doc["sessions"].as_array().unwrap() {
        for node in s["nodes"].as_array().unwrap() {
            let cwd = node["meta"]["cwd"].as_str().unwrap_or_default();
            assert!(!cwd.contains('/'), "{cwd}");
        }
    }
    assert!(!text.contains("/home/dev/"));

    // --dry-run lists and writes nothing.
    let (code, out, _) = run(&world, &["export", "--all", "-o", "dry.json", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("{}: 1 possible secret;", leaky_id.short())),
        "{out}"
    );
    assert!(!out.contains(key));
    assert!(!world.path("dry.json").exists());

    // --redact writes it redacted; --allow-secrets as is.
    let (code, _, err) = run(
        &world,
        &[
            "export",
            "--all",
            "--format",
            "jsonl",
            "-o",
            "red.jsonl",
            "--redact",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let red = read(&world.path("red.jsonl"));
    assert_eq!(red.lines().count(), 6);
    assert!(!red.contains(key));
    assert!(red.contains("[REDACTED:OpenAI API key]"));
    let (code, _, err) = run(
        &world,
        &["export", "--all", "-o", "all.json", "--allow-secrets"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(read(&world.path("all.json")).contains(key));
}
