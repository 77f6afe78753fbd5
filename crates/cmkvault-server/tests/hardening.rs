//! The data directory and the audit log under adverse conditions: an unsigned log end left by
//! a crash is signed before the first request; files holding secrets or records are 0600 and
//! the directories 0700 (also when the operator made them wider); a root key file others can
//! read is refused; automatic purge and rotation are recorded as the system principal and do
//! nothing while the audit log cannot be written; a corrupt stored key is an internal error.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cmkvault_server::{datadir, ServerOptions};
use cmkvault_store::{AuditFilter, AuditRow, AuditSink, SqliteAuditStore};
use cmkvault_vault::audit::{chain_hash, verify_chain, ChainRow, SYSTEM_PRINCIPAL_OID};
use cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID;
use common::*;
use serde_json::{json, Value};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every row of `DIR/audit.db`, read through a connection of its own.
fn rows(dir: &Path) -> Vec<AuditRow> {
    let store = SqliteAuditStore::open(&dir.join("audit.db"), Duration::from_secs(5)).unwrap();
    let rows = store.query(&AuditFilter::default()).unwrap();
    store.close().unwrap();
    rows
}

fn verify(ts: &TestServer, rows: &[AuditRow]) -> cmkvault_vault::audit::VerifyReport {
    verify_chain(rows.iter().map(ChainRow::from), &ts.srv.tokens.public_jwk())
        .unwrap_or_else(|e| panic!("the audit chain should verify: {e}"))
}

// ------------------------------------------------------------------ start-up seal

#[tokio::test]
async fn an_unsigned_log_end_left_by_a_crash_is_signed_before_the_first_request() {
    let ts = TestServer::start().await;
    ts.create_key("k", json!({"kty": "EC"})).await;
    let public = ts.srv.tokens.public_jwk();
    let tmp = ts.stop().await;
    let dir = tmp.path();
    // What a server killed after acknowledging three more requests leaves: chained records
    // after the last checkpoint, none after them.
    {
        let store = SqliteAuditStore::open(&dir.join("audit.db"), Duration::from_secs(5)).unwrap();
        let last = store.last().unwrap().unwrap();
        assert_eq!(last.kind, "checkpoint", "a clean stop signs the end");
        let (mut seq, mut prev) = (last.seq, last.hash);
        let mut unsigned = Vec::new();
        for i in 0..3 {
            seq += 1;
            let record =
                json!({"category": "AuditEvent", "correlationId": format!("lost-{i}")}).to_string();
            let hash = chain_hash(&prev, seq, &record);
            unsigned.push(AuditRow {
                seq,
                time_ms: 1,
                kind: "event".into(),
                vault: "default".into(),
                principal: String::new(),
                operation: "KeyGet".into(),
                result: "OK".into(),
                record,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            });
        }
        store.append(&unsigned).unwrap();
        store.close().unwrap();
    }
    let unsigned_end = rows(dir).last().unwrap().seq;

    // The next start signs them before it serves anything.
    let data = datadir::open(dir, None).unwrap();
    let srv = cmkvault_server::start(&data, options()).await.unwrap();
    let sealed = rows(dir);
    let last = sealed.last().unwrap();
    assert_eq!(
        (last.seq, last.kind.as_str()),
        (unsigned_end + 1, "checkpoint"),
        "the end left by the crash is signed at start"
    );
    // The first request's record follows the checkpoint; the chain verifies.
    let token = srv
        .tokens
        .issue(BOOTSTRAP_ADMIN_OID, "test", srv.service.clock().now(), 3600)
        .unwrap();
    let client = http_client(&dir.join("tls").join("ca.pem"));
    let url = with_api_version(&format!("https://localhost:{}/keys/k", srv.addr.port()));
    ok(send(client.get(url).bearer_auth(token)).await);
    srv.shutdown().await;
    let all = rows(dir);
    let report = verify_chain(all.iter().map(ChainRow::from), &public).unwrap();
    assert!(report.checkpoints >= 2, "{report:?}");
    assert_eq!(
        all[unsigned_end as usize + 1].kind,
        "event",
        "the request follows"
    );
}

// ------------------------------------------------------------------ permissions

const PRIVATE_FILES: [&str; 9] = [
    "root.key",
    "cmkvault.db",
    "cmkvault.db-wal",
    "cmkvault.db-shm",
    "audit.db",
    "audit.db-wal",
    "audit.db-shm",
    "audit-head.json",
    "tls/server.key",
];

/// Starts a server over `dir`, makes one request, and checks the modes while it runs and
/// after it stopped.
async fn check_modes(dir: &Path) {
    let data = datadir::open(dir, None).unwrap();
    let srv = cmkvault_server::start(&data, options()).await.unwrap();
    let audit = srv.audit.clone().unwrap();
    audit.checkpoint().await.unwrap();
    for f in PRIVATE_FILES {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f} while serving");
    }
    drop(audit);
    srv.shutdown().await;
    drop(data);
    for d in [dir.to_path_buf(), dir.join("tls")] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    for f in PRIVATE_FILES {
        let p = dir.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f} after stop");
        }
    }
}

#[tokio::test]
async fn files_with_secrets_or_records_are_private_and_directories_0700() {
    let tmp = tempfile::tempdir().unwrap();
    // Made by the server.
    check_modes(&tmp.path().join("fresh")).await;
    // Made by the operator, wide open, with a wide tls directory too.
    let made = tmp.path().join("made");
    std::fs::create_dir_all(made.join("tls")).unwrap();
    for d in [&made, &made.join("tls")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    check_modes(&made).await;
    // Files an earlier version left world-readable are tightened at the next start.
    for f in [
        "audit.db",
        "cmkvault.db",
        "audit-head.json",
        "tls/server.key",
    ] {
        std::fs::set_permissions(made.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
    check_modes(&made).await;
}

#[tokio::test]
async fn a_root_key_file_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(datadir::open(tmp.path(), None).unwrap());
    let key = tmp.path().join("root.key");
    for bad in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = datadir::open(tmp.path(), None)
            .err()
            .expect("a shared root key is refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", key.display())) && !msg.contains('\n'),
            "{bad:o}: {msg}"
        );
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    datadir::open(tmp.path(), None).expect("0400 is private");
}

// ------------------------------------------------------------------ audited maintenance

fn system_records(rows: &[AuditRow]) -> Vec<(String, String, Value)> {
    rows.iter()
        .filter(|r| r.principal == SYSTEM_PRINCIPAL_OID)
        .map(|r| {
            (
                r.operation.clone(),
                r.result.clone(),
                serde_json::from_str(&r.record).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn automatic_purge_and_rotation_are_recorded_as_the_system_principal() {
    let ts = TestServer::start().await;
    ts.create_key("old", json!({"kty": "EC"})).await;
    ok(ts.delete("/keys/old").await);
    ts.create_key("due", json!({"kty": "EC"})).await;
    ok(ts
        .put(
            "/keys/due/rotationpolicy",
            json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
                   "attributes": {"expiryTime": "P90D"}}),
        )
        .await);
    ts.advance(90 * 86_400);
    assert_eq!(ts.maintenance().await, (1, 1));
    let rows = rows(ts.dir.path());
    let system = system_records(&rows);
    assert_eq!(
        system
            .iter()
            .map(|(op, res, _)| (op.as_str(), res.as_str()))
            .collect::<Vec<_>>(),
        [("KeyPurge", "OK"), ("KeyRotate", "OK")]
    );
    let (_, _, purge) = &system[0];
    assert_eq!(purge["identity"]["claim"]["oid"], SYSTEM_PRINCIPAL_OID);
    assert_eq!(purge["vault"], "default");
    assert_eq!(purge["properties"]["requestUri"], "/keys/old");
    let (_, _, rotate) = &system[1];
    let new_version = ok(ts.get("/keys/due").await)["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        rotate["properties"]["id"],
        format!("/keys/due/{new_version}")
    );
    // A signed checkpoint preceded the first automatic change.
    let first = rows
        .iter()
        .position(|r| r.principal == SYSTEM_PRINCIPAL_OID)
        .unwrap();
    assert_eq!(rows[first - 1].kind, "checkpoint");
    verify(&ts, &rows);
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn maintenance_changes_nothing_while_the_audit_log_cannot_be_written() {
    let ts = TestServer::start_with(ServerOptions {
        audit_busy_timeout: Duration::from_millis(200),
        ..options()
    })
    .await;
    ts.create_key("old", json!({"kty": "EC"})).await;
    ok(ts.delete("/keys/old").await);
    ts.advance(90 * 86_400);
    let before = rows(ts.dir.path()).len();
    // Another process holds the audit database's write lock: no write has failed yet, so
    // only a real write finds out.
    let locker = rusqlite::Connection::open(ts.dir.path().join("audit.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let report = cmkvault_server::maintenance::run_once(&ts.srv.service, ts.srv.audit.as_ref())
        .await
        .unwrap();
    assert_eq!(report.purged, 0, "{report:?}");
    assert!(report.stopped.is_some(), "{report:?}");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert!(
        ts.srv.service.get_deleted_key("default", "old").is_ok(),
        "purged without a record"
    );
    assert_eq!(rows(ts.dir.path()).len(), before);
    // Writable again: the purge runs and is recorded.
    assert_eq!(ts.maintenance().await, (1, 0));
    let system = system_records(&rows(ts.dir.path()));
    assert_eq!(system.len(), 1);
    assert_eq!(
        (system[0].0.as_str(), system[0].1.as_str()),
        ("KeyPurge", "OK")
    );
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ corrupt stored key

#[tokio::test]
async fn a_corrupt_stored_key_is_an_internal_error() {
    let mut ts = TestServer::start().await;
    let bundle = ts
        .create_key("k", json!({"kty": "oct-HSM", "key_size": 256}))
        .await;
    let version = version_of(&bundle);
    ts.create_key("j", json!({"kty": "oct-HSM", "key_size": 256}))
        .await;
    let dir = ts.dir.path().to_path_buf();
    // Stopped: edit cmkvault.db. "k" gets material that opens under the root key but is not
    // a key; "j" gets a blob that does not open at all.
    ts.restart().await;
    let root_text = std::fs::read_to_string(dir.join("root.key")).unwrap();
    let root =
        cmkvault_crypto::RootKey::from_bytes(&B64.decode(root_text.trim()).unwrap()).unwrap();
    let garbage = root
        .seal(
            format!("cmkvault:key:v1:default:k:{version}").as_bytes(),
            b"\x02not a key",
        )
        .unwrap();
    let db = rusqlite::Connection::open(dir.join("cmkvault.db")).unwrap();
    db.execute(
        "UPDATE key_versions SET sealed = ?1 WHERE name_lc = 'k'",
        [&garbage],
    )
    .unwrap();
    db.execute(
        "UPDATE key_versions SET sealed = x'0102030405' WHERE name_lc = 'j'",
        [],
    )
    .unwrap();
    drop(db);
    for (path, body) in [
        ("/keys/k", None),
        (
            "/keys/k/wrapkey",
            Some(json!({"alg": "A256KW", "value": b64(&[7; 32])})),
        ),
        ("/keys/j", None),
    ] {
        let url = ts.url(&ts.base, path);
        let rb = match &body {
            Some(b) => ts.client.post(&url).json(b),
            None => ts.client.get(&url),
        };
        let r = send_unchecked(rb.bearer_auth(&ts.token)).await;
        assert_eq!(r.0, 500, "{path}: {}", r.2);
        assert_eq!(
            r.2["error"]["code"], "InternalServerError",
            "{path}: {}",
            r.2
        );
        assert!(!r.2.to_string().contains("not a key"), "{}", r.2);
    }
    ts.srv.shutdown().await;
}
