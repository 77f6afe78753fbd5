//! Exemptions: results that an exemption covers become [`ComplianceState::Exempt`].
//!
//! Two file shapes are read (detected by shape):
//!
//! ```json
//! {"exemptions": [
//!   {"scope": "/subscriptions/…/resourceGroups/ml-prod",
//!    "policy": "cmkvault-ml-workspace-cmk",
//!    "reason": "CMK migration tracked in CHG-1234",
//!    "expires": "2027-01-31T00:00:00Z"}
//! ]}
//! ```
//!
//! - `scope`: a resource id, or a prefix of ids: a subscription (`/subscriptions/ID`), a resource
//!   group (`…/resourceGroups/NAME`) or a resource (which also covers its children). Compared
//!   case-insensitively, at `/` boundaries (`…/rg` does not cover `…/rg2`).
//! - `policy`: a definition's `name` or `id` (case-insensitive), or `*` for every definition.
//! - `reason`: why (required; shown in every exempted result).
//! - `expires` (optional): an RFC 3339 date-time (`2027-01-31T00:00:00Z`, `…+01:00`; without an
//!   offset it is read as UTC) or a date (`2027-01-31`, meaning 00:00 UTC that day). From that
//!   instant on the exemption no longer applies, and [`Exemptions::apply`] reports it.
//!
//! The output of `az policy exemption list` (an array, `{"value": [...]}`, or one exemption from
//! `az policy exemption show`) is also accepted: the scope is the exemption's `id` up to
//! `/providers/Microsoft.Authorization/policyExemptions/`, the reason `exemptionCategory:
//! description` (or the display name or name), the expiry `expiresOn`. Such an exemption names a
//! policy *assignment* (`policyAssignmentId`, plus `policyDefinitionReferenceIds` for initiative
//! members). [`Exemptions::bind_assignment`] tells it which definitions that assignment holds;
//! without that, it applies to every definition of the scan at its scope, and `apply` says so.
//!
//! When several exemptions cover a result, the first in the file that has not expired applies.

use std::fmt;
use std::time::SystemTime;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::PolicyError;
use crate::outcome::{ComplianceState, PolicyOutcome};

/// Which definitions an exemption covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyMatch {
    /// `*`: every definition.
    Any,
    /// A definition's `name` or `id`.
    Definition(String),
    /// An Azure exemption's policy assignment, with the initiative members it names (empty:
    /// all of them).
    Assignment {
        /// `properties.policyAssignmentId`.
        assignment_id: String,
        /// `properties.policyDefinitionReferenceIds`.
        reference_ids: Vec<String>,
        /// The definition ids the assignment covers, once bound ([`Exemptions::bind_assignment`]).
        definitions: Option<Vec<String>>,
    },
}

/// One exemption.
#[derive(Clone, Debug)]
pub struct Exemption {
    label: String,
    scope: String,
    policy: PolicyMatch,
    reason: String,
    expires: Option<OffsetDateTime>,
}

impl Exemption {
    /// Where it was read from and what it covers, for messages
    /// (`exemptions.json: exemption 2 (scope …, policy …)`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The scope: a resource id or a prefix of ids.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Which definitions it covers.
    pub fn policy(&self) -> &PolicyMatch {
        &self.policy
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When it stops applying, if ever.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires.map(SystemTime::from)
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| OffsetDateTime::from(now) >= e)
    }

    /// Whether it covers the result of `definition_name`/`definition_id` on `resource_id`,
    /// regardless of expiry.
    pub fn covers(&self, resource_id: &str, definition_name: &str, definition_id: &str) -> bool {
        scope_covers(&self.scope, resource_id) && self.policy_covers(definition_name, definition_id)
    }

    fn policy_covers(&self, name: &str, id: &str) -> bool {
        let is = |s: &str| s.eq_ignore_ascii_case(name) || s.eq_ignore_ascii_case(id);
        match &self.policy {
            PolicyMatch::Any => true,
            PolicyMatch::Definition(d) => is(d),
            PolicyMatch::Assignment {
                definitions: Some(defs),
                ..
            } => defs.iter().any(|d| is(d)),
            PolicyMatch::Assignment {
                definitions: None, ..
            } => true,
        }
    }

    fn exempt_reason(&self, was: ComplianceState, why: &str) -> String {
        let until = match self.expires {
            Some(e) => format!(" (until {})", format_utc(e)),
            None => String::new(),
        };
        format!(
            "exempted: {}{until}; was {}: {why}",
            self.reason,
            was.as_str()
        )
    }
}

/// Something about the exemptions a user should see (print them as warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExemptionNotice {
    /// An exemption has expired and no longer applies.
    Expired {
        /// [`Exemption::label`].
        exemption: String,
        /// When it expired (RFC 3339, UTC).
        expired: String,
        /// How many results it would have covered.
        results: usize,
    },
    /// An Azure exemption's assignment is not known to the scan: it was applied to every
    /// definition at its scope.
    AssignmentNotBound {
        /// [`Exemption::label`].
        exemption: String,
        /// The assignment id.
        assignment_id: String,
        /// How many results it covered.
        results: usize,
    },
}

impl fmt::Display for ExemptionNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExemptionNotice::Expired {
                exemption,
                expired,
                results,
            } => write!(
                f,
                "{exemption} expired on {expired} and no longer applies ({results} result{} not exempted)",
                if *results == 1 { "" } else { "s" }
            ),
            ExemptionNotice::AssignmentNotBound {
                exemption,
                assignment_id,
                results,
            } => write!(
                f,
                "{exemption} names policy assignment {assignment_id}, which this scan does not know: applied to every policy at its scope ({results} result{})",
                if *results == 1 { "" } else { "s" }
            ),
        }
    }
}

/// The exemptions of one or more files.
#[derive(Clone, Debug, Default)]
pub struct Exemptions {
    items: Vec<Exemption>,
}

impl Exemptions {
    /// Parses an exemptions file (either shape, see the module docs). `origin` names the file
    /// in messages.
    pub fn parse(json: &str, origin: &str) -> Result<Exemptions, PolicyError> {
        let bad = |what: String| PolicyError::Definition(format!("{origin}: {what}"));
        let doc: Value =
            serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let items = match &doc {
            Value::Object(m) if m.contains_key("exemptions") => {
                let list = m["exemptions"]
                    .as_array()
                    .ok_or_else(|| bad("\"exemptions\" must be an array".into()))?;
                list.iter()
                    .enumerate()
                    .map(|(i, v)| parse_own(v, origin, i + 1))
                    .collect::<Result<Vec<_>, _>>()?
            }
            Value::Object(m) if m.get("value").is_some_and(Value::is_array) => {
                parse_azure_list(m["value"].as_array().map_or(&[][..], Vec::as_slice), origin)?
            }
            Value::Array(list) => parse_azure_list(list, origin)?,
            Value::Object(_) if doc.get("id").is_some() => {
                vec![parse_azure(&doc, origin, 1)?]
            }
            _ => {
                return Err(bad(
                    "not an exemptions file: expected {\"exemptions\": [...]} or the output of `az policy exemption list`".into(),
                ))
            }
        };
        Ok(Exemptions { items })
    }

    /// Adds the exemptions of another file after these.
    pub fn extend(&mut self, other: Exemptions) {
        self.items.extend(other.items);
    }

    /// Every exemption, in file order.
    pub fn items(&self) -> &[Exemption] {
        &self.items
    }

    /// Tells the Azure exemptions of `assignment_id` which definitions it holds: `members` are
    /// `(policyDefinitionReferenceId, policyDefinitionId)` pairs (for an assignment of a single
    /// definition, one pair with an empty reference id). An exemption naming reference ids then
    /// covers only those members.
    pub fn bind_assignment(&mut self, assignment_id: &str, members: &[(&str, &str)]) {
        for e in &mut self.items {
            if let PolicyMatch::Assignment {
                assignment_id: a,
                reference_ids,
                definitions,
            } = &mut e.policy
            {
                if a.eq_ignore_ascii_case(assignment_id) {
                    let defs = members
                        .iter()
                        .filter(|(r, _)| {
                            reference_ids.is_empty()
                                || reference_ids.iter().any(|x| x.eq_ignore_ascii_case(r))
                        })
                        .map(|(_, d)| d.to_string())
                        .collect();
                    *definitions = Some(defs);
                }
            }
        }
    }

    /// Marks the results an unexpired exemption covers as `Exempt`, whatever their state, with
    /// the reason `exempted: REASON (until DATE); was STATE: ORIGINAL REASON`. Returns what the
    /// user should be told: expired exemptions (with the number of results they would have
    /// covered) and Azure exemptions applied without knowing their assignment.
    pub fn apply(&self, outcomes: &mut [PolicyOutcome], now: SystemTime) -> Vec<ExemptionNotice> {
        let mut counts = vec![0usize; self.items.len()];
        for o in outcomes.iter_mut() {
            if o.state == ComplianceState::Exempt {
                continue;
            }
            let mut chosen = None;
            for (i, e) in self.items.iter().enumerate() {
                if !e.covers(
                    &o.resource_id,
                    &o.policy_definition_name,
                    &o.policy_definition_id,
                ) {
                    continue;
                }
                counts[i] += 1;
                if chosen.is_none() && !e.is_expired(now) {
                    chosen = Some(e);
                }
            }
            if let Some(e) = chosen {
                o.reason = e.exempt_reason(o.state, &o.reason);
                o.state = ComplianceState::Exempt;
            }
        }
        let mut notices = Vec::new();
        for (e, results) in self.items.iter().zip(counts) {
            if e.is_expired(now) {
                notices.push(ExemptionNotice::Expired {
                    exemption: e.label.clone(),
                    expired: e.expires.map(format_utc).unwrap_or_default(),
                    results,
                });
            } else if let PolicyMatch::Assignment {
                assignment_id,
                definitions: None,
                ..
            } = &e.policy
            {
                notices.push(ExemptionNotice::AssignmentNotBound {
                    exemption: e.label.clone(),
                    assignment_id: assignment_id.clone(),
                    results,
                });
            }
        }
        notices
    }
}

/// Whether `scope` covers `id`: equal, or a prefix of it ending at a `/` boundary;
/// case-insensitive; trailing slashes ignored.
pub fn scope_covers(scope: &str, id: &str) -> bool {
    let scope = scope.trim().trim_end_matches('/');
    let id = id.trim().trim_end_matches('/');
    if id.len() < scope.len() || !id.is_char_boundary(scope.len()) {
        return false;
    }
    let (head, rest) = id.split_at(scope.len());
    head.eq_ignore_ascii_case(scope) && (rest.is_empty() || rest.starts_with('/'))
}

/// One item of our own shape.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnExemption {
    scope: String,
    policy: String,
    reason: String,
    #[serde(default)]
    expires: Option<String>,
}

fn parse_own(v: &Value, origin: &str, n: usize) -> Result<Exemption, PolicyError> {
    let bad = |what: String| PolicyError::Definition(format!("{origin}: exemption {n}: {what}"));
    let e: OwnExemption = serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
    let scope = e.scope.trim().to_string();
    if scope.is_empty() {
        return Err(bad(
            "\"scope\" is empty (give a resource id or an id prefix)".into(),
        ));
    }
    let policy = e.policy.trim();
    if policy.is_empty() {
        return Err(bad(
            "\"policy\" is empty (give a definition name or id, or *)".into(),
        ));
    }
    if e.reason.trim().is_empty() {
        return Err(bad(
            "\"reason\" is empty (say why the exemption exists)".into()
        ));
    }
    let expires = match &e.expires {
        Some(t) => Some(parse_time(t).map_err(|m| bad(format!("\"expires\": {m}")))?),
        None => None,
    };
    let policy = if policy == "*" {
        PolicyMatch::Any
    } else {
        PolicyMatch::Definition(policy.to_string())
    };
    Ok(Exemption {
        label: format!(
            "{origin}: exemption {n} (scope {scope}, policy {})",
            e.policy.trim()
        ),
        scope,
        policy,
        reason: e.reason.trim().to_string(),
        expires,
    })
}

const EXEMPTION_SEGMENT: &str = "/providers/microsoft.authorization/policyexemptions/";

fn parse_azure_list(list: &[Value], origin: &str) -> Result<Vec<Exemption>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| parse_azure(v, origin, i + 1))
        .collect()
}

/// One item of `az policy exemption list` (properties nested, as the REST API and current `az`
/// print them, or flattened, as older `az` versions did).
fn parse_azure(v: &Value, origin: &str, n: usize) -> Result<Exemption, PolicyError> {
    let bad = |what: String| PolicyError::Definition(format!("{origin}: exemption {n}: {what}"));
    let prop = |k: &str| -> Option<&Value> {
        v.pointer(&format!("/properties/{k}"))
            .filter(|x| !x.is_null())
            .or_else(|| v.get(k).filter(|x| !x.is_null()))
    };
    let prop_str = |k: &str| {
        prop(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let id = v.get("id").and_then(Value::as_str).ok_or_else(|| {
        bad("no \"id\": expected {\"exemptions\": [...]} or the output of `az policy exemption list`".into())
    })?;
    let at = id.to_ascii_lowercase().find(EXEMPTION_SEGMENT).ok_or_else(|| {
        bad(format!(
            "id {id:?} is not a policy exemption (…/providers/Microsoft.Authorization/policyExemptions/NAME)"
        ))
    })?;
    let mut scope = id[..at].to_string();
    if scope.is_empty() {
        scope = "/".into();
    }
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| id[at + EXEMPTION_SEGMENT.len()..].to_string());
    let assignment_id = prop_str("policyAssignmentId")
        .ok_or_else(|| bad("no properties.policyAssignmentId".into()))?
        .to_string();
    let reference_ids = prop("policyDefinitionReferenceIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let category = prop_str("exemptionCategory").unwrap_or("Waiver");
    let why = prop_str("description")
        .or_else(|| prop_str("displayName"))
        .unwrap_or(&name);
    let expires = match prop_str("expiresOn") {
        Some(t) => Some(parse_time(t).map_err(|m| bad(format!("expiresOn: {m}")))?),
        None => None,
    };
    Ok(Exemption {
        label: format!("{origin}: exemption {name:?} (scope {scope}, assignment {assignment_id})"),
        scope,
        policy: PolicyMatch::Assignment {
            assignment_id,
            reference_ids,
            definitions: None,
        },
        reason: format!("{category}: {why}"),
        expires,
    })
}

/// Parses an RFC 3339 date-time (an offset-less one as UTC) or a plain `YYYY-MM-DD` date.
fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    let t = text.trim();
    let attempt = |s: &str| OffsetDateTime::parse(s, &Rfc3339).ok();
    let parsed = if t.len() == 10 {
        attempt(&format!("{t}T00:00:00Z"))
    } else {
        attempt(t).or_else(|| attempt(&format!("{t}Z")))
    };
    parsed.ok_or_else(|| {
        format!(
            "{t:?} is not a date-time such as 2027-01-31T00:00:00Z or a date such as 2027-01-31"
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC.
fn format_utc(t: OffsetDateTime) -> String {
    let u = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        u.year(),
        u8::from(u.month()),
        u.day(),
        u.hour(),
        u.minute(),
        u.second()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn times() {
        let t = |s: &str| format_utc(parse_time(s).unwrap());
        assert_eq!(t("2027-01-31T00:00:00Z"), "2027-01-31T00:00:00Z");
        assert_eq!(t("2027-01-31T01:30:00+01:00"), "2027-01-31T00:30:00Z");
        assert_eq!(
            t("2027-01-31T00:00:00.0000000+00:00"),
            "2027-01-31T00:00:00Z"
        );
        assert_eq!(t("2027-01-31T08:00:00"), "2027-01-31T08:00:00Z");
        assert_eq!(t("2027-01-31"), "2027-01-31T00:00:00Z");
        assert!(parse_time("31/01/2027").is_err());
        assert!(parse_time("2027-02-30").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn scope_boundaries() {
        let rg = "/subscriptions/S/resourceGroups/rg";
        assert!(scope_covers(rg, rg));
        assert!(scope_covers(
            rg,
            "/subscriptions/s/resourcegroups/RG/providers/X/y/z"
        ));
        assert!(scope_covers(&format!("{rg}/"), rg));
        assert!(!scope_covers(rg, "/subscriptions/S/resourceGroups/rg2"));
        assert!(!scope_covers(
            rg,
            "/subscriptions/S/resourceGroups/rg2/providers/X/y/z"
        ));
        assert!(!scope_covers(rg, "/subscriptions/S/resourceGroups"));
        assert!(!scope_covers(
            "/subscriptions/S",
            "/subscriptions/S2/resourceGroups/rg"
        ));
        // A non-ASCII id must not split inside a character.
        assert!(!scope_covers("/ab", "/é"));
    }
}
