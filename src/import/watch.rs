//! Watch mode: keep archiving transcripts as agents write them.
//!
//! Claude Code deletes transcripts after 30 days; `tapes import --watch` keeps a copy of every
//! session as it grows. It polls file sizes and modification times (every `interval`) rather
//! than relying on inotify, which misses events on network filesystems and needs per-platform
//! code; a poll of a projects folder costs a directory walk. A changed file is re-parsed whole
//! and ingested: node ids make that idempotent, so only the new nodes are written and the
//! session ref moves forward.
//!
//! The store is opened only while a change is being ingested, so `tapes sessions` and friends
//! can run in another terminal while watch mode is on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::import::walk::{find_importable, import_files, ImportSummary, WalkError};
use crate::store::Store;

/// A file's size and modification time: when either changes, the file is imported again.
type Stamp = (u64, Option<SystemTime>);

pub struct Watcher {
    roots: Vec<PathBuf>,
    store_dir: PathBuf,
    seen: HashMap<PathBuf, Stamp>,
}

impl Watcher {
    pub fn new(roots: Vec<PathBuf>, store_dir: PathBuf) -> Watcher {
        Watcher {
            roots,
            store_dir,
            seen: HashMap::new(),
        }
    }

    /// Imports every file that is new or changed since the last call. The first call imports
    /// everything. Returns `None` when nothing changed.
    pub fn poll(&mut self, now_ms: i64) -> Result<Option<ImportSummary>, WalkError> {
        let mut changed = Vec::new();
        for root in &self.roots {
            let (found, _) = match find_importable(root) {
                Ok(found) => found,
                // A root that vanished (or a file mid-write that does not parse yet) is not fatal
                // for a long-running watcher; the next poll tries again.
                Err(e) => {
                    tracing::debug!(error = %e, "watch: cannot scan yet");
                    continue;
                }
            };
            for (path, format) in found {
                let stamp = stamp(&path);
                if self.seen.get(&path) != Some(&stamp) {
                    changed.push((path, format, stamp));
                }
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        let store = Store::open(&self.store_dir)?;
        let files: Vec<_> = changed.iter().map(|(p, f, _)| (p.clone(), *f)).collect();
        let summary = import_files(&store, &files, now_ms, |_| {})?;
        for (path, _, stamp) in changed {
            self.seen.insert(path, stamp);
        }
        Ok(Some(summary))
    }

    /// Polls every `interval` until `stop` is set, handing each non-empty result to `on_import`.
    pub fn run(
        &mut self,
        interval: Duration,
        stop: &AtomicBool,
        mut on_import: impl FnMut(&ImportSummary),
        mut on_error: impl FnMut(&WalkError),
    ) {
        while !stop.load(Ordering::SeqCst) {
            match self.poll(crate::now_ms()) {
                Ok(Some(summary)) => on_import(&summary),
                Ok(None) => {}
                Err(e) => on_error(&e),
            }
            let mut slept = Duration::ZERO;
            while slept < interval && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                slept += Duration::from_millis(50);
            }
        }
    }
}

fn stamp(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => (m.len(), m.modified().ok()),
        Err(_) => (0, None),
    }
}
