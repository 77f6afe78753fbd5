//! The Azure Storage client-side encryption v2 wire format: the `encryptiondata` metadata JSON,
//! the wrapped-key payload, the region layout and the per-region nonce schemes.
//!
//! Reference: `docs/envelope-format.md` (and the interop notes it cites).

use std::collections::BTreeMap;

use cmkvault_crypto::Alg;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::EnvelopeError;

/// The blob metadata name of the envelope JSON (matched case-insensitively on read).
pub const ENCRYPTION_DATA_NAME: &str = "encryptiondata";
/// The blob metadata name of cmkvault's integrity record (ignored by Azure SDK readers).
pub const INTEGRITY_NAME: &str = "cmkvaultintegrity";
/// `DataLength` of protocol 2.0: 4 MiB of plaintext per region.
pub const REGION_DATA_LEN_V2_0: u64 = 4 * 1024 * 1024;
/// The smallest `DataLength` a reader accepts (Java's v2.1 minimum).
pub const MIN_DATA_LEN: u64 = 16;
/// The largest `DataLength` a reader accepts (1 GiB), checked before anything is allocated.
pub const MAX_DATA_LEN: u64 = 1024 * 1024 * 1024;
/// Nonce bytes at the start of every region.
pub const NONCE_LEN: usize = 12;
/// GCM tag bytes at the end of every region.
pub const TAG_LEN: usize = 16;
/// Per-region overhead: nonce plus tag.
pub const REGION_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Bytes of a DEK (AES-256).
pub const DEK_LEN: usize = 32;
/// Bytes handed to the KEK's wrap: `pad8(protocol) ‖ DEK`.
pub const WRAP_PAYLOAD_LEN: usize = 8 + DEK_LEN;
/// `EncryptionAgent.EncryptionAlgorithm` of v2.
pub const ENCRYPTION_ALGORITHM: &str = "AES_GCM_256";
/// `EncryptionMode` written by every SDK.
pub const ENCRYPTION_MODE: &str = "FullBlob";
/// `KeyWrappingMetadata.EncryptionLibrary` this crate writes.
pub const ENCRYPTION_LIBRARY: &str = concat!("Rust cmkvault-envelope ", env!("CARGO_PKG_VERSION"));

/// The envelope protocol version (`EncryptionAgent.Protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `"2.0"`: 4 MiB regions; what every SDK reads and what this crate writes.
    V2_0,
    /// `"2.1"`: as 2.0 with a configurable `DataLength` (16 B … 1 GiB); read-only here.
    V2_1,
}

impl Protocol {
    /// The protocol string (`"2.0"`, `"2.1"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V2_0 => "2.0",
            Protocol::V2_1 => "2.1",
        }
    }

    /// Parses a protocol string; `1.0` (AES-CBC) and anything else is refused.
    pub fn parse(s: &str) -> Result<Protocol, EnvelopeError> {
        match s {
            "2.0" => Ok(Protocol::V2_0),
            "2.1" => Ok(Protocol::V2_1),
            "1.0" => Err(EnvelopeError::Metadata(
                "protocol 1.0 (AES-CBC) is not supported; only 2.0 and 2.1".into(),
            )),
            other => Err(EnvelopeError::Metadata(format!(
                "unsupported protocol {other:?}; expected \"2.0\" or \"2.1\""
            ))),
        }
    }

    /// `pad8(protocol)`: the protocol string NUL-padded to 8 bytes, the wrapped key's prefix.
    pub fn pad8(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        let s = self.as_str().as_bytes();
        out[..s.len()].copy_from_slice(s);
        out
    }
}

impl core::fmt::Display for Protocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `WrappedContentKey` of the `encryptiondata` JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WrappedContentKey {
    /// The KEK's versioned key id.
    pub key_id: String,
    /// Standard base64 (with padding) of the KEK's wrap output.
    pub encrypted_key: String,
    /// The wrap algorithm (`RSA-OAEP-256`, `RSA-OAEP`, `A256KW`, ...).
    pub algorithm: String,
}

/// `EncryptionAgent` of the `encryptiondata` JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptionAgent {
    /// `"2.0"` or `"2.1"`.
    pub protocol: String,
    /// `"AES_GCM_256"`.
    pub encryption_algorithm: String,
}

/// `EncryptedRegionInfo` of the `encryptiondata` JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptedRegionInfo {
    /// Plaintext bytes per region (4194304 for 2.0).
    pub data_length: u64,
    /// Nonce bytes per region (12).
    pub nonce_length: u64,
}

/// The `encryptiondata` JSON, fields in the order the Python SDK writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptionData {
    /// The wrapped DEK and its KEK.
    pub wrapped_content_key: WrappedContentKey,
    /// Protocol and content algorithm.
    pub encryption_agent: EncryptionAgent,
    /// Region layout (absent in v1, required here).
    pub encrypted_region_info: Option<EncryptedRegionInfo>,
    /// Informational (`EncryptionLibrary`); ignored on read.
    #[serde(default)]
    pub key_wrapping_metadata: BTreeMap<String, String>,
    /// `"FullBlob"`; ignored on read.
    #[serde(default)]
    pub encryption_mode: Option<String>,
}

impl EncryptionData {
    /// The JSON this crate writes for a new envelope.
    pub fn new(
        kid: &str,
        wrapped: &[u8],
        alg: Alg,
        protocol: Protocol,
        data_length: u64,
    ) -> EncryptionData {
        use base64::Engine as _;
        let mut kwm = BTreeMap::new();
        kwm.insert(
            "EncryptionLibrary".to_owned(),
            ENCRYPTION_LIBRARY.to_owned(),
        );
        EncryptionData {
            wrapped_content_key: WrappedContentKey {
                key_id: kid.to_owned(),
                encrypted_key: base64::engine::general_purpose::STANDARD.encode(wrapped),
                algorithm: alg.as_str().to_owned(),
            },
            encryption_agent: EncryptionAgent {
                protocol: protocol.as_str().to_owned(),
                encryption_algorithm: ENCRYPTION_ALGORITHM.to_owned(),
            },
            encrypted_region_info: Some(EncryptedRegionInfo {
                data_length,
                nonce_length: NONCE_LEN as u64,
            }),
            key_wrapping_metadata: kwm,
            encryption_mode: Some(ENCRYPTION_MODE.to_owned()),
        }
    }

    /// Serializes to the one-line JSON stored as the `encryptiondata` metadata value.
    pub fn to_json(&self) -> Result<String, EnvelopeError> {
        serde_json::to_string(self)
            .map(|s| ascii_json(&s))
            .map_err(|e| EnvelopeError::Metadata(format!("cannot serialize encryptiondata: {e}")))
    }

    /// Parses an `encryptiondata` value (no validation beyond the JSON shape).
    pub fn from_json(s: &str) -> Result<EncryptionData, EnvelopeError> {
        serde_json::from_str(s)
            .map_err(|e| EnvelopeError::Metadata(format!("encryptiondata is not valid JSON: {e}")))
    }
}

/// Escapes every non-ASCII character of a JSON text as `\uXXXX` so that the value is header-safe
/// (metadata values travel as HTTP headers). Non-ASCII only occurs inside JSON strings.
pub(crate) fn ascii_json(s: &str) -> String {
    use core::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out
}

/// Finds a metadata value by name, case-insensitively (blob metadata names are
/// case-insensitive; other entries may coexist).
pub fn metadata_lookup<'a, I, K, V>(entries: I, name: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a (K, V)>,
    K: AsRef<str> + 'a,
    V: AsRef<str> + 'a,
{
    entries
        .into_iter()
        .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// `pad8(protocol) ‖ DEK`: the 40 bytes handed to the KEK's wrap.
pub fn wrap_payload(protocol: Protocol, dek: &[u8; DEK_LEN]) -> Zeroizing<[u8; WRAP_PAYLOAD_LEN]> {
    let mut out = Zeroizing::new([0u8; WRAP_PAYLOAD_LEN]);
    out[..8].copy_from_slice(&protocol.pad8());
    out[8..].copy_from_slice(dek);
    out
}

/// Checks an unwrapped payload (40 bytes, prefix `pad8(protocol)`) and returns the DEK.
pub fn check_unwrapped(
    protocol: Protocol,
    unwrapped: &[u8],
) -> Result<Zeroizing<[u8; DEK_LEN]>, EnvelopeError> {
    if unwrapped.len() != WRAP_PAYLOAD_LEN {
        return Err(EnvelopeError::Metadata(format!(
            "the unwrapped key is {} bytes, not {WRAP_PAYLOAD_LEN} (pad8(protocol) ‖ DEK)",
            unwrapped.len()
        )));
    }
    if unwrapped[..8] != protocol.pad8() {
        return Err(EnvelopeError::Metadata(format!(
            "the wrapped key's protocol prefix does not match EncryptionAgent.Protocol {protocol} \
             (protocol relabelled?)"
        )));
    }
    let mut dek = Zeroizing::new([0u8; DEK_LEN]);
    dek.copy_from_slice(&unwrapped[8..]);
    Ok(dek)
}

/// Whether a wrap algorithm may be used to unwrap: RSA-OAEP-256, RSA-OAEP, A256KW; RSA1_5 only
/// with `allow_legacy`.
pub fn check_wrap_alg(name: &str, allow_legacy: bool) -> Result<Alg, EnvelopeError> {
    let alg: Alg = name
        .parse()
        .map_err(|_| EnvelopeError::Metadata(format!("unknown key-wrap algorithm {name:?}")))?;
    match alg {
        Alg::RsaOaep256 | Alg::RsaOaep | Alg::A256Kw => Ok(alg),
        Alg::Rsa15 if allow_legacy => Ok(alg),
        Alg::Rsa15 => Err(EnvelopeError::Metadata(
            "key-wrap algorithm RSA1_5 is refused (legacy; pass --allow-legacy to read old data)"
                .into(),
        )),
        other => Err(EnvelopeError::Metadata(format!(
            "key-wrap algorithm {other} is not allowed; expected RSA-OAEP-256, RSA-OAEP or A256KW"
        ))),
    }
}

/// Number of regions for `plaintext_len` bytes (`0` for an empty object).
pub fn region_count(plaintext_len: u64, data_length: u64) -> u64 {
    plaintext_len.div_ceil(data_length.max(1))
}

/// Body bytes for `plaintext_len` bytes of plaintext: `P + regions·28`.
pub fn ciphertext_len(plaintext_len: u64, data_length: u64) -> u64 {
    plaintext_len + region_count(plaintext_len, data_length) * REGION_OVERHEAD
}

/// Plaintext bytes of a well-formed body of `body_len` bytes.
pub fn plaintext_len(body_len: u64, data_length: u64) -> u64 {
    let regions = body_len.div_ceil(data_length + REGION_OVERHEAD);
    body_len.saturating_sub(regions * REGION_OVERHEAD)
}

/// The nonce of region `index` in the Python scheme (what this crate writes): the index as a
/// 12-byte big-endian number.
pub fn python_nonce(index: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}

/// The nonce of region `index` in the Java scheme: 8-byte big-endian index, then 4 zero bytes.
pub fn java_nonce(index: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n
}

/// The nonce of region `index` in the .NET scheme: 4 zero bytes, then `index + 1` as 8-byte
/// little-endian.
pub fn dotnet_nonce(index: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&index.wrapping_add(1).to_le_bytes());
    n
}

/// The three-scheme nonce-position validator (Python, Java, .NET): each region's nonce must be
/// the right one for its position under a scheme that holds for the whole object.
#[derive(Clone, Copy, Debug)]
pub struct NonceValidator {
    /// Bit 0: Python, bit 1: Java, bit 2: .NET.
    candidates: u8,
}

impl Default for NonceValidator {
    fn default() -> Self {
        NonceValidator { candidates: 0b111 }
    }
}

impl NonceValidator {
    /// A validator with all three schemes still possible.
    pub fn new() -> NonceValidator {
        NonceValidator::default()
    }

    /// Checks region `index`'s nonce and narrows the candidate schemes.
    pub fn check(&mut self, index: u64, nonce: &[u8]) -> Result<(), EnvelopeError> {
        let mut next = 0u8;
        for (bit, expected) in [python_nonce(index), java_nonce(index), dotnet_nonce(index)]
            .iter()
            .enumerate()
        {
            if self.candidates & (1 << bit) != 0 && nonce == expected.as_slice() {
                next |= 1 << bit;
            }
        }
        if next == 0 {
            return Err(EnvelopeError::Integrity(format!(
                "region {index} has a nonce that does not belong at that position \
                 (regions reordered, duplicated or dropped, a random nonce, or mixed nonce schemes)"
            )));
        }
        self.candidates = next;
        Ok(())
    }
}

/// Reader-side validated layout and key fields of an `encryptiondata` JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedEncryptionData {
    /// The protocol (2.0 or 2.1).
    pub protocol: Protocol,
    /// Plaintext bytes per region (16 B … 1 GiB).
    pub data_length: u64,
    /// The KEK id.
    pub kid: String,
    /// The allowlisted wrap algorithm.
    pub alg: Alg,
    /// The wrapped key bytes (base64-decoded).
    pub wrapped: Vec<u8>,
}

impl EncryptionData {
    /// Validates the JSON as a reader must: protocol 2.0/2.1, AES_GCM_256, NonceLength 12,
    /// 16 ≤ DataLength ≤ 1 GiB, the wrap-algorithm allowlist, a decodable wrapped key.
    pub fn validate(&self, allow_legacy: bool) -> Result<ValidatedEncryptionData, EnvelopeError> {
        use base64::Engine as _;
        let protocol = Protocol::parse(&self.encryption_agent.protocol)?;
        if self.encryption_agent.encryption_algorithm != ENCRYPTION_ALGORITHM {
            return Err(EnvelopeError::Metadata(format!(
                "unsupported EncryptionAlgorithm {:?}; expected {ENCRYPTION_ALGORITHM}",
                self.encryption_agent.encryption_algorithm
            )));
        }
        let info = self
            .encrypted_region_info
            .as_ref()
            .ok_or_else(|| EnvelopeError::Metadata("EncryptedRegionInfo is missing".into()))?;
        if info.nonce_length != NONCE_LEN as u64 {
            return Err(EnvelopeError::Metadata(format!(
                "NonceLength {} is not {NONCE_LEN}",
                info.nonce_length
            )));
        }
        if !(MIN_DATA_LEN..=MAX_DATA_LEN).contains(&info.data_length) {
            return Err(EnvelopeError::Metadata(format!(
                "DataLength {} is outside {MIN_DATA_LEN} B … 1 GiB",
                info.data_length
            )));
        }
        let alg = check_wrap_alg(&self.wrapped_content_key.algorithm, allow_legacy)?;
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&self.wrapped_content_key.encrypted_key)
            .map_err(|e| {
                EnvelopeError::Metadata(format!("EncryptedKey is not valid base64: {e}"))
            })?;
        if self.wrapped_content_key.key_id.is_empty() {
            return Err(EnvelopeError::Metadata("KeyId is empty".into()));
        }
        Ok(ValidatedEncryptionData {
            protocol,
            data_length: info.data_length,
            kid: self.wrapped_content_key.key_id.clone(),
            alg,
            wrapped,
        })
    }
}
