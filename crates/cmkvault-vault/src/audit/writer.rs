//! The group-commit writer: one thread that chains queued records, appends each batch to the
//! [`AuditSink`] in one transaction, signs checkpoints and acknowledges requests; [`AuditLog`]
//! is its handle (tickets for in-flight requests, the fail-closed gate, pruning, shutdown).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cmkvault_crypto::TokenSigningKey;
use cmkvault_store::{AuditHead, AuditRow, AuditSink, StoreError};
use tokio::sync::oneshot;

use super::chain::{chain_hash, checkpoint_row, GENESIS_HASH};
use super::{AuditError, AuditEvent};

/// Records waiting for the writer at most; past this, requests fail (fail-closed) rather than
/// queue without bound.
const QUEUE_CAPACITY: usize = 65_536;

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
    store: Arc<dyn AuditSink>,
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
    store: Arc<dyn AuditSink>,
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
            let cp = checkpoint_row(&self.signer, seq, &prev, now_ms())?;
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
    /// Starts the writer thread over `store` (any [`AuditSink`]), signing checkpoints with
    /// `signer`.
    pub fn start(
        store: Arc<dyn AuditSink>,
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
        let row = event.to_row(&self.tenant);
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
        // Store work stays off the async workers, like every other blocking call.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || prune_store(store.as_ref(), cutoff_ms))
            .await
            .map_err(|e| AuditError::Write(format!("the pruning task failed: {e}")))?
    }

    /// Where the rows are stored (for queries).
    pub fn store(&self) -> &Arc<dyn AuditSink> {
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
pub fn prune_store(store: &dyn AuditSink, cutoff_ms: i64) -> Result<usize, AuditError> {
    // One indexed lookup: reading every checkpoint row (a scan of the whole log under the
    // store's lock) on each maintenance tick stalled all audit writes on a large log.
    let Some(keep_from) = store.last_checkpoint_at_or_before(cutoff_ms)? else {
        return Ok(0);
    };
    Ok(store.prune_through(keep_from.seq - 1)?)
}
