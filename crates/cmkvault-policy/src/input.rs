//! One entry point for every input file: the shape decides whether it is an ARM template or an
//! inventory (see [`crate::inventory`] and [`crate::template`]).

use crate::error::PolicyError;
use crate::inventory::{self, InventoryShape};
use crate::jsontext;
use crate::resource::Resource;
use crate::template::{self, DeploymentContext};

/// How inputs are read.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The stand-in deployment for templates (subscription, resource group, location, ...).
    pub deployment: DeploymentContext,
}

/// What an input file was recognised as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputKind {
    /// An ARM template (possibly with a parameter file).
    Template,
    /// An inventory of the given shape.
    Inventory(InventoryShape),
}

/// A loaded input: its kind, its resources, and notes for the user.
#[derive(Clone, Debug)]
pub struct LoadedInput {
    /// What the file was recognised as.
    pub kind: InputKind,
    /// The resources, each with its source file and line.
    pub resources: Vec<Resource>,
    /// Remarks about values a template could not resolve (`FILE line N: ...`), for a warning.
    pub notes: Vec<String>,
}

/// Loads an input file with the default [`LoadOptions`]: detects its shape and returns its
/// resources. `parameters` is a parameter file `(text, file)` for a template. Errors name
/// `file` (invalid JSON with line and column, an unknown shape, a malformed resource).
pub fn load_input(
    text: &str,
    file: &str,
    parameters: Option<(&str, &str)>,
) -> Result<Vec<Resource>, PolicyError> {
    load_input_with(text, file, parameters, &LoadOptions::default()).map(|l| l.resources)
}

/// [`load_input`] with options, returning the kind and the notes as well.
pub fn load_input_with(
    text: &str,
    file: &str,
    parameters: Option<(&str, &str)>,
    options: &LoadOptions,
) -> Result<LoadedInput, PolicyError> {
    let parsed = jsontext::parse(text, file)?;
    if template::is_template(&parsed.value) {
        let out = template::resolve_template(
            &parsed.value,
            &parsed.text,
            file,
            parameters,
            &options.deployment,
        )?;
        return Ok(LoadedInput {
            kind: InputKind::Template,
            resources: out.resources,
            notes: out.notes,
        });
    }
    if template::is_parameter_file(&parsed.value) {
        return Err(PolicyError::Input(format!(
            "{file}: this is an ARM parameter file; give it with the template it belongs to"
        )));
    }
    let Some(shape) = InventoryShape::detect(&parsed.value) else {
        return Err(PolicyError::Input(format!(
            "{file}: not a recognised input: expected an ARM template ($schema \
             .../deploymentTemplate.json#), a Resource Graph export ({{\"data\": [...]}}), a REST \
             list ({{\"value\": [...]}}), an array of resources or one resource (az resource show)"
        )));
    };
    if let Some((_, pfile)) = parameters {
        return Err(PolicyError::Input(format!(
            "{pfile}: a parameter file applies to a template, but {file} is {}",
            shape.describe()
        )));
    }
    let resources = inventory::load_shape(parsed.value, &parsed.text, file, shape)?;
    Ok(LoadedInput {
        kind: InputKind::Inventory(shape),
        resources,
        notes: Vec::new(),
    })
}
