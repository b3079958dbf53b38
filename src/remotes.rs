//! Configured remotes (SPEC.md §4.1 `remote/<name>`, §10): names for the places sessions are
//! pulled from and pushed to, and opening one behind the [`Remote`] trait.
//!
//! A remote is a ref `remote/<name>` whose value names it with a scheme: `path:/abs/path` is
//! another tapes home, `peer:<ticket>` a teammate's `tapes serve` reached over iroh,
//! `relay:<ticket>` a relay. A value with a scheme this tapes does not know is listed as is and
//! refused when used, with a hint to upgrade or remove it. This module sits above [`sync`](crate::sync)
//! and [`peer`](crate::peer): it is where a name becomes a transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::home::Home;
use crate::identity::{Identity, IdentityError};
use crate::peer::addr::{AddrError, PeerAddr};
use crate::peer::peer_remote::PeerRemote;
use crate::peer::PeerError;
use crate::store::backend::{RefUpdate, StorageError};
use crate::store::keys;
use crate::store::Store;
use crate::sync::remote::{PathRemote, Remote, RemoteError};

/// Where a remote is; the ref value is `<scheme>:<rest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSpec {
    /// Another tapes home on this machine or a mounted disk.
    Path(PathBuf),
    /// A teammate's node, over iroh.
    Peer(PeerAddr),
    /// A relay (`tapes relay`), over iroh.
    Relay(PeerAddr),
}

/// Why a remote cannot be added, found, opened or removed.
#[derive(Debug, thiserror::Error)]
pub enum RemotesError {
    #[error("`{0}` cannot be a remote name: use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit")]
    BadName(String),
    #[error("the path {0} is not valid UTF-8; move the remote home to a UTF-8 path")]
    NotUtf8(PathBuf),
    #[error("{0} is not a directory; give the path of another tapes home (create it first for a new, empty remote)")]
    NotADirectory(PathBuf),
    #[error("cannot resolve {0}; check the path")]
    Resolve(PathBuf),
    #[error("{0} is this tapes home ($TAPES_HOME); a remote is another home")]
    OwnHome(PathBuf),
    #[error("{path} looks like a store directory; give the tapes home that holds it (probably {parent})")]
    StoreDirectory { path: PathBuf, parent: String },
    #[error("a remote named `{0}` already exists; remove it first with `tapes remote remove {0}`, or pick another name")]
    Exists(String),
    #[error("{}", not_found(.name, .names))]
    NotFound { name: String, names: Vec<String> },
    #[error("no remote is configured; add one with `tapes remote add <name> <path>`")]
    NoneConfigured,
    #[error("several remotes are configured ({}); say which with {how}", .names.join(", "))]
    Several { names: Vec<String>, how: String },
    #[error("remote `{name}` cannot be used: {why}; upgrade tapes, or `tapes remote remove {name}` and add it again")]
    Unusable { name: String, why: String },
    #[error("remote `{name}` is {}, which is not a directory any more; mount or restore it, or `tapes remote remove {name}`", .path.display())]
    Gone { name: String, path: PathBuf },
    #[error(
        "remote `{0}` is this tapes home itself; `tapes remote remove {0}` and add another home"
    )]
    IsOwnHome(String),
    #[error("remote `{0}` is a relay: it keeps your shared sessions sealed; `tapes sync {0}` (or `tapes storage sync`) deposits them and `tapes fetch {0}` brings what it holds for you")]
    IsRelay(String),
    #[error("remote `{0}` changed while removing it; run the command again")]
    Changed(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

fn not_found(name: &str, names: &[String]) -> String {
    if names.is_empty() {
        format!("no remote named `{name}`: none is configured; add one with `tapes remote add {name} <path>`")
    } else {
        format!(
            "no remote named `{name}` (remotes: {}); `tapes remote add {name} <path>` adds it",
            names.join(", ")
        )
    }
}

impl RemoteSpec {
    /// The ref value: `<scheme>:<rest>`.
    pub fn encode(&self) -> Result<Vec<u8>, RemotesError> {
        match self {
            RemoteSpec::Path(path) => {
                let text = path
                    .to_str()
                    .ok_or_else(|| RemotesError::NotUtf8(path.clone()))?;
                Ok(format!("path:{text}").into_bytes())
            }
            RemoteSpec::Peer(addr) => Ok(format!("peer:{}", addr.ticket()).into_bytes()),
            RemoteSpec::Relay(addr) => Ok(format!("relay:{}", addr.ticket()).into_bytes()),
        }
    }

    /// Reads a ref value; the error says why it is not one this tapes can use.
    pub fn decode(raw: &[u8]) -> Result<RemoteSpec, String> {
        let text = std::str::from_utf8(raw).map_err(|_| "its value is not UTF-8".to_string())?;
        match text.split_once(':') {
            Some(("path", rest)) if !rest.is_empty() => Ok(RemoteSpec::Path(PathBuf::from(rest))),
            Some(("peer", rest)) => PeerAddr::parse(rest)
                .map(RemoteSpec::Peer)
                .map_err(|e| e.to_string()),
            Some(("relay", rest)) => PeerAddr::parse(rest)
                .map(RemoteSpec::Relay)
                .map_err(|e| e.to_string()),
            Some((scheme, _)) => Err(format!("its kind `{scheme}` is not one this tapes knows")),
            None => Err("its value has no kind (`path:`)".to_string()),
        }
    }

    /// Where it is, for a listing.
    pub fn describe(raw: &[u8]) -> String {
        match RemoteSpec::decode(raw) {
            Ok(RemoteSpec::Path(path)) => path.display().to_string(),
            Ok(RemoteSpec::Peer(addr)) => format!("peer {}", addr.ticket()),
            Ok(RemoteSpec::Relay(addr)) => format!("relay {}", addr.ticket()),
            Err(why) => format!("{} ({why})", String::from_utf8_lossy(raw)),
        }
    }
}

/// Checks a remote's name: 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter
/// or digit.
pub fn validate_name(name: &str) -> Result<(), RemotesError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(RemotesError::BadName(name.to_string()));
    }
    Ok(())
}

/// What a `tapes remote add` target names: `relay:<ticket>` a relay, 64 hex digits (optionally
/// `@addresses`) a peer, anything else a path (checked by [`add`]).
pub fn parse_target(target: &str) -> Result<Option<RemoteSpec>, AddrError> {
    let id_part = target.split('@').next().unwrap_or_default();
    if let Some(ticket) = target.strip_prefix("relay:") {
        return Ok(Some(RemoteSpec::Relay(PeerAddr::parse(ticket)?)));
    }
    if id_part.len() == 64 && id_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Some(RemoteSpec::Peer(PeerAddr::parse(target)?)));
    }
    Ok(None)
}

/// Adds a remote named `name`; a path must be another tapes home (it is canonicalized).
/// Returns what was saved.
pub fn add(
    home: &Home,
    store: &Store,
    name: &str,
    target: &str,
) -> Result<RemoteSpec, RemotesError> {
    validate_name(name)?;
    let spec = match parse_target(target)? {
        Some(spec) => spec,
        None => RemoteSpec::Path(check_home_path(home, Path::new(target))?),
    };
    save(store, name, &spec)?;
    Ok(spec)
}

fn check_home_path(home: &Home, path: &Path) -> Result<PathBuf, RemotesError> {
    if !path.is_dir() {
        return Err(RemotesError::NotADirectory(path.to_path_buf()));
    }
    let path = path
        .canonicalize()
        .map_err(|_| RemotesError::Resolve(path.to_path_buf()))?;
    if is_own_home(home, &path) {
        return Err(RemotesError::OwnHome(path));
    }
    if path.join("conf").is_file() && path.join("db").is_file() && !path.join("store").exists() {
        let parent = path
            .parent()
            .map_or_else(|| path.display().to_string(), |p| p.display().to_string());
        return Err(RemotesError::StoreDirectory { path, parent });
    }
    Ok(path)
}

fn save(store: &Store, name: &str, spec: &RemoteSpec) -> Result<(), RemotesError> {
    let update = RefUpdate {
        key: keys::remote(name),
        expected: None,
        new: Some(spec.encode()?),
    };
    match store.storage().update_refs(&[update]) {
        Ok(()) => {}
        Err(StorageError::Conflict { .. }) => return Err(RemotesError::Exists(name.to_string())),
        Err(e) => return Err(e.into()),
    }
    store.storage().flush()?;
    Ok(())
}

/// Forgets the remote `name` (nothing on the remote is touched).
pub fn remove(store: &Store, name: &str) -> Result<(), RemotesError> {
    let key = keys::remote(name);
    let Some(current) = store.storage().get_ref(&key)? else {
        return Err(not_found_in(store, name)?);
    };
    match store.storage().update_refs(&[RefUpdate {
        key,
        expected: Some(current),
        new: None,
    }]) {
        Ok(()) => {}
        Err(StorageError::Conflict { .. }) => return Err(RemotesError::Changed(name.to_string())),
        Err(e) => return Err(e.into()),
    }
    store.storage().flush()?;
    Ok(())
}

/// Every configured remote: name and raw ref value, in name order.
pub fn configured(store: &Store) -> Result<Vec<(String, Vec<u8>)>, RemotesError> {
    let prefix = keys::REMOTE.as_bytes();
    let mut out = Vec::new();
    for entry in store.storage().refs(prefix) {
        let (key, value) = entry?;
        let name = String::from_utf8_lossy(&key[prefix.len().min(key.len())..]).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

fn names(store: &Store) -> Result<Vec<String>, RemotesError> {
    Ok(configured(store)?.into_iter().map(|(n, _)| n).collect())
}

/// The error for a remote name that is not configured (listing the ones that are).
pub fn not_found_in(store: &Store, name: &str) -> Result<RemotesError, RemotesError> {
    Ok(RemotesError::NotFound {
        name: name.to_string(),
        names: names(store)?,
    })
}

/// The remote to use: `explicit` if given (it must exist), else the only one configured.
/// `how` says how to name one, for the error when several are configured (e.g. "--from <name>").
pub fn choose(store: &Store, explicit: Option<&str>, how: &str) -> Result<String, RemotesError> {
    let names = names(store)?;
    match explicit {
        Some(name) if names.iter().any(|n| n == name) => Ok(name.to_string()),
        Some(name) => Err(RemotesError::NotFound {
            name: name.to_string(),
            names,
        }),
        None => match names.as_slice() {
            [] => Err(RemotesError::NoneConfigured),
            [only] => Ok(only.clone()),
            _ => Err(RemotesError::Several {
                names,
                how: how.to_string(),
            }),
        },
    }
}

/// True when a remote named `name` is configured.
pub fn exists(store: &Store, name: &str) -> Result<bool, RemotesError> {
    Ok(store.storage().get_ref(&keys::remote(name))?.is_some())
}

fn spec(store: &Store, name: &str) -> Result<Option<Result<RemoteSpec, String>>, RemotesError> {
    Ok(store
        .storage()
        .get_ref(&keys::remote(name))?
        .map(|raw| RemoteSpec::decode(&raw)))
}

/// Opens the configured remote `name` behind the [`Remote`] trait: a path remote directly, a
/// peer over iroh. A relay is not a `Remote` (it keeps sealed copies; `tapes sync` talks to it).
pub fn open(home: &Home, store: &Arc<Store>, name: &str) -> Result<Box<dyn Remote>, RemotesError> {
    let spec = match spec(store, name)? {
        None => return Err(not_found_in(store, name)?),
        Some(Err(why)) => {
            return Err(RemotesError::Unusable {
                name: name.to_string(),
                why,
            })
        }
        Some(Ok(spec)) => spec,
    };
    match spec {
        RemoteSpec::Path(path) => {
            if !path.is_dir() {
                return Err(RemotesError::Gone {
                    name: name.to_string(),
                    path,
                });
            }
            if is_own_home(home, &path) {
                return Err(RemotesError::IsOwnHome(name.to_string()));
            }
            Ok(Box::new(PathRemote::open(name, &path)?))
        }
        RemoteSpec::Relay(_) => Err(RemotesError::IsRelay(name.to_string())),
        RemoteSpec::Peer(addr) => {
            let identity = Arc::new(Identity::load(home)?);
            Ok(Box::new(PeerRemote::connect(
                name,
                &addr,
                store.clone(),
                identity,
            )?))
        }
    }
}

/// The peer a configured remote names, if it is one (an error if `name` is not configured).
pub fn peer(store: &Store, name: &str) -> Result<Option<PeerAddr>, RemotesError> {
    match spec(store, name)? {
        None => Err(not_found_in(store, name)?),
        Some(Ok(RemoteSpec::Peer(addr))) => Ok(Some(addr)),
        Some(_) => Ok(None),
    }
}

/// The relay a configured remote names, if it is one.
pub fn relay(store: &Store, name: &str) -> Result<Option<PeerAddr>, RemotesError> {
    Ok(match spec(store, name)? {
        Some(Ok(RemoteSpec::Relay(addr))) => Some(addr),
        _ => None,
    })
}

/// Every configured relay remote.
pub fn relays(store: &Store) -> Result<Vec<(String, PeerAddr)>, RemotesError> {
    let mut out = Vec::new();
    for (name, raw) in configured(store)? {
        if let Ok(RemoteSpec::Relay(addr)) = RemoteSpec::decode(&raw) {
            out.push((name, addr));
        }
    }
    Ok(out)
}

/// Saves a relay remote (what `tapes storage configure --relay` does); replaces what `name`
/// held.
pub fn save_relay(store: &Store, name: &str, addr: &PeerAddr) -> Result<(), RemotesError> {
    validate_name(name)?;
    let key = keys::remote(name);
    let current = store.storage().get_ref(&key)?;
    let new = RemoteSpec::Relay(addr.clone()).encode()?;
    if current.as_deref() == Some(new.as_slice()) {
        return Ok(());
    }
    store.storage().update_refs(&[RefUpdate {
        key,
        expected: current,
        new: Some(new),
    }])?;
    store.storage().flush()?;
    Ok(())
}

fn is_own_home(home: &Home, path: &Path) -> bool {
    match (home.root().canonicalize(), path.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::RemoteSpec;

    #[test]
    fn remote_values_carry_their_kind() {
        let spec = RemoteSpec::Path("/srv/tapes".into());
        let raw = spec.encode().unwrap();
        assert_eq!(raw, b"path:/srv/tapes");
        assert_eq!(RemoteSpec::decode(&raw).unwrap(), spec);
        assert!(RemoteSpec::decode(b"iroh:abc")
            .unwrap_err()
            .contains("`iroh`"));
        assert!(RemoteSpec::decode(b"/no/scheme").is_err());
    }
}
