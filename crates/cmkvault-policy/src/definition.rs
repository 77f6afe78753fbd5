//! Policy definitions, initiatives (policy set definitions) and assignments, read as published.
//!
//! Accepted shapes:
//! - a definition or initiative as in Azure/azure-policy and the REST API: `{"properties":
//!   {...}, "id": ..., "name": ...}`;
//! - the same flattened, as `az policy definition show` / `az policy set-definition show` print
//!   it (`policyRule` / `policyDefinitions`, `parameters`, `mode`, ... at the top level);
//! - a list of those (`[...]`, `{"value": [...]}`), as `... list` prints, via [`parse_documents`].
//!
//! A document without `name` takes its origin's file stem; without `id`, the built-in id shape
//! `/providers/Microsoft.Authorization/policyDefinitions/<name>` (`policySetDefinitions` for
//! initiatives). A definition without `mode` is `Indexed` (the REST API's default).
//!
//! Parameters: `type` is read case-insensitively (`String`, `Array`, `Object`, `Boolean`,
//! `Integer`, `Float`, `DateTime`); a value must have that type (numeric strings are accepted for
//! numbers, `"true"`/`"false"` for booleans) and, when `allowedValues` is given, be one of them
//! compared case-insensitively (each element, for an array). A parameter with neither a value
//! nor a `defaultValue` is not an error: it evaluates as an unknown value, so every result
//! that depends on it is `Unknown` naming the parameter (the effect parameter is the exception:
//! without an effect the definition cannot be evaluated at all, an error).

use serde_json::{Map, Value};

use crate::condition::loose_eq;
use crate::error::PolicyError;
use crate::expr::get_ci;
use crate::resource::unknown_reason;

/// A parameter's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParameterType {
    /// `String`.
    String,
    /// `Array`.
    Array,
    /// `Object`.
    Object,
    /// `Boolean`.
    Boolean,
    /// `Integer`.
    Integer,
    /// `Float`.
    Float,
    /// `DateTime`.
    DateTime,
}

impl ParameterType {
    /// Parses a type name, case-insensitively.
    pub fn parse(s: &str) -> Option<ParameterType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "string" => ParameterType::String,
            "array" => ParameterType::Array,
            "object" => ParameterType::Object,
            "boolean" | "bool" => ParameterType::Boolean,
            "integer" | "int" => ParameterType::Integer,
            "float" => ParameterType::Float,
            "datetime" => ParameterType::DateTime,
            _ => return None,
        })
    }
}

/// A declared parameter of a definition or initiative.
#[derive(Clone, Debug)]
pub struct ParameterDefinition {
    /// The name, as declared.
    pub name: String,
    /// The declared type.
    pub kind: ParameterType,
    /// `defaultValue`, when declared.
    pub default_value: Option<Value>,
    /// `allowedValues`, when declared.
    pub allowed_values: Option<Vec<Value>>,
    /// `metadata.displayName`.
    pub display_name: Option<String>,
    /// `metadata.description`.
    pub description: Option<String>,
}

/// A policy definition.
#[derive(Clone, Debug)]
pub struct PolicyDefinition {
    /// `name` (a GUID for built-ins).
    pub name: String,
    /// `id` (`/providers/Microsoft.Authorization/policyDefinitions/<name>` for built-ins).
    pub id: String,
    /// `displayName`.
    pub display_name: String,
    /// `description`.
    pub description: String,
    /// `mode` as written (`All`, `Indexed`, `Microsoft.KeyVault.Data`).
    pub mode: String,
    /// `version` (or `metadata.version`).
    pub version: Option<String>,
    /// `metadata.category`.
    pub category: Option<String>,
    /// `policyType` (`BuiltIn`, `Custom`, ...).
    pub policy_type: Option<String>,
    /// `metadata.deprecated`.
    pub deprecated: bool,
    /// `metadata.preview`.
    pub preview: bool,
    /// The declared parameters, in order.
    pub parameters: Vec<ParameterDefinition>,
    /// `policyRule` (`if`, `then`).
    pub policy_rule: Value,
    /// Where it was read from (a file name, for messages).
    pub origin: String,
}

/// A member of an initiative.
#[derive(Clone, Debug)]
pub struct PolicyReference {
    /// `policyDefinitionReferenceId`.
    pub reference_id: Option<String>,
    /// `policyDefinitionId`.
    pub definition_id: String,
    /// The member's parameter values (`{"effect": {"value": "[parameters('effect')]"}}` →
    /// `effect` → `"[parameters('effect')]"`), evaluated against the initiative's parameters.
    pub parameters: Map<String, Value>,
}

impl PolicyReference {
    /// The definition name the id ends with (a GUID for built-ins).
    pub fn definition_name(&self) -> &str {
        self.definition_id
            .rsplit('/')
            .next()
            .unwrap_or(&self.definition_id)
    }
}

/// An initiative (policy set definition).
#[derive(Clone, Debug)]
pub struct PolicySetDefinition {
    /// `name`.
    pub name: String,
    /// `id`.
    pub id: String,
    /// `displayName`.
    pub display_name: String,
    /// `description`.
    pub description: String,
    /// `version` (or `metadata.version`).
    pub version: Option<String>,
    /// `metadata.category`.
    pub category: Option<String>,
    /// `policyType`.
    pub policy_type: Option<String>,
    /// The initiative's own parameters.
    pub parameters: Vec<ParameterDefinition>,
    /// `policyDefinitions`, in order.
    pub members: Vec<PolicyReference>,
    /// Where it was read from.
    pub origin: String,
}

/// A loaded document: a definition or an initiative.
#[derive(Clone, Debug)]
pub enum PolicyDocument {
    /// A policy definition.
    Definition(PolicyDefinition),
    /// An initiative.
    Initiative(PolicySetDefinition),
}

impl PolicyDocument {
    /// The document's `name`.
    pub fn name(&self) -> &str {
        match self {
            PolicyDocument::Definition(d) => &d.name,
            PolicyDocument::Initiative(s) => &s.name,
        }
    }

    /// The document's `id`.
    pub fn id(&self) -> &str {
        match self {
            PolicyDocument::Definition(d) => &d.id,
            PolicyDocument::Initiative(s) => &s.id,
        }
    }

    /// The document's display name.
    pub fn display_name(&self) -> &str {
        match self {
            PolicyDocument::Definition(d) => &d.display_name,
            PolicyDocument::Initiative(s) => &s.display_name,
        }
    }

    /// The declared parameters.
    pub fn parameters(&self) -> &[ParameterDefinition] {
        match self {
            PolicyDocument::Definition(d) => &d.parameters,
            PolicyDocument::Initiative(s) => &s.parameters,
        }
    }

    /// Where it was read from.
    pub fn origin(&self) -> &str {
        match self {
            PolicyDocument::Definition(d) => &d.origin,
            PolicyDocument::Initiative(s) => &s.origin,
        }
    }
}

fn def_err(origin: &str, msg: impl std::fmt::Display) -> PolicyError {
    PolicyError::Definition(format!("{origin}: {msg}"))
}

fn str_field(m: &Map<String, Value>, k: &str) -> Option<String> {
    get_ci(m, k).and_then(Value::as_str).map(str::to_string)
}

fn file_stem(origin: &str) -> String {
    let base = origin.rsplit(['/', '\\']).next().unwrap_or(origin);
    base.strip_suffix(".json").unwrap_or(base).to_string()
}

/// Parses one definition or initiative (see the module documentation for the shapes).
pub fn parse_document(json: &Value, origin: &str) -> Result<PolicyDocument, PolicyError> {
    let Value::Object(top) = json else {
        return Err(def_err(origin, "a policy document must be a JSON object"));
    };
    let props = match get_ci(top, "properties") {
        Some(Value::Object(p))
            if get_ci(p, "policyRule").is_some() || get_ci(p, "policyDefinitions").is_some() =>
        {
            p
        }
        _ => top,
    };
    let is_def = get_ci(props, "policyRule").is_some();
    let is_set = get_ci(props, "policyDefinitions").is_some();
    if is_def == is_set {
        return Err(def_err(
            origin,
            "not a policy definition (no policyRule) or initiative (no policyDefinitions)",
        ));
    }
    let name = str_field(top, "name")
        .or_else(|| str_field(props, "name"))
        .unwrap_or_else(|| file_stem(origin));
    let kind = if is_def {
        "policyDefinitions"
    } else {
        "policySetDefinitions"
    };
    let id = str_field(top, "id")
        .unwrap_or_else(|| format!("/providers/Microsoft.Authorization/{kind}/{name}"));
    let meta = get_ci(props, "metadata").and_then(Value::as_object);
    let meta_str = |k: &str| meta.and_then(|m| str_field(m, k));
    let meta_bool = |k: &str| {
        meta.and_then(|m| get_ci(m, k))
            .is_some_and(|v| v.as_bool() == Some(true))
    };
    let display_name = str_field(props, "displayName").unwrap_or_else(|| name.clone());
    let description = str_field(props, "description").unwrap_or_default();
    let version = str_field(props, "version").or_else(|| meta_str("version"));
    let policy_type = str_field(props, "policyType");
    let parameters = parse_parameters(get_ci(props, "parameters"), origin)?;
    if is_def {
        let rule = get_ci(props, "policyRule").cloned().unwrap_or(Value::Null);
        let Value::Object(r) = &rule else {
            return Err(def_err(origin, "policyRule must be an object"));
        };
        if get_ci(r, "if").is_none() {
            return Err(def_err(origin, "policyRule has no \"if\""));
        }
        let then = get_ci(r, "then").and_then(Value::as_object);
        if then.and_then(|t| get_ci(t, "effect")).is_none() {
            return Err(def_err(origin, "policyRule has no \"then.effect\""));
        }
        let mode = match get_ci(props, "mode") {
            None | Some(Value::Null) => "Indexed".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(def_err(origin, "mode must be a string")),
        };
        Ok(PolicyDocument::Definition(PolicyDefinition {
            name,
            id,
            display_name,
            description,
            mode,
            version,
            category: meta_str("category"),
            policy_type,
            deprecated: meta_bool("deprecated"),
            preview: meta_bool("preview"),
            parameters,
            policy_rule: rule,
            origin: origin.to_string(),
        }))
    } else {
        let Some(Value::Array(list)) = get_ci(props, "policyDefinitions") else {
            return Err(def_err(origin, "policyDefinitions must be an array"));
        };
        let mut members = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let Value::Object(mo) = m else {
                return Err(def_err(
                    origin,
                    format!("policyDefinitions[{i}] is not an object"),
                ));
            };
            let Some(definition_id) = str_field(mo, "policyDefinitionId") else {
                return Err(def_err(
                    origin,
                    format!("policyDefinitions[{i}] has no policyDefinitionId"),
                ));
            };
            let parameters = match get_ci(mo, "parameters") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(p)) => unwrap_values(p),
                Some(_) => {
                    return Err(def_err(
                        origin,
                        format!("policyDefinitions[{i}].parameters must be an object"),
                    ))
                }
            };
            members.push(PolicyReference {
                reference_id: str_field(mo, "policyDefinitionReferenceId"),
                definition_id,
                parameters,
            });
        }
        Ok(PolicyDocument::Initiative(PolicySetDefinition {
            name,
            id,
            display_name,
            description,
            version,
            category: meta_str("category"),
            policy_type,
            parameters,
            members,
            origin: origin.to_string(),
        }))
    }
}

/// Parses a file that holds one document or a list of them (`[...]`, `{"value": [...]}`).
pub fn parse_documents(json: &Value, origin: &str) -> Result<Vec<PolicyDocument>, PolicyError> {
    let list = match json {
        Value::Array(a) => a,
        Value::Object(m) if m.len() == 1 && matches!(get_ci(m, "value"), Some(Value::Array(_))) => {
            match get_ci(m, "value") {
                Some(Value::Array(a)) => a,
                _ => return Ok(Vec::new()),
            }
        }
        other => return parse_document(other, origin).map(|d| vec![d]),
    };
    list.iter()
        .enumerate()
        .map(|(i, d)| parse_document(d, &format!("{origin}[{i}]")))
        .collect()
}

fn parse_parameters(
    v: Option<&Value>,
    origin: &str,
) -> Result<Vec<ParameterDefinition>, PolicyError> {
    let m = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(def_err(origin, "parameters must be an object")),
    };
    let mut out = Vec::with_capacity(m.len());
    for (name, p) in m {
        let Value::Object(po) = p else {
            return Err(def_err(
                origin,
                format!("parameter {name} must be an object"),
            ));
        };
        let kind = match str_field(po, "type") {
            Some(t) => ParameterType::parse(&t)
                .ok_or_else(|| def_err(origin, format!("parameter {name}: unknown type {t:?}")))?,
            None => return Err(def_err(origin, format!("parameter {name} has no type"))),
        };
        let allowed_values = match get_ci(po, "allowedValues") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => {
                return Err(def_err(
                    origin,
                    format!("parameter {name}: allowedValues must be an array"),
                ))
            }
        };
        let meta = get_ci(po, "metadata").and_then(Value::as_object);
        let def = ParameterDefinition {
            name: name.clone(),
            kind,
            default_value: get_ci(po, "defaultValue").cloned(),
            allowed_values,
            display_name: meta.and_then(|m| str_field(m, "displayName")),
            description: meta.and_then(|m| str_field(m, "description")),
        };
        if let Some(d) = &def.default_value {
            check_value(&def, d)
                .map_err(|why| def_err(origin, format!("parameter {name}: defaultValue {why}")))?;
        }
        out.push(def);
    }
    Ok(out)
}

/// `{name: {value: v}}` → `{name: v}` (a plain `{name: v}` stays as it is).
fn unwrap_values(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| {
            let inner = match v {
                Value::Object(o) if o.len() == 1 => get_ci(o, "value").cloned(),
                _ => None,
            };
            (k.clone(), inner.unwrap_or_else(|| v.clone()))
        })
        .collect()
}

/// Checks (and coerces) a parameter value against its declaration: the type, then
/// `allowedValues` (case-insensitive; every element for an array). Returns the value to use.
pub(crate) fn check_value(def: &ParameterDefinition, v: &Value) -> Result<Value, String> {
    if unknown_reason(v).is_some() {
        return Ok(v.clone());
    }
    let coerced = match (def.kind, v) {
        (ParameterType::String, Value::String(_))
        | (ParameterType::Array, Value::Array(_))
        | (ParameterType::Object, Value::Object(_))
        | (ParameterType::Boolean, Value::Bool(_))
        | (ParameterType::Float, Value::Number(_)) => v.clone(),
        (ParameterType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => v.clone(),
        (ParameterType::Integer, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Value::from(i),
            Err(_) => return Err(format!("{v} is not an integer")),
        },
        (ParameterType::Float, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) => Value::from(f),
            Err(_) => return Err(format!("{v} is not a number")),
        },
        (ParameterType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => {
            Value::Bool(true)
        }
        (ParameterType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => {
            Value::Bool(false)
        }
        (ParameterType::DateTime, Value::String(s)) => {
            if crate::time::parse_datetime(s).is_none() {
                return Err(format!("{v} is not a date-time"));
            }
            v.clone()
        }
        _ => return Err(format!("{v} is not of type {:?}", def.kind)),
    };
    if let Some(allowed) = &def.allowed_values {
        let ok = |x: &Value| allowed.iter().any(|a| loose_eq(x, a, false));
        let fine = ok(&coerced) || matches!(&coerced, Value::Array(items) if items.iter().all(ok));
        if !fine {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!(
                "{v} is not one of the allowedValues [{}]",
                list.join(", ")
            ));
        }
    }
    Ok(coerced)
}

/// Parameter values to apply: an assignment file.
#[derive(Clone, Debug, Default)]
pub struct Assignment {
    /// `name` of the assignment, when given.
    pub name: Option<String>,
    /// `policyDefinitionId`: the one definition or initiative it assigns. Without it, every
    /// loaded document that declares a parameter of the assignment takes its value.
    pub policy_definition_id: Option<String>,
    /// Parameter name → value.
    pub parameters: Map<String, Value>,
    /// Where it was read from.
    pub origin: String,
}

impl Assignment {
    /// Parses an assignment file: the REST shape (`{"properties": {"parameters": {name:
    /// {"value": v}}, "policyDefinitionId": ...}}`), the flattened shape of `az policy
    /// assignment show` (`parameters` and `policyDefinitionId` at the top level), an ARM
    /// parameter file (`{"parameters": {name: {"value": v}}}`), or a plain map (`{name: v}` or
    /// `{name: {"value": v}}`).
    pub fn parse(json: &Value, origin: &str) -> Result<Assignment, PolicyError> {
        let Value::Object(top) = json else {
            return Err(def_err(origin, "an assignment must be a JSON object"));
        };
        let body = match get_ci(top, "properties") {
            Some(Value::Object(p)) => p,
            _ => top,
        };
        let params = get_ci(body, "parameters");
        let structured = get_ci(top, "properties").is_some_and(Value::is_object)
            || get_ci(body, "policyDefinitionId").is_some()
            || matches!(params, Some(Value::Object(_)));
        let (parameters, definition) = if structured {
            let parameters = match params {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(p)) => unwrap_values(p),
                Some(_) => return Err(def_err(origin, "parameters must be an object")),
            };
            (parameters, str_field(body, "policyDefinitionId"))
        } else {
            (unwrap_values(top), None)
        };
        Ok(Assignment {
            name: str_field(top, "name"),
            policy_definition_id: definition,
            parameters,
            origin: origin.to_string(),
        })
    }

    /// An assignment of these parameter values to every loaded document that declares them.
    pub fn from_parameters(parameters: Map<String, Value>) -> Assignment {
        Assignment {
            parameters,
            origin: "parameters".into(),
            ..Assignment::default()
        }
    }

    /// The assignment targets this document (by `policyDefinitionId`; untargeted ones target all).
    pub fn targets(&self, doc: &PolicyDocument) -> bool {
        match &self.policy_definition_id {
            None => true,
            Some(id) => {
                id.eq_ignore_ascii_case(doc.id())
                    || id
                        .rsplit('/')
                        .next()
                        .is_some_and(|n| n.eq_ignore_ascii_case(doc.name()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn flattened_cli_shape_and_defaults() {
        let d = parse_document(
            &json!({"displayName": "x", "policyRule": {"if": {"field": "type", "equals": "a"},
                    "then": {"effect": "audit"}}, "parameters": {"p": {"type": "integer"}}}),
            "dir/my-rule.json",
        )
        .unwrap();
        let PolicyDocument::Definition(d) = d else {
            panic!()
        };
        assert_eq!(d.name, "my-rule");
        assert_eq!(d.mode, "Indexed");
        assert_eq!(
            d.id,
            "/providers/Microsoft.Authorization/policyDefinitions/my-rule"
        );
        assert_eq!(d.parameters[0].kind, ParameterType::Integer);
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse_document(&json!({"properties": {}}), "f").is_err());
        assert!(
            parse_document(&json!({"policyRule": {"then": {"effect": "audit"}}}), "f").is_err()
        );
        assert!(parse_document(
            &json!({"policyRule": {"if": {}, "then": {"effect": "audit"}},
                    "parameters": {"p": {"type": "Strange"}}}),
            "f"
        )
        .is_err());
    }

    #[test]
    fn assignment_shapes() {
        let rest = Assignment::parse(
            &json!({"properties": {"parameters": {"effect": {"value": "Deny"}},
                    "policyDefinitionId": "/providers/x/policySetDefinitions/abc"}}),
            "a",
        )
        .unwrap();
        assert_eq!(rest.parameters["effect"], json!("Deny"));
        assert!(rest.policy_definition_id.is_some());
        let cli = Assignment::parse(
            &json!({"parameters": {"effect": {"value": "Audit"}}, "name": "n"}),
            "a",
        )
        .unwrap();
        assert_eq!(cli.parameters["effect"], json!("Audit"));
        let plain =
            Assignment::parse(&json!({"effect": "Audit", "kinds": {"value": []}}), "a").unwrap();
        assert_eq!(plain.parameters["effect"], json!("Audit"));
        assert_eq!(plain.parameters["kinds"], json!([]));
    }

    #[test]
    fn values_are_checked() {
        let p = ParameterDefinition {
            name: "effect".into(),
            kind: ParameterType::String,
            default_value: None,
            allowed_values: Some(vec![json!("Audit"), json!("Deny")]),
            display_name: None,
            description: None,
        };
        assert_eq!(check_value(&p, &json!("deny")).unwrap(), json!("deny"));
        assert!(check_value(&p, &json!("Modify")).is_err());
        assert!(check_value(&p, &json!(1)).is_err());
        let n = ParameterDefinition {
            kind: ParameterType::Integer,
            allowed_values: Some(vec![json!(2048), json!(3072)]),
            ..p.clone()
        };
        assert_eq!(check_value(&n, &json!("3072")).unwrap(), json!(3072));
        assert!(check_value(&n, &json!(1024)).is_err());
        let a = ParameterDefinition {
            kind: ParameterType::Array,
            allowed_values: Some(vec![json!("DataBox"), json!("DataBoxHeavy")]),
            ..p
        };
        assert!(check_value(&a, &json!(["databox"])).is_ok());
        assert!(check_value(&a, &json!(["other"])).is_err());
    }
}
