//! `cmkvault bench scan --resources N`: the built-in rule pack (as `cmkvault scan` uses it)
//! over a synthetic inventory shaped like a Resource Graph export, timed on all cores.
//! Prints resources, policies, results, the evaluation time and resources × policies per second.

use std::time::Instant;

use anyhow::{bail, Result};
use cmkvault_policy::{ComplianceState, Resource};
use serde_json::{json, Value};

use super::BenchArgs;

/// Default inventory size.
const DEFAULT_RESOURCES: usize = 100_000;
/// Largest inventory accepted (memory: about 2 KiB per resource and its results).
const MAX_RESOURCES: usize = 5_000_000;

/// Runs the benchmark.
pub(super) fn run(args: &BenchArgs) -> Result<()> {
    let n = args.resources.unwrap_or(DEFAULT_RESOURCES);
    if n == 0 || n > MAX_RESOURCES {
        bail!("--resources must be between 1 and {MAX_RESOURCES}");
    }
    let (_pack, engine) = crate::scan_cli::build_engine(&[], None)?;
    let policies = engine.policies().len();
    let build = Instant::now();
    let resources: Vec<Resource> = (0..n).map(|i| Resource::from_body(synthetic(i))).collect();
    let built = build.elapsed();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    // One untimed pass over a slice warms caches and the allocator.
    let _ = engine.evaluate(&resources[..n.min(1000)]);
    let start = Instant::now();
    let outcomes = engine.evaluate(&resources);
    let took = start.elapsed().as_secs_f64();
    let non_compliant = outcomes
        .iter()
        .filter(|o| o.state == ComplianceState::NonCompliant)
        .count();
    println!(
        "scan: {n} resources (synthetic Resource Graph rows, built in {:.2} s) x {policies} policies (built-in pack), {cores} threads",
        built.as_secs_f64()
    );
    println!(
        "evaluate: {:.3} s, {} results ({non_compliant} non-compliant), {:.0} resource x policy evaluations/s, {:.0} resources/s",
        took,
        outcomes.len(),
        (n * policies) as f64 / took,
        n as f64 / took
    );
    Ok(())
}

/// Resource `i` of the synthetic inventory: a mix of the types the pack covers (compliant and
/// not, as an estate partly under CMK looks) and types it does not apply to.
fn synthetic(i: usize) -> Value {
    let rg = format!(
        "/subscriptions/00000000-0000-0000-0000-{:012}/resourceGroups/rg{}",
        i % 7,
        i % 50
    );
    let cmk = i.is_multiple_of(3);
    let tags = if i.is_multiple_of(5) {
        json!({"dataClassification": "Confidential", "owner": "ml"})
    } else {
        json!({"owner": "ml"})
    };
    let (ty, kind, props) = match i % 10 {
        0 | 1 => (
            "microsoft.cognitiveservices/accounts",
            Some(["OpenAI", "AIServices", "ComputerVision", "TextAnalytics"][i % 4]),
            json!({"encryption": {"keySource": if cmk { "Microsoft.KeyVault" } else { "Microsoft.CognitiveServices" }},
                   "disableLocalAuth": i.is_multiple_of(2), "publicNetworkAccess": "Disabled",
                   "networkAcls": {"defaultAction": "Deny", "ipRules": []}}),
        ),
        2 => (
            "microsoft.machinelearningservices/workspaces",
            Some(["Default", "Hub", "Project"][i % 3]),
            json!({"encryption": {"status": if cmk { "Enabled" } else { "Disabled" }},
                   "storageAccount": format!("{rg}/providers/Microsoft.Storage/storageAccounts/st{}", i + 1)}),
        ),
        3 => (
            "microsoft.storage/storageaccounts",
            Some("StorageV2"),
            json!({"encryption": {"keySource": if cmk { "Microsoft.Keyvault" } else { "Microsoft.Storage" }}}),
        ),
        4 => (
            "microsoft.keyvault/vaults",
            None,
            json!({"enableSoftDelete": true, "enablePurgeProtection": cmk, "enableRbacAuthorization": i.is_multiple_of(2),
                   "accessPolicies": [{"objectId": "o", "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]}}],
                   "networkAcls": {"defaultAction": "Allow"}}),
        ),
        5 => (
            "microsoft.search/searchservices",
            None,
            json!({"encryptionWithCmk": {"enforcement": if cmk { "Enabled" } else { "Unspecified" }}}),
        ),
        6 => (
            "microsoft.documentdb/databaseaccounts",
            Some("GlobalDocumentDB"),
            if cmk {
                json!({"keyVaultKeyUri": "https://kv.vault.azure.net/keys/k"})
            } else {
                json!({})
            },
        ),
        7 => (
            "microsoft.containerregistry/registries",
            None,
            json!({"encryption": {"status": if cmk { "enabled" } else { "disabled" }}}),
        ),
        _ => (
            "microsoft.compute/virtualmachines",
            None,
            json!({"hardwareProfile": {"vmSize": "Standard_D2s_v5"}}),
        ),
    };
    let name = format!("r{i}");
    let provider = ty.split('/').take(2).collect::<Vec<_>>().join("/");
    let mut body = json!({
        "id": format!("{rg}/providers/{provider}/{name}"),
        "name": name, "type": ty, "location": "eastus", "resourceGroup": format!("rg{}", i % 50),
        "tags": tags, "identity": {"type": if i.is_multiple_of(4) { "None" } else { "SystemAssigned" }},
        "properties": props,
    });
    if let Some(k) = kind {
        body["kind"] = json!(k);
    }
    body
}
