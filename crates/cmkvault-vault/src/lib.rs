//! The cmkvault domain: what each vault operation means.
//!
//! [`VaultService`] owns the rules: key lifecycle (versions, soft delete, recover, purge and
//! purge protection), rotation policies, the `enabled`/`nbf`/`exp`/`key_ops` checks, sealing
//! of private material under the root key, backup and restore, and the crypto operations. It
//! knows nothing about HTTP; the server crate parses requests into the types of [`model`] and
//! renders what comes back. Calls are synchronous (they may do RSA work or fsync): run them on a
//! blocking pool from async code.

pub mod access;
pub mod audit;
pub mod authz;
mod backup;
mod cache;
pub mod maintenance;
pub mod model;
pub mod rotation;
mod service;
pub mod tokens;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use cmkvault_crypto::CryptoError;
pub use cmkvault_store::StoreError;
pub use service::{VaultService, VaultSettings};

/// Everything that can go wrong in a vault operation. The server maps each variant to one
/// Azure error code and HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The vault named by the request's host does not exist.
    #[error("Vault '{0}' was not found.")]
    VaultNotFound(String),
    /// A vault with this name already exists.
    #[error("A vault named '{0}' already exists.")]
    VaultExists(String),
    /// No live key (or version) by that name.
    #[error("A key with (name/id) {0} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.")]
    KeyNotFound(String),
    /// No deleted key by that name.
    #[error("Deleted Key not found: {0}")]
    DeletedKeyNotFound(String),
    /// The name belongs to a soft-deleted key.
    #[error("Key {0} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.")]
    DeletedButRecoverable(String),
    /// Restore onto a name that is in use.
    #[error("There was a conflict restoring the key '{0}': a key with this name already exists.")]
    RestoreConflict(String),
    /// Purge refused: the vault has purge protection.
    #[error("Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.")]
    PurgeProtected,
    /// Purge protection cannot be switched off, retention cannot change.
    #[error("{0}")]
    SettingImmutable(String),
    /// The key's `key_ops` does not include the operation.
    #[error("Operation {0} is not permitted on this key.")]
    KeyOperationForbidden(&'static str),
    /// The key version is disabled.
    #[error("Operation {0} is not allowed on a disabled key.")]
    KeyDisabled(&'static str),
    /// `nbf` is in the future.
    #[error("Operation {0} is not allowed: the key is not yet valid (nbf).")]
    KeyNotYetValid(&'static str),
    /// `exp` is in the past (blocks encrypt, wrapKey and sign only).
    #[error("Operation {0} is not allowed: the key has expired (exp).")]
    KeyExpired(&'static str),
    /// A principal, role or assignment does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A principal, role or assignment already exists.
    #[error("{0}")]
    Conflict(String),
    /// Malformed or invalid input.
    #[error("{0}")]
    BadParameter(String),
    /// The crypto layer refused the input (bad algorithm, lengths, ciphertext).
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    /// The root key does not open this data directory's sealed data.
    #[error("the root key does not match this data directory: sealed data cannot be opened (check CMKVAULT_ROOT_KEY or DIR/root.key)")]
    WrongRootKey,
    /// The store failed.
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    /// An invariant broke (corrupt stored data).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for vault calls.
pub type VaultResult<T> = Result<T, VaultError>;

/// The service clock: system time plus an adjustable offset, so tests can move time forward
/// (retention, expiry, rotation) without waiting.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    /// Current time, Unix seconds.
    pub fn now(&self) -> i64 {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        sys + self.offset.load(Ordering::Relaxed)
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}
