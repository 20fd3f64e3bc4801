//! `sealfs console`: a local web console for operators, over the same
//! vault library as the CLI.
//!
//! Loopback only, unless `--allow-remote` with a TLS certificate and key
//! (then HTTPS, with a `Secure` cookie; see [`tls`]). The URL printed at
//! start carries a one-time token; its first use sets an HttpOnly,
//! SameSite=Strict session cookie, the token is spent, and the redirect
//! that follows hands the page its key (the CSRF token) in the URL
//! fragment, which the page keeps in the tab's `sessionStorage`. Browsers
//! send a cookie to every port of a host, so the cookie alone opens
//! nothing: every `/api/` request, reads included, needs the key in the
//! `X-CSRF-Token` header. Every response carries a strict
//! Content-Security-Policy (no inline script), `X-Frame-Options: DENY`
//! and `Cache-Control: no-store`. Values travel only in request and
//! response bodies (never URLs), are never logged or echoed in errors,
//! and appear in no page's initial HTML. Reveal, store and delete go to
//! the audit log with `console` as their source, failures included;
//! reveals are rate limited per session.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::view::{EntryJson, RefCheckJson};
use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sealfs::audit::{self, AuditLog, Caller, Event};
use sealfs::{
    Chain, ErrorKind, SensitiveBytes, Vault, VaultConfig, VaultError, VaultRef, VaultScope,
};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

mod tls;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

const CSRF_HEADER: &str = "x-csrf-token";
/// How long open connections may hold up the exit after Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Bytes of the audit log's end read for its tail.
const AUDIT_TAIL_BYTES: u64 = 1 << 20;
/// Reveals allowed per session in [`REVEAL_WINDOW`].
const REVEAL_LIMIT: usize = 10;
const REVEAL_WINDOW: Duration = Duration::from_secs(60);
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// What the console needs from the command line.
pub struct ConsoleOptions {
    pub listen: SocketAddr,
    pub allow_remote: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub config: Option<PathBuf>,
    pub vault: VaultConfig,
    pub audit_log: PathBuf,
}

struct Session {
    csrf: String,
    reveals: VecDeque<Instant>,
}

struct Console {
    opts: ConsoleOptions,
    /// The one-time token of the printed URL, until it is used.
    token: Mutex<Option<String>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The session cookie's name, with the port in it: cookies are shared
    /// by every port of a host, and two consoles must not clobber each
    /// other's.
    cookie: String,
    /// Host header values accepted over plain HTTP (against DNS
    /// rebinding); `None` over TLS, where a rebound name fails the
    /// certificate check instead.
    hosts: Option<Vec<String>>,
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Refuses a listen address other than loopback unless remote access
/// was asked for explicitly, with TLS.
pub fn check_listen(listen: &SocketAddr, allow_remote: bool, tls: bool) -> Result<()> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if !allow_remote {
        bail!("refusing to listen on {listen}: the console serves loopback only (127.0.0.1 or ::1); give --allow-remote with --tls-cert and --tls-key to expose it");
    }
    if !tls {
        bail!("--allow-remote needs --tls-cert and --tls-key: the console never serves secrets over plain HTTP beyond loopback");
    }
    Ok(())
}

/// The host part of the printed URL: the machine's name when listening
/// on every interface.
fn url_host(addr: &SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        #[cfg(unix)]
        if let Some(name) = nix::unistd::gethostname()
            .ok()
            .and_then(|n| n.into_string().ok())
        {
            return format!("{name}:{}", addr.port());
        }
        return format!("localhost:{}", addr.port());
    }
    addr.to_string()
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(opts: ConsoleOptions) -> Result<()> {
    check_listen(&opts.listen, opts.allow_remote, opts.tls.is_some())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the server runtime")?;
    rt.block_on(serve(opts))
}

async fn serve(opts: ConsoleOptions) -> Result<()> {
    // A bad certificate or key is reported before anything listens.
    let tls_config = match &opts.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let token = random_token();
    let hosts = tls_config.is_none().then(|| {
        let mut hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
        if addr.ip().is_loopback() && addr.is_ipv4() {
            hosts.push(format!("127.0.0.1:{}", addr.port()));
        }
        // A browser leaves the default port out of Host.
        if addr.port() == 80 {
            hosts.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
        }
        hosts
    });
    let console = Arc::new(Console {
        opts,
        token: Mutex::new(Some(token.clone())),
        sessions: Mutex::new(HashMap::new()),
        cookie: format!("sealfs_console_{}", addr.port()),
        hosts,
    });
    let body_limit = console.opts.vault.max_value_size * 2 + 4096;
    let app = Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/session", get(session_info))
        .route("/api/scopes", get(scopes))
        .route("/api/secrets", get(list).post(store))
        .route("/api/inspect", get(inspect))
        .route("/api/reveal", post(reveal))
        .route("/api/delete", post(delete))
        .route("/api/audit", get(audit_tail))
        .route("/api/config", get(config_refs))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            guard,
        ))
        .with_state(console);
    let scheme = if tls_config.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "sealfs console: {scheme}://{}/?token={token}",
        url_host(&addr)
    );
    println!("(the link works once; Ctrl-C stops the console)");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let served = match tls_config {
        Some(config) => serve_until_stopped(tls::TlsListener::new(listener, config)?, app).await,
        None => serve_until_stopped(listener, app).await,
    };
    served.context("the console server failed")?;
    eprintln!("sealfs console: stopped");
    Ok(())
}

/// Serves until a signal, then lets open requests finish for at most
/// [`SHUTDOWN_GRACE`]: a stalled client cannot keep the console running.
async fn serve_until_stopped<L>(listener: L, app: Router) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown().await;
        let _ = stop_tx.send(true);
    });
    let grace = async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = std::future::IntoFuture::into_future(server) => served,
        () = grace => {
            eprintln!("sealfs console: connections still open; closing them");
            Ok(())
        }
    }
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// An API error: a status and one clear line, as JSON, and the kind of
/// error for the audit log.
struct ApiError {
    status: StatusCode,
    message: String,
    kind: ErrorKind,
}

impl ApiError {
    /// An error of the console itself (not of the vault): its kind follows
    /// from the status.
    fn new(status: StatusCode, message: String) -> ApiError {
        let kind = match status {
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => ErrorKind::InvalidInput,
            StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Unavailable,
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ErrorKind::Denied,
            _ => ErrorKind::Other,
        };
        ApiError {
            status,
            message,
            kind,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg.into())
}

/// The one mapping of an error's kind to an HTTP status.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Exists | ErrorKind::NotEmpty => StatusCode::CONFLICT,
        ErrorKind::Denied => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn from_vault(e: VaultError) -> ApiError {
    ApiError {
        status: status_of(e.kind()),
        message: Chain(&e).to_string(),
        kind: e.kind(),
    }
}

/// Headers on every response, and the checks every request passes: a
/// known Host (no DNS rebinding), a session for the API, and the CSRF
/// token for anything that changes state.
async fn guard(
    State(c): State<Arc<Console>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut resp = match check(&c, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    // axum's own refusals (body too large, a bad query string, a wrong
    // method) are plain text: the page shows one JSON line for each.
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = resp.status();
    if api && !is_json && (status.is_client_error() || status.is_server_error()) {
        let msg = match status {
            StatusCode::PAYLOAD_TOO_LARGE => format!(
                "the request is too large: values are limited to {} bytes",
                c.opts.vault.max_value_size
            ),
            StatusCode::BAD_REQUEST => {
                "the query string is not what this endpoint expects".to_owned()
            }
            StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not take that method".to_owned(),
            _ => status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_owned(),
        };
        resp = ApiError::new(status, msg).into_response();
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

fn check(c: &Console, req: &axum::extract::Request) -> ApiResult<()> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if c.hosts
        .as_ref()
        .is_some_and(|hosts| !hosts.iter().any(|h| h == host))
    {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unexpected Host header".into(),
        ));
    }
    if !req.uri().path().starts_with("/api/") {
        return Ok(());
    }
    let sid = session_id(req.headers(), &c.cookie).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not signed in: open the URL `sealfs console` printed".into(),
        )
    })?;
    let sessions = lock(&c.sessions);
    let session = sessions.get(&sid).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown session: open the URL `sealfs console` printed".into(),
        )
    })?;
    // Every API request, reads included: the cookie reaches every port
    // of this host, the page key only this console's page.
    let sent = req
        .headers()
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    if !bool::from(sent.ct_eq(session.csrf.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: open the URL `sealfs console` printed in this tab".into(),
        ));
    }
    Ok(())
}

fn session_id(headers: &HeaderMap, cookie: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == cookie)
        .map(|(_, v)| v.to_owned())
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `/?token=...` once: a session cookie, then a redirect to `/` so the
/// token leaves the address bar, with the page key (CSRF token) in the
/// fragment, which never reaches a server or a log. `/` with a session:
/// the page.
async fn index(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    let signed_in =
        session_id(&headers, &c.cookie).is_some_and(|s| lock(&c.sessions).contains_key(&s));
    if let Some(given) = q.token {
        if signed_in {
            // The link again, in a browser already signed in.
            return Redirect::to("/").into_response();
        }
        let mut token = lock(&c.token);
        let ok = token
            .as_ref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(given.as_bytes())));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                "This console link was already used or is wrong. Start `sealfs console` again for a new one.",
            )
                .into_response();
        }
        *token = None;
        let sid = random_token();
        let csrf = random_token();
        lock(&c.sessions).insert(
            sid.clone(),
            Session {
                csrf: csrf.clone(),
                reveals: VecDeque::new(),
            },
        );
        let secure = if c.opts.tls.is_some() { "; Secure" } else { "" };
        let cookie = format!(
            "{}={sid}; HttpOnly; SameSite=Strict; Path=/{secure}",
            c.cookie
        );
        let mut resp = Redirect::to(&format!("/#csrf={csrf}")).into_response();
        resp.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("hex cookie"),
        );
        return resp;
    }
    if !signed_in {
        return (
            StatusCode::UNAUTHORIZED,
            "Not signed in: open the URL that `sealfs console` printed.",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

/// The vault, or `None` when none has been created yet (reads then see an
/// empty vault; storing creates it).
fn open_existing(c: &Console) -> ApiResult<Option<Vault>> {
    let config = VaultConfig {
        create: false,
        ..c.opts.vault.clone()
    };
    match Vault::open(config) {
        Ok(v) => Ok(Some(v)),
        Err(VaultError::NoVault(_)) => Ok(None),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot open the vault: {}", Chain(&e)),
        )),
    }
}

/// The vault, for actions on one secret: none yet is an error.
fn open_vault(c: &Console) -> ApiResult<Vault> {
    open_existing(c)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "there is no vault at {} yet: store a secret to create it",
                c.opts.vault.vault_dir.display()
            ),
        )
    })
}

/// Runs vault work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".into(),
        ))
    })
}

fn record(c: &Console, op: &str, target: &str, failure: Option<&str>) {
    let mut event = Event::new("console", op, target.to_owned(), Caller::current());
    if let Some(why) = failure {
        event = event.failed(why);
    }
    match AuditLog::open_checked(&c.opts.audit_log, c.opts.vault.allow_foreign_owner) {
        Ok(log) => log.record(&event),
        Err(e) => tracing::warn!(error = %e, "cannot open the audit log"),
    }
}

/// Records the outcome of an action on `r`, failures with their kind.
fn audited<T>(c: &Console, op: &str, r: &VaultRef, result: &ApiResult<T>) {
    let failure = result.as_ref().err().map(|e| e.kind.audit_label());
    record(c, op, &r.to_string(), failure);
}

/// A ref from the page. The error never repeats the text: it may be a
/// secret pasted into the wrong field.
fn parse_ref(s: &str) -> ApiResult<VaultRef> {
    VaultRef::parse(s.trim()).map_err(|e| bad(format!("bad ref: {}", e.without_input())))
}

fn sid_of(c: &Console, headers: &HeaderMap) -> String {
    session_id(headers, &c.cookie).unwrap_or_default()
}

async fn session_info(State(c): State<Arc<Console>>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({
        "vault_dir": c.opts.vault.vault_dir.display().to_string(),
        "config": c.opts.config.as_ref().map(|p| p.display().to_string()),
        "audit_log": c.opts.audit_log.display().to_string(),
        "max_value_size": c.opts.vault.max_value_size,
    })))
}

async fn scopes(State(c): State<Arc<Console>>) -> ApiResult<Json<serde_json::Value>> {
    blocking(move || {
        let Some(vault) = open_existing(&c)? else {
            // No vault yet: only the global scope exists.
            return Ok(Json(json!({ "scopes": ["global"] })));
        };
        let mut names: Vec<String> = vault
            .scopes()
            .map_err(from_vault)?
            .into_iter()
            .map(|s| s.scope.to_string())
            .collect();
        names.sort();
        names.dedup();
        Ok(Json(json!({ "scopes": names })))
    })
    .await
}

#[derive(Deserialize)]
struct ScopeQuery {
    scope: Option<String>,
}

async fn list(
    State(c): State<Arc<Console>>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let scope = match q.scope.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<VaultScope>()
                .map_err(|e| bad(format!("bad scope: {}", e.without_input())))?,
        ),
        None => None,
    };
    blocking(move || {
        let Some(vault) = open_existing(&c)? else {
            return Ok(Json(json!({ "entries": [] })));
        };
        let entries: Vec<EntryJson> = vault
            .list(scope.as_ref())
            .map_err(from_vault)?
            .iter()
            .map(EntryJson::of)
            .collect();
        Ok(Json(json!({ "entries": entries })))
    })
    .await
}

#[derive(Deserialize)]
struct RefQuery {
    #[serde(rename = "ref")]
    vault_ref: String,
}

async fn inspect(
    State(c): State<Arc<Console>>,
    Query(q): Query<RefQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let r = parse_ref(&q.vault_ref)?;
    blocking(move || {
        let vault = open_vault(&c)?;
        match vault.entry(&r).map_err(from_vault)? {
            Some(e) => Ok(Json(json!({ "entry": EntryJson::of(&e) }))),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("secret not found: {r}"),
            )),
        }
    })
    .await
}

/// A JSON body, with errors that never echo its content (a value could be
/// in it).
fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|_| bad("the request body is not the JSON this endpoint expects"))
}

#[derive(Deserialize)]
struct StoreBody {
    #[serde(rename = "ref")]
    vault_ref: String,
    value: String,
    /// Confirms a write into a session another uid created through the
    /// mount (that uid reads it); without it such a write is 409.
    #[serde(default)]
    into_others_session: bool,
}

async fn store(
    State(c): State<Arc<Console>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let req: StoreBody = json_body(&body)?;
    let r = parse_ref(&req.vault_ref)?;
    let confirmed = req.into_others_session;
    let value = SensitiveBytes::from(req.value);
    // Refused before the vault is opened (or created).
    let checked = sealfs::check_value(&r, &value, c.opts.vault.max_value_size).map_err(from_vault);
    if checked.is_err() {
        audited(&c, "set", &r, &checked);
        checked?;
    }
    blocking(move || {
        let config = VaultConfig {
            create: true,
            ..c.opts.vault.clone()
        };
        let result = Vault::open(config)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot open the vault: {}", Chain(&e)),
                )
            })
            .and_then(|vault| {
                match vault.others_session(r.scope()).map_err(from_vault)? {
                    Some(uid) if !confirmed => Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!(
                            "{} belongs to {}, who created it through the mount and can read what is stored there; confirm to store {r} anyway",
                            r.scope(),
                            sealfs::describe_uid(uid)
                        ),
                    )),
                    _ => vault.put(&r, value).map_err(from_vault),
                }
            });
        audited(&c, "set", &r, &result);
        let e = result?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "entry": EntryJson::of(&e) })),
        ))
    })
    .await
}

#[derive(Deserialize)]
struct RefBody {
    #[serde(rename = "ref")]
    vault_ref: String,
}

async fn reveal(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let req: RefBody = json_body(&body)?;
    let r = parse_ref(&req.vault_ref)?;
    {
        let mut sessions = lock(&c.sessions);
        let s = sessions
            .get_mut(&sid_of(&c, &headers))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown session".into()))?;
        let now = Instant::now();
        while s
            .reveals
            .front()
            .is_some_and(|t| now.duration_since(*t) > REVEAL_WINDOW)
        {
            s.reveals.pop_front();
        }
        if s.reveals.len() >= REVEAL_LIMIT {
            drop(sessions);
            record(&c, "reveal", &r.to_string(), Some("rate limited"));
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("at most {REVEAL_LIMIT} reveals a minute; wait a little"),
            ));
        }
        s.reveals.push_back(now);
    }
    blocking(move || {
        let result = open_vault(&c).and_then(|vault| vault.read(&r).map_err(from_vault));
        let op = match &result {
            Ok((_, true)) => "consume",
            _ => "reveal",
        };
        audited(&c, op, &r, &result);
        let (value, consumed) = result?;
        // Text as text; anything else as base64 (the page says which).
        let body = match std::str::from_utf8(value.expose()) {
            Ok(text) => json!({ "value": text, "encoding": "utf-8", "consumed": consumed }),
            Err(_) => {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD.encode(value.expose());
                json!({ "value": b, "encoding": "base64", "consumed": consumed })
            }
        };
        // The response body is handed to hyper, which frees it unwiped;
        // `value` itself is wiped when it drops here.
        Ok(Json(body).into_response())
    })
    .await
}

async fn delete(State(c): State<Arc<Console>>, body: Bytes) -> ApiResult<Json<serde_json::Value>> {
    let req: RefBody = json_body(&body)?;
    let r = parse_ref(&req.vault_ref)?;
    blocking(move || {
        let result = open_vault(&c).and_then(|vault| vault.delete(&r).map_err(from_vault));
        audited(&c, "delete", &r, &result);
        result?;
        Ok(Json(json!({ "deleted": r.to_string() })))
    })
    .await
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn audit_tail(
    State(c): State<Arc<Console>>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    blocking(move || {
        let path = c.opts.audit_log.clone();
        let events = read_tail(&path, limit).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the audit log {}: {e}", path.display()),
            )
        })?;
        Ok(Json(
            json!({ "path": path.display().to_string(), "events": events }),
        ))
    })
    .await
}

/// The last `limit` events of the audit log (none if it does not exist),
/// from its last [`AUDIT_TAIL_BYTES`] only: the log grows with every open
/// through the mount.
fn read_tail(path: &Path, limit: usize) -> std::io::Result<Vec<audit::Event>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match sealfs::open_read_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let start = file.metadata()?.len().saturating_sub(AUDIT_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    // Started mid-file: the first line is a fragment.
    let text = if start > 0 {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    let mut events: Vec<audit::Event> = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str(l).ok())
        .take(limit)
        .collect();
    events.reverse();
    Ok(events)
}

async fn config_refs(State(c): State<Arc<Console>>) -> ApiResult<Json<serde_json::Value>> {
    blocking(move || {
        let Some(path) = c.opts.config.clone() else {
            return Ok(Json(json!({ "path": null, "fields": [] })));
        };
        let doc = sealfs::config::load_document(&path)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, Chain(&e).to_string()))?;
        let vault = open_existing(&c)?;
        let checks =
            sealfs::check_refs(vault.as_ref().map(|v| v as &dyn sealfs::SecretStore), &doc);
        let rows: Vec<RefCheckJson> = checks.iter().map(RefCheckJson::of).collect();
        Ok(Json(
            json!({ "path": path.display().to_string(), "fields": rows }),
        ))
    })
    .await
}
