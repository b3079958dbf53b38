//! The storage providers' sync engine (SPEC.md §16.11): one sync attempt with the configured
//! relay, what is pending against it, and the background sync `tapes serve` runs.
//! `tapes::sync::provider` holds the configuration and the decision *when* to sync; this module
//! does the syncing; `tapes storage` and the after-command hook only render what it returns.
//!
//! What is pending is derived from the store (our shared sessions against what we last
//! deposited at the relay), so a sync that did not happen loses nothing: the next one catches
//! up. An item the relay refuses (a deposit, a team's manifests, a join answer) is named once
//! with the relay's reason, and the rest of the sync still happens (SPEC.md §16.4).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tapes_protocol::sync::{item_kind, item_session, ItemKind};
use tapes_protocol::{MemberId, SessionId, TeamId};
use tokio::task::block_in_place;

use crate::home::Home;
use crate::identity::{Identity, IdentityError};
use crate::peer::addr::PeerAddr;
use crate::peer::client::{connect, PeerConn};
use crate::peer::endpoint::{bind, EndpointConfig};
use crate::peer::relay_client::{counts, known_teams, RelayCounts, RelaySyncReport};
use crate::peer::PeerError;
use crate::remotes::{self, RemotesError};
use crate::store::{Store, StoreError};
use crate::sync::provider::{ProviderError, StorageConfig, SyncState};
use crate::team::TeamError;

/// Why a sync could not start: a local problem (the network's are in [`Attempt::outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ProviderSyncError {
    #[error("no relay is configured; run `tapes storage configure --relay <ticket>` with the ticket `tapes relay` prints")]
    NoRelay,
    #[error("storage.toml names the relay remote `{0}`, which is gone or is not a relay; run `tapes storage configure --relay <ticket>` again")]
    RelayGone(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Remotes(#[from] RemotesError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The storage configuration of `home` (`storage.toml`).
pub fn load_config(home: &Home) -> Result<StorageConfig, ProviderSyncError> {
    Ok(StorageConfig::load(&StorageConfig::path(home))?)
}

/// How long `tapes storage status` waits for the relay's answers before printing "pending
/// pull unknown": to connect, then to answer.
pub const STATUS_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `tapes storage sync`, a cloud write-through and `tapes serve` wait for the
/// connection to the relay (the sync itself is not cut short).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for a hybrid sync when a command exits: best effort, so that a machine that is
/// offline pays little for it (a QUIC handshake with a relay that is up takes well under 1 s).
/// An unreachable relay also costs iroh's ~3 s drain when the endpoint closes.
pub const BACKGROUND_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// The relay the configuration names.
pub struct ConfiguredRelay {
    pub name: String,
    pub addr: PeerAddr,
}

pub fn configured_relay(
    store: &Store,
    config: &StorageConfig,
) -> Result<ConfiguredRelay, ProviderSyncError> {
    let Some(name) = &config.relay else {
        return Err(ProviderSyncError::NoRelay);
    };
    match remotes::relay(store, name)? {
        Some(addr) => Ok(ConfiguredRelay {
            name: name.clone(),
            addr,
        }),
        None => Err(ProviderSyncError::RelayGone(name.clone())),
    }
}

pub fn me(identity: &Identity) -> MemberId {
    MemberId(identity.verifying_key().to_bytes())
}

/// The teams whose shares the relay should hold from us: the relay's teams we are in as of the
/// last sync; before any sync with this relay, every team we are in. Narrowed by the
/// configuration's team filter.
pub fn relay_teams(
    store: &Store,
    identity: &Identity,
    config: &StorageConfig,
    relay: &MemberId,
    state: &SyncState,
) -> Result<Vec<TeamId>, ProviderSyncError> {
    let known = known_teams(store, relay)?;
    let mut teams = if !known.is_empty() || state.ever_synced() {
        known
    } else {
        let me = me(identity);
        crate::team::list(store)?
            .into_iter()
            .filter(|c| c.head().manifest.member(&me).is_some())
            .map(|c| c.team_id())
            .collect()
    };
    narrow(&mut teams, config)?;
    Ok(teams)
}

pub fn narrow(teams: &mut Vec<TeamId>, config: &StorageConfig) -> Result<(), ProviderSyncError> {
    let filter = config.team_ids().map_err(ProviderSyncError::Config)?;
    if !filter.is_empty() {
        teams.retain(|t| filter.contains(t));
    }
    Ok(())
}

pub fn local_counts(
    store: &Store,
    identity: &Identity,
    config: &StorageConfig,
    relay: &ConfiguredRelay,
    state: &SyncState,
) -> Result<RelayCounts, ProviderSyncError> {
    let teams = relay_teams(store, identity, config, &relay.addr.id, state)?;
    Ok(counts(store, identity, &relay.addr.id, &teams)?)
}

/// Why a sync did not happen.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The relay could not be reached (or the connection broke), as opposed to refusing.
    pub unreachable: bool,
    pub why: String,
}

pub fn peer_failure(e: PeerError) -> Failure {
    match e {
        PeerError::Connect { why, .. }
        | PeerError::RelayConnect { why, .. }
        | PeerError::Connection { why, .. } => Failure {
            unreachable: true,
            why,
        },
        other => Failure {
            unreachable: false,
            why: other.to_string(),
        },
    }
}

/// Dials the relay, giving up after `timeout` (a relay that is down does not answer at all:
/// QUIC has no "connection refused").
pub async fn connect_relay(
    identity: &Identity,
    relay: &ConfiguredRelay,
    timeout: Duration,
) -> Result<(iroh::Endpoint, PeerConn), Failure> {
    let endpoint = bind(identity, &EndpointConfig::loopback_or_any(&relay.addr))
        .await
        .map_err(|e| Failure {
            unreachable: false,
            why: e.to_string(),
        })?;
    let started = std::time::Instant::now();
    let failure =
        match tokio::time::timeout(timeout, connect(&endpoint, &relay.addr, &relay.name)).await {
            Ok(Ok(conn)) => return Ok((endpoint, conn.into_relay())),
            Ok(Err(e)) => Failure {
                // A relay that cannot be dialled is unreachable, whatever the cause.
                unreachable: true,
                ..peer_failure(e)
            },
            Err(_) => Failure {
                unreachable: true,
                why: String::new(),
            },
        };
    // This waits for the abandoned handshake to drain (QUIC's probe timeout, ~3 s); dropping
    // the endpoint instead would make iroh log an error.
    endpoint.close().await;
    if failure.why.is_empty() {
        // Say what the user waited: the dial's limit, and the whole attempt with the close.
        return Err(Failure {
            unreachable: true,
            why: format!(
                "no answer within the {} s limit (gave up after {:.1} s)",
                timeout.as_secs_f64(),
                started.elapsed().as_secs_f64()
            ),
        });
    }
    Err(failure)
}

/// The relay's retention for this member's teams (SPEC.md §16.14), one line each; empty when
/// it keeps everything or cannot be asked (`tapes storage status`).
pub async fn relay_retention(identity: &Identity, relay: &ConfiguredRelay) -> Vec<String> {
    let Ok((endpoint, conn)) = connect_relay(identity, relay, STATUS_DIAL_TIMEOUT).await else {
        return Vec::new();
    };
    let lines = tokio::time::timeout(
        STATUS_TIMEOUT,
        crate::peer::tombstone_sync::retention(&conn),
    )
    .await;
    conn.close();
    endpoint.close().await;
    match lines {
        Ok(Ok(lines)) => lines,
        _ => Vec::new(),
    }
}

/// One sync attempt with the configured relay.
pub struct Attempt {
    pub relay: ConfiguredRelay,
    pub outcome: Result<RelaySyncReport, Failure>,
    /// Our sessions against the relay afterwards (None if they could not be counted).
    pub counts: Option<RelayCounts>,
}

/// Syncs with the configured relay and records the attempt in the sync state. Errors are
/// local problems (no relay configured, the store); the network's are in the attempt.
pub async fn attempt(
    home: &Home,
    store: &Arc<Store>,
    identity: &Arc<Identity>,
    config: &StorageConfig,
    dial_timeout: Duration,
) -> Result<Attempt, ProviderSyncError> {
    let relay = block_in_place(|| configured_relay(store, config))?;
    let outcome = match connect_relay(identity, &relay, dial_timeout).await {
        Err(f) => Err(f),
        Ok((endpoint, conn)) => {
            let filter = config.team_ids().unwrap_or_default();
            let only = (!filter.is_empty()).then_some(filter.as_slice());
            let result = conn
                .relay_sync_only(store, identity, only)
                .await
                .map_err(peer_failure);
            crate::peer::audit_sync::pull_quietly(&conn, store, identity).await; // SPEC §18.3
                                                                                 // Tombstones both ways (SPEC §3.5): ours to the relay, the relay's to us.
            for line in crate::peer::tombstone_sync::pull_quietly(&conn, store).await {
                tracing::info!(relay = %conn.name, "{}", line.trim());
            }
            conn.close();
            endpoint.close().await;
            result
        }
    };
    let node = relay.addr.id.to_hex();
    let now = crate::now_ms();
    let state_path = SyncState::path(home);
    let mut state = SyncState::load(&state_path);
    match &outcome {
        Ok(report) => {
            state.record_sync(&node, now, report.has_failures().then(|| failures(report)));
        }
        Err(f) => state.record_failure(&node, now, f.why.clone()),
    }
    if let Err(e) = state.save(&state_path) {
        tracing::warn!("{e}");
    }
    let state = state.for_relay(&node);
    let counts = block_in_place(|| local_counts(store, identity, config, &relay, &state)).ok();
    Ok(Attempt {
        relay,
        outcome,
        counts,
    })
}

/// Every item the relay refused (or that failed on its own) in one sync, each once, with
/// why: `deposit of 1a2b3c4d5e6f for the public: peer relay refused: …; …`.
pub fn failures(report: &RelaySyncReport) -> String {
    report
        .failures()
        .iter()
        .map(|(item, e)| format!("{item}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What reached the relay: `2 deposited`, or `1 deposited, 1 share withdrawn` when some were
/// unshares or expiries (they carry no session, so they are not called deposits).
pub fn landed(report: &RelaySyncReport) -> String {
    let withdrawn = report.ended.len();
    let deposited = report.deposited.len().saturating_sub(withdrawn);
    if withdrawn == 0 {
        format!("{deposited} deposited")
    } else {
        format!(
            "{deposited} deposited, {} withdrawn",
            crate::views::render::plural(withdrawn, "share")
        )
    }
}

/// How a relay remote is named in messages: `relay \`home\``, or `the relay` for the remote
/// named `relay` (never "relay relay").
pub fn relay_label(name: &str) -> String {
    if name == "relay" {
        "the relay".into()
    } else {
        format!("relay `{name}`")
    }
}

/// How many changes wait, in words: `2 changes queued`.
pub fn queued(n: Option<usize>) -> String {
    match n {
        Some(1) => "1 change queued".into(),
        Some(n) => format!("{n} changes queued"),
        None => "your changes are queued".into(),
    }
}

/// What the relay has that we lack, asked live: sessions (not shares or manifests) it would
/// send us. Our own sessions whose newer version we have not deposited yet are pending push,
/// not pull, and are left out.
pub async fn pending_pull(
    store: &Arc<Store>,
    identity: &Arc<Identity>,
    relay: &ConfiguredRelay,
) -> Result<(Vec<TeamId>, usize), Failure> {
    let (endpoint, conn) = connect_relay(identity, relay, STATUS_DIAL_TIMEOUT).await?;
    let started = std::time::Instant::now();
    let asked = tokio::time::timeout(STATUS_TIMEOUT, async {
        let teams = conn.hello().await?;
        let view = block_in_place(|| {
            crate::share::access::view_for_teams(store, identity, &teams, crate::now_ms())
        })?;
        let (have, need, _) = conn.reconcile(view.ids()).await?;
        Ok::<_, PeerError>((teams, have, need))
    })
    .await;
    conn.close();
    endpoint.close().await;
    let (teams, have, need) = match asked {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return Err(peer_failure(e)),
        Err(_) => {
            return Err(Failure {
                unreachable: true,
                why: format!(
                "connected, but it did not answer within the {} s limit (gave up after {:.1} s)",
                STATUS_TIMEOUT.as_secs_f64(),
                started.elapsed().as_secs_f64()
            ),
            })
        }
    };
    let sessions = |items: &[tapes_protocol::sync::ItemId]| -> BTreeSet<SessionId> {
        items
            .iter()
            .filter(|i| item_kind(i) == Some(ItemKind::Session))
            .map(item_session)
            .collect()
    };
    let pushing = sessions(&need);
    let me = me(identity);
    let mut pull = 0;
    for session in sessions(&have) {
        let ours = pushing.contains(&session)
            && block_in_place(|| store.session(&session))
                .ok()
                .flatten()
                .is_some_and(|r| r.owner == Some(me));
        if !ours {
            pull += 1;
        }
    }
    Ok((teams, pull))
}

/// `tapes serve` with a hybrid or cloud provider: syncs with the relay every sync interval
/// (the first time at once), logging each outcome. `None` when there is nothing to sync.
/// Must be called inside the tokio runtime.
pub fn background_sync(
    home: &Home,
    log: impl Fn(String) + Send + Sync + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let config = match load_config(home) {
        Ok(config) => config,
        Err(e) => {
            log(format!("warning: {e}; no background sync"));
            return None;
        }
    };
    if !config.provider.syncs() || config.relay.is_none() {
        return None;
    }
    log(format!(
        "storage: {} provider; syncing with {} every {}",
        config.provider,
        relay_label(config.relay.as_deref().unwrap_or_default()),
        config.sync_interval
    ));
    let home = home.clone();
    Some(tokio::spawn(async move {
        let mut every = config.interval_ms();
        let mut tick = tokio::time::interval(Duration::from_millis(every as u64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The configuration may have changed since serve started.
            let config = match load_config(&home) {
                Ok(config) => config,
                Err(e) => {
                    log(format!("storage sync skipped: {e}"));
                    continue;
                }
            };
            if !config.provider.syncs() || config.relay.is_none() {
                continue;
            }
            if config.interval_ms() != every {
                every = config.interval_ms();
                tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + Duration::from_millis(every as u64),
                    Duration::from_millis(every as u64),
                );
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            let opened = block_in_place(|| {
                let store = Arc::new(Store::open(&home.store_dir())?);
                let identity = Arc::new(Identity::load(&home)?);
                Ok::<_, ProviderSyncError>((store, identity))
            });
            let (store, identity) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    log(format!(
                        "storage sync skipped: cannot open the store in {}: {e}",
                        home.root().display()
                    ));
                    continue;
                }
            };
            match attempt(&home, &store, &identity, &config, DIAL_TIMEOUT).await {
                Err(e) => log(format!("storage sync failed: {e}")),
                Ok(a) => match a.outcome {
                    Ok(report) => {
                        let fetched = report.fetched.new_sessions + report.fetched.updated_sessions;
                        let failed = report.failures().len();
                        if report.deposited.is_empty() && failed == 0 && fetched == 0 {
                            log(format!(
                                "storage sync with {}: up to date",
                                relay_label(&a.relay.name)
                            ));
                        } else {
                            log(format!(
                                "storage sync with {}: {}, {failed} failed, {} fetched; {} pending push{}",
                                relay_label(&a.relay.name),
                                landed(&report),
                                crate::views::render::plural(fetched, "session"),
                                a.counts.as_ref().map(|c| c.pending_push).map_or("?".into(), |n| n.to_string()),
                                if failed > 0 { format!(" ({})", failures(&report)) } else { String::new() }
                            ));
                        }
                    }
                    Err(f) => log(format!(
                        "storage sync with {} failed: {}; {}, retrying in {}",
                        relay_label(&a.relay.name),
                        f.why,
                        queued(a.counts.as_ref().map(|c| c.pending_push)),
                        config.sync_interval
                    )),
                },
            }
            // Let other commands have the store between syncs.
            drop(store);
        }
    }))
}
