//! How far this node reaches (SPEC.md §15.7): the network mode, chosen by the user.
//!
//! - [`NetworkMode::Public`], the default: iroh's public relays and address lookup by node id
//!   (n0's DNS / pkarr), the port mapper on, mDNS on the LAN. A teammate at home behind a NAT is
//!   dialled by node id alone: hole punching when it works, the relay path when not. What it
//!   reveals: the relays see node ids and encrypted QUIC packets; the lookup service publishes
//!   this node's id with its home relay and addresses.
//! - [`NetworkMode::Custom`]: only the relays the user lists (e.g. the team's own `tapes relay
//!   --iroh-relay`), no third party. A node id alone is dialled through those relays (teammates
//!   share them: the team's relay is everyone's home relay). A self-signed relay certificate is
//!   pinned by its SHA-256 in the URL's fragment (`https://host:3340/#sha256=<hex>`), so no CA,
//!   ACME or outside lookup is needed.
//! - [`NetworkMode::Local`]: no relay and no lookup but mDNS: the same LAN, or an address in a
//!   ticket. Tests, examples and benches run in this mode (`TAPES_RELAYS=none`, set once in
//!   `.cargo/config.toml`), so nothing they do leaves the machine.
//!
//! The mode is the `network.relays` setting (`default`, `none`, or relay URLs separated by
//! commas), kept in `$TAPES_HOME/network.toml`; the `TAPES_RELAYS` environment variable
//! overrides it.

use std::path::Path;
use std::sync::Arc;

use iroh::RelayUrl;

/// The setting's name in `tapes config`.
pub const SETTING: &str = "network.relays";
/// The environment variable that overrides the setting.
pub const ENV: &str = "TAPES_RELAYS";
const FILE: &str = "network.toml";

/// One relay the user configured, with its certificate pin if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    pub url: RelayUrl,
    /// SHA-256 of the relay's certificate (DER), from `#sha256=<hex>`.
    pub pin: Option<[u8; 32]>,
}

impl RelaySpec {
    pub fn parse(text: &str) -> Result<RelaySpec, NetworkError> {
        let text = text.trim();
        let (url, fragment) = match text.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (text, None),
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(NetworkError::BadRelay(
                text.to_string(),
                "a relay URL starts with https:// (or http:// for a relay without TLS)".into(),
            ));
        }
        let url: RelayUrl = url
            .parse()
            .map_err(|e| NetworkError::BadRelay(text.to_string(), format!("{e}")))?;
        let pin = match fragment {
            None | Some("") => None,
            Some(f) => {
                let hex = f.strip_prefix("sha256=").ok_or_else(|| {
                    NetworkError::BadRelay(
                        text.to_string(),
                        "the fragment pins the certificate as #sha256=<64 hex digits>".into(),
                    )
                })?;
                let bytes = hex::decode(hex)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                Some(bytes.ok_or_else(|| {
                    NetworkError::BadRelay(
                        text.to_string(),
                        "the pin is not 64 hex digits (SHA-256 of the certificate)".into(),
                    )
                })?)
            }
        };
        Ok(RelaySpec { url, pin })
    }

    /// The URL as users write it, pin included.
    pub fn text(&self) -> String {
        match &self.pin {
            Some(pin) => format!("{}#sha256={}", self.url, hex::encode(pin)),
            None => self.url.to_string(),
        }
    }
}

/// How far this node reaches. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkMode {
    #[default]
    Public,
    Custom(Vec<RelaySpec>),
    Local,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("`{0}` is not a relay URL: {1}")]
    BadRelay(String, String),
    #[error("{path}: {why}; fix it with `tapes config set network.relays default|none|<url>,…`")]
    BadFile { path: String, why: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl NetworkMode {
    /// `default`, `none`, or relay URLs separated by commas.
    pub fn parse(text: &str) -> Result<NetworkMode, NetworkError> {
        match text.trim() {
            "" | "default" | "public" => Ok(NetworkMode::Public),
            "none" | "local" | "lan" => Ok(NetworkMode::Local),
            list => Ok(NetworkMode::Custom(
                list.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(RelaySpec::parse)
                    .collect::<Result<_, _>>()?,
            )),
        }
    }

    /// The setting's text.
    pub fn text(&self) -> String {
        match self {
            NetworkMode::Public => "default".into(),
            NetworkMode::Local => "none".into(),
            NetworkMode::Custom(relays) => relays
                .iter()
                .map(RelaySpec::text)
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The mode this process runs in: `TAPES_RELAYS`, else the home's setting, else the default.
    pub fn load(home: &Path) -> Result<NetworkMode, NetworkError> {
        if let Some(value) = std::env::var_os(ENV) {
            return NetworkMode::parse(&value.to_string_lossy());
        }
        let path = home.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NetworkMode::Public),
            Err(e) => {
                return Err(NetworkError::BadFile {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })
            }
        };
        let value: toml::Value =
            text.parse()
                .map_err(|e: toml::de::Error| NetworkError::BadFile {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
        let relays = value
            .get("relays")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        NetworkMode::parse(relays).map_err(|e| NetworkError::BadFile {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Saves the setting in `home` (whole-file rewrite through a rename).
    pub fn save(&self, home: &Path) -> Result<(), NetworkError> {
        let path = home.join(FILE);
        let mut table = toml::map::Map::new();
        table.insert("relays".into(), toml::Value::String(self.text()));
        let text = format!(
            "# tapes network mode (`tapes config set network.relays default|none|<url>,…`)\n{}",
            toml::to_string(&toml::Value::Table(table)).unwrap_or_default()
        );
        let tmp = home.join(format!("{FILE}.tmp"));
        let fail = |source| NetworkError::Write {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)
    }

    /// One line for `tapes id` / `tapes peers`.
    pub fn describe(&self) -> String {
        match self {
            NetworkMode::Public => "iroh's public relays and address lookup by node id (reachable across NATs; the relays and n0's lookup service see your node id)".into(),
            NetworkMode::Local => "LAN only: no relay, no lookup beyond mDNS (teammates on this network, or at a ticket's address)".into(),
            NetworkMode::Custom(relays) => format!(
                "your own relays only ({}); no third party is contacted",
                relays.iter().map(|r| r.url.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Relay URLs a node id alone may be dialled through (the configured ones; none in the
    /// public mode, where address lookup finds the peer's own home relay).
    pub fn dial_relays(&self) -> Vec<RelayUrl> {
        match self {
            NetworkMode::Custom(relays) => relays.iter().map(|r| r.url.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// The configured relays as users write them (pins included).
    pub fn dial_relays_text(&self) -> Vec<String> {
        match self {
            NetworkMode::Custom(relays) => relays.iter().map(RelaySpec::text).collect(),
            _ => Vec::new(),
        }
    }

    /// True when nothing beyond the LAN is used.
    pub fn is_local(&self) -> bool {
        matches!(self, NetworkMode::Local)
    }
}

/// The TLS verification for relays: pinned certificates match by SHA-256 (whatever their
/// name or issuer), every other certificate goes through the usual web PKI roots.
pub(crate) fn relay_tls(relays: &[RelaySpec]) -> iroh::tls::CaTlsConfig {
    let pins: Vec<[u8; 32]> = relays.iter().filter_map(|r| r.pin).collect();
    if pins.is_empty() {
        return iroh::tls::CaTlsConfig::default();
    }
    let pins = Arc::new(pins);
    iroh::tls::CaTlsConfig::custom_server_cert_verifier(Arc::new(move |provider| {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let fallback = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(std::io::Error::other)?;
        Ok(Arc::new(Pinned {
            pins: pins.clone(),
            provider,
            fallback,
        })
            as Arc<dyn rustls::client::danger::ServerCertVerifier>)
    }))
}

/// A certificate is accepted when its SHA-256 is pinned; otherwise the web PKI decides.
#[derive(Debug)]
struct Pinned {
    pins: Arc<Vec<[u8; 32]>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    fallback: Arc<rustls::client::WebPkiServerVerifier>,
}

/// SHA-256 of a certificate's DER, as pinned in relay URLs.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.pins.contains(&cert_fingerprint(end_entity.as_ref())) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.fallback
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_back() {
        assert_eq!(NetworkMode::parse("default").unwrap(), NetworkMode::Public);
        assert_eq!(NetworkMode::parse("none").unwrap(), NetworkMode::Local);
        let pin = "ab".repeat(32);
        let text = format!("https://relay.example.com:3340/#sha256={pin},http://10.0.0.3:3340/");
        let mode = NetworkMode::parse(&text).unwrap();
        let NetworkMode::Custom(relays) = &mode else {
            panic!("custom")
        };
        assert_eq!(relays.len(), 2);
        assert_eq!(relays[0].pin, Some([0xab; 32]));
        assert_eq!(relays[1].pin, None);
        assert_eq!(NetworkMode::parse(&mode.text()).unwrap(), mode);
        assert!(NetworkMode::parse("relay.example.com").is_err());
        assert!(NetworkMode::parse("https://r.example/#sha256=abc").is_err());
    }

    #[test]
    fn the_setting_is_saved_in_the_home_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mode = NetworkMode::parse("http://10.0.0.3:3340/").unwrap();
        mode.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(
            text.contains("relays = \"http://10.0.0.3:3340/\""),
            "{text}"
        );
        // Tests run with TAPES_RELAYS=none (.cargo/config.toml), which overrides the file.
        if std::env::var_os(ENV).is_some() {
            assert_eq!(NetworkMode::load(dir.path()).unwrap(), NetworkMode::Local);
        }
    }
}

static HOME: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
static MODE: std::sync::OnceLock<NetworkMode> = std::sync::OnceLock::new();

/// Tells this process where its home is, so [`process_mode`] can read the setting (the binary
/// calls it at startup; library users that never do stay [`NetworkMode::Local`]).
pub fn init(home: &Path) {
    let _ = HOME.set(home.to_path_buf());
}

/// The mode of this process: `TAPES_RELAYS`, else the home's setting (after [`init`]), else
/// LAN only for library users that never said where their home is. A setting that does not
/// parse is reported once and the default used.
pub fn process_mode() -> NetworkMode {
    MODE.get_or_init(|| {
        let Some(home) = HOME.get() else {
            return match std::env::var_os(ENV) {
                Some(v) => NetworkMode::parse(&v.to_string_lossy()).unwrap_or(NetworkMode::Local),
                None => NetworkMode::Local,
            };
        };
        match NetworkMode::load(home) {
            Ok(mode) => mode,
            Err(e) => {
                eprintln!("warning: {e}; using the default network mode");
                NetworkMode::Public
            }
        }
    })
    .clone()
}

/// How long a dial waits for an answer before it reports the peer unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
static CONNECT_TIMEOUT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// Sets the dial timeout for this process (`--timeout`); first call wins.
pub fn set_connect_timeout(limit: std::time::Duration) {
    let _ = CONNECT_TIMEOUT.set(limit);
}

/// The dial timeout: `--timeout`, else [`DEFAULT_CONNECT_TIMEOUT`].
pub fn connect_timeout() -> std::time::Duration {
    *CONNECT_TIMEOUT.get_or_init(|| DEFAULT_CONNECT_TIMEOUT)
}
