//! Soft delete, recover, purge, purge protection, auto-purge, named vaults, restart
//! persistence and root-key checks.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cmkvault_server::datadir;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const DAY: i64 = 86_400;

/// Every route that addresses a live key answers 404 KeyNotFound for `name`.
async fn assert_live_routes_404(ts: &TestServer, base: &str, name: &str, version: &str) {
    let body = json!({"alg": "ES256", "value": b64(&digest(256, b"x"))});
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/keys/{name}"), None),
        (Method::GET, format!("/keys/{name}/"), None),
        (Method::GET, format!("/keys/{name}/{version}"), None),
        (Method::GET, format!("/keys/{name}/versions"), None),
        (
            Method::PATCH,
            format!("/keys/{name}/"),
            Some(json!({"tags": {}})),
        ),
        (
            Method::PATCH,
            format!("/keys/{name}/{version}"),
            Some(json!({"tags": {}})),
        ),
        (Method::DELETE, format!("/keys/{name}"), None),
        (Method::POST, format!("/keys/{name}/rotate"), None),
        (Method::POST, format!("/keys/{name}/backup"), None),
        (Method::GET, format!("/keys/{name}/rotationpolicy"), None),
        (
            Method::PUT,
            format!("/keys/{name}/rotationpolicy"),
            Some(json!({"lifetimeActions": []})),
        ),
        (
            Method::POST,
            format!("/keys/{name}/{version}/sign"),
            Some(body.clone()),
        ),
        (
            Method::POST,
            format!("/keys/{name}//sign"),
            Some(body.clone()),
        ),
        (Method::POST, format!("/keys/{name}/sign"), Some(body)),
    ];
    for (method, path, body) in cases {
        let r = ts.req_at(base, method.clone(), &path, body).await;
        let m = expect_error(&r, 404, "KeyNotFound");
        assert!(!m.is_empty(), "{method} {path}");
    }
}

#[tokio::test]
async fn delete_recover_and_purge() {
    let ts = TestServer::start().await;
    let base = ts.base.clone();
    let v1 = version_of(
        &ts.create_key("del", json!({"kty": "EC", "tags": {"k": "v"}}))
            .await,
    );
    let v2 = version_of(&ts.create_key("del", json!({"kty": "EC"})).await);
    ts.create_key("keep", json!({"kty": "EC"})).await;
    let backup = ok(ts.post_empty("/keys/del/backup").await)["value"].clone();
    let digest = b64(&digest(256, b"before delete"));
    let sig = ok(ts
        .op("del", &v1, "sign", json!({"alg": "ES256", "value": digest}))
        .await);

    // Delete: a DeletedKeyBundle of the latest version with recovery data.
    let d = ok(ts.delete("/keys/del").await);
    assert_eq!(version_of(&d), v2);
    assert_eq!(d["recoveryId"], format!("{base}/deletedkeys/del"));
    let deleted = d["deletedDate"].as_i64().expect("deletedDate");
    assert!((deleted - ts.now()).abs() < 600);
    assert_eq!(d["scheduledPurgeDate"], deleted + 90 * DAY);
    assert_eq!(d["attributes"]["recoveryLevel"], "Recoverable+Purgeable");

    assert_live_routes_404(&ts, &base, "del", &v1).await;

    // The live list no longer has it; the deleted list and get-deleted do.
    let live: Vec<Value> = ts.list_all("/keys").await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["kid"], format!("{base}/keys/keep"));
    let dl = ts.list_all("/deletedkeys?maxresults=1").await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["kid"], format!("{base}/keys/del"));
    assert_eq!(dl[0]["recoveryId"], format!("{base}/deletedkeys/del"));
    assert_eq!(dl[0]["deletedDate"], deleted);
    assert_eq!(dl[0]["scheduledPurgeDate"], deleted + 90 * DAY);
    let g = ok(ts.get("/deletedkeys/del").await);
    assert_eq!(version_of(&g), v2);
    assert_eq!(g["recoveryId"], d["recoveryId"]);
    assert_eq!(g["deletedDate"], deleted);
    assert_eq!(g["scheduledPurgeDate"], deleted + 90 * DAY);
    assert!(g["key"].get("d").is_none());

    // The name cannot be reused: create, import and restore get 409 ObjectIsDeletedButRecoverable.
    let r = ts.post("/keys/del/create", json!({"kty": "EC"})).await;
    expect_inner(&r, 409, "Conflict", "ObjectIsDeletedButRecoverable");
    let r = ts
        .put(
            "/keys/del",
            json!({"key": {"kty": "oct", "k": b64(&random(32))}}),
        )
        .await;
    expect_inner(&r, 409, "Conflict", "ObjectIsDeletedButRecoverable");
    let r = ts.post("/keys/restore", json!({"value": backup})).await;
    expect_inner(&r, 409, "Conflict", "ObjectIsDeletedButRecoverable");

    // Recover: the latest version comes back with every version, usable at once.
    let rec = ok(ts.post_empty("/deletedkeys/del/recover").await);
    assert_eq!(version_of(&rec), v2);
    assert!(
        rec.get("recoveryId").is_none(),
        "a recovered key is live: {rec}"
    );
    let versions: BTreeSet<String> = ts
        .list_all("/keys/del/versions")
        .await
        .iter()
        .map(version_of)
        .collect();
    assert_eq!(versions, BTreeSet::from([v1.clone(), v2.clone()]));
    assert_eq!(
        ok(ts.get(&format!("/keys/del/{v1}")).await)["tags"],
        json!({"k": "v"})
    );
    let r = ok(ts
        .op(
            "del",
            &v1,
            "verify",
            json!({"alg": "ES256", "digest": digest, "value": sig["value"]}),
        )
        .await);
    assert_eq!(r["value"], true);
    expect_error(&ts.get("/deletedkeys/del").await, 404, "KeyNotFound");
    expect_error(
        &ts.post_empty("/deletedkeys/del/recover").await,
        404,
        "KeyNotFound",
    );
    expect_error(&ts.delete("/deletedkeys/del").await, 404, "KeyNotFound");

    // Delete again and purge: 204 with an empty body, then it is gone everywhere.
    ok(ts.delete("/keys/del").await);
    let (status, _, body) = ts.delete("/deletedkeys/del").await;
    assert_eq!(status, 204);
    assert_eq!(body, Value::Null, "purge has an empty body");
    expect_error(&ts.get("/deletedkeys/del").await, 404, "KeyNotFound");
    expect_error(&ts.delete("/deletedkeys/del").await, 404, "KeyNotFound");
    expect_error(
        &ts.post_empty("/deletedkeys/del/recover").await,
        404,
        "KeyNotFound",
    );
    expect_error(&ts.get("/keys/del").await, 404, "KeyNotFound");
    assert!(ts.list_all("/deletedkeys").await.is_empty());

    // The name is free again: a new key with one version.
    let b = ts.create_key("del", json!({"kty": "EC"})).await;
    assert_ne!(version_of(&b), v1);
    assert_ne!(version_of(&b), v2);
    assert_eq!(ts.list_all("/keys/del/versions").await.len(), 1);
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn purge_protection_vault() {
    let ts = TestServer::start().await;
    let r = ts
        .req(
            Method::PUT,
            "/management/vaults/pp1",
            Some(json!({"properties": {"enablePurgeProtection": true, "softDeleteRetentionInDays": 7}})),
        )
        .await;
    let v = ok(r);
    assert_eq!(v["properties"]["enablePurgeProtection"], true);
    assert_eq!(v["properties"]["softDeleteRetentionInDays"], 7);
    let pp = ts.vault_base("pp1");

    let b = ok(ts
        .req_at(
            &pp,
            Method::POST,
            "/keys/guarded/create",
            Some(json!({"kty": "EC"})),
        )
        .await);
    let ver = version_of(&b);
    assert_eq!(b["key"]["kid"], format!("{pp}/keys/guarded/{ver}"));
    assert_eq!(b["attributes"]["recoveryLevel"], "CustomizedRecoverable");
    assert_eq!(b["attributes"]["recoverableDays"], 7);
    // Vaults are isolated: the default vault does not have it.
    expect_error(&ts.get("/keys/guarded").await, 404, "KeyNotFound");
    let listed = ts.list_all_at(&pp, "/keys").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kid"], format!("{pp}/keys/guarded"));

    let d = ok(ts.req_at(&pp, Method::DELETE, "/keys/guarded", None).await);
    let deleted = d["deletedDate"].as_i64().unwrap();
    assert_eq!(d["scheduledPurgeDate"], deleted + 7 * DAY);
    assert_eq!(d["recoveryId"], format!("{pp}/deletedkeys/guarded"));
    assert_live_routes_404(&ts, &pp, "guarded", &ver).await;

    // Purge is forbidden while purge protection is on; recover still works.
    let r = ts
        .req_at(&pp, Method::DELETE, "/deletedkeys/guarded", None)
        .await;
    let m = expect_error(&r, 403, "Forbidden");
    assert!(m.contains("purge protection"), "{m}");
    let r = ts
        .req_at(&pp, Method::DELETE, "/deletedkeys/other", None)
        .await;
    expect_error(&r, 404, "KeyNotFound");
    ok(ts
        .req_at(&pp, Method::POST, "/deletedkeys/guarded/recover", None)
        .await);
    ok(ts.req_at(&pp, Method::GET, "/keys/guarded", None).await);

    // The service still purges it once retention has passed.
    ok(ts.req_at(&pp, Method::DELETE, "/keys/guarded", None).await);
    ts.advance(7 * DAY - 300);
    assert_eq!(ts.maintenance().await.0, 0, "not before scheduledPurgeDate");
    ok(ts
        .req_at(&pp, Method::GET, "/deletedkeys/guarded", None)
        .await);
    ts.advance(600);
    assert_eq!(ts.maintenance().await.0, 1);
    let r = ts
        .req_at(&pp, Method::GET, "/deletedkeys/guarded", None)
        .await;
    expect_error(&r, 404, "KeyNotFound");
    ok(ts
        .req_at(
            &pp,
            Method::POST,
            "/keys/guarded/create",
            Some(json!({"kty": "EC"})),
        )
        .await);

    // Purge protection cannot be turned off; a vault that is unknown is 404.
    let r = ts
        .req(
            Method::PATCH,
            "/management/vaults/pp1",
            Some(json!({"properties": {"enablePurgeProtection": false}})),
        )
        .await;
    expect_error(&r, 400, "BadParameter");
    let r = ts
        .req_at(&ts.vault_base("nope"), Method::GET, "/keys", None)
        .await;
    expect_error(&r, 404, "VaultNotFound");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn auto_purge_after_retention() {
    let ts = TestServer::start().await;
    ts.create_vault("kv1", 7, false).await;
    let kv1 = ts.vault_base("kv1");
    for name in ["gone", "stays"] {
        ok(ts
            .req_at(
                &kv1,
                Method::POST,
                &format!("/keys/{name}/create"),
                Some(json!({"kty": "oct-HSM"})),
            )
            .await);
    }
    // A deleted key in the default vault (90 days) outlives kv1's retention.
    ts.create_key("long", json!({"kty": "EC"})).await;
    ok(ts.delete("/keys/long").await);
    let d = ok(ts.req_at(&kv1, Method::DELETE, "/keys/gone", None).await);
    assert_eq!(
        d["attributes"]["recoveryLevel"],
        "CustomizedRecoverable+Purgeable"
    );
    let due = d["scheduledPurgeDate"].as_i64().unwrap();
    assert_eq!(due, d["deletedDate"].as_i64().unwrap() + 7 * DAY);

    ts.advance(due - ts.now() - 60);
    assert_eq!(ts.maintenance().await, (0, 0));
    ok(ts
        .req_at(&kv1, Method::GET, "/deletedkeys/gone", None)
        .await);
    ts.advance(120);
    assert_eq!(ts.maintenance().await, (1, 0));
    let r = ts
        .req_at(&kv1, Method::GET, "/deletedkeys/gone", None)
        .await;
    expect_error(&r, 404, "KeyNotFound");
    assert!(ts.list_all_at(&kv1, "/deletedkeys").await.is_empty());
    ok(ts.req_at(&kv1, Method::GET, "/keys/stays", None).await);
    ok(ts.get("/deletedkeys/long").await);
    // The name is free again.
    ok(ts
        .req_at(
            &kv1,
            Method::POST,
            "/keys/gone/create",
            Some(json!({"kty": "oct-HSM"})),
        )
        .await);

    ts.advance(90 * DAY);
    assert_eq!(
        ts.maintenance().await,
        (1, 0),
        "the default vault's key after 90 days"
    );
    expect_error(&ts.get("/deletedkeys/long").await, 404, "KeyNotFound");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn management_api() {
    let ts = TestServer::start().await;
    let r = ok(ts.req(Method::GET, "/management/vaults", None).await);
    let names: Vec<&str> = r["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default"]);
    ts.create_vault("kv1", 7, false).await;
    let v = ok(ts.req(Method::GET, "/management/vaults/kv1", None).await);
    assert_eq!(v["type"], "Microsoft.KeyVault/vaults");
    assert_eq!(v["name"], "kv1");
    assert_eq!(v["properties"]["softDeleteRetentionInDays"], 7);
    assert_eq!(v["properties"]["enablePurgeProtection"], false);
    assert_eq!(v["properties"]["enableRbacAuthorization"], true);
    assert_eq!(
        v["properties"]["vaultUri"],
        format!("{}/", ts.vault_base("kv1"))
    );
    let v = ok(ts
        .req(
            Method::PATCH,
            "/management/vaults/kv1",
            Some(json!({"properties": {"enablePurgeProtection": true}})),
        )
        .await);
    assert_eq!(v["properties"]["enablePurgeProtection"], true);

    let put = |name: &'static str, body: Value| {
        let ts = &ts;
        async move {
            ts.req(
                Method::PUT,
                &format!("/management/vaults/{name}"),
                Some(body),
            )
            .await
        }
    };
    expect_error(&put("kv1", json!({})).await, 409, "Conflict");
    for (name, body) in [
        ("x!", json!({})),
        ("ab", json!({})),
        (
            "kv3",
            json!({"properties": {"softDeleteRetentionInDays": 3}}),
        ),
        (
            "kv3",
            json!({"properties": {"softDeleteRetentionInDays": 91}}),
        ),
        (
            "kv3",
            json!({"properties": {"softDeleteRetentionInDays": "seven"}}),
        ),
        (
            "kv3",
            json!({"properties": {"enablePurgeProtection": "yes"}}),
        ),
        ("kv3", json!({"properties": {"enableSoftDelete": false}})),
    ] {
        expect_error(&put(name, body).await, 400, "BadParameter");
    }
    let r = ts
        .req(
            Method::PATCH,
            "/management/vaults/kv1",
            Some(json!({"properties": {"softDeleteRetentionInDays": 30}})),
        )
        .await;
    expect_error(&r, 400, "BadParameter");
    let r = ts
        .req(Method::GET, "/management/vaults/missing", None)
        .await;
    expect_error(&r, 404, "VaultNotFound");

    // A token of a principal that does not exist (any more) is refused outright.
    let now = ts.now();
    let ghost = ts
        .srv
        .tokens
        .issue("11111111-2222-3333-4444-555555555555", "app", now, 600)
        .unwrap();
    let r = send(
        ts.client
            .get(format!("{}/management/vaults", ts.base))
            .bearer_auth(ghost),
    )
    .await;
    expect_error(&r, 401, "Unauthorized");
    // A real principal other than the administrator is refused the management API.
    let (p, _secret) = ts.srv.service.create_principal("svc-mgmt").unwrap();
    let other = ts
        .srv
        .tokens
        .issue(&p.object_id, &p.client_id, now, 600)
        .unwrap();
    let r = send(
        ts.client
            .get(format!("{}/management/vaults", ts.base))
            .bearer_auth(other),
    )
    .await;
    expect_error(&r, 403, "Forbidden");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn restart_keeps_keys_versions_and_crypto() {
    let mut ts = TestServer::start().await;
    ts.create_vault("kv1", 7, true).await;
    let rsa1 = version_of(&ts.create_key("p-rsa", json!({"kty": "RSA"})).await);
    let rsa2 = version_of(&ok(ts.post_empty("/keys/p-rsa/rotate").await));
    let ec = version_of(
        &ts.create_key("p-ec", json!({"kty": "EC", "crv": "P-521"}))
            .await,
    );
    let aes = version_of(
        &ts.create_key("p-aes", json!({"kty": "oct-HSM", "key_size": 192}))
            .await,
    );
    ts.create_key("p-deleted", json!({"kty": "EC"})).await;
    ok(ts.delete("/keys/p-deleted").await);
    let kv1 = ts.vault_base("kv1");
    let in_kv1 = version_of(&ok(ts
        .req_at(
            &kv1,
            Method::POST,
            "/keys/p-kv1/create",
            Some(json!({"kty": "EC"})),
        )
        .await));
    let policy = ok(ts
        .put(
            "/keys/p-ec/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P60D"}, "action": {"type": "Rotate"}}]}),
        )
        .await);

    let secret = random(32);
    let ct_rsa = ok(ts
        .op(
            "p-rsa",
            &rsa1,
            "encrypt",
            json!({"alg": "RSA-OAEP-256", "value": b64(&secret)}),
        )
        .await);
    let wrapped = ok(ts
        .op(
            "p-aes",
            &aes,
            "wrapkey",
            json!({"alg": "A192KW", "value": b64(&secret)}),
        )
        .await);
    let gcm = ok(ts
        .op(
            "p-aes",
            &aes,
            "encrypt",
            json!({"alg": "A192GCM", "value": b64(&secret), "aad": b64(b"ctx")}),
        )
        .await);
    let d512 = b64(&digest(512, b"persist"));
    let sig = ok(ts
        .op("p-ec", &ec, "sign", json!({"alg": "ES512", "value": d512}))
        .await);
    let old_token = ts.token.clone();
    let old_versions = ts.list_all("/keys/p-rsa/versions").await.len();

    ts.restart().await;
    assert_ne!(ts.token, old_token);

    // The token-signing key persisted: a token from before the restart is still accepted.
    let r = send(
        ts.client
            .get(with_api_version(&format!("{}/keys", ts.base)))
            .bearer_auth(&old_token),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.2);

    // Keys, versions, vaults, deleted state and policies are all there.
    let names: BTreeSet<String> = ts
        .list_all("/keys")
        .await
        .iter()
        .map(|i| {
            i["kid"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["p-rsa".into(), "p-ec".into(), "p-aes".into()])
    );
    assert_eq!(
        ts.list_all("/keys/p-rsa/versions").await.len(),
        old_versions
    );
    assert_eq!(version_of(&ok(ts.get("/keys/p-rsa").await)), rsa2);
    assert_eq!(
        ok(ts.get(&format!("/keys/p-rsa/{rsa1}")).await)["key"]["kid"],
        format!("{}/keys/p-rsa/{rsa1}", ts.base),
        "ids follow the new port"
    );
    ok(ts.get("/deletedkeys/p-deleted").await);
    let kv1 = ts.vault_base("kv1");
    let b = ok(ts.req_at(&kv1, Method::GET, "/keys/p-kv1", None).await);
    assert_eq!(version_of(&b), in_kv1);
    assert_eq!(b["attributes"]["recoveryLevel"], "CustomizedRecoverable");
    let p = ok(ts.get("/keys/p-ec/rotationpolicy").await);
    assert_eq!(p["lifetimeActions"], policy["lifetimeActions"]);

    // Crypto with material from before the restart.
    let pt = ok(ts
        .op(
            "p-rsa",
            &rsa1,
            "decrypt",
            json!({"alg": "RSA-OAEP-256", "value": ct_rsa["value"]}),
        )
        .await);
    assert_eq!(unb64v(&pt["value"]), secret);
    let pt = ok(ts
        .op(
            "p-aes",
            &aes,
            "unwrapkey",
            json!({"alg": "A192KW", "value": wrapped["value"]}),
        )
        .await);
    assert_eq!(unb64v(&pt["value"]), secret);
    let pt = ok(ts
        .op(
            "p-aes",
            &aes,
            "decrypt",
            json!({"alg": "A192GCM", "value": gcm["value"], "iv": gcm["iv"],
                                            "tag": gcm["tag"], "aad": b64(b"ctx")}),
        )
        .await);
    assert_eq!(unb64v(&pt["value"]), secret);
    let v = ok(ts
        .op(
            "p-ec",
            &ec,
            "verify",
            json!({"alg": "ES512", "digest": d512, "value": sig["value"]}),
        )
        .await);
    assert_eq!(v["value"], true);
    ok(ts
        .op("p-ec", &ec, "sign", json!({"alg": "ES512", "value": d512}))
        .await);
    let w = ok(ts
        .post(
            "/keys/p-rsa//wrapkey",
            json!({"alg": "RSA-OAEP", "value": b64(&secret)}),
        )
        .await);
    assert_eq!(version_of(&w), rsa2);

    // New work after the restart, then a second restart.
    ok(ts.post_empty("/keys/p-aes/rotate").await);
    ts.restart().await;
    assert_eq!(ts.list_all("/keys/p-aes/versions").await.len(), 2);
    // Purge protection on kv1 survived.
    ok(ts
        .req_at(&ts.vault_base("kv1"), Method::DELETE, "/keys/p-kv1", None)
        .await);
    let r = ts
        .req_at(
            &ts.vault_base("kv1"),
            Method::DELETE,
            "/deletedkeys/p-kv1",
            None,
        )
        .await;
    expect_error(&r, 403, "Forbidden");
    ts.srv.shutdown().await;
}

fn open_err(path: &std::path::Path, key: Option<&str>) -> String {
    match datadir::open(path, key) {
        Ok(_) => panic!("datadir::open({key:?}) succeeded"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn wrong_or_malformed_root_key_is_refused() {
    let ts = TestServer::start().await;
    ts.create_key("rk", json!({"kty": "EC"})).await;
    let dir = ts.stop().await;
    let path = dir.path();

    // Another 32-byte key on an initialised directory.
    let other = B64.encode([0x42u8; 32]);
    let m = open_err(path, Some(&other));
    assert!(
        m.to_lowercase().contains("root key"),
        "message names the root key: {m}"
    );

    // Not base64, and the wrong length: clear configuration errors naming the variable.
    let m = open_err(path, Some("this is not base64!"));
    assert!(
        m.contains("CMKVAULT_ROOT_KEY") && m.contains("base64"),
        "{m}"
    );
    let m = open_err(path, Some(&B64.encode([1u8; 16])));
    assert!(
        m.contains("CMKVAULT_ROOT_KEY") && m.contains("32 bytes"),
        "{m}"
    );
    let m = open_err(path, Some(&B64.encode([1u8; 33])));
    assert!(m.contains("32 bytes"), "{m}");

    // The right key, given explicitly, opens it with the key intact.
    let root_file = path.join("root.key");
    let right = std::fs::read_to_string(&root_file).unwrap();
    let data = datadir::open(path, Some(right.trim())).expect("the right key opens the directory");
    let key = data
        .service
        .get_key("default", "rk", None)
        .expect("key survives");
    assert_eq!(key.name, "rk");
    drop(data);

    // A corrupt root.key file and a missing one on an initialised directory.
    std::fs::write(&root_file, "garbage!!\n").unwrap();
    let m = open_err(path, None);
    assert!(m.contains("root.key") && m.contains("base64"), "{m}");
    std::fs::write(&root_file, format!("{other}\n")).unwrap();
    let m = open_err(path, None);
    assert!(m.to_lowercase().contains("root key"), "{m}");
    std::fs::remove_file(&root_file).unwrap();
    let m = open_err(path, None);
    assert!(m.to_lowercase().contains("root key"), "{m}");
    // Putting the right key back makes it usable again.
    std::fs::write(&root_file, right).unwrap();
    // (A key file others can read is refused: restore it private.)
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data = datadir::open(path, None).expect("reopen");
    assert!(data.service.get_key("default", "rk", None).is_ok());
}

/// One server per data directory: a second one is refused while the first runs, and may start
/// once it has stopped.
#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let ts = TestServer::start().await;
    let data = cmkvault_server::datadir::open(ts.dir.path(), None).unwrap();
    let err = cmkvault_server::start(&data, options())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("already using"), "{err}");
    let dir = ts.stop().await;
    let data = cmkvault_server::datadir::open(dir.path(), None).unwrap();
    let again = cmkvault_server::start(&data, options())
        .await
        .expect("starts after the first stopped");
    again.shutdown().await;
}
