//! Shared HTTP helpers for every route family (keys, management, token endpoint, IMDS): the
//! strict Host parser, body reading with its size and time limits, JSON responses, query
//! parameters, and running domain calls on the blocking pool. No module imports helpers from
//! another route module; they all depend on this one.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cmkvault_vault::access::AccessView;
use cmkvault_vault::VaultResult;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::wire::parse_body;
use crate::AppState;

/// Body cap for ordinary requests.
pub(crate) const MAX_BODY: usize = 256 * 1024;

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

/// The access snapshot: from memory when it is loaded (no thread hop, the usual case);
/// otherwise loaded from the store on the blocking pool, never on an async worker.
pub(crate) async fn access_view(state: &AppState) -> Result<AccessView, ApiError> {
    if let Some(view) = state.service.access_view_if_loaded() {
        return Ok(view);
    }
    let svc = state.service.clone();
    blocking(move || svc.access_view()).await
}

/// Decoded query parameters, in the order sent.
pub(crate) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first query parameter named `name` (case-insensitive), decoded.
pub(crate) fn query_param(req: &Request, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
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

/// A 200 with a JSON body and `Content-Type: application/json; charset=utf-8`.
pub(crate) fn ok_json(v: Value) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(v)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// The 405 for a known resource asked with a method it does not serve.
pub(crate) fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The HTTP method is not allowed on this resource.",
    )
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads the body, at most `limit` bytes: a larger announced Content-Length is refused (413)
/// before anything is read, a longer or cut-off body is 413, and a body that does not arrive
/// within the connection's body timeout is 408.
pub(crate) async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
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

/// Reads a JSON object body for the management routes (empty means `{}`).
pub(crate) async fn body_json(req: Request) -> Result<Value, ApiError> {
    let body = read_body(req, MAX_BODY).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    parse_body(&body)
}
