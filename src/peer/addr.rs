//! Peer addresses as users type them: `<node-id>` (found on the LAN by mDNS) or
//! `<node-id>@<host:port>[,<host:port>…]`, which is also the ticket `tapes serve` prints.

use std::net::{SocketAddr, ToSocketAddrs};

use iroh::{EndpointAddr, PublicKey};
use tapes_protocol::MemberId;

/// A peer: who (the node id, which the connection proves) and where it may be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub id: MemberId,
    pub addrs: Vec<SocketAddr>,
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
        for part in rest.into_iter().flat_map(|r| r.split(',')) {
            let found = part
                .to_socket_addrs()
                .map_err(|_| AddrError::BadAddr(part.to_string()))?;
            addrs.extend(found);
        }
        Ok(PeerAddr { id, addrs })
    }

    /// The ticket form: `<node-id>@addr,addr`.
    pub fn ticket(&self) -> String {
        if self.addrs.is_empty() {
            return self.id.to_hex();
        }
        let addrs: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        format!("{}@{}", self.id.to_hex(), addrs.join(","))
    }

    pub fn endpoint_addr(&self) -> Result<EndpointAddr, AddrError> {
        let key = PublicKey::from_bytes(self.id.as_bytes())
            .map_err(|_| AddrError::BadKey(self.id.to_hex()))?;
        let mut addr = EndpointAddr::new(key);
        for a in &self.addrs {
            addr = addr.with_ip_addr(*a);
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
        PeerAddr {
            id: MemberId(*endpoint.id().as_bytes()),
            addrs,
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
        assert!(matches!(PeerAddr::parse("bob"), Err(AddrError::BadId(_))));
        assert!(matches!(
            PeerAddr::parse(&format!("{hex}@nowhere")),
            Err(AddrError::BadAddr(_))
        ));
    }
}
