//! Authorisation: operations, Azure RBAC roles and legacy access policies.
//!
//! Every request maps to one [`Operation`], which names its audit `operationName`, its RBAC
//! dataAction and its access-policy permission. [`decide_rbac`] and [`decide_policy`] answer whether a principal may run it
//! on a vault (and key), deny by default: RBAC for vaults with `enableRbacAuthorization=true`,
//! access policies otherwise.

use serde::{Deserialize, Serialize};

/// One operation of the keys API, as seen by authorisation and audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Create a key or version.
    KeyCreate,
    /// Import a key or version.
    KeyImport,
    /// Get a key version.
    KeyGet,
    /// List keys.
    KeyList,
    /// List versions of a key.
    KeyListVersions,
    /// Update a version's attributes.
    KeyUpdate,
    /// Soft-delete a key.
    KeyDelete,
    /// Get a deleted key.
    KeyGetDeleted,
    /// List deleted keys.
    KeyListDeleted,
    /// Recover a deleted key.
    KeyRecover,
    /// Purge a deleted key.
    KeyPurge,
    /// Back up a key.
    KeyBackup,
    /// Restore a backup.
    KeyRestore,
    /// Rotate a key.
    KeyRotate,
    /// Read a rotation policy.
    KeyRotationPolicyGet,
    /// Write a rotation policy.
    KeyRotationPolicySet,
    /// Encrypt.
    KeyEncrypt,
    /// Decrypt.
    KeyDecrypt,
    /// Wrap a key.
    KeyWrap,
    /// Unwrap a key.
    KeyUnwrap,
    /// Sign a digest.
    KeySign,
    /// Verify a signature.
    KeyVerify,
    /// Secure key release.
    KeyRelease,
    /// Random bytes.
    GetRandomBytes,
}

impl Operation {
    /// Every operation (for the role × operation test matrix).
    pub const ALL: [Operation; 24] = [
        Operation::KeyCreate,
        Operation::KeyImport,
        Operation::KeyGet,
        Operation::KeyList,
        Operation::KeyListVersions,
        Operation::KeyUpdate,
        Operation::KeyDelete,
        Operation::KeyGetDeleted,
        Operation::KeyListDeleted,
        Operation::KeyRecover,
        Operation::KeyPurge,
        Operation::KeyBackup,
        Operation::KeyRestore,
        Operation::KeyRotate,
        Operation::KeyRotationPolicyGet,
        Operation::KeyRotationPolicySet,
        Operation::KeyEncrypt,
        Operation::KeyDecrypt,
        Operation::KeyWrap,
        Operation::KeyUnwrap,
        Operation::KeySign,
        Operation::KeyVerify,
        Operation::KeyRelease,
        Operation::GetRandomBytes,
    ];

    /// The AuditEvent `operationName`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::KeyCreate => "KeyCreate",
            Operation::KeyImport => "KeyImport",
            Operation::KeyGet => "KeyGet",
            Operation::KeyList => "KeyList",
            Operation::KeyListVersions => "KeyListVersions",
            Operation::KeyUpdate => "KeyUpdate",
            Operation::KeyDelete => "KeyDelete",
            Operation::KeyGetDeleted => "KeyGetDeleted",
            Operation::KeyListDeleted => "KeyListDeleted",
            Operation::KeyRecover => "KeyRecover",
            Operation::KeyPurge => "KeyPurge",
            Operation::KeyBackup => "KeyBackup",
            Operation::KeyRestore => "KeyRestore",
            Operation::KeyRotate => "KeyRotate",
            Operation::KeyRotationPolicyGet => "KeyRotationPolicyGet",
            Operation::KeyRotationPolicySet => "KeyRotationPolicySet",
            Operation::KeyEncrypt => "KeyEncrypt",
            Operation::KeyDecrypt => "KeyDecrypt",
            Operation::KeyWrap => "KeyWrap",
            Operation::KeyUnwrap => "KeyUnwrap",
            Operation::KeySign => "KeySign",
            Operation::KeyVerify => "KeyVerify",
            Operation::KeyRelease => "KeyRelease",
            Operation::GetRandomBytes => "GetRandomBytes",
        }
    }

    /// Whether the operation changes stored state (keys, versions, attributes, policies), as
    /// opposed to reading or using a key.
    pub fn changes_state(self) -> bool {
        matches!(
            self,
            Operation::KeyCreate
                | Operation::KeyImport
                | Operation::KeyUpdate
                | Operation::KeyDelete
                | Operation::KeyRecover
                | Operation::KeyPurge
                | Operation::KeyRestore
                | Operation::KeyRotate
                | Operation::KeyRotationPolicySet
        )
    }

    /// The RBAC dataAction this operation needs.
    pub fn data_action(self) -> &'static str {
        match self {
            Operation::KeyCreate => "Microsoft.KeyVault/vaults/keys/create/action",
            Operation::KeyImport => "Microsoft.KeyVault/vaults/keys/import/action",
            Operation::KeyGet
            | Operation::KeyList
            | Operation::KeyListVersions
            | Operation::KeyGetDeleted
            | Operation::KeyListDeleted => "Microsoft.KeyVault/vaults/keys/read",
            Operation::KeyUpdate => "Microsoft.KeyVault/vaults/keys/update/action",
            Operation::KeyDelete => "Microsoft.KeyVault/vaults/keys/delete",
            Operation::KeyRecover => "Microsoft.KeyVault/vaults/keys/recover/action",
            Operation::KeyPurge => "Microsoft.KeyVault/vaults/keys/purge/action",
            Operation::KeyBackup => "Microsoft.KeyVault/vaults/keys/backup/action",
            Operation::KeyRestore => "Microsoft.KeyVault/vaults/keys/restore/action",
            Operation::KeyRotate => "Microsoft.KeyVault/vaults/keys/rotate/action",
            Operation::KeyRotationPolicyGet => "Microsoft.KeyVault/vaults/keyrotationpolicies/read",
            Operation::KeyRotationPolicySet => {
                "Microsoft.KeyVault/vaults/keyrotationpolicies/write"
            }
            Operation::KeyEncrypt => "Microsoft.KeyVault/vaults/keys/encrypt/action",
            Operation::KeyDecrypt => "Microsoft.KeyVault/vaults/keys/decrypt/action",
            Operation::KeyWrap => "Microsoft.KeyVault/vaults/keys/wrap/action",
            Operation::KeyUnwrap => "Microsoft.KeyVault/vaults/keys/unwrap/action",
            Operation::KeySign => "Microsoft.KeyVault/vaults/keys/sign/action",
            Operation::KeyVerify => "Microsoft.KeyVault/vaults/keys/verify/action",
            Operation::KeyRelease => "Microsoft.KeyVault/vaults/keys/release/action",
            Operation::GetRandomBytes => "Microsoft.KeyVault/vaults/rng/action",
        }
    }

    /// The legacy access-policy key permission this operation needs.
    pub fn permission(self) -> &'static str {
        match self {
            Operation::KeyCreate => "create",
            Operation::KeyImport => "import",
            Operation::KeyGet | Operation::KeyGetDeleted => "get",
            Operation::KeyList | Operation::KeyListVersions | Operation::KeyListDeleted => "list",
            Operation::KeyUpdate => "update",
            Operation::KeyDelete => "delete",
            Operation::KeyRecover => "recover",
            Operation::KeyPurge => "purge",
            Operation::KeyBackup => "backup",
            Operation::KeyRestore => "restore",
            Operation::KeyRotate => "rotate",
            Operation::KeyRotationPolicyGet => "getrotationpolicy",
            Operation::KeyRotationPolicySet => "setrotationpolicy",
            Operation::KeyEncrypt => "encrypt",
            Operation::KeyDecrypt => "decrypt",
            Operation::KeyWrap => "wrapKey",
            Operation::KeyUnwrap => "unwrapKey",
            Operation::KeySign => "sign",
            Operation::KeyVerify => "verify",
            Operation::KeyRelease => "release",
            Operation::GetRandomBytes => "get",
        }
    }
}

/// Every legacy access-policy key permission (plus `all`).
pub const KEY_PERMISSIONS: &[&str] = &[
    "get",
    "list",
    "update",
    "create",
    "import",
    "delete",
    "recover",
    "backup",
    "restore",
    "decrypt",
    "encrypt",
    "unwrapKey",
    "wrapKey",
    "verify",
    "sign",
    "purge",
    "release",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
    "all",
];

/// A role definition: built-in or custom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDefinition {
    /// Role id (GUID).
    pub id: String,
    /// Role name.
    pub name: String,
    /// Allowed dataActions (`*` wildcards).
    #[serde(rename = "dataActions")]
    pub data_actions: Vec<String>,
    /// Excluded dataActions.
    #[serde(rename = "notDataActions", default)]
    pub not_data_actions: Vec<String>,
    /// Whether this is a built-in role.
    #[serde(rename = "builtIn", default)]
    pub built_in: bool,
}

impl RoleDefinition {
    /// Whether the role grants `action`.
    pub fn grants(&self, action: &str) -> bool {
        self.data_actions.iter().any(|p| wildcard_match(p, action))
            && !self
                .not_data_actions
                .iter()
                .any(|p| wildcard_match(p, action))
    }
}

/// Role id of Key Vault Administrator.
pub const ROLE_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
/// Role id of Key Vault Crypto Officer.
pub const ROLE_CRYPTO_OFFICER: &str = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603";
/// Role id of Key Vault Crypto User.
pub const ROLE_CRYPTO_USER: &str = "12338af0-0e69-4776-bea7-57ae8d297424";
/// Role id of Key Vault Crypto Service Encryption User: exactly get, wrapKey, unwrapKey.
pub const ROLE_SERVICE_ENCRYPTION_USER: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";
/// Role id of Key Vault Crypto Service Release User.
pub const ROLE_SERVICE_RELEASE_USER: &str = "08bbd89e-9f13-488c-ac41-acfcb10c90ab";
/// Role id of Key Vault Reader.
pub const ROLE_READER: &str = "21090545-7ca7-4776-b22c-e363652d74d2";
/// Role id of Key Vault Data Access Administrator.
pub const ROLE_DATA_ACCESS_ADMINISTRATOR: &str = "8b54135c-b56d-4d72-a534-26097cfdc8d8";

/// Whether a role manages access (Key Vault Administrator or Data Access Administrator):
/// holding it on a whole vault lets a principal manage that vault's role assignments, so only
/// the administrator may grant or remove it.
pub fn manages_access(role_id: &str) -> bool {
    role_id.eq_ignore_ascii_case(ROLE_ADMINISTRATOR)
        || role_id.eq_ignore_ascii_case(ROLE_DATA_ACCESS_ADMINISTRATOR)
}

/// Whether a delegated access manager (a vault's Data Access Administrator or Administrator,
/// not the bootstrap administrator) may grant `role`. Like Azure's default condition on the
/// role: a delegated access manager may grant built-in data roles only, never access
/// management or custom roles.
pub fn delegate_may_grant(role: &RoleDefinition) -> bool {
    role.built_in && !manages_access(&role.id)
}

/// Whether a delegated access manager may remove an assignment of the role `role_id`: any but
/// the roles that manage access.
pub fn delegate_may_remove(role_id: &str) -> bool {
    !manages_access(role_id)
}

fn builtin(id: &str, name: &str, actions: &[&str]) -> RoleDefinition {
    RoleDefinition {
        id: id.to_string(),
        name: name.to_string(),
        data_actions: actions.iter().map(|a| a.to_string()).collect(),
        not_data_actions: Vec::new(),
        built_in: true,
    }
}

/// The built-in Key Vault data-plane roles, with Azure's names, ids and dataActions.
pub fn builtin_roles() -> Vec<RoleDefinition> {
    const K: &str = "Microsoft.KeyVault/vaults/keys";
    let keys = |ops: &[&str]| -> Vec<String> { ops.iter().map(|o| format!("{K}/{o}")).collect() };
    let crypto_user = keys(&[
        "read",
        "update/action",
        "backup/action",
        "encrypt/action",
        "decrypt/action",
        "wrap/action",
        "unwrap/action",
        "sign/action",
        "verify/action",
    ]);
    let service_user = keys(&["read", "wrap/action", "unwrap/action"]);
    let as_refs = |v: &Vec<String>| v.clone();
    vec![
        builtin(
            ROLE_ADMINISTRATOR,
            "Key Vault Administrator",
            &["Microsoft.KeyVault/vaults/*"],
        ),
        builtin(
            ROLE_CRYPTO_OFFICER,
            "Key Vault Crypto Officer",
            &[
                "Microsoft.KeyVault/vaults/keys/*",
                "Microsoft.KeyVault/vaults/keyrotationpolicies/*",
            ],
        ),
        RoleDefinition {
            data_actions: as_refs(&crypto_user),
            ..builtin(ROLE_CRYPTO_USER, "Key Vault Crypto User", &[])
        },
        RoleDefinition {
            data_actions: as_refs(&service_user),
            ..builtin(
                ROLE_SERVICE_ENCRYPTION_USER,
                "Key Vault Crypto Service Encryption User",
                &[],
            )
        },
        builtin(
            ROLE_SERVICE_RELEASE_USER,
            "Key Vault Crypto Service Release User",
            &["Microsoft.KeyVault/vaults/keys/release/action"],
        ),
        builtin(
            ROLE_READER,
            "Key Vault Reader",
            &[
                "Microsoft.KeyVault/vaults/*/read",
                "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            ],
        ),
        // Manages role assignments (a control-plane right here); no data access of its own.
        builtin(
            ROLE_DATA_ACCESS_ADMINISTRATOR,
            "Key Vault Data Access Administrator",
            &[],
        ),
    ]
}

/// Case-insensitive match of an action against a pattern where `*` stands for any text.
pub fn wildcard_match(pattern: &str, action: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let a = action.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The scope string of an assignment: `/` for the vault, `/keys/<name>` for one key.
pub fn scope_for(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("/keys/{}", k.to_lowercase()),
        None => "/".to_string(),
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No role assignment grants the dataAction (RBAC vault).
    Rbac,
    /// The access policy lacks the permission (access-policy vault).
    Policy,
}

/// A role assignment resolved to its role.
#[derive(Clone, Debug)]
pub struct EffectiveAssignment {
    /// `/` or `/keys/<name>`.
    pub scope: String,
    /// The role.
    pub role: RoleDefinition,
}

/// Decides an RBAC request: some assignment of the principal at the vault scope, or at the
/// scope of the key the operation addresses, must grant the operation's dataAction.
pub fn decide_rbac(
    assignments: &[EffectiveAssignment],
    op: Operation,
    key: Option<&str>,
) -> Result<(), Denial> {
    let key_scope = key.map(|k| scope_for(Some(k)));
    let action = op.data_action();
    let allowed = assignments
        .iter()
        .any(|a| (a.scope == "/" || Some(&a.scope) == key_scope.as_ref()) && a.role.grants(action));
    if allowed {
        Ok(())
    } else {
        Err(Denial::Rbac)
    }
}

/// Decides an access-policy request from the principal's key permissions on the vault.
pub fn decide_policy(permissions: &[String], op: Operation) -> Result<(), Denial> {
    let need = op.permission();
    if permissions
        .iter()
        .any(|p| p.eq_ignore_ascii_case(need) || p.eq_ignore_ascii_case("all"))
    {
        Ok(())
    } else {
        Err(Denial::Policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegated_access_managers_grant_and_remove_built_in_data_roles_only() {
        for r in builtin_roles() {
            let access = r.id == ROLE_ADMINISTRATOR || r.id == ROLE_DATA_ACCESS_ADMINISTRATOR;
            assert_eq!(manages_access(&r.id), access, "{}", r.name);
            assert_eq!(delegate_may_grant(&r), !access, "{}", r.name);
            assert_eq!(delegate_may_remove(&r.id), !access, "{}", r.name);
        }
        // Role ids compare case-insensitively, as the management API accepts them.
        assert!(manages_access(
            &ROLE_DATA_ACCESS_ADMINISTRATOR.to_uppercase()
        ));
        assert!(!delegate_may_remove(&ROLE_ADMINISTRATOR.to_uppercase()));
        // A custom role is never delegated, even one granting only reads.
        let custom = RoleDefinition {
            id: "0f2a6c1e-0000-4000-8000-000000000001".into(),
            name: "Reader Too".into(),
            data_actions: vec!["Microsoft.KeyVault/vaults/keys/read".into()],
            not_data_actions: Vec::new(),
            built_in: false,
        };
        assert!(!delegate_may_grant(&custom));
        assert!(delegate_may_remove(&custom.id));
        assert!(delegate_may_grant(&role(ROLE_CRYPTO_USER)));
    }

    fn role(id: &str) -> RoleDefinition {
        builtin_roles().into_iter().find(|r| r.id == id).unwrap()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(
            "Microsoft.KeyVault/vaults/*",
            "microsoft.keyvault/vaults/keys/read"
        ));
        assert!(wildcard_match(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!wildcard_match(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action"
        ));
        assert!(!wildcard_match(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/readx"
        ));
    }

    #[test]
    fn service_encryption_user_is_exactly_get_wrap_unwrap() {
        let r = role(ROLE_SERVICE_ENCRYPTION_USER);
        let allowed: Vec<Operation> = Operation::ALL
            .into_iter()
            .filter(|op| r.grants(op.data_action()))
            .collect();
        assert_eq!(
            allowed,
            vec![
                Operation::KeyGet,
                Operation::KeyList,
                Operation::KeyListVersions,
                Operation::KeyGetDeleted,
                Operation::KeyListDeleted,
                Operation::KeyWrap,
                Operation::KeyUnwrap
            ]
        );
    }

    #[test]
    fn key_scope_does_not_reach_other_keys_or_vault_listing() {
        let a = vec![EffectiveAssignment {
            scope: scope_for(Some("KEK1")),
            role: role(ROLE_CRYPTO_USER),
        }];
        assert!(decide_rbac(&a, Operation::KeyUnwrap, Some("kek1")).is_ok());
        assert_eq!(
            decide_rbac(&a, Operation::KeyUnwrap, Some("kek2")),
            Err(Denial::Rbac)
        );
        assert_eq!(decide_rbac(&a, Operation::KeyList, None), Err(Denial::Rbac));
        assert_eq!(
            decide_rbac(&a, Operation::KeyDelete, Some("kek1")),
            Err(Denial::Rbac)
        );
    }

    #[test]
    fn policies() {
        let p = vec!["get".to_string(), "UNWRAPKEY".to_string()];
        assert!(decide_policy(&p, Operation::KeyUnwrap).is_ok());
        assert_eq!(decide_policy(&p, Operation::KeyWrap), Err(Denial::Policy));
        assert!(decide_policy(&["all".to_string()], Operation::KeyPurge).is_ok());
    }
}
