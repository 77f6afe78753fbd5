//! Key material and JWA algorithms for cmkvault, on aws-lc-rs.
//!
//! This crate does no I/O. It turns JWA names (`RSA-OAEP-256`, `A256KW`, `ES256`, ...) into
//! aws-lc-rs calls, generates and imports key material, exports public JWK members, and seals
//! private material under the root key. Secret bytes live in [`zeroize::Zeroizing`] buffers.
//! No cryptographic primitive is implemented here: everything is aws-lc (through aws-lc-rs, and
//! through aws-lc-sys only for AES-192 key wrap, which aws-lc-rs does not expose).
//!
//! Algorithms by key family:
//!
//! | family | encrypt / wrapKey | decrypt / unwrapKey | sign / verify |
//! |---|---|---|---|
//! | RSA | RSA-OAEP, RSA-OAEP-256 | + RSA1_5 (legacy) | RS256/384/512, PS256/384/512 (pre-computed digest) |
//! | EC  | – | – | ES256 (P-256), ES256K (P-256K), ES384 (P-384), ES512 (P-521) |
//! | oct | A*KW, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD; encrypt/decrypt also A*GCM, A*CBC, A*CBCPAD | same | HS256/384/512 (HMAC over the value) |
//!
//! API summary:
//!
//! ```ignore
//! pub enum Curve { P256, P384, P521, P256K }          // Curve::from_jwk("P-256"), .jwk_name()
//! pub enum KeyFamily { Rsa, Ec, Oct }
//! pub struct PrivateKey { .. }                         // parsed, ready-to-use handles; Send + Sync
//! impl PrivateKey {
//!     pub fn generate_rsa(bits: usize, public_exponent: Option<u64>) -> Result<Self, CryptoError>;
//!     pub fn generate_ec(curve: Curve) -> Result<Self, CryptoError>;
//!     pub fn generate_oct(bits: usize) -> Result<Self, CryptoError>;
//!     pub fn from_jwk(jwk: &JwkPrivate) -> Result<Self, CryptoError>;   // import
//!     pub fn to_bytes(&self) -> Zeroizing<Vec<u8>>;                   // self-describing, for sealing
//!     pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError>;
//!     pub fn family(&self) -> KeyFamily;
//!     pub fn key_size_bits(&self) -> usize;
//!     pub fn curve(&self) -> Option<Curve>;
//!     pub fn public_jwk(&self) -> PublicJwk;
//!     pub fn encrypt(&self, alg: &str, req: &CipherRequest) -> Result<CipherOutput, CryptoError>;
//!     pub fn decrypt(&self, alg: &str, req: &CipherRequest) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
//!     pub fn wrap_key(&self, alg: &str, key: &[u8]) -> Result<Vec<u8>, CryptoError>;
//!     pub fn unwrap_key(&self, alg: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
//!     pub fn sign(&self, alg: &str, digest: &[u8]) -> Result<Vec<u8>, CryptoError>;
//!     pub fn verify(&self, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool, CryptoError>;
//! }
//! pub struct RootKey;  // generate(), from_bytes(&[u8]) (32 bytes), as_bytes(), seal(aad, pt), open(aad, sealed)
//! pub struct TokenSigningKey; // ES256 for JWTs: generate(), from_pkcs8(), to_pkcs8(), sign(), verify(), public_jwk()
//! pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError>;
//! pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool;
//! pub fn sha256(data: &[u8]) -> [u8; 32];
//! ```

#![deny(missing_docs)]

mod alg;
mod ec;
mod error;
mod key;
mod kw;
mod oct;
mod root;
mod rsa;
mod secret;
mod token;
mod types;

pub use error::CryptoError;
pub use key::PrivateKey;
pub use root::{RootKey, ROOT_KEY_LEN};
pub use secret::{
    dummy_secret_hash, generate_client_secret, hash_secret, pbkdf2_derivations, verify_secret,
};
pub use token::{verify_es256, TokenSigningKey};
pub use types::{CipherOutput, CipherRequest, Curve, JwkPrivate, KeyFamily, PublicJwk};
pub use zeroize::Zeroizing;

/// Largest request accepted by [`random_bytes`].
pub const MAX_RANDOM_BYTES: usize = 1 << 20;

/// `n` bytes from the aws-lc CSPRNG (at most [`MAX_RANDOM_BYTES`]).
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    if n > MAX_RANDOM_BYTES {
        return Err(CryptoError::input(format!(
            "at most {MAX_RANDOM_BYTES} random bytes per call; asked for {n}"
        )));
    }
    let mut v = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut v)?;
    Ok(v)
}

/// Compares two byte strings in time independent of their contents (lengths may leak).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(random_bytes(0).unwrap().len(), 0);
        let a = random_bytes(32).unwrap();
        let b = random_bytes(32).unwrap();
        assert_ne!(a, b);
        assert!(random_bytes(MAX_RANDOM_BYTES + 1).is_err());
        // FIPS 180-2 "abc".
        assert_eq!(sha256(b"abc")[..4], [0xba, 0x78, 0x16, 0xbf]);
    }

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<PrivateKey>();
        check::<RootKey>();
        check::<TokenSigningKey>();
        check::<CryptoError>();
    }
}
