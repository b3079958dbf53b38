//! The iroh endpoint of this node: its identity key is the endpoint's key, so a node id in
//! tapes (the ed25519 public key) is the iroh endpoint id, and the QUIC handshake proves it.
//!
//! Nothing here contacts a public relay or DNS discovery: relays are off, address lookup is
//! only mDNS on the LAN (and only when asked), and the port mapper does not probe the
//! gateway. Peers are dialled at explicit addresses or at what mDNS found.

use std::net::SocketAddr;

use iroh::endpoint::{presets, PortmapperConfig};
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
}

impl EndpointConfig {
    /// For dialling one peer: loopback when the peer is on loopback, else any interface.
    pub fn loopback_or_any(peer: &super::addr::PeerAddr) -> EndpointConfig {
        let local = !peer.addrs.is_empty() && peer.addrs.iter().all(|a| a.ip().is_loopback());
        if local {
            EndpointConfig::loopback()
        } else {
            // mDNS too: a ticket's addresses may be stale (DHCP, another network).
            EndpointConfig {
                bind: SocketAddr::from(([0, 0, 0, 0], 0)),
                mdns: true,
            }
        }
    }

    /// Loopback only, no mDNS: tests, examples and benchmarks.
    pub fn loopback() -> EndpointConfig {
        EndpointConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            mdns: false,
        }
    }
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

/// Binds an endpoint for `identity` that speaks `tapes/sync/1`.
pub async fn bind(identity: &Identity, config: &EndpointConfig) -> Result<Endpoint, PeerError> {
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(secret_key(identity))
        .alpns(vec![ALPN.to_vec()])
        .portmapper_config(PortmapperConfig::Disabled)
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
