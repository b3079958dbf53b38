//! tapes: git for AI-agent sessions, peer to peer.
//!
//! The library behind the `tapes` binary (whose `src/cli/` only parses arguments, calls one
//! function here and renders). The folder tree is the architecture, from the bottom up:
//!
//! | layer | path | owns |
//! |---|---|---|
//! | formats | `protocol/` (crate `tapes-protocol`) | every byte two peers must agree on: objects, canonical encodings, ids, signatures, manifests, wire messages, reconciliation (sans-IO) |
//! | store | [`store`] | the content-addressed store: the [`store::backend`] (sled journal + packs), the key space ([`store::keys`], SPEC §4.1), [`store::fsck`] |
//! | who | [`identity`], [`team`], [`settings`], [`home`] | this node's keys, teams and their key rings, settings kept in the store, where files live |
//! | sessions | [`session`] | session records, branch and fork ([`session::lineage`]), how a session ended ([`session::status`]), what it cost ([`session::pricing`]) |
//! | capture | [`import`] | agent transcripts in, as atomic batches ([`import::ingest`]), and watch mode |
//! | resume | [`resume`] | sessions out, in each agent's own format, and the agent's new turns back |
//! | audit | [`audit`] | the per-team access log: signed, hash-chained entries per writer, merge and verify (SPEC §18) |
//! | sharing | [`share`] | share records, the secret gate ([`share::gate`], [`share::secrets`]), what leaves the machine ([`share::outgoing`]) and who may see what ([`share::access`]) |
//! | moving | [`sync`] | the [`sync::remote::Remote`] trait, pull/push plans, bundles, storage providers, tracking |
//! | network | [`peer`], [`relay`] | `tapes/sync/3` over iroh between teammates, and the relay that keeps sealed copies |
//! | remotes | [`remotes`], [`provider_sync`] | configured remotes by name and opening one as a transport (path, peer); the storage providers' sync with their relay |
//! | views | [`views`] | search, stats, rendering and export |
//!
//! A module only imports modules of its own or a lower layer (a test, `tests/it/layering.rs`,
//! refuses two modules that import each other).

pub mod allocator;
pub mod audit;
pub mod duration;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod help;
pub mod home;
pub mod identity;
pub mod import;
pub mod peer;
pub mod provider_sync;
pub mod real_fixtures;
pub mod relay;
pub mod remotes;
pub mod resume;
pub mod session;
pub mod settings;
pub mod share;
pub mod store;
pub mod sync;
pub mod team;
pub mod terminal;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod views;

pub use tapes_protocol as protocol;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
