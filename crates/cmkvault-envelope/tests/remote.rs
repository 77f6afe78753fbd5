//! `RemoteKey` against a real cmkvault server started in-process on 127.0.0.1 with its
//! generated CA: RSA and AES round trips, versionless ids, local RSA wraps (one vault call for
//! many wraps), the client-secret path through the 401 challenge with the least role, and
//! refusals that name the cause (missing permission, disabled key, missing key, bad secret).
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use cmkvault_crypto::Alg;
use cmkvault_envelope::{Credential, KeyEncryptionKey, RemoteKey, RemoteKeyConfig};
use common::{ok, TestServer};
use serde_json::json;
use zeroize::Zeroizing;

const SERVICE_ENCRYPTION_USER: &str = "Key Vault Crypto Service Encryption User";

/// The 40-byte payload an envelope wraps: `pad8("2.0") ‖ DEK`.
fn payload() -> Vec<u8> {
    let mut p = b"2.0\0\0\0\0\0".to_vec();
    p.extend((0u8..32).map(|i| i.wrapping_mul(7).wrapping_add(3)));
    p
}

fn admin_config(ts: &TestServer) -> RemoteKeyConfig {
    RemoteKeyConfig::new(Credential::Token(Zeroizing::new(ts.token.clone())))
        .with_ca_pem(ts.ca_pem())
}

fn secret_config(ts: &TestServer, client_id: &str, secret: &str) -> RemoteKeyConfig {
    RemoteKeyConfig::new(Credential::ClientSecret {
        tenant_id: ts.tenant(),
        client_id: client_id.to_string(),
        client_secret: Zeroizing::new(secret.to_string()),
        authority_host: ts.base.clone(),
    })
    .with_ca_pem(ts.ca_pem())
}

fn version_of(kid: &str) -> &str {
    kid.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn rsa_and_oct_keys_round_trip_and_versionless_ids_resolve() {
    let ts = TestServer::start().await;
    let rsa_kid = ts
        .create_kid("rsa-kek", json!({"kty": "RSA", "key_size": 2048}))
        .await;
    let oct_kid = ts
        .create_kid("oct-kek", json!({"kty": "oct-HSM", "key_size": 256}))
        .await;

    for (name, kid, alg) in [
        ("rsa-kek", &rsa_kid, Alg::RsaOaep256),
        ("oct-kek", &oct_kid, Alg::A256Kw),
    ] {
        // Versionless id: resolved once to the versioned kid.
        let key = RemoteKey::connect(&format!("{}/keys/{name}", ts.base), admin_config(&ts))
            .await
            .unwrap();
        assert_eq!(key.kid(), kid.as_str(), "{name}");
        assert_eq!(key.wrap_alg(), alg, "{name}");
        let wrapped = key.wrap(&payload()).await.unwrap();
        assert_ne!(wrapped, payload());
        assert_eq!(
            key.unwrap(&wrapped, alg).await.unwrap().as_slice(),
            payload()
        );
        // The versioned id works the same and reads what the first one wrapped.
        let same = RemoteKey::connect(kid, admin_config(&ts)).await.unwrap();
        assert_eq!(same.kid(), kid.as_str());
        assert_eq!(
            same.unwrap(&wrapped, alg).await.unwrap().as_slice(),
            payload()
        );
    }

    // Rotation: a new version becomes current; data wrapped under the old one still unwraps
    // through the version its kid names.
    let key = RemoteKey::connect(&format!("{}/keys/rsa-kek", ts.base), admin_config(&ts))
        .await
        .unwrap();
    let old = key.wrap(&payload()).await.unwrap();
    let new_kid = ts
        .create_kid("rsa-kek", json!({"kty": "RSA", "key_size": 2048}))
        .await;
    assert_ne!(new_kid, rsa_kid);
    let current = RemoteKey::connect(&format!("{}/keys/rsa-kek", ts.base), admin_config(&ts))
        .await
        .unwrap();
    assert_eq!(current.kid(), new_kid);
    let by_kid = current.for_kid(&rsa_kid).await.unwrap();
    assert_eq!(by_kid.kid(), rsa_kid);
    assert_eq!(
        by_kid
            .unwrap(&old, Alg::RsaOaep256)
            .await
            .unwrap()
            .as_slice(),
        payload()
    );
    // The current version cannot (wrong key), and says so naming the key.
    let e = current
        .unwrap(&old, Alg::RsaOaep256)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&new_kid), "{e}");
    assert!(e.contains("wrong key"), "{e}");
    // An envelope naming another vault or key is refused before any request.
    for foreign in [
        format!(
            "https://elsewhere.example/keys/rsa-kek/{}",
            version_of(&rsa_kid)
        ),
        format!("{}/keys/oct-kek/{}", ts.base, version_of(&oct_kid)),
    ] {
        let e = current.for_kid(&foreign).await.unwrap_err().to_string();
        assert!(e.contains("another vault or key"), "{e}");
    }
    ts.stop().await;
}

#[tokio::test]
async fn rsa_wraps_locally_with_one_get() {
    let ts = TestServer::start().await;
    ts.create_kid("bulk", json!({"kty": "RSA", "key_size": 2048}))
        .await;
    let before = ts.audit_ops().len();
    let key = RemoteKey::connect(&format!("{}/keys/bulk", ts.base), admin_config(&ts))
        .await
        .unwrap();
    let mut wrapped = Vec::new();
    for _ in 0..50 {
        wrapped.push(key.wrap(&payload()).await.unwrap());
    }
    let ops = ts.audit_ops();
    assert_eq!(
        ops[before..],
        ["KeyGet".to_string()],
        "50 RSA wraps cost one vault call"
    );
    // Fresh OAEP randomness per wrap.
    assert_ne!(wrapped[0], wrapped[1]);
    // Unwrap goes to the vault, once per call.
    assert_eq!(
        key.unwrap(&wrapped[7], Alg::RsaOaep256)
            .await
            .unwrap()
            .as_slice(),
        payload()
    );
    let ops = ts.audit_ops();
    assert_eq!(ops.len(), before + 2, "{ops:?}");
    ts.stop().await;
}

#[tokio::test]
async fn client_secret_with_the_least_role_then_revoked() {
    let ts = TestServer::start().await;
    let kid = ts
        .create_kid("svc-kek", json!({"kty": "RSA", "key_size": 2048}))
        .await;
    let (oid, client_id, secret) = ts.create_identity("svc-ai").await;
    let assignment = ts.assign(&oid, SERVICE_ENCRYPTION_USER, "svc-kek").await;

    let key = RemoteKey::connect(
        &format!("{}/keys/svc-kek", ts.base),
        secret_config(&ts, &client_id, &secret),
    )
    .await
    .unwrap();
    assert_eq!(key.kid(), kid);
    let wrapped = key.wrap(&payload()).await.unwrap();
    assert_eq!(
        key.unwrap(&wrapped, Alg::RsaOaep256)
            .await
            .unwrap()
            .as_slice(),
        payload()
    );
    // Challenge (unauthenticated GET), token, GET, unwrap; the token is reused.
    let ops = ts.audit_ops();
    assert_eq!(
        ops.iter().filter(|o| *o == "TokenIssue").count(),
        1,
        "{ops:?}"
    );

    ts.unassign(&assignment).await;
    let e = key
        .unwrap(&wrapped, Alg::RsaOaep256)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&kid), "{e}");
    assert!(e.contains("keys/unwrapKey"), "{e}");
    assert!(e.contains(SERVICE_ENCRYPTION_USER), "{e}");
    assert!(!e.contains(&secret), "{e}");

    // A wrong secret: authentication fails, naming the authority, never the secret.
    let e = RemoteKey::connect(
        &format!("{}/keys/svc-kek", ts.base),
        secret_config(&ts, &client_id, "not-the-secret"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("authentication failed"), "{e}");
    assert!(e.contains("oauth2/v2.0/token"), "{e}");
    assert!(!e.contains("not-the-secret"), "{e}");
    ts.stop().await;
}

#[tokio::test]
async fn disabled_missing_and_unauthenticated_keys_are_named() {
    let ts = TestServer::start().await;
    let kid = ts
        .create_kid("soon-off", json!({"kty": "oct-HSM", "key_size": 256}))
        .await;
    let key = RemoteKey::connect(&kid, admin_config(&ts)).await.unwrap();
    let wrapped = key.wrap(&payload()).await.unwrap();
    ok(ts
        .patch(
            &format!("/keys/soon-off/{}", version_of(&kid)),
            json!({"attributes": {"enabled": false}}),
        )
        .await);
    let e = key
        .unwrap(&wrapped, Alg::A256Kw)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&kid), "{e}");
    assert!(e.contains("disabled"), "{e}");

    let e = RemoteKey::connect(&format!("{}/keys/no-such-key", ts.base), admin_config(&ts))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-key"), "{e}");
    assert!(e.contains("not found"), "{e}");

    let bad = RemoteKeyConfig::new(Credential::Token(Zeroizing::new("garbage".into())))
        .with_ca_pem(ts.ca_pem());
    let e = RemoteKey::connect(&kid, bad).await.unwrap_err().to_string();
    assert!(e.contains("authentication failed"), "{e}");

    // Without the CA the server's certificate is not trusted: a TLS error, naming the key.
    let untrusted = RemoteKeyConfig::new(Credential::Token(Zeroizing::new(ts.token.clone())));
    let e = RemoteKey::connect(&kid, untrusted)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&kid) && e.contains("cannot connect"), "{e}");
    assert!(e.contains("CMKVAULT_CA"), "{e}");
    ts.stop().await;
}
