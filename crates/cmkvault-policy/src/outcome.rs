//! The result of evaluating one policy definition on one resource.

use crate::resource::SourceLocation;

/// A policy effect (compared case-insensitively when read from definitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum Effect {
    /// Report non-compliance.
    Audit,
    /// Block the request (offline: a non-compliant result that fails the CI gate).
    Deny,
    /// Report non-compliance when a related resource matching a condition does not exist.
    AuditIfNotExists,
    /// Not evaluated.
    Disabled,
    /// Deploy a related resource when it does not exist; evaluated for compliance like
    /// `AuditIfNotExists`.
    DeployIfNotExists,
    /// Change properties; evaluated for compliance like `Audit` (non-compliant when the rule
    /// matches).
    Modify,
    /// Add fields; evaluated for compliance like `Audit`.
    Append,
    /// Blocks delete actions only: produces no compliance results.
    DenyAction,
    /// Compliance is attested by hand: produces no results offline.
    Manual,
}

impl Effect {
    /// Parses an effect name, case-insensitively.
    pub fn parse(s: &str) -> Option<Effect> {
        match s.to_ascii_lowercase().as_str() {
            "audit" => Some(Effect::Audit),
            "deny" => Some(Effect::Deny),
            "auditifnotexists" => Some(Effect::AuditIfNotExists),
            "disabled" => Some(Effect::Disabled),
            "deployifnotexists" => Some(Effect::DeployIfNotExists),
            "modify" => Some(Effect::Modify),
            "append" => Some(Effect::Append),
            "denyaction" => Some(Effect::DenyAction),
            "manual" => Some(Effect::Manual),
            _ => None,
        }
    }

    /// The lower-case name `az policy state list` uses (`policyDefinitionAction`).
    pub fn action(self) -> &'static str {
        match self {
            Effect::Audit => "audit",
            Effect::Deny => "deny",
            Effect::AuditIfNotExists => "auditifnotexists",
            Effect::Disabled => "disabled",
            Effect::DeployIfNotExists => "deployifnotexists",
            Effect::Modify => "modify",
            Effect::Append => "append",
            Effect::DenyAction => "denyaction",
            Effect::Manual => "manual",
        }
    }
}

/// A compliance state, as `az policy state list` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ComplianceState {
    /// The resource meets the definition.
    Compliant,
    /// The resource violates the definition.
    NonCompliant,
    /// An exemption applies.
    Exempt,
    /// A value needed to decide could not be resolved offline.
    Unknown,
}

impl ComplianceState {
    /// The name used on the wire (`Compliant`, `NonCompliant`, `Exempt`, `Unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            ComplianceState::Compliant => "Compliant",
            ComplianceState::NonCompliant => "NonCompliant",
            ComplianceState::Exempt => "Exempt",
            ComplianceState::Unknown => "Unknown",
        }
    }
}

/// One (resource, definition) result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PolicyOutcome {
    /// The resource's `id` (for templates: as resolved, possibly an expression-like id).
    pub resource_id: String,
    /// The resource's `type`.
    pub resource_type: String,
    /// The definition's `name` (a GUID for built-ins).
    pub policy_definition_name: String,
    /// The definition's `id`.
    pub policy_definition_id: String,
    /// The definition's display name.
    pub display_name: String,
    /// The initiative's `name` when the definition was evaluated as one of its members
    /// (`policySetDefinitionName`).
    pub policy_set_definition_name: Option<String>,
    /// The initiative's `id` (`policySetDefinitionId`).
    pub policy_set_definition_id: Option<String>,
    /// The member's `policyDefinitionReferenceId` in the initiative.
    pub policy_definition_reference_id: Option<String>,
    /// The effect in force (after parameters and assignment overrides).
    pub effect: Effect,
    /// The verdict.
    pub state: ComplianceState,
    /// Why: the field and value that decided it (or the unresolved value, or the exemption).
    pub reason: String,
    /// Where the resource came from.
    pub source: Option<SourceLocation>,
}
