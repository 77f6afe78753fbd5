//! `cmkvault bench`: load generator for one key operation, compared with the raw crypto limit.
//!
//! Without `--url` it starts an embedded server on `127.0.0.1:0` over a temporary data directory
//! and mints its own token; with `--url` it uses `CMKVAULT_TOKEN` and the CA from `--ca` (or
//! `DATA/tls/ca.pem`). It creates a fresh key (`bench-<random>`, or `--key NAME` if absent),
//! prepares one payload through the server (wrapKey / encrypt once for unwrapkey / decrypt), then
//! runs `--concurrency` tokio tasks, each with its own HTTP/1.1 client and hence its own keep-alive
//! TLS connection, until the deadline. The warm-up is not measured. In the same run (half just
//! before the load, half just after, together as long as the load and at least 3 s) the same
//! operation is timed directly with `cmkvault_crypto` on a key of the same type and size on every
//! core, and the HTTPS throughput is reported as a share of that raw limit. If the two halves
//! differ by more than 25 % a warning says the machine's load changed.
//!
//! stdout is one metric per line, so scripts can parse it:
//!
//! ```text
//! bench: op=unwrapkey key=RSA-2048 alg=RSA-OAEP-256 concurrency=16 duration=10s warmup=2s server=embedded
//! requests: 12345 ok, 0 errors
//! throughput: 1234.5 ops/s
//! latency: p50=12.30ms p99=25.10ms p999=40.20ms max=55.00ms
//! raw aws-lc-rs: 2450.1 ops/s on 2 threads
//! ratio: 50.4% of the raw limit
//! ```
//!
//! Progress and the first failed request go to stderr. With an embedded server the server and
//! the load generator share the machine's cores; the ratio includes that.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use clap::Args;
use cmkvault_crypto::{Alg, CipherRequest, Curve, KeyFamily, KeyHandle, PrivateKey};
use cmkvault_server::{datadir, RunningServer, ServerOptions};
use cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

mod envelope;
mod scan;

/// api-version sent on every request.
const API_VERSION: &str = "7.5";
/// Most concurrent clients.
const MAX_CONCURRENCY: usize = 1024;
/// Longest measured period.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest warm-up.
const MAX_WARMUP: Duration = Duration::from_secs(600);
/// Shortest and longest raw-limit measurement.
const RAW_MIN: Duration = Duration::from_secs(3);
const RAW_MAX: Duration = Duration::from_secs(60);
/// Per-request timeout (the load phase also stops in-flight requests at its deadline).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Size of the data-encryption key that is wrapped, unwrapped, encrypted and decrypted.
const DEK_LEN: usize = 32;
/// Raw-limit operations between two clock reads.
const RAW_BATCH: u64 = 8;

/// Arguments of `cmkvault bench`.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Operation: unwrapkey, wrapkey, sign, decrypt or get (a key operation against a server),
    /// envelope (file encryption with a local key: see --size, --files, --dir, --rewrap), or
    /// scan (policy evaluation over a synthetic inventory: see --resources).
    pub op: String,
    /// Concurrent clients, each with its own keep-alive HTTPS (HTTP/1.1) connection.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Measured period, such as 10s or 1m (at most 1h).
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Load before the measured period, not counted (0 for none).
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// Key type: RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM.
    #[arg(long, default_value = "RSA")]
    pub key_type: String,
    /// Key size in bits: RSA 2048 (default), 3072 or 4096; oct 128, 192 or 256 (default).
    #[arg(long)]
    pub key_size: Option<u32>,
    /// EC curve: P-256 (default), P-384, P-521 or P-256K.
    #[arg(long)]
    pub curve: Option<String>,
    /// Algorithm. Default: RSA-OAEP-256 (RSA wrapkey, unwrapkey, decrypt), RS256 (RSA sign),
    /// ES256/ES384/ES512/ES256K by curve (EC sign), A<bits>KW (oct wrapkey, unwrapkey),
    /// A<bits>GCM (oct decrypt).
    #[arg(long)]
    pub alg: Option<String>,
    /// Key to use (created if it does not exist). Default: a fresh key named bench-<random>.
    #[arg(long)]
    pub key: Option<String>,
    /// Server URL (token from CMKVAULT_TOKEN). Without it, an embedded server is started on
    /// 127.0.0.1 over a temporary data directory.
    #[arg(long)]
    pub url: Option<String>,
    /// CA certificate to trust with --url (default: DATA/tls/ca.pem).
    #[arg(long, env = "CMKVAULT_CA")]
    pub ca: Option<PathBuf>,
    /// Data directory whose tls/ca.pem is trusted with --url.
    #[arg(long, env = "CMKVAULT_DATA", default_value = "./cmkvault-data")]
    pub data: PathBuf,
    /// Audit log of the embedded server: `on` (durable, fail-closed; the product's only mode),
    /// `off` (to measure what audit costs), or `both`: two embedded servers, one with audit on
    /// and one off, loaded in alternating slices of the same run so that a drift in the
    /// machine's speed hits both alike; reports each throughput and their ratio.
    #[arg(long, default_value = "on", value_parser = ["on", "off", "both"])]
    pub audit: String,
    /// envelope: bytes per file, such as 1GiB, 64KiB or 4096 (default 1GiB).
    #[arg(long)]
    pub size: Option<String>,
    /// envelope: number of files of --size (default 1).
    #[arg(long)]
    pub files: Option<usize>,
    /// envelope: directory for the temporary files (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// envelope: time re-wrapping every .cmk header to a second key instead of copy/decrypt.
    #[arg(long)]
    pub rewrap: bool,
    /// envelope: fsync every output file before it counts (default: through the page cache).
    #[arg(long)]
    pub fsync: bool,
    /// scan: resources in the synthetic Resource Graph inventory (default 100000).
    #[arg(long)]
    pub resources: Option<usize>,
    /// envelope: rounds of copy, encrypt and decrypt (each round in a rotated order) or of
    /// rewrap; each line reports the median and the range (default 3).
    #[arg(long)]
    pub rounds: Option<usize>,
}

/// The operation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    UnwrapKey,
    WrapKey,
    Sign,
    Decrypt,
    Get,
}

impl Op {
    fn parse(text: &str) -> Result<Op> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "unwrapkey" | "unwrap" => Op::UnwrapKey,
            "wrapkey" | "wrap" => Op::WrapKey,
            "sign" => Op::Sign,
            "decrypt" => Op::Decrypt,
            "get" => Op::Get,
            _ => bail!(
                "unknown operation '{text}': use unwrapkey, wrapkey, sign, decrypt or get, or \
                 envelope"
            ),
        })
    }

    /// Name on the command line and in the report.
    fn name(self) -> &'static str {
        match self {
            Op::UnwrapKey => "unwrapkey",
            Op::WrapKey => "wrapkey",
            Op::Sign => "sign",
            Op::Decrypt => "decrypt",
            Op::Get => "get",
        }
    }
}

/// Type and size of the key under test.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeySpec {
    /// `kty` as sent to the server.
    kty: String,
    family: KeyFamily,
    /// RSA modulus, EC curve or AES key bits.
    bits: usize,
    curve: Option<Curve>,
}

impl KeySpec {
    /// From `--key-type`, `--key-size` and `--curve`.
    fn from_flags(key_type: &str, size: Option<u32>, curve: Option<&str>) -> Result<KeySpec> {
        let kty = match key_type.to_ascii_lowercase().as_str() {
            "rsa" => "RSA",
            "rsa-hsm" => "RSA-HSM",
            "ec" => "EC",
            "ec-hsm" => "EC-HSM",
            "oct" => "oct",
            "oct-hsm" => "oct-HSM",
            _ => bail!(
                "unknown --key-type '{key_type}': use RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM"
            ),
        };
        let family = family_of(kty)?;
        if family != KeyFamily::Ec {
            if let Some(c) = curve {
                bail!("--curve {c} applies to EC keys only, not to --key-type {kty}");
            }
        }
        let (bits, curve) = match family {
            KeyFamily::Rsa => {
                let bits = size.unwrap_or(2048);
                if !matches!(bits, 2048 | 3072 | 4096) {
                    bail!("--key-size {bits} is not an RSA size: use 2048, 3072 or 4096");
                }
                (bits as usize, None)
            }
            KeyFamily::Ec => {
                let name = curve.unwrap_or("P-256");
                let c = Curve::from_jwk(&name.to_ascii_uppercase()).with_context(|| {
                    format!("unknown --curve '{name}': use P-256, P-384, P-521 or P-256K")
                })?;
                if let Some(s) = size {
                    if s as usize != c.bits() {
                        bail!(
                            "--key-size {s} does not match curve {} ({} bits); use --curve alone",
                            c.jwk_name(),
                            c.bits()
                        );
                    }
                }
                (c.bits(), Some(c))
            }
            KeyFamily::Oct => {
                let bits = size.unwrap_or(256);
                if !matches!(bits, 128 | 192 | 256) {
                    bail!("--key-size {bits} is not an AES size: use 128, 192 or 256");
                }
                (bits as usize, None)
            }
        };
        Ok(KeySpec {
            kty: kty.to_string(),
            family,
            bits,
            curve,
        })
    }

    /// From an existing key's bundle; oct keys do not show their size, so it comes from `flags`.
    fn from_bundle(bundle: &Value, flags: &KeySpec) -> Result<KeySpec> {
        let key = &bundle["key"];
        let kty = key["kty"]
            .as_str()
            .context("the server's key bundle has no kty")?;
        let family = family_of(kty)?;
        let (bits, curve) = match family {
            KeyFamily::Rsa => {
                let n = key["n"].as_str().context("the RSA key has no modulus n")?;
                let n = B64URL
                    .decode(n.trim_end_matches('='))
                    .context("the RSA key's modulus is not base64url")?;
                let lead = n.iter().take_while(|b| **b == 0).count();
                ((n.len() - lead) * 8, None)
            }
            KeyFamily::Ec => {
                let crv = key["crv"].as_str().context("the EC key has no crv")?;
                let c = Curve::from_jwk(crv)
                    .with_context(|| format!("the key's curve {crv} is not supported"))?;
                (c.bits(), Some(c))
            }
            KeyFamily::Oct if flags.family == KeyFamily::Oct => (flags.bits, None),
            KeyFamily::Oct => (256, None),
        };
        Ok(KeySpec {
            kty: kty.to_string(),
            family,
            bits,
            curve,
        })
    }

    /// `RSA-2048`, `EC-P-256`, `oct-HSM-256`.
    fn label(&self) -> String {
        match self.curve {
            Some(c) => format!("{}-{}", self.kty, c.jwk_name()),
            None => format!("{}-{}", self.kty, self.bits),
        }
    }

    /// Body of `POST /keys/NAME/create`.
    fn create_body(&self) -> Value {
        match self.curve {
            Some(c) => json!({"kty": self.kty, "crv": c.jwk_name()}),
            None => json!({"kty": self.kty, "key_size": self.bits}),
        }
    }

    /// A local key of the same type and size, for the raw limit.
    fn generate(&self) -> Result<PrivateKey> {
        let key = match (self.family, self.curve) {
            (KeyFamily::Rsa, _) => PrivateKey::generate_rsa(self.bits, None),
            (KeyFamily::Ec, Some(c)) => PrivateKey::generate_ec(c),
            (KeyFamily::Ec, None) => bail!("an EC key needs a curve"),
            (KeyFamily::Oct, _) => PrivateKey::generate_oct(self.bits),
        };
        key.with_context(|| format!("cannot generate a local {} key", self.label()))
    }
}

fn family_of(kty: &str) -> Result<KeyFamily> {
    KeyFamily::from_kty(kty).with_context(|| format!("key type {kty} is not supported"))
}

/// The algorithm to use: `--alg`, else the default for the operation and key (`None` for get).
fn resolve_alg(op: Op, spec: &KeySpec, alg: Option<&str>) -> Result<Option<String>> {
    if op == Op::Get {
        if alg.is_some() {
            bail!("--alg does not apply to get");
        }
        return Ok(None);
    }
    if let Some(a) = alg {
        return Ok(Some(a.to_string()));
    }
    let a = match (op, spec.family) {
        (Op::WrapKey | Op::UnwrapKey | Op::Decrypt, KeyFamily::Rsa) => "RSA-OAEP-256".to_string(),
        (Op::Sign, KeyFamily::Rsa) => "RS256".to_string(),
        (Op::Sign, KeyFamily::Ec) => match spec.curve {
            Some(c) => c.jws_alg().to_string(),
            None => "ES256".to_string(),
        },
        (Op::WrapKey | Op::UnwrapKey, KeyFamily::Oct) => format!("A{}KW", spec.bits),
        (Op::Decrypt, KeyFamily::Oct) => format!("A{}GCM", spec.bits),
        (_, KeyFamily::Ec) => bail!(
            "an EC key can only sign: use --key-type RSA or oct-HSM for {}",
            op.name()
        ),
        (_, KeyFamily::Oct) => bail!(
            "{} needs an RSA or EC key (--key-type RSA or EC), not {}",
            op.name(),
            spec.kty
        ),
        (Op::Get, _) => unreachable!("handled above"),
    };
    Ok(Some(a))
}

/// Digest length for a signature algorithm (HMAC takes any length; 32 then).
fn digest_len(alg: &str) -> usize {
    if alg.ends_with("384") {
        48
    } else if alg.ends_with("512") {
        64
    } else {
        32
    }
}

/// AES-CBC needs a caller-chosen IV to encrypt.
fn needs_iv(alg: &str) -> bool {
    alg.to_ascii_uppercase().contains("CBC")
}

fn random(n: usize) -> Result<Vec<u8>> {
    cmkvault_crypto::random_bytes(n).context("cannot draw random bytes")
}

fn b64(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

// ------------------------------------------------------------------------------ raw limit

/// The operation done directly with `cmkvault_crypto`, with its input prepared.
struct RawOp {
    key: PrivateKey,
    op: Op,
    alg: Alg,
    input: Vec<u8>,
    iv: Option<Vec<u8>>,
    tag: Option<Vec<u8>>,
}

impl RawOp {
    /// Generates a local key like `spec`, prepares the input and runs the operation once, so a
    /// bad algorithm fails here with the crypto layer's message.
    fn new(spec: &KeySpec, op: Op, alg: &str) -> Result<RawOp> {
        let key = spec.generate()?;
        let what = || format!("{} with a {} key ({alg})", op.name(), spec.label());
        let name = alg;
        let alg: Alg = name.parse().with_context(what)?;
        let dek = random(DEK_LEN)?;
        let (input, iv, tag) = match op {
            Op::WrapKey => (dek, None, None),
            Op::UnwrapKey => (key.wrap_key(alg, &dek).with_context(what)?, None, None),
            Op::Decrypt => {
                let iv = if needs_iv(name) {
                    Some(random(16)?)
                } else {
                    None
                };
                let out = key
                    .encrypt(
                        alg,
                        &CipherRequest {
                            value: &dek,
                            iv: iv.as_deref(),
                            ..Default::default()
                        },
                    )
                    .with_context(what)?;
                (out.value, out.iv, out.tag)
            }
            Op::Sign => (random(digest_len(name))?, None, None),
            Op::Get => bail!("get has no raw crypto limit"),
        };
        let raw = RawOp {
            key,
            op,
            alg,
            input,
            iv,
            tag,
        };
        raw.once().with_context(what)?;
        Ok(raw)
    }

    fn once(&self) -> Result<(), cmkvault_crypto::CryptoError> {
        let alg = self.alg;
        match self.op {
            Op::WrapKey => self.key.wrap_key(alg, &self.input).map(drop),
            Op::UnwrapKey => self.key.unwrap_key(alg, &self.input).map(drop),
            Op::Decrypt => self
                .key
                .decrypt(
                    alg,
                    &CipherRequest {
                        value: &self.input,
                        iv: self.iv.as_deref(),
                        aad: None,
                        tag: self.tag.as_deref(),
                    },
                )
                .map(drop),
            Op::Sign => self.key.sign(alg, &self.input).map(drop),
            Op::Get => Ok(()),
        }
    }

    /// Runs the operation on `threads` threads for `period`; returns operations per second.
    fn measure(&self, threads: usize, period: Duration) -> Result<f64> {
        let start = Instant::now();
        let end = start + period;
        let counts: Vec<Result<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(move || -> Result<u64> {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            for _ in 0..RAW_BATCH {
                                self.once().context("raw operation failed")?;
                            }
                            n += RAW_BATCH;
                        }
                        Ok(n)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a raw-limit thread panicked")))
                })
                .collect()
        });
        let elapsed = start.elapsed().as_secs_f64();
        let mut total = 0u64;
        for c in counts {
            total += c?;
        }
        Ok(total as f64 / elapsed)
    }
}

// ------------------------------------------------------------------------------ the server

/// The server under test.
struct Target {
    /// `https://host:port`.
    base: String,
    token: String,
    tls: rustls::ClientConfig,
    /// `embedded` or the URL.
    label: String,
    /// Set when the server runs in this process; dropped (and the directory removed) at the end.
    embedded: Option<Embedded>,
}

struct Embedded {
    server: RunningServer,
    data: datadir::DataDir,
    dir: tempfile::TempDir,
}

impl Target {
    /// Starts an embedded server on 127.0.0.1 with a temporary data directory.
    async fn embedded(token_ttl: Duration, audit: bool) -> Result<Target> {
        let dir = tempfile::Builder::new()
            .prefix("cmkvault-bench-")
            .tempdir()
            .context("cannot create a temporary data directory")?;
        let data = datadir::open(dir.path(), None)
            .context("cannot initialise the embedded server's data directory")?;
        let opts = ServerOptions {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            audit,
            ..Default::default()
        };
        let server = cmkvault_server::start(&data, opts)
            .await
            .context("cannot start the embedded server")?;
        let now = server.service.clock().now();
        let ttl = i64::try_from(token_ttl.as_secs()).unwrap_or(i64::MAX / 4) + 3600;
        let token = server
            .tokens
            .issue(BOOTSTRAP_ADMIN_OID, "cmkvault-bench", now, ttl)
            .context("cannot issue a token for the embedded server")?;
        let tls = crate::client::tls_config(&dir.path().join("tls").join("ca.pem"))?;
        Ok(Target {
            base: format!("https://127.0.0.1:{}", server.addr.port()),
            token,
            tls,
            label: if audit {
                "embedded audit=on"
            } else {
                "embedded audit=off"
            }
            .into(),
            embedded: Some(Embedded { server, data, dir }),
        })
    }

    /// A running server at `url`, with `CMKVAULT_TOKEN` and the CA from the arguments.
    fn external(url: &str, args: &BenchArgs) -> Result<Target> {
        let url = url.trim().trim_end_matches('/');
        if !url.starts_with("https://") {
            bail!("--url must be an https:// URL, got '{url}'");
        }
        let token = std::env::var("CMKVAULT_TOKEN").unwrap_or_default();
        if token.trim().is_empty() {
            bail!("CMKVAULT_TOKEN is not set: export CMKVAULT_TOKEN=$(cmkvault token --data DIR), or omit --url to bench an embedded server");
        }
        let ca = args
            .ca
            .clone()
            .unwrap_or_else(|| args.data.join("tls").join("ca.pem"));
        Ok(Target {
            base: url.to_string(),
            token: token.trim().to_string(),
            tls: crate::client::tls_config(&ca)?,
            label: url.to_string(),
            embedded: None,
        })
    }

    /// A client with exactly one keep-alive HTTP/1.1 connection.
    fn client(&self) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .http1_only()
            .pool_max_idle_per_host(1)
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build the HTTPS client")
    }

    /// Sends one request; returns the status and the JSON body (`Null` if there is none).
    async fn call(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}api-version={API_VERSION}", self.base);
        let mut req = http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, json))
    }

    /// As [`Target::call`], failing on a non-2xx status with the server's message.
    async fn expect(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value> {
        let (status, json) = self.call(http, method, path, body).await?;
        if !(200..300).contains(&status) {
            bail!("{what}: {}", describe_error(status, &json));
        }
        Ok(json)
    }

    /// Stops an embedded server and removes its directory.
    async fn close(self) {
        if let Some(e) = self.embedded {
            let _ = tokio::time::timeout(Duration::from_secs(3), e.server.shutdown()).await;
            drop(e.data);
            drop(e.dir);
        }
    }
}

fn describe_error(status: u16, json: &Value) -> String {
    let code = json["error"]["code"].as_str().unwrap_or("");
    let msg = json["error"]["message"].as_str().unwrap_or("");
    format!("{status} {code}: {msg}")
        .trim_end_matches([' ', ':'])
        .to_string()
}

/// The `/keys/NAME/VERSION` part of a kid.
fn key_path(bundle: &Value) -> Result<String> {
    let kid = bundle["key"]["kid"]
        .as_str()
        .context("the server's key bundle has no kid")?;
    let at = kid
        .find("/keys/")
        .with_context(|| format!("unexpected kid {kid}"))?;
    Ok(kid[at..].to_string())
}

/// Decodes the `value` member of an operation result.
fn value_of(json: &Value, what: &str) -> Result<Vec<u8>> {
    let v = json["value"]
        .as_str()
        .with_context(|| format!("{what}: the response has no value"))?;
    B64URL
        .decode(v.trim_end_matches('='))
        .with_context(|| format!("{what}: the value is not base64url"))
}

/// Creates key `name` as `spec` describes; returns its bundle.
async fn create_key(
    target: &Target,
    http: &reqwest::Client,
    name: &str,
    spec: &KeySpec,
) -> Result<Value> {
    target
        .expect(
            http,
            Method::POST,
            &format!("/keys/{name}/create"),
            Some(&spec.create_body()),
            &format!("cannot create key {name}"),
        )
        .await
}

/// The request the load phase repeats.
#[derive(Clone)]
struct LoadRequest {
    method: Method,
    url: String,
    auth: String,
    body: Option<String>,
}

/// Prepares the request body through the server (wrapKey / encrypt once) and checks the
/// operation round-trips once.
async fn prepare_request(
    target: &Target,
    http: &reqwest::Client,
    op: Op,
    alg: Option<&str>,
    path: &str,
) -> Result<LoadRequest> {
    let alg = alg.unwrap_or_default();
    let body = match op {
        Op::Get => None,
        Op::WrapKey => Some(json!({"alg": alg, "value": b64(&random(DEK_LEN)?)})),
        Op::Sign => Some(json!({"alg": alg, "value": b64(&random(digest_len(alg))?)})),
        Op::UnwrapKey => {
            let dek = random(DEK_LEN)?;
            let wrapped = target
                .expect(
                    http,
                    Method::POST,
                    &format!("{path}/wrapkey"),
                    Some(&json!({"alg": alg, "value": b64(&dek)})),
                    "preparing the payload with wrapkey",
                )
                .await?;
            let body = json!({"alg": alg, "value": wrapped["value"].clone()});
            let check = target
                .expect(
                    http,
                    Method::POST,
                    &format!("{path}/unwrapkey"),
                    Some(&body),
                    "unwrapkey",
                )
                .await?;
            if value_of(&check, "unwrapkey")? != dek {
                bail!("unwrapkey returned another key than the one wrapped");
            }
            Some(body)
        }
        Op::Decrypt => {
            let dek = random(DEK_LEN)?;
            let mut enc = json!({"alg": alg, "value": b64(&dek)});
            if needs_iv(alg) {
                enc["iv"] = json!(b64(&random(16)?));
            }
            let out = target
                .expect(
                    http,
                    Method::POST,
                    &format!("{path}/encrypt"),
                    Some(&enc),
                    "preparing the payload with encrypt",
                )
                .await?;
            let mut body = json!({"alg": alg, "value": out["value"].clone()});
            for f in ["iv", "tag", "aad"] {
                if let Some(x) = out.get(f).filter(|x| x.is_string()) {
                    body[f] = x.clone();
                }
            }
            let check = target
                .expect(
                    http,
                    Method::POST,
                    &format!("{path}/decrypt"),
                    Some(&body),
                    "decrypt",
                )
                .await?;
            if value_of(&check, "decrypt")? != dek {
                bail!("decrypt returned another plaintext than the one encrypted");
            }
            Some(body)
        }
    };
    let (method, url) = match op {
        Op::Get => (
            Method::GET,
            format!("{}{path}?api-version={API_VERSION}", target.base),
        ),
        _ => (
            Method::POST,
            format!(
                "{}{path}/{}?api-version={API_VERSION}",
                target.base,
                op.name()
            ),
        ),
    };
    Ok(LoadRequest {
        method,
        url,
        auth: format!("Bearer {}", target.token),
        body: body.map(|b| b.to_string()),
    })
}

// ------------------------------------------------------------------------------ load phase

#[derive(Default)]
struct WorkerStats {
    ok: u64,
    errors: u64,
    /// Latencies of successful requests completed in the measured period, in microseconds.
    latencies_us: Vec<u64>,
}

/// Prints the first failed request (once) to stderr.
fn note_error(first: &Mutex<bool>, in_warmup: bool, what: String) {
    if let Ok(mut seen) = first.lock() {
        if !*seen {
            *seen = true;
            let when = if in_warmup { " (during warm-up)" } else { "" };
            eprintln!("bench: first error{when}: {what}");
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// One client: sends the request back to back until `end`; counts what completes after
/// `warm_end`. An in-flight request is abandoned at `end`.
async fn worker(
    http: reqwest::Client,
    req: Arc<LoadRequest>,
    warm_end: Instant,
    end: Instant,
    first_error: Arc<Mutex<bool>>,
) -> WorkerStats {
    let mut st = WorkerStats {
        latencies_us: Vec::with_capacity(4096),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::from_std(end);
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let mut builder = http
            .request(req.method.clone(), &req.url)
            .header(AUTHORIZATION, &req.auth);
        if let Some(b) = &req.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(b.clone());
        }
        let exchange = async move {
            let resp = builder.send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let outcome = tokio::select! {
            r = exchange => r,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let done = Instant::now();
        let counted = done >= warm_end && done <= end;
        match outcome {
            Ok((status, _)) if status.is_success() => {
                if counted {
                    st.ok += 1;
                    let us = u64::try_from((done - sent).as_micros()).unwrap_or(u64::MAX);
                    st.latencies_us.push(us);
                }
            }
            Ok((status, body)) => {
                if counted {
                    st.errors += 1;
                }
                note_error(
                    &first_error,
                    done < warm_end,
                    format!("HTTP {}: {}", status.as_u16(), snippet(&body)),
                );
            }
            Err(e) => {
                if counted {
                    st.errors += 1;
                }
                note_error(&first_error, done < warm_end, error_chain(&e));
                // Do not spin on a dead server: back off a little before the next attempt.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {},
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }
    st
}

/// Runs the load phase; returns the merged statistics.
async fn load(
    target: &Target,
    req: LoadRequest,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<(WorkerStats, Option<(f64, f64)>)> {
    let clients = (0..concurrency)
        .map(|_| target.client())
        .collect::<Result<Vec<_>>>()?;
    let req = Arc::new(req);
    let first_error = Arc::new(Mutex::new(false));
    let start = Instant::now();
    let warm_end = start + warmup;
    let end = warm_end + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(worker(c, req.clone(), warm_end, end, first_error.clone())))
        .collect();
    // CPU use is sampled over the measured period only.
    tokio::time::sleep_until(tokio::time::Instant::from_std(warm_end)).await;
    let cpu = CpuSample::now();
    let mut total = WorkerStats::default();
    for t in tasks {
        let st = t.await.context("a load task failed")?;
        total.ok += st.ok;
        total.errors += st.errors;
        total.latencies_us.extend_from_slice(&st.latencies_us);
    }
    total.latencies_us.sort_unstable();
    let cpu = cpu.and_then(|c| c.cores_since());
    Ok((total, cpu))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// `p50=… p99=… p999=… max=…` of sorted latencies in microseconds, or `n/a` when empty.
fn latency_summary(sorted: &[u64]) -> String {
    match sorted.last() {
        None => "n/a".into(),
        Some(&max) => format!(
            "p50={} p99={} p999={} max={}",
            ms(percentile(sorted, 0.50)),
            ms(percentile(sorted, 0.99)),
            ms(percentile(sorted, 0.999)),
            ms(max)
        ),
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

// ------------------------------------------------------------------------------ entry point

/// Runs the benchmark.
pub(crate) async fn run(args: BenchArgs) -> Result<()> {
    if args.op.eq_ignore_ascii_case("envelope") {
        return envelope::run(&args).await;
    }
    if args.op.eq_ignore_ascii_case("scan") {
        return scan::run(&args);
    }
    if args.resources.is_some() {
        bail!("--resources applies to `bench scan` only");
    }
    let op = Op::parse(&args.op)?;
    if args.size.is_some()
        || args.files.is_some()
        || args.dir.is_some()
        || args.rewrap
        || args.fsync
    {
        bail!("--size, --files, --dir, --rewrap and --fsync apply to `bench envelope` only");
    }
    let duration = crate::parse_duration(&args.duration).context("--duration")?;
    if duration < Duration::from_secs(1) || duration > MAX_DURATION {
        bail!("--duration must be between 1s and 1h");
    }
    let warmup = crate::parse_duration(&args.warmup).context("--warmup")?;
    if warmup > MAX_WARMUP {
        bail!("--warmup must be at most 10m");
    }
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        bail!("--concurrency must be between 1 and {MAX_CONCURRENCY}");
    }
    let flag_spec = KeySpec::from_flags(&args.key_type, args.key_size, args.curve.as_deref())?;
    if let Some(name) = &args.key {
        if name.is_empty()
            || name.len() > 127
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            bail!("--key '{name}' is not a key name (1-127 letters, digits and hyphens)");
        }
    }
    // Fail fast on a bad algorithm before starting anything (an existing --key may change the
    // spec; it is checked again below).
    resolve_alg(op, &flag_spec, args.alg.as_deref())?;

    if args.url.is_some() && args.audit != "on" {
        bail!("--audit {} applies to the embedded server only; a remote server's audit cannot be switched off", args.audit);
    }
    if args.audit == "both" {
        if args.key.is_some() {
            bail!("--audit both creates a fresh key on each embedded server; drop --key");
        }
        return compare_audit(&args, op, flag_spec, warmup, duration).await;
    }
    let target = match &args.url {
        Some(url) => Target::external(url, &args)?,
        None => Target::embedded(warmup + duration, args.audit == "on").await?,
    };
    let result = bench(&args, op, flag_spec, &target, warmup, duration).await;
    target.close().await;
    result
}

async fn bench(
    args: &BenchArgs,
    op: Op,
    flag_spec: KeySpec,
    target: &Target,
    warmup: Duration,
    duration: Duration,
) -> Result<()> {
    let http = target.client()?;
    let existing = match &args.key {
        Some(name) => {
            let (status, json) = target
                .call(&http, Method::GET, &format!("/keys/{name}"), None)
                .await?;
            match status {
                200..=299 => Some(json),
                404 => None,
                _ => bail!("cannot read key {name}: {}", describe_error(status, &json)),
            }
        }
        None => None,
    };
    let spec = match &existing {
        Some(b) => KeySpec::from_bundle(b, &flag_spec)?,
        None => flag_spec,
    };
    let alg = resolve_alg(op, &spec, args.alg.as_deref())?;

    // The local key for the raw limit; running the operation once validates the algorithm.
    let raw = match &alg {
        Some(a) => {
            let (s, a) = (spec.clone(), a.clone());
            let raw = tokio::task::spawn_blocking(move || RawOp::new(&s, op, &a))
                .await
                .context("the raw-limit setup failed")??;
            Some(Arc::new(raw))
        }
        None => None,
    };

    let name = match &args.key {
        Some(n) => n.clone(),
        None => format!("bench-{}", hex::encode(random(4)?)),
    };
    let created = existing.is_none();
    let bundle = match existing {
        Some(b) => b,
        None => {
            let b = create_key(target, &http, &name, &spec).await?;
            eprintln!("bench: created key {name} ({})", spec.label());
            b
        }
    };
    let path = key_path(&bundle)?;

    let outcome = measure(
        args,
        op,
        &spec,
        alg.as_deref(),
        target,
        &http,
        &path,
        raw,
        warmup,
        duration,
    )
    .await;

    // A key made on someone's server is removed again (best effort; purge may be refused).
    if created && target.embedded.is_none() {
        let del = target
            .call(&http, Method::DELETE, &format!("/keys/{name}"), None)
            .await;
        let purge = match del {
            Ok((200..=299, _)) => {
                target
                    .call(&http, Method::DELETE, &format!("/deletedkeys/{name}"), None)
                    .await
            }
            other => other,
        };
        match purge {
            Ok((200..=299, _)) => eprintln!("bench: deleted and purged key {name}"),
            Ok((s, j)) => eprintln!(
                "bench: key {name} was not removed: {}",
                describe_error(s, &j)
            ),
            Err(e) => eprintln!("bench: key {name} was not removed: {e:#}"),
        }
    }
    outcome
}

/// The raw limit over `period` on `threads` threads, off the async workers; warns when other
/// processes took CPU meanwhile.
async fn raw_limit(
    raw: Arc<RawOp>,
    threads: usize,
    period: Duration,
) -> Result<(f64, Option<f64>)> {
    let cpu = CpuSample::now();
    let limit = tokio::task::spawn_blocking(move || raw.measure(threads, period))
        .await
        .context("the raw-limit measurement failed")??;
    let used = cpu.and_then(|c| c.cores_since());
    if let Some((_, others)) = used {
        if others > OTHER_LOAD_WARN {
            eprintln!(
                "bench: warning: other processes used {others:.2} cores during the raw-limit measurement; the ratio is unreliable"
            );
        }
    }
    Ok((limit, used.map(|(own, _)| own)))
}

/// Cores used by other processes above which a phase is reported as disturbed.
const OTHER_LOAD_WARN: f64 = 0.25;
/// Linux reports CPU time in USER_HZ ticks, which is 100 per second on every architecture.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time used by the whole machine and by this process (Linux `/proc`; `None` elsewhere).
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    /// Non-idle ticks over all CPUs (including steal).
    busy: u64,
    /// User and system ticks of this process, all threads.
    own: u64,
    at: Instant,
}

impl CpuSample {
    fn now() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map_while(|x| x.parse().ok())
            .collect();
        if cpu.len() < 5 {
            return None;
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = cpu.iter().take(8).sum();
        let busy = total.saturating_sub(cpu[3] + cpu[4]);
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name: state is field 3, utime 14 and stime 15.
        let fields: Vec<&str> = own[own.rfind(')')? + 1..].split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(CpuSample {
            busy,
            own: utime + stime,
            at: Instant::now(),
        })
    }

    /// Cores used since this sample: (this process, everything else).
    fn cores_since(&self) -> Option<(f64, f64)> {
        let now = CpuSample::now()?;
        let secs = (now.at - self.at).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let own = now.own.saturating_sub(self.own) as f64 / TICKS_PER_SEC / secs;
        let busy = now.busy.saturating_sub(self.busy) as f64 / TICKS_PER_SEC / secs;
        Some((own, (busy - own).max(0.0)))
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &BenchArgs,
    op: Op,
    spec: &KeySpec,
    alg: Option<&str>,
    target: &Target,
    http: &reqwest::Client,
    path: &str,
    raw: Option<Arc<RawOp>>,
    warmup: Duration,
    duration: Duration,
) -> Result<()> {
    let req = prepare_request(target, http, op, alg, path).await?;

    println!(
        "bench: op={} key={} alg={} concurrency={} duration={} warmup={} server={}",
        op.name(),
        spec.label(),
        alg.unwrap_or("none"),
        args.concurrency,
        secs(duration),
        secs(warmup),
        target.label
    );
    // The raw limit is measured in two halves, just before and just after the load, so a
    // change in the machine's background load shows up as a difference between them.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let half = duration.clamp(RAW_MIN, RAW_MAX) / 2;
    let raw_before = match &raw {
        Some(r) => {
            eprintln!(
                "bench: raw limit on {threads} threads for {:.1}s (first half) ...",
                half.as_secs_f64()
            );
            Some(raw_limit(r.clone(), threads, half).await?)
        }
        None => None,
    };
    eprintln!(
        "bench: {} clients, warm-up {}, measuring {} ...",
        args.concurrency,
        secs(warmup),
        secs(duration)
    );
    let (stats, load_cpu) = load(target, req, args.concurrency, warmup, duration).await?;
    if let Some((own, others)) = load_cpu {
        let who = if target.embedded.is_some() {
            "server and load generator"
        } else {
            "load generator"
        };
        eprintln!(
            "bench: cpu during the load: {own:.2} cores for this process ({who}), {others:.2} for other processes, of {threads}"
        );
        if others > OTHER_LOAD_WARN {
            eprintln!(
                "bench: warning: other processes used {others:.2} cores during the load; the ratio is unreliable"
            );
        }
    }
    let throughput = stats.ok as f64 / duration.as_secs_f64();
    println!("requests: {} ok, {} errors", stats.ok, stats.errors);
    println!("throughput: {throughput:.1} ops/s");
    println!("latency: {}", latency_summary(&stats.latencies_us));

    match (raw, raw_before) {
        (Some(raw), Some(before)) => {
            eprintln!(
                "bench: raw limit on {threads} threads for {:.1}s (second half) ...",
                half.as_secs_f64()
            );
            let (after, after_cpu) = raw_limit(raw, threads, half).await?;
            let (before, before_cpu) = before;
            let limit = (before + after) / 2.0;
            // CPU time per operation, which other load on the machine disturbs much less than
            // throughput: the HTTPS path's overhead over the bare operation.
            if let (Some((own, _)), Some(b), Some(a)) = (load_cpu, before_cpu, after_cpu) {
                let raw_cores = (b + a) / 2.0;
                if throughput > 0.0 && limit > 0.0 && raw_cores > 0.0 {
                    eprintln!(
                        "bench: cpu per request: {:.1}us over HTTPS ({}) vs {:.1}us for the bare operation",
                        own / throughput * 1e6,
                        if target.embedded.is_some() { "server + load generator" } else { "load generator only" },
                        raw_cores / limit * 1e6
                    );
                }
            }
            if before.max(after) > 1.25 * before.min(after) {
                eprintln!(
                    "bench: warning: the raw limit moved from {before:.1} to {after:.1} ops/s during the run (other load on the machine?); the ratio is unreliable"
                );
            }
            println!("raw aws-lc-rs: {limit:.1} ops/s on {threads} threads");
            if limit > 0.0 {
                println!("ratio: {:.1}% of the raw limit", throughput / limit * 100.0);
            } else {
                println!("ratio: n/a");
            }
        }
        _ => {
            println!("raw aws-lc-rs: n/a");
            println!("ratio: n/a");
        }
    }
    if stats.ok == 0 {
        bail!("no request succeeded (the first error is shown above)");
    }
    Ok(())
}

// ------------------------------------------------------------------------ audit on vs off

/// Length of one measured slice of `--audit both`.
const SLICE: Duration = Duration::from_secs(1);
/// Unmeasured start of each slice (new connections, TLS handshakes).
const SLICE_WARMUP: Duration = Duration::from_millis(300);

/// One side of `--audit both`.
struct Side {
    target: Target,
    req: LoadRequest,
    total: WorkerStats,
    cores: Vec<f64>,
    per_slice: Vec<f64>,
}

impl Side {
    async fn start(
        audit: bool,
        op: Op,
        spec: &KeySpec,
        alg: Option<&str>,
        ttl: Duration,
    ) -> Result<Side> {
        let target = Target::embedded(ttl, audit).await?;
        let http = target.client()?;
        let name = format!("bench-{}", hex::encode(random(4)?));
        let bundle = create_key(&target, &http, &name, spec).await?;
        let req = prepare_request(&target, &http, op, alg, &key_path(&bundle)?).await?;
        Ok(Side {
            target,
            req,
            total: WorkerStats::default(),
            cores: Vec::new(),
            per_slice: Vec::new(),
        })
    }

    async fn slice(&mut self, concurrency: usize) -> Result<()> {
        let (st, cpu) = load(
            &self.target,
            self.req.clone(),
            concurrency,
            SLICE_WARMUP,
            SLICE,
        )
        .await?;
        self.per_slice.push(st.ok as f64 / SLICE.as_secs_f64());
        self.total.ok += st.ok;
        self.total.errors += st.errors;
        self.total.latencies_us.extend_from_slice(&st.latencies_us);
        if let Some((own, _)) = cpu {
            self.cores.push(own);
        }
        Ok(())
    }

    fn report(&mut self, label: &str, measured: Duration) -> f64 {
        let throughput = self.total.ok as f64 / measured.as_secs_f64();
        self.total.latencies_us.sort_unstable();
        let l = &self.total.latencies_us;
        println!(
            "{label} requests: {} ok, {} errors",
            self.total.ok, self.total.errors
        );
        println!("{label} throughput: {throughput:.1} ops/s");
        if !l.is_empty() {
            println!("{label} latency: {}", latency_summary(l));
        }
        if !self.cores.is_empty() && throughput > 0.0 {
            let cores = self.cores.iter().sum::<f64>() / self.cores.len() as f64;
            eprintln!(
                "bench: {label}: {cores:.2} cores in use on average, {:.1}us cpu per request (server and load generator)",
                cores / throughput * 1e6
            );
        }
        throughput
    }
}

/// `--audit both`: the same load on an audit-on and an audit-off embedded server, in
/// alternating one-second slices (the order flips every round), so the ratio between them
/// holds even when the machine's speed drifts during the run.
async fn compare_audit(
    args: &BenchArgs,
    op: Op,
    spec: KeySpec,
    warmup: Duration,
    duration: Duration,
) -> Result<()> {
    let alg = resolve_alg(op, &spec, args.alg.as_deref())?;
    let rounds = duration.as_secs().max(1) as u32;
    let ttl = warmup + (SLICE + SLICE_WARMUP) * 2 * rounds;
    let mut on = Side::start(true, op, &spec, alg.as_deref(), ttl).await?;
    let mut off = match Side::start(false, op, &spec, alg.as_deref(), ttl).await {
        Ok(s) => s,
        Err(e) => {
            on.target.close().await;
            return Err(e);
        }
    };
    println!(
        "bench: op={} key={} alg={} concurrency={} duration={} warmup={} server=embedded audit=both slices={}x{}",
        op.name(),
        spec.label(),
        alg.as_deref().unwrap_or("none"),
        args.concurrency,
        secs(duration),
        secs(warmup),
        rounds,
        secs(SLICE)
    );
    let result = async {
        if !warmup.is_zero() {
            for side in [&mut on, &mut off] {
                load(&side.target, side.req.clone(), args.concurrency, warmup, Duration::from_millis(1)).await?;
            }
        }
        eprintln!(
            "bench: {} clients, {rounds} rounds of one {}-slice per server ...",
            args.concurrency,
            secs(SLICE)
        );
        for round in 0..rounds {
            if round % 2 == 0 {
                on.slice(args.concurrency).await?;
                off.slice(args.concurrency).await?;
            } else {
                off.slice(args.concurrency).await?;
                on.slice(args.concurrency).await?;
            }
        }
        let measured = SLICE * rounds;
        if let Some(audit) = on.target.embedded.as_ref().and_then(|e| e.server.audit.as_ref()) {
            let st = audit.stats();
            if st.commits > 0 {
                eprintln!(
                    "bench: audit=on: {} records in {} commits ({:.1} records per fsync)",
                    st.records,
                    st.commits,
                    st.records as f64 / st.commits as f64
                );
            }
        }
        let t_on = on.report("audit=on", measured);
        let t_off = off.report("audit=off", measured);
        let mut ratios: Vec<f64> = on
            .per_slice
            .iter()
            .zip(&off.per_slice)
            .filter(|(_, b)| **b > 0.0)
            .map(|(a, b)| a / b * 100.0)
            .collect();
        ratios.sort_by(|a, b| a.total_cmp(b));
        if t_off > 0.0 && !ratios.is_empty() {
            println!(
                "audit ratio: {:.1}% (on/off throughput; per round min {:.1}% median {:.1}% max {:.1}%)",
                t_on / t_off * 100.0,
                ratios[0],
                ratios[ratios.len() / 2],
                ratios[ratios.len() - 1]
            );
        } else {
            println!("audit ratio: n/a");
        }
        if on.total.ok == 0 || off.total.ok == 0 {
            bail!("no request succeeded on one of the servers (the first error is shown above)");
        }
        Ok(())
    }
    .await;
    on.target.close().await;
    off.target.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_parse() {
        assert_eq!(Op::parse("unwrapKey").unwrap(), Op::UnwrapKey);
        assert_eq!(Op::parse("GET").unwrap(), Op::Get);
        let e = Op::parse("encrypt").unwrap_err().to_string();
        assert!(
            e.contains("unwrapkey, wrapkey, sign, decrypt or get"),
            "{e}"
        );
    }

    #[test]
    fn key_specs_and_default_algs() {
        let rsa = KeySpec::from_flags("RSA", None, None).unwrap();
        assert_eq!(rsa.label(), "RSA-2048");
        assert_eq!(
            resolve_alg(Op::UnwrapKey, &rsa, None).unwrap().as_deref(),
            Some("RSA-OAEP-256")
        );
        assert_eq!(
            resolve_alg(Op::Sign, &rsa, None).unwrap().as_deref(),
            Some("RS256")
        );
        assert_eq!(resolve_alg(Op::Get, &rsa, None).unwrap(), None);
        assert!(resolve_alg(Op::Get, &rsa, Some("RS256")).is_err());

        let ec = KeySpec::from_flags("ec", None, Some("p-384")).unwrap();
        assert_eq!(ec.label(), "EC-P-384");
        assert_eq!(
            resolve_alg(Op::Sign, &ec, None).unwrap().as_deref(),
            Some("ES384")
        );
        assert!(resolve_alg(Op::UnwrapKey, &ec, None).is_err());

        let oct = KeySpec::from_flags("oct-HSM", None, None).unwrap();
        assert_eq!(oct.label(), "oct-HSM-256");
        assert_eq!(
            resolve_alg(Op::Decrypt, &oct, None).unwrap().as_deref(),
            Some("A256GCM")
        );
        assert_eq!(
            resolve_alg(Op::WrapKey, &oct, None).unwrap().as_deref(),
            Some("A256KW")
        );
        assert!(resolve_alg(Op::Sign, &oct, None).is_err());

        assert!(KeySpec::from_flags("RSA", Some(1024), None).is_err());
        assert!(KeySpec::from_flags("RSA", None, Some("P-256")).is_err());
        assert!(KeySpec::from_flags("EC", Some(384), None).is_err());
        assert!(KeySpec::from_flags("oct", Some(512), None).is_err());
        assert!(KeySpec::from_flags("DSA", None, None).is_err());
    }

    #[test]
    fn raw_op_rejects_a_bad_alg() {
        let oct = KeySpec::from_flags("oct-HSM", None, None).unwrap();
        let e = RawOp::new(&oct, Op::UnwrapKey, "RSA-OAEP-256")
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("RSA-OAEP-256"), "{e:#}");
        let e = RawOp::new(&oct, Op::UnwrapKey, "NOPE").err().unwrap();
        assert!(
            format!("{e:#}").ends_with("unsupported algorithm NOPE: unknown algorithm"),
            "{e:#}"
        );
        let raw = RawOp::new(&oct, Op::Decrypt, "A256GCM").unwrap();
        assert!(raw.measure(1, Duration::from_millis(20)).unwrap() > 0.0);
        let raw = RawOp::new(&oct, Op::Decrypt, "A256CBC").unwrap();
        raw.once().unwrap();
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(ms(12_345), "12.35ms");
    }

    #[test]
    fn kid_paths() {
        let b = json!({"key": {"kid": "https://127.0.0.1:4443/keys/k1/abc"}});
        assert_eq!(key_path(&b).unwrap(), "/keys/k1/abc");
    }
}
