//! The Gemini API as Gemini CLI calls it (written by the Gemini part of this issue).

use super::{Recorded, Reply};

pub fn reply(request: &Recorded, _text: &str) -> Reply {
    Reply::not_found(&request.path)
}
