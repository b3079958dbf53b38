//! [`Storage`] on sled, with pack files beside it for bulk writes.
//!
//! sled trees:
//! - `objects`: node id (32 bytes) → stored object bytes (small batches)
//! - `packs`: pack name → `PackRecord`: the registry of live packs (large batches)
//! - `refs`: ref key → ref record bytes (updated only through CAS in a transaction)
//! - `settings`: store-wide values such as the format version
//!
//! Packs live in `<store>/packs/` (see `pack.rs`). An object is in sled or in a pack; a
//! read looks in sled first, then in every live pack.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use tapes_protocol::{NodeId, StoredObject};

use super::journal::Journal;
use super::merge::{Merge, Source};
use super::pack::{self, Pack, PackBuilder, PackRecord};
use super::{ChainReader, RefUpdate, Staging, Storage, StorageError, Written};

pub struct SledStorage {
    db: sled::Db,
    objects: sled::Tree,
    /// The registry of live packs: a pack is live exactly when its record is here.
    pack_registry: sled::Tree,
    refs: sled::Tree,
    settings: sled::Tree,
    packs_dir: PathBuf,
    /// The live packs, opened. Changed only under the writer lock, each change in one step:
    /// a checked and registered pack appended, or merged packs replaced by their merge.
    packs: RwLock<Vec<Arc<Pack>>>,
    /// The pack the last lookup found its object in, searched first by the next one: a chain
    /// is walked node after node, and a session's nodes sit in one pack, so this turns a
    /// search of every pack per node (up to [`MAX_PACKS`]) into one.
    last_pack: AtomicUsize,
    /// Pack bytes read by lookups since the packs' mapped pages were last dropped
    /// ([`RELEASE_AFTER_BYTES`]).
    read_since_release: AtomicUsize,
    /// Held by `put_objects` from its presence checks to its last write, so two writers never
    /// both store one object: `Written` stays exact and an object lands in one place.
    writer: Mutex<()>,
    /// A copy of every ref update and of every object stored in sled rather than a pack, so
    /// a damaged database can be rebuilt (`journal.rs`, SPEC §6.2).
    journal: Journal,
}

/// A batch whose new objects reach either bound is written as one pack instead of sled
/// inserts. A pack costs three fsyncs and two files, and adds one index search to every lookup
/// miss for as long as it lives; sled stores 4096 objects of ~500 bytes (or 4 MiB) in about
/// 45 ms, in the range of those fsyncs. Below the bounds sled is as fast and adds no pack, so
/// interactive imports (a few nodes at a time) never make packs; bulk writes (bundle import,
/// fetch: tens of MB per batch) make few, large ones.
const PACK_MIN_OBJECTS: usize = 4096;
const PACK_MIN_BYTES: usize = 4 << 20;
/// sled's page cache, an upper bound, not an allocation. Below ~1.3x the live data sled's
/// cache thrashes (measured when every object lived in sled: lookups 4x slower at 1M objects
/// with 512 MiB), but bulk objects now live in packs and sled holds refs and small batches, so
/// 1 GiB only let a serving process keep everything an ingest had touched (1.1 GB RSS before a
/// fetch began, issue "Speed"). 128 MiB holds the refs of a million-node store twice over:
/// serving a 1 GB fetch peaked at 230–251 MB of anonymous memory with it against 264–279 MB
/// with 192 MiB, and the CLI at 1M nodes did not slow (no-op fetch p50 70.5 ms against 69.7,
/// `tapes sessions` 653 ms against 635).
const SLED_CACHE_BYTES: u64 = 128 << 20;
/// Pack bytes a process reads before it drops the packs' mapped pages ([`Pack::release`]).
/// Objects are read with positioned reads ([`Pack::read_at`]), so what stays mapped is the
/// index pages lookups touch (~44 MB at a million objects, all of it over a large fetch);
/// dropping them every 64 MiB read bounds that, and costs one minor fault per index page
/// read again.
const RELEASE_AFTER_BYTES: usize = 64 << 20;
/// Live packs at most: registering one more merges the [`MERGE_PACKS`] smallest into one. Every
/// lookup miss searches every pack, so their number must stay bounded however small the
/// batches are (a fetch in 4 MiB batches would otherwise make 250 packs per GB); merging the
/// smallest keeps the rewriting to about log16 of the data per byte.
const MAX_PACKS: usize = 32;
const MERGE_PACKS: usize = 16;
/// Bytes a merge reads between two releases of the victims' mapped pages ([`Pack::release`]).
/// A merge reads each victim front to back, so this bounds what it keeps mapped to about 8 MiB
/// plus a page-cache folio (up to 2 MiB). (When merges read in id order, each ~1 KB object sat
/// on a page of its own, and 32 MiB read kept 124 MB mapped during a 1 GB fetch.)
const MERGE_RELEASE_BYTES: usize = 8 << 20;

impl SledStorage {
    /// Opens the store, or fails at once with [`StorageError::Locked`] if another process (or
    /// another handle in this one) holds it. Waiting for the holder is the caller's business:
    /// `shared` waits and talks to the holder meanwhile (SPEC.md §6.1).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::try_open(path)?.ok_or_else(|| StorageError::Locked {
            path: path.display().to_string(),
        })
    }

    /// Opens the store; `None` if sled's lock on it is held elsewhere.
    pub fn try_open(path: &Path) -> Result<Option<Self>, StorageError> {
        let mut retried_snapshot = false;
        let db = loop {
            let config = sled::Config::new()
                .path(path)
                .cache_capacity(SLED_CACHE_BYTES)
                // Durability comes from our explicit flush per batch, not from a timer.
                .flush_every_ms(None);
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) => return Ok(None),
                // sled 0.34 can pick up a snapshot it was still writing when the process died
                // (`snap.*.generating`, upstream spacejam/sled#1527) and then refuses to open.
                // That file is only a cache of the log; removing it makes sled rebuild it.
                Err(sled::Error::Corruption { at: None, .. })
                    if !retried_snapshot && remove_partial_snapshots(path) =>
                {
                    retried_snapshot = true;
                }
                Err(e) => return Err(backend(e)),
            }
        };
        let journal_is_new = !Journal::path(path).exists();
        let refs = db.open_tree("refs").map_err(backend)?;
        // sled opens a lost or zeroed database as a new, empty one: an empty ref space beside
        // a journal that records refs means the database was lost, not that the store is new.
        // This is decided before anything is swept: the pack registry of a lost database is
        // empty too, and every pack would look like a leftover.
        if refs.is_empty() && !journal_is_new {
            let replay = super::journal::replay(&Journal::path(path))?;
            // Only what the journal marks as flushed: a process killed before its first flush
            // leaves journal entries that the database never had to keep.
            let recorded = replay.flushed_refs.values().filter(|v| v.is_some()).count();
            if recorded > 0 {
                return Err(StorageError::Backend(format!(
                    "the database in {} holds no refs, but its journal records {recorded}: the database was lost or replaced; run `tapes fsck` to see what survives and `tapes fsck --repair` to rebuild it",
                    path.display()
                )));
            }
        }
        let pack_registry = db.open_tree("packs").map_err(backend)?;
        let packs_dir = path.join("packs");
        let packs = open_packs(&pack_registry, &packs_dir)?;
        let storage = SledStorage {
            objects: db.open_tree("objects").map_err(backend)?,
            refs,
            settings: db.open_tree("settings").map_err(backend)?,
            pack_registry,
            packs_dir,
            packs: RwLock::new(packs),
            last_pack: AtomicUsize::new(0),
            read_since_release: AtomicUsize::new(0),
            writer: Mutex::new(()),
            journal: Journal::open(path)?,
            db,
        };
        // A store written before the journal existed (or whose journal was lost): start it
        // with a snapshot of everything it protects, so salvage never depends on history the
        // journal did not see.
        if journal_is_new && !storage.refs.is_empty() {
            storage.compact_journal()?;
        }
        // A process killed between registering a pack and merging (the registration that went
        // over the bound) leaves one pack too many, and a store that then only reads would keep
        // it: merge now (found by `crash_relay::pack_merge_killed_long`).
        if storage.packs().len() > MAX_PACKS {
            let _writer = storage
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            storage.merge_if_many();
        }

        Ok(Some(storage))
    }

    /// Rewrites the journal as a snapshot of every ref and every object held in sled (under
    /// the writer lock, so no object insert interleaves; a ref update that races the snapshot
    /// is appended after it and wins on replay).
    fn compact_journal(&self) -> Result<(), StorageError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let refs = self.refs.iter().map(|entry| {
            let (k, v) = entry.map_err(backend)?;
            Ok((k.to_vec(), v.to_vec()))
        });
        let objects = self.objects.iter().map(|entry| {
            let (k, v) = entry.map_err(backend)?;
            let id = NodeId::from_slice(&k)
                .ok_or_else(|| StorageError::Backend("an object key is not 32 bytes".into()))?;
            Ok((id, v.to_vec()))
        });
        self.journal.compact(refs, objects)
    }

    /// A snapshot of the live packs. (A poisoned lock still guards a valid list: no change to
    /// it can panic halfway, so the poison is ignored here and below.)
    fn packs(&self) -> Vec<Arc<Pack>> {
        self.packs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn in_packs(&self, id: &NodeId) -> bool {
        let packs = self.packs.read().unwrap_or_else(PoisonError::into_inner);
        self.find_in_packs(&packs, id).is_some()
    }

    /// The pack holding `id` and its entry there, starting with the pack of the last hit.
    fn find_in_packs<'p>(
        &self,
        packs: &'p [Arc<Pack>],
        id: &NodeId,
    ) -> Option<(&'p Arc<Pack>, usize)> {
        let first = self.last_pack.load(Ordering::Relaxed);
        let first = if first < packs.len() { first } else { 0 };
        let order = (first..packs.len()).chain(0..first);
        for i in order {
            if let Some(entry) = packs[i].find(id) {
                self.last_pack.store(i, Ordering::Relaxed);
                return Some((&packs[i], entry));
            }
        }
        None
    }

    /// The objects of `objects` that are stored nowhere yet, each once (its first time), in the
    /// caller's order: a pack keeps that order, so a chain handed over root first is one run
    /// of bytes a server reads at once ([`Storage::chain_reader`]). The presence checks go in
    /// id order, which is what makes them cheap ([`SortedLookup`]).
    fn missing<'o>(
        &self,
        objects: &'o [StoredObject],
    ) -> Result<Vec<&'o StoredObject>, StorageError> {
        let mut order: Vec<usize> = (0..objects.len()).collect();
        // Stable: of equal ids the first in the caller's order comes first and is the one kept.
        order.sort_by_key(|&i| objects[i].id);
        let mut wanted = vec![false; objects.len()];
        let mut stored = self.sorted_lookup();
        let mut previous: Option<&NodeId> = None;
        for i in order {
            let id = &objects[i].id;
            if previous != Some(id) && !stored.contains(id)? {
                wanted[i] = true;
            }
            previous = Some(id);
        }
        Ok(objects
            .iter()
            .zip(wanted)
            .filter_map(|(object, wanted)| wanted.then_some(object))
            .collect())
    }

    /// Presence checks for ids in increasing order (see [`SortedLookup`]).
    fn sorted_lookup(&self) -> SortedLookup<'_> {
        let packs = self.packs();
        SortedLookup {
            objects: &self.objects,
            next_loose: None,
            cursors: vec![0; packs.len()],
            packs,
        }
    }

    /// Writes `objects` (none stored yet, each once; the caller holds the writer lock) as a
    /// pack, in their order, and registers it.
    fn write_pack(&self, objects: &[&StoredObject]) -> Result<(), StorageError> {
        let mut builder = self.pack_builder()?;
        for object in objects {
            builder.add(&object.id, &object.bytes)?;
        }
        if let Some((record, _)) = builder.finish(|_| Ok(true))? {
            self.register(record)?;
            self.merge_if_many();
        }
        Ok(())
    }

    fn pack_builder(&self) -> Result<PackBuilder, StorageError> {
        std::fs::create_dir_all(&self.packs_dir).map_err(|e| {
            StorageError::Backend(format!("cannot create {}: {e}", self.packs_dir.display()))
        })?;
        PackBuilder::create(&self.packs_dir)
    }

    /// Makes a finished pack live: opened (and so checked), then recorded in the registry. The
    /// registration is a sled write like any other, durable at the next flush; until then a
    /// crash leaves an unregistered pack, which the next open deletes (SPEC.md §6).
    fn register(&self, record: PackRecord) -> Result<(), StorageError> {
        let pack = Pack::open(&self.packs_dir, record.clone())?;
        self.pack_registry
            .insert(record.name.as_bytes(), record.encode())
            .map_err(backend)?;
        self.packs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(pack));
        Ok(())
    }

    /// Completes a staged pack with the objects still not stored (another writer may have
    /// stored some meanwhile) and registers it.
    fn commit_staged(&self, builder: PackBuilder) -> Result<Written, StorageError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stored = self.sorted_lookup();
        let finished = builder.finish(|id| Ok(!stored.contains(id)?))?;
        let Some((record, bytes)) = finished else {
            return Ok(Written::default());
        };
        let written = Written {
            objects: record.count as usize,
            bytes: bytes as usize,
        };
        self.register(record)?;
        self.merge_if_many();
        Ok(written)
    }

    /// Keeps the number of live packs at most [`MAX_PACKS`] (the caller holds the writer
    /// lock). The objects are stored whether or not this succeeds, so a failure (a full disk)
    /// is only logged: the next registration tries again.
    fn merge_if_many(&self) {
        let mut packs = self.packs();
        if packs.len() <= MAX_PACKS {
            return;
        }
        packs.sort_by_key(|p| p.disk_size());
        packs.truncate(MERGE_PACKS);
        if let Err(e) = self.merge(&packs) {
            tracing::warn!(error = %e, "could not merge small packs; lookups stay slower until the next try");
        }
    }

    /// Replaces `victims` with one pack holding their objects, each victim's bytes copied in
    /// file order (so chains stay in one run, and the victims are read front to back). The new
    /// pack is complete and durable before one sled batch registers it and unregisters the
    /// victims, and that batch is flushed before any victim file is deleted: whatever the
    /// moment of a crash, every object is in a registered pack whose files exist (SPEC.md §6).
    fn merge(&self, victims: &[Arc<Pack>]) -> Result<(), StorageError> {
        let mut builder = self.pack_builder()?;
        let mut read = 0usize;
        for victim in victims {
            for i in victim.file_order()? {
                // An id in two victims is kept once by `finish` (the first copy).
                let bytes = victim.object_at(i)?;
                builder.add(&victim.id_at(i), bytes)?;
                read += bytes.len();
                if read >= MERGE_RELEASE_BYTES {
                    // What was read of the victims so far would otherwise stay mapped: a merge
                    // of 16 packs of 32 MiB touched 512 MiB of the process's memory.
                    victim.release();
                    read = 0;
                }
            }
            victim.release();
        }
        let Some((record, _)) = builder.finish(|_| Ok(true))? else {
            return Ok(());
        };
        let merged = Arc::new(Pack::open(&self.packs_dir, record.clone())?);
        let mut batch = sled::Batch::default();
        batch.insert(record.name.as_bytes(), record.encode());
        for victim in victims {
            batch.remove(victim.name().as_bytes());
        }
        self.pack_registry.apply_batch(batch).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        {
            let mut live = self.packs.write().unwrap_or_else(PoisonError::into_inner);
            live.retain(|p| !victims.iter().any(|v| Arc::ptr_eq(p, v)));
            live.push(merged);
        }
        // Readers may still hold a victim (a lookup in flight, an `objects()` walk): on Unix
        // its mapping stays valid after the unlink. A file that cannot be removed now is
        // unregistered and removed by the next open.
        for path in victims.iter().flat_map(|v| v.files()) {
            let _ = std::fs::remove_file(path);
        }
        tracing::debug!(
            packs = victims.len(),
            objects = record.count,
            "merged small packs"
        );
        Ok(())
    }

    /// Every source of objects for a merge: sled's tree, then each pack.
    fn sources<T: 'static>(
        &self,
        from_sled: fn(sled::IVec) -> T,
        from_pack: fn(&Pack, usize) -> Result<T, StorageError>,
    ) -> Vec<Source<'_, T>> {
        let mut sources: Vec<Source<'_, T>> =
            vec![Box::new(self.objects.iter().map(move |entry| {
                let (k, v) = entry.map_err(backend)?;
                let id = NodeId::from_slice(&k).ok_or_else(|| {
                    StorageError::Backend(format!("object key of {} bytes, not 32", k.len()))
                })?;
                Ok((id, from_sled(v)))
            }))];
        for pack in self.packs() {
            sources.push(Box::new(
                (0..pack.len()).map(move |i| Ok((pack.id_at(i), from_pack(&pack, i)?))),
            ));
        }
        sources
    }
}

/// "Is this id stored?" for a batch of ids in increasing order: sled, then each pack through a
/// cursor that only moves forward ([`Pack::find_sorted`]), so a batch of 200,000 ids against
/// packs of millions costs about a pass over their indexes, not 200,000 random searches each.
struct SortedLookup<'s> {
    objects: &'s sled::Tree,
    /// The smallest loose (sled) key not below the last id looked up: `None` before the
    /// first lookup, `Some(None)` when there is none. Ids come in increasing order, so sled
    /// is sought only when an id passes this key, once per loose object in the range instead
    /// of once per id (a sled miss per id was 4 % of a fetching node's CPU).
    next_loose: Option<Option<sled::IVec>>,
    packs: Vec<Arc<Pack>>,
    cursors: Vec<usize>,
}

impl SortedLookup<'_> {
    fn contains(&mut self, id: &NodeId) -> Result<bool, StorageError> {
        let passed = match &self.next_loose {
            None => true,
            Some(None) => false,
            Some(Some(key)) => key.as_ref() < id.as_bytes().as_slice(),
        };
        if passed {
            let next = self.objects.range(id.as_bytes().as_slice()..).keys().next();
            self.next_loose = Some(next.transpose().map_err(backend)?);
        }
        if matches!(&self.next_loose, Some(Some(key)) if key.as_ref() == id.as_bytes().as_slice()) {
            return Ok(true);
        }
        // Every pack is searched so that each cursor keeps up (a cursor left behind would
        // still be correct, only slower to catch up).
        let mut found = false;
        for (pack, cursor) in self.packs.iter().zip(&mut self.cursors) {
            found |= pack.find_sorted(cursor, id);
        }
        Ok(found)
    }
}

/// Opens every registered pack after deleting the pack files nobody registered (leftovers of
/// a crash, SPEC.md §6). A registered pack that is missing or damaged fails the open: refs may
/// name its objects.
fn open_packs(registry: &sled::Tree, dir: &Path) -> Result<Vec<Arc<Pack>>, StorageError> {
    let mut records = Vec::new();
    for entry in registry.iter() {
        let (name, value) = entry.map_err(backend)?;
        records.push(PackRecord::decode(&name, &value)?);
    }
    if dir.is_dir() {
        let live: HashSet<String> = records.iter().map(|r| r.name.clone()).collect();
        pack::sweep(dir, &live)?;
    }
    records
        .into_iter()
        .map(|record| Pack::open(dir, record).map(Arc::new))
        .collect()
}

/// Deletes half-written snapshot files in a sled directory; true if there were any.
fn remove_partial_snapshots(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.")
            && name.ends_with(".generating")
            && std::fs::remove_file(entry.path()).is_ok()
        {
            tracing::warn!(file = %entry.path().display(), "removed a half-written sled snapshot left by a crash");
            removed = true;
        }
    }
    removed
}

fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

fn backend(e: sled::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// Bytes a [`PackChainReader`] reads at once when the chain it walks runs backwards through a
/// pack: about two sessions of the bench's ~100 KB, so one read serves ~250 nodes of ~1 KB
/// where each used to cost a system call (`pread` was 12 % of a serving node's CPU), while a
/// window read for nothing (a chain that leaves the run) costs little. A first window of
/// 64 KiB doubling up to 1 MiB along a chain (less copied for a short session) measured the
/// same with ~1 KB nodes and cost a serving node 7 % more CPU with ~8 KB nodes (more fresh
/// buffers; `cargo bench --bench sync`, 2026-12-08).
const CHAIN_WINDOW: usize = 256 << 10;

/// Where an object is.
enum Located<'p> {
    Sled(sled::IVec),
    Pack(&'p Arc<Pack>, usize),
}

/// The sled backend's [`ChainReader`]: the window of a pack it read last, used while the chain
/// runs backwards through it (each node ending where the one read before it starts, as in a
/// pack written root first); a chain read elsewhere is read node by node, as `get_object` does.
struct PackChainReader<'s> {
    storage: &'s SledStorage,
    /// The pack of the last window, where the window starts in its file, and its bytes.
    window: Option<(Arc<Pack>, usize, Vec<u8>)>,
    /// The pack of the object read last and where that object starts in its file.
    last: Option<(Arc<Pack>, usize)>,
}

impl Drop for PackChainReader<'_> {
    fn drop(&mut self) {
        if let Some((_, _, bytes)) = self.window.take() {
            crate::allocator::give_back(bytes);
        }
    }
}

impl ChainReader for PackChainReader<'_> {
    fn get(&mut self, id: &NodeId) -> Result<Option<Vec<u8>>, StorageError> {
        let mut out = Vec::new();
        Ok(self.read_into(id, &mut out)?.then_some(out))
    }

    fn read_into(&mut self, id: &NodeId, out: &mut Vec<u8>) -> Result<bool, StorageError> {
        let packs = self
            .storage
            .packs
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (pack, entry) = match self.storage.locate(&packs, id)? {
            None => return Ok(false),
            Some(Located::Sled(bytes)) => {
                out.extend_from_slice(&bytes);
                return Ok(true);
            }
            Some(Located::Pack(pack, entry)) => (pack, entry),
        };
        let range = pack.range(entry)?;
        let in_window = |w: &(Arc<Pack>, usize, Vec<u8>)| {
            Arc::ptr_eq(&w.0, pack) && w.1 <= range.start && range.end <= w.1 + w.2.len()
        };
        let follows = self
            .last
            .as_ref()
            .is_some_and(|(p, start)| Arc::ptr_eq(p, pack) && *start == range.end);
        self.last = Some((pack.clone(), range.start));
        let (window_pack, start, bytes) = match self.window.take() {
            Some(window) if in_window(&window) => window,
            other if follows && range.len() <= CHAIN_WINDOW => {
                // The last window's buffer, or one the process kept (fresh memory is a page
                // fault per 4 KiB, and a reader per served session would take a fresh one).
                let mut bytes = other
                    .map(|(_, _, bytes)| bytes)
                    .unwrap_or_else(crate::allocator::take_buffer);
                let start = pack.read_before(range.end, CHAIN_WINDOW, &mut bytes)?;
                self.storage.count_read(&packs, bytes.len());
                (pack.clone(), start, bytes)
            }
            other => {
                self.window = other;
                out.extend_from_slice(&self.storage.read_packed(&packs, pack, entry)?);
                return Ok(true);
            }
        };
        // The window holds the object: it was checked to, or it ends at the object's end and
        // is at least its length.
        let object = range
            .start
            .checked_sub(start)
            .and_then(|at| bytes.get(at..at + range.len()))
            .ok_or_else(|| {
                StorageError::Backend(format!(
                    "object {id} is not where its pack's window was read; run `tapes fsck`"
                ))
            })?;
        out.extend_from_slice(object);
        self.window = Some((window_pack, start, bytes));
        Ok(true)
    }
}

impl SledStorage {
    /// Where `id` is: the pack of the last hit first (walking a chain that sits in a pack,
    /// this finds each node with one index search instead of a sled miss of about a
    /// microsecond first), then sled, then every pack.
    fn locate<'p>(
        &self,
        packs: &'p [Arc<Pack>],
        id: &NodeId,
    ) -> Result<Option<Located<'p>>, StorageError> {
        if let Some(pack) = packs.get(self.last_pack.load(Ordering::Relaxed)) {
            if let Some(entry) = pack.find(id) {
                return Ok(Some(Located::Pack(pack, entry)));
            }
        }
        if let Some(v) = self.objects.get(id.as_bytes()).map_err(backend)? {
            return Ok(Some(Located::Sled(v)));
        }
        Ok(self
            .find_in_packs(packs, id)
            .map(|(pack, entry)| Located::Pack(pack, entry)))
    }

    /// Counts `bytes` read from packs, dropping the packs' mapped index pages every
    /// [`RELEASE_AFTER_BYTES`].
    fn count_read(&self, packs: &[Arc<Pack>], bytes: usize) {
        let read = self.read_since_release.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if read >= RELEASE_AFTER_BYTES {
            self.read_since_release.store(0, Ordering::Relaxed);
            packs.iter().for_each(|p| p.release());
        }
    }

    /// Reads an object out of its pack ([`Pack::read_at`]), dropping the packs' mapped index
    /// pages every [`RELEASE_AFTER_BYTES`] read.
    fn read_packed(
        &self,
        packs: &[Arc<Pack>],
        pack: &Pack,
        entry: usize,
    ) -> Result<Vec<u8>, StorageError> {
        let bytes = pack.read_at(entry)?;
        self.count_read(packs, bytes.len());
        Ok(bytes)
    }
}

impl Storage for SledStorage {
    fn get_object(&self, id: &NodeId) -> Result<Option<Vec<u8>>, StorageError> {
        let packs = self.packs.read().unwrap_or_else(PoisonError::into_inner);
        match self.locate(&packs, id)? {
            None => Ok(None),
            Some(Located::Sled(bytes)) => Ok(Some(bytes.to_vec())),
            Some(Located::Pack(pack, entry)) => Ok(Some(self.read_packed(&packs, pack, entry)?)),
        }
    }

    fn chain_reader(&self) -> Box<dyn ChainReader + '_> {
        Box::new(PackChainReader {
            storage: self,
            window: None,
            last: None,
        })
    }

    fn contains_object(&self, id: &NodeId) -> Result<bool, StorageError> {
        Ok(self.objects.contains_key(id.as_bytes()).map_err(backend)? || self.in_packs(id))
    }

    fn put_objects(&self, objects: &[StoredObject]) -> Result<Written, StorageError> {
        // Atomicity across the objects of a batch is not needed: objects are immutable and
        // unreachable until a ref names them, and refs are written only after the flush that
        // follows this call (SPEC.md §6).
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let missing = self.missing(objects)?;
        let written = Written {
            objects: missing.len(),
            bytes: missing.iter().map(|o| o.bytes.len()).sum(),
        };
        if written.objects >= PACK_MIN_OBJECTS || written.bytes >= PACK_MIN_BYTES {
            self.write_pack(&missing)?;
        } else {
            // In key order: about twice as fast as sled's Batch (which applies writes in hash
            // order), and it leaves fuller leaves on disk.
            for object in &missing {
                self.objects
                    .insert(object.id.as_bytes(), object.bytes.as_slice())
                    .map_err(backend)?;
            }
            self.journal.record_objects(&missing)?;
        }
        Ok(written)
    }

    fn stage(&self) -> Result<Box<dyn Staging + '_>, StorageError> {
        Ok(Box::new(SledStaging {
            storage: self,
            small: Vec::new(),
            small_bytes: 0,
            pack: None,
        }))
    }

    fn objects(&self) -> Box<dyn Iterator<Item = Result<(NodeId, Vec<u8>), StorageError>> + '_> {
        // This is fsck's read of everything, so it is where pack indexes are checksummed in
        // full (open only checks what is cheap); a damaged index comes first, as an error.
        let damaged: Vec<Result<(NodeId, Vec<u8>), StorageError>> = self
            .packs()
            .iter()
            .filter_map(|p| p.verify_index().err())
            .map(Err)
            .collect();
        let merged = Merge::new(self.sources(
            |v| v.to_vec(),
            |pack, i| pack.object_at(i).map(<[u8]>::to_vec),
        ));
        Box::new(damaged.into_iter().chain(merged))
    }

    fn object_count(&self) -> usize {
        // Distinct ids over sled and every pack (a merge of sorted id lists; sled's own `len`
        // is a full scan as well).
        Merge::new(self.sources(|_| (), |_, _| Ok(())))
            .filter(Result::is_ok)
            .count()
    }

    fn get_ref(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.refs.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn update_refs(&self, updates: &[RefUpdate]) -> Result<(), StorageError> {
        let result = self.refs.transaction(|tx| {
            for update in updates {
                let current = tx.get(&update.key)?;
                if current.as_deref() != update.expected.as_deref() {
                    return Err(ConflictableTransactionError::Abort(
                        StorageError::Conflict {
                            key: String::from_utf8_lossy(&update.key).into_owned(),
                            current: current.map(|c| c.to_vec()),
                        },
                    ));
                }
                match &update.new {
                    Some(value) => {
                        tx.insert(update.key.as_slice(), value.as_slice())?;
                    }
                    None => {
                        tx.remove(update.key.as_slice())?;
                    }
                }
            }
            // Derived views compare this counter instead of scanning refs (SPEC §13).
            if crate::store::generation::moves(updates.iter().map(|u| &u.key)) {
                let key = crate::store::keys::GENERATION;
                let next = crate::store::generation::next(tx.get(key)?.as_deref());
                tx.insert(key, next.as_slice())?;
            }
            // Cached peer views compare this one (`share::access`, SPEC §15.2).
            if updates
                .iter()
                .any(|u| crate::store::keys::moves_access(&u.key))
            {
                use crate::store::generation::{self, Generation};
                let key = crate::store::keys::ACCESS_GENERATION;
                let next = generation::next(tx.get(key)?.as_deref());
                tx.insert(key, next.as_slice())?;
                // What this change touched, so a kept view is brought along, not rebuilt;
                // the entry that falls out of the log goes in the same step.
                if let Some(at) = Generation::decode(&next) {
                    let entry =
                        generation::access_log_entry(&at, updates.iter().map(|u| &u.key[..]));
                    tx.insert(generation::access_log_key(at.count), entry)?;
                    if let Some(old) = at.count.checked_sub(generation::ACCESS_LOG_KEEP) {
                        tx.remove(generation::access_log_key(old))?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => self.journal.record_refs(updates),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    fn refs(
        &self,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + '_> {
        Box::new(self.refs.scan_prefix(prefix).map(|entry| {
            let (k, v) = entry.map_err(backend)?;
            Ok((k.to_vec(), v.to_vec()))
        }))
    }

    fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.settings.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn set_setting(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.settings.insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(backend)?;
        self.journal.sync()?;
        if self.journal.wants_compaction() {
            self.compact_journal()?;
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        let packs: u64 = self.packs().iter().map(|p| p.disk_size()).sum();
        Ok(self.db.size_on_disk().map_err(backend)? + packs)
    }

    fn remove_objects(&self, ids: &[NodeId]) -> Result<Written, StorageError> {
        let removed = {
            let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            self.remove_under_lock(ids)?
        };
        if removed.objects > 0 {
            // The journal holds copies of sled's objects and of old ref values (a removed
            // session's record among them): a snapshot of what is current drops them.
            self.compact_journal()?;
        }
        Ok(removed)
    }
}

impl SledStorage {
    /// [`Storage::remove_objects`] with the writer lock held, so no `put_objects` decides an
    /// object is present while it is being removed. Sled's copies go in one batch; each pack
    /// holding a removed object is rewritten with only the others (never copying the removed
    /// bytes), the rewrites registered and the old packs unregistered in one sled batch,
    /// flushed before any old file is deleted: the same steps as a merge (SPEC.md §6 rule 6),
    /// so a crash leaves either the old packs or the rewritten ones live, each complete.
    fn remove_under_lock(&self, ids: &[NodeId]) -> Result<Written, StorageError> {
        let dead: HashSet<NodeId> = ids.iter().copied().collect();
        let mut removed = Written::default();
        let mut batch = sled::Batch::default();
        for id in &dead {
            if let Some(bytes) = self.objects.get(id.as_bytes()).map_err(backend)? {
                batch.remove(id.as_bytes());
                removed.objects += 1;
                removed.bytes += bytes.len();
            }
        }
        self.objects.apply_batch(batch).map_err(backend)?;
        let victims: Vec<Arc<Pack>> = self
            .packs()
            .into_iter()
            .filter(|pack| dead.iter().any(|id| pack.find(id).is_some()))
            .collect();
        let mut rewritten = Vec::new();
        for victim in &victims {
            let mut builder = self.pack_builder()?;
            for i in 0..victim.len() {
                let id = victim.id_at(i);
                let bytes = victim.object_at(i)?;
                if dead.contains(&id) {
                    removed.objects += 1;
                    removed.bytes += bytes.len();
                } else {
                    builder.add(&id, bytes)?;
                }
            }
            victim.release();
            if let Some((record, _)) = builder.finish(|_| Ok(true))? {
                rewritten.push((
                    record.clone(),
                    Arc::new(Pack::open(&self.packs_dir, record)?),
                ));
            }
        }
        if !victims.is_empty() {
            let mut registry = sled::Batch::default();
            for (record, _) in &rewritten {
                registry.insert(record.name.as_bytes(), record.encode());
            }
            for victim in &victims {
                registry.remove(victim.name().as_bytes());
            }
            self.pack_registry.apply_batch(registry).map_err(backend)?;
        }
        self.db.flush().map_err(backend)?;
        if !victims.is_empty() {
            {
                let mut live = self.packs.write().unwrap_or_else(PoisonError::into_inner);
                live.retain(|p| !victims.iter().any(|v| Arc::ptr_eq(p, v)));
                live.extend(rewritten.into_iter().map(|(_, pack)| pack));
            }
            // Unregistered now; a file that cannot be removed is swept by the next open.
            for path in victims.iter().flat_map(|v| v.files()) {
                let _ = std::fs::remove_file(path);
            }
        }
        tracing::debug!(
            objects = removed.objects,
            packs = victims.len(),
            "removed unreachable objects"
        );
        Ok(removed)
    }
}

/// Staged objects: kept in memory while they would fit a `put_objects` batch that goes to
/// sled, streamed into a [`PackBuilder`] as soon as they would make a pack.
struct SledStaging<'s> {
    storage: &'s SledStorage,
    small: Vec<StoredObject>,
    small_bytes: usize,
    pack: Option<PackBuilder>,
}

impl Staging for SledStaging<'_> {
    fn add(&mut self, id: &NodeId, bytes: &[u8]) -> Result<(), StorageError> {
        if let Some(pack) = &mut self.pack {
            return pack.add(id, bytes);
        }
        self.small.push(StoredObject {
            id: *id,
            bytes: bytes.to_vec(),
        });
        self.small_bytes += bytes.len();
        if self.small.len() >= PACK_MIN_OBJECTS || self.small_bytes >= PACK_MIN_BYTES {
            let mut pack = self.storage.pack_builder()?;
            for object in self.small.drain(..) {
                pack.add(&object.id, &object.bytes)?;
            }
            self.small_bytes = 0;
            self.pack = Some(pack);
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<Written, StorageError> {
        match self.pack {
            Some(pack) => self.storage.commit_staged(pack),
            None => self.storage.put_objects(&self.small),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SledStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = SledStorage::open(&dir.path().join("db")).unwrap();
        (dir, storage)
    }

    fn upd(key: &str, expected: Option<&str>, new: Option<&str>) -> RefUpdate {
        RefUpdate {
            key: key.as_bytes().to_vec(),
            expected: expected.map(|s| s.as_bytes().to_vec()),
            new: new.map(|s| s.as_bytes().to_vec()),
        }
    }

    #[test]
    fn cas_rejects_a_stale_writer_and_keeps_the_winner() {
        let (_dir, s) = open();
        s.update_refs(&[upd("r", None, Some("a"))]).unwrap();
        let err = s.update_refs(&[upd("r", None, Some("b"))]).unwrap_err();
        assert!(matches!(err, StorageError::Conflict { current: Some(ref c), .. } if c == b"a"));
        s.update_refs(&[upd("r", Some("a"), Some("c"))]).unwrap();
        assert_eq!(s.get_ref(b"r").unwrap().unwrap(), b"c");
    }

    #[test]
    fn a_batch_of_ref_updates_is_all_or_nothing() {
        let (_dir, s) = open();
        s.update_refs(&[upd("x", None, Some("1"))]).unwrap();
        let err = s.update_refs(&[upd("y", None, Some("2")), upd("x", Some("0"), Some("3"))]);
        assert!(err.is_err());
        assert_eq!(
            s.get_ref(b"y").unwrap(),
            None,
            "first update of a failed batch leaked"
        );
        assert_eq!(s.get_ref(b"x").unwrap().unwrap(), b"1");
    }

    fn object(n: usize) -> StoredObject {
        let bytes = format!("object {n} {}", "x".repeat(n % 700)).into_bytes();
        StoredObject {
            id: NodeId(*blake3::hash(&bytes).as_bytes()),
            bytes,
        }
    }

    fn objects(range: std::ops::Range<usize>) -> Vec<StoredObject> {
        range.map(object).collect()
    }

    fn pack_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("db").join("packs"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn written(objects: &[StoredObject]) -> Written {
        Written {
            objects: objects.len(),
            bytes: objects.iter().map(|o| o.bytes.len()).sum(),
        }
    }

    #[test]
    fn a_large_batch_becomes_one_pack_and_reads_back() {
        let (dir, s) = open();
        let batch = objects(0..PACK_MIN_OBJECTS + 10);
        assert_eq!(s.put_objects(&batch).unwrap(), written(&batch));
        let files = pack_files(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].ends_with(".idx") && files[1].ends_with(".pack"));
        for o in &batch {
            assert_eq!(
                s.get_object(&o.id).unwrap().as_deref(),
                Some(o.bytes.as_slice())
            );
            assert!(s.contains_object(&o.id).unwrap());
        }
        assert!(!s.contains_object(&object(999_999).id).unwrap());
        assert_eq!(s.object_count(), batch.len());
        assert_eq!(s.put_objects(&batch).unwrap(), Written::default());
        assert_eq!(
            pack_files(dir.path()).len(),
            2,
            "a repeated batch made a pack"
        );
    }

    #[test]
    fn objects_are_listed_once_in_id_order_across_sled_and_packs() {
        let (_dir, s) = open();
        let small = objects(0..100);
        assert_eq!(s.put_objects(&small).unwrap(), written(&small));
        // Overlaps the sled objects, repeats some within itself, and overlaps the next pack.
        let mut first = objects(50..5000);
        first.extend(objects(60..70));
        assert_eq!(s.put_objects(&first).unwrap(), written(&objects(100..5000)));
        let second = objects(4000..10_000);
        assert_eq!(
            s.put_objects(&second).unwrap(),
            written(&objects(5000..10_000))
        );
        let listed: Vec<(NodeId, Vec<u8>)> = s.objects().map(|r| r.unwrap()).collect();
        let mut expected: Vec<(NodeId, Vec<u8>)> = objects(0..10_000)
            .into_iter()
            .map(|o| (o.id, o.bytes))
            .collect();
        expected.sort();
        assert_eq!(listed, expected);
        assert_eq!(s.object_count(), 10_000);
    }

    #[test]
    fn packs_survive_a_reopen_and_count_in_the_size_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let batch = objects(0..5000);
        let before = {
            let s = SledStorage::open(&dir.path().join("db")).unwrap();
            let empty = s.size_on_disk().unwrap();
            s.put_objects(&batch).unwrap();
            s.flush().unwrap();
            assert!(s.size_on_disk().unwrap() > empty + written(&batch).bytes as u64);
            s.size_on_disk().unwrap()
        };
        let s = reopen(dir.path());
        assert_eq!(s.object_count(), 5000);
        assert_eq!(
            s.get_object(&batch[4321].id).unwrap().unwrap(),
            batch[4321].bytes
        );
        assert!(s.size_on_disk().unwrap() >= before - 1024 * 1024);
    }

    /// sled's background threads may hold the previous handle for a moment after a drop.
    fn reopen(dir: &Path) -> SledStorage {
        for _ in 0..100 {
            match SledStorage::open(&dir.join("db")) {
                Ok(s) => return s,
                Err(StorageError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
        panic!("the store stayed locked")
    }

    #[test]
    fn unregistered_pack_files_are_deleted_on_open() {
        let (dir, s) = open();
        s.put_objects(&objects(0..5000)).unwrap();
        s.flush().unwrap();
        let live = pack_files(dir.path());
        drop(s);
        // What a crash leaves: a pack written and renamed whose registration never became
        // durable, and a half-written temporary file.
        let packs = dir.path().join("db").join("packs");
        let orphan = objects(5000..5010);
        let refs: Vec<&StoredObject> = {
            let mut r: Vec<&StoredObject> = orphan.iter().collect();
            r.sort_by_key(|o| o.id);
            r
        };
        pack::write_all(&packs, &refs).unwrap();
        std::fs::write(packs.join("abc.idx.tmp"), b"half").unwrap();
        let s = reopen(dir.path());
        assert_eq!(pack_files(dir.path()), live);
        assert!(!s.contains_object(&orphan[0].id).unwrap());
        assert_eq!(s.object_count(), 5000);
    }

    #[test]
    fn a_registered_pack_that_is_damaged_or_missing_fails_the_open() {
        let (dir, s) = open();
        s.put_objects(&objects(0..5000)).unwrap();
        s.flush().unwrap();
        drop(s);
        let packs = dir.path().join("db").join("packs");
        let pack = pack_files(dir.path())
            .into_iter()
            .find(|n| n.ends_with(".pack"))
            .unwrap();
        let path = packs.join(&pack);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = open_fails(dir.path());
        assert!(matches!(err, StorageError::Backend(_)));
        assert!(err.to_string().contains(&pack), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = open_fails(dir.path());
        assert!(err.to_string().contains("cannot be opened"), "{err}");
    }

    fn open_fails(dir: &Path) -> StorageError {
        for _ in 0..100 {
            match SledStorage::open(&dir.join("db")) {
                Err(StorageError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => return e,
                Ok(_) => panic!("a store with a damaged pack opened"),
            }
        }
        panic!("the store stayed locked")
    }

    #[test]
    fn many_small_packs_are_merged_and_every_object_stays() {
        let (dir, s) = open();
        let per = PACK_MIN_OBJECTS;
        let batches = MAX_PACKS + 2;
        for b in 0..batches {
            s.put_objects(&objects(b * per..(b + 1) * per)).unwrap();
        }
        s.flush().unwrap();
        let live = s.packs().len();
        assert!(live <= MAX_PACKS, "{live} packs live");
        assert_eq!(
            pack_files(dir.path()).len(),
            2 * live,
            "merged packs left files behind"
        );
        assert_eq!(s.object_count(), batches * per);
        for n in (0..batches * per).step_by(997) {
            assert_eq!(
                s.get_object(&object(n).id).unwrap().unwrap(),
                object(n).bytes
            );
        }
        drop(s);
        let s = reopen(dir.path());
        assert_eq!(s.packs().len(), live);
        assert_eq!(s.object_count(), batches * per);
        let listed: Vec<(NodeId, Vec<u8>)> = s.objects().collect::<Result<_, _>>().unwrap();
        assert_eq!(listed.len(), batches * per);
    }

    /// The access log keeps the last [`ACCESS_LOG_KEEP`] changes: each ref change a view
    /// depends on adds its entry and drops the one that many changes older, in one step.
    #[test]
    fn the_access_log_keeps_its_last_entries_only() {
        use crate::store::generation::{access_log_key, ACCESS_LOG_KEEP};
        use crate::store::keys;
        let (_dir, s) = open();
        let changes = ACCESS_LOG_KEEP + 20;
        for n in 0..changes {
            let id = tapes_protocol::SessionId([n as u8; 16]);
            let key = String::from_utf8(keys::session(&id)).unwrap();
            let before = (n >= 256).then(|| format!("{}", n - 256));
            s.update_refs(&[upd(&key, before.as_deref(), Some(&n.to_string()))])
                .unwrap();
        }
        // Not counted: a ref no view depends on.
        s.update_refs(&[upd("audit/x", None, Some("1"))]).unwrap();
        let kept: Vec<Vec<u8>> = s.refs(keys::ACCESS_LOG).map(|r| r.unwrap().0).collect();
        let expected: Vec<Vec<u8>> = (changes - ACCESS_LOG_KEEP + 1..=changes)
            .map(access_log_key)
            .collect();
        assert_eq!(kept, expected);
    }

    /// Ids of the objects of `pack` in the order their bytes sit in its file.
    fn in_file(pack: &Pack) -> Vec<NodeId> {
        pack.file_order()
            .unwrap()
            .into_iter()
            .map(|i| pack.id_at(i))
            .collect()
    }

    #[test]
    fn packs_keep_the_callers_order_through_merges() {
        let (_dir, s) = open();
        let per = PACK_MIN_OBJECTS;
        // Each batch handed over in reverse (not id order), one id repeated: kept once, at its
        // first place.
        let batch = |b: usize| {
            let mut batch: Vec<StoredObject> = objects(b * per..(b + 1) * per);
            batch.reverse();
            batch.push(batch[3].clone());
            batch
        };
        s.put_objects(&batch(0)).unwrap();
        let ids = |b: usize| -> Vec<NodeId> { batch(b)[..per].iter().map(|o| o.id).collect() };
        assert_eq!(in_file(&s.packs()[0]), ids(0));
        for b in 1..MAX_PACKS + 1 {
            s.put_objects(&batch(b)).unwrap();
        }
        // The merge made one pack of the smallest; every batch is still one run in order.
        let packs = s.packs();
        assert!(packs.len() <= MAX_PACKS, "{} packs", packs.len());
        let merged = packs.iter().max_by_key(|p| p.len()).unwrap();
        assert!(merged.len() > per, "nothing was merged");
        let order = in_file(merged);
        let runs = order.chunks(per).collect::<Vec<_>>();
        for run in runs {
            let b = (0..=MAX_PACKS).find(|&b| ids(b)[0] == run[0]).unwrap();
            assert_eq!(run, ids(b).as_slice(), "batch {b} was split or reordered");
        }
    }

    /// A chain walked from its head with a [`ChainReader`] reads what `get_object` reads,
    /// whether its nodes run backwards through one pack (served from windows), are larger than
    /// a window, sit in two packs or in sled, or are absent.
    #[test]
    fn a_chain_reader_reads_what_get_object_reads() {
        let (_dir, s) = open();
        let big = |n: usize| {
            let bytes = format!("big {n} {}", "y".repeat(CHAIN_WINDOW + 10)).into_bytes();
            StoredObject {
                id: NodeId(*blake3::hash(&bytes).as_bytes()),
                bytes,
            }
        };
        // Root first, as an import hands a chain over: a walk meets them in reverse.
        let mut first: Vec<StoredObject> = objects(0..PACK_MIN_OBJECTS);
        first.insert(2000, big(1));
        first.insert(2001, big(2));
        let second: Vec<StoredObject> = objects(PACK_MIN_OBJECTS..2 * PACK_MIN_OBJECTS);
        let small: Vec<StoredObject> = objects(2 * PACK_MIN_OBJECTS..2 * PACK_MIN_OBJECTS + 50);
        for batch in [&first, &second, &small] {
            s.put_objects(batch).unwrap();
        }
        assert_eq!(s.packs().len(), 2);
        let mut walk: Vec<&StoredObject> = first.iter().chain(&second).chain(&small).collect();
        walk.reverse();
        let mut reader = s.chain_reader();
        for o in &walk {
            assert_eq!(
                reader.get(&o.id).unwrap().as_deref(),
                Some(o.bytes.as_slice())
            );
        }
        assert_eq!(reader.get(&object(999_999).id).unwrap(), None);
        // Read in another order (forwards, every third), it still reads the right bytes.
        let mut reader = s.chain_reader();
        for o in walk.iter().rev().step_by(3) {
            assert_eq!(reader.get(&o.id).unwrap(), s.get_object(&o.id).unwrap());
        }
    }

    /// Reading a store much larger than [`RELEASE_AFTER_BYTES`] (a server answering a big
    /// fetch) keeps this process's mapped pack pages bounded: they are dropped as it goes.
    #[test]
    #[cfg(target_os = "linux")]
    fn reading_every_object_keeps_mapped_pages_bounded() {
        fn rss_file_kb() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }
        let (_dir, s) = open();
        // ~200 MB in packs of ~8 MB: three times the release threshold.
        let body = "y".repeat(8 << 10);
        let make = |n: usize| {
            let bytes = format!("object {n} {body}").into_bytes();
            StoredObject {
                id: NodeId(*blake3::hash(&bytes).as_bytes()),
                bytes,
            }
        };
        let total = 24_000;
        for start in (0..total).step_by(1000) {
            let batch: Vec<StoredObject> = (start..start + 1000).map(make).collect();
            s.put_objects(&batch).unwrap();
        }
        s.flush().unwrap();
        let before = rss_file_kb();
        let mut peak = before;
        for n in 0..total {
            assert!(s.get_object(&make(n).id).unwrap().is_some());
            if n % 500 == 0 {
                peak = peak.max(rss_file_kb());
            }
        }
        let grown_mb = (peak.saturating_sub(before)) / 1024;
        assert!(
            grown_mb < 128,
            "reading ~200 MB of packs grew the mapped pages by {grown_mb} MB"
        );
    }

    /// A process killed after registering the pack that went over [`MAX_PACKS`] and before
    /// merging leaves one too many; the next open merges (crash safety, SPEC.md §6).
    #[test]
    fn a_store_left_over_the_pack_bound_is_merged_on_open() {
        let (dir, s) = open();
        for k in 0..=MAX_PACKS {
            let batch = objects(k * 10..k * 10 + 10);
            let mut builder = s.pack_builder().unwrap();
            for o in &batch {
                builder.add(&o.id, &o.bytes).unwrap();
            }
            let (record, _) = builder.finish(|_| Ok(true)).unwrap().unwrap();
            // Registered without the merge a registration normally ends with.
            s.register(record).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(s.packs().len(), MAX_PACKS + 1);
        drop(s);
        let s = reopen(dir.path());
        assert!(s.packs().len() <= MAX_PACKS, "{} packs", s.packs().len());
        for n in 0..(MAX_PACKS + 1) * 10 {
            assert_eq!(
                s.get_object(&object(n).id).unwrap().unwrap(),
                object(n).bytes
            );
        }
    }

    #[test]
    fn concurrent_writers_of_one_batch_store_it_once() {
        let (dir, s) = open();
        let batch = objects(0..6000);
        let totals: Vec<Written> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| s.put_objects(&batch).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(totals.iter().map(|w| w.objects).sum::<usize>(), 6000);
        assert_eq!(s.object_count(), 6000);
        assert_eq!(pack_files(dir.path()).len(), 2);
    }

    #[test]
    fn staged_objects_land_on_commit_and_vanish_when_dropped() {
        let (dir, s) = open();
        let already = objects(0..10);
        s.put_objects(&already).unwrap();
        let batch = objects(0..6000);

        let mut staging = s.stage().unwrap();
        for o in &batch {
            staging.add(&o.id, &o.bytes).unwrap();
        }
        assert!(!s.contains_object(&batch[5000].id).unwrap());
        drop(staging);
        assert_eq!(pack_files(dir.path()), Vec::<String>::new());
        assert_eq!(s.object_count(), 10);

        let mut staging = s.stage().unwrap();
        for o in batch.iter().chain(&batch[100..200]) {
            staging.add(&o.id, &o.bytes).unwrap();
        }
        // Stored by someone else while the staging ran: not counted again.
        s.put_objects(&batch[10..20]).unwrap();
        assert_eq!(staging.commit().unwrap(), written(&batch[20..]));
        assert_eq!(pack_files(dir.path()).len(), 2);
        assert_eq!(s.object_count(), 6000);
        let listed: Vec<NodeId> = s.objects().map(|r| r.unwrap().0).collect();
        let mut expected: Vec<NodeId> = batch.iter().map(|o| o.id).collect();
        expected.sort();
        assert_eq!(listed, expected);
    }

    #[test]
    fn a_small_staging_goes_to_sled() {
        let (dir, s) = open();
        let batch = objects(0..50);
        let mut staging = s.stage().unwrap();
        for o in &batch {
            staging.add(&o.id, &o.bytes).unwrap();
        }
        assert_eq!(staging.commit().unwrap(), written(&batch));
        assert_eq!(pack_files(dir.path()), Vec::<String>::new());
        assert_eq!(s.get_object(&batch[7].id).unwrap().unwrap(), batch[7].bytes);
    }

    #[test]
    fn a_second_open_of_the_same_store_says_it_is_locked() {
        let (dir, _s) = open();
        match SledStorage::open(&dir.path().join("db")) {
            Err(StorageError::Locked { .. }) => {}
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("expected Locked, opened twice"),
        }
    }
}
