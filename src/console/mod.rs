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
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sealfs::VaultConfig;

mod api;
mod guard;
mod tls;

use api::{
    audit_tail, config_refs, delete, history, inspect, list, reveal, rollback, scopes,
    session_info, store, ApiError,
};
use guard::{guard, index};

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
pub(crate) struct ConsoleOptions {
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
pub(crate) fn check_listen(listen: &SocketAddr, allow_remote: bool, tls: bool) -> Result<()> {
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
pub(crate) fn run(opts: ConsoleOptions) -> Result<()> {
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
        .route("/api/history", get(history))
        .route("/api/rollback", post(rollback))
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
