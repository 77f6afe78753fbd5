//! The error catalogue and bad input: the bearer challenge (before any body parsing),
//! api-version checks, malformed and ill-typed bodies, invalid names and values, body size,
//! paging bounds and unknown routes. Every response is checked for the Azure error shape and
//! for the absence of 5xx by the shared helpers.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use cmkvault_server::API_VERSIONS;
use cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID;
use common::*;
use reqwest::Method;
use serde_json::json;

/// Asserts a 401 with the challenge the SDKs need.
#[track_caller]
fn expect_challenge(r: &Resp, what: &str) {
    assert_eq!(r.0, 401, "{what}: {}", r.2);
    assert_eq!(r.2["error"]["code"], "Unauthorized", "{what}");
    let ch =
        r.1.get("www-authenticate")
            .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"))
            .to_str()
            .unwrap();
    assert!(ch.starts_with("Bearer "), "{what}: {ch}");
    assert!(ch.contains("authorization=\""), "{what}: {ch}");
    assert!(ch.contains("resource=\""), "{what}: {ch}");
    // The SDK splits parameters on ',' and '=': values must contain neither.
    for param in ch["Bearer ".len()..].split(',') {
        let parts: Vec<&str> = param.trim().split('=').collect();
        assert_eq!(
            parts.len(),
            2,
            "{what}: parameter {param} does not split in two"
        );
    }
}

#[tokio::test]
async fn missing_or_invalid_authorization_gets_the_challenge() {
    let ts = TestServer::start().await;
    ts.create_key("k", json!({"kty": "EC"})).await;
    let c = &ts.client;
    let url = |p: &str| ts.url(&ts.base, p);

    // No Authorization at all, on many routes, including POSTs with empty or malformed bodies
    // (the SDK's probe) and a request without api-version.
    let requests = vec![
        ("GET /keys", c.get(url("/keys"))),
        ("GET key", c.get(url("/keys/k/"))),
        (
            "POST create, empty JSON body",
            c.post(url("/keys/k/create"))
                .header("content-type", "application/json"),
        ),
        (
            "POST create, malformed body",
            c.post(url("/keys/k/create"))
                .header("content-type", "application/json")
                .body("{{{ not json"),
        ),
        (
            "POST wrapkey, empty body",
            c.post(url("/keys/k//wrapkey"))
                .header("content-type", "application/json")
                .body(""),
        ),
        (
            "PUT import, empty",
            c.put(url("/keys/k"))
                .header("content-type", "application/json"),
        ),
        ("POST rotate", c.post(url("/keys/k/rotate"))),
        ("DELETE key", c.delete(url("/keys/k"))),
        ("DELETE purge", c.delete(url("/deletedkeys/k"))),
        ("POST rng", c.post(url("/rng")).body("{\"count\": 4")),
        ("no api-version", c.get(format!("{}/keys", ts.base))),
        (
            "bad api-version",
            c.get(format!("{}/keys?api-version=1.0", ts.base)),
        ),
        ("unknown route", c.get(url("/secrets/s"))),
        (
            "management",
            c.get(format!("{}/management/vaults", ts.base)),
        ),
        (
            "management PUT malformed",
            c.put(format!("{}/management/vaults/kv9", ts.base))
                .body("nope"),
        ),
        (
            "named vault",
            c.post(ts.url(&ts.vault_base("kv1"), "/keys/k/create"))
                .header("content-type", "application/json"),
        ),
    ];
    for (what, rb) in requests {
        let r = send(rb).await;
        expect_challenge(&r, what);
        let m = r.2["error"]["message"].as_str().unwrap();
        assert!(m.contains("Bearer"), "{what}: {m}");
    }

    // Present but unusable credentials.
    let other = TestServer::start().await;
    let foreign = other.token.clone();
    let now = ts.now();
    let expired = ts
        .srv
        .tokens
        .issue(BOOTSTRAP_ADMIN_OID, "test", now - 10_000, 60)
        .unwrap();
    let not_yet = ts
        .srv
        .tokens
        .issue(BOOTSTRAP_ADMIN_OID, "test", now + 10_000, 60)
        .unwrap();
    let mut tampered = ts.token.clone();
    tampered.pop();
    tampered.push(if ts.token.ends_with('A') { 'B' } else { 'A' });
    for (what, header) in [
        ("garbage bearer", "Bearer not-a-jwt".to_string()),
        ("empty bearer", "Bearer ".to_string()),
        ("three dots", "Bearer a.b.c".to_string()),
        ("basic auth", "Basic dXNlcjpwYXNz".to_string()),
        ("no scheme", ts.token.clone()),
        ("other server's token", format!("Bearer {foreign}")),
        ("expired token", format!("Bearer {expired}")),
        ("future token", format!("Bearer {not_yet}")),
        ("tampered signature", format!("Bearer {tampered}")),
    ] {
        for rb in [
            c.get(url("/keys")),
            c.post(url("/keys/k/create"))
                .header("content-type", "application/json")
                .body(""),
        ] {
            let r = send(rb.header("authorization", header.clone())).await;
            expect_challenge(&r, what);
        }
    }
    // The scheme is case-insensitive.
    let r = send(
        c.get(url("/keys"))
            .header("authorization", format!("bearer {}", ts.token)),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.2);
    other.srv.shutdown().await;
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn api_version_is_checked() {
    let ts = TestServer::start().await;
    for v in API_VERSIONS {
        let r = ts.get(&format!("/keys?api-version={v}")).await;
        assert_eq!(r.0, 200, "api-version {v}: {}", r.2);
    }
    for v in ["7.9", "1.0", "2099-01-01", "", "latest"] {
        let r = ts.get(&format!("/keys?api-version={v}")).await;
        let m = expect_error(&r, 400, "BadParameter");
        assert!(m.contains("version"), "{m}");
    }
    let r = ts.get("/keys?api-version=7.9").await;
    let m = expect_error(&r, 400, "BadParameter");
    assert!(m.contains("7.9"), "{m}");
    // Missing entirely: no helper-added api-version.
    let r = send(
        ts.client
            .get(format!("{}/keys", ts.base))
            .bearer_auth(&ts.token),
    )
    .await;
    expect_error(&r, 400, "BadParameter");
    let r = send(
        ts.client
            .post(format!("{}/keys/k/create", ts.base))
            .bearer_auth(&ts.token)
            .json(&json!({"kty": "EC"})),
    )
    .await;
    expect_error(&r, 400, "BadParameter");
    expect_error(&ts.get("/keys/k").await, 404, "KeyNotFound");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn malformed_and_invalid_create_and_import_bodies() {
    let ts = TestServer::start().await;
    // Raw bodies that are not the right JSON.
    for body in [
        &b""[..],
        b"   ",
        b"{",
        b"not json",
        b"[]",
        b"null",
        b"{\"kty\": 5}",
        b"{\"kty\": \"RSA\", \"key_size\": \"big\"}",
        b"{\"kty\": \"RSA\", \"key_size\": -1}",
        b"{\"kty\": \"EC\", \"crv\": 256}",
        b"{\"kty\": \"EC\", \"key_ops\": \"sign\"}",
        b"{\"kty\": \"EC\", \"tags\": {\"a\": 1}}",
        b"{\"kty\": \"EC\", \"attributes\": {\"exp\": \"tomorrow\"}}",
        b"{\"kty\": \"EC\", \"attributes\": {\"enabled\": \"yes\"}}",
        b"{\"key_size\": 2048}",
        b"\xff\xfe{}",
    ] {
        let r = ts.raw(Method::POST, "/keys/k/create", body.to_vec()).await;
        expect_error(&r, 400, "BadParameter");
    }
    // Well-formed JSON with invalid values.
    for body in [
        json!({"kty": "DSA"}),
        json!({"kty": "rsa"}),
        json!({"kty": ""}),
        json!({"kty": "EC", "crv": "P-999"}),
        json!({"kty": "EC", "crv": "secp256r1"}),
        json!({"kty": "EC", "crv": "P-256", "key_size": 384}),
        json!({"kty": "RSA", "key_size": 1024}),
        json!({"kty": "RSA", "key_size": 2047}),
        json!({"kty": "RSA", "crv": "P-256"}),
        json!({"kty": "oct-HSM", "key_size": 512}),
        json!({"kty": "oct-HSM", "key_size": 64}),
        json!({"kty": "EC", "key_ops": ["sign", "teleport"]}),
        json!({"kty": "EC", "attributes": {"nbf": 2_000_000_000, "exp": 1_900_000_000}}),
        json!({"kty": "EC", "tags": (0..16).map(|i| (format!("t{i}"), "v".to_string())).collect::<std::collections::BTreeMap<_, _>>()}),
    ] {
        let r = ts.post("/keys/k/create", body.clone()).await;
        expect_error(&r, 400, "BadParameter");
    }
    // Invalid key names on create, import and rotate.
    let long = "a".repeat(128);
    for name in [
        "bad_name!",
        "bad_name",
        "dot.name",
        "sp%20ace",
        "%C3%A9t%C3%A9",
        long.as_str(),
    ] {
        let r = ts
            .post(&format!("/keys/{name}/create"), json!({"kty": "EC"}))
            .await;
        let m = expect_error(&r, 400, "BadParameter");
        assert!(m.to_lowercase().contains("name"), "{name}: {m}");
        let r = ts
            .put(
                &format!("/keys/{name}"),
                json!({"key": {"kty": "oct", "k": b64(&random(16))}}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    ok(ts
        .post(
            &format!("/keys/{}/create", "a".repeat(127)),
            json!({"kty": "EC"}),
        )
        .await);

    // Import: bad base64url, missing or inconsistent members, BYOK blobs, unknown kty.
    let k16 = b64(&random(16));
    for body in [
        json!({}),
        json!({"key": "oct"}),
        json!({"key": {"kty": "oct", "k": "not base64url!!"}}),
        json!({"key": {"kty": "oct", "k": "AAAA*AAA"}}),
        json!({"key": {"kty": "oct"}}),
        json!({"key": {"kty": "oct", "k": b64(&random(20))}}),
        json!({"key": {"kty": "oct", "k": k16, "key_ops": ["fly"]}}),
        json!({"key": {"kty": "DSA", "k": k16}}),
        json!({"key": {"kty": "RSA", "n": b64(&random(256)), "e": "AQAB"}}),
        json!({"key": {"kty": "RSA", "n": "%%%", "e": "AQAB", "d": "AQAB"}}),
        json!({"key": {"kty": "EC", "crv": "P-256", "x": b64(&random(32)), "y": b64(&random(32)), "d": b64(&random(32))}}),
        json!({"key": {"kty": "EC", "crv": "P-999", "x": b64(&random(32)), "y": b64(&random(32)), "d": b64(&random(32))}}),
        json!({"key": {"kty": "EC", "crv": "P-256"}}),
        json!({"key": {"kty": "RSA-HSM", "key_hsm": b64(b"byok blob")}}),
        json!({"key": {"kty": "oct", "k": k16}, "Hsm": "yes"}),
    ] {
        let r = ts.put("/keys/imp", body.clone()).await;
        expect_error(&r, 400, "BadParameter");
    }
    expect_error(&ts.get("/keys/imp").await, 404, "KeyNotFound");
    expect_error(&ts.get("/keys/k").await, 404, "KeyNotFound");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn bad_operation_update_and_policy_bodies() {
    let ts = TestServer::start().await;
    let v = version_of(&ts.create_key("k", json!({"kty": "RSA"})).await);
    let op = format!("/keys/k/{v}/encrypt");
    for body in [
        &b""[..],
        b"{}",
        b"{\"alg\": \"RSA-OAEP\"}",
        b"{\"value\": \"AAAA\"}",
        b"{\"alg\": 1, \"value\": \"AAAA\"}",
        b"{\"alg\": \"RSA-OAEP\", \"value\": 12}",
        b"{\"alg\": \"RSA-OAEP\", \"value\": \"***\"}",
        b"{\"alg\": \"RSA-OAEP\", \"value\": \"AAAA\", \"iv\": \"!!\"}",
        b"{\"alg\": \"RSA-OAEP\", \"value\": \"AAAA\", \"aad\": \"@@\"}",
        b"{\"alg\": \"NOPE\", \"value\": \"AAAA\"}",
        b"{\"alg\": \"\", \"value\": \"AAAA\"}",
        b"{\"alg\":",
    ] {
        let r = ts.raw(Method::POST, &op, body.to_vec()).await;
        expect_error(&r, 400, "BadParameter");
    }
    let r = ts
        .raw(
            Method::POST,
            &format!("/keys/k/{v}/verify"),
            br#"{"alg": "RS256", "digest": "%%%", "value": "AAAA"}"#.to_vec(),
        )
        .await;
    expect_error(&r, 400, "BadParameter");
    let r = ts
        .raw(
            Method::POST,
            &format!("/keys/k/{v}/sign"),
            br#"{"alg": "RS256", "value": "A"}"#.to_vec(),
        )
        .await;
    expect_error(&r, 400, "BadParameter");

    for body in [
        &b""[..],
        b"{",
        b"{\"attributes\": {\"exp\": \"soon\"}}",
        b"{\"attributes\": {\"enabled\": 1}}",
        b"{\"key_ops\": \"sign\"}",
        b"{\"tags\": [\"a\"]}",
    ] {
        let r = ts.raw(Method::PATCH, "/keys/k/", body.to_vec()).await;
        expect_error(&r, 400, "BadParameter");
    }
    for body in [
        &b""[..],
        b"{",
        b"{\"lifetimeActions\": [{\"trigger\": {\"timeAfterCreate\": 30}, \"action\": {\"type\": \"Rotate\"}}]}",
        b"{\"lifetimeActions\": [{\"trigger\": {\"timeAfterCreate\": \"P30D\"}}]}",
        b"{\"lifetimeActions\": [], \"attributes\": {\"expiryTime\": 90}}",
        b"{\"lifetimeActions\": [], \"attributes\": {\"expiryTime\": \"90 days\"}}",
    ] {
        let r = ts.raw(Method::PUT, "/keys/k/rotationpolicy", body.to_vec()).await;
        expect_error(&r, 400, "BadParameter");
    }
    for body in [&b""[..], b"{}", b"{\"value\": 5}", b"{\"value\": \"***\"}"] {
        let r = ts.raw(Method::POST, "/keys/restore", body.to_vec()).await;
        expect_error(&r, 400, "BadParameter");
    }
    // Nothing changed.
    let b = ok(ts.get("/keys/k").await);
    assert_eq!(version_of(&b), v);
    assert!(b.get("tags").is_none());
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let ts = TestServer::start().await;
    let v = version_of(&ts.create_key("k", json!({"kty": "oct-HSM"})).await);
    let big = format!(
        "{{\"alg\": \"A256GCM\", \"value\": \"{}\"}}",
        "A".repeat(300 * 1024)
    );
    for path in [
        format!("/keys/k/{v}/encrypt"),
        "/keys/k/create".to_string(),
        "/keys/k2".to_string(),
    ] {
        let method = if path == "/keys/k2" {
            Method::PUT
        } else {
            Method::POST
        };
        let r = ts.raw(method, &path, big.clone().into_bytes()).await;
        assert_eq!(r.0, 413, "{path}: {}", r.2);
        assert!(r.2["error"]["code"].is_string());
    }
    // Just under the limit is processed normally (and here, decrypts nothing useful).
    let fits = format!(
        "{{\"alg\": \"A256GCM\", \"value\": \"{}\"}}",
        "A".repeat(200 * 1024)
    );
    let r = ts
        .raw(
            Method::POST,
            &format!("/keys/k/{v}/encrypt"),
            fits.into_bytes(),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.2);
    // Restore has a larger limit: a 300 KiB garbage blob is a 400, not a 413.
    let r = ts
        .raw(
            Method::POST,
            "/keys/restore",
            big.replace("alg", "x").into_bytes(),
        )
        .await;
    expect_error(&r, 400, "BadParameter");
    // The server is still healthy.
    ok(ts.get("/keys/k").await);
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn paging_bounds() {
    let ts = TestServer::start().await;
    ts.create_key("k", json!({"kty": "EC"})).await;
    for path in ["/keys", "/keys/k/versions", "/deletedkeys"] {
        for bad in ["0", "26", "-1", "abc", "1.5", "99999999999"] {
            let r = ts.get(&format!("{path}?maxresults={bad}")).await;
            expect_error(&r, 400, "BadParameter");
        }
        for good in ["1", "25"] {
            ok(ts.get(&format!("{path}?maxresults={good}")).await);
        }
        let r = ts.get(&format!("{path}?$skiptoken=%%%")).await;
        expect_error(&r, 400, "BadParameter");
    }
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_methods_and_hosts() {
    let ts = TestServer::start().await;
    let v = version_of(&ts.create_key("k", json!({"kty": "EC"})).await);
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/secrets"),
        (Method::GET, "/secrets/s"),
        (Method::GET, "/certificates/c/versions"),
        (Method::GET, "/keyz/k"),
        (Method::GET, "/keys/k/a/b/c"),
        (Method::POST, "/keys/k/versions/x/y"),
        (Method::GET, "/deletedkeys/k/extra"),
        (Method::POST, "/rng/more"),
    ] {
        let r = ts.req(method.clone(), path, None).await;
        expect_error(&r, 404, "NotFound");
    }
    let r = ts.post(&format!("/keys/k/{v}/frobnicate"), json!({})).await;
    expect_error(&r, 404, "NotFound");
    // Known paths with the wrong method are refused without a 5xx.
    for (method, path) in [
        (Method::PUT, "/keys/k/create".to_string()),
        (Method::POST, "/keys/k".to_string()),
        (Method::GET, "/keys/k/rotate".to_string()),
        (Method::DELETE, "/keys/k/versions".to_string()),
        (Method::POST, "/deletedkeys/k".to_string()),
        (Method::GET, "/rng".to_string()),
        (Method::GET, format!("/keys/k/{v}/sign")),
    ] {
        let r = ts.req(method.clone(), &path, None).await;
        assert!(matches!(r.0, 404 | 405), "{method} {path}: {} {}", r.0, r.2);
    }
    // Release is not offered: a clean error, not a crash.
    let r = ts
        .post(&format!("/keys/k/{v}/release"), json!({"target": "x"}))
        .await;
    assert!(r.0 >= 400, "{}", r.2);
    // An unknown vault host.
    let r = ts
        .req_at(&ts.vault_base("nosuchvault"), Method::GET, "/keys", None)
        .await;
    expect_error(&r, 404, "VaultNotFound");
    let r = ts
        .req_at(
            &ts.vault_base("nosuchvault"),
            Method::POST,
            "/keys/k/create",
            Some(json!({"kty": "EC"})),
        )
        .await;
    expect_error(&r, 404, "VaultNotFound");
    ts.srv.shutdown().await;
}
