//! cmkvault's integrity record: the second metadata entry (`cmkvaultintegrity`) that closes the
//! gaps Azure CSE v2 leaves open (truncation at a region boundary, an empty body, an object copied
//! to another name).
//!
//! The record is a one-line JSON object
//! `{"Version":1,"PlaintextLength":N,"RegionCount":R,"ObjectName":"...","Mac":"<base64>"}`.
//! `Mac` is HMAC-SHA-256 under `mac_key = HKDF-SHA-256(salt = "", ikm = DEK,
//! info = "cmkvault envelope integrity v1")` over
//!
//! ```text
//! "cmkvault-envelope-integrity-v1" 0x00
//! u64be(PlaintextLength) u64be(RegionCount) u64be(DataLength)
//! u64be(len(Protocol))  Protocol
//! u64be(len(ObjectName)) ObjectName (UTF-8)
//! u64be(len(wrapped))   wrapped key bytes (EncryptedKey, base64-decoded)
//! ```
//!
//! Azure SDK readers ignore unknown metadata; cmkvault readers verify the record (the name they
//! read the object under is what goes into the MAC, not the recorded `ObjectName`, which is only
//! there to name the mismatch).

use aws_lc_rs::{hkdf, hmac};
use serde::{Deserialize, Serialize};

use crate::format::{ascii_json, region_count, Protocol, DEK_LEN};
use crate::EnvelopeError;

/// Current record version.
pub const INTEGRITY_VERSION: u32 = 1;
/// The HKDF info string deriving the MAC key from the DEK.
pub const INTEGRITY_HKDF_INFO: &[u8] = b"cmkvault envelope integrity v1";
/// The domain-separation prefix of the MACed message.
const MAC_DOMAIN: &[u8] = b"cmkvault-envelope-integrity-v1\0";

/// The parsed integrity record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IntegrityRecord {
    /// Record version (1).
    pub version: u32,
    /// Plaintext bytes of the whole object.
    pub plaintext_length: u64,
    /// Number of regions in the body (`ceil(PlaintextLength / DataLength)`).
    pub region_count: u64,
    /// The object name the writer bound (informational; the reader MACs its own name).
    pub object_name: String,
    /// Standard base64 of the HMAC-SHA-256 tag.
    pub mac: String,
}

/// The fields the MAC covers besides the record's own.
pub(crate) struct MacContext<'a> {
    pub(crate) protocol: Protocol,
    pub(crate) data_length: u64,
    pub(crate) wrapped: &'a [u8],
}

fn mac_key(dek: &[u8; DEK_LEN]) -> Result<hmac::Key, EnvelopeError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(dek);
    let okm = prk
        .expand(&[INTEGRITY_HKDF_INFO], hmac::HMAC_SHA256)
        .map_err(|_| EnvelopeError::Crypto("HKDF expand failed".into()))?;
    Ok(hmac::Key::from(okm))
}

fn mac_message(
    plaintext_length: u64,
    regions: u64,
    object_name: &str,
    ctx: &MacContext<'_>,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(128 + object_name.len() + ctx.wrapped.len());
    m.extend_from_slice(MAC_DOMAIN);
    m.extend_from_slice(&plaintext_length.to_be_bytes());
    m.extend_from_slice(&regions.to_be_bytes());
    m.extend_from_slice(&ctx.data_length.to_be_bytes());
    for field in [
        ctx.protocol.as_str().as_bytes(),
        object_name.as_bytes(),
        ctx.wrapped,
    ] {
        m.extend_from_slice(&(field.len() as u64).to_be_bytes());
        m.extend_from_slice(field);
    }
    m
}

impl IntegrityRecord {
    /// Computes the record for a finished object.
    pub(crate) fn compute(
        dek: &[u8; DEK_LEN],
        plaintext_length: u64,
        object_name: &str,
        ctx: &MacContext<'_>,
    ) -> Result<IntegrityRecord, EnvelopeError> {
        use base64::Engine as _;
        let regions = region_count(plaintext_length, ctx.data_length);
        let tag = hmac::sign(
            &mac_key(dek)?,
            &mac_message(plaintext_length, regions, object_name, ctx),
        );
        Ok(IntegrityRecord {
            version: INTEGRITY_VERSION,
            plaintext_length,
            region_count: regions,
            object_name: object_name.to_owned(),
            mac: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        })
    }

    /// Verifies the MAC for `object_name` (the name the object is read under) and the record's
    /// internal consistency. Constant-time tag comparison.
    pub(crate) fn verify(
        &self,
        dek: &[u8; DEK_LEN],
        object_name: &str,
        ctx: &MacContext<'_>,
    ) -> Result<(), EnvelopeError> {
        use base64::Engine as _;
        if self.version != INTEGRITY_VERSION {
            return Err(EnvelopeError::Integrity(format!(
                "integrity record version {} is not supported",
                self.version
            )));
        }
        let tag = base64::engine::general_purpose::STANDARD
            .decode(&self.mac)
            .map_err(|_| EnvelopeError::Integrity("integrity record MAC is not base64".into()))?;
        let msg = mac_message(self.plaintext_length, self.region_count, object_name, ctx);
        if hmac::verify(&mac_key(dek)?, &msg, &tag).is_err() {
            if self.object_name != object_name {
                return Err(EnvelopeError::Integrity(format!(
                    "the object was sealed under the name {:?} and is being read as {:?} \
                     (object copied or swapped to another name?)",
                    self.object_name, object_name
                )));
            }
            return Err(EnvelopeError::Integrity(
                "the integrity record does not verify (length, region count, name or wrapped key \
                 edited, or record taken from another object)"
                    .into(),
            ));
        }
        if self.region_count != region_count(self.plaintext_length, ctx.data_length) {
            return Err(EnvelopeError::Integrity(
                "integrity record region count does not match its length".into(),
            ));
        }
        Ok(())
    }

    /// Serializes to the one-line, header-safe (ASCII) metadata value.
    pub fn to_json(&self) -> Result<String, EnvelopeError> {
        serde_json::to_string(self)
            .map(|s| ascii_json(&s))
            .map_err(|e| {
                EnvelopeError::Metadata(format!("cannot serialize the integrity record: {e}"))
            })
    }

    /// Parses a `cmkvaultintegrity` metadata value.
    pub fn from_json(s: &str) -> Result<IntegrityRecord, EnvelopeError> {
        serde_json::from_str(s).map_err(|e| {
            EnvelopeError::Integrity(format!("the integrity record is not valid: {e}"))
        })
    }
}
