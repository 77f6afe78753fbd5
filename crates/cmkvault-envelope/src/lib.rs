//! Envelope encryption for AI data (datasets, checkpoints, blobs).
//!
//! Every object is encrypted with a fresh AES-256-GCM data key (DEK); the DEK is wrapped by a
//! customer-managed key-encryption key (KEK) held in a vault. The body is exactly Azure Storage
//! client-side encryption v2 (4 MiB regions, `nonce(12) ‖ ciphertext ‖ tag(16)`), so the Azure
//! SDKs read what this crate writes and the other way round; see `docs/envelope-format.md`.
//!
//! The crate sits beside the vault, not inside it: it reaches keys only through the
//! [`KeyEncryptionKey`] trait (a remote key over the keys REST API, or a local key file).

#![forbid(unsafe_code)]

mod error;
mod kek;
mod remote;

pub use error::EnvelopeError;
pub use kek::{BoxFuture, KeyEncryptionKey};
pub use remote::{
    Credential, RemoteKey, RemoteKeyConfig, API_VERSION as REMOTE_API_VERSION,
    DEFAULT_AUTHORITY_HOST,
};
