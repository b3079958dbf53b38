//! Recognizing which importer a file belongs to, by name and by its first record.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The formats tapes imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Claude,
    Codex,
    GeminiChat,
    /// Gemini CLI 0.61's JSONL session log (`chats/session-*.jsonl`).
    GeminiLog,
    MessagesJson,
    TapesDb,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Claude => "claude",
            SourceFormat::Codex => "codex",
            SourceFormat::GeminiChat | SourceFormat::GeminiLog => "gemini",
            SourceFormat::MessagesJson => "messages-json",
            SourceFormat::TapesDb => "tapes-db",
        }
    }
}

/// Which format `path` is in, or `Err(why)` when it is none of them.
pub fn detect_format(path: &Path) -> Result<SourceFormat, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut head = [0u8; 16];
    let n = file.read(&mut head).map_err(|e| e.to_string())?;
    if n == 16 && &head == b"SQLite format 3\0" {
        return Ok(SourceFormat::TapesDb);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "jsonl" => detect_jsonl(path),
        "json" => detect_json(path),
        _ => Err(format!("unknown extension `.{ext}`")),
    }
}

fn detect_jsonl(path: &Path) -> Result<SourceFormat, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    for line in BufReader::new(file).lines().take(20) {
        let line = line.map_err(|e| e.to_string())?;
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if matches!(
            kind,
            "session_meta" | "response_item" | "event_msg" | "turn_context"
        ) {
            return Ok(SourceFormat::Codex);
        }
        if value.get("projectHash").is_some() {
            // Gemini CLI 0.61's session log: a header line with `sessionId` and `projectHash`.
            return Ok(SourceFormat::GeminiLog);
        }
        if value.get("$set").is_some() || value.get("$rewindTo").is_some() {
            // A Gemini CLI log's update line before any header (never first as the CLI writes
            // it, but a header further down still names the format).
            continue;
        }
        if value.get("sessionId").is_some() || value.get("uuid").is_some() || kind == "summary" {
            return Ok(SourceFormat::Claude);
        }
    }
    Err("no Claude Code, Codex or Gemini CLI record in its first 20 lines".into())
}

fn detect_json(path: &Path) -> Result<SourceFormat, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
    let messages = value.get("messages").and_then(|m| m.as_array());
    match messages {
        Some(list) if value.get("sessionId").is_some() && list.iter().any(|m| m.get("type").is_some()) => {
            Ok(SourceFormat::GeminiChat)
        }
        Some(_) => Ok(SourceFormat::MessagesJson),
        None if value.is_array() => Err("a JSON array (a Gemini CLI prompt log holds only prompts; import the chat session files instead)".into()),
        None => Err("a JSON object without `messages`".into()),
    }
}
