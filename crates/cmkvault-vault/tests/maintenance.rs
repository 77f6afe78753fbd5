//! Automatic maintenance: a key recovered after it was found due survives; one failing key
//! does not stop the others; an unreadable rotation policy is reported; every change is gated
//! and recorded, and a refusing audit stops the run before anything changes.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::sync::Arc;

use cmkvault_store::Store;
use cmkvault_vault::maintenance::{
    MaintenanceAction, MaintenanceAudit, MaintenanceKind, MaintenanceReport, Unaudited,
};
use common::*;

const DAY: i64 = 86_400;

/// Records what it is told; runs `before` at each gate (a hook between listing and change).
#[derive(Default)]
struct Recorder {
    gates: usize,
    actions: Vec<MaintenanceAction>,
    before: Option<Box<dyn FnMut()>>,
    refuse_gate: bool,
}

impl MaintenanceAudit for Recorder {
    fn ready_for_change(&mut self) -> Result<(), String> {
        self.gates += 1;
        if let Some(hook) = self.before.as_mut() {
            hook();
        }
        if self.refuse_gate {
            return Err("the audit log cannot be written".into());
        }
        Ok(())
    }

    fn record(&mut self, action: &MaintenanceAction) -> Result<(), String> {
        self.actions.push(action.clone());
        Ok(())
    }
}

#[test]
fn a_key_recovered_after_it_was_found_due_is_not_purged() {
    let (svc, _) = service();
    let svc = Arc::new(svc);
    oct(&svc, "kept");
    oct(&svc, "gone");
    svc.delete_key("default", "kept").unwrap();
    svc.delete_key("default", "gone").unwrap();
    svc.clock().advance(7 * DAY);
    // Between the listing and the purge, a client recovers "kept".
    let recover = svc.clone();
    let mut audit = Recorder {
        before: Some(Box::new(move || {
            let _ = recover.recover_key("default", "kept");
        })),
        ..Default::default()
    };
    let report = svc.run_maintenance(&mut audit).unwrap();
    assert_eq!(report.purged, 1, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(
        svc.get_key("default", "kept", None).is_ok(),
        "recovered key destroyed"
    );
    assert!(svc.get_deleted_key("default", "gone").is_err());
    assert_eq!(
        audit.actions,
        vec![MaintenanceAction {
            kind: MaintenanceKind::Purge,
            vault: "default".into(),
            key: "gone".into(),
            version: None,
            outcome: Ok(()),
        }],
        "only the purge that ran is recorded"
    );
}

#[test]
fn one_failing_key_does_not_stop_the_others_and_a_corrupt_policy_is_reported() {
    let (svc, store) = service();
    for name in ["a", "b", "c", "d"] {
        oct(&svc, name);
        rotate_after_30_days(&svc, name, None);
    }
    // b's latest version no longer parses; d's rotation policy is not JSON.
    let b = store.version_latest("default", "b").unwrap().unwrap();
    store
        .version_update_props("default", "b", &b.version, "{\"broken\":")
        .unwrap();
    let mut d = store.key_get("default", "d").unwrap().unwrap();
    d.rotation_policy = Some("{not a policy".into());
    store.key_update(&d).unwrap();
    svc.clock().advance(30 * DAY);

    let mut audit = Recorder::default();
    let report = svc.run_maintenance(&mut audit).unwrap();
    assert_eq!(report.rotated, 2, "a and c rotate: {report:?}");
    let failed: Vec<&str> = report.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(failed, ["b", "d"], "{report:?}");
    assert!(
        report.errors[1].reason.contains("rotation policy"),
        "{report:?}"
    );
    assert_eq!(report.stopped, None);
    let rotated: Vec<(&str, bool)> = audit
        .actions
        .iter()
        .map(|a| (a.key.as_str(), a.outcome.is_ok() && a.version.is_some()))
        .collect();
    assert_eq!(rotated, [("a", true), ("c", true)]);
    assert!(audit
        .actions
        .iter()
        .all(|a| a.kind == MaintenanceKind::Rotate));
}

#[test]
fn a_refusing_audit_gate_stops_maintenance_before_any_change() {
    let (svc, _) = service();
    oct(&svc, "old");
    oct(&svc, "due");
    rotate_after_30_days(&svc, "due", None);
    svc.delete_key("default", "old").unwrap();
    svc.clock().advance(30 * DAY);
    let mut audit = Recorder {
        refuse_gate: true,
        ..Default::default()
    };
    let report = svc.run_maintenance(&mut audit).unwrap();
    assert_eq!(
        (report.purged, report.rotated, audit.actions.len()),
        (0, 0, 0)
    );
    assert!(report.stopped.is_some());
    assert_eq!(audit.gates, 1, "stops at the first refusal");
    assert!(svc.get_deleted_key("default", "old").is_ok());
    // Once the log accepts again, both happen.
    let report = svc.run_maintenance(&mut Unaudited).unwrap();
    assert_eq!(
        report,
        MaintenanceReport {
            purged: 1,
            rotated: 1,
            ..Default::default()
        }
    );
}
