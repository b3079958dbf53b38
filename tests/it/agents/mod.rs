//! The real agent CLIs against a stand-in model API on 127.0.0.1 (issue "Resume anywhere").
//!
//! - [`StandIn`]: a small HTTP/1.1 server that records every request and answers each agent's
//!   API with one fixed reply: Anthropic Messages (`/v1/messages`, SSE), OpenAI Responses
//!   (`/v1/responses`, SSE) and Gemini (`:generateContent` / `:streamGenerateContent`). The reply
//!   shapes live beside it, one file per API.
//! - [`agent_bin`]: the CLIs pinned in `tests/agents/node/package.json`, installed by `.ci/run`
//!   (`npm ci`); a bare clone without them skips these tests with one line, CI requires them
//!   (`TAPES_REQUIRE_AGENTS=1`).

#![allow(dead_code)]

pub mod anthropic;
pub mod claude_cli;
pub mod codex_cli;
pub mod gemini;
pub mod gemini_cli;
pub mod openai;
pub mod people;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, decompressed when the client compressed it (zstd / gzip are not supported:
    /// such a body is kept as the bytes' lossy text).
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(value: serde_json::Value) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    /// Server-sent events: `(event name or None, data)` pairs.
    pub fn sse(events: &[(Option<&str>, serde_json::Value)]) -> Reply {
        let mut body = String::new();
        for (name, data) in events {
            if let Some(name) = name {
                body.push_str(&format!("event: {name}\n"));
            }
            body.push_str(&format!("data: {data}\n\n"));
        }
        Reply {
            status: 200,
            content_type: "text/event-stream",
            body: body.into_bytes(),
        }
    }

    pub fn not_found(what: &str) -> Reply {
        Reply {
            status: 404,
            content_type: "application/json",
            body:
                serde_json::json!({"error": {"message": format!("stand-in: no route for {what}")}})
                    .to_string()
                    .into_bytes(),
        }
    }
}

/// The stand-in model API. Every request is recorded; every model call gets `reply_text`.
pub struct StandIn {
    pub url: String,
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl StandIn {
    pub fn start(reply_text: &str) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in API");
        let port = listener.local_addr().expect("stand-in address").port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log = requests.clone();
        let text = reply_text.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = log.clone();
                let text = text.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &log, &text);
                });
            }
        });
        StandIn {
            url: format!("http://127.0.0.1:{port}"),
            port,
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The requests that were model calls (not model lists, token counts or telemetry).
    pub fn model_calls(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.method == "POST"
                    && (r.path.starts_with("/v1/messages") && !r.path.contains("count_tokens")
                        || r.path.contains("/responses")
                        || r.path.to_ascii_lowercase().contains("generatecontent"))
            })
            .collect()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Recorded>>, text: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let body = match header("content-encoding").as_deref() {
            Some("zstd") => zstd_decode(&body).unwrap_or(body),
            _ => body,
        };
        let recorded = Recorded {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let reply = route(&recorded, text);
        if let Ok(mut log) = log.lock() {
            log.push(recorded);
        }
        let head = format!(
            "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-cache\r\n\r\n",
            reply.status,
            reply.content_type,
            reply.body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(&reply.body)?;
        stream.flush()?;
    }
}

fn zstd_decode(_bytes: &[u8]) -> Option<Vec<u8>> {
    None
}

fn route(request: &Recorded, text: &str) -> Reply {
    let path = request.path.as_str();
    if path.starts_with("/v1/messages") {
        return anthropic::reply(request, text);
    }
    if path.contains("/responses") || path.contains("/models") && !path.contains("/v1beta") {
        return openai::reply(request, text);
    }
    if path.contains("/v1beta") || path.contains("generateContent") {
        return gemini::reply(request, text);
    }
    Reply::not_found(path)
}

/// The pinned agent CLI `name` (`claude`, `codex`, `gemini`), or None (after one line on
/// stderr) when `.ci/run`'s `npm ci` has not run here. CI sets `TAPES_REQUIRE_AGENTS=1`, which
/// makes a missing CLI a failure.
pub fn agent_bin(name: &str) -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agents/node/node_modules/.bin")
        .join(name);
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var_os("TAPES_REQUIRE_AGENTS").is_some() {
        panic!(
            "{} is missing and TAPES_REQUIRE_AGENTS is set: run `npm ci --prefix tests/agents/node`",
            bin.display()
        );
    }
    eprintln!(
        "skipped: the agent CLI `{name}` is not installed (npm ci --prefix tests/agents/node)"
    );
    None
}
