//! The store's session generation (SPEC.md §13, "Keeping the index current"): a counter that
//! moves with every ref transaction that changes a session ref, so a derived view (the search
//! index) can tell in one read whether anything it was built from may have changed.
//!
//! It lives in the ref space under [`keys::GENERATION`](crate::store::keys::GENERATION) as
//! `epoch [16] || count u64le`. The backend bumps it inside the same transaction as the session
//! refs it changes ([`next`]), so a reader never sees new refs with an old count. The epoch is
//! random, chosen when the key is first written (a new store, or one whose counter was lost to
//! a repair): a count from another epoch never matches, so an index can never mistake a
//! recreated store's small count for the one it saw.

use std::collections::BTreeSet;

use tapes_protocol::SessionId;

use crate::store::{keys, Store, StoreError};

/// The session generation of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    pub epoch: [u8; 16],
    pub count: u64,
}

impl Generation {
    /// The generation a store that never changed a session ref reports.
    pub const NONE: Generation = Generation {
        epoch: [0; 16],
        count: 0,
    };

    pub fn decode(bytes: &[u8]) -> Option<Generation> {
        let epoch = bytes.get(..16)?.try_into().ok()?;
        let count = u64::from_le_bytes(bytes.get(16..24)?.try_into().ok()?);
        (bytes.len() == 24).then_some(Generation { epoch, count })
    }

    pub fn encode(&self) -> [u8; 24] {
        let mut out = [0; 24];
        out[..16].copy_from_slice(&self.epoch);
        out[16..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// The generation right after this one (the same epoch).
    pub fn successor(&self) -> Generation {
        Generation {
            epoch: self.epoch,
            count: self.count.wrapping_add(1),
        }
    }
}

/// Does a batch of ref updates change a session ref (and so move the generation)?
pub fn moves(keys: impl IntoIterator<Item = impl AsRef<[u8]>>) -> bool {
    keys.into_iter()
        .any(|k| k.as_ref().starts_with(keys::SESSION))
}

/// The value to store after `current` (the key's bytes, if any): the count plus one, or count 1
/// of a fresh random epoch when there is no (readable) value yet.
pub fn next(current: Option<&[u8]>) -> [u8; 24] {
    match current.and_then(Generation::decode) {
        Some(g) => g.successor().encode(),
        None => Generation {
            epoch: fresh_epoch(),
            count: 1,
        }
        .encode(),
    }
}

fn fresh_epoch() -> [u8; 16] {
    let mut epoch = [0u8; 16];
    if getrandom::fill(&mut epoch).is_err() {
        // No entropy source: the clock and pid still make a reused epoch unlikely.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        epoch[..12].copy_from_slice(&nanos.to_le_bytes()[..12]);
        epoch[12..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    epoch
}

/// Access-generation changes kept in the access log ([`access_log_entry`]): a view kept at a
/// generation at most this many changes old is brought up to date by re-deriving the sessions
/// the changes touched instead of being rebuilt (`share::access`, SPEC.md §15.2). An import
/// or a fetch moves the generation once per batch, so this covers a serving node's view over
/// any ordinary pause between two fetches; each entry is a few dozen bytes per session.
pub const ACCESS_LOG_KEEP: u64 = 256;

/// What one change of the access generation touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// Only these sessions' records, signatures and shares.
    Sessions(BTreeSet<SessionId>),
    /// Something every view may depend on (a team chain, a setting): views are rebuilt.
    Everything,
}

/// The ref key of the access log entry of change `count` (big-endian, so the log is in order).
pub fn access_log_key(count: u64) -> Vec<u8> {
    let mut key = keys::ACCESS_LOG.to_vec();
    key.extend_from_slice(&count.to_be_bytes());
    key
}

/// The access log entry of a transaction of ref `keys` that moved the access generation to
/// `at`: `epoch [16] || session id [16]…`, or `epoch || "*"` when a key is not a session's
/// record, signature or share.
pub fn access_log_entry<'k>(at: &Generation, keys: impl IntoIterator<Item = &'k [u8]>) -> Vec<u8> {
    let mut out = at.epoch.to_vec();
    let mut sessions = BTreeSet::new();
    for key in keys {
        if !keys::moves_access(key) {
            continue;
        }
        match keys::session_of(key) {
            Some(id) => {
                sessions.insert(id);
            }
            None => {
                out.push(b'*');
                return out;
            }
        }
    }
    sessions.iter().for_each(|id| out.extend_from_slice(&id.0));
    out
}

/// Reads an access log entry written in `epoch`; `None` when it is from another epoch or
/// damaged (the caller then rebuilds).
pub fn decode_access_log(bytes: &[u8], epoch: &[u8; 16]) -> Option<Touched> {
    let rest = bytes.strip_prefix(epoch.as_slice())?;
    if rest == b"*" {
        return Some(Touched::Everything);
    }
    if rest.len() % SessionId::LEN != 0 {
        return None;
    }
    Some(Touched::Sessions(
        rest.chunks_exact(SessionId::LEN)
            .map(|c| SessionId(c.try_into().unwrap_or([0; SessionId::LEN])))
            .collect(),
    ))
}

impl Store {
    /// The store's session generation: one ref read ([`Generation::NONE`] before the first
    /// session is written).
    pub fn generation(&self) -> Result<Generation, StoreError> {
        Ok(self
            .storage()
            .get_ref(keys::GENERATION)?
            .as_deref()
            .and_then(Generation::decode)
            .unwrap_or(Generation::NONE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_within_an_epoch_and_starts_a_new_one_without_a_value() {
        let first = Generation::decode(&next(None)).unwrap();
        assert_eq!(first.count, 1);
        assert_ne!(first.epoch, [0; 16]);
        let second = Generation::decode(&next(Some(&first.encode()))).unwrap();
        assert_eq!(second, first.successor());
        let other = Generation::decode(&next(Some(b"garbage"))).unwrap();
        assert_ne!(other.epoch, first.epoch);
        assert!(moves([b"session/ab".as_slice()]));
        assert!(!moves([b"share/ab/x".as_slice(), b"sig/ab"]));
    }

    #[test]
    fn the_access_log_names_the_sessions_a_change_touched_or_everything() {
        let at = Generation::decode(&next(None)).unwrap();
        let (a, b) = (SessionId([1; 16]), SessionId([2; 16]));
        let touched = [
            keys::session(&a),
            keys::sig(&a),
            keys::share(&b, "team-x"),
            b"audit/whatever".to_vec(),
        ];
        let entry = access_log_entry(&at, touched.iter().map(Vec::as_slice));
        assert_eq!(
            decode_access_log(&entry, &at.epoch),
            Some(Touched::Sessions([a, b].into()))
        );
        assert_eq!(decode_access_log(&entry, &[9; 16]), None, "another epoch");
        let team = [
            keys::session(&a),
            keys::team_head(&tapes_protocol::TeamId([3; 32])),
        ];
        let entry = access_log_entry(&at, team.iter().map(Vec::as_slice));
        assert_eq!(
            decode_access_log(&entry, &at.epoch),
            Some(Touched::Everything)
        );
        assert!(access_log_key(1) < access_log_key(256));
    }
}
