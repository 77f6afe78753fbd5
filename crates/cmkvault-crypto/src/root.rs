//! The root key: seals private key material at rest with AES-256-GCM, behind the [`Sealer`] seam.

use crate::error::CryptoError;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

/// Format version byte at the start of every sealed blob.
const SEAL_VERSION: u8 = 0x01;
/// Root key length in bytes.
pub const ROOT_KEY_LEN: usize = 32;
/// GCM tag length.
const TAG_LEN: usize = 16;

/// Seals and opens data at rest, binding caller-chosen associated data into each seal.
///
/// The vault seals everything it keeps secret at rest through this trait: software key
/// versions (inside [`crate::KeyRef::Sealed`]), backup blobs and secret metadata. [`RootKey`]
/// (AES-256-GCM) is the implementation today; a root key held in an HSM or a cloud KMS can slot
/// in behind the same two calls, as tikv's master-key `Backend` does.
pub trait Sealer: Send + Sync {
    /// Seals `plaintext`, binding `aad` (e.g. the identity of what is sealed) into the result.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Opens what [`Sealer::seal`] produced with the same `aad`; any other key, other `aad`,
    /// truncation or modification gives [`CryptoError::Unseal`].
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
}

impl Sealer for RootKey {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        RootKey::seal(self, aad, plaintext)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        RootKey::open(self, aad, sealed)
    }
}

/// Seals data under the 256-bit root key with AES-256-GCM, random 96-bit nonce, the caller's
/// associated data bound in.
///
/// Sealed format: `0x01 || nonce (12) || ciphertext || tag (16)`. The key bytes are wiped on
/// drop; `Debug` does not print them.
pub struct RootKey {
    bytes: Zeroizing<[u8; ROOT_KEY_LEN]>,
    aead: LessSafeKey,
}

impl core::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RootKey { <redacted> }")
    }
}

impl RootKey {
    /// Generates a new random root key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; ROOT_KEY_LEN]);
        aws_lc_rs::rand::fill(bytes.as_mut_slice())?;
        Self::build(bytes)
    }

    /// Loads a root key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; ROOT_KEY_LEN] = bytes.try_into().map_err(|_| {
            CryptoError::key(format!(
                "root key must be {ROOT_KEY_LEN} bytes; got {} bytes",
                bytes.len()
            ))
        })?;
        Self::build(Zeroizing::new(arr))
    }

    fn build(bytes: Zeroizing<[u8; ROOT_KEY_LEN]>) -> Result<Self, CryptoError> {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes.as_slice())?);
        Ok(RootKey { bytes, aead })
    }

    /// The raw key bytes (for writing the key file).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Seals `plaintext`, binding `aad` (e.g. the key's identity) into the tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)?;
        let header = 1 + NONCE_LEN;
        let mut out = Vec::with_capacity(header + plaintext.len() + TAG_LEN);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let body = out.get_mut(header..).ok_or(CryptoError::Crypto)?;
        let tag = self.aead.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            body,
        )?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens what [`RootKey::seal`] produced with the same `aad`; any wrong key, wrong aad,
    /// truncation or modification gives [`CryptoError::Unseal`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let header = 1 + NONCE_LEN;
        if sealed.len() < header + TAG_LEN || sealed.first() != Some(&SEAL_VERSION) {
            return Err(CryptoError::Unseal);
        }
        let nonce = sealed.get(1..header).ok_or(CryptoError::Unseal)?;
        let tag_at = sealed.len() - TAG_LEN;
        let ct = sealed.get(header..tag_at).ok_or(CryptoError::Unseal)?;
        let tag = sealed.get(tag_at..).ok_or(CryptoError::Unseal)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Unseal)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        self.aead
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, &mut buf)
            .map_err(|_| CryptoError::Unseal)?;
        Ok(buf)
    }
}
