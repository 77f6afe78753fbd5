//! The cmkvault domain: what each vault operation means.
//!
//! [`VaultService`] owns the rules: key lifecycle (versions, soft delete, recover, purge and
//! purge protection), rotation policies, the `enabled`/`nbf`/`exp`/`key_ops` checks, sealing
//! of private material under the root key, backup and restore, and the crypto operations. It
//! knows nothing about HTTP; the server crate parses requests into the types of [`model`] and
//! renders what comes back. Calls are synchronous (they may do RSA work or fsync): run them on a
//! blocking pool from async code.

#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod authz;
mod backup;
mod cache;
mod error;
pub mod maintenance;
pub mod model;
pub mod rotation;
mod service;
pub mod tokens;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use cmkvault_crypto::CryptoError;
pub use cmkvault_store::StoreError;
pub use error::{AccessError, InternalError, KeyError, RequestError, VaultError, VaultStateError};
pub use service::{VaultService, VaultSettings};

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
