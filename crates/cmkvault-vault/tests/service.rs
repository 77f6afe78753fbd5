//! Domain tests over a real (in-memory) SQLite store: sealing, lifecycle rules, cache coherence.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::sync::Arc;

use cmkvault_crypto::RootKey;
use cmkvault_store::{SqliteStore, Store};
use cmkvault_vault::maintenance::Unaudited;
use cmkvault_vault::model::{
    Alg, CreateKey, CryptoInput, CryptoOp, CryptoOutput, ImportKey, KeyOp, UpdateKey,
};
use cmkvault_vault::{
    Clock, InternalError, KeyError, RequestError, VaultError, VaultService, VaultStateError,
};
use common::*;

fn wrap(svc: &VaultService, name: &str, version: Option<&str>) -> Result<Vec<u8>, VaultError> {
    let input = CryptoInput::new(Alg::A256Kw, vec![7u8; 32]);
    match svc.crypto("default", name, version, CryptoOp::WrapKey, &input)? {
        CryptoOutput::Bytes { value, .. } => Ok(value.to_vec()),
        CryptoOutput::Verified(_) => unreachable!(),
    }
}

#[test]
fn wrong_root_key_is_refused_at_open() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    service_with(store.clone(), RootKey::generate().unwrap());
    let err = VaultService::open(store, RootKey::generate().unwrap(), Clock::default())
        .err()
        .unwrap();
    assert!(matches!(
        err,
        VaultError::Internal(InternalError::WrongRootKey)
    ));
    assert!(err.to_string().contains("root key"));
}

#[test]
fn sealed_material_is_bound_to_its_version() {
    let root = [5u8; 32];
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let svc = service_with(store.clone(), RootKey::from_bytes(&root).unwrap());
    let v1 = oct(&svc, "k");
    let v2 = svc.rotate_key("default", "k").unwrap().version;
    // Swap the sealed blobs of the two versions: each must now fail to open.
    let a = store.version_get("default", "k", &v1).unwrap().unwrap();
    let b = store.version_get("default", "k", &v2).unwrap().unwrap();
    assert_ne!(a.sealed, b.sealed);
    let fresh = service_with(store.clone(), RootKey::from_bytes(&root).unwrap());
    drop(svc);
    // Store v1 again, but carrying v2's sealed bytes.
    store.key_purge("default", "k").unwrap();
    let mut forged = a.clone();
    forged.sealed = b.sealed.clone();
    store
        .key_restore(
            &cmkvault_store::KeyRecord {
                vault: "default".into(),
                name: "k".into(),
                deleted: None,
                rotation_policy: None,
            },
            &[forged],
        )
        .unwrap();
    let err = wrap(&fresh, "k", Some(&v1)).unwrap_err();
    assert!(
        matches!(err, VaultError::Internal(InternalError::Corrupt(_))),
        "{err:?}"
    );
    assert!(err.is_internal());
}

#[test]
fn rows_sealed_before_key_refs_still_open_and_back_up() {
    let root = [6u8; 32];
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let svc = service_with(store.clone(), RootKey::from_bytes(&root).unwrap());
    let k = vec![0x11u8; 32];
    let import = ImportKey {
        jwk: cmkvault_crypto::JwkPrivate {
            kty: "oct-HSM".into(),
            k: Some(cmkvault_crypto::Zeroizing::new(k.clone())),
            ..Default::default()
        },
        ..Default::default()
    };
    let v = svc.import_key("default", "k", import).unwrap().version;
    let wrapped = wrap(&svc, "k", Some(&v)).unwrap();
    let row = store.version_get("default", "k", &v).unwrap().unwrap();
    assert_eq!(row.sealed[0], b'S', "new rows carry the key-reference tag");
    drop(svc);
    // Rewrite the row as the code before key references wrote it: the bare sealed blob of
    // the tag byte 0x03 (oct) and the key bytes.
    let legacy = RootKey::from_bytes(&root)
        .unwrap()
        .seal(
            format!("cmkvault:key:v1:default:k:{v}").as_bytes(),
            &[&[0x03u8][..], &k[..]].concat(),
        )
        .unwrap();
    assert_eq!(legacy[0], 0x01);
    store.key_purge("default", "k").unwrap();
    let mut old = row.clone();
    old.sealed = legacy;
    let key_row = cmkvault_store::KeyRecord {
        vault: "default".into(),
        name: "k".into(),
        deleted: None,
        rotation_policy: None,
    };
    store.key_restore(&key_row, &[old]).unwrap();
    let fresh = service_with(store.clone(), RootKey::from_bytes(&root).unwrap());
    assert_eq!(wrap(&fresh, "k", Some(&v)).unwrap(), wrapped);
    assert_eq!(wrap(&fresh, "k", None).unwrap(), wrapped);
    // Backup of the old row and restore give a tagged row with the same key.
    let blob = fresh.backup_key("default", "k").unwrap();
    fresh.delete_key("default", "k").unwrap();
    fresh.purge_key("default", "k").unwrap();
    fresh.restore_key("default", &blob).unwrap();
    let restored = store.version_get("default", "k", &v).unwrap().unwrap();
    assert_eq!(restored.sealed[0], b'S');
    assert_eq!(wrap(&fresh, "k", Some(&v)).unwrap(), wrapped);
}

#[test]
fn soft_delete_blocks_reuse_until_purged() {
    let (svc, _) = service();
    oct(&svc, "k");
    svc.delete_key("default", "k").unwrap();
    assert!(matches!(
        svc.get_key("default", "k", None),
        Err(VaultError::Key(KeyError::NotFound { .. }))
    ));
    assert!(matches!(
        svc.create_key(
            "default",
            "K",
            CreateKey {
                kty: "oct-HSM".into(),
                ..Default::default()
            }
        ),
        Err(VaultError::Key(KeyError::DeletedButRecoverable(_)))
    ));
    svc.recover_key("default", "k").unwrap();
    wrap(&svc, "k", None).unwrap();
    svc.delete_key("default", "k").unwrap();
    svc.purge_key("default", "k").unwrap();
    oct(&svc, "k");
}

#[test]
fn purge_protection_and_retention_are_one_way() {
    let (svc, _) = service();
    svc.create_vault("pp1", 7, false).unwrap();
    svc.update_vault("pp1", Some(true), None).unwrap();
    assert!(matches!(
        svc.update_vault("pp1", Some(false), None),
        Err(VaultError::Vault(VaultStateError::PurgeProtectionPermanent))
    ));
    assert!(matches!(
        svc.update_vault("pp1", None, Some(30)),
        Err(VaultError::Vault(VaultStateError::RetentionFixed {
            days: 7
        }))
    ));
    svc.create_key(
        "pp1",
        "k",
        CreateKey {
            kty: "oct-HSM".into(),
            ..Default::default()
        },
    )
    .unwrap();
    svc.delete_key("pp1", "k").unwrap();
    assert!(matches!(
        svc.purge_key("pp1", "k"),
        Err(VaultError::Key(KeyError::PurgeProtected))
    ));
    // The service still purges after the retention period.
    svc.clock().advance(7 * 86_400);
    assert_eq!(svc.run_maintenance(&mut Unaudited).unwrap().purged, 1);
    assert!(matches!(
        svc.get_deleted_key("pp1", "k"),
        Err(VaultError::Key(KeyError::DeletedNotFound(_)))
    ));
}

#[test]
fn cache_sees_updates_and_rotation() {
    let (svc, _) = service();
    let v1 = oct(&svc, "k");
    wrap(&svc, "k", None).unwrap(); // warms the cache
    svc.update_key(
        "default",
        "k",
        None,
        UpdateKey {
            key_ops: Some(vec!["unwrapKey".into()]),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        wrap(&svc, "k", None),
        Err(VaultError::Key(KeyError::OperationNotPermitted(
            KeyOp::WrapKey
        )))
    ));
    let v2 = svc.rotate_key("default", "k").unwrap().version;
    assert_ne!(v1, v2);
    assert_eq!(svc.get_key("default", "k", None).unwrap().version, v2);
    // Rotation copies the operations of the latest version.
    assert!(wrap(&svc, "k", None).is_err());
}

#[test]
fn rotation_policy_expiry_and_auto_rotation() {
    let (svc, _) = service();
    let v1 = oct(&svc, "k");
    rotate_after_30_days(&svc, "k", Some("P90D"));
    svc.clock().advance(29 * 86_400);
    assert_eq!(svc.run_maintenance(&mut Unaudited).unwrap().rotated, 0);
    svc.clock().advance(86_400);
    assert_eq!(svc.run_maintenance(&mut Unaudited).unwrap().rotated, 1);
    let latest = svc.get_key("default", "k", None).unwrap();
    assert_ne!(latest.version, v1);
    let exp = latest.props.exp.expect("expiryTime sets exp");
    assert_eq!(exp - latest.props.created, 90 * 86_400);
}

#[test]
fn backup_restores_all_versions_into_another_vault() {
    let (svc, _) = service();
    let v1 = oct(&svc, "k");
    let v2 = svc.rotate_key("default", "k").unwrap().version;
    let blob = svc.backup_key("default", "k").unwrap();
    svc.create_vault("other", 7, false).unwrap();
    svc.restore_key("other", &blob).unwrap();
    let page = svc.list_versions("other", "k", None, None).unwrap();
    let ids: Vec<_> = page.items.iter().map(|v| v.version.clone()).collect();
    assert_eq!(ids, vec![v1, v2]);
    assert!(matches!(
        svc.restore_key("default", &blob),
        Err(VaultError::Key(KeyError::RestoreConflict(_)))
    ));
    let mut bad = blob.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        svc.restore_key("other", &bad),
        Err(VaultError::Request(RequestError::InvalidBackup))
    ));
}
