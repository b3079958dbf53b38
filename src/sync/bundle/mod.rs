//! Bundles: sessions in one file, for air-gapped transfer and archives (SPEC.md §12).
//!
//! [`create`] streams the selected sessions' nodes, their signed session records and share
//! records into a file (sealed to a team in ~1 MiB chunks, or plain), signs a manifest of
//! everything it included and ends with a BLAKE3 checksum. [`verify`] checks a bundle
//! without touching the store; [`import`] is all or nothing: it reads the file once, never
//! holding it whole, staging each new node as it is verified ([`crate::store::backend::Staging`]: a
//! pack file that is not part of the store yet). Only when every byte, every node, every
//! signature and the team chain have checked out does it commit the staged nodes, flush, and
//! write every ref in one compare-and-swap transaction, so a bundle lands whole or not at all.
//!
//! Memory: one frame (or sealed chunk) at a time, plus about 150 bytes per node in the bundle
//! (its id and parent, to check that chains link up, and where it sits in the staged pack) and
//! the session records.

mod check;
mod create;
mod import;

pub use check::{verify, BundleInfo, BundledSession};
pub use create::{
    create, personal_chain, prepare, CreateOptions, Created, LeftOut, Prepared, Sealing,
};
pub use import::{import, ImportReport, Outcome};

use check::{run, Check};
use import::removed_by;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tapes_protocol::bundle::{
    self as format, kind, Checksum, FormatError, FrameHead, Header, ObjectList, RefEntry, Refs,
    SessionEntry, SignedRefs, PRELUDE_LEN, TRAILER_LEN,
};
use tapes_protocol::manifest::SignedManifest;
use tapes_protocol::team_chain::TeamChain;
use tapes_protocol::{MemberId, NodeId, SessionId, StoredObject, TeamId};

use crate::identity::Identity;
use crate::session::{session_ref_key, SessionRecord};
use crate::share::outgoing::{self, PathPolicy};
use crate::share::{share_key, Audience, SignedShare};
use crate::store::backend::{RefUpdate, Staging, StorageError, Written};
use crate::store::{Store, StoreError};
use crate::sync::remote::RefSignature;
use crate::team::keyring::{self, KeyError, KeyRing, Sealed};
use crate::team::{self, TeamError};

/// Plaintext per sealed chunk: large enough to amortize age's per-message header, small
/// enough to keep memory flat.
pub const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session's project keeps its content on this machine (SPEC.md §11.4).
    #[error(transparent)]
    ContentStaysHere(#[from] crate::share::summary::ContentStaysHere),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a tapes bundle, or its start is damaged: {why}")]
    NotABundle { path: String, why: FormatError },
    #[error("{path} is truncated: it ends at byte {len}, inside {what}; copy the file again")]
    Truncated {
        path: String,
        len: u64,
        what: &'static str,
    },
    #[error("{path} is damaged: its checksum does not match its contents, so bytes were changed after it was made (first problem seen: {detail}); copy the file again")]
    Damaged { path: String, detail: String },
    #[error(
        "{path} has {extra} bytes of trailing garbage after the bundle's end; copy the file again"
    )]
    Trailing { path: String, extra: u64 },
    #[error("{path} is not a valid bundle: {why}")]
    Invalid { path: String, why: String },
    #[error("{path} is sealed to team {name} ({team}), which you are not a member of; ask a member of {name} to invite you, or ask the sender for a bundle sealed to a team you are in")]
    NotMember {
        path: String,
        team: String,
        name: String,
    },
    #[error("{path} is sealed to team {name} ({team}); opening it needs your identity: run `tapes init` and join the team first")]
    NoIdentity {
        path: String,
        team: String,
        name: String,
    },
    #[error("{path} is refused: {why}")]
    Signer { path: String, why: String },
    #[error("{path} is incremental on {basis_name} (checksum {basis}), whose nodes are not in your store: import {basis_name} first")]
    NeedsBasis {
        path: String,
        basis_name: String,
        basis: String,
    },
    #[error("{path} needs node {id} ({what}), which is neither in the bundle nor in your store; ask the sender for a complete bundle")]
    MissingNode {
        path: String,
        id: String,
        what: String,
    },
    #[error("session {session}: your store has it at node {here} and the bundle at node {there}, and neither history contains the other; import the bundle into another TAPES_HOME, or ask the sender to fork the session")]
    Diverged {
        session: String,
        here: String,
        there: String,
    },
    #[error("session {session} in your store belongs to {here}, but the bundle's copy belongs to {there}")]
    OtherOwner {
        session: String,
        here: String,
        there: String,
    },
    #[error("the store changed during the import (another tapes process?); no session was changed; run the import again")]
    Raced,
    #[error("session {session} belongs to {owner}; a plain bundle carries only your own sessions: seal it to a team you share with them (--team T), or leave the session out")]
    NotYours { session: String, owner: String },
    #[error("session {session} belongs to {owner}, who is not a member of team {team}; seal to a team they are in, or leave the session out")]
    OwnerNotInTeam {
        session: String,
        owner: String,
        team: String,
    },
    #[error("you are not a member of team {0}; you can only seal bundles to your own teams")]
    NotInTeam(String),
    #[error("team {team}: {source}")]
    Key { team: String, source: KeyError },
    #[error("no session matches; nothing to bundle (`tapes sessions` lists them)")]
    NoSessions,
    /// The secret gate's scan could not be done.
    #[error(transparent)]
    Gate(#[from] crate::share::gate::GateError),
    /// A redacted copy could not be made.
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn me(identity: &Identity) -> MemberId {
    MemberId(identity.verifying_key().to_bytes())
}

fn short(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(6)])
}

impl BundleError {
    /// True when the bundle was refused while reading or checking it, before anything was
    /// written: an import that failed this way left the store exactly as it was.
    pub fn rejected_before_writing(&self) -> bool {
        matches!(
            self,
            BundleError::NotABundle { .. }
                | BundleError::Truncated { .. }
                | BundleError::Damaged { .. }
                | BundleError::Trailing { .. }
                | BundleError::Invalid { .. }
                | BundleError::NotMember { .. }
                | BundleError::NoIdentity { .. }
                | BundleError::Signer { .. }
                | BundleError::NeedsBasis { .. }
                | BundleError::MissingNode { .. }
                | BundleError::Diverged { .. }
                | BundleError::OtherOwner { .. }
                | BundleError::Raced
        )
    }
}
