//! The audit log end to end: every request (allowed, failed, denied, unauthenticated, token
//! requests) gets exactly one record, in order, before its response; no secret reaches a
//! record; concurrent requests give a contiguous, verifiable chain; a write that cannot be made
//! durable refuses the request (503, fail-closed) and the log recovers without a gap; signed
//! checkpoints verify and forgeries fail; pruning keeps the chain verifiable; denial alerts
//! reach a local webhook as one CloudEvent.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cmkvault_server::{AlertOptions, ServerOptions};
use cmkvault_store::{AuditFilter, AuditRow, AuditSink};
use cmkvault_vault::audit::{
    chain_hash, verify_chain, AuditLog, AuditOptions, ChainBroken, ChainRow, VerifyReport,
    GENESIS_HASH,
};
use cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ------------------------------------------------------------------ helpers

fn log(ts: &TestServer) -> &Arc<AuditLog> {
    ts.srv.audit.as_ref().expect("audit is on")
}

/// Every row of the log, in sequence order.
fn all_rows(ts: &TestServer) -> Vec<AuditRow> {
    log(ts)
        .store()
        .query(&AuditFilter::default())
        .expect("read audit log")
}

/// The event rows (no checkpoints) with their parsed records.
fn events(rows: &[AuditRow]) -> Vec<(AuditRow, Value)> {
    rows.iter()
        .filter(|r| r.kind == "event")
        .map(|r| {
            let v: Value = serde_json::from_str(&r.record).expect("record is JSON");
            (r.clone(), v)
        })
        .collect()
}

fn chain(rows: &[AuditRow]) -> Vec<ChainRow> {
    rows.iter().map(ChainRow::from).collect()
}

#[track_caller]
fn verify_ok(ts: &TestServer, rows: &[AuditRow]) -> VerifyReport {
    verify_chain(chain(rows), &ts.srv.tokens.public_jwk())
        .unwrap_or_else(|e| panic!("the audit chain should verify: {e}"))
}

#[track_caller]
fn verify_err(ts: &TestServer, rows: Vec<ChainRow>) -> ChainBroken {
    match verify_chain(rows, &ts.srv.tokens.public_jwk()) {
        Ok(r) => panic!("a tampered chain verified: {r:?}"),
        Err(e) => e,
    }
}

/// Recomputes `prev_hash` and `hash` from index `from` on, as an attacker without the
/// signing key would after editing a row.
fn rehash(rows: &mut [ChainRow], from: usize) {
    for i in from..rows.len() {
        let prev = if i == 0 {
            GENESIS_HASH.to_string()
        } else {
            rows[i - 1].hash.clone()
        };
        rows[i].prev_hash = prev.clone();
        rows[i].hash = chain_hash(&prev, rows[i].seq, &rows[i].record);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A second connection to `DIR/audit.db`, independent of the server's.
fn open_db(ts: &TestServer) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(ts.dir.path().join("audit.db")).expect("open audit.db");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// Seq of the row whose record carries this correlation id, read straight from the file.
fn seq_of_correlation(db: &rusqlite::Connection, cid: &str) -> Vec<i64> {
    let needle = format!("\"correlationId\":\"{cid}\"");
    let mut st = db
        .prepare("SELECT seq FROM audit WHERE instr(record, ?1) > 0 ORDER BY seq")
        .unwrap();
    st.query_map([needle], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The resultSignature the server must use for a status.
fn signature_for(status: u16) -> &'static str {
    match status {
        200..=299 => "OK",
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        503 => "ServiceUnavailable",
        _ => panic!("unexpected status {status}"),
    }
}

/// A request with a correlation id and, optionally, a bearer token.
fn request(
    ts: &TestServer,
    method: Method,
    url: &str,
    token: Option<&str>,
    cid: &str,
) -> reqwest::RequestBuilder {
    let mut rb = ts
        .client
        .request(method, url)
        .header("x-ms-client-request-id", cid);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb
}

/// What the record of one request must say.
struct Expected {
    cid: String,
    url: String,
    op: &'static str,
    status: u16,
    oid: Option<String>,
    appid: Option<String>,
    vault: &'static str,
    key_id: Option<String>,
}

/// The token endpoint's form body.
fn token_form(client_id: &str, secret: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", client_id)
        .append_pair("client_secret", secret)
        .append_pair("scope", "https://vault.azure.net/.default")
        .finish()
}

// ------------------------------------------------------------------ 1. completeness

#[tokio::test]
async fn every_request_gets_one_record_in_order_and_no_secret() {
    let ts = TestServer::start().await;
    assert!(all_rows(&ts).is_empty(), "a fresh server has an empty log");
    let (p, secret) = ts.srv.service.create_principal("no-roles").unwrap();
    let weak = ts
        .srv
        .tokens
        .issue(&p.object_id, &p.client_id, ts.now(), 600)
        .unwrap();
    let tenant = ts.srv.tokens.tenant_id().to_string();
    let admin = Some(BOOTSTRAP_ADMIN_OID.to_string());
    let admin_app = Some("test".to_string());
    let weak_oid = Some(p.object_id.clone());
    let weak_app = Some(p.client_id.clone());

    // Values that must never appear in a record: bearer tokens (and their signatures), the
    // client secret, key material and plaintexts sent in bodies.
    let mut secrets: Vec<String> = vec![secret.to_string()];
    let mut tokens: Vec<String> = vec![ts.token.clone(), weak.clone()];
    let mut exp: Vec<Expected> = Vec::new();

    for r in 0..6 {
        let cid = |exp: &Vec<Expected>| format!("seq-{:03}", exp.len());

        // 1. KeyCreate (200).
        let url = ts.url(&ts.base, &format!("/keys/ec-{r}/create"));
        let c = cid(&exp);
        let b = ok(send(
            request(&ts, Method::POST, &url, Some(&ts.token), &c)
                .json(&json!({"kty": "EC", "crv": "P-256"})),
        )
        .await);
        assert!(b["key"]["kid"].is_string());
        exp.push(Expected {
            cid: c,
            url,
            op: "KeyCreate",
            status: 200,
            oid: admin.clone(),
            appid: admin_app.clone(),
            vault: "default",
            key_id: Some(format!("{}/keys/ec-{r}", ts.base)),
        });

        // 2. KeyImport of an AES key (200): its k must not be recorded.
        let raw_k = random(32);
        let k = b64(&raw_k);
        secrets.push(k.clone());
        secrets.push(hex::encode(&raw_k));
        let url = ts.url(&ts.base, &format!("/keys/aes-{r}"));
        let c = cid(&exp);
        ok(send(
            request(&ts, Method::PUT, &url, Some(&ts.token), &c)
                .json(&json!({"key": {"kty": "oct", "k": k}, "Hsm": true})),
        )
        .await);
        exp.push(Expected {
            cid: c,
            url,
            op: "KeyImport",
            status: 200,
            oid: admin.clone(),
            appid: admin_app.clone(),
            vault: "default",
            key_id: Some(format!("{}/keys/aes-{r}", ts.base)),
        });

        // 3. KeyWrap (200): the plaintext key must not be recorded.
        let raw_pt = random(32);
        let pt = b64(&raw_pt);
        secrets.push(pt.clone());
        secrets.push(hex::encode(&raw_pt));
        let url = ts.url(&ts.base, &format!("/keys/aes-{r}/wrapkey"));
        let c = cid(&exp);
        let w = ok(send(
            request(&ts, Method::POST, &url, Some(&ts.token), &c)
                .json(&json!({"alg": "A256KW", "value": pt})),
        )
        .await);
        let wrapped = w["value"].as_str().unwrap().to_string();
        exp.push(Expected {
            cid: c,
            url,
            op: "KeyWrap",
            status: 200,
            oid: admin.clone(),
            appid: admin_app.clone(),
            vault: "default",
            key_id: Some(format!("{}/keys/aes-{r}", ts.base)),
        });

        // 4. KeyUnwrap (200): returns the plaintext, which must not be recorded.
        let url = ts.url(&ts.base, &format!("/keys/aes-{r}/unwrapkey"));
        let c = cid(&exp);
        let u = ok(send(
            request(&ts, Method::POST, &url, Some(&ts.token), &c)
                .json(&json!({"alg": "A256KW", "value": wrapped})),
        )
        .await);
        assert_eq!(unb64v(&u["value"]), raw_pt);
        exp.push(Expected {
            cid: c,
            url: url.clone(),
            op: "KeyUnwrap",
            status: 200,
            oid: admin.clone(),
            appid: admin_app.clone(),
            vault: "default",
            key_id: Some(format!("{}/keys/aes-{r}", ts.base)),
        });

        // 5. KeyUnwrap by a principal without roles (403), with the same ciphertext.
        let c = cid(&exp);
        let resp = send(
            request(&ts, Method::POST, &url, Some(&weak), &c)
                .json(&json!({"alg": "A256KW", "value": wrapped})),
        )
        .await;
        expect_error(&resp, 403, "Forbidden");
        exp.push(Expected {
            cid: c,
            url,
            op: "KeyUnwrap",
            status: 403,
            oid: weak_oid.clone(),
            appid: weak_app.clone(),
            vault: "default",
            key_id: Some(format!("{}/keys/aes-{r}", ts.base)),
        });

        // 6. KeyGet of a missing key (404).
        let url = ts.url(&ts.base, &format!("/keys/missing-{r}"));
        let c = cid(&exp);
        let resp = send(request(&ts, Method::GET, &url, Some(&ts.token), &c)).await;
        assert_eq!(resp.0, 404, "{}", resp.2);
        exp.push(Expected {
            cid: c,
            url,
            op: "KeyGet",
            status: 404,
            oid: admin.clone(),
            appid: admin_app.clone(),
            vault: "default",
            key_id: Some(format!("{}/keys/missing-{r}", ts.base)),
        });

        // 7. KeyEncrypt with a malformed body (400).
        let url = ts.url(&ts.base, &format!("/keys/aes-{r}/encrypt"));
        let c = cid(&exp);
        let resp = send(
            request(&ts, Method::POST, &url, Some(&ts.token), &c)
                .header("content-type", "application/json")
                .body(format!("{{\"alg\": \"A256GCM\", \"value\": \"{pt}\"")),
        )
        .await;
        assert_eq!(resp.0, 400, "{}", resp.2);
        exp.push(Expected {
            cid: c,
            url,
            op: "KeyEncrypt",
            status: 400,
            oid: admin.clone(),
            appid: admin_app.clone(),
            vault: "default",
            key_id: Some(format!("{}/keys/aes-{r}", ts.base)),
        });

        // 8. Unauthenticated (401): no token on even rounds, a forged one on odd rounds.
        let url = ts.url(&ts.base, &format!("/keys/ec-{r}"));
        let c = cid(&exp);
        let forged = format!("{}x", &ts.token[..ts.token.len() - 1]);
        let token = (r % 2 == 1).then_some(forged.as_str());
        if let Some(t) = token {
            tokens.push(t.to_string());
        }
        let resp = send(request(&ts, Method::GET, &url, token, &c)).await;
        expect_error(&resp, 401, "Unauthorized");
        exp.push(Expected {
            cid: c,
            url,
            op: "Authentication",
            status: 401,
            oid: None,
            appid: None,
            vault: "default",
            key_id: None,
        });

        // 9. A bad api-version (400) on even rounds, KeyList (200) on odd rounds.
        let c = cid(&exp);
        if r % 2 == 0 {
            let url = format!("{}/keys/ec-{r}?api-version=1.0", ts.base);
            let resp = send(request(&ts, Method::GET, &url, Some(&ts.token), &c)).await;
            assert_eq!(resp.0, 400, "{}", resp.2);
            exp.push(Expected {
                cid: c,
                url,
                op: "KeyGet",
                status: 400,
                oid: admin.clone(),
                appid: admin_app.clone(),
                vault: "default",
                key_id: None,
            });
        } else {
            let url = ts.url(&ts.base, "/keys");
            ok(send(request(&ts, Method::GET, &url, Some(&ts.token), &c)).await);
            exp.push(Expected {
                cid: c,
                url,
                op: "KeyList",
                status: 200,
                oid: admin.clone(),
                appid: admin_app.clone(),
                vault: "default",
                key_id: None,
            });
        }

        // 10. The token endpoint: the right secret (200) on even rounds, a wrong one (401) on
        //     odd rounds. Neither secret nor the issued token may be recorded.
        let url = format!("{}/{tenant}/oauth2/v2.0/token", ts.base);
        let c = cid(&exp);
        let wrong = format!("wrong-{}", b64(&random(30)));
        let sent_secret = if r % 2 == 0 {
            secret.to_string()
        } else {
            wrong.clone()
        };
        secrets.push(wrong);
        let resp = send_unchecked(
            request(&ts, Method::POST, &url, None, &c)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(token_form(&p.client_id, &sent_secret)),
        )
        .await;
        if r % 2 == 0 {
            assert_eq!(resp.0, 200, "{}", resp.2);
            tokens.push(resp.2["access_token"].as_str().unwrap().to_string());
            exp.push(Expected {
                cid: c,
                url,
                op: "TokenIssue",
                status: 200,
                oid: weak_oid.clone(),
                appid: weak_app.clone(),
                vault: "",
                key_id: None,
            });
        } else {
            assert_eq!(resp.0, 401, "{}", resp.2);
            assert_eq!(resp.2["error"], "invalid_client");
            // No identity was proven, but the client id it claimed is kept.
            exp.push(Expected {
                cid: c,
                url,
                op: "TokenIssue",
                status: 401,
                oid: None,
                appid: weak_app.clone(),
                vault: "",
                key_id: None,
            });
        }
    }
    assert_eq!(exp.len(), 60);

    // Exactly one record per request, in request order, with the right fields.
    let rows = all_rows(&ts);
    let evs = events(&rows);
    assert_eq!(
        rows.len(),
        60,
        "no checkpoint is due yet, one row per request"
    );
    assert_eq!(evs.len(), 60);
    for (i, ((row, rec), e)) in evs.iter().zip(&exp).enumerate() {
        let ctx = format!("request {i} ({} {}): {rec}", e.op, e.status);
        assert_eq!(row.seq, i as i64 + 1, "{ctx}");
        assert_eq!(rec["correlationId"], e.cid, "{ctx}");
        assert_eq!(rec["category"], "AuditEvent", "{ctx}");
        assert_eq!(rec["operationName"], e.op, "{ctx}");
        assert_eq!(rec["resultSignature"], signature_for(e.status), "{ctx}");
        let result_type = if e.status < 400 { "Success" } else { "Failure" };
        assert_eq!(rec["resultType"], result_type, "{ctx}");
        assert_eq!(rec["properties"]["httpStatusCode"], e.status, "{ctx}");
        assert_eq!(rec["properties"]["requestUri"], e.url.as_str(), "{ctx}");
        assert_eq!(rec["vault"], e.vault, "{ctx}");
        assert_eq!(rec["callerIpAddress"], "127.0.0.1", "{ctx}");
        assert!(
            rec["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{ctx}"
        );
        let claim = &rec["identity"]["claim"];
        match &e.oid {
            Some(oid) => {
                assert_eq!(claim["oid"], oid.as_str(), "{ctx}");
                assert_eq!(
                    claim["http://schemas.microsoft.com/identity/claims/objectidentifier"],
                    oid.as_str(),
                    "{ctx}"
                );
            }
            None => assert!(claim.get("oid").is_none(), "{ctx}"),
        }
        match &e.appid {
            Some(a) => assert_eq!(claim["appid"], a.as_str(), "{ctx}"),
            None => assert!(claim.get("appid").is_none(), "{ctx}"),
        }
        match &e.key_id {
            Some(id) => assert_eq!(rec["properties"]["id"], id.as_str(), "{ctx}"),
            None => assert!(rec["properties"].get("id").is_none(), "{ctx}"),
        }
        if e.op.starts_with("Key") && e.status != 400 {
            assert_eq!(rec["operationVersion"], API, "{ctx}");
        }
        if e.status >= 400 {
            assert!(
                rec["resultDescription"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "a failure says why: {ctx}"
            );
        }
        // The indexed columns agree with the record.
        assert_eq!(row.operation, e.op, "{ctx}");
        assert_eq!(row.result, signature_for(e.status), "{ctx}");
        assert_eq!(row.vault, e.vault, "{ctx}");
        assert_eq!(
            row.principal,
            e.oid.clone().unwrap_or_default().to_lowercase(),
            "{ctx}"
        );
        assert!(row.time_ms > 0 && row.time_ms <= now_ms(), "{ctx}");
    }
    let report = verify_ok(&ts, &rows);
    assert_eq!(
        (report.rows, report.first_seq, report.last_seq),
        (60, 1, 60)
    );
    assert_eq!(report.checkpoints, 0);

    // No secret in any column of any row, read straight from the file. A token counts in
    // full, its first 64 characters (a truncated copy) or its signature alone.
    for t in &tokens {
        secrets.push(t.clone());
        secrets.push(t[..64].to_string());
        secrets.push(t.rsplit('.').next().unwrap().to_string());
    }
    let db = open_db(&ts);
    let mut st = db
        .prepare("SELECT seq, time_ms, kind, vault, principal, operation, result, record, prev_hash, hash FROM audit")
        .unwrap();
    let raw: Vec<String> = st
        .query_map([], |r| {
            let mut s = String::new();
            for i in 0..10 {
                let v: rusqlite::types::Value = r.get(i)?;
                s.push_str(&format!("{v:?}|"));
            }
            Ok(s)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(raw.len(), 60);
    // Any fragment of 31 characters or more contains one of these aligned 24-character
    // windows, so truncated or partial copies are found too.
    for s in &secrets {
        assert!(s.len() >= 32, "secret too short to search for: {s}");
        let windows: Vec<&str> = (0..=s.len() - 24)
            .step_by(8)
            .map(|i| &s[i..i + 24])
            .chain(std::iter::once(&s[s.len() - 24..]))
            .collect();
        for (i, row) in raw.iter().enumerate() {
            for w in &windows {
                assert!(
                    !row.contains(w),
                    "row {} contains part of a secret ({w})",
                    i + 1
                );
            }
        }
    }
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_give_a_contiguous_verifiable_chain() {
    let ts = TestServer::start().await;
    ts.create_key("ec", json!({"kty": "EC", "crv": "P-256"}))
        .await;
    let base = ts.base.clone();
    let token = ts.token.clone();
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let client = ts.client.clone();
        let base = base.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for j in (t..200).step_by(16) {
                let cid = format!("c-{j:03}");
                let (url, token, want) = match j % 4 {
                    0 => (
                        format!("{base}/keys/ec?api-version={API}"),
                        Some(&token),
                        200,
                    ),
                    1 => (format!("{base}/keys?api-version={API}"), Some(&token), 200),
                    2 => (
                        format!("{base}/keys/nope?api-version={API}"),
                        Some(&token),
                        404,
                    ),
                    _ => (format!("{base}/keys/ec?api-version={API}"), None, 401),
                };
                let mut rb = client
                    .get(&url)
                    .header("x-ms-client-request-id", cid.as_str());
                if let Some(t) = token {
                    rb = rb.bearer_auth(t);
                }
                let r = send(rb).await;
                assert_eq!(r.0, want, "{cid}: {}", r.2);
                out.push((cid, want));
            }
            out
        }));
    }
    let mut sent: BTreeMap<String, u16> = BTreeMap::new();
    for t in tasks {
        sent.extend(t.await.expect("task"));
    }
    assert_eq!(sent.len(), 200);

    let rows = all_rows(&ts);
    assert_eq!(rows.len(), 201, "one create plus 200 concurrent requests");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1, "sequence numbers are contiguous");
        assert_eq!(r.kind, "event");
    }
    let mut seen: BTreeMap<String, u16> = BTreeMap::new();
    for (_, rec) in events(&rows).into_iter().skip(1) {
        let cid = rec["correlationId"].as_str().unwrap().to_string();
        let status = rec["properties"]["httpStatusCode"].as_u64().unwrap() as u16;
        assert!(
            seen.insert(cid.clone(), status).is_none(),
            "{cid} recorded twice"
        );
    }
    assert_eq!(seen, sent, "each request recorded once with its status");
    let report = verify_ok(&ts, &rows);
    assert_eq!(
        (report.rows, report.first_seq, report.last_seq),
        (201, 1, 201)
    );

    // A flipped byte anywhere in the stored chain is caught (sanity check of the verifier).
    let mut bad = chain(&rows);
    bad[100].record = bad[100].record.replacen("\"NotFound\"", "\"OK\"", 1);
    bad[100].record = bad[100].record.replacen("\"Unauthorized\"", "\"OK\"", 1);
    bad[100].record = bad[100].record.replacen("\"Success\"", "\"Failure\"", 1);
    assert_eq!(verify_err(&ts, bad).seq, 101);
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ 2. fail-closed

#[tokio::test]
async fn unrecordable_requests_are_refused_and_the_log_recovers_without_gap() {
    let ts = TestServer::start_with(ServerOptions {
        audit_busy_timeout: Duration::from_millis(300),
        ..options()
    })
    .await;
    let raw_k = random(32);
    ok(ts
        .put(
            "/keys/aes",
            json!({"key": {"kty": "oct", "k": b64(&raw_k)}, "Hsm": true}),
        )
        .await);
    let pt = random(32);
    let wrapped = ok(ts
        .op(
            "aes",
            "",
            "wrapkey",
            json!({"alg": "A256KW", "value": b64(&pt)}),
        )
        .await)["value"]
        .as_str()
        .unwrap()
        .to_string();
    let unwrap_url = ts.url(&ts.base, "/keys/aes/unwrapkey");
    let unwrap_body = json!({"alg": "A256KW", "value": wrapped});

    // A response arrives only once its record is in the file: read it back through another
    // connection right after each 200.
    let db = open_db(&ts);
    for i in 0..10 {
        let cid = format!("durable-{i:02}");
        let r = ok(send(
            request(&ts, Method::POST, &unwrap_url, Some(&ts.token), &cid).json(&unwrap_body),
        )
        .await);
        assert_eq!(unb64v(&r["value"]), pt);
        assert_eq!(
            seq_of_correlation(&db, &cid).len(),
            1,
            "{cid} answered before its record was durable"
        );
    }
    let rows_before = all_rows(&ts).len();
    assert_eq!(rows_before, 12);

    // Another process holds the write lock on audit.db longer than the busy timeout.
    let locker = open_db(&ts);
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let check_503 = |r: &Resp, what: &str| {
        assert_eq!(r.0, 503, "{what} must be refused, got {}: {}", r.0, r.2);
        assert_eq!(
            r.2["error"]["code"], "ServiceUnavailable",
            "{what}: {}",
            r.2
        );
        assert!(
            r.2["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {}",
            r.2
        );
        let ct =
            r.1.get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
        assert!(ct.starts_with("application/json"), "{what}: {ct}");
        let text = r.2.to_string();
        assert!(
            !text.contains(&b64(&pt)),
            "{what}: the refused response leaks the result"
        );
    };
    let create_key = |name: &str, cid: &str| {
        let url = ts.url(&ts.base, &format!("/keys/{name}/create"));
        send_unchecked(
            request(&ts, Method::POST, &url, Some(&ts.token), cid)
                .json(&json!({"kty": "EC", "crv": "P-256"})),
        )
    };
    let mut blocked = Vec::new();
    let started = Instant::now();
    let cid = "blocked-create".to_string();
    let r = create_key("during-lock", &cid).await;
    check_503(&r, "create during the lock");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the writer gave up before its busy timeout"
    );
    blocked.push(cid);
    let cid = "blocked-unwrap".to_string();
    let r = send_unchecked(
        request(&ts, Method::POST, &unwrap_url, Some(&ts.token), &cid).json(&unwrap_body),
    )
    .await;
    check_503(&r, "unwrap during the lock");
    blocked.push(cid);
    let cid = "blocked-401".to_string();
    let r = send_unchecked(request(
        &ts,
        Method::GET,
        &ts.url(&ts.base, "/keys/aes"),
        None,
        &cid,
    ))
    .await;
    check_503(&r, "an unauthenticated request during the lock");
    blocked.push(cid);
    // Concurrent requests during the lock: all refused, none hangs.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let cid = format!("blocked-par-{i}");
        blocked.push(cid.clone());
        let rb = request(&ts, Method::POST, &unwrap_url, Some(&ts.token), &cid).json(&unwrap_body);
        tasks.push(tokio::spawn(async move { send_unchecked(rb).await }));
    }
    for t in tasks {
        check_503(&t.await.unwrap(), "a concurrent unwrap during the lock");
    }
    // Once a write has failed, a state change is refused before it runs: the key below must
    // not exist afterwards. (The first create above met the failure only at its record, so it
    // may have happened; that window is one batch.)
    let cid = "gated-create".to_string();
    let r = create_key("gated", &cid).await;
    check_503(&r, "a create after a failed audit write");
    assert!(
        r.2["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("was not made")),
        "{}",
        r.2
    );
    blocked.push(cid);
    let cid = "gated-vault".to_string();
    let r = send_unchecked(
        request(
            &ts,
            Method::PUT,
            &ts.url(&ts.base, "/management/vaults/gatedvault"),
            Some(&ts.token),
            &cid,
        )
        .json(&json!({})),
    )
    .await;
    check_503(&r, "a vault creation after a failed audit write");
    blocked.push(cid);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        all_rows(&ts).len(),
        rows_before,
        "nothing was written during the lock"
    );

    // Release: requests succeed again, continuing the chain without a gap.
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    for i in 0..3 {
        let cid = format!("after-{i}");
        let r = ok(send(
            request(&ts, Method::POST, &unwrap_url, Some(&ts.token), &cid).json(&unwrap_body),
        )
        .await);
        assert_eq!(unb64v(&r["value"]), pt);
        assert_eq!(
            seq_of_correlation(&db, &cid),
            vec![(rows_before + i + 1) as i64],
            "{cid}: the chain continues at the next sequence number"
        );
    }
    ts.create_key("after-lock", json!({"kty": "EC", "crv": "P-256"}))
        .await;
    // The refused changes were not made.
    for (path, cid) in [
        ("/keys/gated", "gated-get"),
        ("/management/vaults/gatedvault", "gated-vault-get"),
    ] {
        let url = ts.url(&ts.base, path);
        let r = send_unchecked(request(&ts, Method::GET, &url, Some(&ts.token), cid)).await;
        assert_eq!(r.0, 404, "{path} exists after a refused change: {}", r.2);
    }
    let rows = all_rows(&ts);
    assert_eq!(rows.len(), rows_before + 6);
    let report = verify_ok(&ts, &rows);
    assert_eq!(
        (report.first_seq, report.last_seq, report.rows),
        (1, rows.len() as i64, rows.len() as u64)
    );
    for cid in &blocked {
        assert!(
            seq_of_correlation(&db, cid).is_empty(),
            "{cid} was refused but recorded"
        );
    }
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ 4. checkpoints

fn checkpoint_options(every: u64) -> ServerOptions {
    ServerOptions {
        audit_options: AuditOptions {
            checkpoint_every: every,
            checkpoint_interval: Duration::from_secs(3600),
            ..AuditOptions::default()
        },
        ..options()
    }
}

/// `n` sequential requests (a key create, then GETs) with correlation ids `prefix-i`.
async fn requests(ts: &TestServer, prefix: &str, n: usize) {
    for i in 0..n {
        let cid = format!("{prefix}-{i:03}");
        let url = ts.url(&ts.base, &format!("/keys/k-{prefix}"));
        let r = if i == 0 {
            let create = format!("{}/keys/k-{prefix}/create?api-version={API}", ts.base);
            send(
                request(ts, Method::POST, &create, Some(&ts.token), &cid)
                    .json(&json!({"kty": "EC", "crv": "P-256"})),
            )
            .await
        } else {
            send(request(ts, Method::GET, &url, Some(&ts.token), &cid)).await
        };
        assert_eq!(r.0, 200, "{cid}: {}", r.2);
    }
}

fn set_signature(row: &mut ChainRow, sig: &str) {
    let mut v: Value = serde_json::from_str(&row.record).unwrap();
    v["properties"]["signature"] = json!(sig);
    row.record = v.to_string();
}

#[tokio::test]
async fn checkpoints_are_signed_and_forgeries_fail() {
    let ts = TestServer::start_with(checkpoint_options(10)).await;
    requests(&ts, "cp", 35).await;
    let rows = all_rows(&ts);
    assert_eq!(rows.len(), 38, "35 events and 3 checkpoints");
    let cps: Vec<&AuditRow> = rows.iter().filter(|r| r.kind == "checkpoint").collect();
    assert_eq!(
        cps.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![11, 22, 33],
        "a checkpoint after every 10 events"
    );
    let jwk = ts.srv.tokens.public_jwk();
    for cp in &cps {
        assert_eq!(cp.operation, "AuditCheckpoint");
        let v: Value = serde_json::from_str(&cp.record).unwrap();
        assert_eq!(v["category"], "AuditCheckpoint");
        let p = &v["properties"];
        assert_eq!(p["alg"], "ES256");
        assert_eq!(p["headSeq"], cp.seq - 1);
        let before = &rows[(cp.seq - 2) as usize];
        assert_eq!(p["headHash"], before.hash.as_str());
        assert_eq!(cp.prev_hash, before.hash);
        // An auditor checks the signature with the public key alone.
        let sig = B64URL.decode(p["signature"].as_str().unwrap()).unwrap();
        let msg = format!(
            "cmkvault-audit-checkpoint:v1\n{}\n{}",
            cp.seq - 1,
            before.hash
        );
        assert!(cmkvault_crypto::verify_es256(&jwk, msg.as_bytes(), &sig));
    }
    let report = verify_ok(&ts, &rows);
    assert_eq!(
        report,
        VerifyReport {
            rows: 38,
            checkpoints: 3,
            first_seq: 1,
            last_seq: 38,
            last_checkpoint: Some(33),
            unsigned_tail: 5,
        }
    );
    let idx = |seq: i64| (seq - 1) as usize;

    // A valid signature of another checkpoint, chain rehashed: refused at that checkpoint.
    let mut forged = chain(&rows);
    let other: Value = serde_json::from_str(&forged[idx(11)].record).unwrap();
    set_signature(
        &mut forged[idx(22)],
        other["properties"]["signature"].as_str().unwrap(),
    );
    rehash(&mut forged, idx(22));
    let e = verify_err(&ts, forged);
    assert_eq!(e.seq, 22, "{e}");
    assert!(e.reason.contains("signature"), "{e}");

    // The right message signed with another key: refused.
    let mallory = cmkvault_crypto::TokenSigningKey::generate().unwrap();
    let mut forged = chain(&rows);
    let msg = format!("cmkvault-audit-checkpoint:v1\n21\n{}", forged[idx(21)].hash);
    set_signature(
        &mut forged[idx(22)],
        &B64URL.encode(mallory.sign(msg.as_bytes()).unwrap()),
    );
    rehash(&mut forged, idx(22));
    let e = verify_err(&ts, forged);
    assert_eq!((e.seq, e.reason.contains("signature")), (22, true), "{e}");

    // A garbage signature: refused.
    let mut forged = chain(&rows);
    set_signature(&mut forged[idx(33)], "AAAA");
    rehash(&mut forged, idx(33));
    assert_eq!(verify_err(&ts, forged).seq, 33);

    // The genuine log under someone else's public key: the first checkpoint fails.
    let e = verify_chain(chain(&rows), &mallory.public_jwk()).unwrap_err();
    assert_eq!(e.seq, 11, "{e}");

    // An edited event, chain rehashed by someone without the key: the next checkpoint no
    // longer names the record before it...
    let mut forged = chain(&rows);
    forged[idx(15)].record = forged[idx(15)].record.replace("\"KeyGet\"", "\"KeyList\"");
    rehash(&mut forged, idx(15));
    let e = verify_err(&ts, forged.clone());
    assert_eq!(e.seq, 22, "{e}");
    // ...and if it is made to name it, its signature fails.
    let mut v: Value = serde_json::from_str(&forged[idx(22)].record).unwrap();
    v["properties"]["headHash"] = json!(forged[idx(21)].hash);
    forged[idx(22)].record = v.to_string();
    rehash(&mut forged, idx(22));
    let e = verify_err(&ts, forged);
    assert_eq!((e.seq, e.reason.contains("signature")), (22, true), "{e}");

    // An edit without rehashing is caught at the record itself.
    let mut forged = chain(&rows);
    forged[idx(15)].record = forged[idx(15)].record.replace("\"KeyGet\"", "\"KeyList\"");
    let e = verify_err(&ts, forged);
    assert_eq!(e.seq, 15, "{e}");

    // A checkpoint on demand signs the current head.
    let seq = log(&ts).checkpoint().await.unwrap();
    assert_eq!(seq, 39);
    let report = verify_ok(&ts, &all_rows(&ts));
    assert_eq!((report.checkpoints, report.unsigned_tail), (4, 0));
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ 4. pruning

#[tokio::test]
async fn pruning_keeps_the_chain_verifiable_from_a_signed_checkpoint() {
    let ts = TestServer::start_with(checkpoint_options(10)).await;
    requests(&ts, "old", 15).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    requests(&ts, "new", 20).await;
    let rows = all_rows(&ts);
    assert_eq!(rows.len(), 38);

    // Nothing is older than a checkpoint from before the epoch: nothing goes.
    assert_eq!(log(&ts).prune_before(0).await.unwrap(), 0);
    assert_eq!(
        all_rows(&ts).len(),
        39,
        "prune_before wrote a checkpoint first"
    );

    // Checkpoint 11 is the newest one before the cutoff: rows 1-10 go, the log starts at it.
    let removed = log(&ts).prune_before(cutoff).await.unwrap();
    assert_eq!(removed, 10);
    let rows = all_rows(&ts);
    // No second checkpoint: nothing was written since the one the first prune made.
    assert_eq!(rows.len(), 29);
    assert_eq!((rows[0].seq, rows[0].kind.as_str()), (11, "checkpoint"));
    let report = verify_ok(&ts, &rows);
    assert_eq!(
        (
            report.first_seq,
            report.last_seq,
            report.checkpoints,
            report.unsigned_tail
        ),
        (11, 39, 4, 0)
    );
    let db = open_db(&ts);
    let left: i64 = db
        .query_row("SELECT COUNT(*) FROM audit WHERE seq <= 10", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0, "pruned rows are gone from the file");
    for i in 0..10 {
        assert!(seq_of_correlation(&db, &format!("old-{i:03}")).is_empty());
    }
    // Requests 11-15 predate the cutoff but follow the checkpoint: kept, so the log still
    // starts at a signature.
    assert_eq!(seq_of_correlation(&db, "old-010"), vec![12]);

    // Removing the checkpoint as well (the log now starts at an event) is detected.
    let e = verify_err(&ts, chain(&rows[1..]));
    assert_eq!(e.seq, 12, "{e}");
    assert!(e.reason.contains("does not start"), "{e}");

    // New records continue the chain after pruning; pruning to now leaves a verifiable tail.
    requests(&ts, "later", 3).await;
    assert_eq!(log(&ts).checkpoint().await.unwrap(), 43);
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Checkpoint 43 is older than the cutoff and signs the head, so prune_before writes none.
    let removed = log(&ts).prune_before(now_ms() - 1).await.unwrap();
    assert_eq!(removed, 32, "rows 11-42 went");
    let rows = all_rows(&ts);
    assert_eq!(
        rows.iter()
            .map(|r| (r.seq, r.kind.as_str()))
            .collect::<Vec<_>>(),
        vec![(43, "checkpoint")]
    );
    verify_ok(&ts, &rows);
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn retention_prunes_through_maintenance() {
    let ts = TestServer::start_with(ServerOptions {
        audit_retention_days: Some(1),
        maintenance_interval: Duration::from_millis(100),
        ..options()
    })
    .await;
    requests(&ts, "ret", 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = open_db(&ts);
    assert_eq!(
        seq_of_correlation(&db, "ret-000").len(),
        1,
        "nothing is a day old yet"
    );
    // Two days later, everything before the newest checkpoint goes.
    ts.advance(2 * 86_400);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seq_of_correlation(&db, "ret-004").is_empty() {
        assert!(Instant::now() < deadline, "retention did not prune");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = all_rows(&ts);
    assert_eq!(rows[0].kind, "checkpoint");
    verify_ok(&ts, &rows);
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ 5. webhook

/// A local HTTP receiver: records each request's head and JSON body, answers 500 to the
/// first request and 200 afterwards.
struct Hook {
    port: u16,
    got: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hook {
    async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let g = got.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(Self::serve(sock, g.clone()));
            }
        });
        Hook { port, got, task }
    }

    async fn serve(mut sock: tokio::net::TcpStream, got: Arc<Mutex<Vec<(String, Value)>>>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let read = |buf: &mut Vec<u8>, n: usize, chunk: &[u8]| buf.extend_from_slice(&chunk[..n]);
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 && buf.len() < 1 << 20 => read(&mut buf, n, &chunk),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => read(&mut buf, n, &chunk),
                _ => return,
            }
        }
        let body = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
        let n = {
            let mut g = got.lock().unwrap();
            g.push((head, body));
            g.len()
        };
        let status = if n == 1 {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let _ = sock
            .write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        let _ = sock.shutdown().await;
    }

    fn received(&self) -> Vec<(String, Value)> {
        self.got.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn denials_over_the_threshold_send_one_cloudevent() {
    let hook = Hook::start().await;
    let ts = TestServer::start_with(ServerOptions {
        alerts: AlertOptions {
            webhook: Some(format!("http://127.0.0.1:{}/hook", hook.port)),
            threshold: 3,
            window: Duration::from_secs(60),
            max_attempts: 4,
            first_backoff: Duration::from_millis(50),
            queue: 16,
        },
        ..options()
    })
    .await;
    let (a, _) = ts.srv.service.create_principal("alice").unwrap();
    let (b, _) = ts.srv.service.create_principal("bob").unwrap();
    let token_a = ts
        .srv
        .tokens
        .issue(&a.object_id, &a.client_id, ts.now(), 600)
        .unwrap();
    let token_b = ts
        .srv
        .tokens
        .issue(&b.object_id, &b.client_id, ts.now(), 600)
        .unwrap();
    let deny = |token: String, key: &'static str| {
        let rb = ts
            .client
            .get(ts.url(&ts.base, &format!("/keys/{key}")))
            .bearer_auth(token);
        async move {
            let r = send(rb).await;
            expect_error(&r, 403, "Forbidden");
        }
    };

    // Three denials by one principal do not exceed the threshold: no alert.
    for _ in 0..3 {
        deny(token_a.clone(), "k-a").await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(hook.received().is_empty(), "{:?}", hook.received());

    // The fourth denial by another principal within the window (its own count) fires once;
    // the first delivery is refused (500) and retried.
    for key in ["k1", "k1", "k2", "k2"] {
        deny(token_b.clone(), key).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.received().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no retried delivery: {:?}",
            hook.received()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fifth denial in the same window does not fire again.
    deny(token_b.clone(), "k2").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = hook.received();
    assert_eq!(
        got.len(),
        2,
        "one alert, delivered after one retry: {got:?}"
    );
    assert_eq!(got[0].1, got[1].1, "the retry carries the same event");
    let (head, ev) = &got[1];
    assert!(head.starts_with("POST /hook "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/cloudevents+json"),
        "{head}"
    );
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["type"], "io.cmkvault.access.denied.threshold");
    assert_eq!(ev["subject"], b.object_id.as_str());
    assert_eq!(ev["source"], "/cmkvault/vaults/default");
    assert!(ev["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(ev["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(ev["data"]["principal"], b.object_id.as_str());
    assert_eq!(ev["data"]["appid"], b.client_id.as_str());
    assert_eq!(ev["data"]["vault"], "default");
    assert!(
        ev["data"]["denials"].as_u64().is_some_and(|n| n >= 4),
        "{ev}"
    );
    assert_eq!(ev["data"]["windowSeconds"], 60);
    assert!(ev["data"]["lastAction"]
        .as_str()
        .is_some_and(|a| a.contains("keys/read")));

    // Counters per (principal, vault, key), highest first.
    let counters = ts.srv.alerts.counters();
    let find = |p: &str, k: &str| {
        counters
            .iter()
            .find(|c| c.0 == p && c.1 == "default" && c.2 == k)
            .map(|c| c.3)
    };
    assert_eq!(find(&a.object_id, "k-a"), Some(3), "{counters:?}");
    assert_eq!(find(&b.object_id, "k1"), Some(2), "{counters:?}");
    assert_eq!(find(&b.object_id, "k2"), Some(3), "{counters:?}");
    assert_eq!(counters.len(), 3, "{counters:?}");
    assert!(counters.windows(2).all(|w| w[0].3 >= w[1].3));

    // Every denial is in the audit log as Forbidden.
    let forbidden: Vec<_> = events(&all_rows(&ts))
        .into_iter()
        .filter(|(r, _)| r.result == "Forbidden")
        .map(|(r, _)| r.principal)
        .collect();
    let who: HashSet<&str> = forbidden.iter().map(String::as_str).collect();
    assert_eq!(forbidden.len(), 8);
    assert_eq!(
        who,
        HashSet::from([a.object_id.as_str(), b.object_id.as_str()])
    );
    ts.srv.shutdown().await;
    hook.task.abort();
}

// ------------------------------------------------------------------ abandoned requests

/// A request whose client gives up (HTTP/2 stream reset or HTTP/1.1 connection closed) while
/// the server works on it still runs to the end and is recorded: an operation that changed
/// state is never left without a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_abandoned_by_its_client_is_still_recorded() {
    let ts = TestServer::start().await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ts.port()));
    let ca = ts.dir.path().join("tls").join("ca.pem");
    let db = open_db(&ts);
    for (i, http1) in [false, true].into_iter().enumerate() {
        let mut b = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(&ca))
            .resolve("localhost", addr)
            .no_proxy();
        if http1 {
            b = b.http1_only();
        }
        let client = b.build().unwrap();
        // Warm the connection so the abandoned request reaches the server at once.
        let warm = client
            .get(ts.url(&ts.base, "/keys"))
            .bearer_auth(&ts.token)
            .send()
            .await
            .unwrap();
        assert_eq!(warm.status(), 200);
        // RSA-4096 generation takes far longer than the client waits; try a few times in
        // case one is quick.
        let mut abandoned = None;
        for attempt in 0..5 {
            let name = format!("abandoned-{i}-{attempt}");
            let cid = format!("abandoned-{i}-{attempt}");
            let sent = client
                .post(ts.url(&ts.base, &format!("/keys/{name}/create")))
                .bearer_auth(&ts.token)
                .header("x-ms-client-request-id", &cid)
                .json(&json!({"kty": "RSA", "key_size": 4096}))
                .timeout(Duration::from_millis(60))
                .send()
                .await;
            if sent.is_err() {
                abandoned = Some((name, cid));
                break;
            }
        }
        let (name, cid) = abandoned.expect("no request was abandoned");
        drop(client);
        // The key gets created (the work was not cancelled)...
        let deadline = Instant::now() + Duration::from_secs(30);
        while ts.get(&format!("/keys/{name}")).await.0 != 200 {
            assert!(
                Instant::now() < deadline,
                "{name} was never created (http1={http1})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // ...and so it must be recorded.
        let deadline = Instant::now() + Duration::from_secs(5);
        while seq_of_correlation(&db, &cid).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{name} was created but its request has no audit record (http1={http1})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seq_of_correlation(&db, &cid).len(), 1);
    }
    verify_ok(&ts, &all_rows(&ts));
    ts.srv.shutdown().await;
}

/// With a single attempt (`max_attempts` 0 counts as 1), a refused alert is dropped at once:
/// the next alert is not held back by a backoff nobody retries after.
#[tokio::test]
async fn a_dropped_alert_does_not_delay_the_next() {
    let hook = Hook::start().await;
    let ts = TestServer::start_with(ServerOptions {
        alerts: AlertOptions {
            webhook: Some(format!("http://127.0.0.1:{}/hook", hook.port)),
            threshold: 0,
            window: Duration::from_secs(60),
            max_attempts: 0,
            first_backoff: Duration::from_secs(60),
            queue: 16,
        },
        ..options()
    })
    .await;
    let mut oids = Vec::new();
    for name in ["carol", "dave"] {
        let (p, _) = ts.srv.service.create_principal(name).unwrap();
        let token = ts
            .srv
            .tokens
            .issue(&p.object_id, &p.client_id, ts.now(), 600)
            .unwrap();
        let r = send(
            ts.client
                .get(ts.url(&ts.base, "/keys/k"))
                .bearer_auth(token),
        )
        .await;
        expect_error(&r, 403, "Forbidden");
        oids.push(p.object_id);
    }
    // The first alert is refused (500) and dropped; the second follows promptly.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.received().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second alert was held back: {:?}",
            hook.received()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subjects: Vec<Value> = hook
        .received()
        .iter()
        .map(|(_, ev)| ev["subject"].clone())
        .collect();
    assert_eq!(subjects, vec![json!(oids[0]), json!(oids[1])]);
    ts.srv.shutdown().await;
    hook.task.abort();
}

/// Caller-chosen text (a claimed client id, the user agent) is kept short in records.
#[tokio::test]
async fn caller_supplied_text_is_truncated() {
    let ts = TestServer::start().await;
    let tenant = ts.srv.tokens.tenant_id().to_string();
    let long_id = "c".repeat(10_000);
    let r = send_unchecked(
        request(
            &ts,
            Method::POST,
            &format!("{}/{tenant}/oauth2/v2.0/token", ts.base),
            None,
            "long-client-id",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "u".repeat(5_000))
        .body(token_form(&long_id, "not-the-secret")),
    )
    .await;
    assert_eq!(r.0, 401, "{}", r.2);
    let rows = all_rows(&ts);
    assert_eq!(rows.len(), 1);
    let rec: Value = serde_json::from_str(&rows[0].record).unwrap();
    assert_eq!(rec["operationName"], "TokenIssue");
    // An unknown client id is recorded only as a short hash of what was sent.
    let hashed = hex::encode(&digest(256, long_id.as_bytes())[..8]);
    assert_eq!(
        rec["identity"]["claim"]["appid"],
        format!("unknown:sha256:{hashed}")
    );
    // A cut field keeps its start, the length and a hash of what was sent.
    let ua = rec["properties"]["clientInfo"].as_str().unwrap();
    assert!(ua.len() <= 256 && ua.starts_with(&"u".repeat(150)), "{ua}");
    assert!(ua.contains("cut 5000 bytes, sha256 "), "{ua}");
    assert!(rows[0].record.len() < 4096, "{}", rows[0].record.len());
    ts.srv.shutdown().await;
}

/// Stopping the server signs the records written since the last checkpoint.
#[tokio::test]
async fn shutdown_signs_the_end_of_the_log() {
    let ts = TestServer::start().await;
    for _ in 0..3 {
        send_unchecked(
            ts.client
                .get(with_api_version(&format!("{}/keys", ts.base)))
                .bearer_auth(&ts.token),
        )
        .await;
    }
    let dir = ts.stop().await;
    let store = cmkvault_store::SqliteAuditStore::open(
        &dir.path().join("audit.db"),
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    let last = store.last().unwrap().unwrap();
    assert_eq!(
        last.kind, "checkpoint",
        "the last row is a signed checkpoint"
    );
    assert_eq!(last.seq, 4);
}
