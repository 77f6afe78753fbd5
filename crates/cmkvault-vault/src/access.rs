//! Identities, role assignments and access policies on [`VaultService`], and the decision for
//! each request.
//!
//! All access data (vault settings, principals, custom roles, assignments, policies) is read
//! into one immutable snapshot that requests share; every change drops the snapshot, so the
//! next request sees it (no restart, no propagation delay).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cmkvault_store::{
    AccessPolicyRecord, PrincipalRecord, RoleAssignmentRecord, RoleDefinitionRecord, StoreError,
};
use zeroize::Zeroizing;

use crate::authz::{
    builtin_roles, decide_policy, decide_rbac, scope_for, Denial, EffectiveAssignment, Operation,
    RoleDefinition, KEY_PERMISSIONS,
};
use crate::model::validate_key_name;
use crate::tokens::BOOTSTRAP_ADMIN_OID;
use crate::{VaultError, VaultResult, VaultService, VaultSettings};

/// A principal as the API shows it (never the secret hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Object id (`oid`).
    pub object_id: String,
    /// Client id (`appid`).
    pub client_id: String,
    /// Display name.
    pub display_name: String,
    /// Creation time.
    pub created: i64,
}

impl From<&PrincipalRecord> for Principal {
    fn from(p: &PrincipalRecord) -> Self {
        Principal {
            object_id: p.object_id.clone(),
            client_id: p.client_id.clone(),
            display_name: p.display_name.clone(),
            created: p.created,
        }
    }
}

/// The immutable access snapshot.
#[derive(Default)]
pub(crate) struct AccessSnapshot {
    pub vaults: HashMap<String, VaultSettings>,
    principals: HashMap<String, Principal>,
    roles: Vec<RoleDefinition>,
    /// (vault, principal oid) → effective assignments.
    assignments: HashMap<(String, String), Vec<EffectiveAssignment>>,
    /// (vault, principal oid) → key permissions.
    policies: HashMap<(String, String), Vec<String>>,
}

/// Holds the current snapshot; `None` means "reload on next use".
#[derive(Default)]
pub(crate) struct AccessCache {
    current: RwLock<Option<Arc<AccessSnapshot>>>,
}

impl AccessCache {
    /// Drops the snapshot; call after every change to access data or vault settings.
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.current.write() {
            *c = None;
        }
    }
}

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

impl VaultService {
    pub(crate) fn access_snapshot(&self) -> VaultResult<Arc<AccessSnapshot>> {
        if let Some(s) = self.access.current.read().ok().and_then(|c| c.clone()) {
            return Ok(s);
        }
        let store = &self.store;
        let vaults = store
            .vault_list()?
            .into_iter()
            .map(|v| (v.name.clone(), VaultSettings::from(v)))
            .collect();
        let principals = store
            .principal_list()?
            .iter()
            .map(|p| (p.object_id.clone(), Principal::from(p)))
            .collect();
        let mut roles = builtin_roles();
        roles.extend(
            store
                .role_definition_list()?
                .into_iter()
                .map(|r| RoleDefinition {
                    id: r.id,
                    name: r.name,
                    data_actions: json_list(&r.data_actions),
                    not_data_actions: json_list(&r.not_data_actions),
                    built_in: false,
                }),
        );
        let mut assignments: HashMap<(String, String), Vec<EffectiveAssignment>> = HashMap::new();
        for a in store.assignment_list(None, None)? {
            if let Some(role) = roles.iter().find(|r| r.id == a.role_id) {
                assignments
                    .entry((a.vault.clone(), a.principal_id.clone()))
                    .or_default()
                    .push(EffectiveAssignment {
                        scope: a.scope.clone(),
                        role: role.clone(),
                    });
            }
        }
        let mut policies = HashMap::new();
        for v in store.vault_list()? {
            for p in store.access_policy_list(&v.name)? {
                policies.insert((p.vault, p.principal_id), json_list(&p.key_permissions));
            }
        }
        let snap = Arc::new(AccessSnapshot {
            vaults,
            principals,
            roles,
            assignments,
            policies,
        });
        if let Ok(mut c) = self.access.current.write() {
            *c = Some(snap.clone());
        }
        Ok(snap)
    }

    /// Whether a token's principal still exists (the bootstrap administrator always does).
    pub fn principal_exists(&self, object_id: &str) -> VaultResult<bool> {
        Ok(object_id == BOOTSTRAP_ADMIN_OID
            || self.access_snapshot()?.principals.contains_key(object_id))
    }

    /// Decides whether `principal` may run `op` in `vault` (on `key`). The bootstrap
    /// administrator may do everything; everyone else is denied unless a role assignment
    /// (RBAC vaults) or access policy (access-policy vaults) allows it.
    pub fn authorize(
        &self,
        principal: &str,
        vault: &str,
        op: Operation,
        key: Option<&str>,
    ) -> VaultResult<Result<(), Denial>> {
        if principal == BOOTSTRAP_ADMIN_OID {
            return Ok(Ok(()));
        }
        let snap = self.access_snapshot()?;
        let settings = snap
            .vaults
            .get(&vault.to_lowercase())
            .ok_or_else(|| VaultError::VaultNotFound(vault.to_string()))?;
        let slot = (settings.name.clone(), principal.to_string());
        Ok(if settings.rbac_authorization {
            decide_rbac(
                snap.assignments
                    .get(&slot)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                op,
                key,
            )
        } else {
            decide_policy(
                snap.policies.get(&slot).map(Vec::as_slice).unwrap_or(&[]),
                op,
            )
        })
    }

    /// Whether `principal` holds Key Vault Data Access Administrator (or Administrator) on the
    /// whole vault, which lets it manage that vault's role assignments.
    pub fn can_manage_access(&self, principal: &str, vault: &str) -> VaultResult<bool> {
        if principal == BOOTSTRAP_ADMIN_OID {
            return Ok(true);
        }
        let snap = self.access_snapshot()?;
        Ok(snap
            .assignments
            .get(&(vault.to_lowercase(), principal.to_string()))
            .into_iter()
            .flatten()
            .any(|a| {
                a.scope == "/"
                    && (a.role.id == crate::authz::ROLE_DATA_ACCESS_ADMINISTRATOR
                        || a.role.id == crate::authz::ROLE_ADMINISTRATOR)
            }))
    }

    // ------------------------------------------------------------ principals

    fn find_principal(&self, id_or_name: &str) -> VaultResult<PrincipalRecord> {
        self.store
            .principal_find(id_or_name)?
            .ok_or_else(|| VaultError::NotFound(format!("No principal '{id_or_name}' exists.")))
    }

    /// Creates a principal; returns it with its client secret (shown once, stored hashed).
    pub fn create_principal(&self, name: &str) -> VaultResult<(Principal, Zeroizing<String>)> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(VaultError::BadParameter(format!(
                "The identity name '{name}' is invalid: use 1-128 letters, digits, '-', '_' or '.'."
            )));
        }
        let secret = cmkvault_crypto::generate_client_secret()?;
        let rec = PrincipalRecord {
            object_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            client_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            display_name: name.to_string(),
            secret_hash: cmkvault_crypto::hash_secret(&secret)?,
            created: self.clock().now(),
        };
        match self.store.principal_create(&rec) {
            Err(StoreError::Conflict(_)) => {
                return Err(VaultError::Conflict(format!(
                    "An identity named '{name}' already exists."
                )))
            }
            r => r?,
        }
        self.access.invalidate();
        Ok((Principal::from(&rec), secret))
    }

    /// Lists principals.
    pub fn list_principals(&self) -> VaultResult<Vec<Principal>> {
        Ok(self
            .store
            .principal_list()?
            .iter()
            .map(Principal::from)
            .collect())
    }

    /// A principal by object id, client id or name.
    pub fn get_principal(&self, id_or_name: &str) -> VaultResult<Principal> {
        Ok(Principal::from(&self.find_principal(id_or_name)?))
    }

    /// Deletes a principal with its assignments and policies; its tokens stop working at once.
    pub fn delete_principal(&self, id_or_name: &str) -> VaultResult<Principal> {
        let p = self.find_principal(id_or_name)?;
        self.store.principal_delete(&p.object_id)?;
        self.access.invalidate();
        Ok(Principal::from(&p))
    }

    /// Replaces a principal's client secret; returns the new one.
    pub fn rotate_principal_secret(
        &self,
        id_or_name: &str,
    ) -> VaultResult<(Principal, Zeroizing<String>)> {
        let p = self.find_principal(id_or_name)?;
        let secret = cmkvault_crypto::generate_client_secret()?;
        self.store
            .principal_set_secret(&p.object_id, &cmkvault_crypto::hash_secret(&secret)?)?;
        Ok((Principal::from(&p), secret))
    }

    /// Checks client credentials; `None` for an unknown client or a wrong secret (the caller
    /// cannot tell which from the timing of the hash check: unknown clients are hashed too).
    pub fn check_client_credentials(
        &self,
        client_id: &str,
        secret: &str,
    ) -> VaultResult<Option<Principal>> {
        match self.store.principal_find(client_id)? {
            Some(p) if p.client_id.eq_ignore_ascii_case(client_id) => {
                Ok(cmkvault_crypto::verify_secret(secret, &p.secret_hash)
                    .then(|| Principal::from(&p)))
            }
            _ => {
                let _ = cmkvault_crypto::verify_secret(secret, &[0u8; 49]);
                Ok(None)
            }
        }
    }

    // ------------------------------------------------------------ roles

    /// Built-in and custom roles.
    pub fn list_roles(&self) -> VaultResult<Vec<RoleDefinition>> {
        Ok(self.access_snapshot()?.roles.clone())
    }

    fn find_role(&self, id_or_name: &str) -> VaultResult<RoleDefinition> {
        self.access_snapshot()?
            .roles
            .iter()
            .find(|r| {
                r.id.eq_ignore_ascii_case(id_or_name) || r.name.eq_ignore_ascii_case(id_or_name)
            })
            .cloned()
            .ok_or_else(|| VaultError::NotFound(format!("No role '{id_or_name}' exists.")))
    }

    /// Defines a custom role from a list of dataActions.
    pub fn create_custom_role(
        &self,
        name: &str,
        data_actions: Vec<String>,
        not_data_actions: Vec<String>,
    ) -> VaultResult<RoleDefinition> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(VaultError::BadParameter(
                "A role needs a name of 1-128 characters.".into(),
            ));
        }
        if data_actions.is_empty() {
            return Err(VaultError::BadParameter(
                "A custom role needs at least one dataAction.".into(),
            ));
        }
        for a in data_actions.iter().chain(&not_data_actions) {
            if !a.to_ascii_lowercase().starts_with("microsoft.keyvault/") {
                return Err(VaultError::BadParameter(format!(
                    "'{a}' is not a Key Vault dataAction (they start with Microsoft.KeyVault/)."
                )));
            }
        }
        if self.find_role(name).is_ok() {
            return Err(VaultError::Conflict(format!(
                "A role named '{name}' already exists."
            )));
        }
        let role = RoleDefinition {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            name: name.to_string(),
            data_actions,
            not_data_actions,
            built_in: false,
        };
        let to_json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        match self.store.role_definition_create(&RoleDefinitionRecord {
            id: role.id.clone(),
            name: role.name.clone(),
            data_actions: to_json(&role.data_actions),
            not_data_actions: to_json(&role.not_data_actions),
        }) {
            Err(StoreError::Conflict(_)) => {
                return Err(VaultError::Conflict(format!(
                    "A role named '{name}' already exists."
                )))
            }
            r => r?,
        }
        self.access.invalidate();
        Ok(role)
    }

    /// Deletes a custom role and its assignments.
    pub fn delete_custom_role(&self, id_or_name: &str) -> VaultResult<RoleDefinition> {
        let role = self.find_role(id_or_name)?;
        if role.built_in {
            return Err(VaultError::BadParameter(format!(
                "'{}' is a built-in role and cannot be deleted.",
                role.name
            )));
        }
        self.store.role_definition_delete(&role.id)?;
        self.access.invalidate();
        Ok(role)
    }

    // ------------------------------------------------------------ assignments

    /// Assigns a role to a principal on a vault, or on one key of it.
    pub fn assign_role(
        &self,
        vault: &str,
        principal: &str,
        role: &str,
        key: Option<&str>,
    ) -> VaultResult<RoleAssignmentRecord> {
        let settings = self.vault(vault)?;
        let p = self.find_principal(principal)?;
        let role = self.find_role(role)?;
        if let Some(k) = key {
            validate_key_name(k)?;
        }
        let rec = RoleAssignmentRecord {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            vault: settings.name,
            scope: scope_for(key),
            principal_id: p.object_id,
            role_id: role.id,
            created: self.clock().now(),
        };
        match self.store.assignment_create(&rec) {
            Err(StoreError::Conflict(_)) => {
                return Err(VaultError::Conflict(
                    "This principal already holds this role at this scope.".into(),
                ))
            }
            r => r?,
        }
        self.access.invalidate();
        Ok(rec)
    }

    /// Lists role assignments, optionally of one vault and/or principal.
    pub fn list_assignments(
        &self,
        vault: Option<&str>,
        principal: Option<&str>,
    ) -> VaultResult<Vec<RoleAssignmentRecord>> {
        let principal = principal
            .map(|p| self.find_principal(p).map(|p| p.object_id))
            .transpose()?;
        let vault = vault.map(str::to_lowercase);
        Ok(self
            .store
            .assignment_list(vault.as_deref(), principal.as_deref())?)
    }

    /// Removes a role assignment by id.
    pub fn remove_assignment(&self, id: &str) -> VaultResult<()> {
        match self.store.assignment_delete(id) {
            Err(StoreError::NotFound(_)) => Err(VaultError::NotFound(format!(
                "No role assignment '{id}' exists."
            ))),
            r => {
                r?;
                self.access.invalidate();
                Ok(())
            }
        }
    }

    // ------------------------------------------------------------ access policies

    /// Switches a vault between RBAC (`true`) and access policies (`false`).
    pub fn set_rbac_authorization(&self, vault: &str, rbac: bool) -> VaultResult<VaultSettings> {
        let _g = self.lock()?;
        let mut rec = self
            .store
            .vault_get(vault)?
            .ok_or_else(|| VaultError::VaultNotFound(vault.to_string()))?;
        rec.rbac_authorization = rbac;
        rec.updated = self.clock().now();
        self.store.vault_update(&rec)?;
        self.access.invalidate();
        Ok(rec.into())
    }

    /// Sets a principal's key permissions on a vault (replacing any earlier set).
    pub fn set_access_policy(
        &self,
        vault: &str,
        principal: &str,
        permissions: Vec<String>,
    ) -> VaultResult<AccessPolicyRecord> {
        let settings = self.vault(vault)?;
        let p = self.find_principal(principal)?;
        let mut normalised = Vec::new();
        for perm in permissions {
            let known = KEY_PERMISSIONS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(&perm))
                .ok_or_else(|| {
                    VaultError::BadParameter(format!(
                        "Unknown key permission '{perm}'. Valid: {}.",
                        KEY_PERMISSIONS.join(", ")
                    ))
                })?;
            if !normalised.contains(&known.to_string()) {
                normalised.push(known.to_string());
            }
        }
        let rec = AccessPolicyRecord {
            vault: settings.name,
            principal_id: p.object_id,
            key_permissions: serde_json::to_string(&normalised).unwrap_or_else(|_| "[]".into()),
        };
        self.store.access_policy_set(&rec)?;
        self.access.invalidate();
        Ok(rec)
    }

    /// Lists a vault's access policies.
    pub fn list_access_policies(&self, vault: &str) -> VaultResult<Vec<AccessPolicyRecord>> {
        let settings = self.vault(vault)?;
        Ok(self.store.access_policy_list(&settings.name)?)
    }

    /// Removes a principal's access policy on a vault.
    pub fn delete_access_policy(&self, vault: &str, principal: &str) -> VaultResult<()> {
        let settings = self.vault(vault)?;
        let p = self.find_principal(principal)?;
        match self
            .store
            .access_policy_delete(&settings.name, &p.object_id)
        {
            Err(StoreError::NotFound(_)) => Err(VaultError::NotFound(format!(
                "'{principal}' has no access policy on vault '{vault}'."
            ))),
            r => {
                r?;
                self.access.invalidate();
                Ok(())
            }
        }
    }
}
