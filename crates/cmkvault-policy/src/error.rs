//! The crate's error type.

/// Everything that can go wrong while loading or evaluating policies and inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// An expression (`[...]`) does not parse.
    #[error("expression {expr:?}: {reason}")]
    Parse {
        /// The expression text.
        expr: String,
        /// What is wrong, and where.
        reason: String,
    },
    /// An expression or condition cannot be evaluated (wrong argument types, unknown function).
    #[error("{0}")]
    Eval(String),
    /// A policy definition, initiative, assignment or exemption file is malformed.
    #[error("{0}")]
    Definition(String),
    /// An input (inventory, template, parameter file) is malformed or of an unknown shape.
    #[error("{0}")]
    Input(String),
}
