//! Peers: replication between teammates' machines over iroh (QUIC, dialled by node id), the
//! `tapes/sync/3` protocol of SPEC.md §15.
//!
//! [`endpoint`] binds an iroh endpoint with this node's identity key; [`frames`] reads and
//! writes protocol frames on QUIC streams; [`server`] answers teammates (`tapes serve`);
//! [`client`] dials one and fetches, pushes, pulls or joins; [`receive`] verifies everything a
//! peer sends before anything is stored. What a peer may see is decided in [`crate::share::access`].

pub mod addr;
pub mod audit_sync;
pub mod client;
pub mod endpoint;
mod fetch_writer;
pub mod frames;
pub mod guard;
pub mod network;
pub mod peer_remote;
pub mod receive;
pub mod relay_client;
pub mod serve;
pub mod server;
pub mod tombstone_sync;

use crate::share::access::AccessError;
use crate::store::StoreError;
use crate::team::keyring::KeyError;
use crate::team::TeamError;
use tapes_protocol::{NodeId, SessionId};

/// Errors of peer-to-peer sync.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot open a network endpoint: {0}; check --bind, or that another `tapes serve` is not using the port")]
    Bind(String),
    #[error("cannot reach peer {peer}: {why}; is `tapes serve` running there, and is the address right (`tapes remote add <name> <node-id>@<host:port>`)?")]
    Connect { peer: String, why: String },
    #[error("peer {peer} speaks another version of the tapes protocol: this tapes speaks {ours}, and the peer offers none of the versions it knows; upgrade tapes on the older side (`tapes --version` on both)")]
    ProtocolVersion { peer: String, ours: String },
    #[error("cannot reach {relay}: {why}; is `tapes relay` running there, and is the ticket right (`tapes remote add <name> relay:<ticket>`, the ticket `tapes relay` prints)?")]
    RelayConnect {
        /// How the relay is named: `the relay`, or relay `name`.
        relay: String,
        why: String,
    },
    #[error("the connection to peer {peer} broke: {why}; run the command again, it resumes where it stopped")]
    Connection { peer: String, why: String },
    /// Something about this node's own sessions that stops a push before anything is sent.
    #[error("{0}")]
    Local(String),
    #[error("peer {peer} refused: {reason}")]
    Refused { peer: String, reason: String },
    #[error(
        "peer {peer} broke the protocol: {why}; disconnected, nothing of that batch was stored"
    )]
    Protocol { peer: String, why: String },
    #[error("peer {peer} sent {what} {id} that does not verify: {why}; disconnected, nothing of that batch was stored")]
    BadObject {
        peer: String,
        what: &'static str,
        id: String,
        why: String,
    },
    #[error("conflict: session {session} on {peer} moved on (it is at {current}); {next}")]
    Conflict {
        /// "peer alice", "relay home".
        peer: String,
        session: String,
        current: String,
        /// What to do now: [`PeerError::conflict_at_peer`] or [`PeerError::conflict_at_relay`].
        next: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl PeerError {
    /// The same error for a dial that was to a relay (`tapes relay`), not a peer's
    /// `tapes serve`: a failed dial then gives the advice that fits a relay.
    /// A push that could not be built here (not ours, a base not in the history, the store).
    pub fn from_transfer(e: crate::sync::transfer::TransferError) -> PeerError {
        match e {
            crate::sync::transfer::TransferError::Store(e) => PeerError::Store(e),
            other => PeerError::Local(other.to_string()),
        }
    }

    pub fn at_relay(self) -> PeerError {
        match self {
            PeerError::Connect { peer, why } => PeerError::RelayConnect {
                // Never "relay relay": the remote usually is named `relay`.
                relay: if peer == "relay" || peer.starts_with("the ") {
                    "the relay".into()
                } else {
                    format!("relay `{peer}`")
                },
                why,
            },
            other => other,
        }
    }
}

impl PeerError {
    /// A push to a peer lost its compare-and-swap: the peer's session is at `current`.
    pub fn conflict_at_peer(peer: &str, session: &SessionId, current: Option<NodeId>) -> PeerError {
        PeerError::Conflict {
            peer: format!("peer {peer}"),
            session: session.short(),
            current: current.map_or("nothing".into(), |c| c.short()),
            next: format!(
                "run `tapes pull {}` to refresh your base, or `tapes branch`/`tapes fork` to keep your work as a new session",
                session.short()
            ),
        }
    }

    /// A deposit at a relay lost its compare-and-swap: another machine of yours deposited a
    /// newer version. `tapes pull` does not take from a relay and a fetch never replaces your
    /// own work, so the way on is to keep this machine's work as a new session.
    pub fn conflict_at_relay(
        relay: &str,
        session: &SessionId,
        current: Option<NodeId>,
    ) -> PeerError {
        PeerError::Conflict {
            peer: format!("relay {relay}"),
            session: session.short(),
            current: current.map_or("nothing".into(), |c| c.short()),
            next: format!(
                "another machine of yours deposited a newer version; keep this machine's work as a new session with `tapes branch {0}` (or `tapes fork {0}`) and sync again",
                session.short()
            ),
        }
    }
}
