//! Rendering results: a table for people, `{"results": [...]}` JSON with the field names of
//! `az policy state list`, and SARIF 2.1.0 for code scanning; and the CI gate's exit code.
//!
//! Exit code ([`exit_code`]): 1 when a result with effect Deny is `NonCompliant`, else 0. An
//! `Unknown` result never fails the gate, even with effect Deny (a value could not be resolved
//! offline, so nothing is known to be blocked); it is shown in every format (table state
//! `Unknown`, JSON `complianceState`, a SARIF `note`) and counted in [`summary_line`], which
//! names the Unknown results whose effect is Deny so they are not missed.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::outcome::{ComplianceState, Effect, PolicyOutcome};
use crate::pack::PackSource;
use crate::resource::SourceLocation;

/// An output format of `cmkvault scan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The aligned table (default).
    Table,
    /// `{"results": [...]}`.
    Json,
    /// SARIF 2.1.0.
    Sarif,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "sarif" => Ok(Format::Sarif),
            _ => Err(format!("unknown format {s:?} (table, json or sarif)")),
        }
    }
}

/// What a SARIF rule says about a definition (see [`crate::pack::PackDefinition::rule_meta`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleMeta {
    /// The definition's `name` (the SARIF rule id).
    pub name: String,
    /// The definition's `id`.
    pub id: String,
    /// `displayName` (the rule's short description).
    pub display_name: String,
    /// `description` (the rule's full description; may be empty).
    pub description: String,
    /// The effect without an assignment, if known.
    pub default_effect: Option<String>,
    /// Where the definition comes from, if known.
    pub source: Option<PackSource>,
}

/// Renders `outcomes` in `format`: the table is bounded to `width` columns; JSON and SARIF
/// end with a newline. `rules` (may be empty) and `tool_version` are used by SARIF only.
pub fn render(
    format: Format,
    outcomes: &[PolicyOutcome],
    rules: &[RuleMeta],
    tool_version: &str,
    width: usize,
) -> String {
    let pretty = |v: &Value| {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
        s.push('\n');
        s
    };
    match format {
        Format::Table => to_table(outcomes, width),
        Format::Json => pretty(&to_json(outcomes)),
        Format::Sarif => pretty(&to_sarif(outcomes, rules, tool_version)),
    }
}

/// The CI gate: 1 when any result with effect Deny is `NonCompliant`, else 0. `Unknown`,
/// `Exempt` and the other effects never give 1.
pub fn exit_code(outcomes: &[PolicyOutcome]) -> i32 {
    let blocked = outcomes
        .iter()
        .any(|o| o.effect == Effect::Deny && o.state == ComplianceState::NonCompliant);
    i32::from(blocked)
}

/// Counts by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// All results.
    pub total: usize,
    /// `Compliant`.
    pub compliant: usize,
    /// `NonCompliant`.
    pub non_compliant: usize,
    /// `NonCompliant` with effect Deny (these fail the gate).
    pub non_compliant_deny: usize,
    /// `Unknown`.
    pub unknown: usize,
    /// `Unknown` with effect Deny (not failing the gate; decide them by hand).
    pub unknown_deny: usize,
    /// `Exempt`.
    pub exempt: usize,
}

/// Counts `outcomes` by state.
pub fn summary(outcomes: &[PolicyOutcome]) -> Summary {
    let mut s = Summary {
        total: outcomes.len(),
        ..Summary::default()
    };
    for o in outcomes {
        let deny = o.effect == Effect::Deny;
        match o.state {
            ComplianceState::Compliant => s.compliant += 1,
            ComplianceState::NonCompliant => {
                s.non_compliant += 1;
                s.non_compliant_deny += usize::from(deny);
            }
            ComplianceState::Unknown => {
                s.unknown += 1;
                s.unknown_deny += usize::from(deny);
            }
            ComplianceState::Exempt => s.exempt += 1,
        }
    }
    s
}

/// One line for people (the table's last line; stderr for JSON/SARIF), e.g.
/// `12 results: 3 non-compliant (1 deny), 1 unknown (1 deny: decide by hand, not gated), 2 exempt, 6 compliant`.
pub fn summary_line(outcomes: &[PolicyOutcome]) -> String {
    let s = summary(outcomes);
    let plural = if s.total == 1 { "" } else { "s" };
    let mut line = format!(
        "{} result{plural}: {} non-compliant",
        s.total, s.non_compliant
    );
    if s.non_compliant_deny > 0 {
        let _ = write!(line, " ({} deny)", s.non_compliant_deny);
    }
    let _ = write!(line, ", {} unknown", s.unknown);
    if s.unknown_deny > 0 {
        let _ = write!(
            line,
            " ({} deny: could not be decided offline, not gated; check them by hand)",
            s.unknown_deny
        );
    }
    let _ = write!(line, ", {} exempt, {} compliant", s.exempt, s.compliant);
    line
}

// ------------------------------------------------------------------------------ JSON

/// `{"results": [...]}`: one object per result with the field names of `az policy state
/// list` (`resourceId`, `resourceType`, `policyDefinitionName`, `policyDefinitionId`,
/// `policyDefinitionAction`, `complianceState`), plus `reason` and, when the resource came
/// from a file, `file` and (when known) `line`.
pub fn to_json(outcomes: &[PolicyOutcome]) -> Value {
    let results: Vec<Value> = outcomes.iter().map(result_json).collect();
    json!({ "results": results })
}

fn result_json(o: &PolicyOutcome) -> Value {
    let mut m = Map::new();
    m.insert("resourceId".into(), o.resource_id.clone().into());
    m.insert("resourceType".into(), o.resource_type.clone().into());
    m.insert(
        "policyDefinitionName".into(),
        o.policy_definition_name.clone().into(),
    );
    m.insert(
        "policyDefinitionId".into(),
        o.policy_definition_id.clone().into(),
    );
    m.insert("policyDefinitionAction".into(), o.effect.action().into());
    m.insert("complianceState".into(), o.state.as_str().into());
    m.insert("reason".into(), o.reason.clone().into());
    if let Some(src) = &o.source {
        m.insert("file".into(), src.file.clone().into());
        if let Some(line) = src.line {
            m.insert("line".into(), line.into());
        }
    }
    Value::Object(m)
}

// ----------------------------------------------------------------------------- table

/// The table width to use when the output is not a terminal (CI logs, files): wide enough for
/// the column layout.
pub const DEFAULT_TABLE_WIDTH: usize = 160;

const MIN_REASON: usize = 30;
/// Below this width the table stacks each result over several lines.
const STACK_BELOW: usize = 130;

/// The results for people, no wider than `width` columns (at least 80 is assumed), ending
/// with [`summary_line`]. The resource is shown from its provider namespace on
/// (`Microsoft.KeyVault/vaults/kv1`), with `(file:line)` when it came from a template; the
/// policy by its display name; the reason in full, wrapped.
///
/// From 130 columns on, an aligned table `RESOURCE  POLICY  EFFECT  STATE  REASON` (long
/// resources keep their end, long policy names their start, cut with `…`; the reason wraps onto
/// continuation lines). Narrower, each result is a block: `STATE  EFFECT  RESOURCE`, then
/// indented `policy:` and `reason:` lines.
pub fn to_table(outcomes: &[PolicyOutcome], width: usize) -> String {
    let width = width.max(80);
    let rows: Vec<[String; 6]> = outcomes
        .iter()
        .map(|o| {
            let (resource, at) = short_resource(o);
            [
                resource,
                if o.display_name.is_empty() {
                    o.policy_definition_name.clone()
                } else {
                    o.display_name.clone()
                },
                effect_label(o.effect).to_string(),
                o.state.as_str().to_string(),
                o.reason.clone(),
                at,
            ]
        })
        .collect();
    let mut out = if width < STACK_BELOW {
        stacked(&rows, width)
    } else {
        columns(&rows, width)
    };
    out.push_str(&summary_line(outcomes));
    out.push('\n');
    out
}

fn columns(rows: &[[String; 6]], width: usize) -> String {
    let headers = ["RESOURCE", "POLICY", "EFFECT", "STATE", "REASON"];
    let natural = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count() + if i == 0 { r[5].chars().count() } else { 0 })
            .chain([headers[i].len()])
            .max()
            .unwrap_or(0)
    };
    let effect_w = natural(2);
    let state_w = natural(3);
    // 4 gaps of 2 columns between the 5 columns.
    let avail = width.saturating_sub(effect_w + state_w + 8);
    let reason_w = (avail / 3).clamp(MIN_REASON, natural(4).max(MIN_REASON));
    let rest = avail.saturating_sub(reason_w);
    let res_w = natural(0)
        .min((rest * 11 / 20).max(16))
        .min(rest.saturating_sub(12));
    let pol_w = natural(1).min(rest.saturating_sub(res_w)).max(8);
    let res_w = res_w.max(8);
    let reason_w = avail.saturating_sub(res_w + pol_w).max(MIN_REASON);

    let mut out = String::new();
    let mut line = |cells: [&str; 4], reason: &str| {
        let s = format!(
            "{:<res_w$}  {:<pol_w$}  {:<effect_w$}  {:<state_w$}  {reason}",
            cells[0], cells[1], cells[2], cells[3]
        );
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line([headers[0], headers[1], headers[2], headers[3]], headers[4]);
    for r in rows {
        let wrapped = wrap(&r[4], reason_w);
        let mut parts = wrapped.iter();
        let first = parts.next().map(String::as_str).unwrap_or("");
        line(
            [
                &resource_cell(&r[0], &r[5], res_w),
                &ellipsize_end(&r[1], pol_w),
                &r[2],
                &r[3],
            ],
            first,
        );
        for more in parts {
            line(["", "", "", ""], more);
        }
    }
    out
}

fn stacked(rows: &[[String; 6]], width: usize) -> String {
    const INDENT: &str = "    ";
    let state_w = rows.iter().map(|r| r[3].len()).max().unwrap_or(0);
    let effect_w = rows.iter().map(|r| r[2].len()).max().unwrap_or(0);
    let res_room = width.saturating_sub(state_w + effect_w + 4);
    let label_room = width.saturating_sub(INDENT.len() + "reason: ".len());
    let mut out = String::new();
    for r in rows {
        let head = format!(
            "{:<state_w$}  {:<effect_w$}  {}",
            r[3],
            r[2],
            resource_cell(&r[0], &r[5], res_room)
        );
        out.push_str(head.trim_end());
        out.push('\n');
        out.push_str(&format!(
            "{INDENT}policy: {}\n",
            ellipsize_end(&r[1], label_room)
        ));
        for (i, part) in wrap(&r[4], label_room).iter().enumerate() {
            let label = if i == 0 { "reason: " } else { "        " };
            out.push_str(format!("{INDENT}{label}{part}").trim_end());
            out.push('\n');
        }
    }
    out
}

fn effect_label(e: Effect) -> &'static str {
    match e {
        Effect::Audit => "Audit",
        Effect::Deny => "Deny",
        Effect::AuditIfNotExists => "AuditIfNotExists",
        Effect::Disabled => "Disabled",
        Effect::DeployIfNotExists => "DeployIfNotExists",
        Effect::Modify => "Modify",
        Effect::Append => "Append",
        Effect::DenyAction => "DenyAction",
        Effect::Manual => "Manual",
    }
}

/// The id from its last `/providers/` on (or the whole id), and ` (file:line)` when the line
/// is known (else empty).
fn short_resource(o: &PolicyOutcome) -> (String, String) {
    let id = o.resource_id.as_str();
    let lower = id.to_ascii_lowercase();
    let short = match lower.rfind("/providers/") {
        Some(at) => &id[at + "/providers/".len()..],
        None => id,
    };
    let short = if short.is_empty() { id } else { short };
    let at = match &o.source {
        Some(SourceLocation {
            file,
            line: Some(line),
        }) => format!(" ({file}:{line})"),
        _ => String::new(),
    };
    (short.to_string(), at)
}

/// The resource and its ` (file:line)` in `w` characters: both keep their ends (the resource
/// name, the file name and line); the resource gets at least half.
fn resource_cell(resource: &str, at: &str, w: usize) -> String {
    let (rn, an) = (resource.chars().count(), at.chars().count());
    if rn + an <= w {
        return format!("{resource}{at}");
    }
    let at_w = an.min(w / 2).min(w.saturating_sub(rn.min(w)).max(w / 2));
    let res_w = w.saturating_sub(at_w);
    let at = if an > at_w {
        // Keep " (" and cut the path from its start.
        let inner: String = at.chars().skip(2).collect();
        format!(" ({}", ellipsize_start(&inner, at_w.saturating_sub(2)))
    } else {
        at.to_string()
    };
    format!("{}{at}", ellipsize_start(resource, res_w))
}

/// `s` cut to `w` characters, keeping its end (`…accounts/openai-prod`).
fn ellipsize_start(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - w.saturating_sub(1)).collect();
    format!("…{tail}")
}

/// `s` cut to `w` characters, keeping its start (`Key vaults should…`).
fn ellipsize_end(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    let mut head: String = s.chars().take(w.saturating_sub(1)).collect();
    head.push('…');
    head
}

/// Greedy word wrap to `w` characters; words longer than `w` are split (after a `/` or `.`
/// where one is in the second half of the line).
fn wrap(text: &str, w: usize) -> Vec<String> {
    let w = w.max(1);
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let need = if cur_len == 0 {
                word.len()
            } else {
                cur_len + 1 + word.len()
            };
            if need <= w {
                if cur_len > 0 {
                    cur.push(' ');
                    cur_len += 1;
                }
                cur.extend(word.iter());
                cur_len += word.len();
                break;
            }
            if cur_len > 0 {
                lines.push(std::mem::take(&mut cur));
                cur_len = 0;
                continue;
            }
            // A word longer than the column: split it after its last `/` or `.` that fits,
            // else at the column.
            let cut = word[..w]
                .iter()
                .rposition(|c| matches!(c, '/' | '.'))
                .filter(|&i| i + 1 >= w / 2)
                .map_or(w, |i| i + 1);
            let rest = word.split_off(cut);
            lines.push(word.iter().collect());
            word = rest;
        }
    }
    if cur_len > 0 || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

// ----------------------------------------------------------------------------- SARIF

/// The `$schema` SARIF files name: the OASIS 2.1.0 schema with errata 01.
pub const SARIF_SCHEMA_URI: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

const BUILTIN_ID_PREFIX: &str = "/providers/microsoft.authorization/policydefinitions/";

/// A SARIF 2.1.0 log with one run of the tool `cmkvault`.
///
/// - `tool.driver.rules`: one per definition, the definitions of `rules` first (in order), then
///   any other definition that has a result; `id` = the definition's `name`, `shortDescription`
///   = its display name, `fullDescription` = its description, `helpUri` = the Azure portal page
///   for built-ins (`/providers/Microsoft.Authorization/policyDefinitions/…` ids), and
///   `properties` (`policyDefinitionId`, `defaultEffect`, `source`).
/// - `results`: one per `NonCompliant` or `Unknown` result (compliant and exempt ones are left
///   out): `level` `error` for a non-compliant Deny, `warning` for other non-compliant ones,
///   `note` for Unknown; the message is the resource id and the reason; `locations[0]` has the
///   input file (as given, as a relative URI reference) and `region.startLine` when the line
///   is known, and a logical location with the resource id.
pub fn to_sarif(outcomes: &[PolicyOutcome], rules: &[RuleMeta], tool_version: &str) -> Value {
    let mut metas: Vec<RuleMeta> = rules.to_vec();
    for o in outcomes {
        if !metas
            .iter()
            .any(|m| m.name.eq_ignore_ascii_case(&o.policy_definition_name))
        {
            metas.push(RuleMeta {
                name: o.policy_definition_name.clone(),
                id: o.policy_definition_id.clone(),
                display_name: o.display_name.clone(),
                ..RuleMeta::default()
            });
        }
    }
    let sarif_rules: Vec<Value> = metas.iter().map(sarif_rule).collect();
    let results: Vec<Value> = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o.state,
                ComplianceState::NonCompliant | ComplianceState::Unknown
            )
        })
        .map(|o| {
            let index = metas
                .iter()
                .position(|m| m.name.eq_ignore_ascii_case(&o.policy_definition_name))
                .unwrap_or(0);
            sarif_result(o, &metas[index].name, index)
        })
        .collect();
    json!({
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "cmkvault",
                "version": tool_version,
                "semanticVersion": tool_version,
                "rules": sarif_rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

fn sarif_rule(m: &RuleMeta) -> Value {
    let mut rule = Map::new();
    rule.insert("id".into(), m.name.clone().into());
    let short = if m.display_name.is_empty() {
        m.name.clone()
    } else {
        m.display_name.clone()
    };
    rule.insert("shortDescription".into(), json!({ "text": short }));
    if !m.description.is_empty() {
        rule.insert("fullDescription".into(), json!({ "text": m.description }));
    }
    if m.id.to_ascii_lowercase().starts_with(BUILTIN_ID_PREFIX) {
        rule.insert("helpUri".into(), portal_uri(&m.id).into());
    }
    let level = match m.default_effect.as_deref().map(str::to_ascii_lowercase) {
        Some(e) if e == "deny" => "error",
        Some(e) if e == "disabled" => "none",
        _ => "warning",
    };
    rule.insert(
        "defaultConfiguration".into(),
        json!({ "level": level, "enabled": level != "none" }),
    );
    let mut props = Map::new();
    props.insert("policyDefinitionId".into(), m.id.clone().into());
    if let Some(e) = &m.default_effect {
        props.insert("defaultEffect".into(), e.clone().into());
    }
    if let Some(s) = m.source {
        props.insert("source".into(), s.as_str().into());
    }
    props.insert("tags".into(), json!(["azure-policy", "cmk"]));
    rule.insert("properties".into(), Value::Object(props));
    Value::Object(rule)
}

/// The Azure portal page of a built-in definition.
pub fn portal_uri(definition_id: &str) -> String {
    format!(
        "https://portal.azure.com/#view/Microsoft_Azure_Policy/PolicyDetailBlade/definitionId/{}",
        percent_encode(definition_id, false)
    )
}

fn sarif_result(o: &PolicyOutcome, rule_id: &str, rule_index: usize) -> Value {
    let level = match (o.state, o.effect) {
        (ComplianceState::NonCompliant, Effect::Deny) => "error",
        (ComplianceState::NonCompliant, _) => "warning",
        _ => "note",
    };
    let state_text = match o.state {
        ComplianceState::Unknown => "could not be decided offline",
        _ => "is non-compliant",
    };
    let mut location = Map::new();
    if let Some(src) = &o.source {
        let mut phys = Map::new();
        phys.insert(
            "artifactLocation".into(),
            json!({ "uri": percent_encode(&src.file, true) }),
        );
        if let Some(line) = src.line.filter(|l| *l >= 1) {
            phys.insert("region".into(), json!({ "startLine": line }));
        }
        location.insert("physicalLocation".into(), Value::Object(phys));
    }
    location.insert(
        "logicalLocations".into(),
        json!([{ "fullyQualifiedName": o.resource_id, "kind": "resource" }]),
    );
    json!({
        "ruleId": rule_id,
        "ruleIndex": rule_index,
        "level": level,
        "message": {"text": format!("{} {state_text}: {}", o.resource_id, o.reason)},
        "locations": [Value::Object(location)],
        "partialFingerprints": {
            "cmkvaultResult/v1": format!("{}|{}", o.resource_id.to_ascii_lowercase(), o.policy_definition_name.to_ascii_lowercase()),
        },
        "properties": {
            "resourceId": o.resource_id,
            "resourceType": o.resource_type,
            "policyDefinitionId": o.policy_definition_id,
            "policyDefinitionAction": o.effect.action(),
            "complianceState": o.state.as_str(),
        },
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when
/// `keep_slash`), so a file path is a valid relative URI reference.
fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn wrap_and_ellipsize() {
        assert_eq!(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(
            wrap(
                "x Microsoft.Search/searchServices/encryptionWithCmk.enforcement y",
                24
            ),
            [
                "x",
                "Microsoft.Search/",
                "searchServices/",
                "encryptionWithCmk.",
                "enforcement y"
            ]
        );
        assert_eq!(wrap("", 4), [""]);
        assert_eq!(ellipsize_start("abcdefghij", 5), "…ghij");
        assert_eq!(ellipsize_end("abcdefghij", 5), "abcd…");
        assert_eq!(ellipsize_start("abc", 5), "abc");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(
            percent_encode("infra/main file.json", true),
            "infra/main%20file.json"
        );
        assert_eq!(
            percent_encode(
                "/providers/Microsoft.Authorization/policyDefinitions/x",
                false
            ),
            "%2Fproviders%2FMicrosoft.Authorization%2FpolicyDefinitions%2Fx"
        );
    }
}
