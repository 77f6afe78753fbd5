//! Offline Azure Policy evaluation for customer-managed-key (CMK) governance.
//!
//! The crate evaluates policy definitions and initiatives exactly as published (the Azure
//! Policy JSON language) over Azure resources: inventories (Resource Graph exports, `az resource
//! show`), ARM templates before deployment, and the live vault. It sits beside the vault and the
//! envelope crates and depends on neither: the vault is read over its API like any client.
//!
//! Concepts map to modules:
//! - [`expr`]: the `[...]` expression language shared by policy rules and ARM templates
//!   (parser, evaluator, the common function library); [`datetime`]: the dates it computes with.
//! - [`resource`]: a resource to evaluate, with where it came from and which values could not
//!   be resolved offline.
//! - [`definition`]: policy definitions, initiatives and assignments as published
//!   ([`parse_document`], [`Assignment::parse`]).
//! - [`alias`]: which property of a resource body a policy field or alias reads
//!   ([`property_path`]), including the `Microsoft.KeyVault.Data` mapping onto ARM keys.
//! - `condition` (private): conditions compiled once and evaluated with three-valued logic.
//! - [`engine`]: applicability, effects, related resources, parallel evaluation ([`Engine`]).
//! - [`input`]: reading an input file of any shape ([`load_input`]); [`inventory`]: Resource
//!   Graph and Azure CLI exports; [`template`]: ARM templates with parameter files, resolved into
//!   the resources they would deploy.
//! - [`outcome`]: the result of one definition on one resource (`Compliant`, `NonCompliant`,
//!   `Exempt`, `Unknown`) with the reason that decided it.
//! - [`pack`]: the built-in rule pack (the MIT Azure built-ins and cmkvault's own CMK rules in
//!   `policies/cmk/`), listed and found by name.
//! - [`exemption`]: exemption files (own shape or `az policy exemption list`) turning covered
//!   results into `Exempt`, with expiry.
//! - [`report`]: table, `az policy state list`-shaped JSON and SARIF 2.1.0 output, and the CI
//!   gate's exit code.
//!
//! ```
//! use cmkvault_policy::{parse_document, Engine, EngineOptions, Resource, ComplianceState};
//! let def = serde_json::json!({"properties": {"mode": "Indexed", "policyRule": {
//!     "if": {"allOf": [{"field": "type", "equals": "Microsoft.Storage/storageAccounts"},
//!         {"not": {"field": "Microsoft.Storage/storageAccounts/encryption.keySource",
//!                  "equals": "Microsoft.Keyvault"}}]},
//!     "then": {"effect": "audit"}}}, "name": "storage-cmk"});
//! let doc = parse_document(&def, "storage-cmk.json").unwrap();
//! let engine = Engine::new(vec![doc], None, EngineOptions::default()).unwrap();
//! let sa = Resource::from_body(serde_json::json!({"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/sa",
//!     "name": "sa", "type": "Microsoft.Storage/storageAccounts",
//!     "properties": {"encryption": {"keySource": "Microsoft.Storage"}}}));
//! let results = engine.evaluate(&[sa]);
//! assert_eq!(results[0].state, ComplianceState::NonCompliant);
//! ```

#![forbid(unsafe_code)]

pub mod alias;
mod condition;
pub mod datetime;
pub mod definition;
pub mod engine;
mod error;
pub mod exemption;
pub mod expr;
pub mod input;
pub mod inventory;
mod jsontext;
pub mod outcome;
pub mod pack;
pub mod report;
pub mod resource;
pub mod template;
mod time;

pub use alias::property_path;
pub use definition::{
    parse_document, parse_documents, Assignment, ParameterDefinition, ParameterType,
    PolicyDefinition, PolicyDocument, PolicyReference, PolicySetDefinition,
};
pub use engine::{Engine, EngineOptions, PolicyInfo};
pub use error::PolicyError;
pub use exemption::{ExemptionNotice, Exemptions};
pub use input::{load_input, load_input_with, InputKind, LoadOptions, LoadedInput};
pub use outcome::{ComplianceState, Effect, PolicyOutcome};
pub use pack::{Pack, PackDefinition, PackSource};
pub use report::{exit_code, Format, RuleMeta};
pub use resource::{Resource, SourceLocation};
pub use template::DeploymentContext;
