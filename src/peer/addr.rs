//! Peer addresses as users type them: `<node-id>` (found by mDNS on the LAN, by address lookup,
//! or through the configured relays; SPEC.md §15.7) or `<node-id>@<part>[,<part>…]`, each part a
//! `host:port` or the peer's home relay URL (`https://…[#sha256=<pin>]`). The same text is the
//! ticket `tapes serve` prints.

use std::net::{SocketAddr, ToSocketAddrs};

use iroh::{EndpointAddr, PublicKey};
use tapes_protocol::MemberId;

use super::network::RelaySpec;

/// A peer: who (the node id, which the connection proves) and where it may be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub id: MemberId,
    pub addrs: Vec<SocketAddr>,
    /// The peer's home relay, when known.
    pub relay: Option<RelaySpec>,
    /// A relay's public page (`page=<base URL>`): where public shares are read, at
    /// `<base>/s/<session id>`.
    pub page: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("`{0}` is not a node id: expected 64 hex digits (`tapes id` prints it), optionally followed by @host:port")]
    BadId(String),
    #[error("`{0}` is not a host:port address (e.g. 192.168.1.20:4242)")]
    BadAddr(String),
    #[error("node id {0} is not a valid ed25519 public key")]
    BadKey(String),
}

impl PeerAddr {
    pub fn parse(input: &str) -> Result<PeerAddr, AddrError> {
        let input = input.trim();
        let (id, rest) = match input.split_once('@') {
            Some((id, rest)) => (id, Some(rest)),
            None => (input, None),
        };
        let id: MemberId = id.parse().map_err(|_| AddrError::BadId(id.to_string()))?;
        PublicKey::from_bytes(id.as_bytes()).map_err(|_| AddrError::BadKey(id.to_hex()))?;
        let mut addrs = Vec::new();
        let mut relay = None;
        let mut page = None;
        for part in rest.into_iter().flat_map(|r| r.split(',')) {
            if let Some(url) = part.strip_prefix("page=") {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(AddrError::BadAddr(part.to_string()));
                }
                page = Some(url.trim_end_matches('/').to_string());
                continue;
            }
            if part.starts_with("https://") || part.starts_with("http://") {
                relay = Some(
                    RelaySpec::parse(part)
                        .map_err(|e| AddrError::BadAddr(format!("{part} ({e})")))?,
                );
                continue;
            }
            let found = part
                .to_socket_addrs()
                .map_err(|_| AddrError::BadAddr(part.to_string()))?;
            addrs.extend(found);
        }
        Ok(PeerAddr {
            id,
            addrs,
            relay,
            page,
        })
    }

    /// Just a node id.
    pub fn id_only(id: MemberId) -> PeerAddr {
        PeerAddr {
            id,
            addrs: Vec::new(),
            relay: None,
            page: None,
        }
    }

    /// The ticket form: `<node-id>@addr,addr,relay-url`.
    pub fn ticket(&self) -> String {
        let mut parts: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        parts.extend(self.relay.as_ref().map(RelaySpec::text));
        parts.extend(self.page.as_ref().map(|p| format!("page={p}")));
        if parts.is_empty() {
            return self.id.to_hex();
        }
        format!("{}@{}", self.id.to_hex(), parts.join(","))
    }

    /// Where iroh should try: the ticket's addresses and relay, and in a self-hosted network
    /// mode the configured relays (teammates share them as home relays).
    pub fn endpoint_addr(&self) -> Result<EndpointAddr, AddrError> {
        let key = PublicKey::from_bytes(self.id.as_bytes())
            .map_err(|_| AddrError::BadKey(self.id.to_hex()))?;
        let mut addr = EndpointAddr::new(key);
        for a in &self.addrs {
            addr = addr.with_ip_addr(*a);
        }
        if let Some(relay) = &self.relay {
            addr = addr.with_relay_url(relay.url.clone());
        }
        for url in super::network::process_mode().dial_relays() {
            addr = addr.with_relay_url(url);
        }
        Ok(addr)
    }

    /// The ticket of a bound endpoint: its id and the addresses it can be reached at (the
    /// interfaces' addresses when it listens on all of them).
    pub fn of_endpoint(endpoint: &iroh::Endpoint) -> PeerAddr {
        let bound = endpoint.bound_sockets();
        let mut addrs: Vec<SocketAddr> = bound
            .iter()
            .filter(|a| !a.ip().is_unspecified())
            .copied()
            .collect();
        if addrs.len() < bound.len() {
            let ports: Vec<u16> = bound.iter().map(|a| a.port()).collect();
            for a in endpoint.addr().ip_addrs() {
                if !a.ip().is_unspecified() && ports.contains(&a.port()) && !addrs.contains(a) {
                    addrs.push(*a);
                }
            }
        }
        if addrs.is_empty() {
            addrs = bound;
        }
        // The home relay, with its pin when it is one of the configured relays.
        let relay =
            endpoint
                .addr()
                .relay_urls()
                .next()
                .map(|url| match super::network::process_mode() {
                    super::network::NetworkMode::Custom(specs) => specs
                        .into_iter()
                        .find(|s| s.url == *url)
                        .unwrap_or(RelaySpec {
                            url: url.clone(),
                            pin: None,
                        }),
                    _ => RelaySpec {
                        url: url.clone(),
                        pin: None,
                    },
                });
        PeerAddr {
            id: MemberId(*endpoint.id().as_bytes()),
            addrs,
            relay,
            page: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_tickets_and_refuses_nonsense() {
        let key = iroh::SecretKey::from_bytes(&[7; 32]).public();
        let hex = hex::encode(key.as_bytes());
        let bare = PeerAddr::parse(&hex).unwrap();
        assert!(bare.addrs.is_empty());
        let ticket = PeerAddr::parse(&format!("{hex}@127.0.0.1:4242,127.0.0.1:4243")).unwrap();
        assert_eq!(ticket.addrs.len(), 2);
        assert_eq!(PeerAddr::parse(&ticket.ticket()).unwrap(), ticket);
        let relayed = PeerAddr::parse(&format!(
            "{hex}@10.0.0.2:4242,https://relay.example:3340/#sha256={}",
            "cd".repeat(32)
        ))
        .unwrap();
        assert_eq!(relayed.addrs.len(), 1);
        assert_eq!(relayed.relay.as_ref().unwrap().pin, Some([0xcd; 32]));
        assert_eq!(PeerAddr::parse(&relayed.ticket()).unwrap(), relayed);
        let paged = PeerAddr::parse(&format!(
            "{hex}@10.0.0.2:4242,page=https://tapes.example.com/"
        ))
        .unwrap();
        assert_eq!(paged.page.as_deref(), Some("https://tapes.example.com"));
        assert_eq!(PeerAddr::parse(&paged.ticket()).unwrap(), paged);
        assert!(matches!(PeerAddr::parse("bob"), Err(AddrError::BadId(_))));
        assert!(matches!(
            PeerAddr::parse(&format!("{hex}@nowhere")),
            Err(AddrError::BadAddr(_))
        ));
    }
}
