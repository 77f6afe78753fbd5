//! Golden tests: each of the 20 built-in definitions in `policies/builtin/` (unchanged copies of
//! Azure/azure-policy) on compliant and non-compliant resource bodies in inventory shape (ARM
//! GET / Resource Graph), the initiative with parameter overrides, the AuditIfNotExists
//! definitions, the `Microsoft.KeyVault.Data` definitions over ARM key resources, and unknown
//! values. Every expected verdict is derived from the definition's rule in a comment.
// Test code may unwrap: a panic is a test failure with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cmkvault_policy::resource::unknown;
use cmkvault_policy::{
    parse_document, Assignment, ComplianceState, Effect, Engine, EngineOptions, PolicyDocument,
    PolicyOutcome, Resource,
};
use serde_json::{json, Value};

use ComplianceState::{Compliant, NonCompliant, Unknown};

const CS_CMK: &str = "67121cc7-ff39-4ab8-b7e3-95b84dab487d";
const ML_CMK: &str = "ba769a63-b8cc-4b2d-abf6-ac33c7204be8";
const ML_CMK_V2: &str = "7f40cee6-e933-4d0f-a782-b96615e0f4a6";
const SEARCH_AINE: &str = "76a56461-9dc0-40f0-82f5-2453283afa2f";
const SEARCH_DENY: &str = "356da939-f20a-4bb9-86f8-5db445b0e354";
const STORAGE_CMK: &str = "6fac406b-40ca-413b-bf8e-0bf964659c25";
const COSMOS_CMK: &str = "1f905d99-2ab7-462c-a6b0-f709acca6c8f";
const ACR_CMK: &str = "5b9159ae-1701-4a6f-9a7a-aa9c8ddd0580";
const KV_SOFT_DELETE: &str = "1e66c121-a66a-4b1f-9b83-0fd99bf0fc2d";
const KV_RECOVERABLE: &str = "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53";
const KV_FIREWALL: &str = "55615ac9-af46-4a59-874e-391cc3dfb490";
const KV_PNA: &str = "405c5871-3e91-4644-8a63-58e19d68ff5b";
const KV_RBAC: &str = "12d4fa5e-1f9f-4c21-97a9-b99b3c6611b5";
const KEY_EXPIRY: &str = "152b15f7-8e1f-4c1f-ab71-8c010ba5dbc0";
const KEY_ROTATION: &str = "d8cf8476-a2ec-4916-896e-992351803c44";
const KEY_RSA_SIZE: &str = "82067dbb-e53b-4e06-b631-546d197452d9";
const CS_MI: &str = "fe3fd216-4f83-4fc1-8984-2bbec80a3418";
const ML_UAI: &str = "5f0c7d88-c7de-45b8-ac49-db49e72eaa78";
const AI_LOCAL_AUTH: &str = "71ef260a-8f18-47b7-abcb-62d0673d94dc";
const AI_NETWORK: &str = "037eea7a-bd0a-46c5-9a66-03aea78705d3";
const INITIATIVE: &str = "f15f4d95-c59c-4395-9317-be6978d0743f";

const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg";

fn builtin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/builtin")
}

fn all_documents() -> Vec<PolicyDocument> {
    let mut files: Vec<_> = std::fs::read_dir(builtin_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            parse_document(&v, &p.file_name().unwrap().to_string_lossy()).unwrap()
        })
        .collect()
}

fn document(name: &str) -> PolicyDocument {
    all_documents()
        .into_iter()
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("no built-in {name}"))
}

/// A fixed evaluation time: 2026-01-01T00:00:00Z.
fn options() -> EngineOptions {
    EngineOptions {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        ..EngineOptions::default()
    }
}

fn engine(names: &[&str], assignment: Option<Value>) -> Engine {
    let docs = names.iter().map(|n| document(n)).collect();
    let a = assignment.map(|v| Assignment::parse(&v, "assignment.json").unwrap());
    Engine::new(docs, a.as_ref(), options()).unwrap()
}

/// An inventory resource (ARM GET shape).
fn res(rtype: &str, name: &str, extra: Value) -> Resource {
    let mut body = json!({
        "id": format!("{RG}/providers/{rtype}/{name}"),
        "name": name,
        "type": rtype,
        "location": "westeurope",
    });
    let (Value::Object(b), Value::Object(e)) = (&mut body, extra) else {
        panic!("objects")
    };
    b.extend(e);
    Resource::from_body(body)
}

/// The one outcome of the single policy `name` on `r` (`None`: not applicable).
fn verdict(name: &str, r: &Resource) -> Option<PolicyOutcome> {
    verdict_with(name, r, None)
}

fn verdict_with(name: &str, r: &Resource, assignment: Option<Value>) -> Option<PolicyOutcome> {
    let e = engine(&[name], assignment);
    let mut out = e.evaluate(std::slice::from_ref(r));
    assert!(out.len() <= 1, "{out:?}");
    out.pop()
}

fn state(name: &str, r: &Resource) -> ComplianceState {
    verdict(name, r)
        .unwrap_or_else(|| panic!("{name} does not apply to {}", r.id()))
        .state
}

fn cs(kind: &str, props: Value) -> Resource {
    res(
        "Microsoft.CognitiveServices/accounts",
        &format!("cs-{}", kind.to_lowercase()),
        json!({"kind": kind, "sku": {"name": "S0"}, "properties": props}),
    )
}

fn kv(props: Value) -> Resource {
    res(
        "Microsoft.KeyVault/vaults",
        "kv1",
        json!({"properties": props}),
    )
}

fn key(props: Value) -> Resource {
    let mut r = res(
        "Microsoft.KeyVault/vaults/keys",
        "kv1/k1",
        json!({"properties": props}),
    );
    r.body["id"] = json!(format!(
        "{RG}/providers/Microsoft.KeyVault/vaults/kv1/keys/k1"
    ));
    r.body["name"] = json!("k1");
    r
}

fn search(props: Value) -> Resource {
    res(
        "Microsoft.Search/searchServices",
        "srch1",
        json!({"properties": props}),
    )
}

fn ml(kind: Option<&str>, props: Value) -> Resource {
    let mut r = res(
        "Microsoft.MachineLearningServices/workspaces",
        "ws1",
        json!({"properties": props}),
    );
    if let Some(k) = kind {
        r.body["kind"] = json!(k);
    }
    r
}

#[test]
fn all_builtins_load_and_list() {
    let docs = all_documents();
    assert_eq!(docs.len(), 21);
    // Without the initiative: the 20 definitions, with their default effects. The two key
    // definitions without a default parameter still load (their parameter is reported missing).
    let defs: Vec<_> = docs
        .into_iter()
        .filter(|d| matches!(d, PolicyDocument::Definition(_)))
        .collect();
    let e = Engine::new(defs, None, options()).unwrap();
    assert_eq!(e.policies().len(), 20);
    let by = |n: &str| e.policies().iter().find(|p| p.name == n).unwrap();
    assert_eq!(by(SEARCH_DENY).effect, Effect::Deny);
    assert_eq!(by(SEARCH_AINE).effect, Effect::AuditIfNotExists);
    assert_eq!(by(CS_CMK).effect, Effect::Audit);
    assert_eq!(
        by(KEY_RSA_SIZE).missing_parameters,
        vec!["minimumRSAKeySize"]
    );
    assert_eq!(
        by(KEY_ROTATION).missing_parameters,
        vec!["maximumDaysToRotate"]
    );
    assert_eq!(
        by(CS_CMK).display_name,
        "Azure AI Services resources should encrypt data at rest with a customer-managed key (CMK)"
    );
}

#[test]
fn cognitive_services_cmk_67121cc7() {
    // if: type == CS ∧ encryption.keySource notEquals "Microsoft.KeyVault" ∧ kind notIn
    // excludedKinds (default: 16 kinds incl. AIServices, not OpenAI).
    // OpenAI without an encryption block: keySource missing → notEquals true → NonCompliant.
    let o = verdict(CS_CMK, &cs("OpenAI", json!({}))).unwrap();
    assert_eq!(o.state, NonCompliant);
    assert_eq!(o.effect, Effect::Audit);
    assert!(
        o.reason.contains("Microsoft.CognitiveServices/accounts/encryption.keySource is missing (notEquals \"Microsoft.KeyVault\")"),
        "{}",
        o.reason
    );
    // Microsoft-managed key spelled out: the reason cites the value.
    let o = verdict(
        CS_CMK,
        &cs(
            "OpenAI",
            json!({"encryption": {"keySource": "Microsoft.CognitiveServices"}}),
        ),
    )
    .unwrap();
    assert_eq!(o.state, NonCompliant);
    assert!(
        o.reason
            .contains("is \"Microsoft.CognitiveServices\" (notEquals \"Microsoft.KeyVault\")"),
        "{}",
        o.reason
    );
    // CMK, in another casing: notEquals is case-insensitive → false → Compliant.
    let o = verdict(
        CS_CMK,
        &cs("ComputerVision", json!({"encryption": {"keySource": "microsoft.keyvault",
            "keyVaultProperties": {"keyName": "k", "keyVaultUri": "https://kv1.vault.azure.net/"}}})),
    )
    .unwrap();
    assert_eq!(o.state, Compliant);
    assert!(
        o.reason.contains("(equals \"Microsoft.KeyVault\")"),
        "{}",
        o.reason
    );
    // AIServices (Foundry) is an excluded kind: the kind condition makes it not applicable
    // (Azure evaluates type and kind for applicability when other conditions exist).
    assert!(verdict(CS_CMK, &cs("AIServices", json!({}))).is_none());
    // A storage account: the type condition fails → no result.
    let sa = res(
        "Microsoft.Storage/storageAccounts",
        "sa1",
        json!({"properties": {}}),
    );
    assert!(verdict(CS_CMK, &sa).is_none());
    // ARG lower-cases types: still applies.
    let mut lower = cs("OpenAI", json!({}));
    lower.body["type"] = json!("microsoft.cognitiveservices/accounts");
    assert_eq!(state(CS_CMK, &lower), NonCompliant);
}

#[test]
fn cognitive_services_strict_profile_assignment() {
    // The strict profile: excludedKinds = [] → AIServices is evaluated, and has no CMK.
    let strict = json!({"excludedKinds": [], "effect": "Deny"});
    let o = verdict_with(CS_CMK, &cs("AIServices", json!({})), Some(strict.clone())).unwrap();
    assert_eq!(o.state, NonCompliant);
    assert_eq!(o.effect, Effect::Deny);
    let cmk = cs(
        "AIServices",
        json!({"encryption": {"keySource": "Microsoft.KeyVault"}}),
    );
    assert_eq!(
        verdict_with(CS_CMK, &cmk, Some(strict)).unwrap().state,
        Compliant
    );
}

#[test]
fn cognitive_services_managed_identity_fe3fd216() {
    // if: type == CS ∧ (identity.type exists "false" ∨ identity.type == "None").
    assert_eq!(
        state(CS_MI, &cs("OpenAI", json!({}))),
        NonCompliant,
        "no identity"
    );
    let mut none = cs("OpenAI", json!({}));
    none.body["identity"] = json!({"type": "none"});
    assert_eq!(state(CS_MI, &none), NonCompliant, "None, any case");
    let mut sys = cs("OpenAI", json!({}));
    sys.body["identity"] = json!({"type": "SystemAssigned, UserAssigned"});
    assert_eq!(state(CS_MI, &sys), Compliant);
}

#[test]
fn ai_services_local_auth_71ef260a() {
    // if: (type == CS ∧ disableLocalAuth notEquals true) ∨ (type == Search ∧ same).
    assert_eq!(
        state(AI_LOCAL_AUTH, &cs("OpenAI", json!({}))),
        NonCompliant,
        "absent → notEquals true"
    );
    assert_eq!(
        state(
            AI_LOCAL_AUTH,
            &cs("OpenAI", json!({"disableLocalAuth": true}))
        ),
        Compliant
    );
    // A string "true" equals the boolean true.
    assert_eq!(
        state(AI_LOCAL_AUTH, &search(json!({"disableLocalAuth": "true"}))),
        Compliant
    );
    assert_eq!(
        state(AI_LOCAL_AUTH, &search(json!({"disableLocalAuth": false}))),
        NonCompliant
    );
    // Applicability: anyOf of the two type conditions; a key vault is neither.
    assert!(verdict(AI_LOCAL_AUTH, &kv(json!({}))).is_none());
}

#[test]
fn ai_services_network_037eea7a() {
    // CS branch: publicNetworkAccess notEquals "Disabled" ∧ networkAcls.defaultAction notEquals "Deny".
    assert_eq!(
        state(
            AI_NETWORK,
            &cs(
                "OpenAI",
                json!({"publicNetworkAccess": "Enabled",
            "networkAcls": {"defaultAction": "Allow"}})
            )
        ),
        NonCompliant
    );
    assert_eq!(
        state(
            AI_NETWORK,
            &cs("OpenAI", json!({"publicNetworkAccess": "Disabled"}))
        ),
        Compliant
    );
    assert_eq!(
        state(
            AI_NETWORK,
            &cs(
                "OpenAI",
                json!({"publicNetworkAccess": "Enabled",
            "networkAcls": {"defaultAction": "Deny"}})
            )
        ),
        Compliant
    );
    // Search branch: networkRuleSet.ipRules[*].value exists "false" is vacuously true over no
    // IP rules → public search without rules is NonCompliant; one rule → that element's value
    // exists → false → Compliant.
    assert_eq!(
        state(
            AI_NETWORK,
            &search(json!({"publicNetworkAccess": "Enabled"}))
        ),
        NonCompliant
    );
    assert_eq!(
        state(
            AI_NETWORK,
            &search(json!({"publicNetworkAccess": "Enabled",
            "networkRuleSet": {"ipRules": []}}))
        ),
        NonCompliant
    );
    assert_eq!(
        state(
            AI_NETWORK,
            &search(json!({"publicNetworkAccess": "Enabled",
            "networkRuleSet": {"ipRules": [{"value": "203.0.113.7"}]}}))
        ),
        Compliant
    );
}

#[test]
fn ml_workspace_cmk_ba769a63() {
    // if: type == ML ∧ not(kind == "project") ∧ not(encryption.status == "enabled").
    let o = verdict(ML_CMK, &ml(None, json!({}))).unwrap();
    assert_eq!(
        o.state, NonCompliant,
        "kind absent → evaluated; no encryption"
    );
    assert!(
        o.reason
            .contains("encryption.status is missing (notEquals \"enabled\")"),
        "{}",
        o.reason
    );
    assert_eq!(
        state(
            ML_CMK,
            &ml(Some("Hub"), json!({"encryption": {"status": "Enabled"}}))
        ),
        Compliant,
        "\"Enabled\" equals \"enabled\" ignoring case"
    );
    assert_eq!(
        state(
            ML_CMK,
            &ml(Some("hub"), json!({"encryption": {"status": "Disabled"}}))
        ),
        NonCompliant
    );
    // Projects inherit the hub's encryption: the kind condition takes them out (no result).
    assert!(verdict(ML_CMK, &ml(Some("Project"), json!({}))).is_none());
}

#[test]
fn ml_workspace_cmk_v2_aine_7f40cee6() {
    // AuditIfNotExists, self-referencing: details.type = the workspace type, name =
    // [field('name')], existenceCondition encryption.status == "Enabled".
    let o = verdict(ML_CMK_V2, &ml(None, json!({}))).unwrap();
    assert_eq!(o.state, NonCompliant);
    assert_eq!(o.effect, Effect::AuditIfNotExists);
    assert!(
        o.reason.contains("encryption.status is missing"),
        "{}",
        o.reason
    );
    assert_eq!(
        state(
            ML_CMK_V2,
            &ml(
                Some("Default"),
                json!({"encryption": {"status": "Enabled"}})
            )
        ),
        Compliant
    );
    // The whole `if` decides applicability for AINE: a project is not applicable.
    assert!(verdict(ML_CMK_V2, &ml(Some("project"), json!({}))).is_none());
    // Related lookup stays in the resource group: a same-named encrypted workspace in another
    // group does not make this one compliant.
    let mine = ml(None, json!({}));
    let mut other = ml(None, json!({"encryption": {"status": "Enabled"}}));
    other.body["id"] = json!(other
        .id()
        .replace("/resourceGroups/rg/", "/resourceGroups/rg2/"));
    let e = engine(&[ML_CMK_V2], None);
    let out = e.evaluate(&[mine, other]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].state, NonCompliant);
    assert_eq!(out[1].state, Compliant);
}

#[test]
fn ml_workspace_uai_5f0c7d88() {
    // if: type == ML ∧ (primaryUserAssignedIdentity exists false ∨ == "").
    assert_eq!(state(ML_UAI, &ml(None, json!({}))), NonCompliant);
    assert_eq!(
        state(
            ML_UAI,
            &ml(None, json!({"primaryUserAssignedIdentity": ""}))
        ),
        NonCompliant
    );
    assert_eq!(
        state(
            ML_UAI,
            &ml(
                None,
                json!({"primaryUserAssignedIdentity":
            format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uai")})
            )
        ),
        Compliant
    );
}

#[test]
fn search_cmk_aine_76a56461() {
    // if: type == Search; AINE self: enforcement == "Enabled" ∧ encryptionComplianceStatus == "Compliant".
    let ok = search(json!({"encryptionWithCmk": {"enforcement": "Enabled",
        "encryptionComplianceStatus": "Compliant"}}));
    assert_eq!(state(SEARCH_AINE, &ok), Compliant);
    // A template-like body: the read-only status is absent → existence condition false.
    let o = verdict(
        SEARCH_AINE,
        &search(json!({"encryptionWithCmk": {"enforcement": "Enabled"}})),
    )
    .unwrap();
    assert_eq!(o.state, NonCompliant);
    assert!(
        o.reason.contains("encryptionComplianceStatus is missing"),
        "{}",
        o.reason
    );
}

#[test]
fn search_cmk_deny_356da939() {
    // if: type == Search ∧ encryptionWithCmk.enforcement notEquals "Enabled"; default effect Deny.
    let o = verdict(
        SEARCH_DENY,
        &search(json!({"encryptionWithCmk": {"enforcement": "Unspecified"}})),
    )
    .unwrap();
    assert_eq!((o.state, o.effect), (NonCompliant, Effect::Deny));
    assert_eq!(
        state(
            SEARCH_DENY,
            &search(json!({"encryptionWithCmk": {"enforcement": "enabled"}}))
        ),
        Compliant
    );
}

#[test]
fn storage_cmk_6fac406b() {
    // if: type == Storage ∧ not(encryption.keySource == "Microsoft.Keyvault") (lower-case v).
    let sa = |ks: &str| {
        res(
            "Microsoft.Storage/storageAccounts",
            "sa1",
            json!({"kind": "StorageV2", "properties": {"encryption": {"keySource": ks}}}),
        )
    };
    assert_eq!(state(STORAGE_CMK, &sa("Microsoft.Storage")), NonCompliant);
    assert_eq!(state(STORAGE_CMK, &sa("Microsoft.Keyvault")), Compliant);
    assert_eq!(
        state(STORAGE_CMK, &sa("Microsoft.KeyVault")),
        Compliant,
        "case-insensitive"
    );
}

#[test]
fn cosmos_cmk_1f905d99() {
    // if: keyVaultKeyUri exists false ∧ type == Cosmos.
    let acct = |props: Value| {
        res(
            "Microsoft.DocumentDB/databaseAccounts",
            "cdb",
            json!({"properties": props}),
        )
    };
    assert_eq!(state(COSMOS_CMK, &acct(json!({}))), NonCompliant);
    assert_eq!(
        state(
            COSMOS_CMK,
            &acct(json!({"keyVaultKeyUri": "https://kv1.vault.azure.net/keys/k1"}))
        ),
        Compliant
    );
    // allowedValues lists "deny" and "Deny": a lower-case effect is accepted and parsed.
    let o = verdict_with(
        COSMOS_CMK,
        &acct(json!({})),
        Some(json!({"effect": "deny"})),
    )
    .unwrap();
    assert_eq!(o.effect, Effect::Deny);
}

#[test]
fn acr_cmk_5b9159ae() {
    // if: type == ACR ∧ encryption.status notEquals "enabled".
    let acr = |props: Value| {
        res(
            "Microsoft.ContainerRegistry/registries",
            "acr1",
            json!({"properties": props}),
        )
    };
    assert_eq!(state(ACR_CMK, &acr(json!({}))), NonCompliant);
    assert_eq!(
        state(ACR_CMK, &acr(json!({"encryption": {"status": "disabled"}}))),
        NonCompliant
    );
    assert_eq!(
        state(ACR_CMK, &acr(json!({"encryption": {"status": "enabled"}}))),
        Compliant
    );
}

#[test]
fn key_vault_soft_delete_1e66c121() {
    // if: type == KV ∧ not(createMode == "recover") ∧ (enableSoftDelete == "false" ∨ exists "false").
    assert_eq!(
        state(KV_SOFT_DELETE, &kv(json!({"enableSoftDelete": false}))),
        NonCompliant,
        "JSON false equals \"false\""
    );
    assert_eq!(state(KV_SOFT_DELETE, &kv(json!({}))), NonCompliant);
    assert_eq!(
        state(KV_SOFT_DELETE, &kv(json!({"enableSoftDelete": true}))),
        Compliant
    );
    assert_eq!(
        state(KV_SOFT_DELETE, &kv(json!({"createMode": "recover"}))),
        Compliant,
        "a recovery request is exempt"
    );
}

#[test]
fn key_vault_recoverable_api_versions_0b60c0b2() {
    // if: type == KV ∧ createMode notEquals "recover" ∧ ([api < 2019-09-01 ∧ soft delete false or
    // absent] ∨ [api >= 2019-09-01 ∧ soft delete == false] ∨ purge protection absent or false).
    let good = json!({"enableSoftDelete": true, "enablePurgeProtection": true});
    assert_eq!(state(KV_RECOVERABLE, &kv(good)), Compliant);
    assert_eq!(
        state(KV_RECOVERABLE, &kv(json!({"enableSoftDelete": true}))),
        NonCompliant,
        "no purge protection"
    );
    // Soft delete absent, purge protection on: inventory (latest API) and a new template API:
    // absent soft delete means on → Compliant; an old template API (< 2019-09-01): absent = off.
    let body = json!({"enablePurgeProtection": true});
    assert_eq!(state(KV_RECOVERABLE, &kv(body.clone())), Compliant);
    let mut new_api = kv(body.clone());
    new_api.api_version = Some("2019-09-01".into());
    assert_eq!(state(KV_RECOVERABLE, &new_api), Compliant);
    let mut old_api = kv(body);
    old_api.api_version = Some("2018-02-14".into());
    let o = verdict(KV_RECOVERABLE, &old_api).unwrap();
    assert_eq!(o.state, NonCompliant);
    assert!(
        o.reason
            .contains("requestContext().apiVersion is \"2018-02-14\" (less \"2019-09-01\")"),
        "{}",
        o.reason
    );
}

#[test]
fn key_vault_public_network_405c5871() {
    // if: type == KV ∧ not(createMode == recover) ∧ (api < 2021-06-01-preview ∨ (api >= … ∧
    // publicNetworkAccess notEquals "Disabled")). Inventory: the latest API version.
    assert_eq!(
        state(KV_PNA, &kv(json!({"publicNetworkAccess": "Disabled"}))),
        Compliant
    );
    assert_eq!(
        state(KV_PNA, &kv(json!({"publicNetworkAccess": "Enabled"}))),
        NonCompliant
    );
    assert_eq!(state(KV_PNA, &kv(json!({}))), NonCompliant);
    // An old template API cannot express the property: always flagged.
    let mut old = kv(json!({"publicNetworkAccess": "Disabled"}));
    old.api_version = Some("2021-04-01-preview".into());
    assert_eq!(state(KV_PNA, &old), NonCompliant);
    let mut new = kv(json!({"publicNetworkAccess": "Disabled"}));
    new.api_version = Some("2023-07-01".into());
    assert_eq!(state(KV_PNA, &new), Compliant);
}

#[test]
fn key_vault_firewall_55615ac9() {
    // if: type == KV ∧ createMode != recover ∧ (defaultAction != "Deny" ∨ [restrictIPAddresses
    // == "Yes" ∧ allowed/forbidden IP checks]) ∧ (api < 2021-06-01-preview ∨ PNA != "Disabled").
    let open =
        kv(json!({"networkAcls": {"defaultAction": "Allow"}, "publicNetworkAccess": "Enabled"}));
    assert_eq!(state(KV_FIREWALL, &open), NonCompliant);
    let closed =
        kv(json!({"networkAcls": {"defaultAction": "Deny"}, "publicNetworkAccess": "Disabled"}));
    assert_eq!(state(KV_FIREWALL, &closed), Compliant);
    // Firewall on with public access enabled: the first anyOf is false (restrictIPAddresses
    // defaults to "No") → Compliant.
    let fw = json!({"networkAcls": {"defaultAction": "Deny",
        "ipRules": [{"value": "10.1.2.3"}, {"value": "20.1.1.1/32"}]}, "publicNetworkAccess": "Enabled"});
    assert_eq!(state(KV_FIREWALL, &kv(fw.clone())), Compliant);
    // Forbidden IPs: one IP rule lies in 10.0.0.0/8 → count(ipRules where count(forbidden
    // containing it) > 0) = 1 → not(1 == 0) → NonCompliant.
    let forbid = json!({"restrictIPAddresses": "Yes", "forbiddenIPAddresses": ["10.0.0.0/8"]});
    assert_eq!(
        verdict_with(KV_FIREWALL, &kv(fw.clone()), Some(forbid))
            .unwrap()
            .state,
        NonCompliant
    );
    let forbid_other =
        json!({"restrictIPAddresses": "Yes", "forbiddenIPAddresses": ["192.168.0.0/16"]});
    assert_eq!(
        verdict_with(KV_FIREWALL, &kv(fw.clone()), Some(forbid_other))
            .unwrap()
            .state,
        Compliant
    );
    // Allowed IPs: only 20.0.0.0/8 allowed; 10.1.2.3 is not in it → the count of allowed rules
    // (1) differs from length(ipRules) (2) → NonCompliant; allow both ranges → Compliant.
    let allow = json!({"restrictIPAddresses": "Yes", "allowedIPAddresses": ["20.0.0.0/8"]});
    assert_eq!(
        verdict_with(KV_FIREWALL, &kv(fw.clone()), Some(allow))
            .unwrap()
            .state,
        NonCompliant
    );
    let allow_all =
        json!({"restrictIPAddresses": "Yes", "allowedIPAddresses": ["20.0.0.0/8", "10.0.0.0/8"]});
    assert_eq!(
        verdict_with(KV_FIREWALL, &kv(fw), Some(allow_all))
            .unwrap()
            .state,
        Compliant
    );
    // restrictIPAddresses only allows "Yes"/"No".
    let bad = Assignment::parse(&json!({"restrictIPAddresses": "Maybe"}), "a.json").unwrap();
    let err = Engine::new(vec![document(KV_FIREWALL)], Some(&bad), options()).unwrap_err();
    assert!(err.to_string().contains("allowedValues"), "{err}");
}

#[test]
fn key_vault_rbac_12d4fa5e() {
    // if: type == KV ∧ not(createMode == recover) ∧ (enableRbacAuthorization exists false ∨ == "false").
    assert_eq!(state(KV_RBAC, &kv(json!({}))), NonCompliant);
    assert_eq!(
        state(KV_RBAC, &kv(json!({"enableRbacAuthorization": false}))),
        NonCompliant
    );
    assert_eq!(
        state(KV_RBAC, &kv(json!({"enableRbacAuthorization": true}))),
        Compliant
    );
}

#[test]
fn key_expiration_data_plane_152b15f7() {
    // Mode Microsoft.KeyVault.Data: type == Microsoft.KeyVault.Data/vaults/keys ∧
    // attributes.expiresOn exists false; expiresOn reads the ARM key's properties.attributes.exp.
    let no_exp = key(
        json!({"kty": "RSA", "keySize": 2048, "attributes": {"enabled": true, "created": 1_700_000_000}}),
    );
    let o = verdict(KEY_EXPIRY, &no_exp).unwrap();
    assert_eq!(o.state, NonCompliant);
    assert_eq!(o.resource_type, "Microsoft.KeyVault/vaults/keys");
    assert!(
        o.reason.contains("attributes.expiresOn is missing"),
        "{}",
        o.reason
    );
    let with_exp = key(json!({"kty": "RSA", "attributes": {"exp": 1_800_000_000}}));
    let o = verdict(KEY_EXPIRY, &with_exp).unwrap();
    assert_eq!(o.state, Compliant);
    assert!(
        o.reason.contains("2027-01-15T08:00:00Z"),
        "epoch shown as a date-time: {}",
        o.reason
    );
    // Data-plane definitions see keys only.
    assert!(verdict(KEY_EXPIRY, &kv(json!({}))).is_none());
}

#[test]
fn key_rsa_size_82067dbb() {
    // if: type == keys ∧ keyType in ["RSA","RSA-HSM"] ∧ keySize < minimumRSAKeySize (no default).
    let rsa2048 = key(json!({"kty": "RSA", "keySize": 2048}));
    // Without a value for minimumRSAKeySize the RSA key's verdict is Unknown, naming it.
    let o = verdict(KEY_RSA_SIZE, &rsa2048).unwrap();
    assert_eq!(o.state, Unknown);
    assert!(o.reason.contains("minimumRSAKeySize"), "{}", o.reason);
    // An EC key fails keyType in [...] definitely → Compliant even without the parameter.
    let ec = key(json!({"kty": "EC", "curveName": "P-256"}));
    assert_eq!(state(KEY_RSA_SIZE, &ec), Compliant);
    let p = Some(json!({"minimumRSAKeySize": 3072}));
    assert_eq!(
        verdict_with(KEY_RSA_SIZE, &rsa2048, p.clone())
            .unwrap()
            .state,
        NonCompliant
    );
    let hsm4096 = key(json!({"kty": "RSA-HSM", "keySize": 4096}));
    assert_eq!(
        verdict_with(KEY_RSA_SIZE, &hsm4096, p).unwrap().state,
        Compliant
    );
    // 1024 is not an allowed value.
    let bad = Assignment::parse(&json!({"minimumRSAKeySize": 1024}), "a.json").unwrap();
    assert!(Engine::new(vec![document(KEY_RSA_SIZE)], Some(&bad), options()).is_err());
}

#[test]
fn key_rotation_d8cf8476() {
    // if: type == keys ∧ (scheduledRotationDate exists "false" ∨ scheduledRotationDate >
    // addDays(createdOn, maximumDaysToRotate)); scheduledRotationDate = created + timeAfterCreate
    // of the rotate action (or expiry − timeBeforeExpiry).
    let created = 1_735_689_600; // 2025-01-01
    let with_policy = |after: &str| {
        key(
            json!({"kty": "RSA", "keySize": 2048, "attributes": {"created": created},
            "rotationPolicy": {"attributes": {"expiryTime": "P2Y"}, "lifetimeActions": [
                {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}},
                {"trigger": {"timeAfterCreate": after}, "action": {"type": "Rotate"}}]}}),
        )
    };
    let p = Some(json!({"maximumDaysToRotate": 90}));
    assert_eq!(
        verdict_with(KEY_ROTATION, &with_policy("P90D"), p.clone())
            .unwrap()
            .state,
        Compliant
    );
    let o = verdict_with(KEY_ROTATION, &with_policy("P120D"), p.clone()).unwrap();
    assert_eq!(o.state, NonCompliant);
    assert!(
        o.reason
            .contains("scheduledRotationDate is \"2025-05-01T00:00:00Z\""),
        "{}",
        o.reason
    );
    // No rotation policy: scheduledRotationDate absent → NonCompliant (even without the parameter).
    let none = key(json!({"kty": "RSA", "attributes": {"created": created}}));
    assert_eq!(state(KEY_ROTATION, &none), NonCompliant);
    // timeBeforeExpiry on the rotate action: exp − 30 days = created + 60 days ≤ 90 → Compliant.
    let before = key(
        json!({"attributes": {"created": created, "exp": created + 90 * 86_400},
        "rotationPolicy": {"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "rotate"}}]}}),
    );
    assert_eq!(
        verdict_with(KEY_ROTATION, &before, p.clone())
            .unwrap()
            .state,
        Compliant
    );
    // Without maximumDaysToRotate the comparison is Unknown.
    assert_eq!(state(KEY_ROTATION, &with_policy("P90D")), Unknown);
    // A key in a template has no `created`: it would be created now (the evaluation time).
    let mut tmpl = with_policy("P60D");
    tmpl.body["properties"]["attributes"] = json!({});
    tmpl.api_version = Some("2023-07-01".into());
    assert_eq!(
        verdict_with(KEY_ROTATION, &tmpl, p).unwrap().state,
        Compliant
    );
}

#[test]
fn initiative_with_overrides_f15f4d95() {
    // The initiative's `effect` (default Deny) is passed to every member; 67121cc7's
    // excludedKinds comes from the initiative parameter `67121cc7-…_excludedKinds`. Only the
    // members whose definitions are loaded are evaluated; the others are reported.
    let docs = || {
        let mut v = vec![document(INITIATIVE)];
        v.extend([CS_CMK, ML_CMK, COSMOS_CMK, ACR_CMK].map(document));
        v
    };
    // Documents: the initiative first, then its 4 loaded member definitions standalone.
    let e = Engine::new(docs(), None, options()).unwrap();
    let members: Vec<_> = e
        .policies()
        .iter()
        .filter(|p| p.policy_set_name.is_some())
        .collect();
    assert_eq!(members.len(), 4);
    assert_eq!(e.warnings().len(), 32, "{:?}", e.warnings());
    assert!(members.iter().all(|p| p.effect == Effect::Deny));
    let cs_member = members.iter().find(|p| p.name == CS_CMK).unwrap();
    assert_eq!(
        cs_member.reference_id.as_deref(),
        Some("customerManagedKeysOnAIServices")
    );
    assert_eq!(cs_member.policy_set_name.as_deref(), Some(INITIATIVE));

    let openai = cs("OpenAI", json!({}));
    let foundry = cs("AIServices", json!({}));
    let out = e.evaluate(&[openai.clone(), foundry.clone()]);
    // OpenAI: NonCompliant twice (initiative member with Deny, standalone with Audit);
    // AIServices: excluded by default in both.
    let via_set: Vec<_> = out
        .iter()
        .filter(|o| o.policy_set_definition_name.is_some())
        .collect();
    assert_eq!(via_set.len(), 1);
    assert_eq!(
        (via_set[0].state, via_set[0].effect),
        (NonCompliant, Effect::Deny)
    );
    assert_eq!(
        via_set[0].policy_definition_reference_id.as_deref(),
        Some("customerManagedKeysOnAIServices")
    );
    assert!(out
        .iter()
        .any(|o| o.policy_set_definition_name.is_none() && o.effect == Effect::Audit));
    assert!(out.iter().all(|o| o.resource_id == openai.id()));

    // Assignment of the initiative (az policy assignment show shape): effect Deny → Audit and
    // the strict profile (no excluded kinds) → AIServices is NonCompliant with effect Audit.
    let assignment = json!({
        "name": "cmk-strict",
        "policyDefinitionId": format!("/providers/Microsoft.Authorization/policySetDefinitions/{INITIATIVE}"),
        "parameters": {
            "effect": {"value": "Audit"},
            "67121cc7-ff39-4ab8-b7e3-95b84dab487d_excludedKinds": {"value": []}
        }
    });
    let a = Assignment::parse(&assignment, "assignment.json").unwrap();
    let e = Engine::new(docs(), Some(&a), options()).unwrap();
    let out = e.evaluate(&[foundry]);
    let via_set: Vec<_> = out
        .iter()
        .filter(|o| o.policy_set_definition_name.is_some())
        .collect();
    assert_eq!(via_set.len(), 1, "{out:?}");
    assert_eq!(
        (via_set[0].state, via_set[0].effect),
        (NonCompliant, Effect::Audit)
    );
    // The targeted assignment does not touch the standalone definition: AIServices is still
    // excluded there.
    assert!(out.iter().all(|o| o.policy_set_definition_name.is_some()));

    // Errors: an effect the initiative does not allow, a parameter nobody declares, an
    // assignment for a policy that is not loaded.
    let bad = Assignment::parse(&json!({"properties": {"policyDefinitionId": format!("/providers/Microsoft.Authorization/policySetDefinitions/{INITIATIVE}"),
        "parameters": {"effect": {"value": "Modify"}}}}), "bad.json").unwrap();
    let err = Engine::new(docs(), Some(&bad), options())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.json") && err.contains("effect") && err.contains("allowedValues"),
        "{err}"
    );
    let typo = Assignment::parse(&json!({"efect": "Audit"}), "typo.json").unwrap();
    let err = Engine::new(docs(), Some(&typo), options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"efect\" is not declared"), "{err}");
    let elsewhere = Assignment::parse(&json!({"policyDefinitionId": "/providers/Microsoft.Authorization/policyDefinitions/nope", "parameters": {}}), "x.json").unwrap();
    assert!(Engine::new(docs(), Some(&elsewhere), options()).is_err());
}

#[test]
fn unknown_values_propagate() {
    // A template value that cannot be resolved offline (reference(), a parameter without a
    // default) is an unknown marker; the verdict is Unknown with its reason, never Compliant.
    let r = cs(
        "OpenAI",
        json!({"encryption": {"keySource": unknown("parameters('keySource') has no value")}}),
    );
    let o = verdict(CS_CMK, &r).unwrap();
    assert_eq!(o.state, Unknown);
    assert!(
        o.reason.contains(
            "encryption.keySource is unknown offline: parameters('keySource') has no value"
        ),
        "{}",
        o.reason
    );
    // An unknown `encryption` object makes the property below it unknown.
    let r = cs(
        "OpenAI",
        json!({"encryption": unknown("reference('kv') cannot be resolved offline")}),
    );
    assert_eq!(state(CS_CMK, &r), Unknown);
    // allOf with a definite false is false: a recovery request (createMode "recover") is
    // compliant whatever the unknown soft-delete setting is.
    let r = kv(json!({"createMode": "recover", "enableSoftDelete": unknown("x")}));
    assert_eq!(state(KV_SOFT_DELETE, &r), Compliant);
    // anyOf with a definite true is true: purge protection false decides despite unknown soft delete.
    let r = kv(json!({"enableSoftDelete": unknown("x"), "enablePurgeProtection": false}));
    assert_eq!(state(KV_RECOVERABLE, &r), NonCompliant);
    // Unknown kind: applicability cannot rule the account out, and the kind condition is unknown.
    let mut r = cs("OpenAI", json!({}));
    r.body["kind"] = unknown("parameters('kind') has no value");
    let o = verdict(CS_CMK, &r).unwrap();
    assert_eq!(o.state, Unknown);
    assert!(o.reason.contains("kind is unknown offline"), "{}", o.reason);
    // A key whose expiry is unknown.
    let k = key(json!({"attributes": {"exp": unknown("dateTimeToEpoch() of an unknown")}}));
    assert_eq!(state(KEY_EXPIRY, &k), Unknown);
}

#[test]
fn order_is_resources_then_policies_and_parallel_matches_serial() {
    let docs: Vec<_> = all_documents()
        .into_iter()
        .filter(|d| matches!(d, PolicyDocument::Definition(_)))
        .collect();
    let mut resources = Vec::new();
    for i in 0..5000 {
        let mut r = match i % 5 {
            0 => cs(if i % 2 == 0 { "OpenAI" } else { "AIServices" }, json!({})),
            1 => kv(json!({"enableSoftDelete": i % 3 == 0})),
            2 => ml(
                None,
                json!({"encryption": {"status": if i % 4 == 1 { "Enabled" } else { "Disabled" }}}),
            ),
            3 => key(json!({"kty": "RSA", "keySize": 2048})),
            _ => search(json!({})),
        };
        r.body["id"] = json!(format!("{}-{i}", r.id()));
        resources.push(r);
    }
    let serial = Engine::new(
        docs.clone(),
        None,
        EngineOptions {
            threads: 1,
            ..options()
        },
    )
    .unwrap();
    let parallel = Engine::new(
        docs,
        None,
        EngineOptions {
            threads: 4,
            ..options()
        },
    )
    .unwrap();
    let a = serial.evaluate(&resources);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let b = parallel.evaluate_with_progress(&resources, &|n| {
        done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(done.into_inner(), resources.len());
    assert_eq!(a.len(), b.len());
    let key_of = |o: &PolicyOutcome| {
        (
            o.resource_id.clone(),
            o.policy_definition_name.clone(),
            o.state,
            o.reason.clone(),
        )
    };
    assert!(a.iter().map(key_of).eq(b.iter().map(key_of)));
    // Resource order, then policy order.
    let order: Vec<usize> = b
        .iter()
        .map(|o| {
            resources
                .iter()
                .position(|r| r.id() == o.resource_id)
                .unwrap()
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]));
}
