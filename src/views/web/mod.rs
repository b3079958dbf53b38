//! `tapes web`: the three views (My sessions, Shared with me, Team) in the browser, served on
//! this machine, with a JSON API the page uses and scripts may call (README "tapes web";
//! SPEC.md §13: views read the store and never change it).
//!
//! - One page, everything embedded ([`PAGE`]: inline CSS and script, charts drawn as SVG by the
//!   script): nothing is fetched from elsewhere, so it works offline. Its Content-Security-Policy
//!   allows only that script (by hash), requests to this server, and inline styles.
//! - Bound to loopback by default. Every request must carry the server's random token, as
//!   `?token=` (the URL `tapes web` prints) or `Authorization: Bearer <token>`; any other request
//!   is refused with 401 and a message saying so.
//! - The API answers JSON: `GET /api/sessions`, `/api/shared`, `/api/team` (rows of
//!   [`crate::views::listing`], filtered by `?q=<filter bar>`, at most `?limit=` rows, default
//!   500), `/api/stats` (the Team dashboard, `?since=30d&team=<name>`), `/api/session/<id>`
//!   (one session: its row, its lineage graph and its messages as HTML rendered by
//!   [`crate::views::html`], Markdown with raw HTML escaped). A bad filter is 400, an unknown
//!   or vanished session 404, each with `{"error": "…"}` saying what to do.
//! - The listings are read from the store at most every few seconds ([`REFRESH`]) or on
//!   `?refresh=1`; one session is always read fresh, so a session removed meanwhile is a clear
//!   404, not a stale page.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::session::pricing::PriceTable;
use crate::store::{Store, StoreError};
use crate::views::listing::{self, Facts, Filter, Listing, Snapshot};
use crate::views::search::{self, SearchIndex};

/// The page: HTML with its CSS and script inline.
pub const PAGE: &str = include_str!("page.html");

/// How long listings read from the store are reused.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Rows per listing response unless `?limit=` says otherwise.
const DEFAULT_LIMIT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on {addr}: {source}; pick another address with --bind (port 0 picks a free one)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot make a token: {0}")]
    Random(String),
    #[error("the web server stopped: {0}")]
    Serve(std::io::Error),
}

/// The server's state: the store, prices, the token and the listings last read.
pub struct Web {
    store: Arc<Store>,
    prices: PriceTable,
    token: String,
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    at: Instant,
    snapshot: Arc<Snapshot>,
    mine: Arc<Listing>,
    shared: Arc<Listing>,
    team: Arc<Listing>,
}

impl Web {
    /// A server for `store` with a fresh random token.
    pub fn new(store: Arc<Store>, prices: PriceTable) -> Result<Web, WebError> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| WebError::Random(e.to_string()))?;
        Ok(Web::with_token(store, prices, hex::encode(raw)))
    }

    /// A server with a given token (tests).
    pub fn with_token(store: Arc<Store>, prices: PriceTable, token: String) -> Web {
        Web {
            store,
            prices,
            token,
            cache: Mutex::new(None),
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The URL to open for a server listening on `addr`.
    pub fn url(&self, addr: SocketAddr) -> String {
        format!("http://{addr}/?token={}", self.token)
    }

    /// Whether a request carries the token (`?token=` or `Authorization: Bearer`).
    fn allowed(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let from_query = query_param(uri, "token");
        let from_header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|v| v.trim().to_string());
        [from_query, from_header]
            .into_iter()
            .flatten()
            .any(|t| same(t.as_bytes(), self.token.as_bytes()))
    }

    /// The listings, read again when older than [`REFRESH`] or when `refresh`.
    fn listings(&self, refresh: bool) -> Result<Arc<CachedView>, listing::ListingError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.as_ref() {
                if !refresh && c.at.elapsed() < REFRESH {
                    return Ok(Arc::new(CachedView::of(c)));
                }
            }
        }
        let now = crate::now_ms();
        let index = open_index(&self.store);
        let facts = match &index {
            Some(index) => Facts::Index(index),
            None => Facts::Summaries,
        };
        let snapshot = Snapshot::load(&self.store, facts, &self.prices, now)?;
        drop(index);
        let cached = Cached {
            at: Instant::now(),
            mine: Arc::new(snapshot.my_sessions()),
            shared: Arc::new(snapshot.shared_with_me()),
            team: Arc::new(snapshot.team(None)),
            snapshot: Arc::new(snapshot),
        };
        let view = CachedView::of(&cached);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cached);
        Ok(Arc::new(view))
    }
}

/// The search index brought up to date, or `None` when it cannot be used right now (another
/// tapes is writing it): then status is not shown and cost comes from summaries.
fn open_index(store: &Store) -> Option<SearchIndex> {
    let mut index = match SearchIndex::open(&search::index_dir(store)) {
        Ok(index) => index,
        Err(e) => {
            tracing::warn!(error = %e, "search index unavailable; showing summaries");
            return None;
        }
    };
    if let Err(e) = index.sync(store, None) {
        tracing::warn!(error = %e, "search index not updated; showing what it has");
    }
    Some(index)
}

/// Clones of the cached `Arc`s, so a request holds no lock.
struct CachedView {
    snapshot: Arc<Snapshot>,
    mine: Arc<Listing>,
    shared: Arc<Listing>,
    team: Arc<Listing>,
}

impl CachedView {
    fn of(c: &Cached) -> CachedView {
        CachedView {
            snapshot: c.snapshot.clone(),
            mine: c.mine.clone(),
            shared: c.shared.clone(),
            team: c.team.clone(),
        }
    }
}

/// Constant-time comparison of two tokens.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The decoded value of `name` in the URI's query.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("x"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const UNAUTHORIZED: &str = "401 Unauthorized: this tapes web server answers only requests that carry its token. Open the exact URL `tapes web` printed (it ends in ?token=…), or send `Authorization: Bearer <token>` from a script.\n";

/// The Content-Security-Policy of the page: its one inline script (by hash), requests to this
/// server only, inline styles, nothing else.
fn page_csp() -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let script = PAGE
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script);
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; connect-src 'self'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The token is in the address: keep it out of any other site's logs.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn unauthorized() -> Response {
    with_headers(
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::WWW_AUTHENTICATE, "Bearer"),
            ],
            UNAUTHORIZED,
        )
            .into_response(),
    )
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    with_headers(
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_response(status, &json!({ "error": message.to_string() }))
}

/// The routes: `/`, `/api/…`; anything else is 404 (after the token check).
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/sessions", get(|s, u, h| list(s, u, h, Which::Mine)))
        .route("/api/shared", get(|s, u, h| list(s, u, h, Which::Shared)))
        .route("/api/team", get(|s, u, h| list(s, u, h, Which::Team)))
        .route("/api/stats", get(stats))
        .route("/api/session/{id}", get(session))
        .fallback(not_found)
        .with_state(web)
}

/// Serves on `listener` (from [`bind`]) until `shutdown` resolves.
pub async fn serve(
    web: Arc<Web>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    axum::serve(listener, router(web))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(WebError::Serve)
}

/// Binds `addr` (an error that says what to do when it is taken).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, WebError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })
}

async fn page(State(web): State<Arc<Web>>, uri: Uri, headers: HeaderMap) -> Response {
    if !web.allowed(&uri, &headers) {
        return unauthorized();
    }
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE,
    )
        .into_response();
    if let Ok(csp) = HeaderValue::from_str(&page_csp()) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    with_headers(response)
}

async fn not_found(State(web): State<Arc<Web>>, uri: Uri, headers: HeaderMap) -> Response {
    if !web.allowed(&uri, &headers) {
        return unauthorized();
    }
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such page: {}; the API is /api/sessions, /api/shared, /api/team, /api/stats and /api/session/<id>",
            uri.path()
        ),
    )
}

#[derive(Clone, Copy)]
enum Which {
    Mine,
    Shared,
    Team,
}

/// Runs blocking store work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

async fn list(State(web): State<Arc<Web>>, uri: Uri, headers: HeaderMap, which: Which) -> Response {
    if !web.allowed(&uri, &headers) {
        return unauthorized();
    }
    let q = query_param(&uri, "q").unwrap_or_default();
    let refresh = query_param(&uri, "refresh").is_some_and(|v| v == "1");
    let limit = match query_param(&uri, "limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "limit must be a positive number of rows",
            )
        }
    };
    let result = blocking(move || {
        let view = web
            .listings(refresh)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let now = view.snapshot.now_ms;
        let listing = match which {
            Which::Mine => &view.mine,
            Which::Shared => &view.shared,
            Which::Team => &view.team,
        };
        let filter = Filter::parse(&q, now).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        listing
            .check(&filter)
            .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let hits = listing.matching(&filter);
        let offset = listing::local_offset_secs();
        let rows: Vec<Value> = hits
            .iter()
            .take(limit)
            .filter_map(|&i| listing.get(i))
            .map(|row| {
                let mut v = listing::row_json(row, now);
                if let Some(map) = v.as_object_mut() {
                    map.insert(
                        "group".into(),
                        listing::group_of(row.when_ms(), now, offset).label().into(),
                    );
                    map.insert("visibility_name".into(), row.visibility.label().into());
                    map.insert("from".into(), listing::text::origin(row).into());
                }
                v
            })
            .collect();
        Ok(json!({
            "total": listing.len(),
            "matched": hits.len(),
            "rows": rows,
            "counts": { "mine": view.mine.len(), "shared": view.shared.len(), "team": view.team.len() },
            "people": listing.people(),
            "projects": listing.projects(),
            "now_ms": now,
        }))
    })
    .await;
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(response) => response,
    }
}

async fn stats(State(web): State<Arc<Web>>, uri: Uri, headers: HeaderMap) -> Response {
    if !web.allowed(&uri, &headers) {
        return unauthorized();
    }
    let since = query_param(&uri, "since").unwrap_or_else(|| "30d".into());
    let team = query_param(&uri, "team").filter(|t| !t.trim().is_empty());
    let refresh = query_param(&uri, "refresh").is_some_and(|v| v == "1");
    let result = blocking(move || {
        let period = crate::duration::parse_duration_ms(&since)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("since: {e}")))?;
        let view = web
            .listings(refresh)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let dashboard = listing::team_dashboard(
            &web.store,
            &view.snapshot,
            team.as_deref(),
            &web.prices,
            period,
        )
        .map_err(|e| match e {
            listing::ListingError::Team(_) => error(StatusCode::NOT_FOUND, e),
            e => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        })?;
        let mut v = serde_json::to_value(&dashboard)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        if let Some(map) = v.as_object_mut() {
            map.insert(
                "teams".into(),
                json!(view
                    .snapshot
                    .teams
                    .iter()
                    .filter(|t| t.mine)
                    .map(|t| json!({ "id": t.id, "name": t.name }))
                    .collect::<Vec<_>>()),
            );
        }
        Ok(v)
    })
    .await;
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(response) => response,
    }
}

async fn session(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !web.allowed(&uri, &headers) {
        return unauthorized();
    }
    let result = blocking(move || {
        let store = &web.store;
        let sid = store.resolve_session(&id).map_err(|e| match e {
            StoreError::SessionNotFound(_) => {
                // A share not fetched yet is known by the listings, not the store.
                let shared = web.listings(false).ok().and_then(|v| {
                    id.parse()
                        .ok()
                        .and_then(|sid| v.shared.find(&sid).cloned())
                });
                match shared {
                    Some(row) => error(
                        StatusCode::NOT_FOUND,
                        listing::ListingError::NotFetched {
                            id: row.id.short(),
                        },
                    ),
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("session {id} is not in this store (removed, or never here); reload the list"),
                    ),
                }
            }
            StoreError::BadId(_) | StoreError::Ambiguous { .. } => error(StatusCode::BAD_REQUEST, e),
            e => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        })?;
        let gone = |e: listing::ListingError| match e {
            listing::ListingError::Gone { .. } | listing::ListingError::NotFetched { .. } => {
                error(StatusCode::NOT_FOUND, e)
            }
            e => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
        let record = store
            .session(&sid)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?
            .ok_or_else(|| gone(listing::ListingError::Gone { id: sid.short() }))?;
        let chain = match store.chain(&record.head) {
            Ok(chain) => chain,
            Err(StoreError::MissingNode(_)) if store.session(&sid).ok().flatten().is_none() => {
                return Err(gone(listing::ListingError::Gone { id: sid.short() }))
            }
            Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        };
        let now = crate::now_ms();
        let row = listing::describe(store, &sid, &chain, &web.prices, now).map_err(gone)?;
        let graph = listing::lineage_graph(store, &sid, now).map_err(gone)?;
        let mut html = String::new();
        crate::views::html::messages(&mut html, &chain);
        Ok(json!({
            "session": listing::row_json(&row, now),
            "from": listing::text::origin(&row),
            "visibility_name": row.visibility.label(),
            "lineage": graph,
            "html": html,
        }))
    })
    .await;
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_decode() {
        let uri: Uri = "/api/sessions?token=ab12&q=project%3Aapi+cost%3A%3E1&x"
            .parse()
            .unwrap();
        assert_eq!(query_param(&uri, "token").as_deref(), Some("ab12"));
        assert_eq!(
            query_param(&uri, "q").as_deref(),
            Some("project:api cost:>1")
        );
        assert_eq!(query_param(&uri, "x").as_deref(), Some(""));
        assert_eq!(query_param(&uri, "y"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%41"), "%zzA");
        assert_eq!(decode("caf%C3%A9"), "café");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }

    #[test]
    fn the_page_is_self_contained() {
        // The SVG namespace is a name, not something fetched.
        let page = PAGE.replace("http://www.w3.org/2000/svg", "");
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!PAGE.contains("<script src"));
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert!(page_csp().starts_with("default-src 'none'; script-src 'sha256-"));
    }
}
