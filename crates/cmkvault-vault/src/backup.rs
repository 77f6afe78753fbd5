//! The backup blob: every version of a key and its rotation policy, sealed under the root key.
//!
//! Layout: `CMKVBK1\n` magic, then `Sealer::seal(aad = "cmkvault:backup:v1", json)` where the
//! JSON holds the key name, the rotation policy and, per version, its id, order, creation time,
//! public properties and private material (base64). Only a cmkvault with the same root key can
//! open it; any change to the blob makes the seal fail.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cmkvault_crypto::Sealer;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::{RequestError, VaultError};

const MAGIC: &[u8] = b"CMKVBK1\n";
const AAD: &[u8] = b"cmkvault:backup:v1";

/// Azure's cap on versions in one backup.
pub(crate) const MAX_VERSIONS: usize = 500;

/// One version inside a backup.
#[derive(Serialize, Deserialize)]
pub(crate) struct BackupVersion {
    pub version: String,
    pub seq: i64,
    pub created: i64,
    pub props: String,
    pub private: String,
}

impl Drop for BackupVersion {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

/// The sealed document.
#[derive(Serialize, Deserialize)]
pub(crate) struct BackupDoc {
    pub format: u32,
    pub name: String,
    pub rotation_policy: Option<String>,
    pub versions: Vec<BackupVersion>,
}

impl BackupVersion {
    /// Private material, decoded.
    pub(crate) fn private_bytes(&self) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        B64.decode(&self.private)
            .map(Zeroizing::new)
            .map_err(|_| bad_blob())
    }

    /// Encodes private material.
    pub(crate) fn encode_private(bytes: &[u8]) -> String {
        B64.encode(bytes)
    }
}

fn bad_blob() -> VaultError {
    RequestError::InvalidBackup.into()
}

/// Seals a backup document.
pub(crate) fn seal(root: &dyn Sealer, doc: &BackupDoc) -> Result<Vec<u8>, VaultError> {
    let json = Zeroizing::new(
        serde_json::to_vec(doc)
            .map_err(|e| VaultError::unexpected(format!("backup serialisation: {e}")))?,
    );
    let sealed = root.seal(AAD, &json)?;
    let mut out = Vec::with_capacity(MAGIC.len() + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a backup blob.
pub(crate) fn open(root: &dyn Sealer, blob: &[u8]) -> Result<BackupDoc, VaultError> {
    let sealed = blob.strip_prefix(MAGIC).ok_or_else(bad_blob)?;
    let json = root.open(AAD, sealed).map_err(|_| bad_blob())?;
    let doc: BackupDoc = serde_json::from_slice(&json).map_err(|_| bad_blob())?;
    if doc.format != 1 || doc.versions.is_empty() || doc.versions.len() > MAX_VERSIONS {
        return Err(bad_blob());
    }
    Ok(doc)
}
