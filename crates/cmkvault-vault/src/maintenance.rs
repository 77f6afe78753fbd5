//! Automatic maintenance: soft-deleted keys past their scheduled purge date are purged, keys
//! whose rotation policy is due are rotated.
//!
//! Each change is gated and recorded like a client's change: the caller passes a
//! [`MaintenanceAudit`] whose `ready_for_change` must succeed before the change runs and whose
//! `record` returns once the change's record is durable, before the next key is touched. If
//! either fails, the run stops (fail-closed). The remaining window is one change: a crash (or
//! an audit failure) between a purge's commit and its record leaves that one purge
//! unrecorded; the gate before it has proved the log writable just before.

use crate::rotation::RotationPolicy;
use crate::{VaultError, VaultResult, VaultService};

/// What an automatic change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaintenanceKind {
    /// A soft-deleted key past its scheduled purge date is destroyed.
    Purge,
    /// A key gets a new version by its rotation policy.
    Rotate,
}

impl MaintenanceKind {
    /// The audit `operationName` of the change (`KeyPurge`, `KeyRotate`).
    pub fn operation(self) -> &'static str {
        match self {
            MaintenanceKind::Purge => "KeyPurge",
            MaintenanceKind::Rotate => "KeyRotate",
        }
    }
}

/// One automatic change that ran or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceAction {
    /// Purge or rotation.
    pub kind: MaintenanceKind,
    /// The vault.
    pub vault: String,
    /// The key's name.
    pub key: String,
    /// The new version (a rotation that succeeded).
    pub version: Option<String>,
    /// `Err` with the reason when the change failed.
    pub outcome: Result<(), String>,
}

/// A key maintenance could not handle, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceError {
    /// The vault.
    pub vault: String,
    /// The key's name.
    pub key: String,
    /// What went wrong (a failed change, an unreadable rotation policy or stored version).
    pub reason: String,
}

/// The outcome of one maintenance run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Keys purged.
    pub purged: usize,
    /// Keys rotated.
    pub rotated: usize,
    /// Keys that failed; the others were still handled.
    pub errors: Vec<MaintenanceError>,
    /// Set when the run stopped early because the audit log refused (gate or record); nothing
    /// after that point was changed.
    pub stopped: Option<String>,
}

/// How a maintenance run is audited (the server records to its audit log).
pub trait MaintenanceAudit {
    /// Called before each change, after the key was found due and before the write lock is
    /// taken; an error stops the run before the change.
    fn ready_for_change(&mut self) -> Result<(), String>;
    /// Records a change that ran (or failed); returns once the record is durable. An error
    /// stops the run.
    fn record(&mut self, action: &MaintenanceAction) -> Result<(), String>;
}

/// For a server with the audit log switched off (benchmarks only): nothing is gated or
/// recorded.
pub struct Unaudited;

impl MaintenanceAudit for Unaudited {
    fn ready_for_change(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn record(&mut self, _action: &MaintenanceAction) -> Result<(), String> {
        Ok(())
    }
}

/// Keys listed per store call while looking for due rotations.
const PAGE: usize = 100;

impl VaultService {
    /// Purges deleted keys past their scheduled purge date (regardless of purge protection,
    /// as Azure does) and rotates keys whose rotation policy is due, gating and recording
    /// each change through `audit`. A key that fails is reported in the result and does not
    /// stop the others; an audit failure stops the run. An error is returned only when the
    /// keys cannot be listed at all.
    pub fn run_maintenance(
        &self,
        audit: &mut dyn MaintenanceAudit,
    ) -> VaultResult<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let now = self.clock().now();
        for key in self.store.keys_due_for_purge(now)? {
            if let Err(e) = audit.ready_for_change() {
                report.stopped = Some(e);
                return Ok(report);
            }
            let outcome = self.purge_if_due(&key.vault, &key.name, now);
            let action = MaintenanceAction {
                kind: MaintenanceKind::Purge,
                vault: key.vault.clone(),
                key: key.name.clone(),
                version: None,
                outcome: match &outcome {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                },
            };
            match outcome {
                // Recovered (or purged by a client) since it was listed: no change, no record.
                Ok(false) => continue,
                Ok(true) => {
                    tracing::info!(vault = ?key.vault, key = ?key.name, "purged deleted key after its retention period");
                    report.purged += 1;
                }
                Err(e) => {
                    tracing::error!(vault = ?key.vault, key = ?key.name, "automatic purge failed: {e}");
                    report.errors.push(MaintenanceError {
                        vault: key.vault.clone(),
                        key: key.name.clone(),
                        reason: e.to_string(),
                    });
                }
            }
            if let Err(e) = audit.record(&action) {
                report.stopped = Some(e);
                return Ok(report);
            }
        }
        for vault in self.store.vault_list()? {
            let mut after: Option<String> = None;
            loop {
                let rows = self
                    .store
                    .key_list(&vault.name, false, after.as_deref(), PAGE)?;
                let Some(last) = rows.last() else { break };
                after = Some(last.name.to_lowercase());
                for key in rows {
                    let fail = |report: &mut MaintenanceReport, reason: String| {
                        tracing::error!(vault = ?vault.name, key = ?key.name, "maintenance: {reason}");
                        report.errors.push(MaintenanceError {
                            vault: vault.name.clone(),
                            key: key.name.clone(),
                            reason,
                        });
                    };
                    match self.rotation_due(&vault.name, &key.name, now) {
                        Ok(false) => continue,
                        Ok(true) => {}
                        Err(e) => {
                            fail(&mut report, e.to_string());
                            continue;
                        }
                    }
                    if let Err(e) = audit.ready_for_change() {
                        report.stopped = Some(e);
                        return Ok(report);
                    }
                    // Still due? (A client may have rotated it, or changed the policy.)
                    if !matches!(self.rotation_due(&vault.name, &key.name, now), Ok(true)) {
                        continue;
                    }
                    let outcome = self.rotate_key(&vault.name, &key.name);
                    let action = MaintenanceAction {
                        kind: MaintenanceKind::Rotate,
                        vault: vault.name.clone(),
                        key: key.name.clone(),
                        version: outcome.as_ref().ok().map(|v| v.version.clone()),
                        outcome: match &outcome {
                            Ok(_) => Ok(()),
                            Err(e) => Err(e.to_string()),
                        },
                    };
                    match outcome {
                        Ok(_) => {
                            tracing::info!(vault = ?vault.name, key = ?key.name, "rotated key by its rotation policy");
                            report.rotated += 1;
                        }
                        Err(e) => fail(&mut report, format!("automatic rotation failed: {e}")),
                    }
                    if let Err(e) = audit.record(&action) {
                        report.stopped = Some(e);
                        return Ok(report);
                    }
                }
            }
        }
        Ok(report)
    }

    /// Purges `name` if, under the write lock, it is still soft-deleted with a scheduled purge
    /// date at or before `now`; the store re-checks in its deleting transaction. Returns
    /// whether it was purged.
    fn purge_if_due(&self, vault: &str, name: &str, now: i64) -> VaultResult<bool> {
        let _g = self.lock()?;
        let due = self
            .store
            .key_get(vault, name)?
            .and_then(|k| k.deleted)
            .is_some_and(|(_, purge_at)| purge_at <= now);
        if !due {
            return Ok(false);
        }
        let purged = self.store.key_purge_if_due(vault, name, now)?;
        self.cache.invalidate(vault, name);
        Ok(purged)
    }

    /// Whether a live key's rotation policy is due. A policy or a latest version that cannot
    /// be read is an error (reported, never skipped silently).
    fn rotation_due(&self, vault: &str, name: &str, now: i64) -> VaultResult<bool> {
        let Some(key) = self.store.key_get(vault, name)? else {
            return Ok(false);
        };
        if key.deleted.is_some() {
            return Ok(false);
        }
        let Some(text) = key.rotation_policy.as_deref() else {
            return Ok(false);
        };
        let policy: RotationPolicy = serde_json::from_str(text).map_err(|e| {
            VaultError::corrupt(format!("the stored rotation policy cannot be read: {e}"))
        })?;
        let Some(latest) = self.store.version_latest(vault, name)? else {
            return Ok(false);
        };
        let props = Self::parse_props(&latest.props)?;
        Ok(policy.rotation_due(props.created, props.exp, now))
    }
}
