//! Azure-shaped errors: `{"error":{"code","message","innererror"}}` with the right status.
//! Every domain error is mapped to its HTTP form here and nowhere else.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cmkvault_vault::{
    AccessError, CryptoError, InternalError, KeyError, RequestError, VaultError, VaultStateError,
};
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

/// `error.message` of every internal error: it says nothing about what failed.
pub const INTERNAL_MESSAGE: &str = "The server failed to process the request.";
/// `error.message` of an internal failure of the cryptographic library.
pub const CRYPTO_FAILURE_MESSAGE: &str = "A cryptographic operation failed.";

impl From<VaultError> for ApiError {
    /// The one mapping from domain errors to Azure's status, code, innererror and message.
    /// Internal errors are logged here with their detail and answered with a generic 500.
    fn from(e: VaultError) -> Self {
        let api = map(&e);
        if api.status == StatusCode::INTERNAL_SERVER_ERROR {
            // Debug-formatted so that a name in the detail cannot forge log lines.
            tracing::error!(error = ?e.to_string(), "internal error");
        }
        api
    }
}

/// Maps each variant to status + code + innererror + message; Azure's wording lives here only.
/// The domain's enums are `#[non_exhaustive]`, so each level ends in a `_` arm: a variant added
/// later without a mapping here is answered as an internal error (fail safe) until it is mapped.
fn map(e: &VaultError) -> ApiError {
    use StatusCode as S;
    let forbidden = |msg: String, inner: &'static str| {
        ApiError::new(S::FORBIDDEN, "Forbidden", msg).with_inner(inner)
    };
    match e {
        VaultError::Vault(v) => match v {
            VaultStateError::NotFound(name) => ApiError::new(
                S::NOT_FOUND,
                "VaultNotFound",
                format!("Vault '{name}' was not found."),
            ),
            VaultStateError::Exists(name) => ApiError::new(
                S::CONFLICT,
                "Conflict",
                format!("A vault named '{name}' already exists."),
            ),
            VaultStateError::RetentionFixed { days } => ApiError::bad(format!(
                "softDeleteRetentionInDays is fixed at creation ({days} days) and cannot be changed."
            )),
            VaultStateError::PurgeProtectionPermanent => {
                ApiError::bad("Purge protection cannot be disabled once it is enabled.")
            }
            _ => internal(INTERNAL_MESSAGE),
        },
        VaultError::Key(k) => match k {
            KeyError::NotFound { name, version } => {
                let id = match version {
                    Some(v) => format!("{name}/{v}"),
                    None => name.clone(),
                };
                ApiError::new(
                    S::NOT_FOUND,
                    "KeyNotFound",
                    format!(
                        "A key with (name/id) {id} was not found in this key vault. If you \
                         recently deleted this key you may be able to recover it using the \
                         correct recovery command."
                    ),
                )
            }
            KeyError::DeletedNotFound(name) => ApiError::new(
                S::NOT_FOUND,
                "KeyNotFound",
                format!("Deleted Key not found: {name}"),
            ),
            KeyError::DeletedButRecoverable(name) => ApiError::new(
                S::CONFLICT,
                "Conflict",
                format!(
                    "Key {name} is currently in a deleted but recoverable state, and its name \
                     cannot be reused; in this state, the key can only be recovered or purged."
                ),
            )
            .with_inner("ObjectIsDeletedButRecoverable"),
            KeyError::RestoreConflict(name) => ApiError::new(
                S::CONFLICT,
                "Conflict",
                format!(
                    "There was a conflict restoring the key '{name}': a key with this name \
                     already exists."
                ),
            ),
            KeyError::PurgeProtected => ApiError::new(
                S::FORBIDDEN,
                "Forbidden",
                "Operation \"purge\" is not allowed because purge protection is enabled for \
                 this vault. Key Vault service will automatically purge it after the retention \
                 period has passed.",
            ),
            KeyError::OperationNotPermitted(op) => forbidden(
                format!("Operation {} is not permitted on this key.", op.as_str()),
                "KeyOperationForbidden",
            ),
            KeyError::Disabled(op) => forbidden(
                format!("Operation {} is not allowed on a disabled key.", op.as_str()),
                "KeyDisabled",
            ),
            KeyError::NotYetValid(op) => forbidden(
                format!("Operation {} is not allowed: the key is not yet valid (nbf).", op.as_str()),
                "KeyNotYetValid",
            ),
            KeyError::Expired(op) => forbidden(
                format!("Operation {} is not allowed: the key has expired (exp).", op.as_str()),
                "KeyExpired",
            ),
            _ => internal(INTERNAL_MESSAGE),
        },
        VaultError::Access(a) => {
            let not_found = |msg: String| ApiError::new(S::NOT_FOUND, "NotFound", msg);
            let conflict = |msg: String| ApiError::new(S::CONFLICT, "Conflict", msg);
            match a {
                AccessError::PrincipalNotFound(p) => {
                    not_found(format!("No principal '{p}' exists."))
                }
                AccessError::PrincipalExists(n) => {
                    conflict(format!("An identity named '{n}' already exists."))
                }
                AccessError::RoleNotFound(r) => not_found(format!("No role '{r}' exists.")),
                AccessError::RoleExists(n) => {
                    conflict(format!("A role named '{n}' already exists."))
                }
                AccessError::AssignmentNotFound { id, vault: None } => {
                    not_found(format!("No role assignment '{id}' exists."))
                }
                AccessError::AssignmentNotFound {
                    id,
                    vault: Some(v),
                } => not_found(format!("No role assignment '{id}' exists in vault '{v}'.")),
                AccessError::AssignmentExists => {
                    conflict("This principal already holds this role at this scope.".into())
                }
                AccessError::PolicyNotFound { principal, vault } => not_found(format!(
                    "'{principal}' has no access policy on vault '{vault}'."
                )),
                _ => internal(INTERNAL_MESSAGE),
            }
        }
        VaultError::Request(r) => match r {
            RequestError::Invalid(message) => ApiError::bad(message.clone()),
            RequestError::InvalidBackup => ApiError::bad(
                "The backup blob is invalid: it is corrupt, truncated, or was made by a \
                 cmkvault with another root key.",
            ),
            RequestError::InvalidPageToken => ApiError::bad("The $skiptoken is invalid."),
            _ => internal(INTERNAL_MESSAGE),
        },
        VaultError::Crypto(c) => match c {
            CryptoError::UnsupportedAlgorithm { alg, reason } => {
                ApiError::bad(format!("unsupported algorithm {alg}: {reason}"))
            }
            CryptoError::InvalidInput(m) => ApiError::bad(format!("invalid input: {m}")),
            CryptoError::InvalidKey(m) => ApiError::bad(format!("invalid key: {m}")),
            CryptoError::DecryptionFailed => ApiError::bad(
                "Decryption failed: the ciphertext, tag, IV or AAD does not match this key.",
            ),
            CryptoError::Crypto => internal(CRYPTO_FAILURE_MESSAGE),
            // `Unseal` (stored data that does not open) and anything added later.
            _ => internal(INTERNAL_MESSAGE),
        },
        VaultError::Internal(i) => match i {
            InternalError::Crypto(CryptoError::Crypto) => internal(CRYPTO_FAILURE_MESSAGE),
            InternalError::Store(_)
            | InternalError::WrongRootKey
            | InternalError::Corrupt(_)
            | InternalError::Crypto(_)
            | InternalError::Unexpected(_) => internal(INTERNAL_MESSAGE),
            _ => internal(INTERNAL_MESSAGE),
        },
        _ => internal(INTERNAL_MESSAGE),
    }
}

/// 500 `InternalServerError` with a message that carries no detail.
fn internal(message: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        message,
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use cmkvault_vault::model::KeyOp;
    use cmkvault_vault::StoreError;

    const KEY_NOT_FOUND: &str = "A key with (name/id) k/v1 was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.";

    /// One row: the domain error, then what the client must see.
    type Row = (VaultError, u16, &'static str, Option<&'static str>, String);

    fn row(e: impl Into<VaultError>, status: u16, code: &'static str, msg: &str) -> Row {
        (e.into(), status, code, None, msg.to_string())
    }

    fn inner(mut r: Row, inner: &'static str) -> Row {
        r.3 = Some(inner);
        r
    }

    /// Every variant of every nested enum, with its status, code, innererror and message (the
    /// messages Azure's SDKs and our tests expect, byte for byte).
    fn table() -> Vec<Row> {
        vec![
            row(VaultStateError::NotFound("kv1".into()), 404, "VaultNotFound", "Vault 'kv1' was not found."),
            row(VaultStateError::Exists("kv1".into()), 409, "Conflict", "A vault named 'kv1' already exists."),
            row(VaultStateError::RetentionFixed { days: 7 }, 400, "BadParameter", "softDeleteRetentionInDays is fixed at creation (7 days) and cannot be changed."),
            row(VaultStateError::PurgeProtectionPermanent, 400, "BadParameter", "Purge protection cannot be disabled once it is enabled."),
            row(KeyError::NotFound { name: "k".into(), version: Some("v1".into()) }, 404, "KeyNotFound", KEY_NOT_FOUND),
            row(KeyError::NotFound { name: "k".into(), version: None }, 404, "KeyNotFound", &KEY_NOT_FOUND.replace("k/v1", "k")),
            row(KeyError::DeletedNotFound("k".into()), 404, "KeyNotFound", "Deleted Key not found: k"),
            inner(row(KeyError::DeletedButRecoverable("k".into()), 409, "Conflict", "Key k is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."), "ObjectIsDeletedButRecoverable"),
            row(KeyError::RestoreConflict("k".into()), 409, "Conflict", "There was a conflict restoring the key 'k': a key with this name already exists."),
            row(KeyError::PurgeProtected, 403, "Forbidden", "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed."),
            inner(row(KeyError::OperationNotPermitted(KeyOp::WrapKey), 403, "Forbidden", "Operation wrapKey is not permitted on this key."), "KeyOperationForbidden"),
            inner(row(KeyError::Disabled(KeyOp::Sign), 403, "Forbidden", "Operation sign is not allowed on a disabled key."), "KeyDisabled"),
            inner(row(KeyError::NotYetValid(KeyOp::Encrypt), 403, "Forbidden", "Operation encrypt is not allowed: the key is not yet valid (nbf)."), "KeyNotYetValid"),
            inner(row(KeyError::Expired(KeyOp::WrapKey), 403, "Forbidden", "Operation wrapKey is not allowed: the key has expired (exp)."), "KeyExpired"),
            row(AccessError::PrincipalNotFound("svc".into()), 404, "NotFound", "No principal 'svc' exists."),
            row(AccessError::PrincipalExists("svc".into()), 409, "Conflict", "An identity named 'svc' already exists."),
            row(AccessError::RoleNotFound("r".into()), 404, "NotFound", "No role 'r' exists."),
            row(AccessError::RoleExists("r".into()), 409, "Conflict", "A role named 'r' already exists."),
            row(AccessError::AssignmentNotFound { id: "a1".into(), vault: None }, 404, "NotFound", "No role assignment 'a1' exists."),
            row(AccessError::AssignmentNotFound { id: "a1".into(), vault: Some("kv1".into()) }, 404, "NotFound", "No role assignment 'a1' exists in vault 'kv1'."),
            row(AccessError::AssignmentExists, 409, "Conflict", "This principal already holds this role at this scope."),
            row(AccessError::PolicyNotFound { principal: "svc".into(), vault: "kv1".into() }, 404, "NotFound", "'svc' has no access policy on vault 'kv1'."),
            row(RequestError::Invalid("The key name 'a b' is invalid.".into()), 400, "BadParameter", "The key name 'a b' is invalid."),
            row(RequestError::InvalidBackup, 400, "BadParameter", "The backup blob is invalid: it is corrupt, truncated, or was made by a cmkvault with another root key."),
            row(RequestError::InvalidPageToken, 400, "BadParameter", "The $skiptoken is invalid."),
            row(VaultError::Crypto(CryptoError::UnsupportedAlgorithm { alg: "XX".into(), reason: "unknown algorithm".into() }), 400, "BadParameter", "unsupported algorithm XX: unknown algorithm"),
            row(VaultError::Crypto(CryptoError::InvalidInput("the IV must be 12 bytes".into())), 400, "BadParameter", "invalid input: the IV must be 12 bytes"),
            row(VaultError::Crypto(CryptoError::InvalidKey("n is too short".into())), 400, "BadParameter", "invalid key: n is too short"),
            row(VaultError::Crypto(CryptoError::DecryptionFailed), 400, "BadParameter", "Decryption failed: the ciphertext, tag, IV or AAD does not match this key."),
            row(VaultError::Crypto(CryptoError::Crypto), 500, "InternalServerError", CRYPTO_FAILURE_MESSAGE),
            row(VaultError::Crypto(CryptoError::Unseal), 500, "InternalServerError", INTERNAL_MESSAGE),
            row(InternalError::Crypto(CryptoError::Crypto), 500, "InternalServerError", CRYPTO_FAILURE_MESSAGE),
            row(InternalError::Crypto(CryptoError::Unseal), 500, "InternalServerError", INTERNAL_MESSAGE),
            row(InternalError::Store(StoreError::Database("SECRET-DETAIL disk I/O error".into())), 500, "InternalServerError", INTERNAL_MESSAGE),
            row(InternalError::WrongRootKey, 500, "InternalServerError", INTERNAL_MESSAGE),
            row(InternalError::Corrupt("SECRET-DETAIL sealed key k/v1 cannot be opened".into()), 500, "InternalServerError", INTERNAL_MESSAGE),
            row(InternalError::Unexpected("SECRET-DETAIL join error".into()), 500, "InternalServerError", INTERNAL_MESSAGE),
        ]
    }

    #[tokio::test]
    async fn every_variant_maps_to_its_status_code_and_message() {
        for (e, status, code, inner, message) in table() {
            let what = format!("{e:?}");
            let internal = e.is_internal();
            let api = ApiError::from(e);
            assert_eq!(api.status.as_u16(), status, "{what}");
            assert_eq!(
                internal,
                status == 500,
                "{what}: is_internal agrees with the status"
            );
            let resp = api.into_response();
            let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], code, "{what}");
            assert_eq!(v["error"]["message"], message.as_str(), "{what}");
            match inner {
                Some(i) => assert_eq!(v["error"]["innererror"]["code"], i, "{what}"),
                None => assert!(v["error"].get("innererror").is_none(), "{what}"),
            }
        }
    }

    #[tokio::test]
    async fn an_internal_error_response_carries_no_detail() {
        for (e, status, ..) in table() {
            if status != 500 {
                continue;
            }
            let detail = e.to_string();
            let resp = ApiError::from(e).into_response();
            let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                .await
                .unwrap();
            let text = String::from_utf8(body.to_vec()).unwrap();
            for leak in [
                "SECRET-DETAIL",
                "storage",
                "root key",
                "sealed",
                "corrupt",
                &detail,
            ] {
                assert!(!text.contains(leak), "{detail}: {text}");
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let keys: Vec<&String> = v["error"].as_object().unwrap().keys().collect();
            assert_eq!(keys, ["code", "message"], "{text}");
        }
    }
}
