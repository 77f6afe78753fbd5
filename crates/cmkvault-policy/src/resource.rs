//! A resource to evaluate: its body as Azure returns it, where it came from, and the values
//! that could not be resolved offline.
//!
//! Values that cannot be known offline (a template's `reference()`, a parameter without a value)
//! are kept in the body as *unknown markers*: a JSON object with the single key
//! [`UNKNOWN_KEY`] whose value is the reason. A condition that reads an unknown marker makes the
//! result [`crate::ComplianceState::Unknown`] with that reason, never silently compliant.

use serde_json::{Map, Value};

/// The key of an unknown marker object (`{"$cmkvault.unknown": "reason"}`).
pub const UNKNOWN_KEY: &str = "$cmkvault.unknown";

/// An unknown marker carrying `reason`.
pub fn unknown(reason: impl Into<String>) -> Value {
    let mut m = Map::with_capacity(1);
    m.insert(UNKNOWN_KEY.to_string(), Value::String(reason.into()));
    Value::Object(m)
}

/// The reason of an unknown marker, or `None` for a known value.
pub fn unknown_reason(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get(UNKNOWN_KEY).and_then(Value::as_str),
        _ => None,
    }
}

/// Where a resource was read from: a file and, for templates, the line of its definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceLocation {
    /// The input file, as given on the command line.
    pub file: String,
    /// The 1-based line of the resource's object in that file, when known.
    pub line: Option<u32>,
}

/// One resource to evaluate.
#[derive(Clone, Debug)]
pub struct Resource {
    /// The resource in the shape of an ARM REST GET (`id`, `name`, `type`, `kind`, `location`,
    /// `tags`, `identity`, `sku`, `properties`, ...), possibly holding unknown markers.
    pub body: Value,
    /// The API version of the request that would create it: a template resource's
    /// `apiVersion`; `None` for inventories (compliance scans use the latest version).
    pub api_version: Option<String>,
    /// Where it came from.
    pub source: Option<SourceLocation>,
}

impl Resource {
    /// A resource from an inventory body (no API version, no source line).
    pub fn from_body(body: Value) -> Resource {
        Resource {
            body,
            api_version: None,
            source: None,
        }
    }

    /// The `type` field (empty when absent).
    pub fn resource_type(&self) -> &str {
        self.body.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The `id` field (empty when absent).
    pub fn id(&self) -> &str {
        self.body.get("id").and_then(Value::as_str).unwrap_or("")
    }

    /// The `name` field (empty when absent).
    pub fn name(&self) -> &str {
        self.body.get("name").and_then(Value::as_str).unwrap_or("")
    }
}
