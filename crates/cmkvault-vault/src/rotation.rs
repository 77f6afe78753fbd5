//! Key rotation policies: ISO-8601 durations, validation, defaults, and when a policy is due.

use serde::{Deserialize, Serialize};

use crate::VaultError;

const DAY: i64 = 86_400;

/// An ISO-8601 duration as Azure uses them (`P90D`, `P2Y`, `P18M`, `PT12H`), kept as the
/// original string and its length in seconds (a month counts 30 days, a year 365).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsoDuration {
    text: String,
    seconds: i64,
}

impl IsoDuration {
    /// Parses `P[nY][nM][nW][nD][T[nH][nM][nS]]`.
    pub fn parse(text: &str) -> Result<IsoDuration, VaultError> {
        let bad = || {
            VaultError::invalid(format!(
                "'{text}' is not an ISO 8601 duration such as P90D, P18M or P2Y."
            ))
        };
        let rest = text.strip_prefix('P').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        let mut seconds: i64 = 0;
        let mut in_time = false;
        let mut number = String::new();
        let mut any = false;
        for c in rest.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            if c == 'T' {
                if in_time || !number.is_empty() {
                    return Err(bad());
                }
                in_time = true;
                continue;
            }
            let n: i64 = number.parse().map_err(|_| bad())?;
            number.clear();
            let unit = match (in_time, c) {
                (false, 'Y') => 365 * DAY,
                (false, 'M') => 30 * DAY,
                (false, 'W') => 7 * DAY,
                (false, 'D') => DAY,
                (true, 'H') => 3600,
                (true, 'M') => 60,
                (true, 'S') => 1,
                _ => return Err(bad()),
            };
            seconds = n
                .checked_mul(unit)
                .and_then(|s| s.checked_add(seconds))
                .ok_or_else(bad)?;
            any = true;
        }
        if !number.is_empty() || !any {
            return Err(bad());
        }
        Ok(IsoDuration {
            text: text.to_string(),
            seconds,
        })
    }

    /// Length in seconds.
    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    /// The original text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A lifetime action trigger: exactly one of the two fields is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// `timeAfterCreate`.
    #[serde(
        rename = "timeAfterCreate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub time_after_create: Option<String>,
    /// `timeBeforeExpiry`.
    #[serde(
        rename = "timeBeforeExpiry",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub time_before_expiry: Option<String>,
}

/// What a lifetime action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Make a new version.
    Rotate,
    /// Emit a near-expiry notification.
    Notify,
}

/// One lifetime action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeAction {
    /// When.
    pub trigger: Trigger,
    /// What.
    pub action: ActionType,
}

/// A stored rotation policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// Lifetime actions (the default Notify action added when none was given).
    pub lifetime_actions: Vec<LifetimeAction>,
    /// `attributes.expiryTime`.
    pub expiry_time: Option<String>,
    /// `attributes.created`.
    pub created: Option<i64>,
    /// `attributes.updated`.
    pub updated: Option<i64>,
}

/// A rotation policy as a caller submits it (action types still strings).
#[derive(Clone, Debug, Default)]
pub struct RotationPolicyInput {
    /// (trigger, action type) pairs.
    pub lifetime_actions: Vec<(Trigger, String)>,
    /// `attributes.expiryTime`.
    pub expiry_time: Option<String>,
}

fn default_notify() -> LifetimeAction {
    LifetimeAction {
        trigger: Trigger {
            time_after_create: None,
            time_before_expiry: Some("P30D".into()),
        },
        action: ActionType::Notify,
    }
}

impl RotationPolicy {
    /// The policy of a key that never had one: one Notify 30 days before expiry.
    pub fn default_policy() -> RotationPolicy {
        RotationPolicy {
            lifetime_actions: vec![default_notify()],
            expiry_time: None,
            created: None,
            updated: None,
        }
    }

    /// Validates a submitted policy and applies Azure's defaults.
    ///
    /// Rules: `expiryTime` at least 28 days; each trigger names exactly one of
    /// `timeAfterCreate`/`timeBeforeExpiry`, at least 7 days; a before-expiry trigger needs
    /// `expiryTime` and must leave 7 days after creation; an after-create trigger must fire at
    /// least 7 days before expiry; at most one action of each type. A policy without Notify
    /// (including an empty one) gets the default Notify; `expiryTime` is kept as given.
    pub fn from_input(
        input: RotationPolicyInput,
        previous_created: Option<i64>,
        now: i64,
    ) -> Result<RotationPolicy, VaultError> {
        let bad = |m: String| VaultError::invalid(m);
        let expiry = input
            .expiry_time
            .as_deref()
            .map(IsoDuration::parse)
            .transpose()?;
        if let Some(e) = &expiry {
            if e.seconds() < 28 * DAY {
                return Err(bad(format!(
                    "expiryTime {} is too short: the minimum is 28 days (P28D).",
                    e.as_str()
                )));
            }
        }
        let mut actions = Vec::new();
        for (trigger, kind) in input.lifetime_actions {
            let action = match kind.to_ascii_lowercase().as_str() {
                "rotate" => ActionType::Rotate,
                "notify" => ActionType::Notify,
                _ => {
                    return Err(bad(format!(
                        "Unknown lifetime action type '{kind}': use Rotate or Notify."
                    )))
                }
            };
            if actions.iter().any(|a: &LifetimeAction| a.action == action) {
                return Err(bad(format!(
                    "The policy has more than one {action:?} action."
                )));
            }
            match (&trigger.time_after_create, &trigger.time_before_expiry) {
                (Some(after), None) => {
                    let d = IsoDuration::parse(after)?;
                    if d.seconds() < 7 * DAY {
                        return Err(bad(format!(
                            "timeAfterCreate {after} is too short: the minimum is 7 days (P7D)."
                        )));
                    }
                    if let Some(e) = &expiry {
                        if d.seconds() > e.seconds() - 7 * DAY {
                            return Err(bad(format!(
                                "timeAfterCreate {after} must be at least 7 days before expiryTime {}.",
                                e.as_str()
                            )));
                        }
                    }
                }
                (None, Some(before)) => {
                    let d = IsoDuration::parse(before)?;
                    if d.seconds() < 7 * DAY {
                        return Err(bad(format!(
                            "timeBeforeExpiry {before} is too short: the minimum is 7 days (P7D)."
                        )));
                    }
                    let Some(e) = &expiry else {
                        return Err(bad(format!(
                            "timeBeforeExpiry {before} needs an expiryTime in the policy attributes."
                        )));
                    };
                    if d.seconds() > e.seconds() - 7 * DAY {
                        return Err(bad(format!(
                            "timeBeforeExpiry {before} must leave at least 7 days after creation within expiryTime {}.",
                            e.as_str()
                        )));
                    }
                }
                _ => {
                    return Err(bad(
                        "Each lifetime action trigger needs exactly one of timeAfterCreate or timeBeforeExpiry.".into(),
                    ))
                }
            }
            actions.push(LifetimeAction { trigger, action });
        }
        // An empty list resets the actions to the default (one Notify); a given expiryTime
        // is kept, so `KeyRotationPolicy(expires_in="P90D")` alone does what it says.
        if !actions.iter().any(|a| a.action == ActionType::Notify) {
            actions.push(default_notify());
        }
        Ok(RotationPolicy {
            lifetime_actions: actions,
            expiry_time: expiry.map(|e| e.as_str().to_string()),
            created: Some(previous_created.unwrap_or(now)),
            updated: Some(now),
        })
    }

    /// Seconds from creation to expiry for new versions, if the policy sets `expiryTime`.
    pub fn expiry_seconds(&self) -> Option<i64> {
        self.expiry_time
            .as_deref()
            .and_then(|t| IsoDuration::parse(t).ok())
            .map(|d| d.seconds())
    }

    /// Whether the Rotate action is due for a latest version created at `created` that expires
    /// at `exp`.
    pub fn rotation_due(&self, created: i64, exp: Option<i64>, now: i64) -> bool {
        self.lifetime_actions
            .iter()
            .filter(|a| a.action == ActionType::Rotate)
            .any(|a| {
                if let Some(after) = &a.trigger.time_after_create {
                    if let Ok(d) = IsoDuration::parse(after) {
                        return now >= created.saturating_add(d.seconds());
                    }
                }
                if let (Some(before), Some(exp)) = (&a.trigger.time_before_expiry, exp) {
                    if let Ok(d) = IsoDuration::parse(before) {
                        return now >= exp.saturating_sub(d.seconds());
                    }
                }
                false
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(actions: &[(&str, &str, &str)], expiry: Option<&str>) -> RotationPolicyInput {
        RotationPolicyInput {
            lifetime_actions: actions
                .iter()
                .map(|(kind, after, before)| {
                    (
                        Trigger {
                            time_after_create: (!after.is_empty()).then(|| after.to_string()),
                            time_before_expiry: (!before.is_empty()).then(|| before.to_string()),
                        },
                        kind.to_string(),
                    )
                })
                .collect(),
            expiry_time: expiry.map(str::to_string),
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(IsoDuration::parse("P90D").unwrap().seconds(), 90 * DAY);
        assert_eq!(IsoDuration::parse("P2Y").unwrap().seconds(), 730 * DAY);
        assert_eq!(
            IsoDuration::parse("P1M2DT3H").unwrap().seconds(),
            32 * DAY + 3 * 3600
        );
        for bad in [
            "",
            "P",
            "90D",
            "PD",
            "P1X",
            "PT",
            "P1",
            "P99999999999999999999D",
        ] {
            assert!(IsoDuration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_rules() {
        let ok =
            RotationPolicy::from_input(input(&[("Rotate", "P30D", "")], Some("P90D")), None, 5)
                .unwrap();
        assert_eq!(ok.lifetime_actions.len(), 2, "default notify added");
        assert_eq!(ok.expiry_seconds(), Some(90 * DAY));
        type Case<'a> = (&'a [(&'a str, &'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[("Rotate", "P30D", "")], Some("P27D")), // expiry < 28 days
            (&[("Rotate", "P6D", "")], None),          // trigger < 7 days
            (&[("Rotate", "", "P30D")], None),         // before-expiry needs expiryTime
            (&[("Rotate", "P85D", "")], Some("P90D")), // too close to expiry
            (&[("Rotate", "P30D", "P30D")], Some("P90D")), // both triggers
            (&[("Explode", "P30D", "")], None),        // unknown type
            (&[("Rotate", "P30D", ""), ("rotate", "P40D", "")], None), // duplicate
        ];
        for (actions, expiry) in cases {
            assert!(
                RotationPolicy::from_input(input(actions, *expiry), None, 0).is_err(),
                "{actions:?} {expiry:?}"
            );
        }
    }

    #[test]
    fn empty_actions_reset_to_default_and_due_logic() {
        let p = RotationPolicy::from_input(input(&[], None), Some(1), 5).unwrap();
        assert_eq!(
            p.lifetime_actions,
            RotationPolicy::default_policy().lifetime_actions
        );
        let p =
            RotationPolicy::from_input(input(&[("rotate", "P30D", "")], None), None, 0).unwrap();
        assert!(!p.rotation_due(0, None, 30 * DAY - 1));
        assert!(p.rotation_due(0, None, 30 * DAY));
    }
}
