// Test code may unwrap: a panic is a test failure with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

//! Reports: the JSON field names of `az policy state list`, SARIF 2.1.0 valid against the
//! official schema (pinned in tests/fixtures), the table, and the CI gate's exit code.

use std::collections::BTreeSet;
use std::path::Path;

use cmkvault_policy::pack::Pack;
use cmkvault_policy::report::{
    exit_code, render, summary, summary_line, to_json, to_sarif, to_table, Format, RuleMeta,
};
use cmkvault_policy::{ComplianceState, Effect, PolicyOutcome, SourceLocation};
use serde_json::{json, Value};

const CS_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/ai-prod/providers/Microsoft.CognitiveServices/accounts/openai-prod";
const BUILTIN_CMK: &str =
    "/providers/Microsoft.Authorization/policyDefinitions/67121cc7-ff39-4ab8-b7e3-95b84dab487d";

fn outcome(
    resource_id: &str,
    name: &str,
    effect: Effect,
    state: ComplianceState,
    reason: &str,
    source: Option<(&str, Option<u32>)>,
) -> PolicyOutcome {
    PolicyOutcome {
        policy_set_definition_name: None,
        policy_set_definition_id: None,
        policy_definition_reference_id: None,
        resource_id: resource_id.into(),
        resource_type: "Microsoft.CognitiveServices/accounts".into(),
        policy_definition_name: name.into(),
        policy_definition_id: if name.starts_with("cmkvault-") {
            format!("/providers/cmkvault/policyDefinitions/{name}")
        } else {
            format!("/providers/Microsoft.Authorization/policyDefinitions/{name}")
        },
        display_name: format!("Display name of {name}"),
        effect,
        state,
        reason: reason.into(),
        source: source.map(|(file, line)| SourceLocation {
            file: file.into(),
            line,
        }),
    }
}

/// A mix: a template result with a line, an inventory result without one, every state and
/// effect, a file name that needs percent-encoding.
fn sample() -> Vec<PolicyOutcome> {
    vec![
        outcome(
            CS_ID,
            "cmkvault-classified-data-requires-cmk",
            Effect::Deny,
            ComplianceState::NonCompliant,
            "tags['dataClassification'] is \"Confidential\" and Microsoft.CognitiveServices/accounts/encryption.keySource is missing (not \"Microsoft.KeyVault\")",
            Some(("infra/ai main.json", Some(42))),
        ),
        outcome(
            CS_ID,
            "67121cc7-ff39-4ab8-b7e3-95b84dab487d",
            Effect::Audit,
            ComplianceState::NonCompliant,
            "encryption.keySource is missing",
            Some(("infra/ai main.json", Some(42))),
        ),
        outcome(
            CS_ID,
            "cmkvault-ai-services-key-vault-same-region",
            Effect::AuditIfNotExists,
            ComplianceState::Unknown,
            "location is [resourceGroup().location]: unknown offline",
            Some(("infra/ai main.json", Some(42))),
        ),
        outcome(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/sec/providers/Microsoft.KeyVault/vaults/kv1",
            "cmkvault-key-vault-soft-delete-purge-protection",
            Effect::Audit,
            ComplianceState::Compliant,
            "enablePurgeProtection is true",
            Some(("inventory.json", None)),
        ),
        outcome(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/sec/providers/Microsoft.KeyVault/vaults/kv1",
            "cmkvault-key-vault-access-policy-least-privilege",
            Effect::Audit,
            ComplianceState::Exempt,
            "exempted: admin vault (until 2027-01-31T00:00:00Z); was NonCompliant: …",
            None,
        ),
    ]
}

fn sarif_validator() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sarif-schema-2.1.0.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        schema["id"],
        "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
    );
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn json_has_the_field_names_of_az_policy_state_list() {
    let out = to_json(&sample());
    let results = out["results"].as_array().unwrap();
    assert_eq!(out.as_object().unwrap().len(), 1);
    assert_eq!(results.len(), 5);
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    let base = [
        "resourceId",
        "resourceType",
        "policyDefinitionName",
        "policyDefinitionId",
        "policyDefinitionAction",
        "complianceState",
        "reason",
    ];
    let with = |extra: &[&str]| -> BTreeSet<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    assert_eq!(keys(&results[0]), with(&["file", "line"]));
    assert_eq!(keys(&results[3]), with(&["file"]));
    assert_eq!(keys(&results[4]), with(&[]));
    assert_eq!(
        results[0],
        json!({
            "resourceId": CS_ID,
            "resourceType": "Microsoft.CognitiveServices/accounts",
            "policyDefinitionName": "cmkvault-classified-data-requires-cmk",
            "policyDefinitionId": "/providers/cmkvault/policyDefinitions/cmkvault-classified-data-requires-cmk",
            "policyDefinitionAction": "deny",
            "complianceState": "NonCompliant",
            "reason": sample()[0].reason,
            "file": "infra/ai main.json",
            "line": 42,
        })
    );
    let actions: Vec<&str> = results
        .iter()
        .map(|r| r["policyDefinitionAction"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["deny", "audit", "auditifnotexists", "audit", "audit"]
    );
    let states: Vec<&str> = results
        .iter()
        .map(|r| r["complianceState"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "NonCompliant",
            "NonCompliant",
            "Unknown",
            "Compliant",
            "Exempt"
        ]
    );
    // render() is the same document, pretty, with a final newline.
    let text = render(Format::Json, &sample(), &[], "0.1.0", 120);
    assert!(text.ends_with("}\n"));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), out);
}

#[test]
fn sarif_is_valid_against_the_official_schema() {
    let validator = sarif_validator();
    let pack = Pack::builtin().unwrap();
    let mut rules = pack.rule_meta();
    // A built-in, as the pack describes it once the built-ins are compiled in.
    if !rules.iter().any(|r| r.id == BUILTIN_CMK) {
        rules.push(RuleMeta {
            name: "67121cc7-ff39-4ab8-b7e3-95b84dab487d".into(),
            id: BUILTIN_CMK.into(),
            display_name: "Azure AI Services resources should encrypt data at rest with a customer-managed key (CMK)".into(),
            description: "Using customer-managed keys …".into(),
            default_effect: Some("Audit".into()),
            source: None,
        });
    }
    let sarif = to_sarif(&sample(), &rules, "0.1.0");
    let ids: Vec<&str> = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "one rule per definition: {ids:?}");
    let errors = schema_errors(&validator, &sarif);
    assert!(errors.is_empty(), "SARIF not valid: {errors:#?}");
    // Also with no rule metadata, no results, and results without any file.
    for (outcomes, rules) in [
        (sample(), vec![]),
        (vec![], rules.clone()),
        (
            sample()
                .into_iter()
                .map(|mut o| {
                    o.source = None;
                    o
                })
                .collect(),
            vec![],
        ),
    ] {
        let doc = to_sarif(&outcomes, &rules, "0.1.0");
        let errors = schema_errors(&validator, &doc);
        assert!(errors.is_empty(), "SARIF not valid: {errors:#?}");
    }

    // The validator does reject a broken log (so the checks above can fail).
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = json!("fatal");
    assert!(!schema_errors(&validator, &broken).is_empty());
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] =
        json!(0);
    assert!(!schema_errors(&validator, &broken).is_empty());
    let mut broken = sarif.clone();
    broken.as_object_mut().unwrap().remove("version");
    assert!(!schema_errors(&validator, &broken).is_empty());
}

#[test]
fn sarif_content() {
    let rules = vec![RuleMeta {
        name: "67121cc7-ff39-4ab8-b7e3-95b84dab487d".into(),
        id: BUILTIN_CMK.into(),
        display_name: "Azure AI Services resources should encrypt data at rest with a customer-managed key (CMK)".into(),
        description: "Using customer-managed keys …".into(),
        default_effect: Some("Audit".into()),
        source: None,
    }];
    let sarif = to_sarif(&sample(), &rules, "0.1.0");
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "cmkvault");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    // One rule per definition: the given one first, then those seen in results.
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "67121cc7-ff39-4ab8-b7e3-95b84dab487d",
            "cmkvault-classified-data-requires-cmk",
            "cmkvault-ai-services-key-vault-same-region",
            "cmkvault-key-vault-soft-delete-purge-protection",
            "cmkvault-key-vault-access-policy-least-privilege",
        ]
    );
    assert_eq!(
        rules[0]["shortDescription"]["text"],
        "Azure AI Services resources should encrypt data at rest with a customer-managed key (CMK)"
    );
    assert_eq!(
        rules[0]["helpUri"],
        "https://portal.azure.com/#view/Microsoft_Azure_Policy/PolicyDetailBlade/definitionId/%2Fproviders%2FMicrosoft.Authorization%2FpolicyDefinitions%2F67121cc7-ff39-4ab8-b7e3-95b84dab487d"
    );
    assert_eq!(rules[0]["properties"]["policyDefinitionId"], BUILTIN_CMK);
    assert!(
        rules[1].get("helpUri").is_none(),
        "ours have no portal page"
    );

    // Results: NonCompliant and Unknown only; error for deny, warning for audit, note for unknown.
    let results = run["results"].as_array().unwrap();
    let got: Vec<(&str, &str, i64)> = results
        .iter()
        .map(|r| {
            (
                r["ruleId"].as_str().unwrap(),
                r["level"].as_str().unwrap(),
                r["ruleIndex"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("cmkvault-classified-data-requires-cmk", "error", 1),
            ("67121cc7-ff39-4ab8-b7e3-95b84dab487d", "warning", 0),
            ("cmkvault-ai-services-key-vault-same-region", "note", 2),
        ]
    );
    let loc = &results[0]["locations"][0];
    assert_eq!(
        loc["physicalLocation"]["artifactLocation"]["uri"],
        "infra/ai%20main.json"
    );
    assert_eq!(loc["physicalLocation"]["region"]["startLine"], 42);
    assert_eq!(loc["logicalLocations"][0]["fullyQualifiedName"], CS_ID);
    let msg = results[0]["message"]["text"].as_str().unwrap();
    assert!(
        msg.starts_with(CS_ID) && msg.contains("tags['dataClassification']"),
        "{msg}"
    );
    assert!(results[2]["message"]["text"]
        .as_str()
        .unwrap()
        .contains("could not be decided offline"));
}

/// The text without whitespace (wrapping may split a long word).
fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

#[test]
fn table_is_aligned_bounded_and_carries_the_reason() {
    for width in [130usize, 160, 240] {
        let table = to_table(&sample(), width);
        let lines: Vec<&str> = table.lines().collect();
        for l in &lines {
            assert!(
                l.chars().count() <= width,
                "line wider than {width}: {l:?} ({})",
                l.chars().count()
            );
        }
        let header = lines[0];
        assert!(header.starts_with("RESOURCE  "), "{table}");
        let state_col = header.find("STATE").unwrap();
        let reason_col = header.find("REASON").unwrap();
        // Every row that starts a result has its state in the STATE column.
        let rows: Vec<&&str> = lines[1..lines.len() - 1]
            .iter()
            .filter(|l| !l.starts_with(' '))
            .collect();
        assert_eq!(rows.len(), 5, "{table}");
        for r in &rows {
            let state: String = r
                .chars()
                .skip(state_col)
                .take_while(|c| *c != ' ')
                .collect();
            assert!(
                ["NonCompliant", "Unknown", "Compliant", "Exempt"].contains(&state.as_str()),
                "{width}: {r}"
            );
        }
        // The reason is all there (wrapped onto continuation lines, not cut).
        let reason_text: String = lines[1..lines.len() - 1]
            .iter()
            .map(|l| l.chars().skip(reason_col).collect::<String>())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            squash(&reason_text).contains(&squash(&sample()[0].reason)),
            "{width}: {table}"
        );
        // A resource keeps its end: the name and the template line.
        assert!(rows[0].contains("openai-prod ("), "{table}");
        assert!(rows[0].contains(".json:42)"), "{table}");
        assert!(lines
            .last()
            .unwrap()
            .starts_with("5 results: 2 non-compliant (1 deny), 1 unknown, 1 exempt, 1 compliant"));
    }
    // Wide enough: nothing is cut.
    let wide = to_table(&sample(), 400);
    assert!(
        wide.contains("Microsoft.CognitiveServices/accounts/openai-prod (infra/ai main.json:42)  ")
    );
    assert!(wide.contains("Display name of cmkvault-key-vault-access-policy-least-privilege  "));
}

#[test]
fn narrow_table_stacks_each_result() {
    for width in [40usize, 80, 100, 129] {
        let bound = width.max(80);
        let table = to_table(&sample(), width);
        let lines: Vec<&str> = table.lines().collect();
        for l in &lines {
            assert!(l.chars().count() <= bound, "{width}: {l:?}");
        }
        let heads: Vec<&&str> = lines.iter().filter(|l| !l.starts_with(' ')).collect();
        // 5 results + the summary line.
        assert_eq!(heads.len(), 6, "{table}");
        assert!(heads[0].starts_with("NonCompliant  Deny "), "{table}");
        assert!(
            heads[0].ends_with("openai-prod (infra/ai main.json:42)"),
            "{table}"
        );
        assert!(lines[1].starts_with("    policy: Display name of cmkvault-classified"));
        assert!(lines[2].starts_with("    reason: tags['dataClassification']"));
        let reasons: String = lines
            .iter()
            .filter(|l| l.starts_with("    reason: ") || l.starts_with("            "))
            .map(|l| &l[12..])
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            squash(&reasons).contains(&squash(&sample()[0].reason)),
            "{table}"
        );
    }
}

#[test]
fn exit_code_fails_only_on_a_non_compliant_deny() {
    let one = |effect, state| vec![outcome(CS_ID, "p", effect, state, "r", None)];
    assert_eq!(exit_code(&[]), 0);
    assert_eq!(
        exit_code(&one(Effect::Deny, ComplianceState::NonCompliant)),
        1
    );
    assert_eq!(exit_code(&one(Effect::Deny, ComplianceState::Unknown)), 0);
    assert_eq!(exit_code(&one(Effect::Deny, ComplianceState::Exempt)), 0);
    assert_eq!(exit_code(&one(Effect::Deny, ComplianceState::Compliant)), 0);
    assert_eq!(
        exit_code(&one(Effect::Audit, ComplianceState::NonCompliant)),
        0
    );
    assert_eq!(
        exit_code(&one(
            Effect::AuditIfNotExists,
            ComplianceState::NonCompliant
        )),
        0
    );
    assert_eq!(exit_code(&sample()), 1);

    // Unknown with Deny does not gate but is called out.
    let unknown_deny = one(Effect::Deny, ComplianceState::Unknown);
    let s = summary(&unknown_deny);
    assert_eq!((s.unknown, s.unknown_deny, s.non_compliant_deny), (1, 1, 0));
    assert_eq!(
        summary_line(&unknown_deny),
        "1 result: 0 non-compliant, 1 unknown (1 deny: could not be decided offline, not gated; check them by hand), 0 exempt, 0 compliant"
    );
}

#[test]
fn format_names() {
    assert_eq!("table".parse::<Format>().unwrap(), Format::Table);
    assert_eq!("JSON".parse::<Format>().unwrap(), Format::Json);
    assert_eq!("sarif".parse::<Format>().unwrap(), Format::Sarif);
    assert!("xml".parse::<Format>().is_err());
    assert!(render(Format::Table, &sample(), &[], "0.1.0", 100).contains("    reason: "));
    assert!(render(Format::Table, &sample(), &[], "0.1.0", 130).contains("REASON"));
    let sarif: Value =
        serde_json::from_str(&render(Format::Sarif, &sample(), &[], "0.1.0", 100)).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
}
