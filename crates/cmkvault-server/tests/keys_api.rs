//! The keys API routes end to end over HTTPS: create (every type, size and curve), import,
//! get (latest, trailing slash, by version, unversioned crypto), update, list with paging,
//! versions, backup/restore, rotate, rotation policies (validation, defaults, auto-rotation)
//! and random bytes.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const DAY: i64 = 86_400;

// RFC 7515 Appendix A.2: a 2048-bit RSA key and its deterministic RS256 signature.
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
const A2_INPUT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

// RFC 7515 Appendix A.3: a P-256 key and a published ES256 signature.
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const A3_INPUT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A3_SIG: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

// RFC 7520 section 5.8: an AES-128 key-encryption key, a CEK and the A128KW result.
const C58_K: &str = "GZy6sIZ6wl9NJOKB-jnmVQ";
const C58_CEK: &str = "aY5_Ghmk9KxWPBLu_glx1w";
const C58_WRAPPED: &str = "CBI6oDw8MydIx1IBntf_lQcw2MmJKIQx";

fn a2_jwk() -> Value {
    json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "d": A2_D, "p": A2_P, "q": A2_Q,
           "dp": A2_DP, "dq": A2_DQ, "qi": A2_QI})
}

/// Checks the parts of a KeyBundle every response shares.
#[track_caller]
fn check_bundle(ts: &TestServer, base: &str, name: &str, b: &Value, kty: &str) -> String {
    let version = version_of(b);
    assert_eq!(
        b["key"]["kid"],
        format!("{base}/keys/{name}/{version}"),
        "kid in {b}"
    );
    assert_eq!(b["key"]["kty"], kty, "{b}");
    let ops = b["key"]["key_ops"].as_array().expect("key_ops");
    assert!(!ops.is_empty(), "key_ops must never be empty: {b}");
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(b["key"].get(private).is_none(), "{private} leaked: {b}");
    }
    let a = &b["attributes"];
    assert!(a["enabled"].is_boolean(), "{b}");
    let created = a["created"].as_i64().expect("created");
    assert!((created - ts.now()).abs() < 600, "created {created}");
    assert!(a["updated"].as_i64().expect("updated") >= created);
    assert!(a["recoveryLevel"].is_string(), "{b}");
    assert!(a["recoverableDays"].is_i64(), "{b}");
    version
}

fn op_names(b: &Value) -> Vec<&str> {
    b["key"]["key_ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn create_every_key_type_size_and_curve() {
    let ts = TestServer::start().await;
    let base = ts.base.clone();

    // RSA: default size, 3072 with an explicit exponent, and the suite's one RSA-4096 (HSM).
    for (name, body, bits, kty) in [
        ("rsa-default", json!({"kty": "RSA"}), 2048, "RSA"),
        (
            "rsa-3072",
            json!({"kty": "RSA", "key_size": 3072, "public_exponent": 65537}),
            3072,
            "RSA",
        ),
        (
            "rsa-hsm-4096",
            json!({"kty": "RSA-HSM", "key_size": 4096}),
            4096,
            "RSA-HSM",
        ),
    ] {
        let b = ts.create_key(name, body).await;
        check_bundle(&ts, &base, name, &b, kty);
        assert_eq!(unb64v(&b["key"]["n"]).len() * 8, bits, "{name}");
        assert_eq!(b["key"]["e"], "AQAB");
        let mut ops = op_names(&b);
        ops.sort();
        assert_eq!(
            ops,
            [
                "decrypt",
                "encrypt",
                "sign",
                "unwrapKey",
                "verify",
                "wrapKey"
            ],
            "RSA default key_ops"
        );
        assert!(b["key"].get("crv").is_none());
        // Default vault: 90 days, no purge protection.
        assert_eq!(b["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
        assert_eq!(b["attributes"]["recoverableDays"], 90);
        assert_eq!(b["attributes"]["enabled"], true);
    }

    // EC: every curve, software and HSM, with and without a matching key_size.
    for (name, body, crv, coord, kty) in [
        (
            "ec-p256",
            json!({"kty": "EC", "crv": "P-256"}),
            "P-256",
            32,
            "EC",
        ),
        (
            "ec-p384",
            json!({"kty": "EC", "crv": "P-384", "key_size": 384}),
            "P-384",
            48,
            "EC",
        ),
        (
            "ec-p521",
            json!({"kty": "EC-HSM", "crv": "P-521"}),
            "P-521",
            66,
            "EC-HSM",
        ),
        (
            "ec-p256k",
            json!({"kty": "EC-HSM", "crv": "P-256K"}),
            "P-256K",
            32,
            "EC-HSM",
        ),
        ("ec-default-curve", json!({"kty": "EC"}), "P-256", 32, "EC"),
    ] {
        let b = ts.create_key(name, body).await;
        check_bundle(&ts, &base, name, &b, kty);
        assert_eq!(b["key"]["crv"], crv, "{name}");
        assert_eq!(unb64v(&b["key"]["x"]).len(), coord, "{name} x");
        assert_eq!(unb64v(&b["key"]["y"]).len(), coord, "{name} y");
        assert!(b["key"].get("n").is_none());
        let ops = op_names(&b);
        assert!(
            ops.contains(&"sign") && ops.contains(&"verify"),
            "{name}: {ops:?}"
        );
    }

    // oct: every AES size; the key material is never returned.
    for (name, bits, kty) in [
        ("aes128", 128, "oct-HSM"),
        ("aes192", 192, "oct-HSM"),
        ("aes256", 256, "oct-HSM"),
        ("aes-soft", 256, "oct"),
    ] {
        let b = ts
            .create_key(name, json!({"kty": kty, "key_size": bits}))
            .await;
        check_bundle(&ts, &base, name, &b, kty);
        assert!(b["key"].get("k").is_none());
        let ops = op_names(&b);
        assert!(
            ops.contains(&"wrapKey") && ops.contains(&"unwrapKey"),
            "{ops:?}"
        );
    }
    let b = ts
        .create_key("aes-default", json!({"kty": "oct-HSM"}))
        .await;
    check_bundle(&ts, &base, "aes-default", &b, "oct-HSM");

    // Create-time attributes, tags and key_ops come back as given.
    let now = ts.now();
    let b = ts
        .create_key(
            "with-attrs",
            json!({"kty": "EC", "crv": "P-256", "key_ops": ["sign"],
                   "attributes": {"enabled": false, "nbf": now - 10, "exp": now + 5000},
                   "tags": {"team": "ml", "purpose": "cmk"}}),
        )
        .await;
    check_bundle(&ts, &base, "with-attrs", &b, "EC");
    assert_eq!(b["key"]["key_ops"], json!(["sign"]));
    assert_eq!(b["attributes"]["enabled"], false);
    assert_eq!(b["attributes"]["nbf"], now - 10);
    assert_eq!(b["attributes"]["exp"], now + 5000);
    assert_eq!(b["tags"], json!({"team": "ml", "purpose": "cmk"}));

    // Create on an existing name adds a version instead of failing.
    let v1 = version_of(&ok(ts.get("/keys/ec-p256").await));
    let b2 = ts
        .create_key("ec-p256", json!({"kty": "EC", "crv": "P-384"}))
        .await;
    let v2 = version_of(&b2);
    assert_ne!(v1, v2);
    assert_eq!(b2["key"]["crv"], "P-384");
    let versions = ts.list_all("/keys/ec-p256/versions").await;
    assert_eq!(versions.len(), 2);

    ts.srv.shutdown().await;
}

#[tokio::test]
async fn import_rsa_ec_and_oct_jwks() {
    let ts = TestServer::start().await;
    let base = ts.base.clone();

    // RSA (RFC 7515 A.2): public members come back, private ones never; the imported key
    // reproduces the published deterministic RS256 signature.
    let b = ok(ts
        .put(
            "/keys/imp-rsa",
            json!({"key": a2_jwk(), "tags": {"src": "rfc7515"}}),
        )
        .await);
    let v1 = check_bundle(&ts, &base, "imp-rsa", &b, "RSA");
    assert_eq!(b["key"]["n"], A2_N);
    assert_eq!(b["key"]["e"], "AQAB");
    assert_eq!(b["tags"]["src"], "rfc7515");
    let digest = digest(256, A2_INPUT.as_bytes());
    let sig = ok(ts
        .op(
            "imp-rsa",
            &v1,
            "sign",
            json!({"alg": "RS256", "value": b64(&digest)}),
        )
        .await);
    assert_eq!(sig["value"], A2_SIG, "RS256 known answer");
    assert_eq!(sig["kid"], format!("{base}/keys/imp-rsa/{v1}"));

    // Import again with the Hsm flag: a new version of type RSA-HSM, restricted key_ops.
    let mut jwk = a2_jwk();
    jwk["key_ops"] = json!(["verify", "sign"]);
    let b = ok(ts
        .put(
            "/keys/imp-rsa",
            json!({"key": jwk, "Hsm": true, "attributes": {"enabled": true}}),
        )
        .await);
    let v2 = check_bundle(&ts, &base, "imp-rsa", &b, "RSA-HSM");
    assert_ne!(v1, v2);
    assert_eq!(b["key"]["key_ops"], json!(["verify", "sign"]));
    assert_eq!(ts.list_all("/keys/imp-rsa/versions").await.len(), 2);

    // EC (RFC 7515 A.3): the published ES256 signature verifies on the server.
    let b = ok(ts
        .put(
            "/keys/imp-ec",
            json!({"key": {"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": A3_D}}),
        )
        .await);
    let v = check_bundle(&ts, &base, "imp-ec", &b, "EC");
    assert_eq!(
        (b["key"]["x"].as_str(), b["key"]["y"].as_str()),
        (Some(A3_X), Some(A3_Y))
    );
    let d = b64(&common::digest(256, A3_INPUT.as_bytes()));
    let r = ok(ts
        .op(
            "imp-ec",
            &v,
            "verify",
            json!({"alg": "ES256", "digest": d, "value": A3_SIG}),
        )
        .await);
    assert_eq!(r["value"], true);

    // oct (RFC 7520 5.8): A128KW gives the published wrapped key; k is never returned.
    let b = ok(ts
        .put(
            "/keys/imp-aes",
            json!({"key": {"kty": "oct", "k": C58_K}, "Hsm": true}),
        )
        .await);
    let v = check_bundle(&ts, &base, "imp-aes", &b, "oct-HSM");
    let w = ok(ts
        .op(
            "imp-aes",
            &v,
            "wrapkey",
            json!({"alg": "A128KW", "value": C58_CEK}),
        )
        .await);
    assert_eq!(w["value"], C58_WRAPPED, "A128KW known answer");
    let u = ok(ts
        .op(
            "imp-aes",
            &v,
            "unwrapkey",
            json!({"alg": "A128KW", "value": C58_WRAPPED}),
        )
        .await);
    assert_eq!(u["value"], C58_CEK);
    let got = ok(ts.get("/keys/imp-aes").await);
    assert!(got["key"].get("k").is_none());

    // Unpadded and padded base64url are both accepted on input.
    let b = ok(ts
        .put(
            "/keys/imp-aes-pad",
            json!({"key": {"kty": "oct", "k": format!("{C58_K}==")}}),
        )
        .await);
    check_bundle(&ts, &base, "imp-aes-pad", &b, "oct");

    ts.srv.shutdown().await;
}

#[tokio::test]
async fn get_latest_by_version_and_unversioned_crypto() {
    let ts = TestServer::start().await;
    let v1 = version_of(&ts.create_key("getme", json!({"kty": "RSA"})).await);
    let v2 = version_of(&ok(ts.post_empty("/keys/getme/rotate").await));
    assert_ne!(v1, v2);

    for path in ["/keys/getme", "/keys/getme/", "/keys/GETME/", "/keys/GetMe"] {
        let b = ok(ts.get(path).await);
        assert_eq!(version_of(&b), v2, "{path} is the latest version");
        assert_eq!(
            b["key"]["kid"],
            format!("{}/keys/getme/{v2}", ts.base),
            "{path}"
        );
    }
    let b = ok(ts.get(&format!("/keys/getme/{v1}")).await);
    assert_eq!(version_of(&b), v1);
    let b = ok(ts.get(&format!("/keys/getme/{}", v1.to_uppercase())).await);
    assert_eq!(version_of(&b), v1, "versions compare case-insensitively");

    // Unversioned crypto: /keys/n//op and /keys/n/op use the latest version.
    let cek = random(32);
    for path in ["/keys/getme//wrapkey", "/keys/getme/wrapkey"] {
        let w = ok(ts
            .post(path, json!({"alg": "RSA-OAEP-256", "value": b64(&cek)}))
            .await);
        assert_eq!(version_of(&w), v2, "{path}");
        let u = ok(ts
            .op(
                "getme",
                &v2,
                "unwrapkey",
                json!({"alg": "RSA-OAEP-256", "value": w["value"]}),
            )
            .await);
        assert_eq!(unb64v(&u["value"]), cek);
        // The older version cannot unwrap it.
        let r = ts
            .op(
                "getme",
                &v1,
                "unwrapkey",
                json!({"alg": "RSA-OAEP-256", "value": w["value"]}),
            )
            .await;
        expect_error(&r, 400, "BadParameter");
    }
    // The older version still works by id.
    let w = ok(ts
        .op(
            "getme",
            &v1,
            "wrapkey",
            json!({"alg": "RSA-OAEP", "value": b64(&cek)}),
        )
        .await);
    assert_eq!(version_of(&w), v1);

    // Unknown key, unknown version.
    expect_error(&ts.get("/keys/nope").await, 404, "KeyNotFound");
    expect_error(&ts.get("/keys/nope/").await, 404, "KeyNotFound");
    let missing = "0123456789abcdef0123456789abcdef";
    let m = expect_error(
        &ts.get(&format!("/keys/getme/{missing}")).await,
        404,
        "KeyNotFound",
    );
    assert!(m.contains("getme"), "{m}");
    let r = ts
        .op(
            "getme",
            missing,
            "wrapkey",
            json!({"alg": "RSA-OAEP", "value": b64(&cek)}),
        )
        .await;
    expect_error(&r, 404, "KeyNotFound");
    let r = ts
        .post(
            "/keys/nope//wrapkey",
            json!({"alg": "RSA-OAEP", "value": b64(&cek)}),
        )
        .await;
    expect_error(&r, 404, "KeyNotFound");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn update_attributes_tags_and_key_ops() {
    let ts = TestServer::start().await;
    let v1 = version_of(&ts.create_key("upd", json!({"kty": "EC"})).await);
    let v2 = version_of(&ts.create_key("upd", json!({"kty": "EC"})).await);
    let now = ts.now();

    // PATCH /keys/n/ (empty version = latest), as the SDK sends it.
    let b = ok(ts
        .patch(
            "/keys/upd/",
            json!({"attributes": {"exp": now + 3600, "nbf": now - 60}, "tags": {"a": "b"}}),
        )
        .await);
    assert_eq!(version_of(&b), v2);
    assert_eq!(b["attributes"]["exp"], now + 3600);
    assert_eq!(b["attributes"]["nbf"], now - 60);
    assert_eq!(b["tags"], json!({"a": "b"}));
    let got = ok(ts.get("/keys/upd").await);
    assert_eq!(got["attributes"]["exp"], now + 3600);
    assert_eq!(got["tags"], json!({"a": "b"}));

    // PATCH /keys/n (no slash) and a float timestamp.
    let b = ok(ts
        .patch(
            "/keys/upd",
            json!({"attributes": {"enabled": false, "exp": (now + 7200) as f64 + 0.5}}),
        )
        .await);
    assert_eq!(b["attributes"]["enabled"], false);
    assert_eq!(b["attributes"]["exp"], now + 7200);
    assert_eq!(
        b["tags"],
        json!({"a": "b"}),
        "tags untouched when not given"
    );

    // PATCH by version touches that version only; key_ops replace.
    let b = ok(ts
        .patch(
            &format!("/keys/upd/{v1}"),
            json!({"key_ops": ["verify"], "tags": {}}),
        )
        .await);
    assert_eq!(version_of(&b), v1);
    assert_eq!(b["key"]["key_ops"], json!(["verify"]));
    let latest = ok(ts.get("/keys/upd").await);
    assert_eq!(version_of(&latest), v2);
    assert_eq!(latest["attributes"]["enabled"], false);
    assert_ne!(latest["key"]["key_ops"], json!(["verify"]));
    let old = ok(ts.get(&format!("/keys/upd/{v1}")).await);
    assert_eq!(old["key"]["key_ops"], json!(["verify"]));
    assert!(old["attributes"].get("exp").is_none());

    // nbf after exp is refused; an unknown op is refused; unknown key is 404.
    let r = ts
        .patch("/keys/upd/", json!({"attributes": {"nbf": now + 99_999}}))
        .await;
    expect_error(&r, 400, "BadParameter");
    let r = ts.patch("/keys/upd/", json!({"key_ops": ["fly"]})).await;
    expect_error(&r, 400, "BadParameter");
    let r = ts.patch("/keys/nope/", json!({"tags": {}})).await;
    expect_error(&r, 404, "KeyNotFound");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn list_keys_and_versions_follow_next_link() {
    let ts = TestServer::start().await;
    let mut names = BTreeSet::new();
    for i in 0..7 {
        let name = format!("list-{i}");
        ts.create_key(&name, json!({"kty": "EC", "tags": {"i": i.to_string()}}))
            .await;
        names.insert(name);
    }
    // An empty listing elsewhere: the deleted list.
    let r = ok(ts.get("/deletedkeys").await);
    assert_eq!(r["value"], json!([]));
    assert_eq!(r["nextLink"], Value::Null);

    for max in [1, 2, 3, 7, 25] {
        let items = ts.list_all(&format!("/keys?maxresults={max}")).await;
        let kids: Vec<String> = items
            .iter()
            .map(|i| i["kid"].as_str().unwrap().to_string())
            .collect();
        let unique: BTreeSet<&String> = kids.iter().collect();
        assert_eq!(
            unique.len(),
            kids.len(),
            "duplicates with maxresults={max}: {kids:?}"
        );
        let expected: BTreeSet<String> = names
            .iter()
            .map(|n| format!("{}/keys/{n}", ts.base))
            .collect();
        let got: BTreeSet<String> = kids.into_iter().collect();
        assert_eq!(got, expected, "base ids with maxresults={max}");
        for item in &items {
            assert!(item["attributes"]["created"].is_i64(), "{item}");
            assert!(item["tags"]["i"].is_string(), "{item}");
            assert!(item.get("key").is_none(), "items carry no key material");
        }
    }
    // One page when everything fits.
    let r = ok(ts.get("/keys").await);
    assert_eq!(r["value"].as_array().unwrap().len(), 7);
    assert_eq!(r["nextLink"], Value::Null);
    // A page of 2 links to the next with an absolute URL carrying api-version and maxresults.
    let r = ok(ts.get("/keys?maxresults=2").await);
    let next = r["nextLink"].as_str().unwrap();
    assert!(next.starts_with(&format!("{}/keys?", ts.base)), "{next}");
    assert!(
        next.contains("maxresults=2") && next.contains("$skiptoken="),
        "{next}"
    );

    // Versions: five versions, paged by two, versioned ids in creation order.
    let mut created = vec![version_of(
        &ts.create_key("many", json!({"kty": "EC"})).await,
    )];
    for _ in 0..2 {
        created.push(version_of(
            &ts.create_key("many", json!({"kty": "EC"})).await,
        ));
        created.push(version_of(&ok(ts.post_empty("/keys/many/rotate").await)));
    }
    for max in [1, 2, 5, 25] {
        let items = ts
            .list_all(&format!("/keys/many/versions?maxresults={max}"))
            .await;
        let got: Vec<String> = items.iter().map(version_of).collect();
        let mut sorted_got = got.clone();
        sorted_got.sort();
        let mut sorted_created = created.clone();
        sorted_created.sort();
        assert_eq!(sorted_got, sorted_created, "versions with maxresults={max}");
        for item in &items {
            assert!(item["kid"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/keys/many/", ts.base)));
        }
    }
    // The key list still shows "many" once.
    let items = ts.list_all("/keys?maxresults=4").await;
    assert_eq!(items.len(), 8);
    expect_error(&ts.get("/keys/nope/versions").await, 404, "KeyNotFound");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn backup_and_restore_round_trip() {
    let ts = TestServer::start().await;
    let v1 = version_of(
        &ts.create_key(
            "bk",
            json!({"kty": "EC", "crv": "P-384", "tags": {"t": "1"}}),
        )
        .await,
    );
    let v2 = version_of(
        &ts.create_key("bk", json!({"kty": "EC", "crv": "P-384"}))
            .await,
    );
    let policy = json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
                        "attributes": {"expiryTime": "P90D"}});
    let set = ok(ts.put("/keys/bk/rotationpolicy", policy).await);
    let v3 = version_of(&ok(ts.post_empty("/keys/bk/rotate").await));
    let digest = b64(&digest(384, b"backed up"));
    let sig_v1 = ok(ts
        .op("bk", &v1, "sign", json!({"alg": "ES384", "value": digest}))
        .await);

    let blob = ok(ts.post_empty("/keys/bk/backup").await);
    let blob = blob["value"].as_str().expect("backup value").to_string();
    assert!(
        !blob.contains('=') && !blob.contains('+') && !blob.contains('/'),
        "base64url"
    );

    // Restore while the name is live: 409.
    let r = ts.post("/keys/restore", json!({"value": blob})).await;
    let m = expect_error(&r, 409, "Conflict");
    assert!(m.contains("bk"), "{m}");

    // Delete and purge, then restore: every version, its attributes and the policy return.
    ok(ts.delete("/keys/bk").await);
    assert_eq!(ts.delete("/deletedkeys/bk").await.0, 204);
    expect_error(&ts.get("/keys/bk").await, 404, "KeyNotFound");
    let b = ok(ts.post("/keys/restore", json!({"value": blob})).await);
    assert_eq!(version_of(&b), v3, "restore returns the latest version");
    assert_eq!(b["key"]["kid"], format!("{}/keys/bk/{v3}", ts.base));
    let versions: BTreeSet<String> = ts
        .list_all("/keys/bk/versions")
        .await
        .iter()
        .map(version_of)
        .collect();
    assert_eq!(
        versions,
        BTreeSet::from([v1.clone(), v2.clone(), v3.clone()])
    );
    let old = ok(ts.get(&format!("/keys/bk/{v1}")).await);
    assert_eq!(old["tags"], json!({"t": "1"}));
    assert_eq!(old["key"]["crv"], "P-384");
    let got = ok(ts.get("/keys/bk/rotationpolicy").await);
    assert_eq!(got["lifetimeActions"], set["lifetimeActions"]);
    assert_eq!(got["attributes"]["expiryTime"], "P90D");
    // Private material survived: the v1 signature still verifies and v1 still signs.
    let r = ok(ts
        .op(
            "bk",
            &v1,
            "verify",
            json!({"alg": "ES384", "digest": digest, "value": sig_v1["value"]}),
        )
        .await);
    assert_eq!(r["value"], true);
    ok(ts
        .op("bk", &v2, "sign", json!({"alg": "ES384", "value": digest}))
        .await);

    // Restore into another vault of the same server: ids carry that vault's host.
    ts.create_vault("kv1", 7, false).await;
    let kv1 = ts.vault_base("kv1");
    let b = ok(ts
        .req_at(
            &kv1,
            Method::POST,
            "/keys/restore",
            Some(json!({"value": blob})),
        )
        .await);
    assert_eq!(b["key"]["kid"], format!("{kv1}/keys/bk/{v3}"));
    assert_eq!(b["attributes"]["recoverableDays"], 7);

    // A tampered blob, a truncated one, and garbage are 400 BadParameter.
    let mut raw = unb64(&blob);
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    ok(ts.delete("/keys/bk").await);
    assert_eq!(ts.delete("/deletedkeys/bk").await.0, 204);
    for bad in [
        b64(&raw),
        b64(&unb64(&blob)[..mid]),
        b64(b"not a backup"),
        String::new(),
    ] {
        let r = ts.post("/keys/restore", json!({"value": bad})).await;
        expect_error(&r, 400, "BadParameter");
    }
    expect_error(&ts.get("/keys/bk").await, 404, "KeyNotFound");
    expect_error(
        &ts.post_empty("/keys/nope/backup").await,
        404,
        "KeyNotFound",
    );
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn rotate_and_rotation_policy() {
    let ts = TestServer::start().await;
    let first = ts
        .create_key(
            "rot",
            json!({"kty": "RSA", "key_ops": ["sign", "verify"], "tags": {"x": "y"}}),
        )
        .await;
    let v1 = version_of(&first);

    // Default policy: 200, no id, one Notify 30 days before expiry, no attribute values.
    let p = ok(ts.get("/keys/rot/rotationpolicy").await);
    assert!(p.get("id").is_none(), "default policy has no id: {p}");
    assert_eq!(
        p["lifetimeActions"],
        json!([{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}])
    );
    assert!(p["attributes"].get("expiryTime").is_none(), "{p}");

    // Validation.
    let rotate = |trigger: Value| json!({"trigger": trigger, "action": {"type": "Rotate"}});
    let bad = [
        json!({"lifetimeActions": [rotate(json!({"timeAfterCreate": "P30D"}))],
               "attributes": {"expiryTime": "P27D"}}),
        json!({"lifetimeActions": [rotate(json!({"timeAfterCreate": "P6D"}))]}),
        json!({"lifetimeActions": [rotate(json!({"timeBeforeExpiry": "P10D"}))]}),
        json!({"lifetimeActions": [rotate(json!({"timeAfterCreate": "P30D", "timeBeforeExpiry": "P30D"}))],
               "attributes": {"expiryTime": "P90D"}}),
        json!({"lifetimeActions": [rotate(json!({}))]}),
        json!({"lifetimeActions": [rotate(json!({"timeAfterCreate": "thirty days"}))]}),
        json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Explode"}}]}),
        json!({"lifetimeActions": [rotate(json!({"timeAfterCreate": "P30D"})), rotate(json!({"timeAfterCreate": "P40D"}))]}),
        json!({"lifetimeActions": [rotate(json!({"timeBeforeExpiry": "P5D"}))], "attributes": {"expiryTime": "P90D"}}),
        json!({"lifetimeActions": "rotate please"}),
    ];
    for body in bad {
        let r = ts.put("/keys/rot/rotationpolicy", body).await;
        expect_error(&r, 400, "BadParameter");
    }
    // Nothing was stored by the refused requests.
    assert!(ok(ts.get("/keys/rot/rotationpolicy").await)
        .get("id")
        .is_none());

    // A Rotate-only policy gets the default Notify added; the id appears.
    let set = ok(ts
        .put(
            "/keys/rot/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "rotate"}}],
                   "attributes": {"expiryTime": "P90D"}}),
        )
        .await);
    assert_eq!(set["id"], format!("{}/keys/rot/rotationpolicy", ts.base));
    let actions = set["lifetimeActions"].as_array().unwrap();
    assert_eq!(actions.len(), 2, "{set}");
    assert!(actions
        .contains(&json!({"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}})));
    assert!(actions
        .contains(&json!({"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}})));
    assert_eq!(set["attributes"]["expiryTime"], "P90D");
    let created = set["attributes"]["created"].as_i64().expect("created");
    assert!(set["attributes"]["updated"].as_i64().unwrap() >= created);
    assert_eq!(ok(ts.get("/keys/rot/rotationpolicy").await), set);

    // Rotate: a new version of the same type, size and operations, exp from expiryTime.
    let b = ok(ts.post_empty("/keys/rot/rotate").await);
    let v2 = version_of(&b);
    assert_ne!(v1, v2);
    assert_eq!(b["key"]["kty"], "RSA");
    assert_eq!(b["key"]["key_ops"], json!(["sign", "verify"]));
    assert_eq!(unb64v(&b["key"]["n"]).len(), 256);
    assert_ne!(b["key"]["n"], first["key"]["n"]);
    assert_eq!(b["tags"], json!({"x": "y"}));
    let c = b["attributes"]["created"].as_i64().unwrap();
    assert_eq!(
        b["attributes"]["exp"],
        c + 90 * DAY,
        "exp = created + expiryTime"
    );
    // So does create on the same name.
    let b = ts.create_key("rot", json!({"kty": "RSA"})).await;
    let c = b["attributes"]["created"].as_i64().unwrap();
    assert_eq!(b["attributes"]["exp"], c + 90 * DAY);
    assert!(first["attributes"].get("exp").is_none());
    assert_eq!(ts.list_all("/keys/rot/versions").await.len(), 3);

    // An empty action list resets to the default Notify.
    let reset = ok(ts
        .put("/keys/rot/rotationpolicy", json!({"lifetimeActions": []}))
        .await);
    assert_eq!(
        reset["lifetimeActions"],
        json!([{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}])
    );

    // A before-expiry rotation with an expiryTime is valid.
    ok(ts
        .put(
            "/keys/rot/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P10D"}, "action": {"type": "Rotate"}},
                                       {"trigger": {"timeBeforeExpiry": "P20D"}, "action": {"type": "Notify"}}],
                   "attributes": {"expiryTime": "P2M"}}),
        )
        .await);

    expect_error(
        &ts.post_empty("/keys/nope/rotate").await,
        404,
        "KeyNotFound",
    );
    expect_error(
        &ts.get("/keys/nope/rotationpolicy").await,
        404,
        "KeyNotFound",
    );
    let r = ts
        .put("/keys/nope/rotationpolicy", json!({"lifetimeActions": []}))
        .await;
    expect_error(&r, 404, "KeyNotFound");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn auto_rotation_by_policy_and_clock() {
    let ts = TestServer::start().await;
    ts.create_key("auto-a", json!({"kty": "EC"})).await;
    let now = ts.now();
    ts.create_key(
        "auto-b",
        json!({"kty": "oct-HSM", "attributes": {"exp": now + 40 * DAY}}),
    )
    .await;
    ts.create_key("auto-none", json!({"kty": "EC"})).await;
    ok(ts
        .put(
            "/keys/auto-a/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}]}),
        )
        .await);
    ok(ts
        .put(
            "/keys/auto-b/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P10D"}, "action": {"type": "Rotate"}}],
                   "attributes": {"expiryTime": "P60D"}}),
        )
        .await);
    assert_eq!(ts.maintenance().await, (0, 0), "nothing due yet");

    ts.advance(30 * DAY - 120);
    assert_eq!(ts.maintenance().await, (0, 0), "not yet");
    ts.advance(240);
    assert_eq!(ts.maintenance().await, (0, 2), "both rotate at day 30");
    assert_eq!(
        ts.maintenance().await,
        (0, 0),
        "the new versions are not due"
    );
    assert_eq!(ts.list_all("/keys/auto-a/versions").await.len(), 2);
    assert_eq!(ts.list_all("/keys/auto-b/versions").await.len(), 2);
    assert_eq!(ts.list_all("/keys/auto-none/versions").await.len(), 1);
    let b = ok(ts.get("/keys/auto-b").await);
    let c = b["attributes"]["created"].as_i64().unwrap();
    assert_eq!(b["attributes"]["exp"], c + 60 * DAY);
    assert_eq!(b["key"]["kty"], "oct-HSM");

    // auto-b's new version expires at day 90; its rotation is due 10 days before.
    ts.advance(50 * DAY + 60);
    assert_eq!(
        ts.maintenance().await,
        (0, 2),
        "auto-a (day 30 of v2) and auto-b (10 days before exp)"
    );
    assert_eq!(ts.list_all("/keys/auto-b/versions").await.len(), 3);
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn random_bytes() {
    let ts = TestServer::start().await;
    let mut seen = BTreeSet::new();
    for count in [1, 16, 32, 128] {
        let r = ok(ts.post("/rng", json!({"count": count})).await);
        let bytes = unb64v(&r["value"]);
        assert_eq!(bytes.len(), count);
        seen.insert(bytes);
    }
    assert_eq!(seen.len(), 4);
    for count in [
        json!(0),
        json!(129),
        json!(-1),
        json!(1_000_000),
        json!("8"),
        json!(null),
    ] {
        let r = ts.post("/rng", json!({"count": count})).await;
        expect_error(&r, 400, "BadParameter");
    }
    expect_error(&ts.post_empty("/rng").await, 400, "BadParameter");
    // Also served on a named vault.
    ts.create_vault("kv1", 7, false).await;
    let r = ok(ts
        .req_at(
            &ts.vault_base("kv1"),
            Method::POST,
            "/rng",
            Some(json!({"count": 8})),
        )
        .await);
    assert_eq!(unb64v(&r["value"]).len(), 8);
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn names_are_case_insensitive_and_versions_continue_after_restore() {
    let ts = TestServer::start().await;
    let v1 = version_of(&ts.create_key("CaseKey", json!({"kty": "EC"})).await);
    let b = ts.create_key("casekey", json!({"kty": "EC"})).await;
    let v2 = version_of(&b);
    assert_eq!(
        b["key"]["kid"],
        format!("{}/keys/CaseKey/{v2}", ts.base),
        "the name keeps the case it was created with"
    );
    assert_eq!(ts.list_all("/keys/CASEKEY/versions").await.len(), 2);
    let keys = ts.list_all("/keys").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], format!("{}/keys/CaseKey", ts.base));

    // Backup, purge, restore, then rotate: the new version is the latest.
    let blob = ok(ts.post_empty("/keys/casekey/backup").await)["value"].clone();
    let d = ok(ts.delete("/keys/CASEKEY").await);
    assert_eq!(d["recoveryId"], format!("{}/deletedkeys/CaseKey", ts.base));
    assert_eq!(ts.delete("/deletedkeys/casekey").await.0, 204);
    ok(ts.post("/keys/restore", json!({"value": blob})).await);
    let v3 = version_of(&ok(ts.post_empty("/keys/casekey/rotate").await));
    assert_eq!(version_of(&ok(ts.get("/keys/CaseKey").await)), v3);
    let listed: Vec<String> = ts
        .list_all("/keys/casekey/versions?maxresults=1")
        .await
        .iter()
        .map(version_of)
        .collect();
    assert_eq!(listed.len(), 3);
    for v in [&v1, &v2, &v3] {
        assert!(listed.contains(v), "{v} missing from {listed:?}");
    }
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn concurrent_creates_on_one_name_all_become_versions() {
    let ts = TestServer::start().await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = ts.client.clone();
        let url = ts.url(&ts.base, "/keys/busy/create");
        let token = ts.token.clone();
        tasks.push(tokio::spawn(async move {
            send(
                client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"kty": "EC"})),
            )
            .await
        }));
    }
    let mut versions = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        versions.insert(version_of(&ok(r)));
    }
    assert_eq!(versions.len(), 12);
    let listed: BTreeSet<String> = ts
        .list_all("/keys/busy/versions?maxresults=5")
        .await
        .iter()
        .map(version_of)
        .collect();
    assert_eq!(listed, versions);
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn http2_uses_the_authority_and_response_headers() {
    let ts = TestServer::start().await;
    ts.create_vault("kv1", 7, false).await;
    let mut tls = tls_config(&ts.dir.path().join("tls").join("ca.pem"));
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let h2 = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("kv1.vault.local", ts.srv.addr)
        .no_proxy()
        .build()
        .unwrap();
    for base in [ts.base.clone(), ts.vault_base("kv1")] {
        let resp = h2
            .post(with_api_version(&format!("{base}/keys/h2key/create")))
            .bearer_auth(&ts.token)
            .header("x-ms-client-request-id", "abc-123")
            .json(&json!({"kty": "EC"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ms-client-request-id"], "abc-123");
        assert!(resp.headers().contains_key("x-ms-request-id"));
        let b: Value = resp.json().await.unwrap();
        assert!(
            b["key"]["kid"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{base}/keys/h2key/")),
            "{b}"
        );
        // And the challenge over HTTP/2.
        let resp = h2
            .post(with_api_version(&format!("{base}/keys/h2key/create")))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().contains_key("www-authenticate"));
    }
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn extreme_durations_and_timestamps_do_not_crash() {
    let ts = TestServer::start().await;
    let huge = "PT9223372036854775807S";
    // An expiryTime near i64::MAX seconds: rotate and create still work, exp saturates.
    ts.create_key("big", json!({"kty": "EC"})).await;
    ok(ts
        .put(
            "/keys/big/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
                   "attributes": {"expiryTime": huge}}),
        )
        .await);
    let b = ok(ts.post_empty("/keys/big/rotate").await);
    assert!(
        b["attributes"]["exp"].as_i64().unwrap() > ts.now() + 100 * 365 * DAY,
        "{b}"
    );
    let v = version_of(&b);
    let d = b64(&digest(256, b"far future"));
    ok(ts
        .op("big", &v, "sign", json!({"alg": "ES256", "value": d}))
        .await);
    ts.create_key("big", json!({"kty": "EC"})).await;

    // A trigger near i64::MAX, and extreme exp/nbf values, with maintenance running.
    ts.create_key("late", json!({"kty": "EC"})).await;
    ok(ts
        .put(
            "/keys/late/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": huge}, "action": {"type": "Rotate"}}]}),
        )
        .await);
    ts.create_key(
        "early",
        json!({"kty": "EC", "attributes": {"exp": i64::MIN, "nbf": i64::MIN}}),
    )
    .await;
    ok(ts
        .put(
            "/keys/early/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Rotate"}}],
                   "attributes": {"expiryTime": "P60D"}}),
        )
        .await);
    ts.create_key(
        "forever",
        json!({"kty": "EC", "attributes": {"exp": i64::MAX, "nbf": 1.0e300}}),
    )
    .await;
    let (_, rotated) = ts.maintenance().await;
    assert_eq!(rotated, 1, "only 'early' (expired long ago) is due");
    assert_eq!(ts.maintenance().await, (0, 0));
    assert_eq!(ts.list_all("/keys/late/versions").await.len(), 1);
    // The write path still works afterwards.
    ts.create_key("after", json!({"kty": "EC"})).await;
    ts.srv.shutdown().await;
}
