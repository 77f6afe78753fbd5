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

mod api;
mod envelope;
mod error;
pub mod format;
mod integrity;
mod kek;
mod local;
mod remote;
mod stream;

pub use api::{
    open, open_container, read_container, rewrap, seal, seal_container, seal_container_with,
    seal_with, write_container, KeyResolver, KeySource, CONTAINER_MAGIC, CONTAINER_VERSION,
    MAX_CONTAINER_HEADER,
};
pub use envelope::{DataKey, Envelope, EnvelopeMetadata, OpenOptions, SealingKey};
pub use error::EnvelopeError;
pub use integrity::{IntegrityRecord, INTEGRITY_HKDF_INFO, INTEGRITY_VERSION};
pub use kek::{BoxFuture, KeyEncryptionKey};
pub use local::LocalKey;
pub use remote::{
    Credential, RemoteKey, RemoteKeyConfig, API_VERSION as REMOTE_API_VERSION,
    DEFAULT_AUTHORITY_HOST,
};
pub use stream::{stream_buffer_bound, DecryptReader, EncryptWriter};
