//! The JSON wire format of the Azure Key Vault keys API: request bodies in, bundles out.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cmkvault_crypto::{Alg, JwkPrivate};
use cmkvault_vault::model::{AttributesInput, KeyView, Page};
use cmkvault_vault::rotation::{ActionType, RotationPolicy, RotationPolicyInput, Trigger};
use cmkvault_vault::VaultError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::error::ApiError;

/// Parses a JSON body, naming what is wrong on failure.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(
            "The request body is missing: this operation needs a JSON body.",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("The request body is not valid: {e}.")))
}

/// Decodes base64url, padded or not.
pub fn b64_decode(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    B64URL
        .decode(text.trim_end_matches('='))
        .map_err(|_| ApiError::bad(format!("The '{field}' field is not valid base64url.")))
}

/// Encodes base64url without padding.
pub fn b64_encode(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// Unix time given as a JSON integer or float.
fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v: Option<Value> = Option::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("time must be Unix seconds")),
        Some(_) => Err(serde::de::Error::custom(
            "time must be Unix seconds (a number)",
        )),
    }
}

/// `attributes` in create, import and update bodies (read-only members are ignored).
#[derive(Deserialize, Default)]
pub struct AttributesWire {
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "de_time")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "de_time")]
    exp: Option<i64>,
    exportable: Option<bool>,
}

/// Converts optional wire attributes into the domain's attribute changes.
pub fn attributes_input(a: Option<AttributesWire>) -> AttributesInput {
    {
        let a = a.unwrap_or_default();
        AttributesInput {
            enabled: a.enabled,
            nbf: a.nbf,
            exp: a.exp,
            exportable: a.exportable,
        }
    }
}

/// `KeyCreateParameters`.
#[derive(Deserialize)]
pub struct CreateWire {
    /// Key type (`RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`).
    pub kty: String,
    /// Key size in bits (RSA, oct).
    pub key_size: Option<u32>,
    /// RSA public exponent.
    pub public_exponent: Option<u64>,
    /// Elliptic curve name.
    pub crv: Option<String>,
    /// Permitted operations (`key_ops`).
    pub key_ops: Option<Vec<String>>,
    /// `enabled`, `nbf`, `exp`, `exportable`.
    pub attributes: Option<AttributesWire>,
    /// Application tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Secure key release policy (kept, not enforced).
    pub release_policy: Option<Value>,
}

/// The JWK inside `KeyImportParameters`.
#[derive(Deserialize)]
pub struct JwkWire {
    /// Key type (`RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`).
    pub kty: String,
    /// Permitted operations (`key_ops`).
    pub key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
    p: Option<String>,
    q: Option<String>,
    k: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    key_hsm: Option<String>,
    t: Option<String>,
}

impl JwkWire {
    /// Decodes the members into the crypto layer's private JWK.
    pub fn into_private(self) -> Result<JwkPrivate, ApiError> {
        if self.key_hsm.is_some() || self.t.is_some() {
            return Err(ApiError::bad(
                "BYOK import (key_hsm) is not supported: import the key as a plain JWK.",
            ));
        }
        let plain =
            |f: &str, v: &Option<String>| v.as_deref().map(|s| b64_decode(f, s)).transpose();
        let secret = |f: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| b64_decode(f, s).map(Zeroizing::new))
                .transpose()
        };
        Ok(JwkPrivate {
            kty: self.kty.clone(),
            n: plain("n", &self.n)?,
            e: plain("e", &self.e)?,
            d: secret("d", &self.d)?,
            p: secret("p", &self.p)?,
            q: secret("q", &self.q)?,
            dp: secret("dp", &self.dp)?,
            dq: secret("dq", &self.dq)?,
            qi: secret("qi", &self.qi)?,
            crv: self.crv.clone(),
            x: plain("x", &self.x)?,
            y: plain("y", &self.y)?,
            k: secret("k", &self.k)?,
        })
    }
}

/// `KeyImportParameters`.
#[derive(Deserialize)]
pub struct ImportWire {
    /// The key as a private JWK.
    pub key: JwkWire,
    /// Whether the key should be HSM-protected (`Hsm`).
    #[serde(rename = "Hsm")]
    pub hsm: Option<bool>,
    /// `enabled`, `nbf`, `exp`, `exportable`.
    pub attributes: Option<AttributesWire>,
    /// Application tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Secure key release policy (kept, not enforced).
    pub release_policy: Option<Value>,
}

/// `KeyUpdateParameters`.
#[derive(Deserialize)]
pub struct UpdateWire {
    /// Permitted operations (`key_ops`).
    pub key_ops: Option<Vec<String>>,
    /// `enabled`, `nbf`, `exp`, `exportable`.
    pub attributes: Option<AttributesWire>,
    /// Application tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Secure key release policy (kept, not enforced).
    pub release_policy: Option<Value>,
}

/// Parses the `alg` of an operation body: the one place a JWA name becomes an [`Alg`]. An
/// unknown name is the crypto layer's `UnsupportedAlgorithm`, mapped like every domain error
/// (400 `BadParameter`, "unsupported algorithm NAME: unknown algorithm").
pub fn parse_alg(name: &str) -> Result<Alg, ApiError> {
    name.parse()
        .map_err(|e| ApiError::from(VaultError::from(e)))
}

/// `KeyOperationsParameters`, `KeySignParameters` and `KeyVerifyParameters` in one.
#[derive(Deserialize)]
pub struct OperationWire {
    /// JWA algorithm name; parsed once by [`parse_alg`].
    pub alg: String,
    /// The payload, base64url.
    pub value: String,
    /// Initialisation vector (AES), base64url.
    pub iv: Option<String>,
    /// Additional authenticated data (AES-GCM), base64url.
    pub aad: Option<String>,
    /// Authentication tag (AES-GCM decrypt), base64url.
    pub tag: Option<String>,
    /// Digest to verify against (verify), base64url.
    pub digest: Option<String>,
}

/// `{"value": ...}` bodies (restore).
#[derive(Deserialize)]
pub struct ValueWire {
    /// The payload, base64url.
    pub value: String,
}

/// `{"count": n}` (rng).
#[derive(Deserialize)]
pub struct RngWire {
    /// Number of random bytes (1 to 128).
    pub count: i64,
}

#[derive(Deserialize)]
struct ActionWire {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct LifetimeActionWire {
    trigger: Option<Trigger>,
    action: ActionWire,
}

#[derive(Deserialize)]
struct PolicyAttributesWire {
    #[serde(rename = "expiryTime")]
    expiry_time: Option<String>,
}

/// `KeyRotationPolicy` as submitted.
#[derive(Deserialize)]
pub struct RotationPolicyWire {
    #[serde(rename = "lifetimeActions")]
    lifetime_actions: Option<Vec<LifetimeActionWire>>,
    attributes: Option<PolicyAttributesWire>,
}

impl From<RotationPolicyWire> for RotationPolicyInput {
    fn from(w: RotationPolicyWire) -> Self {
        RotationPolicyInput {
            lifetime_actions: w
                .lifetime_actions
                .unwrap_or_default()
                .into_iter()
                .map(|a| (a.trigger.unwrap_or_default(), a.action.kind))
                .collect(),
            expiry_time: w.attributes.and_then(|a| a.expiry_time),
        }
    }
}

/// Renders a rotation policy; `has_id` is false for the default policy of a key that never
/// had one.
pub fn rotation_policy(base: &str, name: &str, p: &RotationPolicy, has_id: bool) -> Value {
    let actions: Vec<Value> = p
        .lifetime_actions
        .iter()
        .map(|a| {
            json!({
                "trigger": a.trigger,
                "action": {"type": match a.action { ActionType::Rotate => "Rotate", ActionType::Notify => "Notify" }},
            })
        })
        .collect();
    let mut attrs = Map::new();
    if let Some(e) = &p.expiry_time {
        attrs.insert("expiryTime".into(), json!(e));
    }
    if let Some(c) = p.created {
        attrs.insert("created".into(), json!(c));
    }
    if let Some(u) = p.updated {
        attrs.insert("updated".into(), json!(u));
    }
    let mut out = json!({"lifetimeActions": actions, "attributes": attrs});
    if has_id {
        out["id"] = json!(format!("{base}/keys/{name}/rotationpolicy"));
    }
    out
}

fn attributes(v: &KeyView) -> Value {
    let p = &v.props;
    let mut a = Map::new();
    a.insert("enabled".into(), json!(p.enabled));
    if let Some(nbf) = p.nbf {
        a.insert("nbf".into(), json!(nbf));
    }
    if let Some(exp) = p.exp {
        a.insert("exp".into(), json!(exp));
    }
    a.insert("created".into(), json!(p.created));
    a.insert("updated".into(), json!(p.updated));
    a.insert("recoveryLevel".into(), json!(v.recovery_level));
    a.insert("recoverableDays".into(), json!(v.recoverable_days));
    if let Some(x) = p.exportable {
        a.insert("exportable".into(), json!(x));
    }
    Value::Object(a)
}

fn add_deleted(out: &mut Value, base: &str, v: &KeyView) {
    if let Some((deleted, purge)) = v.deleted {
        out["recoveryId"] = json!(format!("{base}/deletedkeys/{}", v.name));
        out["deletedDate"] = json!(deleted);
        out["scheduledPurgeDate"] = json!(purge);
    }
}

/// A `KeyBundle` (or `DeletedKeyBundle` when the view is deleted).
pub fn key_bundle(base: &str, v: &KeyView) -> Value {
    let p = &v.props;
    let mut key = json!({
        "kid": format!("{base}/keys/{}/{}", v.name, v.version),
        "kty": p.kty.as_str(),
        "key_ops": p.key_ops,
    });
    for (name, val) in [
        ("n", &p.public.n),
        ("e", &p.public.e),
        ("crv", &p.public.crv),
        ("x", &p.public.x),
        ("y", &p.public.y),
    ] {
        if let Some(val) = val {
            key[name] = json!(val);
        }
    }
    let mut out = json!({"key": key, "attributes": attributes(v)});
    if let Some(tags) = &p.tags {
        out["tags"] = json!(tags);
    }
    if let Some(rp) = &p.release_policy {
        out["release_policy"] = rp.clone();
    }
    add_deleted(&mut out, base, v);
    out
}

/// A `KeyItem` (or `DeletedKeyItem`): base id for key listings, versioned id for versions.
pub fn key_item(base: &str, v: &KeyView, versioned: bool) -> Value {
    let kid = if versioned {
        format!("{base}/keys/{}/{}", v.name, v.version)
    } else {
        format!("{base}/keys/{}", v.name)
    };
    let mut out = json!({"kid": kid, "attributes": attributes(v)});
    if let Some(tags) = &v.props.tags {
        out["tags"] = json!(tags);
    }
    add_deleted(&mut out, base, v);
    out
}

/// A list result with an absolute `nextLink`.
pub fn list_result(
    page: &Page<KeyView>,
    item: impl Fn(&KeyView) -> Value,
    next_link: impl Fn(&str) -> String,
) -> Value {
    json!({
        "value": page.items.iter().map(item).collect::<Vec<_>>(),
        "nextLink": page.next.as_deref().map(next_link),
    })
}
