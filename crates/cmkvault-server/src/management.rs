//! Management routes (admin only): vault settings as ARM-shaped `Microsoft.KeyVault/vaults` JSON.
//!
//! ```text
//! GET   /management/vaults            {"value": [vault, ...]}
//! GET   /management/vaults/{name}     vault
//! PUT   /management/vaults/{name}     create: {"properties": {"softDeleteRetentionInDays": 7..90, "enablePurgeProtection": bool}}
//! PATCH /management/vaults/{name}     update: {"properties": {"enablePurgeProtection": true}}
//! ```

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cmkvault_vault::tokens::{Claims, BOOTSTRAP_ADMIN_OID};
use cmkvault_vault::VaultSettings;
use serde_json::{json, Value};

use crate::api::{body_json, split_host};
use crate::error::ApiError;
use crate::AppState;

fn vault_json(state: &AppState, host: &str, v: &VaultSettings) -> Value {
    let tenant = state.tokens.tenant_id();
    let (_, port) = split_host(host);
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let uri = if v.name == crate::datadir::DEFAULT_VAULT {
        format!("https://{host}/")
    } else {
        format!("https://{}.{}{port}/", v.name, state.vault_domain)
    };
    json!({
        "id": format!("/subscriptions/{tenant}/resourceGroups/cmkvault/providers/Microsoft.KeyVault/vaults/{}", v.name),
        "name": v.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": "local",
        "properties": {
            "tenantId": tenant,
            "vaultUri": uri,
            "sku": {"family": "A", "name": "premium"},
            "enableSoftDelete": true,
            "softDeleteRetentionInDays": v.retention_days,
            "enablePurgeProtection": v.purge_protection,
            "enableRbacAuthorization": v.rbac_authorization,
            "provisioningState": "Succeeded",
            "createdAt": v.created,
            "updatedAt": v.updated,
        }
    })
}

fn property<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get("properties").and_then(|p| p.get(name))
}

fn bool_property(body: &Value, name: &str) -> Result<Option<bool>, ApiError> {
    match property(body, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad(format!(
            "properties.{name} must be true or false."
        ))),
    }
}

fn days_property(body: &Value) -> Result<Option<u32>, ApiError> {
    match property(body, "softDeleteRetentionInDays") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad("properties.softDeleteRetentionInDays must be a whole number of days (7 to 90).")),
    }
}

/// Serves a management request of an authenticated caller; returns the response and the
/// audit operation name.
pub(crate) async fn handle(
    state: Arc<AppState>,
    req: Request,
    host: String,
    claims: Claims,
) -> (Response, &'static str) {
    let op = operation_name(req.method(), req.uri().path());
    if claims.oid != BOOTSTRAP_ADMIN_OID {
        return (
            ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Only the administrator may use the management API.",
            )
            .into_response(),
            op,
        );
    }
    let resp = match serve(&state, req, &host).await {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    };
    (resp, op)
}

/// The audit operationName of a management request.
fn operation_name(method: &Method, path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (segs.get(1).copied(), segs.len(), method) {
        (Some("vaults"), 2, _) => "VaultList",
        (Some("vaults"), 3, &Method::GET) => "VaultGet",
        (Some("vaults"), 3, &Method::PUT) => "VaultCreate",
        (Some("vaults"), 3, &Method::PATCH) => "VaultPatch",
        _ => "Management",
    }
}

async fn serve(state: &Arc<AppState>, req: Request, host: &str) -> Result<Value, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let svc = state.service.clone();
    let method = req.method().clone();
    let run = |f: Box<dyn FnOnce() -> cmkvault_vault::VaultResult<Value> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "task failed",
                )
            })?
            .map_err(ApiError::from)
    };
    match (segs.as_slice(), &method) {
        (["management", "vaults"], &Method::GET) => {
            let list = run(Box::new(move || {
                svc.list_vaults()
                    .map(|v| json!(v.iter().map(|s| s.name.clone()).collect::<Vec<_>>()))
            }))
            .await?;
            let mut out = Vec::new();
            for name in list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
            {
                out.push(vault_json(state, host, &state.service.vault(name)?));
            }
            Ok(json!({ "value": out }))
        }
        (["management", "vaults", name], &Method::GET) => {
            let v = state.service.vault(name)?;
            Ok(vault_json(state, host, &v))
        }
        (["management", "vaults", name], &Method::PUT) => {
            let body = body_json(req).await?;
            let days = days_property(&body)?.unwrap_or(90);
            let pp = bool_property(&body, "enablePurgeProtection")?.unwrap_or(false);
            if bool_property(&body, "enableSoftDelete")? == Some(false) {
                return Err(ApiError::bad(
                    "Soft delete is always on and cannot be disabled.",
                ));
            }
            let name = name.to_string();
            let v = run(Box::new(move || {
                svc.create_vault(&name, days, pp).map(|v| json!(v.name))
            }))
            .await?;
            let name = v.as_str().unwrap_or_default();
            Ok(vault_json(state, host, &state.service.vault(name)?))
        }
        (["management", "vaults", name], &Method::PATCH) => {
            let body = body_json(req).await?;
            let pp = bool_property(&body, "enablePurgeProtection")?;
            let days = days_property(&body)?;
            let name = name.to_string();
            run(Box::new(move || {
                svc.update_vault(&name, pp, days).map(|v| json!(v.name))
            }))
            .await?;
            Ok(vault_json(state, host, &state.service.vault(segs[2])?))
        }
        (["management", "vaults", ..], _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The HTTP method is not allowed on this resource.",
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No management operation is served at '{path}'."),
        )),
    }
}
