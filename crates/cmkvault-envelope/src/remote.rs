//! A key-encryption key held in a vault and used over the Azure Key Vault keys REST API
//! (this server or real Azure Key Vault).
//!
//! * A key id URL, versioned or not (`https://HOST[:PORT]/keys/NAME[/VERSION]`), is resolved
//!   once with `GET /keys/NAME[/VERSION]`; the versioned `kid` of the answer is what
//!   [`KeyEncryptionKey::kid`] returns and envelopes record, so a later rotation does not break
//!   old data.
//! * RSA keys wrap locally with the public key of that one `GET` (RSA-OAEP-256 through
//!   aws-lc-rs), so sealing a million objects costs one vault call; unwrap is
//!   `POST …/unwrapkey`. AES keys (`oct`, `oct-HSM`) wrap and unwrap in the vault (A256KW).
//! * Authentication as the Azure SDKs do it: a bearer token ([`Credential::Token`],
//!   `CMKVAULT_TOKEN`), or a client secret ([`Credential::ClientSecret`], azure-identity's
//!   `EnvironmentCredential` variables) exchanged at the authority after the vault's 401
//!   challenge named the resource; the token is cached until shortly before it expires.
//! * Refusals name the key and the cause: the permission (and the role granting it) the caller
//!   lacks, a disabled, expired or missing key, failed authentication, network and TLS errors.
//!
//! Secrets (tokens, the client secret, unwrapped keys) live in [`Zeroizing`] buffers and never
//! appear in errors or `Debug` output.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use cmkvault_crypto::Alg;
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::kek::{BoxFuture, KeyEncryptionKey};
use crate::EnvelopeError;

/// The keys REST API version every request names.
pub const API_VERSION: &str = "7.5";

/// The authority used when `AZURE_AUTHORITY_HOST` is not set (Azure public cloud).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// Per-request timeout when the configuration names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A cached token is renewed this long before it expires (at most half its lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Longest server message quoted in an error.
const MAX_QUOTED: usize = 300;

/// The role that grants exactly what a remote key needs (keys get, wrapKey, unwrapKey).
const ROLE: &str = "Key Vault Crypto Service Encryption User";

/// How the remote key proves who it is to the vault.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credential {
    /// A bearer token used as is (`CMKVAULT_TOKEN`).
    Token(Zeroizing<String>),
    /// An application's client secret, exchanged for tokens with the OAuth 2.0
    /// client-credentials grant at `{authority_host}/{tenant_id}/oauth2/v2.0/token`, as
    /// azure-identity's `EnvironmentCredential` does.
    ClientSecret {
        /// The directory (tenant) id (`AZURE_TENANT_ID`).
        tenant_id: String,
        /// The application (client) id (`AZURE_CLIENT_ID`).
        client_id: String,
        /// The client secret (`AZURE_CLIENT_SECRET`).
        client_secret: Zeroizing<String>,
        /// The authority, e.g. `https://login.microsoftonline.com` (`AZURE_AUTHORITY_HOST`).
        authority_host: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::ClientSecret {
                tenant_id,
                client_id,
                authority_host,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("authority_host", authority_host)
                .finish(),
        }
    }
}

/// How to reach and authenticate to the vault holding a [`RemoteKey`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RemoteKeyConfig {
    /// PEM certificates to trust instead of the system roots (`CMKVAULT_CA`); `None` trusts the
    /// system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The credential.
    pub credential: Credential,
    /// Timeout of each HTTP request (60 s by default).
    pub timeout: Duration,
}

impl RemoteKeyConfig {
    /// A configuration with `credential`, the system roots and the default timeout.
    pub fn new(credential: Credential) -> Self {
        RemoteKeyConfig {
            ca_pem: None,
            credential,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Trusts only the PEM certificates in `ca_pem` (instead of the system roots).
    pub fn with_ca_pem(mut self, ca_pem: Vec<u8>) -> Self {
        self.ca_pem = Some(ca_pem);
        self
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads the configuration from the environment: `CMKVAULT_TOKEN` if set, else
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` and optionally
    /// `AZURE_AUTHORITY_HOST`; the CA from the PEM file `CMKVAULT_CA` (else the system roots).
    pub fn from_env() -> Result<Self, EnvelopeError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over any variable lookup.
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvelopeError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let credential = if let Some(token) = get("CMKVAULT_TOKEN") {
            Credential::Token(Zeroizing::new(token.trim().to_string()))
        } else {
            match (
                get("AZURE_TENANT_ID"),
                get("AZURE_CLIENT_ID"),
                get("AZURE_CLIENT_SECRET"),
            ) {
                (Some(tenant_id), Some(client_id), Some(secret)) => Credential::ClientSecret {
                    tenant_id: tenant_id.trim().to_string(),
                    client_id: client_id.trim().to_string(),
                    client_secret: Zeroizing::new(secret),
                    authority_host: normalize_authority(
                        get("AZURE_AUTHORITY_HOST")
                            .as_deref()
                            .unwrap_or(DEFAULT_AUTHORITY_HOST),
                    ),
                },
                (tenant, client, secret) => {
                    let missing: Vec<&str> = [
                        ("AZURE_TENANT_ID", tenant.is_none()),
                        ("AZURE_CLIENT_ID", client.is_none()),
                        ("AZURE_CLIENT_SECRET", secret.is_none()),
                    ]
                    .iter()
                    .filter(|(_, m)| *m)
                    .map(|(n, _)| *n)
                    .collect();
                    return Err(EnvelopeError::Config(format!(
                        "no credential for the vault: set CMKVAULT_TOKEN, or AZURE_TENANT_ID, \
                         AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (missing: {})",
                        missing.join(", ")
                    )));
                }
            }
        };
        let ca_pem = match get("CMKVAULT_CA") {
            Some(path) => Some(std::fs::read(&path).map_err(|e| {
                EnvelopeError::Config(format!("cannot read the CA file CMKVAULT_CA={path}: {e}"))
            })?),
            None => None,
        };
        Ok(RemoteKeyConfig {
            ca_pem,
            credential,
            timeout: DEFAULT_TIMEOUT,
        })
    }
}

/// `login.example` → `https://login.example`, without a trailing slash.
fn normalize_authority(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.contains("://") {
        host.to_string()
    } else {
        format!("https://{host}")
    }
}

/// What the key is, from the one `GET`.
enum KeyKind {
    /// An RSA key: wraps locally with its public key.
    Rsa(OaepPublicEncryptingKey),
    /// An AES key: wraps in the vault.
    Oct,
}

/// The operation a request performs, for error messages naming the missing permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    WrapKey,
    UnwrapKey,
}

impl Op {
    /// The access-policy permission (`keys/…`).
    fn permission(self) -> &'static str {
        match self {
            Op::Get => "keys/get",
            Op::WrapKey => "keys/wrapKey",
            Op::UnwrapKey => "keys/unwrapKey",
        }
    }

    /// The RBAC data action.
    fn data_action(self) -> &'static str {
        match self {
            Op::Get => "Microsoft.KeyVault/vaults/keys/read",
            Op::WrapKey => "Microsoft.KeyVault/vaults/keys/wrap/action",
            Op::UnwrapKey => "Microsoft.KeyVault/vaults/keys/unwrap/action",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::WrapKey => "wrapKey",
            Op::UnwrapKey => "unwrapKey",
        }
    }
}

/// A token and when to stop using it.
struct CachedToken {
    token: Zeroizing<String>,
    renew_at: Instant,
}

/// The connection shared by every version of a key: HTTP client, credential, token cache.
struct Connection {
    http: reqwest::Client,
    credential: Credential,
    /// The scope learned from the vault's challenge (client-secret credential only).
    scope: tokio::sync::Mutex<Option<String>>,
    /// The cached token (client-secret credential only).
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

/// A parsed key id: origin, name and optional version.
#[derive(Clone, Debug)]
struct KeyUrl {
    /// `https://host[:port]` (no trailing slash).
    origin: String,
    /// The host name, lower case, for the challenge check.
    host: String,
    name: String,
    version: Option<String>,
}

impl KeyUrl {
    fn parse(id: &str) -> Result<Self, EnvelopeError> {
        let bad = |why: &str| EnvelopeError::Config(format!("key id {id:?}: {why}"));
        let url = Url::parse(id.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if url.scheme() != "https" {
            return Err(bad("must be an https:// URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry user information"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad("has no host"))?
            .to_ascii_lowercase();
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let (name, version) = match segments.as_slice() {
            ["keys", name] => (*name, None),
            ["keys", name, version] => (*name, Some((*version).to_string())),
            _ => return Err(bad("expected https://HOST[:PORT]/keys/NAME[/VERSION]")),
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 127
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !name_ok(name) {
            return Err(bad("the key name must be 1-127 letters, digits and dashes"));
        }
        if version.as_deref().is_some_and(|v| !name_ok(v)) {
            return Err(bad("the key version must be letters and digits"));
        }
        let origin = match url.port() {
            Some(p) => format!("https://{host}:{p}"),
            None => format!("https://{host}"),
        };
        Ok(KeyUrl {
            origin,
            host,
            name: name.to_string(),
            version,
        })
    }

    /// `origin/keys/name[/version]` (no query).
    fn path_url(&self) -> String {
        match &self.version {
            Some(v) => format!("{}/keys/{}/{v}", self.origin, self.name),
            None => format!("{}/keys/{}", self.origin, self.name),
        }
    }
}

/// A [`KeyEncryptionKey`] held in a vault and used over the keys REST API.
///
/// Cloning is cheap: clones share the HTTP client and the token cache.
#[derive(Clone)]
pub struct RemoteKey {
    conn: Arc<Connection>,
    /// The origin the caller named (requests go there, whatever base the vault reports).
    url: Arc<KeyUrl>,
    /// The versioned kid as the vault reported it.
    kid: Arc<str>,
    /// `origin/keys/name/version` on the caller's origin.
    version_url: Arc<str>,
    kind: Arc<KeyKind>,
}

impl fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match *self.kind {
            KeyKind::Rsa(_) => "RSA",
            KeyKind::Oct => "oct",
        };
        f.debug_struct("RemoteKey")
            .field("kid", &self.kid)
            .field("kty", &kind)
            .finish_non_exhaustive()
    }
}

impl RemoteKey {
    /// Resolves `key_id` (versioned or not) with one `GET` and returns the key, ready to wrap
    /// and unwrap. A versionless id names the key's current version at this moment.
    pub async fn connect(key_id: &str, config: RemoteKeyConfig) -> Result<Self, EnvelopeError> {
        let url = KeyUrl::parse(key_id)?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| EnvelopeError::Config(format!("the CA PEM is not usable: {e}")))?;
            if certs.is_empty() {
                return Err(EnvelopeError::Config(
                    "the CA PEM holds no certificate".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| EnvelopeError::Config(format!("HTTP client: {}", chain(&e))))?;
        let conn = Arc::new(Connection {
            http,
            credential: config.credential,
            scope: tokio::sync::Mutex::new(None),
            token: tokio::sync::Mutex::new(None),
        });
        Self::resolve(conn, url, key_id).await
    }

    /// The same vault key at the version `kid` names (an envelope's `KeyId`), sharing this
    /// key's connection and token; one `GET`. Refuses a kid naming another vault or another
    /// key, so that an envelope's metadata cannot send this key's token elsewhere.
    pub async fn for_kid(&self, kid: &str) -> Result<Self, EnvelopeError> {
        if kid == &*self.kid {
            return Ok(self.clone());
        }
        let other = KeyUrl::parse(kid)?;
        let reported = KeyUrl::parse(&self.kid).ok();
        let same_vault = other.origin == self.url.origin
            || reported.as_ref().is_some_and(|r| r.origin == other.origin);
        if !same_vault || !other.name.eq_ignore_ascii_case(&self.url.name) {
            return Err(EnvelopeError::Key {
                kid: kid.to_string(),
                reason: format!(
                    "names another vault or key than {} (use a key for that vault)",
                    self.kid
                ),
            });
        }
        let url = KeyUrl {
            origin: self.url.origin.clone(),
            host: self.url.host.clone(),
            name: self.url.name.clone(),
            version: other.version,
        };
        Self::resolve(self.conn.clone(), url, kid).await
    }

    async fn resolve(
        conn: Arc<Connection>,
        url: KeyUrl,
        shown: &str,
    ) -> Result<Self, EnvelopeError> {
        let get_url = format!("{}?api-version={API_VERSION}", url.path_url());
        let body = conn
            .call(&url, Method::GET, &get_url, None, Op::Get, shown)
            .await?;
        let bad = |why: String| EnvelopeError::Key {
            kid: shown.to_string(),
            reason: format!("unexpected answer from the vault: {why}"),
        };
        let key = &body["key"];
        let kid = key["kid"]
            .as_str()
            .ok_or_else(|| bad("no key.kid".into()))?
            .to_string();
        let reported = KeyUrl::parse(&kid).map_err(|_| bad(format!("key.kid {kid:?}")))?;
        let version = match (&reported.version, &url.version) {
            (None, _) => return Err(bad(format!("key.kid {kid:?} names no version"))),
            (Some(got), Some(asked)) if !got.eq_ignore_ascii_case(asked) => {
                return Err(bad(format!("asked for version {asked}, got {kid}")))
            }
            (Some(got), _) => got.clone(),
        };
        if !reported.name.eq_ignore_ascii_case(&url.name) {
            return Err(bad(format!("asked for key {}, got {kid}", url.name)));
        }
        let kty = key["kty"].as_str().unwrap_or_default();
        let kind = match kty {
            "RSA" | "RSA-HSM" => {
                let n = b64_field(&key["n"]).ok_or_else(|| bad("RSA key without n".into()))?;
                let e = b64_field(&key["e"]).ok_or_else(|| bad("RSA key without e".into()))?;
                KeyKind::Rsa(rsa_public(&n, &e).map_err(bad)?)
            }
            "oct" | "oct-HSM" => KeyKind::Oct,
            other => {
                return Err(EnvelopeError::Key {
                    kid,
                    reason: format!(
                        "a {other:?} key cannot wrap data keys (use an RSA or AES key)"
                    ),
                })
            }
        };
        let version_url = format!("{}/keys/{}/{version}", url.origin, url.name);
        Ok(RemoteKey {
            conn,
            url: Arc::new(url),
            kid: kid.into(),
            version_url: version_url.into(),
            kind: Arc::new(kind),
        })
    }

    /// POSTs `{alg, value}` to `…/{op}` and returns the decoded `value` of the answer.
    async fn key_op(
        &self,
        op: Op,
        alg: Alg,
        value: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let path = match op {
            Op::WrapKey => "wrapkey",
            _ => "unwrapkey",
        };
        let url = format!("{}/{path}?api-version={API_VERSION}", self.version_url);
        let body = json!({"alg": alg.as_str(), "value": URL_SAFE_NO_PAD.encode(value)});
        let mut answer = self
            .conn
            .call(&self.url, Method::POST, &url, Some(&body), op, &self.kid)
            .await?;
        let out = answer["value"]
            .as_str()
            .and_then(|s| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok())
            .map(Zeroizing::new);
        if let Some(Value::String(s)) = answer.get_mut("value") {
            zeroize::Zeroize::zeroize(s);
        }
        out.ok_or_else(|| EnvelopeError::Key {
            kid: self.kid.to_string(),
            reason: format!(
                "unexpected answer from the vault to {}: no value",
                op.verb()
            ),
        })
    }
}

impl KeyEncryptionKey for RemoteKey {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn wrap_alg(&self) -> Alg {
        match *self.kind {
            KeyKind::Rsa(_) => Alg::RsaOaep256,
            KeyKind::Oct => Alg::A256Kw,
        }
    }

    fn wrap<'a>(&'a self, plaintext: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, EnvelopeError>> {
        Box::pin(async move {
            match &*self.kind {
                KeyKind::Rsa(public) => {
                    let mut out = vec![0u8; public.ciphertext_size()];
                    let len = public
                        .encrypt(
                            &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
                            plaintext,
                            &mut out,
                            None,
                        )
                        .map_err(|_| {
                            EnvelopeError::Crypto(format!(
                                "RSA-OAEP-256 with the public key of {} failed",
                                self.kid
                            ))
                        })?
                        .len();
                    out.truncate(len);
                    Ok(out)
                }
                KeyKind::Oct => Ok(self
                    .key_op(Op::WrapKey, Alg::A256Kw, plaintext)
                    .await?
                    .to_vec()),
            }
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        alg: Alg,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, EnvelopeError>> {
        Box::pin(self.key_op(Op::UnwrapKey, alg, wrapped))
    }
}

/// Decodes a base64url JWK member (padded or not).
fn b64_field(v: &Value) -> Option<Vec<u8>> {
    let s = v.as_str()?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(s))
        .ok()
}

/// An RSA-OAEP encryption key from the JWK members `n` and `e` (2048 bits at least).
fn rsa_public(n: &[u8], e: &[u8]) -> Result<OaepPublicEncryptingKey, String> {
    let strip = |b: &[u8]| -> Vec<u8> {
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        b[first..].to_vec()
    };
    let (n, e) = (strip(n), strip(e));
    let components = PublicKeyComponents {
        n: n.as_slice(),
        e: e.as_slice(),
    };
    let public: PublicEncryptingKey = components
        .try_into()
        .map_err(|e| format!("the RSA public key is not usable ({e})"))?;
    if public.key_size_bits() < 2048 {
        return Err(format!(
            "the RSA key has {} bits; at least 2048 are required",
            public.key_size_bits()
        ));
    }
    OaepPublicEncryptingKey::new(public).map_err(|_| "the RSA public key is not usable".into())
}

/// An error and its sources, `: `-joined (TLS and connection causes live in the sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Server-supplied text made safe to quote: no control characters, bounded length.
fn quote(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() > MAX_QUOTED {
        let cut: String = clean.chars().take(MAX_QUOTED).collect();
        format!("{cut}…")
    } else {
        clean
    }
}

/// Whether `host` is a loopback name or address (the challenge's resource is not checked
/// against it, as the Azure SDKs' `verify_challenge_resource=False` for a local vault).
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `key="value"` parameters of a `Bearer` challenge.
fn challenge_params(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim();
    let (scheme, rest) = rest.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = Vec::new();
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        params.push((
            k.trim().to_ascii_lowercase(),
            v.trim().trim_matches('"').to_string(),
        ));
    }
    Some(params)
}

/// The token scope a challenge asks for (`scope`, else `resource/.default`), checked like the
/// Azure SDKs do: the resource's host must be the vault's host or a parent domain of it.
fn scope_from_challenge(header: &str, vault_host: &str) -> Result<String, String> {
    let params = challenge_params(header).ok_or_else(|| {
        format!(
            "the vault's challenge is not a Bearer challenge: {}",
            quote(header)
        )
    })?;
    let find = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (scope, resource) = match (find("scope"), find("resource")) {
        (Some(scope), _) => {
            let resource = scope
                .strip_suffix("/.default")
                .unwrap_or(&scope)
                .to_string();
            (scope, resource)
        }
        (None, Some(resource)) => (
            format!("{}/.default", resource.trim_end_matches('/')),
            resource,
        ),
        (None, None) => {
            return Err(format!(
                "the vault's challenge names no resource: {}",
                quote(header)
            ))
        }
    };
    if !is_loopback(vault_host) {
        let rhost = Url::parse(&resource)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .ok_or_else(|| format!("the challenge's resource {} is not a URL", quote(&resource)))?;
        if !(vault_host == rhost || vault_host.ends_with(&format!(".{rhost}"))) {
            return Err(format!(
                "the challenge's resource {} does not match the vault host {vault_host}; no \
                 token is requested for it",
                quote(&resource)
            ));
        }
    }
    Ok(scope)
}

impl Connection {
    /// An authenticated request; a client-secret token rejected with 401 is renewed once.
    async fn call(
        &self,
        url: &KeyUrl,
        method: Method,
        target: &str,
        body: Option<&Value>,
        op: Op,
        kid: &str,
    ) -> Result<Value, EnvelopeError> {
        let mut renewed = false;
        loop {
            let token = self.bearer(url, kid).await?;
            let mut rb = self
                .http
                .request(method.clone(), target)
                .bearer_auth(token.as_str());
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let resp = rb.send().await.map_err(|e| network(kid, &url.origin, &e))?;
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| network(kid, &url.origin, &e))?;
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(json);
            }
            if status == StatusCode::UNAUTHORIZED
                && !renewed
                && matches!(self.credential, Credential::ClientSecret { .. })
            {
                // The cached token was revoked or expired early: get a fresh one, once.
                *self.token.lock().await = None;
                renewed = true;
                continue;
            }
            return Err(vault_refusal(kid, op, status, &json));
        }
    }

    /// The bearer token for a request to `url`.
    async fn bearer(&self, url: &KeyUrl, kid: &str) -> Result<Zeroizing<String>, EnvelopeError> {
        let (tenant_id, client_id, client_secret, authority_host) = match &self.credential {
            Credential::Token(t) => return Ok(t.clone()),
            Credential::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
                authority_host,
            } => (tenant_id, client_id, client_secret, authority_host),
        };
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.token.clone());
            }
        }
        let scope = self.scope(url, kid).await?;
        let endpoint = format!(
            "{}/{tenant_id}/oauth2/v2.0/token",
            normalize_authority(authority_host)
        );
        let auth_err = |reason: String| EnvelopeError::Key {
            kid: kid.to_string(),
            reason: format!("authentication failed at {endpoint}: {reason}"),
        };
        let form = Zeroizing::new(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "client_credentials")
                .append_pair("client_id", client_id)
                .append_pair("client_secret", client_secret)
                .append_pair("scope", &scope)
                .finish(),
        );
        let resp = self
            .http
            .post(&endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| auth_err(format!("cannot reach the authority: {}", chain(&e))))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| auth_err(format!("cannot reach the authority: {}", chain(&e))))?;
        let mut json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let code = json["error"].as_str().unwrap_or("no error code");
            let desc = json["error_description"].as_str().unwrap_or_default();
            let first = desc.lines().next().unwrap_or_default();
            return Err(auth_err(format!(
                "HTTP {} {}: {}",
                status.as_u16(),
                quote(code),
                quote(first)
            )));
        }
        let token = json["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| Zeroizing::new(t.to_string()))
            .ok_or_else(|| auth_err("the answer has no access_token".into()))?;
        if let Some(Value::String(s)) = json.get_mut("access_token") {
            zeroize::Zeroize::zeroize(s);
        }
        let lifetime = json["expires_in"]
            .as_u64()
            .or_else(|| json["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(300);
        let lifetime = Duration::from_secs(lifetime);
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        *cached = Some(CachedToken {
            token: token.clone(),
            renew_at: Instant::now() + lifetime - margin,
        });
        Ok(token)
    }

    /// The scope to request, learned once from the vault's 401 challenge to an
    /// unauthenticated, body-less `GET` of the key.
    async fn scope(&self, url: &KeyUrl, kid: &str) -> Result<String, EnvelopeError> {
        let mut known = self.scope.lock().await;
        if let Some(s) = known.as_ref() {
            return Ok(s.clone());
        }
        let probe = format!("{}?api-version={API_VERSION}", url.path_url());
        let resp = self
            .http
            .get(&probe)
            .send()
            .await
            .map_err(|e| network(kid, &url.origin, &e))?;
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = resp.status();
        let fail = |reason: String| EnvelopeError::Key {
            kid: kid.to_string(),
            reason,
        };
        let Some(challenge) = challenge.filter(|_| status == StatusCode::UNAUTHORIZED) else {
            return Err(fail(format!(
                "the vault at {} answered HTTP {} without a Bearer challenge to an \
                 unauthenticated request; is it a key vault?",
                url.origin,
                status.as_u16()
            )));
        };
        let scope = scope_from_challenge(&challenge, &url.host).map_err(fail)?;
        *known = Some(scope.clone());
        Ok(scope)
    }
}

/// A transport failure (DNS, connect, TLS, timeout), naming the key and the vault.
fn network(kid: &str, origin: &str, e: &reqwest::Error) -> EnvelopeError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect (network or TLS)"
    } else {
        "request failed"
    };
    let detail = chain(e);
    let hint = if detail.contains("certificate") {
        " (is CMKVAULT_CA set to the vault's CA certificate?)"
    } else {
        ""
    };
    EnvelopeError::Key {
        kid: kid.to_string(),
        reason: format!("vault {origin}: {what}: {detail}{hint}"),
    }
}

/// Maps the vault's Azure-shaped error (`{"error":{"code","message","innererror"}}`) to an
/// error naming the cause.
fn vault_refusal(kid: &str, op: Op, status: StatusCode, body: &Value) -> EnvelopeError {
    let err = &body["error"];
    let code = err["code"].as_str().unwrap_or_default();
    let inner = err["innererror"]["code"].as_str().unwrap_or_default();
    let message = quote(err["message"].as_str().unwrap_or_default());
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(" (the vault said: {message})")
    };
    let reason = match (status.as_u16(), code, inner) {
        (401, ..) => format!("authentication failed: the vault rejected the credential{said}"),
        (403, _, "ForbiddenByPolicy") => format!(
            "access denied: the caller lacks {} — add it to the caller's access policy on the \
             vault",
            op.permission()
        ),
        (403, _, "KeyDisabled") => format!("the key is disabled{said}"),
        (403, _, "KeyExpired") => format!("the key has expired{said}"),
        (403, _, "KeyNotYetValid") => format!("the key is not yet valid{said}"),
        (403, _, "KeyOperationForbidden") => {
            format!("the key does not allow {} (its key_ops){said}", op.verb())
        }
        (403, "Forbidden", "ForbiddenByRbac") | (403, "Forbidden", "") => format!(
            "access denied: the caller lacks {} ({}) — assign {ROLE} on the key or the vault",
            op.permission(),
            op.data_action()
        ),
        (404, "VaultNotFound", _) => format!("the vault does not exist{said}"),
        (404, ..) => format!("key not found: it was deleted, purged or never existed{said}"),
        (400, ..) if op == Op::UnwrapKey => format!(
            "the wrapped key does not unwrap with this key version (wrong key or version, or \
             the wrapped key was altered){said}"
        ),
        (429, ..) => format!("the vault is throttling requests (HTTP 429){said}"),
        (s, c, _) => {
            let code = if c.is_empty() {
                String::new()
            } else {
                format!(" {}", quote(c))
            };
            format!("the vault refused {}: HTTP {s}{code}{said}", op.verb())
        }
    };
    EnvelopeError::Key {
        kid: kid.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_prefers_the_token_then_the_client_secret() {
        let c = RemoteKeyConfig::from_lookup(lookup(&[
            ("CMKVAULT_TOKEN", "tok"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ]))
        .unwrap();
        assert!(matches!(&c.credential, Credential::Token(t) if t.as_str() == "tok"));
        assert!(c.ca_pem.is_none());

        let c = RemoteKeyConfig::from_lookup(lookup(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "very-secret"),
            ("AZURE_AUTHORITY_HOST", "login.example.com/"),
        ]))
        .unwrap();
        match &c.credential {
            Credential::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
                authority_host,
            } => {
                assert_eq!(tenant_id, "t");
                assert_eq!(client_id, "c");
                assert_eq!(client_secret.as_str(), "very-secret");
                assert_eq!(authority_host, "https://login.example.com");
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret"), "{shown}");

        let c = RemoteKeyConfig::from_lookup(lookup(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ]))
        .unwrap();
        assert!(matches!(&c.credential,
            Credential::ClientSecret { authority_host, .. } if authority_host == DEFAULT_AUTHORITY_HOST));
    }

    #[test]
    fn env_without_credential_names_what_is_missing() {
        let e = RemoteKeyConfig::from_lookup(lookup(&[("AZURE_TENANT_ID", "t")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CMKVAULT_TOKEN"), "{e}");
        assert!(
            e.contains("missing: AZURE_CLIENT_ID, AZURE_CLIENT_SECRET"),
            "{e}"
        );
        let e = RemoteKeyConfig::from_lookup(lookup(&[
            ("CMKVAULT_TOKEN", "x"),
            ("CMKVAULT_CA", "/nonexistent/ca.pem"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn key_ids_parse() {
        let k = KeyUrl::parse("https://Vault.Example:8443/keys/data-kek").unwrap();
        assert_eq!(k.origin, "https://vault.example:8443");
        assert_eq!(k.name, "data-kek");
        assert_eq!(k.version, None);
        let k = KeyUrl::parse("https://v.vault.azure.net/keys/k/0123abcd").unwrap();
        assert_eq!(k.origin, "https://v.vault.azure.net");
        assert_eq!(k.version.as_deref(), Some("0123abcd"));
        assert_eq!(k.path_url(), "https://v.vault.azure.net/keys/k/0123abcd");
        for bad in [
            "http://v/keys/k",
            "https://v/secrets/k",
            "https://v/keys",
            "https://v/keys/k/v/x",
            "https://v/keys/k?api-version=7.5",
            "https://u:p@v/keys/k",
            "https://v/keys/k_x",
            "not a url",
        ] {
            assert!(KeyUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_give_the_scope_and_foreign_resources_are_refused() {
        let h = r#"Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net""#;
        assert_eq!(
            scope_from_challenge(h, "myvault.vault.azure.net").unwrap(),
            "https://vault.azure.net/.default"
        );
        let h =
            r#"Bearer authorization="https://login/t", scope="https://vault.azure.net/.default""#;
        assert_eq!(
            scope_from_challenge(h, "myvault.vault.azure.net").unwrap(),
            "https://vault.azure.net/.default"
        );
        let evil =
            r#"Bearer authorization="https://login/t", resource="https://storage.azure.com""#;
        let e = scope_from_challenge(evil, "myvault.vault.azure.net").unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        // A loopback vault (this server on localhost) names its domain as the resource.
        let local = r#"Bearer authorization="https://localhost:8443/t", resource="https://vault.local:8443""#;
        assert_eq!(
            scope_from_challenge(local, "localhost").unwrap(),
            "https://vault.local:8443/.default"
        );
        assert!(scope_from_challenge("Basic realm=x", "v").is_err());
    }

    #[test]
    fn refusals_name_the_cause() {
        let body = |code: &str, inner: &str| json!({"error": {"code": code, "message": "m\r\nx", "innererror": {"code": inner}}});
        let r = |s: u16, b: Value, op: Op| {
            vault_refusal("K", op, StatusCode::from_u16(s).unwrap(), &b).to_string()
        };
        let m = r(403, body("Forbidden", "ForbiddenByRbac"), Op::UnwrapKey);
        assert!(m.contains("keys/unwrapKey"), "{m}");
        assert!(m.contains(ROLE), "{m}");
        assert!(m.starts_with("key K:"), "{m}");
        let m = r(403, body("Forbidden", "KeyDisabled"), Op::UnwrapKey);
        assert!(m.contains("disabled"), "{m}");
        assert!(!m.contains('\r') && !m.contains('\n'), "{m}");
        let m = r(404, body("KeyNotFound", ""), Op::Get);
        assert!(m.contains("deleted, purged"), "{m}");
        let m = r(401, body("Unauthorized", ""), Op::Get);
        assert!(m.contains("authentication failed"), "{m}");
        let m = r(400, body("BadParameter", ""), Op::UnwrapKey);
        assert!(m.contains("wrong key"), "{m}");
        let m = r(400, body("BadParameter", ""), Op::WrapKey);
        assert!(m.contains("HTTP 400 BadParameter"), "{m}");
    }
}
