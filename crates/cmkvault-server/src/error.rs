//! Azure-shaped errors: `{"error":{"code","message","innererror"}}` with the right status.
//! Every domain error is mapped to its HTTP form here and nowhere else.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cmkvault_vault::{CryptoError, VaultError};
use serde_json::json;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.code`.
    pub code: &'static str,
    /// `error.message`.
    pub message: String,
    /// `error.innererror.code`, if any.
    pub inner: Option<&'static str>,
}

impl ApiError {
    /// An error with no inner code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            inner: None,
        }
    }

    /// 400 `BadParameter`.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    fn with_inner(mut self, inner: &'static str) -> Self {
        self.inner = Some(inner);
        self
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        use StatusCode as S;
        let msg = e.to_string();
        match e {
            VaultError::VaultNotFound(_) => ApiError::new(S::NOT_FOUND, "VaultNotFound", msg),
            VaultError::VaultExists(_) | VaultError::Conflict(_) => {
                ApiError::new(S::CONFLICT, "Conflict", msg)
            }
            VaultError::NotFound(_) => ApiError::new(S::NOT_FOUND, "NotFound", msg),
            VaultError::KeyNotFound(_) | VaultError::DeletedKeyNotFound(_) => {
                ApiError::new(S::NOT_FOUND, "KeyNotFound", msg)
            }
            VaultError::DeletedButRecoverable(_) => ApiError::new(S::CONFLICT, "Conflict", msg)
                .with_inner("ObjectIsDeletedButRecoverable"),
            VaultError::RestoreConflict(_) => ApiError::new(S::CONFLICT, "Conflict", msg),
            VaultError::PurgeProtected => ApiError::new(S::FORBIDDEN, "Forbidden", msg),
            VaultError::KeyOperationForbidden(_) => {
                ApiError::new(S::FORBIDDEN, "Forbidden", msg).with_inner("KeyOperationForbidden")
            }
            VaultError::KeyDisabled(_) => {
                ApiError::new(S::FORBIDDEN, "Forbidden", msg).with_inner("KeyDisabled")
            }
            VaultError::KeyNotYetValid(_) => {
                ApiError::new(S::FORBIDDEN, "Forbidden", msg).with_inner("KeyNotYetValid")
            }
            VaultError::KeyExpired(_) => {
                ApiError::new(S::FORBIDDEN, "Forbidden", msg).with_inner("KeyExpired")
            }
            VaultError::BadParameter(_) | VaultError::SettingImmutable(_) => ApiError::bad(msg),
            VaultError::Crypto(CryptoError::DecryptionFailed) => ApiError::bad(
                "Decryption failed: the ciphertext, tag, IV or AAD does not match this key.",
            ),
            VaultError::Crypto(CryptoError::Crypto) => {
                tracing::error!("crypto failure: {msg}");
                ApiError::new(
                    S::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "A cryptographic operation failed.",
                )
            }
            VaultError::Crypto(_) => ApiError::bad(msg),
            VaultError::WrongRootKey | VaultError::Store(_) | VaultError::Internal(_) => {
                tracing::error!("internal error: {msg}");
                ApiError::new(
                    S::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "The server failed to process the request.",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(inner) = self.inner {
            error["innererror"] = json!({"code": inner});
        }
        let mut resp = (self.status, axum::Json(json!({ "error": error }))).into_response();
        resp.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        resp
    }
}
