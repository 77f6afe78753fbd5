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
//! - [`input`]: reading an input file of any shape ([`load_input`]); [`inventory`]: Resource
//!   Graph and Azure CLI exports; [`template`]: ARM templates with parameter files, resolved into
//!   the resources they would deploy.
//! - [`outcome`]: the result of one definition on one resource (`Compliant`, `NonCompliant`,
//!   `Exempt`, `Unknown`) with the reason that decided it.

#![forbid(unsafe_code)]

pub mod datetime;
mod error;
pub mod expr;
pub mod input;
pub mod inventory;
mod jsontext;
pub mod outcome;
pub mod resource;
pub mod template;

pub use error::PolicyError;
pub use input::{load_input, load_input_with, InputKind, LoadOptions, LoadedInput};
pub use outcome::{ComplianceState, Effect, PolicyOutcome};
pub use resource::{Resource, SourceLocation};
pub use template::DeploymentContext;
