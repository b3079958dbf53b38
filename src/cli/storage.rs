//! `tapes storage set-provider|configure|status|sync`, the sync after every command, and the
//! background sync of `tapes serve`: parses, calls [`tapes::provider_sync`] and
//! [`tapes::sync::provider`], prints (SPEC.md §16.11).
//!
//! * local: nothing here ever dials; `tapes storage sync` refuses.
//! * cloud: write-through; after a command that wrote, the relay must take the change or the
//!   command fails (the change stays queued locally).
//! * hybrid: after a command that wrote (with `sync_on_close`) or when the interval is due, a
//!   sync runs; if the relay cannot be reached that is a warning, never a failed command.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use tapes::home::Home;
use tapes::identity::Identity;
use tapes::peer::addr::PeerAddr;
use tapes::peer::relay_client::counts;
use tapes::store::Store;
use tapes::sync::provider::{
    failure_is_error, parse_interval, should_sync, Provider, StorageConfig, SyncState,
    DEFAULT_RELAY_REMOTE,
};

use super::remote;
use super::runtime;
use tapes::provider_sync::{
    self, attempt, configured_relay, failures, landed, load_config, narrow, pending_pull, queued,
    relay_label, relay_teams, BACKGROUND_DIAL_TIMEOUT, DIAL_TIMEOUT,
};
use tapes::views::render;

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

/// How many items failed, in words.
fn items(n: usize) -> String {
    if n == 1 {
        "1 item".into()
    } else {
        format!("{n} items")
    }
}

fn open_all() -> anyhow::Result<(Home, Arc<Store>, Arc<Identity>)> {
    let (home, store) = super::open_store()?;
    let identity = Arc::new(Identity::load(&home)?);
    Ok((home, store, identity))
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
    let mut retention: Vec<String> = Vec::new();
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
        if let (Some(identity), Ok(_)) = (&identity, &live) {
            // SPEC §16.14: what the relay keeps, and what it let expire.
            retention =
                runtime()?.block_on(tapes::provider_sync::relay_retention(identity, &relay));
        }
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
            "retention": retention,
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
    for line in &retention {
        println!("Relay {line}");
    }
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

/// `tapes serve` with a hybrid or cloud provider: syncs with the relay every sync interval
/// (the first time at once), printing each outcome with a timestamp. `None` when there is
/// nothing to sync. Must be called inside the tokio runtime.
pub fn background_sync(home: &Home) -> Option<tokio::task::JoinHandle<()>> {
    provider_sync::background_sync(home, |line| {
        println!("{}  {line}", tapes::sync::tracking::now_rfc3339())
    })
}

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
        Ok::<_, anyhow::Error>(runtime()?.block_on(attempt(
            &home,
            &store,
            &identity,
            &config,
            dial_timeout,
        ))?)
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
