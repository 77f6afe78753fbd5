//! Key material and JWA algorithms for cmkvault, on aws-lc-rs.
//!
//! This crate does no I/O. It turns JWA names (`RSA-OAEP-256`, `A256KW`, `ES256`, ...) into
//! aws-lc-rs calls, generates and imports key material, exports public JWK members, and seals
//! private material under the root key. Secret bytes live in [`zeroize::Zeroizing`] buffers.
//!
//! CONTRACT (filled in by the implementation; the vault crate depends on exactly this API):
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
//!     pub fn public_jwk(&self) -> PublicJwk;
//!     pub fn encrypt(&self, alg: &str, req: &CipherRequest) -> Result<CipherOutput, CryptoError>;
//!     pub fn decrypt(&self, alg: &str, req: &CipherRequest) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
//!     pub fn wrap_key(&self, alg: &str, key: &[u8]) -> Result<Vec<u8>, CryptoError>;
//!     pub fn unwrap_key(&self, alg: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError>;
//!     pub fn sign(&self, alg: &str, digest: &[u8]) -> Result<Vec<u8>, CryptoError>;
//!     pub fn verify(&self, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool, CryptoError>;
//! }
//! pub struct RootKey;  // generate(), from_bytes(&[u8]) (32 bytes), seal(aad, pt), open(aad, sealed)
//! pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError>;
//! pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool;
//! ```
