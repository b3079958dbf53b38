//! Writes a session as the canonical transcript JSON (placeholder).

use super::{Rendered, Render, ResumeError};

pub fn render(_req: &Render) -> Result<Rendered, ResumeError> {
    Err(ResumeError::Render { what: "file".into(), why: "not written yet".into() })
}
