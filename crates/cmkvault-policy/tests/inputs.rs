//! Inputs: the quickstart templates, a hand-written template with nested deployments, copy
//! loops and conditions, parameter files, inventory shapes, and malformed inputs.
// Test code may unwrap: a panic is a test failure with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::path::PathBuf;

use cmkvault_policy::input::InputKind;
use cmkvault_policy::inventory::{InventoryShape, PROPERTIES_UNAVAILABLE};
use cmkvault_policy::resource::unknown_reason;
use cmkvault_policy::template::NOTE_KEY;
use cmkvault_policy::{
    load_input, load_input_with, DeploymentContext, LoadOptions, LoadedInput, Resource,
};
use serde_json::{json, Value};

fn fixture(rel: &str) -> (String, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    (std::fs::read_to_string(&path).unwrap(), rel.to_string())
}

fn quickstart(name: &str) -> (String, String) {
    fixture(&format!("templates/quickstarts__{name}__azuredeploy.json"))
}

fn load(text: &str, file: &str) -> Vec<Resource> {
    load_input(text, file, None).unwrap()
}

fn load_with_params(rel: &str, params: &str) -> LoadedInput {
    let (text, file) = fixture(rel);
    let (ptext, pfile) = fixture(params);
    load_input_with(
        &text,
        &file,
        Some((&ptext, &pfile)),
        &LoadOptions::default(),
    )
    .unwrap()
}

fn err(text: &str, file: &str) -> String {
    load_input(text, file, None).unwrap_err().to_string()
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> u32 {
    let i = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in the text"));
    u32::try_from(i + 1).unwrap()
}

fn summary(rs: &[Resource]) -> Vec<(String, String, Option<u32>)> {
    rs.iter()
        .map(|r| {
            (
                r.resource_type().to_string(),
                r.name().to_string(),
                r.source.as_ref().and_then(|s| s.line),
            )
        })
        .collect()
}

fn s(t: &str, n: &str, line: u32) -> (String, String, Option<u32>) {
    (t.to_string(), n.to_string(), Some(line))
}

fn reason(v: &Value) -> &str {
    unknown_reason(v).unwrap_or_else(|| panic!("{v} is not an unknown marker"))
}

const SUB: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/resourceGroup";

// ---- the quickstart templates (policy-data), resolved with their defaults only ----

#[test]
fn aifoundry_basic_project() {
    let (text, file) = quickstart("microsoft.cognitiveservices__aifoundry-basic-project");
    let rs = load(&text, &file);
    assert_eq!(
        summary(&rs),
        vec![
            s(
                "Microsoft.CognitiveServices/accounts",
                "AIServices-viaARMtemplate",
                42
            ),
            s(
                "Microsoft.CognitiveServices/accounts/projects",
                "AIServices-viaARMtemplate/AIProject-viaARMtemplate",
                59
            ),
        ]
    );
    let acct = &rs[0].body;
    assert_eq!(acct["kind"], "AIServices");
    // "East US 2" from the parameter default, as ARM returns it.
    assert_eq!(acct["location"], "eastus2");
    assert_eq!(acct["sku"]["name"], "S0");
    assert_eq!(acct["identity"]["type"], "SystemAssigned");
    // No encryption block: Microsoft-managed keys.
    assert!(acct["properties"].get("encryption").is_none());
    assert_eq!(acct["properties"]["publicNetworkAccess"], "Enabled");
    assert_eq!(
        acct["id"],
        format!("{SUB}/providers/Microsoft.CognitiveServices/accounts/AIServices-viaARMtemplate")
    );
    assert_eq!(rs[0].api_version.as_deref(), Some("2025-04-01-preview"));
    assert_eq!(
        rs[1].body["id"],
        format!(
            "{SUB}/providers/Microsoft.CognitiveServices/accounts/AIServices-viaARMtemplate/\
             projects/AIProject-viaARMtemplate"
        )
    );
    assert_eq!(rs[0].source.as_ref().unwrap().file, file);
}

#[test]
fn computer_vision() {
    let (text, file) =
        quickstart("microsoft.cognitiveservices__cognitive-services-Computer-vision-API");
    let rs = load(&text, &file);
    assert_eq!(rs.len(), 1);
    let r = &rs[0];
    assert_eq!(r.resource_type(), "Microsoft.CognitiveServices/accounts");
    assert_eq!(r.source.as_ref().unwrap().line, Some(39));
    assert_eq!(r.api_version.as_deref(), Some("2023-05-01"));
    // format('computerVision-{0}', uniqueString(resourceGroup().id)): deterministic.
    let name = r.name();
    assert!(name.starts_with("computerVision-"), "{name}");
    assert_eq!(name.len(), "computerVision-".len() + 13);
    assert_eq!(name, load(&text, &file)[0].name());
    let b = &r.body;
    assert_eq!(b["kind"], "ComputerVision");
    assert_eq!(b["location"], "eastus"); // resourceGroup().location: the default context
    assert_eq!(b["sku"]["name"], "F0");
    assert_eq!(b["properties"]["disableLocalAuth"], true);
    assert_eq!(b["properties"]["publicNetworkAccess"], "Disabled");
    assert_eq!(b["properties"]["networkAcls"]["defaultAction"], "Deny");
    assert!(b["properties"].get("encryption").is_none());
}

#[test]
fn machine_learning_workspace_without_cmk() {
    let (text, file) = quickstart("microsoft.machinelearningservices__machine-learning-workspace");
    let rs = load(&text, &file);
    assert_eq!(
        summary(&rs),
        vec![
            s(
                "Microsoft.Storage/storageAccounts",
                "st{name}{environment}",
                71
            ),
            s("Microsoft.KeyVault/vaults", "kv-{name}-{environment}", 95),
            s(
                "Microsoft.Insights/components",
                "appi-{name}-{environment}",
                110
            ),
            s(
                "Microsoft.ContainerRegistry/registries",
                "cr{name}{environment}",
                120
            ),
            s(
                "Microsoft.MachineLearningServices/workspaces",
                "mlw{name}{environment}",
                133
            ),
        ]
    );
    let st = &rs[0].body;
    assert_eq!(
        st["properties"]["encryption"]["keySource"],
        "Microsoft.Storage"
    );
    let kv = &rs[1].body;
    assert_eq!(kv["properties"]["enableSoftDelete"], true);
    assert!(kv["properties"].get("enablePurgeProtection").is_none());
    assert_eq!(rs[1].api_version.as_deref(), Some("2021-04-01-preview"));
    let acr = &rs[3].body;
    assert!(acr["properties"].get("encryption").is_none());
    let ml = &rs[4].body;
    assert!(ml["properties"].get("encryption").is_none());
    assert_eq!(ml["properties"]["hbiWorkspace"], "false");
    // "systemAssigned" in the template, normalised.
    assert_eq!(ml["identity"]["type"], "SystemAssigned");
    assert_eq!(ml["location"], "eastus");
    // The workspace's dependencies are ids built from the unknown name: unknown, with the reason.
    assert!(reason(&ml["properties"]["keyVault"]).contains("parameter 'name' has no value"));
    assert_eq!(
        ml["id"],
        format!("{SUB}/providers/Microsoft.MachineLearningServices/workspaces/mlw{{name}}{{environment}}")
    );
}

#[test]
fn machine_learning_workspace_cmk_from_parameter_default() {
    let (text, file) =
        quickstart("microsoft.machinelearningservices__machine-learning-workspace-cmk");
    let rs = load(&text, &file);
    let lines: Vec<_> = summary(&rs).into_iter().map(|x| x.2.unwrap()).collect();
    assert_eq!(lines, vec![96, 120, 136, 146, 159]);
    let kv = &rs[1].body;
    assert_eq!(kv["properties"]["enableSoftDelete"], true);
    assert_eq!(kv["properties"]["enablePurgeProtection"], true);
    let ml = &rs[4].body;
    assert_eq!(
        rs[4].resource_type(),
        "Microsoft.MachineLearningServices/workspaces"
    );
    // encryption_status has defaultValue "Enabled".
    assert_eq!(ml["properties"]["encryption"]["status"], "Enabled");
    let kvp = &ml["properties"]["encryption"]["keyVaultProperties"];
    assert_eq!(
        reason(&kvp["keyVaultArmId"]),
        "parameter 'cmk_keyvault_id' has no value (no parameter file value and no defaultValue)"
    );
    assert!(reason(&kvp["keyIdentifier"]).contains("'cmk_keyvault_key_uri'"));
    assert_eq!(ml["properties"]["hbiWorkspace"], "true");
    assert_eq!(rs[4].api_version.as_deref(), Some("2020-03-01"));
}

#[test]
fn machine_learning_workspace_cmk_service_side_encryption() {
    let (text, file) = quickstart(
        "microsoft.machinelearningservices__machine-learning-workspace-cmk-service-side-encryption",
    );
    let rs = load(&text, &file);
    let lines: Vec<_> = summary(&rs).into_iter().map(|x| x.2.unwrap()).collect();
    assert_eq!(lines, vec![97, 123, 139, 149, 161]);
    let kv = &rs[1].body;
    assert_eq!(kv["properties"]["enableSoftDelete"], true);
    assert_eq!(kv["properties"]["enablePurgeProtection"], true);
    assert_eq!(rs[1].api_version.as_deref(), Some("2022-07-01"));
    let ml = &rs[4].body;
    assert_eq!(ml["properties"]["encryption"]["status"], "Enabled");
    assert_eq!(ml["properties"]["enableServiceSideCMKEncryption"], true);
    assert_eq!(ml["properties"]["hbiWorkspace"], true); // a bool parameter here
                                                        // `location` has no default in this template: unknown, not a guess.
    assert!(reason(&ml["location"]).contains("parameter 'location' has no value"));
    // The storage account uses Microsoft-managed keys.
    assert_eq!(
        rs[0].body["properties"]["encryption"]["keySource"],
        "Microsoft.Storage"
    );
}

#[test]
fn parameter_file_overrides_defaults() {
    let l = load_with_params(
        "templates/quickstarts__microsoft.machinelearningservices__machine-learning-workspace-cmk__azuredeploy.json",
        "inputs/ml-cmk.parameters.json",
    );
    assert_eq!(l.kind, InputKind::Template);
    let names: Vec<_> = l.resources.iter().map(Resource::name).collect();
    assert_eq!(
        names,
        vec![
            "stdemodev",
            "kv-demo-dev",
            "appi-demo-dev",
            "crdemodev",
            "mlwdemodev"
        ]
    );
    let ml = &l.resources[4].body;
    // The parameter file's "Disabled" wins over the default "Enabled".
    assert_eq!(ml["properties"]["encryption"]["status"], "Disabled");
    assert_eq!(ml["location"], "westeurope");
    assert_eq!(
        ml["properties"]["encryption"]["keyVaultProperties"]["keyIdentifier"],
        "https://kv-cmk.vault.azure.net/keys/ml/0123456789abcdef"
    );
    // A Key Vault reference cannot be read offline.
    assert_eq!(
        reason(&ml["properties"]["hbiWorkspace"]),
        "parameter 'hbi_workspace' is a Key Vault secret reference"
    );
    // resourceId(resourceGroup().name, ...) with the known name.
    assert_eq!(
        ml["properties"]["storageAccount"],
        format!("{SUB}/providers/Microsoft.Storage/storageAccounts/stdemodev")
    );
    // The conditional location of Application Insights (westeurope is not remapped).
    assert_eq!(l.resources[2].body["location"], "westeurope");
}

#[test]
fn deployment_context_is_configurable() {
    let (text, file) =
        quickstart("microsoft.cognitiveservices__cognitive-services-Computer-vision-API");
    let opts = LoadOptions {
        deployment: DeploymentContext {
            subscription_id: "11111111-2222-3333-4444-555555555555".into(),
            resource_group: "rg-ai".into(),
            location: "West Europe".into(),
            ..DeploymentContext::default()
        },
    };
    let l = load_input_with(&text, &file, None, &opts).unwrap();
    let b = &l.resources[0].body;
    assert_eq!(b["location"], "westeurope");
    let id = b["id"].as_str().unwrap();
    assert!(
        id.starts_with("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ai/"),
        "{id}"
    );
    // uniqueString(resourceGroup().id) follows the resource group.
    assert_ne!(l.resources[0].name(), load(&text, &file)[0].name());
}

// ---- a hand-written template: nested deployments, copy loops, conditions ----

#[test]
fn nested_deployments_copy_loops_and_conditions() {
    let (text, file) = fixture("inputs/nested.json");
    let l = load_input_with(&text, &file, None, &LoadOptions::default()).unwrap();
    let rs = &l.resources;
    let at = |m: &str| line_of(&text, &format!("@res:{m}"));
    let summary = summary(rs);
    let base = rs[2].name().trim_end_matches("-kv").to_string();
    assert!(base.starts_with("cmk") && base.len() == 3 + 13, "{base}");
    assert_eq!(
        summary,
        vec![
            // copy loop: two instances, both pointing at the resource's line.
            s("Microsoft.Storage/storageAccounts", "cmkst1", at("storage")),
            s("Microsoft.Storage/storageAccounts", "cmkst2", at("storage")),
            // condition true; vaultName uses a variable declared after it.
            s(
                "Microsoft.KeyVault/vaults",
                &format!("{base}-kv"),
                at("vault")
            ),
            // a nested child resource: type and name composed.
            s(
                "Microsoft.KeyVault/vaults/keys",
                &format!("{base}-kv/cmk"),
                at("key")
            ),
            // condition false (deployLegacy) → skipped; condition unknown (deployMaybe) → kept.
            s("Microsoft.Search/searchServices", "cmk-search", at("maybe")),
            // inner-scope nested deployment, parameters passed from the outer scope.
            s(
                "Microsoft.CognitiveServices/accounts",
                "cmk-openai",
                at("openai")
            ),
            // a deployment nested in the inner template: the inner template's scope.
            s(
                "Microsoft.Search/searchServices",
                "inner-deep",
                at("deep-search")
            ),
            // outer-scope nested deployment in a copy loop, into another resource group.
            s(
                "Microsoft.MachineLearningServices/workspaces",
                &format!("{base}-mlw0"),
                at("workspace")
            ),
            s(
                "Microsoft.MachineLearningServices/workspaces",
                &format!("{base}-mlw1"),
                at("workspace")
            ),
        ]
    );
    // Copy loop values and a property copy loop.
    assert_eq!(
        rs[0].body["properties"]["encryption"]["keySource"],
        "Microsoft.Keyvault"
    );
    assert_eq!(
        rs[1].body["properties"]["encryption"]["keySource"],
        "Microsoft.Storage"
    );
    assert_eq!(
        rs[0].body["properties"]["networkAcls"],
        json!({"defaultAction": "Deny", "ipRules": [
            {"value": "10.0.0.1", "action": "Allow"}, {"value": "10.0.0.2", "action": "Allow"}]})
    );
    // A variable copy loop.
    assert_eq!(
        rs[2].body["properties"]["networkAcls"]["ipRules"],
        json!([{"value": "10.0.0.1"}, {"value": "10.0.0.2"}])
    );
    assert_eq!(
        rs[2].body["tags"],
        json!({"dataClassification": "Confidential"})
    );
    assert_eq!(rs[3].body["properties"]["keySize"], 3072);
    // The resource kept under an unknown condition is flagged, in the body and in the notes.
    let note = rs[4].body[NOTE_KEY].as_str().unwrap();
    assert!(note.contains("[parameters('deployMaybe')]"), "{note}");
    assert!(note.contains("evaluated as if deployed"), "{note}");
    assert!(rs.iter().take(4).all(|r| r.body.get(NOTE_KEY).is_none()));
    assert!(l.notes[0].starts_with(&format!("{file} line {}: ", at("maybe"))));
    // Inner scope: its own variables, the parameters passed in, its own defaults, its name.
    let openai = &rs[5].body;
    assert_eq!(openai["kind"], "OpenAI");
    assert_eq!(openai["identity"]["type"], "SystemAssigned, UserAssigned");
    assert_eq!(
        openai["properties"]["customSubDomainName"],
        "inner-ai-module"
    );
    let kvp = &openai["properties"]["encryption"]["keyVaultProperties"];
    assert_eq!(kvp["keyName"], "cmk");
    assert!(reason(&kvp["keyVaultUri"]).contains("parameter 'keyVaultUri' has no value"));
    assert_eq!(rs[5].api_version.as_deref(), Some("2024-10-01"));
    // Outer scope: the parent's variables and copyIndex(); ids in the deployment's group.
    let hub = &rs[7].body;
    assert_eq!(hub["kind"], "Hub");
    assert_eq!(rs[8].body["kind"], "Project");
    assert!(hub["id"]
        .as_str()
        .unwrap()
        .contains("/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/"));
    assert_eq!(hub["properties"]["encryption"]["status"], "Enabled");
    assert_eq!(
        hub["properties"]["encryption"]["keyVaultProperties"]["keyVaultArmId"],
        rs[2].body["id"]
    );
    assert_eq!(
        reason(&hub["properties"]["encryption"]["keyVaultProperties"]["keyIdentifier"]),
        "reference() reads a deployed resource and cannot be resolved offline"
    );
    // The linked template cannot be read: a note says so.
    assert!(l.notes[1].contains("nested deployment 'linked' links its template"));
    assert!(l.notes[1].starts_with(&format!("{file} line {}: ", at("linked"))));
    assert_eq!(l.notes.len(), 2);
}

#[test]
fn symbolic_name_resources() {
    let (text, file) = fixture("inputs/symbolic.json");
    let rs = load(&text, &file);
    // In file order (not the symbolic names' order); the `existing` vault is not deployed.
    assert_eq!(
        summary(&rs),
        vec![
            s("Microsoft.Storage/storageAccounts", "foundryst", 17),
            s("Microsoft.CognitiveServices/accounts", "foundry", 26),
            s(
                "Microsoft.CognitiveServices/accounts/projects",
                "foundry/proj",
                44
            ),
        ]
    );
    let enc = &rs[1].body["properties"]["encryption"];
    assert_eq!(enc["keySource"], "Microsoft.KeyVault");
    assert!(reason(&enc["keyVaultProperties"]["keyVaultUri"]).contains("reference()"));
}

#[test]
fn unresolvable_values_are_unknown_markers() {
    let t = r#"{
      "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
      "contentVersion": "1.0.0.0",
      "parameters": { "n": { "type": "int", "defaultValue": 3 } },
      "resources": [{
        "type": "Microsoft.CognitiveServices/accounts",
        "apiVersion": "2024-10-01",
        "name": "[concat('acct-', newGuid())]",
        "location": "westus",
        "properties": {
          "a": "[listKeys(resourceId('Microsoft.Storage/storageAccounts', 's'), '2023-01-01').keys[0].value]",
          "b": "[substring('abc', 1, parameters('n'))]",
          "c": "[lambdaVariables('x')]",
          "d": "[variables('nope')]",
          "e": "[createArray(1, reference('x').y)]",
          "f": "[coalesce(null(), 'x')]",
          "g": "[dateTimeAdd('2024-01-31T00:00:00Z', 'P1M')]",
          "h": "[deployment().properties.templateLink.uri]",
          "i": "[environment().suffixes.keyvaultDns]",
          "j": "[string(range(1, 2))]"
        }
      }]
    }"#;
    let rs = load(t, "t.json");
    let p = &rs[0].body["properties"];
    assert!(reason(&p["a"]).starts_with("listkeys() reads a deployed resource"));
    let b = reason(&p["b"]);
    assert!(b.contains("substring() out of range"), "{b}");
    assert!(reason(&p["c"]).contains("not supported offline"));
    assert!(reason(&p["d"]).contains("variable 'nope' is not declared"));
    assert_eq!(p["e"][0], 1);
    assert!(reason(&p["e"][1]).contains("reference()"));
    assert_eq!(p["f"], "x");
    assert_eq!(p["g"], "2024-02-29T00:00:00Z");
    assert!(reason(&p["h"]).contains("templateLink"));
    assert_eq!(p["i"], ".vault.azure.net");
    assert_eq!(p["j"], "[1,2]");
    // A name that cannot be rendered keeps its expression text.
    assert_eq!(rs[0].name(), "[concat('acct-', newGuid())]");
}

// ---- inventories ----

#[test]
fn inventory_array_resource_graph_rest_list_and_single() {
    let cs = json!({
        "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/oai",
        "name": "oai", "type": "microsoft.cognitiveservices/accounts", "kind": "OpenAI",
        "location": "East US", "resourceGroup": "rg", "subscriptionId": "s",
        "identity": {"type": "SystemAssigned,UserAssigned"},
        "properties": {"encryption": {"keySource": "Microsoft.KeyVault"}}, "tags": {}
    });
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap();
    let array = pretty(&json!([cs, cs]));
    let rs = load(&array, "arr.json");
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].source.as_ref().unwrap().line, Some(2));
    // The second element starts on the second line that is exactly "  {".
    let second = array
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "  {")
        .nth(1)
        .unwrap()
        .0;
    assert_eq!(rs[1].source.as_ref().unwrap().line, Some(second as u32 + 1));
    // ARG's lower-case type is kept; location and identity.type are normalised.
    assert_eq!(
        rs[0].resource_type(),
        "microsoft.cognitiveservices/accounts"
    );
    assert_eq!(rs[0].body["location"], "eastus");
    assert_eq!(
        rs[0].body["identity"]["type"],
        "SystemAssigned, UserAssigned"
    );
    assert_eq!(rs[0].body["resourceGroup"], "rg");
    assert_eq!(rs[0].api_version, None);

    let arg = pretty(&json!({"count": 1, "data": [cs], "skip_token": null, "total_records": 1}));
    let l = load_input_with(&arg, "arg.json", None, &LoadOptions::default()).unwrap();
    assert_eq!(l.kind, InputKind::Inventory(InventoryShape::ResourceGraph));
    assert_eq!(l.resources[0].source.as_ref().unwrap().line, Some(4));
    assert_eq!(l.resources[0].name(), "oai");

    let rest = pretty(&json!({"value": [cs, cs], "nextLink": null}));
    let l = load_input_with(&rest, "list.json", None, &LoadOptions::default()).unwrap();
    assert_eq!(l.kind, InputKind::Inventory(InventoryShape::RestList));
    assert_eq!(l.resources.len(), 2);

    let single = pretty(&cs);
    let l = load_input_with(&single, "show.json", None, &LoadOptions::default()).unwrap();
    assert_eq!(l.kind, InputKind::Inventory(InventoryShape::Single));
    assert_eq!(l.resources[0].source.as_ref().unwrap().line, Some(1));
    assert_eq!(
        l.resources[0].body["properties"]["encryption"]["keySource"],
        "Microsoft.KeyVault"
    );

    let empty = load_input_with("[]", "none.json", None, &LoadOptions::default()).unwrap();
    assert!(empty.resources.is_empty());
}

#[test]
fn az_resource_list_rows_have_unknown_properties() {
    // `az resource list` output: properties null.
    let text = r#"[
  {
    "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
    "identity": null,
    "kind": null,
    "location": "westeurope",
    "managedBy": null,
    "name": "kv1",
    "plan": null,
    "properties": null,
    "resourceGroup": "rg",
    "sku": null,
    "tags": {},
    "type": "Microsoft.KeyVault/vaults"
  }
]"#;
    let rs = load(text, "list.json");
    assert_eq!(reason(&rs[0].body["properties"]), PROPERTIES_UNAVAILABLE);
    assert_eq!(
        PROPERTIES_UNAVAILABLE,
        "az resource list omits properties; use az resource show or Resource Graph"
    );
    assert!(cmkvault_policy::inventory::properties_unavailable(
        &rs[0].body
    ));
    assert_eq!(rs[0].source.as_ref().unwrap().line, Some(2));
}

// ---- malformed inputs: clear errors naming the file and the position ----

#[test]
fn malformed_inputs_name_file_and_position() {
    assert_eq!(
        err("{\n  \"a\": [1, 2,\n}", "bad.json"),
        "bad.json: invalid JSON at line 3, column 1: expected value"
    );
    assert_eq!(err("", "empty.json"), "empty.json: the file is empty");
    let e = err("{\"policyRule\": {}}", "what.json");
    assert!(
        e.starts_with("what.json: not a recognised input: expected an ARM template"),
        "{e}"
    );
    let e = err("42", "n.json");
    assert!(e.starts_with("n.json: not a recognised input"), "{e}");
    let e = err("[\n  {\"name\": \"x\"}\n]", "rows.json");
    assert_eq!(
        e,
        "rows.json line 2: element 0: not a resource: it has no \"type\" string (a Resource Graph \
         query must project at least id, name, type and properties)"
    );
    let e = err("{\"data\": [\"x\"]}", "arg.json");
    assert!(
        e.starts_with("arg.json: data[0]: expected a resource object"),
        "{e}"
    );
    let (ptext, pfile) = fixture("inputs/ml-cmk.parameters.json");
    let e = err(&ptext, &pfile);
    assert!(e.contains("this is an ARM parameter file"), "{e}");
    // A parameter file with an inventory.
    let e = load_input("[]", "inv.json", Some(("{}", "p.json")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "p.json: a parameter file applies to a template, but inv.json is an array of resources"
    );
}

#[test]
fn malformed_templates_name_file_and_line() {
    let tpl = |resources: &str| {
        format!(
            "{{\n\"$schema\": \"https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#\",\n\"contentVersion\": \"1.0.0.0\",\n\"resources\": [\n{resources}\n]\n}}"
        )
    };
    // An expression that does not parse.
    let e = err(
        &tpl("{\"type\": \"Microsoft.KeyVault/vaults\", \"name\": \"[concat('a']\"}"),
        "t.json",
    );
    assert!(
        e.starts_with("t.json line 5: expression \"concat('a'\""),
        "{e}"
    );
    // A copy count out of range.
    let e = err(
        &tpl("{\"type\": \"A.B/c\", \"name\": \"x\", \"copy\": {\"name\": \"l\", \"count\": 801}}"),
        "t.json",
    );
    assert_eq!(
        e,
        "t.json line 5: copy loop 'l': count 801 is outside 0..800"
    );
    // A resource without a name, a resource that is not an object.
    let e = err(&tpl("{\"type\": \"A.B/c\"}"), "t.json");
    assert_eq!(e, "t.json line 5: the resource has no \"name\"");
    let e = err(&tpl("\"x\""), "t.json");
    assert_eq!(
        e,
        "t.json resources[0]: a resource must be an object, found a string"
    );
    // Variables that refer to each other.
    let cyc = "{\n\"$schema\": \"https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#\",\n\"variables\": {\"a\": \"[variables('b')]\", \"b\": \"[variables('a')]\"},\n\"resources\": [\n{\"type\": \"A.B/c\", \"name\": \"[variables('a')]\"}\n]\n}";
    let e = err(cyc, "cyc.json");
    assert!(
        e.starts_with("cyc.json line 5: variable 'a': variable 'b':"),
        "{e}"
    );
    assert!(e.ends_with("variable 'a' refers to itself"), "{e}");
    // A parameter file naming a parameter the template does not declare.
    let (text, file) =
        quickstart("microsoft.cognitiveservices__cognitive-services-Computer-vision-API");
    let params = r#"{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#", "parameters": {"skuu": {"value": "S1"}}}"#;
    let e = load_input(&text, &file, Some((params, "cv.parameters.json")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("cv.parameters.json: parameter 'skuu' is not declared in {file}'s template")
    );
    // An invalid parameter file.
    let e = load_input(&text, &file, Some(("{\"parameters\": ", "p.json")))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("p.json: invalid JSON at line 1"), "{e}");
    // A bare parameter object (as `az deployment --parameters @file` accepts) works.
    let rs = load_input(
        &text,
        &file,
        Some((r#"{"sku": {"value": "S1"}}"#, "p.json")),
    )
    .unwrap();
    assert_eq!(rs[0].body["sku"]["name"], "S1");
}

#[test]
fn per_instance_conditions_unknown_counts_and_ids() {
    let t = r#"{
      "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
      "contentVersion": "1.0.0.0",
      "parameters": { "vaults": { "type": "array" } },
      "resources": [
        {
          "condition": "[not(equals(copyIndex(), 1))]",
          "type": "Microsoft.KeyVault/vaults",
          "apiVersion": "2023-07-01",
          "name": "[format('kv{0}', copyIndex())]",
          "location": "westus",
          "copy": { "name": "kvs", "count": 3 },
          "properties": {
            "ids": [
              "[resourceId('Microsoft.Sql/servers/databases', 'srv', 'db')]",
              "[resourceId('other-rg', 'Microsoft.Storage/storageAccounts', 'st')]",
              "[resourceId('11111111-1111-1111-1111-111111111111', 'rg2', 'Microsoft.Storage/storageAccounts', 'st')]",
              "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'r1')]",
              "[tenantResourceId('Microsoft.Management/managementGroups', 'mg')]",
              "[extensionResourceId(resourceGroup().id, 'Microsoft.Authorization/locks', 'lock')]"
            ]
          }
        },
        {
          "type": "Microsoft.KeyVault/vaults",
          "apiVersion": "2023-07-01",
          "name": "[parameters('vaults')[copyIndex()]]",
          "location": "westus",
          "copy": { "name": "byParam", "count": "[length(parameters('vaults'))]" },
          "properties": { "enablePurgeProtection": true }
        },
        {
          "type": "Microsoft.Authorization/locks",
          "apiVersion": "2020-05-01",
          "name": "kv0-lock",
          "scope": "[format('Microsoft.KeyVault/vaults/{0}', 'kv0')]",
          "properties": { "level": "CanNotDelete" }
        }
      ]
    }"#;
    let l = load_input_with(t, "t.json", None, &LoadOptions::default()).unwrap();
    let rs = &l.resources;
    let names: Vec<_> = rs.iter().map(Resource::name).collect();
    // kv1 is skipped by its per-instance condition; the loop over an unknown array yields one
    // flagged instance; its name cannot be rendered, so it keeps the expression text.
    assert_eq!(
        names,
        vec![
            "kv0",
            "kv2",
            "[parameters('vaults')[copyIndex()]]",
            "kv0-lock"
        ]
    );
    let ids = &rs[0].body["properties"]["ids"];
    assert_eq!(
        ids,
        &json!([
            format!("{SUB}/providers/Microsoft.Sql/servers/srv/databases/db"),
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/other-rg/providers/Microsoft.Storage/storageAccounts/st",
            "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg2/providers/Microsoft.Storage/storageAccounts/st",
            "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/roleDefinitions/r1",
            "/providers/Microsoft.Management/managementGroups/mg",
            format!("{SUB}/providers/Microsoft.Authorization/locks/lock"),
        ])
    );
    let note = rs[2].body[NOTE_KEY].as_str().unwrap();
    assert!(
        note.starts_with("copy loop 'byparam' has a count that could not be resolved"),
        "{note}"
    );
    assert_eq!(rs[2].body["properties"]["enablePurgeProtection"], true);
    assert_eq!(l.notes.len(), 1);
    // An extension resource: its id hangs off the resource in `scope`.
    assert_eq!(
        rs[3].body["id"],
        format!("{SUB}/providers/Microsoft.KeyVault/vaults/kv0/providers/Microsoft.Authorization/locks/kv0-lock")
    );
}

#[test]
fn subscription_scope_template() {
    let t = r#"{
      "$schema": "https://schema.management.azure.com/schemas/2018-05-01/subscriptionDeploymentTemplate.json#",
      "contentVersion": "1.0.0.0",
      "resources": [
        {
          "type": "Microsoft.Resources/resourceGroups",
          "apiVersion": "2022-09-01",
          "name": "rg-ai",
          "location": "westeurope"
        },
        {
          "type": "Microsoft.Resources/deployments",
          "apiVersion": "2022-09-01",
          "name": "into-rg",
          "resourceGroup": "rg-ai",
          "properties": {
            "mode": "Incremental",
            "expressionEvaluationOptions": { "scope": "inner" },
            "template": {
              "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
              "contentVersion": "1.0.0.0",
              "resources": [
                {
                  "type": "Microsoft.CognitiveServices/accounts",
                  "apiVersion": "2024-10-01",
                  "name": "oai",
                  "kind": "OpenAI",
                  "location": "[resourceGroup().location]",
                  "properties": { "rg": "[resourceGroup().name]" }
                }
              ]
            }
          }
        }
      ]
    }"#;
    let rs = load(t, "sub.json");
    assert_eq!(
        rs[0].body["id"],
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-ai"
    );
    assert_eq!(
        rs[1].body["id"],
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/oai"
    );
    assert_eq!(rs[1].body["properties"]["rg"], "rg-ai");
    assert_eq!(rs[1].body["location"], "eastus");
}

#[test]
fn expression_keys_parameter_defaults_and_object_variables() {
    let t = r#"{
      "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
      "contentVersion": "1.0.0.0",
      "parameters": {
        "base": { "type": "string", "defaultValue": "ai" },
        "accountName": { "type": "string", "defaultValue": "[format('{0}-acct', parameters('base'))]" },
        "identityName": { "type": "string", "defaultValue": "[concat(parameters('accountName'), '-id')]" },
        "cmk": { "type": "object", "defaultValue": {} },
        "extraTags": { "type": "object" }
      },
      "variables": {
        "settings": {
          "sku": "S0",
          "copy": [ { "name": "zones", "count": 2, "input": "[string(add(copyIndex('zones'), 1))]" } ]
        },
        "tags": "[union(createObject('owner', 'ai-team'), parameters('extraTags'))]"
      },
      "resources": [{
        "type": "Microsoft.CognitiveServices/accounts",
        "apiVersion": "2024-10-01",
        "name": "[parameters('accountName')]",
        "location": "westus",
        "kind": "OpenAI",
        "sku": { "name": "[variables('settings').sku]" },
        "zones": "[variables('settings').zones]",
        "tags": "[createObject('owner', 'ai-team', 'extra', parameters('extraTags'))]",
        "identity": {
          "type": "UserAssigned",
          "userAssignedIdentities": {
            "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', parameters('identityName'))]": {}
          }
        },
        "properties": {
          "encryption": "[if(empty(parameters('cmk')), null(), createObject('keySource', 'Microsoft.KeyVault'))]",
          "allTags": "[variables('tags')]"
        }
      }]
    }"#;
    let rs = load(t, "t.json");
    let b = &rs[0].body;
    assert_eq!(rs[0].name(), "ai-acct");
    assert_eq!(
        b["identity"]["userAssignedIdentities"],
        json!({format!("{SUB}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ai-acct-id"): {}})
    );
    assert_eq!(b["sku"]["name"], "S0");
    assert_eq!(b["zones"], json!(["1", "2"]));
    // No CMK given: the encryption block is null, as ARM would send it.
    assert_eq!(b["properties"]["encryption"], Value::Null);
    // An unknown value stays inside the object createObject builds...
    assert_eq!(b["tags"]["owner"], "ai-team");
    assert!(reason(&b["tags"]["extra"]).contains("'extraTags'"));
    // ...while union() with an unknown object is unknown as a whole.
    assert!(reason(&b["properties"]["allTags"]).contains("'extraTags'"));
}

#[test]
fn long_variable_chains_are_bounded() {
    let chain = |n: usize| {
        let mut vars: Vec<String> = (0..n)
            .map(|i| format!("\"v{i}\": \"[variables('v{}')]\"", i + 1))
            .collect();
        vars.push(format!("\"v{n}\": \"end\""));
        format!(
            "{{\"$schema\": \"https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#\",\n\"variables\": {{{}}},\n\"resources\": [{{\"type\": \"A.B/c\", \"name\": \"[variables('v0')]\"}}]}}",
            vars.join(",")
        )
    };
    assert_eq!(load(&chain(150), "ok.json")[0].name(), "end");
    let e = err(&chain(1000), "deep.json");
    assert!(e.contains("refer to each other more than 200 deep"), "{e}");
}
