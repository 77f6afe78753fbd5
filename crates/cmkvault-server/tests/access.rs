//! Identities, the OAuth token endpoint, RBAC (every built-in role × every operation × vault
//! and key scope), custom roles, access-policy vaults, tenant isolation, delegated role
//! management by a Data Access Administrator, and the refusal of management to non-admins.
//!
//! Expectations come from explicit tables written here from the Azure role definitions, never
//! from the product's own decision function.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::collections::HashSet;

use cmkvault_vault::authz::Operation;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const SCOPE: &str = "https://vault.azure.net/.default";

const ADMINISTRATOR: &str = "Key Vault Administrator";
const CRYPTO_OFFICER: &str = "Key Vault Crypto Officer";
const CRYPTO_USER: &str = "Key Vault Crypto User";
const SERVICE_ENCRYPTION_USER: &str = "Key Vault Crypto Service Encryption User";
const SERVICE_RELEASE_USER: &str = "Key Vault Crypto Service Release User";
const READER: &str = "Key Vault Reader";
const DATA_ACCESS_ADMINISTRATOR: &str = "Key Vault Data Access Administrator";

/// Every built-in role with its Azure id.
const BUILT_IN: [(&str, &str); 7] = [
    (ADMINISTRATOR, "00482a5a-887f-4fb3-b363-3b7fe8e74483"),
    (CRYPTO_OFFICER, "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"),
    (CRYPTO_USER, "12338af0-0e69-4776-bea7-57ae8d297424"),
    (
        SERVICE_ENCRYPTION_USER,
        "e147488a-f6f5-4113-8e2d-b22465e65bf6",
    ),
    (SERVICE_RELEASE_USER, "08bbd89e-9f13-488c-ac41-acfcb10c90ab"),
    (READER, "21090545-7ca7-4776-b22c-e363652d74d2"),
    (
        DATA_ACCESS_ADMINISTRATOR,
        "8b54135c-b56d-4d72-a534-26097cfdc8d8",
    ),
];

// ---------------------------------------------------------------- helpers

/// `(status, body)` of a request whose error body need not be Azure-shaped (OAuth).
async fn raw(rb: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = rb.send().await.expect("request reaches the test server");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status < 500, "server error {status}: {body}");
    (status, headers, body)
}

fn tenant(ts: &TestServer) -> String {
    ts.srv.tokens.tenant_id().to_string()
}

fn token_url(ts: &TestServer, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/token", ts.base)
}

/// POSTs a token request form.
async fn token_request(
    ts: &TestServer,
    tenant: &str,
    fields: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        form.append_pair(k, v);
    }
    raw(ts
        .client
        .post(token_url(ts, tenant))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.finish()))
    .await
}

const GRANT: &str = "client_credentials";

/// A client-credentials token request; returns status and body.
async fn creds(
    ts: &TestServer,
    tenant: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
    grant: &str,
) -> (u16, Value) {
    let (s, _, body) = token_request(
        ts,
        tenant,
        &[
            ("grant_type", grant),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .await;
    (s, body)
}

/// An identity created through the management API.
#[derive(Clone, Debug)]
struct Identity {
    name: String,
    object_id: String,
    client_id: String,
    secret: String,
}

async fn create_identity(ts: &TestServer, name: &str) -> Identity {
    let v = ok(ts
        .req(Method::PUT, &format!("/management/identities/{name}"), None)
        .await);
    Identity {
        name: name.to_string(),
        object_id: v["objectId"].as_str().unwrap().to_string(),
        client_id: v["clientId"].as_str().unwrap().to_string(),
        secret: v["clientSecret"].as_str().unwrap().to_string(),
    }
}

/// A vault token for `id` through the client-credentials flow (asserting success).
async fn login(ts: &TestServer, id: &Identity) -> String {
    let t = tenant(ts);
    let (status, headers, body) = token_request(
        ts,
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id.client_id),
            ("client_secret", &id.secret),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(status, 200, "token for {}: {body}", id.name);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    assert_eq!(headers["cache-control"], "no-store");
    body["access_token"].as_str().unwrap().to_string()
}

/// A request to `base` with `token`.
async fn call(
    ts: &TestServer,
    token: &str,
    method: Method,
    base: &str,
    path: &str,
    body: Option<Value>,
) -> Resp {
    let mut rb = ts
        .client
        .request(method, ts.url(base, path))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    send(rb).await
}

/// Admin: assigns `role` to `principal` on `vault` (optionally one key); returns the id.
async fn assign(
    ts: &TestServer,
    vault: &str,
    principal: &str,
    role: &str,
    key: Option<&str>,
) -> String {
    let mut body = json!({"principal": principal, "role": role});
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    let a = ok(ts
        .req(
            Method::PUT,
            &format!("/management/vaults/{vault}/roleAssignments"),
            Some(body),
        )
        .await);
    a["id"].as_str().unwrap().to_string()
}

/// Admin: creates a key in `vault` and returns its version.
async fn admin_key(ts: &TestServer, vault: &str, name: &str, body: Value) -> String {
    let base = base_of(ts, vault);
    let r = ts
        .req_at(
            &base,
            Method::POST,
            &format!("/keys/{name}/create"),
            Some(body),
        )
        .await;
    version_of(&ok(r))
}

fn base_of(ts: &TestServer, vault: &str) -> String {
    if vault == "default" {
        ts.base.clone()
    } else {
        ts.vault_base(vault)
    }
}

/// A management PUT with `token`.
async fn put_as(ts: &TestServer, token: &str, path: &str, body: Value) -> Resp {
    call(ts, token, Method::PUT, &ts.base, path, Some(body)).await
}

#[track_caller]
fn assert_allowed(r: &Resp, what: &str) {
    assert_ne!(r.0, 403, "{what} should be allowed: {}", r.2);
    assert_ne!(r.0, 401, "{what}: {}", r.2);
}

#[track_caller]
fn assert_rbac_denied(r: &Resp, what: &str) -> String {
    assert_eq!(r.0, 403, "{what} should be denied: {}", r.2);
    expect_inner(r, 403, "Forbidden", "ForbiddenByRbac");
    r.2["error"]["message"].as_str().unwrap().to_string()
}

#[track_caller]
fn assert_policy_denied(r: &Resp, what: &str) {
    assert_eq!(r.0, 403, "{what} should be denied: {}", r.2);
    expect_inner(r, 403, "Forbidden", "ForbiddenByPolicy");
}

// ---------------------------------------------------------------- the role table

/// What each built-in role may do at vault scope, written from Azure's role definitions
/// (Administrator `vaults/*`; Officer `keys/*` + `keyrotationpolicies/*`; Crypto User read,
/// update, backup and the six crypto actions; Service Encryption User read, wrap, unwrap;
/// Release User release only; Reader `vaults/*/read`; Data Access Administrator nothing).
fn vault_scope_grants(role: &str) -> Vec<Operation> {
    use Operation::*;
    let read = [
        KeyGet,
        KeyList,
        KeyListVersions,
        KeyGetDeleted,
        KeyListDeleted,
    ];
    match role {
        ADMINISTRATOR => Operation::ALL.to_vec(),
        CRYPTO_OFFICER => Operation::ALL
            .into_iter()
            .filter(|o| *o != GetRandomBytes)
            .collect(),
        CRYPTO_USER => [
            &read[..],
            &[
                KeyUpdate, KeyBackup, KeyEncrypt, KeyDecrypt, KeyWrap, KeyUnwrap, KeySign,
                KeyVerify,
            ],
        ]
        .concat(),
        SERVICE_ENCRYPTION_USER => [&read[..], &[KeyWrap, KeyUnwrap]].concat(),
        SERVICE_RELEASE_USER => vec![KeyRelease],
        READER => [&read[..], &[KeyRotationPolicyGet]].concat(),
        DATA_ACCESS_ADMINISTRATOR => vec![],
        other => panic!("no table for {other}"),
    }
}

/// Operations that address one key (a key-scope assignment can reach only these).
fn addresses_key(op: Operation) -> bool {
    !matches!(
        op,
        Operation::KeyList
            | Operation::KeyListDeleted
            | Operation::KeyRestore
            | Operation::GetRandomBytes
            | Operation::KeyRelease
    )
}

/// The order the matrix runs operations in (destructive ones last), with the request for each.
const MATRIX_ORDER: [Operation; 23] = [
    Operation::KeyGet,
    Operation::KeyList,
    Operation::KeyListVersions,
    Operation::KeyEncrypt,
    Operation::KeyDecrypt,
    Operation::KeyWrap,
    Operation::KeyUnwrap,
    Operation::KeySign,
    Operation::KeyVerify,
    Operation::KeyUpdate,
    Operation::KeyRotationPolicyGet,
    Operation::KeyRotationPolicySet,
    Operation::KeyBackup,
    Operation::KeyRestore,
    Operation::GetRandomBytes,
    Operation::KeyCreate,
    Operation::KeyImport,
    Operation::KeyRotate,
    Operation::KeyDelete,
    Operation::KeyGetDeleted,
    Operation::KeyListDeleted,
    Operation::KeyRecover,
    Operation::KeyPurge,
];

/// The request that exercises `op` on key `name` (RSA, version `v`).
fn request_for(op: Operation, name: &str, v: &str) -> (Method, String, Option<Value>) {
    use Operation::*;
    let b = |n: usize| b64(&random(n));
    let (m, p, body) = match op {
        KeyGet => (Method::GET, format!("/keys/{name}/{v}"), None),
        KeyList => (Method::GET, "/keys".into(), None),
        KeyListVersions => (Method::GET, format!("/keys/{name}/versions"), None),
        KeyEncrypt => (
            Method::POST,
            format!("/keys/{name}/{v}/encrypt"),
            Some(json!({"alg": "RSA-OAEP-256", "value": b(32)})),
        ),
        KeyDecrypt => (
            Method::POST,
            format!("/keys/{name}/{v}/decrypt"),
            Some(json!({"alg": "RSA-OAEP-256", "value": b(256)})),
        ),
        KeyWrap => (
            Method::POST,
            format!("/keys/{name}/{v}/wrapkey"),
            Some(json!({"alg": "RSA-OAEP-256", "value": b(32)})),
        ),
        KeyUnwrap => (
            Method::POST,
            format!("/keys/{name}/{v}/unwrapkey"),
            Some(json!({"alg": "RSA-OAEP-256", "value": b(256)})),
        ),
        KeySign => (
            Method::POST,
            format!("/keys/{name}/{v}/sign"),
            Some(json!({"alg": "RS256", "value": b(32)})),
        ),
        KeyVerify => (
            Method::POST,
            format!("/keys/{name}/{v}/verify"),
            Some(json!({"alg": "RS256", "digest": b(32), "value": b(256)})),
        ),
        KeyUpdate => (
            Method::PATCH,
            format!("/keys/{name}/{v}"),
            Some(json!({"tags": {"touched": "yes"}})),
        ),
        KeyRotationPolicyGet => (Method::GET, format!("/keys/{name}/rotationpolicy"), None),
        KeyRotationPolicySet => (
            Method::PUT,
            format!("/keys/{name}/rotationpolicy"),
            Some(json!({"lifetimeActions": []})),
        ),
        KeyBackup => (Method::POST, format!("/keys/{name}/backup"), None),
        KeyRestore => (
            Method::POST,
            "/keys/restore".into(),
            Some(json!({"value": b(64)})),
        ),
        GetRandomBytes => (Method::POST, "/rng".into(), Some(json!({"count": 8}))),
        KeyCreate => (
            Method::POST,
            format!("/keys/{name}/create"),
            Some(json!({"kty": "EC"})),
        ),
        KeyImport => (Method::PUT, format!("/keys/{name}"), Some(json!({}))),
        KeyRotate => (Method::POST, format!("/keys/{name}/rotate"), None),
        KeyDelete => (Method::DELETE, format!("/keys/{name}"), None),
        KeyGetDeleted => (Method::GET, format!("/deletedkeys/{name}"), None),
        KeyListDeleted => (Method::GET, "/deletedkeys".into(), None),
        KeyRecover => (Method::POST, format!("/deletedkeys/{name}/recover"), None),
        KeyPurge => (Method::DELETE, format!("/deletedkeys/{name}"), None),
        KeyRelease => unreachable!("release is not exercised"),
    };
    (m, p, body)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn oauth_flow_tokens_rotation_and_deletion() {
    let ts = TestServer::start().await;
    let t = tenant(&ts);

    // Discovery.
    let (s, _, doc) = raw(ts.client.get(format!(
        "{}/{t}/v2.0/.well-known/openid-configuration",
        ts.base
    )))
    .await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(
        doc["token_endpoint"],
        format!("https://localhost:{}/{t}/oauth2/v2.0/token", ts.port())
    );
    assert!(doc["authorization_endpoint"]
        .as_str()
        .unwrap()
        .starts_with(&format!("https://localhost:{}/{t}/", ts.port())));
    assert!(doc["issuer"].as_str().unwrap().contains(&t));
    // The issuer advertised is the one the tokens carry.
    assert_eq!(doc["issuer"], ts.srv.tokens.issuer(), "{doc}");
    let (s, _, jwks) = raw(ts
        .client
        .get(format!("{}/{t}/discovery/v2.0/keys", ts.base)))
    .await;
    assert_eq!(s, 200);
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    // An identity with Crypto User on the default vault gets a token that works there.
    let app = create_identity(&ts, "svc-app").await;
    assert_eq!(app.secret.len(), 43, "32 random bytes, base64url");
    let v = admin_key(&ts, "default", "k1", json!({"kty": "EC"})).await;
    let token = login(&ts, &app).await;
    let r = call(&ts, &token, Method::GET, &ts.base, "/keys/k1", None).await;
    assert_rbac_denied(&r, "get before any assignment");
    assign(&ts, "default", &app.name, CRYPTO_USER, None).await;
    let r = call(
        &ts,
        &token,
        Method::GET,
        &ts.base,
        &format!("/keys/k1/{v}"),
        None,
    )
    .await;
    assert_eq!(ok(r)["key"]["kty"], "EC");

    // HTTP Basic client authentication works too.
    let (s, _, body) = raw(ts
        .client
        .post(token_url(&ts, &t))
        .basic_auth(&app.client_id, Some(&app.secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&scope={}",
            "https%3A%2F%2Fvault.azure.net%2F.default"
        )))
    .await;
    assert_eq!(s, 200, "{body}");

    // Wrong secret, unknown client, unknown tenant, bad scope, bad grant.
    let (s, body) = creds(&ts, &t, &app.client_id, "wrong-secret", SCOPE, GRANT).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS"));
    let unknown = "11111111-2222-3333-4444-555555555555";
    let (s, body) = creds(&ts, &t, unknown, &app.secret, SCOPE, GRANT).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    let other_tenant = "99999999-9999-9999-9999-999999999999";
    let (s, body) = creds(&ts, other_tenant, &app.client_id, &app.secret, SCOPE, GRANT).await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let storage = "https://storage.azure.com/.default";
    let (s, body) = creds(&ts, &t, &app.client_id, &app.secret, storage, GRANT).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"], "invalid_scope");
    let (s, body) = creds(&ts, &t, &app.client_id, &app.secret, SCOPE, "password").await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"], "unsupported_grant_type");

    // Rotation: the old secret stops working, the new one works.
    let rotated = ok(ts
        .post_empty("/management/identities/svc-app/rotateSecret")
        .await);
    assert_eq!(rotated["objectId"], app.object_id.as_str());
    assert_eq!(rotated["clientId"], app.client_id.as_str());
    let new_secret = rotated["clientSecret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, app.secret);
    let (s, body) = creds(&ts, &t, &app.client_id, &app.secret, SCOPE, GRANT).await;
    assert_eq!(s, 401, "old secret after rotation: {body}");
    assert_eq!(body["error"], "invalid_client");
    let app2 = Identity {
        secret: new_secret,
        ..app.clone()
    };
    let token2 = login(&ts, &app2).await;
    ok(call(
        &ts,
        &token2,
        Method::GET,
        &ts.base,
        &format!("/keys/k1/{v}"),
        None,
    )
    .await);

    // Deletion: tokens already issued stop working at once (401 with the challenge), and the
    // credentials are refused.
    let deleted = ok(ts
        .delete(&format!("/management/identities/{}", app.object_id))
        .await);
    assert_eq!(deleted["displayName"], "svc-app");
    for tok in [&token, &token2] {
        let r = call(
            &ts,
            tok,
            Method::GET,
            &ts.base,
            &format!("/keys/k1/{v}"),
            None,
        )
        .await;
        expect_error(&r, 401, "Unauthorized");
        assert!(r.1.get("www-authenticate").is_some());
    }
    let (s, body) = creds(&ts, &t, &app.client_id, &app2.secret, SCOPE, GRANT).await;
    assert_eq!(s, 401, "{body}");
    expect_error(
        &ts.get(&format!("/management/identities/{}", app.client_id))
            .await,
        404,
        "NotFound",
    );
    // Its assignments went with it.
    let list = ok(ts.get("/management/vaults/default/roleAssignments").await);
    assert_eq!(list["value"].as_array().unwrap().len(), 0, "{list}");
    ts.stop().await;
}

#[tokio::test]
async fn identity_and_role_definition_routes() {
    let ts = TestServer::start().await;
    let a = ok(ts
        .req(Method::PUT, "/management/identities/svc-a", None)
        .await);
    for f in [
        "objectId",
        "clientId",
        "displayName",
        "tenantId",
        "clientSecret",
    ] {
        assert!(a[f].is_string(), "{f} in {a}");
    }
    assert!(a["created"].is_i64());
    assert_eq!(a["tenantId"], tenant(&ts));
    let dup = ts
        .req(Method::PUT, "/management/identities/svc-a", None)
        .await;
    let m = expect_error(&dup, 409, "Conflict");
    assert!(m.contains("svc-a"), "{m}");
    expect_error(
        &ts.req(Method::PUT, "/management/identities/bad%20name", None)
            .await,
        400,
        "BadParameter",
    );
    // Get by name, object id and client id; never a secret.
    for id in [
        "svc-a",
        a["objectId"].as_str().unwrap(),
        a["clientId"].as_str().unwrap(),
    ] {
        let g = ok(ts.get(&format!("/management/identities/{id}")).await);
        assert_eq!(g["objectId"], a["objectId"]);
        assert!(g.get("clientSecret").is_none());
    }
    let list = ok(ts.get("/management/identities").await);
    let items = list["value"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("clientSecret").is_none());
    expect_error(
        &ts.get("/management/identities/nobody").await,
        404,
        "NotFound",
    );
    expect_error(
        &ts.post_empty("/management/identities/nobody/rotateSecret")
            .await,
        404,
        "NotFound",
    );
    expect_error(
        &ts.req(Method::POST, "/management/identities", None).await,
        405,
        "MethodNotAllowed",
    );

    // Role definitions: the seven built-ins with Azure's ids.
    let roles = ok(ts.get("/management/roleDefinitions").await);
    let roles = roles["value"].as_array().unwrap();
    for (name, id) in BUILT_IN {
        let r = roles
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(r["id"], id);
        assert_eq!(r["builtIn"], true);
        assert!(r["dataActions"].is_array() && r["notDataActions"].is_array());
    }
    let r = ok(ts
        .put(
            "/management/roleDefinitions/Unwrapper",
            json!({"dataActions": ["Microsoft.KeyVault/vaults/keys/unwrap/action"]}),
        )
        .await);
    assert_eq!(r["builtIn"], false);
    assert_eq!(r["name"], "Unwrapper");
    expect_error(
        &ts.put(
            "/management/roleDefinitions/Unwrapper",
            json!({"dataActions": ["Microsoft.KeyVault/vaults/keys/read"]}),
        )
        .await,
        409,
        "Conflict",
    );
    expect_error(
        &ts.put(
            "/management/roleDefinitions/Bad",
            json!({"dataActions": ["Microsoft.Storage/x"]}),
        )
        .await,
        400,
        "BadParameter",
    );
    expect_error(
        &ts.put(
            "/management/roleDefinitions/Bad",
            json!({"dataActions": "x"}),
        )
        .await,
        400,
        "BadParameter",
    );
    expect_error(
        &ts.delete("/management/roleDefinitions/Key%20Vault%20Reader")
            .await,
        400,
        "BadParameter",
    );
    let d = ok(ts
        .delete(&format!(
            "/management/roleDefinitions/{}",
            r["id"].as_str().unwrap()
        ))
        .await);
    assert_eq!(d["name"], "Unwrapper");
    expect_error(
        &ts.delete("/management/roleDefinitions/Unwrapper").await,
        404,
        "NotFound",
    );

    // Assignment errors.
    let bad = |body: Value| ts.put("/management/vaults/default/roleAssignments", body);
    expect_error(
        &bad(json!({"principal": "svc-a", "role": "No Such Role"})).await,
        404,
        "NotFound",
    );
    expect_error(
        &bad(json!({"principal": "nobody", "role": READER})).await,
        404,
        "NotFound",
    );
    expect_error(&bad(json!({"role": READER})).await, 400, "BadParameter");
    expect_error(
        &ts.put(
            "/management/vaults/nosuch/roleAssignments",
            json!({"principal": "svc-a", "role": READER}),
        )
        .await,
        404,
        "VaultNotFound",
    );
    let id = assign(&ts, "default", "svc-a", READER, Some("Some-Key")).await;
    expect_error(
        &bad(json!({"principal": "svc-a", "role": READER, "key": "some-key"})).await,
        409,
        "Conflict",
    );
    let list = ok(ts
        .get(&format!(
            "/management/vaults/default/roleAssignments?principal={}",
            a["clientId"].as_str().unwrap()
        ))
        .await);
    let items = list["value"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["scope"], "/keys/some-key");
    assert_eq!(items[0]["vault"], "default");
    assert_eq!(items[0]["roleName"], READER);
    assert_eq!(
        items[0]["roleDefinitionId"],
        "21090545-7ca7-4776-b22c-e363652d74d2"
    );
    assert_eq!(items[0]["principalId"], a["objectId"]);
    assert!(items[0]["created"].is_i64());
    // Removing needs the right vault.
    ts.create_vault("other", 7, false).await;
    expect_error(
        &ts.delete(&format!("/management/vaults/other/roleAssignments/{id}"))
            .await,
        404,
        "NotFound",
    );
    let removed = ok(ts
        .delete(&format!("/management/vaults/default/roleAssignments/{id}"))
        .await);
    assert_eq!(removed["id"], id.as_str());
    expect_error(
        &ts.delete(&format!("/management/vaults/default/roleAssignments/{id}"))
            .await,
        404,
        "NotFound",
    );
    ts.stop().await;
}

#[tokio::test]
async fn every_builtin_role_against_every_operation_at_vault_and_key_scope() {
    let ts = TestServer::start().await;
    ts.create_vault("matrix", 7, false).await;
    let base = ts.vault_base("matrix");

    // The order list covers every operation but release.
    let covered: HashSet<Operation> = MATRIX_ORDER.into_iter().collect();
    for op in Operation::ALL {
        assert!(
            op == Operation::KeyRelease || covered.contains(&op),
            "{op:?} is not exercised by the matrix"
        );
    }
    // Release needs attestation: 501 whoever asks.
    let r = ts
        .req_at(
            &base,
            Method::POST,
            "/keys/x/release",
            Some(json!({"target": "t"})),
        )
        .await;
    assert_eq!(r.0, 501, "{}", r.2);

    let mut checked = 0;
    for (ri, (role, _)) in BUILT_IN.iter().enumerate() {
        let grants = vault_scope_grants(role);
        for key_scope in [false, true] {
            let tag = format!("m{ri}{}", if key_scope { "k" } else { "v" });
            let id = create_identity(&ts, &tag).await;
            let key = format!("{tag}-key");
            let v = admin_key(&ts, "matrix", &key, json!({"kty": "RSA", "key_size": 2048})).await;
            assign(
                &ts,
                "matrix",
                &id.object_id,
                role,
                key_scope.then_some(key.as_str()),
            )
            .await;
            let token = login(&ts, &id).await;
            for op in MATRIX_ORDER {
                let expected = grants.contains(&op) && (!key_scope || addresses_key(op));
                let (m, path, body) = request_for(op, &key, &v);
                let r = call(&ts, &token, m.clone(), &base, &path, body).await;
                let what = format!(
                    "{role} at {} scope: {op:?} ({m} {path})",
                    if key_scope { "key" } else { "vault" }
                );
                if expected {
                    assert_allowed(&r, &what);
                } else {
                    let msg = assert_rbac_denied(&r, &what);
                    assert!(
                        msg.contains("Action: 'Microsoft.KeyVault/vaults/"),
                        "{what}: {msg}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 7 * 2 * 23);
    ts.stop().await;
}

#[tokio::test]
async fn service_encryption_user_is_get_wrap_unwrap_only() {
    let ts = TestServer::start().await;
    let v = admin_key(
        &ts,
        "default",
        "dataset-kek",
        json!({"kty": "RSA", "key_size": 2048}),
    )
    .await;
    let svc = create_identity(&ts, "svc-ai").await;
    assign(
        &ts,
        "default",
        "svc-ai",
        SERVICE_ENCRYPTION_USER,
        Some("dataset-kek"),
    )
    .await;
    let token = login(&ts, &svc).await;
    let b = ts.base.clone();

    let got = ok(call(&ts, &token, Method::GET, &b, "/keys/dataset-kek", None).await);
    assert_eq!(got["key"]["kty"], "RSA");
    let dek = random(32);
    let wrapped = ok(call(
        &ts,
        &token,
        Method::POST,
        &b,
        &format!("/keys/dataset-kek/{v}/wrapkey"),
        Some(json!({"alg": "RSA-OAEP-256", "value": b64(&dek)})),
    )
    .await);
    let unwrapped = ok(call(
        &ts,
        &token,
        Method::POST,
        &b,
        &format!("/keys/dataset-kek/{v}/unwrapkey"),
        Some(json!({"alg": "RSA-OAEP-256", "value": wrapped["value"]})),
    )
    .await);
    assert_eq!(unb64v(&unwrapped["value"]), dek);

    let refused: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::POST,
            format!("/keys/dataset-kek/{v}/sign"),
            Some(json!({"alg": "RS256", "value": b64(&digest(256, b"x"))})),
            "Microsoft.KeyVault/vaults/keys/sign/action",
        ),
        (
            Method::DELETE,
            "/keys/dataset-kek".into(),
            None,
            "Microsoft.KeyVault/vaults/keys/delete",
        ),
        (
            Method::POST,
            "/keys/dataset-kek/create".into(),
            Some(json!({"kty": "RSA"})),
            "Microsoft.KeyVault/vaults/keys/create/action",
        ),
        (
            Method::DELETE,
            "/deletedkeys/dataset-kek".into(),
            None,
            "Microsoft.KeyVault/vaults/keys/purge/action",
        ),
        (
            Method::POST,
            "/keys/dataset-kek/backup".into(),
            None,
            "Microsoft.KeyVault/vaults/keys/backup/action",
        ),
    ];
    for (m, path, body, action) in refused {
        let r = call(&ts, &token, m.clone(), &b, &path, body).await;
        let msg = assert_rbac_denied(&r, &format!("{m} {path}"));
        assert!(
            msg.contains(&format!("Action: '{action}'")),
            "{m} {path}: {msg}"
        );
        assert!(msg.contains(&svc.object_id), "caller named: {msg}");
    }
    // The key is untouched, and the denials are counted.
    ok(ts.get(&format!("/keys/dataset-kek/{v}")).await);
    let d = ok(ts.get("/management/denials").await);
    let mine: u64 = d["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["principal"] == svc.object_id.as_str())
        .inspect(|c| {
            assert_eq!(c["vault"], "default");
            assert_eq!(c["key"], "dataset-kek");
        })
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert_eq!(mine, 5, "{d}");
    // The counters are the administrator's.
    let r = call(&ts, &token, Method::GET, &b, "/management/denials", None).await;
    expect_error(&r, 403, "Forbidden");
    ts.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated_by_vault_and_key_scope() {
    let ts = TestServer::start().await;
    ts.create_vault("tenant-a", 7, false).await;
    ts.create_vault("tenant-b", 7, false).await;
    let (a, b) = (ts.vault_base("tenant-a"), ts.vault_base("tenant-b"));
    let va = admin_key(&ts, "tenant-a", "kek", json!({"kty": "EC"})).await;
    let vb = admin_key(&ts, "tenant-b", "kek", json!({"kty": "EC"})).await;
    let vo = admin_key(&ts, "tenant-a", "other", json!({"kty": "EC"})).await;
    let id = create_identity(&ts, "tenant-a-app").await;
    assign(&ts, "tenant-a", "tenant-a-app", CRYPTO_USER, Some("kek")).await;
    let token = login(&ts, &id).await;
    let sign = json!({"alg": "ES256", "value": b64(&digest(256, b"data"))});

    ok(call(&ts, &token, Method::GET, &a, "/keys/kek", None).await);
    ok(call(&ts, &token, Method::GET, &a, "/keys/KEK", None).await);
    ok(call(
        &ts,
        &token,
        Method::POST,
        &a,
        &format!("/keys/kek/{va}/sign"),
        Some(sign.clone()),
    )
    .await);

    // Same key name in the other tenant's vault.
    assert_rbac_denied(
        &call(&ts, &token, Method::GET, &b, "/keys/kek", None).await,
        "b/kek get",
    );
    assert_rbac_denied(
        &call(
            &ts,
            &token,
            Method::POST,
            &b,
            &format!("/keys/kek/{vb}/sign"),
            Some(sign.clone()),
        )
        .await,
        "b/kek sign",
    );
    // Another key in its own vault.
    assert_rbac_denied(
        &call(
            &ts,
            &token,
            Method::GET,
            &a,
            &format!("/keys/other/{vo}"),
            None,
        )
        .await,
        "a/other get",
    );
    assert_rbac_denied(
        &call(
            &ts,
            &token,
            Method::POST,
            &a,
            &format!("/keys/other/{vo}/sign"),
            Some(sign),
        )
        .await,
        "a/other sign",
    );
    // Listing keys needs vault scope.
    for base in [&a, &b] {
        assert_rbac_denied(
            &call(&ts, &token, Method::GET, base, "/keys", None).await,
            "list",
        );
        assert_rbac_denied(
            &call(&ts, &token, Method::GET, base, "/deletedkeys", None).await,
            "list deleted",
        );
    }
    // Key scope does not cover destructive operations the role lacks.
    assert_rbac_denied(
        &call(&ts, &token, Method::DELETE, &a, "/keys/kek", None).await,
        "delete",
    );
    ts.stop().await;
}

#[tokio::test]
async fn assignment_changes_apply_on_the_next_request_and_custom_roles_work() {
    let ts = TestServer::start().await;
    let v = admin_key(&ts, "default", "k", json!({"kty": "EC"})).await;
    let id = create_identity(&ts, "changer").await;
    let token = login(&ts, &id).await;
    let b = ts.base.clone();
    let get = format!("/keys/k/{v}");

    assert_rbac_denied(
        &call(&ts, &token, Method::GET, &b, &get, None).await,
        "before",
    );
    let aid = assign(&ts, "default", "changer", READER, None).await;
    ok(call(&ts, &token, Method::GET, &b, &get, None).await);
    ok(ts
        .delete(&format!("/management/vaults/default/roleAssignments/{aid}"))
        .await);
    assert_rbac_denied(
        &call(&ts, &token, Method::GET, &b, &get, None).await,
        "after removal",
    );

    // A custom role: everything on keys but delete and purge.
    let role = ok(ts
        .put(
            "/management/roleDefinitions/Keys%20Without%20Delete",
            json!({
                "dataActions": ["Microsoft.KeyVault/vaults/keys/*"],
                "notDataActions": [
                    "Microsoft.KeyVault/vaults/keys/delete",
                    "Microsoft.KeyVault/vaults/keys/purge/action"
                ]
            }),
        )
        .await);
    assert_eq!(role["name"], "Keys Without Delete");
    // Assign by id.
    assign(
        &ts,
        "default",
        &id.client_id,
        role["id"].as_str().unwrap(),
        None,
    )
    .await;
    ok(call(&ts, &token, Method::GET, &b, &get, None).await);
    ok(call(
        &ts,
        &token,
        Method::POST,
        &b,
        &format!("/keys/k/{v}/sign"),
        Some(json!({"alg": "ES256", "value": b64(&digest(256, b"x"))})),
    )
    .await);
    ok(call(
        &ts,
        &token,
        Method::POST,
        &b,
        "/keys/k2/create",
        Some(json!({"kty": "EC"})),
    )
    .await);
    let msg = assert_rbac_denied(
        &call(&ts, &token, Method::DELETE, &b, "/keys/k", None).await,
        "custom delete",
    );
    assert!(
        msg.contains("Action: 'Microsoft.KeyVault/vaults/keys/delete'"),
        "{msg}"
    );
    // Rotation policies are outside keys/*.
    assert_rbac_denied(
        &call(&ts, &token, Method::GET, &b, "/keys/k/rotationpolicy", None).await,
        "custom rotation policy",
    );
    // Deleting the role removes its assignments.
    ok(ts
        .delete("/management/roleDefinitions/keys%20without%20delete")
        .await);
    assert_rbac_denied(
        &call(&ts, &token, Method::GET, &b, &get, None).await,
        "after role deletion",
    );
    ts.stop().await;
}

#[tokio::test]
async fn access_policy_vaults_use_policies_and_ignore_rbac() {
    let ts = TestServer::start().await;
    ts.create_vault("legacy", 7, false).await;
    let b = ts.vault_base("legacy");
    let v = admin_key(
        &ts,
        "legacy",
        "kek",
        json!({"kty": "RSA", "key_size": 2048}),
    )
    .await;
    let id = create_identity(&ts, "legacy-app").await;
    assign(&ts, "legacy", "legacy-app", CRYPTO_OFFICER, None).await;
    let token = login(&ts, &id).await;
    let get = format!("/keys/kek/{v}");
    ok(call(&ts, &token, Method::GET, &b, &get, None).await);

    // Switch to access policies: the Officer assignment no longer counts.
    let vault = ok(ts
        .patch(
            "/management/vaults/legacy",
            json!({"properties": {"enableRbacAuthorization": false}}),
        )
        .await);
    assert_eq!(vault["properties"]["enableRbacAuthorization"], false);
    assert_eq!(vault["properties"]["accessPolicies"], json!([]));
    let r = call(&ts, &token, Method::GET, &b, &get, None).await;
    assert_policy_denied(&r, "get without a policy");
    let msg = r.2["error"]["message"].as_str().unwrap();
    assert!(msg.contains("keys get permission"), "{msg}");

    // Grant get + wrapKey.
    let p = ok(ts
        .put(
            "/management/vaults/legacy/accessPolicies/legacy-app",
            json!({"permissions": {"keys": ["get", "WRAPKEY"]}}),
        )
        .await);
    assert_eq!(p["objectId"], id.object_id.as_str());
    assert_eq!(p["tenantId"], tenant(&ts));
    assert_eq!(p["permissions"]["keys"], json!(["get", "wrapKey"]));
    let shown = ok(ts.get("/management/vaults/legacy").await);
    assert_eq!(shown["properties"]["accessPolicies"], json!([p.clone()]));
    let listed = ok(ts.get("/management/vaults/legacy/accessPolicies").await);
    assert_eq!(listed["value"], json!([p]));

    ok(call(&ts, &token, Method::GET, &b, &get, None).await);
    ok(call(
        &ts,
        &token,
        Method::POST,
        &b,
        &format!("/keys/kek/{v}/wrapkey"),
        Some(json!({"alg": "RSA-OAEP-256", "value": b64(&random(32))})),
    )
    .await);
    let wrapped_denied = call(
        &ts,
        &token,
        Method::POST,
        &b,
        &format!("/keys/kek/{v}/unwrapkey"),
        Some(json!({"alg": "RSA-OAEP-256", "value": b64(&random(256))})),
    )
    .await;
    assert_policy_denied(&wrapped_denied, "unwrap");
    assert_policy_denied(
        &call(&ts, &token, Method::GET, &b, "/keys", None).await,
        "list",
    );
    assert_policy_denied(
        &call(&ts, &token, Method::DELETE, &b, "/keys/kek", None).await,
        "delete",
    );

    // Bad permissions are refused; "all" grants everything.
    let m = expect_error(
        &ts.put(
            "/management/vaults/legacy/accessPolicies/legacy-app",
            json!({"permissions": {"keys": ["get", "fly"]}}),
        )
        .await,
        400,
        "BadParameter",
    );
    assert!(m.contains("fly"), "{m}");
    expect_error(
        &ts.put(
            "/management/vaults/legacy/accessPolicies/legacy-app",
            json!({"permissions": ["get"]}),
        )
        .await,
        400,
        "BadParameter",
    );
    expect_error(
        &ts.put(
            "/management/vaults/legacy/accessPolicies/nobody",
            json!({"permissions": {"keys": ["get"]}}),
        )
        .await,
        404,
        "NotFound",
    );
    ok(ts
        .put(
            &format!("/management/vaults/legacy/accessPolicies/{}", id.client_id),
            json!({"permissions": {"keys": ["all"]}}),
        )
        .await);
    ok(call(&ts, &token, Method::GET, &b, "/keys", None).await);

    // Delete the policy: denied again.
    let gone = ok(ts
        .delete("/management/vaults/legacy/accessPolicies/legacy-app")
        .await);
    assert_eq!(gone["permissions"]["keys"], json!(["all"]));
    assert_policy_denied(
        &call(&ts, &token, Method::GET, &b, &get, None).await,
        "after delete",
    );
    expect_error(
        &ts.delete("/management/vaults/legacy/accessPolicies/legacy-app")
            .await,
        404,
        "NotFound",
    );

    // A policy in an RBAC vault does nothing there.
    let other = create_identity(&ts, "rbac-app").await;
    let other_token = login(&ts, &other).await;
    let dv = admin_key(&ts, "default", "dk", json!({"kty": "EC"})).await;
    ok(ts
        .put(
            "/management/vaults/default/accessPolicies/rbac-app",
            json!({"permissions": {"keys": ["all"]}}),
        )
        .await);
    assert_rbac_denied(
        &call(
            &ts,
            &other_token,
            Method::GET,
            &ts.base,
            &format!("/keys/dk/{dv}"),
            None,
        )
        .await,
        "policy in an RBAC vault",
    );

    // Back to RBAC: the Officer assignment counts again.
    ok(ts
        .patch(
            "/management/vaults/legacy",
            json!({"properties": {"enableRbacAuthorization": true}}),
        )
        .await);
    ok(call(&ts, &token, Method::DELETE, &b, "/keys/kek", None).await);
    expect_error(
        &ts.patch(
            "/management/vaults/legacy",
            json!({"properties": {"enableRbacAuthorization": "no"}}),
        )
        .await,
        400,
        "BadParameter",
    );
    ts.stop().await;
}

#[tokio::test]
async fn data_access_administrator_manages_assignments_of_its_vault_only() {
    let ts = TestServer::start().await;
    ts.create_vault("vault-a", 7, false).await;
    ts.create_vault("vault-b", 7, false).await;
    let va = ts.vault_base("vault-a");
    let v = admin_key(&ts, "vault-a", "k", json!({"kty": "EC"})).await;
    let daa = create_identity(&ts, "daa").await;
    let user = create_identity(&ts, "user").await;
    let daa_aid = assign(&ts, "vault-a", "daa", DATA_ACCESS_ADMINISTRATOR, None).await;
    // Key scope does not make a Data Access Administrator.
    let keyed = create_identity(&ts, "keyed-daa").await;
    assign(
        &ts,
        "vault-a",
        "keyed-daa",
        DATA_ACCESS_ADMINISTRATOR,
        Some("k"),
    )
    .await;
    let dt = login(&ts, &daa).await;
    let ut = login(&ts, &user).await;
    let kt = login(&ts, &keyed).await;

    let path_a = "/management/vaults/vault-a/roleAssignments";

    // It has no data access itself.
    assert_rbac_denied(
        &call(&ts, &dt, Method::GET, &va, &format!("/keys/k/{v}"), None).await,
        "daa get",
    );
    // It can grant Crypto User in its vault, and the grant works at once.
    let a = ok(put_as(
        &ts,
        &dt,
        path_a,
        json!({"principal": "user", "role": CRYPTO_USER}),
    )
    .await);
    assert_eq!(a["roleName"], CRYPTO_USER);
    assert_eq!(a["principalId"], user.object_id.as_str());
    ok(call(&ts, &ut, Method::GET, &va, &format!("/keys/k/{v}"), None).await);
    // It can list and remove assignments in its vault.
    let list = ok(call(&ts, &dt, Method::GET, &ts.base, path_a, None).await);
    assert_eq!(list["value"].as_array().unwrap().len(), 3, "{list}");
    ok(call(
        &ts,
        &dt,
        Method::DELETE,
        &ts.base,
        &format!("{path_a}/{}", a["id"].as_str().unwrap()),
        None,
    )
    .await);
    assert_rbac_denied(
        &call(&ts, &ut, Method::GET, &va, &format!("/keys/k/{v}"), None).await,
        "after removal",
    );

    // Not the roles that manage access, by name or id, nor removing them.
    for role in [
        ADMINISTRATOR,
        DATA_ACCESS_ADMINISTRATOR,
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        "key vault administrator",
    ] {
        let r = put_as(&ts, &dt, path_a, json!({"principal": "user", "role": role})).await;
        let m = expect_error(&r, 403, "Forbidden");
        assert!(m.contains("only the administrator"), "{role}: {m}");
    }
    // Nor custom roles (which could carry any dataAction).
    ok(ts
        .put(
            "/management/roleDefinitions/everything-on-keys",
            json!({"dataActions": ["Microsoft.KeyVault/vaults/*"]}),
        )
        .await);
    let r = put_as(
        &ts,
        &dt,
        path_a,
        json!({"principal": "user", "role": "everything-on-keys"}),
    )
    .await;
    let m = expect_error(&r, 403, "Forbidden");
    assert!(m.contains("custom roles"), "{m}");
    let r = call(
        &ts,
        &dt,
        Method::DELETE,
        &ts.base,
        &format!("{path_a}/{daa_aid}"),
        None,
    )
    .await;
    expect_error(&r, 403, "Forbidden");
    // Not in another vault.
    for (m, body) in [
        (Method::GET, None),
        (
            Method::PUT,
            Some(json!({"principal": "user", "role": CRYPTO_USER})),
        ),
    ] {
        let r = call(
            &ts,
            &dt,
            m,
            &ts.base,
            "/management/vaults/vault-b/roleAssignments",
            body,
        )
        .await;
        let msg = expect_error(&r, 403, "Forbidden");
        assert!(msg.contains("vault-b"), "{msg}");
    }
    // A key-scoped Data Access Administrator and a plain user cannot manage assignments.
    for t in [&kt, &ut] {
        let r = put_as(
            &ts,
            t,
            path_a,
            json!({"principal": "user", "role": CRYPTO_USER}),
        )
        .await;
        expect_error(&r, 403, "Forbidden");
    }
    // The administrator's assignments are intact.
    let list = ok(ts.get(path_a).await);
    assert_eq!(list["value"].as_array().unwrap().len(), 2, "{list}");
    ts.stop().await;
}

#[tokio::test]
async fn non_admins_are_refused_management() {
    let ts = TestServer::start().await;
    let id = create_identity(&ts, "vault-admin").await;
    // Even a Key Vault Administrator of the vault is not the server administrator.
    assign(&ts, "default", "vault-admin", ADMINISTRATOR, None).await;
    let t = login(&ts, &id).await;
    let cases: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/management/identities", None),
        (Method::PUT, "/management/identities/evil", None),
        (Method::GET, "/management/identities/vault-admin", None),
        (
            Method::POST,
            "/management/identities/vault-admin/rotateSecret",
            None,
        ),
        (Method::DELETE, "/management/identities/vault-admin", None),
        (Method::GET, "/management/vaults", None),
        (Method::GET, "/management/vaults/default", None),
        (
            Method::PUT,
            "/management/vaults/evil",
            Some(json!({"properties": {}})),
        ),
        (
            Method::PATCH,
            "/management/vaults/default",
            Some(json!({"properties": {"enableRbacAuthorization": false}})),
        ),
        (Method::GET, "/management/roleDefinitions", None),
        (
            Method::PUT,
            "/management/roleDefinitions/Evil",
            Some(json!({"dataActions": ["Microsoft.KeyVault/vaults/*"]})),
        ),
        (
            Method::GET,
            "/management/vaults/default/accessPolicies",
            None,
        ),
        (
            Method::PUT,
            "/management/vaults/default/accessPolicies/vault-admin",
            Some(json!({"permissions": {"keys": ["all"]}})),
        ),
        (Method::GET, "/management/denials", None),
        (Method::POST, "/management/audit/checkpoint", None),
        (
            Method::POST,
            "/management/audit/prune",
            Some(json!({"olderThanDays": 1})),
        ),
        (Method::GET, "/management/nothing-here", None),
    ];
    for (m, path, body) in cases {
        let r = call(&ts, &t, m.clone(), &ts.base, path, body).await;
        let msg = expect_error(&r, 403, "Forbidden");
        assert!(msg.contains("administrator"), "{m} {path}: {msg}");
    }
    // An Administrator at vault scope may manage that vault's assignments, but not grant the
    // roles that manage access.
    let ok_list = call(
        &ts,
        &t,
        Method::GET,
        &ts.base,
        "/management/vaults/default/roleAssignments",
        None,
    )
    .await;
    ok(ok_list);
    let r = call(
        &ts,
        &t,
        Method::PUT,
        &ts.base,
        "/management/vaults/default/roleAssignments",
        Some(json!({"principal": "vault-admin", "role": DATA_ACCESS_ADMINISTRATOR})),
    )
    .await;
    expect_error(&r, 403, "Forbidden");
    // Nothing changed.
    let ids = ok(ts.get("/management/identities").await);
    assert_eq!(ids["value"].as_array().unwrap().len(), 1);
    ok(ts.get("/management/identities/vault-admin").await);
    expect_error(
        &ts.get("/management/vaults/evil").await,
        404,
        "VaultNotFound",
    );
    assert_eq!(
        ok(ts.get("/management/vaults/default").await)["properties"]["enableRbacAuthorization"],
        true
    );
    ts.stop().await;
}

#[tokio::test]
async fn audit_checkpoint_and_prune_routes() {
    let ts = TestServer::start().await;
    let first = ok(ts.post_empty("/management/audit/checkpoint").await);
    let s1 = first["seq"].as_i64().unwrap();
    assert!(s1 > 0, "{first}");
    let second = ok(ts.post_empty("/management/audit/checkpoint").await);
    assert!(second["seq"].as_i64().unwrap() > s1, "{second}");
    // Nothing is older than a day yet.
    let pruned = ok(ts
        .post("/management/audit/prune", json!({"olderThanDays": 1}))
        .await);
    assert_eq!(pruned["removed"], 0);
    for bad in [
        json!({}),
        json!({"olderThanDays": 0}),
        json!({"olderThanDays": "7"}),
    ] {
        expect_error(
            &ts.post("/management/audit/prune", bad).await,
            400,
            "BadParameter",
        );
    }
    // After the clock moves 3 days, pruning records older than 2 days removes the old ones
    // and the log still starts at a signed checkpoint.
    ts.advance(3 * 86_400);
    ok(ts.post_empty("/management/audit/checkpoint").await);
    let pruned = ok(ts
        .post("/management/audit/prune", json!({"olderThanDays": 2}))
        .await);
    assert!(pruned["removed"].as_u64().unwrap() > 0, "{pruned}");
    expect_error(
        &ts.get("/management/audit/checkpoint").await,
        405,
        "MethodNotAllowed",
    );
    ts.stop().await;
}

#[tokio::test]
async fn audit_routes_refuse_when_audit_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = cmkvault_server::datadir::open(dir.path(), None).unwrap();
    let srv = cmkvault_server::start(
        &data,
        cmkvault_server::ServerOptions {
            audit: false,
            ..options()
        },
    )
    .await
    .unwrap();
    let now = srv.service.clock().now();
    let token = srv
        .tokens
        .issue(
            cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID,
            "test",
            now,
            3600,
        )
        .unwrap();
    let client = http_client(&dir.path().join("tls").join("ca.pem"));
    let base = format!("https://localhost:{}", srv.addr.port());
    for (path, body) in [
        ("/management/audit/checkpoint", None),
        (
            "/management/audit/prune",
            Some(json!({"olderThanDays": 30})),
        ),
    ] {
        let mut rb = client.post(format!("{base}{path}")).bearer_auth(&token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let m = expect_error(&send(rb).await, 400, "BadParameter");
        assert!(m.contains("audit"), "{m}");
    }
    srv.shutdown().await;
}

/// The management request bodies: the first wrong member (in each route's order) is named in
/// its own words, members of a non-object body or `properties` read as absent, and unknown
/// members are ignored.
#[tokio::test]
async fn management_bodies_name_the_first_wrong_member() {
    let ts = TestServer::start().await;
    let bad = |r: Resp, message: &str| {
        assert_eq!(expect_error(&r, 400, "BadParameter"), message, "{}", r.2);
    };
    let days = "properties.softDeleteRetentionInDays must be a whole number of days (7 to 90).";
    let pp = "properties.enablePurgeProtection must be true or false.";
    // Vault create checks the retention first, update the purge protection first.
    let both =
        json!({"properties": {"softDeleteRetentionInDays": 7.5, "enablePurgeProtection": "yes"}});
    bad(
        ts.put("/management/vaults/bodies", both.clone()).await,
        days,
    );
    bad(ts.patch("/management/vaults/default", both).await, pp);
    bad(
        ts.put(
            "/management/vaults/bodies",
            json!({"properties": {"softDeleteRetentionInDays": -1}}),
        )
        .await,
        days,
    );
    bad(
        ts.put(
            "/management/vaults/bodies",
            json!({"properties": {"enableRbacAuthorization": 1}}),
        )
        .await,
        "properties.enableRbacAuthorization must be true or false.",
    );
    bad(
        ts.put(
            "/management/vaults/bodies",
            json!({"properties": {"enableSoftDelete": false}}),
        )
        .await,
        "Soft delete is always on and cannot be disabled.",
    );
    // Not an object (body or properties): nothing is set, the defaults apply.
    for (name, body) in [
        ("bodies1", json!([1, 2])),
        ("bodies2", json!({"properties": [true, 7], "unknown": 1})),
        ("bodies3", json!({"properties": null})),
    ] {
        let v = ok(ts.put(&format!("/management/vaults/{name}"), body).await);
        assert_eq!(v["properties"]["softDeleteRetentionInDays"], 90, "{v}");
        assert_eq!(v["properties"]["enablePurgeProtection"], false, "{v}");
    }

    let assignments = "/management/vaults/default/roleAssignments";
    let principal = "The request body must have a non-empty string 'principal'.";
    bad(
        ts.put(assignments, json!({"role": READER})).await,
        principal,
    );
    bad(
        ts.put(assignments, json!({"principal": "  ", "role": 5}))
            .await,
        principal,
    );
    bad(
        ts.put(assignments, json!({"principal": "x", "role": null}))
            .await,
        "The request body must have a non-empty string 'role'.",
    );
    bad(
        ts.put(
            assignments,
            json!({"principal": "x", "role": READER, "key": 5}),
        )
        .await,
        "key must be a key name (a string).",
    );

    let policy = "/management/vaults/default/accessPolicies/someone";
    let shape = "The request body must be {\"permissions\": {\"keys\": [\"get\", ...]}}.";
    bad(
        ts.put(policy, json!({"permissions": {"keys": "get"}}))
            .await,
        "keys must be a list of strings.",
    );
    bad(ts.put(policy, json!({"permissions": ["get"]})).await, shape);
    bad(ts.put(policy, json!({"keys": ["get"]})).await, shape);

    let role = "/management/roleDefinitions/Bodies";
    bad(
        ts.put(role, json!({"dataActions": "x", "notDataActions": 1}))
            .await,
        "dataActions must be a list of strings.",
    );
    bad(
        ts.put(role, json!({"dataActions": ["x"], "notDataActions": [1]}))
            .await,
        "notDataActions must be a list of strings.",
    );
    bad(
        ts.put(role, json!({"notDataActions": []})).await,
        "The request body must have \"dataActions\": [\"Microsoft.KeyVault/...\", ...].",
    );

    let prune = "olderThanDays must be a whole number of days, at least 1.";
    for body in [
        json!({"olderThanDays": 1.0}),
        json!({"olderThanDays": 36_501}),
        json!({"olderThanDays": -3}),
        json!({}),
    ] {
        bad(ts.post("/management/audit/prune", body).await, prune);
    }
}
