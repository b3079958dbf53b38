//! Importer stub: being written.

use std::path::Path;

use super::{FileReport, ImportError};

pub fn parse(path: &Path) -> Result<FileReport, ImportError> {
    Err(ImportError::Unrecognized { path: path.to_path_buf(), why: "not implemented yet".into() })
}
