//! Importing paths: find the transcripts under a path, parse each, ingest in batches.
//!
//! A directory is walked recursively and files in no known format are passed over (a Claude
//! projects folder holds other things too); a single file named explicitly must be importable.
//! Sessions are committed in batches of about [`BATCH_NODES`] nodes so memory stays bounded on
//! large imports; a session is never split across batches, so it lands whole or not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::import::ingest::{ingest, Incoming, IngestReport};
use crate::import::{detect_format, ImportError, SourceFormat, Warning};
use crate::store::{Store, StoreError};

/// Nodes gathered before a batch is committed.
/// Sorting this many objects by id before inserting keeps sled's writes local (measured:
/// 1M nodes in ~5 s with 200k windows against ~10 s with 50k).
pub const BATCH_NODES: usize = 200_000;

/// What became of one file.
#[derive(Debug)]
pub struct FileOutcome {
    pub path: PathBuf,
    /// `None` for a path that could not be read far enough to tell.
    pub format: Option<SourceFormat>,
    pub sessions: usize,
    pub warnings: Vec<Warning>,
    pub skipped_types: BTreeMap<String, usize>,
    /// Set when the whole file was refused; nothing of it was stored.
    pub error: Option<ImportError>,
}

#[derive(Debug, Default)]
pub struct ImportSummary {
    pub files: Vec<FileOutcome>,
    /// Files under a directory that are in no format tapes knows.
    pub passed_over: usize,
    /// Files reached more than once by the paths given, imported once.
    pub repeated: usize,
    pub report: IngestReport,
}

impl ImportSummary {
    pub fn refused(&self) -> impl Iterator<Item = &FileOutcome> {
        self.files.iter().filter(|f| f.error.is_some())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a search of the paths to import found.
#[derive(Debug, Default)]
pub struct Found {
    /// Importable files with their formats, each once (by canonical path), in the order found.
    pub files: Vec<(PathBuf, SourceFormat)>,
    /// Files under a directory that are in no format tapes knows.
    pub passed_over: usize,
    /// Paths that could not be read (a dangling link, a loop, no permission, a missing
    /// argument): each is reported and the rest imported.
    pub unreadable: Vec<ImportError>,
    /// Files reached a second time (the same path named twice, overlapping arguments, a link
    /// to a file already found): imported once.
    pub repeated: usize,
    seen: std::collections::HashSet<FileKey>,
}

/// What identifies a file however it was reached: its device and inode on Unix (one `stat`,
/// where canonicalizing every path cost a `realpath` walk per file), else its canonical path.
#[derive(Debug, PartialEq, Eq, Hash)]
enum FileKey {
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_key(path: &Path) -> FileKey {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        return FileKey::Inode(meta.dev(), meta.ino());
    }
    FileKey::Path(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
}

impl Found {
    /// Adds what is under `root` (or `root` itself). A directory is walked recursively in file
    /// name order; one bad entry never stops the walk.
    pub fn add(&mut self, root: &Path) {
        let meta = match std::fs::metadata(root) {
            Ok(meta) => meta,
            Err(source) => {
                self.unreadable.push(ImportError::Io {
                    path: root.to_path_buf(),
                    source,
                });
                return;
            }
        };
        if meta.is_file() {
            match detect_format(root) {
                Ok(format) => self.push(root, format),
                Err(why) => self.unreadable.push(ImportError::Unrecognized {
                    path: root.to_path_buf(),
                    why,
                }),
            }
            return;
        }
        for entry in walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
        {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let source = match e.loop_ancestor() {
                        Some(ancestor) => std::io::Error::other(format!(
                            "a link loop back to {}",
                            ancestor.display()
                        )),
                        None => e
                            .into_io_error()
                            .unwrap_or_else(|| std::io::Error::other("cannot be walked")),
                    };
                    self.unreadable.push(ImportError::Io { path, source });
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            match detect_format(entry.path()) {
                Ok(format) => self.push(entry.path(), format),
                Err(_) => self.passed_over += 1,
            }
        }
    }

    fn push(&mut self, path: &Path, format: SourceFormat) {
        if self.seen.insert(file_key(path)) {
            self.files.push((path.to_path_buf(), format));
        } else {
            self.repeated += 1;
        }
    }
}

/// The importable files under `root` (or `root` itself) with their formats, sorted by path so
/// imports are deterministic. Returns the count of passed-over files too. Unlike
/// [`Found::add`], an unreadable root or entry is an error (watch mode retries later).
pub fn find_importable(root: &Path) -> Result<(Vec<(PathBuf, SourceFormat)>, usize), ImportError> {
    let mut found = Found::default();
    found.add(root);
    match found.unreadable.into_iter().next() {
        Some(e) if found.files.is_empty() => Err(e),
        _ => Ok((found.files, found.passed_over)),
    }
}

/// Imports `files` into `store`. `on_file` is told after each file is parsed (for progress).
pub fn import_files(
    store: &Store,
    files: &[(PathBuf, SourceFormat)],
    now_ms: i64,
    mut on_file: impl FnMut(&Path),
) -> Result<ImportSummary, StoreError> {
    let mut summary = ImportSummary::default();
    let mut pending: Vec<Incoming> = Vec::new();
    let mut pending_nodes = 0;
    for (path, format) in files {
        on_file(path);
        let outcome = match crate::import::parse_file(path, *format) {
            Ok(report) => {
                let sessions = report.sessions.len();
                for session in report.sessions {
                    pending_nodes += session.messages.len();
                    pending.push(Incoming {
                        session,
                        path: path.display().to_string(),
                    });
                }
                FileOutcome {
                    path: path.clone(),
                    format: Some(*format),
                    sessions,
                    warnings: report.warnings,
                    skipped_types: report.skipped_types,
                    error: None,
                }
            }
            Err(error) => FileOutcome {
                path: path.clone(),
                format: Some(*format),
                sessions: 0,
                warnings: Vec::new(),
                skipped_types: BTreeMap::new(),
                error: Some(error),
            },
        };
        summary.files.push(outcome);
        if pending_nodes >= BATCH_NODES {
            summary.report.merge(ingest(store, &pending, now_ms)?);
            pending.clear();
            pending_nodes = 0;
        }
    }
    if !pending.is_empty() {
        summary.report.merge(ingest(store, &pending, now_ms)?);
    }
    Ok(summary)
}

/// Finds and imports everything under each of `roots`. Paths that cannot be read are in the
/// summary's [`ImportSummary::refused`] list; the rest is imported.
pub fn import_paths(
    store: &Store,
    roots: &[PathBuf],
    now_ms: i64,
    on_file: impl FnMut(&Path),
) -> Result<ImportSummary, WalkError> {
    let mut found = Found::default();
    for root in roots {
        found.add(root);
    }
    Ok(import_found(store, found, now_ms, on_file)?)
}

/// Imports what [`Found`] found; its unreadable paths become refused files of the summary.
pub fn import_found(
    store: &Store,
    found: Found,
    now_ms: i64,
    on_file: impl FnMut(&Path),
) -> Result<ImportSummary, StoreError> {
    let mut summary = import_files(store, &found.files, now_ms, on_file)?;
    summary.passed_over = found.passed_over;
    summary.repeated = found.repeated;
    for error in found.unreadable {
        let path = match &error {
            ImportError::Io { path, .. }
            | ImportError::Malformed { path, .. }
            | ImportError::Unrecognized { path, .. }
            | ImportError::Database { path, .. } => path.clone(),
        };
        summary.files.push(FileOutcome {
            path,
            format: None,
            sessions: 0,
            warnings: Vec::new(),
            skipped_types: BTreeMap::new(),
            error: Some(error),
        });
    }
    Ok(summary)
}
