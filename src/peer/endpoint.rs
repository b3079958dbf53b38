//! The iroh endpoint of this node: its identity key is the endpoint's key, so a node id in
//! tapes (the ed25519 public key) is the iroh endpoint id, and the QUIC handshake proves it.
//!
//! How far an endpoint reaches is the network mode (`super::network`, SPEC.md §15.7): iroh's
//! public relays and address lookup by node id (the default for users), the user's own relays
//! only, or the LAN only (relays off, lookup only by mDNS, the port mapper off: what tests,
//! examples and benches use, so they never leave the machine).

use std::net::SocketAddr;

use iroh::endpoint::{presets, PortmapperConfig};
use iroh::{RelayMap, RelayMode};

use super::network::NetworkMode;
use iroh::{Endpoint, SecretKey};
use tapes_protocol::sync::ALPN;
use tapes_protocol::MemberId;

use super::PeerError;
use crate::identity::Identity;

/// How to bind.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Find and be found by teammates on the LAN with mDNS.
    pub mdns: bool,
    /// Relays and address lookup.
    pub network: NetworkMode,
}

impl EndpointConfig {
    /// For dialling one peer: loopback when the peer is on loopback (and no relay is named),
    /// else any interface in this process's network mode.
    pub fn loopback_or_any(peer: &super::addr::PeerAddr) -> EndpointConfig {
        let local = !peer.addrs.is_empty()
            && peer.addrs.iter().all(|a| a.ip().is_loopback())
            && peer.relay.is_none();
        if local {
            EndpointConfig::loopback()
        } else {
            EndpointConfig::any(0)
        }
    }

    /// Every interface at `port`, in this process's network mode, with mDNS (a ticket's
    /// addresses may be stale: DHCP, another network).
    pub fn any(port: u16) -> EndpointConfig {
        EndpointConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], port)),
            mdns: true,
            network: super::network::process_mode(),
        }
    }

    /// Loopback only, no mDNS, no relay: tests, examples and benchmarks.
    pub fn loopback() -> EndpointConfig {
        EndpointConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            mdns: false,
            network: NetworkMode::Local,
        }
    }
}

/// One configured relay for iroh: QUIC address discovery on the URL's own port (where `tapes
/// relay --iroh-relay` serves it, beside HTTPS), none for a plain-HTTP relay (which serves no
/// QUIC). Without it iroh would probe its default port 7842 and, finding nothing, neither learn
/// its public address (no hole punching) nor stop waiting for a second.
fn relay_config(relay: &super::network::RelaySpec) -> iroh::RelayConfig {
    let quic = match relay.url.scheme() {
        "https" => relay
            .url
            .port_or_known_default()
            .map(iroh_relay::RelayQuicConfig::new),
        _ => None,
    };
    iroh::RelayConfig::new(relay.url.clone(), quic)
}

/// The iroh secret key of an identity (the same ed25519 key).
pub fn secret_key(identity: &Identity) -> SecretKey {
    SecretKey::from_bytes(&identity.signing_key().to_bytes())
}

/// The member id of an iroh endpoint id.
pub fn member_of(id: &iroh::EndpointId) -> MemberId {
    MemberId(*id.as_bytes())
}

/// The mDNS service tapes nodes announce and look for (not iroh's default, so other iroh
/// applications on the LAN are not mistaken for teammates).
pub const MDNS_SERVICE: &str = "tapes-sync";

/// An mDNS address lookup for tapes nodes.
pub fn mdns() -> iroh_mdns_address_lookup::MdnsAddressLookupBuilder {
    iroh_mdns_address_lookup::MdnsAddressLookup::builder().service_name(MDNS_SERVICE)
}

/// Binds an endpoint for `identity` that speaks `tapes/sync/3`.
pub async fn bind(identity: &Identity, config: &EndpointConfig) -> Result<Endpoint, PeerError> {
    let builder = match &config.network {
        NetworkMode::Local => {
            Endpoint::builder(presets::Minimal).portmapper_config(PortmapperConfig::Disabled)
        }
        NetworkMode::Public => Endpoint::builder(presets::N0),
        NetworkMode::Custom(relays) => Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Custom(RelayMap::from_iter(
                relays.iter().map(relay_config),
            )))
            .ca_tls_config(super::network::relay_tls(relays)),
    };
    let mut builder = builder
        .secret_key(secret_key(identity))
        .alpns(vec![ALPN.to_vec()])
        .clear_ip_transports()
        .bind_addr(config.bind)
        .map_err(|e| PeerError::Bind(e.to_string()))?;
    if config.mdns {
        builder = builder.address_lookup(mdns());
    }
    builder
        .bind()
        .await
        .map_err(|e| PeerError::Bind(e.to_string()))
}

/// Waits (up to `limit`) until the endpoint has a home relay, so a ticket printed now carries
/// it; returns at once in the LAN-only mode, where there is none.
pub async fn wait_for_relay(
    endpoint: &Endpoint,
    network: &NetworkMode,
    limit: std::time::Duration,
) {
    if network.is_local() {
        return;
    }
    let _ = tokio::time::timeout(limit, endpoint.online()).await;
}

/// Closes an endpoint whose dial failed: a pending QUIC attempt would hold `close` for its
/// drain period (seconds), which the user would wait for with nothing to show for it.
pub async fn close_after_failure(endpoint: Endpoint) {
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), endpoint.close()).await;
}
