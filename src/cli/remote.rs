//! `tapes remote add|list|remove`, and finding and opening a remote for pull, push and branch.
//!
//! Remotes live in the local store as refs `remote/<name>` whose value names the remote with a
//! scheme: `path:/abs/path` is another tapes home, `peer:<node-id>[@host:port,…]` a
//! teammate's `tapes serve` reached over iroh. Both sit behind the same [`Remote`] trait; a
//! value with a scheme this tapes does not know is listed as is and refused when used, with a
//! hint to upgrade or remove it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use tapes::home::Home;
use tapes::peer::addr::PeerAddr;
use tapes::peer::peer_remote::PeerRemote;
use tapes::store::backend::{RefUpdate, StorageError};
use tapes::store::Store;
use tapes::sync::remote::{PathRemote, Remote};

const REMOTE_REF_PREFIX: &str = tapes::store::keys::REMOTE;

#[derive(clap::Subcommand)]
pub enum RemoteCommand {
    /// Add a remote: a teammate's node (`<node-id>[@host:port]`, the ticket `tapes serve`
    /// prints), or another tapes home by path (a shared disk, a mounted server home).
    Add {
        /// A short name for it, used by `tapes fetch`, `tapes pull --from` and `tapes push <remote>`.
        name: String,
        /// The peer's node id or ticket, `relay:<ticket>` for a relay, or the remote's tapes home (the directory holding its
        /// `store/`).
        target: String,
    },
    /// List remotes: name and where they are.
    List,
    /// Forget a remote (nothing on the remote is touched).
    Remove {
        /// The remote's name.
        name: String,
    },
}

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

impl RemoteSpec {
    fn encode(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            RemoteSpec::Path(path) => {
                let text = path.to_str().with_context(|| {
                    format!(
                        "the path {} is not valid UTF-8; move the remote home to a UTF-8 path",
                        path.display()
                    )
                })?;
                Ok(format!("path:{text}").into_bytes())
            }
            RemoteSpec::Peer(addr) => Ok(format!("peer:{}", addr.ticket()).into_bytes()),
            RemoteSpec::Relay(addr) => Ok(format!("relay:{}", addr.ticket()).into_bytes()),
        }
    }

    fn decode(raw: &[u8]) -> Result<RemoteSpec, String> {
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
}

fn ref_key(name: &str) -> Vec<u8> {
    tapes::store::keys::remote(name)
}

fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("`{name}` cannot be a remote name: use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit");
    }
    Ok(())
}

pub fn run(command: RemoteCommand) -> anyhow::Result<ExitCode> {
    let (home, store) = super::open_store()?;
    match command {
        RemoteCommand::Add { name, target } => {
            // 64 hex digits (optionally @addresses) is a node id; anything else is a path.
            let id_part = target.split('@').next().unwrap_or_default();
            if let Some(ticket) = target.strip_prefix("relay:") {
                validate_name(&name)?;
                let addr = PeerAddr::parse(ticket)?;
                save(&store, &name, &RemoteSpec::Relay(addr.clone()))?;
                println!("added relay remote `{name}`: node {}", addr.id.short());
                Ok(ExitCode::SUCCESS)
            } else if id_part.len() == 64 && id_part.bytes().all(|b| b.is_ascii_hexdigit()) {
                add_peer(&store, &name, &PeerAddr::parse(&target)?)
            } else {
                add(&home, &store, &name, Path::new(&target))
            }
        }
        RemoteCommand::List => list(&store),
        RemoteCommand::Remove { name } => remove(&store, &name),
    }
}

fn add(home: &Home, store: &Store, name: &str, path: &Path) -> anyhow::Result<ExitCode> {
    validate_name(name)?;
    if !path.is_dir() {
        bail!("{} is not a directory; give the path of another tapes home (create it first for a new, empty remote)", path.display());
    }
    let path = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}; check the path", path.display()))?;
    if is_own_home(home, &path) {
        bail!(
            "{} is this tapes home ($TAPES_HOME); a remote is another home",
            path.display()
        );
    }
    if path.join("conf").is_file() && path.join("db").is_file() && !path.join("store").exists() {
        let parent = path
            .parent()
            .map_or_else(|| path.display().to_string(), |p| p.display().to_string());
        bail!("{} looks like a store directory; give the tapes home that holds it (probably {parent})", path.display());
    }
    save(store, name, &RemoteSpec::Path(path.clone()))?;
    println!("added remote {name}: {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn add_peer(store: &Store, name: &str, addr: &PeerAddr) -> anyhow::Result<ExitCode> {
    validate_name(name)?;
    save(store, name, &RemoteSpec::Peer(addr.clone()))?;
    let network = tapes::peer::network::process_mode();
    let how = match (addr.addrs.is_empty() && addr.relay.is_none(), &network) {
        (false, _) => "at the given addresses".to_string(),
        (true, tapes::peer::network::NetworkMode::Local) => "found on the LAN by mDNS".into(),
        (true, tapes::peer::network::NetworkMode::Public) => {
            "found by its node id wherever it is online".into()
        }
        (true, tapes::peer::network::NetworkMode::Custom(_)) => {
            "reached through your relays by its node id".into()
        }
    };
    println!("added remote {name}: node {} ({how})", addr.id.short());
    Ok(ExitCode::SUCCESS)
}

fn save(store: &Store, name: &str, spec: &RemoteSpec) -> anyhow::Result<()> {
    let value = spec.encode()?;
    let update = RefUpdate {
        key: ref_key(name),
        expected: None,
        new: Some(value),
    };
    match store.storage().update_refs(&[update]) {
        Ok(()) => {}
        Err(StorageError::Conflict { .. }) => {
            bail!("a remote named `{name}` already exists; remove it first with `tapes remote remove {name}`, or pick another name")
        }
        Err(e) => return Err(e.into()),
    }
    store.storage().flush()?;
    Ok(())
}

fn list(store: &Store) -> anyhow::Result<ExitCode> {
    let remotes = configured(store)?;
    if remotes.is_empty() {
        println!("no remotes; `tapes remote add <name> <path>` adds one");
        return Ok(ExitCode::SUCCESS);
    }
    let width = remotes.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, raw) in &remotes {
        let place = match RemoteSpec::decode(raw) {
            Ok(RemoteSpec::Path(path)) => path.display().to_string(),
            Ok(RemoteSpec::Peer(addr)) => format!("peer {}", addr.ticket()),
            Ok(RemoteSpec::Relay(addr)) => format!("relay {}", addr.ticket()),
            Err(why) => format!("{} ({why})", String::from_utf8_lossy(raw)),
        };
        println!("{name:width$}  {place}");
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(store: &Store, name: &str) -> anyhow::Result<ExitCode> {
    let key = ref_key(name);
    let Some(current) = store.storage().get_ref(&key)? else {
        bail!("no remote named `{name}`; `tapes remote list` shows the remotes");
    };
    match store.storage().update_refs(&[RefUpdate {
        key,
        expected: Some(current),
        new: None,
    }]) {
        Ok(()) => {}
        Err(StorageError::Conflict { .. }) => {
            bail!("remote `{name}` changed while removing it; run the command again")
        }
        Err(e) => return Err(e.into()),
    }
    store.storage().flush()?;
    println!("removed remote {name}");
    Ok(ExitCode::SUCCESS)
}

/// Every configured remote: name and raw ref value, in name order.
pub fn configured(store: &Store) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in store.storage().refs(REMOTE_REF_PREFIX.as_bytes()) {
        let (key, value) = entry?;
        let name =
            String::from_utf8_lossy(&key[REMOTE_REF_PREFIX.len().min(key.len())..]).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

/// The remote to use: `explicit` if given (it must exist), else the only one configured.
/// `how` says how to name one, for the error when several are configured (e.g. "--from <name>").
pub fn choose(store: &Store, explicit: Option<&str>, how: &str) -> anyhow::Result<String> {
    let remotes = configured(store)?;
    let names: Vec<&str> = remotes.iter().map(|(n, _)| n.as_str()).collect();
    match explicit {
        Some(name) => {
            if !names.contains(&name) {
                return Err(unknown(name, &names));
            }
            Ok(name.to_string())
        }
        None => match names.as_slice() {
            [] => bail!("no remote is configured; add one with `tapes remote add <name> <path>`"),
            [only] => Ok(only.to_string()),
            several => bail!(
                "several remotes are configured ({}); say which with {how}",
                several.join(", ")
            ),
        },
    }
}

/// The error for a remote name that is not configured.
pub fn unknown(name: &str, names: &[&str]) -> anyhow::Error {
    if names.is_empty() {
        anyhow::anyhow!("no remote named `{name}`: none is configured; add one with `tapes remote add {name} <path>`")
    } else {
        anyhow::anyhow!(
            "no remote named `{name}` (remotes: {}); `tapes remote add {name} <path>` adds it",
            names.join(", ")
        )
    }
}

/// True when a remote named `name` is configured.
pub fn exists(store: &Store, name: &str) -> anyhow::Result<bool> {
    Ok(store.storage().get_ref(&ref_key(name))?.is_some())
}

/// Opens the configured remote `name`.
pub fn open(home: &Home, store: &Arc<Store>, name: &str) -> anyhow::Result<Box<dyn Remote>> {
    let Some(raw) = store.storage().get_ref(&ref_key(name))? else {
        let remotes = configured(store)?;
        let names: Vec<&str> = remotes.iter().map(|(n, _)| n.as_str()).collect();
        return Err(unknown(name, &names));
    };
    let spec = RemoteSpec::decode(&raw).map_err(|why| {
        anyhow::anyhow!("remote `{name}` cannot be used: {why}; upgrade tapes, or `tapes remote remove {name}` and add it again")
    })?;
    match spec {
        RemoteSpec::Path(path) => {
            if !path.is_dir() {
                bail!(
                    "remote `{name}` is {}, which is not a directory any more; mount or restore it, or `tapes remote remove {name}`",
                    path.display()
                );
            }
            if is_own_home(home, &path) {
                bail!("remote `{name}` is this tapes home itself; `tapes remote remove {name}` and add another home");
            }
            Ok(Box::new(PathRemote::open(name, &path)?))
        }
        RemoteSpec::Relay(_) => bail!(
            "remote `{name}` is a relay: it keeps your shared sessions sealed; `tapes sync {name}` (or `tapes storage sync`) deposits them and `tapes fetch {name}` brings what it holds for you"
        ),
        RemoteSpec::Peer(addr) => {
            let identity = Arc::new(tapes::identity::Identity::load(home)?);
            Ok(Box::new(PeerRemote::connect(
                name,
                &addr,
                store.clone(),
                identity,
            )?))
        }
    }
}

/// The peer a configured remote names, if it is one.
pub fn peer(store: &Store, name: &str) -> anyhow::Result<Option<PeerAddr>> {
    let Some(raw) = store.storage().get_ref(&ref_key(name))? else {
        let remotes = configured(store)?;
        let names: Vec<&str> = remotes.iter().map(|(n, _)| n.as_str()).collect();
        return Err(unknown(name, &names));
    };
    Ok(match RemoteSpec::decode(&raw) {
        Ok(RemoteSpec::Peer(addr)) => Some(addr),
        _ => None,
    })
}

/// The relay a configured remote names, if it is one.
pub fn relay(store: &Store, name: &str) -> anyhow::Result<Option<PeerAddr>> {
    let Some(raw) = store.storage().get_ref(&ref_key(name))? else {
        return Ok(None);
    };
    Ok(match RemoteSpec::decode(&raw) {
        Ok(RemoteSpec::Relay(addr)) => Some(addr),
        _ => None,
    })
}

/// Every configured relay remote.
pub fn relays(store: &Store) -> anyhow::Result<Vec<(String, PeerAddr)>> {
    let mut out = Vec::new();
    for (name, raw) in configured(store)? {
        if let Ok(RemoteSpec::Relay(addr)) = RemoteSpec::decode(&raw) {
            out.push((name, addr));
        }
    }
    Ok(out)
}

/// Saves a relay remote (what `tapes storage configure --relay` does).
pub fn save_relay(store: &Store, name: &str, addr: &PeerAddr) -> anyhow::Result<()> {
    validate_name(name)?;
    let key = ref_key(name);
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
