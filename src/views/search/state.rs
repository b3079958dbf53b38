//! The search index's state file (SPEC.md §13, "Search index"): per session, the head that was
//! indexed and the facts listings need, plus the store generation the index is current with.
//!
//! Every index commit writes a new `state-<nonce>.bin` beside tantivy's files and names it in
//! the commit's payload, so state and documents change together; the previous file is deleted
//! after the commit. The file is laid out to be opened in O(1) and read lazily (a search reads
//! the facts of the sessions it returns, not of all sessions):
//!
//! ```text
//! "TIX1" || version u32 || next_ordinal u32 || n u32 || has_generation u8 || epoch [16] || count u64
//! n entries, sorted by session id: id [16] || ordinal u32 || started i64 || head [32] || offset u32 || len u32
//! next_ordinal u32: the entry of each ordinal (u32::MAX: none)
//! facts: postcard(SessionFacts) of each entry at its offset
//! ```
//!
//! All integers are little-endian. A file that does not parse is damage: the index is rebuilt.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use tapes_protocol::{NodeId, SessionId};

use super::SessionFacts;
use crate::store::generation::Generation;

const MAGIC: &[u8; 4] = b"TIX1";
const HEADER: usize = 4 + 4 + 4 + 4 + 1 + 16 + 8;
const ENTRY: usize = 16 + 4 + 8 + 32 + 4 + 4;
const NONE: u32 = u32::MAX;

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A state, as read from its file (or just encoded).
pub(super) struct State {
    pub version: u32,
    pub next_ordinal: u32,
    /// The store generation everything in the index is current with (`None`: not known, the
    /// next catch-up scans the store's refs).
    pub generation: Option<Generation>,
    len: usize,
    bytes: Bytes,
    facts_at: usize,
    decoded: Vec<OnceLock<Option<Box<SessionFacts>>>>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, i64::from_le_bytes)
}

impl State {
    /// An empty state of `version`.
    pub fn empty(version: u32) -> State {
        State::from_bytes(Bytes::Owned(encode(version, 0, None, &BTreeMap::new())))
            .unwrap_or_else(|| unreachable!("an empty state parses"))
    }

    /// Reads a state file (mapped: opening costs the same at any size).
    pub fn read(path: &Path) -> std::io::Result<Option<State>> {
        let file = std::fs::File::open(path)?;
        // SAFETY: state files are written once under a fresh name and never modified in place
        // (a new commit writes a new file and deletes this one; a deleted file stays mapped).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(State::from_bytes(Bytes::Mapped(map)))
    }

    /// A state from freshly encoded bytes.
    pub fn from_encoded(bytes: Vec<u8>) -> Option<State> {
        State::from_bytes(Bytes::Owned(bytes))
    }

    fn from_bytes(bytes: Bytes) -> Option<State> {
        let b: &[u8] = &bytes;
        if b.len() < HEADER || &b[..4] != MAGIC {
            return None;
        }
        let version = u32_at(b, 4);
        let next_ordinal = u32_at(b, 8);
        let len = u32_at(b, 12) as usize;
        let generation = match b[16] {
            0 => None,
            _ => Generation::decode(&b[17..HEADER]),
        };
        let facts_at = HEADER
            .checked_add(len.checked_mul(ENTRY)?)?
            .checked_add((next_ordinal as usize).checked_mul(4)?)?;
        if facts_at > b.len() {
            return None;
        }
        // The facts are written in entry order, so the last entry's end is the file's end: a
        // file cut short (a crash before the page cache reached the disk) is refused whole.
        let end = match len.checked_sub(1) {
            None => facts_at,
            Some(last) => {
                let at = HEADER + last * ENTRY;
                facts_at + u32_at(b, at + 60) as usize + u32_at(b, at + 64) as usize
            }
        };
        if end != b.len() {
            return None;
        }
        let decoded = std::iter::repeat_with(OnceLock::new).take(len).collect();
        Some(State {
            version,
            next_ordinal,
            generation,
            len,
            bytes,
            facts_at,
            decoded,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn entry(&self, e: usize) -> &[u8] {
        let at = HEADER + e * ENTRY;
        &self.bytes[at..at + ENTRY]
    }

    pub fn id(&self, e: usize) -> SessionId {
        SessionId::from_slice(&self.entry(e)[..16]).unwrap_or_else(|| unreachable!("16 bytes"))
    }

    pub fn ordinal(&self, e: usize) -> u32 {
        u32_at(self.entry(e), 16)
    }

    /// When the session started (its record's creation when no message has a timestamp).
    pub fn started(&self, e: usize) -> i64 {
        i64_at(self.entry(e), 20)
    }

    pub fn head(&self, e: usize) -> Option<NodeId> {
        NodeId::from_slice(&self.entry(e)[28..60])
    }

    /// The entry of a session.
    pub fn find(&self, id: &SessionId) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len);
        let key = id.as_bytes().as_slice();
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.entry(mid)[..16].cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The entry of an ordinal.
    pub fn entry_of_ordinal(&self, ordinal: usize) -> Option<usize> {
        if ordinal >= self.next_ordinal as usize {
            return None;
        }
        let e = u32_at(&self.bytes, HEADER + self.len * ENTRY + ordinal * 4);
        (e != NONE && (e as usize) < self.len).then_some(e as usize)
    }

    /// The encoded facts of an entry.
    fn raw(&self, e: usize) -> Option<&[u8]> {
        let entry = self.entry(e);
        let (off, len) = (u32_at(entry, 60) as usize, u32_at(entry, 64) as usize);
        let start = self.facts_at.checked_add(off)?;
        self.bytes.get(start..start.checked_add(len)?)
    }

    /// The facts of an entry, decoded on first use (`None`: damaged, treated as not indexed).
    pub fn facts(&self, e: usize) -> Option<&SessionFacts> {
        self.decoded
            .get(e)?
            .get_or_init(|| postcard::from_bytes(self.raw(e)?).ok().map(Box::new))
            .as_deref()
    }

    /// This state with `changes` applied (`None` drops a session), encoded: the facts of
    /// sessions not changed are copied as they are, not decoded.
    pub fn encode_changed(
        &self,
        version: u32,
        next_ordinal: u32,
        generation: Option<Generation>,
        changes: &BTreeMap<SessionId, Option<SessionFacts>>,
    ) -> Vec<u8> {
        let mut items: Vec<Item> = Vec::with_capacity(self.len + changes.len());
        let mut changed = changes.iter().peekable();
        let new = |id: &SessionId, f: &SessionFacts| Item {
            id: *id,
            ordinal: f.ordinal,
            started: f.started(),
            head: f.head,
            raw: std::borrow::Cow::Owned(postcard::to_stdvec(f).unwrap_or_default()),
        };
        for e in 0..self.len {
            let id = self.id(e);
            while let Some((cid, change)) = changed.next_if(|(cid, _)| **cid < id) {
                if let Some(f) = change {
                    items.push(new(cid, f));
                }
            }
            if let Some((cid, change)) = changed.next_if(|(cid, _)| **cid == id) {
                if let Some(f) = change {
                    items.push(new(cid, f));
                }
                continue;
            }
            let (Some(head), Some(raw)) = (self.head(e), self.raw(e)) else {
                continue;
            };
            items.push(Item {
                id,
                ordinal: self.ordinal(e),
                started: self.started(e),
                head,
                raw: std::borrow::Cow::Borrowed(raw),
            });
        }
        for (cid, change) in changed {
            if let Some(f) = change {
                items.push(new(cid, f));
            }
        }
        write(version, next_ordinal, generation, &items)
    }

    /// Every session's facts.
    #[cfg(test)]
    pub fn to_map(&self) -> BTreeMap<SessionId, SessionFacts> {
        (0..self.len)
            .filter_map(|e| Some((self.id(e), self.facts(e)?.clone())))
            .collect()
    }
}

/// The version and generation recorded by the current commit of the index in `dir`, read from
/// its `meta.json` and the first bytes of its state file, without opening the index (`None`:
/// no index, or not one this reads).
pub fn peek(dir: &Path, prefix: &str) -> Option<(u32, Option<Generation>)> {
    use std::io::Read as _;
    #[derive(serde::Deserialize)]
    struct Meta {
        payload: Option<String>,
    }
    let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
    let name = meta.payload?.strip_prefix(prefix)?.to_string();
    if name.contains('/') || name.contains("..") {
        return None;
    }
    let mut head = [0u8; HEADER];
    std::fs::File::open(dir.join(name))
        .ok()?
        .read_exact(&mut head)
        .ok()?;
    if &head[..4] != MAGIC {
        return None;
    }
    let generation = match head[16] {
        0 => None,
        _ => Generation::decode(&head[17..HEADER]),
    };
    Some((u32_at(&head, 4), generation))
}

/// One session as written: its entry's fields and its encoded facts.
struct Item<'a> {
    id: SessionId,
    ordinal: u32,
    started: i64,
    head: NodeId,
    raw: std::borrow::Cow<'a, [u8]>,
}

/// Encodes a state.
pub fn encode(
    version: u32,
    next_ordinal: u32,
    generation: Option<Generation>,
    sessions: &BTreeMap<SessionId, SessionFacts>,
) -> Vec<u8> {
    let items: Vec<Item> = sessions
        .iter()
        .map(|(id, f)| Item {
            id: *id,
            ordinal: f.ordinal,
            started: f.started(),
            head: f.head,
            raw: std::borrow::Cow::Owned(postcard::to_stdvec(f).unwrap_or_default()),
        })
        .collect();
    write(version, next_ordinal, generation, &items)
}

/// Writes items sorted by id.
fn write(
    version: u32,
    next_ordinal: u32,
    generation: Option<Generation>,
    items: &[Item],
) -> Vec<u8> {
    let sessions = items;
    let mut blob = Vec::new();
    let mut entries = Vec::with_capacity(sessions.len() * ENTRY);
    let mut by_ordinal = vec![NONE; next_ordinal as usize];
    for (e, item) in items.iter().enumerate() {
        entries.extend_from_slice(item.id.as_bytes());
        entries.extend_from_slice(&item.ordinal.to_le_bytes());
        entries.extend_from_slice(&item.started.to_le_bytes());
        entries.extend_from_slice(item.head.as_bytes());
        entries.extend_from_slice(&(blob.len() as u32).to_le_bytes());
        entries.extend_from_slice(&(item.raw.len() as u32).to_le_bytes());
        blob.extend_from_slice(&item.raw);
        if let Some(slot) = by_ordinal.get_mut(item.ordinal as usize) {
            *slot = e as u32;
        }
    }
    let mut out = Vec::with_capacity(HEADER + entries.len() + by_ordinal.len() * 4 + blob.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&next_ordinal.to_le_bytes());
    out.extend_from_slice(&(sessions.len() as u32).to_le_bytes());
    out.push(u8::from(generation.is_some()));
    out.extend_from_slice(&generation.unwrap_or(Generation::NONE).encode());
    out.extend_from_slice(&entries);
    for e in by_ordinal {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.extend_from_slice(&blob);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::status::Status;

    fn facts(n: u8, ordinal: u32) -> SessionFacts {
        SessionFacts {
            head: NodeId::from_slice(&[n; 32]).unwrap(),
            status: Status::Completed,
            nodes: u64::from(n),
            usage: BTreeMap::new(),
            started_ms: Some(1000 + i64::from(n)),
            ended_ms: None,
            created_ms: 5,
            project: format!("p{n}"),
            model: String::new(),
            agent: "claude".into(),
            ordinal,
        }
    }

    #[test]
    fn a_state_reads_back_by_id_and_by_ordinal() {
        let mut map = BTreeMap::new();
        for (n, ordinal) in [(3u8, 0u32), (1, 2), (2, 3)] {
            map.insert(SessionId::from_slice(&[n; 16]).unwrap(), facts(n, ordinal));
        }
        let generation = Generation {
            epoch: [7; 16],
            count: 42,
        };
        let state = State::from_encoded(encode(4, 4, Some(generation), &map)).unwrap();
        assert_eq!((state.version, state.next_ordinal), (4, 4));
        assert_eq!(state.generation, Some(generation));
        assert_eq!(state.len(), 3);
        let e = state
            .find(&SessionId::from_slice(&[2; 16]).unwrap())
            .unwrap();
        assert_eq!(state.ordinal(e), 3);
        assert_eq!(state.started(e), 1002);
        assert_eq!(state.facts(e), Some(&facts(2, 3)));
        assert_eq!(state.entry_of_ordinal(3), Some(e));
        assert_eq!(state.entry_of_ordinal(1), None);
        assert_eq!(state.entry_of_ordinal(9), None);
        assert!(state
            .find(&SessionId::from_slice(&[9; 16]).unwrap())
            .is_none());
        assert_eq!(state.to_map(), map);
        assert!(State::from_encoded(b"TIX1 short".to_vec()).is_none());
        // Changes applied without decoding the rest: one dropped, one changed, one added.
        let mut changes = BTreeMap::new();
        let (one, two, nine) = (
            SessionId::from_slice(&[1; 16]).unwrap(),
            SessionId::from_slice(&[2; 16]).unwrap(),
            SessionId::from_slice(&[9; 16]).unwrap(),
        );
        changes.insert(one, None);
        changes.insert(two, Some(facts(7, 3)));
        changes.insert(nine, Some(facts(9, 4)));
        let changed = State::from_encoded(state.encode_changed(4, 5, None, &changes)).unwrap();
        let mut expected = map.clone();
        expected.remove(&one);
        expected.insert(two, facts(7, 3));
        expected.insert(nine, facts(9, 4));
        assert_eq!(changed.to_map(), expected);
        assert_eq!(changed.entry_of_ordinal(4), changed.find(&nine));
        assert_eq!(changed.entry_of_ordinal(2), None);
        let mut cut = encode(4, 4, Some(generation), &map);
        cut.pop();
        assert!(State::from_encoded(cut).is_none());
        assert!(State::empty(4).generation.is_none());
    }
}
