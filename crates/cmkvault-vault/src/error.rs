//! The domain's errors: one [`VaultError`] that nests an enum per concept.
//!
//! The split follows rustls (a top-level error that nests `#[non_exhaustive]` enums by concept)
//! and Vault's transit engine (user errors apart from internal errors):
//!
//! - [`VaultStateError`], [`KeyError`], [`AccessError`], [`RequestError`] and
//!   [`VaultError::Crypto`] are caused by the request: the caller can fix them.
//! - [`InternalError`] is the server's own failure (store, root key, corrupt stored data, the
//!   crypto library); [`VaultError::is_internal`] tells the two apart. Its detail is for the
//!   server's log only and never goes back to a client.
//!
//! The Display strings are plain English for logs and the CLI. The wire form (Azure's codes and
//! messages) is made in one place only: the server's error mapping.

use crate::model::KeyOp;
use crate::{CryptoError, StoreError};

/// Everything that can go wrong in a vault operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// About the vault (tenant) itself: unknown, already there, or a fixed setting.
    #[error(transparent)]
    Vault(#[from] VaultStateError),
    /// About a key: not found, deleted, or refusing an operation.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// About principals, roles, role assignments and access policies.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The request's input is malformed or invalid.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The crypto layer refused the request's input (bad algorithm, lengths, key, ciphertext).
    /// Crypto failures that are internal ([`CryptoError::is_internal`]) convert to
    /// [`VaultError::Internal`] instead.
    #[error(transparent)]
    Crypto(CryptoError),
    /// The server's own failure, not the caller's.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl VaultError {
    /// True for a server-side failure (answered with a generic 500, logged with detail); false
    /// for an error the caller caused.
    pub fn is_internal(&self) -> bool {
        match self {
            VaultError::Internal(_) => true,
            VaultError::Crypto(e) => e.is_internal(),
            VaultError::Vault(_)
            | VaultError::Key(_)
            | VaultError::Access(_)
            | VaultError::Request(_) => false,
        }
    }

    /// A [`RequestError::Invalid`] with this message.
    pub fn invalid(message: impl Into<String>) -> Self {
        VaultError::Request(RequestError::Invalid(message.into()))
    }

    /// An [`InternalError::Corrupt`]: stored data that does not parse or breaks an invariant.
    pub fn corrupt(detail: impl Into<String>) -> Self {
        VaultError::Internal(InternalError::Corrupt(detail.into()))
    }

    /// An [`InternalError::Unexpected`]: an internal step that should not fail did.
    pub fn unexpected(detail: impl Into<String>) -> Self {
        VaultError::Internal(InternalError::Unexpected(detail.into()))
    }
}

impl From<CryptoError> for VaultError {
    /// Caller-caused crypto errors stay [`VaultError::Crypto`]; internal ones (unsealing, the
    /// library) become [`InternalError::Crypto`].
    fn from(e: CryptoError) -> Self {
        if e.is_internal() {
            VaultError::Internal(InternalError::Crypto(e))
        } else {
            VaultError::Crypto(e)
        }
    }
}

impl From<StoreError> for VaultError {
    /// A store failure that reaches the caller unhandled is internal.
    fn from(e: StoreError) -> Self {
        VaultError::Internal(InternalError::Store(e))
    }
}

/// About the vault (tenant) itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultStateError {
    /// No vault by that name.
    #[error("vault '{0}' not found")]
    NotFound(String),
    /// A vault by that name already exists.
    #[error("vault '{0}' already exists")]
    Exists(String),
    /// The soft-delete retention is fixed when the vault is created.
    #[error("the soft-delete retention is fixed at creation ({days} days)")]
    RetentionFixed {
        /// The vault's retention, in days.
        days: u32,
    },
    /// Purge protection, once on, cannot be switched off.
    #[error("purge protection cannot be switched off once on")]
    PurgeProtectionPermanent,
}

/// About a key: lookup, lifecycle, and whether it allows an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No live key by that name (a soft-deleted key counts as absent), or no such version.
    #[error("key {name}{} not found", version.as_deref().map(|v| format!("/{v}")).unwrap_or_default())]
    NotFound {
        /// The key name as asked for.
        name: String,
        /// The version asked for, if any.
        version: Option<String>,
    },
    /// No soft-deleted key by that name.
    #[error("no deleted key named {0}")]
    DeletedNotFound(String),
    /// The name belongs to a soft-deleted key: it can only be recovered or purged.
    #[error("key {0} is deleted but recoverable: recover or purge it before reusing the name")]
    DeletedButRecoverable(String),
    /// A restore names a key that already exists.
    #[error("cannot restore key {0}: a key with this name already exists")]
    RestoreConflict(String),
    /// Purge refused: the vault has purge protection.
    #[error("purge refused: the vault has purge protection")]
    PurgeProtected,
    /// The key's `key_ops` does not include the operation.
    #[error("{0} is not in the key's permitted operations")]
    OperationNotPermitted(KeyOp),
    /// The key version is disabled.
    #[error("{0} refused: the key is disabled")]
    Disabled(KeyOp),
    /// The key's `nbf` is in the future.
    #[error("{0} refused: the key is not valid yet (nbf)")]
    NotYetValid(KeyOp),
    /// The key's `exp` is in the past (blocks encrypt, wrapKey and sign only).
    #[error("{0} refused: the key has expired (exp)")]
    Expired(KeyOp),
}

/// About principals (identities), roles, role assignments and access policies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// No principal with that id or name.
    #[error("principal '{0}' not found")]
    PrincipalNotFound(String),
    /// An identity with that name already exists.
    #[error("identity '{0}' already exists")]
    PrincipalExists(String),
    /// No role with that id or name.
    #[error("role '{0}' not found")]
    RoleNotFound(String),
    /// A role with that name already exists.
    #[error("role '{0}' already exists")]
    RoleExists(String),
    /// No role assignment with that id (in that vault, if one is named).
    #[error("role assignment '{id}' not found{}", vault.as_deref().map(|v| format!(" in vault '{v}'")).unwrap_or_default())]
    AssignmentNotFound {
        /// The assignment id as asked for.
        id: String,
        /// The vault it was looked for in, if the lookup was scoped to one.
        vault: Option<String>,
    },
    /// The principal already holds this role at this scope.
    #[error("the principal already holds this role at this scope")]
    AssignmentExists,
    /// The principal has no access policy on the vault.
    #[error("'{principal}' has no access policy on vault '{vault}'")]
    PolicyNotFound {
        /// The principal as named in the request.
        principal: String,
        /// The vault.
        vault: String,
    },
}

/// The request's input is malformed or invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A parameter is invalid; the message says which and why, in a sentence fit for the caller.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A backup blob is corrupt, truncated, or was sealed under another root key.
    #[error("the backup blob is corrupt, truncated or sealed under another root key")]
    InvalidBackup,
    /// A paging token (`$skiptoken`) does not decode.
    #[error("the paging token ($skiptoken) is invalid")]
    InvalidPageToken,
}

/// A server-side failure: not the caller's fault, and its detail is for the log only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InternalError {
    /// The store failed.
    #[error("storage failure: {0}")]
    Store(StoreError),
    /// The root key does not open this data directory's sealed data.
    #[error("the root key does not match this data directory: sealed data cannot be opened (check CMKVAULT_ROOT_KEY or DIR/root.key)")]
    WrongRootKey,
    /// Stored data does not open, does not parse or breaks an invariant.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The cryptographic library (or the random number generator) failed, or sealed data did
    /// not open.
    #[error("crypto failure: {0}")]
    Crypto(CryptoError),
    /// An internal step that should not fail did (serialisation, a worker task).
    #[error("internal error: {0}")]
    Unexpected(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_errors_and_internal_errors_are_told_apart() {
        let user: Vec<VaultError> = vec![
            VaultStateError::NotFound("v".into()).into(),
            KeyError::PurgeProtected.into(),
            AccessError::AssignmentExists.into(),
            RequestError::InvalidPageToken.into(),
            CryptoError::DecryptionFailed.into(),
            CryptoError::InvalidInput("x".into()).into(),
        ];
        for e in &user {
            assert!(!e.is_internal(), "{e:?}");
        }
        let internal: Vec<VaultError> = vec![
            InternalError::WrongRootKey.into(),
            StoreError::Database("disk".into()).into(),
            VaultError::corrupt("x"),
            VaultError::unexpected("x"),
            CryptoError::Crypto.into(),
            CryptoError::Unseal.into(),
            // Even when built directly as the user-facing variant.
            VaultError::Crypto(CryptoError::Crypto),
        ];
        for e in &internal {
            assert!(e.is_internal(), "{e:?}");
        }
        // `?` on an internal crypto failure lands in `Internal`, not in the user variant.
        assert!(matches!(
            VaultError::from(CryptoError::Unseal),
            VaultError::Internal(InternalError::Crypto(CryptoError::Unseal))
        ));
    }

    #[test]
    fn display_strings_are_neutral() {
        let all: Vec<VaultError> = vec![
            KeyError::NotFound {
                name: "k".into(),
                version: Some("v1".into()),
            }
            .into(),
            KeyError::DeletedButRecoverable("k".into()).into(),
            KeyError::PurgeProtected.into(),
            VaultStateError::RetentionFixed { days: 7 }.into(),
        ];
        for e in &all {
            let s = e.to_string();
            assert!(!s.contains("Key Vault") && !s.contains("key vault"), "{s}");
        }
        assert_eq!(all[0].to_string(), "key k/v1 not found");
    }
}
