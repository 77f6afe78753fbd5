//! Every condition operator, the policy functions and the reference's edge semantics (missing
//! properties, empty arrays, case-insensitivity, string-typed booleans and numbers, API-version
//! comparison, `count` with and without `where`, `current()`), three-valued logic,
//! applicability, related resources, effects and load-time errors — through the public API.
// Test code may unwrap: a panic is a test failure with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::time::{Duration, SystemTime};

use cmkvault_policy::resource::unknown;
use cmkvault_policy::{
    parse_document, Assignment, ComplianceState, Effect, Engine, EngineOptions, PolicyOutcome,
    Resource,
};
use serde_json::{json, Value};

const RG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg";

/// 2026-01-01T00:00:00Z.
fn options() -> EngineOptions {
    EngineOptions {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        ..EngineOptions::default()
    }
}

fn definition(mode: &str, cond: Value, params: Value, then: Value) -> Value {
    json!({"name": "test-rule", "properties": {"mode": mode, "parameters": params,
        "policyRule": {"if": cond, "then": then}}})
}

fn engine_for(def: Value) -> Result<Engine, String> {
    let doc = parse_document(&def, "rule.json").map_err(|e| e.to_string())?;
    Engine::new(vec![doc], None, options()).map_err(|e| e.to_string())
}

/// A storage account with `properties`.
fn sa(props: Value) -> Resource {
    Resource::from_body(json!({
        "id": format!("{RG}/providers/Microsoft.Storage/storageAccounts/sa1"),
        "name": "sa1", "type": "Microsoft.Storage/storageAccounts", "location": "East US 2",
        "kind": "StorageV2", "tags": {"Env": "Prod", "cost.center": "42", "'quoted'": "yes"},
        "identity": {"type": "SystemAssigned,UserAssigned"},
        "properties": props,
    }))
}

/// Whether `cond` holds for `r` (mode All, effect audit, no applicability restriction):
/// `Some(true)` NonCompliant, `Some(false)` Compliant, `None` Unknown.
fn holds_on(cond: Value, params: Value, r: &Resource) -> Option<bool> {
    let e = engine_for(definition("All", cond, params, json!({"effect": "audit"}))).unwrap();
    let out = e.evaluate(std::slice::from_ref(r));
    assert_eq!(out.len(), 1, "{out:?}");
    match out[0].state {
        ComplianceState::NonCompliant => Some(true),
        ComplianceState::Compliant => Some(false),
        ComplianceState::Unknown => None,
        ComplianceState::Exempt => panic!("exempt"),
    }
}

fn outcome(cond: Value, r: &Resource) -> PolicyOutcome {
    let e = engine_for(definition(
        "All",
        cond,
        json!({}),
        json!({"effect": "audit"}),
    ))
    .unwrap();
    e.evaluate(std::slice::from_ref(r)).pop().unwrap()
}

fn holds(cond: Value, props: Value) -> bool {
    holds_on(cond, json!({}), &sa(props)).expect("a definite verdict")
}

fn p(alias_suffix: &str) -> String {
    format!("Microsoft.Storage/storageAccounts/{alias_suffix}")
}

#[test]
fn equals_and_not_equals() {
    let c = |op: &str, v: Value| json!({"field": p("encryption.keySource"), op: v});
    let props = json!({"encryption": {"keySource": "Microsoft.Keyvault"}});
    assert!(
        holds(c("equals", json!("microsoft.KEYVAULT")), props.clone()),
        "case-insensitive"
    );
    assert!(!holds(
        c("notEquals", json!("Microsoft.KeyVault")),
        props.clone()
    ));
    assert!(!holds(c("equals", json!("Microsoft.Storage")), props));
    // Missing: equals false, notEquals true.
    assert!(!holds(c("equals", json!("x")), json!({})));
    assert!(holds(c("notEquals", json!("x")), json!({})));
    // null reads as missing.
    assert!(holds(
        c("notEquals", json!("x")),
        json!({"encryption": null})
    ));
    // Non-ASCII case folding (InvariantCultureIgnoreCase).
    assert!(holds(
        json!({"field": p("label"), "equals": "ÄRGER"}),
        json!({"label": "ärger"})
    ));
}

#[test]
fn string_typed_booleans_and_numbers() {
    let f = p("enableSoftDelete");
    assert!(holds(
        json!({"field": f, "equals": "false"}),
        json!({"enableSoftDelete": false})
    ));
    assert!(holds(
        json!({"field": f, "equals": "FALSE"}),
        json!({"enableSoftDelete": false})
    ));
    assert!(!holds(
        json!({"field": f, "equals": "false"}),
        json!({"enableSoftDelete": true})
    ));
    assert!(holds(
        json!({"field": f, "notEquals": true}),
        json!({"enableSoftDelete": "false"})
    ));
    assert!(!holds(
        json!({"field": f, "notEquals": true}),
        json!({"enableSoftDelete": "true"})
    ));
    assert!(holds(
        json!({"field": p("n"), "equals": "2048"}),
        json!({"n": 2048})
    ));
    assert!(holds(
        json!({"field": p("n"), "equals": 2048}),
        json!({"n": "2048"})
    ));
    assert!(holds(
        json!({"field": p("n"), "in": ["1024", 2048]}),
        json!({"n": 2048})
    ));
}

#[test]
fn like_and_not_like() {
    let f = p("name");
    assert!(holds(
        json!({"field": f, "like": "prod-*"}),
        json!({"name": "PROD-eu"})
    ));
    assert!(holds(
        json!({"field": f, "like": "*-eu"}),
        json!({"name": "prod-eu"})
    ));
    assert!(!holds(
        json!({"field": f, "like": "dev-*"}),
        json!({"name": "prod-eu"})
    ));
    assert!(holds(
        json!({"field": f, "notLike": "dev-*"}),
        json!({"name": "prod-eu"})
    ));
    assert!(
        !holds(json!({"field": f, "like": "*"}), json!({})),
        "missing: like false"
    );
    assert!(
        holds(json!({"field": f, "notLike": "*"}), json!({})),
        "missing: notLike true"
    );
}

#[test]
fn match_operators() {
    let f = p("code");
    assert!(holds(
        json!({"field": f, "match": "??-###"}),
        json!({"code": "ab-123"})
    ));
    assert!(
        !holds(
            json!({"field": f, "match": "ab-###"}),
            json!({"code": "AB-123"})
        ),
        "match is case-sensitive"
    );
    assert!(holds(
        json!({"field": f, "matchInsensitively": "ab-###"}),
        json!({"code": "AB-123"})
    ));
    assert!(holds(
        json!({"field": f, "notMatch": "ab-###"}),
        json!({"code": "AB-123"})
    ));
    assert!(!holds(
        json!({"field": f, "notMatchInsensitively": "ab-###"}),
        json!({"code": "AB-123"})
    ));
    assert!(holds(
        json!({"field": f, "match": "....."}),
        json!({"code": "a.b-c"})
    ));
    assert!(
        !holds(json!({"field": f, "match": "#"}), json!({"code": "12"})),
        "length must match"
    );
    assert!(!holds(json!({"field": f, "match": "#"}), json!({})));
    assert!(holds(json!({"field": f, "notMatch": "#"}), json!({})));
}

#[test]
fn contains_and_contains_key() {
    assert!(holds(
        json!({"field": p("uri"), "contains": "VAULT.azure"}),
        json!({"uri": "https://kv.vault.azure.net"})
    ));
    assert!(holds(
        json!({"field": p("uri"), "notContains": "managedhsm"}),
        json!({"uri": "https://kv.vault.azure.net"})
    ));
    assert!(
        holds(
            json!({"field": p("list"), "contains": "B"}),
            json!({"list": ["a", "b"]})
        ),
        "array membership"
    );
    assert!(!holds(
        json!({"field": p("uri"), "contains": "x"}),
        json!({})
    ));
    assert!(holds(
        json!({"field": p("uri"), "notContains": "x"}),
        json!({})
    ));
    assert!(
        holds(json!({"field": "tags", "containsKey": "env"}), json!({})),
        "keys case-insensitive"
    );
    assert!(holds(
        json!({"field": "tags", "notContainsKey": "owner"}),
        json!({})
    ));
    assert!(!holds(
        json!({"field": p("missing"), "containsKey": "a"}),
        json!({})
    ));
    assert!(holds(
        json!({"field": p("missing"), "notContainsKey": "a"}),
        json!({})
    ));
}

#[test]
fn in_and_not_in() {
    let f = "kind";
    assert!(holds(
        json!({"field": f, "in": ["blobstorage", "storagev2"]}),
        json!({})
    ));
    assert!(!holds(
        json!({"field": f, "notIn": ["StorageV2"]}),
        json!({})
    ));
    assert!(
        !holds(json!({"field": p("x"), "in": ["a"]}), json!({})),
        "missing: in false"
    );
    assert!(
        holds(json!({"field": p("x"), "notIn": ["a"]}), json!({})),
        "missing: notIn true"
    );
    // `in` needs an array: an evaluation failure, which is Unknown for an audit effect.
    let o = outcome(json!({"field": "kind", "in": "StorageV2"}), &sa(json!({})));
    assert_eq!(o.state, ComplianceState::Unknown);
    assert!(
        o.reason.contains("evaluation failed") && o.reason.contains("expects an array"),
        "{}",
        o.reason
    );
}

#[test]
fn ordering_operators() {
    let f = p("n");
    assert!(holds(json!({"field": f, "less": 2048}), json!({"n": 1024})));
    assert!(
        holds(
            json!({"field": f, "lessOrEquals": "2048"}),
            json!({"n": 2048})
        ),
        "string-typed int"
    );
    assert!(
        holds(json!({"field": f, "greater": 9}), json!({"n": "10"})),
        "numeric, not string order"
    );
    assert!(holds(
        json!({"field": f, "greaterOrEquals": 10}),
        json!({"n": 10})
    ));
    assert!(
        !holds(json!({"field": f, "less": 10}), json!({})),
        "missing: ordering false"
    );
    assert!(!holds(json!({"field": f, "greater": 10}), json!({})));
    // Dates compare as instants (different offsets), other strings ordinally ignoring case.
    assert!(holds(
        json!({"field": p("d"), "less": "2024-01-01T01:30:00+02:00"}),
        json!({"d": "2023-12-31T23:00:00Z"})
    ));
    assert!(holds(
        json!({"field": p("v"), "less": "2021-06-01-PREVIEW"}),
        json!({"v": "2021-04-01-preview"})
    ));
    // A boolean cannot be ordered: evaluation failure.
    let o = outcome(json!({"field": p("b"), "less": 1}), &sa(json!({"b": true})));
    assert_eq!(o.state, ComplianceState::Unknown);
    assert!(o.reason.contains("cannot compare"), "{}", o.reason);
}

#[test]
fn exists_with_typed_and_string_literals() {
    let f = p("keyVaultKeyUri");
    for (lit, present, expect) in [
        (json!(false), false, true),
        (json!("false"), false, true),
        (json!(true), false, false),
        (json!("true"), true, true),
        (json!("False"), true, false),
    ] {
        let props = if present {
            json!({"keyVaultKeyUri": "u"})
        } else {
            json!({})
        };
        assert_eq!(
            holds(json!({"field": f, "exists": lit}), props),
            expect,
            "exists {lit} present={present}"
        );
    }
    assert!(
        holds(
            json!({"field": f, "exists": false}),
            json!({"keyVaultKeyUri": null})
        ),
        "null is absent"
    );
    assert!(engine_for(definition(
        "All",
        json!({"field": f, "exists": "maybe"}),
        json!({}),
        json!({"effect": "audit"})
    ))
    .is_err());
}

#[test]
fn wildcard_aliases() {
    let rules = json!({"ipRules": [{"value": "127.0.0.1"}, {"value": "192.168.1.1"}]});
    let f = p("networkAcls.ipRules[*].value");
    let acl = json!({"networkAcls": rules});
    // The documented table: [*].value notEquals "127.0.0.1" → false (not every element);
    // not([*].value equals "127.0.0.1") → true (not every element equals it).
    assert!(!holds(
        json!({"field": f, "notEquals": "127.0.0.1"}),
        acl.clone()
    ));
    assert!(holds(
        json!({"not": {"field": f, "equals": "127.0.0.1"}}),
        acl.clone()
    ));
    assert!(
        holds(json!({"field": f, "like": "*.*"}), acl.clone()),
        "every element"
    );
    // Vacuous truth over an empty or missing array.
    assert!(holds(
        json!({"field": f, "equals": "x"}),
        json!({"networkAcls": {"ipRules": []}})
    ));
    assert!(holds(json!({"field": f, "exists": "false"}), json!({})));
    // An element without the property is missing for that element.
    assert!(!holds(
        json!({"field": f, "exists": true}),
        json!({"networkAcls": {"ipRules": [{"value": "1.1.1.1"}, {}]}})
    ));
    // Nested [*] flatten.
    let nested = json!({"accessPolicies": [{"permissions": {"keys": ["get", "wrapKey"]}},
        {"permissions": {"keys": ["unwrapKey"]}}]});
    let keys = p("accessPolicies[*].permissions.keys[*]");
    assert!(holds(
        json!({"field": keys, "in": ["get", "wrapkey", "unwrapkey"]}),
        nested.clone()
    ));
    assert!(!holds(
        json!({"field": keys, "in": ["get", "wrapKey"]}),
        nested
    ));
}

#[test]
fn field_count_with_and_without_where() {
    let ac = json!({"accessPolicies": [
        {"objectId": "a", "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]}},
        {"objectId": "b", "permissions": {"keys": ["get", "delete", "purge"]}},
        {"objectId": "c", "permissions": {"keys": []}}]});
    let arr = p("accessPolicies[*]");
    assert!(holds(
        json!({"count": {"field": arr}, "equals": 3}),
        ac.clone()
    ));
    assert!(
        holds(json!({"count": {"field": arr}, "equals": 0}), json!({})),
        "missing array: 0"
    );
    // where: inside, the counted alias is the current element only.
    let broad = json!({"count": {"field": arr, "where": {
        "count": {"field": p("accessPolicies[*].permissions.keys[*]"),
                  "where": {"field": p("accessPolicies[*].permissions.keys[*]"),
                            "notIn": ["get", "wrapKey", "unwrapKey"]}},
        "greater": 0}}, "equals": 1});
    assert!(
        holds(broad, ac.clone()),
        "one policy grants more than get/wrap/unwrap"
    );
    // current('alias') and field() of the counted alias inside where (a 1-element array).
    let cur = json!({"count": {"field": arr, "where": {"value": "[current('Microsoft.Storage/storageAccounts/accessPolicies[*].objectId')]", "in": ["a", "c"]}}, "equals": 2});
    assert!(holds(cur, ac.clone()));
    let one = json!({"count": {"field": arr, "where": {"value": "[length(field('Microsoft.Storage/storageAccounts/accessPolicies[*]'))]", "equals": 1}}, "equals": 3});
    assert!(holds(one, ac.clone()));
    // Fields outside the counted alias still read the whole resource.
    let outside = json!({"count": {"field": arr, "where": {"field": "kind", "equals": "StorageV2"}}, "equals": 3});
    assert!(holds(outside, ac));
}

#[test]
fn value_count_and_current() {
    let named = json!({"count": {"value": ["a", "b", "c"], "name": "letter",
        "where": {"value": "[current('letter')]", "notEquals": "b"}}, "equals": 2});
    assert!(holds(named, json!({})));
    let anon = json!({"count": {"value": [1, 2, 3], "where": {"value": "[current()]", "greater": 1}}, "equals": 2});
    assert!(holds(anon, json!({})));
    let plain = json!({"count": {"value": "[parameters('list')]"}, "equals": 2});
    assert_eq!(
        holds_on(
            plain,
            json!({"list": {"type": "Array", "defaultValue": ["x", "y"]}}),
            &sa(json!({}))
        ),
        Some(true)
    );
    // A value count inside a field count: current() of both.
    let cross = json!({"count": {"field": p("ipRules[*]"), "where": {
        "count": {"value": ["10.0.0.0/8"], "name": "range", "where": {
            "value": "[ipRangeContains(current('range'), current('Microsoft.Storage/storageAccounts/ipRules[*].value'))]",
            "equals": true}}, "greater": 0}}, "equals": 1});
    assert!(holds(
        cross,
        json!({"ipRules": [{"value": "10.1.1.1"}, {"value": "11.1.1.1"}]})
    ));
    // More than 100 iterations is an evaluation failure.
    let many: Vec<Value> = (0..101).map(Value::from).collect();
    let o = outcome(
        json!({"count": {"value": many, "where": {"value": "[current()]", "equals": 1}}, "equals": 1}),
        &sa(json!({})),
    );
    assert_eq!(o.state, ComplianceState::Unknown);
    assert!(o.reason.contains("at most 100"), "{}", o.reason);
}

#[test]
fn field_function_and_missing_values() {
    // field() of a missing non-array alias is "", of a missing [*] alias an empty array.
    assert!(holds(
        json!({"value": "[field('Microsoft.Storage/storageAccounts/nothing')]", "equals": ""}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[length(field('Microsoft.Storage/storageAccounts/nothing[*]'))]", "equals": 0}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[field('name')]", "equals": "SA1"}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[toLower(field('type'))]", "equals": "microsoft.storage/storageaccounts"}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[if(equals(field('kind'), 'StorageV2'), 'v2', 'v1')]", "equals": "v2"}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[concat(field('name'), '-', field('kind'))]", "equals": "sa1-storagev2"}),
        json!({})
    ));
}

#[test]
fn parameters_defaults_and_computed_field_names() {
    let params = json!({"tagName": {"type": "String", "defaultValue": "cost.center"},
        "values": {"type": "array", "defaultValue": ["42"]}});
    let c = json!({"field": "[concat('tags[', parameters('tagName'), ']')]", "in": "[parameters('values')]"});
    assert_eq!(holds_on(c, params, &sa(json!({}))), Some(true));
    // A parameter without a value: every condition that needs it is Unknown.
    let missing = json!({"size": {"type": "Integer"}});
    let c = json!({"field": p("n"), "less": "[parameters('size')]"});
    assert_eq!(
        holds_on(c.clone(), missing.clone(), &sa(json!({"n": 1}))),
        None
    );
    // … but an allOf with a definite false is still false.
    let c2 = json!({"allOf": [{"field": p("n"), "equals": 2}, c]});
    assert_eq!(holds_on(c2, missing, &sa(json!({"n": 1}))), Some(false));
    // parameters() of an undeclared name is a load error.
    let err = engine_for(definition(
        "All",
        json!({"value": "[parameters('nope')]", "equals": 1}),
        json!({}),
        json!({"effect": "audit"}),
    ))
    .unwrap_err();
    assert!(err.contains("rule.json") && err.contains("nope"), "{err}");
}

#[test]
fn dates_utc_now_and_add_days() {
    // now = 2026-01-01T00:00:00Z.
    assert!(holds(
        json!({"value": "[utcNow()]", "equals": "2026-01-01T00:00:00.0000000Z"}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[addDays(utcNow(), 31)]", "greater": "2026-01-31T23:59:59Z"}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[addDays('2024-02-28T00:00:00Z', '1')]", "equals": "2024-02-29T00:00:00.0000000Z"}),
        json!({})
    ));
    assert!(holds(
        json!({"field": p("expiry"), "less": "[addDays(utcNow(), 30)]"}),
        json!({"expiry": "2026-01-15T00:00:00Z"})
    ));
    assert!(holds(
        json!({"value": "[utcNow('yyyy-MM-dd')]", "equals": "2026-01-01"}),
        json!({})
    ));
}

#[test]
fn ip_range_contains_function() {
    assert!(holds(
        json!({"value": "[ipRangeContains('10.0.0.0/24', '10.0.0.255')]", "equals": true}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[ipRangeContains('10.0.0.0/24', '10.0.1.0')]", "equals": false}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[ipRangeContains('10.0.0.1-10.0.0.20', '10.0.0.8/29')]", "equals": true}),
        json!({})
    ));
    assert!(holds(
        json!({"value": "[ipRangeContains('fd00::/8', 'fd12::1')]", "equals": true}),
        json!({})
    ));
    // Mixing families fails the evaluation: at load time when the arguments are constants…
    let err = engine_for(definition(
        "All",
        json!({"value": "[ipRangeContains('10.0.0.0/8', 'fd12::1')]", "equals": true}),
        json!({}),
        json!({"effect": "audit"}),
    ))
    .unwrap_err();
    assert!(err.contains("different address families"), "{err}");
    // … per resource otherwise.
    let o = outcome(
        json!({"value": "[ipRangeContains('10.0.0.0/8', field('Microsoft.Storage/storageAccounts/ip'))]", "equals": true}),
        &sa(json!({"ip": "fd12::1"})),
    );
    assert_eq!(o.state, ComplianceState::Unknown);
    assert!(
        o.reason.contains("different address families"),
        "{}",
        o.reason
    );
}

#[test]
fn request_context_api_version() {
    let old = json!({"value": "[requestContext().apiVersion]", "less": "2021-06-01-preview"});
    let new =
        json!({"value": "[requestContext().apiVersion]", "greaterOrEquals": "2021-06-01-preview"});
    let mut r = sa(json!({}));
    // Inventory: no request, the latest version: later than any dated version.
    assert_eq!(holds_on(old.clone(), json!({}), &r), Some(false));
    assert_eq!(holds_on(new.clone(), json!({}), &r), Some(true));
    r.api_version = Some("2021-04-01-preview".into());
    assert_eq!(holds_on(old.clone(), json!({}), &r), Some(true));
    assert_eq!(holds_on(new.clone(), json!({}), &r), Some(false));
    r.api_version = Some("2021-06-01-preview".into());
    assert_eq!(holds_on(new, json!({}), &r), Some(true));
    r.api_version = Some("2019-09-01".into());
    assert_eq!(holds_on(old, json!({}), &r), Some(true));
}

#[test]
fn top_level_fields() {
    // location is normalised on both sides.
    assert!(holds(
        json!({"field": "location", "equals": "eastus2"}),
        json!({})
    ));
    assert!(holds(
        json!({"field": "location", "in": ["East US 2", "westeurope"]}),
        json!({})
    ));
    // identity.type: "SystemAssigned,UserAssigned" == "SystemAssigned, UserAssigned".
    assert!(holds(
        json!({"field": "identity.type", "equals": "SystemAssigned, UserAssigned"}),
        json!({})
    ));
    assert!(holds(
        json!({"field": "identity.type", "contains": "userassigned"}),
        json!({})
    ));
    // tags in every spelling.
    for f in [
        "tags['env']",
        "tags[env]",
        "tags.env",
        "tags['cost.center']",
        "tags['''quoted''']",
    ] {
        assert!(holds(json!({"field": f, "exists": true}), json!({})), "{f}");
    }
    assert!(holds(
        json!({"field": "tags['env']", "equals": "prod"}),
        json!({})
    ));
    assert!(holds(
        json!({"field": "tags.owner", "exists": false}),
        json!({})
    ));
    assert!(holds(
        json!({"field": "id", "like": "/subscriptions/*/storageAccounts/sa1"}),
        json!({})
    ));
    // A child resource: name is its own name, fullName the parents' names joined.
    let child = Resource::from_body(json!({
        "id": format!("{RG}/providers/Microsoft.CognitiveServices/accounts/acct/projects/proj"),
        "name": "acct/proj", "type": "Microsoft.CognitiveServices/accounts/projects"}));
    assert_eq!(
        holds_on(
            json!({"field": "name", "equals": "proj"}),
            json!({}),
            &child
        ),
        Some(true)
    );
    assert_eq!(
        holds_on(
            json!({"field": "fullName", "equals": "acct/proj"}),
            json!({}),
            &child
        ),
        Some(true)
    );
}

#[test]
fn three_valued_logic() {
    let r = sa(json!({"a": unknown("reference('x') cannot be resolved offline"), "b": 1}));
    let u = json!({"field": p("a"), "equals": 1});
    let t = json!({"field": p("b"), "equals": 1});
    let f = json!({"field": p("b"), "equals": 2});
    assert_eq!(holds_on(u.clone(), json!({}), &r), None);
    assert_eq!(holds_on(json!({"not": u}), json!({}), &r), None);
    assert_eq!(
        holds_on(json!({"allOf": [u, f]}), json!({}), &r),
        Some(false)
    );
    assert_eq!(holds_on(json!({"allOf": [u, t]}), json!({}), &r), None);
    assert_eq!(
        holds_on(json!({"anyOf": [u, t]}), json!({}), &r),
        Some(true)
    );
    assert_eq!(holds_on(json!({"anyOf": [u, f]}), json!({}), &r), None);
    // The reason carries the marker's text and the field.
    let e = engine_for(definition(
        "All",
        json!({"anyOf": [u, f]}),
        json!({}),
        json!({"effect": "audit"}),
    ))
    .unwrap();
    let o = e.evaluate(std::slice::from_ref(&r)).pop().unwrap();
    assert!(o.reason.contains("Microsoft.Storage/storageAccounts/a is unknown offline: reference('x') cannot be resolved offline"), "{}", o.reason);
    // Unknown inside a counted array or in an expression.
    let r2 = sa(json!({"list": [1, unknown("copy() of an unknown")]}));
    assert_eq!(
        holds_on(
            json!({"count": {"field": p("list[*]"), "where": {"value": "[current()]", "equals": 1}}, "equals": 1}),
            json!({}),
            &r2
        ),
        None
    );
    assert_eq!(
        holds_on(
            json!({"value": "[concat('x', field('Microsoft.Storage/storageAccounts/a'))]", "equals": "x1"}),
            json!({}),
            &r
        ),
        None
    );
}

#[test]
fn applicability_rules() {
    let audit = json!({"effect": "audit"});
    let e = |c: Value| engine_for(definition("Indexed", c, json!({}), audit.clone())).unwrap();
    let vault = Resource::from_body(
        json!({"id": format!("{RG}/providers/Microsoft.KeyVault/vaults/kv"),
        "name": "kv", "type": "Microsoft.KeyVault/vaults", "kind": "x", "properties": {}}),
    );
    let both = [sa(json!({})), vault];
    // Only kind conditions: applies to every resource (Compliant where the kind differs).
    assert_eq!(
        e(json!({"field": "kind", "equals": "StorageV2"}))
            .evaluate(&both)
            .len(),
        2
    );
    // Type and kind only: type alone decides; the vault gets no result.
    let out = e(
        json!({"allOf": [{"field": "type", "equals": "Microsoft.Storage/storageAccounts"},
        {"field": "kind", "equals": "BlobStorage"}]}),
    )
    .evaluate(&both);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, ComplianceState::Compliant);
    // Type, kind and another condition: type and kind decide.
    let out = e(
        json!({"allOf": [{"field": "type", "equals": "Microsoft.Storage/storageAccounts"},
        {"field": "kind", "equals": "BlobStorage"}, {"field": p("x"), "exists": false}]}),
    )
    .evaluate(&both);
    assert!(out.is_empty(), "{out:?}");
    // A negated non-type condition counts as false under the not, so it does not restrict.
    let out = e(
        json!({"allOf": [{"field": "type", "equals": "Microsoft.Storage/storageAccounts"},
        {"not": {"field": p("x"), "exists": false}}]}),
    )
    .evaluate(&both);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, ComplianceState::Compliant);
    // anyOf of types (DisableLocalAuth's shape).
    let out = e(json!({"anyOf": [
        {"allOf": [{"field": "type", "equals": "Microsoft.KeyVault/vaults"}, {"field": p("x"), "exists": true}]},
        {"allOf": [{"field": "type", "in": ["Microsoft.Search/searchServices"]}, {"field": p("x"), "exists": true}]}]}))
        .evaluate(&both);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].resource_type, "Microsoft.KeyVault/vaults");
}

#[test]
fn effects_disabled_deny_and_failures() {
    let c = json!({"allOf": [{"field": "type", "equals": "Microsoft.Storage/storageAccounts"}, {"field": p("b"), "less": 1}]});
    let params = json!({"effect": {"type": "String", "defaultValue": "Disabled", "allowedValues": ["Audit", "Deny", "Disabled"]}});
    let def = definition(
        "Indexed",
        c,
        params,
        json!({"effect": "[parameters('effect')]"}),
    );
    let doc = parse_document(&def, "rule.json").unwrap();
    let r = sa(json!({"b": true}));
    // Disabled: no result, unless asked for.
    let e = Engine::new(vec![doc.clone()], None, options()).unwrap();
    assert_eq!(e.policies()[0].effect, Effect::Disabled);
    assert!(e.evaluate(std::slice::from_ref(&r)).is_empty());
    let e = Engine::new(
        vec![doc.clone()],
        None,
        EngineOptions {
            evaluate_disabled: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(
        e.evaluate(std::slice::from_ref(&r))[0].effect,
        Effect::Disabled
    );
    // Deny (from a plain assignment map): an evaluation failure is an implicit deny.
    let a = Assignment::parse(&json!({"effect": "Deny"}), "a.json").unwrap();
    let e = Engine::new(vec![doc], Some(&a), options()).unwrap();
    let o = e.evaluate(std::slice::from_ref(&r)).pop().unwrap();
    assert_eq!(
        (o.state, o.effect),
        (ComplianceState::NonCompliant, Effect::Deny)
    );
    assert!(o.reason.contains("implicit deny"), "{}", o.reason);
}

#[test]
fn related_resources_children_and_expressions() {
    // AuditIfNotExists on a child type: a vault needs an RSA key; existenceCondition `field`
    // reads the key, `[field('name')]` the vault.
    let def = definition(
        "All",
        json!({"field": "type", "equals": "Microsoft.KeyVault/vaults"}),
        json!({}),
        json!({"effect": "DeployIfNotExists", "details": {
            "type": "Microsoft.KeyVault/vaults/keys",
            "existenceCondition": {"allOf": [
                {"field": "Microsoft.KeyVault/vaults/keys/kty", "equals": "RSA"},
                {"field": "id", "contains": "[concat('/vaults/', field('name'), '/')]"}]}}}),
    );
    let e = engine_for(def).unwrap();
    let vault = |n: &str| {
        Resource::from_body(
            json!({"id": format!("{RG}/providers/Microsoft.KeyVault/vaults/{n}"),
        "name": n, "type": "Microsoft.KeyVault/vaults", "properties": {}}),
        )
    };
    let key = |v: &str, k: &str, kty: &str| {
        Resource::from_body(json!({
        "id": format!("{RG}/providers/Microsoft.KeyVault/vaults/{v}/keys/{k}"),
        "name": k, "type": "Microsoft.KeyVault/vaults/keys", "properties": {"kty": kty}}))
    };
    let input = [
        vault("a"),
        key("a", "k1", "EC"),
        key("a", "k2", "RSA"),
        vault("b"),
        key("b", "k1", "EC"),
        vault("c"),
    ];
    let out = e.evaluate(&input);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0].state, ComplianceState::Compliant);
    assert_eq!(out[0].effect, Effect::DeployIfNotExists);
    assert_eq!(out[1].state, ComplianceState::NonCompliant);
    assert!(
        out[1]
            .reason
            .contains("related Microsoft.KeyVault/vaults/keys b/k1"),
        "{}",
        out[1].reason
    );
    assert_eq!(out[2].state, ComplianceState::NonCompliant);
    assert!(
        out[2]
            .reason
            .contains("no related Microsoft.KeyVault/vaults/keys"),
        "{}",
        out[2].reason
    );
}

#[test]
fn load_errors_name_the_alias_and_definition() {
    let audit = json!({"effect": "audit"});
    let err = engine_for(definition(
        "All",
        json!({"field": "encryption.keySource", "equals": "x"}),
        json!({}),
        audit.clone(),
    ))
    .unwrap_err();
    assert!(
        err.contains("rule.json")
            && err.contains("test-rule")
            && err.contains("\"encryption.keySource\""),
        "{err}"
    );
    let err = engine_for(definition(
        "All",
        json!({"field": "Microsoft.KeyVault.Data/vaults/keys/keyType", "equals": "RSA"}),
        json!({}),
        audit.clone(),
    ))
    .unwrap_err();
    assert!(err.contains("Microsoft.KeyVault.Data"), "{err}");
    let err = engine_for(definition(
        "All",
        json!({"field": "type", "equals": "x", "like": "y"}),
        json!({}),
        audit.clone(),
    ))
    .unwrap_err();
    assert!(err.contains("more than one operator"), "{err}");
    let err = engine_for(definition(
        "All",
        json!({"field": "type", "sameAs": "x"}),
        json!({}),
        audit.clone(),
    ))
    .unwrap_err();
    assert!(err.contains("sameAs"), "{err}");
    let err = engine_for(definition(
        "All",
        json!({"value": "[concat('a']", "equals": "a"}),
        json!({}),
        audit.clone(),
    ))
    .unwrap_err();
    assert!(err.contains("expected"), "{err}");
    let err = engine_for(definition(
        "Microsoft.Kubernetes.Data",
        json!({"field": "type", "equals": "x"}),
        json!({}),
        audit,
    ))
    .unwrap_err();
    assert!(err.contains("not supported offline"), "{err}");
    let err = engine_for(definition(
        "All",
        json!({"field": "type", "equals": "x"}),
        json!({}),
        json!({"effect": "explode"}),
    ))
    .unwrap_err();
    assert!(err.contains("explode"), "{err}");
    // The mechanical rule covers aliases the engine has never seen.
    assert!(engine_for(definition(
        "All",
        json!({"field": "Microsoft.Contoso/widgets/deeply.nested[*].thing", "exists": true}),
        json!({}),
        json!({"effect": "audit"})
    ))
    .is_ok());
}
