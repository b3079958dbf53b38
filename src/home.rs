//! Where tapes keeps its files: `$TAPES_HOME`, or `~/.tapes`.
//!
//! ```text
//! <home>/store/          the sled database (objects, refs, settings)
//! <home>/identity/       node.key (ed25519, 0600), age.key (0600), profile.json
//! ```

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot find a home directory for ~/.tapes; set TAPES_HOME to where tapes should keep its data")]
    NoHome,
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$TAPES_HOME` if set and non-empty, else `~/.tapes`.
    pub fn locate() -> Result<Home, HomeError> {
        if let Some(dir) = std::env::var_os("TAPES_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home::at(PathBuf::from(dir)));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or(HomeError::NoHome)?;
        Ok(Home::at(PathBuf::from(home).join(".tapes")))
    }

    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    pub fn identity_dir(&self) -> PathBuf {
        self.root.join("identity")
    }

    /// Creates the home directory (0700: it holds keys) if missing.
    pub fn ensure(&self) -> Result<(), HomeError> {
        create_private_dir(&self.root)
    }
}

/// Creates `path` and its parents; the last component gets mode 0700 on Unix.
pub fn create_private_dir(path: &Path) -> Result<(), HomeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|source| HomeError::Create {
        path: path.to_path_buf(),
        source,
    })
}
