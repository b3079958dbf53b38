//! tapes: git for AI-agent sessions, peer to peer.
//!
//! The library behind the `tapes` binary. The object model and its encodings live in the
//! sans-IO `tapes-protocol` crate; this crate adds the things that touch the world: the store
//! on disk ([`storage`], [`store`]), identities ([`identity`]), importers ([`import`],
//! [`ingest`], [`watch`]), verification ([`fsck`]) and rendering for humans ([`render`]).

pub mod access;
pub mod bundle;
pub mod duration;
pub mod export;
pub mod fsck;
pub mod gate;
pub mod help;
pub mod home;
pub mod identity;
pub mod import;
pub mod ingest;
pub mod keys;
pub mod lineage;
pub mod outgoing;
pub mod peer;
pub mod pricing;
pub mod provider;
pub mod real_fixtures;
pub mod relay;
pub mod remote;
pub mod render;
pub mod resume;
pub mod sample;
pub mod search;
pub mod secrets;
pub mod session;
pub mod settings;
pub mod share;
pub mod stats;
pub mod status;
pub mod storage;
pub mod store;
pub mod team_keys;
pub mod teams;
pub mod terminal;
pub mod tracking;
pub mod transfer;
pub mod watch;

pub use tapes_protocol as protocol;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
