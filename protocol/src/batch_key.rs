//! Cheap sealing of object batches on a direct link (SPEC.md §15.3 "Keyed batches").
//!
//! Sealing every ~1 MiB batch to a team's epoch key with age costs an X25519 agreement, a key
//! derivation and a header on each side per batch; a fetch of 10,000 small sessions paid that
//! 10,000 times. Instead the serving node draws one 32-byte *content key* per connection and
//! team, seals that key once to the team's epoch (`TSEAL1`, §9.6) and sends it as
//! `Response::ContentKey` on every stream that carries the team's batches; each batch is then
//! AES-256-GCM under the content key with a fresh random 96-bit nonce and the associated data
//!
//! ```text
//! aad = "tapes 2026-12 sync batch v2" ‖ team:id32 ‖ key id[16] ‖ session:id16 ‖ index:u64le
//! ```
//!
//! where `index` counts the stream's keyed batches from 0, so a batch cannot be moved to
//! another session or position. A receiver opens the wrapped key once (cached by its
//! [`KeyId`]) and each batch with one AEAD pass. This module is sans-IO: the caller supplies
//! the key and nonce bytes from its random source.
//!
//! Why AES-256-GCM (`tapes/sync/3`) and not XChaCha20-Poly1305 (`tapes/sync/2`): with the
//! VAES/VPCLMULQDQ code `ring` has (the same code that encrypts every QUIC packet of the
//! connection), sealing and opening a batch cost about a fifth of what XChaCha20-Poly1305 did,
//! which was 10 % of each side's CPU in a team fetch (`perf`, `cargo bench --bench sync`). A
//! random 96-bit nonce is safe for the life of a content key: one connection would have to send
//! 2^32 batches (4 PiB) before a repeat became a 2^-33 chance.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::{SessionId, TeamId};

/// The context of [`KeyId`]: BLAKE3 derive-key of the wrapped (sealed) key bytes.
pub const KEY_ID_CONTEXT: &str = "tapes 2026-12 sync content key id v1";
/// The prefix of every batch's associated data.
pub const BATCH_AAD_PREFIX: &[u8] = b"tapes 2026-12 sync batch v2";
/// Bytes of a content key.
pub const KEY_LEN: usize = 32;
/// Bytes of a batch nonce (AES-GCM's 96 bits).
pub const NONCE_LEN: usize = 12;
/// Bytes of the GCM tag that ends a sealed batch.
pub const TAG_LEN: usize = 16;

/// Names a content key by the bytes it travelled as, so a receiver unwraps each key once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// The id of a content key that travelled wrapped as `wrapped`.
    pub fn of_wrapped(wrapped: &[u8]) -> KeyId {
        let mut h = blake3::Hasher::new_derive_key(KEY_ID_CONTEXT);
        h.update(wrapped);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        KeyId(id)
    }
}

/// Why a keyed batch or a content key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchKeyError {
    #[error("the content key is {0} bytes, not {KEY_LEN}")]
    KeyLength(usize),
    #[error("the batch does not open with the stream's content key (altered, moved to another session or position, or sealed with another key)")]
    Open,
}

/// One content key, as both sides hold it.
#[derive(Clone)]
pub struct ContentKey {
    id: KeyId,
    cipher: LessSafeKey,
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "ContentKey({})", hex::encode(self.id.0))
    }
}

impl ContentKey {
    /// The key `key` (the plaintext of the wrapped bytes) that travelled as `wrapped`.
    pub fn new(key: &[u8], wrapped: &[u8]) -> Result<ContentKey, BatchKeyError> {
        if key.len() != KEY_LEN {
            return Err(BatchKeyError::KeyLength(key.len()));
        }
        Ok(ContentKey {
            id: KeyId::of_wrapped(wrapped),
            cipher: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key)
                    .map_err(|_| BatchKeyError::KeyLength(key.len()))?,
            ),
        })
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Seals batch `index` of `session`'s stream: the ciphertext (with its 16-byte tag).
    pub fn seal(
        &self,
        team: &TeamId,
        session: &SessionId,
        index: u64,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut sealed = plaintext.to_vec();
        let tag = self.seal_in_place(team, session, index, nonce, &mut sealed);
        sealed.extend_from_slice(&tag);
        sealed
    }

    /// Opens batch `index` of `session`'s stream.
    pub fn open(
        &self,
        team: &TeamId,
        session: &SessionId,
        index: u64,
        nonce: &[u8; NONCE_LEN],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, BatchKeyError> {
        let mut text = ciphertext.to_vec();
        let len = self
            .open_in_place(team, session, index, nonce, &mut text)?
            .len();
        text.truncate(len);
        Ok(text)
    }

    /// [`ContentKey::seal`] in place: `buffer` becomes the ciphertext and the 16-byte tag is
    /// returned, to follow it (the same bytes `seal` returns, without a second buffer).
    pub fn seal_in_place(
        &self,
        team: &TeamId,
        session: &SessionId,
        index: u64,
        nonce: &[u8; NONCE_LEN],
        buffer: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let aad = self.aad(team, session, index);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(&aad),
                buffer,
            )
            .expect("AES-256-GCM seals any length a frame can carry (up to 64 GiB)");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// [`ContentKey::open`] in place: `sealed` is the ciphertext followed by its tag; on
    /// success its first `len - TAG_LEN` bytes are the plaintext, which is returned.
    pub fn open_in_place<'b>(
        &self,
        team: &TeamId,
        session: &SessionId,
        index: u64,
        nonce: &[u8; NONCE_LEN],
        sealed: &'b mut [u8],
    ) -> Result<&'b mut [u8], BatchKeyError> {
        if sealed.len() < TAG_LEN {
            return Err(BatchKeyError::Open);
        }
        let aad = self.aad(team, session, index);
        self.cipher
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(&aad),
                sealed,
            )
            .map_err(|_| BatchKeyError::Open)
    }

    fn aad(&self, team: &TeamId, session: &SessionId, index: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(BATCH_AAD_PREFIX.len() + 32 + 16 + 16 + 8);
        aad.extend_from_slice(BATCH_AAD_PREFIX);
        aad.extend_from_slice(&team.0);
        aad.extend_from_slice(&self.id.0);
        aad.extend_from_slice(&session.0);
        aad.extend_from_slice(&index.to_le_bytes());
        aad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ContentKey {
        ContentKey::new(&[7u8; 32], b"wrapped bytes").unwrap()
    }

    #[test]
    fn a_batch_opens_only_where_it_was_sealed() {
        let (team, a, b) = (TeamId([1; 32]), SessionId([2; 16]), SessionId([3; 16]));
        let nonce = [9u8; NONCE_LEN];
        let sealed = key().seal(&team, &a, 0, &nonce, b"objects");
        assert_eq!(
            key().open(&team, &a, 0, &nonce, &sealed).unwrap(),
            b"objects"
        );
        // Another session, another position, another team, another key, a flipped bit.
        assert_eq!(
            key().open(&team, &b, 0, &nonce, &sealed),
            Err(BatchKeyError::Open)
        );
        assert_eq!(
            key().open(&team, &a, 1, &nonce, &sealed),
            Err(BatchKeyError::Open)
        );
        assert_eq!(
            key().open(&TeamId([4; 32]), &a, 0, &nonce, &sealed),
            Err(BatchKeyError::Open)
        );
        let other = ContentKey::new(&[7u8; 32], b"other wrapped bytes").unwrap();
        assert_eq!(
            other.open(&team, &a, 0, &nonce, &sealed),
            Err(BatchKeyError::Open)
        );
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert_eq!(
            key().open(&team, &a, 0, &nonce, &flipped),
            Err(BatchKeyError::Open)
        );
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        assert_eq!(
            ContentKey::new(&[0u8; 31], b"w").unwrap_err(),
            BatchKeyError::KeyLength(31)
        );
    }
}
