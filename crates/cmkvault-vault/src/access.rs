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
use crate::{AccessError, VaultError, VaultResult, VaultService, VaultSettings, VaultStateError};

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

#[derive(Default)]
struct CacheInner {
    /// Bumped by every invalidation: a reload publishes its snapshot only if the generation it
    /// started at is still current, so a reload that read the store before a change cannot
    /// re-publish what the change's invalidation dropped.
    generation: u64,
    /// `None` means "reload on next use".
    current: Option<Arc<AccessSnapshot>>,
}

/// Holds the current snapshot.
#[derive(Default)]
pub(crate) struct AccessCache {
    inner: RwLock<CacheInner>,
    /// Runs once, in the next reload, between its store reads and its publication (tests
    /// interleave a change there).
    #[cfg(test)]
    after_read: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl AccessCache {
    /// Drops the snapshot; call after every change to access data or vault settings.
    pub(crate) fn invalidate(&self) {
        // A poisoned lock still holds valid data (plain assignments); never skip an
        // invalidation because of one.
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.generation = inner.generation.wrapping_add(1);
        inner.current = None;
    }

    /// The loaded snapshot, if any.
    fn loaded(&self) -> Option<Arc<AccessSnapshot>> {
        self.inner.read().ok().and_then(|i| i.current.clone())
    }

    /// The current generation; pass it back to [`Self::publish`].
    fn generation(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// Publishes a snapshot read at `generation`; ignored if anything changed since.
    fn publish(&self, generation: u64, snap: &Arc<AccessSnapshot>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.generation == generation {
            inner.current = Some(snap.clone());
        }
    }
}

/// A stored JSON list of actions or permissions; `None` when the text is not one (a corrupt
/// row), so that the caller can fail closed.
fn json_list(text: &str) -> Option<Vec<String>> {
    serde_json::from_str(text).ok()
}

/// A custom role as stored. A role whose `data_actions` or `not_data_actions` cannot be parsed
/// grants nothing (an unreadable exclusion list must not widen it) and is logged as an error.
fn custom_role(r: RoleDefinitionRecord) -> RoleDefinition {
    let (data_actions, not_data_actions) =
        match (json_list(&r.data_actions), json_list(&r.not_data_actions)) {
            (Some(a), Some(n)) => (a, n),
            _ => {
                tracing::error!(
                    role = ?r.id,
                    name = ?r.name,
                    "custom role has unreadable dataActions or notDataActions: it grants nothing"
                );
                (Vec::new(), Vec::new())
            }
        };
    RoleDefinition {
        id: r.id,
        name: r.name,
        data_actions,
        not_data_actions,
        built_in: false,
    }
}

/// An access policy's permissions as stored; an unreadable list grants nothing (logged).
fn policy_permissions(p: &AccessPolicyRecord) -> Vec<String> {
    json_list(&p.key_permissions).unwrap_or_else(|| {
        tracing::error!(
            vault = ?p.vault,
            principal = ?p.principal_id,
            "access policy has an unreadable permission list: it grants nothing"
        );
        Vec::new()
    })
}

/// A loaded access snapshot: answers access questions from memory, never touching the store,
/// so async code can use it on its own threads (see [`VaultService::access_view_if_loaded`]).
#[derive(Clone)]
pub struct AccessView(Arc<AccessSnapshot>);

impl AccessView {
    /// Whether a token's principal exists (the bootstrap administrator always does).
    pub fn principal_exists(&self, object_id: &str) -> bool {
        object_id == BOOTSTRAP_ADMIN_OID || self.0.principals.contains_key(object_id)
    }

    /// A vault's settings.
    pub fn vault(&self, name: &str) -> VaultResult<VaultSettings> {
        self.0
            .vaults
            .get(&name.to_lowercase())
            .cloned()
            .ok_or_else(|| VaultError::from(VaultStateError::NotFound(name.to_string())))
    }

    /// A principal by object id, client id (both case-insensitive) or display name.
    pub fn find_principal(&self, id_or_name: &str) -> Option<Principal> {
        let lower = id_or_name.to_lowercase();
        self.0.principals.get(&lower).cloned().or_else(|| {
            self.0
                .principals
                .values()
                .find(|p| p.client_id == lower || p.display_name == id_or_name)
                .cloned()
        })
    }

    /// Whether `principal` holds a role that manages access
    /// ([`crate::authz::manages_access`]) on the whole of `vault`, which lets it manage that
    /// vault's role assignments, within [`crate::authz::delegate_may_grant`] and
    /// [`crate::authz::delegate_may_remove`]. The bootstrap administrator always may.
    pub fn can_manage_access(&self, principal: &str, vault: &str) -> bool {
        principal == BOOTSTRAP_ADMIN_OID
            || self
                .0
                .assignments
                .get(&(vault.to_lowercase(), principal.to_string()))
                .into_iter()
                .flatten()
                .any(|a| a.scope == "/" && crate::authz::manages_access(&a.role.id))
    }

    /// Decides whether `principal` may run `op` in `vault` (on `key`); see
    /// [`VaultService::authorize`].
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
        let snap = &self.0;
        let settings = snap
            .vaults
            .get(&vault.to_lowercase())
            .ok_or_else(|| VaultStateError::NotFound(vault.to_string()))?;
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
}

/// What a client-credentials check found. The caller answers all failures alike; the
/// difference is only for its audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCheck {
    /// The secret is right.
    Valid(Principal),
    /// A principal has this client id, but the secret is wrong.
    WrongSecret {
        /// The client id as stored.
        client_id: String,
    },
    /// No principal has this client id.
    UnknownClient,
}

impl VaultService {
    pub(crate) fn access_snapshot(&self) -> VaultResult<Arc<AccessSnapshot>> {
        if let Some(s) = self.access.loaded() {
            return Ok(s);
        }
        let generation = self.access.generation();
        let store = &self.store;
        let vault_list = store.vault_list()?;
        let principals = store
            .principal_list()?
            .iter()
            .map(|p| (p.object_id.clone(), Principal::from(p)))
            .collect();
        let mut roles = builtin_roles();
        roles.extend(store.role_definition_list()?.into_iter().map(custom_role));
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
        for v in &vault_list {
            for p in store.access_policy_list(&v.name)? {
                let permissions = policy_permissions(&p);
                policies.insert((p.vault, p.principal_id), permissions);
            }
        }
        let vaults = vault_list
            .into_iter()
            .map(|v| (v.name.clone(), VaultSettings::from(v)))
            .collect();
        let snap = Arc::new(AccessSnapshot {
            vaults,
            principals,
            roles,
            assignments,
            policies,
        });
        #[cfg(test)]
        {
            let hook = self
                .access
                .after_read
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        // Not published if a change invalidated the snapshot meanwhile: the next request
        // reloads. This request still uses what it read (it started before the change).
        self.access.publish(generation, &snap);
        tracing::debug!(generation, "access snapshot loaded from the store");
        Ok(snap)
    }

    /// The access snapshot if it is loaded, without touching the store (no blocking): the
    /// fast path for async callers, which load it with [`Self::access_view`] on a blocking
    /// thread otherwise.
    pub fn access_view_if_loaded(&self) -> Option<AccessView> {
        self.access.loaded().map(AccessView)
    }

    /// The access snapshot, loading it from the store if needed (blocking: call from a
    /// blocking thread in async code).
    pub fn access_view(&self) -> VaultResult<AccessView> {
        self.access_snapshot().map(AccessView)
    }

    /// Whether a token's principal still exists (the bootstrap administrator always does).
    pub fn principal_exists(&self, object_id: &str) -> VaultResult<bool> {
        if object_id == BOOTSTRAP_ADMIN_OID {
            return Ok(true);
        }
        Ok(self.access_view()?.principal_exists(object_id))
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
        self.access_view()?.authorize(principal, vault, op, key)
    }

    /// Whether `principal` holds Key Vault Data Access Administrator (or Administrator) on the
    /// whole vault, which lets it manage that vault's role assignments (see
    /// [`AccessView::can_manage_access`]; blocking: loads the snapshot if needed).
    pub fn can_manage_access(&self, principal: &str, vault: &str) -> VaultResult<bool> {
        Ok(self.access_view()?.can_manage_access(principal, vault))
    }

    // ------------------------------------------------------------ principals

    fn find_principal(&self, id_or_name: &str) -> VaultResult<PrincipalRecord> {
        self.store
            .principal_find(id_or_name)?
            .ok_or_else(|| VaultError::from(AccessError::PrincipalNotFound(id_or_name.to_string())))
    }

    /// Creates a principal; returns it with its client secret (shown once, stored hashed).
    pub fn create_principal(&self, name: &str) -> VaultResult<(Principal, Zeroizing<String>)> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(VaultError::invalid(format!(
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
                return Err(AccessError::PrincipalExists(name.to_string()).into())
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

    /// Checks client credentials; `None` for an unknown client or a wrong secret. See
    /// [`Self::verify_client_credentials`].
    pub fn check_client_credentials(
        &self,
        client_id: &str,
        secret: &str,
    ) -> VaultResult<Option<Principal>> {
        Ok(match self.verify_client_credentials(client_id, secret)? {
            ClientCheck::Valid(p) => Some(p),
            _ => None,
        })
    }

    /// Checks client credentials. An unknown client costs the same work as a known one with a
    /// wrong secret: its secret is verified, through the same PBKDF2 derivation and
    /// constant-time comparison, against a well-formed dummy hash
    /// ([`cmkvault_crypto::dummy_secret_hash`]), so timing does not tell which client ids exist.
    pub fn verify_client_credentials(
        &self,
        client_id: &str,
        secret: &str,
    ) -> VaultResult<ClientCheck> {
        let found = self
            .store
            .principal_find(client_id)?
            .filter(|p| p.client_id.eq_ignore_ascii_case(client_id));
        let dummy;
        let stored: &[u8] = match &found {
            Some(p) => &p.secret_hash,
            None => {
                dummy = cmkvault_crypto::dummy_secret_hash();
                &dummy
            }
        };
        let matches = cmkvault_crypto::verify_secret(secret, stored);
        Ok(match found {
            Some(p) if matches => ClientCheck::Valid(Principal::from(&p)),
            Some(p) => ClientCheck::WrongSecret {
                client_id: p.client_id,
            },
            None => ClientCheck::UnknownClient,
        })
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
            .ok_or_else(|| VaultError::from(AccessError::RoleNotFound(id_or_name.to_string())))
    }

    /// Defines a custom role from a list of dataActions.
    pub fn create_custom_role(
        &self,
        name: &str,
        data_actions: Vec<String>,
        not_data_actions: Vec<String>,
    ) -> VaultResult<RoleDefinition> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(VaultError::invalid(
                "A role needs a name of 1-128 characters.",
            ));
        }
        if data_actions.is_empty() {
            return Err(VaultError::invalid(
                "A custom role needs at least one dataAction.",
            ));
        }
        for a in data_actions.iter().chain(&not_data_actions) {
            if !a.to_ascii_lowercase().starts_with("microsoft.keyvault/") {
                return Err(VaultError::invalid(format!(
                    "'{a}' is not a Key Vault dataAction (they start with Microsoft.KeyVault/)."
                )));
            }
        }
        if self.find_role(name).is_ok() {
            return Err(AccessError::RoleExists(name.to_string()).into());
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
                return Err(AccessError::RoleExists(name.to_string()).into())
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
            return Err(VaultError::invalid(format!(
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
            Err(StoreError::Conflict(_)) => return Err(AccessError::AssignmentExists.into()),
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
            Err(StoreError::NotFound(_)) => Err(AccessError::AssignmentNotFound {
                id: id.to_string(),
                vault: None,
            }
            .into()),
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
            .ok_or_else(|| VaultStateError::NotFound(vault.to_string()))?;
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
                    VaultError::invalid(format!(
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
            Err(StoreError::NotFound(_)) => Err(AccessError::PolicyNotFound {
                principal: principal.to_string(),
                vault: vault.to_string(),
            }
            .into()),
            r => {
                r?;
                self.access.invalidate();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use cmkvault_crypto::RootKey;
    use cmkvault_store::SqliteStore;

    use crate::authz::{Operation, ROLE_CRYPTO_USER};
    use crate::{Clock, VaultService};

    fn service() -> Arc<VaultService> {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let svc =
            VaultService::open(store, RootKey::generate().unwrap(), Clock::default()).unwrap();
        svc.ensure_vault("default", 7).unwrap();
        svc.set_rbac_authorization("default", true).unwrap();
        Arc::new(svc)
    }

    /// Runs `change` while a reload started by `authorize` has read the store but not yet
    /// published its snapshot; returns what that raced `authorize` answered.
    fn race(svc: &Arc<VaultService>, oid: &str, change: impl FnOnce()) -> bool {
        svc.access.invalidate();
        let read_done = Arc::new(Barrier::new(2));
        let change_done = Arc::new(Barrier::new(2));
        let (r, c) = (read_done.clone(), change_done.clone());
        *svc.access.after_read.lock().unwrap() = Some(Box::new(move || {
            r.wait();
            c.wait();
        }));
        let (s, o) = (svc.clone(), oid.to_string());
        let reader = std::thread::spawn(move || {
            s.authorize(&o, "default", Operation::KeyUnwrap, Some("k"))
                .unwrap()
                .is_ok()
        });
        read_done.wait();
        change();
        change_done.wait();
        reader.join().unwrap()
    }

    #[test]
    fn a_reload_that_raced_a_removed_assignment_does_not_bring_it_back() {
        let svc = service();
        let (p, _) = svc.create_principal("app").unwrap();
        let a = svc
            .assign_role("default", "app", ROLE_CRYPTO_USER, None)
            .unwrap();
        let raced = race(&svc, &p.object_id, || svc.remove_assignment(&a.id).unwrap());
        assert!(raced, "the raced reload read the store before the removal");
        assert!(
            svc.authorize(&p.object_id, "default", Operation::KeyUnwrap, Some("k"))
                .unwrap()
                .is_err(),
            "the removed assignment still grants access"
        );
    }

    #[test]
    fn a_reload_that_raced_a_deleted_principal_does_not_bring_it_back() {
        let svc = service();
        let (p, _) = svc.create_principal("gone").unwrap();
        svc.assign_role("default", "gone", ROLE_CRYPTO_USER, None)
            .unwrap();
        let raced = race(&svc, &p.object_id, || {
            svc.delete_principal("gone").unwrap();
        });
        assert!(raced);
        assert!(!svc.principal_exists(&p.object_id).unwrap());
        assert!(svc
            .authorize(&p.object_id, "default", Operation::KeyUnwrap, Some("k"))
            .unwrap()
            .is_err());
        // Loaded now: the fast path answers from memory, the same.
        let view = svc
            .access_view_if_loaded()
            .expect("loaded by the checks above");
        assert!(!view.principal_exists(&p.object_id));
    }
}
