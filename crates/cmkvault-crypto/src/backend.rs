//! The key-material seams: [`KeyHandle`] (operations on a key whose material never leaves it),
//! [`KeyBackend`] (makes and opens handles), [`KeyRef`] (what a key version stores to find its
//! material again) and the software backend, [`SoftwareBackend`].
//!
//! The shapes follow rustls's `SigningKey`/`Signer` (the caller holds an opaque handle and asks
//! it to do one operation on a typed algorithm) and tikv's master-key `Backend` (one trait, a
//! software implementation first, hardware or KMS ones later).

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::alg::Alg;
use crate::error::CryptoError;
use crate::key::PrivateKey;
use crate::root::Sealer;
use crate::types::{CipherOutput, CipherRequest, Curve, JwkPrivate, KeyFamily, PublicJwk};

/// One usable key version. Its private material never leaves it: callers get results of
/// operations and public members only.
///
/// The software key ([`PrivateKey`]) is the first implementation; an HSM object handle is
/// meant to be the next. Every call is one operation on one typed [`Alg`]; an algorithm that is
/// not valid for the key's family, size, curve or the operation gives
/// [`CryptoError::UnsupportedAlgorithm`].
pub trait KeyHandle: Send + Sync + core::fmt::Debug {
    /// Key family.
    fn family(&self) -> KeyFamily;

    /// RSA modulus bits, EC curve bits (521 for P-521), or oct key bits.
    fn key_size_bits(&self) -> usize;

    /// The curve of an EC key; `None` otherwise.
    fn curve(&self) -> Option<Curve>;

    /// Public JWK members (n, e for RSA; crv, x, y for EC; nothing for oct).
    fn public_jwk(&self) -> PublicJwk;

    /// Encrypts `req.value` (RSA-OAEP*, A*GCM, A*CBC*, AES key wrap).
    fn encrypt(&self, alg: Alg, req: &CipherRequest) -> Result<CipherOutput, CryptoError>;

    /// Decrypts `req.value` (as encrypt, plus RSA1_5 for legacy data).
    fn decrypt(&self, alg: Alg, req: &CipherRequest) -> Result<Zeroizing<Vec<u8>>, CryptoError>;

    /// Wraps key material (RSA-OAEP*, A*KW, CKM_AES_KEY_WRAP*).
    fn wrap_key(&self, alg: Alg, key: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Unwraps key material (as wrap, plus RSA1_5 for legacy data).
    fn unwrap_key(&self, alg: Alg, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;

    /// Signs a pre-computed digest (RS*, PS*, ES*), or MACs the value (HS*).
    fn sign(&self, alg: Alg, digest: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Verifies a signature or MAC; `Ok(false)` when a well-formed signature does not verify.
    fn verify(&self, alg: Alg, digest: &[u8], signature: &[u8]) -> Result<bool, CryptoError>;
}

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA of 2048, 3072 or 4096 bits; the exponent must be absent or 65537.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
        /// Public exponent, if the caller named one.
        public_exponent: Option<u64>,
    },
    /// EC on a curve.
    Ec(Curve),
    /// AES/HMAC key of 128, 192 or 256 bits.
    Oct {
        /// Key size in bits.
        bits: usize,
    },
}

/// Where a key version's material is, as stored in its version record.
///
/// Stored form ([`KeyRef::to_bytes`]): one tag byte, then the payload. `0x53` (`'S'`) is
/// [`KeyRef::Sealed`]; other tags are reserved (an HSM object reference is meant to be the next
/// one). Rows written before the tag existed hold the bare sealed blob, which starts with the
/// root key's format byte `0x01`; [`KeyRef::from_bytes`] reads them as [`KeyRef::Sealed`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRef {
    /// The private material sealed by the [`Sealer`] (software keys).
    Sealed(Vec<u8>),
}

/// Tag byte of [`KeyRef::Sealed`] in the stored form.
const REF_SEALED: u8 = b'S';
/// First byte of a pre-tag row: the root key's sealed-format byte.
const REF_LEGACY_SEALED: u8 = 0x01;

impl core::fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyRef::Sealed(b) => write!(f, "KeyRef::Sealed({} bytes)", b.len()),
        }
    }
}

impl KeyRef {
    /// The stored form: tag byte, then payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            KeyRef::Sealed(blob) => {
                let mut out = Vec::with_capacity(1 + blob.len());
                out.push(REF_SEALED);
                out.extend_from_slice(blob);
                out
            }
        }
    }

    /// Parses the stored form, including rows written before the tag byte existed.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyRef, CryptoError> {
        match bytes.split_first() {
            Some((&REF_SEALED, blob)) => Ok(KeyRef::Sealed(blob.to_vec())),
            Some((&REF_LEGACY_SEALED, _)) => Ok(KeyRef::Sealed(bytes.to_vec())),
            Some(_) => Err(CryptoError::key("unknown key reference tag")),
            None => Err(CryptoError::key("empty key reference")),
        }
    }
}

/// A key just generated or imported: the handle to use and the reference to store.
pub struct NewKey {
    /// The usable key.
    pub handle: Arc<dyn KeyHandle>,
    /// What the version record stores to open it again.
    pub key_ref: KeyRef,
}

impl core::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NewKey")
            .field("handle", &self.handle)
            .field("key_ref", &self.key_ref)
            .finish()
    }
}

/// Makes key versions and opens them again from their stored [`KeyRef`].
///
/// `id` is the version's identity (vault, name, version); a backend binds it to what it stores
/// (the software backend seals with it as associated data), so a reference moved to another
/// version does not open.
pub trait KeyBackend: Send + Sync {
    /// Generates a key.
    fn generate(&self, spec: KeySpec, id: &[u8]) -> Result<NewKey, CryptoError>;

    /// Imports private JWK members.
    fn import(&self, jwk: &JwkPrivate, id: &[u8]) -> Result<NewKey, CryptoError>;

    /// Opens a stored reference.
    fn open(&self, key_ref: &KeyRef, id: &[u8]) -> Result<Arc<dyn KeyHandle>, CryptoError>;

    /// Backup export: the material a backup carries for this version (for software keys the
    /// private serialization; the backup blob is sealed again as a whole). The only path by
    /// which private bytes leave the backend.
    fn export_for_backup(
        &self,
        key_ref: &KeyRef,
        id: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError>;

    /// Restore: checks material made by [`KeyBackend::export_for_backup`] and stores it for
    /// the version `id`.
    fn import_from_backup(&self, material: &[u8], id: &[u8]) -> Result<KeyRef, CryptoError>;
}

/// The software backend: keys are [`PrivateKey`]s, stored sealed by a [`Sealer`].
pub struct SoftwareBackend {
    sealer: Arc<dyn Sealer>,
}

impl core::fmt::Debug for SoftwareBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SoftwareBackend")
    }
}

impl SoftwareBackend {
    /// A backend sealing under `sealer` (the root key).
    pub fn new(sealer: Arc<dyn Sealer>) -> Self {
        SoftwareBackend { sealer }
    }

    /// Seals a software key made by the caller ([`PrivateKey::generate_rsa`],
    /// [`PrivateKey::from_jwk`], ...) into the reference a version record stores for `id`.
    pub fn seal_key(&self, key: &PrivateKey, id: &[u8]) -> Result<KeyRef, CryptoError> {
        Ok(KeyRef::Sealed(self.sealer.seal(id, key.serialized())?))
    }

    fn seal(&self, key: PrivateKey, id: &[u8]) -> Result<NewKey, CryptoError> {
        let key_ref = self.seal_key(&key, id)?;
        Ok(NewKey {
            handle: Arc::new(key),
            key_ref,
        })
    }

    fn unseal(&self, key_ref: &KeyRef, id: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match key_ref {
            KeyRef::Sealed(blob) => self.sealer.open(id, blob),
        }
    }
}

impl KeyBackend for SoftwareBackend {
    fn generate(&self, spec: KeySpec, id: &[u8]) -> Result<NewKey, CryptoError> {
        let key = match spec {
            KeySpec::Rsa {
                bits,
                public_exponent,
            } => PrivateKey::generate_rsa(bits, public_exponent)?,
            KeySpec::Ec(curve) => PrivateKey::generate_ec(curve)?,
            KeySpec::Oct { bits } => PrivateKey::generate_oct(bits)?,
        };
        self.seal(key, id)
    }

    fn import(&self, jwk: &JwkPrivate, id: &[u8]) -> Result<NewKey, CryptoError> {
        self.seal(PrivateKey::from_jwk(jwk)?, id)
    }

    fn open(&self, key_ref: &KeyRef, id: &[u8]) -> Result<Arc<dyn KeyHandle>, CryptoError> {
        let bytes = self.unseal(key_ref, id)?;
        Ok(Arc::new(PrivateKey::from_bytes(&bytes)?))
    }

    fn export_for_backup(
        &self,
        key_ref: &KeyRef,
        id: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let bytes = self.unseal(key_ref, id)?;
        // Parse to prove the material is usable before it goes into a backup.
        PrivateKey::from_bytes(&bytes)?;
        Ok(bytes)
    }

    fn import_from_backup(&self, material: &[u8], id: &[u8]) -> Result<KeyRef, CryptoError> {
        // Parse to prove the material is usable before storing it.
        self.seal_key(&PrivateKey::from_bytes(material)?, id)
    }
}
