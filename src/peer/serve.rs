//! `tapes serve` assembled (SPEC.md §15.1, §15.7): bind the endpoint, mount the `tapes/sync/3`
//! [`Server`] on it, wait for the home relay so the ticket carries it, and record the ticket in
//! the home (`serve-ticket`) for `tapes id` and invite codes. The CLI prints and waits for
//! Ctrl-C; tests and examples start the same thing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iroh::protocol::Router;
use tapes_protocol::sync::ALPN;

use super::addr::PeerAddr;
use super::endpoint::{bind, wait_for_relay, EndpointConfig};
use super::server::{EventLog, Server, StoreHandle};
use super::PeerError;
use crate::home::Home;
use crate::identity::Identity;

/// How long `serve` waits for its home relay before printing a ticket without it (a ticket
/// with the relay reaches this node across NATs; one without it still works on the LAN).
const RELAY_WAIT: Duration = Duration::from_secs(5);

/// The file in the tapes home where `tapes serve` records its ticket, so that `tapes id` can
/// print it and `tapes team invite` can put it in invite codes.
pub fn ticket_file(home: &Home) -> PathBuf {
    home.root().join("serve-ticket")
}

/// The ticket of this node's last `tapes serve`, if any.
pub fn last_ticket(home: &Home) -> Option<String> {
    std::fs::read_to_string(ticket_file(home))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port).
    pub bind: SocketAddr,
    /// Announce this node on the LAN and look for teammates there.
    pub mdns: bool,
}

/// A running `tapes serve`: answers teammates until [`Serving::shutdown`].
pub struct Serving {
    pub router: Router,
    /// What teammates add with `tapes remote add` (also written to [`ticket_file`]).
    pub ticket: PeerAddr,
}

impl Serving {
    pub async fn shutdown(self) {
        self.router.shutdown().await.ok();
    }
}

/// Starts serving this home's store: the store is opened only while a connection is active,
/// so other `tapes` commands keep working beside it. `log` gets one line per thing a peer did.
pub async fn start(
    home: &Home,
    identity: Arc<Identity>,
    options: &ServeOptions,
    log: EventLog,
) -> Result<Serving, PeerError> {
    let config = EndpointConfig {
        bind: options.bind,
        mdns: options.mdns,
        network: super::network::process_mode(),
    };
    let endpoint = bind(&identity, &config).await?;
    let server = Server::new(StoreHandle::on_demand(home.store_dir()), identity, log);
    let router = Router::builder(endpoint.clone())
        .accept(ALPN, server)
        .spawn();
    // The home relay goes in the ticket (and the invite) once connected.
    wait_for_relay(&endpoint, &config.network, RELAY_WAIT).await;
    // Listening on every interface: give iroh a moment to list their addresses.
    let mut ticket = PeerAddr::of_endpoint(&endpoint);
    for _ in 0..20 {
        if ticket.addrs.iter().all(|a| !a.ip().is_unspecified()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        ticket = PeerAddr::of_endpoint(&endpoint);
    }
    let path = ticket_file(home);
    std::fs::write(&path, ticket.ticket()).map_err(|e| {
        PeerError::Local(format!(
            "cannot write the ticket to {}: {e}; check that the tapes home is writable",
            path.display()
        ))
    })?;
    Ok(Serving { router, ticket })
}
