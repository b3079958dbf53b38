//! The fuzz corpora as ordinary tests (SPEC.md §7, "Fuzzing"): every file under
//! `fuzz/corpus/<target>/` goes through the same entry point its libFuzzer target calls
//! (`tapes::fuzz_targets`), so an input that once crashed, hung or over-allocated stays a
//! regression test after its fix, and CI replays the corpora without a nightly toolchain.

use std::path::{Path, PathBuf};

use tapes::fuzz_targets as targets;

/// Every target of `fuzz/Cargo.toml`, with the function its binary calls.
const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("sync_frames", targets::sync_frames),
    ("reconcile", targets::reconcile_message),
    ("bundle", targets::bundle_bytes),
    ("object", targets::stored_object),
    ("manifest", targets::manifest_bytes),
    ("team_chain", targets::team_chain),
    ("join", targets::join_message),
    ("bundle_file", targets::bundle_file),
    ("pack", targets::pack_files),
    ("session_record", targets::session_record),
    ("share_record", targets::share_record),
    ("import_claude", targets::import_claude),
    ("import_codex", targets::import_codex),
    ("import_gemini", targets::import_gemini),
    ("import_messages_json", targets::import_messages_json),
    ("privacy_records", targets::privacy_records),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_input_decodes_without_panicking() {
    let mut total = 0;
    for (name, run) in TARGETS {
        let dir = corpus_root().join(name);
        let inputs = files(&dir);
        assert!(!inputs.is_empty(), "{} has no corpus", dir.display());
        for path in inputs {
            let data = std::fs::read(&path).expect("a corpus file is readable");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", path.display());
            total += 1;
        }
    }
    assert!(total > 0);
    targets::remove_scratch();
}

#[test]
fn every_corpus_directory_is_a_target() {
    let known: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    for dir in std::fs::read_dir(corpus_root()).expect("fuzz/corpus exists") {
        let dir = dir.expect("a directory entry");
        let name = dir.file_name().to_string_lossy().into_owned();
        assert!(
            known.contains(&name.as_str()),
            "fuzz/corpus/{name} belongs to no target in TARGETS"
        );
        let binary =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{name}.rs"));
        assert!(binary.is_file(), "{} is missing", binary.display());
    }
}
