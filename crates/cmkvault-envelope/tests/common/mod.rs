//! The envelope crate's tests run against the server's own test harness: its
//! crates/cmkvault-server/tests/common/mod.rs is compiled into this test binary by path (test
//! helpers cannot be shared across crates otherwise), so there is one in-process HTTPS server
//! helper to keep. Below, the few admin calls only the remote-key tests need.

#![allow(dead_code)]

#[path = "../../../cmkvault-server/tests/common/mod.rs"]
mod server;

use cmkvault_store::AuditFilter;
use reqwest::Method;
use serde_json::{json, Value};

pub use server::{ok, TestServer};

impl TestServer {
    /// The generated CA certificate (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("tls").join("ca.pem")).unwrap()
    }

    /// The tenant id of the server's token authority.
    pub fn tenant(&self) -> String {
        self.srv.tokens.tenant_id().to_string()
    }

    /// Creates a key (asserting 200) and returns its versioned kid.
    pub async fn create_kid(&self, name: &str, body: Value) -> String {
        let v = self.create_key(name, body).await;
        v["key"]["kid"].as_str().unwrap().to_string()
    }

    /// Creates an identity; returns `(object id, client id, client secret)`.
    pub async fn create_identity(&self, name: &str) -> (String, String, String) {
        let path = format!("/management/identities/{name}");
        let v = ok(self.req(Method::PUT, &path, None).await);
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        (s("objectId"), s("clientId"), s("clientSecret"))
    }

    /// Assigns `role` to `principal` on the default vault, scoped to `key`; returns the id.
    pub async fn assign(&self, principal: &str, role: &str, key: &str) -> String {
        let body = json!({"principal": principal, "role": role, "key": key});
        let v = ok(self
            .put("/management/vaults/default/roleAssignments", body)
            .await);
        v["id"].as_str().unwrap().to_string()
    }

    /// Removes a role assignment (asserting 200).
    pub async fn unassign(&self, id: &str) {
        let path = format!("/management/vaults/default/roleAssignments/{id}");
        ok(self.delete(&path).await);
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
