//! The keys API: routes (`/keys/...`, `/deletedkeys/...`, `/rng`) resolved to an
//! [`Operation`], and their handlers, which read the body, call the domain on the blocking
//! pool and render the wire shapes. Everything before the handler (authentication,
//! authorisation, audit) is the pipeline's ([`crate::pipeline`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cmkvault_vault::authz::Operation;
use cmkvault_vault::model::{CreateKey, CryptoInput, CryptoOp, CryptoOutput, ImportKey, UpdateKey};
use serde_json::json;

use crate::error::ApiError;
use crate::http::{blocking, method_not_allowed, ok_json, read_body, MAX_BODY};
use crate::wire::{self, b64_decode, b64_encode, parse_body};
use crate::AppState;

/// api-version values accepted on the keys API.
pub const API_VERSIONS: &[&str] = &[
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
];
/// The newest api-version, named in the error for an unknown one.
pub(crate) const LATEST_API_VERSION: &str = "2025-07-01";

/// Body cap for restore (a backup of up to 500 RSA-4096 versions).
const MAX_RESTORE_BODY: usize = 8 * 1024 * 1024;

/// What the pipeline knows about a request once it is authenticated.
pub(crate) struct RequestContext {
    /// Vault name.
    pub vault: String,
    /// `https://host[:port]` for ids and links.
    pub base: String,
    /// The api-version sent.
    pub api_version: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
}

impl RequestContext {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The operations of the keys API, once the path is understood.
pub(crate) enum Route {
    ListKeys,
    Restore,
    Create(String),
    Import(String),
    Get(String, Option<String>),
    Update(String, Option<String>),
    Delete(String),
    Versions(String),
    Backup(String),
    Rotate(String),
    GetPolicy(String),
    SetPolicy(String),
    Crypto(String, Option<String>, CryptoOp),
    Release,
    ListDeleted,
    GetDeleted(String),
    Purge(String),
    Recover(String),
    Rng,
}

impl Route {
    /// The operation, for authorisation and audit.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::ListKeys => Operation::KeyList,
            Route::Restore => Operation::KeyRestore,
            Route::Create(_) => Operation::KeyCreate,
            Route::Import(_) => Operation::KeyImport,
            Route::Get(..) => Operation::KeyGet,
            Route::Update(..) => Operation::KeyUpdate,
            Route::Delete(_) => Operation::KeyDelete,
            Route::Versions(_) => Operation::KeyListVersions,
            Route::Backup(_) => Operation::KeyBackup,
            Route::Rotate(_) => Operation::KeyRotate,
            Route::GetPolicy(_) => Operation::KeyRotationPolicyGet,
            Route::SetPolicy(_) => Operation::KeyRotationPolicySet,
            Route::Crypto(_, _, op) => match op {
                CryptoOp::Encrypt => Operation::KeyEncrypt,
                CryptoOp::Decrypt => Operation::KeyDecrypt,
                CryptoOp::WrapKey => Operation::KeyWrap,
                CryptoOp::UnwrapKey => Operation::KeyUnwrap,
                CryptoOp::Sign => Operation::KeySign,
                CryptoOp::Verify => Operation::KeyVerify,
            },
            Route::Release => Operation::KeyRelease,
            Route::ListDeleted => Operation::KeyListDeleted,
            Route::GetDeleted(_) => Operation::KeyGetDeleted,
            Route::Purge(_) => Operation::KeyPurge,
            Route::Recover(_) => Operation::KeyRecover,
            Route::Rng => Operation::GetRandomBytes,
        }
    }

    /// The key (and version) the operation addresses, if any.
    pub(crate) fn key(&self) -> Option<(&str, Option<&str>)> {
        match self {
            Route::Create(n)
            | Route::Import(n)
            | Route::Delete(n)
            | Route::Versions(n)
            | Route::Backup(n)
            | Route::Rotate(n)
            | Route::GetPolicy(n)
            | Route::SetPolicy(n)
            | Route::GetDeleted(n)
            | Route::Purge(n)
            | Route::Recover(n) => Some((n.as_str(), None)),
            Route::Get(n, v) | Route::Update(n, v) | Route::Crypto(n, v, _) => {
                Some((n.as_str(), v.as_deref()))
            }
            Route::ListKeys | Route::Restore | Route::Release | Route::ListDeleted | Route::Rng => {
                None
            }
        }
    }
}

fn crypto_op(word: &str) -> Option<Option<CryptoOp>> {
    Some(Some(match word.to_ascii_lowercase().as_str() {
        "encrypt" => CryptoOp::Encrypt,
        "decrypt" => CryptoOp::Decrypt,
        "wrapkey" => CryptoOp::WrapKey,
        "unwrapkey" => CryptoOp::UnwrapKey,
        "sign" => CryptoOp::Sign,
        "verify" => CryptoOp::Verify,
        "release" => return Some(None),
        _ => return None,
    }))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Resolves a keys API path (`/keys/...`, `/deletedkeys/...`, `/rng`) and method to a route;
/// `Err` is the 404 or 405.
pub(crate) fn resolve(method: &Method, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let m = method;
    let route = match (l.as_slice(), m) {
        (["keys"] | ["keys", ""], &Method::GET) => Route::ListKeys,
        (["keys", "restore"], &Method::POST) => Route::Restore,
        ([_, _] | [_, _, ""], _) if l[0] == "keys" && !segs[1].is_empty() => {
            let name = segs[1].to_string();
            match *m {
                Method::GET => Route::Get(name, None),
                Method::PUT => Route::Import(name),
                Method::PATCH => Route::Update(name, None),
                Method::DELETE => Route::Delete(name),
                _ => return Err(method_not_allowed()),
            }
        }
        (["keys", _, word], _) if !segs[1].is_empty() => {
            let name = segs[1].to_string();
            match (*word, m) {
                ("create", &Method::POST) => Route::Create(name),
                ("versions", &Method::GET) => Route::Versions(name),
                ("backup", &Method::POST) => Route::Backup(name),
                ("rotate", &Method::POST) => Route::Rotate(name),
                ("rotationpolicy", &Method::GET) => Route::GetPolicy(name),
                ("rotationpolicy", &Method::PUT) => Route::SetPolicy(name),
                (w, &Method::POST) if crypto_op(w).is_some() => match crypto_op(w).flatten() {
                    Some(op) => Route::Crypto(name, None, op),
                    None => Route::Release,
                },
                (_, &Method::GET) => Route::Get(name, non_empty(segs[2])),
                (_, &Method::PATCH) => Route::Update(name, non_empty(segs[2])),
                _ => return Err(method_not_allowed()),
            }
        }
        (["keys", _, _, word], &Method::POST) if !segs[1].is_empty() => match crypto_op(word) {
            Some(Some(op)) => Route::Crypto(segs[1].to_string(), non_empty(segs[2]), op),
            Some(None) => Route::Release,
            None => return Err(not_found(path)),
        },
        (["deletedkeys"] | ["deletedkeys", ""], &Method::GET) => Route::ListDeleted,
        (["deletedkeys", _], _) if !segs[1].is_empty() => match *m {
            Method::GET => Route::GetDeleted(segs[1].to_string()),
            Method::DELETE => Route::Purge(segs[1].to_string()),
            _ => return Err(method_not_allowed()),
        },
        (["deletedkeys", _, "recover"], &Method::POST) if !segs[1].is_empty() => {
            Route::Recover(segs[1].to_string())
        }
        (["rng"], &Method::POST) => Route::Rng,
        _ => return Err(not_found(path)),
    };
    Ok(route)
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("No operation is served at '{path}'."),
    )
}

fn max_results(ctx: &RequestContext) -> Result<Option<u32>, ApiError> {
    ctx.param("maxresults")
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                ApiError::bad(format!(
                    "maxresults '{v}' is not a number between 1 and 25."
                ))
            })
        })
        .transpose()
}

fn next_link(ctx: &RequestContext, path: &str, max: Option<u32>) -> impl Fn(&str) -> String {
    let prefix = format!("{}{path}?api-version={}", ctx.base, ctx.api_version);
    let max = max.map(|m| format!("&maxresults={m}")).unwrap_or_default();
    move |token: &str| format!("{prefix}{max}&$skiptoken={token}")
}

fn crypto_input(body: &[u8]) -> Result<CryptoInput, ApiError> {
    let w: wire::OperationWire = parse_body(body)?;
    let opt = |f: &str, v: &Option<String>| v.as_deref().map(|s| b64_decode(f, s)).transpose();
    Ok(CryptoInput {
        value: b64_decode("value", &w.value)?,
        iv: opt("iv", &w.iv)?,
        aad: opt("aad", &w.aad)?,
        tag: opt("tag", &w.tag)?,
        digest: opt("digest", &w.digest)?,
        alg: wire::parse_alg(&w.alg)?,
    })
}

/// Runs an authorised route: reads the body (within its limit), calls the domain on the
/// blocking pool and renders the response.
pub(crate) async fn run_route(
    state: &Arc<AppState>,
    ctx: &RequestContext,
    route: Route,
    req: Request,
) -> Result<Response, ApiError> {
    let svc = state.service.clone();
    let vault = ctx.vault.clone();
    let base = ctx.base.clone();
    let body = match req.method() {
        &Method::GET | &Method::DELETE | &Method::HEAD => Bytes::new(),
        _ => {
            let limit = if matches!(route, Route::Restore) {
                MAX_RESTORE_BODY
            } else {
                MAX_BODY
            };
            read_body(req, limit).await?
        }
    };
    let resp = match route {
        Route::ListKeys => {
            let max = max_results(ctx)?;
            let token = ctx.param("$skiptoken").map(str::to_string);
            let page = blocking(move || svc.list_keys(&vault, max, token.as_deref())).await?;
            ok_json(wire::list_result(
                &page,
                |v| wire::key_item(&base, v, false),
                next_link(ctx, "/keys", max),
            ))
        }
        Route::ListDeleted => {
            let max = max_results(ctx)?;
            let token = ctx.param("$skiptoken").map(str::to_string);
            let page =
                blocking(move || svc.list_deleted_keys(&vault, max, token.as_deref())).await?;
            ok_json(wire::list_result(
                &page,
                |v| wire::key_item(&base, v, false),
                next_link(ctx, "/deletedkeys", max),
            ))
        }
        Route::Versions(name) => {
            let max = max_results(ctx)?;
            let token = ctx.param("$skiptoken").map(str::to_string);
            let path = format!("/keys/{name}/versions");
            let page =
                blocking(move || svc.list_versions(&vault, &name, max, token.as_deref())).await?;
            ok_json(wire::list_result(
                &page,
                |v| wire::key_item(&base, v, true),
                next_link(ctx, &path, max),
            ))
        }
        Route::Create(name) => {
            let w: wire::CreateWire = parse_body(&body)?;
            let req = CreateKey {
                kty: w.kty,
                key_size: w.key_size,
                public_exponent: w.public_exponent,
                curve: w.crv,
                key_ops: w.key_ops,
                attributes: wire::attributes_input(w.attributes),
                tags: w.tags,
                release_policy: w.release_policy,
            };
            let v = blocking(move || svc.create_key(&vault, &name, req)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Import(name) => {
            let w: wire::ImportWire = parse_body(&body)?;
            let req = ImportKey {
                key_ops: w.key.key_ops.clone(),
                jwk: w.key.into_private()?,
                hsm: w.hsm,
                attributes: wire::attributes_input(w.attributes),
                tags: w.tags,
                release_policy: w.release_policy,
            };
            let v = blocking(move || svc.import_key(&vault, &name, req)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Get(name, version) => {
            let v = blocking(move || svc.get_key(&vault, &name, version.as_deref())).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Update(name, version) => {
            let w: wire::UpdateWire = parse_body(&body)?;
            let req = UpdateKey {
                key_ops: w.key_ops,
                attributes: wire::attributes_input(w.attributes),
                tags: w.tags,
                release_policy: w.release_policy,
            };
            let v =
                blocking(move || svc.update_key(&vault, &name, version.as_deref(), req)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Delete(name) => {
            let v = blocking(move || svc.delete_key(&vault, &name)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::GetDeleted(name) => {
            let v = blocking(move || svc.get_deleted_key(&vault, &name)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Recover(name) => {
            let v = blocking(move || svc.recover_key(&vault, &name)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Purge(name) => {
            blocking(move || svc.purge_key(&vault, &name)).await?;
            StatusCode::NO_CONTENT.into_response()
        }
        Route::Backup(name) => {
            let blob = blocking(move || svc.backup_key(&vault, &name)).await?;
            ok_json(json!({"value": b64_encode(&blob)}))
        }
        Route::Restore => {
            let w: wire::ValueWire = parse_body(&body)?;
            let blob = b64_decode("value", &w.value)?;
            let v = blocking(move || svc.restore_key(&vault, &blob)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::Rotate(name) => {
            let v = blocking(move || svc.rotate_key(&vault, &name)).await?;
            ok_json(wire::key_bundle(&base, &v))
        }
        Route::GetPolicy(name) => {
            let display = name.clone();
            let (p, has_id) = blocking(move || svc.get_rotation_policy(&vault, &name)).await?;
            ok_json(wire::rotation_policy(&base, &display, &p, has_id))
        }
        Route::SetPolicy(name) => {
            let w: wire::RotationPolicyWire = parse_body(&body)?;
            let display = name.clone();
            let p = blocking(move || svc.set_rotation_policy(&vault, &name, w.into())).await?;
            ok_json(wire::rotation_policy(&base, &display, &p, true))
        }
        Route::Crypto(name, version, op) => {
            let input = crypto_input(&body)?;
            let display = name.clone();
            let out =
                blocking(move || svc.crypto(&vault, &name, version.as_deref(), op, &input)).await?;
            match out {
                CryptoOutput::Verified(valid) => ok_json(json!({"value": valid})),
                CryptoOutput::Bytes {
                    version,
                    value,
                    iv,
                    tag,
                    aad,
                } => {
                    let mut v = json!({
                        "kid": format!("{base}/keys/{display}/{version}"),
                        "value": b64_encode(&value),
                    });
                    for (k, x) in [("iv", iv), ("tag", tag), ("aad", aad)] {
                        if let Some(x) = x {
                            v[k] = json!(b64_encode(&x));
                        }
                    }
                    ok_json(v)
                }
            }
        }
        Route::Release => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotSupported",
                "Secure key release needs an attestation service, which cmkvault does not provide.",
            ))
        }
        Route::Rng => {
            let w: wire::RngWire = parse_body(&body)?;
            let count = usize::try_from(w.count).map_err(|_| {
                ApiError::bad(format!("count {} is out of range: use 1 to 128.", w.count))
            })?;
            let bytes = blocking(move || svc.random_bytes(&vault, count)).await?;
            ok_json(json!({"value": b64_encode(&bytes)}))
        }
    };
    Ok(resp)
}
