//! Policy fields and aliases → where they read in a resource body.
//!
//! A condition's `field` is either a top-level field (`type`, `name`, `fullName`, `kind`,
//! `location`, `id`, `identity.type`, `tags`, `tags['k']`, `tags[k]`, `tags.k`,
//! `tags['''k''']`) or a property alias. Aliases are case-insensitive and follow one
//! mechanical rule (policy-engine reference §2.7): `<Namespace>/<type>[/<child>…]/<suffix>` reads
//! `properties.<suffix>`, except `sku.*`, which reads the top-level `sku`. An explicit table
//! covers the exceptions the reference lists (private endpoint connections, the Key Vault
//! `sku` inside `properties`, Storage's `enableBlobEncryption`, Cosmos DB's `sku.name`, the
//! Container Registry child aliases, ML `linkedWorkspaces`).
//!
//! `Microsoft.KeyVault.Data/vaults/keys/…` aliases (mode `Microsoft.KeyVault.Data`) have no ARM
//! alias; they are mapped onto ARM `Microsoft.KeyVault/vaults/keys` resources:
//!
//! | data-plane alias | ARM key resource |
//! |---|---|
//! | `attributes.expiresOn` | `properties.attributes.exp` (epoch seconds) as a date-time |
//! | `attributes.createdOn` | `properties.attributes.created` as a date-time; absent (a key in a template, not created yet) = the evaluation time |
//! | `attributes.updatedOn`, `attributes.notBefore` | `properties.attributes.updated`, `.nbf` as date-times |
//! | `attributes.enabled`, `attributes.recoveryLevel`, `attributes.exportable` | `properties.attributes.*` |
//! | `keyType`, `keySize`, `ellipticCurveName`, `keyOps[*]` | `properties.kty`, `.keySize`, `.curveName`, `.keyOps[*]` |
//! | `scheduledRotationDate` | created + `timeAfterCreate` of the rotation policy's `rotate` action, or expiry − `timeBeforeExpiry` (ISO-8601 durations); absent without such an action |

use std::borrow::Cow;

use serde_json::Value;

use crate::expr::get_ci;
use crate::resource::unknown_reason;

/// One step of a property path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// An object property (matched case-insensitively).
    Key(String),
    /// `[*]`: every element of an array.
    All,
}

/// A key's date-valued data-plane field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DataField {
    /// An epoch-seconds property shown as a date-time; `default_now`: absent means "now".
    Epoch {
        /// The ARM path of the epoch value.
        path: Vec<Seg>,
        /// Absent reads as the evaluation time (`createdOn` of a key not yet created).
        default_now: bool,
    },
    /// The derived `scheduledRotationDate`.
    ScheduledRotation,
}

/// Where a field reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FieldRef {
    /// `type` (in mode `Microsoft.KeyVault.Data`: `Microsoft.KeyVault.Data/vaults/keys` for an
    /// ARM key).
    Type {
        /// The definition's mode is `Microsoft.KeyVault.Data`.
        data: bool,
    },
    /// `name`: the last segment of the resource's name.
    Name,
    /// `fullName`: parent names prefixed (`vault/key`).
    FullName,
    /// `kind`.
    Kind,
    /// `location`, normalised (lower case, no spaces).
    Location,
    /// `id`.
    Id,
    /// A property path from the body's root.
    Path {
        /// The steps.
        segs: Vec<Seg>,
        /// The path holds a `[*]`.
        wildcard: bool,
    },
    /// A computed data-plane field.
    Data(DataField),
}

impl FieldRef {
    fn path(segs: Vec<Seg>) -> FieldRef {
        let wildcard = segs.contains(&Seg::All);
        FieldRef::Path { segs, wildcard }
    }

    /// The category used by applicability (`type`, `name`, `kind`).
    pub(crate) fn category(&self) -> FieldCategory {
        match self {
            FieldRef::Type { .. } => FieldCategory::Type,
            FieldRef::Name | FieldRef::FullName => FieldCategory::Name,
            FieldRef::Kind => FieldCategory::Kind,
            _ => FieldCategory::Other,
        }
    }
}

/// How a field counts for applicability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldCategory {
    /// `type`.
    Type,
    /// `name`, `fullName`.
    Name,
    /// `kind`.
    Kind,
    /// Anything else.
    Other,
}

/// Parses a property path: `a.b[*].c`, `tags['x.y']`, `tags[k]`.
pub(crate) fn parse_path(s: &str) -> Result<Vec<Seg>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut segs = Vec::new();
    let mut i = 0;
    let mut expect_name = true;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                if expect_name {
                    return Err(format!("empty segment in {s:?}"));
                }
                expect_name = true;
                i += 1;
            }
            '[' => {
                if segs.is_empty() {
                    return Err(format!("{s:?} starts with '['"));
                }
                i += 1;
                if chars.get(i) == Some(&'*') && chars.get(i + 1) == Some(&']') {
                    segs.push(Seg::All);
                    i += 2;
                } else if chars.get(i) == Some(&'\'') {
                    i += 1;
                    let mut key = String::new();
                    loop {
                        match chars.get(i) {
                            None => return Err(format!("unterminated quote in {s:?}")),
                            Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                                key.push('\'');
                                i += 2;
                            }
                            Some('\'') => {
                                i += 1;
                                break;
                            }
                            Some(c) => {
                                key.push(*c);
                                i += 1;
                            }
                        }
                    }
                    if chars.get(i) != Some(&']') {
                        return Err(format!("expected ']' in {s:?}"));
                    }
                    i += 1;
                    segs.push(Seg::Key(key));
                } else {
                    let start = i;
                    while i < chars.len() && chars[i] != ']' {
                        i += 1;
                    }
                    if i == chars.len() || i == start {
                        return Err(format!("bad brackets in {s:?}"));
                    }
                    segs.push(Seg::Key(chars[start..i].iter().collect()));
                    i += 1;
                }
                expect_name = false;
            }
            ']' | '\'' => return Err(format!("unexpected {:?} in {s:?}", chars[i])),
            _ => {
                if !expect_name {
                    return Err(format!("expected '.' or '[' in {s:?}"));
                }
                let start = i;
                while i < chars.len() && !matches!(chars[i], '.' | '[' | ']' | '\'') {
                    i += 1;
                }
                segs.push(Seg::Key(chars[start..i].iter().collect()));
                expect_name = false;
            }
        }
    }
    if expect_name {
        return Err(format!("{s:?} is empty or ends with '.'"));
    }
    Ok(segs)
}

/// Renders a path (`properties.networkAcls.ipRules[*].value`).
pub(crate) fn display_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::All => out.push_str("[*]"),
            Seg::Key(k) if k.contains(['.', '[', ']', '\'', ' ', '/']) => {
                out.push_str(&format!("['{}']", k.replace('\'', "''")));
            }
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
        }
    }
    out
}

fn key(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

/// Splits `Namespace/type[/child…]/suffix` at its last `/` outside brackets.
fn split_alias(alias: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    let mut last = None;
    for (i, c) in alias.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '/' if depth == 0 => last = Some(i),
            _ => {}
        }
    }
    let i = last?;
    Some((&alias[..i], &alias[i + 1..]))
}

/// The explicit exceptions to the mechanical rule: `(lower-case alias, path)`.
const EXCEPTIONS: &[(&str, &str)] = &[
    (
        "microsoft.machinelearningservices/workspaces/linkedworkspaces.userassignedidentityresourceid",
        "properties.userAssignedIdentityResourceId",
    ),
    (
        "microsoft.storage/storageaccounts/enableblobencryption",
        "properties.encryption.services.blob.enabled",
    ),
    (
        "microsoft.storage/storageaccounts/enablefileencryption",
        "properties.encryption.services.file.enabled",
    ),
    (
        "microsoft.documentdb/databaseaccounts/sku.name",
        "properties.databaseAccountOfferType",
    ),
];

/// Properties of a private endpoint connection that sit under its own `properties`.
const PEC_PROPERTIES: &[&str] = &[
    "privateendpoint",
    "privatelinkserviceconnectionstate",
    "provisioningstate",
    "groupids",
];

/// Compiles a field (top-level field or alias) for a definition of the given mode.
/// `Err` holds why the alias is not known.
pub(crate) fn compile_field(text: &str, data_mode: bool) -> Result<FieldRef, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "type" => return Ok(FieldRef::Type { data: data_mode }),
        "name" => return Ok(FieldRef::Name),
        "fullname" => return Ok(FieldRef::FullName),
        "kind" => return Ok(FieldRef::Kind),
        "location" => return Ok(FieldRef::Location),
        "id" => return Ok(FieldRef::Id),
        _ => {}
    }
    if lower == "tags" || lower.starts_with("tags.") || lower.starts_with("tags[") {
        return parse_path(t).map(FieldRef::path);
    }
    if lower == "identity" || lower.starts_with("identity.") {
        return parse_path(t).map(FieldRef::path);
    }
    let Some((type_part, suffix)) = split_alias(t) else {
        return Err("not a top-level field and not an alias (Namespace/type/property)".into());
    };
    let namespace = type_part.split('/').next().unwrap_or("");
    if !namespace.contains('.') || type_part.split('/').count() < 2 || suffix.is_empty() {
        return Err("not a top-level field and not an alias (Namespace/type/property)".into());
    }
    if namespace.eq_ignore_ascii_case("Microsoft.KeyVault.Data") {
        if !data_mode {
            return Err("a Microsoft.KeyVault.Data alias in a definition whose mode is not Microsoft.KeyVault.Data".into());
        }
        return data_alias(type_part, suffix);
    }
    if let Some((_, path)) = EXCEPTIONS.iter().find(|(a, _)| *a == lower) {
        return parse_path(path).map(FieldRef::path);
    }
    let segs = parse_path(suffix)?;
    let first = match &segs[0] {
        Seg::Key(k) => k.to_ascii_lowercase(),
        Seg::All => String::new(),
    };
    let type_lower = type_part.to_ascii_lowercase();
    // Private endpoint connections: the connection's own fields sit under its `properties`.
    if first == "privateendpointconnections" && segs.get(1) == Some(&Seg::All) {
        if let Some(Seg::Key(k)) = segs.get(2) {
            if PEC_PROPERTIES.contains(&k.to_ascii_lowercase().as_str()) {
                let mut out = vec![key("properties"), segs[0].clone(), Seg::All];
                out.push(key("properties"));
                out.extend(segs[2..].iter().cloned());
                return Ok(FieldRef::path(out));
            }
        }
    }
    // Key Vault keeps its sku inside `properties`.
    if first == "sku" && type_lower == "microsoft.keyvault/vaults" {
        let mut out = vec![key("properties")];
        out.extend(segs);
        return Ok(FieldRef::path(out));
    }
    if first == "sku" {
        return Ok(FieldRef::path(segs));
    }
    // Container Registry child aliases written `registries/scopeMaps.x`, `registries/tokens.x`:
    // the child's own `properties.x`.
    if type_lower == "microsoft.containerregistry/registries"
        && (first == "scopemaps" || first == "tokens")
        && segs.len() > 1
    {
        let mut out = vec![key("properties")];
        out.extend(segs[1..].iter().cloned());
        return Ok(FieldRef::path(out));
    }
    let mut out = vec![key("properties")];
    out.extend(segs);
    Ok(FieldRef::path(out))
}

fn data_alias(type_part: &str, suffix: &str) -> Result<FieldRef, String> {
    if !type_part.eq_ignore_ascii_case("Microsoft.KeyVault.Data/vaults/keys") {
        return Err(format!(
            "{type_part} aliases are not supported offline (only Microsoft.KeyVault.Data/vaults/keys, mapped onto ARM Microsoft.KeyVault/vaults/keys)"
        ));
    }
    let p = |s: &str| parse_path(s).map(FieldRef::path);
    let epoch = |s: &str, default_now: bool| {
        parse_path(s).map(|path| FieldRef::Data(DataField::Epoch { path, default_now }))
    };
    match suffix.to_ascii_lowercase().as_str() {
        "attributes.expireson" => epoch("properties.attributes.exp", false),
        "attributes.createdon" => epoch("properties.attributes.created", true),
        "attributes.updatedon" => epoch("properties.attributes.updated", false),
        "attributes.notbefore" => epoch("properties.attributes.nbf", false),
        "attributes.enabled" => p("properties.attributes.enabled"),
        "attributes.recoverylevel" => p("properties.attributes.recoveryLevel"),
        "attributes.exportable" => p("properties.attributes.exportable"),
        "keytype" => p("properties.kty"),
        "keysize" => p("properties.keySize"),
        "ellipticcurvename" => p("properties.curveName"),
        "keyops" => p("properties.keyOps"),
        "keyops[*]" => p("properties.keyOps[*]"),
        "scheduledrotationdate" => Ok(FieldRef::Data(DataField::ScheduledRotation)),
        _ => Err(format!(
            "no ARM mapping for the data-plane alias {type_part}/{suffix}"
        )),
    }
}

/// Where an alias (or top-level field) reads, as a property path for documentation:
/// `Microsoft.CognitiveServices/accounts/encryption.keySource` → `properties.encryption.keySource`.
/// Data-plane aliases (`Microsoft.KeyVault.Data/vaults/keys/…`) are described by their ARM
/// mapping. An error names the alias and why it is not known.
pub fn property_path(alias: &str) -> Result<String, crate::PolicyError> {
    let data = alias
        .trim()
        .to_ascii_lowercase()
        .starts_with("microsoft.keyvault.data/");
    let f = compile_field(alias, data)
        .map_err(|why| crate::PolicyError::Definition(format!("unknown alias {alias:?}: {why}")))?;
    Ok(match f {
        FieldRef::Type { .. } => "type".into(),
        FieldRef::Name => "name".into(),
        FieldRef::FullName => "fullName".into(),
        FieldRef::Kind => "kind".into(),
        FieldRef::Location => "location".into(),
        FieldRef::Id => "id".into(),
        FieldRef::Path { segs, .. } => display_path(&segs),
        FieldRef::Data(DataField::Epoch { path, .. }) => {
            format!("{} (epoch seconds, as a date-time)", display_path(&path))
        }
        FieldRef::Data(DataField::ScheduledRotation) => {
            "properties.attributes.created + properties.rotationPolicy.lifetimeActions[rotate].trigger.timeAfterCreate (or exp - timeBeforeExpiry)".into()
        }
    })
}

/// A value read from a resource: absent, unknown offline (with the reason), or a value.
#[derive(Clone, Debug)]
pub(crate) enum Read<'a> {
    /// The property is absent (or `null`).
    Missing,
    /// The value holds an unknown marker; the reason.
    Unknown(Cow<'a, str>),
    /// The value.
    Value(Cow<'a, Value>),
}

/// Reads a path without `[*]` from `root`.
pub(crate) fn read_path<'a>(root: &'a Value, segs: &[Seg]) -> Read<'a> {
    let mut v = root;
    for s in segs {
        if let Some(r) = unknown_reason(v) {
            return Read::Unknown(Cow::Borrowed(r));
        }
        match (s, v) {
            (Seg::Key(k), Value::Object(m)) => match get_ci(m, k) {
                Some(next) => v = next,
                None => return Read::Missing,
            },
            _ => return Read::Missing,
        }
    }
    if let Some(r) = unknown_reason(v) {
        return Read::Unknown(Cow::Borrowed(r));
    }
    if v.is_null() {
        Read::Missing
    } else {
        Read::Value(Cow::Borrowed(v))
    }
}

/// Collects the values a `[*]` path selects from `v`: every element (flattened across nested
/// `[*]`); an element without the property is `None`. A missing array selects nothing. `Err`
/// holds the reason of an unknown marker met on the way.
pub(crate) fn collect<'a>(
    v: &'a Value,
    segs: &[Seg],
    under_wildcard: bool,
    out: &mut Vec<Option<&'a Value>>,
) -> Result<(), &'a str> {
    if let Some(r) = unknown_reason(v) {
        return Err(r);
    }
    let Some((first, rest)) = segs.split_first() else {
        out.push((!v.is_null()).then_some(v));
        return Ok(());
    };
    let missing = |out: &mut Vec<Option<&'a Value>>| {
        if under_wildcard && !rest.contains(&Seg::All) && *first != Seg::All {
            out.push(None);
        }
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => match get_ci(m, k) {
            Some(next) if !next.is_null() => collect(next, rest, under_wildcard, out),
            _ => {
                missing(out);
                Ok(())
            }
        },
        (Seg::All, Value::Array(a)) => {
            for e in a {
                collect(e, rest, true, out)?;
            }
            Ok(())
        }
        _ => {
            missing(out);
            Ok(())
        }
    }
}

/// `path` starts with `prefix` (keys compared case-insensitively).
pub(crate) fn has_prefix(path: &[Seg], prefix: &[Seg]) -> bool {
    path.len() >= prefix.len()
        && path.iter().zip(prefix).all(|(a, b)| match (a, b) {
            (Seg::Key(x), Seg::Key(y)) => x.eq_ignore_ascii_case(y),
            (Seg::All, Seg::All) => true,
            _ => false,
        })
}

/// Lower case without whitespace: how `location` ("East US 2" == "eastus2") and
/// `identity.type` ("SystemAssigned, UserAssigned" == "SystemAssigned,UserAssigned") compare.
pub(crate) fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pp(a: &str) -> String {
        property_path(a).unwrap()
    }

    #[test]
    fn mechanical_rule_and_exceptions() {
        assert_eq!(
            pp("Microsoft.CognitiveServices/accounts/encryption.keySource"),
            "properties.encryption.keySource"
        );
        assert_eq!(
            pp("microsoft.keyvault/VAULTS/networkAcls.ipRules[*].value"),
            "properties.networkAcls.ipRules[*].value"
        );
        assert_eq!(
            pp("Microsoft.Storage/storageAccounts/encryptionScopes/source"),
            "properties.source"
        );
        assert_eq!(pp("Microsoft.Storage/storageAccounts/sku.name"), "sku.name");
        assert_eq!(
            pp("Microsoft.KeyVault/vaults/sku.name"),
            "properties.sku.name"
        );
        assert_eq!(
            pp("Microsoft.DocumentDB/databaseAccounts/sku.name"),
            "properties.databaseAccountOfferType"
        );
        assert_eq!(
            pp("Microsoft.Search/searchServices/privateEndpointConnections[*].privateEndpoint.id"),
            "properties.privateEndpointConnections[*].properties.privateEndpoint.id"
        );
        assert_eq!(
            pp("Microsoft.Storage/storageAccounts/enableBlobEncryption"),
            "properties.encryption.services.blob.enabled"
        );
        assert_eq!(
            pp("Microsoft.ContainerRegistry/registries/tokens.status"),
            "properties.status"
        );
        assert_eq!(
            pp("Microsoft.KeyVault/vaults/accessPolicies[*].permissions.keys[*]"),
            "properties.accessPolicies[*].permissions.keys[*]"
        );
    }

    #[test]
    fn top_level_fields_and_tags() {
        assert_eq!(pp("identity.type"), "identity.type");
        assert_eq!(pp("tags['cost.center']"), "tags['cost.center']");
        assert_eq!(
            compile_field("tags['''quoted''']", false).unwrap(),
            FieldRef::path(vec![key("tags"), key("'quoted'")])
        );
        assert_eq!(
            compile_field("tags[env]", false).unwrap(),
            FieldRef::path(vec![key("tags"), key("env")])
        );
        assert_eq!(
            compile_field("tags.env", false).unwrap(),
            FieldRef::path(vec![key("tags"), key("env")])
        );
        assert_eq!(compile_field("Kind", false).unwrap(), FieldRef::Kind);
    }

    #[test]
    fn data_plane_aliases() {
        assert!(matches!(
            compile_field(
                "Microsoft.KeyVault.Data/vaults/keys/attributes.expiresOn",
                true
            ),
            Ok(FieldRef::Data(DataField::Epoch { .. }))
        ));
        assert_eq!(
            compile_field("Microsoft.KeyVault.Data/vaults/keys/keyType", true).unwrap(),
            FieldRef::path(vec![key("properties"), key("kty")])
        );
        assert!(compile_field("Microsoft.KeyVault.Data/vaults/keys/keyType", false).is_err());
        assert!(compile_field("Microsoft.KeyVault.Data/vaults/keys/nosuch", true).is_err());
        assert!(compile_field(
            "Microsoft.KeyVault.Data/vaults/secrets/attributes.expiresOn",
            true
        )
        .is_err());
    }

    #[test]
    fn unknown_aliases_are_errors() {
        assert!(property_path("encryption.keySource").is_err());
        assert!(property_path("Microsoft.Storage/").is_err());
        assert!(property_path("nonamespace/type/prop").is_err());
        assert!(property_path("Microsoft.X/y/a..b").is_err());
    }

    #[test]
    fn collect_semantics() {
        let v = serde_json::json!({"a": [{"b": 1}, {"c": 2}, {"b": [3, 4]}], "n": null});
        let mut out = Vec::new();
        collect(&v, &parse_path("a[*].b").unwrap(), false, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out[1].is_none());
        let mut out = Vec::new();
        collect(&v, &parse_path("missing[*].b").unwrap(), false, &mut out).unwrap();
        assert!(out.is_empty());
        let mut out = Vec::new();
        collect(&v, &parse_path("a[*].b[*]").unwrap(), false, &mut out).unwrap();
        assert_eq!(
            out.len(),
            2,
            "nested [*] flattens; non-arrays select nothing"
        );
        assert!(matches!(
            read_path(&v, &parse_path("n").unwrap()),
            Read::Missing
        ));
    }
}
