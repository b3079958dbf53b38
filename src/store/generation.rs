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
}
