//! The crate's error type.

/// Everything that can go wrong while sealing or opening an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The key-encryption key refused or failed an operation (no access, disabled, wrong key).
    #[error("key {kid}: {reason}")]
    Key {
        /// The key id involved.
        kid: String,
        /// Why, in words that name the cause (HTTP status, missing role, disabled, ...).
        reason: String,
    },
    /// The envelope metadata is missing, malformed or not allowed (protocol, algorithm, sizes).
    #[error("invalid envelope metadata: {0}")]
    Metadata(String),
    /// The encrypted body or its integrity record does not verify (tampered or truncated).
    #[error("the object does not verify: {0}")]
    Integrity(String),
    /// Reading or writing the data failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The crypto library failed.
    #[error("cryptographic failure: {0}")]
    Crypto(String),
    /// The configuration is unusable (no credential, unreadable CA file, malformed key id).
    #[error("configuration: {0}")]
    Config(String),
}
