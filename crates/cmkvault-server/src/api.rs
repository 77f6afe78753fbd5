//! The request pipeline: host → vault, bearer challenge, api-version, routing, body, domain
//! call on the blocking pool, rendering.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cmkvault_vault::access::AccessView;
use cmkvault_vault::audit::AuditEvent;
use cmkvault_vault::authz::{Denial, Operation};
use cmkvault_vault::model::validate_key_name;
use cmkvault_vault::model::{CreateKey, CryptoInput, CryptoOp, CryptoOutput, ImportKey, UpdateKey};
use cmkvault_vault::tokens::{Claims, BOOTSTRAP_ADMIN_OID};
use cmkvault_vault::VaultResult;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::wire::{self, b64_decode, b64_encode, parse_body};
use crate::AppState;

/// api-version values accepted on the keys API.
pub const API_VERSIONS: &[&str] = &[
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
];
const LATEST_API_VERSION: &str = "2025-07-01";

/// Body cap for ordinary requests.
const MAX_BODY: usize = 256 * 1024;
/// Body cap for restore (a backup of up to 500 RSA-4096 versions).
const MAX_RESTORE_BODY: usize = 8 * 1024 * 1024;

/// What the pipeline knows about a request once it is authenticated.
pub(crate) struct RequestContext {
    /// Vault name.
    pub vault: String,
    /// `https://host[:port]` for ids and links.
    pub base: String,
    /// The api-version sent.
    pub api_version: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
}

impl RequestContext {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The host the client called (`:authority` on HTTP/2, `Host` on HTTP/1.1), validated and
/// lower-cased: a DNS name (LDH labels) or an IP literal (IPv4, or IPv6 in brackets) and an
/// optional numeric port, nothing else. Key ids, links and the 401 challenge are built only
/// from this. `Err` is the 400 for a missing, malformed, repeated or contradictory host.
pub(crate) fn request_host(req: &Request) -> Result<String, ApiError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::bad("The request has more than one Host header."));
    }
    let header_host = match header_host {
        Some(h) => Some(
            h.to_str()
                .ok()
                .and_then(parse_host)
                .ok_or_else(|| ApiError::bad("The Host header is not a valid host name."))?,
        ),
        None => None,
    };
    let authority = match req.uri().authority() {
        Some(a) => Some(
            parse_host(a.as_str())
                .ok_or_else(|| ApiError::bad("The request authority is not a valid host name."))?,
        ),
        None => None,
    };
    match (authority, header_host) {
        (Some(a), Some(h)) if a != h => Err(ApiError::bad(
            "The Host header and the request authority name different hosts.",
        )),
        (Some(a), _) => Ok(a),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(ApiError::bad("The request has no Host header.")),
    }
}

/// Parses `host[:port]` strictly (see [`request_host`]); returns it lower-cased.
pub(crate) fn parse_host(raw: &str) -> Option<String> {
    // 253 for the name, brackets, a colon and 5 port digits.
    if raw.is_empty() || raw.len() > 262 {
        return None;
    }
    let text = raw.to_ascii_lowercase();
    let port = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        }
    } else {
        let (name, port) = match text.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text.as_str(), None),
        };
        if name.parse::<std::net::Ipv4Addr>().is_err() && !is_dns_name(name) {
            return None;
        }
        port
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok()?;
    }
    Some(text)
}

/// A DNS name of letter-digit-hyphen labels (1-63 characters, no hyphen at either end), at
/// most 253 characters, with an optional final dot.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Most bytes of caller-supplied text kept in an audit record field.
pub(crate) mod audit_limits {
    /// Request URI (with query).
    pub const URI: usize = 2048;
    /// Key id.
    pub const KEY_ID: usize = 512;
    /// User agent, correlation id, client id, result description.
    pub const TEXT: usize = 256;
    /// Vault, operation, api-version, ids, address.
    pub const SHORT: usize = 128;
}

/// `text` if it has at most `max` bytes; otherwise its start, followed by the length and a
/// SHA-256 prefix of the whole text, so a record shows that (and what) was cut, within
/// `max` bytes (`max` ≥ 128).
pub(crate) fn bound(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let marker = format!(
        "…[cut {} bytes, sha256 {}]",
        text.len(),
        hex::encode(&hash.as_ref()[..8])
    );
    let mut keep = max.saturating_sub(marker.len());
    while keep > 0 && !text.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{marker}", &text[..keep])
}

/// Splits `host[:port]` (IPv6 in brackets) into host and port.
pub(crate) fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let port = rest[end + 1..].strip_prefix(':');
            return (&host[..end + 2], port);
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (host, None),
    }
}

/// The `WWW-Authenticate` challenge for a request to `host`.
pub(crate) fn challenge(state: &AppState, host: &str) -> String {
    let (_, port) = split_host(host);
    let resource = match port {
        Some(p) if p != "443" => format!("https://{}:{p}", state.vault_domain),
        _ => format!("https://{}", state.vault_domain),
    };
    format!(
        "Bearer authorization=\"https://{host}/{}\", resource=\"{resource}\"",
        state.tokens.tenant_id()
    )
}

fn unauthorized(state: &AppState, host: &str, message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge(state, host)) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The access snapshot: from memory when it is loaded (no thread hop, the usual case);
/// otherwise loaded from the store on the blocking pool, never on an async worker.
pub(crate) async fn access_view(state: &AppState) -> Result<AccessView, ApiError> {
    if let Some(view) = state.service.access_view_if_loaded() {
        return Ok(view);
    }
    let svc = state.service.clone();
    blocking(move || svc.access_view()).await
}

/// Verifies the bearer token and that its principal still exists; `Err` is the ready 401
/// response. Client-supplied values are logged escaped (`?`), never raw.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    host: &str,
) -> Result<Claims, Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let Some(token) = token else {
        return Err(Box::new(unauthorized(
            state,
            host,
            "AKV10000: Request is missing a Bearer or PoP token.",
        )));
    };
    let now = state.service.clock().now();
    let claims = state.tokens.verify(token, now).map_err(|e| {
        tracing::warn!(host = ?host, reason = %e, "rejected bearer token");
        Box::new(unauthorized(
            state,
            host,
            &format!("AKV10022: Invalid token: {e}."),
        ))
    })?;
    let exists = claims.oid == BOOTSTRAP_ADMIN_OID
        || access_view(state)
            .await
            .map_err(|e| Box::new(e.into_response()))?
            .principal_exists(&claims.oid);
    if exists {
        Ok(claims)
    } else {
        tracing::warn!(host = ?host, oid = ?claims.oid, "token of a deleted principal");
        Err(Box::new(unauthorized(
            state,
            host,
            "AKV10032: Invalid token: the principal no longer exists.",
        )))
    }
}

/// Which vault a host name addresses.
fn vault_for_host(state: &AppState, host: &str) -> Result<String, ApiError> {
    let (name, _) = split_host(host);
    let name = name.trim_end_matches('.');
    if let Some(label) = name.strip_suffix(&format!(".{}", state.vault_domain)) {
        if !label.is_empty() && !label.contains('.') {
            return Ok(label.to_string());
        }
    }
    let is_ip = name
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    let public_host = state
        .public_url
        .as_deref()
        .and_then(|u| u.strip_prefix("https://"))
        .map(|h| split_host(h).0.to_string());
    if is_ip
        || name == "localhost"
        || name == state.vault_domain
        || public_host.as_deref() == Some(name)
    {
        return Ok(crate::datadir::DEFAULT_VAULT.to_string());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "VaultNotFound",
        format!(
            "No vault is served at host '{name}': use NAME.{} for vault NAME, or localhost for the default vault.",
            state.vault_domain
        ),
    ))
}

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Runs a domain call on the blocking pool (crypto and fsync never block async workers).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> VaultResult<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!("blocking task failed: {e}");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The server failed to process the request.",
            ))
        }
    }
}

fn ok_json(v: Value) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(v)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// What the pipeline learnt about a request, for its audit record.
#[derive(Default)]
pub(crate) struct AuditInfo {
    /// Vault (empty when none was resolved).
    pub vault: String,
    /// operationName.
    pub operation: String,
    /// api-version.
    pub api_version: String,
    /// Caller.
    pub claims: Option<Claims>,
    /// The client id an unauthenticated caller claimed (a failed token request), truncated.
    pub claimed_appid: Option<String>,
    /// Key id touched.
    pub key_id: Option<String>,
    /// Short reason on failure (error code), never a secret.
    pub description: String,
    /// For access-policy vaults: whether the policy allowed it.
    pub access_policy_match: Option<bool>,
}

/// A header's text (cut to the audit bound), or `None` when absent or not visible ASCII.
fn header_text(req: &Request, name: impl header::AsHeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| bound(s, audit_limits::TEXT))
}

/// Entry point for every request: run it, record it in the audit log (fail-closed), answer.
pub(crate) async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    // The request runs on its own task: a client that goes away (HTTP/2 stream reset, closed
    // connection) drops this future, which must not stop an operation between its effect and
    // its audit record.
    match tokio::spawn(handle_request(state, req)).await {
        Ok(resp) => resp,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The server is shutting down.",
        )
        .into_response(),
    }
}

async fn handle_request(state: Arc<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let time_ms = now_ms();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client_request_id = req.headers().get("x-ms-client-request-id").cloned();
    let correlation_id = header_text(&req, "x-ms-client-request-id")
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let caller_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let client_info = header_text(&req, header::USER_AGENT);
    let host = request_host(&req);
    // Every caller-supplied field of the record is bounded (see `bound`).
    let request_uri = bound(
        &format!(
            "https://{}{}",
            host.as_deref().unwrap_or("(invalid host)"),
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        ),
        audit_limits::URI,
    );
    // Tells the audit writer a record is coming, so its group commit can wait for it.
    let ticket = state.audit.as_ref().map(|a| a.begin());
    let (mut resp, info) = dispatch(state.clone(), req, host).await;
    if let Some(audit) = &state.audit {
        use audit_limits::{KEY_ID, SHORT, TEXT};
        let status = resp.status();
        let event = AuditEvent {
            time_ms,
            vault: bound(&info.vault, SHORT),
            operation: bound(&info.operation, SHORT),
            api_version: bound(&info.api_version, SHORT),
            status: status.as_u16(),
            result_signature: result_signature(status).to_string(),
            result_description: bound(&info.description, TEXT),
            duration_ms: started.elapsed().as_millis() as u64,
            caller_ip: bound(&caller_ip, SHORT),
            oid: info.claims.as_ref().map(|c| bound(&c.oid, SHORT)),
            appid: info
                .claims
                .as_ref()
                .map(|c| c.appid.clone())
                .or(info.claimed_appid)
                .map(|a| bound(&a, TEXT)),
            request_uri,
            key_id: info.key_id.map(|k| bound(&k, KEY_ID)),
            correlation_id: bound(&correlation_id, TEXT),
            client_info,
            access_policy_match: info.access_policy_match,
        };
        if let Err(e) = audit.record_with(ticket, &event).await {
            // Fail closed: nothing is acknowledged without a durable audit record.
            tracing::error!(?method, ?path, "request refused: {e}");
            // A 503 already says the request was refused (and what was not done); keep it.
            if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
                resp = audit_unavailable(
                "The request could not be recorded in the audit log, so it was not acknowledged. Try again later.",
                );
            }
        }
    }
    let headers = resp.headers_mut();
    headers.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static(concat!("cmkvault/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert("x-ms-keyvault-region", HeaderValue::from_static("local"));
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-ms-request-id", v);
    }
    if let Some(id) = client_request_id {
        headers.insert("x-ms-client-request-id", id);
    }
    tracing::debug!(
        ?method,
        ?path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

/// The 503 of a request refused because the audit log cannot be written.
fn audit_unavailable(message: &str) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
    .into_response()
}

/// Refuses a state change while the audit log cannot be written (see
/// [`cmkvault_vault::audit::AuditLog::ready_for_change`]), so that the change does not happen
/// without a record.
async fn audit_gate(state: &AppState) -> Result<(), Response> {
    let Some(audit) = &state.audit else {
        return Ok(());
    };
    audit.ready_for_change().await.map_err(|e| {
        tracing::error!("state change refused before it ran: {e}");
        audit_unavailable(
            "The audit log cannot be written, so the change was not made. Try again later.",
        )
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Azure's `resultSignature` for a status.
fn result_signature(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "OK",
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        408 => "RequestTimeout",
        409 => "Conflict",
        413 => "RequestEntityTooLarge",
        429 => "TooManyRequests",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    }
}

fn error_code(resp: &Response) -> String {
    if resp.status().is_success() {
        String::new()
    } else {
        resp.status()
            .canonical_reason()
            .unwrap_or_default()
            .to_string()
    }
}

async fn dispatch(
    state: Arc<AppState>,
    req: Request,
    host: Result<String, ApiError>,
) -> (Response, AuditInfo) {
    let mut info = AuditInfo {
        operation: "Unknown".into(),
        ..Default::default()
    };
    let host = match host {
        Ok(h) => h,
        Err(e) => {
            info.description = e.code.to_string();
            return (e.into_response(), info);
        }
    };
    let path = req.uri().path().to_string();
    if crate::oauth::is_oauth_path(&path) {
        let out = crate::oauth::handle(state.clone(), req, &host).await;
        info.operation = out.operation.to_string();
        info.description = out.reason;
        if out.oid.is_none() {
            info.claimed_appid = out.appid.as_deref().map(|a| a.chars().take(256).collect());
        }
        info.claims = out.oid.map(|oid| Claims {
            oid: oid.clone(),
            sub: oid,
            appid: out.appid.unwrap_or_default(),
            iss: String::new(),
            tid: state.tokens.tenant_id().to_string(),
            aud: String::new(),
            iat: 0,
            nbf: 0,
            exp: 0,
        });
        return (out.response, info);
    }
    let is_management = path == "/management" || path.starts_with("/management/");
    // Resolved once: the audit record of an early refusal names the vault too.
    let resolved_vault = vault_for_host(&state, &host);
    if !is_management {
        info.vault = resolved_vault.as_ref().cloned().unwrap_or_default();
    }
    // Authenticate before anything else, and before reading the body: the SDKs' first request
    // is an unauthenticated probe with an empty body that must get the challenge.
    let claims = match authenticate(&state, req.headers(), &host).await {
        Ok(c) => c,
        Err(resp) => {
            info.operation = "Authentication".into();
            info.description = "Unauthorized".into();
            return (*resp, info);
        }
    };
    info.claims = Some(claims.clone());
    if is_management {
        if req.method() != Method::GET {
            if let Err(resp) = audit_gate(&state).await {
                info.operation = crate::management::operation_name(req.method(), &path).to_string();
                info.description = "AuditUnavailable".into();
                return (resp, info);
            }
        }
        let (resp, op) = crate::management::handle(state, req, host, claims).await;
        info.operation = op.to_string();
        info.description = error_code(&resp);
        return (resp, info);
    }
    let route = match resolve(req.method(), &path) {
        Ok(r) => r,
        Err(e) => {
            info.description = e.code.to_string();
            return (e.into_response(), info);
        }
    };
    let op = route.operation();
    info.operation = op.name().to_string();
    // Names are checked before anything uses them (authorisation, denial counters, audit).
    if let Some((name, _)) = route.key() {
        if validate_key_name(name).is_err() {
            info.description = "BadParameter".into();
            return (
                ApiError::bad(
                    "The key name is invalid: use 1-127 characters of 0-9, a-z, A-Z and '-'.",
                )
                .into_response(),
                info,
            );
        }
    }
    let query = parse_query(req.uri().query());
    let api_version = query
        .iter()
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v.clone());
    let api_version = match api_version {
        Some(v) if API_VERSIONS.contains(&v.as_str()) => v,
        Some(v) => {
            info.description = "BadParameter".into();
            return (
                ApiError::bad(format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION})."
                ))
                .into_response(),
                info,
            );
        }
        None => {
            info.description = "BadParameter".into();
            return (
                ApiError::bad("The api-version query parameter is missing.").into_response(),
                info,
            );
        }
    };
    info.api_version = api_version.clone();
    let vault = match resolved_vault {
        Ok(v) => v,
        Err(e) => {
            info.description = e.code.to_string();
            return (e.into_response(), info);
        }
    };
    let base = match &state.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("https://{host}"),
    };
    let key = route.key();
    info.key_id = key.map(|(name, version)| match version {
        Some(v) => format!("{base}/keys/{name}/{v}"),
        None => format!("{base}/keys/{name}"),
    });
    // Authorise (deny by default) before touching the key, from the access snapshot (loaded
    // off the async workers when it is not in memory).
    let view = match access_view(&state).await {
        Ok(v) => v,
        Err(e) => {
            info.description = e.code.to_string();
            return (e.into_response(), info);
        }
    };
    match view.authorize(&claims.oid, &vault, op, key.map(|k| k.0)) {
        Ok(Ok(())) => {
            // The break-glass administrator bypasses authorisation: no policy matched.
            if claims.oid != BOOTSTRAP_ADMIN_OID
                && !matches!(view.vault(&vault), Ok(v) if v.rbac_authorization)
            {
                info.access_policy_match = Some(true);
            }
        }
        Ok(Err(denial)) => {
            let (resp, action) = forbidden(&state, &claims, &vault, op, key.map(|k| k.0), &denial);
            if matches!(denial, Denial::Policy) {
                info.access_policy_match = Some(false);
            }
            info.description = match denial {
                Denial::Rbac => "ForbiddenByRbac".into(),
                Denial::Policy => "ForbiddenByPolicy".into(),
            };
            state.alerts.record(crate::alerts::Denial {
                principal: claims.oid.clone(),
                appid: claims.appid.clone(),
                vault: vault.clone(),
                key: key.map(|k| k.0.to_string()),
                action,
            });
            info.vault = vault;
            return (resp, info);
        }
        Err(e) => {
            info.vault = vault;
            return (ApiError::from(e).into_response(), info);
        }
    }
    info.vault = vault.clone();
    let ctx = RequestContext {
        vault,
        base,
        api_version,
        query,
    };
    if op.changes_state() {
        if let Err(resp) = audit_gate(&state).await {
            info.description = "AuditUnavailable".into();
            return (resp, info);
        }
    }
    let resp = match run_route(&state, &ctx, route, req).await {
        Ok(resp) => resp,
        Err(e) => {
            info.description = e.code.to_string();
            e.into_response()
        }
    };
    (resp, info)
}

/// The 403 for a denied request, worded as Azure words it; returns the refused action too.
fn forbidden(
    state: &AppState,
    claims: &Claims,
    vault: &str,
    op: Operation,
    key: Option<&str>,
    denial: &Denial,
) -> (Response, String) {
    let tenant = state.tokens.tenant_id();
    let caller = format!(
        "appid={};oid={};iss={}",
        claims.appid, claims.oid, claims.iss
    );
    match denial {
        Denial::Rbac => {
            let mut resource = format!(
                "/subscriptions/{tenant}/resourcegroups/cmkvault/providers/microsoft.keyvault/vaults/{vault}"
            );
            if let Some(k) = key {
                resource.push_str(&format!("/keys/{}", k.to_lowercase()));
            }
            let msg = format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: {caller}\r\nAction: '{}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {vault};location=local\r\n",
                op.data_action()
            );
            let mut e = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", msg);
            e.inner = Some("ForbiddenByRbac");
            (e.into_response(), op.data_action().to_string())
        }
        Denial::Policy => {
            let msg = format!(
                "The user, group or application '{caller}' does not have keys {} permission on key vault '{vault};location=local'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                op.permission()
            );
            let mut e = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", msg);
            e.inner = Some("ForbiddenByPolicy");
            (e.into_response(), format!("keys/{}", op.permission()))
        }
    }
}

/// The operations of the keys API, once the path is understood.
enum Route {
    ListKeys,
    Restore,
    Create(String),
    Import(String),
    Get(String, Option<String>),
    Update(String, Option<String>),
    Delete(String),
    Versions(String),
    Backup(String),
    Rotate(String),
    GetPolicy(String),
    SetPolicy(String),
    Crypto(String, Option<String>, CryptoOp),
    Release,
    ListDeleted,
    GetDeleted(String),
    Purge(String),
    Recover(String),
    Rng,
}

impl Route {
    /// The operation, for authorisation and audit.
    fn operation(&self) -> Operation {
        match self {
            Route::ListKeys => Operation::KeyList,
            Route::Restore => Operation::KeyRestore,
            Route::Create(_) => Operation::KeyCreate,
            Route::Import(_) => Operation::KeyImport,
            Route::Get(..) => Operation::KeyGet,
            Route::Update(..) => Operation::KeyUpdate,
            Route::Delete(_) => Operation::KeyDelete,
            Route::Versions(_) => Operation::KeyListVersions,
            Route::Backup(_) => Operation::KeyBackup,
            Route::Rotate(_) => Operation::KeyRotate,
            Route::GetPolicy(_) => Operation::KeyRotationPolicyGet,
            Route::SetPolicy(_) => Operation::KeyRotationPolicySet,
            Route::Crypto(_, _, op) => match op {
                CryptoOp::Encrypt => Operation::KeyEncrypt,
                CryptoOp::Decrypt => Operation::KeyDecrypt,
                CryptoOp::WrapKey => Operation::KeyWrap,
                CryptoOp::UnwrapKey => Operation::KeyUnwrap,
                CryptoOp::Sign => Operation::KeySign,
                CryptoOp::Verify => Operation::KeyVerify,
            },
            Route::Release => Operation::KeyRelease,
            Route::ListDeleted => Operation::KeyListDeleted,
            Route::GetDeleted(_) => Operation::KeyGetDeleted,
            Route::Purge(_) => Operation::KeyPurge,
            Route::Recover(_) => Operation::KeyRecover,
            Route::Rng => Operation::GetRandomBytes,
        }
    }

    /// The key (and version) the operation addresses, if any.
    fn key(&self) -> Option<(&str, Option<&str>)> {
        match self {
            Route::Create(n)
            | Route::Import(n)
            | Route::Delete(n)
            | Route::Versions(n)
            | Route::Backup(n)
            | Route::Rotate(n)
            | Route::GetPolicy(n)
            | Route::SetPolicy(n)
            | Route::GetDeleted(n)
            | Route::Purge(n)
            | Route::Recover(n) => Some((n.as_str(), None)),
            Route::Get(n, v) | Route::Update(n, v) | Route::Crypto(n, v, _) => {
                Some((n.as_str(), v.as_deref()))
            }
            Route::ListKeys | Route::Restore | Route::Release | Route::ListDeleted | Route::Rng => {
                None
            }
        }
    }
}

fn crypto_op(word: &str) -> Option<Option<CryptoOp>> {
    Some(Some(match word.to_ascii_lowercase().as_str() {
        "encrypt" => CryptoOp::Encrypt,
        "decrypt" => CryptoOp::Decrypt,
        "wrapkey" => CryptoOp::WrapKey,
        "unwrapkey" => CryptoOp::UnwrapKey,
        "sign" => CryptoOp::Sign,
        "verify" => CryptoOp::Verify,
        "release" => return Some(None),
        _ => return None,
    }))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn resolve(method: &Method, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let m = method;
    let route = match (l.as_slice(), m) {
        (["keys"] | ["keys", ""], &Method::GET) => Route::ListKeys,
        (["keys", "restore"], &Method::POST) => Route::Restore,
        ([_, _] | [_, _, ""], _) if l[0] == "keys" && !segs[1].is_empty() => {
            let name = segs[1].to_string();
            match *m {
                Method::GET => Route::Get(name, None),
                Method::PUT => Route::Import(name),
                Method::PATCH => Route::Update(name, None),
                Method::DELETE => Route::Delete(name),
                _ => return Err(method_not_allowed()),
            }
        }
        (["keys", _, word], _) if !segs[1].is_empty() => {
            let name = segs[1].to_string();
            match (*word, m) {
                ("create", &Method::POST) => Route::Create(name),
                ("versions", &Method::GET) => Route::Versions(name),
                ("backup", &Method::POST) => Route::Backup(name),
                ("rotate", &Method::POST) => Route::Rotate(name),
                ("rotationpolicy", &Method::GET) => Route::GetPolicy(name),
                ("rotationpolicy", &Method::PUT) => Route::SetPolicy(name),
                (w, &Method::POST) if crypto_op(w).is_some() => match crypto_op(w).flatten() {
                    Some(op) => Route::Crypto(name, None, op),
                    None => Route::Release,
                },
                (_, &Method::GET) => Route::Get(name, non_empty(segs[2])),
                (_, &Method::PATCH) => Route::Update(name, non_empty(segs[2])),
                _ => return Err(method_not_allowed()),
            }
        }
        (["keys", _, _, word], &Method::POST) if !segs[1].is_empty() => match crypto_op(word) {
            Some(Some(op)) => Route::Crypto(segs[1].to_string(), non_empty(segs[2]), op),
            Some(None) => Route::Release,
            None => return Err(not_found(path)),
        },
        (["deletedkeys"] | ["deletedkeys", ""], &Method::GET) => Route::ListDeleted,
        (["deletedkeys", _], _) if !segs[1].is_empty() => match *m {
            Method::GET => Route::GetDeleted(segs[1].to_string()),
            Method::DELETE => Route::Purge(segs[1].to_string()),
            _ => return Err(method_not_allowed()),
        },
        (["deletedkeys", _, "recover"], &Method::POST) if !segs[1].is_empty() => {
            Route::Recover(segs[1].to_string())
        }
        (["rng"], &Method::POST) => Route::Rng,
        _ => return Err(not_found(path)),
    };
    Ok(route)
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The HTTP method is not allowed on this resource.",
    )
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("No operation is served at '{path}'."),
    )
}

async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            format!("The request body is larger than the {limit}-byte limit, or was cut off."),
        )
    };
    // A body announced larger than the limit is refused before any of it is read.
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<crate::conn::BodyTimeout>() {
                    return ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "RequestTimeout",
                        "The request body did not arrive in time.",
                    );
                }
                source = s.source();
            }
            too_large()
        })
}

fn max_results(ctx: &RequestContext) -> Result<Option<u32>, ApiError> {
    ctx.param("maxresults")
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                ApiError::bad(format!(
                    "maxresults '{v}' is not a number between 1 and 25."
                ))
            })
        })
        .transpose()
}

fn next_link(ctx: &RequestContext, path: &str, max: Option<u32>) -> impl Fn(&str) -> String {
    let prefix = format!("{}{path}?api-version={}", ctx.base, ctx.api_version);
    let max = max.map(|m| format!("&maxresults={m}")).unwrap_or_default();
    move |token: &str| format!("{prefix}{max}&$skiptoken={token}")
}

fn crypto_input(body: &[u8]) -> Result<CryptoInput, ApiError> {
    let w: wire::OperationWire = parse_body(body)?;
    let opt = |f: &str, v: &Option<String>| v.as_deref().map(|s| b64_decode(f, s)).transpose();
    Ok(CryptoInput {
        value: b64_decode("value", &w.value)?,
        iv: opt("iv", &w.iv)?,
        aad: opt("aad", &w.aad)?,
        tag: opt("tag", &w.tag)?,
        digest: opt("digest", &w.digest)?,
        alg: wire::parse_alg(&w.alg)?,
    })
}

async fn run_route(
    state: &Arc<AppState>,
    ctx: &RequestContext,
    route: Route,
    req: Request,
) -> Result<Response, ApiError> {
    let svc = state.service.clone();
    let vault = ctx.vault.clone();
    let base = ctx.base.clone();
    let body = match req.method() {
        &Method::GET | &Method::DELETE | &Method::HEAD => Bytes::new(),
        _ => {
            let limit = if matches!(route, Route::Restore) {
                MAX_RESTORE_BODY
            } else {
                MAX_BODY
            };
            read_body(req, limit).await?
        }
    };
    let resp = match route {
        Route::ListKeys => {
            let max = max_results(ctx)?;
            let token = ctx.param("$skiptoken").map(str::to_string);
            let page = blocking(move || svc.list_keys(&vault, max, token.as_deref())).await?;
            ok_json(wire::list_result(
                &page,
                |v| wire::key_item(&base, v, false),
                next_link(ctx, "/keys", max),
            ))
        }
        Route::ListDeleted => {
            let max = max_results(ctx)?;
            let token = ctx.param("$skiptoken").map(str::to_string);
            let page =
                blocking(move || svc.list_deleted_keys(&vault, max, token.as_deref())).await?;
            ok_json(wire::list_result(
                &page,
                |v| wire::key_item(&base, v, false),
                next_link(ctx, "/deletedkeys", max),
            ))
        }
        Route::Versions(name) => {
            let max = max_results(ctx)?;
            let token = ctx.param("$skiptoken").map(str::to_string);
            let path = format!("/keys/{name}/versions");
            let page =
                blocking(move || svc.list_versions(&vault, &name, max, token.as_deref())).await?;
            ok_json(wire::list_result(
                &page,
                |v| wire::key_item(&base, v, true),
                next_link(ctx, &path, max),
            ))
        }
        Route::Create(name) => {
            let w: wire::CreateWire = parse_body(&body)?;
            let req = CreateKey {
                kty: w.kty,
                key_size: w.key_size,
                public_exponent: w.public_exponent,
                curve: w.crv,
                key_ops: w.key_ops,
                attributes: wire::attributes_input(w.attributes),
                tags: w.tags,
                release_policy: w.release_policy,
            };
            let v = blocking(move || svc.create_key(&vault, &name, req)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Import(name) => {
            let w: wire::ImportWire = parse_body(&body)?;
            let req = ImportKey {
                key_ops: w.key.key_ops.clone(),
                jwk: w.key.into_private()?,
                hsm: w.hsm,
                attributes: wire::attributes_input(w.attributes),
                tags: w.tags,
                release_policy: w.release_policy,
            };
            let v = blocking(move || svc.import_key(&vault, &name, req)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Get(name, version) => {
            let v = blocking(move || svc.get_key(&vault, &name, version.as_deref())).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Update(name, version) => {
            let w: wire::UpdateWire = parse_body(&body)?;
            let req = UpdateKey {
                key_ops: w.key_ops,
                attributes: wire::attributes_input(w.attributes),
                tags: w.tags,
                release_policy: w.release_policy,
            };
            let v =
                blocking(move || svc.update_key(&vault, &name, version.as_deref(), req)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Delete(name) => {
            let v = blocking(move || svc.delete_key(&vault, &name)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::GetDeleted(name) => {
            let v = blocking(move || svc.get_deleted_key(&vault, &name)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Recover(name) => {
            let v = blocking(move || svc.recover_key(&vault, &name)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Purge(name) => {
            blocking(move || svc.purge_key(&vault, &name)).await?;
            StatusCode::NO_CONTENT.into_response()
        }
        Route::Backup(name) => {
            let blob = blocking(move || svc.backup_key(&vault, &name)).await?;
            ok_json(json!({"value": b64_encode(&blob)}))
        }
        Route::Restore => {
            let w: wire::ValueWire = parse_body(&body)?;
            let blob = b64_decode("value", &w.value)?;
            let v = blocking(move || svc.restore_key(&vault, &blob)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Rotate(name) => {
            let v = blocking(move || svc.rotate_key(&vault, &name)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::GetPolicy(name) => {
            let display = name.clone();
            let (p, has_id) = blocking(move || svc.get_rotation_policy(&vault, &name)).await?;
            ok_json(wire::rotation_policy(&base, &display, &p, has_id))
        }
        Route::SetPolicy(name) => {
            let w: wire::RotationPolicyWire = parse_body(&body)?;
            let display = name.clone();
            let p = blocking(move || svc.set_rotation_policy(&vault, &name, w.into())).await?;
            ok_json(wire::rotation_policy(&base, &display, &p, true))
        }
        Route::Crypto(name, version, op) => {
            let input = crypto_input(&body)?;
            let display = name.clone();
            let out =
                blocking(move || svc.crypto(&vault, &name, version.as_deref(), op, &input)).await?;
            match out {
                CryptoOutput::Verified(valid) => ok_json(json!({"value": valid})),
                CryptoOutput::Bytes {
                    version,
                    value,
                    iv,
                    tag,
                    aad,
                } => {
                    let mut v = json!({
                        "kid": format!("{base}/keys/{display}/{version}"),
                        "value": b64_encode(&value),
                    });
                    for (k, x) in [("iv", iv), ("tag", tag), ("aad", aad)] {
                        if let Some(x) = x {
                            v[k] = json!(b64_encode(&x));
                        }
                    }
                    ok_json(v)
                }
            }
        }
        Route::Release => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotSupported",
                "Secure key release needs an attestation service, which cmkvault does not provide.",
            ))
        }
        Route::Rng => {
            let w: wire::RngWire = parse_body(&body)?;
            let count = usize::try_from(w.count).map_err(|_| {
                ApiError::bad(format!("count {} is out of range: use 1 to 128.", w.count))
            })?;
            let bytes = blocking(move || svc.random_bytes(&vault, count)).await?;
            ok_json(json!({"value": b64_encode(&bytes)}))
        }
    };
    Ok(resp)
}

/// Reads a JSON object body for the management routes (empty means `{}`).
pub(crate) async fn body_json(req: Request) -> Result<Value, ApiError> {
    let body = read_body(req, MAX_BODY).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    parse_body(&body)
}
