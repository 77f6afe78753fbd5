// Test code may unwrap: a panic is a test failure with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

//! `cmkvault policy list` / `cmkvault policy show NAME` on the binary.

mod common;

use common::{cmkvault, one_error_line, run, success};
use serde_json::Value;
use tempfile::TempDir;

fn policy(args: &[&str], scratch: &TempDir) -> common::Output {
    let mut all = vec!["policy"];
    all.extend_from_slice(args);
    run(cmkvault(&all), scratch.path())
}

#[test]
fn policy_list_shows_both_sources() {
    let scratch = TempDir::new().unwrap();
    let out = success(policy(&["list"], &scratch), "policy list");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "KIND", "EFFECT", "SOURCE", "DISPLAY", "NAME"]
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"))
    };
    let strict = row("cmkvault-ai-services-cmk-strict");
    assert_eq!(&strict[1..4], ["policy", "Audit", "cmkvault"]);
    assert!(lines
        .iter()
        .any(|l| l.starts_with("cmkvault-ai-services-cmk-strict ")
            && l.ends_with("with a customer-managed key (strict)")));
    assert_eq!(
        &row("cmkvault-classified-data-requires-cmk")[1..4],
        ["policy", "Deny", "cmkvault"]
    );
    assert_eq!(
        &row("cmkvault-ml-workspace-storage-cmk")[1..4],
        ["policy", "AuditIfNotExists", "cmkvault"]
    );
    let ours = rows.iter().filter(|r| r[3] == "cmkvault").count();
    assert_eq!(ours, 17, "{out}");
    // The built-ins appear once they are compiled in (pack::BUILTIN_FILES): then all 21.
    let builtins: Vec<_> = rows.iter().filter(|r| r[3] == "builtin").collect();
    assert!(builtins.is_empty() || builtins.len() == 21, "{out}");
    if !builtins.is_empty() {
        assert_eq!(
            &row("67121cc7-ff39-4ab8-b7e3-95b84dab487d")[1..4],
            ["policy", "Audit", "builtin"]
        );
        assert_eq!(
            &row("f15f4d95-c59c-4395-9317-be6978d0743f")[1..4],
            ["initiative", "Deny", "builtin"]
        );
    }
    // Columns are aligned: SOURCE starts at the same place on every line.
    let at = lines[0].find("SOURCE").unwrap();
    for l in &lines[1..] {
        let source: String = l.chars().skip(at).take_while(|c| *c != ' ').collect();
        assert!(["cmkvault", "builtin"].contains(&source.as_str()), "{l}");
    }
}

#[test]
fn policy_show_prints_the_definition_by_name_id_or_file() {
    let scratch = TempDir::new().unwrap();
    let by_name = success(
        policy(
            &["show", "cmkvault-key-vault-access-policy-least-privilege"],
            &scratch,
        ),
        "policy show",
    );
    let doc: Value = serde_json::from_str(&by_name).unwrap();
    assert_eq!(
        doc["name"],
        "cmkvault-key-vault-access-policy-least-privilege"
    );
    assert_eq!(
        doc["properties"]["parameters"]["allowedKeyPermissions"]["defaultValue"],
        serde_json::json!(["get", "wrapKey", "unwrapKey"])
    );
    // Pretty (as published): indented, one key per line, the envelope first.
    assert!(by_name.starts_with("{\n  \"properties\": {\n    \"displayName\": "));
    assert!(by_name.ends_with("}\n"));
    let source = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../cmkvault-policy/policies/cmk/cmkvault-key-vault-access-policy-least-privilege.json",
    ))
    .unwrap();
    assert_eq!(by_name, source);

    let by_id = success(
        policy(
            &[
                "show",
                "/providers/cmkvault/policyDefinitions/CMKVAULT-KEY-VAULT-ACCESS-POLICY-LEAST-PRIVILEGE",
            ],
            &scratch,
        ),
        "policy show by id",
    );
    assert_eq!(by_id, by_name);
    let by_file = success(
        policy(
            &[
                "show",
                "cmkvault-key-vault-access-policy-least-privilege.json",
            ],
            &scratch,
        ),
        "policy show by file",
    );
    assert_eq!(by_file, by_name);
}

#[test]
fn policy_show_of_an_unknown_name_is_one_error_line() {
    let scratch = TempDir::new().unwrap();
    let line = one_error_line(policy(&["show", "no-such-rule"], &scratch), "show unknown");
    assert_eq!(
        line,
        "error: policy \"no-such-rule\": no such definition in the built-in rule pack (`cmkvault policy list` shows the names)"
    );
    let line = one_error_line(policy(&["show"], &scratch), "show without a name");
    assert!(line.contains("NAME"), "{line}");
}
