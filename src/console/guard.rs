//! What every request passes before a handler: the Host check, the
//! session cookie, the CSRF token, the security headers; and the one-time
//! token that starts a session.

use std::collections::VecDeque;
use std::sync::Arc;

use super::api::{ApiError, ApiResult};
use super::{lock, random_token, Console, Session, CSP, CSRF_HEADER, INDEX_HTML};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Headers on every response, and the checks every request passes: a
/// known Host (no DNS rebinding), a session for the API, and the CSRF
/// token for anything that changes state.
pub(super) async fn guard(
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

pub(super) fn check(c: &Console, req: &axum::extract::Request) -> ApiResult<()> {
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

pub(super) fn session_id(headers: &HeaderMap, cookie: &str) -> Option<String> {
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
pub(super) struct TokenQuery {
    token: Option<String>,
}

/// `/?token=...` once: a session cookie, then a redirect to `/` so the
/// token leaves the address bar, with the page key (CSRF token) in the
/// fragment, which never reaches a server or a log. `/` with a session:
/// the page.
pub(super) async fn index(
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
