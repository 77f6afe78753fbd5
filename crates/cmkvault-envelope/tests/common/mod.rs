//! An in-process cmkvault server for the envelope crate's tests (a trimmed copy of
//! crates/cmkvault-server/tests/common/mod.rs): HTTPS on 127.0.0.1, a free port, a fresh data
//! directory with its generated CA, and admin requests through the management and keys API.

#![allow(dead_code)]

use std::time::Duration;

use cmkvault_server::{datadir, RunningServer, ServerOptions};
use cmkvault_store::AuditFilter;
use cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID;
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The api-version of the admin requests.
pub const API: &str = "7.5";

/// A running in-process server and an admin client for it.
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
        let dir = tempfile::tempdir().expect("tempdir");
        let data = datadir::open(dir.path(), None).expect("open data dir");
        let opts = ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            maintenance_interval: Duration::from_secs(24 * 3600),
            ..Default::default()
        };
        let srv = cmkvault_server::start(&data, opts)
            .await
            .expect("start server");
        let now = srv.service.clock().now();
        let token = srv
            .tokens
            .issue(BOOTSTRAP_ADMIN_OID, "test", now, 86_400)
            .expect("issue token");
        let certs =
            reqwest::Certificate::from_pem_bundle(&std::fs::read(ca_path(&dir)).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only(certs)
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("https://localhost:{}", srv.addr.port());
        TestServer {
            dir,
            srv,
            client,
            base,
            token,
        }
    }

    /// The generated CA certificate (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(ca_path(&self.dir)).unwrap()
    }

    /// The tenant id of the server's token authority.
    pub fn tenant(&self) -> String {
        self.srv.tokens.tenant_id().to_string()
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.srv.shutdown().await;
    }

    /// An admin request; returns status and JSON body.
    pub async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut rb = self
            .client
            .request(method, format!("{}{path}{sep}api-version={API}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request reaches the test server");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// An admin request that must answer 200; returns the body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.req(method.clone(), path, body).await;
        assert_eq!(s, 200, "{method} {path}: {v}");
        v
    }

    /// Creates a key and returns its versioned kid.
    pub async fn create_key(&self, name: &str, body: Value) -> String {
        let v = self
            .ok(Method::POST, &format!("/keys/{name}/create"), Some(body))
            .await;
        v["key"]["kid"].as_str().unwrap().to_string()
    }

    /// Creates an identity; returns `(object id, client id, client secret)`.
    pub async fn create_identity(&self, name: &str) -> (String, String, String) {
        let v = self
            .ok(Method::PUT, &format!("/management/identities/{name}"), None)
            .await;
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        (s("objectId"), s("clientId"), s("clientSecret"))
    }

    /// Assigns `role` to `principal` on the default vault, scoped to `key`; returns the id.
    pub async fn assign(&self, principal: &str, role: &str, key: &str) -> String {
        let v = self
            .ok(
                Method::PUT,
                "/management/vaults/default/roleAssignments",
                Some(json!({"principal": principal, "role": role, "key": key})),
            )
            .await;
        v["id"].as_str().unwrap().to_string()
    }

    /// Removes a role assignment.
    pub async fn unassign(&self, id: &str) {
        self.ok(
            Method::DELETE,
            &format!("/management/vaults/default/roleAssignments/{id}"),
            None,
        )
        .await;
    }

    /// The `operationName` of every audit event so far, in order.
    pub fn audit_ops(&self) -> Vec<String> {
        let log = self.srv.audit.as_ref().expect("audit is on");
        log.store()
            .query(&AuditFilter::default())
            .expect("read audit log")
            .into_iter()
            .filter(|r| r.kind == "event")
            .map(|r| {
                let v: Value = serde_json::from_str(&r.record).unwrap();
                v["operationName"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    }
}

fn ca_path(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("tls").join("ca.pem")
}
