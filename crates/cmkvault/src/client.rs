//! A small HTTPS client for the management API and the bench: trusts the vault's CA and
//! sends the bearer token from `CMKVAULT_TOKEN`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::ClientArgs;

/// Builds a rustls client config trusting the PEM certificates in `ca`.
pub(crate) fn tls_config(ca: &Path) -> Result<rustls::ClientConfig> {
    let pem = std::fs::read(ca).with_context(|| format!("cannot read CA file {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert =
            cert.with_context(|| format!("{} is not a PEM certificate file", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{} holds an unusable certificate", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", ca.display());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Builds a reqwest client that trusts `ca`, with keep-alive.
pub(crate) fn http_client(ca: &Path) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(ca)?)
        .build()
        .context("cannot build the HTTPS client")
}

/// The CA to trust: `--ca`, else `DATA/tls/ca.pem`.
pub(crate) fn ca_path(args: &ClientArgs) -> PathBuf {
    args.ca
        .clone()
        .unwrap_or_else(|| args.data.data.join("tls").join("ca.pem"))
}

/// A management-API client.
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    /// From the command line and environment.
    pub(crate) fn new(args: &ClientArgs) -> Result<Self> {
        let token = std::env::var("CMKVAULT_TOKEN").unwrap_or_default();
        if token.trim().is_empty() {
            bail!("CMKVAULT_TOKEN is not set: export CMKVAULT_TOKEN=$(cmkvault token --data DIR)");
        }
        if !args.url.starts_with("https://") {
            bail!("--url must be an https:// URL, got '{}'", args.url);
        }
        Ok(Client {
            http: http_client(&ca_path(args))?,
            url: args.url.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    /// Sends a request and returns the JSON body, or an error naming the server's message.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let url = format!("{}{path}", self.url);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = json["error"]["message"].as_str().unwrap_or(text.as_str());
            let code = json["error"]["code"].as_str().unwrap_or("");
            // One line: some server messages (RBAC denials) span several.
            let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
            bail!("{} {code}: {msg}", status.as_u16());
        }
        Ok(json)
    }
}
