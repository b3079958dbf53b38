//! `tapes storage set-provider|configure|status|sync`, the sync after every command, and the
//! background sync of `tapes serve`: the network side of the storage providers (SPEC.md
//! §16.11; `tapes::sync::provider` holds the configuration and the decision when to sync).
//!
//! * local: nothing here ever dials; `tapes storage sync` refuses.
//! * cloud: write-through; after a command that wrote, the relay must take the change or the
//!   command fails (the change stays queued locally).
//! * hybrid: after a command that wrote (with `sync_on_close`) or when the interval is due, a
//!   sync runs; if the relay cannot be reached that is a warning, never a failed command.
//!
//! What is pending is derived from the store (our shared sessions against what we last
//! deposited at the relay), so a sync that did not happen loses nothing: the next one catches up.
//! An item the relay refuses (a deposit, a team's manifests, a join answer) is named once with
//! the relay's reason, and the rest of the sync still happens (SPEC.md §16.4, §16.11).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tapes::home::Home;
use tapes::identity::Identity;
use tapes::peer::addr::PeerAddr;
use tapes::peer::client::{connect, PeerConn};
use tapes::peer::endpoint::{bind, EndpointConfig};
use tapes::peer::relay_client::{counts, known_teams, RelayCounts, RelaySyncReport};
use tapes::peer::PeerError;
use tapes::protocol::sync::{item_kind, item_session, ItemKind};
use tapes::protocol::{MemberId, SessionId, TeamId};
use tapes::store::Store;
use tapes::sync::provider::{
    failure_is_error, parse_interval, should_sync, Provider, StorageConfig, SyncState,
    DEFAULT_RELAY_REMOTE,
};
use tokio::task::block_in_place;

use super::remote;
use super::runtime;
use tapes::views::render;

/// How long `tapes storage status` waits for the relay's answers before printing "pending
/// pull unknown": to connect, then to answer.
const STATUS_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `tapes storage sync`, a cloud write-through and `tapes serve` wait for the
/// connection to the relay (the sync itself is not cut short).
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for a hybrid sync when a command exits: best effort, so that a machine that is
/// offline pays little for it (a QUIC handshake with a relay that is up takes well under 1 s).
/// An unreachable relay also costs iroh's ~3 s drain when the endpoint closes.
const BACKGROUND_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Subcommand)]
pub enum StorageCommand {
    /// Show the provider, the local store and what is pending against the relay.
    Status(StatusArgs),
    /// Sync with the relay now: push what is pending, pull what is new.
    Sync,
    /// Choose where sessions live: local (never the network), cloud (the relay; every change
    /// is synced before the command returns) or hybrid (local first, synced in the background).
    SetProvider {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(["local", "cloud", "hybrid"]))]
        provider: String,
    },
    /// Set the relay to sync with and how often (switches a local provider to hybrid).
    Configure(ConfigureArgs),
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Do not ask the relay (pending pull is then unknown).
    #[arg(long)]
    offline: bool,
}

#[derive(clap::Args)]
pub struct ConfigureArgs {
    /// The relay: its ticket (`<node-id>@<host:port>`, printed by `tapes relay`), or the name
    /// of a relay remote.
    #[arg(long)]
    relay: Option<String>,
    /// The name to save the relay's ticket under as a remote (default `relay`).
    #[arg(long, requires = "relay")]
    name: Option<String>,
    /// Only count these teams at the relay (name or id prefix; repeatable).
    #[arg(long = "team")]
    teams: Vec<String>,
    /// Count every team again (drops an earlier --team).
    #[arg(long, conflicts_with = "teams")]
    all_teams: bool,
    /// How often to sync in the background, e.g. 30s, 5m, 1h (default 5m).
    #[arg(long, value_parser = check_interval)]
    sync_interval: Option<String>,
    /// Sync when a command that changed something exits (the default).
    #[arg(long, overrides_with = "no_sync_on_close")]
    sync_on_close: bool,
    /// Do not sync when a command exits; only on the interval.
    #[arg(long, overrides_with = "sync_on_close")]
    no_sync_on_close: bool,
}

fn check_interval(text: &str) -> Result<String, String> {
    parse_interval(text).map_err(|e| e.to_string())?;
    Ok(text.trim().to_string())
}

pub fn run(command: StorageCommand) -> anyhow::Result<ExitCode> {
    match command {
        StorageCommand::Status(args) => status(args),
        StorageCommand::Sync => sync(),
        StorageCommand::SetProvider { provider } => set_provider(&provider),
        StorageCommand::Configure(args) => configure(args),
    }
}

fn load_config(home: &Home) -> anyhow::Result<StorageConfig> {
    Ok(StorageConfig::load(&StorageConfig::path(home))?)
}

/// The relay the configuration names.
struct Relay {
    name: String,
    addr: PeerAddr,
}

fn configured_relay(store: &Store, config: &StorageConfig) -> anyhow::Result<Relay> {
    let Some(name) = &config.relay else {
        bail!("no relay is configured; run `tapes storage configure --relay <ticket>` with the ticket `tapes relay` prints");
    };
    match remote::relay(store, name)? {
        Some(addr) => Ok(Relay {
            name: name.clone(),
            addr,
        }),
        None => bail!(
            "storage.toml names the relay remote `{name}`, which is gone or is not a relay; run `tapes storage configure --relay <ticket>` again"
        ),
    }
}

fn me(identity: &Identity) -> MemberId {
    MemberId(identity.verifying_key().to_bytes())
}

/// The teams whose shares the relay should hold from us: the relay's teams we are in as of the
/// last sync; before any sync with this relay, every team we are in. Narrowed by the
/// configuration's team filter.
fn relay_teams(
    store: &Store,
    identity: &Identity,
    config: &StorageConfig,
    relay: &MemberId,
    state: &SyncState,
) -> anyhow::Result<Vec<TeamId>> {
    let known = known_teams(store, relay)?;
    let mut teams = if !known.is_empty() || state.ever_synced() {
        known
    } else {
        let me = me(identity);
        tapes::team::list(store)?
            .into_iter()
            .filter(|c| c.head().manifest.member(&me).is_some())
            .map(|c| c.team_id())
            .collect()
    };
    narrow(&mut teams, config)?;
    Ok(teams)
}

fn narrow(teams: &mut Vec<TeamId>, config: &StorageConfig) -> anyhow::Result<()> {
    let filter = config.team_ids().map_err(|e| anyhow!(e))?;
    if !filter.is_empty() {
        teams.retain(|t| filter.contains(t));
    }
    Ok(())
}

fn local_counts(
    store: &Store,
    identity: &Identity,
    config: &StorageConfig,
    relay: &Relay,
    state: &SyncState,
) -> anyhow::Result<RelayCounts> {
    let teams = relay_teams(store, identity, config, &relay.addr.id, state)?;
    Ok(counts(store, identity, &relay.addr.id, &teams)?)
}

/// Why a sync did not happen.
struct Failure {
    /// The relay could not be reached (or the connection broke), as opposed to refusing.
    unreachable: bool,
    why: String,
}

fn peer_failure(e: PeerError) -> Failure {
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
async fn connect_relay(
    identity: &Identity,
    relay: &Relay,
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

/// One sync attempt with the configured relay.
struct Attempt {
    relay: Relay,
    outcome: Result<RelaySyncReport, Failure>,
    /// Our sessions against the relay afterwards (None if they could not be counted).
    counts: Option<RelayCounts>,
}

/// Syncs with the configured relay and records the attempt in the sync state. Errors are
/// local problems (no relay configured, the store); the network's are in the attempt.
async fn attempt(
    home: &Home,
    store: &Arc<Store>,
    identity: &Arc<Identity>,
    config: &StorageConfig,
    dial_timeout: Duration,
) -> anyhow::Result<Attempt> {
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
            conn.close();
            endpoint.close().await;
            result
        }
    };
    let node = relay.addr.id.to_hex();
    let now = tapes::now_ms();
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
fn failures(report: &RelaySyncReport) -> String {
    report
        .failures()
        .iter()
        .map(|(item, e)| format!("{item}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How many items failed, in words.
fn items(n: usize) -> String {
    if n == 1 {
        "1 item".into()
    } else {
        format!("{n} items")
    }
}

/// What reached the relay: `2 deposited`, or `1 deposited, 1 share withdrawn` when some were
/// unshares or expiries (they carry no session, so they are not called deposits).
fn landed(report: &RelaySyncReport) -> String {
    let withdrawn = report.ended.len();
    let deposited = report.deposited.len().saturating_sub(withdrawn);
    if withdrawn == 0 {
        format!("{deposited} deposited")
    } else {
        format!(
            "{deposited} deposited, {} withdrawn",
            render::plural(withdrawn, "share")
        )
    }
}

/// How a relay remote is named in messages: `relay \`home\``, or `the relay` for the remote
/// named `relay` (never "relay relay").
fn relay_label(name: &str) -> String {
    if name == "relay" {
        "the relay".into()
    } else {
        format!("relay `{name}`")
    }
}

fn open_all() -> anyhow::Result<(Home, Arc<Store>, Arc<Identity>)> {
    let (home, store) = super::open_store()?;
    let identity = Arc::new(Identity::load(&home)?);
    Ok((home, store, identity))
}

fn changes(n: usize) -> String {
    if n == 1 {
        "1 change".into()
    } else {
        format!("{n} changes")
    }
}

fn queued(n: Option<usize>) -> String {
    match n {
        Some(n) => format!("{} queued", changes(n)),
        None => "your changes are queued".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// tapes storage sync

fn sync() -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    let config = load_config(&home)?;
    if config.provider == Provider::Local {
        bail!("the storage provider is local, which never talks to the network; `tapes storage set-provider hybrid` (after `tapes storage configure --relay <ticket>`) syncs through a relay (`tapes sync <remote>` syncs once with a peer)");
    }
    let (home, store, identity) = open_all()?;
    let attempt = runtime()?.block_on(attempt(&home, &store, &identity, &config, DIAL_TIMEOUT))?;
    let name = &attempt.relay.name;
    match attempt.outcome {
        Ok(report) => {
            // Everything else was synced; what failed is listed once above, stays pending and
            // is retried by the next sync. The exit status says that not everything landed.
            let failed = super::report::print_relay_sync(name, &report);
            let counts = attempt.counts.unwrap_or_default();
            println!(
                "{}: {} synced, {} pending push",
                relay_label(name),
                counts.synced,
                counts.pending_push
            );
            if failed {
                eprintln!(
                    "{} did not take {}; `tapes storage sync` tries again",
                    relay_label(name),
                    items(report.failures().len())
                );
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(f) if f.unreachable => bail!(
            "{} unreachable: {}; {} (nothing is lost); run `tapes storage sync` again when it is back, `tapes storage status` shows what is pending",
            relay_label(name),
            f.why,
            queued(attempt.counts.as_ref().map(|c| c.pending_push))
        ),
        Err(f) => bail!(
            "sync with {} failed: {}; {}",
            relay_label(name),
            f.why,
            queued(attempt.counts.as_ref().map(|c| c.pending_push))
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// tapes storage set-provider / configure

fn set_provider(provider: &str) -> anyhow::Result<ExitCode> {
    let provider: Provider = provider.parse().map_err(|e: String| anyhow!(e))?;
    let home = Home::locate()?;
    home.ensure()?;
    let path = StorageConfig::path(&home);
    let mut config = load_config(&home)?;
    if provider == Provider::Cloud && config.relay.is_none() {
        bail!("the cloud provider keeps your sessions at a relay, and none is configured; run `tapes storage configure --relay <ticket>` first (it switches to hybrid), then `tapes storage set-provider cloud`");
    }
    let before = config.provider;
    config.provider = provider;
    config.save(&path)?;
    if before == provider {
        println!("provider: {provider} (unchanged)");
    } else {
        println!("provider: {provider} (was {before})");
    }
    println!("{}", provider.describe());
    match (provider, &config.relay) {
        (Provider::Local, Some(relay)) => println!(
            "the relay `{relay}` stays configured; `tapes storage set-provider hybrid` uses it again"
        ),
        (Provider::Hybrid, None) => println!(
            "no relay is configured yet, so nothing syncs: run `tapes storage configure --relay <ticket>`"
        ),
        (Provider::Hybrid | Provider::Cloud, Some(relay)) => println!(
            "relay: {relay}, every {}{}; `tapes storage sync` syncs now",
            config.sync_interval,
            if provider == Provider::Cloud {
                " and after every change"
            } else if config.sync_on_close {
                " and when a command that changed something exits"
            } else {
                ""
            }
        ),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn configure(args: ConfigureArgs) -> anyhow::Result<ExitCode> {
    let nothing = args.relay.is_none()
        && args.teams.is_empty()
        && !args.all_teams
        && args.sync_interval.is_none()
        && !args.sync_on_close
        && !args.no_sync_on_close;
    if nothing {
        bail!("nothing to configure; pass --relay <ticket> (and optionally --team, --sync-interval, --sync-on-close or --no-sync-on-close)");
    }
    let home = Home::locate()?;
    // Check the configuration before touching anything else.
    let mut config = load_config(&home)?;
    let (home, store) = super::open_store()?;
    let path = StorageConfig::path(&home);
    // Everything is checked first; nothing is written until all of it is good.
    let mut save_remote = None;
    if let Some(relay) = &args.relay {
        if remote::relay(&store, relay)?.is_some() {
            config.relay = Some(relay.clone());
        } else {
            let ticket = relay.strip_prefix("relay:").unwrap_or(relay);
            let addr = PeerAddr::parse(ticket).with_context(|| {
                format!("`{relay}` is neither a relay remote nor a relay ticket (`<node-id>@<host:port>`, printed by `tapes relay`)")
            })?;
            if addr.addrs.is_empty() {
                bail!("the relay ticket `{relay}` has no address; use the whole ticket `tapes relay` prints (`<node-id>@<host:port>`)");
            }
            let name = args.name.as_deref().unwrap_or(DEFAULT_RELAY_REMOTE);
            if remote::exists(&store, name)? && remote::relay(&store, name)?.is_none() {
                bail!("remote `{name}` exists and is not a relay; pass --name <another name> to save the relay under");
            }
            config.relay = Some(name.to_string());
            save_remote = Some((name.to_string(), addr));
        }
    }
    if args.all_teams {
        config.teams.clear();
    } else if !args.teams.is_empty() {
        let mut ids = Vec::new();
        for team in &args.teams {
            let chain = tapes::team::resolve(&store, Some(team))?;
            let id = chain.team_id().to_hex();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        config.teams = ids;
    }
    if let Some(interval) = &args.sync_interval {
        config.sync_interval = interval.clone();
    }
    if args.sync_on_close {
        config.sync_on_close = true;
    }
    if args.no_sync_on_close {
        config.sync_on_close = false;
    }
    let switched = config.provider == Provider::Local && config.relay.is_some();
    if switched {
        config.provider = Provider::Hybrid;
    }
    if let Some((name, addr)) = &save_remote {
        remote::save_relay(&store, name, addr)?;
    }
    config.save(&path)?;
    if let Some(relay) = &config.relay {
        let addr = remote::relay(&store, relay)?;
        println!(
            "relay: {relay}{}",
            addr.map(|a| format!(" ({})", a.ticket()))
                .unwrap_or_default()
        );
    }
    if !config.teams.is_empty() {
        let names = team_names(&store, &config)?;
        println!("teams: {}", names.join(", "));
    }
    println!(
        "sync: every {}{}",
        config.sync_interval,
        if config.sync_on_close {
            ", and when a command that changed something exits"
        } else {
            ""
        }
    );
    if switched {
        println!(
            "provider: hybrid (was local): {}",
            Provider::Hybrid.describe()
        );
        println!("`tapes storage set-provider cloud` makes every change sync before the command returns; `tapes storage set-provider local` stops syncing");
    } else {
        println!("provider: {}", config.provider);
    }
    println!("`tapes storage sync` syncs now; `tapes storage status` shows what is pending");
    Ok(ExitCode::SUCCESS)
}

fn team_names(store: &Store, config: &StorageConfig) -> anyhow::Result<Vec<String>> {
    let ids = config.team_ids().map_err(|e| anyhow!(e))?;
    let mut out = Vec::new();
    for id in ids {
        let name = tapes::team::load(store, &id)
            .map(|c| c.head().manifest.name.clone())
            .unwrap_or_else(|_| "unknown team".into());
        out.push(format!("{name} ({})", id.short()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// tapes storage status

/// What the relay has that we lack, asked live: sessions (not shares or manifests) it would
/// send us. Our own sessions whose newer version we have not deposited yet are pending push,
/// not pull, and are left out.
async fn pending_pull(
    store: &Arc<Store>,
    identity: &Arc<Identity>,
    relay: &Relay,
) -> Result<(Vec<TeamId>, usize), Failure> {
    let (endpoint, conn) = connect_relay(identity, relay, STATUS_DIAL_TIMEOUT).await?;
    let started = std::time::Instant::now();
    let asked = tokio::time::timeout(STATUS_TIMEOUT, async {
        let teams = conn.hello().await?;
        let view = block_in_place(|| {
            tapes::share::access::view_for_teams(store, identity, &teams, tapes::now_ms())
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
    let sessions = |items: &[tapes::protocol::sync::ItemId]| -> BTreeSet<SessionId> {
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

fn ago(then_ms: i64, now_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    let (n, unit) = match s {
        0..=4 => return "just now".into(),
        5..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let home = Home::locate()?;
    let config = load_config(&home)?;
    let (home, store) = super::open_store()?;
    let sessions = store.sessions()?.len();
    let store_path = home.store_dir();
    let now = tapes::now_ms();
    let identity = Identity::load(&home).ok().map(Arc::new);

    // The relay, its counts, and pending pull (live unless local or --offline).
    let mut remote_json = serde_json::Value::Null;
    let mut remote_line = match config.provider {
        Provider::Local => "none (the local provider never talks to the network; `tapes storage configure --relay <ticket>` syncs through a relay)".to_string(),
        _ => "none configured; run `tapes storage configure --relay <ticket>`".to_string(),
    };
    let mut state_line = None;
    let mut state_json = serde_json::Value::Null;
    if config.relay.is_some() {
        let relay = configured_relay(&store, &config)?;
        let node = relay.addr.id.to_hex();
        let state = SyncState::load(&SyncState::path(&home)).for_relay(&node);
        let live = match (&identity, config.provider, args.offline) {
            (None, _, _) => Err("no identity yet; run `tapes init`".to_string()),
            (_, Provider::Local, _) => Err("the local provider does not ask the relay".into()),
            (_, _, true) => Err("--offline".into()),
            (Some(identity), _, false) => runtime()?
                .block_on(pending_pull(&store, identity, &relay))
                .map_err(|f| {
                    if f.unreachable {
                        format!("relay unreachable: {}", f.why)
                    } else {
                        format!("relay refused: {}", f.why)
                    }
                }),
        };
        let counts = match &identity {
            None => None,
            Some(identity) => {
                let teams = match &live {
                    Ok((teams, _)) => {
                        let mut teams = teams.clone();
                        narrow(&mut teams, &config)?;
                        teams
                    }
                    Err(_) => relay_teams(&store, identity, &config, &relay.addr.id, &state)?,
                };
                Some(counts(&store, identity, &relay.addr.id, &teams)?)
            }
        };
        let pull_text = match &live {
            Ok((_, n)) => format!("{n} pending pull"),
            Err(why) => format!("pending pull unknown ({why})"),
        };
        let used = if config.provider == Provider::Local {
            " [not used by the local provider]"
        } else {
            ""
        };
        remote_line = match &counts {
            Some(c) => format!(
                "{} {}{used} ({} synced, {} pending push, {pull_text})",
                relay.name,
                relay.addr.ticket(),
                c.synced,
                c.pending_push
            ),
            None => format!(
                "{} {}{used} (counts need an identity: run `tapes init`)",
                relay.name,
                relay.addr.ticket()
            ),
        };
        remote_json = serde_json::json!({
            "name": relay.name,
            "ticket": relay.addr.ticket(),
            "node": node,
            "synced": counts.as_ref().map(|c| c.synced),
            "pending_push": counts.as_ref().map(|c| c.pending_push),
            "pending_pull": live.as_ref().ok().map(|(_, n)| *n),
            "pending_pull_unknown": live.as_ref().err(),
            "teams": if config.teams.is_empty() { serde_json::Value::Null } else { serde_json::json!(config.teams) },
        });
        let mut line = match state.last_sync_ms {
            Some(at) => ago(at, now),
            None => "never".to_string(),
        };
        if let Some(error) = &state.last_error {
            match (state.last_attempt_ms, state.last_sync_ms) {
                (Some(a), Some(s)) if a == s => line.push_str(&format!(" (with errors: {error})")),
                (Some(a), _) => {
                    line.push_str(&format!(" (last attempt {} failed: {error})", ago(a, now)))
                }
                _ => {}
            }
        }
        state_line = Some(line);
        state_json = serde_json::json!({
            "last_sync_ms": state.last_sync_ms,
            "last_attempt_ms": state.last_attempt_ms,
            "last_error": state.last_error,
        });
    }
    let schedule = match config.provider {
        Provider::Local => None,
        Provider::Cloud => Some(format!(
            "after every change (write-through), and every {}",
            config.sync_interval
        )),
        Provider::Hybrid => Some(format!(
            "every {}{}",
            config.sync_interval,
            if config.sync_on_close {
                ", and when a command that changed something exits"
            } else {
                ""
            }
        )),
    };
    if args.json {
        let value = serde_json::json!({
            "provider": config.provider.as_str(),
            "config": StorageConfig::path(&home).display().to_string(),
            "local": { "path": store_path.display().to_string(), "sessions": sessions },
            "remote": remote_json,
            "sync": state_json,
            "sync_interval": config.sync_interval,
            "sync_on_close": config.sync_on_close,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("Provider: {}", config.provider);
    println!(
        "Local: {} ({sessions} session{})",
        store_path.display(),
        if sessions == 1 { "" } else { "s" }
    );
    println!("Remote: {remote_line}");
    if let Some(line) = state_line {
        println!("Last sync: {line}");
    }
    if let Some(schedule) = schedule {
        println!("Sync: {schedule}");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// After every command, and `tapes serve`

/// Runs after every command that does not talk to the relay itself (main decides): a hybrid
/// provider syncs when the command wrote (and
/// `sync_on_close`) or the interval is due, warning if the relay is unreachable; a cloud
/// provider syncs after every write and fails the command if the relay did not take it.
/// The local provider does nothing.
pub fn after_command(result: anyhow::Result<ExitCode>, wrote: bool) -> anyhow::Result<ExitCode> {
    if result.is_err() {
        return result;
    }
    let Ok(home) = Home::locate() else {
        return result;
    };
    let config = match StorageConfig::load(&StorageConfig::path(&home)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("warning: {e}");
            return result;
        }
    };
    if !config.provider.syncs() {
        return result;
    }
    let state = SyncState::load(&SyncState::path(&home));
    if !should_sync(&config, &state, wrote, tapes::now_ms()) {
        return result;
    }
    let strict = failure_is_error(&config, wrote);
    let dial_timeout = if strict {
        DIAL_TIMEOUT
    } else {
        BACKGROUND_DIAL_TIMEOUT
    };
    let attempted = (|| {
        let (home, store, identity) = open_all()?;
        runtime()?.block_on(attempt(&home, &store, &identity, &config, dial_timeout))
    })();
    // (what went wrong, how many changes wait, whether the relay could not be reached)
    let (what, pending, unreachable) = match attempted {
        // A setup problem (no relay remote, no identity): its message says what to do, and a
        // retry would fail the same way, so it is said once per interval, with no "retries".
        Err(e) => {
            let mut state = SyncState::load(&SyncState::path(&home));
            state.last_attempt_ms = Some(tapes::now_ms());
            state.last_error = Some(format!("{e:#}"));
            if let Err(save) = state.save(&SyncState::path(&home)) {
                tracing::warn!("{save}");
            }
            if strict {
                return Err(e.context("the cloud provider could not store this change"));
            }
            eprintln!("warning: the sync did not start: {e:#}");
            return result;
        }
        Ok(attempt) => {
            let name = &attempt.relay.name;
            let pending = attempt.counts.as_ref().map(|c| c.pending_push);
            match attempt.outcome {
                Ok(report) if !report.has_failures() => {
                    let fetched = report.fetched.new_sessions + report.fetched.updated_sessions;
                    if !report.deposited.is_empty() || fetched > 0 {
                        eprintln!(
                            "synced with {}: {}, {} fetched",
                            relay_label(name),
                            landed(&report),
                            render::plural(fetched, "session")
                        );
                    }
                    return result;
                }
                Ok(report) => {
                    // The rest of the sync went through; each refused item is named once.
                    let what = format!(
                        "{} did not take {} ({})",
                        relay_label(name),
                        items(report.failures().len()),
                        failures(&report)
                    );
                    (what, pending, false)
                }
                Err(f) if f.unreachable => (
                    format!("{} unreachable: {}", relay_label(name), f.why),
                    pending,
                    true,
                ),
                Err(f) => (
                    format!("sync with {} failed: {}", relay_label(name), f.why),
                    pending,
                    false,
                ),
            }
        }
    };
    if strict {
        return Err(anyhow!(
            "the cloud provider could not store this change: {what}; it is kept locally and queued ({}): `tapes storage sync` retries, or `tapes storage set-provider hybrid` keeps working locally and syncs in the background",
            queued(pending)
        ));
    }
    if unreachable {
        eprintln!(
            "warning: relay unreachable; {}; `tapes storage sync` retries ({what})",
            queued(pending)
        );
    } else {
        eprintln!(
            "warning: {what}; {}; `tapes storage sync` retries",
            queued(pending)
        );
    }
    result
}

/// `tapes serve` with a hybrid or cloud provider: syncs with the relay every sync interval
/// (the first time at once), logging each outcome. `None` when there is nothing to sync.
/// Must be called inside the tokio runtime.
pub fn background_sync(home: &Home) -> Option<tokio::task::JoinHandle<()>> {
    let config = match load_config(home) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("warning: {e:#}; no background sync");
            return None;
        }
    };
    if !config.provider.syncs() || config.relay.is_none() {
        return None;
    }
    println!(
        "storage: {} provider; syncing with {} every {}",
        config.provider,
        relay_label(config.relay.as_deref().unwrap_or_default()),
        config.sync_interval
    );
    let home = home.clone();
    Some(tokio::spawn(async move {
        let log = |line: String| println!("{}  {line}", tapes::sync::tracking::now_rfc3339());
        let mut every = config.interval_ms();
        let mut tick = tokio::time::interval(Duration::from_millis(every as u64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The configuration may have changed since serve started.
            let config = match load_config(&home) {
                Ok(config) => config,
                Err(e) => {
                    log(format!("storage sync skipped: {e:#}"));
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
                let store =
                    Arc::new(Store::open(&home.store_dir()).with_context(|| {
                        format!("opening the store in {}", home.root().display())
                    })?);
                let identity = Arc::new(Identity::load(&home)?);
                Ok::<_, anyhow::Error>((store, identity))
            });
            let (store, identity) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    log(format!("storage sync skipped: {e:#}"));
                    continue;
                }
            };
            match attempt(&home, &store, &identity, &config, DIAL_TIMEOUT).await {
                Err(e) => log(format!("storage sync failed: {e:#}")),
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
                                render::plural(fetched, "session"),
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
