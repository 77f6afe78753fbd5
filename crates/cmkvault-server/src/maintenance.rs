//! The maintenance task: automatic purge and rotation (audited as the system principal,
//! gated like any change), timed audit checkpoints and audit pruning.
//!
//! Each automatic change is gated, made, and recorded before the next key is touched: the
//! first change of a pass is preceded by a signed checkpoint (a real write, so a log that
//! cannot be written stops the pass before anything changes), later ones by
//! [`AuditLog::ready_for_change`]; the record of each change is durable before the next one
//! starts. A crash between a change's commit and its record can leave that one change
//! unrecorded (the window of every audited change).

use std::sync::Arc;
use std::time::Duration;

use cmkvault_vault::audit::{AuditEvent, AuditLog, CheckpointMode, SYSTEM_PRINCIPAL_OID};
use cmkvault_vault::maintenance::{
    MaintenanceAction, MaintenanceAudit, MaintenanceReport, Unaudited,
};
use cmkvault_vault::{VaultError, VaultService};

/// The `appid` and `clientInfo` of records of automatic changes.
pub const SYSTEM_APP: &str = "cmkvault-maintenance";

/// The audit record of an automatic change: caller [`SYSTEM_PRINCIPAL_OID`], operationName
/// `KeyPurge` or `KeyRotate`, result `OK` or `InternalServerError` with the reason.
pub fn system_event(action: &MaintenanceAction) -> AuditEvent {
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (status, signature, description) = match &action.outcome {
        Ok(()) => (200, "OK", String::new()),
        Err(reason) => (500, "InternalServerError", reason.clone()),
    };
    AuditEvent {
        time_ms,
        vault: action.vault.clone(),
        operation: action.kind.operation().to_string(),
        api_version: String::new(),
        status,
        result_signature: signature.to_string(),
        result_description: description,
        duration_ms: 0,
        caller_ip: String::new(),
        oid: Some(SYSTEM_PRINCIPAL_OID.to_string()),
        appid: Some(SYSTEM_APP.to_string()),
        request_uri: format!("/keys/{}", action.key),
        key_id: action
            .version
            .as_ref()
            .map(|v| format!("/keys/{}/{v}", action.key)),
        correlation_id: uuid::Uuid::new_v4().hyphenated().to_string(),
        client_info: Some(SYSTEM_APP.to_string()),
        access_policy_match: None,
    }
}

/// Gates and records a maintenance pass in the audit log. Runs on a blocking-pool thread and
/// waits there for the async audit calls.
struct Audited {
    log: Arc<AuditLog>,
    runtime: tokio::runtime::Handle,
    probed: bool,
}

impl MaintenanceAudit for Audited {
    fn ready_for_change(&mut self) -> Result<(), String> {
        let ready = if self.probed {
            self.runtime.block_on(self.log.ready_for_change())
        } else {
            // A signed checkpoint proves the log writable now, even before any request
            // has failed to be recorded.
            self.runtime.block_on(self.log.checkpoint()).map(|_| ())
        };
        ready.map_err(|e| format!("the audit log refused the change: {e}"))?;
        self.probed = true;
        Ok(())
    }

    fn record(&mut self, action: &MaintenanceAction) -> Result<(), String> {
        self.runtime
            .block_on(self.log.record(&system_event(action)))
            .map(|_| ())
            .map_err(|e| format!("the record of an automatic change failed: {e}"))
    }
}

/// One maintenance pass (auto-purge and auto-rotation) on the blocking pool, audited in `log`
/// (unaudited only when the audit log is off, for benchmarks).
pub async fn run_once(
    service: &Arc<VaultService>,
    log: Option<&Arc<AuditLog>>,
) -> Result<MaintenanceReport, VaultError> {
    let service = service.clone();
    let log = log.cloned();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || match log {
        Some(log) => service.run_maintenance(&mut Audited {
            log,
            runtime,
            probed: false,
        }),
        None => service.run_maintenance(&mut Unaudited),
    })
    .await
    .map_err(|e| VaultError::unexpected(format!("the maintenance task failed: {e}")))?
}

/// The running maintenance task.
pub(crate) struct Task {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Task {
    /// Stops the task after its current pass and waits for it, so it changes nothing later.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the task: every `interval`, a maintenance pass, a timed checkpoint and pruning of
/// audit records older than `retention_days`.
pub(crate) fn spawn(
    service: Arc<VaultService>,
    interval: Duration,
    audit: Option<Arc<AuditLog>>,
    retention_days: Option<u32>,
) -> Task {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => return,
            }
            match run_once(&service, audit.as_ref()).await {
                Ok(report) => {
                    if report.purged + report.rotated > 0 {
                        tracing::info!(
                            purged = report.purged,
                            rotated = report.rotated,
                            "maintenance"
                        );
                    }
                    if !report.errors.is_empty() {
                        tracing::error!(
                            failed = report.errors.len(),
                            "maintenance: some keys could not be handled (see above)"
                        );
                    }
                    if let Some(why) = &report.stopped {
                        tracing::error!("maintenance stopped: {why}");
                    }
                }
                Err(e) => tracing::error!("maintenance failed: {e}"),
            }
            let Some(log) = &audit else { continue };
            // Signs the head when records wait unsigned for longer than the interval.
            if let Err(e) = log.checkpoint_with(CheckpointMode::IfDue).await {
                tracing::error!("timed audit checkpoint failed: {e}");
            }
            if let Some(days) = retention_days {
                let cutoff = (service.clock().now() - i64::from(days) * 86_400) * 1000;
                match log.prune_before(cutoff).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(removed = n, "pruned audit records past retention")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("audit pruning failed: {e}"),
                }
            }
        }
    });
    Task { stop, task }
}
