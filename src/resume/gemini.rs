//! Writes a session for gemini (placeholder until its writer lands).

use super::{AgentHomes, Render, Rendered, ResumeError};

pub fn render(_req: &Render, _homes: &AgentHomes) -> Result<Rendered, ResumeError> {
    Err(ResumeError::Render {
        what: "gemini".into(),
        why: "not written yet".into(),
    })
}
