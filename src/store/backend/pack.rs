//! Pack files: immutable batches of objects kept beside sled, for bulk writes (the git design;
//! SPEC.md §4 and §6).
//!
//! This module owns the on-disk format of a pack and its index, writing a pack durably, opening
//! and checking one, and finding objects in it. It does not decide which packs are live: that is
//! the registry in sled (`packs` tree, see [`super::sled_backend`]). A pack that nobody
//! registered is a leftover of a crash between writing it and flushing its registration, and
//! [`sweep`] deletes it when the store opens.
//!
//! ```text
//! <name>.pack := "TAPESPAK" || version u32le (=1) || reserved u32le (=0) || object bytes…
//! <name>.idx  := "TAPESIDX" || version u32le (=1) || reserved u32le (=0)
//!                || count u64le || pack_len u64le
//!                || fanout: 256 × u32le (entries whose id's first byte is ≤ i)
//!                || count × (id [32] || offset u64le || len u32le)   ids strictly increasing
//!                || BLAKE3 of everything before it (32 bytes)
//! ```
//!
//! `<name>` is the hex of the first 16 bytes of the index checksum. Objects sit in the pack in
//! the order they were added: the caller's order for a batch from `put_objects` (an import or
//! a fetch hands over each chain root first), arrival order for a staged fetch or bundle, and
//! the victims' file orders one after the other for a merge. A chain therefore sits in one run
//! of bytes, which a server walking it reads a window at a time (SPEC.md §6). Bytes no index
//! entry points at (a duplicate, an object stored meanwhile by another writer) are dead
//! weight, never read.
//!
//! Why packs: sled manages about 90k inserts/s, while a pack is one sequential write and three
//! fsyncs (pack, index, directory), limited by the disk.
//!
//! Lookups: each pack is searched on its own (fanout, then binary search), so a lookup costs
//! O(packs × log n) and a miss searches every pack. Packs are made only for large batches, and
//! the backend merges the smallest when there are many, which keeps their number bounded.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use tapes_protocol::NodeId;

use super::direct::Out;
use super::StorageError;
use crate::allocator::PACK_BUFFERS;

const PACK_MAGIC: &[u8; 8] = b"TAPESPAK";
const IDX_MAGIC: &[u8; 8] = b"TAPESIDX";
const VERSION: u32 = 1;
const PACK_HEADER: usize = 16;
const IDX_HEADER: usize = 32;
const FANOUT: usize = 256 * 4;
/// id [32] | offset u64 | len u32.
const ENTRY: usize = 44;
const CHECKSUM: usize = 32;
/// Where the entries start in an index file.
const ENTRIES: usize = IDX_HEADER + FANOUT;
/// Suffix of files being written; never live, always deleted on open.
const TMP: &str = ".tmp";

/// Version byte of an encoded [`PackRecord`].
const RECORD_VERSION: u8 = 1;
const RECORD_LEN: usize = 1 + 8 + 8 + CHECKSUM;

/// What the registry in sled holds about a live pack. Opening a pack checks its files against
/// it, so a truncated or swapped file is noticed before any object is read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRecord {
    pub name: String,
    pub count: u64,
    pub pack_len: u64,
    /// The index file's trailing checksum.
    pub checksum: [u8; 32],
}

impl PackRecord {
    /// The registry value: version u8 | count u64le | pack_len u64le | checksum [32].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_LEN);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.pack_len.to_le_bytes());
        out.extend_from_slice(&self.checksum);
        out
    }

    pub fn decode(name: &[u8], value: &[u8]) -> Result<PackRecord, StorageError> {
        let name = String::from_utf8(name.to_vec())
            .ok()
            .filter(|n| is_pack_name(n))
            .ok_or_else(|| {
                StorageError::Backend(format!(
                    "the pack registry names a pack `{}`, which is not a pack name",
                    String::from_utf8_lossy(name)
                ))
            })?;
        if value.len() != RECORD_LEN || value[0] != RECORD_VERSION {
            return Err(StorageError::Backend(format!(
                "the registry record of pack {name} is damaged or from a newer tapes ({} bytes, version {})",
                value.len(),
                value.first().copied().unwrap_or(0)
            )));
        }
        Ok(PackRecord {
            count: le_u64(&value[1..9]),
            pack_len: le_u64(&value[9..17]),
            checksum: value[17..].try_into().unwrap_or([0; 32]),
            name,
        })
    }

    /// The index file's length for `count` entries; a count no file could hold (from a
    /// damaged or hostile index header) saturates instead of overflowing, so the length check
    /// at open refuses it.
    fn idx_len(&self) -> u64 {
        ((ENTRIES + CHECKSUM) as u64).saturating_add(self.count.saturating_mul(ENTRY as u64))
    }
}

/// Pack names are 32 lowercase hex digits.
fn is_pack_name(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
}

/// The first 8 bytes of an id as a number in id order (big-endian).
fn id_key(bytes: &[u8]) -> u64 {
    let mut key = [0u8; 8];
    key.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(key)
}

/// Id order, with the first 8 bytes compared as one number first: ids are hashes, so those
/// decide all but one comparison in 2^64 and the rest is read only on a tie. `memcmp` showed
/// as a tenth of a serving node's CPU in index searches (`cargo bench --bench sync`, ~1 KB
/// nodes); most of that is the cache miss of an entry's first read, which stays, but the call
/// per probe is gone, and sorting a new pack's entries takes half as long.
fn id_order(a: &[u8], b: &[u8; 32]) -> std::cmp::Ordering {
    id_key(a)
        .cmp(&id_key(b))
        .then_with(|| a[8..32].cmp(&b[8..]))
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().unwrap_or([0; 4]))
}

fn pack_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pack"))
}

fn idx_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.idx"))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("cannot {what} {}: {e}", path.display()))
}

/// An open, checked pack: both files mapped read-only, and the pack file open for positioned
/// reads ([`Pack::read_at`]).
pub struct Pack {
    record: PackRecord,
    path: PathBuf,
    pack: Mmap,
    idx: Mmap,
    file: File,
}

impl Pack {
    /// Opens a registered pack and checks what is cheap to check: both headers, both lengths
    /// against the registry, the index's checksum against the one registered, and the fanout.
    /// The index's contents are checksummed by [`Pack::verify_index`] (fsck), and every object
    /// is checked against its id by whoever reads it.
    pub fn open(dir: &Path, record: PackRecord) -> Result<Pack, StorageError> {
        let path = pack_path(dir, &record.name);
        let (pack, file) = map(&path, record.pack_len)?;
        let (idx, _) = map(&idx_path(dir, &record.name), record.idx_len())?;
        let pack = Pack {
            record,
            path,
            pack,
            idx,
            file,
        };
        pack.check()?;
        // The header check mapped the start of the pack, and a file just written sits in the
        // page cache in folios of up to 2 MiB, all of which get mapped: 2 MiB of a fetching
        // process's memory per pack (64 MB at 1 GB) for 16 bytes read.
        unmap_pages(&pack.pack);
        Ok(pack)
    }

    fn check(&self) -> Result<(), StorageError> {
        if self.pack.len() < PACK_HEADER
            || &self.pack[..8] != PACK_MAGIC
            || le_u32(&self.pack[8..12]) != VERSION
        {
            return Err(self.damaged("the pack file does not start with a version 1 pack header"));
        }
        let idx = &self.idx;
        if &idx[..8] != IDX_MAGIC || le_u32(&idx[8..12]) != VERSION {
            return Err(self.damaged("the index does not start with a version 1 index header"));
        }
        if le_u64(&idx[16..24]) != self.record.count || le_u64(&idx[24..32]) != self.record.pack_len
        {
            return Err(self.damaged("the index header disagrees with the pack's registration"));
        }
        if idx[idx.len() - CHECKSUM..] != self.record.checksum {
            return Err(self.damaged("the index checksum is not the one registered"));
        }
        let mut previous = 0;
        for byte in 0..256 {
            let at = self.fanout(byte);
            if at < previous {
                return Err(self.damaged("the index fanout table is not in order"));
            }
            previous = at;
        }
        if previous as u64 != self.record.count {
            return Err(self.damaged("the index fanout table does not end at the entry count"));
        }
        Ok(())
    }

    fn damaged(&self, why: &str) -> StorageError {
        StorageError::Backend(format!(
            "pack {} is damaged: {why}; its objects cannot be trusted (restore the store from a backup, or import its sessions again into a fresh store)",
            self.path.display()
        ))
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// The pack file and its index.
    pub fn files(&self) -> [PathBuf; 2] {
        [self.path.clone(), self.path.with_extension("idx")]
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.record.count as usize
    }

    /// Bytes of both files.
    pub fn disk_size(&self) -> u64 {
        self.record.pack_len + self.record.idx_len()
    }

    /// Entries whose id's first byte is ≤ `byte`. Checked at open to be in order and to end at
    /// the entry count, so it is always a valid entry bound.
    fn fanout(&self, byte: usize) -> usize {
        let at = IDX_HEADER + byte * 4;
        le_u32(&self.idx[at..at + 4]) as usize
    }

    fn entry(&self, i: usize) -> &[u8] {
        let at = ENTRIES + i * ENTRY;
        &self.idx[at..at + ENTRY]
    }

    /// How entry `i`'s id compares with `id` ([`id_order`]).
    fn cmp_entry(&self, i: usize, id: &NodeId) -> std::cmp::Ordering {
        id_order(&self.entry(i)[..32], &id.0)
    }

    pub fn id_at(&self, i: usize) -> NodeId {
        let mut id = [0u8; 32];
        id.copy_from_slice(&self.entry(i)[..32]);
        NodeId(id)
    }

    /// The entry holding `id`: the fanout narrows the search to ids with the same first byte
    /// (1/256 of the entries), then a binary search.
    pub fn find(&self, id: &NodeId) -> Option<usize> {
        let (lo, hi) = self.bucket(id);
        self.interpolate(lo, hi, id).ok()
    }

    /// [`Pack::search`] that first guesses where `id` is from its value: ids are BLAKE3
    /// hashes, uniform over the bucket, so a guess from the first 8 bytes lands within a few
    /// entries, and two or three guesses replace the ~10 probes of a binary search (each a
    /// cache miss in a large index: lookups were 7 % of a serving node's CPU).
    fn interpolate(&self, mut lo: usize, mut hi: usize, id: &NodeId) -> Result<usize, usize> {
        let key = |i: usize| id_key(&self.entry(i)[..8]);
        let target = id_key(&id.0[..8]);
        // Every id in the bucket shares the first byte with `id`.
        let first = u64::from(id.0[0]) << 56;
        let (mut low_key, mut high_key) = (first, first | (u64::MAX >> 8));
        for _ in 0..4 {
            if hi - lo <= 8 {
                break;
            }
            let span = u128::from(high_key.saturating_sub(low_key)) + 1;
            let offset = u128::from(target.saturating_sub(low_key)) * (hi - lo) as u128 / span;
            let guess = (lo + offset as usize).min(hi - 1);
            match self.cmp_entry(guess, id) {
                std::cmp::Ordering::Less => {
                    lo = guess + 1;
                    low_key = key(guess);
                }
                std::cmp::Ordering::Greater => {
                    hi = guess;
                    high_key = key(guess);
                }
                std::cmp::Ordering::Equal => return Ok(guess),
            }
        }
        self.search(lo, hi, id)
    }

    /// The entries whose id starts with the same byte as `id`.
    fn bucket(&self, id: &NodeId) -> (usize, usize) {
        let first = id.0[0] as usize;
        let lo = if first == 0 {
            0
        } else {
            self.fanout(first - 1)
        };
        (lo, self.fanout(first))
    }

    /// Binary search for `id` in entries `lo..hi`: its entry, or where it would be.
    fn search(&self, mut lo: usize, mut hi: usize, id: &NodeId) -> Result<usize, usize> {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.cmp_entry(mid, id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Like [`Pack::find`] for an id not smaller than any looked up before with this `cursor`
    /// (which starts at 0): it gallops forward from the last position, so a sorted batch is
    /// checked in about one pass over the index instead of one random search per id.
    pub fn find_sorted(&self, cursor: &mut usize, id: &NodeId) -> bool {
        let (bucket_lo, hi) = self.bucket(id);
        let lo = (*cursor).max(bucket_lo).min(hi);
        // Probe lo, lo+1, lo+2, lo+4, … until an entry is not below `id` (everything before
        // `start` is below it), then search between the last two probes.
        let (mut start, mut probe, mut step) = (lo, lo, 1);
        while probe < hi && self.cmp_entry(probe, id).is_lt() {
            start = probe + 1;
            probe = (lo + step).min(hi);
            step *= 2;
        }
        let found = self.search(start, (probe + 1).min(hi), id);
        let (Ok(at) | Err(at)) = found;
        *cursor = at;
        found.is_ok()
    }

    /// Where entry `i`'s bytes are, bounds-checked against the pack (a damaged index must give
    /// an error, not a panic or bytes from outside the object area).
    pub fn range(&self, i: usize) -> Result<std::ops::Range<usize>, StorageError> {
        let entry = self.entry(i);
        let offset = le_u64(&entry[32..40]);
        let len = le_u32(&entry[40..44]) as u64;
        let end = offset.saturating_add(len);
        if offset < PACK_HEADER as u64 || end > self.pack.len() as u64 {
            return Err(self.damaged(&format!(
                "the index places object {} at bytes {offset}..{end}, outside the pack",
                self.id_at(i)
            )));
        }
        Ok(offset as usize..end as usize)
    }

    /// The bytes of entry `i`, in the mapping (for reading whole packs in order: merges, fsck).
    pub fn object_at(&self, i: usize) -> Result<&[u8], StorageError> {
        Ok(&self.pack[self.range(i)?])
    }

    /// A copy of entry `i`'s bytes read with one positioned read, not through the mapping: the
    /// pages of a mapped file count as the reader's memory, and a file just written sits in
    /// the page cache in folios of up to 2 MiB that a fault maps whole, so ~1 KB objects read
    /// here and there by a server mapped nearly all of a 1 GB store (1,074 MB of RSS serving a
    /// 1 GB fetch). A read costs a system call instead of a page fault.
    pub fn read_at(&self, i: usize) -> Result<Vec<u8>, StorageError> {
        let range = self.range(i)?;
        let mut bytes = Vec::new();
        self.read_range(range, &mut bytes)?;
        Ok(bytes)
    }

    /// Reads up to `len` bytes of the object area ending at `end` (an object's end, from
    /// [`Pack::range`]) into `into` with one positioned read; returns where they start in the
    /// file. A chain's nodes sit one after the other in a pack written from a fetch or an
    /// import, so this reads a node and the parents before it at once.
    pub fn read_before(
        &self,
        end: usize,
        len: usize,
        into: &mut Vec<u8>,
    ) -> Result<usize, StorageError> {
        let start = end.saturating_sub(len).max(PACK_HEADER).min(end);
        self.read_range(start..end, into)?;
        Ok(start)
    }

    /// Bytes `range` of the pack file (inside the object area) into `into`, which it replaces.
    fn read_range(
        &self,
        range: std::ops::Range<usize>,
        into: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        if range.start < PACK_HEADER || range.end > self.pack.len() || range.start > range.end {
            return Err(self.damaged(&format!(
                "a read of bytes {}..{}, outside the pack",
                range.start, range.end
            )));
        }
        into.clear();
        #[cfg(unix)]
        {
            read_exact_at_into(&self.file, range.start as u64, range.len(), into)
                .map_err(|e| io_err("read", &self.path, e))
        }
        #[cfg(not(unix))]
        {
            into.extend_from_slice(&self.pack[range]);
            Ok(())
        }
    }

    /// The entries in the order their bytes sit in the file (the order they were added): a
    /// merge copies packs in this order, so a chain written together stays together.
    pub fn file_order(&self) -> Result<Vec<usize>, StorageError> {
        let mut order: Vec<(usize, usize)> = (0..self.len())
            .map(|i| Ok((self.range(i)?.start, i)))
            .collect::<Result<_, StorageError>>()?;
        order.sort_unstable();
        Ok(order.into_iter().map(|(_, i)| i).collect())
    }

    pub fn get(&self, id: &NodeId) -> Result<Option<&[u8]>, StorageError> {
        self.find(id).map(|i| self.object_at(i)).transpose()
    }

    /// Drops this process's mapped pages of the pack (not the file's cached pages): a merge
    /// reads whole packs once, and their pages would otherwise all count as the process's
    /// memory until the pack is unmapped. Later reads map them again from the page cache.
    pub fn release(&self) {
        unmap_pages(&self.pack);
        unmap_pages(&self.idx);
    }

    /// Recomputes the index checksum (reads the whole index: fsck, not open).
    pub fn verify_index(&self) -> Result<(), StorageError> {
        let body = &self.idx[..self.idx.len() - CHECKSUM];
        if blake3::hash(body).as_bytes() != &self.record.checksum {
            return Err(self.damaged("the index does not match its checksum"));
        }
        Ok(())
    }
}

/// Reads `len` bytes of `file` at `offset` into `into`'s spare capacity (appended), without
/// zeroing them first: zeroing a reused 256 KiB chain window before every read that overwrites
/// it was 2 % of a serving node's CPU (`perf`, `cargo bench --bench sync`).
#[cfg(unix)]
fn read_exact_at_into(
    file: &File,
    mut offset: u64,
    len: usize,
    into: &mut Vec<u8>,
) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    into.reserve(len);
    let end = into.len() + len;
    while into.len() < end {
        let want = end - into.len();
        let spare = into.spare_capacity_mut();
        // SAFETY: `spare` has at least `want` bytes of capacity (reserved above); pread writes at
        // most `want` bytes into it, and only the count it reports written is made part of the
        // vector.
        let read = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr() as *mut libc::c_void,
                want,
                offset as libc::off_t,
            )
        };
        match read {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => {
                // SAFETY: pread initialised these `n` (<= `want`) bytes.
                unsafe { into.set_len(into.len() + n as usize) };
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Maps a pack file read-only after checking that it has the registered length (mapping a
/// shorter file and reading past its end would be a SIGBUS, not an error).
/// Drops this process's mapped pages of `map` (the file's cached pages stay).
fn unmap_pages(map: &Mmap) {
    #[cfg(unix)]
    // SAFETY: a read-only shared file mapping: MADV_DONTNEED only unmaps pages, which the next
    // access maps again from the file (unchanged: packs are immutable), so no reader,
    // concurrent or not, can see different bytes.
    unsafe {
        libc::madvise(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            libc::MADV_DONTNEED,
        );
    }
    #[cfg(not(unix))]
    let _ = map;
}

fn map(path: &Path, expected: u64) -> Result<(Mmap, File), StorageError> {
    let file = File::open(path).map_err(|e| {
        StorageError::Backend(format!(
            "pack file {} is registered in the store but cannot be opened: {e}; restore it from a backup",
            path.display()
        ))
    })?;
    let len = file
        .metadata()
        .map_err(|e| io_err("read the size of", path, e))?
        .len();
    if len != expected {
        return Err(StorageError::Backend(format!(
            "pack file {} is damaged: it is {len} bytes, the store registered {expected}; restore it from a backup",
            path.display()
        )));
    }
    // SAFETY: pack files are immutable: written under a temporary name, fsynced, renamed, and
    // never opened for writing again (a merge would write a new pack). Nothing in tapes
    // modifies or truncates them while mapped; another program doing so is outside what the
    // store can defend against, as it is for sled's own files.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err("map", path, e))?;
    Ok((map, file))
}

/// Bytes written between two requests to start writeback (see [`PackWriter`]).
const WRITEBACK_EVERY: u64 = 32 << 20;
/// Bytes per buffer handed to the writer thread, and buffers in flight at most: 16 MiB of
/// objects may wait for the page cache while the caller goes on (writes to it are quick; more
/// buffers only added to a fetch's peak memory).
const BUFFER: usize = 4 << 20;
/// Index entries a new pack reserves room for: the ~65,000 objects of the 64 MiB a fetch
/// stages per pack at ~1 KB each, with room to spare. Growing the list by doubling copied it
/// and touched fresh memory each time (1.4 % of a fetching node's CPU, `cargo bench --bench
/// sync`); the reservation is address space until used.
const ENTRIES_AHEAD: usize = 80 << 10;
const BUFFERS: usize = 4;

/// Where one object sits in a pack being built.
struct Entry {
    id: NodeId,
    offset: u64,
    len: u32,
}

/// A pack being written object by object under a temporary name. It is nobody's until
/// [`PackBuilder::finish`] names it, and even then not live until the caller registers it;
/// dropped unfinished it deletes its file, and a crash leaves a `.tmp` that [`sweep`] deletes.
pub struct PackBuilder {
    dir: PathBuf,
    /// `None` once renamed into place (nothing left to delete on drop).
    tmp: Option<PathBuf>,
    writer: Option<PackWriter>,
    /// Bytes not yet handed to the writer.
    buffer: Vec<u8>,
    entries: Vec<Entry>,
    /// Bytes added so far, header included: the offset of the next object.
    len: u64,
}

impl PackBuilder {
    pub fn create(dir: &Path) -> Result<PackBuilder, StorageError> {
        // Unique within the process; only one process opens a store at a time.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("staging-{}-{n}.pack{TMP}", std::process::id()));
        let file = Out::create(&tmp, BUFFER).map_err(|e| io_err("create", &tmp, e))?;
        let mut builder = PackBuilder {
            dir: dir.to_path_buf(),
            writer: Some(PackWriter::spawn(file)),
            tmp: Some(tmp),
            buffer: pack_buffer(),
            entries: Vec::with_capacity(ENTRIES_AHEAD),
            len: 0,
        };
        let mut header = [0u8; PACK_HEADER];
        header[..8].copy_from_slice(PACK_MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        builder.append(&header)?;
        Ok(builder)
    }

    fn err(&self, what: &str, e: std::io::Error) -> StorageError {
        io_err(what, self.tmp.as_deref().unwrap_or(&self.dir), e)
    }

    /// Copies `bytes` into the current buffer, handing full buffers to the writer thread.
    fn append(&mut self, mut bytes: &[u8]) -> Result<(), StorageError> {
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = BUFFER - self.buffer.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = rest;
            if self.buffer.len() == BUFFER {
                self.hand_over()?;
            }
        }
        Ok(())
    }

    fn hand_over(&mut self) -> Result<(), StorageError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(StorageError::Backend("pack writer already stopped".into()));
        };
        let next = writer.spare();
        let full = std::mem::replace(&mut self.buffer, next);
        if writer.send(full).is_err() {
            // The writer thread stopped on an I/O error; its join says which.
            return self.stop_writer().map(|_| ());
        }
        Ok(())
    }

    /// Stops the writer thread after it wrote everything handed over, and returns the file.
    fn stop_writer(&mut self) -> Result<File, StorageError> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| StorageError::Backend("pack writer already stopped".into()))?;
        writer.finish().map_err(|e| self.err("write", e))
    }

    /// Appends one object. The bytes go to disk on a writer thread (see [`PackWriter`]), so the
    /// caller goes on verifying the next objects while the disk works.
    pub fn add(&mut self, id: &NodeId, bytes: &[u8]) -> Result<(), StorageError> {
        let len = u32::try_from(bytes.len()).map_err(|_| {
            StorageError::Backend(format!(
                "object {id} is {} bytes, too large for a pack",
                bytes.len()
            ))
        })?;
        self.entries.push(Entry {
            id: *id,
            offset: self.len,
            len,
        });
        self.append(bytes)
    }

    /// Completes the pack with the objects for which `keep` says yes (the others stay as
    /// unreachable bytes in the file; an id added twice is kept once): fsyncs it, writes and
    /// fsyncs its index, renames both into place and fsyncs the directory. Returns the record
    /// to register and the bytes of the objects kept, or `None` (and deletes the file) when
    /// nothing is kept. The pack is live only once the caller registers the record.
    pub fn finish(
        mut self,
        mut keep: impl FnMut(&NodeId) -> Result<bool, StorageError>,
    ) -> Result<Option<(PackRecord, u64)>, StorageError> {
        let mut entries = std::mem::take(&mut self.entries);
        // Unstable: equal ids name equal bytes, so which copy is kept does not matter.
        entries.sort_unstable_by(|a, b| id_order(&a.id.0, &b.id.0));
        entries.dedup_by(|a, b| a.id == b.id);
        let mut kept = Vec::with_capacity(entries.len());
        for entry in entries {
            if keep(&entry.id)? {
                kept.push(entry);
            }
        }
        if kept.is_empty() {
            return Ok(None);
        }
        let bytes = kept.iter().map(|e| u64::from(e.len)).sum();
        self.hand_over()?;
        let file = self.stop_writer()?;
        file.sync_all().map_err(|e| self.err("sync", e))?;
        drop(file);
        let idx = build_index(&kept, self.len)?;
        let checksum: [u8; 32] = idx[idx.len() - CHECKSUM..].try_into().unwrap_or([0; 32]);
        let name = hex::encode(&checksum[..16]);
        let idx_final = idx_path(&self.dir, &name);
        let idx_tmp = tmp_path(&idx_final);
        let placed = write_synced(&idx_tmp, &idx)
            .and_then(|()| {
                let tmp = self.tmp.take().unwrap_or_default();
                rename(&tmp, &pack_path(&self.dir, &name))
            })
            .and_then(|()| rename(&idx_tmp, &idx_final))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = placed {
            // A pack file already renamed is unregistered and swept on the next open.
            let _ = fs::remove_file(&idx_tmp);
            return Err(e);
        }
        let record = PackRecord {
            name,
            count: kept.len() as u64,
            pack_len: self.len,
            checksum,
        };
        Ok(Some((record, bytes)))
    }
}

/// An empty buffer of [`BUFFER`] bytes, kept from an earlier pack when there is one.
fn pack_buffer() -> Vec<u8> {
    let mut buffer = PACK_BUFFERS.take();
    buffer.reserve_exact(BUFFER);
    buffer
}

impl Drop for PackBuilder {
    fn drop(&mut self) {
        PACK_BUFFERS.give_back(std::mem::take(&mut self.buffer));
        // The thread first, so that nothing writes to the file once it is deleted.
        if let Some(writer) = self.writer.take() {
            let _ = writer.finish();
        }
        if let Some(tmp) = &self.tmp {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// The thread that writes a pack's buffers to its file, so that the disk works while the
/// builder's caller goes on. Every 32 MiB it asks the kernel to start writing back what it
/// wrote (Linux `sync_file_range`): otherwise the page cache would hold the whole pack until
/// the final fsync and the disk would only start then. Used buffers come back for reuse.
struct PackWriter {
    full: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<std::io::Result<File>>,
}

impl PackWriter {
    fn spawn(out: Out) -> PackWriter {
        let (full, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(BUFFERS);
        let (spare_tx, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(BUFFERS + 1);
        let thread = std::thread::spawn(move || {
            let mut out = out;
            let (mut written, mut kicked) = (0u64, 0u64);
            for mut buffer in full_rx {
                out.write(&buffer)?;
                written += buffer.len() as u64;
                // Direct writes are on the disk already; only buffered ones wait for writeback.
                if !out.is_direct() && written - kicked >= WRITEBACK_EVERY {
                    start_writeback(out.file(), kicked, written - kicked);
                    kicked = written;
                }
                buffer.clear();
                // The builder may have enough buffers already; then this one is kept for the
                // next pack.
                if let Err(std::sync::mpsc::TrySendError::Full(buffer)) = spare_tx.try_send(buffer)
                {
                    PACK_BUFFERS.give_back(buffer);
                }
            }
            out.finish()
        });
        PackWriter {
            full: Some(full),
            spare,
            thread,
        }
    }

    /// An empty buffer: a used one if the thread gave one back, else a new one.
    fn spare(&self) -> Vec<u8> {
        self.spare.try_recv().unwrap_or_else(|_| pack_buffer())
    }

    /// Hands a buffer over (waits while [`BUFFERS`] are in flight); an error means the thread
    /// stopped.
    fn send(&self, buffer: Vec<u8>) -> Result<(), ()> {
        match &self.full {
            Some(full) => full.send(buffer).map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Waits for everything handed over to be written; the file, or the thread's I/O error.
    fn finish(mut self) -> std::io::Result<File> {
        drop(self.full.take());
        let file = self
            .thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        self.spare
            .try_iter()
            .for_each(|b| PACK_BUFFERS.give_back(b));
        file
    }
}

/// Starts writeback of `len` bytes at `offset` without waiting for it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a plain syscall on a file descriptor this thread owns. It only starts
        // writeback (no durability promise), so its result is not needed: finish() fsyncs
        // whatever is still dirty.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// The index of `entries` (sorted by id, unique) of a pack of `pack_len` bytes, checksum
/// included.
fn build_index(entries: &[Entry], pack_len: u64) -> Result<Vec<u8>, StorageError> {
    let count = u32::try_from(entries.len()).map_err(|_| {
        StorageError::Backend(format!(
            "{} objects are too many for one pack",
            entries.len()
        ))
    })?;
    let mut idx = Vec::with_capacity(ENTRIES + entries.len() * ENTRY + CHECKSUM);
    idx.extend_from_slice(IDX_MAGIC);
    idx.extend_from_slice(&VERSION.to_le_bytes());
    idx.extend_from_slice(&0u32.to_le_bytes());
    idx.extend_from_slice(&u64::from(count).to_le_bytes());
    idx.extend_from_slice(&pack_len.to_le_bytes());
    let mut fanout = [0u32; 256];
    for entry in entries {
        fanout[entry.id.0[0] as usize] += 1;
    }
    let mut running = 0u32;
    for n in fanout {
        running += n;
        idx.extend_from_slice(&running.to_le_bytes());
    }
    for entry in entries {
        idx.extend_from_slice(entry.id.as_bytes());
        idx.extend_from_slice(&entry.offset.to_le_bytes());
        idx.extend_from_slice(&entry.len.to_le_bytes());
    }
    let checksum = blake3::hash(&idx);
    idx.extend_from_slice(checksum.as_bytes());
    Ok(idx)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP);
    PathBuf::from(name)
}

/// Creates `path` with `bytes` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let err = |e| io_err("write", path, e);
    let mut file = File::create(path).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

fn rename(from: &Path, to: &Path) -> Result<(), StorageError> {
    fs::rename(from, to).map_err(|e| io_err("rename into place", to, e))
}

/// Makes the directory's entries (the renames) durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("sync the directory", dir, e))?;
    }
    // Elsewhere a directory cannot be opened to sync it; the renames are as durable as the
    // platform makes them.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Deletes from `dir` every pack-related file that is not a live pack's `.pack` or `.idx`:
/// temporary files, and packs whose registration never became durable (a crash between
/// writing a pack and the flush that registers it). Their objects were never reachable: refs
/// are written only after that flush (SPEC.md §6). Other files are left alone. Returns how many
/// files it removed.
pub fn sweep(dir: &Path, live: &HashSet<String>) -> Result<usize, StorageError> {
    let entries = fs::read_dir(dir).map_err(|e| io_err("list", dir, e))?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let keep = match name.rsplit_once('.') {
            Some((stem, "pack" | "idx")) => live.contains(stem),
            Some((_, "tmp")) => false,
            _ => true,
        };
        if keep {
            continue;
        }
        let path = entry.path();
        fs::remove_file(&path).map_err(|e| io_err("remove the leftover", &path, e))?;
        tracing::warn!(file = %path.display(), "removed a pack file left unregistered by an interrupted write");
        removed += 1;
    }
    Ok(removed)
}

/// Opens every pack in `dir` from its own files, without the registry that lives in sled: for
/// salvaging a store whose database is damaged (SPEC §6.2). The record is rebuilt from the
/// index header and trailing checksum, then the whole index is verified. Each pack is returned
/// opened, or with why it could not be.
pub fn open_unregistered(dir: &Path) -> Vec<(PathBuf, Result<Pack, StorageError>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let stem = name.strip_suffix(".idx")?;
            is_pack_name(stem).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let idx = idx_path(dir, &name);
            let opened = (|| {
                let bytes = fs::read(&idx).map_err(|e| io_err("read", &idx, e))?;
                if bytes.len() < ENTRIES + CHECKSUM || &bytes[..8] != IDX_MAGIC {
                    return Err(StorageError::Backend(format!(
                        "{} is not a pack index (too short or no header)",
                        idx.display()
                    )));
                }
                let record = PackRecord {
                    name: name.clone(),
                    count: le_u64(&bytes[16..24]),
                    pack_len: le_u64(&bytes[24..32]),
                    checksum: bytes[bytes.len() - CHECKSUM..]
                        .try_into()
                        .unwrap_or([0; 32]),
                };
                let pack = Pack::open(dir, record)?;
                pack.verify_index()?;
                Ok(pack)
            })();
            (pack_path(dir, &name), opened)
        })
        .collect()
}

/// Writes `objects` as one pack, keeping all of them (tests).
#[cfg(test)]
pub fn write_all(
    dir: &Path,
    objects: &[&tapes_protocol::StoredObject],
) -> Result<PackRecord, StorageError> {
    let mut builder = PackBuilder::create(dir)?;
    for object in objects {
        builder.add(&object.id, &object.bytes)?;
    }
    let (record, _) = builder
        .finish(|_| Ok(true))?
        .ok_or_else(|| StorageError::Backend("an empty pack".into()))?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapes_protocol::StoredObject;

    proptest::proptest! {
        /// Index searches compare ids with `id_order`: it must be byte order, including ids
        /// that share their first 8 bytes (a wrong order there would hide such an object).
        #[test]
        fn id_order_is_byte_order(a: [u8; 32], b: [u8; 32], shared in 0usize..=32) {
            let mut b = b;
            b[..shared].copy_from_slice(&a[..shared]);
            proptest::prop_assert_eq!(id_order(&a, &b), a.cmp(&b));
            proptest::prop_assert_eq!(id_order(&b, &a), b.cmp(&a));
        }
    }

    fn object(n: u32) -> StoredObject {
        let bytes = format!("object number {n}").into_bytes();
        StoredObject {
            id: NodeId(*blake3::hash(&bytes).as_bytes()),
            bytes,
        }
    }

    fn sorted(n: u32) -> Vec<StoredObject> {
        let mut objects: Vec<StoredObject> = (0..n).map(object).collect();
        objects.sort_by_key(|o| o.id);
        objects
    }

    #[test]
    fn a_written_pack_opens_and_finds_every_object() {
        let dir = tempfile::tempdir().unwrap();
        let objects = sorted(1000);
        let refs: Vec<&StoredObject> = objects.iter().collect();
        let record = write_all(dir.path(), &refs).unwrap();
        let pack = Pack::open(dir.path(), record.clone()).unwrap();
        assert_eq!(pack.len(), 1000);
        pack.verify_index().unwrap();
        for (i, o) in objects.iter().enumerate() {
            assert_eq!(pack.find(&o.id), Some(i));
            assert_eq!(pack.get(&o.id).unwrap(), Some(o.bytes.as_slice()));
        }
        assert_eq!(pack.get(&object(5000).id).unwrap(), None);
        let decoded = PackRecord::decode(record.name.as_bytes(), &record.encode()).unwrap();
        assert_eq!(decoded, record);
    }

    /// The guessing search finds what a binary search finds, for members and for ids that
    /// are not in the pack (including ones that fall between, before and after members),
    /// and `read_at` returns the same bytes as the mapping.
    #[test]
    fn guessed_lookups_agree_with_a_binary_search() {
        let dir = tempfile::tempdir().unwrap();
        let objects = sorted(20_000);
        let (stored, absent): (Vec<_>, Vec<_>) =
            objects.iter().enumerate().partition(|(i, _)| i % 4 != 0);
        let refs: Vec<&StoredObject> = stored.iter().map(|(_, o)| *o).collect();
        let pack = Pack::open(dir.path(), write_all(dir.path(), &refs).unwrap()).unwrap();
        let binary = |id: &NodeId| {
            let (lo, hi) = pack.bucket(id);
            pack.search(lo, hi, id).ok()
        };
        for (i, o) in refs.iter().enumerate() {
            assert_eq!(pack.find(&o.id), Some(i));
            assert_eq!(pack.read_at(i).unwrap(), o.bytes);
        }
        let mut edges = vec![NodeId([0; 32]), NodeId([0xff; 32])];
        for b in [0u8, 0x7f, 0xff] {
            let mut low = [0u8; 32];
            low[0] = b;
            let mut high = [0xffu8; 32];
            high[0] = b;
            edges.extend([NodeId(low), NodeId(high)]);
        }
        for id in absent.iter().map(|(_, o)| o.id).chain(edges) {
            assert_eq!(pack.find(&id), None);
            assert_eq!(binary(&id), None);
        }
    }

    #[test]
    fn sorted_lookups_agree_with_single_ones() {
        let dir = tempfile::tempdir().unwrap();
        let objects = sorted(3000);
        let (stored, absent) = objects.split_at(2000);
        let refs: Vec<&StoredObject> = stored.iter().collect();
        let pack = Pack::open(dir.path(), write_all(dir.path(), &refs).unwrap()).unwrap();
        let mut queries: Vec<NodeId> = objects.iter().step_by(3).map(|o| o.id).collect();
        queries.extend(absent.iter().map(|o| o.id));
        queries.sort();
        let mut cursor = 0;
        for id in &queries {
            assert_eq!(pack.find_sorted(&mut cursor, id), pack.find(id).is_some());
        }
        let mut cursor = 0;
        let found = stored
            .iter()
            .filter(|o| pack.find_sorted(&mut cursor, &o.id))
            .count();
        assert_eq!(found, 2000);
    }

    #[test]
    fn a_truncated_or_altered_pack_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let objects = sorted(10);
        let refs: Vec<&StoredObject> = objects.iter().collect();
        let record = write_all(dir.path(), &refs).unwrap();
        let pack_file = pack_path(dir.path(), &record.name);
        let full = fs::read(&pack_file).unwrap();
        fs::write(&pack_file, &full[..full.len() - 1]).unwrap();
        let err = Pack::open(dir.path(), record.clone()).err().unwrap();
        assert!(
            err.to_string().contains("bytes, the store registered"),
            "{err}"
        );
        fs::write(&pack_file, &full).unwrap();

        let idx_file = idx_path(dir.path(), &record.name);
        let mut idx = fs::read(&idx_file).unwrap();
        idx[ENTRIES + 3] ^= 1;
        fs::write(&idx_file, &idx).unwrap();
        let pack = Pack::open(dir.path(), record).unwrap();
        let err = pack.verify_index().unwrap_err();
        assert!(
            err.to_string().contains("does not match its checksum"),
            "{err}"
        );
    }

    #[test]
    fn an_index_counting_more_entries_than_a_file_can_hold_is_refused() {
        // Found by fuzzing (fuzz/corpus/pack/regression-idx-len-overflow): the index length
        // for this count overflowed u64 (a panic in debug builds, a wrapped length otherwise).
        let record = |count| PackRecord {
            name: "0".repeat(32),
            count,
            pack_len: PACK_HEADER as u64,
            checksum: [0; 32],
        };
        assert_eq!(record(u64::MAX).idx_len(), u64::MAX);
        assert_eq!(record(0x1000_0000_0000_0014).idx_len(), u64::MAX);
        assert_eq!(record(2).idx_len(), (ENTRIES + CHECKSUM + 2 * ENTRY) as u64);

        let dir = tempfile::tempdir().unwrap();
        let name = "0".repeat(32);
        let mut pack = PACK_MAGIC.to_vec();
        pack.extend_from_slice(&VERSION.to_le_bytes());
        pack.extend_from_slice(&0u32.to_le_bytes());
        fs::write(pack_path(dir.path(), &name), &pack).unwrap();
        let mut idx = IDX_MAGIC.to_vec();
        idx.extend_from_slice(&VERSION.to_le_bytes());
        idx.extend_from_slice(&0u32.to_le_bytes());
        idx.extend_from_slice(&0x1000_0000_0000_0014u64.to_le_bytes());
        idx.extend_from_slice(&(PACK_HEADER as u64).to_le_bytes());
        idx.resize(ENTRIES + CHECKSUM, 0);
        fs::write(idx_path(dir.path(), &name), &idx).unwrap();
        let opened = open_unregistered(dir.path());
        assert_eq!(opened.len(), 1);
        let err = opened[0].1.as_ref().err().expect("refused");
        assert!(err.to_string().contains("the store registered"), "{err}");
    }

    #[test]
    fn sweep_removes_unregistered_and_temporary_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let objects = sorted(3);
        let refs: Vec<&StoredObject> = objects.iter().collect();
        let live = write_all(dir.path(), &refs).unwrap();
        let dead = write_all(dir.path(), &refs[..2]).unwrap();
        fs::write(dir.path().join("0123.pack.tmp"), b"half").unwrap();
        fs::write(dir.path().join("README"), b"not ours").unwrap();
        let removed = sweep(dir.path(), &HashSet::from([live.name.clone()])).unwrap();
        assert_eq!(removed, 3);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = vec![
            format!("{}.idx", live.name),
            format!("{}.pack", live.name),
            "README".to_string(),
        ];
        expected.sort();
        assert_eq!(left, expected);
        assert!(Pack::open(dir.path(), dead).is_err());
    }
}
