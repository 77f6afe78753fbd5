//! Helpers shared by the vault crate's integration tests.

// Each test file uses a part of these.
#![allow(dead_code)]

use std::sync::Arc;

use cmkvault_crypto::RootKey;
use cmkvault_store::SqliteStore;
use cmkvault_vault::model::CreateKey;
use cmkvault_vault::rotation::{RotationPolicyInput, Trigger};
use cmkvault_vault::{Clock, VaultService};

/// A service over `store` sealed with `root`, with a `default` vault (7-day retention).
pub fn service_with(store: Arc<SqliteStore>, root: RootKey) -> VaultService {
    let svc = VaultService::open(store, root, Clock::default()).unwrap();
    svc.ensure_vault("default", 7).unwrap();
    svc
}

/// A service over a new in-memory store with a new root key, and the store.
pub fn service() -> (VaultService, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    (
        service_with(store.clone(), RootKey::generate().unwrap()),
        store,
    )
}

/// Creates the 256-bit oct-HSM key `name` in `default`; returns its version.
pub fn oct(svc: &VaultService, name: &str) -> String {
    svc.create_key(
        "default",
        name,
        CreateKey {
            kty: "oct-HSM".into(),
            key_size: Some(256),
            ..Default::default()
        },
    )
    .unwrap()
    .version
}

/// Gives key `name` in `default` a rotation policy: rotate 30 days after creation, and with
/// `expiry` (an ISO 8601 duration) new versions expire that long after creation.
pub fn rotate_after_30_days(svc: &VaultService, name: &str, expiry: Option<&str>) {
    svc.set_rotation_policy(
        "default",
        name,
        RotationPolicyInput {
            lifetime_actions: vec![(
                Trigger {
                    time_after_create: Some("P30D".into()),
                    time_before_expiry: None,
                },
                "Rotate".into(),
            )],
            expiry_time: expiry.map(Into::into),
        },
    )
    .unwrap();
}
