//! The tamper-evident, fail-closed audit log with group commit.
//!
//! Each request's [`AuditEvent`] is handed to one writer thread that drains everything waiting,
//! chains the records (each carries the SHA-256 of the previous one), writes the batch in one
//! SQLite transaction (one fsync) and only then acknowledges every request in the batch. A
//! request whose record is not durable gets an error instead of its response (fail-closed).
//! Every `checkpoint_every` records, every `checkpoint_interval` with new records, and before
//! pruning, the writer appends a checkpoint: the chain head signed (ES256) with the server's
//! signing key, so an exported log can be verified by an auditor with the public key.
//!
//! Hash of a row: `SHA-256(prev_hash_hex ‖ "\n" ‖ seq ‖ "\n" ‖ record_json)`, hex; the first
//! row's `prev_hash` is 64 zeros. `record_json` is the record with keys sorted at every level (as
//! stored), without the chain fields `seq`, `prevHash`, `hash` that exports add.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cmkvault_crypto::{PublicJwk, TokenSigningKey};
use cmkvault_store::{AuditHead, AuditRow, SqliteAuditStore, StoreError};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Records waiting for the writer at most; past this, requests fail (fail-closed) rather than
/// queue without bound.
const QUEUE_CAPACITY: usize = 65_536;

/// The object id recorded as the caller of changes the server makes on its own (automatic
/// purge and rotation by the maintenance task). No token can carry it: it is not a principal.
pub const SYSTEM_PRINCIPAL_OID: &str = "00000000-0000-0000-0000-00000000515e";

/// The hash that precedes the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

/// What a request did, as the audit log records it (Azure `AuditEvent` fields).
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    /// Event time, Unix milliseconds.
    pub time_ms: i64,
    /// Vault name (empty for requests that reached no vault, such as token requests).
    pub vault: String,
    /// `operationName` (`KeyUnwrap`, `Authentication`, ...).
    pub operation: String,
    /// `operationVersion` (api-version).
    pub api_version: String,
    /// HTTP status.
    pub status: u16,
    /// `resultSignature` (`OK`, `Forbidden`, `Unauthorized`, ...).
    pub result_signature: String,
    /// `resultDescription`: the error code or a short reason, never a secret.
    pub result_description: String,
    /// Time spent, milliseconds.
    pub duration_ms: u64,
    /// Caller IP.
    pub caller_ip: String,
    /// Caller object id, if authenticated.
    pub oid: Option<String>,
    /// Caller application id, if authenticated.
    pub appid: Option<String>,
    /// The request URI (no query secrets exist in this API).
    pub request_uri: String,
    /// The key id the operation touched, if any.
    pub key_id: Option<String>,
    /// Correlation id (`x-ms-client-request-id` or generated).
    pub correlation_id: String,
    /// User agent.
    pub client_info: Option<String>,
    /// For RBAC denials/grants: whether an access policy matched (access-policy vaults).
    pub access_policy_match: Option<bool>,
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-11-23T13:57:30.123Z`).
pub fn rfc3339_ms(time_ms: i64) -> String {
    // Civil-from-days (Howard Hinnant), so no date crate is needed for one format.
    let secs = time_ms.div_euclid(1000);
    let ms = time_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

impl AuditEvent {
    /// The `resultType` Azure shows for a status.
    fn result_type(&self) -> &'static str {
        if self.status < 400 {
            "Success"
        } else {
            "Failure"
        }
    }

    /// The record as Azure `AuditEvent` JSON text, keys sorted at every level (the structs
    /// below declare their fields in that order), as it is chained and stored.
    pub fn to_record_json(&self, tenant: &str) -> String {
        let resource_id = if self.vault.is_empty() {
            format!("/SUBSCRIPTIONS/{tenant}/RESOURCEGROUPS/CMKVAULT/PROVIDERS/MICROSOFT.KEYVAULT")
        } else {
            format!(
                "/SUBSCRIPTIONS/{tenant}/RESOURCEGROUPS/CMKVAULT/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{}",
                self.vault.to_uppercase()
            )
        };
        let record = RecordJson {
            caller_ip: &self.caller_ip,
            category: "AuditEvent",
            correlation_id: &self.correlation_id,
            duration_ms: self.duration_ms,
            identity: IdentityJson {
                claim: ClaimJson {
                    appid: self.appid.as_deref(),
                    object_identifier: self.oid.as_deref(),
                    oid: self.oid.as_deref(),
                },
            },
            operation: &self.operation,
            api_version: &self.api_version,
            properties: PropertiesJson {
                client_info: self.client_info.as_deref(),
                status: self.status,
                id: self.key_id.as_deref(),
                access_policy_match: self.access_policy_match,
                request_uri: &self.request_uri,
            },
            resource_id,
            result_description: &self.result_description,
            result_signature: &self.result_signature,
            result_type: self.result_type(),
            time: rfc3339_ms(self.time_ms),
            vault: &self.vault,
        };
        // Serialising borrowed strings and numbers cannot fail.
        serde_json::to_string(&record).unwrap_or_default()
    }
}

/// An `AuditEvent` record as stored; fields in sorted key order.
#[derive(Serialize)]
struct RecordJson<'a> {
    #[serde(rename = "callerIpAddress")]
    caller_ip: &'a str,
    category: &'static str,
    #[serde(rename = "correlationId")]
    correlation_id: &'a str,
    #[serde(rename = "durationMs")]
    duration_ms: u64,
    identity: IdentityJson<'a>,
    #[serde(rename = "operationName")]
    operation: &'a str,
    #[serde(rename = "operationVersion")]
    api_version: &'a str,
    properties: PropertiesJson<'a>,
    #[serde(rename = "resourceId")]
    resource_id: String,
    #[serde(rename = "resultDescription")]
    result_description: &'a str,
    #[serde(rename = "resultSignature")]
    result_signature: &'a str,
    #[serde(rename = "resultType")]
    result_type: &'static str,
    time: String,
    vault: &'a str,
}

#[derive(Serialize)]
struct IdentityJson<'a> {
    claim: ClaimJson<'a>,
}

#[derive(Serialize)]
struct ClaimJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    appid: Option<&'a str>,
    #[serde(
        rename = "http://schemas.microsoft.com/identity/claims/objectidentifier",
        skip_serializing_if = "Option::is_none"
    )]
    object_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oid: Option<&'a str>,
}

#[derive(Serialize)]
struct PropertiesJson<'a> {
    #[serde(rename = "clientInfo", skip_serializing_if = "Option::is_none")]
    client_info: Option<&'a str>,
    #[serde(rename = "httpStatusCode")]
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(
        rename = "isAccessPolicyMatch",
        skip_serializing_if = "Option::is_none"
    )]
    access_policy_match: Option<bool>,
    #[serde(rename = "requestUri")]
    request_uri: &'a str,
}

/// Hash of one chain row.
pub fn chain_hash(prev_hash: &str, seq: i64, record_json: &str) -> String {
    let mut data = Vec::with_capacity(prev_hash.len() + record_json.len() + 24);
    data.extend_from_slice(prev_hash.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(seq.to_string().as_bytes());
    data.push(b'\n');
    data.extend_from_slice(record_json.as_bytes());
    hex::encode(cmkvault_crypto::sha256(&data))
}

fn checkpoint_message(head_seq: i64, head_hash: &str) -> Vec<u8> {
    format!("cmkvault-audit-checkpoint:v1\n{head_seq}\n{head_hash}").into_bytes()
}

/// Tuning of the audit writer.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Records between signed checkpoints.
    pub checkpoint_every: u64,
    /// Time between checkpoints while records keep coming.
    pub checkpoint_interval: Duration,
    /// Most records written in one transaction.
    pub max_batch: usize,
    /// Group-commit delay: while requests that will produce a record are still running, the
    /// writer waits up to this long for their records, so one fsync covers more of them.
    /// Zero commits whatever is queued at once.
    pub commit_delay: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(300),
            max_batch: 4096,
            commit_delay: Duration::from_micros(1000),
        }
    }
}

struct Pending {
    row: AuditRow,
    /// When the request queued it (the group commit bounds how long it waits).
    queued: Instant,
    ack: Option<oneshot::Sender<Result<i64, AuditError>>>,
}

/// When a requested checkpoint is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    /// Always (on demand).
    Always,
    /// Only if records were written since the last checkpoint (shutdown, before pruning).
    IfUnsigned,
    /// Only if there are unsigned records and `checkpoint_interval` has passed (timer).
    IfDue,
}

enum Msg {
    Record(Box<Pending>),
    Checkpoint(oneshot::Sender<Result<i64, AuditError>>, CheckpointMode),
    /// Write what is queued, sign the unsigned end, acknowledge and end the thread.
    Shutdown(Option<oneshot::Sender<Result<i64, AuditError>>>),
}

/// The audit log: a handle to the writer thread plus read access for queries.
///
/// Stop it with [`AuditLog::shutdown`] (or by dropping it): both wait for the writer thread to
/// end, so nothing writes to the directory afterwards.
pub struct AuditLog {
    sender: mpsc::SyncSender<Msg>,
    /// The writer thread, until it is joined.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    store: Arc<SqliteAuditStore>,
    tenant: String,
    in_flight: Arc<InFlight>,
    stats: Arc<StatCounters>,
    failing: Arc<AtomicBool>,
}

/// Counters of the audit writer since start, for benchmarks and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Event records made durable.
    pub records: u64,
    /// Transactions committed (each is one fsync).
    pub commits: u64,
}

#[derive(Default)]
struct StatCounters {
    records: AtomicU64,
    commits: AtomicU64,
}

/// Requests that will produce a record but have not queued it yet. The writer's group commit
/// waits for them; the last one to finish wakes it, so arriving records never wake it one by
/// one.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    writer_waiting: AtomicBool,
    lock: Mutex<()>,
    idle: Condvar,
}

impl InFlight {
    fn begin(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1
            && self.writer_waiting.load(Ordering::SeqCst)
        {
            // Taking the lock orders this after the writer's check; it is then waiting.
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.notify_one();
        }
    }

    fn is_idle(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }

    /// Waits until no request is in flight or `timeout` passes.
    fn wait_idle(&self, timeout: Duration) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.writer_waiting.store(true, Ordering::SeqCst);
        if !self.is_idle() {
            let _ = self.idle.wait_timeout(guard, timeout);
        }
        self.writer_waiting.store(false, Ordering::SeqCst);
    }
}

/// Marks a request that will produce an audit record (see [`AuditLog::begin`]); the group
/// commit waits for such requests. Dropping it (or recording) ends the mark.
pub struct AuditTicket {
    in_flight: Arc<InFlight>,
}

impl Drop for AuditTicket {
    fn drop(&mut self) {
        self.in_flight.end();
    }
}

struct Writer {
    in_flight: Arc<InFlight>,
    stats: Arc<StatCounters>,
    /// The last write failed (cleared by the next one that succeeds).
    failing: Arc<AtomicBool>,
    store: Arc<SqliteAuditStore>,
    signer: TokenSigningKey,
    head_seq: i64,
    head_hash: String,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    opts: AuditOptions,
}

impl Writer {
    fn reload_head(&mut self) -> Result<(), StoreError> {
        match self.store.last()? {
            Some(r) => {
                self.head_seq = r.seq;
                self.head_hash = r.hash;
            }
            None => {
                self.head_seq = 0;
                self.head_hash = GENESIS_HASH.to_string();
            }
        }
        Ok(())
    }

    /// A log whose last row is not a checkpoint was not stopped cleanly (kill -9, power loss):
    /// its end is signed now, before anything new is written, so removing those records later
    /// is detectable. A log that cannot be signed stops the start (fail-closed).
    fn seal_unclean_end(&mut self) -> Result<(), AuditError> {
        let Some(last) = self.store.last()? else {
            return Ok(());
        };
        if last.kind == "checkpoint" {
            return Ok(());
        }
        let signed_to = self.store.last_checkpoint()?.map(|c| c.seq).unwrap_or(0);
        self.write(Vec::new(), true).map_err(|e| {
            AuditError::Write(format!(
                "cannot sign the end of the audit log left by an unclean stop: {e}"
            ))
        })?;
        tracing::warn!(
            records = last.seq - signed_to,
            "the audit log ended without a checkpoint (unclean stop): its end is signed now"
        );
        Ok(())
    }

    fn checkpoint_row(&self, seq: i64, prev: &str) -> Result<AuditRow, AuditError> {
        let sig = self
            .signer
            .sign(&checkpoint_message(seq - 1, prev))
            .map_err(|e| AuditError::Write(e.to_string()))?;
        let now = now_ms();
        let record = json!({
            "time": rfc3339_ms(now),
            "category": "AuditCheckpoint",
            "operationName": "AuditCheckpoint",
            "properties": {
                "headSeq": seq - 1,
                "headHash": prev,
                "alg": "ES256",
                "signature": B64URL.encode(sig),
            },
        });
        let record = record.to_string();
        Ok(AuditRow {
            seq,
            time_ms: now,
            kind: "checkpoint".into(),
            vault: String::new(),
            principal: String::new(),
            operation: "AuditCheckpoint".into(),
            result: "OK".into(),
            hash: chain_hash(prev, seq, &record),
            prev_hash: prev.to_string(),
            record,
        })
    }

    /// Chains and writes a batch; acknowledges each request after the commit.
    fn write(&mut self, batch: Vec<Pending>, force_checkpoint: bool) -> Result<i64, AuditError> {
        let mut seq = self.head_seq;
        let mut prev = self.head_hash.clone();
        let mut rows = Vec::with_capacity(batch.len() + 1);
        let mut acks = Vec::with_capacity(batch.len());
        for p in batch {
            seq += 1;
            let mut row = p.row;
            row.seq = seq;
            row.hash = chain_hash(&prev, seq, &row.record);
            row.prev_hash = std::mem::replace(&mut prev, row.hash.clone());
            rows.push(row);
            acks.push((seq, p.ack));
        }
        let events = acks.len() as u64;
        let due = force_checkpoint
            || self.since_checkpoint + events >= self.opts.checkpoint_every
            || (self.since_checkpoint + events > 0
                && self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval);
        if due && (events > 0 || force_checkpoint) {
            seq += 1;
            let cp = self.checkpoint_row(seq, &prev)?;
            prev = cp.hash.clone();
            rows.push(cp);
        }
        let result = self
            .store
            .append(&rows)
            .map_err(|e| AuditError::Write(e.to_string()));
        self.failing.store(result.is_err(), Ordering::SeqCst);
        match &result {
            Ok(()) => {
                self.stats.records.fetch_add(events, Ordering::Relaxed);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.head_seq = seq;
                self.head_hash = prev;
                if due {
                    self.since_checkpoint = 0;
                    self.last_checkpoint = Instant::now();
                    // The checkpoint is the batch's last row. The record of it beside the
                    // database only helps `audit verify` notice a cut log; failing to update
                    // it refuses nothing.
                    let head = AuditHead {
                        seq,
                        hash: self.head_hash.clone(),
                    };
                    if let Err(e) = self.store.write_head(&head) {
                        tracing::warn!("audit checkpoint {seq} is committed, but {e}");
                    }
                } else {
                    self.since_checkpoint += events;
                }
            }
            Err(e) => {
                tracing::error!("audit write failed, {} requests refused: {e}", acks.len());
                let _ = self.reload_head();
            }
        }
        for (row_seq, ack) in acks {
            if let Some(ack) = ack {
                let _ = ack.send(match &result {
                    Ok(()) => Ok(row_seq),
                    Err(e) => Err(AuditError::Write(e.to_string())),
                });
            }
        }
        result.map(|_| seq)
    }

    /// Signs the records written since the last checkpoint, if any (the end of the writer).
    fn seal(&mut self) -> Result<i64, AuditError> {
        if self.since_checkpoint > 0 {
            self.write(Vec::new(), true)
        } else {
            Ok(self.head_seq)
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let Ok(first) = rx.recv() else {
                // Every sender is gone: sign what is left unsigned before the thread ends.
                let _ = self.seal();
                return;
            };
            let mut batch = Batch::default();
            batch.push(first);
            loop {
                while batch.records.len() < self.opts.max_batch {
                    // Nothing queued after a shutdown request is taken: its sender learns
                    // that the log is closed.
                    if batch.shutdown.is_some() {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                // Group commit: while requests that will produce a record are still running,
                // wait until the oldest record has waited `commit_delay`, so one fsync covers
                // the records that arrive meanwhile. The writer waits on the in-flight count,
                // not on the queue, so arriving records do not wake it one by one; it commits
                // early once nothing is running any more.
                let Some(oldest) = batch.records.first().map(|p| p.queued) else {
                    break;
                };
                let left = self.opts.commit_delay.saturating_sub(oldest.elapsed());
                if batch.shutdown.is_some()
                    || left.is_zero()
                    || batch.records.len() >= self.opts.max_batch
                    || self.in_flight.is_idle()
                {
                    break;
                }
                self.in_flight.wait_idle(left);
            }
            let Batch {
                records,
                checkpoints,
                shutdown,
            } = batch;
            let unsigned = self.since_checkpoint + records.len() as u64 > 0;
            let interval_passed = self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval;
            let force = checkpoints.iter().any(|(_, mode)| match mode {
                CheckpointMode::Always => true,
                CheckpointMode::IfUnsigned => unsigned,
                CheckpointMode::IfDue => unsigned && interval_passed,
            });
            let result = if records.is_empty() && !force {
                Ok(self.head_seq)
            } else {
                self.write(records, force)
            };
            for (ack, _) in checkpoints {
                let _ = ack.send(match &result {
                    Ok(seq) => Ok(*seq),
                    Err(e) => Err(AuditError::Write(e.to_string())),
                });
            }
            if let Some(ack) = shutdown {
                let sealed = self.seal();
                if let Err(e) = &sealed {
                    tracing::error!("final audit checkpoint failed: {e}");
                }
                if let Some(ack) = ack {
                    let _ = ack.send(sealed);
                }
                return;
            }
        }
    }
}

/// What one turn of the writer takes from the queue.
#[derive(Default)]
struct Batch {
    records: Vec<Pending>,
    checkpoints: Vec<(oneshot::Sender<Result<i64, AuditError>>, CheckpointMode)>,
    /// A shutdown request (with its acknowledgement, if someone waits for it).
    shutdown: Option<Option<oneshot::Sender<Result<i64, AuditError>>>>,
}

impl Batch {
    fn push(&mut self, m: Msg) {
        match m {
            Msg::Record(p) => self.records.push(*p),
            Msg::Checkpoint(ack, mode) => self.checkpoints.push((ack, mode)),
            Msg::Shutdown(ack) => self.shutdown = Some(ack),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl AuditLog {
    /// Starts the writer thread over `store`, signing checkpoints with `signer`.
    pub fn start(
        store: Arc<SqliteAuditStore>,
        signer: TokenSigningKey,
        tenant: String,
        opts: AuditOptions,
    ) -> Result<Self, AuditError> {
        let in_flight = Arc::new(InFlight::default());
        let stats = Arc::new(StatCounters::default());
        let failing = Arc::new(AtomicBool::new(false));
        let mut writer = Writer {
            in_flight: in_flight.clone(),
            stats: stats.clone(),
            failing: failing.clone(),
            store: store.clone(),
            signer,
            head_seq: 0,
            head_hash: GENESIS_HASH.to_string(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            opts,
        };
        writer.reload_head()?;
        writer.seal_unclean_end()?;
        let (sender, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("cmkvault-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Write(format!("cannot start the audit writer: {e}")))?;
        Ok(AuditLog {
            sender,
            writer: Mutex::new(Some(thread)),
            store,
            tenant,
            in_flight,
            stats,
            failing,
        })
    }

    /// Records and commits written since the writer started.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            records: self.stats.records.load(Ordering::Relaxed),
            commits: self.stats.commits.load(Ordering::Relaxed),
        }
    }

    /// Call before a state change. A change whose record then fails to be written has already
    /// happened; so after a failed write, this first appends a signed checkpoint as a probe,
    /// and an error means the log is still not writable and the change must not run. While
    /// the log is healthy it costs one atomic load.
    pub async fn ready_for_change(&self) -> Result<(), AuditError> {
        if self.failing.load(Ordering::SeqCst) {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Marks the start of a request whose record will follow; pass the ticket to `record`.
    pub fn begin(&self) -> AuditTicket {
        self.in_flight.begin();
        AuditTicket {
            in_flight: self.in_flight.clone(),
        }
    }

    /// Records an event and waits until it is durable; returns its sequence number. The
    /// request's ticket (if any) ends once the record is queued.
    pub async fn record_with(
        &self,
        ticket: Option<AuditTicket>,
        event: &AuditEvent,
    ) -> Result<i64, AuditError> {
        let done = self.enqueue(event).await;
        drop(ticket);
        done?.await.map_err(|_| AuditError::Closed)?
    }

    /// Records an event and waits until it is durable; returns its sequence number.
    pub async fn record(&self, event: &AuditEvent) -> Result<i64, AuditError> {
        self.record_with(None, event).await
    }

    /// Hands a message to the writer without blocking; a full queue is a failure.
    fn send(&self, msg: Msg) -> Result<(), AuditError> {
        self.sender.try_send(msg).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                AuditError::Write("the audit queue is full (the writer is behind)".into())
            }
            mpsc::TrySendError::Disconnected(_) => AuditError::Closed,
        })
    }

    async fn enqueue(
        &self,
        event: &AuditEvent,
    ) -> Result<oneshot::Receiver<Result<i64, AuditError>>, AuditError> {
        let record = event.to_record_json(&self.tenant);
        let row = AuditRow {
            seq: 0,
            time_ms: event.time_ms,
            kind: "event".into(),
            vault: event.vault.clone(),
            principal: event.oid.clone().unwrap_or_default().to_lowercase(),
            operation: event.operation.clone(),
            result: event.result_signature.clone(),
            record,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let (ack, done) = oneshot::channel();
        self.send(Msg::Record(Box::new(Pending {
            row,
            queued: Instant::now(),
            ack: Some(ack),
        })))?;
        Ok(done)
    }

    /// Appends a signed checkpoint now; returns the head's sequence number.
    pub async fn checkpoint(&self) -> Result<i64, AuditError> {
        self.checkpoint_with(CheckpointMode::Always).await
    }

    /// Requests a checkpoint in the given mode; returns the head's sequence number after it.
    pub async fn checkpoint_with(&self, mode: CheckpointMode) -> Result<i64, AuditError> {
        let (ack, done) = oneshot::channel();
        self.send(Msg::Checkpoint(ack, mode))?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// Deletes records older than `cutoff_ms`, keeping the chain verifiable: a checkpoint is
    /// written first, and only rows before the newest checkpoint older than the cutoff go, so
    /// the log always starts at a signed checkpoint. Returns how many rows were removed.
    pub async fn prune_before(&self, cutoff_ms: i64) -> Result<usize, AuditError> {
        self.checkpoint_with(CheckpointMode::IfUnsigned).await?;
        // SQLite work stays off the async workers, like every other blocking call.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || prune_store(&store, cutoff_ms))
            .await
            .map_err(|e| AuditError::Write(format!("the pruning task failed: {e}")))?
    }

    /// The audit database (for queries).
    pub fn store(&self) -> &Arc<SqliteAuditStore> {
        &self.store
    }

    /// Stops the log: the writer commits what is queued, signs the unsigned end of the log,
    /// writes the head file and ends; this waits for the thread and then closes the database,
    /// so nothing touches the directory after it returns. Records sent afterwards fail with
    /// [`AuditError::Closed`]; queries on [`AuditLog::store`] fail too. Calling it again is a
    /// no-op. Returns the final checkpoint's failure, if any.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let thread = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(thread) = thread else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        let sender = self.sender.clone();
        // A full queue makes room as the writer drains it: wait for it off the async workers.
        let sent = tokio::task::spawn_blocking(move || sender.send(Msg::Shutdown(Some(ack))))
            .await
            .map_err(|e| AuditError::Write(format!("the shutdown task failed: {e}")))?;
        let sealed = match sent {
            Ok(()) => done.await.map_err(|_| AuditError::Closed).and_then(|r| r),
            // The thread is gone already.
            Err(_) => Ok(0),
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| AuditError::Write(format!("the shutdown task failed: {e}")))?
            .map_err(|_| AuditError::Write("the audit writer thread panicked".into()))?;
        self.store.close()?;
        sealed.map(|_| ())
    }
}

impl Drop for AuditLog {
    /// Without [`AuditLog::shutdown`], dropping the log still ends and joins the writer (which
    /// signs the unsigned end first), so no thread keeps writing to the directory.
    fn drop(&mut self) {
        let thread = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = self.sender.send(Msg::Shutdown(None));
            let _ = thread.join();
        }
    }
}

/// The pruning rule of [`AuditLog::prune_before`], for a store that has a fresh checkpoint.
pub fn prune_store(store: &SqliteAuditStore, cutoff_ms: i64) -> Result<usize, AuditError> {
    // One indexed lookup: reading every checkpoint row (a scan of the whole log under the
    // store's lock) on each maintenance tick stalled all audit writes on a large log.
    let Some(keep_from) = store.last_checkpoint_at_or_before(cutoff_ms)? else {
        return Ok(0);
    };
    Ok(store.prune_through(keep_from.seq - 1)?)
}

/// The outcome of a successful verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows checked (events and checkpoints).
    pub rows: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// First sequence number.
    pub first_seq: i64,
    /// Last sequence number.
    pub last_seq: i64,
    /// Last verified checkpoint's sequence number.
    pub last_checkpoint: Option<i64>,
    /// Rows after the last checkpoint (covered by the chain, not yet by a signature).
    pub unsigned_tail: u64,
}

/// Where and why a chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {reason}")]
pub struct ChainBroken {
    /// The first bad record's sequence number (or the missing one).
    pub seq: i64,
    /// What is wrong.
    pub reason: String,
}

/// One row as read from the database or an export.
#[derive(Clone, Debug)]
pub struct ChainRow {
    /// Sequence number.
    pub seq: i64,
    /// Record JSON without chain fields (keys sorted).
    pub record: String,
    /// Previous hash.
    pub prev_hash: String,
    /// This hash.
    pub hash: String,
}

impl From<&AuditRow> for ChainRow {
    fn from(r: &AuditRow) -> Self {
        ChainRow {
            seq: r.seq,
            record: r.record.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

/// Walks a chain: contiguous sequence numbers, each `prev_hash` equal to the previous row's
/// hash, each hash recomputed, each checkpoint's signature valid under `public`. A chain that
/// does not start at record 1 must start at a checkpoint (pruned logs do).
pub fn verify_chain(
    rows: impl IntoIterator<Item = ChainRow>,
    public: &PublicJwk,
) -> Result<VerifyReport, ChainBroken> {
    let mut report = VerifyReport::default();
    let mut prev: Option<(i64, String)> = None;
    for row in rows {
        let broken = |reason: String| ChainBroken {
            seq: row.seq,
            reason,
        };
        match &prev {
            None => {
                report.first_seq = row.seq;
                if row.seq == 1 && row.prev_hash != GENESIS_HASH {
                    return Err(broken(
                        "the first record does not start from the genesis hash".into(),
                    ));
                }
            }
            Some((pseq, phash)) => {
                if row.seq != pseq + 1 {
                    return Err(ChainBroken {
                        seq: pseq + 1,
                        reason: format!(
                            "record {} is missing (next present record is {})",
                            pseq + 1,
                            row.seq
                        ),
                    });
                }
                if &row.prev_hash != phash {
                    return Err(broken(
                        "its previous-hash does not match the record before it (records removed, reordered or edited)".into(),
                    ));
                }
            }
        }
        if chain_hash(&row.prev_hash, row.seq, &row.record) != row.hash {
            return Err(broken(
                "its content does not match its hash (record edited)".into(),
            ));
        }
        let value: Value = serde_json::from_str(&row.record)
            .map_err(|_| broken("the record is not valid JSON".into()))?;
        let is_checkpoint = value["category"] == "AuditCheckpoint";
        if is_checkpoint {
            let p = &value["properties"];
            let sig = p["signature"]
                .as_str()
                .and_then(|s| B64URL.decode(s).ok())
                .ok_or_else(|| broken("checkpoint without signature".into()))?;
            let head_seq = p["headSeq"].as_i64().unwrap_or(-1);
            let head_hash = p["headHash"].as_str().unwrap_or_default();
            if head_seq != row.seq - 1 || head_hash != row.prev_hash {
                return Err(broken(
                    "checkpoint does not name the record before it".into(),
                ));
            }
            if !cmkvault_crypto::verify_es256(
                public,
                &checkpoint_message(head_seq, head_hash),
                &sig,
            ) {
                return Err(broken("checkpoint signature is invalid".into()));
            }
            report.checkpoints += 1;
            report.last_checkpoint = Some(row.seq);
            report.unsigned_tail = 0;
        } else {
            if prev.is_none() && row.seq != 1 {
                return Err(broken(
                    "the log does not start at record 1 or at a signed checkpoint (records removed from the start)".into(),
                ));
            }
            report.unsigned_tail += 1;
        }
        report.rows += 1;
        report.last_seq = row.seq;
        prev = Some((row.seq, row.hash.clone()));
    }
    Ok(report)
}

/// A record as one export line: the AuditEvent plus `seq`, `prevHash` and `hash`.
pub fn export_line(row: &AuditRow) -> String {
    let mut v: Value = serde_json::from_str(&row.record).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("seq".into(), json!(row.seq));
        m.insert("prevHash".into(), json!(row.prev_hash));
        m.insert("hash".into(), json!(row.hash));
    }
    v.to_string()
}

/// Parses an export line back into a chain row.
pub fn parse_export_line(line: &str) -> Option<ChainRow> {
    let mut v: Value = serde_json::from_str(line).ok()?;
    let m = v.as_object_mut()?;
    let seq = m.remove("seq")?.as_i64()?;
    let prev_hash = m.remove("prevHash")?.as_str()?.to_string();
    let hash = m.remove("hash")?.as_str()?.to_string();
    Some(ChainRow {
        seq,
        record: v.to_string(),
        prev_hash,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_442_250_123), "2026-11-23T13:57:30.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn export_lines_round_trip() {
        let row = AuditRow {
            seq: 3,
            time_ms: 1,
            kind: "event".into(),
            vault: "v".into(),
            principal: String::new(),
            operation: "KeyGet".into(),
            result: "OK".into(),
            record: json!({"b": 1, "a": {"z": 2, "y": "x"}}).to_string(),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let back = parse_export_line(&export_line(&row)).unwrap();
        assert_eq!(back.record, row.record);
        assert_eq!(
            (back.seq, back.prev_hash.as_str(), back.hash.as_str()),
            (3, "p", "h")
        );
    }

    #[test]
    fn records_are_azure_shaped_with_sorted_keys() {
        let full = AuditEvent {
            time_ms: 1_795_442_250_123,
            vault: "team-a".into(),
            operation: "KeyUnwrap".into(),
            api_version: "7.5".into(),
            status: 403,
            result_signature: "Forbidden".into(),
            result_description: "ForbiddenByRbac".into(),
            duration_ms: 3,
            caller_ip: "127.0.0.1".into(),
            oid: Some("0b5c-oid".into()),
            appid: Some("app \"quoted\"".into()),
            request_uri: "https://team-a.vault.local/keys/k/unwrapkey?api-version=7.5".into(),
            key_id: Some("https://team-a.vault.local/keys/k/v1".into()),
            correlation_id: "c-1".into(),
            client_info: Some("azsdk-python".into()),
            access_policy_match: Some(false),
        };
        let text = full.to_record_json("tid");
        let value: Value = serde_json::from_str(&text).unwrap();
        // serde_json's map sorts keys, so re-serialising gives the same text only if the
        // record's keys were sorted at every level.
        assert_eq!(value.to_string(), text);
        assert_eq!(value["resultType"], "Failure");
        assert_eq!(value["time"], "2026-11-23T13:57:30.123Z");
        assert_eq!(
            value["resourceId"],
            "/SUBSCRIPTIONS/tid/RESOURCEGROUPS/CMKVAULT/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/TEAM-A"
        );
        assert_eq!(value["identity"]["claim"]["oid"], "0b5c-oid");
        assert_eq!(value["identity"]["claim"]["appid"], "app \"quoted\"");
        assert_eq!(value["properties"]["httpStatusCode"], 403);
        assert_eq!(value["properties"]["isAccessPolicyMatch"], false);

        let bare = AuditEvent {
            operation: "Authentication".into(),
            status: 401,
            ..Default::default()
        };
        let value: Value = serde_json::from_str(&bare.to_record_json("tid")).unwrap();
        assert_eq!(value.to_string(), bare.to_record_json("tid"));
        assert_eq!(value["identity"]["claim"], json!({}));
        assert!(value["properties"].get("id").is_none());
        assert_eq!(
            value["resourceId"],
            "/SUBSCRIPTIONS/tid/RESOURCEGROUPS/CMKVAULT/PROVIDERS/MICROSOFT.KEYVAULT"
        );
    }
}
