//! Starting a relay from its data directory: its identity (created on first start), store and
//! configuration, the iroh endpoint with the relay's protocol handler, and the public page.
//! `tapes relay`, the tests, the example and the benchmark all start relays through here.
//!
//! ```text
//! <data>/identity/     the relay's node key (0600): its node id is how members dial it
//! <data>/store/        everything it keeps (SPEC.md §16.2), behind the Storage trait
//! <data>/relay.toml    quotas (optional; the free tier by default)
//! <data>/relay-ticket  the ticket of the last start
//! ```
//!
//! With a bucket ([`StateStore::Bucket`], `tapes relay --store s3://…`, SPEC.md §16.13) the
//! records, the blobs and `relay.toml` live in the bucket; `<data>` keeps the identity, the
//! ticket and `cache/blobs/`, a bounded cache.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iroh::protocol::Router;
use tapes_protocol::sync::ALPN;

use super::backend::{BucketBackend, BucketOptions};
use super::{RelayConfig, RelayError, RelayServer, RelayState};
use crate::home::Home;
use crate::identity::{Identity, Profile};
use crate::peer::addr::PeerAddr;
use crate::peer::endpoint::{bind, EndpointConfig};
use crate::peer::server::EventLog;
use crate::peer::PeerError;
use crate::store::Store;

/// Why a relay did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("the relay's identity in {path}: {why}")]
    Identity { path: PathBuf, why: String },
    #[error("cannot listen for the public page on {addr}: {why}; pick another --http address")]
    Http { addr: SocketAddr, why: String },
}

/// Where a relay listens.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub bind: SocketAddr,
    /// The public page's address, if served.
    pub http: Option<SocketAddr>,
    /// How the relay's own endpoint reaches members (with its own iroh relay: that one).
    pub network: crate::peer::network::NetworkMode,
    /// The public page's base URL as readers reach it (default `http://<http address>`); it
    /// goes in the ticket, so members can say where a public share is read.
    pub public_url: Option<String>,
}

/// Where a relay keeps its state.
#[derive(Debug, Clone, Default)]
pub enum StateStore {
    /// Its own store in the data directory (the default).
    #[default]
    Local,
    /// An S3-compatible bucket, shared with other relay processes.
    Bucket(BucketOptions),
}

/// A running relay; dropping it does not stop it, [`RunningRelay::shutdown`] does.
pub struct RunningRelay {
    pub router: Router,
    pub state: Arc<RelayState>,
    pub ticket: PeerAddr,
    pub http: Option<SocketAddr>,
    http_task: Option<tokio::task::JoinHandle<()>>,
}

/// The relay's identity in `data`, created on first start.
pub fn relay_identity(data: &Path) -> Result<Identity, StartError> {
    let home = Home::at(data);
    let fail = |why: String| StartError::Identity {
        path: data.to_path_buf(),
        why,
    };
    home.ensure().map_err(|e| fail(e.to_string()))?;
    if Identity::exists(&home) {
        return Identity::load(&home).map_err(|e| fail(e.to_string()));
    }
    let identity = Identity::generate(Profile {
        name: "relay".into(),
        email: None,
    })
    .map_err(|e| fail(e.to_string()))?;
    identity.save(&home).map_err(|e| fail(e.to_string()))?;
    Ok(identity)
}

/// Starts a relay on the current tokio runtime, over its own store in `data`.
pub async fn start(
    data: &Path,
    options: &RelayOptions,
    log: EventLog,
) -> Result<RunningRelay, StartError> {
    start_on(data, &StateStore::Local, options, log).await
}

/// Starts a relay on the current (multi-threaded) tokio runtime, its state in `state`.
pub async fn start_on(
    data: &Path,
    state: &StateStore,
    options: &RelayOptions,
    log: EventLog,
) -> Result<RunningRelay, StartError> {
    let identity = relay_identity(data)?;
    let state = Arc::new(tokio::task::block_in_place(|| open_state(data, state))?);
    state.set_audit_key(identity.signing_key().clone()); // SPEC §18.2: the relay's entries
    let endpoint = bind(
        &identity,
        &EndpointConfig {
            bind: options.bind,
            mdns: false,
            network: options.network.clone(),
        },
    )
    .await?;
    super::retention::spawn(&state, log.clone()); // SPEC §16.14
    let router = Router::builder(endpoint.clone())
        .accept(ALPN, RelayServer::new(state.clone(), log))
        .spawn();
    crate::peer::endpoint::wait_for_relay(
        &endpoint,
        &options.network,
        std::time::Duration::from_secs(5),
    )
    .await;
    let mut ticket = PeerAddr::of_endpoint(&endpoint);
    for _ in 0..20 {
        if ticket.addrs.iter().all(|a| !a.ip().is_unspecified()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        ticket = PeerAddr::of_endpoint(&endpoint);
    }
    let (http, http_task) = match options.http {
        None => (None, None),
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Http {
                        addr,
                        why: e.to_string(),
                    })?;
            let local = listener.local_addr().map_err(|e| StartError::Http {
                addr,
                why: e.to_string(),
            })?;
            let state = state.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = super::http::serve(listener, state).await {
                    tracing::warn!("the public page stopped: {e}");
                }
            });
            (Some(local), Some(task))
        }
    };
    // Members learn from the ticket where public shares are read.
    if let Some(local) = http {
        ticket.page = Some(
            options
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{local}"))
                .trim_end_matches('/')
                .to_string(),
        );
    }
    let _ = std::fs::write(data.join("relay-ticket"), ticket.ticket());
    Ok(RunningRelay {
        router,
        state,
        ticket,
        http,
        http_task,
    })
}

/// The relay's state: its own store, or a bucket (checked before anything is written there,
/// SPEC.md §16.13), with the quotas of its `relay.toml`.
fn open_state(data: &Path, state: &StateStore) -> Result<RelayState, RelayError> {
    match state {
        StateStore::Local => {
            let config = RelayConfig::load(&data.join("relay.toml"))?;
            let store = Arc::new(Store::open(&Home::at(data).store_dir())?);
            RelayState::open(store, config)
                .map_err(|e| config_at(e, data.join("relay.toml").display().to_string()))
        }
        StateStore::Bucket(options) => {
            let backend = BucketBackend::open(options, data)?;
            let config = match backend.settings()? {
                Some(text) => RelayConfig::parse(&text).map_err(|why| RelayError::Config {
                    path: backend.settings_url(),
                    why,
                })?,
                None => RelayConfig::default(),
            };
            if data.join("relay.toml").exists() {
                tracing::warn!(
                    "{} is not read: relays over a bucket take their quotas from {}",
                    data.join("relay.toml").display(),
                    backend.settings_url()
                );
            }
            tracing::info!("relay state in {}", backend.settings_url());
            let url = backend.settings_url();
            RelayState::with_backend(Arc::new(backend), config).map_err(|e| config_at(e, url))
        }
    }
}

/// A configuration error found while opening the state (a table naming an unknown team, §16.14)
/// names the file it came from.
fn config_at(e: RelayError, path: String) -> RelayError {
    match e {
        RelayError::Config { why, .. } => RelayError::Config { path, why },
        e => e,
    }
}

impl RunningRelay {
    pub async fn shutdown(self) {
        if let Some(task) = self.http_task {
            task.abort();
        }
        let _ = self.router.shutdown().await;
    }
}
