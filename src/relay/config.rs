//! The relay's configuration (`<data>/relay.toml`): per-team quotas.
//!
//! ```toml
//! [default]                # every team unless overridden; the RFC's free tier
//! sessions_per_month = 100
//! members = 3
//! bytes = 1073741824       # 1 GiB of sealed objects
//!
//! retention = "30d"        # deposits untouched this long are removed (default: kept)
//!
//! [teams.<team id hex>]    # any subset of the same keys
//! sessions_per_month = 1000
//! retention = "0"          # 0: kept until their owners remove them
//!
//! [teams.core]             # or the team's name, as registered at this relay
//! retention = "30d"
//! ```
//!
//! Retention is enforced by `relay::retention` (SPEC.md §16.14). A table named by a team's
//! name is bound to that team's id when the relay starts ([`RelayConfig::resolve_names`]): a
//! name no registered team has, or that several have, stops the start with the reason.
//!
//! A missing file is the default; a file that does not parse stops the relay with the line
//! at fault, rather than silently running with no limits.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tapes_protocol::TeamId;

use super::RelayError;

/// Limits for one team. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// New sessions deposited per calendar month (UTC).
    pub sessions_per_month: Option<u64>,
    /// Current members of the team's manifest.
    pub members: Option<u64>,
    /// Bytes of deposited objects, sealed or public.
    pub bytes: Option<u64>,
    /// How long a deposit is kept after its last change, in milliseconds (SPEC.md §16.14).
    #[serde(default)]
    pub retention_ms: Option<i64>,
}

impl Quota {
    /// The RFC's free tier: 100 sessions a month, 3 members; 1 GiB.
    pub const FREE: Quota = Quota {
        sessions_per_month: Some(100),
        members: Some(3),
        bytes: Some(1 << 30),
        retention_ms: None,
    };
}

impl Default for Quota {
    fn default() -> Quota {
        Quota::FREE
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialQuota {
    sessions_per_month: Option<u64>,
    members: Option<u64>,
    bytes: Option<u64>,
    retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default: Option<PartialQuota>,
    #[serde(default)]
    teams: BTreeMap<String, PartialQuota>,
}

/// The parsed configuration.
#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    pub default: Quota,
    pub teams: BTreeMap<TeamId, Quota>,
    /// Tables named by a team's name rather than its id, until [`RelayConfig::resolve_names`]
    /// binds each to the registered team of that name.
    pub named: BTreeMap<String, Quota>,
}

impl RelayConfig {
    /// Reads `path`; a missing file is the default (free tier for every team).
    pub fn load(path: &Path) -> Result<RelayConfig, RelayError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RelayConfig::default()),
            Err(e) => {
                return Err(RelayError::Config {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })
            }
        };
        RelayConfig::parse(&text).map_err(|why| RelayError::Config {
            path: path.display().to_string(),
            why,
        })
    }

    pub fn parse(text: &str) -> Result<RelayConfig, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let default = merge(Quota::FREE, file.default.unwrap_or_default(), "[default]")?;
        let mut teams = BTreeMap::new();
        let mut named = BTreeMap::new();
        for (key, partial) in file.teams {
            let quota = merge(default, partial, &format!("[teams.{key}]"))?;
            // 64 hex digits are a team id; anything else is a team's name.
            let is_id = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
            if is_id {
                let team: TeamId = key
                    .parse()
                    .map_err(|e| format!("[teams.{key}] is not a team id: {e}"))?;
                teams.insert(team, quota);
            } else if key.trim().is_empty() {
                return Err(
                    "[teams.\"\"] names no team: write a team's id (64 hex digits) or its name"
                        .into(),
                );
            } else {
                named.insert(key, quota);
            }
        }
        Ok(RelayConfig {
            default,
            teams,
            named,
        })
    }

    /// Binds every table named by a team's name to the id of the registered team of that name
    /// (`registered`: id and name of each team registered at this relay). A name that no
    /// registered team has, or that several have, or a team configured both by name and by
    /// id, is an error naming the table and the way out.
    pub fn resolve_names(&self, registered: &[(TeamId, String)]) -> Result<RelayConfig, String> {
        let mut out = self.clone();
        out.named.clear();
        for (name, quota) in &self.named {
            let matches: Vec<&TeamId> = registered
                .iter()
                .filter(|(_, n)| n == name)
                .map(|(id, _)| id)
                .collect();
            let team = match matches.as_slice() {
                [one] => **one,
                [] => {
                    let mut known: Vec<&str> = registered.iter().map(|(_, n)| n.as_str()).collect();
                    known.sort_unstable();
                    known.dedup();
                    let known = if known.is_empty() {
                        "none is registered yet".to_string()
                    } else {
                        format!("registered: {}", known.join(", "))
                    };
                    return Err(format!(
                        "[teams.{name}] names no team registered at this relay ({known}); a table may name a team only once it is registered (`tapes relay register`), so until then write [teams.<team id hex>] (`tapes team show` prints the id)"
                    ));
                }
                many => {
                    let ids: Vec<String> = many.iter().map(|t| t.to_hex()).collect();
                    return Err(format!(
                        "[teams.{name}] is ambiguous: {} registered teams are named {name} ({}); write [teams.<team id hex>] for the one you mean",
                        many.len(),
                        ids.join(", ")
                    ));
                }
            };
            if self.teams.contains_key(&team) {
                return Err(format!(
                    "team {name} is configured twice, as [teams.{name}] and as [teams.{}]; keep one of the tables",
                    team.to_hex()
                ));
            }
            out.teams.insert(team, *quota);
        }
        Ok(out)
    }

    pub fn quota(&self, team: &TeamId) -> Quota {
        self.teams.get(team).copied().unwrap_or(self.default)
    }
}

fn merge(base: Quota, over: PartialQuota, table: &str) -> Result<Quota, String> {
    // 0 in the file means "no limit", so a team can be lifted off the free tier explicitly.
    let pick = |o: Option<u64>, b: Option<u64>| match o {
        Some(0) => None,
        Some(v) => Some(v),
        None => b,
    };
    let retention_ms = match over.retention.as_deref().map(str::trim) {
        None => base.retention_ms,
        Some("0") | Some("forever") => None,
        Some(text) => Some(
            crate::duration::parse_duration_ms(text)
                .map_err(|why| format!("{table} retention: {why}"))?,
        ),
    };
    Ok(Quota {
        sessions_per_month: pick(over.sessions_per_month, base.sessions_per_month),
        members: pick(over.members, base.members),
        bytes: pick(over.bytes, base.bytes),
        retention_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_free_tier_and_teams_override_it() {
        let team = TeamId([7; 32]);
        let text = format!(
            "[default]\nmembers = 5\n\n[teams.{}]\nsessions_per_month = 0\nbytes = 10\n",
            team.to_hex()
        );
        let config = RelayConfig::parse(&text).unwrap();
        assert_eq!(config.default.members, Some(5));
        assert_eq!(config.default.sessions_per_month, Some(100));
        let q = config.quota(&team);
        assert_eq!(q.sessions_per_month, None);
        assert_eq!(q.bytes, Some(10));
        assert_eq!(q.members, Some(5));
        assert_eq!(RelayConfig::default().quota(&team), Quota::FREE);
    }

    #[test]
    fn retention_is_a_duration_per_team_and_zero_keeps_forever() {
        let team = TeamId([7; 32]);
        let other = TeamId([8; 32]);
        let text = format!(
            "[default]\nretention = \"30d\"\n\n[teams.{}]\nretention = \"0\"\n",
            team.to_hex()
        );
        let config = RelayConfig::parse(&text).unwrap();
        assert_eq!(config.quota(&other).retention_ms, Some(30 * 86_400_000));
        assert_eq!(config.quota(&team).retention_ms, None);
        assert_eq!(RelayConfig::default().quota(&team).retention_ms, None);
        let err = RelayConfig::parse("[default]\nretention = \"soon\"\n").unwrap_err();
        assert!(err.contains("[default] retention"), "{err}");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        assert!(RelayConfig::parse("[default]\nmembrs = 3\n").is_err());
        assert!(RelayConfig::parse("[teams.zz]\nmembrs = 3\n").is_err());
        assert!(RelayConfig::parse("members = ").is_err());
    }

    #[test]
    fn a_table_may_name_a_team_and_is_bound_to_its_id() {
        let core = TeamId([1; 32]);
        let ops = TeamId([2; 32]);
        let twin = TeamId([3; 32]);
        let config = RelayConfig::parse("[teams.core]\nretention = \"7d\"\n").unwrap();
        assert!(config.teams.is_empty());
        let registered = vec![(core, "core".to_string()), (ops, "ops".to_string())];
        let bound = config.resolve_names(&registered).unwrap();
        assert_eq!(bound.quota(&core).retention_ms, Some(7 * 86_400_000));
        assert_eq!(bound.quota(&ops).retention_ms, None);
        assert!(bound.named.is_empty());

        let unknown = RelayConfig::parse("[teams.zz]\nmembers = 3\n")
            .unwrap()
            .resolve_names(&registered)
            .unwrap_err();
        assert!(
            unknown.contains("[teams.zz]") && unknown.contains("core, ops"),
            "{unknown}"
        );
        let mut two = registered.clone();
        two.push((twin, "core".to_string()));
        let ambiguous = config.resolve_names(&two).unwrap_err();
        assert!(
            ambiguous.contains("ambiguous") && ambiguous.contains(&twin.to_hex()),
            "{ambiguous}"
        );
        let both = RelayConfig::parse(&format!(
            "[teams.core]\nmembers = 3\n[teams.{}]\nmembers = 4\n",
            core.to_hex()
        ))
        .unwrap()
        .resolve_names(&registered)
        .unwrap_err();
        assert!(both.contains("configured twice"), "{both}");
    }
}
