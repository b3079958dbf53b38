//! Importers: turn agent transcripts from other tools into tapes sessions.
//!
//! Each importer only parses: it reads one source file into [`ParsedSession`]s (messages in
//! order, without node ids) and a [`FileReport`] of what it skipped. Building the node chain,
//! hashing and writing happen once, in [`crate::import::ingest`], so every importer gets the same
//! idempotence and the same all-or-nothing batch for free.

pub mod ingest;
pub mod watch;

pub mod claude;
pub mod codex;
pub mod detect;
pub mod gemini;
pub mod messages_json;
pub mod tapes_db;
pub mod walk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tapes_protocol::{ContentBlock, NodeMeta, Role};

pub use detect::{detect_format, SourceFormat};

/// One message as an importer read it: the future node minus its parent link.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedMessage {
    pub role: Role,
    /// Model that produced the message; empty when none did (user, tool results).
    pub model: String,
    pub blocks: Vec<ContentBlock>,
    pub meta: NodeMeta,
}

/// One session found in a source file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSession {
    /// Which importer produced it ("claude", "codex", "gemini", "tapes-db", "messages-json").
    pub source_kind: &'static str,
    /// The session's id in its source, stable across re-imports of a growing file (Claude's
    /// sessionId, `<sessionId>/agent-<agentId>` for a subagent, the leaf hash for the tapes DB,
    /// the file path for plain messages JSON). The tapes session id is derived from it.
    pub source_id: String,
    /// `source_id` of the session that spawned this one (subagents, sidechains).
    pub parent_source_id: Option<String>,
    /// A human title when the source has one (Claude `summary`, Codex thread name, ...).
    pub title: Option<String>,
    pub messages: Vec<ParsedMessage>,
}

/// Something an importer noticed and skipped; never fatal for the rest of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line number for line formats; 0 when it concerns the whole file.
    pub line: usize,
    pub message: String,
}

/// What one source file yielded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileReport {
    pub sessions: Vec<ParsedSession>,
    /// Malformed lines or records that were skipped, with their line numbers.
    pub warnings: Vec<Warning>,
    /// Line/record types that are known not to be messages (`summary`, `progress`, ...) or
    /// that this importer does not know, with how many of each were seen.
    pub skipped_types: BTreeMap<String, usize>,
}

/// Why a whole file could not be imported. Nothing of such a file is stored.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: not a transcript tapes can import ({why}); supported: Claude Code .jsonl, Codex rollout .jsonl, Gemini CLI session .json / .jsonl, tapes SQLite database, {{\"messages\":[...]}} JSON")]
    Unrecognized { path: PathBuf, why: String },
    #[error("{path}: tapes database: {message}")]
    Database { path: PathBuf, message: String },
}

impl ImportError {
    pub fn malformed(path: &Path, line: usize, message: impl Into<String>) -> Self {
        ImportError::Malformed {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// Parses one file in the given format.
pub fn parse_file(path: &Path, format: SourceFormat) -> Result<FileReport, ImportError> {
    let lines = matches!(
        format,
        SourceFormat::Claude | SourceFormat::Codex | SourceFormat::GeminiLog
    );
    let (text, bad_lines) = match format {
        SourceFormat::TapesDb => return tapes_db::parse(path),
        _ => read(path, lines)?,
    };
    let mut report = match format {
        SourceFormat::Claude => claude::parse_owned(path, text)?,
        SourceFormat::Codex => codex::parse(path, &text)?,
        SourceFormat::GeminiChat => {
            let mut report = gemini::parse(path, &text)?;
            gemini::fill_project(path, &mut report);
            report
        }
        SourceFormat::GeminiLog => {
            let mut report = gemini::parse_jsonl(path, &text)?;
            gemini::fill_project(path, &mut report);
            report
        }
        SourceFormat::MessagesJson => messages_json::parse(path, &text)?,
        SourceFormat::TapesDb => unreachable!("returned above"),
    };
    report.warnings.extend(bad_lines);
    report.warnings.sort_by_key(|w| w.line);
    Ok(report)
}

/// Reads a transcript as text. Bytes that are not UTF-8 are never silently replaced (that
/// would change what the agent recorded): in a line format (`lines`) each such line is left
/// out with a warning naming it, and the rest is read; in a whole-document format the file is
/// refused, naming the line (SPEC §8).
pub(crate) fn read(path: &Path, lines: bool) -> Result<(String, Vec<Warning>), ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = match String::from_utf8(bytes) {
        Ok(s) => return Ok((s, Vec::new())),
        Err(e) => e.into_bytes(),
    };
    let mut text = String::with_capacity(bytes.len());
    let mut warnings = Vec::new();
    for (index, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        match std::str::from_utf8(line) {
            Ok(line) => text.push_str(line),
            Err(e) => {
                let message = format!(
                    "not valid UTF-8 at byte {} of the line; the line was left out (the rest of the file was read)",
                    e.valid_up_to() + 1
                );
                if !lines {
                    return Err(ImportError::malformed(
                        path,
                        index + 1,
                        "not valid UTF-8; fix the file's encoding, then import it again",
                    ));
                }
                warnings.push(Warning {
                    line: index + 1,
                    message,
                });
                // Keep the line count so later lines keep their numbers.
                if line.ends_with(b"\n") {
                    text.push('\n');
                }
            }
        }
    }
    Ok((text, warnings))
}

/// Parses an RFC 3339 timestamp ("2025-09-18T10:00:00.123Z") to Unix milliseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Turns a JSON value into canonical JSON text for a tool input or an unmodeled block.
pub fn json_text(value: &serde_json::Value) -> String {
    tapes_protocol::canonical_json::canonical_value(value)
}
