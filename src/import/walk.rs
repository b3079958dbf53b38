//! Importing paths: find the transcripts under a path, parse each, ingest in batches.
//!
//! A directory is walked recursively and files in no known format are passed over (a Claude
//! projects folder holds other things too); a single file named explicitly must be importable.
//! Sessions are committed in batches of about [`BATCH_NODES`] nodes so memory stays bounded on
//! large imports; a session is never split across batches, so it lands whole or not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::import::{detect_format, ImportError, SourceFormat, Warning};
use crate::ingest::{ingest, Incoming, IngestReport};
use crate::store::{Store, StoreError};

/// Nodes gathered before a batch is committed.
/// Sorting this many objects by id before inserting keeps sled's writes local (measured:
/// 1M nodes in ~5 s with 200k windows against ~10 s with 50k).
pub const BATCH_NODES: usize = 200_000;

/// What became of one file.
#[derive(Debug)]
pub struct FileOutcome {
    pub path: PathBuf,
    pub format: SourceFormat,
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

/// The importable files under `root` (or `root` itself) with their formats, sorted by path so
/// imports are deterministic. Returns the count of passed-over files too.
pub fn find_importable(root: &Path) -> Result<(Vec<(PathBuf, SourceFormat)>, usize), ImportError> {
    let meta = std::fs::metadata(root).map_err(|source| ImportError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        let format = detect_format(root).map_err(|why| ImportError::Unrecognized {
            path: root.to_path_buf(),
            why,
        })?;
        return Ok((vec![(root.to_path_buf(), format)], 0));
    }
    let mut found = Vec::new();
    let mut passed_over = 0;
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| ImportError::Io {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("filesystem loop")),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        match detect_format(entry.path()) {
            Ok(format) => found.push((entry.path().to_path_buf(), format)),
            Err(_) => passed_over += 1,
        }
    }
    Ok((found, passed_over))
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
                    format: *format,
                    sessions,
                    warnings: report.warnings,
                    skipped_types: report.skipped_types,
                    error: None,
                }
            }
            Err(error) => FileOutcome {
                path: path.clone(),
                format: *format,
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

/// Finds and imports everything under each of `roots`.
pub fn import_paths(
    store: &Store,
    roots: &[PathBuf],
    now_ms: i64,
    on_file: impl FnMut(&Path),
) -> Result<ImportSummary, WalkError> {
    let mut files = Vec::new();
    let mut passed_over = 0;
    for root in roots {
        let (found, skipped) = find_importable(root)?;
        files.extend(found);
        passed_over += skipped;
    }
    let mut summary = import_files(store, &files, now_ms, on_file)?;
    summary.passed_over = passed_over;
    Ok(summary)
}
