//! `scan --vault URL`: reads the live vault over its API, as any client does, and returns its
//! vaults (ARM-shaped `Microsoft.KeyVault/vaults`, from the management API) and their keys
//! (ARM-shaped `Microsoft.KeyVault/vaults/keys`, from the keys API: type, size, attributes and
//! rotation policy), so the CMK rule pack evaluates them like an inventory.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::client::tls_config;

/// The keys API version used to read keys.
const API_VERSION: &str = "7.5";
/// Most pages of a key list followed (bounded: 25 keys per page by default).
const MAX_PAGES: usize = 10_000;

/// A reader of one cmkvault server.
struct VaultReader {
    http: reqwest::Client,
    token: String,
}

impl VaultReader {
    async fn get(&self, url: &str) -> Result<Value> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = json["error"]["message"].as_str().unwrap_or(text.as_str());
            let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
            bail!("GET {url}: {} {msg}", status.as_u16());
        }
        Ok(json)
    }
}

/// Reads every vault of the server at `url` and every key in them.
pub(crate) async fn read_vault(url: &str, ca: &Path, token: &str) -> Result<Vec<Value>> {
    let base = reqwest::Url::parse(url).with_context(|| format!("--vault {url}"))?;
    if base.scheme() != "https" {
        bail!("--vault {url}: expected an https:// URL");
    }
    // Vaults other than the default one are served at NAME.<vault-domain>: resolve those names
    // to the address of --vault so that no DNS set-up is needed.
    let addrs: Vec<SocketAddr> = base
        .socket_addrs(|| Some(443))
        .with_context(|| format!("--vault {url}: cannot resolve"))?;
    let addr = *addrs
        .first()
        .ok_or_else(|| anyhow!("--vault {url}: no address"))?;
    let mut reader = VaultReader {
        http: http_client_resolving(ca, addr, &[])?,
        token: token.to_string(),
    };
    let list_url = format!("{}/management/vaults", url.trim_end_matches('/'));
    let list = reader.get(&list_url).await?;
    let vaults = list["value"].as_array().cloned().unwrap_or_default();
    let hosts: Vec<String> = vaults
        .iter()
        .filter_map(|v| v["properties"]["vaultUri"].as_str())
        .filter_map(|u| reqwest::Url::parse(u).ok()?.host_str().map(str::to_owned))
        .collect();
    reader.http = http_client_resolving(ca, addr, &hosts)?;
    let mut out = Vec::new();
    for vault in vaults {
        let keys = read_keys(&reader, &vault).await?;
        out.push(vault);
        out.extend(keys);
    }
    Ok(out)
}

/// An HTTPS client trusting `ca` that sends requests for each of `hosts` to `addr`.
fn http_client_resolving(ca: &Path, addr: SocketAddr, hosts: &[String]) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().tls_backend_preconfigured(tls_config(ca)?);
    for h in hosts {
        b = b.resolve(h, addr);
    }
    b.build().context("cannot build the HTTPS client")
}

/// The keys of one vault, ARM-shaped.
async fn read_keys(reader: &VaultReader, vault: &Value) -> Result<Vec<Value>> {
    let Some(uri) = vault["properties"]["vaultUri"].as_str() else {
        return Ok(Vec::new());
    };
    let vault_id = vault["id"].as_str().unwrap_or_default();
    let vault_name = vault["name"].as_str().unwrap_or_default();
    let uri = uri.trim_end_matches('/');
    let mut next = Some(format!("{uri}/keys?api-version={API_VERSION}"));
    let mut names = Vec::new();
    for _ in 0..MAX_PAGES {
        let Some(url) = next.take() else { break };
        let page = reader.get(&url).await?;
        for item in page["value"].as_array().into_iter().flatten() {
            if let Some(name) = item["kid"].as_str().and_then(|k| k.rsplit('/').next()) {
                names.push(name.to_string());
            }
        }
        next = page["nextLink"].as_str().map(str::to_owned);
    }
    let mut keys = Vec::with_capacity(names.len());
    for name in names {
        let key = reader
            .get(&format!("{uri}/keys/{name}?api-version={API_VERSION}"))
            .await?;
        // A key without a rotation policy answers 404 on some servers; an empty policy on ours.
        let policy = reader
            .get(&format!(
                "{uri}/keys/{name}/rotationpolicy?api-version={API_VERSION}"
            ))
            .await
            .unwrap_or(Value::Null);
        keys.push(arm_key(vault_id, vault_name, &name, &key, &policy));
    }
    Ok(keys)
}

/// A key bundle (keys API) as an ARM `Microsoft.KeyVault/vaults/keys` resource.
fn arm_key(vault_id: &str, vault_name: &str, name: &str, bundle: &Value, policy: &Value) -> Value {
    let jwk = &bundle["key"];
    let kid = jwk["kid"].as_str().unwrap_or_default();
    let versionless = kid.rsplit_once('/').map(|(a, _)| a).unwrap_or(kid);
    let mut props = Map::new();
    props.insert("kty".into(), jwk["kty"].clone());
    if let Some(size) = rsa_bits(jwk) {
        props.insert("keySize".into(), json!(size));
    }
    if let Some(crv) = jwk.get("crv") {
        props.insert("curveName".into(), crv.clone());
    }
    props.insert("keyOps".into(), jwk["key_ops"].clone());
    props.insert("attributes".into(), bundle["attributes"].clone());
    props.insert("keyUri".into(), json!(versionless));
    props.insert("keyUriWithVersion".into(), json!(kid));
    if policy.is_object() {
        props.insert(
            "rotationPolicy".into(),
            json!({
                "attributes": {"expiryTime": policy["attributes"]["expiryTime"]},
                "lifetimeActions": policy["lifetimeActions"],
            }),
        );
    }
    json!({
        "id": format!("{vault_id}/keys/{name}"),
        "name": format!("{vault_name}/{name}"),
        "type": "Microsoft.KeyVault/vaults/keys",
        "tags": bundle.get("tags").cloned().unwrap_or(json!({})),
        "properties": Value::Object(props),
    })
}

/// The modulus size in bits of an RSA JWK.
fn rsa_bits(jwk: &Value) -> Option<u64> {
    let n = jwk["n"].as_str()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    let lead = u64::from(8 - bytes[first].leading_zeros() as u8);
    Some((bytes.len() - first - 1) as u64 * 8 + lead)
}
