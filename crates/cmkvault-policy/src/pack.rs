//! The built-in rule pack: the MIT-licensed Azure Policy built-ins (`policies/builtin/`, copied
//! unchanged from Azure/azure-policy) and cmkvault's own CMK rules (`policies/cmk/`), written in
//! the same policy definition language. Both are compiled into the binary.
//!
//! [`Pack::builtin`] parses them; [`Pack::from_files`] parses any list of `(file name, JSON
//! text)` pairs (the same loader, for files read at run time). A [`PackDefinition`] keeps the
//! document as published (what the engine evaluates and `cmkvault policy show` prints) plus
//! the envelope fields `cmkvault policy list` shows.

use serde_json::Value;

use crate::error::PolicyError;
use crate::expr::{self, Scope};
use crate::report::RuleMeta;

/// Where a pack definition comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackSource {
    /// A Microsoft built-in from Azure/azure-policy (MIT), unchanged.
    Builtin,
    /// One of cmkvault's own rules (`policies/cmk/`).
    Cmkvault,
    /// A file given by the user (`--policy FILE|DIR`).
    User,
}

impl PackSource {
    /// `builtin`, `cmkvault` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            PackSource::Builtin => "builtin",
            PackSource::Cmkvault => "cmkvault",
            PackSource::User => "user",
        }
    }
}

/// A policy definition or an initiative (policy set definition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DefinitionKind {
    /// `.../policyDefinitions/...`: a `policyRule`.
    Policy,
    /// `.../policySetDefinitions/...`: `policyDefinitions` referencing definitions by id.
    Initiative,
}

/// One document of a pack, parsed just enough to list and find it.
#[derive(Clone, Debug)]
pub struct PackDefinition {
    /// The file name it was read from.
    pub file: String,
    /// Where it comes from.
    pub source: PackSource,
    /// Policy or initiative.
    pub kind: DefinitionKind,
    /// The definition's `name` (a GUID for built-ins, a `cmkvault-…` slug for ours).
    pub name: String,
    /// The definition's `id`.
    pub id: String,
    /// `properties.displayName`.
    pub display_name: String,
    /// `properties.description` (empty when absent).
    pub description: String,
    /// `properties.mode` (`Indexed`, `All`, `Microsoft.KeyVault.Data`; `None` for initiatives).
    pub mode: Option<String>,
    /// The effect in force without an assignment: `then.effect` with parameters at their
    /// defaults (for an initiative, its `effect` parameter's default). `None` when the effect
    /// depends on a parameter without a default.
    pub default_effect: Option<String>,
    /// The document, parsed.
    pub json: Value,
    /// The document's text exactly as read (what `cmkvault policy show` prints).
    pub text: String,
}

impl PackDefinition {
    /// The definition as SARIF rule metadata (see [`crate::report::to_sarif`]).
    pub fn rule_meta(&self) -> RuleMeta {
        RuleMeta {
            name: self.name.clone(),
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            default_effect: self.default_effect.clone(),
            source: Some(self.source),
        }
    }
}

/// A set of definitions and initiatives.
#[derive(Clone, Debug, Default)]
pub struct Pack {
    definitions: Vec<PackDefinition>,
}

/// Include `(file name, text)` pairs from a folder under `policies/`.
macro_rules! pack_files {
    ($dir:literal; $($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../policies/", $dir, "/", $file)))),*]
    };
}

/// cmkvault's own rules (`policies/cmk/`). A test checks this lists every file of the folder.
pub const CMK_FILES: &[(&str, &str)] = pack_files!("cmk";
    "cmkvault-ai-services-cmk-strict.json",
    "cmkvault-ml-workspace-cmk.json",
    "cmkvault-ai-search-cmk.json",
    "cmkvault-ai-services-storage-cmk.json",
    "cmkvault-ml-workspace-storage-cmk.json",
    "cmkvault-ml-workspace-registry-cmk.json",
    "cmkvault-ml-workspace-cosmos-cmk.json",
    "cmkvault-key-vault-soft-delete-purge-protection.json",
    "cmkvault-key-vault-access-policy-least-privilege.json",
    "cmkvault-ai-managed-identity.json",
    "cmkvault-cmk-key-rsa-2048.json",
    "cmkvault-cmk-key-expiry.json",
    "cmkvault-cmk-key-rotation-policy.json",
    "cmkvault-ai-services-key-vault-same-region.json",
    "cmkvault-ml-workspace-key-vault-same-region.json",
    "cmkvault-storage-key-vault-same-region.json",
    "cmkvault-classified-data-requires-cmk.json",
);

/// The MIT built-ins as `(file name, text)` pairs, compiled in from `policies/builtin/`.
pub const BUILTIN_FILES: &[(&str, &str)] = pack_files!("builtin";
    "built-in-policies__policyDefinitions__Azure_Ai_Services__DisableLocalAuth_Audit.json",
    "built-in-policies__policyDefinitions__Azure_Ai_Services__NetworkAcls_Audit.json",
    "built-in-policies__policyDefinitions__Cognitive_Services__CustomerManagedKey_Audit.json",
    "built-in-policies__policyDefinitions__Cognitive_Services__ManagedIdentity_Audit.json",
    "built-in-policies__policyDefinitions__Container_Registry__ACR_CMKEncryptionEnabled_Audit.json",
    "built-in-policies__policyDefinitions__Cosmos_DB__Cosmos_CMK_Deny.json",
    "built-in-policies__policyDefinitions__Key_Vault__FirewallEnabled_Audit.json",
    "built-in-policies__policyDefinitions__Key_Vault__Keys_ExpirationSet.json",
    "built-in-policies__policyDefinitions__Key_Vault__Keys_KeyRotationPolicy_MaximumDaysToRotate.json",
    "built-in-policies__policyDefinitions__Key_Vault__Keys_RSA_MinimumKeySize.json",
    "built-in-policies__policyDefinitions__Key_Vault__PublicNetworkAccess_Audit.json",
    "built-in-policies__policyDefinitions__Key_Vault__Recoverable_Audit.json",
    "built-in-policies__policyDefinitions__Key_Vault__Should_Use_RBAC.json",
    "built-in-policies__policyDefinitions__Key_Vault__SoftDeleteMustBeEnabled_Audit.json",
    "built-in-policies__policyDefinitions__Machine_Learning__Workspace_CMKEnabled_Audit.json",
    "built-in-policies__policyDefinitions__Machine_Learning__Workspace_CMKEnabled_Audit_V2.json",
    "built-in-policies__policyDefinitions__Machine_Learning__Workspace_UAIEnabled_Audit.json",
    "built-in-policies__policyDefinitions__Search__CMK_Audit.json",
    "built-in-policies__policyDefinitions__Search__CMK_Deny.json",
    "built-in-policies__policyDefinitions__Storage__StorageAccountCustomerManagedKeyEnabled_Audit.json",
    "built-in-policies__policySetDefinitions__Sovereignty__EnforceCMK.json",
);

impl Pack {
    /// The built-in pack: the MIT built-ins, then cmkvault's rules.
    pub fn builtin() -> Result<Pack, PolicyError> {
        let mut pack = Pack::from_files(BUILTIN_FILES, PackSource::Builtin)?;
        pack.extend(Pack::from_files(CMK_FILES, PackSource::Cmkvault)?)?;
        Ok(pack)
    }

    /// Parses `(file name, JSON text)` pairs. A malformed document or a `name` that appears
    /// twice is an error naming the file.
    pub fn from_files(files: &[(&str, &str)], source: PackSource) -> Result<Pack, PolicyError> {
        let mut pack = Pack::default();
        for (file, text) in files {
            pack.push(parse_definition(file, text, source)?)?;
        }
        Ok(pack)
    }

    /// Adds another pack's documents after this one's (names must stay unique).
    pub fn extend(&mut self, other: Pack) -> Result<(), PolicyError> {
        for d in other.definitions {
            self.push(d)?;
        }
        Ok(())
    }

    fn push(&mut self, d: PackDefinition) -> Result<(), PolicyError> {
        if let Some(prev) = self.definitions.iter().find(|p| {
            p.kind == d.kind
                && (p.name.eq_ignore_ascii_case(&d.name) || p.id.eq_ignore_ascii_case(&d.id))
        }) {
            return Err(PolicyError::Definition(format!(
                "{}: definition {:?} is also in {}",
                d.file, d.name, prev.file
            )));
        }
        self.definitions.push(d);
        Ok(())
    }

    /// Every document, in load order.
    pub fn definitions(&self) -> &[PackDefinition] {
        &self.definitions
    }

    /// The document whose `name`, `id` or file name (with or without `.json`) is `query`,
    /// case-insensitively.
    pub fn find(&self, query: &str) -> Option<&PackDefinition> {
        let q = query.trim();
        self.definitions.iter().find(|d| {
            d.name.eq_ignore_ascii_case(q)
                || d.id.eq_ignore_ascii_case(q)
                || d.file.eq_ignore_ascii_case(q)
                || d.file
                    .strip_suffix(".json")
                    .is_some_and(|stem| stem.eq_ignore_ascii_case(q))
        })
    }

    /// SARIF rule metadata for every policy definition (initiatives are not rules).
    pub fn rule_meta(&self) -> Vec<RuleMeta> {
        self.definitions
            .iter()
            .filter(|d| d.kind == DefinitionKind::Policy)
            .map(PackDefinition::rule_meta)
            .collect()
    }
}

/// Parses one policy definition or initiative document and checks its envelope: `name`, `id`,
/// `properties.displayName`, and `properties.policyRule` with `if` and `then.effect` (or, for an
/// initiative, `properties.policyDefinitions`).
pub fn parse_definition(
    file: &str,
    text: &str,
    source: PackSource,
) -> Result<PackDefinition, PolicyError> {
    let bad = |what: String| PolicyError::Definition(format!("{file}: {what}"));
    let json: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let str_at = |ptr: &str| json.pointer(ptr).and_then(Value::as_str);
    let required = |ptr: &str| -> Result<String, PolicyError> {
        match str_at(ptr) {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            _ => Err(bad(format!(
                "missing {} (a policy definition needs name, id, properties.displayName and properties.policyRule)",
                ptr.trim_start_matches('/').replace('/', ".")
            ))),
        }
    };
    let name = required("/name")?;
    let id = required("/id")?;
    let display_name = required("/properties/displayName")?;
    let description = str_at("/properties/description").unwrap_or("").to_string();
    let props = &json["properties"];
    let kind = if props.get("policyDefinitions").is_some()
        || id.to_ascii_lowercase().contains("/policysetdefinitions/")
    {
        DefinitionKind::Initiative
    } else {
        DefinitionKind::Policy
    };
    let default_effect = match kind {
        DefinitionKind::Policy => {
            let rule = props
                .get("policyRule")
                .filter(|r| r.is_object())
                .ok_or_else(|| bad("missing properties.policyRule".into()))?;
            if !rule.get("if").is_some_and(Value::is_object) {
                return Err(bad("properties.policyRule has no \"if\" condition".into()));
            }
            let effect = rule
                .pointer("/then/effect")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("properties.policyRule.then.effect is missing".into()))?;
            default_effect(effect, props.get("parameters"))
        }
        DefinitionKind::Initiative => {
            if !props.get("policyDefinitions").is_some_and(Value::is_array) {
                return Err(bad("properties.policyDefinitions is not an array".into()));
            }
            props
                .pointer("/parameters/effect/defaultValue")
                .and_then(Value::as_str)
                .map(str::to_string)
        }
    };
    Ok(PackDefinition {
        file: file.to_string(),
        source,
        kind,
        name,
        id,
        display_name,
        description,
        mode: str_at("/properties/mode").map(str::to_string),
        default_effect,
        json,
        text: text.to_string(),
    })
}

/// `then.effect` with every parameter at its default; `None` if that is not a string.
fn default_effect(effect: &str, parameters: Option<&Value>) -> Option<String> {
    struct Defaults<'a>(Option<&'a Value>);
    impl Scope for Defaults<'_> {
        fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>> {
            if name != "parameters" {
                return None;
            }
            let wanted = args.first().and_then(Value::as_str).unwrap_or("");
            let found = self.0.and_then(Value::as_object).and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(wanted))
                    .and_then(|(_, p)| p.get("defaultValue"))
            });
            Some(
                found.cloned().ok_or_else(|| {
                    PolicyError::Eval(format!("parameter {wanted:?} has no default"))
                }),
            )
        }
    }
    match expr::eval_str(effect, &Defaults(parameters)) {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn default_effect_reads_parameter_defaults_case_insensitively() {
        let params = serde_json::json!({"Effect": {"type": "String", "defaultValue": "Deny"}});
        assert_eq!(
            default_effect("[parameters('effect')]", Some(&params)).as_deref(),
            Some("Deny")
        );
        assert_eq!(default_effect("audit", None).as_deref(), Some("audit"));
        let no_default = serde_json::json!({"effect": {"type": "String"}});
        assert_eq!(
            default_effect("[parameters('effect')]", Some(&no_default)),
            None
        );
    }
}
