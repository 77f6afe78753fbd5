//! `cmkvault audit verify|tail|query|export` end to end on the binary: a log made by
//! `cmkvault serve` verifies; edited, deleted and reordered rows, edited export lines and
//! forged checkpoint signatures are each reported as one `error:` line naming the record.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cmkvault_store::SqliteAuditStore;
use cmkvault_vault::audit::{chain_hash, AuditEvent, AuditLog, AuditOptions};
use cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID;
use common::{cmkvault, https_client, run, serve_with_token, success, Output, Server};
use serde_json::{json, Value};
use tempfile::TempDir;

// ------------------------------------------------------------------ process helpers

fn audit(args: &[&str], scratch: &Path) -> Output {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    run(cmkvault(&all), scratch)
}

/// Asserts a failure with exactly one `error:` line on stderr (see
/// [`common::one_error_line`]) that does not also claim the chain is OK; returns that line.
#[track_caller]
fn one_error_line(o: Output, what: &str) -> String {
    let stdout = o.stdout.clone();
    let line = common::one_error_line(o, what);
    assert!(!stdout.contains("audit chain OK"), "{what}: {stdout}");
    line
}

/// Asserts `audit verify` fails naming `seq` as the broken record; returns the line.
#[track_caller]
fn broken_at(o: Output, seq: i64, what: &str) -> String {
    let line = one_error_line(o, what);
    assert!(
        line.starts_with(&format!("error: audit chain broken at record {seq}: ")),
        "{what}: {line}"
    );
    line
}

/// Copies a directory tree (the data directory, for tampering with a copy), with its modes
/// (files keep theirs through `fs::copy`). Only a stopped writer's directory may be copied:
/// a live one can replace or remove files while the copy runs.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of `data` in `scratch/name` with `sql` applied to its audit.db.
fn tampered(data: &Path, scratch: &Path, name: &str, sql: &str) -> PathBuf {
    let copy = scratch.join(name);
    copy_dir(data, &copy);
    let db = rusqlite::Connection::open(copy.join("audit.db")).unwrap();
    db.execute_batch(sql).unwrap();
    drop(db);
    copy
}

fn row_count(data: &Path) -> i64 {
    let db = rusqlite::Connection::open(data.join("audit.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap()
}

/// Sequence number and kind of the log's last row.
fn last_row(data: &Path) -> (i64, String) {
    let db = rusqlite::Connection::open(data.join("audit.db")).unwrap();
    db.query_row(
        "SELECT seq, kind FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn verify(data: &Path, scratch: &Path) -> Output {
    audit(&["verify", "--data", data.to_str().unwrap()], scratch)
}

/// The sequence number at the start of a human-readable `tail`/`query` line.
fn seq_of_line(line: &str) -> i64 {
    line.split_whitespace().next().unwrap().parse().unwrap()
}

// ------------------------------------------------------------------ a log made by `serve`

#[test]
fn verify_tail_query_export_and_tamper_detection() {
    let tmp = TempDir::new().unwrap();
    let scratch = tmp.path();
    let data = scratch.join("data");
    let (server, token) = serve_with_token(&data, scratch);

    // Ten requests: create, six successful gets, a 404, a 401 and a list.
    let base = server.url();
    let client = https_client(&data, server.port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan: Vec<(&str, String, bool, u16)> = vec![
        ("POST", "/keys/k1/create".into(), true, 200),
        ("GET", "/keys/k1".into(), true, 200),
        ("GET", "/keys/k1".into(), true, 200),
        ("GET", "/keys/k1".into(), true, 200),
        ("GET", "/keys/k1".into(), true, 200),
        ("GET", "/keys/missing".into(), true, 404),
        ("GET", "/keys/k1".into(), false, 401),
        ("GET", "/keys".into(), true, 200),
        ("GET", "/keys/k1".into(), true, 200),
        ("GET", "/keys/k1".into(), true, 200),
    ];
    rt.block_on(async {
        for (method, path, auth, want) in &plan {
            let url = format!("{base}{path}?api-version=7.6");
            let mut rb = match *method {
                "POST" => client
                    .post(&url)
                    .json(&json!({"kty": "EC", "crv": "P-256"})),
                _ => client.get(&url),
            };
            if *auth {
                rb = rb.bearer_auth(&token);
            }
            let status = rb.send().await.expect("request").status().as_u16();
            assert_eq!(status, *want, "{method} {path}");
        }
    });

    // Verify works while the server runs, and after it stops.
    let out = success(verify(&data, scratch), "verify (server running)");
    assert!(
        out.starts_with("audit chain OK: 10 records (1 to 10)"),
        "{out}"
    );
    drop(server);
    let out = success(verify(&data, scratch), "verify");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("audit chain OK: 10 records (1 to 10)"),
        "{out}"
    );
    assert_eq!(row_count(&data), 10);

    // (a) An edited record.
    let d = tampered(
        &data,
        scratch,
        "edited",
        r#"UPDATE audit SET record = replace(record, '"httpStatusCode":404', '"httpStatusCode":200') WHERE seq = 6;"#,
    );
    assert_eq!(row_count(&d), 10);
    let line = broken_at(verify(&d, scratch), 6, "an edited record");
    assert!(line.contains("edited"), "{line}");
    // ...also when only an indexed column is left alone and the text changes subtly.
    let d = tampered(
        &data,
        scratch,
        "edited-oid",
        &format!(
            "UPDATE audit SET record = replace(record, '{BOOTSTRAP_ADMIN_OID}', '00000000-0000-0000-0000-00000000beef') WHERE seq = 3;"
        ),
    );
    broken_at(verify(&d, scratch), 3, "an edited caller");

    // (b) A deleted middle row.
    let d = tampered(
        &data,
        scratch,
        "deleted",
        "DELETE FROM audit WHERE seq = 5;",
    );
    let line = broken_at(verify(&d, scratch), 5, "a deleted row");
    assert!(line.contains("missing"), "{line}");
    // A deleted first row: the log no longer starts at record 1 or a checkpoint.
    let d = tampered(
        &data,
        scratch,
        "deleted-first",
        "DELETE FROM audit WHERE seq = 1;",
    );
    broken_at(verify(&d, scratch), 2, "a deleted first row");

    // (c) Two rows swapped (contents moved, sequence numbers kept).
    let swap = |a: i64, b: i64, cols: &str| {
        let set: Vec<String> = cols
            .split(',')
            .map(|c| format!("{c} = (SELECT {c} FROM t WHERE seq = CASE audit.seq WHEN {a} THEN {b} ELSE {a} END)"))
            .collect();
        format!(
            "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq IN ({a}, {b});
             UPDATE audit SET {} WHERE seq IN ({a}, {b});",
            set.join(", ")
        )
    };
    let d = tampered(
        &data,
        scratch,
        "swapped",
        &swap(
            3,
            7,
            "record,prev_hash,hash,time_ms,operation,result,principal,vault",
        ),
    );
    let line = broken_at(verify(&d, scratch), 3, "two swapped rows");
    assert!(line.contains("reordered"), "{line}");
    let d = tampered(
        &data,
        scratch,
        "swapped-records",
        &swap(4, 8, "record,hash"),
    );
    broken_at(verify(&d, scratch), 4, "two swapped records");

    // Export, and verify the export.
    let file = scratch.join("audit.jsonl");
    let o = audit(
        &[
            "export",
            "--format",
            "jsonl",
            "-o",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
        scratch,
    );
    assert!(o.stderr.contains("exported 10 records"), "{}", o.stderr);
    success(o, "export");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10);
    for (i, l) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["seq"], i as i64 + 1);
        assert!(v["hash"].is_string() && v["prevHash"].is_string());
        assert_eq!(v["category"], "AuditEvent");
    }
    let verify_file = |f: &Path| {
        audit(
            &[
                "verify",
                "--file",
                f.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ],
            scratch,
        )
    };
    let out = success(verify_file(&file), "verify --file");
    assert!(
        out.starts_with("audit chain OK: 10 records (1 to 10)"),
        "{out}"
    );
    // An edited line.
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    assert!(edited[3].contains("\"resultSignature\":\"OK\""));
    edited[3] = edited[3].replace(
        "\"resultSignature\":\"OK\"",
        "\"resultSignature\":\"NotFound\"",
    );
    let f = scratch.join("edited.jsonl");
    std::fs::write(&f, edited.join("\n") + "\n").unwrap();
    broken_at(verify_file(&f), 4, "an edited export line");
    // A removed line.
    let mut fewer: Vec<&str> = lines.clone();
    fewer.remove(6);
    let f = scratch.join("fewer.jsonl");
    std::fs::write(&f, fewer.join("\n") + "\n").unwrap();
    broken_at(verify_file(&f), 7, "a removed export line");
    // Two lines swapped.
    let mut swapped: Vec<&str> = lines.clone();
    swapped.swap(1, 8);
    let f = scratch.join("swapped.jsonl");
    std::fs::write(&f, swapped.join("\n") + "\n").unwrap();
    one_error_line(verify_file(&f), "swapped export lines");
    // Not an export at all.
    let f = scratch.join("garbage.jsonl");
    std::fs::write(&f, format!("{}\nnot json\n", lines[0])).unwrap();
    let line = one_error_line(verify_file(&f), "a garbage line");
    assert!(line.contains("line 2"), "{line}");
    let line = one_error_line(
        audit(
            &[
                "export",
                "--format",
                "csv",
                "--data",
                data.to_str().unwrap(),
            ],
            scratch,
        ),
        "export --format csv",
    );
    assert!(line.contains("csv"), "{line}");

    // tail -n 3: the last three records.
    let d = data.to_str().unwrap();
    let out = success(audit(&["tail", "-n", "3", "--data", d], scratch), "tail");
    let seqs: Vec<i64> = out.lines().map(seq_of_line).collect();
    assert_eq!(seqs, vec![8, 9, 10], "{out}");
    let out = success(
        audit(&["tail", "-n", "3", "--json", "--data", d], scratch),
        "tail --json",
    );
    let seqs: Vec<i64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![8, 9, 10], "{out}");

    // query --op KeyGet --result OK: the six successful gets, nothing else.
    let out = success(
        audit(
            &["query", "--op", "KeyGet", "--result", "OK", "--data", d],
            scratch,
        ),
        "query",
    );
    let seqs: Vec<i64> = out.lines().map(seq_of_line).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 9, 10], "{out}");
    assert!(out
        .lines()
        .all(|l| l.contains("KeyGet") && l.contains(" OK ")));
    let out = success(
        audit(
            &[
                "query", "--op", "keyget", "--result", "notfound", "--json", "--data", d,
            ],
            scratch,
        ),
        "query (case-insensitive, json)",
    );
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 1, "{out}");
    assert_eq!(recs[0]["seq"], 6);
    assert_eq!(recs[0]["properties"]["httpStatusCode"], 404);
    let out = success(
        audit(&["query", "--op", "Authentication", "--data", d], scratch),
        "query Authentication",
    );
    assert_eq!(out.lines().map(seq_of_line).collect::<Vec<_>>(), vec![7]);
    let out = success(
        audit(
            &["query", "--principal", BOOTSTRAP_ADMIN_OID, "--data", d],
            scratch,
        ),
        "query --principal",
    );
    assert_eq!(out.lines().count(), 9, "{out}");

    // --since: a duration ago or an RFC 3339 time; anything else is one error line.
    let out = success(
        audit(&["query", "--since", "1h", "--data", d], scratch),
        "since 1h",
    );
    assert_eq!(out.lines().count(), 10, "{out}");
    let out = success(
        audit(
            &["query", "--since", "2099-01-01T00:00:00Z", "--data", d],
            scratch,
        ),
        "since the future",
    );
    assert_eq!(out.lines().count(), 0, "{out}");
    let out = success(
        audit(
            &[
                "query",
                "--since",
                "2000-01-01T00:00:00Z",
                "--limit",
                "4",
                "--data",
                d,
            ],
            scratch,
        ),
        "since 2000, limit 4",
    );
    assert_eq!(
        out.lines().map(seq_of_line).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for bad in ["yesterday", "1y", "2026-13-01T00:00:00Z"] {
        let line = one_error_line(
            audit(&["query", "--since", bad, "--data", d], scratch),
            &format!("--since {bad}"),
        );
        assert!(line.contains("--since"), "{line}");
    }
    let line = one_error_line(
        audit(&["export", "--since", "soon", "--data", d], scratch),
        "export --since soon",
    );
    assert!(line.contains("--since"), "{line}");

    // A data directory without an audit log.
    let empty = scratch.join("no-audit");
    std::fs::create_dir_all(&empty).unwrap();
    for sub in ["tail", "query"] {
        let line = one_error_line(
            audit(&[sub, "--data", empty.to_str().unwrap()], scratch),
            sub,
        );
        assert!(line.contains("audit.db"), "{line}");
    }
}

// ------------------------------------------------------------------ signed checkpoints

// ------------------------------------------------------------------ a killed server

/// Correlation ids of the records in an export of `data`, in chain order.
fn exported_correlation_ids(data: &Path, scratch: &Path) -> Vec<String> {
    let out = success(
        audit(&["export", "--data", data.to_str().unwrap()], scratch),
        "export",
    );
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("an export line is JSON"))
        .filter(|v| v["category"] == "AuditEvent")
        .map(|v| v["correlationId"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_killed_server_loses_no_acknowledged_record_and_the_chain_goes_on() {
    let tmp = TempDir::new().unwrap();
    let scratch = tmp.path();
    let data = scratch.join("data");
    let (mut server, token) = serve_with_token(&data, scratch);
    let base = server.url();
    let client = https_client(&data, server.port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        client
            .post(format!("{base}/keys/k1/create?api-version=7.6"))
            .bearer_auth(&token)
            .json(&json!({"kty": "EC", "crv": "P-256"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);

    // Eight clients, each request with its own correlation id, until the server is killed
    // (SIGKILL, no shutdown path) in the middle of the load: six read a key, two create keys
    // named after the request.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (client, base, token, acked) =
                (client.clone(), base.clone(), token.clone(), acked.clone());
            rt.spawn(async move {
                for i in 0..20_000 {
                    let id = format!("crash-{c}-{i}");
                    let request = if c < 2 {
                        client
                            .post(format!("{base}/keys/{id}/create?api-version=7.6"))
                            .json(&json!({"kty": "EC", "crv": "P-256"}))
                    } else {
                        client.get(format!("{base}/keys/k1?api-version=7.6"))
                    };
                    let sent = request
                        .bearer_auth(&token)
                        .header("x-ms-client-request-id", &id)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().push(id),
                        Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    for c in clients {
        rt.block_on(c).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} requests before the kill",
        acked.len()
    );

    // The log verifies and holds every acknowledged request exactly once.
    let out = success(verify(&data, scratch), "verify after the kill");
    assert!(out.starts_with("audit chain OK: "), "{out}");
    let ids = exported_correlation_ids(&data, scratch);
    let mut seen = std::collections::HashMap::new();
    for id in &ids {
        *seen.entry(id.as_str()).or_insert(0) += 1;
    }
    for id in &acked {
        assert_eq!(
            seen.get(id.as_str()),
            Some(&1),
            "acknowledged {id} has no single record"
        );
    }

    // A restarted server continues the same chain, after signing the end the kill left
    // unsigned: before it serves anything, the log ends at a checkpoint right after the
    // last record written before the kill.
    let last_before = last_row(&data);
    assert_eq!(last_before.1, "event", "the kill left an unsigned end");
    let server = Server::start(&data, scratch);
    assert_eq!(
        last_row(&data),
        (last_before.0 + 1, "checkpoint".to_string()),
        "the unsigned end is signed at start"
    );
    let client = https_client(&data, server.port);
    let base = server.url();
    let status = rt.block_on(async {
        client
            .get(format!("{base}/keys/k1?api-version=7.6"))
            .bearer_auth(&token)
            .header("x-ms-client-request-id", "after-restart")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    // Every acknowledged key creation survived.
    let created: Vec<&String> = acked
        .iter()
        .filter(|id| id.starts_with("crash-0-") || id.starts_with("crash-1-"))
        .collect();
    assert!(!created.is_empty());
    rt.block_on(async {
        for id in &created {
            let status = client
                .get(format!("{base}/keys/{id}?api-version=7.6"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200, "acknowledged key {id} is gone");
        }
    });
    let out = success(verify(&data, scratch), "verify after the restart");
    assert!(out.starts_with("audit chain OK: "), "{out}");
    let after = exported_correlation_ids(&data, scratch);
    assert_eq!(
        after[..ids.len()],
        ids[..],
        "the records before the kill are unchanged"
    );
    assert_eq!(after[ids.len()], "after-restart");
    assert_eq!(
        after.len(),
        ids.len() + 1 + created.len(),
        "nothing lost or repeated"
    );
}

/// Writes `n` events through the audit writer itself, a checkpoint every `every`.
fn make_log(data: &Path, n: usize, every: u64) {
    let dir = cmkvault_server::datadir::open(data, None).expect("open data dir");
    let store =
        SqliteAuditStore::open(&data.join("audit.db"), Duration::from_secs(5)).expect("audit.db");
    let signer =
        cmkvault_crypto::TokenSigningKey::from_pkcs8(&dir.tokens.signing_key().to_pkcs8()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = AuditLog::start(
            Arc::new(store),
            signer,
            dir.tokens.tenant_id().to_string(),
            AuditOptions {
                checkpoint_every: every,
                checkpoint_interval: Duration::from_secs(3600),
                ..AuditOptions::default()
            },
        )
        .unwrap();
        for i in 0..n {
            log.record(&AuditEvent {
                time_ms: 1_795_442_250_000 + i as i64,
                vault: "default".into(),
                operation: "KeyUnwrap".into(),
                api_version: "7.6".into(),
                status: 200,
                result_signature: "OK".into(),
                oid: Some(BOOTSTRAP_ADMIN_OID.into()),
                request_uri: format!("https://localhost/keys/k{i}/unwrapkey"),
                correlation_id: format!("cp-{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        // What a stopping server does: sign the unsigned end of the log, then wait for the
        // writer and close the database, so nothing changes in `data` once this returns (a
        // copy taken right after used to meet a file that vanished).
        log.shutdown().await.unwrap();
    });
}

/// The JWK of a token-signing public key, as the JWKS endpoint serves it.
fn jwks(jwk: &cmkvault_crypto::PublicJwk) -> String {
    json!({"keys": [{
        "kty": "EC", "crv": "P-256",
        "x": B64URL.encode(jwk.x.as_ref().unwrap()),
        "y": B64URL.encode(jwk.y.as_ref().unwrap()),
    }]})
    .to_string()
}

#[test]
fn checkpoint_signatures_are_verified() {
    let tmp = TempDir::new().unwrap();
    let scratch = tmp.path();
    let data = scratch.join("data");
    make_log(&data, 10, 4);
    assert_eq!(
        row_count(&data),
        13,
        "10 events, 2 periodic checkpoints and a final one"
    );
    let out = success(verify(&data, scratch), "verify");
    assert_eq!(
        out.trim(),
        "audit chain OK: 13 records (1 to 13), 3 signed checkpoints, last checkpoint at 13, 0 records after it"
    );

    // With the public key given explicitly (what an auditor without DIR's root key does).
    let public = cmkvault_server::datadir::open(&data, None)
        .unwrap()
        .tokens
        .public_jwk();
    let key_file = scratch.join("jwks.json");
    std::fs::write(&key_file, jwks(&public)).unwrap();
    let file = scratch.join("export.jsonl");
    success(
        audit(
            &[
                "export",
                "-o",
                file.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ],
            scratch,
        ),
        "export",
    );
    let elsewhere = scratch.join("auditor");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let verify_with = |key: &Path, f: &Path| {
        audit(
            &[
                "verify",
                "--file",
                f.to_str().unwrap(),
                "--public-key",
                key.to_str().unwrap(),
                "--data",
                elsewhere.to_str().unwrap(),
            ],
            scratch,
        )
    };
    let out = success(verify_with(&key_file, &file), "verify --public-key");
    assert!(out.contains("3 signed checkpoints"), "{out}");
    assert!(
        !elsewhere.join("root.key").exists() && !elsewhere.join("cmkvault.db").exists(),
        "verifying with --public-key must not create a data directory"
    );
    // Someone else's key: the first checkpoint fails.
    let other = cmkvault_crypto::TokenSigningKey::generate().unwrap();
    let wrong_file = scratch.join("wrong.json");
    std::fs::write(&wrong_file, jwks(&other.public_jwk())).unwrap();
    let line = broken_at(verify_with(&wrong_file, &file), 5, "a wrong public key");
    assert!(line.contains("signature"), "{line}");
    // Not a key.
    let junk = scratch.join("junk.json");
    std::fs::write(&junk, "{\"keys\": [{\"kty\": \"RSA\"}]}").unwrap();
    one_error_line(verify_with(&junk, &file), "a non-P-256 key file");

    // A checkpoint carrying another checkpoint's (valid) signature, with the chain rehashed
    // after it, as someone without the signing key would have to do.
    let copy = scratch.join("forged");
    copy_dir(&data, &copy);
    let db = rusqlite::Connection::open(copy.join("audit.db")).unwrap();
    let mut rows: Vec<(i64, String, String, String)> = db
        .prepare("SELECT seq, record, prev_hash, hash FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let first: Value = serde_json::from_str(&rows[4].1).unwrap();
    let mut second: Value = serde_json::from_str(&rows[9].1).unwrap();
    assert_eq!(first["category"], "AuditCheckpoint");
    assert_eq!(second["category"], "AuditCheckpoint");
    second["properties"]["signature"] = first["properties"]["signature"].clone();
    rows[9].1 = second.to_string();
    for i in 9..rows.len() {
        let prev = rows[i - 1].3.clone();
        rows[i].2 = prev.clone();
        rows[i].3 = chain_hash(&prev, rows[i].0, &rows[i].1);
    }
    for (seq, record, prev, hash) in &rows[9..] {
        db.execute(
            "UPDATE audit SET record = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![record, prev, hash, seq],
        )
        .unwrap();
    }
    drop(db);
    let line = broken_at(verify(&copy, scratch), 10, "a forged checkpoint");
    assert!(line.contains("signature"), "{line}");
}

#[test]
fn a_log_cut_back_to_an_earlier_checkpoint_is_reported() {
    let tmp = TempDir::new().unwrap();
    let scratch = tmp.path();
    let data = scratch.join("data");
    // Events 1-4, checkpoint 5, events 6-9, checkpoint 10, events 11-12, checkpoint 13.
    make_log(&data, 10, 4);
    let head: Value =
        serde_json::from_slice(&std::fs::read(data.join("audit-head.json")).unwrap()).unwrap();
    assert_eq!(head["seq"], 13, "{head}");

    // Cut back to checkpoint 10: still a valid, signed chain, but shorter than the head says.
    let cut = tampered(&data, scratch, "cut", "DELETE FROM audit WHERE seq >= 11;");
    let line = one_error_line(verify(&cut, scratch), "a log cut back to a checkpoint");
    assert!(
        line.starts_with("error: audit log truncated: ")
            && line.contains("names checkpoint 13, but the log ends at record 10"),
        "{line}"
    );

    // A head that names another log's checkpoint.
    let other = tampered(&data, scratch, "other-head", "SELECT 1;");
    std::fs::write(
        other.join("audit-head.json"),
        json!({"seq": 13, "hash": "00".repeat(32)}).to_string(),
    )
    .unwrap();
    let line = one_error_line(verify(&other, scratch), "a foreign head");
    assert!(
        line.contains("does not match") && line.contains("record 13"),
        "{line}"
    );

    // Data directories from before the head file verify as before.
    let old = tampered(&data, scratch, "no-head", "SELECT 1;");
    std::fs::remove_file(old.join("audit-head.json")).unwrap();
    success(verify(&old, scratch), "verify without a head file");
}
