//! Client-credential checks do the same work for an unknown client id as for a known one with a
//! wrong secret. One test in this binary: it counts the process's PBKDF2 derivations, which a
//! test running alongside would disturb.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::sync::Arc;

use cmkvault_crypto::{dummy_secret_hash, hash_secret, pbkdf2_derivations, RootKey};
use cmkvault_store::SqliteStore;
use cmkvault_vault::access::ClientCheck;
use cmkvault_vault::{Clock, VaultService};

#[test]
fn unknown_and_known_client_ids_cost_one_pbkdf2_derivation_each() {
    // The dummy hash an unknown client is checked against has a real hash's format, so it is
    // verified through the same code path, not refused by a format check first.
    let real = hash_secret("x").unwrap();
    let dummy = dummy_secret_hash();
    assert_eq!((dummy.len(), dummy[0]), (real.len(), real[0]));

    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let svc = VaultService::open(store, RootKey::generate().unwrap(), Clock::default()).unwrap();
    let (p, secret) = svc.create_principal("app").unwrap();
    let cost = |client_id: &str, secret: &str| {
        let before = pbkdf2_derivations();
        let r = svc.verify_client_credentials(client_id, secret).unwrap();
        (pbkdf2_derivations() - before, r)
    };
    assert_eq!(
        cost(&p.client_id, "wrong"),
        (
            1,
            ClientCheck::WrongSecret {
                client_id: p.client_id.clone()
            }
        )
    );
    assert_eq!(
        cost("11111111-2222-3333-4444-555555555555", "wrong"),
        (1, ClientCheck::UnknownClient)
    );
    // A display name or object id is not a client id: unknown, same cost.
    assert_eq!(cost("app", &secret), (1, ClientCheck::UnknownClient));
    assert_eq!(cost(&p.object_id, &secret), (1, ClientCheck::UnknownClient));
    assert_eq!(
        cost(&p.client_id, &secret),
        (1, ClientCheck::Valid(p.clone()))
    );
    assert_eq!(
        cost(&p.client_id.to_uppercase(), &secret),
        (1, ClientCheck::Valid(p))
    );
}
