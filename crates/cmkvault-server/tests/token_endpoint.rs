//! Hardening of the token endpoint and of token checks: client-supplied client ids never reach
//! the log or the audit record raw (log injection, pasted secrets), failed attempts are
//! throttled per client id and per source address (429 + Retry-After, before any PBKDF2 work),
//! and a token naming another issuer is refused.
//!
//! The tests share process-wide state (a log capture, the PBKDF2 counter), so they run one at
//! a time.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cmkvault_store::AuditFilter;
use cmkvault_vault::tokens::{Claims, BOOTSTRAP_ADMIN_OID, VAULT_AUDIENCE};
use common::*;
use reqwest::Method;
use serde_json::Value;

const SCOPE: &str = "https://vault.azure.net/.default";

/// One test at a time (the log capture and the PBKDF2 counter are process-wide).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Everything the server logs, as the `serve` binary's formatter writes it (without colours).
fn captured_log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,cmkvault_vault::access=debug",
            ))
            .with_thread_ids(true)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buf
    })
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits for this test's turn (see [`SERIAL`]; keep the guard to the test's end), makes sure
/// the log is captured, and starts a server.
async fn start_alone() -> (tokio::sync::MutexGuard<'static, ()>, TestServer) {
    let serial = SERIAL.lock().await;
    captured_log();
    (serial, TestServer::start().await)
}

fn log_text() -> String {
    String::from_utf8_lossy(&captured_log().lock().unwrap()).into_owned()
}

/// A client-credentials token request; `(status, headers, body)`.
async fn creds(ts: &TestServer, client_id: &str, secret: &str) -> Resp {
    let tenant = ts.srv.tokens.tenant_id().to_string();
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials")
        .append_pair("client_id", client_id)
        .append_pair("client_secret", secret)
        .append_pair("scope", SCOPE);
    send_unchecked(
        ts.client
            .post(format!("{}/{tenant}/oauth2/v2.0/token", ts.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.finish()),
    )
    .await
}

/// A new identity: (client id, secret).
async fn identity(ts: &TestServer, name: &str) -> (String, String) {
    let v = ok(ts
        .req(Method::PUT, &format!("/management/identities/{name}"), None)
        .await);
    (
        v["clientId"].as_str().unwrap().to_string(),
        v["clientSecret"].as_str().unwrap().to_string(),
    )
}

/// The `appid` of every TokenIssue audit record, in order.
fn token_issue_appids(ts: &TestServer) -> Vec<Value> {
    ts.srv
        .audit
        .as_ref()
        .expect("audit is on")
        .store()
        .query(&AuditFilter::default())
        .expect("read audit log")
        .into_iter()
        .filter(|r| r.kind == "event")
        .map(|r| serde_json::from_str::<Value>(&r.record).expect("record is JSON"))
        .filter(|v| v["operationName"] == "TokenIssue")
        .map(|v| v["identity"]["claim"]["appid"].clone())
        .collect()
}

/// Sends `n` token requests with the wrong credentials `attempt(i)` gives (client id,
/// secret), and asserts each is refused with 401, not yet throttled.
async fn refused_attempts(ts: &TestServer, n: usize, attempt: impl Fn(usize) -> (String, String)) {
    for i in 0..n {
        let (client_id, secret) = attempt(i);
        let r = creds(ts, &client_id, &secret).await;
        assert_eq!(r.0, 401, "attempt {i}: {}", r.2);
    }
}

#[track_caller]
fn assert_locked(r: &Resp) {
    assert_eq!(r.0, 429, "{}", r.2);
    let retry: i64 = r.1["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.2["error"], "invalid_client", "{}", r.2);
    assert_eq!(r.2["error_codes"][0], 50053, "{}", r.2);
    assert!(
        r.2["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS50053: "),
        "{}",
        r.2
    );
    assert!(r.2["trace_id"].is_string() && r.2["correlation_id"].is_string());
}

#[tokio::test]
async fn a_forged_client_id_reaches_neither_the_log_nor_the_audit_record_raw() {
    let (_serial, ts) = start_alone().await;
    let pasted_secret = "Zk9yZ2VkLXNlY3JldC12YWx1ZS10aGF0LWlzLWxvbmc";
    let forged = format!("x\r\nINFO forged log line\x1b[31m red {pasted_secret}\x1b[0m");
    let r = creds(&ts, &forged, "anything").await;
    assert_eq!(r.0, 401, "{}", r.2);
    assert_eq!(r.2["error"], "invalid_client");

    let appids = token_issue_appids(&ts);
    let appid = appids.last().and_then(Value::as_str).expect("an appid");
    assert!(
        appid.starts_with("unknown:sha256:") && appid.len() == "unknown:sha256:".len() + 16,
        "{appid}"
    );
    assert!(appid.bytes().all(|b| b.is_ascii_graphic()), "{appid:?}");
    assert!(!appid.contains(pasted_secret) && !appid.contains("forged"));

    let log = log_text();
    assert!(
        log.contains(appid),
        "the refusal is logged with the hashed form: {log}"
    );
    assert!(
        !log.contains("\nINFO forged"),
        "forged line in the log: {log}"
    );
    assert!(!log.contains('\x1b'), "terminal escape in the log: {log:?}");
    assert!(!log.contains(pasted_secret), "the pasted secret was logged");
    ts.stop().await;
}

#[tokio::test]
async fn wrong_secrets_lock_the_client_id_without_pbkdf2_work_until_the_lockout_ends() {
    let (_serial, ts) = start_alone().await;
    let (client_id, secret) = identity(&ts, "target").await;
    let (bystander, bystander_secret) = identity(&ts, "bystander").await;
    // A few ordinary mistakes do not lock anyone out, and a success clears them.
    for _ in 0..3 {
        assert_eq!(creds(&ts, &client_id, "typo").await.0, 401);
    }
    assert_eq!(creds(&ts, &client_id, &secret).await.0, 200);
    refused_attempts(&ts, 10, |i| (client_id.clone(), format!("guess-{i}"))).await;
    let before = cmkvault_crypto::pbkdf2_derivations();
    assert_locked(&creds(&ts, &client_id, "guess-10").await);
    // The right secret is refused too while the client id is locked.
    let r = creds(&ts, &client_id, &secret).await;
    assert_locked(&r);
    assert_eq!(
        cmkvault_crypto::pbkdf2_derivations(),
        before,
        "a locked client id cost PBKDF2 work"
    );
    assert!(r.2.get("access_token").is_none());
    // Other clients from the same address are not affected.
    assert_eq!(creds(&ts, &bystander, &bystander_secret).await.0, 200);
    // The throttled requests are audited, with the client id they named.
    let appids = token_issue_appids(&ts);
    assert_eq!(appids.last().unwrap(), bystander.as_str());
    assert_eq!(appids[appids.len() - 2], client_id.as_str());
    ts.advance(61);
    let r = creds(&ts, &client_id, &secret).await;
    assert_eq!(r.0, 200, "after the lockout: {}", r.2);
    ts.stop().await;
}

#[tokio::test]
async fn many_failures_from_one_address_lock_that_address() {
    let (_serial, ts) = start_alone().await;
    let (client_id, secret) = identity(&ts, "innocent").await;
    refused_attempts(&ts, 100, |i| (format!("bogus-{i}"), "guess".into())).await;
    assert_locked(&creds(&ts, "bogus-100", "guess").await);
    assert_locked(&creds(&ts, &client_id, &secret).await);
    ts.advance(61);
    assert_eq!(creds(&ts, &client_id, &secret).await.0, 200);
    ts.stop().await;
}

/// The number in the first `ThreadId(N)` of `text` (the formatter pads it: `ThreadId(04)`).
fn thread_number(text: &str) -> u64 {
    let rest = &text[text.find("ThreadId(").expect("a thread id") + "ThreadId(".len()..];
    rest[..rest.find(')').unwrap()].parse().unwrap()
}

/// The access snapshot is loaded from the store off the async workers. `#[tokio::test]` runs
/// the server on this test's thread (a current-thread runtime), so a load on an async worker
/// would be logged from this thread.
#[tokio::test]
async fn the_access_snapshot_is_loaded_off_the_async_workers() {
    let (_serial, ts) = start_alone().await;
    let (client_id, secret) = identity(&ts, "reader").await;
    ok(ts
        .req(
            Method::PUT,
            "/management/vaults/default/roleAssignments",
            Some(serde_json::json!({"principal": "reader", "role": "Key Vault Reader"})),
        )
        .await);
    let r = creds(&ts, &client_id, &secret).await;
    assert_eq!(r.0, 200, "{}", r.2);
    let token = r.2["access_token"].as_str().unwrap().to_string();
    // A change drops the snapshot; the next request loads it.
    identity(&ts, "someone-else").await;
    let mark = log_text().len();
    let r = send(ts.client.get(ts.url(&ts.base, "/keys")).bearer_auth(&token)).await;
    assert_eq!(r.0, 200, "{}", r.2);
    let log = log_text()[mark..].to_string();
    let loads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("access snapshot loaded from the store"))
        .collect();
    assert!(!loads.is_empty(), "the request loaded no snapshot: {log}");
    let here = thread_number(&format!("{:?}", std::thread::current().id()));
    for line in loads {
        assert_ne!(
            thread_number(line),
            here,
            "loaded on the async worker: {line}"
        );
    }
    ts.stop().await;
}

/// Signs `claims` with the server's token-signing key.
fn sign(ts: &TestServer, claims: &Claims) -> String {
    let header = B64URL.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
    let input = format!(
        "{header}.{}",
        B64URL.encode(serde_json::to_vec(claims).unwrap())
    );
    let sig = ts.srv.tokens.signing_key().sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64URL.encode(sig))
}

#[tokio::test]
async fn a_token_signed_by_the_right_key_for_another_issuer_is_refused() {
    let (_serial, ts) = start_alone().await;
    let now = ts.now();
    let tenant = ts.srv.tokens.tenant_id().to_string();
    let claims = Claims {
        iss: ts.srv.tokens.issuer().to_string(),
        sub: BOOTSTRAP_ADMIN_OID.into(),
        oid: BOOTSTRAP_ADMIN_OID.into(),
        tid: tenant.clone(),
        appid: "test".into(),
        aud: VAULT_AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp: now + 600,
    };
    let get = |token: String| send(ts.client.get(ts.url(&ts.base, "/keys")).bearer_auth(token));
    assert_eq!(
        get(sign(&ts, &claims)).await.0,
        200,
        "the control token works"
    );
    let other = Claims {
        iss: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        ..claims
    };
    let r = get(sign(&ts, &other)).await;
    expect_error(&r, 401, "Unauthorized");
    assert!(r.1.contains_key("www-authenticate"));
    ts.stop().await;
}
