//! An Azure-IMDS-shaped managed-identity endpoint on a separate loopback listener, so
//! `ManagedIdentityCredential` works for workloads on the same host (point it here with
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:PORT`).
//!
//! `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net`
//! with `Metadata: true` returns a vault token for the host's managed identity (or, with
//! `client_id`/`object_id`/`mi_res_id`, for one of the host's identities). Like the real IMDS it
//! speaks plain HTTP and trusts whoever can reach it, so it only listens on loopback.
//!
//! It is served by the same connection layer as the vault ([`crate::conn`], without TLS), with
//! the same [`crate::HttpLimits`], and its refusals count in [`crate::RunningServer::rejections`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cmkvault_vault::access::AccessView;
use cmkvault_vault::audit::AuditEvent;
use serde_json::json;

use crate::conn::{self, ServerHandle, Transport};
use crate::oauth::TOKEN_TTL_SECS;
use crate::{AppState, HttpLimits, ServerError};

struct Imds {
    state: Arc<AppState>,
    /// Names (or ids) of the identities this host may use; the first is the default.
    identities: Vec<String>,
}

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(imds): State<Arc<Imds>>, req: Request) -> Response {
    let started = Instant::now();
    let caller_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let request_uri = req.uri().to_string();
    // The identities come from the access snapshot: from memory when loaded, otherwise loaded
    // on the blocking pool, never read from the store on this async worker.
    let (resp, principal) = match crate::http::access_view(&imds.state).await {
        Ok(view) => issue(&imds, &view, &req),
        Err(_) => (
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unknown_error",
                "The identities could not be read.",
            ),
            None,
        ),
    };
    if let Some(audit) = &imds.state.audit {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let event = AuditEvent {
            time_ms: now,
            operation: "ManagedIdentityTokenIssue".into(),
            status: resp.status().as_u16(),
            result_signature: if resp.status().is_success() {
                "OK"
            } else {
                "BadRequest"
            }
            .into(),
            duration_ms: started.elapsed().as_millis() as u64,
            caller_ip,
            oid: principal.as_ref().map(|p| p.0.clone()),
            appid: principal.as_ref().map(|p| p.1.clone()),
            request_uri,
            correlation_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        if audit.record(&event).await.is_err() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The request could not be recorded in the audit log.",
            );
        }
    }
    resp
}

fn issue(imds: &Imds, view: &AccessView, req: &Request) -> (Response, Option<(String, String)>) {
    let metadata = req
        .headers()
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !metadata {
        return (
            error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required metadata header not specified",
            ),
            None,
        );
    }
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let resource = param("resource").unwrap_or_default().trim_end_matches('/');
    let resource = resource.strip_suffix("/.default").unwrap_or(resource);
    if !crate::oauth::is_vault_resource(resource, &imds.state.vault_domain) {
        return (
            error(
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                "This endpoint issues tokens for the vault only (https://vault.azure.net or the vault domain).",
            ),
            None,
        );
    }
    let selector = param("client_id")
        .or_else(|| param("object_id"))
        .or_else(|| param("mi_res_id"))
        .or_else(|| param("msi_res_id"));
    let svc = &imds.state.service;
    let mut chosen = None;
    for name in &imds.identities {
        let Some(p) = view.find_principal(name) else {
            continue;
        };
        let matches = match selector {
            None => true,
            Some(s) => {
                s.eq_ignore_ascii_case(&p.client_id)
                    || s.eq_ignore_ascii_case(&p.object_id)
                    || s.eq_ignore_ascii_case(&p.display_name)
            }
        };
        if matches {
            chosen = Some(p);
            break;
        }
    }
    let Some(p) = chosen else {
        return (
            error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Identity not found: no managed identity of this host matches the request.",
            ),
            None,
        );
    };
    let now = svc.clock().now();
    let Ok(token) = imds
        .state
        .tokens
        .issue(&p.object_id, &p.client_id, now, TOKEN_TTL_SECS)
    else {
        return (
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unknown_error",
                "The token could not be signed.",
            ),
            None,
        );
    };
    let body = json!({
        "access_token": token,
        "client_id": p.client_id,
        "expires_in": TOKEN_TTL_SECS.to_string(),
        "expires_on": (now + TOKEN_TTL_SECS).to_string(),
        "ext_expires_in": TOKEN_TTL_SECS.to_string(),
        "not_before": now.to_string(),
        "resource": "https://vault.azure.net",
        "token_type": "Bearer",
    });
    (
        (StatusCode::OK, axum::Json(body)).into_response(),
        Some((p.object_id, p.client_id)),
    )
}

/// Starts the managed-identity endpoint on a loopback address, with the vault's connection
/// limits, until `handle` stops the server; returns the bound address.
pub(crate) async fn start(
    listen: SocketAddr,
    state: Arc<AppState>,
    identities: Vec<String>,
    limits: &HttpLimits,
    handle: &ServerHandle,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServerError> {
    if !listen.ip().is_loopback() {
        return Err(ServerError::Config(format!(
            "the managed-identity endpoint must listen on a loopback address, not {listen}"
        )));
    }
    if identities.is_empty() {
        return Err(ServerError::Config(
            "the managed-identity endpoint needs at least one identity (--imds-identity NAME)"
                .into(),
        ));
    }
    let stats = state.rejections.clone();
    let app = axum::Router::new()
        .route("/metadata/identity/oauth2/token", axum::routing::get(token))
        .with_state(Arc::new(Imds { state, identities }));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ServerError::Config(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let serving = conn::serve(
        listener,
        Transport::Plain,
        app,
        limits.clone(),
        stats,
        handle.clone(),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!("managed-identity endpoint stopped: {e}");
        }
    });
    Ok((addr, task))
}
