//! CLI behaviour pinned by transcripts (trycmd, as rage does): each `tests/cmd/*.toml` runs the
//! `tapes` binary with its arguments and compares status, stdout and stderr with the files
//! beside it. After a deliberate change, `TRYCMD=overwrite cargo test --test it transcripts`
//! rewrites them; review the diff like any other change.

#[test]
fn cli_transcripts() {
    trycmd::TestCases::new()
        .env("TAPES_RELAYS", "none")
        .case("tests/cmd/*.toml");
}
