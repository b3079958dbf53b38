//! The relay (`tapes relay`, SPEC.md §16): an always-on peer that keeps a team's shared
//! sessions available while laptops are closed. It speaks the same `tapes/sync/3` protocol as
//! a teammate's node, but it holds no team key: team content reaches it sealed and leaves it
//! sealed, and it keeps only what it needs in the clear to decide who may see what (verified
//! manifest chains, heads, node ids, item ids, expiry).
//!
//! * [`config`]: per-team quotas and retention from `relay.toml`.
//! * [`retention`]: removing deposits older than their team's retention.
//! * [`backend`]: where that state lives: the relay's own store, or a bucket shared by many
//!   relay processes (SPEC.md §16.13).
//! * [`state`]: what the relay stores and the rules for changing it.
//! * [`server`]: the protocol handler.
//! * [`http`]: the public page, `/s/<session>`.
//! * [`withdraw`]: a metadata-only share replacing content the relay held (SPEC.md §16.3).

pub mod audit_log;
pub mod backend;
pub mod config;
pub mod http;
pub mod iroh_relay;
pub mod retention;
pub mod run;
pub mod server;
pub mod state;
pub mod tombstones;
pub mod withdraw;

pub use config::{Quota, RelayConfig};
pub use server::RelayServer;
pub use state::RelayState;

use crate::store::StoreError;

/// Why a relay refused or failed a request. The text goes back to the client as the reason.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("team {0} is not registered on this relay; an admin registers it with `tapes relay register --team <team> <relay>`")]
    NotRegistered(String),
    #[error("only an admin or the owner of team {0} may do that on a relay; ask one of them")]
    NotAdmin(String),
    #[error("you are not a current member of team {0} on this relay (if you just joined, ask an admin to run `tapes storage sync` so the relay learns the new manifest)")]
    NotMember(String),
    #[error("the team's manifest chain does not verify: {0}")]
    BadChain(String),
    #[error("quota exceeded: {0}")]
    Quota(String),
    #[error("session {0} at this relay belongs to another node; a relay takes a session only from its owner (fork it to share your own copy)")]
    NotOwner(String),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the relay's data is damaged: {0}; restore the relay's data directory from a backup")]
    Damaged(String),
    #[error("another request changed the same record at the same moment; retry")]
    Busy,
    #[error(transparent)]
    Bucket(Box<backend::BucketError>),
    #[error("relay configuration {path}: {why}")]
    Config { path: String, why: String },
}
