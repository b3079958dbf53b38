//! Settings kept in the store (`tapes config`; the `config/<key>` refs of SPEC §4.1): which keys
//! exist, what values they take, reading and writing them. The network mode is a setting of the
//! home instead (`peer::network`), because it is read before any store is opened.
//!
//! | key | values |
//! |---|---|
//! | `default-visibility.<project>` | `private`, `team`, `team:<name>`, `public` |
//! | `share.paths` | `name` (default), `full` |
//! | `sync.content.<project>` | `team` (default), `none` (content never leaves this machine, SPEC §11.4) |

use crate::share::outgoing::{PathPolicy, PATHS_SETTING};
use crate::store::backend::RefUpdate;
use crate::store::{Store, StoreError};

/// The prefix of the per-project default visibility keys.
pub const DEFAULT_VISIBILITY: &str = "default-visibility.";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("unknown setting `{0}`; settable: default-visibility.<project>, share.paths, sync.content.<project>, network.relays")]
    Unknown(String),
    #[error("name the project: default-visibility.<project>")]
    NoProject,
    #[error("`{value}` is not a visibility; use private, team, team:<name> or public")]
    BadVisibility { value: String },
    #[error("`{value}` is not a choice for {key}; use name (only the project's name travels, the default) or full (full working directories travel)")]
    BadPaths { key: String, value: String },
    #[error("`{value}` is not a choice for {key}; use team (content travels to whom you share it with, the default) or none (content never leaves this machine: shares carry a summary only, push and bundle refuse)")]
    BadContent { key: String, value: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks that `key` is a setting and `value` one of its values.
pub fn validate(key: &str, value: &str) -> Result<(), SettingsError> {
    if key == PATHS_SETTING {
        if PathPolicy::parse(value).is_none() {
            return Err(SettingsError::BadPaths {
                key: key.into(),
                value: value.into(),
            });
        }
        return Ok(());
    }
    if let Some(project) = key.strip_prefix(crate::share::summary::CONTENT_SETTING) {
        if project.is_empty() {
            return Err(SettingsError::NoProject);
        }
        if crate::share::summary::ContentPolicy::parse(value).is_none() {
            return Err(SettingsError::BadContent {
                key: key.into(),
                value: value.into(),
            });
        }
        return Ok(());
    }
    let Some(project) = key.strip_prefix(DEFAULT_VISIBILITY) else {
        return Err(SettingsError::Unknown(key.into()));
    };
    if project.is_empty() {
        return Err(SettingsError::NoProject);
    }
    if !(matches!(value, "private" | "team" | "public") || value.starts_with("team:")) {
        return Err(SettingsError::BadVisibility {
            value: value.into(),
        });
    }
    Ok(())
}

/// The value of `key`, if set.
pub fn get(store: &Store, key: &str) -> Result<Option<String>, SettingsError> {
    let raw = store
        .storage()
        .get_ref(&crate::store::keys::config(key))
        .map_err(StoreError::from)?;
    Ok(raw.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Sets `key` to `value` after [`validate`].
pub fn set(store: &Store, key: &str, value: &str) -> Result<(), SettingsError> {
    validate(key, value)?;
    let full = crate::store::keys::config(key);
    let current = store.storage().get_ref(&full).map_err(StoreError::from)?;
    store.commit(
        &[],
        &[RefUpdate {
            key: full,
            expected: current,
            new: Some(value.as_bytes().to_vec()),
        }],
    )?;
    Ok(())
}

/// Every setting that is set, in key order.
pub fn list(store: &Store) -> Result<Vec<(String, String)>, SettingsError> {
    let prefix = crate::store::keys::CONFIG.as_bytes();
    let mut out = Vec::new();
    for entry in store.storage().refs(prefix) {
        let (k, v) = entry.map_err(StoreError::from)?;
        out.push((
            String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
            String::from_utf8_lossy(&v).into_owned(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        set(&store, "default-visibility.billing", "team:core").unwrap();
        set(&store, "share.paths", "full").unwrap();
        assert_eq!(
            get(&store, "default-visibility.billing")
                .unwrap()
                .as_deref(),
            Some("team:core")
        );
        assert!(matches!(
            set(&store, "default-visibility.", "public"),
            Err(SettingsError::NoProject)
        ));
        assert!(matches!(
            set(&store, "share.paths", "some"),
            Err(SettingsError::BadPaths { .. })
        ));
        assert!(matches!(
            set(&store, "colour", "red"),
            Err(SettingsError::Unknown(_))
        ));
        assert_eq!(list(&store).unwrap().len(), 2);
    }
}
