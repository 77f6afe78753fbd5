//! [`PrivateKey`]: one parsed software key of any family, the first [`KeyHandle`], and the JWA
//! dispatch.

use crate::alg::{resolve, Alg, KeyOp, Kind};
use crate::backend::KeyHandle;
use crate::ec::EcKey;
use crate::error::CryptoError;
use crate::oct::OctKey;
use crate::rsa::RsaKey;
use crate::types::{CipherOutput, CipherRequest, Curve, JwkPrivate, KeyFamily, PublicJwk};
use zeroize::Zeroizing;

/// Serialization tag: RSA, followed by PKCS#8 v1 DER.
const TAG_RSA: u8 = 0x01;
/// Serialization tag: EC, followed by one curve byte and PKCS#8 v1 DER.
const TAG_EC: u8 = 0x02;
/// Serialization tag: oct, followed by the raw key bytes.
const TAG_OCT: u8 = 0x03;

/// The parsed key of one family.
enum Inner {
    Rsa(Box<RsaKey>),
    Ec(Box<EcKey>),
    Oct(OctKey),
}

/// A software key: parsed, ready-to-use aws-lc private key handles. The first [`KeyHandle`].
///
/// RSA keeps the signing key pair, the OAEP and PKCS#1 decryption handles and the OAEP
/// encryption handle, all parsed once; EC keeps its key pair and verification key; oct keeps the
/// key bytes and its AES-GCM key. `Send + Sync`; `Debug` never prints key material.
pub struct PrivateKey {
    inner: Inner,
    /// The self-describing serialization returned by [`PrivateKey::serialized`].
    serialized: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("family", &self.family())
            .field("bits", &self.key_size_bits())
            .field("curve", &self.curve())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generates an RSA key of 2048, 3072 or 4096 bits; the exponent must be absent or 65537.
    pub fn generate_rsa(bits: usize, public_exponent: Option<u64>) -> Result<Self, CryptoError> {
        let (key, der) = RsaKey::generate(bits, public_exponent)?;
        Ok(Self::rsa(key, &der))
    }

    /// Generates an EC key on `curve`.
    pub fn generate_ec(curve: Curve) -> Result<Self, CryptoError> {
        let (key, der) = EcKey::generate(curve)?;
        Ok(Self::ec(key, &der))
    }

    /// Generates an AES/HMAC key of 128, 192 or 256 bits.
    pub fn generate_oct(bits: usize) -> Result<Self, CryptoError> {
        if !matches!(bits, 128 | 192 | 256) {
            return Err(CryptoError::input(format!(
                "oct key size must be 128, 192 or 256 bits; got {bits}"
            )));
        }
        let mut k = Zeroizing::new(vec![0u8; bits / 8]);
        aws_lc_rs::rand::fill(&mut k)?;
        Self::oct(k)
    }

    /// Imports private JWK members.
    ///
    /// RSA needs n, e, d, p, q, dp, dq, qi (2048–4096-bit modulus); EC needs crv, x, y, d and d
    /// must match (x, y); oct needs k of 16, 24 or 32 bytes.
    pub fn from_jwk(jwk: &JwkPrivate) -> Result<Self, CryptoError> {
        match KeyFamily::from_kty(&jwk.kty) {
            Some(KeyFamily::Rsa) => {
                let (key, der) = RsaKey::from_jwk(jwk)?;
                Ok(Self::rsa(key, &der))
            }
            Some(KeyFamily::Ec) => {
                let (key, der) = EcKey::from_jwk(jwk)?;
                Ok(Self::ec(key, &der))
            }
            Some(KeyFamily::Oct) => {
                let k = jwk
                    .k
                    .as_ref()
                    .ok_or_else(|| CryptoError::key("oct key import needs the member k"))?;
                Self::oct(Zeroizing::new(k.to_vec()))
            }
            None => Err(CryptoError::key(format!(
                "unsupported key type {:?}; expected RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM",
                jwk.kty
            ))),
        }
    }

    /// Self-describing serialization for sealing and backup only: one tag byte, then PKCS#8 v1
    /// DER (RSA), a curve byte and PKCS#8 v1 DER (EC), or the raw key bytes (oct). Crate-private:
    /// the only way out is the software backend's sealing and backup export.
    pub(crate) fn serialized(&self) -> &[u8] {
        &self.serialized
    }

    /// Parses the output of [`PrivateKey::serialized`].
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (&tag, rest) = bytes
            .split_first()
            .ok_or_else(|| CryptoError::key("empty key serialization"))?;
        let inner = match tag {
            TAG_RSA => Inner::Rsa(Box::new(RsaKey::from_pkcs8(rest)?)),
            TAG_EC => {
                let (&c, der) = rest
                    .split_first()
                    .ok_or_else(|| CryptoError::key("truncated EC key serialization"))?;
                let curve = Curve::from_id_byte(c)
                    .ok_or_else(|| CryptoError::key("unknown curve in EC key serialization"))?;
                Inner::Ec(Box::new(EcKey::from_pkcs8(curve, der)?))
            }
            TAG_OCT => Inner::Oct(OctKey::new(Zeroizing::new(rest.to_vec()))?),
            _ => return Err(CryptoError::key("unknown key serialization tag")),
        };
        Ok(PrivateKey {
            inner,
            serialized: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// Resolves `alg` for this key and operation, including key-size / curve checks.
    fn resolve(&self, alg: Alg, op: KeyOp) -> Result<Kind, CryptoError> {
        let a = resolve(alg, self.family(), op)?;
        match (&self.inner, a) {
            (Inner::Ec(k), Kind::Ecdsa(curve)) => k.check_curve(alg.as_str(), curve)?,
            (Inner::Oct(k), _) => k.check_size(alg.as_str(), a)?,
            _ => {}
        }
        Ok(a)
    }

    fn rsa(key: RsaKey, der: &[u8]) -> Self {
        let mut s = Zeroizing::new(Vec::with_capacity(1 + der.len()));
        s.push(TAG_RSA);
        s.extend_from_slice(der);
        PrivateKey {
            inner: Inner::Rsa(Box::new(key)),
            serialized: s,
        }
    }

    fn ec(key: EcKey, der: &[u8]) -> Self {
        let mut s = Zeroizing::new(Vec::with_capacity(2 + der.len()));
        s.push(TAG_EC);
        s.push(key.curve().id_byte());
        s.extend_from_slice(der);
        PrivateKey {
            inner: Inner::Ec(Box::new(key)),
            serialized: s,
        }
    }

    fn oct(k: Zeroizing<Vec<u8>>) -> Result<Self, CryptoError> {
        let key = OctKey::new(k)?;
        let mut s = Zeroizing::new(Vec::with_capacity(1 + key.bytes().len()));
        s.push(TAG_OCT);
        s.extend_from_slice(key.bytes());
        Ok(PrivateKey {
            inner: Inner::Oct(key),
            serialized: s,
        })
    }
}

impl KeyHandle for PrivateKey {
    /// Key family.
    fn family(&self) -> KeyFamily {
        match self.inner {
            Inner::Rsa(_) => KeyFamily::Rsa,
            Inner::Ec(_) => KeyFamily::Ec,
            Inner::Oct(_) => KeyFamily::Oct,
        }
    }

    /// RSA modulus bits, EC curve bits (521 for P-521), or oct key bits.
    fn key_size_bits(&self) -> usize {
        match &self.inner {
            Inner::Rsa(k) => k.bits(),
            Inner::Ec(k) => k.curve().bits(),
            Inner::Oct(k) => k.bits(),
        }
    }

    /// The curve of an EC key; `None` otherwise.
    fn curve(&self) -> Option<Curve> {
        match &self.inner {
            Inner::Ec(k) => Some(k.curve()),
            _ => None,
        }
    }

    /// Public JWK members (n, e for RSA; crv, x, y for EC; nothing for oct).
    fn public_jwk(&self) -> PublicJwk {
        match &self.inner {
            Inner::Rsa(k) => k.public_jwk().clone(),
            Inner::Ec(k) => k.public_jwk().clone(),
            Inner::Oct(_) => PublicJwk::default(),
        }
    }

    /// Encrypts: RSA-OAEP, RSA-OAEP-256; A*GCM (service-generated IV), A*CBC, A*CBCPAD
    /// (caller IV), A*KW, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD.
    fn encrypt(&self, alg: Alg, req: &CipherRequest) -> Result<CipherOutput, CryptoError> {
        let a = self.resolve(alg, KeyOp::Encrypt)?;
        let alg = alg.as_str();
        match &self.inner {
            Inner::Rsa(k) => k.encrypt(alg, a, req),
            Inner::Oct(k) => k.encrypt(alg, a, req),
            Inner::Ec(_) => Err(CryptoError::Crypto),
        }
    }

    /// Decrypts: as [`KeyHandle::encrypt`], plus RSA1_5 for legacy data.
    fn decrypt(&self, alg: Alg, req: &CipherRequest) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let a = self.resolve(alg, KeyOp::Decrypt)?;
        let alg = alg.as_str();
        match &self.inner {
            Inner::Rsa(k) => k.decrypt(alg, a, req),
            Inner::Oct(k) => k.decrypt(alg, a, req),
            Inner::Ec(_) => Err(CryptoError::Crypto),
        }
    }

    /// Wraps key material: RSA-OAEP, RSA-OAEP-256; A*KW, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD.
    fn wrap_key(&self, alg: Alg, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let a = self.resolve(alg, KeyOp::WrapKey)?;
        let alg = alg.as_str();
        match &self.inner {
            Inner::Rsa(k) => k.oaep_encrypt(alg, a, key),
            Inner::Oct(k) => k.wrap(alg, a, key),
            Inner::Ec(_) => Err(CryptoError::Crypto),
        }
    }

    /// Unwraps key material: as [`KeyHandle::wrap_key`], plus RSA1_5 for legacy data.
    fn unwrap_key(&self, alg: Alg, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let a = self.resolve(alg, KeyOp::UnwrapKey)?;
        let alg = alg.as_str();
        match &self.inner {
            Inner::Rsa(k) => k.decrypt_raw(alg, a, wrapped),
            Inner::Oct(k) => k.unwrap(alg, a, wrapped),
            Inner::Ec(_) => Err(CryptoError::Crypto),
        }
    }

    /// Signs a pre-computed digest (RS*, PS*, ES*), or MACs the given value (HS*, oct keys).
    fn sign(&self, alg: Alg, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let a = self.resolve(alg, KeyOp::Sign)?;
        let alg = alg.as_str();
        match (&self.inner, a) {
            (Inner::Rsa(k), _) => k.sign(alg, a, digest),
            (Inner::Ec(k), _) => k.sign(alg, digest),
            (Inner::Oct(k), Kind::Hmac(h)) => Ok(k.hmac_sign(h, digest)),
            (Inner::Oct(_), _) => Err(CryptoError::Crypto),
        }
    }

    /// Verifies a signature (or HMAC, in constant time); `Ok(false)` for a well-formed request
    /// whose signature does not verify (including a signature of the wrong length).
    fn verify(&self, alg: Alg, digest: &[u8], signature: &[u8]) -> Result<bool, CryptoError> {
        let a = self.resolve(alg, KeyOp::Verify)?;
        let alg = alg.as_str();
        match (&self.inner, a) {
            (Inner::Rsa(k), _) => k.verify(alg, a, digest, signature),
            (Inner::Ec(k), _) => k.verify(alg, digest, signature),
            (Inner::Oct(k), Kind::Hmac(h)) => Ok(k.hmac_verify(h, digest, signature)),
            (Inner::Oct(_), _) => Err(CryptoError::Crypto),
        }
    }
}
