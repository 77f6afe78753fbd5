//! A token endpoint shaped like Microsoft Entra's client-credentials flow, so unmodified
//! `azure.identity.ClientSecretCredential(tenant, client_id, secret, authority="https://HOST:PORT",
//! disable_instance_discovery=True)` gets vault tokens.
//!
//! ```text
//! GET  /{tenant}/v2.0/.well-known/openid-configuration   discovery (authorization_endpoint, token_endpoint, ...)
//! POST /{tenant}/oauth2/v2.0/token                         grant_type=client_credentials, client_id, client_secret, scope
//! GET  /{tenant}/discovery/v2.0/keys                       the token-signing public key (JWKS)
//! ```
//! Errors are OAuth-shaped: `{"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"}`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use cmkvault_vault::access::ClientCheck;
use serde_json::{json, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::http::now_ms;
use crate::throttle::client_key;
use crate::AppState;

/// Lifetime of issued access tokens.
pub(crate) const TOKEN_TTL_SECS: i64 = 3600;
/// Largest token request body.
const MAX_FORM: usize = 16 * 1024;

/// Whether a path belongs to the token endpoint (`/{tenant}/...` with an OAuth suffix).
pub(crate) fn is_oauth_path(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        segs.as_slice(),
        [_, "v2.0", ".well-known", "openid-configuration"]
            | [_, ".well-known", "openid-configuration"]
            | [_, "oauth2", "v2.0", "token"]
            | [_, "oauth2", "token"]
            | [_, "discovery", "v2.0", "keys"]
            | [_, "discovery", "keys"]
    )
}

/// Whether a requested scope is the vault's: `https://vault.azure.net/.default`, or
/// `https://<vault-domain>[:port]/.default`, which is what the SDKs derive from this server's
/// challenge (`resource + "/.default"`). Either way the token's audience is the vault audience.
pub(crate) fn is_vault_scope(scope: &str, vault_domain: &str) -> bool {
    scope
        .trim_end_matches('/')
        .strip_suffix("/.default")
        .is_some_and(|resource| is_vault_resource(resource, vault_domain))
}

/// Whether a resource URI names the vault: `https://vault.azure.net` or
/// `https://<vault-domain>[:port]` (trailing slashes ignored).
pub(crate) fn is_vault_resource(resource: &str, vault_domain: &str) -> bool {
    let Some(host) = resource.trim_end_matches('/').strip_prefix("https://") else {
        return false;
    };
    let (name, port) = crate::http::split_host(host);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    port_ok
        && (name.eq_ignore_ascii_case("vault.azure.net") || name.eq_ignore_ascii_case(vault_domain))
}

/// An OAuth error response.
pub(crate) fn oauth_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace}"),
        "error_codes": [code],
        "timestamp": cmkvault_vault::audit::rfc3339_ms(now_ms()),
        "trace_id": trace,
        "correlation_id": uuid::Uuid::new_v4().to_string(),
    });
    (status, axum::Json(body)).into_response()
}

/// What an OAuth request resulted in, for the audit log.
pub(crate) struct OauthOutcome {
    /// The response.
    pub response: Response,
    /// Audit operation name.
    pub operation: &'static str,
    /// Principal that obtained a token.
    pub oid: Option<String>,
    /// Its client id. On a failed token request: the client id as stored when it names a
    /// principal, otherwise [`unknown_client_form`] of what was sent, never the value itself.
    pub appid: Option<String>,
    /// Short reason on failure.
    pub reason: String,
}

impl OauthOutcome {
    fn plain(response: Response, operation: &'static str, reason: &str) -> Self {
        OauthOutcome {
            response,
            operation,
            oid: None,
            appid: None,
            reason: reason.to_string(),
        }
    }
}

/// How a client id that names no principal is logged and recorded (audit `appid`):
/// `unknown:sha256:<16 hex digits>`, the first 64 bits of SHA-256 over the client id exactly as
/// sent. Never the value itself: it may be a secret pasted into the wrong field, or carry line
/// breaks and terminal escapes. An operator holding a candidate value can compute its form to
/// find the records; the value cannot be read back from them.
pub(crate) fn unknown_client_form(client_id: &str) -> String {
    let digest = cmkvault_crypto::sha256(client_id.as_bytes());
    format!("unknown:sha256:{}", hex::encode(&digest[..8]))
}

/// The audit `appid` of a client id that was not proven: the stored client id when it names a
/// principal (looked up in the access snapshot, no secret check), otherwise its
/// [`unknown_client_form`].
async fn claimed_appid(state: &AppState, client_id: &str) -> String {
    match crate::http::access_view(state).await {
        Ok(view) => view
            .find_principal(client_id)
            .filter(|p| p.client_id.eq_ignore_ascii_case(client_id))
            .map(|p| p.client_id),
        Err(_) => None,
    }
    .unwrap_or_else(|| unknown_client_form(client_id))
}

/// Serves the discovery document, the JWKS and the token endpoint.
pub(crate) async fn handle(state: Arc<AppState>, req: Request, host: &str) -> OauthOutcome {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let tenant = state.tokens.tenant_id().to_string();
    if !segs[0].eq_ignore_ascii_case(&tenant) {
        return OauthOutcome::plain(
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{}' not found. This server's tenant is {tenant}.",
                    segs[0]
                ),
            ),
            "TokenIssue",
            "unknown tenant",
        );
    }
    let base = format!("https://{host}/{tenant}");
    let last = segs.last().map(String::as_str).unwrap_or_default();
    match (last, req.method()) {
        ("openid-configuration", &Method::GET) => {
            let doc = json!({
                // The issuer the tokens carry (`iss`), not one built from the Host header: a
                // client that checks `iss` against discovery must find the same value. (MSAL
                // Python checks the discovery issuer against the authority only for an
                // `oidc_authority`, which azure-identity does not use.)
                "issuer": state.tokens.issuer(),
                "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
                "token_endpoint": format!("{base}/oauth2/v2.0/token"),
                "jwks_uri": format!("{base}/discovery/v2.0/keys"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "grant_types_supported": ["client_credentials"],
                "response_types_supported": ["token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "scopes_supported": ["https://vault.azure.net/.default"],
                "tenant_region_scope": null,
                "cloud_instance_name": "cmkvault",
            });
            OauthOutcome::plain(
                (StatusCode::OK, axum::Json(doc)).into_response(),
                "OpenIdConfiguration",
                "",
            )
        }
        ("keys", &Method::GET) => {
            let jwk = state.tokens.public_jwk();
            let enc = |b: &Option<Vec<u8>>| b.as_deref().map(|b| B64URL.encode(b));
            let doc = json!({"keys": [{
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                "kid": state.tokens.key_id(),
                "x": enc(&jwk.x), "y": enc(&jwk.y),
            }]});
            OauthOutcome::plain(
                (StatusCode::OK, axum::Json(doc)).into_response(),
                "OpenIdKeys",
                "",
            )
        }
        ("token", &Method::POST) => token(state, req).await,
        _ => OauthOutcome::plain(
            oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                900561,
                "The endpoint only accepts GET for discovery and POST for tokens.",
            ),
            "TokenIssue",
            "method not allowed",
        ),
    }
}

async fn token(state: Arc<AppState>, req: Request) -> OauthOutcome {
    let source: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(|v| Zeroizing::new(v.to_string()));
    let mut body = match axum::body::to_bytes(req.into_body(), MAX_FORM).await {
        // Owned (copied only if the buffer is shared), so it can be wiped once parsed.
        Ok(b) => bytes::BytesMut::from(b),
        Err(_) => {
            return OauthOutcome::plain(
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body is too large or was cut off.",
                ),
                "TokenIssue",
                "bad body",
            )
        }
    };
    // The client secret goes straight into a `Zeroizing` (never into the map), and the raw
    // body is wiped once parsed.
    let mut form = std::collections::HashMap::new();
    let mut form_secret: Option<Zeroizing<String>> = None;
    for (k, v) in form_urlencoded::parse(&body) {
        if k == "client_secret" {
            form_secret = Some(Zeroizing::new(v.into_owned()));
        } else {
            form.insert(k.into_owned(), v.into_owned());
        }
    }
    body.as_mut().zeroize();
    drop(body);
    let bad = |error: &str, code: u32, msg: &str, reason: &str| {
        OauthOutcome::plain(
            oauth_error(StatusCode::BAD_REQUEST, error, code, msg),
            "TokenIssue",
            reason,
        )
    };
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return bad(
                "unsupported_grant_type",
                70003,
                &format!("The grant type '{other}' is not supported; use client_credentials."),
                "unsupported grant type",
            )
        }
        None => {
            return bad(
                "invalid_request",
                900144,
                "The request body must contain the parameter 'grant_type'.",
                "missing grant_type",
            )
        }
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    if !scope
        .split_whitespace()
        .any(|s| is_vault_scope(s, &state.vault_domain))
    {
        return bad(
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope '{scope}' is not valid. Client credential flows must request https://vault.azure.net/.default or https://{}/.default.",
                state.vault_domain
            ),
            "invalid scope",
        );
    }
    let (mut client_id, mut secret) = (form.remove("client_id"), form_secret);
    if let Some(b) = basic {
        let decoded = B64.decode(b.trim()).ok().map(Zeroizing::new);
        if let Some((id, s)) = decoded
            .as_deref()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|t| t.split_once(':'))
        {
            client_id = client_id.or_else(|| Some(id.to_string()));
            secret = secret.or_else(|| Some(Zeroizing::new(s.to_string())));
        }
    }
    let (Some(client_id), Some(secret)) = (client_id, secret) else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the parameters 'client_id' and 'client_secret'.",
            "missing credentials",
        );
    };
    // Brute-force protection, before the secret is checked: a locked client id or address
    // costs no PBKDF2 work, and even the right secret is refused until the lock ends.
    let throttle_key = client_key(&client_id);
    let now = state.service.clock().now();
    if let Err(retry_after) = state.login_throttle.check(&throttle_key, source, now) {
        let appid = claimed_appid(&state, &client_id).await;
        tracing::warn!(client = ?appid, source = ?source, retry_after, "token request refused: too many failed attempts");
        let mut response = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_client",
            50053,
            &format!("The client is locked because of too many failed sign-in attempts with a wrong client secret or an unknown client id. Try again in {retry_after} seconds."),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return OauthOutcome {
            response,
            operation: "TokenIssue",
            oid: None,
            appid: Some(appid),
            reason: "too many failed attempts".into(),
        };
    }
    let svc = state.service.clone();
    let cid = client_id.clone();
    let checked =
        tokio::task::spawn_blocking(move || svc.verify_client_credentials(&cid, secret.as_str()))
            .await;
    let failed = |appid: String| {
        state.login_throttle.failed(throttle_key, source, now);
        tracing::warn!(client = ?appid, source = ?source, "token request with an unknown client or a wrong secret");
        let mut o = OauthOutcome::plain(
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided, or the client does not exist. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            ),
            "TokenIssue",
            "invalid client credentials",
        );
        o.appid = Some(appid);
        o
    };
    let principal = match checked {
        Ok(Ok(ClientCheck::Valid(p))) => {
            state.login_throttle.succeeded(&throttle_key);
            p
        }
        Ok(Ok(ClientCheck::WrongSecret { client_id })) => return failed(client_id),
        Ok(Ok(ClientCheck::UnknownClient)) => return failed(unknown_client_form(&client_id)),
        _ => {
            return OauthOutcome::plain(
                oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "temporarily_unavailable",
                    90033,
                    "The token service failed.",
                ),
                "TokenIssue",
                "internal error",
            )
        }
    };
    let token = match state.tokens.issue(
        &principal.object_id,
        &principal.client_id,
        now,
        TOKEN_TTL_SECS,
    ) {
        Ok(t) => t,
        Err(_) => {
            return OauthOutcome::plain(
                oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "temporarily_unavailable",
                    90033,
                    "The token could not be signed.",
                ),
                "TokenIssue",
                "signing failed",
            )
        }
    };
    let body: Value = json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL_SECS,
        "ext_expires_in": TOKEN_TTL_SECS,
        "access_token": token,
    });
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    OauthOutcome {
        response,
        operation: "TokenIssue",
        oid: Some(principal.object_id),
        appid: Some(principal.client_id),
        reason: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::is_vault_scope;

    #[test]
    fn vault_scopes() {
        for ok in [
            "https://vault.azure.net/.default",
            "https://vault.azure.net//.default",
            "https://vault.local:8443/.default",
            "https://VAULT.LOCAL/.default",
        ] {
            assert!(is_vault_scope(ok, "vault.local"), "{ok}");
        }
        for bad in [
            "https://management.azure.com/.default",
            "https://evil.vault.local:8443/.default",
            "https://vault.local:x/.default",
            "http://vault.local/.default",
            "https://vault.local:8443",
        ] {
            assert!(!is_vault_scope(bad, "vault.local"), "{bad}");
        }
    }
}
