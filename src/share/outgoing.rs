//! Local paths do not travel (SPEC.md §11.3): what a session carries out of the machine is
//! stripped of where it lived here.
//!
//! * A session record's source file path (`SessionRecord.source.path`, the transcript this
//!   store imported it from) never leaves: every outgoing record (push, peer fetch and push,
//!   relay deposit, bundle) is blanked by [`record`] *before* it is signed, so the signature is
//!   over exactly what travels and verifies on the other side.
//! * Node metadata carries the working directory (`cwd`) and the project. On the way out `cwd`
//!   is reduced to the project's name (the last path component: no home directory, no user
//!   name), and a `project` that is a path is reduced the same way, unless the user opted in
//!   with `tapes config set share.paths full`. Metadata is not hashed (§2.5): node ids, chains
//!   and signatures over them are unchanged; the receiver simply stores the shorter form.
//!
//! The store here keeps everything as imported; only copies on their way out are changed.

use tapes_protocol::sync::BatchFrame;
use tapes_protocol::{Node, NodeMeta, StoredObject};

use crate::session::SessionRecord;
use crate::store::{Store, StoreError};

/// The setting that lets full paths travel (`tapes config set share.paths full`).
pub const PATHS_SETTING: &str = "share.paths";

/// Where `tapes config` keeps its settings among the refs.
pub const CONFIG_PREFIX: &str = crate::store::keys::CONFIG;

/// How much of a path in node metadata travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathPolicy {
    /// Only the project's name (the default).
    #[default]
    Name,
    /// The full paths, as recorded (opted in).
    Full,
}

impl PathPolicy {
    /// The values `share.paths` takes.
    pub fn parse(value: &str) -> Option<PathPolicy> {
        match value {
            "name" => Some(PathPolicy::Name),
            "full" => Some(PathPolicy::Full),
            _ => None,
        }
    }

    /// The policy this store's settings choose (`share.paths`; unset or unknown: `name`).
    pub fn load(store: &Store) -> Result<PathPolicy, StoreError> {
        let raw = store
            .storage()
            .get_ref(&crate::store::keys::config(PATHS_SETTING))?;
        Ok(raw
            .and_then(|v| PathPolicy::parse(String::from_utf8_lossy(&v).trim()))
            .unwrap_or_default())
    }
}

/// The last component of a path (POSIX or Windows separators): `/home/alice/work/tapes` →
/// `tapes`. A name without separators is returned as is.
pub fn project_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches(['/', '\\']);
    trimmed
        .rsplit(['/', '\\'])
        .next()
        .filter(|name| !name.is_empty())
        .unwrap_or(trimmed)
}

fn reduce(value: &mut Option<String>) -> bool {
    match value {
        Some(path) if path.contains(['/', '\\']) => {
            *path = project_name(path).to_string();
            true
        }
        _ => false,
    }
}

/// The record as it may leave the machine: no source file path, and (under
/// [`PathPolicy::Name`]) a project that is a name, not a path. Sign this, not the stored one.
pub fn record(record: &SessionRecord, policy: PathPolicy) -> SessionRecord {
    let mut out = record.clone();
    out.source.path = String::new();
    if policy == PathPolicy::Name && out.summary.project.contains(['/', '\\']) {
        out.summary.project = project_name(&out.summary.project).to_string();
    }
    out
}

/// The metadata as it may leave the machine, or `None` when it already may as it is.
pub fn meta(meta: &NodeMeta, policy: PathPolicy) -> Option<NodeMeta> {
    if policy == PathPolicy::Full {
        return None;
    }
    let mut out = meta.clone();
    let mut changed = reduce(&mut out.project);
    if let Some(cwd) = &out.cwd {
        // The working directory becomes the project's name: the same name the importers give
        // the project (its last component), or the project when the importer recorded one.
        let name = out
            .project
            .clone()
            .unwrap_or_else(|| project_name(cwd).to_string());
        if *cwd != name {
            out.cwd = Some(name);
            changed = true;
        }
    }
    changed.then_some(out)
}

/// An encoded node as it may leave the machine (same id, see the module doc). Bytes whose
/// metadata does not decode are passed on unchanged: the receiver verifies and refuses them.
/// Senders of many objects use [`Outgoing`], which calls this for the first node of a run.
pub fn object(bytes: Vec<u8>, policy: PathPolicy) -> Vec<u8> {
    if policy == PathPolicy::Full {
        return bytes;
    }
    let Ok(current) = StoredObject::meta_of(&bytes) else {
        return bytes;
    };
    match meta(&current, policy) {
        Some(reduced) => StoredObject::with_meta(&bytes, &reduced).unwrap_or(bytes),
        None => bytes,
    }
}

/// [`object`] for a stream of objects, remembering the last rewrite: nodes of one session
/// carry the same provider, agent, project and working directory, so after the first node
/// the rewrite is a splice of remembered bytes instead of a decode and re-encode of the
/// metadata (that was a tenth of a serving node's CPU in a 1 GB fetch).
#[derive(Debug)]
pub struct Outgoing {
    policy: PathPolicy,
    /// The path fields as stored and as they leave, of the last object rewritten.
    last: Option<(Vec<u8>, Vec<u8>)>,
}

impl Outgoing {
    pub fn new(policy: PathPolicy) -> Outgoing {
        Outgoing { policy, last: None }
    }

    /// Adds `bytes`, as they may leave the machine, to a batch frame: the same bytes as
    /// [`Outgoing::object`], written once, straight into the frame (a splice is written in its
    /// three parts).
    pub fn push_into(&mut self, bytes: &[u8], frame: &mut BatchFrame) {
        if self.policy == PathPolicy::Full {
            return frame.push(&[bytes]);
        }
        if let Ok((head, meta_bytes)) = StoredObject::split_meta(bytes) {
            if let (Some(n), Some((stored, leaving))) =
                (StoredObject::path_fields_len(meta_bytes), &self.last)
            {
                if stored.as_slice() == &meta_bytes[..n] {
                    return frame.push(&[head, leaving, &meta_bytes[n..]]);
                }
            }
        }
        let out = self.object(bytes.to_vec());
        frame.push(&[&out]);
    }

    /// `bytes` as they may leave the machine; the same as [`object`].
    pub fn object(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        if self.policy == PathPolicy::Full {
            return bytes;
        }
        let Ok((head, meta_bytes)) = StoredObject::split_meta(&bytes) else {
            return bytes;
        };
        let Some(n) = StoredObject::path_fields_len(meta_bytes) else {
            return object(bytes, self.policy);
        };
        if let Some((stored, leaving)) = &self.last {
            if stored.as_slice() == &meta_bytes[..n] {
                if stored == leaving {
                    return bytes;
                }
                let mut out = Vec::with_capacity(bytes.len());
                out.extend_from_slice(head);
                out.extend_from_slice(leaving);
                out.extend_from_slice(&meta_bytes[n..]);
                return out;
            }
        }
        let stored = meta_bytes[..n].to_vec();
        let out = object(bytes, self.policy);
        let leaving = StoredObject::split_meta(&out)
            .ok()
            .and_then(|(_, m)| StoredObject::path_fields_len(m).map(|k| m[..k].to_vec()));
        match leaving {
            Some(leaving) => self.last = Some((stored, leaving)),
            None => self.last = None,
        }
        out
    }
}

/// A decoded node as it may leave the machine (for exports).
pub fn node(node: &Node, policy: PathPolicy) -> Node {
    match meta(&node.meta, policy) {
        Some(reduced) => Node {
            body: node.body.clone(),
            meta: reduced,
        },
        None => node.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapes_protocol::{ContentBlock, NodeBody, Role};

    fn with_paths() -> Node {
        Node {
            body: NodeBody {
                parent: None,
                role: Role::User,
                model: String::new(),
                blocks: vec![ContentBlock::text("hi")],
            },
            meta: NodeMeta {
                project: Some("tapes".into()),
                cwd: Some("/home/alice/work/tapes".into()),
                ..NodeMeta::default()
            },
        }
    }

    #[test]
    fn cwd_becomes_the_project_name_and_the_id_stays() {
        let object = StoredObject::encode(&with_paths());
        let out = super::object(object.bytes.clone(), PathPolicy::Name);
        let node = StoredObject::verify(&object.id, &out).unwrap();
        assert_eq!(node.meta.cwd.as_deref(), Some("tapes"));
        assert_eq!(node.meta.project.as_deref(), Some("tapes"));
        assert!(!String::from_utf8_lossy(&out).contains("alice"));
        assert_eq!(
            super::object(object.bytes.clone(), PathPolicy::Full),
            object.bytes
        );
    }

    #[test]
    fn a_stream_of_objects_leaves_as_each_would_alone() {
        let mut out = Outgoing::new(PathPolicy::Name);
        let mut nodes = Vec::new();
        for (i, cwd) in [
            "/home/alice/work/tapes",
            "/home/alice/work/tapes",
            "/srv/x",
            "x",
            "/srv/x",
        ]
        .into_iter()
        .enumerate()
        {
            let mut node = with_paths();
            node.meta.cwd = Some(cwd.into());
            node.meta.project = (i % 2 == 0).then(|| "/home/alice/proj".into());
            node.meta.timestamp_ms = Some(i as i64);
            node.meta.origin_id = Some(format!("uuid-{i}"));
            nodes.push(node);
        }
        for node in &nodes {
            let object = StoredObject::encode(node);
            let alone = super::object(object.bytes.clone(), PathPolicy::Name);
            assert_eq!(out.object(object.bytes.clone()), alone);
            let mut full = Outgoing::new(PathPolicy::Full);
            assert_eq!(full.object(object.bytes.clone()), object.bytes);
        }
    }

    #[test]
    fn paths_are_reduced_without_a_project_and_on_windows() {
        let mut node = with_paths();
        node.meta.project = Some(r"C:\Users\alice\src\app".into());
        node.meta.cwd = Some(r"C:\Users\alice\src\app\".into());
        let out = super::node(&node, PathPolicy::Name);
        assert_eq!(out.meta.project.as_deref(), Some("app"));
        assert_eq!(out.meta.cwd.as_deref(), Some("app"));
        node.meta.project = None;
        node.meta.cwd = Some("/Users/bob/x/".into());
        assert_eq!(
            super::node(&node, PathPolicy::Name).meta.cwd.as_deref(),
            Some("x")
        );
        // Already a name: nothing to change.
        let mut clean = with_paths();
        clean.meta.cwd = Some("tapes".into());
        assert_eq!(meta(&clean.meta, PathPolicy::Name), None);
    }
}
