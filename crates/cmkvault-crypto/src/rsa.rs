//! RSA keys: OAEP / PKCS#1 v1.5 decryption, OAEP encryption, PKCS#1 v1.5 and PSS signatures
//! over pre-computed digests.

use crate::alg::{Hash, Kind};
use crate::error::CryptoError;
use crate::oct::reject_iv_aad_tag;
use crate::types::{CipherOutput, CipherRequest, JwkPrivate, PublicJwk};
use aws_lc_rs::digest::Digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, KeyPairComponents, KeySize, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey, PublicKeyComponents,
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey, RsaEncoding, RsaParameters};
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// Smallest RSA modulus accepted for generation and import.
pub(crate) const MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted for generation and import.
pub(crate) const MAX_BITS: usize = 4096;

/// A parsed RSA private key with every handle needed on the hot path prepared once.
pub(crate) struct RsaKey {
    /// Signing handle.
    pair: KeyPair,
    /// RSA-OAEP / RSA-OAEP-256 decryption handle.
    oaep: OaepPrivateDecryptingKey,
    /// RSA1_5 decryption handle (legacy data only).
    pkcs1: Pkcs1PrivateDecryptingKey,
    /// OAEP encryption handle (public half).
    oaep_pub: OaepPublicEncryptingKey,
    /// PKCS#1 RSAPublicKey DER, for the lazily parsed verification keys.
    public_der: Vec<u8>,
    /// Parsed verification keys: RS256, RS384, RS512, PS256, PS384, PS512.
    verifiers: [OnceLock<ParsedPublicKey>; 6],
    /// Public modulus and exponent (big-endian, no leading zeros).
    public: PublicJwk,
    /// Modulus size in bits.
    bits: usize,
}

impl RsaKey {
    /// Generates a key; returns it with its PKCS#8 v1 DER.
    pub(crate) fn generate(
        bits: usize,
        public_exponent: Option<u64>,
    ) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => {
                return Err(CryptoError::input(format!(
                    "RSA key size must be 2048, 3072 or 4096 bits; got {bits}"
                )))
            }
        };
        match public_exponent {
            None | Some(65537) => {}
            Some(e) => {
                return Err(CryptoError::input(format!(
                    "RSA public exponent must be 65537; got {e}"
                )))
            }
        }
        let pair = KeyPair::generate(size)?;
        let der = Zeroizing::new(pair.as_der()?.as_ref().to_vec());
        Ok((Self::from_pair(pair, &der)?, der))
    }

    /// Parses PKCS#8 v1 DER (the sealed form). Accepts what aws-lc-rs accepts (2048–8192 bits),
    /// so keys stored under an older policy stay loadable.
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        let pair = KeyPair::from_pkcs8(der)
            .map_err(|e| CryptoError::key(format!("stored RSA key rejected: {e}")))?;
        Self::from_pair(pair, der)
    }

    /// Imports from JWK members; returns the key with its PKCS#8 v1 DER.
    pub(crate) fn from_jwk(jwk: &JwkPrivate) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let (Some(n), Some(e), Some(d)) = (&jwk.n, &jwk.e, &jwk.d) else {
            return Err(CryptoError::key(
                "RSA key import needs the members n, e and d",
            ));
        };
        let (Some(p), Some(q), Some(dp), Some(dq), Some(qi)) =
            (&jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi)
        else {
            return Err(CryptoError::key(
                "RSA key import needs the CRT members p, q, dp, dq and qi; \
                 a private key given only as n, e and d is not supported",
            ));
        };
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        if n.is_empty() || e.is_empty() {
            return Err(CryptoError::key("RSA n and e must be non-zero"));
        }
        let bits = bit_len(n);
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(CryptoError::key(format!(
                "RSA modulus must be {MIN_BITS} to {MAX_BITS} bits; got {bits} bits"
            )));
        }
        if e.len() > 8 {
            return Err(CryptoError::key("RSA public exponent is too large"));
        }
        let components = KeyPairComponents {
            public_key: PublicKeyComponents { n, e },
            d: d.as_slice(),
            p: p.as_slice(),
            q: q.as_slice(),
            dP: dp.as_slice(),
            dQ: dq.as_slice(),
            qInv: qi.as_slice(),
        };
        let pair = KeyPair::from_components(&components).map_err(|err| {
            CryptoError::key(format!(
                "RSA key components are invalid or inconsistent ({err})"
            ))
        })?;
        let der = Zeroizing::new(pair.as_der()?.as_ref().to_vec());
        Ok((Self::from_pair(pair, &der)?, der))
    }

    /// Builds all handles from a signing key pair and the same key's PKCS#8 DER.
    fn from_pair(pair: KeyPair, der: &[u8]) -> Result<Self, CryptoError> {
        let dec = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|e| CryptoError::key(format!("RSA key rejected: {e}")))?;
        let bits = dec.key_size_bits();
        let oaep_pub = OaepPublicEncryptingKey::new(dec.public_key())?;
        let oaep = OaepPrivateDecryptingKey::new(dec.clone())?;
        let pkcs1 = Pkcs1PrivateDecryptingKey::new(dec)?;
        let pk = pair.public_key();
        let public = PublicJwk {
            n: Some(pk.modulus().big_endian_without_leading_zero().to_vec()),
            e: Some(pk.exponent().big_endian_without_leading_zero().to_vec()),
            ..PublicJwk::default()
        };
        let public_der = pk.as_ref().to_vec();
        Ok(RsaKey {
            pair,
            oaep,
            pkcs1,
            oaep_pub,
            public_der,
            verifiers: Default::default(),
            public,
            bits,
        })
    }

    /// Modulus size in bits.
    pub(crate) fn bits(&self) -> usize {
        self.bits
    }

    /// Public n and e.
    pub(crate) fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// RSA-OAEP / RSA-OAEP-256 encryption (also used for wrapKey).
    pub(crate) fn encrypt(
        &self,
        name: &str,
        alg: Kind,
        req: &CipherRequest,
    ) -> Result<CipherOutput, CryptoError> {
        reject_iv_aad_tag(name, req)?;
        Ok(CipherOutput {
            value: self.oaep_encrypt(name, alg, req.value)?,
            ..CipherOutput::default()
        })
    }

    /// OAEP encryption of raw bytes.
    pub(crate) fn oaep_encrypt(
        &self,
        name: &str,
        alg: Kind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let oaep_alg = oaep_alg(alg)?;
        let max = self.oaep_pub.max_plaintext_size(oaep_alg);
        if plaintext.len() > max {
            return Err(CryptoError::input(format!(
                "{name} with a {}-bit key can encrypt at most {max} bytes; got {} bytes",
                self.bits,
                plaintext.len()
            )));
        }
        let mut out = vec![0u8; self.oaep_pub.ciphertext_size()];
        let len = self
            .oaep_pub
            .encrypt(oaep_alg, plaintext, &mut out, None)?
            .len();
        out.truncate(len);
        Ok(out)
    }

    /// RSA-OAEP / RSA-OAEP-256 / RSA1_5 decryption (also used for unwrapKey).
    pub(crate) fn decrypt(
        &self,
        name: &str,
        alg: Kind,
        req: &CipherRequest,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        reject_iv_aad_tag(name, req)?;
        self.decrypt_raw(name, alg, req.value)
    }

    /// Decryption of raw ciphertext bytes.
    pub(crate) fn decrypt_raw(
        &self,
        name: &str,
        alg: Kind,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let k = self.oaep.key_size_bytes();
        if ciphertext.len() != k {
            return Err(CryptoError::input(format!(
                "{name} ciphertext for a {}-bit key must be {k} bytes; got {} bytes",
                self.bits,
                ciphertext.len()
            )));
        }
        let mut out = Zeroizing::new(vec![0u8; k]);
        let len = match alg {
            Kind::Rsa15 => self.pkcs1.decrypt(ciphertext, &mut out),
            _ => self
                .oaep
                .decrypt(oaep_alg(alg)?, ciphertext, &mut out, None),
        }
        .map_err(|_| CryptoError::DecryptionFailed)?
        .len();
        out.truncate(len);
        Ok(out)
    }

    /// RS*/PS* signature over a pre-computed digest.
    pub(crate) fn sign(
        &self,
        name: &str,
        alg: Kind,
        digest: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let (hash, _) = sig_parts(alg)?;
        let digest = import_digest(name, hash, digest)?;
        let encoding: &'static dyn RsaEncoding = match alg {
            Kind::RsaPkcs1(Hash::Sha256) => &signature::RSA_PKCS1_SHA256,
            Kind::RsaPkcs1(Hash::Sha384) => &signature::RSA_PKCS1_SHA384,
            Kind::RsaPkcs1(Hash::Sha512) => &signature::RSA_PKCS1_SHA512,
            Kind::RsaPss(Hash::Sha256) => &signature::RSA_PSS_SHA256,
            Kind::RsaPss(Hash::Sha384) => &signature::RSA_PSS_SHA384,
            Kind::RsaPss(Hash::Sha512) => &signature::RSA_PSS_SHA512,
            _ => return Err(CryptoError::Crypto),
        };
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair.sign_digest(encoding, &digest, &mut sig)?;
        Ok(sig)
    }

    /// RS*/PS* verification over a pre-computed digest; `Ok(false)` for a wrong signature.
    pub(crate) fn verify(
        &self,
        name: &str,
        alg: Kind,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<bool, CryptoError> {
        let (hash, pss) = sig_parts(alg)?;
        let digest = import_digest(name, hash, digest)?;
        let idx = hash.index() + if pss { 3 } else { 0 };
        let slot = self.verifiers.get(idx).ok_or(CryptoError::Crypto)?;
        let key = match slot.get() {
            Some(k) => k,
            None => {
                let params: &'static RsaParameters = match (pss, hash) {
                    (false, Hash::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
                    (false, Hash::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
                    (false, Hash::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
                    (true, Hash::Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
                    (true, Hash::Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
                    (true, Hash::Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
                };
                let parsed = ParsedPublicKey::new(params, &self.public_der)
                    .map_err(|_| CryptoError::Crypto)?;
                // Another thread may have won the race; either value is the same key.
                let _ = slot.set(parsed);
                slot.get().ok_or(CryptoError::Crypto)?
            }
        };
        Ok(key.verify_digest_sig(&digest, sig).is_ok())
    }
}

/// Hash and "is PSS" of an RSA signature algorithm.
fn sig_parts(alg: Kind) -> Result<(Hash, bool), CryptoError> {
    match alg {
        Kind::RsaPkcs1(h) => Ok((h, false)),
        Kind::RsaPss(h) => Ok((h, true)),
        _ => Err(CryptoError::Crypto),
    }
}

fn oaep_alg(alg: Kind) -> Result<&'static OaepAlgorithm, CryptoError> {
    match alg {
        Kind::RsaOaep => Ok(&OAEP_SHA1_MGF1SHA1),
        Kind::RsaOaep256 => Ok(&OAEP_SHA256_MGF1SHA256),
        _ => Err(CryptoError::Crypto),
    }
}

/// Wraps a caller-supplied digest, checking its length against the algorithm.
pub(crate) fn import_digest(name: &str, hash: Hash, digest: &[u8]) -> Result<Digest, CryptoError> {
    if digest.len() != hash.len() {
        return Err(CryptoError::input(format!(
            "{name} needs a {}-byte digest; got {} bytes",
            hash.len(),
            digest.len()
        )));
    }
    Digest::import_less_safe(digest, hash.digest_alg()).map_err(|_| CryptoError::Crypto)
}

fn strip_leading_zeros(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    v.get(start..).unwrap_or(&[])
}

/// Bit length of a big-endian integer without leading zero bytes.
fn bit_len(v: &[u8]) -> usize {
    match v.first() {
        None => 0,
        Some(&b) => (v.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_len_and_strip() {
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[1]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(strip_leading_zeros(&[0, 0, 5, 0]), &[5, 0]);
        assert_eq!(strip_leading_zeros(&[0, 0]), &[] as &[u8]);
    }
}
