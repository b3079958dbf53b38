//! The OpenAI Responses API as Codex calls it (written by the Codex part of this issue).

use super::{Recorded, Reply};

pub fn reply(request: &Recorded, _text: &str) -> Reply {
    Reply::not_found(&request.path)
}
