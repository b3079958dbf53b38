//! Which agent file stands for which tapes session (SPEC.md §17.3), and the graft that import
//! applies to such a file.
//!
//! When tapes writes a session for an agent it records, under `agent-file/<source kind>/<agent
//! session id>` (the kind and id the importer will read back from the file), an [`AgentFile`]:
//! the tapes session, the head it was written from (`base`), the chain ids the importer reads
//! from the file as written (`file_ids`), and per node of the base chain how many of those file
//! messages cover it (`ends`). Import consults it before the usual id derivation:
//!
//! - the file still starts with everything tapes wrote, plus messages: those messages are
//!   attached after `base`, to the recorded session (a fresh id for a branch or fork, the
//!   original for a pull) — exactly the new turns, whatever the agent (a Claude session
//!   continued in Codex gets Codex's turns after its Claude nodes);
//! - the file differs from what tapes wrote at file message `k` (edited or rewound history): the
//!   session's nodes that lie wholly before `k`, then the file's messages from there, go to
//!   ingest, which keeps them as a branch at that point (the trust rule, SPEC §3.4);
//! - nothing new: the session as it is (unchanged).
//!
//! After import moves the recorded session, the record moves with it in the same batch.

use serde::{Deserialize, Serialize};
use tapes_protocol::{NodeId, SessionId};

use crate::import::{ParsedMessage, ParsedSession};
use crate::store::backend::RefUpdate;
use crate::store::{Store, StoreError};

/// Prefix of the mapping records in the ref namespace.
pub const PREFIX: &[u8] = crate::store::keys::AGENT_FILE;
const VERSION: u8 = 1;

/// `agent-file/<source kind>/<source id>`.
pub fn key(source_kind: &str, source_id: &str) -> Vec<u8> {
    crate::store::keys::agent_file(source_kind, source_id)
}

/// One agent file tapes wrote, as last synced with the session it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFile {
    /// `Platform::name`.
    pub platform: String,
    /// The file, absolute.
    pub path: String,
    /// The importer's kind and id for the file's session (the key's parts).
    pub source_kind: String,
    pub source_id: String,
    /// The tapes session the file stands for.
    pub session: SessionId,
    /// The session's head when file and session last agreed.
    pub base: NodeId,
    /// The chain ids the importer reads from the file, as of then.
    pub file_ids: Vec<NodeId>,
    /// Per node of `base`'s chain: file messages up to and including it (non-decreasing).
    pub ends: Vec<u32>,
    /// When tapes wrote the file (Unix ms).
    pub written_ms: i64,
}

impl AgentFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<AgentFile> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => postcard::from_bytes(rest).ok(),
            _ => None,
        }
    }

    pub fn key(&self) -> Vec<u8> {
        key(&self.source_kind, &self.source_id)
    }
}

/// The record for a parsed session's (kind, id), with its raw bytes (the CAS expectation).
pub fn lookup(
    store: &Store,
    source_kind: &str,
    source_id: &str,
) -> Result<Option<(Vec<u8>, AgentFile)>, StoreError> {
    let Some(raw) = store.storage().get_ref(&key(source_kind, source_id))? else {
        return Ok(None);
    };
    Ok(AgentFile::decode(&raw).map(|file| (raw, file)))
}

/// Every record (few: one per file tapes wrote for an agent).
pub fn all(store: &Store) -> Result<Vec<AgentFile>, StoreError> {
    let mut out = Vec::new();
    for entry in store.storage().refs(PREFIX) {
        let (_, raw) = entry?;
        out.extend(AgentFile::decode(&raw));
    }
    Ok(out)
}

/// The records of one session's files.
pub fn of_session(store: &Store, session: &SessionId) -> Result<Vec<AgentFile>, StoreError> {
    Ok(all(store)?
        .into_iter()
        .filter(|f| f.session == *session)
        .collect())
}

/// The ref update that stores `file` (compare-and-swap on `expected`).
pub fn update(file: &AgentFile, expected: Option<Vec<u8>>) -> RefUpdate {
    RefUpdate {
        key: file.key(),
        expected,
        new: Some(file.encode()),
    }
}

/// A parsed session rewritten onto the session its file stands for.
#[derive(Debug, Clone)]
pub struct Graft {
    /// The session ingest should compare the grafted history with.
    pub target: SessionId,
    /// The session's nodes before the file's own messages, then those messages.
    pub session: ParsedSession,
    /// The record, and its bytes as read.
    pub raw: Vec<u8>,
    pub file: AgentFile,
    /// The file's chain ids as read now.
    pub file_ids: Vec<NodeId>,
    /// How many of the session's nodes the graft kept before the file's messages.
    pub kept: usize,
    /// The index in the file's messages where the grafted ones start.
    pub from: usize,
}

impl Graft {
    /// The record after ingest moved `target` to `head` with the grafted history: file and
    /// session agree again.
    pub fn synced(&self, head: NodeId) -> AgentFile {
        let mut ends: Vec<u32> = self.file.ends.iter().copied().take(self.kept).collect();
        for k in self.from..self.file_ids.len() {
            ends.push(k as u32 + 1);
        }
        AgentFile {
            base: head,
            file_ids: self.file_ids.clone(),
            ends,
            ..self.file.clone()
        }
    }
}

/// The graft for `session` when tapes wrote its file, else None. `file_ids` are the session's
/// chain ids as the importer read them.
pub fn graft(
    store: &Store,
    session: &ParsedSession,
    file_ids: &[NodeId],
) -> Result<Option<Graft>, StoreError> {
    let Some((raw, file)) = lookup(store, session.source_kind, &session.source_id)? else {
        return Ok(None);
    };
    if store.session(&file.session)?.is_none() {
        // The session was deleted since: the file is imported as what it says it is.
        return Ok(None);
    }
    let base = store.chain(&file.base)?;
    let common = file
        .file_ids
        .iter()
        .zip(file_ids)
        .take_while(|(a, b)| a == b)
        .count();
    let usable = file.ends.len() == base.len();
    let (kept, from) = if common == file.file_ids.len() && usable {
        (base.len(), common)
    } else if usable {
        // The file changed at message `common`: keep the nodes wholly before it.
        let kept = file
            .ends
            .iter()
            .take_while(|&&end| (end as usize) <= common)
            .count();
        let from = kept.checked_sub(1).map_or(0, |i| file.ends[i] as usize);
        (kept, from)
    } else {
        (0, 0)
    };
    let mut messages: Vec<ParsedMessage> = base
        .into_iter()
        .take(kept)
        .map(|(_, node)| ParsedMessage {
            role: node.body.role,
            model: node.body.model,
            blocks: node.body.blocks,
            meta: node.meta,
        })
        .collect();
    messages.extend(session.messages.iter().skip(from).cloned());
    Ok(Some(Graft {
        target: file.session,
        session: ParsedSession {
            messages,
            ..session.clone()
        },
        raw,
        file_ids: file_ids.to_vec(),
        kept,
        from,
        file,
    }))
}
