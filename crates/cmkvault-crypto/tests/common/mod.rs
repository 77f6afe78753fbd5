//! Helpers shared by the crypto crate's integration tests.

use cmkvault_crypto::*;

/// Test seam: the software backend with a fixed root key, for serialization round trips.
pub fn backend() -> SoftwareBackend {
    SoftwareBackend::new(std::sync::Arc::new(
        RootKey::from_bytes(&[9u8; 32]).unwrap(),
    ))
}

/// `key`'s sealed serialization, through the backend's backup export (the only way out).
pub fn to_bytes(key: &PrivateKey) -> Zeroizing<Vec<u8>> {
    let be = backend();
    let r = be.seal_key(key, b"id").unwrap();
    be.export_for_backup(&r, b"id").unwrap()
}

/// A handle from a serialization, through the backend's restore path.
pub fn from_bytes(bytes: &[u8]) -> Result<std::sync::Arc<dyn KeyHandle>, CryptoError> {
    let be = backend();
    let r = be.import_from_backup(bytes, b"id")?;
    be.open(&r, b"id")
}

/// A JWA name parsed (test inputs are valid names).
pub fn jwa(name: &str) -> Alg {
    name.parse().unwrap()
}
