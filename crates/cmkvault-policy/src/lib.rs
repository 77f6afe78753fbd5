//! Offline Azure Policy evaluation for customer-managed-key (CMK) governance.
//!
//! The crate evaluates policy definitions and initiatives exactly as published (the Azure
//! Policy JSON language) over Azure resources: inventories (Resource Graph exports, `az resource
//! show`), ARM templates before deployment, and the live vault. It sits beside the vault and the
//! envelope crates and depends on neither: the vault is read over its API like any client.
//!
//! Concepts map to modules:
//! - [`expr`]: the `[...]` expression language shared by policy rules and ARM templates
//!   (parser, evaluator, the common function library).
//! - [`resource`]: a resource to evaluate, with where it came from and which values could not
//!   be resolved offline.
//! - [`outcome`]: the result of one definition on one resource (`Compliant`, `NonCompliant`,
//!   `Exempt`, `Unknown`) with the reason that decided it.
//! - [`pack`]: the built-in rule pack (the MIT Azure built-ins and cmkvault's own CMK rules in
//!   `policies/cmk/`), listed and found by name.
//! - [`exemption`]: exemption files (own shape or `az policy exemption list`) turning covered
//!   results into `Exempt`, with expiry.
//! - [`report`]: table, `az policy state list`-shaped JSON and SARIF 2.1.0 output, and the CI
//!   gate's exit code.

#![forbid(unsafe_code)]

mod error;
pub mod exemption;
pub mod expr;
pub mod outcome;
pub mod pack;
pub mod report;
pub mod resource;

pub use error::PolicyError;
pub use exemption::{ExemptionNotice, Exemptions};
pub use outcome::{ComplianceState, Effect, PolicyOutcome};
pub use pack::{Pack, PackDefinition, PackSource};
pub use report::{exit_code, Format, RuleMeta};
pub use resource::{Resource, SourceLocation};
