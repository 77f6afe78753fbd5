//! Inventories: resources as Azure returns them, from Azure Resource Graph and the Azure CLI.
//!
//! Shapes, detected by [`crate::input::load_input`]:
//! - a JSON array of resources (`az resource list`, `Search-AzGraph`, a hand-made list);
//! - `{"data": [...]}`: `az graph query` (Resource Graph rows: `id, name, type, kind, location,
//!   resourceGroup, subscriptionId, properties, tags, identity, sku, ...`);
//! - `{"value": [...]}`: an ARM REST list response;
//! - one resource object: `az resource show` (a REST GET body).
//!
//! Bodies are kept as Azure returns them (Resource Graph's lower-case `type` included: the engine
//! compares types case-insensitively), with two normalisations the policy language implies:
//! `location` without spaces in lower case (`East US 2` → `eastus2`, how ARM returns it) and
//! `identity.type` in one spelling (`SystemAssigned, UserAssigned`; see
//! [`normalize_identity_type`]).
//!
//! `az resource list` rows carry `"properties": null`: ARM's list call does not return them.
//! Such a row is kept, with `properties` replaced by an unknown marker
//! ([`PROPERTIES_UNAVAILABLE`]), so a definition that reads a property gives `Unknown` instead of
//! a wrong `NonCompliant`.

use serde_json::Value;

use crate::error::PolicyError;
use crate::expr::type_name;
use crate::jsontext::{self, Seg};
use crate::resource::{unknown, unknown_reason, Resource, SourceLocation};

/// The reason given for `properties` of an `az resource list` row (`"properties": null`).
pub const PROPERTIES_UNAVAILABLE: &str =
    "az resource list omits properties; use az resource show or Resource Graph";

/// The shape an inventory was recognised as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InventoryShape {
    /// A JSON array of resources.
    Array,
    /// `{"data": [...]}` (Azure Resource Graph, `az graph query`).
    ResourceGraph,
    /// `{"value": [...]}` (an ARM REST list response).
    RestList,
    /// One resource object (`az resource show`, a REST GET body).
    Single,
}

impl InventoryShape {
    /// Recognises an inventory by its shape; `None` when `v` is not one.
    pub fn detect(v: &Value) -> Option<InventoryShape> {
        match v {
            Value::Array(_) => Some(InventoryShape::Array),
            Value::Object(m) => {
                if m.get("data").is_some_and(Value::is_array) {
                    Some(InventoryShape::ResourceGraph)
                } else if m.get("value").is_some_and(Value::is_array) {
                    Some(InventoryShape::RestList)
                } else if m.get("type").is_some_and(Value::is_string)
                    && (m.contains_key("id") || m.contains_key("name"))
                {
                    Some(InventoryShape::Single)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// A short description for messages.
    pub fn describe(self) -> &'static str {
        match self {
            InventoryShape::Array => "an array of resources",
            InventoryShape::ResourceGraph => "a Resource Graph export ({\"data\": [...]})",
            InventoryShape::RestList => "a REST list ({\"value\": [...]})",
            InventoryShape::Single => "one resource (az resource show)",
        }
    }
}

/// Loads an inventory file (any shape above). Errors name `file` and, for a bad element, its
/// line.
pub fn load_inventory(text: &str, file: &str) -> Result<Vec<Resource>, PolicyError> {
    let parsed = jsontext::parse(text, file)?;
    let shape = InventoryShape::detect(&parsed.value).ok_or_else(|| {
        PolicyError::Input(format!(
            "{file}: not an inventory: expected an array of resources, {{\"data\": [...]}}, \
             {{\"value\": [...]}} or one resource object"
        ))
    })?;
    load_shape(parsed.value, &parsed.text, file, shape)
}

/// Loads an already parsed inventory of a detected shape; `text` is the file's text (for
/// line numbers).
pub(crate) fn load_shape(
    value: Value,
    text: &str,
    file: &str,
    shape: InventoryShape,
) -> Result<Vec<Resource>, PolicyError> {
    let (items, prefix, depth): (Vec<Value>, Option<&str>, usize) = match (shape, value) {
        (InventoryShape::Array, Value::Array(a)) => (a, None, 1),
        (InventoryShape::ResourceGraph, Value::Object(mut m)) => {
            (take_array(&mut m, "data"), Some("data"), 2)
        }
        (InventoryShape::RestList, Value::Object(mut m)) => {
            (take_array(&mut m, "value"), Some("value"), 2)
        }
        (InventoryShape::Single, v) => {
            let line = jsontext::container_lines(text, 0).get(&Vec::new()).copied();
            return Ok(vec![to_resource(v, file, line, None)?]);
        }
        _ => return Ok(Vec::new()),
    };
    let lines = jsontext::container_lines(text, depth);
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let mut path = Vec::with_capacity(2);
            if let Some(p) = prefix {
                path.push(Seg::Key(p.to_string()));
            }
            path.push(Seg::Index(i));
            let line = lines.get(&path).copied();
            to_resource(v, file, line, Some((prefix, i)))
        })
        .collect()
}

fn take_array(m: &mut serde_json::Map<String, Value>, key: &str) -> Vec<Value> {
    match m.remove(key) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

fn to_resource(
    mut v: Value,
    file: &str,
    line: Option<u32>,
    at: Option<(Option<&str>, usize)>,
) -> Result<Resource, PolicyError> {
    let where_ = || {
        let pos = line.map(|l| format!(" line {l}")).unwrap_or_default();
        match at {
            Some((Some(p), i)) => format!("{file}{pos}: {p}[{i}]"),
            Some((None, i)) => format!("{file}{pos}: element {i}"),
            None => format!("{file}{pos}"),
        }
    };
    let Value::Object(m) = &mut v else {
        return Err(PolicyError::Input(format!(
            "{}: expected a resource object, found {}",
            where_(),
            type_name(&v)
        )));
    };
    if !m.get("type").is_some_and(Value::is_string) {
        return Err(PolicyError::Input(format!(
            "{}: not a resource: it has no \"type\" string (a Resource Graph query must project \
             at least id, name, type and properties)",
            where_()
        )));
    }
    if m.get("properties").is_some_and(Value::is_null) {
        m.insert("properties".into(), unknown(PROPERTIES_UNAVAILABLE));
    }
    normalize_body(&mut v);
    Ok(Resource {
        body: v,
        api_version: None,
        source: Some(SourceLocation {
            file: file.to_string(),
            line,
        }),
    })
}

/// Normalises a resource body in place: `location` (see [`normalize_location`]) and
/// `identity.type` (see [`normalize_identity_type`]). Unknown markers are left alone.
pub fn normalize_body(body: &mut Value) {
    let Value::Object(m) = body else { return };
    if let Some(Value::String(loc)) = m.get_mut("location") {
        *loc = normalize_location(loc);
    }
    if let Some(Value::Object(id)) = m.get_mut("identity") {
        if let Some(Value::String(t)) = id.get_mut("type") {
            *t = normalize_identity_type(t);
        }
    }
}

/// A location as ARM returns it: lower case, no spaces (`East US 2` → `eastus2`).
pub fn normalize_location(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// `identity.type` in the spelling of the policy documentation: the parts `SystemAssigned`,
/// `UserAssigned`, `None` (any case, as templates write `systemAssigned`) joined by `", "`
/// (Cognitive Services writes `SystemAssigned, UserAssigned`, Machine Learning
/// `SystemAssigned,UserAssigned`). Other parts are kept as written.
pub fn normalize_identity_type(s: &str) -> String {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.to_ascii_lowercase().as_str() {
            "systemassigned" => "SystemAssigned".to_string(),
            "userassigned" => "UserAssigned".to_string(),
            "none" => "None".to_string(),
            _ => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `properties` of a body is the marker of an `az resource list` row.
pub fn properties_unavailable(body: &Value) -> bool {
    body.get("properties")
        .and_then(unknown_reason)
        .is_some_and(|r| r == PROPERTIES_UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_and_location_spellings() {
        assert_eq!(normalize_identity_type("systemAssigned"), "SystemAssigned");
        assert_eq!(
            normalize_identity_type("SystemAssigned,UserAssigned"),
            "SystemAssigned, UserAssigned"
        );
        assert_eq!(
            normalize_identity_type("SystemAssigned, UserAssigned"),
            "SystemAssigned, UserAssigned"
        );
        assert_eq!(normalize_identity_type("none"), "None");
        assert_eq!(normalize_location("East US 2"), "eastus2");
        let mut b = json!({"location": "West Europe", "identity": {"type": "userassigned"}});
        normalize_body(&mut b);
        assert_eq!(
            b,
            json!({"location": "westeurope", "identity": {"type": "UserAssigned"}})
        );
    }
}
