//! The crate's error type.

/// Everything that can go wrong in this crate.
///
/// `UnsupportedAlgorithm`, `InvalidInput`, `InvalidKey` and `DecryptionFailed` are caused by the
/// caller's request; `Unseal` means stored data could not be opened; `Crypto` is an internal
/// failure of the cryptographic library (or of the random number generator).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The algorithm is unknown, or not valid for this key family, key size, curve or operation.
    #[error("unsupported algorithm {alg}: {reason}")]
    UnsupportedAlgorithm {
        /// The JWA algorithm name as given by the caller.
        alg: String,
        /// Why it cannot be used here.
        reason: String,
    },
    /// A request parameter is malformed (wrong length, missing IV or tag, wrong digest size, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Key material given for import (or generation parameters) is not acceptable.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Ciphertext, tag or padding did not verify. Deliberately carries no detail.
    #[error("decryption failed")]
    DecryptionFailed,
    /// Sealed data could not be opened.
    #[error("sealed data could not be opened: wrong root key or tampered data")]
    Unseal,
    /// Unspecified internal failure of the cryptographic library.
    #[error("internal cryptographic failure")]
    Crypto,
}

impl CryptoError {
    /// True for a failure that is not the caller's: sealed data that does not open
    /// ([`CryptoError::Unseal`]) or a failure of the library itself ([`CryptoError::Crypto`]).
    pub fn is_internal(&self) -> bool {
        match self {
            CryptoError::Unseal | CryptoError::Crypto => true,
            CryptoError::UnsupportedAlgorithm { .. }
            | CryptoError::InvalidInput(_)
            | CryptoError::InvalidKey(_)
            | CryptoError::DecryptionFailed => false,
        }
    }

    /// Shorthand for [`CryptoError::UnsupportedAlgorithm`].
    pub(crate) fn unsupported(alg: &str, reason: impl Into<String>) -> Self {
        CryptoError::UnsupportedAlgorithm {
            alg: alg.to_owned(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`CryptoError::InvalidInput`].
    pub(crate) fn input(msg: impl Into<String>) -> Self {
        CryptoError::InvalidInput(msg.into())
    }

    /// Shorthand for [`CryptoError::InvalidKey`].
    pub(crate) fn key(msg: impl Into<String>) -> Self {
        CryptoError::InvalidKey(msg.into())
    }
}

impl From<aws_lc_rs::error::Unspecified> for CryptoError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        CryptoError::Crypto
    }
}

#[cfg(test)]
mod tests {
    use super::CryptoError;

    #[test]
    fn only_unseal_and_library_failures_are_internal() {
        assert!(CryptoError::Unseal.is_internal());
        assert!(CryptoError::Crypto.is_internal());
        assert!(!CryptoError::DecryptionFailed.is_internal());
        assert!(!CryptoError::input("x").is_internal());
        assert!(!CryptoError::key("x").is_internal());
        assert!(!CryptoError::unsupported("A", "no").is_internal());
    }
}
