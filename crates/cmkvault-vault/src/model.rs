//! The key model: what a key version is, what callers may ask for, and what they get back.
//!
//! These types carry the meaning of the Azure Key Vault data model without its wire format;
//! the server maps them to and from JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::VaultError;

/// Tags on a key version (Azure allows at most 15).
pub type Tags = BTreeMap<String, String>;

/// Maximum number of tags on a key, as in Azure.
pub const MAX_TAGS: usize = 15;

pub use cmkvault_crypto::{Alg, KeyOp};

/// The key type as requested and reported (`kty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kty {
    /// Software RSA.
    #[serde(rename = "RSA")]
    Rsa,
    /// "HSM-protected" RSA (sealed like every key here; the name is kept for clients).
    #[serde(rename = "RSA-HSM")]
    RsaHsm,
    /// Software EC.
    #[serde(rename = "EC")]
    Ec,
    /// "HSM-protected" EC.
    #[serde(rename = "EC-HSM")]
    EcHsm,
    /// Software AES (accepted on import).
    #[serde(rename = "oct")]
    Oct,
    /// "HSM-protected" AES, as in Managed HSM.
    #[serde(rename = "oct-HSM")]
    OctHsm,
}

impl Kty {
    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Kty> {
        Some(match s {
            "RSA" => Kty::Rsa,
            "RSA-HSM" => Kty::RsaHsm,
            "EC" => Kty::Ec,
            "EC-HSM" => Kty::EcHsm,
            "oct" => Kty::Oct,
            "oct-HSM" => Kty::OctHsm,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kty::Rsa => "RSA",
            Kty::RsaHsm => "RSA-HSM",
            Kty::Ec => "EC",
            Kty::EcHsm => "EC-HSM",
            Kty::Oct => "oct",
            Kty::OctHsm => "oct-HSM",
        }
    }

    /// The same family with the HSM flag set or cleared.
    pub fn with_hsm(self, hsm: bool) -> Kty {
        match (self, hsm) {
            (Kty::Rsa | Kty::RsaHsm, true) => Kty::RsaHsm,
            (Kty::Rsa | Kty::RsaHsm, false) => Kty::Rsa,
            (Kty::Ec | Kty::EcHsm, true) => Kty::EcHsm,
            (Kty::Ec | Kty::EcHsm, false) => Kty::Ec,
            (Kty::Oct | Kty::OctHsm, true) => Kty::OctHsm,
            (Kty::Oct | Kty::OctHsm, false) => Kty::Oct,
        }
    }

    /// The operations a new key of this type allows when the caller names none.
    pub fn default_ops(self) -> Vec<String> {
        let ops: &[KeyOp] = match self {
            Kty::Rsa | Kty::RsaHsm => &[
                KeyOp::Encrypt,
                KeyOp::Decrypt,
                KeyOp::Sign,
                KeyOp::Verify,
                KeyOp::WrapKey,
                KeyOp::UnwrapKey,
            ],
            Kty::Ec | Kty::EcHsm => &[KeyOp::Sign, KeyOp::Verify],
            Kty::Oct | Kty::OctHsm => &[
                KeyOp::Encrypt,
                KeyOp::Decrypt,
                KeyOp::WrapKey,
                KeyOp::UnwrapKey,
            ],
        };
        ops.iter().map(|o| o.as_str().to_string()).collect()
    }
}

/// Public JWK members, base64url-encoded, as stored and returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicMembers {
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// Everything public about one key version; stored as the version's JSON document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProps {
    /// Key type.
    pub kty: Kty,
    /// Size in bits (RSA modulus, EC curve, AES key).
    pub key_size: u32,
    /// Permitted operations (wire names).
    pub key_ops: Vec<String>,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.nbf`, Unix seconds.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// `attributes.exp`, Unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    /// `attributes.created`.
    pub created: i64,
    /// `attributes.updated`.
    pub updated: i64,
    /// `attributes.exportable`, if set.
    #[serde(default)]
    pub exportable: Option<bool>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Tags>,
    /// Release policy as given (opaque here).
    #[serde(default)]
    pub release_policy: Option<serde_json::Value>,
    /// Public key members.
    pub public: PublicMembers,
}

impl KeyProps {
    /// Whether `key_ops` permits `op`.
    pub fn allows(&self, op: KeyOp) -> bool {
        self.key_ops.iter().any(|o| o == op.as_str())
    }
}

/// Attribute changes requested on create, import or update.
#[derive(Clone, Debug, Default)]
pub struct AttributesInput {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `nbf`.
    pub nbf: Option<i64>,
    /// `exp`.
    pub exp: Option<i64>,
    /// `exportable`.
    pub exportable: Option<bool>,
}

/// A request to create a key (or a new version of one).
#[derive(Clone, Debug, Default)]
pub struct CreateKey {
    /// `kty`.
    pub kty: String,
    /// `key_size` (RSA and oct).
    pub key_size: Option<u32>,
    /// `public_exponent` (RSA).
    pub public_exponent: Option<u64>,
    /// `crv` (EC).
    pub curve: Option<String>,
    /// `key_ops`, or the type's defaults.
    pub key_ops: Option<Vec<String>>,
    /// `attributes`.
    pub attributes: AttributesInput,
    /// `tags`.
    pub tags: Option<Tags>,
    /// `release_policy`.
    pub release_policy: Option<serde_json::Value>,
}

/// A request to import a key (or a new version of one).
#[derive(Default)]
pub struct ImportKey {
    /// The private JWK, decoded.
    pub jwk: cmkvault_crypto::JwkPrivate,
    /// `key.key_ops`, or the type's defaults.
    pub key_ops: Option<Vec<String>>,
    /// The `Hsm` flag.
    pub hsm: Option<bool>,
    /// `attributes`.
    pub attributes: AttributesInput,
    /// `tags`.
    pub tags: Option<Tags>,
    /// `release_policy`.
    pub release_policy: Option<serde_json::Value>,
}

/// A request to update a version's attributes, tags or operations.
#[derive(Clone, Debug, Default)]
pub struct UpdateKey {
    /// New `key_ops`.
    pub key_ops: Option<Vec<String>>,
    /// Attribute changes.
    pub attributes: AttributesInput,
    /// New tags (replace the old set).
    pub tags: Option<Tags>,
    /// New release policy.
    pub release_policy: Option<serde_json::Value>,
}

/// One key version as the API shows it.
#[derive(Clone, Debug)]
pub struct KeyView {
    /// Key name as created.
    pub name: String,
    /// Version id.
    pub version: String,
    /// Public properties.
    pub props: KeyProps,
    /// Soft-delete retention of the vault.
    pub recoverable_days: u32,
    /// `recoveryLevel` of the vault.
    pub recovery_level: &'static str,
    /// Set for deleted keys: (deletedDate, scheduledPurgeDate).
    pub deleted: Option<(i64, i64)>,
}

/// One page of a listing and the token for the next page.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Opaque continuation token, if more items may follow.
    pub next: Option<String>,
}

/// The crypto operations served on a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoOp {
    /// `/encrypt`
    Encrypt,
    /// `/decrypt`
    Decrypt,
    /// `/wrapkey`
    WrapKey,
    /// `/unwrapkey`
    UnwrapKey,
    /// `/sign`
    Sign,
    /// `/verify`
    Verify,
}

impl CryptoOp {
    /// The `key_ops` entry that permits this operation.
    pub fn key_op(self) -> KeyOp {
        match self {
            CryptoOp::Encrypt => KeyOp::Encrypt,
            CryptoOp::Decrypt => KeyOp::Decrypt,
            CryptoOp::WrapKey => KeyOp::WrapKey,
            CryptoOp::UnwrapKey => KeyOp::UnwrapKey,
            CryptoOp::Sign => KeyOp::Sign,
            CryptoOp::Verify => KeyOp::Verify,
        }
    }
}

/// Input of a crypto operation (bytes already decoded, algorithm already parsed).
#[derive(Clone, Debug)]
pub struct CryptoInput {
    /// `alg`.
    pub alg: Alg,
    /// `value`: plaintext, ciphertext, key, digest or signature depending on the operation.
    pub value: Vec<u8>,
    /// `iv`.
    pub iv: Option<Vec<u8>>,
    /// `aad`.
    pub aad: Option<Vec<u8>>,
    /// `tag`.
    pub tag: Option<Vec<u8>>,
    /// `digest` (verify only).
    pub digest: Option<Vec<u8>>,
}

impl CryptoInput {
    /// An input with `alg` and `value` only.
    pub fn new(alg: Alg, value: Vec<u8>) -> Self {
        CryptoInput {
            alg,
            value,
            iv: None,
            aad: None,
            tag: None,
            digest: None,
        }
    }
}

/// Output of a crypto operation.
#[derive(Debug)]
pub enum CryptoOutput {
    /// Encrypt/decrypt/wrap/unwrap/sign: bytes, plus `iv`/`tag`/`aad` for AES modes.
    Bytes {
        /// Version that did the work.
        version: String,
        /// Result bytes (zeroized on drop: may be a plaintext or a key).
        value: zeroize::Zeroizing<Vec<u8>>,
        /// IV used.
        iv: Option<Vec<u8>>,
        /// GCM tag.
        tag: Option<Vec<u8>>,
        /// AAD echoed.
        aad: Option<Vec<u8>>,
    },
    /// Verify: whether the signature is valid.
    Verified(bool),
}

/// Checks a key name: 1–127 characters of `0-9a-zA-Z-`.
pub fn validate_key_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(VaultError::invalid(format!(
            "The key name '{name}' is invalid: use 1-127 characters of 0-9, a-z, A-Z and '-'."
        )))
    }
}

/// Checks a vault name: 3–24 characters, letters, digits and '-', starting with a letter.
pub fn validate_vault_name(name: &str) -> Result<(), VaultError> {
    let ok = (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphabetic()
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(VaultError::invalid(format!(
            "The vault name '{name}' is invalid: use 3-24 letters, digits and single hyphens, starting with a letter."
        )))
    }
}

/// Checks a `key_ops` list: known names only.
pub fn validate_key_ops(ops: &[String]) -> Result<(), VaultError> {
    for op in ops {
        if KeyOp::parse(op).is_none() {
            return Err(VaultError::invalid(format!(
                "Invalid key operation '{op}'. Valid operations: encrypt, decrypt, sign, verify, wrapKey, unwrapKey, import, export."
            )));
        }
    }
    Ok(())
}

/// Checks tags: at most 15, keys up to 512 and values up to 256 characters.
pub fn validate_tags(tags: &Tags) -> Result<(), VaultError> {
    if tags.len() > MAX_TAGS {
        return Err(VaultError::invalid(format!(
            "Too many tags: {} (at most {MAX_TAGS}).",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 512 || v.chars().count() > 256 {
            return Err(VaultError::invalid(
                "Tag names must be 1-512 characters and values at most 256.",
            ));
        }
    }
    Ok(())
}
