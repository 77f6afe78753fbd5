// Test code may unwrap: a panic is a test failure with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

//! `cmkvault scan` on the binary: the built-in pack over templates and inventories, the JSON
//! and SARIF reports, parameter files, assignments, exemptions and the exit codes (0, 1, 2).

mod common;

use std::path::{Path, PathBuf};

use common::{cmkvault, one_error_line, run, Output};
use serde_json::{json, Value};
use tempfile::TempDir;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cmkvault-policy/tests/fixtures")
        .join(rel)
}

fn template(name: &str) -> String {
    fixture(&format!("templates/quickstarts__{name}__azuredeploy.json"))
        .display()
        .to_string()
}

fn scan(args: &[&str], scratch: &TempDir) -> Output {
    let mut all = vec!["scan"];
    all.extend_from_slice(args);
    run(cmkvault(&all), scratch.path())
}

fn results(o: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", o.stdout, o.stderr));
    v["results"].as_array().unwrap().clone()
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.display().to_string()
}

/// A Resource Graph export: an OpenAI account without CMK tagged Confidential (the pack's
/// classification rule denies it), and a storage account with CMK.
fn inventory() -> Value {
    json!({"data": [
        {"id": "/subscriptions/s/resourceGroups/ai/providers/Microsoft.CognitiveServices/accounts/oai",
         "name": "oai", "type": "microsoft.cognitiveservices/accounts", "kind": "OpenAI",
         "location": "eastus", "tags": {"dataClassification": "Confidential"},
         "identity": {"type": "SystemAssigned"},
         "properties": {"encryption": {"keySource": "Microsoft.CognitiveServices"}}},
        {"id": "/subscriptions/s/resourceGroups/ai/providers/Microsoft.Storage/storageAccounts/st",
         "name": "st", "type": "microsoft.storage/storageaccounts", "location": "eastus",
         "properties": {"encryption": {"keySource": "Microsoft.Keyvault"}}}
    ]})
}

#[test]
fn template_json_report_names_file_line_and_az_fields() {
    let scratch = TempDir::new().unwrap();
    let t = template("microsoft.machinelearningservices__machine-learning-workspace");
    let o = scan(&[&t, "--format", "json"], &scratch);
    // Only Audit results are NonCompliant in this template: the gate stays open.
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let r = results(&o);
    // The ML workspace (line 133) fails the built-in CMK definition ba769a63: no encryption.
    let ml = r
        .iter()
        .find(|x| {
            x["policyDefinitionName"] == "ba769a63-b8cc-4b2d-abf6-ac33c7204be8"
                && x["resourceType"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case("Microsoft.MachineLearningServices/workspaces")
        })
        .unwrap_or_else(|| panic!("no ba769a63 result: {}", o.stdout));
    assert_eq!(ml["complianceState"], "NonCompliant");
    assert_eq!(ml["policyDefinitionAction"], "audit");
    assert_eq!(ml["line"], 133);
    assert_eq!(ml["file"], t.as_str());
    assert!(ml["reason"].as_str().unwrap().contains("encryption.status"));
    assert_eq!(
        ml["policyDefinitionId"],
        "/providers/Microsoft.Authorization/policyDefinitions/ba769a63-b8cc-4b2d-abf6-ac33c7204be8"
    );
    for field in ["resourceId", "resourceType", "complianceState"] {
        assert!(r.iter().all(|x| x[field].is_string()), "{field}");
    }
    // The key vault (api 2021-04-01-preview) has no purge protection: 0b60c0b2 is NonCompliant.
    assert!(r.iter().any(
        |x| x["policyDefinitionName"] == "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53"
            && x["complianceState"] == "NonCompliant"
            && x["line"] == 95
    ));
}

#[test]
fn parameter_file_is_applied_and_unknowns_are_reported() {
    let scratch = TempDir::new().unwrap();
    let t = template("microsoft.machinelearningservices__machine-learning-workspace-cmk");
    // Without parameters: encryption.status is Enabled by default, the key id is unknown.
    let o = scan(&[&t, "--format", "json"], &scratch);
    let r = results(&o);
    let ml = |r: &[Value], def: &str| {
        r.iter()
            .find(|x| {
                x["policyDefinitionName"] == def
                    && x["resourceType"]
                        .as_str()
                        .unwrap()
                        .eq_ignore_ascii_case("Microsoft.MachineLearningServices/workspaces")
            })
            .cloned()
            .unwrap()
    };
    assert_eq!(
        ml(&r, "ba769a63-b8cc-4b2d-abf6-ac33c7204be8")["complianceState"],
        "Compliant"
    );
    let strict = ml(&r, "cmkvault-ml-workspace-cmk");
    assert_eq!(strict["complianceState"], "Unknown", "{strict}");
    assert!(strict["reason"]
        .as_str()
        .unwrap()
        .contains("cmk_keyvault_key_uri"));
    // The parameter file sets encryption_status Disabled: now NonCompliant.
    let p = fixture("inputs/ml-cmk.parameters.json")
        .display()
        .to_string();
    let o = scan(&[&t, &p, "--format", "json"], &scratch);
    let r = results(&o);
    assert_eq!(
        ml(&r, "ba769a63-b8cc-4b2d-abf6-ac33c7204be8")["complianceState"],
        "NonCompliant"
    );
}

#[test]
fn deny_gate_exit_codes_assignment_and_exemptions() {
    let scratch = TempDir::new().unwrap();
    let inv = write(scratch.path(), "inventory.json", &inventory());
    // The classification rule (Deny) fails the Confidential OpenAI account: exit 1.
    let o = scan(&[&inv, "--format", "json"], &scratch);
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    let r = results(&o);
    let deny: Vec<&Value> = r
        .iter()
        .filter(|x| x["policyDefinitionAction"] == "deny" && x["complianceState"] == "NonCompliant")
        .collect();
    assert_eq!(deny.len(), 1, "{r:?}");
    assert_eq!(
        deny[0]["policyDefinitionName"],
        "cmkvault-classified-data-requires-cmk"
    );
    // The storage account with a Key Vault key is compliant with 6fac406b (case-insensitive).
    assert!(r.iter().any(
        |x| x["policyDefinitionName"] == "6fac406b-40ca-413b-bf8e-0bf964659c25"
            && x["complianceState"] == "Compliant"
    ));

    // An assignment switching the rule to Audit opens the gate.
    let a = write(
        scratch.path(),
        "assignment.json",
        &json!({"properties": {"policyDefinitionId": "/providers/cmkvault/policyDefinitions/cmkvault-classified-data-requires-cmk",
            "parameters": {"effect": {"value": "Audit"}}}}),
    );
    let o = scan(&[&inv, "--assignment", &a, "--format", "json"], &scratch);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);

    // An exemption of the resource group opens it too; an expired one does not.
    let ex = |expires: &str| {
        json!({"exemptions": [{"scope": "/subscriptions/s/resourceGroups/ai",
            "policy": "cmkvault-classified-data-requires-cmk", "reason": "migration ticket 42",
            "expires": expires}]})
    };
    let e = write(scratch.path(), "ex.json", &ex("2099-01-01T00:00:00Z"));
    let o = scan(&[&inv, "--exemptions", &e, "--format", "json"], &scratch);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert!(results(&o).iter().any(|x| x["complianceState"] == "Exempt"
        && x["reason"]
            .as_str()
            .unwrap()
            .contains("migration ticket 42")));
    let e = write(scratch.path(), "ex-old.json", &ex("2020-01-01T00:00:00Z"));
    let o = scan(&[&inv, "--exemptions", &e, "--format", "json"], &scratch);
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("warning:"), "{}", o.stderr);
}

#[test]
fn sarif_points_at_the_template_line() {
    let scratch = TempDir::new().unwrap();
    let t = template("microsoft.cognitiveservices__cognitive-services-Computer-vision-API");
    let out = scratch.path().join("scan.sarif");
    let o = scan(
        &[&t, "--format", "sarif", "-o", out.to_str().unwrap()],
        &scratch,
    );
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert!(o.stdout.is_empty());
    let sarif: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    // ComputerVision is not an excluded kind: 67121cc7 reports it, at the account's line 39.
    let r = results
        .iter()
        .find(|r| r["ruleId"] == "67121cc7-ff39-4ab8-b7e3-95b84dab487d")
        .unwrap_or_else(|| panic!("{sarif}"));
    let loc = &r["locations"][0]["physicalLocation"];
    assert_eq!(loc["region"]["startLine"], 39);
    assert!(loc["artifactLocation"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("azuredeploy.json"));
}

#[test]
fn input_errors_exit_2_with_one_line() {
    let scratch = TempDir::new().unwrap();
    let bad = scratch.path().join("bad.json");
    std::fs::write(&bad, "{\"data\": [").unwrap();
    let o = scan(&[bad.to_str().unwrap()], &scratch);
    assert_eq!(o.status.code(), Some(2));
    let line = one_error_line(o, "scan bad.json");
    assert!(line.contains("bad.json"), "{line}");

    let o = scan(&["/nonexistent/inventory.json"], &scratch);
    assert_eq!(o.status.code(), Some(2));
    assert!(one_error_line(o, "scan missing").contains("/nonexistent/inventory.json"));

    let inv = write(scratch.path(), "inventory.json", &inventory());
    let o = scan(&[&inv, "--format", "xml"], &scratch);
    assert_eq!(o.status.code(), Some(2));
    assert!(one_error_line(o, "scan --format xml").contains("--format"));

    // A policy using an alias nobody knows: a load error naming it.
    let pol = write(
        scratch.path(),
        "policy.json",
        &json!({"name": "p", "id": "/providers/x/policyDefinitions/p",
            "properties": {"displayName": "p", "mode": "All", "policyRule": {
            "if": {"field": "Nonsense.Thing", "equals": "x"}, "then": {"effect": "audit"}}}}),
    );
    let o = scan(&[&inv, "--policy", &pol], &scratch);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert!(one_error_line(o, "scan --policy").contains("Nonsense.Thing"));

    let o = scan(&[], &scratch);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn live_vault_keys_are_evaluated_over_the_api() {
    let scratch = TempDir::new().unwrap();
    let data = scratch.path().join("data");
    let (server, token) = common::serve_with_token(&data, scratch.path());
    let (rt, client) = common::runtime_and_client(&data, server.port);
    let url = server.url();
    let post = |path: &str, body: Value, method: reqwest::Method| {
        let req = client
            .request(method, format!("{url}{path}?api-version=7.5"))
            .bearer_auth(&token)
            .json(&body);
        let r = rt.block_on(async { req.send().await }).unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    };
    // k-bare: no expiry, no rotation policy. k-good: expiry and a 90-day rotation policy.
    post(
        "/keys/k-bare/create",
        json!({"kty": "RSA", "key_size": 2048}),
        reqwest::Method::POST,
    );
    post(
        "/keys/k-good/create",
        json!({"kty": "RSA", "key_size": 3072, "attributes": {"exp": 4102444800u64}}),
        reqwest::Method::POST,
    );
    post(
        "/keys/k-good/rotationpolicy",
        json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}}],
               "attributes": {"expiryTime": "P1Y"}}),
        reqwest::Method::PUT,
    );
    let mut cmd = cmkvault(&[
        "scan",
        "--vault",
        &url,
        "--data",
        data.to_str().unwrap(),
        "--format",
        "json",
    ]);
    cmd.env("CMKVAULT_TOKEN", &token);
    let o = run(cmd, scratch.path());
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let r = results(&o);
    let state = |key: &str, def: &str| {
        r.iter()
            .find(|x| {
                x["resourceId"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/keys/{key}"))
                    && x["policyDefinitionName"] == def
            })
            .unwrap_or_else(|| panic!("no {def} result for {key}: {r:?}"))["complianceState"]
            .clone()
    };
    let expiry = "152b15f7-8e1f-4c1f-ab71-8c010ba5dbc0";
    let rotation = "d8cf8476-a2ec-4916-896e-992351803c44";
    assert_eq!(state("k-bare", expiry), "NonCompliant");
    assert_eq!(state("k-good", expiry), "Compliant");
    assert_eq!(state("k-bare", rotation), "NonCompliant");
    assert_eq!(state("k-good", rotation), "Compliant");
    // The vault itself is read too (ARM-shaped, from the management API).
    assert!(r
        .iter()
        .any(|x| x["resourceType"] == "Microsoft.KeyVault/vaults"));

    // Without a token: exit 2, one line.
    let o = run(
        cmkvault(&["scan", "--vault", &url, "--data", data.to_str().unwrap()]),
        scratch.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(one_error_line(o, "scan --vault without token").contains("CMKVAULT_TOKEN"));
}
