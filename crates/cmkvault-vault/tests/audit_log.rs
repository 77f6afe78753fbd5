//! Starting and stopping the audit log: a log whose end is unsigned (the writer died without
//! a checkpoint) is signed at start, before anything new is written; a stopped (or dropped)
//! log leaves the directory alone afterwards.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cmkvault_crypto::TokenSigningKey;
use cmkvault_store::{AuditFilter, AuditRow, AuditSink, SqliteAuditStore};
use cmkvault_vault::audit::{
    chain_hash, verify_chain, AuditEvent, AuditLog, AuditOptions, ChainRow, GENESIS_HASH,
};

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        time_ms: 1_795_442_250_000 + i as i64,
        vault: "default".into(),
        operation: "KeyUnwrap".into(),
        status: 200,
        result_signature: "OK".into(),
        correlation_id: format!("e-{i}"),
        ..Default::default()
    }
}

fn open(dir: &Path) -> Arc<SqliteAuditStore> {
    Arc::new(SqliteAuditStore::open(&dir.join("audit.db"), Duration::from_secs(5)).unwrap())
}

/// Checkpoints only when asked (so records stay unsigned).
fn options() -> AuditOptions {
    AuditOptions {
        checkpoint_every: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        ..AuditOptions::default()
    }
}

/// Appends `n` chained event rows straight to the store, as a writer killed before its next
/// checkpoint leaves them.
fn append_unsigned(store: &SqliteAuditStore, n: usize) {
    let (mut seq, mut prev) = match store.last().unwrap() {
        Some(r) => (r.seq, r.hash),
        None => (0, GENESIS_HASH.to_string()),
    };
    let rows: Vec<AuditRow> = (0..n)
        .map(|i| {
            seq += 1;
            let record = event(i).to_record_json("t");
            let hash = chain_hash(&prev, seq, &record);
            AuditRow {
                seq,
                time_ms: 1,
                kind: "event".into(),
                vault: "default".into(),
                principal: String::new(),
                operation: "KeyUnwrap".into(),
                result: "OK".into(),
                record,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect();
    store.append(&rows).unwrap();
}

#[tokio::test]
async fn an_unsigned_end_is_signed_at_start_before_anything_new() {
    let dir = tempfile::tempdir().unwrap();
    let key = TokenSigningKey::generate().unwrap();
    let store = open(dir.path());
    append_unsigned(&store, 3);
    assert_eq!(store.last_checkpoint().unwrap(), None);

    let log = AuditLog::start(
        store.clone(),
        TokenSigningKey::from_pkcs8(&key.to_pkcs8()).unwrap(),
        "t".into(),
        options(),
    )
    .unwrap();
    // Before any record: the end is signed.
    let last = store.last().unwrap().unwrap();
    assert_eq!((last.seq, last.kind.as_str()), (4, "checkpoint"));
    let seq = log.record(&event(9)).await.unwrap();
    assert_eq!(seq, 5, "new records follow the checkpoint");
    let rows: Vec<ChainRow> = store
        .query(&AuditFilter::default())
        .unwrap()
        .iter()
        .map(ChainRow::from)
        .collect();
    let report = verify_chain(rows, &key.public_jwk()).unwrap();
    assert_eq!(report.last_checkpoint, Some(4));
    log.shutdown().await.unwrap();

    // A log that ends at a checkpoint gets no second one.
    let store = open(dir.path());
    let log = AuditLog::start(store.clone(), key, "t".into(), options()).unwrap();
    assert_eq!(store.last().unwrap().unwrap().seq, 6);
    log.shutdown().await.unwrap();
}

/// Names, sizes and modification times of the files in `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.len(), m.modified().unwrap()),
            )
        })
        .collect()
}

/// After the log has stopped, the directory does not change, and the head file names the
/// final checkpoint, the log's last row.
async fn stopped_log_leaves_the_directory_alone(stop_by_drop: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = AuditLog::start(
        store,
        TokenSigningKey::generate().unwrap(),
        "t".into(),
        options(),
    )
    .unwrap();
    for i in 0..5 {
        log.record(&event(i)).await.unwrap();
    }
    // The records are unsigned: stopping signs them, writes the head file and closes.
    if stop_by_drop {
        drop(log);
    } else {
        log.shutdown().await.unwrap();
        assert!(
            log.record(&event(99)).await.is_err(),
            "a stopped log takes no records"
        );
        log.shutdown().await.unwrap();
    }
    let before = snapshot(dir.path());
    assert!(before.contains_key("audit-head.json"), "{before:?}");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            snapshot(dir.path()),
            before,
            "the directory changed after stop"
        );
    }
    let store = open(dir.path());
    let last = store.last().unwrap().unwrap();
    assert_eq!((last.seq, last.kind.as_str()), (6, "checkpoint"));
    let head = store.read_head().unwrap().unwrap();
    assert_eq!((head.seq, head.hash), (last.seq, last.hash));
}

#[tokio::test]
async fn a_shut_down_log_leaves_the_directory_alone() {
    stopped_log_leaves_the_directory_alone(false).await;
}

#[tokio::test]
async fn a_dropped_log_leaves_the_directory_alone() {
    stopped_log_leaves_the_directory_alone(true).await;
}
