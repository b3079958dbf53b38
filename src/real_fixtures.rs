//! The real agent transcripts the conformance tests read: `../shared/fixtures/agent-transcripts`
//! beside the repository. They are other people's text and stay out of the repository, so a
//! clone alone does not have them: a test that needs them skips with one line there, and CI
//! (`.ci/run` sets `TAPES_REQUIRE_FIXTURES`) fails instead of skipping.

use std::path::PathBuf;

/// The directory of the real transcripts (it may not exist).
pub fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/agent-transcripts"
    ))
}

/// True when the real transcripts are there. When they are not, says so in one line and
/// returns false, or panics when `TAPES_REQUIRE_FIXTURES` is set (CI must not skip them).
pub fn present() -> bool {
    let dir = dir();
    if dir.is_dir() {
        return true;
    }
    if std::env::var_os("TAPES_REQUIRE_FIXTURES").is_some() {
        panic!(
            "TAPES_REQUIRE_FIXTURES is set but {} is missing; put shared/ beside the clone",
            dir.display()
        );
    }
    eprintln!(
        "skipped: {} is absent (a clone alone has no real transcripts; CI requires them)",
        dir.display()
    );
    false
}
