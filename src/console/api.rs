//! The JSON API: one handler per route, each an audited call into the
//! vault, with errors mapped once to an HTTP status.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::guard::session_id;
use super::{lock, Console, AUDIT_TAIL_BYTES, REVEAL_LIMIT, REVEAL_WINDOW};
use crate::view::{EntryJson, RefCheckJson, VersionJson};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sealfs::audit::{self, AuditLog, Caller, Event};
use sealfs::{
    Chain, ErrorKind, SensitiveBytes, Vault, VaultConfig, VaultError, VaultRef, VaultScope,
};
use serde::Deserialize;
use serde_json::json;

/// An API error: a status and one clear line, as JSON, and the kind of
/// error for the audit log.
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    kind: ErrorKind,
}

impl ApiError {
    /// An error of the console itself (not of the vault): its kind follows
    /// from the status.
    pub(super) fn new(status: StatusCode, message: String) -> ApiError {
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

pub(super) type ApiResult<T> = std::result::Result<T, ApiError>;

pub(super) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg.into())
}

/// The one mapping of an error's kind to an HTTP status.
pub(super) fn status_of(kind: ErrorKind) -> StatusCode {
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

pub(super) fn from_vault(e: VaultError) -> ApiError {
    ApiError {
        status: status_of(e.kind()),
        message: Chain(&e).to_string(),
        kind: e.kind(),
    }
}

/// The vault, or `None` when none has been created yet (reads then see an
/// empty vault; storing creates it).
pub(super) fn open_existing(c: &Console) -> ApiResult<Option<Vault>> {
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
pub(super) fn open_vault(c: &Console) -> ApiResult<Vault> {
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
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".into(),
        ))
    })
}

pub(super) fn record(c: &Console, op: &str, target: &str, failure: Option<&str>) {
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
pub(super) fn audited<T>(c: &Console, op: &str, r: &VaultRef, result: &ApiResult<T>) {
    let failure = result.as_ref().err().map(|e| e.kind.audit_label());
    record(c, op, &r.to_string(), failure);
}

/// A ref from the page. The error never repeats the text: it may be a
/// secret pasted into the wrong field.
pub(super) fn parse_ref(s: &str) -> ApiResult<VaultRef> {
    VaultRef::parse(s.trim()).map_err(|e| bad(format!("bad ref: {}", e.without_input())))
}

pub(super) fn sid_of(c: &Console, headers: &HeaderMap) -> String {
    session_id(headers, &c.cookie).unwrap_or_default()
}

pub(super) async fn session_info(
    State(c): State<Arc<Console>>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({
        "vault_dir": c.opts.vault.vault_dir.display().to_string(),
        "config": c.opts.config.as_ref().map(|p| p.display().to_string()),
        "audit_log": c.opts.audit_log.display().to_string(),
        "max_value_size": c.opts.vault.max_value_size,
    })))
}

pub(super) async fn scopes(State(c): State<Arc<Console>>) -> ApiResult<Json<serde_json::Value>> {
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
pub(super) struct ScopeQuery {
    scope: Option<String>,
}

pub(super) async fn list(
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
pub(super) struct RefQuery {
    #[serde(rename = "ref")]
    vault_ref: String,
}

pub(super) async fn inspect(
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
pub(super) fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|_| bad("the request body is not the JSON this endpoint expects"))
}

#[derive(Deserialize)]
pub(super) struct StoreBody {
    #[serde(rename = "ref")]
    vault_ref: String,
    value: String,
    /// Confirms a write into a session another uid created through the
    /// mount (that uid reads it); without it such a write is 409.
    #[serde(default)]
    into_others_session: bool,
}

pub(super) async fn store(
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
                                        _ => vault
                        .put_with(&r, value, console_write())
                        .map_err(from_vault),
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

/// A write by the console: the writer kept with the value.
fn console_write() -> sealfs::PutOptions {
    sealfs::PutOptions {
        writer: Some(sealfs::Writer::this_process(sealfs::WriteSource::Console)),
        ..sealfs::PutOptions::default()
    }
}

pub(super) async fn history(
    State(c): State<Arc<Console>>,
    Query(q): Query<RefQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let r = parse_ref(&q.vault_ref)?;
    blocking(move || {
        let vault = open_vault(&c)?;
        let versions = vault.history(&r).map_err(from_vault)?;
        let rows: Vec<VersionJson> = versions.iter().map(VersionJson::of).collect();
        Ok(Json(json!({ "ref": r.to_string(), "versions": rows })))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct RollbackBody {
    #[serde(rename = "ref")]
    vault_ref: String,
    /// The version to bring back: the page always names it (the operator
    /// confirmed that one).
    to: u64,
}

pub(super) async fn rollback(
    State(c): State<Arc<Console>>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let req: RollbackBody = json_body(&body)?;
    let r = parse_ref(&req.vault_ref)?;
    blocking(move || {
        let result = open_vault(&c).and_then(|vault| {
            if let Some(uid) = vault.others_session(r.scope()).map_err(from_vault)? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "{} belongs to {}, who created it through the mount; roll back with the CLI",
                        r.scope(),
                        sealfs::describe_uid(uid)
                    ),
                ));
            }
            let writer = console_write().writer;
            vault.rollback(&r, Some(req.to), writer).map_err(from_vault)
        });
                // The version asked for (and brought back) is part of the record.
        let failure = result.as_ref().err().map(|e| e.kind.audit_label());
        record(&c, "rollback", &format!("{r}@{}", req.to), failure);
        let (entry, from) = result?;
        Ok(Json(
            json!({ "entry": EntryJson::of(&entry), "restored_from": from }),
        ))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct RefBody {
    #[serde(rename = "ref")]
    vault_ref: String,
}

pub(super) async fn reveal(
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

pub(super) async fn delete(
    State(c): State<Arc<Console>>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
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
pub(super) struct LimitQuery {
    limit: Option<usize>,
}

pub(super) async fn audit_tail(
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
pub(super) fn read_tail(path: &Path, limit: usize) -> std::io::Result<Vec<audit::Event>> {
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

pub(super) async fn config_refs(
    State(c): State<Arc<Console>>,
) -> ApiResult<Json<serde_json::Value>> {
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
