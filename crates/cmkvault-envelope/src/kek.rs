//! The key-encryption key seam: what the envelope needs from a vault key.

use std::future::Future;
use std::pin::Pin;

use cmkvault_crypto::Alg;
use zeroize::Zeroizing;

use crate::EnvelopeError;

/// A boxed, sendable future (the trait's methods are async and object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A key that wraps and unwraps data keys: a vault key over the keys REST API, or a local key
/// file. Implementations keep the key material (or the vault connection) to themselves.
pub trait KeyEncryptionKey: Send + Sync {
    /// The versioned key id recorded in the envelope (`WrappedContentKey.KeyId`).
    fn kid(&self) -> &str;

    /// The wrap algorithm this key uses for new envelopes (`RSA-OAEP-256` for RSA, `A256KW` for
    /// AES keys).
    fn wrap_alg(&self) -> Alg;

    /// Wraps `plaintext` (`pad8(protocol) ‖ DEK`, 40 bytes) with [`Self::wrap_alg`].
    fn wrap<'a>(&'a self, plaintext: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, EnvelopeError>>;

    /// Unwraps a wrapped key that names `alg` (already checked against the allowlist).
    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        alg: Alg,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, EnvelopeError>>;
}
