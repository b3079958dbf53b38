//! The relay's public web page (SPEC.md §16): `GET /s/<session id>` shows a publicly shared
//! session as one self-contained HTML page (inline CSS, no scripts, no external assets), and
//! `GET /` says only that this is a tapes relay. Team shares are never served here: the relay
//! cannot read them and [`RelayState::public_session`] never returns them. Once the sharer
//! unshares a session or its share expires, its page is a 404 from then on; responses are marked
//! `no-store` so no cache keeps serving it afterwards. The header's facts show all four token
//! counts (input, output, cache read, cache write) and the cost, priced with the built-in table
//! of [`crate::session::pricing`] (SPEC.md §13). The title and the messages are rendered by
//! [`crate::views::html`], the renderer `tapes web` uses too: Markdown with raw HTML escaped,
//! long tool output folded, the title from the session's title, the share's, or the first
//! prompt.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tapes_protocol::object::ObjectError;
use tapes_protocol::{Node, NodeId, SessionId, StoredObject};

use super::state::PublicSession;
use super::{RelayError, RelayState};
use crate::session::pricing::PriceTable;
use crate::session::SessionRecord;
use crate::share::{Audience, ShareRecord};
use crate::views::html::{escape, STYLE};
use crate::views::render;

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

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The page of a public session: header from the record and share, then every message in order.
fn page(
    id: &SessionId,
    record: &SessionRecord,
    share: &ShareRecord,
    chain: &[(NodeId, Node)],
) -> String {
    let title = crate::views::html::session_title(record, share.title.as_deref());
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1>", escape(&title));
    header(&mut body, record, share, chain);
    crate::views::html::messages(&mut body, chain);
    footer(&mut body, id, share);
    shell(&title, &body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Lineage, SessionSource, SessionSummary, Visibility};
    use tapes_protocol::node::{NodeBody, NodeMeta};
    use tapes_protocol::{ContentBlock, MemberId, Role, ToolResultPart, Usage};
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
        // Markdown text: the tags and `&` escaped (quotes need no escaping between tags).
        assert!(
            html.contains("&lt;script&gt;alert('x')&lt;/script&gt; &amp; \"this\""),
            "{html}"
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
    fn title_falls_back_to_share_then_first_prompt() {
        let from_share = page(
            &id(),
            &record(None),
            &share(Some("Shared title"), None),
            &[],
        );
        assert!(from_share.contains("<h1>Shared title</h1>"));
        let mut untitled = record(Some("  "));
        untitled.summary.first_prompt = "why does the <parser> fail?".into();
        let html = page(&id(), &untitled, &share(None, None), &[]);
        assert!(
            html.contains("<h1>why does the &lt;parser&gt; fail?</h1>"),
            "{html}"
        );
        assert!(!html.contains("Untitled"));
    }

    #[test]
    fn markdown_is_rendered_with_html_escaped() {
        let mut nodes = chain();
        nodes[1].1.body.blocks[0] =
            ContentBlock::text("**Because** of `escaping`:\n\n- one\n- <b>two</b>");
        let html = page(&id(), &record(Some("Md")), &share(None, None), &nodes);
        assert!(
            html.contains("<strong>Because</strong> of <code>escaping</code>"),
            "{html}"
        );
        assert!(html.contains("<li>&lt;b&gt;two&lt;/b&gt;</li>"), "{html}");
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
