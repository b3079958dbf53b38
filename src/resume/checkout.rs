//! `tapes checkout` and `--platform` on pull, branch and fork (SPEC.md §17.1): write a stored
//! session where an agent resumes it, and record which tapes session the file stands for.
//!
//! Steps, each of which can refuse before anything is written:
//! 1. choose the agent session id: the session's own id in that agent when it came from it
//!    (a pull or checkout reopens it where it was left), the id of an earlier checkout of the
//!    same session for the same agent, or a fresh UUID (a branch or fork is a new session);
//! 2. render the session (and, for Claude, each subagent session it spawned) with the
//!    platform's writer;
//! 3. for each file that exists already: if the importer reads exactly the session's history
//!    from it, leave it as the agent wrote it; if it holds messages neither the store nor the
//!    last checkout of it has, refuse with the path ([`ResumeError::Unstored`]); else replace it;
//! 4. write every file through a temporary file and a rename (a crash leaves the old or the new
//!    file), then record the [`AgentFile`] mappings in one ref batch.

use std::path::{Path, PathBuf};

use tapes_protocol::{Node, NodeId, SessionId};

use super::mapping::{self, AgentFile};
use super::{render, AgentHomes, Platform, Render, Rendered, ResumeError};
use crate::import::{self, ParsedSession};
use crate::session::SessionRecord;
use crate::store::Store;

/// What to write and where.
#[derive(Debug, Clone)]
pub struct Options {
    pub platform: Platform,
    /// The directory the agent will run in (absolute).
    pub cwd: PathBuf,
    pub homes: AgentHomes,
    pub now_ms: i64,
    /// Always a fresh agent session id (a branch or fork: a new session for the agent).
    pub fresh_id: bool,
}

/// One file written (or found current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub session: SessionId,
    /// False when the file already held exactly this history and was left as it was.
    pub rewritten: bool,
}

/// What a checkout did.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub platform: Platform,
    pub session: SessionId,
    pub agent_session_id: String,
    /// The session's file first, then its subagents'.
    pub files: Vec<Written>,
    /// The session belongs to someone else (resuming sends its content to one's own provider).
    pub theirs: bool,
    /// How to open it in the agent; None for `file`.
    pub command: Option<AgentCommand>,
}

/// The agent's own resume command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    pub program: &'static str,
    pub args: Vec<String>,
    /// The agent must run here: it finds its sessions by working directory.
    pub cwd: PathBuf,
}

impl AgentCommand {
    /// For `platform` on `agent_session_id`.
    pub fn new(platform: Platform, agent_session_id: &str, cwd: &Path) -> Option<AgentCommand> {
        let program = platform.program()?;
        let args = match platform {
            Platform::Claude => vec!["--resume".into(), agent_session_id.into()],
            Platform::Codex => vec!["resume".into(), agent_session_id.into()],
            Platform::Gemini => vec!["--resume".into(), agent_session_id.into()],
            Platform::File => return None,
        };
        Some(AgentCommand {
            program,
            args,
            cwd: cwd.to_path_buf(),
        })
    }

    /// `cd <dir> && <program> <args>`, quoted for a POSIX shell.
    pub fn display(&self) -> String {
        let mut out = format!(
            "cd {} && {}",
            shell_quote(&self.cwd.to_string_lossy()),
            self.program
        );
        for arg in &self.args {
            out.push(' ');
            out.push_str(&shell_quote(arg));
        }
        out
    }

    /// Starts the agent on the session, in the foreground, with this terminal.
    pub fn run(&self) -> Result<std::process::ExitStatus, ResumeError> {
        let Some(path) = find_program(self.program) else {
            return Err(ResumeError::NoAgent {
                program: self.program,
                package: package_of(self.program),
            });
        };
        std::process::Command::new(path)
            .args(&self.args)
            .current_dir(&self.cwd)
            .status()
            .map_err(|source| ResumeError::Start {
                program: self.program.to_string(),
                source,
            })
    }

    /// The npm package that installs the agent.
    pub fn package(&self) -> &'static str {
        package_of(self.program)
    }

    /// True when the agent's executable is on PATH.
    pub fn available(&self) -> bool {
        find_program(self.program).is_some()
    }
}

fn package_of(program: &str) -> &'static str {
    match program {
        "claude" => "@anthropic-ai/claude-code",
        "codex" => "@openai/codex",
        _ => "@google/gemini-cli",
    }
}

fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Writes session `id` for `options.platform`. See the module doc for the steps.
pub fn checkout(store: &Store, id: &SessionId, options: &Options) -> Result<Checkout, ResumeError> {
    let record = store
        .session(id)?
        .ok_or_else(|| ResumeError::NoSession(id.short()))?;
    let me = store.local_owner()?;
    let theirs = !crate::session::lineage::is_mine(&record, me.as_ref());
    let platform = options.platform;
    let earlier = mapping::of_session(store, id)?
        .into_iter()
        .filter(|f| f.platform == platform.name() && !f.source_id.contains('/'))
        .max_by_key(|f| f.written_ms);
    let agent_session_id = if !options.fresh_id
        && record.source.kind == platform.source_kind()
        && !record.source.id.contains('/')
        && platform != Platform::File
    {
        record.source.id.clone()
    } else if let Some(earlier) = &earlier {
        earlier.source_id.clone()
    } else {
        super::new_agent_session_id()
    };

    let mut plans: Vec<Planned> = Vec::new();
    let nodes = nodes_of(store, &record)?;
    let mut main = render(
        platform,
        &Render {
            nodes: &nodes,
            record: &record,
            session: *id,
            agent_session_id: &agent_session_id,
            parent_agent_session_id: None,
            cwd: &options.cwd,
            now_ms: options.now_ms,
        },
        &options.homes,
    )?;
    // Codex and Gemini name files by time: a second checkout replaces the first file rather
    // than leaving two files with one session id.
    if let Some(earlier) = &earlier {
        let path = PathBuf::from(&earlier.path);
        if matches!(platform, Platform::Codex | Platform::Gemini)
            && earlier.source_id == agent_session_id
            && path.exists()
        {
            main.path = path;
        }
    }
    plans.push(Planned {
        session: *id,
        head: record.head,
        ids: nodes.iter().map(Node::id).collect(),
        rendered: main,
    });
    if platform == Platform::Claude {
        for (child_id, child) in children(store, id)? {
            let Some(agent_id) = subagent_id(&child.source.id) else {
                continue;
            };
            let child_nodes = nodes_of(store, &child)?;
            let rendered = render(
                platform,
                &Render {
                    nodes: &child_nodes,
                    record: &child,
                    session: child_id,
                    agent_session_id: &agent_id,
                    parent_agent_session_id: Some(&agent_session_id),
                    cwd: &options.cwd,
                    now_ms: options.now_ms,
                },
                &options.homes,
            )?;
            plans.push(Planned {
                session: child_id,
                head: child.head,
                ids: child_nodes.iter().map(Node::id).collect(),
                rendered,
            });
        }
    }

    // Decide every file before writing any.
    let mut keep = Vec::with_capacity(plans.len());
    for plan in &plans {
        keep.push(check_existing(store, platform, plan)?);
    }
    let mut files = Vec::with_capacity(plans.len());
    let mut updates = Vec::new();
    for (plan, current) in plans.iter().zip(keep) {
        let rewritten = !current;
        if rewritten {
            write_atomically(&plan.rendered.path, &plan.rendered.bytes)?;
        }
        for (path, bytes) in &plan.rendered.extra {
            write_atomically(path, bytes)?;
        }
        if platform != Platform::File {
            let (parsed, file_ids) = read_back(platform, &plan.rendered.path, &plan.ids)?;
            let ends = if rewritten {
                plan.rendered.ends.clone()
            } else {
                (1..=plan.ids.len() as u32).collect()
            };
            let file = AgentFile {
                platform: platform.name().to_string(),
                path: plan.rendered.path.to_string_lossy().into_owned(),
                source_kind: parsed.source_kind.to_string(),
                source_id: parsed.source_id.clone(),
                session: plan.session,
                base: plan.head,
                file_ids,
                ends,
                written_ms: options.now_ms,
            };
            let expected =
                mapping::lookup(store, &file.source_kind, &file.source_id)?.map(|(raw, _)| raw);
            updates.push(mapping::update(&file, expected));
        }
        files.push(Written {
            path: plan.rendered.path.clone(),
            session: plan.session,
            rewritten,
        });
    }
    if !updates.is_empty() {
        store.commit(&[], &updates)?;
    }
    Ok(Checkout {
        platform,
        session: *id,
        command: AgentCommand::new(platform, &agent_session_id, &options.cwd),
        agent_session_id,
        files,
        theirs,
    })
}

struct Planned {
    session: SessionId,
    head: NodeId,
    ids: Vec<NodeId>,
    rendered: Rendered,
}

fn nodes_of(store: &Store, record: &SessionRecord) -> Result<Vec<Node>, ResumeError> {
    Ok(store
        .chain(&record.head)?
        .into_iter()
        .map(|(_, node)| node)
        .collect())
}

/// The sessions `id` spawned (subagents, sidechains), oldest first.
fn children(store: &Store, id: &SessionId) -> Result<Vec<(SessionId, SessionRecord)>, ResumeError> {
    let mut out: Vec<(SessionId, SessionRecord)> = store
        .sessions()?
        .into_iter()
        .filter(|(_, r)| r.parent_session == Some(*id))
        .collect();
    out.sort_by_key(|(_, r)| r.summary.started_ms);
    Ok(out)
}

/// The agent id a subagent file is named by: `<session>/agent-<id>` → `<id>`; an inline
/// sidechain `<session>/sidechain-<uuid>` keeps `sidechain-<uuid>`.
fn subagent_id(source_id: &str) -> Option<String> {
    let (_, child) = source_id.split_once('/')?;
    Some(child.strip_prefix("agent-").unwrap_or(child).to_string())
}

/// Reads a written file back as import will: the session in it and its chain ids.
fn read_back(
    platform: Platform,
    path: &Path,
    ids: &[NodeId],
) -> Result<(ParsedSession, Vec<NodeId>), ResumeError> {
    let sessions = parse(path)?;
    let mut best: Option<(ParsedSession, Vec<NodeId>)> = None;
    for session in sessions {
        let file_ids: Vec<NodeId> = crate::import::ingest::build_chain(&session)
            .iter()
            .map(|o| o.id)
            .collect();
        if file_ids == ids || best.is_none() {
            let exact = file_ids == ids;
            best = Some((session, file_ids));
            if exact {
                break;
            }
        }
    }
    best.ok_or_else(|| ResumeError::Unreadable {
        path: path.to_path_buf(),
        why: format!("the {platform} importer reads no session from the file tapes wrote"),
    })
}

fn parse(path: &Path) -> Result<Vec<ParsedSession>, ResumeError> {
    let unreadable = |why: String| ResumeError::Unreadable {
        path: path.to_path_buf(),
        why,
    };
    let format = import::detect_format(path).map_err(unreadable)?;
    let report = import::parse_file(path, format).map_err(|e| unreadable(e.to_string()))?;
    Ok(report
        .sessions
        .into_iter()
        .filter(|s| !s.messages.is_empty())
        .collect())
}

/// True when the file exists and already holds exactly the session's history (leave it);
/// false when it does not exist or may be replaced; an error when replacing it would lose
/// messages tapes has not stored.
fn check_existing(store: &Store, platform: Platform, plan: &Planned) -> Result<bool, ResumeError> {
    let path = &plan.rendered.path;
    match std::fs::symlink_metadata(path) {
        // Not there (or a parent is not a directory: writing will say so, naming it).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(false)
        }
        Err(e) => {
            return Err(ResumeError::Unreadable {
                path: path.clone(),
                why: e.to_string(),
            })
        }
        Ok(_) => {}
    }
    if platform == Platform::File {
        return Ok(false);
    }
    let sessions = parse(path)?;
    let mut unstored = 0;
    for session in &sessions {
        let file_ids: Vec<NodeId> = crate::import::ingest::build_chain(session)
            .iter()
            .map(|o| o.id)
            .collect();
        if file_ids == plan.ids && sessions.len() == 1 {
            return Ok(true);
        }
        let known: Vec<NodeId> = mapping::lookup(store, session.source_kind, &session.source_id)?
            .map(|(_, f)| f.file_ids)
            .unwrap_or_default();
        for id in &file_ids {
            if !known.contains(id) && !store.has_node(id)? {
                unstored += 1;
            }
        }
    }
    if unstored > 0 {
        return Err(ResumeError::Unstored {
            path: path.clone(),
            unstored,
        });
    }
    Ok(false)
}

/// Writes `bytes` to `path` through `<path>.tapes-tmp` and a rename, creating directories.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ResumeError> {
    use std::io::Write;
    let fail = |source: std::io::Error| ResumeError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tapes-tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_private()
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// Agent transcripts hold a user's conversations: readable by the user only, as the agents
/// themselves create them.
trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}
