//! The iroh relay a self-hosted `tapes relay --iroh-relay ADDR` runs beside the
//! store-and-forward relay (SPEC.md §16.12): iroh's own relay server (the `iroh-relay` crate),
//! so one process gives teammates both hole-punching assistance and always-on storage, with no
//! third party. It sees node ids and encrypted QUIC packets, never content.
//!
//! By default it serves HTTPS with a self-signed certificate kept in the relay's data
//! directory (`iroh-relay.cert.der`, `iroh-relay.key.der`, 0600), created on first start and
//! reused, and QUIC address discovery on the same port (UDP). Its URL carries the
//! certificate's SHA-256 as `#sha256=<hex>`: members put that URL in `network.relays`, which
//! pins the certificate; no CA, ACME or outside lookup is involved. `plain` serves HTTP
//! instead (for a relay behind a TLS-terminating proxy, or a closed test network).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iroh_relay::server::{CertConfig, QuicConfig, RelayConfig, Server, ServerConfig, TlsConfig};

use crate::peer::network::{cert_fingerprint, RelaySpec};

#[derive(Debug, thiserror::Error)]
pub enum IrohRelayError {
    #[error("cannot read or create the iroh relay certificate in {path}: {why}")]
    Cert { path: PathBuf, why: String },
    #[error("cannot start the iroh relay on {addr}: {why}; is the port free?")]
    Start { addr: SocketAddr, why: String },
}

/// A running iroh relay.
pub struct IrohRelay {
    server: Server,
    /// Its URL, with the certificate pin when it serves HTTPS.
    pub spec: RelaySpec,
}

impl IrohRelay {
    /// Starts it on `bind` (TCP for HTTP(S), UDP for QUIC address discovery), announced as
    /// `host` (the name or address members reach it at).
    pub async fn start(
        data: &Path,
        bind: SocketAddr,
        host: &str,
        plain: bool,
    ) -> Result<IrohRelay, IrohRelayError> {
        let started = |e: String| IrohRelayError::Start { addr: bind, why: e };
        if plain {
            let mut config = ServerConfig::default();
            config.relay = Some(RelayConfig::new(bind));
            let server = Server::spawn(config)
                .await
                .map_err(|e| started(e.to_string()))?;
            let port = server.http_addr().map_or(bind.port(), |a| a.port());
            let url = format!("http://{}/", host_port(host, port));
            let spec = RelaySpec::parse(&url).map_err(|e| started(e.to_string()))?;
            return Ok(IrohRelay { server, spec });
        }
        let (cert, key) = certificate(data, host)?;
        let pin = cert_fingerprint(&cert);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| started(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .map_err(|e| started(e.to_string()))?;
        // HTTP (captive-portal probes) on an ephemeral port of the same interface; the relay
        // itself on `bind` over HTTPS, QUIC address discovery on the same port over UDP.
        let mut relay = RelayConfig::new(SocketAddr::new(bind.ip(), 0));
        relay.tls = Some(TlsConfig::new(
            bind,
            CertConfig::Manual {
                server_config: tls.clone(),
            },
        ));
        let mut quic = QuicConfig::new(bind);
        quic.server_config = Some(tls);
        let mut config = ServerConfig::default();
        config.relay = Some(relay);
        config.quic = Some(quic);
        let server = Server::spawn(config)
            .await
            .map_err(|e| started(e.to_string()))?;
        let port = server.https_addr().map_or(bind.port(), |a| a.port());
        let url = format!(
            "https://{}/#sha256={}",
            host_port(host, port),
            hex::encode(pin)
        );
        let spec = RelaySpec::parse(&url).map_err(|e| started(e.to_string()))?;
        Ok(IrohRelay { server, spec })
    }

    pub async fn shutdown(self) {
        let _ = self.server.shutdown().await;
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The relay's certificate and key (DER), created for `host` on first start.
fn certificate(data: &Path, host: &str) -> Result<(Vec<u8>, Vec<u8>), IrohRelayError> {
    let cert_path = data.join("iroh-relay.cert.der");
    let key_path = data.join("iroh-relay.key.der");
    let fail = |why: String| IrohRelayError::Cert {
        path: data.to_path_buf(),
        why,
    };
    if let (Ok(cert), Ok(key)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
        return Ok((cert, key));
    }
    let made = rcgen::generate_simple_self_signed(vec![host.to_string()])
        .map_err(|e| fail(e.to_string()))?;
    let cert = made.cert.der().to_vec();
    let key = made.signing_key.serialize_der();
    write_private(&key_path, &key).map_err(|e| fail(e.to_string()))?;
    write_private(&cert_path, &cert).map_err(|e| fail(e.to_string()))?;
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
