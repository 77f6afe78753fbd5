//! The audit writer's group commit waits for records of requests still running.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::sync::Arc;
use std::time::Duration;

use cmkvault_crypto::TokenSigningKey;
use cmkvault_store::SqliteAuditStore;
use cmkvault_vault::audit::{AuditEvent, AuditLog, AuditOptions};

fn event(op: &str) -> AuditEvent {
    AuditEvent {
        time_ms: 1,
        vault: "v".into(),
        operation: op.into(),
        status: 200,
        result_signature: "OK".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_request_holds_the_commit_until_its_record_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteAuditStore::open(&dir.path().join("a.db"), Duration::from_secs(1)).unwrap();
    let log = Arc::new(
        AuditLog::start(
            Arc::new(store),
            TokenSigningKey::generate().unwrap(),
            "t".into(),
            AuditOptions {
                commit_delay: Duration::from_secs(5),
                ..AuditOptions::default()
            },
        )
        .unwrap(),
    );
    // Request B is running (it holds a ticket); request A finishes first.
    let ticket_b = log.begin();
    let a = {
        let log = log.clone();
        tokio::spawn(async move { log.record(&event("A")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !a.is_finished(),
        "A waits for B's record to share its commit"
    );
    let seq_b = log.record_with(Some(ticket_b), &event("B")).await.unwrap();
    let seq_a = a.await.unwrap().unwrap();
    assert_eq!((seq_a, seq_b), (1, 2), "one batch, in arrival order");

    // With nothing running, a record commits at once (no delay).
    let started = std::time::Instant::now();
    log.record(&event("C")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A ticket dropped without a record (the request died) releases the wait.
    let ticket_d = log.begin();
    let e = {
        let log = log.clone();
        tokio::spawn(async move { log.record(&event("E")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(ticket_d);
    tokio::time::timeout(Duration::from_secs(2), e)
        .await
        .expect("committed soon after the ticket ended, well before the 5 s bound")
        .unwrap()
        .unwrap();
}
