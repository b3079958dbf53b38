//! Retention on a relay (SPEC.md §16.14): a deposit untouched for longer than its team's
//! `retention` (relay.toml, [`super::config`]) is removed from the relay, its record and its
//! blobs, and its size given back to the team's usage. Members' own stores are never touched:
//! the relay only stops holding a copy.
//!
//! [`sweep`] runs at the relay's start and then periodically ([`interval`]); what it removed is
//! added to the scope's `expired/<scope>` record ([`Expired`]), which the relay reports at its
//! start and on each sweep.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tapes_protocol::sync::Scope;
use tapes_protocol::{NodeId, SessionId};

use super::backend::Written;
use super::state::{deposit_prefix, open_doc, RelayState};
use super::RelayError;

/// What retention removed from one scope so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    pub sessions: u64,
    pub bytes: u64,
    /// When the last one was removed.
    pub last_ms: i64,
}

/// What one sweep removed from one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    pub scope: Scope,
    pub retention_ms: i64,
    pub sessions: Vec<SessionId>,
    pub bytes: u64,
}

fn expired_key(scope: &Scope) -> String {
    match scope {
        Scope::Team(team) => format!("expired/{}", team.to_hex()),
        Scope::Public => "expired/public".into(),
    }
}

/// The scopes with a retention period: every registered team's, and the public scope by the
/// default table.
fn scopes(state: &RelayState) -> Vec<(Scope, i64)> {
    let mut out = Vec::new();
    for chain in state.teams() {
        let team = chain.team_id();
        if let Some(ms) = state.config().quota(&team).retention_ms {
            out.push((Scope::Team(team), ms));
        }
    }
    if let Some(ms) = state.config().default.retention_ms {
        out.push((Scope::Public, ms));
    }
    out
}

/// How often the relay sweeps: a quarter of the shortest retention, between 1 s and 1 h;
/// `None` when no scope has one.
pub fn interval(state: &RelayState) -> Option<std::time::Duration> {
    // From the configuration, not the registered teams: a team registered later is swept too.
    let config = state.config();
    let shortest = std::iter::once(config.default.retention_ms)
        .chain(config.teams.values().map(|q| q.retention_ms))
        .flatten()
        .min()?;
    let ms = (shortest / 4).clamp(1_000, 3_600_000);
    Some(std::time::Duration::from_millis(ms as u64))
}

/// Removes every deposit whose last change is older than its scope's retention.
pub fn sweep(state: &RelayState, now_ms: i64) -> Result<Vec<Swept>, RelayError> {
    let mut report = Vec::new();
    for (scope, retention_ms) in scopes(state) {
        let found = state.backend().list(&deposit_prefix(&scope))?;
        let mut expired = Vec::new();
        let mut kept_blobs: HashSet<NodeId> = HashSet::new();
        for (key, versioned) in found {
            let (deposited, _) = open_doc(&versioned)?;
            let blobs = deposited
                .segments
                .iter()
                .flat_map(|s| s.blobs.iter().copied());
            if deposited.updated_ms.saturating_add(retention_ms) <= now_ms {
                expired.push((key, versioned, deposited));
            } else {
                kept_blobs.extend(blobs);
            }
        }
        let mut swept = Swept {
            scope,
            retention_ms,
            sessions: Vec::new(),
            bytes: 0,
        };
        for (key, versioned, deposited) in expired {
            // The record first: once it is gone nobody is served the session, and a crash
            // before its blobs go leaves blobs no record names (removed by no one; harmless,
            // and counted in no usage).
            state.backend().delete(&key, &versioned)?;
            // A deposit that changed the record meanwhile wins (the delete did not apply): it
            // is not expired any more, and its blobs stay.
            if state.backend().get(&key)?.is_some() {
                continue;
            }
            let blobs: Vec<NodeId> = deposited
                .segments
                .iter()
                .flat_map(|s| s.blobs.iter().copied())
                .filter(|b| !kept_blobs.contains(b))
                .collect();
            state.backend().delete_blobs(&blobs)?;
            if let Some(id) = key
                .rsplit('/')
                .next()
                .and_then(|hex| hex.parse::<SessionId>().ok())
            {
                swept.sessions.push(id);
            }
            swept.bytes += deposited.bytes;
            state.change_usage(&scope, now_ms, |usage| {
                usage.bytes = usage.bytes.saturating_sub(deposited.bytes);
                usage.sessions = usage.sessions.saturating_sub(1);
                Ok(())
            })?;
        }
        if !swept.sessions.is_empty() {
            record(state, &scope, &swept, now_ms)?;
            report.push(swept);
        }
    }
    Ok(report)
}

fn record(state: &RelayState, scope: &Scope, swept: &Swept, now_ms: i64) -> Result<(), RelayError> {
    let key = expired_key(scope);
    for _ in 0..8 {
        let found = state.backend().get(&key)?;
        let mut expired: Expired = found
            .as_ref()
            .and_then(|v| postcard::from_bytes(&v.bytes).ok())
            .unwrap_or_default();
        expired.sessions += swept.sessions.len() as u64;
        expired.bytes += swept.bytes;
        expired.last_ms = now_ms;
        let bytes = postcard::to_stdvec(&expired).unwrap_or_default();
        if state.backend().put(&key, bytes, found.as_ref())? == Written::Done {
            return Ok(());
        }
    }
    Err(RelayError::Busy)
}

/// Removes one deposit (its record, then the blobs no other record of the scope names) and
/// gives its size back to the scope's usage; false when there was none or a deposit changed it
/// meanwhile (SPEC.md §3.5, tombstones at a relay).
pub(crate) fn drop_deposit(
    state: &RelayState,
    scope: &Scope,
    key: &str,
) -> Result<bool, RelayError> {
    let Some(versioned) = state.backend().get(key)? else {
        return Ok(false);
    };
    let (deposited, _) = open_doc(&versioned)?;
    let mut kept_blobs: HashSet<NodeId> = HashSet::new();
    for (other, found) in state.backend().list(&deposit_prefix(scope))? {
        if other != key {
            let (d, _) = open_doc(&found)?;
            kept_blobs.extend(d.segments.iter().flat_map(|s| s.blobs.iter().copied()));
        }
    }
    state.backend().delete(key, &versioned)?;
    if state.backend().get(key)?.is_some() {
        return Ok(false);
    }
    let blobs: Vec<NodeId> = deposited
        .segments
        .iter()
        .flat_map(|s| s.blobs.iter().copied())
        .filter(|b| !kept_blobs.contains(b))
        .collect();
    state.backend().delete_blobs(&blobs)?;
    state.change_usage(scope, crate::now_ms(), |usage| {
        usage.bytes = usage.bytes.saturating_sub(deposited.bytes);
        usage.sessions = usage.sessions.saturating_sub(1);
        Ok(())
    })?;
    Ok(true)
}

/// What retention removed from `scope` so far.
pub fn expired(state: &RelayState, scope: &Scope) -> Result<Expired, RelayError> {
    Ok(state
        .backend()
        .get(&expired_key(scope))?
        .and_then(|v| postcard::from_bytes(&v.bytes).ok())
        .unwrap_or_default())
}

/// One line per scope with a retention period, for the relay's output and `storage status`:
/// `retention: team <id> keeps deposits 30d after their last change; 3 sessions (12 KiB)
/// expired so far`.
pub fn describe(state: &RelayState) -> Result<Vec<String>, RelayError> {
    describe_scopes(state, scopes(state))
}

/// [`describe`] for the scopes `peer` may see: its teams' and the public scope
/// (`Request::Retention`, what `tapes storage status` shows a member).
pub fn describe_for(
    state: &RelayState,
    peer: &tapes_protocol::MemberId,
) -> Result<Vec<String>, RelayError> {
    let teams = state.teams_of(peer);
    let visible = scopes(state)
        .into_iter()
        .filter(|(scope, _)| match scope {
            Scope::Team(t) => teams.contains(t),
            Scope::Public => true,
        })
        .collect();
    describe_scopes(state, visible)
}

fn describe_scopes(
    state: &RelayState,
    scopes: Vec<(Scope, i64)>,
) -> Result<Vec<String>, RelayError> {
    let mut lines = Vec::new();
    let names: std::collections::HashMap<tapes_protocol::TeamId, String> = state
        .teams()
        .iter()
        .map(|c| (c.team_id(), c.head().manifest.name.clone()))
        .collect();
    for (scope, ms) in scopes {
        let e = expired(state, &scope)?;
        let name = match &scope {
            Scope::Team(t) => match names.get(t) {
                Some(n) => format!("team {n} ({})", t.short()),
                None => format!("team {}", t.short()),
            },
            Scope::Public => "public shares".into(),
        };
        lines.push(format!(
            "retention: {name} keeps deposits {} after their last change; {} ({} bytes) expired so far (members' own stores keep them)",
            human(ms),
            crate::views::render::plural(e.sessions as usize, "session"),
            e.bytes
        ));
    }
    Ok(lines)
}

fn human(ms: i64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{}s", ms / 1000)
}

/// Sweeps now and then every [`interval`] on the current tokio runtime, reporting to `log`
/// what it removed; ends when the relay's state is dropped. Nothing runs when no scope has a
/// retention period.
pub fn spawn(state: &std::sync::Arc<RelayState>, log: crate::peer::server::EventLog) {
    let Some(every) = interval(state) else {
        return;
    };
    if let Ok(lines) = describe(state) {
        lines.into_iter().for_each(|line| log(line));
    }
    let weak = std::sync::Arc::downgrade(state);
    tokio::spawn(async move {
        loop {
            let Some(state) = weak.upgrade() else {
                return;
            };
            let swept = tokio::task::spawn_blocking(move || sweep(&state, crate::now_ms())).await;
            match swept {
                Ok(Ok(report)) => {
                    for s in report {
                        log(format!(
                            "retention removed {} ({} bytes) of {} older than {}; members' own stores keep them",
                            crate::views::render::plural(s.sessions.len(), "session"),
                            s.bytes,
                            match &s.scope {
                                Scope::Team(t) => format!("team {}", t.short()),
                                Scope::Public => "public shares".into(),
                            },
                            human(s.retention_ms)
                        ))
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "retention sweep failed; trying again later")
                }
                Err(e) => tracing::warn!(error = %e, "retention sweep stopped"),
            }
            tokio::time::sleep(every).await;
        }
    });
}
