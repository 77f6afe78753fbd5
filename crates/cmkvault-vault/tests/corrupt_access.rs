//! Access data that cannot be parsed fails closed: a custom role whose stored action lists are
//! corrupt grants nothing, and so does a corrupt access-policy permission list.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use cmkvault_store::{AccessPolicyRecord, RoleDefinitionRecord, Store};
use cmkvault_vault::authz::Operation;
use cmkvault_vault::VaultService;
use common::*;

fn allowed(svc: &VaultService, oid: &str, op: Operation) -> bool {
    svc.authorize(oid, "default", op, Some("k"))
        .unwrap()
        .is_ok()
}

#[test]
fn a_custom_role_with_corrupt_not_data_actions_grants_nothing() {
    let (svc, store) = service();
    svc.set_rbac_authorization("default", true).unwrap();
    let (p, _) = svc.create_principal("app").unwrap();
    let keys = "Microsoft.KeyVault/vaults/keys";
    let role = |id: &str, name: &str, not_data_actions: &str| RoleDefinitionRecord {
        id: id.into(),
        name: name.into(),
        data_actions: format!(r#"["{keys}/*"]"#),
        not_data_actions: not_data_actions.into(),
    };
    // A well-formed role excluding delete: everything on keys but delete.
    store
        .role_definition_create(&role(
            "00000000-0000-0000-0000-0000000000a1",
            "no-delete",
            &format!(r#"["{keys}/delete"]"#),
        ))
        .unwrap();
    // The same role with its exclusion list corrupted (as a damaged row would be).
    store
        .role_definition_create(&role(
            "00000000-0000-0000-0000-0000000000a2",
            "corrupt",
            &format!(r#"["{keys}/delete""#),
        ))
        .unwrap();
    let (q, _) = svc.create_principal("other").unwrap();
    svc.assign_role("default", "app", "no-delete", None)
        .unwrap();
    svc.assign_role("default", "other", "corrupt", None)
        .unwrap();
    assert!(allowed(&svc, &p.object_id, Operation::KeyGet));
    assert!(!allowed(&svc, &p.object_id, Operation::KeyDelete));
    for op in [
        Operation::KeyDelete,
        Operation::KeyGet,
        Operation::KeyUnwrap,
    ] {
        assert!(
            !allowed(&svc, &q.object_id, op),
            "the corrupt role grants {op:?}"
        );
    }
    let corrupt = svc
        .list_roles()
        .unwrap()
        .into_iter()
        .find(|r| r.name == "corrupt")
        .unwrap();
    assert!(corrupt.data_actions.is_empty(), "{corrupt:?}");
}

#[test]
fn a_corrupt_access_policy_grants_nothing() {
    let (svc, store) = service();
    svc.set_rbac_authorization("default", false).unwrap();
    let (p, _) = svc.create_principal("app").unwrap();
    svc.set_access_policy("default", "app", vec!["get".into()])
        .unwrap();
    assert!(allowed(&svc, &p.object_id, Operation::KeyGet));
    store
        .access_policy_set(&AccessPolicyRecord {
            vault: "default".into(),
            principal_id: p.object_id.clone(),
            key_permissions: r#"["get", "unwrapKey""#.into(),
        })
        .unwrap();
    // Any change reloads the snapshot.
    svc.create_principal("someone").unwrap();
    assert!(!allowed(&svc, &p.object_id, Operation::KeyGet));
    assert!(!allowed(&svc, &p.object_id, Operation::KeyUnwrap));
}
