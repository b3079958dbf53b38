//! tapes-protocol: the sans-IO heart of tapes.
//!
//! This crate owns what two tapes peers must agree on byte for byte: the node model, its
//! canonical encoding, how ids are derived from it, and the stored-object layout. It does no
//! I/O: no files, no sockets, no clocks. Everything here is specified normatively in `SPEC.md`
//! at the repository root and pinned by the conformance vectors in `protocol/vectors/`.

pub mod audit;
pub mod batch_key;
pub mod bundle;
pub mod bytes;
pub mod canonical;
pub mod canonical_json;
pub mod chain_check;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod history;
pub mod id;
pub mod join;
pub mod manifest;
pub mod node;
pub mod object;
pub mod reconcile;
pub mod record;
pub mod signed;
pub mod summary;
pub mod sync;
pub mod team_chain;
pub mod tombstone;
mod wire_bytes;

pub use id::{IdParseError, ManifestId, MemberId, NodeId, SessionId, TeamId};
pub use node::{ContentBlock, ImageSource, Node, NodeBody, NodeMeta, Role, ToolResultPart, Usage};
pub use object::{ObjectError, StoredObject};
