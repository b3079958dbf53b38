//! Team keys: one age X25519 identity per key epoch, kept in a key ring that every manifest
//! carries wrapped (age-encrypted) to every member of that version.
//!
//! Why a ring and not one key: a member who joins late gets every earlier epoch key too (they
//! can read what the team shared before them), and a member who is removed keeps the ring of the
//! last manifest they were in (they can still open what they had) but never sees the next
//! epoch's key, because the manifest that removes them starts a new epoch and wraps the grown
//! ring only to those who remain. Content is sealed to the current epoch's recipient, which is
//! public in the manifest, so sealing needs no secret at all.
//!
//! The decrypted ring is never written anywhere: it is re-derived from the manifest with the
//! member's own age identity (in its 0600 file) whenever it is needed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use tapes_protocol::manifest::Manifest;
use tapes_protocol::team_chain::TeamChain;
use tapes_protocol::TeamId;

/// Why team key material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "you are not a member of any version of team {0} that you hold; ask an admin to add you"
    )]
    NotMember(TeamId),
    #[error(
        "the key ring of team {team} (version {version}) cannot be opened with your age identity"
    )]
    Unwrap { team: TeamId, version: u64 },
    #[error("the key ring of team {team} (version {version}) is damaged: {why}")]
    BadRing {
        team: TeamId,
        version: u64,
        why: String,
    },
    #[error("content is sealed to team {found}, not team {expected}")]
    WrongTeam { expected: TeamId, found: TeamId },
    #[error("content of team {team} is sealed with key epoch {epoch}, which your key ring does not hold (it was sealed after you left, or you joined a copy of the team that is not current)")]
    NoEpochKey { team: TeamId, epoch: u64 },
    #[error("sealed content does not decrypt: {0}")]
    Decrypt(String),
    #[error("sealed content is malformed: {0}")]
    Malformed(String),
    #[error("team {team}: {left} left while the current team key was in force; a remaining member must rotate the key (`tapes team rotate`) before anything new is sealed")]
    RotationOwed { team: TeamId, left: String },
    #[error("age encryption failed: {0}")]
    Encrypt(String),
}

/// Every epoch key a member holds for a team.
pub struct KeyRing {
    keys: BTreeMap<u64, age::x25519::Identity>,
}

impl KeyRing {
    /// A ring with one fresh key, for a new team.
    pub fn genesis() -> (KeyRing, String) {
        let mut ring = KeyRing {
            keys: BTreeMap::new(),
        };
        let recipient = ring.add_epoch(0);
        (ring, recipient)
    }

    /// Adds a fresh key for `epoch` and returns its recipient.
    pub fn add_epoch(&mut self, epoch: u64) -> String {
        let key = age::x25519::Identity::generate();
        let recipient = key.to_public().to_string();
        self.keys.insert(epoch, key);
        recipient
    }

    pub fn epochs(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys.keys().copied()
    }

    /// Encrypts the ring to every member of `manifest` (the manifest's own members).
    pub fn wrap_for(
        &self,
        members: &[tapes_protocol::manifest::Member],
    ) -> Result<Vec<u8>, KeyError> {
        let mut plain = String::new();
        for (epoch, key) in &self.keys {
            plain.push_str(&format!("{epoch} {}\n", key.to_string().expose_secret()));
        }
        let recipients: Vec<age::x25519::Recipient> = members
            .iter()
            .map(|m| {
                age::x25519::Recipient::from_str(&m.age_recipient).map_err(|e| {
                    KeyError::Encrypt(format!(
                        "member {} has an invalid age recipient: {e}",
                        m.name
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        encrypt_to(
            recipients.iter().map(|r| r as &dyn age::Recipient),
            plain.as_bytes(),
        )
    }

    /// Decrypts the ring carried by `manifest` with `identity`.
    pub fn unwrap_from(
        manifest: &Manifest,
        identity: &age::x25519::Identity,
    ) -> Result<KeyRing, KeyError> {
        let team = manifest.team_id();
        let version = manifest.version;
        let plain = age::decrypt(identity, &manifest.keyring)
            .map_err(|_| KeyError::Unwrap { team, version })?;
        let text = String::from_utf8(plain).map_err(|_| KeyError::BadRing {
            team,
            version,
            why: "not UTF-8".into(),
        })?;
        let mut keys = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (epoch, secret) = line.split_once(' ').ok_or_else(|| KeyError::BadRing {
                team,
                version,
                why: "a line without an epoch".into(),
            })?;
            let epoch: u64 = epoch.parse().map_err(|_| KeyError::BadRing {
                team,
                version,
                why: "an epoch that is not a number".into(),
            })?;
            let key = age::x25519::Identity::from_str(secret).map_err(|_| KeyError::BadRing {
                team,
                version,
                why: format!("epoch {epoch} key does not parse"),
            })?;
            keys.insert(epoch, key);
        }
        let ring = KeyRing { keys };
        // The manifest's public epoch recipient must be the ring's key for that epoch; otherwise
        // whoever wrapped the ring handed members a key that cannot open what others seal.
        let current = ring
            .keys
            .get(&manifest.epoch)
            .map(|k| k.to_public().to_string());
        if current.as_deref() != Some(manifest.epoch_recipient.as_str()) {
            return Err(KeyError::BadRing {
                team,
                version,
                why: format!(
                    "it holds no key for the manifest's epoch {} recipient",
                    manifest.epoch
                ),
            });
        }
        Ok(ring)
    }

    /// The ring of the newest version of `chain` that lists `me` (so a removed member still
    /// opens what they had).
    pub fn for_member(
        chain: &TeamChain,
        me: &tapes_protocol::MemberId,
        identity: &age::x25519::Identity,
    ) -> Result<KeyRing, KeyError> {
        let version = chain
            .versions()
            .iter()
            .rev()
            .find(|v| v.manifest.member(me).is_some())
            .ok_or_else(|| KeyError::NotMember(chain.team_id()))?;
        KeyRing::unwrap_from(&version.manifest, identity)
    }
}

fn encrypt_to<'a>(
    recipients: impl Iterator<Item = &'a dyn age::Recipient>,
    plain: &[u8],
) -> Result<Vec<u8>, KeyError> {
    encrypt_after(recipients, plain, Vec::with_capacity(plain.len() + 256))
}

/// Appends the age encryption of `plain` to `out` (which may already hold a header).
fn encrypt_after<'a>(
    recipients: impl Iterator<Item = &'a dyn age::Recipient>,
    plain: &[u8],
    mut out: Vec<u8>,
) -> Result<Vec<u8>, KeyError> {
    let encryptor = age::Encryptor::with_recipients(recipients)
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    // age's stream adds 16 bytes per 64 KiB chunk and a header of about 200 bytes.
    out.reserve(plain.len() + plain.len() / 4096 + 256);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    writer
        .write_all(plain)
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// Content sealed to a team: `magic "TSEAL1" || team id (32) || epoch u64le || age ciphertext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub team: TeamId,
    pub epoch: u64,
    pub ciphertext: Vec<u8>,
}

const SEAL_MAGIC: &[u8; 6] = b"TSEAL1";

const SEAL_HEADER: usize = 46;

impl Sealed {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEAL_HEADER + self.ciphertext.len());
        put_header(&mut out, &self.team, self.epoch);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Sealed, KeyError> {
        let (team, epoch, ciphertext) = split_sealed(bytes)?;
        Ok(Sealed {
            team,
            epoch,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

fn put_header(out: &mut Vec<u8>, team: &TeamId, epoch: u64) {
    out.extend_from_slice(SEAL_MAGIC);
    out.extend_from_slice(team.as_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
}

/// The team, epoch and ciphertext of encoded sealed bytes, borrowed.
fn split_sealed(bytes: &[u8]) -> Result<(TeamId, u64, &[u8]), KeyError> {
    if bytes.len() < SEAL_HEADER || &bytes[..6] != SEAL_MAGIC {
        return Err(KeyError::Malformed(
            "not tapes team-sealed content (bad magic or too short)".into(),
        ));
    }
    let team =
        TeamId::from_slice(&bytes[6..38]).ok_or_else(|| KeyError::Malformed("team id".into()))?;
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&bytes[38..SEAL_HEADER]);
    Ok((team, u64::from_le_bytes(epoch), &bytes[SEAL_HEADER..]))
}

/// Seals `plaintext` to the current key epoch of a team. Refused while someone who left still
/// knows that epoch's key (a remaining member must rotate first: `team::rotate`, done
/// automatically by `team::seal_for`).
pub fn seal(chain: &TeamChain, plaintext: &[u8]) -> Result<Sealed, KeyError> {
    let (team, epoch, recipient) = current_epoch(chain)?;
    let ciphertext = encrypt_to(
        std::iter::once(&recipient as &dyn age::Recipient),
        plaintext,
    )?;
    Ok(Sealed {
        team,
        epoch,
        ciphertext,
    })
}

/// [`seal`] straight into the encoded form ([`Sealed::encode`]), without a copy of the
/// ciphertext: what goes on the wire, a batch of objects at a time.
pub fn seal_encoded(chain: &TeamChain, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (team, epoch, recipient) = current_epoch(chain)?;
    let mut out = Vec::new();
    put_header(&mut out, &team, epoch);
    encrypt_after(
        std::iter::once(&recipient as &dyn age::Recipient),
        plaintext,
        out,
    )
}

/// The team, epoch and recipient content is sealed to now; refused while a rotation is owed.
fn current_epoch(chain: &TeamChain) -> Result<(TeamId, u64, age::x25519::Recipient), KeyError> {
    let gone = chain.rotation_owed();
    if !gone.is_empty() {
        let names: Vec<&str> = gone.iter().map(|m| m.name.as_str()).collect();
        return Err(KeyError::RotationOwed {
            team: chain.team_id(),
            left: names.join(", "),
        });
    }
    let m = &chain.head().manifest;
    let recipient = age::x25519::Recipient::from_str(&m.epoch_recipient)
        .map_err(|e| KeyError::Encrypt(format!("manifest epoch recipient is invalid: {e}")))?;
    Ok((m.team_id(), m.epoch, recipient))
}

/// Opens sealed content with a member's ring.
pub fn open(ring: &KeyRing, team: &TeamId, sealed: &Sealed) -> Result<Vec<u8>, KeyError> {
    open_parts(ring, team, &sealed.team, sealed.epoch, &sealed.ciphertext)
}

/// [`open`] of encoded sealed bytes ([`Sealed::encode`]), reading the ciphertext in place.
pub fn open_encoded(ring: &KeyRing, team: &TeamId, bytes: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (found, epoch, ciphertext) = split_sealed(bytes)?;
    open_parts(ring, team, &found, epoch, ciphertext)
}

fn open_parts(
    ring: &KeyRing,
    team: &TeamId,
    found: &TeamId,
    epoch: u64,
    ciphertext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    if found != team {
        return Err(KeyError::WrongTeam {
            expected: *team,
            found: *found,
        });
    }
    let key = ring
        .keys
        .get(&epoch)
        .ok_or(KeyError::NoEpochKey { team: *team, epoch })?;
    let decryptor =
        age::Decryptor::new_buffered(ciphertext).map_err(|e| KeyError::Decrypt(e.to_string()))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(key as &dyn age::Identity))
        .map_err(|e| KeyError::Decrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(ciphertext.len());
    reader
        .read_to_end(&mut out)
        .map_err(|e| KeyError::Decrypt(e.to_string()))?;
    Ok(out)
}
