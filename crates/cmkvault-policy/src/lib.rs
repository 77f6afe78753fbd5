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

#![forbid(unsafe_code)]

pub mod datetime;
mod error;
pub mod expr;
pub mod outcome;
pub mod resource;

pub use error::PolicyError;
pub use outcome::{ComplianceState, Effect, PolicyOutcome};
pub use resource::{Resource, SourceLocation};
