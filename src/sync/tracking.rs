//! The per-project tracking file, `.tapes/tracking.json` (the seed's `.sessionbase/tracking.json`).
//!
//! A project directory tracks sessions under aliases: `tapes pull` records the session it
//! brought in, `tapes branch`/`tapes fork` record the new session and its branch point, and
//! `tapes push` reads the alias's base (what the remote is known to hold) to compare-and-swap
//! against, then moves it. Several aliases isolate their bases, so two branches push
//! independently. One alias is `current`: the default for `tapes push` and `tapes branch`.
//!
//! ```json
//! {
//!   "current": "main",
//!   "aliases": {
//!     "main": {
//!       "sessionId": "<hex>", "localSessionId": null, "parentId": null, "rootId": "<hex>",
//!       "baseCount": 10, "baseDigest": "<hex>", "remote": "origin",
//!       "platform": "claude", "files": ["/home/me/.claude/projects/-home-me-app/<uuid>.jsonl"],
//!       "lastPulledAt": "2026-01-01T00:00:00+00:00", "remoteDigest": "<hex>", "remoteCount": 10,
//!       "remoteCheckedAt": "2026-01-01T00:00:00+00:00"
//!     }
//!   }
//! }
//! ```
//!
//! `sessionId` is null for a pending branch made with `--local`: the session exists only here
//! (its id is `localSessionId`) until its first push creates it on the remote. When
//! `sessionId` is set, `baseDigest` is the head the alias's remote holds for it.
//!
//! The file is rewritten whole, through a temporary file and a rename, so a crash leaves the
//! old or the new file, never half of one. Two tapes processes saving at the same moment: the
//! last rename wins (an alias update can be lost, never the file).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tapes_protocol::{NodeId, SessionId};

/// The directory in a project that holds the tracking file.
pub const TRACKING_DIR: &str = ".tapes";
/// The tracking file's name inside [`TRACKING_DIR`].
pub const TRACKING_FILE: &str = "tracking.json";

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("cannot read {path}: {source}; check its permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid tracking file ({why}); repair it, or delete it to start tracking over (the sessions themselves are in the store, `tapes sessions` lists them)")]
    Malformed { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}; check that the directory exists and is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` cannot be an alias: use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit")]
    BadAlias(String),
}

/// The whole tracking file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracking {
    /// The alias `tapes push` and `tapes branch` use when given no session.
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub aliases: BTreeMap<String, TrackedAlias>,
}

/// One tracked session (the seed's `aliases[alias]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrackedAlias {
    /// The session on the remote; `None` while a `--local` branch is pending.
    pub session_id: Option<SessionId>,
    /// The pending branch's id here, until its first push.
    pub local_session_id: Option<SessionId>,
    /// The session this one was branched or forked from (lineage).
    pub parent_id: Option<SessionId>,
    /// The first session of the family (lineage).
    pub root_id: Option<SessionId>,
    /// Messages the remote holds (after a pull or push), or shared at the branch point.
    pub base_count: u64,
    /// The head the remote holds (after a pull or push), or the branch point.
    pub base_digest: Option<NodeId>,
    /// The remote the alias pulls from and pushes to.
    pub remote: Option<String>,
    /// The agent it was written for (`--platform`: claude, codex, gemini, file).
    pub platform: Option<String>,
    /// The files written for the agent (the session's first); `tapes push` imports them first.
    pub files: Vec<String>,
    /// RFC 3339 time of the last pull; `None` for a branch or fork never pulled.
    pub last_pulled_at: Option<String>,
    /// The head the remote held when last asked (pull, push, `tapes status --fetch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_digest: Option<NodeId>,
    /// Its message count then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_count: Option<u64>,
    /// RFC 3339 time it was last asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_checked_at: Option<String>,
}

impl TrackedAlias {
    /// The session this alias stands for here: the remote id, or the pending branch's.
    pub fn session(&self) -> Option<SessionId> {
        self.session_id.or(self.local_session_id)
    }

    /// True for a `--local` branch not pushed yet.
    pub fn is_pending(&self) -> bool {
        self.session_id.is_none()
    }
}

impl Tracking {
    /// `<project>/.tapes/tracking.json`.
    pub fn path(project: &Path) -> PathBuf {
        project.join(TRACKING_DIR).join(TRACKING_FILE)
    }

    /// Reads the tracking file of `project`; a project without one tracks nothing yet.
    pub fn load(project: &Path) -> Result<Tracking, TrackingError> {
        let path = Tracking::path(project);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tracking::default()),
            Err(source) => return Err(TrackingError::Read { path, source }),
        };
        let tracking: Tracking =
            serde_json::from_slice(&text).map_err(|e| TrackingError::Malformed {
                path: path.clone(),
                why: e.to_string(),
            })?;
        tracking
            .check()
            .map_err(|why| TrackingError::Malformed { path, why })?;
        Ok(tracking)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(current) = &self.current {
            if !self.aliases.contains_key(current) {
                return Err(format!(
                    "`current` is `{current}`, which is not one of its aliases"
                ));
            }
        }
        for (name, alias) in &self.aliases {
            if validate_alias(name).is_err() {
                return Err(format!("`{name}` is not a valid alias name"));
            }
            if alias.session().is_none() {
                return Err(format!(
                    "alias `{name}` has neither sessionId nor localSessionId"
                ));
            }
        }
        Ok(())
    }

    /// Writes the file atomically (temporary file, fsync, rename), creating `.tapes/`.
    pub fn save(&self, project: &Path) -> Result<(), TrackingError> {
        let dir = project.join(TRACKING_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| TrackingError::Write {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(TRACKING_FILE);
        let tmp = dir.join(format!("{TRACKING_FILE}.tmp-{}", std::process::id()));
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| TrackingError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            TrackingError::Write {
                path: path.clone(),
                source,
            }
        })
    }

    /// The current alias, if any.
    pub fn current(&self) -> Option<(&str, &TrackedAlias)> {
        let name = self.current.as_deref()?;
        self.aliases
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Sets `alias` to `entry`, and makes it current if `make_current`.
    pub fn set(
        &mut self,
        alias: &str,
        entry: TrackedAlias,
        make_current: bool,
    ) -> Result<(), TrackingError> {
        validate_alias(alias)?;
        self.aliases.insert(alias.to_string(), entry);
        if make_current {
            self.current = Some(alias.to_string());
        }
        Ok(())
    }

    /// The alias tracking session `id` (by its remote or pending id): the current alias if it
    /// does, else the first in name order.
    pub fn find_session(&self, id: &SessionId) -> Option<(&str, &TrackedAlias)> {
        if let Some((name, alias)) = self.current() {
            if alias.session() == Some(*id) {
                return Some((name, alias));
            }
        }
        self.aliases
            .iter()
            .find(|(_, a)| a.session() == Some(*id))
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// Alias names: 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn validate_alias(name: &str) -> Result<(), TrackingError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(TrackingError::BadAlias(name.to_string()))
    }
}

/// Now as RFC 3339 (UTC), the format of `lastPulledAt`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulled() -> TrackedAlias {
        TrackedAlias {
            session_id: Some(SessionId([1; 16])),
            root_id: Some(SessionId([1; 16])),
            base_count: 10,
            base_digest: Some(NodeId([2; 32])),
            remote: Some("origin".into()),
            last_pulled_at: Some("2026-01-02T03:04:05Z".into()),
            ..TrackedAlias::default()
        }
    }

    #[test]
    fn the_file_has_the_seed_shape_with_camel_case_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut tracking = Tracking::default();
        tracking.set("main", pulled(), true).unwrap();
        tracking.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(".tapes/tracking.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "current": "main",
                "aliases": {"main": {
                    "sessionId": "01".repeat(16),
                    "localSessionId": null,
                    "parentId": null,
                    "rootId": "01".repeat(16),
                    "baseCount": 10,
                    "baseDigest": "02".repeat(32),
                    "remote": "origin",
                    "platform": null,
                    "files": [],
                    "lastPulledAt": "2026-01-02T03:04:05Z",
                }}
            })
        );
        assert_eq!(Tracking::load(dir.path()).unwrap(), tracking);
        // Only the file itself is left: the temporary file was renamed over it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join(".tapes"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("tracking.json")]);
    }

    #[test]
    fn a_project_without_a_file_tracks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tracking = Tracking::load(dir.path()).unwrap();
        assert_eq!(tracking, Tracking::default());
        assert!(tracking.current().is_none());
        assert!(
            !dir.path().join(".tapes").exists(),
            "loading creates nothing"
        );
    }

    #[test]
    fn a_malformed_file_names_itself_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".tapes")).unwrap();
        let path = dir.path().join(".tapes/tracking.json");
        for bad in [
            "{not json",
            r#"{"current": "main", "aliases": {}}"#,
            r#"{"aliases": {"main": {"sessionId": "xyz"}}}"#,
            r#"{"aliases": {"main": {"sessionId": null, "localSessionId": null}}}"#,
            r#"{"aliases": {"bad name": {"sessionId": "01010101010101010101010101010101"}}}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = Tracking::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("repair it, or delete it"), "{err}");
        }
    }

    #[test]
    fn missing_keys_default_and_unknown_keys_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".tapes")).unwrap();
        let id = "ab".repeat(16);
        std::fs::write(
            dir.path().join(".tapes/tracking.json"),
            format!(r#"{{"current": "x", "aliases": {{"x": {{"sessionId": "{id}", "future": 1}}}}, "later": true}}"#),
        )
        .unwrap();
        let tracking = Tracking::load(dir.path()).unwrap();
        let (name, alias) = tracking.current().unwrap();
        assert_eq!(name, "x");
        assert_eq!(alias.session_id, Some(SessionId([0xab; 16])));
        assert_eq!(
            (alias.base_count, alias.base_digest, alias.files.len()),
            (0, None, 0)
        );
    }

    #[test]
    fn aliases_find_their_sessions_pending_or_not() {
        let mut tracking = Tracking::default();
        tracking.set("main", pulled(), false).unwrap();
        let pending = TrackedAlias {
            local_session_id: Some(SessionId([3; 16])),
            ..TrackedAlias::default()
        };
        assert!(pending.is_pending());
        tracking.set("exp", pending, true).unwrap();
        assert_eq!(tracking.current().map(|(n, _)| n), Some("exp"));
        assert_eq!(
            tracking.find_session(&SessionId([3; 16])).map(|(n, _)| n),
            Some("exp")
        );
        assert_eq!(
            tracking.find_session(&SessionId([1; 16])).map(|(n, _)| n),
            Some("main")
        );
        assert!(tracking.find_session(&SessionId([4; 16])).is_none());
        // The current alias wins when two track the same session.
        tracking.set("again", pulled(), true).unwrap();
        assert_eq!(
            tracking.find_session(&SessionId([1; 16])).map(|(n, _)| n),
            Some("again")
        );
    }

    #[test]
    fn alias_names_are_checked() {
        for good in ["main", "exp-a", "v1.2_b", "A"] {
            validate_alias(good).unwrap();
        }
        for bad in ["", "-x", ".x", "a b", "a/b", &"a".repeat(65)] {
            let err = validate_alias(bad).unwrap_err().to_string();
            assert!(err.contains("cannot be an alias"), "{err}");
        }
        assert!(Tracking::default().set("no/slash", pulled(), true).is_err());
    }
}
