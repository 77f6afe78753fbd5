//! Key material and JWA algorithms for cmkvault, on aws-lc-rs.
//!
//! This crate does no I/O. It turns JWA algorithms (`RSA-OAEP-256`, `A256KW`, `ES256`, ...) into
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
//! Algorithms and operations are typed: [`Alg`] (every JWA name above) and [`KeyOp`] (the
//! `key_ops` names) parse once where a request enters (`FromStr`; `Display` and serde give the
//! JWA/Azure spelling back), and no call here takes an algorithm as a string.
//!
//! Seams (for HSM support): a key version is used through a [`KeyHandle`] (typed operations
//! and public members; its private material never leaves it), made and reopened by a
//! [`KeyBackend`] from the [`KeyRef`] its version record stores (a tag byte, then a sealed blob
//! today; room for an HSM object reference). [`SoftwareBackend`] is the first backend, with
//! [`PrivateKey`] as its handle; it seals through a [`Sealer`], implemented by [`RootKey`].
//!
//! API summary:
//!
//! ```ignore
//! pub enum Alg { RsaOaep, RsaOaep256, Rsa15, Rs256, .., Es256K, A128Kw, .., CkmAesKeyWrapPad,
//!                A128Gcm, .., A256CbcPad, Hs256, Hs384, Hs512 }   // "A256KW".parse(), .as_str(), .family()
//! pub enum KeyOp { Encrypt, Decrypt, Sign, Verify, WrapKey, UnwrapKey, Import, Export }
//! pub enum Curve { P256, P384, P521, P256K }          // Curve::from_jwk("P-256"), .jwk_name()
//! pub enum KeyFamily { Rsa, Ec, Oct }
//! pub trait KeyHandle: Send + Sync + Debug {
//!     fn family(&self) -> KeyFamily;
//!     fn key_size_bits(&self) -> usize;
//!     fn curve(&self) -> Option<Curve>;
//!     fn public_jwk(&self) -> PublicJwk;
//!     fn encrypt(&self, alg: Alg, req: &CipherRequest) -> Result<CipherOutput, CryptoError>;
//!     fn decrypt(&self, alg: Alg, req: &CipherRequest) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
//!     fn wrap_key(&self, alg: Alg, key: &[u8]) -> Result<Vec<u8>, CryptoError>;
//!     fn unwrap_key(&self, alg: Alg, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
//!     fn sign(&self, alg: Alg, digest: &[u8]) -> Result<Vec<u8>, CryptoError>;
//!     fn verify(&self, alg: Alg, digest: &[u8], signature: &[u8]) -> Result<bool, CryptoError>;
//! }
//! pub struct PrivateKey { .. }                         // the software KeyHandle; Send + Sync
//! impl PrivateKey {
//!     pub fn generate_rsa(bits: usize, public_exponent: Option<u64>) -> Result<Self, CryptoError>;
//!     pub fn generate_ec(curve: Curve) -> Result<Self, CryptoError>;
//!     pub fn generate_oct(bits: usize) -> Result<Self, CryptoError>;
//!     pub fn from_jwk(jwk: &JwkPrivate) -> Result<Self, CryptoError>;   // import
//! }
//! pub enum KeySpec { Rsa { bits, public_exponent }, Ec(Curve), Oct { bits } }
//! pub enum KeyRef { Sealed(Vec<u8>) }                 // to_bytes() / from_bytes() (reads pre-tag rows)
//! pub struct NewKey { pub handle: Arc<dyn KeyHandle>, pub key_ref: KeyRef }
//! pub trait KeyBackend: Send + Sync {                 // `id`: the version's identity (seal aad)
//!     fn generate(&self, spec: KeySpec, id: &[u8]) -> Result<NewKey, CryptoError>;
//!     fn import(&self, jwk: &JwkPrivate, id: &[u8]) -> Result<NewKey, CryptoError>;
//!     fn open(&self, key_ref: &KeyRef, id: &[u8]) -> Result<Arc<dyn KeyHandle>, CryptoError>;
//!     fn export_for_backup(&self, key_ref: &KeyRef, id: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
//!     fn import_from_backup(&self, material: &[u8], id: &[u8]) -> Result<KeyRef, CryptoError>;
//! }
//! pub struct SoftwareBackend;                          // SoftwareBackend::new(Arc<dyn Sealer>)
//! pub trait Sealer: Send + Sync {                     // seal(aad, pt), open(aad, sealed)
//!     fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError>;
//!     fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
//! }
//! pub struct RootKey;  // the AES-256-GCM Sealer: generate(), from_bytes(&[u8]) (32 bytes), as_bytes()
//! pub struct TokenSigningKey; // ES256 for JWTs: generate(), from_pkcs8(), to_pkcs8(), sign(), verify(), public_jwk()
//! pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError>;
//! pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool;
//! pub fn sha256(data: &[u8]) -> [u8; 32];
//! ```

#![deny(missing_docs)]

mod alg;
mod backend;
mod ec;
mod error;
mod key;
#[allow(unsafe_code)] // AES-192 key wrap through aws-lc-sys: the only FFI in the workspace.
mod kw;
mod oct;
mod root;
mod rsa;
mod secret;
mod token;
mod types;

pub use alg::{Alg, KeyOp};
pub use backend::{KeyBackend, KeyHandle, KeyRef, KeySpec, NewKey, SoftwareBackend};
pub use error::CryptoError;
pub use key::PrivateKey;
pub use root::{RootKey, Sealer, ROOT_KEY_LEN};
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
        check::<SoftwareBackend>();
        check::<KeyRef>();
        check::<TokenSigningKey>();
        check::<CryptoError>();
    }
}
