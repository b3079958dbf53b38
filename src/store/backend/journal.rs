//! The journal: an append-only copy of what sled alone would hold, so a damaged database can
//! be rebuilt (SPEC §6.2, "Surviving a damaged database").
//!
//! Pack files verify themselves and live outside sled; two things do not: ref records (the
//! signed session records, shares, team chains, settings of the ref space) and the small
//! batches of objects that go to sled's `objects` tree instead of a pack (4). Every ref update
//! and every such batch is also appended here, and the file is fsynced with the store's own
//! flush, so after damage to sled's files `tapes fsck --repair` finds, for every session, its
//! newest record and every node that is not in a pack.
//!
//! File `<store>/journal`: a sequence of entries, each
//! `"TJE1" || kind u8 || len u32le || BLAKE3(kind || payload)[..16] || payload`, where kind 1
//! is a ref batch (`count u32le` then per ref `key_len u32le || key || 0|1 || [value_len u32le
//! || value]`), kind 2 an object batch (`count u32le` then `id [32] || len u32le || bytes`),
//! and kind 3 (empty) a flush marker: the entries before it are durable in sled too, while
//! entries after the last marker may be ahead of sled (a process killed before its flush).
//! A reader checks every entry's checksum; a damaged or torn entry is skipped by scanning for
//! the next magic, so one flipped byte costs one entry, not the rest of the file. When the file
//! grows past twice its last compacted size (and at least [`COMPACT_MIN`]), it is rewritten as a
//! snapshot of every current ref and every object in sled's `objects` tree (written to
//! `journal.new`, fsynced, renamed over), so its size stays proportional to what it protects.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tapes_protocol::{NodeId, StoredObject};

use super::{RefUpdate, StorageError};

const MAGIC: &[u8; 4] = b"TJE1";
const HEAD: usize = 4 + 1 + 4 + 16;
const KIND_REFS: u8 = 1;
const KIND_OBJECTS: u8 = 2;
/// Written by [`Journal::sync`], which the store calls after sled's own flush returned:
/// everything before it is durable in the database too. Entries after the last marker may be
/// ahead of the database (a process killed between its write and its flush), which is no
/// damage.
const KIND_FLUSHED: u8 = 3;
/// Below this the journal is never compacted: rewriting a few MiB saves nothing worth a pass
/// over sled.
pub const COMPACT_MIN: u64 = 64 << 20;
/// The longest entry a reader accepts: an import batch is at most ~200k small nodes
/// (`BATCH_NODES`), far below this; a longer length field is damage, not data.
const MAX_ENTRY: usize = 1 << 30;

/// The appending side, owned by the process that holds the store.
pub struct Journal {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    file: File,
    len: u64,
    dirty: bool,
    /// The size right after the last compaction (or at open).
    compacted: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("cannot {what} the journal {}: {e}", path.display()))
}

impl Journal {
    pub fn path(store_dir: &Path) -> PathBuf {
        store_dir.join("journal")
    }

    /// Opens (creating) the journal of the store in `store_dir`.
    pub fn open(store_dir: &Path) -> Result<Journal, StorageError> {
        let path = Journal::path(store_dir);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        let len = file.metadata().map_err(|e| io("read", &path, e))?.len();
        Ok(Journal {
            path,
            state: Mutex::new(State {
                file,
                len,
                dirty: false,
                compacted: len,
            }),
        })
    }

    /// Appends one entry whose payload is `parts` back to back, without joining them: a
    /// batch holding one 50 MB message costs no second copy of it here.
    fn append(&self, kind: u8, parts: &[&[u8]]) -> Result<(), StorageError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len).map_err(|_| {
            StorageError::Backend(format!(
                "a journal entry of {len} bytes is over the 4 GiB limit of its length field"
            ))
        })?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[kind]);
        for part in parts {
            hasher.update(part);
        }
        let mut head = Vec::with_capacity(HEAD);
        head.extend_from_slice(MAGIC);
        head.push(kind);
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(&hasher.finalize().as_bytes()[..16]);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::BufWriter::with_capacity(1 << 16, &state.file);
        let written = out
            .write_all(&head)
            .and_then(|()| parts.iter().try_for_each(|p| out.write_all(p)))
            .and_then(|()| out.flush());
        drop(out);
        written.map_err(|e| io("append to", &self.path, e))?;
        state.len += (HEAD + len as usize) as u64;
        state.dirty = true;
        Ok(())
    }

    /// Records the new values of a batch of ref updates that was just applied.
    pub fn record_refs(&self, updates: &[RefUpdate]) -> Result<(), StorageError> {
        let refs: Vec<(&[u8], Option<&[u8]>)> = updates
            .iter()
            .map(|u| (u.key.as_slice(), u.new.as_deref()))
            .collect();
        self.append(KIND_REFS, &[&encode_refs(&refs)])
    }

    /// Records objects that went to sled (not to a pack).
    pub fn record_objects(&self, objects: &[&StoredObject]) -> Result<(), StorageError> {
        if objects.is_empty() {
            return Ok(());
        }
        // Each object's header is small; its bytes are written from where they are.
        let heads: Vec<[u8; 36]> = objects
            .iter()
            .map(|o| {
                let mut h = [0u8; 36];
                h[..32].copy_from_slice(o.id.as_bytes());
                h[32..].copy_from_slice(&(o.bytes.len() as u32).to_le_bytes());
                h
            })
            .collect();
        let count = (objects.len() as u32).to_le_bytes();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * objects.len());
        parts.push(&count);
        for (head, object) in heads.iter().zip(objects) {
            parts.push(head);
            parts.push(&object.bytes);
        }
        self.append(KIND_OBJECTS, &parts)
    }

    /// Makes every entry appended so far durable, marked as durable in the database too
    /// (called by the store's flush, after sled's flush returned).
    pub fn sync(&self) -> Result<(), StorageError> {
        let dirty = self.state.lock().unwrap_or_else(|p| p.into_inner()).dirty;
        if !dirty {
            return Ok(());
        }
        self.append(KIND_FLUSHED, &[])?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .file
            .sync_data()
            .map_err(|e| io("sync", &self.path, e))?;
        state.dirty = false;
        Ok(())
    }

    /// True when the journal has grown enough since its last compaction to be rewritten.
    pub fn wants_compaction(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.len >= COMPACT_MIN && state.len > state.compacted.saturating_mul(2)
    }

    /// Replaces the journal by a snapshot: `refs` (every current ref) and `objects` (every
    /// object in sled's tree). Crash safe: the snapshot is complete and durable under another
    /// name before it replaces the old file in one rename.
    pub fn compact(
        &self,
        refs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>>,
        objects: impl Iterator<Item = Result<(NodeId, Vec<u8>), StorageError>>,
    ) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = self.path.with_extension("new");
        let mut out =
            std::io::BufWriter::new(File::create(&fresh).map_err(|e| io("create", &fresh, e))?);
        let mut written = 0u64;
        let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0;
        let mut put = |out: &mut std::io::BufWriter<File>, kind: u8, payload: Vec<u8>| {
            let entry = encode_entry(kind, &payload);
            written += entry.len() as u64;
            out.write_all(&entry).map_err(|e| io("write", &fresh, e))
        };
        for entry in refs {
            let (key, value) = entry?;
            batch_bytes += key.len() + value.len();
            batch.push((key, value));
            if batch_bytes >= 4 << 20 {
                let refs: Vec<_> = batch
                    .iter()
                    .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                    .collect();
                put(&mut out, KIND_REFS, encode_refs(&refs))?;
                batch.clear();
                batch_bytes = 0;
            }
        }
        let refs: Vec<_> = batch
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
            .collect();
        put(&mut out, KIND_REFS, encode_refs(&refs))?;
        let mut objects_batch: Vec<StoredObject> = Vec::new();
        let mut bytes = 0;
        for entry in objects {
            let (id, object) = entry?;
            bytes += object.len();
            objects_batch.push(StoredObject { id, bytes: object });
            if bytes >= 4 << 20 {
                let refs: Vec<&StoredObject> = objects_batch.iter().collect();
                put(&mut out, KIND_OBJECTS, encode_objects(&refs))?;
                objects_batch.clear();
                bytes = 0;
            }
        }
        if !objects_batch.is_empty() {
            let refs: Vec<&StoredObject> = objects_batch.iter().collect();
            put(&mut out, KIND_OBJECTS, encode_objects(&refs))?;
        }
        // The snapshot was read from the database: all of it is there.
        put(&mut out, KIND_FLUSHED, Vec::new())?;
        let file = out
            .into_inner()
            .map_err(|e| io("write", &fresh, e.into_error()))?;
        file.sync_all().map_err(|e| io("sync", &fresh, e))?;
        drop(file);
        std::fs::rename(&fresh, &self.path).map_err(|e| io("replace", &self.path, e))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        state.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io("open", &self.path, e))?;
        state.len = written;
        state.compacted = written;
        state.dirty = false;
        Ok(())
    }
}

fn encode_entry(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    let sum = hasher.finalize();
    let mut out = Vec::with_capacity(HEAD + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&sum.as_bytes()[..16]);
    out.extend_from_slice(payload);
    out
}

fn encode_refs(refs: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(refs.len() as u32).to_le_bytes());
    for (key, value) in refs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

fn encode_objects(objects: &[&StoredObject]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(objects.len() as u32).to_le_bytes());
    for o in objects {
        out.extend_from_slice(o.id.as_bytes());
        out.extend_from_slice(&(o.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&o.bytes);
    }
    out
}

/// What a journal says, read back: the last value of every ref it recorded, and the objects.
#[derive(Debug, Default)]
pub struct Replay {
    /// Ref key → its newest recorded value (`None`: deleted).
    pub refs: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The same, as of the last flush marker: what the database holds durably too.
    pub flushed_refs: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Objects recorded, as found (not yet verified against their ids).
    pub objects: Vec<StoredObject>,
    /// Entries whose checksum or layout did not hold, with their byte offsets.
    pub damaged: Vec<u64>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
}

fn decode_refs(payload: &[u8]) -> Option<Vec<(Vec<u8>, Option<Vec<u8>>)>> {
    let mut c = Cursor {
        bytes: payload,
        at: 0,
    };
    let count = c.u32()?;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = c.u32()?;
        let key = c.take(len)?.to_vec();
        let value = match c.take(1)?[0] {
            0 => None,
            1 => {
                let len = c.u32()?;
                Some(c.take(len)?.to_vec())
            }
            _ => return None,
        };
        out.push((key, value));
    }
    (c.at == payload.len()).then_some(out)
}

fn decode_objects(payload: &[u8]) -> Option<Vec<StoredObject>> {
    let mut c = Cursor {
        bytes: payload,
        at: 0,
    };
    let count = c.u32()?;
    let mut out = Vec::new();
    for _ in 0..count {
        let id = NodeId::from_slice(c.take(32)?)?;
        let len = c.u32()?;
        out.push(StoredObject {
            id,
            bytes: c.take(len)?.to_vec(),
        });
    }
    (c.at == payload.len()).then_some(out)
}

/// Reads the journal file at `path` (missing = empty). Damaged entries are skipped and their
/// offsets reported; everything that verifies is returned.
pub fn replay(path: &Path) -> Result<Replay, StorageError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => return Err(io("read", path, e)),
    };
    Ok(replay_bytes(&bytes))
}

fn replay_bytes(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    // Ref changes seen since the last flush marker.
    let mut unflushed: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut at = 0;
    while at + HEAD <= bytes.len() {
        if &bytes[at..at + 4] != MAGIC {
            // Lost sync after damage: look for the next entry.
            out.damaged.push(at as u64);
            match find_magic(bytes, at + 1) {
                Some(next) => {
                    at = next;
                    continue;
                }
                None => break,
            }
        }
        let kind = bytes[at + 4];
        let len = u32::from_le_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]])
            as usize;
        let end = at + HEAD + len;
        let valid = len <= MAX_ENTRY && end <= bytes.len() && {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&[kind]);
            hasher.update(&bytes[at + HEAD..end]);
            hasher.finalize().as_bytes()[..16] == bytes[at + 9..at + HEAD]
        };
        let decoded = valid
            && match kind {
                KIND_REFS => match decode_refs(&bytes[at + HEAD..end]) {
                    Some(refs) => {
                        unflushed.extend(refs.iter().cloned());
                        out.refs.extend(refs);
                        true
                    }
                    None => false,
                },
                KIND_FLUSHED => {
                    out.flushed_refs.extend(unflushed.drain(..));
                    len == 0
                }
                KIND_OBJECTS => match decode_objects(&bytes[at + HEAD..end]) {
                    Some(objects) => {
                        out.objects.extend(objects);
                        true
                    }
                    None => false,
                },
                _ => false,
            };
        if decoded {
            at = end;
        } else {
            out.damaged.push(at as u64);
            match find_magic(bytes, at + 1) {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    if at < bytes.len() && at + HEAD > bytes.len() && !out.damaged.contains(&(at as u64)) {
        // A torn last entry (a crash mid-append): nothing it held was acknowledged durable.
        out.damaged.push(at as u64);
    }
    out
}

fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(n: u8) -> StoredObject {
        StoredObject {
            id: NodeId([n; 32]),
            bytes: vec![n; 10 + n as usize],
        }
    }

    fn update(key: &str, value: Option<&str>) -> RefUpdate {
        RefUpdate {
            key: key.as_bytes().to_vec(),
            expected: None,
            new: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn replays_the_newest_value_of_each_ref_and_every_object() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal
            .record_refs(&[
                update("session/a", Some("1")),
                update("session/b", Some("x")),
            ])
            .unwrap();
        journal.record_objects(&[&object(1), &object(2)]).unwrap();
        journal
            .record_refs(&[update("session/a", Some("2")), update("session/b", None)])
            .unwrap();
        journal.sync().unwrap();
        let replay = replay(&Journal::path(dir.path())).unwrap();
        assert!(replay.damaged.is_empty());
        assert_eq!(replay.refs[b"session/a".as_slice()], Some(b"2".to_vec()));
        assert_eq!(replay.refs[b"session/b".as_slice()], None);
        assert_eq!(replay.objects, vec![object(1), object(2)]);
    }

    #[test]
    fn a_flipped_byte_costs_one_entry_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        for i in 0..5u8 {
            journal.record_objects(&[&object(i)]).unwrap();
        }
        journal.sync().unwrap();
        let path = Journal::path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let entry = bytes.len() / 5;
        bytes[entry * 2 + HEAD + 3] ^= 0x40;
        bytes.extend_from_slice(&MAGIC[..]);
        bytes.push(KIND_OBJECTS);
        let replay = replay_bytes(&bytes);
        let ids: Vec<u8> = replay.objects.iter().map(|o| o.id.0[0]).collect();
        assert_eq!(ids, vec![0, 1, 3, 4]);
        assert_eq!(replay.damaged.len(), 2, "{:?}", replay.damaged);
    }

    #[test]
    fn refs_after_the_last_flush_are_not_yet_the_databases() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal
            .record_refs(&[update("session/a", Some("1"))])
            .unwrap();
        journal.sync().unwrap();
        journal
            .record_refs(&[update("session/b", Some("2"))])
            .unwrap();
        let replay = replay(&Journal::path(dir.path())).unwrap();
        assert_eq!(replay.refs.len(), 2);
        assert_eq!(replay.flushed_refs.len(), 1);
        assert!(replay.flushed_refs.contains_key(b"session/a".as_slice()));
    }

    #[test]
    fn compaction_keeps_exactly_the_current_state() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal
            .record_refs(&[update("session/a", Some("old"))])
            .unwrap();
        journal.record_objects(&[&object(9)]).unwrap();
        journal
            .compact(
                vec![Ok((b"session/a".to_vec(), b"new".to_vec()))].into_iter(),
                vec![Ok((object(3).id, object(3).bytes))].into_iter(),
            )
            .unwrap();
        journal
            .record_refs(&[update("session/c", Some("c"))])
            .unwrap();
        journal.sync().unwrap();
        let replay = replay(&Journal::path(dir.path())).unwrap();
        assert_eq!(replay.refs.len(), 2);
        assert_eq!(replay.refs[b"session/a".as_slice()], Some(b"new".to_vec()));
        assert_eq!(replay.objects, vec![object(3)]);
    }
}
