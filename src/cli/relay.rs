//! `tapes relay --data DIR [--bind ADDR] [--http ADDR]` runs a relay until Ctrl-C;
//! `tapes relay --data DIR --store s3://bucket/prefix [--endpoint URL] [--region R]` runs one
//! of several relays over one bucket (SPEC.md §16.13);
//! `tapes relay register --team T <relay>` signs a team onto one (admins only).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use tapes::identity::Identity;
use tapes::peer::addr::PeerAddr;
use tapes::relay::backend::BucketOptions;
use tapes::relay::run::{start_on, RelayOptions, StateStore};

use super::peer::with_peer;
use super::remote;
use super::runtime;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    /// The relay's data directory (its key, store and relay.toml; with --store, its key and
    /// a cache).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Keep the relay's state in an S3-compatible bucket, s3://BUCKET/PREFIX, shared by every
    /// relay started on it (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN; quotas: relay.toml in the bucket).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The S3 endpoint for a server other than AWS (e.g. http://127.0.0.1:9000).
    #[arg(long, value_name = "URL", requires = "store")]
    endpoint: Option<String>,
    /// The bucket's region (default: AWS_DEFAULT_REGION / AWS_REGION, else us-east-1).
    #[arg(long, value_name = "REGION", requires = "store")]
    region: Option<String>,
    /// The most MiB of blobs the relay caches in --data when its state is in a bucket.
    #[arg(long, value_name = "MIB", default_value_t = 512, requires = "store")]
    cache_mib: u64,
    /// Where to listen for members (iroh, UDP).
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Serve public shares as web pages at http://ADDR/s/<session>.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// The public page's URL as readers reach it (e.g. https://tapes.example.com behind a
    /// proxy; default http://<--http address>). Members print it when they share publicly.
    #[arg(long, value_name = "URL", requires = "http")]
    public_url: Option<String>,
    /// Also run an iroh relay here (HTTPS with a pinned self-signed certificate, and QUIC
    /// address discovery, on ADDR): teammates behind NATs reach each other through it, with
    /// no third party. Put the URL it prints in `tapes config set network.relays`.
    #[arg(long, value_name = "ADDR")]
    iroh_relay: Option<SocketAddr>,
    /// The host name or address members reach the iroh relay at (default: --iroh-relay's IP).
    #[arg(long, value_name = "HOST", requires = "iroh_relay")]
    iroh_relay_host: Option<String>,
    /// Serve the iroh relay over plain HTTP (behind a TLS proxy, or on a closed network).
    #[arg(long, requires = "iroh_relay")]
    iroh_relay_plain: bool,
}

#[derive(clap::Subcommand)]
enum RelayCommand {
    /// Register a team on a relay (you must be an admin or the owner of the team).
    Register {
        /// The team (name or id prefix); the only team when omitted.
        #[arg(long)]
        team: Option<String>,
        /// The relay: its ticket (printed by `tapes relay`), or a configured relay remote.
        relay: String,
    },
}

pub fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(RelayCommand::Register { team, relay }) => register(team.as_deref(), &relay),
        None => {
            let Some(data) = args.data else {
                bail!("`tapes relay` needs --data DIR, where the relay keeps its key and store (or `tapes relay register …` to sign a team onto a relay)");
            };
            let iroh = args.iroh_relay.map(|addr| IrohRelayArgs {
                host: args
                    .iroh_relay_host
                    .clone()
                    .unwrap_or_else(|| addr.ip().to_string()),
                addr,
                plain: args.iroh_relay_plain,
            });
            let state = match args.store {
                None => StateStore::Local,
                Some(url) => {
                    let mut options = BucketOptions::new(&url);
                    options.endpoint = args.endpoint;
                    options.region = args.region;
                    options.cache_bytes = args.cache_mib.saturating_mul(1 << 20);
                    StateStore::Bucket(options)
                }
            };
            serve(data, &state, args.bind, args.http, args.public_url, iroh)
        }
    }
}

struct IrohRelayArgs {
    addr: SocketAddr,
    host: String,
    plain: bool,
}

fn serve(
    data: PathBuf,
    state: &StateStore,
    bind: SocketAddr,
    http: Option<SocketAddr>,
    public_url: Option<String>,
    iroh: Option<IrohRelayArgs>,
) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    runtime.block_on(async {
        std::fs::create_dir_all(&data)
            .with_context(|| format!("creating the relay's data directory {}", data.display()))?;
        let iroh_relay = match &iroh {
            Some(args) => Some(
                tapes::relay::iroh_relay::IrohRelay::start(&data, args.addr, &args.host, args.plain)
                    .await?,
            ),
            None => None,
        };
        // With its own iroh relay, the relay's endpoint uses that one as its home relay.
        let network = match &iroh_relay {
            Some(r) => tapes::peer::network::NetworkMode::Custom(vec![r.spec.clone()]),
            None => tapes::peer::network::process_mode(),
        };
        if let Some(r) = &iroh_relay {
            println!("iroh relay: {}", r.spec.text());
            println!(
                "members use it with `tapes config set network.relays {}`",
                r.spec.text()
            );
        }
        let options = RelayOptions {
            bind,
            http,
            network,
            public_url,
        };
        let log: tapes::peer::server::EventLog =
            Arc::new(|line| println!("{}  {line}", tapes::sync::tracking::now_rfc3339()));
        let relay = start_on(&data, state, &options, log)
            .await
            .with_context(|| format!("starting the relay in {}", data.display()))?;
        println!("state: {}", relay.state.backend().describe());
        println!("relay node {}", relay.ticket.id.to_hex());
        println!("ticket: {}", relay.ticket.ticket());
        println!(
            "admins register a team with `tapes relay register --team <team> {}`; members then run `tapes storage configure --relay {}`",
            relay.ticket.ticket(),
            relay.ticket.ticket()
        );
        if let Some(page) = &relay.ticket.page {
            println!("public page: {page}/s/<session>");
        }
        let teams = relay.state.teams();
        println!("{} registered", tapes::views::render::plural(teams.len(), "team"));
        println!("Ctrl-C stops");
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        relay.shutdown().await;
        if let Some(r) = iroh_relay {
            r.shutdown().await;
        }
        println!("stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A relay named by ticket or by a configured relay remote.
pub fn relay_addr(store: &tapes::store::Store, relay: &str) -> anyhow::Result<PeerAddr> {
    if let Some(addr) = remote::relay(store, relay)? {
        return Ok(addr);
    }
    let ticket = relay.strip_prefix("relay:").unwrap_or(relay);
    PeerAddr::parse(ticket).with_context(|| {
        format!("`{relay}` is neither a relay remote nor a relay ticket (`<node-id>@<host:port>`, printed by `tapes relay`)")
    })
}

fn register(team: Option<&str>, relay: &str) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    let identity = Arc::new(Identity::load(&home)?);
    let chain = tapes::team::resolve(&store, team)?;
    let addr = relay_addr(&store, relay)?;
    let team_id = chain.team_id();
    runtime()?.block_on(with_peer(
        &identity,
        "the relay",
        &addr,
        true,
        async |conn| conn.register(&store, &team_id).await,
    ))?;
    println!(
        "registered team {} ({}) on relay {}",
        chain.head().manifest.name,
        team_id.short(),
        addr.id.short()
    );
    println!(
        "members sync through it after `tapes storage configure --relay {}`",
        addr.ticket()
    );
    Ok(ExitCode::SUCCESS)
}
