//! The tamper-evident, fail-closed audit log with group commit.
//!
//! Each request's [`AuditEvent`] is handed to one writer thread that drains everything waiting,
//! chains the records (each carries the SHA-256 of the previous one), writes the batch in one
//! transaction of the [`AuditSink`] (one fsync) and only then acknowledges every request in the
//! batch. A request whose record is not durable gets an error instead of its response
//! (fail-closed). Every `checkpoint_every` records, every `checkpoint_interval` with new
//! records, and before pruning, the writer appends a checkpoint: the chain head signed (ES256)
//! with the server's signing key, so an exported log can be verified by an auditor with the
//! public key.
//!
//! Hash of a row: `SHA-256(prev_hash_hex ‖ "\n" ‖ seq ‖ "\n" ‖ record_json)`, hex; the first
//! row's `prev_hash` is 64 zeros. `record_json` is the record with keys sorted at every level (as
//! stored), without the chain fields `seq`, `prevHash`, `hash` that exports add.
//!
//! Layout: `record` (the typed record and its JSON), `chain` (hashing, checkpoint
//! signatures, verification), `writer` (the group-commit writer and [`AuditLog`]), `export`
//! (JSON lines). Where rows are stored is the [`AuditSink`] trait of `cmkvault-store`
//! (`SqliteAuditStore` today); everything here works on `dyn AuditSink`.

mod chain;
mod export;
mod record;
mod writer;

pub use chain::{chain_hash, verify_chain, ChainBroken, ChainRow, VerifyReport, GENESIS_HASH};
pub use cmkvault_store::AuditSink;
pub use export::{export_line, parse_export_line};
pub use record::{rfc3339_ms, AuditEvent, SYSTEM_PRINCIPAL_OID};
pub use writer::{prune_store, AuditLog, AuditOptions, AuditStats, AuditTicket, CheckpointMode};

use cmkvault_store::StoreError;

/// Audit failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The record could not be made durable.
    #[error("the audit record could not be written: {0}")]
    Write(String),
    /// The writer is gone (server shutting down).
    #[error("the audit log is closed")]
    Closed,
    /// Reading the log failed.
    #[error("audit storage: {0}")]
    Store(#[from] StoreError),
}
