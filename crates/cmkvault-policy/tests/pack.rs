// Test code may unwrap: a panic is a test failure with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

//! The CMK rule pack: every file in `policies/cmk/` is a well-formed policy definition in the
//! Azure Policy language subset of the reference (§2), is compiled into the pack, and the pack
//! loads, lists and finds definitions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cmkvault_policy::expr::{self, Expr, Template};
use cmkvault_policy::pack::{
    parse_definition, DefinitionKind, Pack, PackSource, BUILTIN_FILES, CMK_FILES,
};
use serde_json::Value;

fn cmk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/cmk")
}

fn cmk_documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(cmk_dir()).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            file.ends_with(".json"),
            "stray file in policies/cmk: {file}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
        out.push((file, json));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 15, "only {} rule files", out.len());
    out
}

const OPERATORS: &[&str] = &[
    "equals",
    "notEquals",
    "like",
    "notLike",
    "match",
    "notMatch",
    "matchInsensitively",
    "notMatchInsensitively",
    "contains",
    "notContains",
    "in",
    "notIn",
    "containsKey",
    "notContainsKey",
    "less",
    "lessOrEquals",
    "greater",
    "greaterOrEquals",
    "exists",
];

/// Functions the reference (§2) lists for policy rules, plus `replace` (an ARM template
/// function that the docs allow in policy rules and the common library implements).
const FUNCTIONS: &[&str] = &[
    "parameters",
    "field",
    "requestcontext",
    "adddays",
    "utcnow",
    "ipRangeContains",
    "current",
    "length",
    "concat",
    "if",
    "equals",
    "tolower",
    "first",
    "split",
    "substring",
    "empty",
    "replace",
];

const TOP_LEVEL_FIELDS: &[&str] = &[
    "type",
    "kind",
    "name",
    "fullName",
    "location",
    "id",
    "identity.type",
    "tags",
];

#[derive(Default)]
struct Walk {
    aliases: BTreeSet<String>,
    functions: BTreeSet<String>,
    parameters: BTreeSet<String>,
}

impl Walk {
    fn expression(&mut self, file: &str, s: &str) {
        if let Template::Expression(text) = expr::classify(s) {
            let e = expr::parse(text).unwrap_or_else(|err| panic!("{file}: {s}: {err}"));
            self.calls(file, &e);
        }
    }

    fn calls(&mut self, file: &str, e: &Expr) {
        match e {
            Expr::Call(name, args) => {
                let lname = name.to_ascii_lowercase();
                assert!(
                    FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(&lname)),
                    "{file}: function {name}() is outside the reference's subset"
                );
                self.functions.insert(lname.clone());
                if lname == "parameters" {
                    if let [Expr::Str(p)] = args.as_slice() {
                        self.parameters.insert(p.clone());
                    } else {
                        panic!("{file}: parameters() with a computed name");
                    }
                }
                if lname == "field" {
                    if let [Expr::Str(f)] = args.as_slice() {
                        self.field_name(file, f);
                    }
                }
                for a in args {
                    self.calls(file, a);
                }
            }
            Expr::Member(inner, _) => self.calls(file, inner),
            Expr::Index(a, b) => {
                self.calls(file, a);
                self.calls(file, b);
            }
            _ => {}
        }
    }

    fn field_name(&mut self, file: &str, f: &str) {
        if let Template::Expression(_) = expr::classify(f) {
            self.expression(file, f);
            return;
        }
        if TOP_LEVEL_FIELDS.contains(&f) || f.starts_with("tags[") || f.starts_with("tags.") {
            return;
        }
        assert!(
            f.starts_with("Microsoft.") && f.matches('/').count() >= 2,
            "{file}: field {f:?} is neither a top-level field nor an alias"
        );
        self.aliases.insert(f.to_string());
    }

    /// A condition: allOf / anyOf / not, or a leaf (field | value | count) with one operator.
    fn condition(&mut self, file: &str, c: &Value) {
        let m = c
            .as_object()
            .unwrap_or_else(|| panic!("{file}: condition {c} is not an object"));
        if let Some(list) = m.get("allOf").or_else(|| m.get("anyOf")) {
            assert_eq!(m.len(), 1, "{file}: allOf/anyOf with siblings: {c}");
            let list = list.as_array().unwrap();
            assert!(!list.is_empty(), "{file}: empty allOf/anyOf");
            for x in list {
                self.condition(file, x);
            }
            return;
        }
        if let Some(inner) = m.get("not") {
            assert_eq!(m.len(), 1, "{file}: not with siblings: {c}");
            self.condition(file, inner);
            return;
        }
        let subjects: Vec<&str> = ["field", "value", "count"]
            .into_iter()
            .filter(|k| m.contains_key(*k))
            .collect();
        assert_eq!(
            subjects.len(),
            1,
            "{file}: a leaf needs one of field/value/count: {c}"
        );
        let ops: Vec<&String> = m.keys().filter(|k| k.as_str() != subjects[0]).collect();
        assert_eq!(
            ops.len(),
            1,
            "{file}: a leaf needs exactly one operator: {c}"
        );
        assert!(
            OPERATORS.contains(&ops[0].as_str()),
            "{file}: unknown operator {}",
            ops[0]
        );
        let operand = &m[ops[0].as_str()];
        self.value(file, operand);
        match subjects[0] {
            "field" => self.field_name(file, m["field"].as_str().unwrap()),
            "value" => self.value(file, &m["value"]),
            _ => {
                let count = m["count"].as_object().unwrap();
                for k in count.keys() {
                    assert!(
                        ["field", "value", "name", "where"].contains(&k.as_str()),
                        "{file}: count has {k}"
                    );
                }
                if let Some(f) = count.get("field") {
                    let f = f.as_str().unwrap();
                    assert!(
                        f.contains("[*]"),
                        "{file}: field count over {f} (not an array alias)"
                    );
                    self.field_name(file, f);
                }
                if let Some(w) = count.get("where") {
                    self.condition(file, w);
                }
            }
        }
    }

    fn value(&mut self, file: &str, v: &Value) {
        match v {
            Value::String(s) => self.expression(file, s),
            Value::Array(a) => a.iter().for_each(|x| self.value(file, x)),
            Value::Object(m) => m.values().for_each(|x| self.value(file, x)),
            _ => {}
        }
    }
}

#[test]
fn every_rule_file_has_the_envelope_and_speaks_the_reference_subset() {
    let mut all_aliases = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (file, doc) in cmk_documents() {
        let name = doc["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no name"));
        assert!(
            name.starts_with("cmkvault-")
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{file}: name {name:?} is not a cmkvault-… slug"
        );
        assert_eq!(file, format!("{name}.json"), "file name must be the name");
        assert!(names.insert(name.to_string()), "{name} twice");
        assert_eq!(
            doc["id"],
            format!("/providers/cmkvault/policyDefinitions/{name}"),
            "{file}: id"
        );
        let p = &doc["properties"];
        for key in [
            "displayName",
            "description",
            "mode",
            "policyType",
            "version",
        ] {
            assert!(
                p[key].as_str().is_some_and(|s| !s.trim().is_empty()),
                "{file}: properties.{key} missing"
            );
        }
        assert_eq!(p["policyType"], "Custom", "{file}");
        assert!(
            ["Indexed", "All", "Microsoft.KeyVault.Data"].contains(&p["mode"].as_str().unwrap()),
            "{file}: mode {}",
            p["mode"]
        );
        assert_eq!(p["metadata"]["version"], p["version"], "{file}");
        assert!(p["metadata"]["category"].is_string(), "{file}: category");

        // Parameters: typed, with a default (inside allowedValues when those are given).
        let params = p["parameters"].as_object().unwrap();
        for (pname, spec) in params {
            let t = spec["type"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: {pname} type"));
            assert!(
                ["String", "Array", "Integer", "Boolean", "Object"].contains(&t),
                "{file}: {pname} type {t}"
            );
            let default = spec
                .get("defaultValue")
                .unwrap_or_else(|| panic!("{file}: parameter {pname} has no default"));
            if let Some(allowed) = spec.get("allowedValues") {
                assert!(
                    allowed.as_array().unwrap().contains(default),
                    "{file}: {pname} default not allowed"
                );
            }
            assert!(
                spec["metadata"]["displayName"].is_string(),
                "{file}: {pname}"
            );
            assert!(
                spec["metadata"]["description"].is_string(),
                "{file}: {pname}"
            );
        }
        let effect = &params["effect"];
        for e in effect["allowedValues"].as_array().unwrap() {
            assert!(
                ["Audit", "Deny", "AuditIfNotExists", "Disabled"].contains(&e.as_str().unwrap()),
                "{file}: effect {e}"
            );
        }

        // The rule.
        let rule = &p["policyRule"];
        assert_eq!(rule.as_object().unwrap().len(), 2, "{file}: if/then only");
        assert_eq!(rule["then"]["effect"], "[parameters('effect')]", "{file}");
        let mut walk = Walk::default();
        walk.condition(&file, &rule["if"]);
        walk.value(&file, &rule["then"]["effect"]);
        let aine = effect["defaultValue"] == "AuditIfNotExists";
        let details = rule["then"].get("details");
        assert_eq!(
            aine,
            details.is_some(),
            "{file}: details iff AuditIfNotExists"
        );
        if let Some(d) = details {
            let t = d["type"].as_str().unwrap();
            assert!(
                t.starts_with("Microsoft.") && t.contains('/'),
                "{file}: details.type"
            );
            for (k, v) in d.as_object().unwrap() {
                assert!(
                    ["type", "name", "existenceCondition"].contains(&k.as_str()),
                    "{file}: details.{k}"
                );
                if k == "existenceCondition" {
                    walk.condition(&file, v);
                } else {
                    walk.value(&file, v);
                }
            }
        }
        // Every declared parameter is used, every used one declared.
        let declared: BTreeSet<String> = params.keys().cloned().collect();
        assert_eq!(
            walk.parameters, declared,
            "{file}: parameters used vs declared"
        );
        all_aliases.extend(walk.aliases);
    }

    // docs/policy-pack.md lists the aliases the pack needs (the engine's alias table must
    // cover them): keep it exact.
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/policy-pack.md"),
    )
    .unwrap();
    let section = doc
        .split("## Aliases the pack uses")
        .nth(1)
        .expect("docs/policy-pack.md has an aliases section");
    let section = section.split("\n## ").next().unwrap();
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    assert_eq!(documented, all_aliases, "aliases in docs/policy-pack.md");
}

#[test]
fn the_pack_compiles_in_every_file() {
    let on_disk: Vec<String> = cmk_documents().into_iter().map(|(f, _)| f).collect();
    let mut listed: Vec<String> = CMK_FILES.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "pack::CMK_FILES vs policies/cmk/");
    for (file, text) in CMK_FILES {
        let from_disk = std::fs::read_to_string(cmk_dir().join(file)).unwrap();
        assert_eq!(*text, from_disk, "{file}");
    }
}

#[test]
fn builtin_pack_loads_lists_and_finds() {
    let pack = Pack::builtin().unwrap();
    assert_eq!(
        pack.definitions().len(),
        CMK_FILES.len() + BUILTIN_FILES.len()
    );
    // 20 MIT built-in definitions and the EnforceCMK initiative.
    assert_eq!(BUILTIN_FILES.len(), 21);
    let ours: Vec<_> = pack
        .definitions()
        .iter()
        .filter(|d| d.source == PackSource::Cmkvault)
        .collect();
    assert_eq!(ours.len(), CMK_FILES.len());
    for d in &ours {
        assert_eq!(d.kind, DefinitionKind::Policy);
        assert!(d.default_effect.is_some(), "{}", d.name);
        assert!(!d.description.is_empty());
    }

    // The strict profile: excludedKinds defaults to [] (the built-in's default excludes AIServices).
    let strict = pack.find("cmkvault-ai-services-cmk-strict").unwrap();
    assert_eq!(
        strict.json["properties"]["parameters"]["excludedKinds"]["defaultValue"],
        serde_json::json!([])
    );
    assert_eq!(strict.default_effect.as_deref(), Some("Audit"));
    // Its condition is the built-in 67121cc7's, when the built-ins are compiled in.
    if let Some(b) = pack.find("67121cc7-ff39-4ab8-b7e3-95b84dab487d") {
        assert_eq!(
            b.json["properties"]["policyRule"],
            strict.json["properties"]["policyRule"]
        );
        assert_eq!(b.source, PackSource::Builtin);
    }

    // Classification: a Deny with the tag name and values as parameters.
    let tags = pack.find("cmkvault-classified-data-requires-cmk").unwrap();
    assert_eq!(tags.default_effect.as_deref(), Some("Deny"));
    let params = &tags.json["properties"]["parameters"];
    assert_eq!(params["tagName"]["defaultValue"], "dataClassification");
    assert_eq!(
        params["tagValues"]["defaultValue"],
        serde_json::json!(["Confidential", "Regulated"])
    );

    // Find by name, id, file name, any case.
    let by_id = pack
        .find("/providers/cmkvault/policyDefinitions/CMKVAULT-CMK-KEY-EXPIRY")
        .unwrap();
    assert_eq!(by_id.name, "cmkvault-cmk-key-expiry");
    assert_eq!(by_id.mode.as_deref(), Some("Microsoft.KeyVault.Data"));
    assert_eq!(
        pack.find("cmkvault-cmk-key-expiry.json").unwrap().name,
        "cmkvault-cmk-key-expiry"
    );
    assert!(pack.find("no-such-rule").is_none());

    let metas = pack.rule_meta();
    assert_eq!(
        metas.len(),
        pack.definitions()
            .iter()
            .filter(|d| d.kind == DefinitionKind::Policy)
            .count()
    );
}

#[test]
fn loader_errors_name_the_file() {
    let e = parse_definition("x.json", "{not json", PackSource::User).unwrap_err();
    assert!(e.to_string().starts_with("x.json: not valid JSON"), "{e}");
    let e = parse_definition(
        "y.json",
        r#"{"name": "a", "id": "/a", "properties": {"displayName": "A"}}"#,
        PackSource::User,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "y.json: missing properties.policyRule");
    let e = parse_definition("z.json", r#"{"id": "/a"}"#, PackSource::User).unwrap_err();
    assert!(e.to_string().starts_with("z.json: missing name"), "{e}");
    let rule = r#"{"name": "a", "id": "/a", "properties": {"displayName": "A",
        "policyRule": {"if": {"field": "type", "equals": "x"}, "then": {"effect": "audit"}}}}"#;
    let ok = parse_definition("a.json", rule, PackSource::User).unwrap();
    assert_eq!(ok.default_effect.as_deref(), Some("audit"));
    let dup =
        Pack::from_files(&[("a.json", rule), ("b.json", rule)], PackSource::User).unwrap_err();
    assert_eq!(
        dup.to_string(),
        "b.json: definition \"a\" is also in a.json"
    );
    // An initiative is recognised by its policyDefinitions.
    let set = r#"{"name": "s", "id": "/providers/Microsoft.Authorization/policySetDefinitions/s",
        "properties": {"displayName": "S", "policyDefinitions": [],
        "parameters": {"effect": {"type": "String", "defaultValue": "Deny"}}}}"#;
    let s = parse_definition("s.json", set, PackSource::User).unwrap();
    assert_eq!(s.kind, DefinitionKind::Initiative);
    assert_eq!(s.default_effect.as_deref(), Some("Deny"));
}
