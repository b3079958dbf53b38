//! The integration tests, one binary (as ripgrep does: one link of the library and its
//! dependencies instead of one per file). Each module is one area, named as before; shared
//! parts: `util` (how a test runs the `tapes` binary), `agents` (the real agent CLIs against a
//! stand-in model API, SPEC.md §17) and `netns`
//! (network namespaces: two hosts on a LAN, two homes behind NATs with a relay between).
//!
//! `cargo test --test it <module>::` runs one area, e.g. `cargo test --test it nat::`.

mod agents;
mod netns;
mod util;

mod audit;
mod bundle;
mod cli;
mod collaborate_cli;
mod conn_cap;
mod crash;
mod crash_ops;
mod crash_relay;
mod deck;
mod delete;
mod export;
mod fixtures;
mod fsck;
mod full_disk;
mod fuzz_corpus;
mod hostile;
mod hostile_net;
mod lan;
mod layering;
mod lineage;
mod messages_cli;
mod metadata_only;
mod nat;
mod peer;
mod pipes;
mod push_race;
mod relay;
mod relay_s3;
mod retention;
mod search;
mod serve_cli;
mod sessions_list;
mod share;
mod stats;
mod status;
mod storage_cli;
mod store_sharing;
mod team_cli;
mod teams;
mod transcripts;
mod view_cache;
mod views;
mod watch;
mod writers;
mod writers_procs;
