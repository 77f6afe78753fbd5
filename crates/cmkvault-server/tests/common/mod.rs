//! Shared helpers for the server's integration tests: an in-process HTTPS server on a free
//! port over a temporary data directory, a reqwest client that trusts its CA, and request
//! helpers that return `(status, headers, json)`.
//!
//! Every response goes through [`check_response`], which fails the test on a 5xx and on any
//! error response whose body is not `{"error":{"code","message"}}`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cmkvault_server::{datadir, RunningServer, ServerOptions};
use cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The api-version the helpers add when a path has none.
pub const API: &str = "7.6";

/// `(status, headers, body)`; the body is `Value::Null` when empty, a JSON string when it is
/// not JSON.
pub type Resp = (u16, HeaderMap, Value);

/// Token lifetime: long enough to survive the clock moves of the retention and rotation tests.
const TOKEN_TTL: i64 = 1000 * 86_400;

/// Resolves every host name to 127.0.0.1, so `NAME.vault.local` reaches the test server and
/// nothing ever leaves the machine.
struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addrs: reqwest::dns::Addrs =
                Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
            Ok(addrs)
        })
    }
}

/// A rustls client config that trusts the PEM certificates in `ca`.
pub fn tls_config(ca: &Path) -> rustls::ClientConfig {
    let pem = std::fs::read(ca).expect("read ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.expect("PEM certificate"))
            .expect("usable CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTPS client trusting `ca`, resolving every name to loopback, without proxies.
pub fn http_client(ca: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(ca))
        .dns_resolver(Loopback)
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// Test server options: a free loopback port, and no background maintenance during a test
/// (tests call `run_maintenance` themselves).
pub fn options() -> ServerOptions {
    ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        maintenance_interval: Duration::from_secs(24 * 3600),
        ..Default::default()
    }
}

/// A running in-process server and a client for it.
pub struct TestServer {
    /// The data directory (removed on drop).
    pub dir: TempDir,
    /// The server.
    pub srv: RunningServer,
    /// HTTPS client trusting `DIR/tls/ca.pem`.
    pub client: reqwest::Client,
    /// `https://localhost:PORT` (the default vault).
    pub base: String,
    /// Bearer token of the bootstrap administrator.
    pub token: String,
}

impl TestServer {
    /// Starts a server over a fresh temporary data directory.
    pub async fn start() -> TestServer {
        Self::start_with(options()).await
    }

    /// Starts a server over a fresh temporary data directory with `opts` as given (build them
    /// with `ServerOptions { ..., ..options() }` to keep the free port and idle maintenance).
    pub async fn start_with(opts: ServerOptions) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (srv, client, base, token) = Self::boot(dir.path(), opts).await;
        TestServer {
            dir,
            srv,
            client,
            base,
            token,
        }
    }

    async fn boot(
        path: &Path,
        opts: ServerOptions,
    ) -> (RunningServer, reqwest::Client, String, String) {
        let data = datadir::open(path, None).expect("open data dir");
        let srv = cmkvault_server::start(&data, opts)
            .await
            .expect("start server");
        let now = srv.service.clock().now();
        let token = srv
            .tokens
            .issue(BOOTSTRAP_ADMIN_OID, "test", now, TOKEN_TTL)
            .expect("issue token");
        let client = http_client(&path.join("tls").join("ca.pem"));
        let base = format!("https://localhost:{}", srv.addr.port());
        (srv, client, base, token)
    }

    /// Stops the server and starts a new one over the same data directory (new port, new
    /// token, fresh client). The clock offset is not kept: it lives in memory.
    pub async fn restart(&mut self) {
        // Stop first: one server per data directory (the second would be refused).
        let placeholder = tempfile::tempdir().expect("tempdir");
        let (placeholder_srv, ..) = Self::boot(placeholder.path(), options()).await;
        let old = std::mem::replace(&mut self.srv, placeholder_srv);
        old.shutdown().await;
        let (srv, client, base, token) = Self::boot(self.dir.path(), options()).await;
        std::mem::replace(&mut self.srv, srv).shutdown().await;
        self.client = client;
        self.base = base;
        self.token = token;
    }

    /// Stops the server, keeping the directory for inspection.
    pub async fn stop(self) -> TempDir {
        self.srv.shutdown().await;
        self.dir
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.srv.addr.port()
    }

    /// `https://NAME.vault.local:PORT`.
    pub fn vault_base(&self, vault: &str) -> String {
        format!("https://{vault}.vault.local:{}", self.port())
    }

    /// Moves the service clock forward.
    pub fn advance(&self, secs: i64) {
        self.srv.service.clock().advance(secs);
    }

    /// The service clock's now.
    pub fn now(&self) -> i64 {
        self.srv.service.clock().now()
    }

    /// Runs auto-purge and auto-rotation as the maintenance task does (audited); returns
    /// (purged, rotated) and fails the test on a key that could not be handled.
    pub async fn maintenance(&self) -> (usize, usize) {
        let report =
            cmkvault_server::maintenance::run_once(&self.srv.service, self.srv.audit.as_ref())
                .await
                .expect("maintenance");
        assert!(
            report.errors.is_empty() && report.stopped.is_none(),
            "maintenance: {report:?}"
        );
        (report.purged, report.rotated)
    }

    /// `base + path`, with `api-version` added when the path has none.
    pub fn url(&self, base: &str, path: &str) -> String {
        with_api_version(&format!("{base}{path}"))
    }

    /// An authenticated request to the default vault.
    pub async fn req(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.req_at(&self.base.clone(), method, path, body).await
    }

    /// An authenticated request to `base` (another vault's URL).
    pub async fn req_at(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut rb = self
            .client
            .request(method, self.url(base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        send(rb).await
    }

    /// GET on the default vault.
    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path, None).await
    }

    /// POST with a JSON body on the default vault.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.req(Method::POST, path, Some(body)).await
    }

    /// POST without a body on the default vault.
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.req(Method::POST, path, None).await
    }

    /// PUT with a JSON body on the default vault.
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.req(Method::PUT, path, Some(body)).await
    }

    /// PATCH with a JSON body on the default vault.
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.req(Method::PATCH, path, Some(body)).await
    }

    /// DELETE on the default vault.
    pub async fn delete(&self, path: &str) -> Resp {
        self.req(Method::DELETE, path, None).await
    }

    /// A request with a raw body and content type (for malformed or oversize bodies).
    pub async fn raw(&self, method: Method, path: &str, body: Vec<u8>) -> Resp {
        let rb = self
            .client
            .request(method, self.url(&self.base, path))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body);
        send(rb).await
    }

    /// Creates a key on the default vault and returns its bundle (asserting 200).
    pub async fn create_key(&self, name: &str, body: Value) -> Value {
        let r = self.post(&format!("/keys/{name}/create"), body).await;
        assert_eq!(r.0, 200, "create {name}: {}", r.2);
        r.2
    }

    /// Creates a vault through the management API (asserting 200).
    pub async fn create_vault(&self, name: &str, retention_days: u32, purge_protection: bool) {
        let r = self
            .req(
                Method::PUT,
                &format!("/management/vaults/{name}"),
                Some(json!({"properties": {
                    "softDeleteRetentionInDays": retention_days,
                    "enablePurgeProtection": purge_protection,
                }})),
            )
            .await;
        assert_eq!(r.0, 200, "create vault {name}: {}", r.2);
    }

    /// Runs a crypto operation on `/keys/{name}/{version}/{op}` and returns the response.
    pub async fn op(&self, name: &str, version: &str, op: &str, body: Value) -> Resp {
        self.post(&format!("/keys/{name}/{version}/{op}"), body)
            .await
    }

    /// Follows a listing from `path` through every absolute `nextLink` (at most 100 pages) and
    /// returns all items.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        self.list_all_at(&self.base.clone(), path).await
    }

    /// [`Self::list_all`] on another vault.
    pub async fn list_all_at(&self, base: &str, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut url = self.url(base, path);
        for _ in 0..100 {
            let r = send(self.client.get(&url).bearer_auth(&self.token)).await;
            assert_eq!(r.0, 200, "list {url}: {}", r.2);
            items.extend(
                r.2["value"]
                    .as_array()
                    .expect("value array")
                    .iter()
                    .cloned(),
            );
            match &r.2["nextLink"] {
                Value::Null => return items,
                Value::String(next) => {
                    assert!(
                        next.starts_with(&format!("{base}/")),
                        "nextLink {next} is not absolute under {base}"
                    );
                    assert!(next.contains("api-version="), "nextLink {next}");
                    url = next.clone();
                }
                other => panic!("nextLink is neither null nor a string: {other}"),
            }
        }
        panic!("listing {path} did not end within 100 pages");
    }
}

/// Adds `api-version` to a URL that has none.
pub fn with_api_version(url: &str) -> String {
    if url.contains("api-version=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&api-version={API}")
    } else {
        format!("{url}?api-version={API}")
    }
}

/// Sends a request and checks the response shape (see [`check_response`]).
pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = send_unchecked(rb).await;
    check_response(&r);
    r
}

/// No 5xx (except 501 for the deliberately unimplemented release route); every error has
/// `{"error":{"code": str, "message": str}}` and a JSON content type.
pub fn check_response(r: &Resp) {
    let (status, headers, body) = r;
    assert!(
        *status < 500 || *status == 501,
        "server error {status}: {body}"
    );
    if *status >= 400 {
        let code = body["error"]["code"].as_str();
        let message = body["error"]["message"].as_str();
        assert!(
            code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
            "error {status} without the Azure error shape: {body}"
        );
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "error content-type {ct}"
        );
    }
}

/// Asserts an error status and code; returns the message.
#[track_caller]
pub fn expect_error(r: &Resp, status: u16, code: &str) -> String {
    assert_eq!(
        r.0, status,
        "expected {status} {code}, got {}: {}",
        r.0, r.2
    );
    assert_eq!(r.2["error"]["code"], code, "error code in {}", r.2);
    r.2["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asserts an error status, code and inner error code.
#[track_caller]
pub fn expect_inner(r: &Resp, status: u16, code: &str, inner: &str) {
    expect_error(r, status, code);
    assert_eq!(
        r.2["error"]["innererror"]["code"], inner,
        "innererror in {}",
        r.2
    );
}

/// Asserts 200 and returns the body.
#[track_caller]
pub fn ok(r: Resp) -> Value {
    assert_eq!(r.0, 200, "expected 200, got {}: {}", r.0, r.2);
    r.2
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// Decodes base64url (padded or not).
pub fn unb64(text: &str) -> Vec<u8> {
    B64URL
        .decode(text.trim_end_matches('='))
        .expect("valid base64url")
}

/// Decodes a JSON string member as base64url.
#[track_caller]
pub fn unb64v(v: &Value) -> Vec<u8> {
    unb64(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
}

/// The version segment of a versioned kid.
#[track_caller]
pub fn version_of(bundle: &Value) -> String {
    let kid = bundle["key"]["kid"]
        .as_str()
        .or_else(|| bundle["kid"].as_str())
        .unwrap_or_else(|| panic!("no kid in {bundle}"));
    let v = kid.rsplit('/').next().unwrap().to_string();
    assert!(
        v.len() == 32
            && v.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "version of {kid} is not 32 lowercase hex characters"
    );
    v
}

/// Digest of `data` with SHA-256/384/512 (`bits`).
pub fn digest(bits: u32, data: &[u8]) -> Vec<u8> {
    use aws_lc_rs::digest as d;
    let alg = match bits {
        256 => &d::SHA256,
        384 => &d::SHA384,
        512 => &d::SHA512,
        _ => panic!("no SHA-{bits}"),
    };
    d::digest(alg, data).as_ref().to_vec()
}

/// Random bytes from aws-lc.
pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut v).expect("rng");
    v
}

/// Sends a request without [`check_response`], for tests that expect a 5xx.
pub async fn send_unchecked(rb: reqwest::RequestBuilder) -> Resp {
    let resp = rb.send().await.expect("request reaches the test server");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("response body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, headers, body)
}

/// On a connection whose request head has been started, writes one more header line every
/// 100 ms for up to 15 s; true when the server hangs up first (a write fails, or a read ends or
/// fails), false when it kept the connection open throughout.
pub async fn drip_headers<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut S) -> bool {
    for i in 0..150 {
        if conn
            .write_all(format!("x-drip-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            return true;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            _ => {}
        }
    }
    false
}
