//! Management routes: vault settings as ARM-shaped `Microsoft.KeyVault/vaults` JSON,
//! identities, role definitions, role assignments, access policies, denial counters and audit
//! maintenance. JSON in and out; errors are Azure-shaped.
//!
//! ```text
//! GET    /management/vaults                            {"value": [vault, ...]}
//! GET    /management/vaults/{name}                     vault (with properties.accessPolicies)
//! PUT    /management/vaults/{name}                     create: {"properties": {"softDeleteRetentionInDays": 7..90, "enablePurgeProtection": bool}}
//! PATCH  /management/vaults/{name}                     update: {"properties": {"enablePurgeProtection": true, "enableRbacAuthorization": bool}}
//! GET    /management/identities                        {"value": [identity, ...]}
//! PUT    /management/identities/{name}                 identity + clientSecret (shown once)
//! GET    /management/identities/{idOrName}             identity
//! DELETE /management/identities/{idOrName}             the deleted identity
//! POST   /management/identities/{idOrName}/rotateSecret identity + new clientSecret
//! GET    /management/roleDefinitions                   {"value": [role, ...]}
//! PUT    /management/roleDefinitions/{name}            {"dataActions": [...], "notDataActions": [...]}
//! DELETE /management/roleDefinitions/{idOrName}        the deleted role
//! GET    /management/vaults/{v}/roleAssignments[?principal=P]   {"value": [assignment, ...]}  (*)
//! PUT    /management/vaults/{v}/roleAssignments        {"principal", "role", "key"?}          (*)
//! DELETE /management/vaults/{v}/roleAssignments/{id}   the removed assignment                 (*)
//! GET    /management/vaults/{v}/accessPolicies         {"value": [policy, ...]}
//! PUT    /management/vaults/{v}/accessPolicies/{p}     {"permissions": {"keys": [...]}}
//! DELETE /management/vaults/{v}/accessPolicies/{p}     the removed policy
//! GET    /management/denials                           {"value": [{"principal","vault","key","count"}]}
//! POST   /management/audit/checkpoint                  {"seq": n}
//! POST   /management/audit/prune                       {"olderThanDays": n} -> {"removed": n}
//! ```
//! Everything is for the administrator only, except the routes marked (*), which a holder of
//! Key Vault Data Access Administrator (or Administrator) on the whole vault may also use for
//! that vault, without granting or removing the two roles that manage access.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cmkvault_store::{AccessPolicyRecord, RoleAssignmentRecord};
use cmkvault_vault::access::Principal;
use cmkvault_vault::authz::{delegate_may_grant, delegate_may_remove, RoleDefinition};
use cmkvault_vault::tokens::{Claims, BOOTSTRAP_ADMIN_OID};
use cmkvault_vault::{VaultResult, VaultSettings};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::{access_view, blocking, body_json, method_not_allowed, query_param, split_host};
use crate::AppState;

fn vault_json(
    state: &AppState,
    host: &str,
    v: &VaultSettings,
    policies: &[AccessPolicyRecord],
) -> Value {
    let tenant = state.tokens.tenant_id();
    let (_, port) = split_host(host);
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let uri = if v.name == crate::datadir::DEFAULT_VAULT {
        format!("https://{host}/")
    } else {
        format!("https://{}.{}{port}/", v.name, state.vault_domain)
    };
    let policies: Vec<Value> = policies.iter().map(|p| policy_json(state, p)).collect();
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
            "accessPolicies": policies,
            "provisioningState": "Succeeded",
            "createdAt": v.created,
            "updatedAt": v.updated,
        }
    })
}

fn policy_json(state: &AppState, p: &AccessPolicyRecord) -> Value {
    let keys: Vec<String> = serde_json::from_str(&p.key_permissions).unwrap_or_default();
    json!({
        "tenantId": state.tokens.tenant_id(),
        "objectId": p.principal_id,
        "permissions": {"keys": keys},
    })
}

fn identity_json(state: &AppState, p: &Principal) -> Value {
    json!({
        "objectId": p.object_id,
        "clientId": p.client_id,
        "displayName": p.display_name,
        "tenantId": state.tokens.tenant_id(),
        "created": p.created,
    })
}

fn role_json(r: &RoleDefinition) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "dataActions": r.data_actions,
        "notDataActions": r.not_data_actions,
        "builtIn": r.built_in,
    })
}

fn assignment_json(a: &RoleAssignmentRecord, roles: &[RoleDefinition]) -> Value {
    let role_name = roles
        .iter()
        .find(|r| r.id == a.role_id)
        .map(|r| r.name.clone());
    json!({
        "id": a.id,
        "vault": a.vault,
        "scope": a.scope,
        "principalId": a.principal_id,
        "roleDefinitionId": a.role_id,
        "roleName": role_name,
        "created": a.created,
    })
}

/// A member of a request body as sent: absent (or `null`), a value of the wanted type, or
/// something else. Bodies are typed structs of these, so that each handler reports the first
/// wrong member, in its own order and words, as the hand-written checks before it did.
#[derive(Default)]
enum Member<T> {
    /// Absent or `null`.
    #[default]
    Absent,
    /// A value of the wanted type.
    Valid(T),
    /// Present, but not of the wanted type.
    Invalid,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Member<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null => Member::Absent,
            v => serde_json::from_value(v).map_or(Member::Invalid, Member::Valid),
        })
    }
}

impl<T> Member<T> {
    /// The value if present; `wrong` if present but not of the wanted type.
    fn optional(self, wrong: impl FnOnce() -> ApiError) -> Result<Option<T>, ApiError> {
        match self {
            Member::Absent => Ok(None),
            Member::Valid(v) => Ok(Some(v)),
            Member::Invalid => Err(wrong()),
        }
    }

    /// The value; `wrong` if absent or not of the wanted type.
    fn required(self, wrong: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        match self {
            Member::Valid(v) => Ok(v),
            Member::Absent | Member::Invalid => Err(wrong()),
        }
    }
}

/// A nested object member: its members when it is a JSON object, otherwise (absent, `null`,
/// not an object) none of them, as the members of a non-object read as absent.
fn object_or_default<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(typed(Value::deserialize(d)?))
}

/// A body (or nested object) as its typed struct; a body that is not a JSON object has none of
/// its members. Never fails: every member is a [`Member`] or a nested object of them.
fn typed<T: DeserializeOwned + Default>(v: Value) -> T {
    match v {
        v @ Value::Object(_) => serde_json::from_value(v).unwrap_or_default(),
        _ => T::default(),
    }
}

/// Reads a management request body (empty means `{}`) as its typed struct.
async fn body<T: DeserializeOwned + Default>(req: Request) -> Result<T, ApiError> {
    Ok(typed(body_json(req).await?))
}

/// `PUT` and `PATCH /management/vaults/{name}`.
#[derive(Default, Deserialize)]
struct VaultBody {
    #[serde(default, deserialize_with = "object_or_default")]
    properties: VaultProperties,
}

/// `properties` of a vault body.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VaultProperties {
    #[serde(default)]
    soft_delete_retention_in_days: Member<u32>,
    #[serde(default)]
    enable_purge_protection: Member<bool>,
    #[serde(default)]
    enable_soft_delete: Member<bool>,
    #[serde(default)]
    enable_rbac_authorization: Member<bool>,
}

impl VaultProperties {
    fn bool_property(member: Member<bool>, name: &str) -> Result<Option<bool>, ApiError> {
        member.optional(|| ApiError::bad(format!("properties.{name} must be true or false.")))
    }

    fn days(member: Member<u32>) -> Result<Option<u32>, ApiError> {
        member.optional(|| {
            ApiError::bad(
                "properties.softDeleteRetentionInDays must be a whole number of days (7 to 90).",
            )
        })
    }
}

/// `PUT /management/vaults/{v}/roleAssignments`.
#[derive(Default, Deserialize)]
struct RoleAssignmentBody {
    #[serde(default)]
    principal: Member<String>,
    #[serde(default)]
    role: Member<String>,
    #[serde(default)]
    key: Member<String>,
}

/// `PUT /management/vaults/{v}/accessPolicies/{p}`.
#[derive(Default, Deserialize)]
struct AccessPolicyBody {
    #[serde(default, deserialize_with = "object_or_default")]
    permissions: Permissions,
}

/// `permissions` of an access policy body.
#[derive(Default, Deserialize)]
struct Permissions {
    #[serde(default)]
    keys: Member<Vec<String>>,
}

/// `PUT /management/roleDefinitions/{name}`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleDefinitionBody {
    #[serde(default)]
    data_actions: Member<Vec<String>>,
    #[serde(default)]
    not_data_actions: Member<Vec<String>>,
}

/// `POST /management/audit/prune`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PruneBody {
    #[serde(default)]
    older_than_days: Member<u64>,
}

/// The error for a list member that is not a list of strings.
fn not_string_list(name: &str) -> impl FnOnce() -> ApiError + '_ {
    move || ApiError::bad(format!("{name} must be a list of strings."))
}

/// A required non-empty string member.
fn string_member(member: Member<String>, name: &str) -> Result<String, ApiError> {
    let missing = || {
        ApiError::bad(format!(
            "The request body must have a non-empty string '{name}'."
        ))
    };
    member.required(missing).and_then(|s| {
        if s.trim().is_empty() {
            Err(missing())
        } else {
            Ok(s)
        }
    })
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
}

/// Decodes `%XX` escapes of a path segment (UTF-8).
fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ApiError::bad(format!("The path segment '{segment}' has a bad % escape."))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad(format!("The path segment '{segment}' is not UTF-8.")))
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
    let resp = match serve(&state, req, &host, &claims).await {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    };
    (resp, op)
}

/// The lower-cased path segments after `/management`.
fn words(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .skip(1)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The audit operationName of a management request.
pub(crate) fn operation_name(method: &Method, path: &str) -> &'static str {
    let w = words(path);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let m = method;
    match (w.as_slice(), m) {
        (["vaults"], _) => "VaultList",
        (["vaults", _], &Method::GET) => "VaultGet",
        (["vaults", _], &Method::PUT) => "VaultCreate",
        (["vaults", _], &Method::PATCH) => "VaultPatch",
        (["vaults", _, "roleassignments"], &Method::PUT) => "RoleAssignmentCreate",
        (["vaults", _, "roleassignments"], _) => "RoleAssignmentList",
        (["vaults", _, "roleassignments", _], _) => "RoleAssignmentDelete",
        (["vaults", _, "accesspolicies"], _) => "AccessPolicyList",
        (["vaults", _, "accesspolicies", _], &Method::DELETE) => "AccessPolicyDelete",
        (["vaults", _, "accesspolicies", _], _) => "AccessPolicySet",
        (["identities"], _) => "IdentityList",
        (["identities", _], &Method::PUT) => "IdentityCreate",
        (["identities", _], &Method::DELETE) => "IdentityDelete",
        (["identities", _], _) => "IdentityGet",
        (["identities", _, "rotatesecret"], _) => "IdentityRotateSecret",
        (["roledefinitions"], _) => "RoleDefinitionList",
        (["roledefinitions", _], &Method::DELETE) => "RoleDefinitionDelete",
        (["roledefinitions", _], _) => "RoleDefinitionCreate",
        (["denials"], _) => "DenialList",
        (["audit", "checkpoint"], _) => "AuditCheckpoint",
        (["audit", "prune"], _) => "AuditPrune",
        _ => "Management",
    }
}

/// Whether a management route is one a vault's Data Access Administrator may use.
fn is_assignment_route(w: &[&str]) -> bool {
    matches!(
        w,
        ["vaults", _, "roleassignments"] | ["vaults", _, "roleassignments", _]
    )
}

/// Whether a path names a management resource (whatever the method).
fn known_resource(w: &[&str]) -> bool {
    matches!(
        w,
        ["vaults"]
            | ["vaults", _]
            | ["vaults", _, "roleassignments" | "accesspolicies"]
            | ["vaults", _, "roleassignments" | "accesspolicies", _]
            | ["identities"]
            | ["identities", _]
            | ["identities", _, "rotatesecret"]
            | ["roledefinitions"]
            | ["roledefinitions", _]
            | ["denials"]
            | ["audit", "checkpoint" | "prune"]
    )
}

/// Vault JSON for each named vault (with its access policies).
async fn vault_views(
    state: &Arc<AppState>,
    host: &str,
    names: Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    let svc = state.service.clone();
    let rows = blocking(move || {
        names
            .iter()
            .map(|n| Ok((svc.vault(n)?, svc.list_access_policies(n)?)))
            .collect::<VaultResult<Vec<_>>>()
    })
    .await?;
    Ok(rows
        .iter()
        .map(|(v, p)| vault_json(state, host, v, p))
        .collect())
}

async fn vault_view(state: &Arc<AppState>, host: &str, name: &str) -> Result<Value, ApiError> {
    Ok(vault_views(state, host, vec![name.to_string()])
        .await?
        .pop()
        .unwrap_or(Value::Null))
}

async fn serve(
    state: &Arc<AppState>,
    req: Request,
    host: &str,
    claims: &Claims,
) -> Result<Value, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').skip(1).collect();
    let segs: Vec<String> = raw
        .iter()
        .map(|s| percent_decode(s))
        .collect::<Result<_, _>>()?;
    let lower = words(&path);
    let w: Vec<&str> = lower.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let svc = state.service.clone();

    // Who may do this: the administrator everything; a vault's Data Access Administrator its
    // role assignments.
    let is_admin = claims.oid == BOOTSTRAP_ADMIN_OID;
    if !is_admin {
        let allowed = if is_assignment_route(&w) {
            access_view(state)
                .await?
                .can_manage_access(&claims.oid, &segs[1])
        } else {
            false
        };
        if !allowed {
            let message = if is_assignment_route(&w) {
                format!(
                    "Only the administrator, or a Key Vault Data Access Administrator of vault '{}', may manage its role assignments.",
                    segs[1]
                )
            } else {
                "Only the administrator may use the management API.".to_string()
            };
            return Err(forbidden(message));
        }
    }

    match (w.as_slice(), &method) {
        // ------------------------------------------------------------ vaults
        (["vaults"], &Method::GET) => {
            let names = blocking(move || {
                svc.list_vaults()
                    .map(|v| v.into_iter().map(|s| s.name).collect::<Vec<_>>())
            })
            .await?;
            Ok(json!({ "value": vault_views(state, host, names).await? }))
        }
        (["vaults", _], &Method::GET) => vault_view(state, host, &segs[1]).await,
        (["vaults", _], &Method::PUT) => {
            let VaultBody { properties: p } = body(req).await?;
            let days = VaultProperties::days(p.soft_delete_retention_in_days)?.unwrap_or(90);
            let pp =
                VaultProperties::bool_property(p.enable_purge_protection, "enablePurgeProtection")?
                    .unwrap_or(false);
            if VaultProperties::bool_property(p.enable_soft_delete, "enableSoftDelete")?
                == Some(false)
            {
                return Err(ApiError::bad(
                    "Soft delete is always on and cannot be disabled.",
                ));
            }
            let rbac = VaultProperties::bool_property(
                p.enable_rbac_authorization,
                "enableRbacAuthorization",
            )?;
            let name = segs[1].clone();
            let created = blocking(move || {
                let v = svc.create_vault(&name, days, pp)?;
                if rbac == Some(false) {
                    svc.set_rbac_authorization(&v.name, false)?;
                }
                Ok(v.name)
            })
            .await?;
            vault_view(state, host, &created).await
        }
        (["vaults", _], &Method::PATCH) => {
            let VaultBody { properties: p } = body(req).await?;
            let pp =
                VaultProperties::bool_property(p.enable_purge_protection, "enablePurgeProtection")?;
            let days = VaultProperties::days(p.soft_delete_retention_in_days)?;
            let rbac = VaultProperties::bool_property(
                p.enable_rbac_authorization,
                "enableRbacAuthorization",
            )?;
            let name = segs[1].clone();
            let updated = blocking(move || {
                let v = svc.update_vault(&name, pp, days)?;
                if let Some(rbac) = rbac {
                    svc.set_rbac_authorization(&v.name, rbac)?;
                }
                Ok(v.name)
            })
            .await?;
            vault_view(state, host, &updated).await
        }

        // ------------------------------------------------------------ role assignments
        (["vaults", _, "roleassignments"], &Method::GET) => {
            let vault = segs[1].clone();
            let principal = query_param(&req, "principal");
            let (list, roles) = blocking(move || {
                svc.vault(&vault)?;
                Ok((
                    svc.list_assignments(Some(&vault), principal.as_deref())?,
                    svc.list_roles()?,
                ))
            })
            .await?;
            let value: Vec<Value> = list.iter().map(|a| assignment_json(a, &roles)).collect();
            Ok(json!({ "value": value }))
        }
        (["vaults", _, "roleassignments"], &Method::PUT) => {
            let b: RoleAssignmentBody = body(req).await?;
            let principal = string_member(b.principal, "principal")?;
            let role = string_member(b.role, "role")?;
            let key = b
                .key
                .optional(|| ApiError::bad("key must be a key name (a string)."))?;
            let vault = segs[1].clone();
            let (rec, roles) = blocking(move || {
                let roles = svc.list_roles()?;
                let wanted = roles.iter().find(|r| {
                    r.id.eq_ignore_ascii_case(&role) || r.name.eq_ignore_ascii_case(&role)
                });
                if let Some(r) = wanted {
                    if !is_admin && !delegate_may_grant(r) {
                        return Ok(Err(r.name.clone()));
                    }
                }
                let rec = svc.assign_role(&vault, &principal, &role, key.as_deref())?;
                Ok(Ok((rec, roles)))
            })
            .await?
            .map_err(|role| {
                forbidden(format!(
                    "A Key Vault Data Access Administrator cannot assign the role '{role}': only the administrator may grant roles that manage access, and custom roles."
                ))
            })?;
            Ok(assignment_json(&rec, &roles))
        }
        (["vaults", _, "roleassignments", _], &Method::DELETE) => {
            let (vault, id) = (segs[1].clone(), segs[3].clone());
            let (rec, roles) = blocking(move || {
                svc.vault(&vault)?;
                let roles = svc.list_roles()?;
                let rec = svc
                    .list_assignments(Some(&vault), None)?
                    .into_iter()
                    .find(|a| a.id.eq_ignore_ascii_case(&id))
                    .ok_or_else(|| {
                        cmkvault_vault::VaultError::from(
                            cmkvault_vault::AccessError::AssignmentNotFound {
                                id: id.clone(),
                                vault: Some(vault.clone()),
                            },
                        )
                    })?;
                if !is_admin && !delegate_may_remove(&rec.role_id) {
                    return Ok(Err(rec));
                }
                svc.remove_assignment(&rec.id)?;
                Ok(Ok((rec, roles)))
            })
            .await?
            .map_err(|rec| {
                forbidden(format!(
                    "A Key Vault Data Access Administrator cannot remove the assignment '{}': only the administrator may remove roles that manage access.",
                    rec.id
                ))
            })?;
            Ok(assignment_json(&rec, &roles))
        }

        // ------------------------------------------------------------ access policies
        (["vaults", _, "accesspolicies"], &Method::GET) => {
            let vault = segs[1].clone();
            let list = blocking(move || svc.list_access_policies(&vault)).await?;
            let value: Vec<Value> = list.iter().map(|p| policy_json(state, p)).collect();
            Ok(json!({ "value": value }))
        }
        (["vaults", _, "accesspolicies", _], &Method::PUT) => {
            let b: AccessPolicyBody = body(req).await?;
            let keys = b
                .permissions
                .keys
                .optional(not_string_list("keys"))?
                .ok_or_else(|| {
                    ApiError::bad(
                        "The request body must be {\"permissions\": {\"keys\": [\"get\", ...]}}.",
                    )
                })?;
            let (vault, principal) = (segs[1].clone(), segs[3].clone());
            let rec = blocking(move || svc.set_access_policy(&vault, &principal, keys)).await?;
            Ok(policy_json(state, &rec))
        }
        (["vaults", _, "accesspolicies", _], &Method::DELETE) => {
            let (vault, principal) = (segs[1].clone(), segs[3].clone());
            let rec = blocking(move || {
                let p = svc.get_principal(&principal)?;
                let rec = svc
                    .list_access_policies(&vault)?
                    .into_iter()
                    .find(|r| r.principal_id == p.object_id);
                svc.delete_access_policy(&vault, &principal)?;
                Ok(rec)
            })
            .await?;
            Ok(rec.map(|r| policy_json(state, &r)).unwrap_or(Value::Null))
        }

        // ------------------------------------------------------------ identities
        (["identities"], &Method::GET) => {
            let list = blocking(move || svc.list_principals()).await?;
            let value: Vec<Value> = list.iter().map(|p| identity_json(state, p)).collect();
            Ok(json!({ "value": value }))
        }
        (["identities", _], &Method::PUT) => {
            let name = segs[1].clone();
            let (p, secret) = blocking(move || svc.create_principal(&name)).await?;
            let mut v = identity_json(state, &p);
            v["clientSecret"] = json!(secret.as_str());
            Ok(v)
        }
        (["identities", _], &Method::GET) => {
            let id = segs[1].clone();
            let p = blocking(move || svc.get_principal(&id)).await?;
            Ok(identity_json(state, &p))
        }
        (["identities", _], &Method::DELETE) => {
            let id = segs[1].clone();
            let p = blocking(move || svc.delete_principal(&id)).await?;
            Ok(identity_json(state, &p))
        }
        (["identities", _, "rotatesecret"], &Method::POST) => {
            let id = segs[1].clone();
            let (p, secret) = blocking(move || svc.rotate_principal_secret(&id)).await?;
            let mut v = identity_json(state, &p);
            v["clientSecret"] = json!(secret.as_str());
            Ok(v)
        }

        // ------------------------------------------------------------ role definitions
        (["roledefinitions"], &Method::GET) => {
            let roles = blocking(move || svc.list_roles()).await?;
            Ok(json!({ "value": roles.iter().map(role_json).collect::<Vec<_>>() }))
        }
        (["roledefinitions", _], &Method::GET) => {
            let id = segs[1].clone();
            let roles = blocking(move || svc.list_roles()).await?;
            roles
                .iter()
                .find(|r| r.id.eq_ignore_ascii_case(&id) || r.name.eq_ignore_ascii_case(&id))
                .map(role_json)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("No role '{id}' exists."),
                    )
                })
        }
        (["roledefinitions", _], &Method::PUT) => {
            let b: RoleDefinitionBody = body(req).await?;
            let actions = b.data_actions.optional(not_string_list("dataActions"))?.ok_or_else(|| {
                ApiError::bad("The request body must have \"dataActions\": [\"Microsoft.KeyVault/...\", ...].")
            })?;
            let not_actions = b
                .not_data_actions
                .optional(not_string_list("notDataActions"))?
                .unwrap_or_default();
            let name = segs[1].clone();
            let role =
                blocking(move || svc.create_custom_role(&name, actions, not_actions)).await?;
            Ok(role_json(&role))
        }
        (["roledefinitions", _], &Method::DELETE) => {
            let id = segs[1].clone();
            let role = blocking(move || svc.delete_custom_role(&id)).await?;
            Ok(role_json(&role))
        }

        // ------------------------------------------------------------ denials and audit
        (["denials"], &Method::GET) => {
            let value: Vec<Value> = state
                .alerts
                .counters()
                .into_iter()
                .map(|(principal, vault, key, count)| {
                    json!({
                        "principal": principal,
                        "vault": vault,
                        "key": (!key.is_empty()).then_some(key),
                        "count": count,
                    })
                })
                .collect();
            Ok(json!({ "value": value }))
        }
        (["audit", "checkpoint"], &Method::POST) => {
            let log = state.audit.as_ref().ok_or_else(audit_off)?;
            let seq = log.checkpoint().await.map_err(audit_failed)?;
            Ok(json!({ "seq": seq }))
        }
        (["audit", "prune"], &Method::POST) => {
            let log = state.audit.clone().ok_or_else(audit_off)?;
            let b: PruneBody = body(req).await?;
            let wrong =
                || ApiError::bad("olderThanDays must be a whole number of days, at least 1.");
            let days = b.older_than_days.required(wrong)?;
            if !(1..=36_500).contains(&days) {
                return Err(wrong());
            }
            let cutoff = (state.service.clock().now() - days as i64 * 86_400) * 1000;
            let removed = log.prune_before(cutoff).await.map_err(audit_failed)?;
            Ok(json!({ "removed": removed }))
        }

        _ if known_resource(&w) => Err(method_not_allowed()),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No management operation is served at '{path}'."),
        )),
    }
}

fn audit_off() -> ApiError {
    ApiError::bad("The audit log is off on this server (it runs without audit for benchmarking).")
}

fn audit_failed(e: cmkvault_vault::audit::AuditError) -> ApiError {
    tracing::error!("audit maintenance failed: {e}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("The audit log could not be updated: {e}"),
    )
}
