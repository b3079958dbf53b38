//! The relay's public web page (SPEC.md §16): `GET /s/<session id>` shows a publicly shared
//! session as one self-contained HTML page (inline CSS, no scripts, no external assets), and
//! `GET /` says only that this is a tapes relay. Team shares are never served here: the relay
//! cannot read them and [`RelayState::public_session`] never returns them. Once the sharer
//! unshares a session or its share expires, its page is a 404 from then on; responses are marked
//! `no-store` so no cache keeps serving it afterwards. The header's facts show all four token
//! counts (input, output, cache read, cache write) and the cost, priced with the built-in table
//! of [`crate::session::pricing`] (SPEC.md §13).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{TimeZone, Utc};
use tapes_protocol::node::tool_result_text;
use tapes_protocol::object::ObjectError;
use tapes_protocol::{
    ContentBlock, ImageSource, Node, NodeId, SessionId, StoredObject, ToolResultPart,
};

use super::state::PublicSession;
use super::{RelayError, RelayState};
use crate::session::pricing::PriceTable;
use crate::session::SessionRecord;
use crate::share::{Audience, ShareRecord};
use crate::views::render;

/// A tool input or output longer than this many lines or bytes starts collapsed, so a page
/// stays readable when an agent read a whole file.
const FOLD_LINES: usize = 20;
const FOLD_BYTES: usize = 2_000;

/// Headers on every response. The CSP forbids scripts and every external load even if some text
/// escaped escaping; `no-store` makes unshare and expiry take effect at once through caches;
/// `no-referrer` keeps the page's address (which is the capability) out of other sites' logs;
/// `noindex` keeps link-only shares out of search engines.
const HEADERS: [(header::HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::HeaderName::from_static("x-robots-tag"), "noindex, nofollow"),
];

const NOT_FOUND: &str = "not found: this link was never shared, was unshared, or has expired";

const STYLE: &str = "\
body{margin:0;background:#f6f6f4;color:#1d1d1f;font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif}\
main{max-width:56rem;margin:0 auto;padding:1.5rem 1rem 3rem}\
h1{font-size:1.5rem;margin:0 0 .25rem}\
.meta{color:#555;font-size:.9rem;margin:.15rem 0}\
.note,.description{background:#fff;border-left:3px solid #8a8;padding:.5rem .75rem;margin:.75rem 0;white-space:pre-wrap}\
.msg{background:#fff;border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem .75rem}\
.msg>header{color:#666;font-size:.8rem;margin-bottom:.35rem}\
.role{font-weight:600;color:#333;text-transform:uppercase;letter-spacing:.03em}\
.role-user{border-left:4px solid #4a7bd0}\
.role-assistant{border-left:4px solid #3a9a5b}\
.role-tool{border-left:4px solid #b08a2e}\
.role-system,.role-developer{border-left:4px solid #888}\
.text{white-space:pre-wrap;overflow-wrap:anywhere}\
pre{background:#f3f3f0;padding:.5rem;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere;font:13px/1.4 ui-monospace,Menlo,Consolas,monospace;margin:.25rem 0}\
details{margin:.35rem 0}\
summary{cursor:pointer;color:#444;font-size:.85rem}\
.error>summary{color:#b00020}\
.placeholder{color:#777;font-style:italic}\
footer{color:#777;font-size:.8rem;margin-top:2rem}\
";

/// The relay's HTTP routes: `/` and `/s/{id}`; anything else is the not-found page.
pub fn router(state: Arc<RelayState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/s/{id}", get(session_page))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the public page on `listener` until the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<RelayState>,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

async fn index() -> Response {
    let body = "<p>This is a <strong>tapes</strong> relay. A publicly shared session has its own \
                link, <code>/s/&lt;session id&gt;</code>; nothing is listed here.</p>";
    respond(StatusCode::OK, shell("tapes relay", body))
}

async fn not_found() -> Response {
    not_found_page()
}

/// What looking up a page found, computed off the async runtime.
enum Lookup {
    Found(String),
    Missing,
    Failed(String),
}

async fn session_page(State(state): State<Arc<RelayState>>, Path(id): Path<String>) -> Response {
    // A malformed id is answered like an unknown one: the page does not tell a prober which
    // strings are well-formed ids.
    let Ok(session) = id.parse::<SessionId>() else {
        return not_found_page();
    };
    let now = crate::now_ms();
    // Reading the store and rendering a long session are blocking work.
    let lookup = tokio::task::spawn_blocking(move || lookup(&state, &session, now)).await;
    match lookup {
        Ok(Lookup::Found(html)) => respond(StatusCode::OK, html),
        Ok(Lookup::Missing) => not_found_page(),
        Ok(Lookup::Failed(why)) => {
            // The session id and the error only, never any of the session's content.
            tracing::warn!(session = %session, error = %why, "public page failed");
            server_error_page()
        }
        Err(join) => {
            tracing::warn!(session = %session, error = %join, "public page task failed");
            server_error_page()
        }
    }
}

fn lookup(state: &RelayState, session: &SessionId, now_ms: i64) -> Lookup {
    let public = match state.public_session(session, now_ms) {
        Ok(Some(public)) => public,
        Ok(None) => return Lookup::Missing,
        Err(e) => return Lookup::Failed(e.to_string()),
    };
    // The relay checked these at deposit; checking again here means a mistake elsewhere cannot
    // turn into a team session or a dead share on the open web.
    let share = &public.share;
    if share.record.session != *session
        || share.record.audience != Audience::Public
        || !share.is_live(now_ms)
    {
        return Lookup::Missing;
    }
    match session_html(&public) {
        Ok(html) => Lookup::Found(html),
        Err(e) => Lookup::Failed(e.to_string()),
    }
}

/// The page of a public session, its objects verified against their ids.
fn session_html(public: &PublicSession) -> Result<String, RelayError> {
    let chain = decode_chain(&public.objects)
        .map_err(|e| RelayError::Damaged(format!("public session object: {e}")))?;
    Ok(page(
        &public.id,
        &public.record,
        &public.share.record,
        &chain,
    ))
}

/// Decodes a chain's objects, each checked against the id it is stored under (cheap next to
/// rendering, and the relay's disk is not trusted to be intact).
fn decode_chain(objects: &[StoredObject]) -> Result<Vec<(NodeId, Node)>, ObjectError> {
    objects
        .iter()
        .map(|o| StoredObject::verify(&o.id, &o.bytes).map(|node| (o.id, node)))
        .collect()
}

fn respond(status: StatusCode, html: String) -> Response {
    (status, HEADERS, Html(html)).into_response()
}

fn not_found_page() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        shell("not found", &format!("<p>{}</p>", escape(NOT_FOUND))),
    )
}

fn server_error_page() -> Response {
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        shell(
            "relay error",
            "<p>The relay could not show this session right now. Try again later.</p>",
        ),
    )
}

/// A whole HTML document around `body` (already HTML); `title` is plain text.
fn shell(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex, nofollow\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><style>{STYLE}</style></head>\
         <body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

/// `s` as HTML text, safe both between tags and inside a quoted attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    push_escaped(&mut out, s);
    out
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `2025-09-18 10:00:07` UTC, for message headers.
fn clock(ms: Option<i64>) -> Option<String> {
    let t = Utc.timestamp_millis_opt(ms?).single()?;
    Some(t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// The page of a public session: header from the record and share, then every message in order.
fn page(
    id: &SessionId,
    record: &SessionRecord,
    share: &ShareRecord,
    chain: &[(NodeId, Node)],
) -> String {
    let title = non_empty(&record.title)
        .or(non_empty(&share.title))
        .unwrap_or("Untitled session");
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1>", escape(title));
    header(&mut body, record, share, chain);
    for (index, (_, node)) in chain.iter().enumerate() {
        message(&mut body, index, node);
    }
    footer(&mut body, id, share);
    shell(title, &body)
}

fn header(out: &mut String, record: &SessionRecord, share: &ShareRecord, chain: &[(NodeId, Node)]) {
    let _ = write!(
        out,
        "<p class=\"meta\">shared by <strong>{}</strong> (key {}) on {} UTC</p>",
        escape(&share.sharer_name),
        escape(&share.sharer.short()),
        escape(&render::time(Some(share.shared_ms))),
    );
    // The project is left out on purpose: it is often a local path, and the sharer reviewed the
    // messages, not the summary.
    let s = &record.summary;
    let mut facts = Vec::new();
    if !s.agent.is_empty() {
        facts.push(format!("agent {}", s.agent));
    }
    if !s.model.is_empty() {
        facts.push(format!("model {}", s.model));
    }
    facts.push(format!("{} messages", s.messages));
    if s.started_ms.is_some() {
        facts.push(format!("started {} UTC", render::time(s.started_ms)));
    }
    if let Some(ms) = s.duration_ms() {
        facts.push(format!("duration {}", render::duration(Some(ms))));
    }
    if !s.usage.is_zero() {
        facts.push(format!(
            "tokens {} in / {} out / {} cache read / {} cache write",
            render::count(s.usage.input_tokens),
            render::count(s.usage.output_tokens),
            render::count(s.usage.cache_read_tokens),
            render::count(s.usage.cache_write_tokens),
        ));
    }
    if let Some(cost) = cost_fact(chain) {
        facts.push(cost);
    }
    let _ = write!(out, "<p class=\"meta\">{}</p>", escape(&facts.join(" · ")));
    if let Some(note) = non_empty(&share.note) {
        let _ = write!(out, "<div class=\"note\">{}</div>", escape(note));
    }
    if let Some(description) = non_empty(&record.description) {
        let _ = write!(
            out,
            "<div class=\"description\">{}</div>",
            escape(description)
        );
    }
}

/// What the session cost, priced per message like `tapes stats` (SPEC.md §13) with the
/// built-in price table: `cost $0.42`, `cost $0.42 + unpriced m` when some model has no
/// price, `cost unknown (unpriced m)` when none has. `None` when no message records usage.
fn cost_fact(chain: &[(NodeId, Node)]) -> Option<String> {
    let prices = PriceTable::defaults();
    let mut cost = 0.0;
    let mut priced = false;
    let mut unpriced: BTreeSet<&str> = BTreeSet::new();
    for (_, node) in chain {
        let Some(usage) = node.meta.usage else {
            continue;
        };
        if usage.is_zero() {
            continue;
        }
        match prices.cost(&node.body.model, &usage) {
            Some(c) => {
                cost += c;
                priced = true;
            }
            None if node.body.model.is_empty() => {
                unpriced.insert("(no model)");
            }
            None => {
                unpriced.insert(node.body.model.as_str());
            }
        }
    }
    let unpriced = unpriced.into_iter().collect::<Vec<_>>().join(", ");
    match (priced, unpriced.is_empty()) {
        (false, true) => None,
        (true, true) => Some(format!("cost {}", crate::views::render::usd(cost))),
        (true, false) => Some(format!(
            "cost {} + unpriced {unpriced}",
            crate::views::render::usd(cost)
        )),
        (false, false) => Some(format!("cost unknown (unpriced {unpriced})")),
    }
}

fn footer(out: &mut String, id: &SessionId, share: &ShareRecord) {
    let _ = write!(out, "<footer>session {}", escape(&id.to_hex()));
    if let Some(expires) = share.expires_ms {
        let _ = write!(
            out,
            " · this link expires {} UTC",
            escape(&render::time(Some(expires)))
        );
    }
    out.push_str(" · shared through a tapes relay; the page stops working when the sharer unshares it</footer>");
}

fn message(out: &mut String, index: usize, node: &Node) {
    let role = node.body.role.as_str();
    let _ = write!(
        out,
        "<section class=\"msg role-{}\"><header>#{index} <span class=\"role\">{}</span>",
        escape(role),
        escape(role)
    );
    if !node.body.model.is_empty() {
        let _ = write!(out, " · {}", escape(&node.body.model));
    }
    if let Some(at) = clock(node.meta.timestamp_ms) {
        let _ = write!(out, " · {} UTC", escape(&at));
    }
    out.push_str("</header>");
    for block in &node.body.blocks {
        content_block(out, block);
    }
    out.push_str("</section>");
}

fn content_block(out: &mut String, block: &ContentBlock) {
    match block {
        ContentBlock::Text { text } => {
            let _ = write!(out, "<div class=\"text\">{}</div>", escape(text.trim_end()));
        }
        ContentBlock::Thinking { text, .. } => {
            // Reasoning is usually long and secondary: folded whatever its size.
            fold(out, "thinking", "thinking", text, false);
        }
        ContentBlock::ToolUse { name, input, .. } => {
            let input = pretty_json(input);
            fold(
                out,
                "tool-use",
                &format!("▸ {name}"),
                &input,
                !is_long(&input),
            );
        }
        ContentBlock::ToolResult {
            is_error, content, ..
        } => tool_result(out, *is_error, content),
        ContentBlock::Image { media_type, source } => {
            // Images are named, not embedded: the page stays small and nothing in it is fetched.
            let _ = write!(
                out,
                "<p class=\"placeholder\">[image {} {}]</p>",
                escape(media_type),
                escape(&image_size(source))
            );
        }
        ContentBlock::Other { kind, json } => {
            fold(
                out,
                "other",
                &format!("[{kind}]"),
                &pretty_json(json),
                false,
            );
        }
    }
}

fn tool_result(out: &mut String, is_error: bool, content: &[ToolResultPart]) {
    let text = tool_result_text(content);
    let images = content
        .iter()
        .filter(|p| matches!(p, ToolResultPart::Image { .. }))
        .count();
    let mut summary = format!(
        "◂ {} ({} lines)",
        if is_error { "error" } else { "ok" },
        text.lines().count()
    );
    if images > 0 {
        let _ = write!(summary, " + {images} image(s)");
    }
    let class = if is_error {
        "tool-result error"
    } else {
        "tool-result"
    };
    fold(out, class, &summary, text.trim_end(), !is_long(&text));
}

/// A `<details>` block, open when `open`; `summary` and `text` are plain text.
fn fold(out: &mut String, class: &str, summary: &str, text: &str, open: bool) {
    let _ = write!(
        out,
        "<details class=\"{}\"{}><summary>{}</summary><pre>{}</pre></details>",
        escape(class),
        if open { " open" } else { "" },
        escape(summary),
        escape(text)
    );
}

fn is_long(text: &str) -> bool {
    text.len() > FOLD_BYTES || text.lines().count() > FOLD_LINES
}

/// JSON indented for reading; anything that is not JSON is shown as it is.
fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_string())
}

fn image_size(source: &ImageSource) -> String {
    match source {
        ImageSource::Bytes { data } => render::bytes(data.len()),
        ImageSource::Reference { uri } => uri.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Lineage, SessionSource, SessionSummary, Visibility};
    use tapes_protocol::node::{NodeBody, NodeMeta};
    use tapes_protocol::{MemberId, Role, Usage};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn id() -> SessionId {
        SessionId([7; 16])
    }

    fn record(title: Option<&str>) -> SessionRecord {
        SessionRecord {
            head: NodeId([0; 32]),
            source: SessionSource::default(),
            title: title.map(String::from),
            parent_session: None,
            summary: SessionSummary {
                messages: 2,
                agent: "claude-code".into(),
                model: "claude-sonnet".into(),
                project: "/home/alice/secret-project".into(),
                ..SessionSummary::default()
            },
            created_ms: 0,
            updated_ms: 0,
            owner: None,
            visibility: Visibility::Public,
            tags: Vec::new(),
            description: None,
            note: None,
            expires_ms: None,
            lineage: Lineage::original(id()),
        }
    }

    fn share(title: Option<&str>, note: Option<&str>) -> ShareRecord {
        ShareRecord {
            session: id(),
            head: NodeId([0; 32]),
            audience: Audience::Public,
            sharer: MemberId([9; 32]),
            sharer_name: "Ana <ana@example.com>".into(),
            title: title.map(String::from),
            note: note.map(String::from),
            shared_ms: 1_758_189_600_000,
            expires_ms: None,
            revoked: false,
        }
    }

    fn node(parent: Option<NodeId>, role: Role, blocks: Vec<ContentBlock>) -> (NodeId, Node) {
        let node = Node {
            body: NodeBody {
                parent,
                role,
                model: String::new(),
                blocks,
            },
            meta: NodeMeta {
                timestamp_ms: Some(1_758_189_607_000),
                ..NodeMeta::default()
            },
        };
        (node.id(), node)
    }

    fn chain() -> Vec<(NodeId, Node)> {
        let first = node(
            None,
            Role::User,
            vec![ContentBlock::text(
                "why does <script>alert('x')</script> & \"this\" fail?",
            )],
        );
        let second = node(
            Some(first.0),
            Role::Assistant,
            vec![
                ContentBlock::text("Because of the escaping."),
                ContentBlock::ToolUse {
                    id: "t1".into(),
                    name: "Read".into(),
                    input: "{\"path\":\"<b>.rs\"}".into(),
                },
                ContentBlock::ToolResult {
                    tool_use_id: "t1".into(),
                    is_error: false,
                    content: vec![ToolResultPart::Text {
                        text: "line\n".repeat(100),
                    }],
                },
            ],
        );
        vec![first, second]
    }

    #[test]
    fn escape_covers_html_specials() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ✓"), "plain ✓");
    }

    #[test]
    fn page_escapes_message_content() {
        let html = page(
            &id(),
            &record(Some("Fix the parser")),
            &share(None, None),
            &chain(),
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;this&quot;")
        );
        assert!(html.contains("&lt;b&gt;.rs"));
        assert!(html.contains("Ana &lt;ana@example.com&gt;"));
    }

    #[test]
    fn page_shows_title_and_messages() {
        let html = page(
            &id(),
            &record(Some("Fix the parser")),
            &share(Some("other"), Some("look at #1")),
            &chain(),
        );
        assert!(html.contains("<title>Fix the parser</title>"));
        assert!(html.contains("<h1>Fix the parser</h1>"));
        assert!(html.contains("Because of the escaping."));
        assert!(html.contains("look at #1"));
        assert!(html.contains("agent claude-code · model claude-sonnet"));
        assert!(html.contains("2025-09-18 10:00:07 UTC"));
        assert!(
            !html.contains("secret-project"),
            "the project stays off the page"
        );
        // A 100-line tool output starts folded; the short tool input starts open.
        assert!(html.contains("<details class=\"tool-result\"><summary>◂ ok (100 lines)"));
        assert!(html.contains("<details class=\"tool-use\" open>"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn header_shows_all_four_token_counts_and_the_cost() {
        let mut costly = record(Some("Costs"));
        let usage = Usage {
            input_tokens: 47,
            output_tokens: 4_500,
            cache_read_tokens: 170_000,
            cache_write_tokens: 12_000,
        };
        costly.summary.usage = usage;
        let mut nodes = chain();
        nodes[1].1.body.model = "claude-sonnet-4-5-20250929".into();
        nodes[1].1.meta.usage = Some(usage);
        // claude-sonnet-4-5: 47·3 + 4500·15 + 170000·0.30 + 12000·3.75 = 141 + 67500 + 51000 +
        // 45000 = 163641 per 1M → $0.16.
        let html = page(&id(), &costly, &share(None, None), &nodes);
        assert!(
            html.contains(
                "tokens 47 in / 4.5k out / 170.0k cache read / 12.0k cache write · cost $0.16"
            ),
            "{html}"
        );

        // A model with no price is named, not counted as free.
        nodes[1].1.body.model = "gemini-3-pro-image-preview".into();
        let html = page(&id(), &costly, &share(None, None), &nodes);
        assert!(
            html.contains("cost unknown (unpriced gemini-3-pro-image-preview)"),
            "{html}"
        );
        // No usage recorded: no cost fact.
        let html = page(&id(), &record(None), &share(None, None), &chain());
        assert!(!html.contains("cost "), "{html}");
    }

    #[test]
    fn title_falls_back_to_share_then_untitled() {
        let from_share = page(
            &id(),
            &record(None),
            &share(Some("Shared title"), None),
            &[],
        );
        assert!(from_share.contains("<h1>Shared title</h1>"));
        let untitled = page(&id(), &record(Some("  ")), &share(None, None), &[]);
        assert!(untitled.contains("<h1>Untitled session</h1>"));
    }

    #[test]
    fn decode_chain_rejects_objects_under_the_wrong_id() {
        let objects: Vec<StoredObject> = chain()
            .iter()
            .map(|(_, n)| StoredObject::encode(n))
            .collect();
        let decoded = decode_chain(&objects).expect("intact objects decode");
        assert_eq!(decoded, chain());
        let mut swapped = objects.clone();
        swapped[0].id = objects[1].id;
        assert!(decode_chain(&swapped).is_err());
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn unknown_and_malformed_ids_are_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path()).expect("store");
        let state =
            RelayState::open(Arc::new(store), super::super::RelayConfig::default()).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, Arc::new(state)));

        let index = get(addr, "/").await;
        assert!(index.starts_with("HTTP/1.1 200"), "{index}");
        assert!(index.contains("tapes"));
        assert!(index
            .to_ascii_lowercase()
            .contains("cache-control: no-store"));

        for path in [
            format!("/s/{}", id().to_hex()),
            "/s/not-hex".to_string(),
            "/s/%3Cscript%3E".to_string(),
            "/elsewhere".to_string(),
        ] {
            let response = get(addr, &path).await;
            assert!(response.starts_with("HTTP/1.1 404"), "{path}: {response}");
            assert!(response.contains("was never shared, was unshared, or has expired"));
            assert!(!response.contains("<script>"));
        }
        server.abort();
    }
}
