//! ES256 signing key for the server's bearer tokens (JWT).

use crate::error::CryptoError;
use crate::types::{Curve, PublicJwk};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, ParsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use zeroize::Zeroizing;

/// ES256 signer for the server's bearer tokens (JWT): P-256, SHA-256 over the message,
/// fixed-length r||s signatures. `Debug` does not print key material.
pub struct TokenSigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    verifier: ParsedPublicKey,
    public: PublicJwk,
}

impl core::fmt::Debug for TokenSigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenSigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl TokenSigningKey {
    /// Generates a new P-256 key.
    pub fn generate() -> Result<Self, CryptoError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)?;
        let pkcs8 = Zeroizing::new(pair.to_pkcs8v1()?.as_ref().to_vec());
        Self::build(pair, pkcs8)
    }

    /// Loads a P-256 key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| CryptoError::key(format!("token signing key rejected: {e}")))?;
        Self::build(pair, Zeroizing::new(der.to_vec()))
    }

    fn build(pair: EcdsaKeyPair, pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, CryptoError> {
        let point = pair.public_key().as_ref();
        let len = Curve::P256.coord_len();
        if point.len() != 1 + 2 * len {
            return Err(CryptoError::Crypto);
        }
        let verifier = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .map_err(|_| CryptoError::Crypto)?;
        let public = PublicJwk {
            crv: Some(Curve::P256),
            x: Some(point.get(1..1 + len).ok_or(CryptoError::Crypto)?.to_vec()),
            y: Some(point.get(1 + len..).ok_or(CryptoError::Crypto)?.to_vec()),
            ..PublicJwk::default()
        };
        Ok(TokenSigningKey {
            pair,
            pkcs8,
            verifier,
            public,
        })
    }

    /// PKCS#8 DER of the private key (for sealing / storing).
    pub fn to_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// ES256 signature (r||s, 64 bytes) over SHA-256 of `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(self.pair.sign(&SystemRandom::new(), msg)?.as_ref().to_vec())
    }

    /// Checks an ES256 signature (r||s) over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verifier.verify_sig(msg, sig).is_ok()
    }

    /// Public JWK members (crv P-256, x, y).
    pub fn public_jwk(&self) -> PublicJwk {
        self.public.clone()
    }
}

/// Checks an ES256 signature (r||s) over `msg` with a public P-256 JWK (crv, x, y); false for
/// any other key or a malformed one. Lets an auditor verify signed checkpoints without the
/// private key.
pub fn verify_es256(public: &PublicJwk, msg: &[u8], sig: &[u8]) -> bool {
    let (Some(Curve::P256), Some(x), Some(y)) = (public.crv, &public.x, &public.y) else {
        return false;
    };
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .map(|k| k.verify_sig(msg, sig).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod verify_tests {
    use super::*;

    #[test]
    fn public_jwk_verifies_signatures() {
        let k = TokenSigningKey::generate().unwrap();
        let sig = k.sign(b"head").unwrap();
        assert!(verify_es256(&k.public_jwk(), b"head", &sig));
        assert!(!verify_es256(&k.public_jwk(), b"tail", &sig));
        let other = TokenSigningKey::generate().unwrap();
        assert!(!verify_es256(&other.public_jwk(), b"head", &sig));
        assert!(!verify_es256(&PublicJwk::default(), b"head", &sig));
    }
}
