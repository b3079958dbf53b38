//! Resume anywhere (SPEC.md §17): write a stored session in an agent's own on-disk format, at
//! the place the agent looks, so the agent's own resume opens it; and remember which agent
//! file stands for which tapes session, so the turns the agent appends come back to it.
//!
//! - [`Platform`]: the agents (and `file`, the canonical transcript JSON).
//! - [`AgentHomes`]: where each agent keeps its sessions (`$HOME`, `CLAUDE_CONFIG_DIR`,
//!   `CODEX_HOME`, `GEMINI_CLI_HOME`).
//! - `claude`, `codex`, `gemini`, `file`: one pure writer each ([`Render`] → [`Rendered`]):
//!   nodes in, file bytes and path out, no I/O but reading what they must merge with.
//! - [`mapping`]: the store's record of (agent, agent session id) → tapes session and base, and
//!   the graft that import applies to a mapped file before planning.
//! - [`sync`]: importing the agent's new turns back, and what `tapes status` reports.
//! - [`checkout`]: the one library call behind `tapes checkout` and `--platform` on pull,
//!   branch and fork: render, refuse to clobber unstored turns, write atomically, record.

pub mod checkout;
pub mod claude;
pub mod codex;
pub mod file;
pub mod gemini;
pub mod mapping;
pub mod sync;

use std::path::{Path, PathBuf};

use tapes_protocol::{Node, SessionId};

use crate::session::SessionRecord;

/// The agents a session can be written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Claude,
    Codex,
    Gemini,
    /// The canonical transcript JSON (as `tapes export --format json` for one session).
    File,
}

impl Platform {
    pub fn name(self) -> &'static str {
        match self {
            Platform::Claude => "claude",
            Platform::Codex => "codex",
            Platform::Gemini => "gemini",
            Platform::File => "file",
        }
    }

    pub fn parse(text: &str) -> Result<Platform, ResumeError> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "claude" | "claude-code" => Platform::Claude,
            "codex" => Platform::Codex,
            "gemini" | "gemini-cli" => Platform::Gemini,
            "file" | "json" => Platform::File,
            _ => return Err(ResumeError::UnknownPlatform(text.to_string())),
        })
    }

    /// The importer (`ParsedSession::source_kind`) that reads what this platform's writer
    /// writes.
    pub fn source_kind(self) -> &'static str {
        match self {
            Platform::Claude => "claude",
            Platform::Codex => "codex",
            Platform::Gemini => "gemini",
            Platform::File => "messages-json",
        }
    }

    /// The platform whose importer produced a session of `source_kind`, if any.
    pub fn of_source(source_kind: &str) -> Option<Platform> {
        Some(match source_kind {
            "claude" => Platform::Claude,
            "codex" => Platform::Codex,
            "gemini" => Platform::Gemini,
            _ => return None,
        })
    }

    /// The agent's executable, for `--resume`.
    pub fn program(self) -> Option<&'static str> {
        match self {
            Platform::Claude => Some("claude"),
            Platform::Codex => Some("codex"),
            Platform::Gemini => Some("gemini"),
            Platform::File => None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where each agent keeps its state, resolved from the environment the way the agents do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHomes {
    /// `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
    pub claude: PathBuf,
    /// `$CODEX_HOME`, else `~/.codex`.
    pub codex: PathBuf,
    /// `$GEMINI_CLI_HOME/.gemini`, else `~/.gemini`.
    pub gemini: PathBuf,
}

impl AgentHomes {
    /// From the process environment.
    pub fn from_env() -> Result<AgentHomes, ResumeError> {
        AgentHomes::from_vars(|name| std::env::var_os(name))
    }

    /// From any variable lookup (tests pass their own).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<AgentHomes, ResumeError> {
        let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = set("HOME");
        let under_home = |dir: &str| {
            home.as_ref()
                .map(|h| h.join(dir))
                .ok_or(ResumeError::NoHome)
        };
        Ok(AgentHomes {
            claude: match set("CLAUDE_CONFIG_DIR") {
                Some(dir) => dir,
                None => under_home(".claude")?,
            },
            codex: match set("CODEX_HOME") {
                Some(dir) => dir,
                None => under_home(".codex")?,
            },
            gemini: match set("GEMINI_CLI_HOME") {
                Some(dir) => dir.join(".gemini"),
                None => under_home(".gemini")?,
            },
        })
    }
}

/// What a writer is asked to write: one session, for one agent session id, in one directory.
#[derive(Debug, Clone)]
pub struct Render<'a> {
    /// The session's nodes, root first.
    pub nodes: &'a [Node],
    pub record: &'a SessionRecord,
    /// The tapes session being written.
    pub session: SessionId,
    /// The id the agent will know the session by (a UUID for the agents).
    pub agent_session_id: &'a str,
    /// For a subagent session: the agent session id of the session that spawned it, whose file
    /// it is written beside (the agent's subagent layout).
    pub parent_agent_session_id: Option<&'a str>,
    /// The absolute directory the agent will run in (`--into`, default the current one).
    pub cwd: &'a Path,
    /// Now, for the names and header times of new files.
    pub now_ms: i64,
}

impl Render<'_> {
    /// True when the session was recorded by this platform's agent, so agent-specific details
    /// (signatures, encrypted reasoning, unmodeled blocks) are written back as they were;
    /// otherwise they are rendered as text the other agent can read.
    pub fn native(&self, platform: Platform) -> bool {
        Platform::of_source(&self.record.source.kind) == Some(platform)
    }
}

/// What a writer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The session file, absolute.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Per node of [`Render::nodes`]: how many messages the platform's importer reads from
    /// `bytes` up to and including that node (non-decreasing; the last equals what the whole
    /// file imports as). It lets import map a divergence in the file back to the session.
    pub ends: Vec<u32>,
    /// Other files to write whole beside it (e.g. Gemini's `projects.json`, merged).
    pub extra: Vec<(PathBuf, Vec<u8>)>,
}

/// Why a session cannot be written for an agent, or its agent started.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("unknown platform `{0}`; use claude, codex, gemini or file")]
    UnknownPlatform(String),
    #[error("HOME is not set, so the agents' directories cannot be found; set HOME (or CLAUDE_CONFIG_DIR / CODEX_HOME / GEMINI_CLI_HOME)")]
    NoHome,
    #[error("{path} holds {unstored} message(s) tapes has not stored; import it first (`tapes import {path}`), or pass --into another directory")]
    Unstored { path: PathBuf, unstored: usize },
    #[error("{path} is an agent file tapes cannot read ({why}); move it away, or pass --into another directory")]
    Unreadable { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}; check that the directory is writable, or pass --into another directory")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {why}")]
    Render { what: String, why: String },
    #[error("`{program}` was not found on PATH; install it (npm install -g {package}), or drop --resume and run the printed command yourself")]
    NoAgent {
        program: &'static str,
        package: &'static str,
    },
    #[error("could not start `{program}`: {source}; check that it runs (`{program} --version`), or drop --resume and run the printed command yourself")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("session {0} has no messages, so there is nothing for an agent to resume; pick another with `tapes sessions`")]
    Empty(String),
    #[error("session {0} is not in this store; `tapes sessions` lists what is here, `tapes fetch` brings what teammates share")]
    NoSession(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A fresh agent session id: a random version-4 UUID.
pub fn new_agent_session_id() -> String {
    let mut b = [0u8; 16];
    // getrandom failing means the OS has no entropy source; a time-based id is still unique
    // enough for a file name, and never reused as a key.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = blake3::hash(&t.to_le_bytes()).as_bytes()[..16]
            .try_into()
            .unwrap_or([0; 16]);
    }
    uuid_text(b)
}

/// A UUID derived from text (for line ids that must stay stable across re-renders).
pub fn derived_uuid(parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new_derive_key("tapes 2026-12 agent line uuid v1");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    uuid_text(b)
}

fn uuid_text(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 3339 with milliseconds and `Z`, as the agents write their timestamps.
pub fn timestamp(ms: i64) -> String {
    use chrono::TimeZone;
    match chrono::Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Renders `req` for `platform`.
pub fn render(
    platform: Platform,
    req: &Render,
    homes: &AgentHomes,
) -> Result<Rendered, ResumeError> {
    if req.nodes.is_empty() {
        return Err(ResumeError::Empty(req.session.short()));
    }
    match platform {
        Platform::Claude => claude::render(req, homes),
        Platform::Codex => codex::render(req, homes),
        Platform::Gemini => gemini::render(req, homes),
        Platform::File => file::render(req),
    }
}

/// A session record for the writers' tests: only the source kind and title matter to them.
#[cfg(test)]
pub(crate) fn test_record(kind: &str, title: Option<&str>) -> SessionRecord {
    use crate::session::{SessionSource, SessionSummary, Visibility};
    SessionRecord {
        head: tapes_protocol::NodeId([0; 32]),
        source: SessionSource {
            kind: kind.into(),
            id: "x".into(),
            path: String::new(),
        },
        title: title.map(str::to_owned),
        parent_session: None,
        summary: SessionSummary::default(),
        created_ms: 0,
        updated_ms: 0,
        owner: None,
        visibility: Visibility::Private,
        tags: Vec::new(),
        description: None,
        note: None,
        expires_ms: None,
        lineage: crate::session::Lineage::original(SessionId([0; 16])),
    }
}
