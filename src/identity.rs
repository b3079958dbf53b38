//! Identity: who this tapes node is.
//!
//! An identity is an ed25519 signing key (its public half is the node id, the same key iroh
//! uses as the endpoint id, so peers dial you by it) and an age X25519 identity (teams wrap
//! their keys to its recipient). Both secrets live only in 0600 files under
//! `<home>/identity/`; they are never printed, logged or put in an error message. `Debug` on
//! [`Identity`] shows public halves only.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::home::{create_private_dir, Home, HomeError};

const NODE_KEY_FILE: &str = "node.key";
const AGE_KEY_FILE: &str = "age.key";
const PROFILE_FILE: &str = "profile.json";
const NODE_KEY_HEADER: &str =
    "# tapes node key (ed25519 secret seed, hex). Keep this file private.";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity in {0}; run `tapes init` first")]
    Missing(PathBuf),
    #[error("an identity already exists in {0}; `tapes id` shows it (delete the directory to start over)")]
    Exists(PathBuf),
    #[error("{path}: {what}; the file is damaged; restore it from a backup or run `tapes init` in a fresh TAPES_HOME")]
    Malformed { path: PathBuf, what: &'static str },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot gather randomness for a new key: {0}")]
    Random(String),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("cannot encrypt the identity export: {0}")]
    Seal(String),
    #[error("{path}: cannot open this identity export: {why}")]
    Unseal { path: PathBuf, why: String },
}

/// The parts of an identity that are safe to show anyone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

pub struct Identity {
    signing: SigningKey,
    age: age::x25519::Identity,
    pub profile: Profile,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id_hex())
            .field("age_recipient", &self.age_recipient().to_string())
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh identity from the operating system's randomness.
    pub fn generate(profile: Profile) -> Result<Identity, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        let signing = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(Identity {
            signing,
            age: age::x25519::Identity::generate(),
            profile,
        })
    }

    /// An identity from its keys (the same node on a second machine, whose key files were
    /// copied there).
    pub fn from_parts(
        signing: SigningKey,
        age: age::x25519::Identity,
        profile: Profile,
    ) -> Identity {
        Identity {
            signing,
            age,
            profile,
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The node id: the ed25519 public key, hex (what iroh calls the endpoint id).
    pub fn node_id_hex(&self) -> String {
        hex::encode(self.verifying_key().as_bytes())
    }

    pub fn age_recipient(&self) -> age::x25519::Recipient {
        self.age.to_public()
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn age_identity(&self) -> &age::x25519::Identity {
        &self.age
    }

    pub fn exists(home: &Home) -> bool {
        home.identity_dir().join(NODE_KEY_FILE).exists()
    }

    /// Writes the identity under `home`; refuses to overwrite an existing one.
    pub fn save(&self, home: &Home) -> Result<(), IdentityError> {
        let dir = home.identity_dir();
        if Identity::exists(home) {
            return Err(IdentityError::Exists(dir));
        }
        create_private_dir(&dir)?;
        let node_key = format!(
            "{NODE_KEY_HEADER}\n{}\n",
            hex::encode(self.signing.to_bytes())
        );
        write_secret(&dir.join(NODE_KEY_FILE), node_key.as_bytes())?;
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let age_key = format!(
            "# created: {created}\n# public key: {}\n{}\n",
            self.age_recipient(),
            self.age.to_string().expose_secret()
        );
        write_secret(&dir.join(AGE_KEY_FILE), age_key.as_bytes())?;
        let profile = serde_json::to_vec_pretty(&self.profile).expect("profile serializes");
        write_file(&dir.join(PROFILE_FILE), &profile, 0o644)?;
        Ok(())
    }

    pub fn load(home: &Home) -> Result<Identity, IdentityError> {
        let dir = home.identity_dir();
        if !Identity::exists(home) {
            return Err(IdentityError::Missing(home.root().to_path_buf()));
        }
        let node_path = dir.join(NODE_KEY_FILE);
        warn_if_readable_by_others(&node_path);
        let node_text = read(&node_path)?;
        let seed_hex = key_line(&node_text).ok_or(IdentityError::Malformed {
            path: node_path.clone(),
            what: "no key line",
        })?;
        let seed = hex::decode(seed_hex)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or(IdentityError::Malformed {
                path: node_path.clone(),
                what: "the key is not 64 hex digits",
            })?;
        let signing = SigningKey::from_bytes(&seed);

        let age_path = dir.join(AGE_KEY_FILE);
        warn_if_readable_by_others(&age_path);
        let age_text = read(&age_path)?;
        let age = key_line(&age_text)
            .and_then(|line| line.parse::<age::x25519::Identity>().ok())
            .ok_or(IdentityError::Malformed {
                path: age_path,
                what: "no valid AGE-SECRET-KEY line",
            })?;

        let profile_path = dir.join(PROFILE_FILE);
        let profile = match std::fs::read(&profile_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| IdentityError::Malformed {
                path: profile_path,
                what: "profile is not valid JSON",
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Profile::default(),
            Err(source) => {
                return Err(IdentityError::Io {
                    path: profile_path,
                    source,
                })
            }
        };
        Ok(Identity {
            signing,
            age,
            profile,
        })
    }
}

/// First line of an identity export's plaintext (inside the age encryption).
const EXPORT_HEADER: &str = "tapes identity export v1";

impl Identity {
    /// The identity as one passphrase-protected file (age scrypt, ASCII-armored): both secret
    /// keys and the profile, for `tapes init --from` on another device (SPEC §5.1). The
    /// plaintext never touches the disk.
    pub fn export_sealed(
        &self,
        passphrase: age::secrecy::SecretString,
    ) -> Result<Vec<u8>, IdentityError> {
        let seal = |e: std::io::Error| IdentityError::Seal(e.to_string());
        let profile = serde_json::to_string(&self.profile).expect("profile serializes");
        let plain = age::secrecy::SecretString::from(format!(
            "{EXPORT_HEADER}\nnode {}\nage {}\nprofile {profile}\n",
            hex::encode(self.signing.to_bytes()),
            self.age.to_string().expose_secret()
        ));
        let encryptor = age::Encryptor::with_user_passphrase(passphrase);
        let mut out = Vec::new();
        let armor =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
                .map_err(seal)?;
        let mut writer = encryptor
            .wrap_output(armor)
            .map_err(|e| IdentityError::Seal(e.to_string()))?;
        writer
            .write_all(plain.expose_secret().as_bytes())
            .map_err(seal)?;
        writer
            .finish()
            .and_then(|armor| armor.finish())
            .map_err(seal)?;
        Ok(out)
    }

    /// Opens what [`Identity::export_sealed`] wrote. `path` only names the file in errors.
    pub fn import_sealed(
        path: &Path,
        bytes: &[u8],
        passphrase: age::secrecy::SecretString,
    ) -> Result<Identity, IdentityError> {
        use std::io::Read;
        let unseal = |why: String| IdentityError::Unseal {
            path: path.to_path_buf(),
            why,
        };
        let decryptor =
            age::Decryptor::new(age::armor::ArmoredReader::new(bytes)).map_err(|e| {
                unseal(format!(
                    "it is not an identity export made by `tapes id export` ({e})"
                ))
            })?;
        if !decryptor.is_scrypt() {
            return Err(unseal(
                "it is not passphrase-protected, so it is not an identity export".into(),
            ));
        }
        let identity = age::scrypt::Identity::new(passphrase);
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                    unseal("wrong passphrase (or the file was altered)".into())
                }
                e => unseal(e.to_string()),
            })?;
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|e| unseal(format!("it does not decrypt completely ({e})")))?;
        let text = age::secrecy::SecretString::from(text);
        let mut lines = text.expose_secret().lines();
        let damaged = || unseal("its content is damaged".into());
        if lines.next() != Some(EXPORT_HEADER) {
            return Err(damaged());
        }
        let (mut node, mut age_key, mut profile) = (None, None, None);
        for line in lines {
            match line.split_once(' ') {
                Some(("node", v)) => node = Some(v),
                Some(("age", v)) => age_key = Some(v),
                Some(("profile", v)) => profile = Some(v),
                _ => {}
            }
        }
        let seed = node
            .and_then(|v| hex::decode(v).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(damaged)?;
        let age = age_key
            .and_then(|v| v.parse::<age::x25519::Identity>().ok())
            .ok_or_else(damaged)?;
        let profile = profile
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or_else(damaged)?;
        Ok(Identity {
            signing: SigningKey::from_bytes(&seed),
            age,
            profile,
        })
    }
}

/// The first line that is not a comment.
fn key_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a secret file: created 0600 from the start (never briefly world-readable), fsynced.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    write_file(path, bytes, 0o600)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "secret key file is readable by other users; run `chmod 600` on it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_0600_and_loads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let id = Identity::generate(Profile {
            name: "alice".into(),
            email: None,
        })
        .unwrap();
        id.save(&home).unwrap();
        let loaded = Identity::load(&home).unwrap();
        assert_eq!(loaded.node_id_hex(), id.node_id_hex());
        assert_eq!(
            loaded.age_recipient().to_string(),
            id.age_recipient().to_string()
        );
        assert_eq!(loaded.profile.name, "alice");
        #[cfg(unix)]
        for file in [NODE_KEY_FILE, AGE_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.identity_dir().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert!(matches!(id.save(&home), Err(IdentityError::Exists(_))));
    }

    #[test]
    fn an_export_opens_with_its_passphrase_only() {
        use age::secrecy::SecretString;
        let id = Identity::generate(Profile {
            name: "alice".into(),
            email: Some("a@example.com".into()),
        })
        .unwrap();
        let sealed = id
            .export_sealed(SecretString::from("correct horse".to_string()))
            .unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(
            text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
            "{text}"
        );
        assert!(!text.contains("AGE-SECRET-KEY"));
        assert!(!text.contains(&hex::encode(id.signing.to_bytes())));
        let path = Path::new("id.age");
        let back = Identity::import_sealed(
            path,
            &sealed,
            SecretString::from("correct horse".to_string()),
        )
        .unwrap();
        assert_eq!(back.node_id_hex(), id.node_id_hex());
        assert_eq!(
            back.age_recipient().to_string(),
            id.age_recipient().to_string()
        );
        assert_eq!(back.profile, id.profile);
        let wrong = Identity::import_sealed(path, &sealed, SecretString::from("wrong".to_string()))
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("wrong passphrase"), "{wrong}");
        let garbage = Identity::import_sealed(path, b"hello", SecretString::from("x".to_string()))
            .unwrap_err()
            .to_string();
        assert!(garbage.contains("not an identity export"), "{garbage}");
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let id = Identity::generate(Profile::default()).unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains(&hex::encode(id.signing.to_bytes())));
        assert!(!shown.contains("AGE-SECRET-KEY"));
    }
}
