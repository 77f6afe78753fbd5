//! The per-request pipeline, the same for every route family: Host (strict) → vault,
//! bearer authentication and the 401 challenge, routing to the keys API ([`crate::keys`]),
//! the management API ([`crate::management`]) or the token endpoint ([`crate::oauth`]),
//! api-version, authorisation (deny by default) and the denial alerts, the fail-closed audit
//! gate before a change, the audit record after it, and the response headers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cmkvault_vault::audit::AuditEvent;
use cmkvault_vault::authz::{Denial, Operation};
use cmkvault_vault::model::validate_key_name;
use cmkvault_vault::tokens::{Claims, BOOTSTRAP_ADMIN_OID};

use crate::error::ApiError;
use crate::http::{access_view, now_ms, parse_query, request_host, split_host};
use crate::keys::{resolve, run_route, RequestContext, API_VERSIONS, LATEST_API_VERSION};
use crate::AppState;

/// Most bytes of caller-supplied text kept in an audit record field.
pub(crate) mod audit_limits {
    /// Request URI (with query).
    pub(crate) const URI: usize = 2048;
    /// Key id.
    pub(crate) const KEY_ID: usize = 512;
    /// User agent, correlation id, client id, result description.
    pub(crate) const TEXT: usize = 256;
    /// Vault, operation, api-version, ids, address.
    pub(crate) const SHORT: usize = 128;
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
