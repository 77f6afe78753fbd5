// Test code may unwrap: a panic is a test failure with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

//! Exemption files: both shapes, scope matching, policy matching, expiry and the notices.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cmkvault_policy::exemption::{ExemptionNotice, Exemptions, PolicyMatch};
use cmkvault_policy::{ComplianceState, Effect, PolicyOutcome};

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";

fn rg(name: &str) -> String {
    format!("{SUB}/resourceGroups/{name}")
}

fn ws(group: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/{name}",
        rg(group)
    )
}

fn outcome(resource_id: &str, definition: &str, state: ComplianceState) -> PolicyOutcome {
    PolicyOutcome {
        policy_set_definition_name: None,
        policy_set_definition_id: None,
        policy_definition_reference_id: None,
        resource_id: resource_id.to_string(),
        resource_type: "Microsoft.MachineLearningServices/workspaces".into(),
        policy_definition_name: definition.to_string(),
        policy_definition_id: format!("/providers/cmkvault/policyDefinitions/{definition}"),
        display_name: definition.to_string(),
        effect: Effect::Deny,
        state,
        reason: "encryption.status is \"Disabled\"".into(),
        source: None,
    }
}

/// 2026-06-01T00:00:00Z
fn june_2026() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

#[test]
fn own_shape_exempts_by_resource_group_with_expiry_in_the_reason() {
    let file = format!(
        r#"{{"exemptions": [
            {{"scope": "{}", "policy": "cmkvault-ml-workspace-cmk",
              "reason": "migration tracked in CHG-1234", "expires": "2027-01-31T00:00:00Z"}}
        ]}}"#,
        rg("ml-legacy")
    );
    let ex = Exemptions::parse(&file, "exemptions.json").unwrap();
    let mut results = vec![
        outcome(
            &ws("ml-legacy", "a"),
            "cmkvault-ml-workspace-cmk",
            ComplianceState::NonCompliant,
        ),
        // Another policy on the same resource: not covered.
        outcome(
            &ws("ml-legacy", "a"),
            "cmkvault-ai-managed-identity",
            ComplianceState::NonCompliant,
        ),
        // A resource group whose name starts with the scope's: not covered (segment boundary).
        outcome(
            &ws("ml-legacy2", "b"),
            "cmkvault-ml-workspace-cmk",
            ComplianceState::NonCompliant,
        ),
        // Unknown and Compliant results are exempted too (Azure reports exempt resources as Exempt).
        outcome(
            &ws("ML-LEGACY", "c"),
            "CMKVAULT-ML-WORKSPACE-CMK",
            ComplianceState::Unknown,
        ),
        outcome(
            &ws("ml-legacy", "d"),
            "cmkvault-ml-workspace-cmk",
            ComplianceState::Compliant,
        ),
    ];
    let notices = ex.apply(&mut results, june_2026());
    assert!(notices.is_empty(), "{notices:?}");
    let states: Vec<_> = results.iter().map(|o| o.state).collect();
    assert_eq!(
        states,
        [
            ComplianceState::Exempt,
            ComplianceState::NonCompliant,
            ComplianceState::NonCompliant,
            ComplianceState::Exempt,
            ComplianceState::Exempt,
        ]
    );
    assert_eq!(
        results[0].reason,
        "exempted: migration tracked in CHG-1234 (until 2027-01-31T00:00:00Z); was NonCompliant: encryption.status is \"Disabled\""
    );
    assert!(
        results[3].reason.contains("was Unknown:"),
        "{}",
        results[3].reason
    );
    // Untouched results keep their reason.
    assert_eq!(results[1].reason, "encryption.status is \"Disabled\"");
}

#[test]
fn an_expired_exemption_no_longer_applies_and_says_so() {
    let file = format!(
        r#"{{"exemptions": [
            {{"scope": "{}", "policy": "*", "reason": "pilot", "expires": "2026-01-01"}}
        ]}}"#,
        ws("ml", "a")
    );
    let ex = Exemptions::parse(&file, "ex.json").unwrap();
    let fresh = || {
        vec![
            outcome(&ws("ml", "a"), "p1", ComplianceState::NonCompliant),
            outcome(&ws("ml", "a"), "p2", ComplianceState::NonCompliant),
        ]
    };
    // Before the date it applies, to every policy (`*`), without an "until" when ...
    let mut before = fresh();
    let dec_2025 = UNIX_EPOCH + Duration::from_secs(1_764_547_200); // 2025-12-01
    assert!(ex.apply(&mut before, dec_2025).is_empty());
    assert!(before.iter().all(|o| o.state == ComplianceState::Exempt));
    assert!(before[0]
        .reason
        .starts_with("exempted: pilot (until 2026-01-01T00:00:00Z); "));

    // ... at and after it, it does not, and the notice names it and what it would have covered.
    for now in [UNIX_EPOCH + Duration::from_secs(1_767_225_600), june_2026()] {
        let mut after = fresh();
        let notices = ex.apply(&mut after, now);
        assert!(after
            .iter()
            .all(|o| o.state == ComplianceState::NonCompliant));
        assert_eq!(notices.len(), 1);
        assert!(matches!(
            &notices[0],
            ExemptionNotice::Expired { results: 2, .. }
        ));
        assert_eq!(
            notices[0].to_string(),
            format!(
                "ex.json: exemption 1 (scope {}, policy *) expired on 2026-01-01T00:00:00Z and no longer applies (2 results not exempted)",
                ws("ml", "a")
            )
        );
    }
}

#[test]
fn a_later_unexpired_exemption_still_applies_and_the_first_match_wins() {
    let file = format!(
        r#"{{"exemptions": [
            {{"scope": "{SUB}", "policy": "p1", "reason": "old waiver", "expires": "2020-01-01T00:00:00Z"}},
            {{"scope": "{}", "policy": "/providers/cmkvault/policyDefinitions/p1", "reason": "by id"}},
            {{"scope": "{SUB}/", "policy": "p1", "reason": "whole subscription"}}
        ]}}"#,
        rg("ml")
    );
    let ex = Exemptions::parse(&file, "ex.json").unwrap();
    let mut r = vec![
        outcome(&ws("ml", "a"), "p1", ComplianceState::NonCompliant),
        outcome(&ws("other", "b"), "p1", ComplianceState::NonCompliant),
    ];
    let notices = ex.apply(&mut r, june_2026());
    assert_eq!(
        r[0].reason,
        "exempted: by id; was NonCompliant: encryption.status is \"Disabled\""
    );
    assert!(r[1].reason.starts_with("exempted: whole subscription; "));
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(matches!(
        &notices[0],
        ExemptionNotice::Expired { results: 2, .. }
    ));
}

#[test]
fn a_resource_scope_covers_its_children_only() {
    let vault = format!("{}/providers/Microsoft.KeyVault/vaults/kv1", rg("sec"));
    let file =
        format!(r#"{{"exemptions": [{{"scope": "{vault}", "policy": "*", "reason": "r"}}]}}"#);
    let ex = Exemptions::parse(&file, "ex.json").unwrap();
    let mut r = vec![
        outcome(
            &format!("{vault}/keys/cmk"),
            "k",
            ComplianceState::NonCompliant,
        ),
        outcome(&format!("{vault}0"), "k", ComplianceState::NonCompliant),
        outcome(&rg("sec"), "k", ComplianceState::NonCompliant),
    ];
    ex.apply(&mut r, june_2026());
    let states: Vec<_> = r.iter().map(|o| o.state).collect();
    assert_eq!(
        states,
        [
            ComplianceState::Exempt,
            ComplianceState::NonCompliant,
            ComplianceState::NonCompliant
        ]
    );
}

#[test]
fn own_shape_errors_name_the_file_the_item_and_the_cause() {
    let err = |text: &str| Exemptions::parse(text, "ex.json").unwrap_err().to_string();
    assert!(err("{").starts_with("ex.json: not valid JSON"));
    assert!(err(r#"{"foo": 1}"#).starts_with("ex.json: not an exemptions file"));
    assert_eq!(
        err(r#"{"exemptions": {}}"#),
        "ex.json: \"exemptions\" must be an array"
    );
    let e = err(
        r#"{"exemptions": [{"scope": "/s", "policy": "*", "reason": "r", "expiry": "2027-01-01"}]}"#,
    );
    assert!(
        e.starts_with("ex.json: exemption 1: unknown field `expiry`"),
        "{e}"
    );
    let e = err(
        r#"{"exemptions": [{"scope": "/s", "policy": "*", "reason": "r"}, {"scope": "/s", "policy": "*"}]}"#,
    );
    assert!(
        e.starts_with("ex.json: exemption 2: missing field `reason`"),
        "{e}"
    );
    assert_eq!(
        err(r#"{"exemptions": [{"scope": "/s", "policy": "*", "reason": "  "}]}"#),
        "ex.json: exemption 1: \"reason\" is empty (say why the exemption exists)"
    );
    assert_eq!(
        err(r#"{"exemptions": [{"scope": " ", "policy": "*", "reason": "r"}]}"#),
        "ex.json: exemption 1: \"scope\" is empty (give a resource id or an id prefix)"
    );
    assert_eq!(
        err(r#"{"exemptions": [{"scope": "/s", "policy": "*", "reason": "r", "expires": "next year"}]}"#),
        "ex.json: exemption 1: \"expires\": \"next year\" is not a date-time such as 2027-01-31T00:00:00Z or a date such as 2027-01-31"
    );
    // An empty list is fine.
    assert!(Exemptions::parse(r#"{"exemptions": []}"#, "ex.json")
        .unwrap()
        .items()
        .is_empty());
}

/// The shape of `az policy exemption list` (REST: properties nested).
fn az_list() -> String {
    format!(
        r#"[
  {{
    "id": "{ws}/providers/Microsoft.Authorization/policyExemptions/ws-waiver",
    "name": "ws-waiver",
    "type": "Microsoft.Authorization/policyExemptions",
    "properties": {{
      "policyAssignmentId": "{SUB}/providers/Microsoft.Authorization/policyAssignments/cmk-initiative",
      "policyDefinitionReferenceIds": ["mlCmk"],
      "exemptionCategory": "Waiver",
      "displayName": "ML workspace waiver",
      "description": "vendor-managed workspace",
      "expiresOn": "2027-01-31T00:00:00+00:00",
      "metadata": null
    }},
    "systemData": {{"createdBy": "someone@example.com"}}
  }},
  {{
    "id": "{SUB}/providers/Microsoft.Authorization/policyExemptions/sub-mitigated",
    "name": "sub-mitigated",
    "policyAssignmentId": "{SUB}/providers/Microsoft.Authorization/policyAssignments/kv-hygiene",
    "exemptionCategory": "Mitigated",
    "displayName": "Compensating control",
    "expiresOn": null
  }}
]"#,
        ws = ws("ml", "a")
    )
}

#[test]
fn az_exemption_list_is_read_scope_reason_and_expiry() {
    let ex = Exemptions::parse(&az_list(), "az.json").unwrap();
    let items = ex.items();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].scope(), ws("ml", "a"));
    assert_eq!(items[0].reason(), "Waiver: vendor-managed workspace");
    assert!(items[0].expires().is_some());
    assert!(matches!(
        items[0].policy(),
        PolicyMatch::Assignment { reference_ids, definitions: None, .. } if reference_ids == &["mlCmk"]
    ));
    // Flattened (older az) and subscription-scoped; no description: the display name.
    assert_eq!(items[1].scope(), SUB);
    assert_eq!(items[1].reason(), "Mitigated: Compensating control");
    assert!(items[1].expires().is_none());

    // {"value": [...]} (REST list) and a single object (az policy exemption show) too.
    let wrapped = format!(r#"{{"value": {}}}"#, az_list());
    assert_eq!(
        Exemptions::parse(&wrapped, "v.json").unwrap().items().len(),
        2
    );
    let list: serde_json::Value = serde_json::from_str(&az_list()).unwrap();
    let one = serde_json::to_string(&list[0]).unwrap();
    assert_eq!(
        Exemptions::parse(&one, "one.json").unwrap().items().len(),
        1
    );

    // Not an exemption id.
    let e = Exemptions::parse(
        r#"[{"id": "/subscriptions/x/providers/Microsoft.Authorization/policyAssignments/a"}]"#,
        "a.json",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("a.json: exemption 1: id "), "{e}");
}

#[test]
fn az_exemptions_apply_to_their_assignment_once_bound() {
    let mut ex = Exemptions::parse(&az_list(), "az.json").unwrap();
    let results = || {
        vec![
            outcome(
                &ws("ml", "a"),
                "cmkvault-ml-workspace-cmk",
                ComplianceState::NonCompliant,
            ),
            outcome(
                &ws("ml", "a"),
                "cmkvault-ai-managed-identity",
                ComplianceState::NonCompliant,
            ),
        ]
    };
    // Unbound: the ws waiver covers every policy at its scope, and both exemptions are
    // reported as applied without their assignment.
    let mut r = results();
    let notices = ex.apply(&mut r, june_2026());
    assert!(r.iter().all(|o| o.state == ComplianceState::Exempt));
    assert_eq!(notices.len(), 2);
    assert!(notices[0].to_string().contains(
        "names policy assignment /subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Authorization/policyAssignments/cmk-initiative, which this scan does not know"
    ));
    assert!(r[0]
        .reason
        .starts_with("exempted: Waiver: vendor-managed workspace (until 2027-01-31T00:00:00Z); "));

    // Bound: only the member named by the reference id is covered.
    ex.bind_assignment(
        &format!("{SUB}/providers/Microsoft.Authorization/policyAssignments/CMK-INITIATIVE"),
        &[
            (
                "mlCmk",
                "/providers/cmkvault/policyDefinitions/cmkvault-ml-workspace-cmk",
            ),
            (
                "identity",
                "/providers/cmkvault/policyDefinitions/cmkvault-ai-managed-identity",
            ),
        ],
    );
    ex.bind_assignment(
        &format!("{SUB}/providers/Microsoft.Authorization/policyAssignments/kv-hygiene"),
        &[(
            "",
            "/providers/cmkvault/policyDefinitions/cmkvault-key-vault-soft-delete-purge-protection",
        )],
    );
    let mut r = results();
    let notices = ex.apply(&mut r, june_2026());
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(r[0].state, ComplianceState::Exempt);
    assert_eq!(r[1].state, ComplianceState::NonCompliant);
}
