//! One module per group of subcommands; each turns arguments into library calls and prints.

pub mod audit;
pub mod bundle;
pub mod deck;
pub mod export;
pub mod fsck;
pub mod import;
pub mod init;
pub mod lineage;
pub mod peer;
pub mod peers;
pub mod relay;
pub mod remote;
pub mod report;
pub mod resume;
pub mod rm;
pub mod search;
pub mod sessions;
pub mod share;
pub mod storage;
pub mod team;
pub mod transfer;
pub mod web;

use anyhow::Context;
use tapes::home::Home;
use tapes::store::Store;

/// The secret gate's choices (SPEC.md §11.2), the same on every command that sends sessions
/// or their text off the machine: share, push, branch, fork, bundle create, export.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct GateArgs {
    /// Only list what the secret scan finds (per session: kind, message, block, a masked
    /// preview) and what --redact would replace; send or write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// When the secret scan finds something, send a redacted copy instead: every finding
    /// replaced by [REDACTED:<kind>] (the original stays untouched here).
    #[arg(long, conflicts_with = "allow_secrets")]
    pub redact: bool,
    /// Send as is even though the secret scan found something.
    #[arg(long)]
    pub allow_secrets: bool,
}

impl GateArgs {
    pub fn policy(&self) -> tapes::share::gate::SecretPolicy {
        tapes::share::gate::SecretPolicy::from_flags(self.redact, self.allow_secrets)
    }
}

/// Opens the store in `$TAPES_HOME` (creating the home and store on first use).
pub fn open_store() -> anyhow::Result<(Home, std::sync::Arc<Store>)> {
    let home = Home::locate()?;
    home.ensure()?;
    let store = open_migrating(&home)?;
    // An identity whose key files were copied here (rather than `tapes init --from`) has not
    // told the store whose it is yet: its own sessions would read as someone else's.
    if store.local_owner()?.is_none() && tapes::identity::Identity::exists(&home) {
        let me = tapes::identity::Identity::load(&home)?;
        store.set_local_owner(&tapes::protocol::MemberId(me.verifying_key().to_bytes()))?;
    }
    Ok((home, std::sync::Arc::new(store)))
}

/// Opens the store of `home`; a store from an older tapes is migrated first, with a progress
/// bar on a terminal (SPEC.md §4.3).
pub fn open_migrating(home: &Home) -> anyhow::Result<Store> {
    let mut bar: Option<indicatif::ProgressBar> = None;
    let store = Store::open_with_progress(&home.store_dir(), &mut |p| {
        let bar = bar.get_or_insert_with(|| {
            eprintln!(
                "migrating the store in {} from format {} to {} ({} session records)",
                home.root().display(),
                p.from,
                tapes::store::STORE_FORMAT,
                p.total
            );
            let bar = indicatif::ProgressBar::new(p.total as u64);
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar
        });
        bar.set_position(p.done as u64);
    })
    .with_context(|| format!("opening the store in {}", home.root().display()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(store)
}

/// The project directory holding `.tapes/tracking.json`: `--into DIR`, or the current directory.
pub fn project_dir(into: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    match into {
        Some(dir) if dir.is_dir() => Ok(dir.to_path_buf()),
        Some(dir) => anyhow::bail!(
            "--into {}: no such directory; create it or pick another project directory",
            dir.display()
        ),
        None => {
            std::env::current_dir().context("cannot read the current directory; pass --into DIR")
        }
    }
}

/// A progress bar on a TTY; hidden otherwise so pipes and tests see clean output.
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{pos}}/{{len}} {{msg}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the network runtime")
}
