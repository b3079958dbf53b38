//! Storage providers (`tapes storage`): where this machine's sessions live and when they are
//! synced with a relay (`tapes relay`, the tapes.dev-style cloud that holds only sealed data).
//!
//! This module owns the provider configuration `$TAPES_HOME/storage.toml`
//! ([`StorageConfig`]), the sync bookkeeping `$TAPES_HOME/storage-state.toml` ([`SyncState`])
//! and the decision of when to sync ([`should_sync`]). It does no I/O on the network: dialling
//! the relay and running the sync is the CLI's job (`tapes storage sync`, the check after every
//! command, and `tapes serve`'s background task).
//!
//! The three providers:
//!
//! * **local** (the default, and what a missing `storage.toml` means): sessions stay in the
//!   local store; nothing ever talks to the network on the provider's behalf.
//! * **cloud**: the relay is the home of the data; the local store is only keys plus a cache.
//!   Write-through: a command that changed what is shared syncs before it returns, and if the
//!   relay does not take the change the command fails (the change stays queued locally).
//! * **hybrid**: local first; the relay is caught up in the background, on an interval and
//!   when a command that wrote exits. A relay that cannot be reached is only a warning.
//!
//! What is pending is never kept as a queue: it is derived from the store (our shared sessions
//! against what we last deposited at the relay), so an offline machine cannot lose a change,
//! it only catches up later.
//!
//! ```toml
//! # $TAPES_HOME/storage.toml
//! provider = "hybrid"        # local | cloud | hybrid
//! relay = "relay"            # the relay remote (`tapes remote list`)
//! teams = ["<team id hex>"]  # optional: only these teams count (default: every team)
//! sync_interval = "5m"
//! sync_on_close = true
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tapes_protocol::TeamId;

use crate::duration::parse_duration_ms;
use crate::home::Home;

/// The configuration file's name in the tapes home.
pub const CONFIG_FILE: &str = "storage.toml";
/// The sync bookkeeping file's name in the tapes home.
pub const STATE_FILE: &str = "storage-state.toml";
/// How often hybrid and cloud sync when nothing else triggers it.
pub const DEFAULT_SYNC_INTERVAL: &str = "5m";
/// The relay remote `tapes storage configure --relay` saves unless told `--name`.
pub const DEFAULT_RELAY_REMOTE: &str = "relay";
/// The shortest sync interval accepted (a sync costs a connection).
pub const MIN_SYNC_INTERVAL_MS: i64 = 1_000;

/// Where sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Only the local store; never the network.
    #[default]
    Local,
    /// The relay; the local store is keys and a cache, writes go through at once.
    Cloud,
    /// The local store first, synced with the relay in the background.
    Hybrid,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Local, Provider::Cloud, Provider::Hybrid];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Cloud => "cloud",
            Provider::Hybrid => "hybrid",
        }
    }

    /// One line on what the provider does.
    pub fn describe(self) -> &'static str {
        match self {
            Provider::Local => "sessions stay on this machine; nothing talks to the network",
            Provider::Cloud => {
                "the relay holds your shared sessions; every change is synced before the command returns"
            }
            Provider::Hybrid => {
                "sessions are written locally first and synced with the relay in the background (on an interval and when a command that changed something exits)"
            }
        }
    }

    /// Whether this provider ever talks to a relay.
    pub fn syncs(self) -> bool {
        self != Provider::Local
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a storage provider; use local, cloud or hybrid"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{path} is not a valid storage configuration: {why}; fix it (keys: provider = \"local\"|\"cloud\"|\"hybrid\", relay, teams, sync_interval, sync_on_close), or delete it to go back to the local provider")]
    Malformed { path: String, why: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("sync interval {0}")]
    Interval(String),
}

fn default_interval() -> String {
    DEFAULT_SYNC_INTERVAL.to_string()
}

fn yes() -> bool {
    true
}

/// `$TAPES_HOME/storage.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub provider: Provider,
    /// The relay remote's name (a ref `remote/<name>` = `relay:<ticket>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Team ids (hex) to count at the relay; empty: every team the relay serves that we are in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// How often to sync, as `30s`, `5m`, `1h`.
    #[serde(default = "default_interval")]
    pub sync_interval: String,
    /// Hybrid: sync when a command that changed something exits.
    #[serde(default = "yes")]
    pub sync_on_close: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            provider: Provider::Local,
            relay: None,
            teams: Vec::new(),
            sync_interval: default_interval(),
            sync_on_close: true,
        }
    }
}

/// Milliseconds in a sync interval, at least [`MIN_SYNC_INTERVAL_MS`].
pub fn parse_interval(text: &str) -> Result<i64, ProviderError> {
    let ms = parse_duration_ms(text).map_err(ProviderError::Interval)?;
    if ms < MIN_SYNC_INTERVAL_MS {
        return Err(ProviderError::Interval(format!(
            "`{text}` is too short; use at least 1s (e.g. 30s, 5m, 1h)"
        )));
    }
    Ok(ms)
}

impl StorageConfig {
    pub fn path(home: &Home) -> PathBuf {
        home.root().join(CONFIG_FILE)
    }

    /// The configuration at `path`; a missing file is the default (local).
    pub fn load(path: &Path) -> Result<StorageConfig, ProviderError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StorageConfig::default())
            }
            Err(source) => {
                return Err(ProviderError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|why| ProviderError::Malformed {
            path: path.display().to_string(),
            why,
        })
    }

    /// Parses and checks a configuration's text.
    pub fn parse(text: &str) -> Result<StorageConfig, String> {
        let config: StorageConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        parse_interval(&config.sync_interval).map_err(|e| e.to_string())?;
        config.team_ids()?;
        if let Some(relay) = &config.relay {
            if relay.trim().is_empty() {
                return Err("`relay` is empty; name a relay remote".into());
            }
        }
        Ok(config)
    }

    /// Writes the configuration (atomically: a reader never sees half a file).
    pub fn save(&self, path: &Path) -> Result<(), ProviderError> {
        let body = toml::to_string(self).expect("a storage configuration always serializes");
        let text = format!(
            "# tapes storage provider (`tapes storage status|set-provider|configure`)\n{body}"
        );
        write_atomically(path, &text)
    }

    /// The sync interval in milliseconds (checked at load; the default if it was not).
    pub fn interval_ms(&self) -> i64 {
        parse_interval(&self.sync_interval)
            .or_else(|_| parse_interval(DEFAULT_SYNC_INTERVAL))
            .unwrap_or(5 * 60_000)
    }

    /// The team filter, parsed.
    pub fn team_ids(&self) -> Result<Vec<TeamId>, String> {
        self.teams
            .iter()
            .map(|t| {
                t.parse::<TeamId>()
                    .map_err(|e| format!("`teams` holds `{t}`, not a team id: {e}"))
            })
            .collect()
    }
}

/// What the last syncs did (`$TAPES_HOME/storage-state.toml`). Only bookkeeping: losing it
/// loses nothing but the "last sync" line, since what is pending is derived from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The relay (node id hex) these times are about; a new relay starts afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// When a sync last completed, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_ms: Option<i64>,
    /// When a sync was last tried (whether or not it completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_ms: Option<i64>,
    /// Why the last attempt failed (cleared by a sync without failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl SyncState {
    pub fn path(home: &Home) -> PathBuf {
        home.root().join(STATE_FILE)
    }

    /// The state at `path`; missing or unreadable is a fresh state (it is only bookkeeping).
    pub fn load(path: &Path) -> SyncState {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", path.display());
                SyncState::default()
            }),
            Err(_) => SyncState::default(),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), ProviderError> {
        let text = toml::to_string(self).expect("a sync state always serializes");
        write_atomically(path, &text)
    }

    /// The state as it concerns `relay` (node id hex): empty if it is about another relay.
    pub fn for_relay(&self, relay: &str) -> SyncState {
        if self.relay.as_deref() == Some(relay) {
            self.clone()
        } else {
            SyncState {
                relay: Some(relay.to_string()),
                ..SyncState::default()
            }
        }
    }

    /// Records a sync with `relay` that reached it; `error` says what it could not do.
    pub fn record_sync(&mut self, relay: &str, now_ms: i64, error: Option<String>) {
        *self = self.for_relay(relay);
        self.last_attempt_ms = Some(now_ms);
        self.last_sync_ms = Some(now_ms);
        self.last_error = error;
    }

    /// Records a sync with `relay` that did not get through.
    pub fn record_failure(&mut self, relay: &str, now_ms: i64, error: String) {
        *self = self.for_relay(relay);
        self.last_attempt_ms = Some(now_ms);
        self.last_error = Some(error);
    }

    /// Whether a sync with this relay ever completed.
    pub fn ever_synced(&self) -> bool {
        self.last_sync_ms.is_some()
    }
}

/// Whether the interval since the last attempt has passed (or there never was one). The last
/// *attempt* counts, not the last success: an offline machine retries once per interval
/// instead of paying a connection timeout on every command.
pub fn due(config: &StorageConfig, state: &SyncState, now_ms: i64) -> bool {
    match state.last_attempt_ms {
        None => true,
        // A clock that went back: sync rather than wait for it to catch up.
        Some(last) if now_ms < last => true,
        Some(last) => now_ms - last >= config.interval_ms(),
    }
}

/// Whether a command that just finished should sync with the relay now. `wrote`: the command
/// changed what may be shared (import, share, unshare, branch, fork, team).
///
/// * local: never.
/// * cloud: after every write (write-through), and when the interval is due.
/// * hybrid: after a write when `sync_on_close`, and when the interval is due.
///
/// Without a relay configured there is nothing to sync with.
pub fn should_sync(config: &StorageConfig, state: &SyncState, wrote: bool, now_ms: i64) -> bool {
    if config.relay.is_none() {
        return false;
    }
    match config.provider {
        Provider::Local => false,
        Provider::Cloud => wrote || due(config, state, now_ms),
        Provider::Hybrid => (wrote && config.sync_on_close) || due(config, state, now_ms),
    }
}

/// Whether a failed sync after a command is an error (cloud after a write: the change did not
/// reach its home) rather than a warning.
pub fn failure_is_error(config: &StorageConfig, wrote: bool) -> bool {
    config.provider == Provider::Cloud && wrote
}

fn write_atomically(path: &Path, text: &str) -> Result<(), ProviderError> {
    let err = |source| ProviderError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn config(provider: Provider) -> StorageConfig {
        StorageConfig {
            provider,
            relay: Some("relay".into()),
            ..StorageConfig::default()
        }
    }

    fn synced_at(ms: i64) -> SyncState {
        SyncState {
            relay: Some("ab".into()),
            last_sync_ms: Some(ms),
            last_attempt_ms: Some(ms),
            last_error: None,
        }
    }

    #[test]
    fn local_never_syncs() {
        let c = config(Provider::Local);
        for wrote in [false, true] {
            assert!(!should_sync(&c, &SyncState::default(), wrote, 0));
            assert!(!should_sync(&c, &synced_at(0), wrote, 100 * MIN));
        }
        // Even with sync_on_close and a due interval.
        assert!(!should_sync(
            &StorageConfig::default(),
            &SyncState::default(),
            true,
            i64::MAX
        ));
    }

    #[test]
    fn hybrid_syncs_on_close_and_on_interval() {
        let c = config(Provider::Hybrid);
        let state = synced_at(10 * MIN);
        // A write with sync_on_close: at once.
        assert!(should_sync(&c, &state, true, 10 * MIN + 1));
        // No write, interval (5m) not due.
        assert!(!should_sync(&c, &state, false, 14 * MIN));
        // Interval due.
        assert!(should_sync(&c, &state, false, 15 * MIN));
        // Never tried: due.
        assert!(should_sync(&c, &SyncState::default(), false, 0));
        // sync_on_close off: a write waits for the interval.
        let quiet = StorageConfig {
            sync_on_close: false,
            ..c.clone()
        };
        assert!(!should_sync(&quiet, &state, true, 11 * MIN));
        assert!(should_sync(&quiet, &state, true, 16 * MIN));
    }

    #[test]
    fn a_failed_attempt_waits_for_the_interval_too() {
        let c = config(Provider::Hybrid);
        let mut state = synced_at(0);
        state.record_failure("ab", 10 * MIN, "unreachable".into());
        assert!(!should_sync(&c, &state, false, 12 * MIN));
        assert!(should_sync(&c, &state, false, 15 * MIN));
        // A write still syncs at once (and reports if it fails again).
        assert!(should_sync(&c, &state, true, 12 * MIN));
        assert_eq!(state.last_sync_ms, Some(0));
    }

    #[test]
    fn cloud_syncs_on_every_write() {
        let c = StorageConfig {
            sync_on_close: false,
            ..config(Provider::Cloud)
        };
        let state = synced_at(10 * MIN);
        assert!(should_sync(&c, &state, true, 10 * MIN + 1));
        assert!(!should_sync(&c, &state, false, 11 * MIN));
        assert!(should_sync(&c, &state, false, 15 * MIN));
        assert!(failure_is_error(&c, true));
        assert!(!failure_is_error(&c, false));
        assert!(!failure_is_error(&config(Provider::Hybrid), true));
    }

    #[test]
    fn no_relay_means_no_sync() {
        for provider in [Provider::Cloud, Provider::Hybrid] {
            let c = StorageConfig {
                provider,
                ..StorageConfig::default()
            };
            assert!(!should_sync(&c, &SyncState::default(), true, 0));
        }
    }

    #[test]
    fn a_clock_that_went_back_is_due() {
        let c = config(Provider::Hybrid);
        assert!(should_sync(&c, &synced_at(10 * MIN), false, 5 * MIN));
    }

    #[test]
    fn config_round_trips_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        assert_eq!(
            StorageConfig::load(&path).unwrap(),
            StorageConfig::default()
        );
        assert_eq!(StorageConfig::default().provider, Provider::Local);
        let c = StorageConfig {
            provider: Provider::Hybrid,
            relay: Some("relay".into()),
            teams: vec!["ab".repeat(32)],
            sync_interval: "30s".into(),
            sync_on_close: false,
        };
        c.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("provider = \"hybrid\""), "{text}");
        assert_eq!(StorageConfig::load(&path).unwrap(), c);
        assert_eq!(c.interval_ms(), 30_000);
        // Only the provider given: the rest defaults.
        let c = StorageConfig::parse("provider = \"cloud\"\n").unwrap();
        assert_eq!(c.provider, Provider::Cloud);
        assert_eq!(c.interval_ms(), 5 * MIN);
        assert!(c.sync_on_close);
    }

    #[test]
    fn malformed_config_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        for bad in [
            "provider = \"floppy\"\n",
            "provider = \n",
            "provder = \"local\"\n",
            "sync_interval = \"soon\"\n",
            "sync_interval = \"0s\"\n",
            "teams = [\"core\"]\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = StorageConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{bad}: {e}");
            assert!(e.contains("delete it"), "{bad}: {e}");
        }
    }

    #[test]
    fn provider_names() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
        }
        assert!("bogus".parse::<Provider>().is_err());
        assert!(!Provider::Local.syncs());
    }

    #[test]
    fn state_is_per_relay_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert_eq!(SyncState::load(&path), SyncState::default());
        let mut s = SyncState::default();
        s.record_sync("aa", 5, None);
        s.save(&path).unwrap();
        let loaded = SyncState::load(&path);
        assert_eq!(loaded, s);
        assert!(loaded.for_relay("aa").ever_synced());
        assert!(!loaded.for_relay("bb").ever_synced());
        std::fs::write(&path, "last_sync_ms = \"x\"").unwrap();
        assert_eq!(SyncState::load(&path), SyncState::default());
    }
}
