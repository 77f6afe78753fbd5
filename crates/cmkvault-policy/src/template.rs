//! ARM templates: resolve a template (and an optional parameter file) into the resources it
//! would deploy, each in the shape of an ARM REST GET, with the line of its definition.
//!
//! What is resolved offline:
//! - `parameters()`: the parameter file's `value`, else the `defaultValue` (which may itself be
//!   an expression), else an unknown marker naming the parameter. A Key Vault `reference` in the
//!   parameter file is unknown too.
//! - `variables()`, lazily and in any order (a variable may use others; a cycle is an error), and
//!   `copy` in variables and in property values (`"copy": [{"name", "count", "input"}]`).
//! - The common function library ([`crate::expr`]) and the deployment functions below. A
//!   function that cannot be known offline (`reference()`, `list*()`, `newGuid()`, `pickZones()`,
//!   lambdas, ...) gives an unknown marker with the reason, and so does an expression whose
//!   evaluation fails (wrong types, out of range): the result becomes `Unknown`, never silently
//!   compliant. An expression that does not parse is an input error naming the file and line.
//! - Resources: `resources` as an array or, in `languageVersion` 2.0 (Bicep), an object of
//!   symbolic names (`existing` ones are skipped); child `resources` nested in a resource (type
//!   and name composed as `parent/child`); `copy` loops (`copyIndex()`); `condition` (false:
//!   skipped; not resolvable: **kept**, evaluated as if deployed, and flagged with
//!   [`NOTE_KEY`] in the body and a note); nested `Microsoft.Resources/deployments` with an
//!   inline `properties.template`, flattened, in the inner scope (`expressionEvaluationOptions.
//!   scope: inner`: the inner template's own parameters, given `properties.parameters` evaluated
//!   in the outer scope, and its own variables) or the outer scope (the default: the parent's
//!   parameters and variables); the deployment's `resourceGroup`/`subscriptionId` move the ids
//!   of what it deploys. A nested deployment with a `templateLink` cannot be read offline: its
//!   resources are missing, and a note says so.
//!
//! The deployment context ([`DeploymentContext`]) stands in for what only a real deployment
//! knows: the subscription (`00000000-0000-0000-0000-000000000000`), tenant (the same), resource
//! group name (`resourceGroup`), `resourceGroup().location` (`eastus`, configurable), and the
//! deployment name (the file's stem). `uniqueString()` and `guid()` are deterministic stand-ins
//! for Azure's hash (see [`crate::expr`]), `utcNow()` is the current time, `newGuid()` unknown.
//!
//! Names and ids: a resource's `name` is always a string so results can name it. When it
//! depends on a value that is not known (a parameter without a value), the unknown parts are
//! written as placeholders, `{parameterName}` (e.g. `mlw{name}{environment}`), and `{copyIndex}`;
//! a name that still cannot be rendered keeps its expression text. Property values are never
//! rendered this way: they stay unknown markers.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::PolicyError;
use crate::expr::{self, get_ci, to_text, truthy, type_name, Scope, Template};
use crate::inventory::normalize_body;
use crate::jsontext::{self, path_text, Lines, Seg};
use crate::resource::{unknown, unknown_reason, Resource, SourceLocation};

/// The body key of a resource whose deployment is uncertain (a `condition` that could not be
/// resolved, a `copy` count that could not): the value is the reason. No policy alias reads it.
pub const NOTE_KEY: &str = "$cmkvault.note";

/// The largest `copy` count ARM accepts.
const MAX_COPY: i64 = 800;
/// How deep nested deployments may go.
const MAX_NESTING: usize = 16;
/// How long a chain of parameters and variables using each other may be.
const MAX_CHAIN: usize = 200;
/// The most resources one template may resolve to (copy loops multiply).
const MAX_RESOURCES: usize = 100_000;

/// What a real deployment would know: the target subscription, resource group and location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentContext {
    /// `subscription().subscriptionId`.
    pub subscription_id: String,
    /// `subscription().tenantId`, `tenant().tenantId`.
    pub tenant_id: String,
    /// `resourceGroup().name`.
    pub resource_group: String,
    /// `resourceGroup().location` (and `deployment().location`).
    pub location: String,
    /// `deployment().name`; `None`: the template file's stem.
    pub deployment_name: Option<String>,
}

impl Default for DeploymentContext {
    fn default() -> Self {
        DeploymentContext {
            subscription_id: "00000000-0000-0000-0000-000000000000".into(),
            tenant_id: "00000000-0000-0000-0000-000000000000".into(),
            resource_group: "resourceGroup".into(),
            location: "eastus".into(),
            deployment_name: None,
        }
    }
}

/// The resources a template resolves to, and notes about what could not be resolved.
#[derive(Clone, Debug, Default)]
pub struct TemplateOutput {
    /// The resources, in template order (children after their parent).
    pub resources: Vec<Resource>,
    /// Remarks worth showing the user (`FILE line N: ...`): unresolved conditions and copy
    /// counts, linked templates that were not read.
    pub notes: Vec<String>,
}

/// Whether a parsed JSON value is an ARM template (`$schema` naming a deploymentTemplate, or,
/// without `$schema`, `resources` beside `contentVersion`).
pub fn is_template(v: &Value) -> bool {
    let Value::Object(m) = v else { return false };
    match m.get("$schema").and_then(Value::as_str) {
        Some(s) => s.to_ascii_lowercase().contains("deploymenttemplate"),
        None => m.contains_key("resources") && m.contains_key("contentVersion"),
    }
}

/// Whether a parsed JSON value is an ARM parameter file (`$schema` naming deploymentParameters).
pub fn is_parameter_file(v: &Value) -> bool {
    v.get("$schema")
        .and_then(Value::as_str)
        .is_some_and(|s| s.to_ascii_lowercase().contains("deploymentparameters"))
}

/// Resolves a template file (`text`, named `file` in messages and sources) with an optional
/// parameter file (`(text, file)`).
pub fn load_template(
    text: &str,
    file: &str,
    parameters: Option<(&str, &str)>,
    ctx: &DeploymentContext,
) -> Result<TemplateOutput, PolicyError> {
    let parsed = jsontext::parse(text, file)?;
    if !is_template(&parsed.value) {
        return Err(PolicyError::Input(format!(
            "{file}: not an ARM template ($schema .../deploymentTemplate.json#)"
        )));
    }
    resolve_template(&parsed.value, &parsed.text, file, parameters, ctx)
}

/// Resolves an already parsed template; `text` is the file's text (for line numbers).
pub(crate) fn resolve_template(
    template: &Value,
    text: &str,
    file: &str,
    parameters: Option<(&str, &str)>,
    ctx: &DeploymentContext,
) -> Result<TemplateOutput, PolicyError> {
    let supplied = match parameters {
        Some((ptext, pfile)) => read_parameter_file(ptext, pfile)?,
        None => HashMap::new(),
    };
    let lines = jsontext::container_lines(text, usize::MAX);
    let deployment_name = ctx
        .deployment_name
        .clone()
        .unwrap_or_else(|| file_stem(file));
    let target = Target::top(template, ctx);
    let tpl = Tpl::new(
        file,
        template,
        target.clone(),
        deployment_name,
        supplied,
        parameters.map(|p| p.1),
    )?;
    let mut walk = Walk {
        file,
        lines: &lines,
        out: TemplateOutput::default(),
    };
    if let Some((key, resources)) = entry_ci(obj(template), "resources") {
        walk.resources(
            &tpl,
            resources,
            vec![Seg::Key(key.clone())],
            None,
            &target,
            0,
        )?;
    }
    Ok(walk.out)
}

fn file_stem(file: &str) -> String {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let stem = base.split('.').next().unwrap_or(base);
    if stem.is_empty() {
        "deployment".into()
    } else {
        stem.to_string()
    }
}

fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// An object's members; no members for anything else.
fn obj(v: &Value) -> &Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => empty_map(),
    }
}

/// A member by case-insensitive name, with its key as written.
fn entry_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Option<(&'a String, &'a Value)> {
    m.get_key_value(key)
        .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
}

/// A parameter value given from outside the template.
type Supplied = HashMap<String, (String, Value)>;

/// Reads a parameter file: `{"parameters": {"p": {"value": ...}}}` (with or without `$schema`), or
/// the bare `{"p": {"value": ...}}` the Azure CLI also accepts. Keys are lower-cased.
fn read_parameter_file(text: &str, file: &str) -> Result<Supplied, PolicyError> {
    if text.trim_start().starts_with("using ") {
        return Err(PolicyError::Input(format!(
            "{file}: Bicep parameter files (.bicepparam) are not supported; build a JSON parameter \
             file with `az bicep build-params`"
        )));
    }
    let parsed = jsontext::parse(text, file)?;
    let Value::Object(root) = &parsed.value else {
        return Err(PolicyError::Input(format!(
            "{file}: not a parameter file: expected an object, found {}",
            type_name(&parsed.value)
        )));
    };
    if is_template(&parsed.value) {
        return Err(PolicyError::Input(format!(
            "{file}: this is a template, not a parameter file"
        )));
    }
    let entries = match entry_ci(root, "parameters") {
        Some((_, Value::Object(p))) if !root.contains_key("value") => p,
        _ if !root.contains_key("$schema") => root,
        _ => {
            return Err(PolicyError::Input(format!(
                "{file}: not a parameter file: no \"parameters\" object"
            )))
        }
    };
    let mut out = HashMap::new();
    for (name, entry) in entries {
        if name.starts_with('$') || name == "contentVersion" {
            continue;
        }
        let v = match entry {
            Value::Object(e) if e.contains_key("value") => e["value"].clone(),
            Value::Object(e) if e.contains_key("reference") => unknown(format!(
                "parameter '{name}' is a Key Vault secret reference"
            )),
            _ => {
                return Err(PolicyError::Input(format!(
                    "{file}: parameter '{name}' has neither \"value\" nor \"reference\""
                )))
            }
        };
        out.insert(name.to_lowercase(), (name.clone(), v));
    }
    Ok(out)
}

/// Where a template deploys: the level of its scope, and the context values.
#[derive(Clone, Debug)]
struct Target {
    level: Level,
    subscription_id: String,
    tenant_id: String,
    resource_group: String,
    location: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    ResourceGroup,
    Subscription,
    ManagementGroup,
    Tenant,
}

impl Target {
    fn top(template: &Value, ctx: &DeploymentContext) -> Target {
        let schema = template
            .get("$schema")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let level = if schema.contains("subscriptiondeploymenttemplate") {
            Level::Subscription
        } else if schema.contains("managementgroupdeploymenttemplate") {
            Level::ManagementGroup
        } else if schema.contains("tenantdeploymenttemplate") {
            Level::Tenant
        } else {
            Level::ResourceGroup
        };
        Target {
            level,
            subscription_id: ctx.subscription_id.clone(),
            tenant_id: ctx.tenant_id.clone(),
            resource_group: ctx.resource_group.clone(),
            location: ctx.location.clone(),
        }
    }

    fn rg_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription_id, self.resource_group
        )
    }

    /// The id prefix of a resource deployed at this target.
    fn prefix(&self) -> String {
        match self.level {
            Level::ResourceGroup => self.rg_id(),
            Level::Subscription => format!("/subscriptions/{}", self.subscription_id),
            Level::ManagementGroup => {
                "/providers/Microsoft.Management/managementGroups/{managementGroup}".into()
            }
            Level::Tenant => String::new(),
        }
    }
}

/// `Namespace/type/child` with names `a/b` → `Namespace/type/a/child/b`.
fn interleave(rtype: &str, names: &[&str]) -> String {
    let mut segs = rtype.split('/');
    let ns = segs.next().unwrap_or("");
    let types: Vec<&str> = segs.collect();
    let names: Vec<&str> = names.iter().flat_map(|n| n.split('/')).collect();
    if types.len() == names.len() {
        let mut s = ns.to_string();
        for (t, n) in types.iter().zip(&names) {
            s.push('/');
            s.push_str(t);
            s.push('/');
            s.push_str(n);
        }
        s
    } else {
        format!("{rtype}/{}", names.join("/"))
    }
}

fn looks_like_guid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// A parameter or variable being resolved, for the cache and cycle detection.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Slot {
    Param(String),
    Var(String),
}

/// One template's evaluation scope: its parameters, variables, copy loops and deployment.
struct Tpl<'t> {
    template: &'t Value,
    target: Target,
    deployment_name: String,
    declared: HashMap<String, (String, &'t Value)>,
    supplied: Supplied,
    vars: &'t Map<String, Value>,
    cache: RefCell<HashMap<(Slot, bool), Value>>,
    active: RefCell<HashSet<Slot>>,
    copies: RefCell<Vec<(String, Value)>>,
    placeholders: Cell<bool>,
}

impl<'t> Tpl<'t> {
    fn new(
        file: &str,
        template: &'t Value,
        target: Target,
        deployment_name: String,
        supplied: Supplied,
        supplied_from: Option<&str>,
    ) -> Result<Tpl<'t>, PolicyError> {
        let m = obj(template);
        let mut declared = HashMap::new();
        if let Some((_, p)) = entry_ci(m, "parameters") {
            let Value::Object(p) = p else {
                return Err(PolicyError::Input(format!(
                    "{file}: \"parameters\" must be an object"
                )));
            };
            for (k, v) in p {
                declared.insert(k.to_lowercase(), (k.clone(), v));
            }
        }
        for (lk, (name, _)) in &supplied {
            if !declared.contains_key(lk) {
                let from = supplied_from.unwrap_or("the nested deployment");
                return Err(PolicyError::Input(format!(
                    "{from}: parameter '{name}' is not declared in {file}'s template"
                )));
            }
        }
        let vars = match entry_ci(m, "variables") {
            Some((_, Value::Object(v))) => v,
            Some(_) => {
                return Err(PolicyError::Input(format!(
                    "{file}: \"variables\" must be an object"
                )))
            }
            None => empty_map(),
        };
        Ok(Tpl {
            template,
            target,
            deployment_name,
            declared,
            supplied,
            vars,
            cache: RefCell::new(HashMap::new()),
            active: RefCell::new(HashSet::new()),
            copies: RefCell::new(Vec::new()),
            placeholders: Cell::new(false),
        })
    }

    /// Resolves a template value: expressions evaluated, property `copy` loops expanded.
    /// Evaluation failures become unknown markers; only input errors (an expression that does
    /// not parse) are errors.
    fn resolve(&self, v: &Value) -> Result<Value, PolicyError> {
        match v {
            Value::String(s) => self.eval_string(s),
            Value::Array(a) => a.iter().map(|x| self.resolve(x)).collect(),
            Value::Object(m) => {
                let mut out = Map::with_capacity(m.len());
                for (k, x) in m {
                    if k.eq_ignore_ascii_case("copy") && is_property_copy(x) {
                        self.expand_property_copy(x, &mut out)?;
                        continue;
                    }
                    let key = match expr::classify(k) {
                        Template::Literal(l) => l.into_owned(),
                        Template::Expression(_) => self.display(k)?,
                    };
                    out.insert(key, self.resolve(x)?);
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn eval_string(&self, s: &str) -> Result<Value, PolicyError> {
        match expr::classify(s) {
            Template::Literal(l) => Ok(Value::String(l.into_owned())),
            Template::Expression(text) => {
                let e = expr::parse(text)?;
                match expr::eval(&e, self) {
                    Ok(v) => Ok(v),
                    Err(PolicyError::Eval(reason)) => Ok(unknown(format!(
                        "{s} cannot be evaluated offline: {reason}"
                    ))),
                    Err(other) => Err(other),
                }
            }
        }
    }

    /// Resolves a value that must become a string (a name, an id, a key): strictly first, then
    /// with placeholders for unknown parameters, else the raw text.
    fn display(&self, raw: &str) -> Result<String, PolicyError> {
        if let Value::String(s) = self.eval_string(raw)? {
            return Ok(s);
        }
        let was = self.placeholders.replace(true);
        let r = self.eval_string(raw);
        self.placeholders.set(was);
        Ok(match r? {
            Value::String(s) => s,
            _ => raw.to_string(),
        })
    }

    fn display_value(&self, raw: &Value) -> Result<String, PolicyError> {
        match raw {
            Value::String(s) => self.display(s),
            other => Ok(to_text(other)),
        }
    }

    fn expand_property_copy(
        &self,
        copy: &Value,
        out: &mut Map<String, Value>,
    ) -> Result<(), PolicyError> {
        for entry in copy.as_array().into_iter().flatten() {
            let e = obj(entry);
            let name = e.get("name").map(to_text).unwrap_or_default();
            let count = self.resolve(e.get("count").unwrap_or(&Value::Null))?;
            let input = e.get("input").unwrap_or(&Value::Null);
            let v = match copy_count(&count) {
                Ok(Some(n)) => {
                    let mut items = Vec::new();
                    for i in 0..n {
                        self.copies
                            .borrow_mut()
                            .push((name.to_lowercase(), Value::from(i)));
                        let r = self.resolve(input);
                        self.copies.borrow_mut().pop();
                        items.push(r?);
                    }
                    Value::Array(items)
                }
                Ok(None) => count,
                Err(reason) => unknown(format!("copy '{name}': {reason}")),
            };
            out.insert(name, v);
        }
        Ok(())
    }

    fn cached(
        &self,
        slot: Slot,
        compute: impl FnOnce() -> Result<Value, PolicyError>,
    ) -> Result<Value, PolicyError> {
        let key = (slot.clone(), self.placeholders.get());
        if let Some(v) = self.cache.borrow().get(&key) {
            return Ok(v.clone());
        }
        if self.active.borrow().len() >= MAX_CHAIN {
            return Err(PolicyError::Input(format!(
                "parameters and variables refer to each other more than {MAX_CHAIN} deep"
            )));
        }
        if !self.active.borrow_mut().insert(slot.clone()) {
            let what = match &slot {
                Slot::Param(p) => format!("parameter '{p}'"),
                Slot::Var(v) => format!("variable '{v}'"),
            };
            return Err(PolicyError::Input(format!("{what} refers to itself")));
        }
        let r = compute();
        self.active.borrow_mut().remove(&slot);
        let v = r?;
        self.cache.borrow_mut().insert(key, v.clone());
        Ok(v)
    }

    fn parameter(&self, name: &str) -> Result<Value, PolicyError> {
        let lname = name.to_lowercase();
        let Some((declared_name, decl)) = self.declared.get(&lname) else {
            return Err(PolicyError::Eval(format!(
                "parameter '{name}' is not declared"
            )));
        };
        let v = self.cached(Slot::Param(lname.clone()), || {
            if let Some((_, v)) = self.supplied.get(&lname) {
                return Ok(v.clone());
            }
            match get_ci(obj(decl), "defaultValue") {
                Some(d) => self.resolve(d).map_err(|e| {
                    PolicyError::Input(format!("parameter '{declared_name}' defaultValue: {e}"))
                }),
                None => Ok(unknown(format!(
                    "parameter '{declared_name}' has no value (no parameter file value and no \
                     defaultValue)"
                ))),
            }
        })?;
        if self.placeholders.get() && unknown_reason(&v).is_some() {
            return Ok(Value::String(format!("{{{declared_name}}}")));
        }
        Ok(v)
    }

    fn variable(&self, name: &str) -> Result<Value, PolicyError> {
        let lname = name.to_lowercase();
        if let Some((key, raw)) =
            entry_ci(self.vars, name).filter(|(k, _)| !k.eq_ignore_ascii_case("copy"))
        {
            return self.cached(Slot::Var(lname), || {
                self.resolve(raw)
                    .map_err(|e| PolicyError::Input(format!("variable '{key}': {e}")))
            });
        }
        let copy = self
            .vars
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("copy"))
            .and_then(|(_, c)| c.as_array());
        let entry = copy.into_iter().flatten().find(|e| {
            e.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        });
        let Some(entry) = entry else {
            return Err(PolicyError::Eval(format!(
                "variable '{name}' is not declared"
            )));
        };
        self.cached(Slot::Var(lname.clone()), || {
            let wrapped = Value::Array(vec![entry.clone()]);
            let mut out = Map::new();
            self.expand_property_copy(&wrapped, &mut out)
                .map_err(|e| PolicyError::Input(format!("variable '{name}': {e}")))?;
            Ok(out
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or(Value::Null))
        })
    }

    fn copy_index(&self, args: &[Value]) -> Result<Value, PolicyError> {
        let (loop_name, offset) = match args {
            [] => (None, 0),
            [Value::Number(n)] => (None, n.as_i64().unwrap_or(0)),
            [Value::String(s)] => (Some(s.to_lowercase()), 0),
            [Value::String(s), Value::Number(n)] => {
                (Some(s.to_lowercase()), n.as_i64().unwrap_or(0))
            }
            _ => {
                return Err(PolicyError::Eval(
                    "copyIndex() takes [loopName], [offset]".into(),
                ))
            }
        };
        let copies = self.copies.borrow();
        let frame = match &loop_name {
            None => copies.last(),
            Some(n) => copies.iter().rev().find(|(k, _)| k == n),
        };
        let Some((_, index)) = frame else {
            return Err(PolicyError::Eval(match loop_name {
                Some(n) => format!("copyIndex('{n}') outside that copy loop"),
                None => "copyIndex() outside a copy loop".into(),
            }));
        };
        match index.as_i64() {
            Some(i) => Ok(Value::from(i + offset)),
            None if self.placeholders.get() => Ok(Value::String("{copyIndex}".into())),
            None => Ok(index.clone()),
        }
    }

    fn resource_group(&self) -> Result<Value, PolicyError> {
        if self.target.level != Level::ResourceGroup {
            return Err(PolicyError::Eval(
                "resourceGroup() is not available outside a resource group deployment".into(),
            ));
        }
        Ok(serde_json::json!({
            "id": self.target.rg_id(),
            "name": self.target.resource_group,
            "type": "Microsoft.Resources/resourceGroups",
            "location": self.target.location,
            "tags": {},
            "properties": {"provisioningState": "Succeeded"},
        }))
    }

    fn deployment(&self) -> Value {
        let mut template = Map::new();
        for k in ["contentVersion", "metadata", "languageVersion"] {
            if let Some(v) = self.template.get(k) {
                template.insert(k.into(), v.clone());
            }
        }
        let mut d = serde_json::json!({
            "name": self.deployment_name,
            "properties": {
                "template": template,
                "templateLink": unknown(
                    "the template is read from a file: deployment().properties.templateLink is unknown"
                ),
                "parameters": {},
                "mode": "Incremental",
                "provisioningState": "Accepted",
            },
        });
        if self.target.level != Level::ResourceGroup {
            d["location"] = Value::String(self.target.location.clone());
        }
        d
    }

    /// `resourceId([subscriptionId], [resourceGroupName], type, name...)` and the other
    /// id-building functions.
    fn build_id(&self, function: &str, args: &[Value]) -> Result<Value, PolicyError> {
        let parts: Vec<String> = args
            .iter()
            .map(|a| match a {
                Value::String(s) => Ok(s.clone()),
                v => Err(PolicyError::Eval(format!(
                    "{function}() expects strings, got {}",
                    type_name(v)
                ))),
            })
            .collect::<Result<_, _>>()?;
        if function == "extensionresourceid" {
            let [base, rtype, names @ ..] = parts.as_slice() else {
                return Err(PolicyError::Eval(
                    "extensionResourceId() takes resourceId, type, name...".into(),
                ));
            };
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            return Ok(Value::String(format!(
                "{base}/providers/{}",
                interleave(rtype, &names)
            )));
        }
        let Some(ti) = parts.iter().position(|p| p.contains('/')) else {
            return Err(PolicyError::Eval(format!(
                "{function}() needs a resource type (Namespace/type)"
            )));
        };
        let (before, rest) = parts.split_at(ti);
        let rtype = &rest[0];
        let names: Vec<&str> = rest[1..].iter().map(String::as_str).collect();
        let tail = format!("/providers/{}", interleave(rtype, &names));
        let t = &self.target;
        let id = match function {
            "subscriptionresourceid" => {
                let sub = before.first().unwrap_or(&t.subscription_id);
                format!("/subscriptions/{sub}{tail}")
            }
            "tenantresourceid" => tail,
            "managementgroupresourceid" => {
                let mg = before.first().map_or("{managementGroup}", String::as_str);
                format!("/providers/Microsoft.Management/managementGroups/{mg}{tail}")
            }
            _ => {
                let (sub, rg) = match before {
                    [] => (t.subscription_id.as_str(), None),
                    [one] if looks_like_guid(one) && t.level != Level::ResourceGroup => {
                        (one.as_str(), None)
                    }
                    [rg] => (t.subscription_id.as_str(), Some(rg.as_str())),
                    [sub, rg, ..] => (sub.as_str(), Some(rg.as_str())),
                };
                match (rg, t.level) {
                    (Some(rg), _) => format!("/subscriptions/{sub}/resourceGroups/{rg}{tail}"),
                    (None, Level::ResourceGroup) => format!(
                        "/subscriptions/{sub}/resourceGroups/{}{tail}",
                        t.resource_group
                    ),
                    (None, _) => format!("/subscriptions/{sub}{tail}"),
                }
            }
        };
        Ok(Value::String(id))
    }
}

fn is_property_copy(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        !a.is_empty()
            && a.iter().all(|e| {
                e.as_object()
                    .is_some_and(|o| o.contains_key("name") && o.contains_key("input"))
            })
    })
}

/// A `copy` count: `Ok(Some(n))`, `Ok(None)` when unknown (the count is an unknown marker), or
/// why it is not a valid count.
fn copy_count(v: &Value) -> Result<Option<i64>, String> {
    if unknown_reason(v).is_some() {
        return Ok(None);
    }
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("count must be an integer, got {}", type_name(v)))?;
    if !(0..=MAX_COPY).contains(&n) {
        return Err(format!("count {n} is outside 0..{MAX_COPY}"));
    }
    Ok(Some(n))
}

fn environment() -> Value {
    serde_json::json!({
        "name": "AzureCloud",
        "gallery": "https://gallery.azure.com/",
        "graph": "https://graph.windows.net/",
        "portal": "https://portal.azure.com",
        "graphAudience": "https://graph.windows.net/",
        "activeDirectoryDataLake": "https://datalake.azure.net/",
        "batch": "https://batch.core.windows.net/",
        "media": "https://rest.media.azure.net",
        "sqlManagement": "https://management.core.windows.net:8443/",
        "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/master/arm-compute/quickstart-templates/aliases.json",
        "resourceManager": "https://management.azure.com/",
        "authentication": {
            "loginEndpoint": "https://login.microsoftonline.com/",
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD"
        },
        "suffixes": {
            "acrLoginServer": ".azurecr.io",
            "azureDatalakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
            "azureDatalakeStoreFileSystem": "azuredatalakestore.net",
            "azureFrontDoorEndpointSuffix": "azurefd.net",
            "keyvaultDns": ".vault.azure.net",
            "sqlServerHostname": ".database.windows.net",
            "storage": "core.windows.net"
        }
    })
}

impl Scope for Tpl<'_> {
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>> {
        const MINE: &[&str] = &[
            "parameters",
            "variables",
            "copyindex",
            "resourcegroup",
            "subscription",
            "tenant",
            "deployment",
            "environment",
            "resourceid",
            "subscriptionresourceid",
            "tenantresourceid",
            "extensionresourceid",
            "managementgroupresourceid",
            "utcnow",
        ];
        if !MINE.contains(&name) {
            if let Some(r) = expr::call_common(name, args) {
                return Some(r);
            }
            let reason = match name {
                "reference" | "referenceget" | "resourceinfo" => {
                    format!("{name}() reads a deployed resource and cannot be resolved offline")
                }
                n if n.starts_with("list") => {
                    format!("{name}() reads a deployed resource and cannot be resolved offline")
                }
                "newguid" => "newGuid() differs on every deployment".to_string(),
                "managementgroup" | "pickzones" | "providers" => {
                    format!("{name}() cannot be resolved offline")
                }
                _ => format!("template function {name}() is not supported offline"),
            };
            return Some(Ok(unknown(reason)));
        }
        if let Some(u) = args.iter().find(|a| unknown_reason(a).is_some()) {
            // copyIndex and the name-reading functions take literal arguments in practice; an
            // unknown argument anywhere makes the result unknown.
            return Some(Ok(u.clone()));
        }
        let one_string = |what: &str| -> Result<&str, PolicyError> {
            match args {
                [Value::String(s)] => Ok(s.as_str()),
                _ => Err(PolicyError::Eval(format!("{what}() takes one string"))),
            }
        };
        Some(match name {
            "parameters" => one_string("parameters").and_then(|p| self.parameter(p)),
            "variables" => one_string("variables").and_then(|v| self.variable(v)),
            "copyindex" => self.copy_index(args),
            "resourcegroup" => self.resource_group(),
            "subscription" => Ok(serde_json::json!({
                "id": format!("/subscriptions/{}", self.target.subscription_id),
                "subscriptionId": self.target.subscription_id,
                "tenantId": self.target.tenant_id,
                "displayName": "subscription",
            })),
            "tenant" => Ok(serde_json::json!({
                "tenantId": self.target.tenant_id,
                "countryCode": "US",
                "displayName": "tenant",
            })),
            "deployment" => Ok(self.deployment()),
            "environment" => Ok(environment()),
            "utcnow" => {
                let fmt = match args {
                    [] => Ok(None),
                    [Value::String(f)] => Ok(Some(f.as_str())),
                    _ => Err(PolicyError::Eval("utcNow() takes [format]".into())),
                };
                fmt.map(|f| {
                    Value::String(
                        crate::datetime::DateTime::now()
                            .format(Some(f.unwrap_or("yyyyMMddTHHmmssZ"))),
                    )
                })
            }
            id_fn => self.build_id(id_fn, args),
        })
    }
}

/// The parent of a nested child resource.
struct Parent {
    rtype: String,
    name: String,
}

/// The walk over a template's resources, collecting the output.
struct Walk<'w> {
    file: &'w str,
    lines: &'w Lines,
    out: TemplateOutput,
}

impl Walk<'_> {
    fn line(&self, path: &[Seg]) -> Option<u32> {
        self.lines.get(path).copied()
    }

    fn at(&self, path: &[Seg]) -> String {
        match self.line(path) {
            Some(l) => format!("{} line {l}", self.file),
            None => format!("{} {}", self.file, path_text(path)),
        }
    }

    /// Walks a `resources` array (or `languageVersion` 2.0 object).
    fn resources(
        &mut self,
        tpl: &Tpl<'_>,
        resources: &Value,
        path: Vec<Seg>,
        parent: Option<&Parent>,
        target: &Target,
        depth: usize,
    ) -> Result<(), PolicyError> {
        let entries: Vec<(Vec<Seg>, &Value)> = match resources {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut p = path.clone();
                    p.push(Seg::Index(i));
                    (p, r)
                })
                .collect(),
            Value::Object(m) => {
                let mut v: Vec<(Vec<Seg>, &Value)> = m
                    .iter()
                    .map(|(k, r)| {
                        let mut p = path.clone();
                        p.push(Seg::Key(k.clone()));
                        (p, r)
                    })
                    .collect();
                v.sort_by_key(|(p, _)| self.line(p).unwrap_or(u32::MAX));
                v
            }
            Value::Null => Vec::new(),
            other => {
                return Err(PolicyError::Input(format!(
                    "{}: \"resources\" must be an array or an object, found {}",
                    self.at(&path),
                    type_name(other)
                )))
            }
        };
        for (p, r) in entries {
            self.resource(tpl, r, p, parent, target, depth)?;
        }
        Ok(())
    }

    fn resource(
        &mut self,
        tpl: &Tpl<'_>,
        raw: &Value,
        path: Vec<Seg>,
        parent: Option<&Parent>,
        target: &Target,
        depth: usize,
    ) -> Result<(), PolicyError> {
        let Value::Object(m) = raw else {
            return Err(PolicyError::Input(format!(
                "{}: a resource must be an object, found {}",
                self.at(&path),
                type_name(raw)
            )));
        };
        if m.get("existing").is_some_and(|e| e == &Value::Bool(true)) || m.contains_key("import") {
            return Ok(());
        }
        let ctx_err = |e: PolicyError, at: String| match e {
            PolicyError::Input(msg) => PolicyError::Input(format!("{at}: {msg}")),
            other => PolicyError::Input(format!("{at}: {other}")),
        };
        let Some(copy) = get_ci(m, "copy") else {
            return self.conditional(tpl, m, &path, parent, target, None, depth);
        };
        let c = obj(copy);
        let loop_name = c
            .get("name")
            .map(to_text)
            .unwrap_or_default()
            .to_lowercase();
        let count = tpl
            .resolve(c.get("count").unwrap_or(&Value::Null))
            .map_err(|e| ctx_err(e, self.at(&path)))?;
        match copy_count(&count) {
            Ok(Some(n)) => {
                for i in 0..n {
                    tpl.copies
                        .borrow_mut()
                        .push((loop_name.clone(), Value::from(i)));
                    let r = self.conditional(tpl, m, &path, parent, target, None, depth);
                    tpl.copies.borrow_mut().pop();
                    r?;
                }
                Ok(())
            }
            Ok(None) => {
                let note = format!(
                    "copy loop '{loop_name}' has a count that could not be resolved ({}); one \
                     instance evaluated",
                    unknown_reason(&count).unwrap_or("")
                );
                tpl.copies.borrow_mut().push((
                    loop_name.clone(),
                    unknown(format!(
                        "copyIndex() of loop '{loop_name}' with an unknown count"
                    )),
                ));
                let r = self.conditional(tpl, m, &path, parent, target, Some(note), depth);
                tpl.copies.borrow_mut().pop();
                r
            }
            Err(reason) => Err(PolicyError::Input(format!(
                "{}: copy loop '{loop_name}': {reason}",
                self.at(&path)
            ))),
        }
    }

    /// One instance (of a copy loop, or the resource): its `condition` (evaluated per
    /// instance, as it may use `copyIndex()`), then the resource.
    #[allow(clippy::too_many_arguments)]
    fn conditional(
        &mut self,
        tpl: &Tpl<'_>,
        m: &Map<String, Value>,
        path: &[Seg],
        parent: Option<&Parent>,
        target: &Target,
        mut note: Option<String>,
        depth: usize,
    ) -> Result<(), PolicyError> {
        if let Some(cond) = get_ci(m, "condition") {
            let at = self.at(path);
            let c = tpl.resolve(cond).map_err(|e| match e {
                PolicyError::Input(msg) => PolicyError::Input(format!("{at}: {msg}")),
                other => PolicyError::Input(format!("{at}: {other}")),
            })?;
            if let Some(why) = unknown_reason(&c) {
                let n = format!(
                    "condition {} could not be resolved ({why}); evaluated as if deployed",
                    to_text(cond)
                );
                note = Some(match note {
                    Some(prev) => format!("{n}; {prev}"),
                    None => n,
                });
            } else {
                match truthy(&c) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(e) => return Err(PolicyError::Input(format!("{at}: condition: {e}"))),
                }
            }
        }
        self.instance(tpl, m, path, parent, target, note, depth)
    }

    #[allow(clippy::too_many_arguments)]
    fn instance(
        &mut self,
        tpl: &Tpl<'_>,
        m: &Map<String, Value>,
        path: &[Seg],
        parent: Option<&Parent>,
        target: &Target,
        note: Option<String>,
        depth: usize,
    ) -> Result<(), PolicyError> {
        let at = self.at(path);
        let err = |e: PolicyError| match e {
            PolicyError::Input(msg) => PolicyError::Input(format!("{at}: {msg}")),
            other => PolicyError::Input(format!("{at}: {other}")),
        };
        let raw_type = get_ci(m, "type")
            .ok_or_else(|| PolicyError::Input(format!("{at}: the resource has no \"type\"")))?;
        let raw_name = get_ci(m, "name")
            .ok_or_else(|| PolicyError::Input(format!("{at}: the resource has no \"name\"")))?;
        let mut rtype = tpl.display_value(raw_type).map_err(err)?;
        let mut name = tpl.display_value(raw_name).map_err(err)?;
        if let Some(p) = parent {
            if !rtype.contains('/') {
                rtype = format!("{}/{rtype}", p.rtype);
            }
            let type_depth = rtype.split('/').count() - 1;
            if name.split('/').count() < type_depth {
                name = format!("{}/{name}", p.name);
            }
        }
        if rtype.eq_ignore_ascii_case("Microsoft.Resources/deployments") {
            return self.nested(tpl, m, path, target, &name, depth);
        }
        let api_version = match get_ci(m, "apiVersion") {
            Some(v) => match tpl.resolve(v).map_err(err)? {
                Value::String(s) => Some(s),
                _ => None,
            },
            None => None,
        };
        let names: Vec<&str> = vec![name.as_str()];
        let id = match get_ci(m, "scope") {
            Some(scope) => {
                let s = tpl.display_value(scope).map_err(err)?;
                let base = if s.starts_with('/') {
                    s
                } else {
                    format!("{}/providers/{s}", target.prefix())
                };
                format!("{base}/providers/{}", interleave(&rtype, &names))
            }
            None if rtype.eq_ignore_ascii_case("Microsoft.Resources/resourceGroups") => {
                format!(
                    "/subscriptions/{}/resourceGroups/{name}",
                    target.subscription_id
                )
            }
            None => format!(
                "{}/providers/{}",
                target.prefix(),
                interleave(&rtype, &names)
            ),
        };
        let mut body = Map::new();
        body.insert("id".into(), Value::String(id));
        body.insert("name".into(), Value::String(name.clone()));
        body.insert("type".into(), Value::String(rtype.clone()));
        for key in [
            "location",
            "kind",
            "sku",
            "identity",
            "tags",
            "properties",
            "plan",
            "zones",
            "extendedLocation",
            "managedBy",
            "etag",
        ] {
            if let Some(raw) = get_ci(m, key) {
                let v = tpl.resolve(raw).map_err(err)?;
                if !v.is_null() {
                    body.insert(key.into(), v);
                }
            }
        }
        if let Some(n) = &note {
            body.insert(NOTE_KEY.into(), Value::String(n.clone()));
            self.out.notes.push(format!("{at}: {rtype} '{name}': {n}"));
        }
        if self.out.resources.len() >= MAX_RESOURCES {
            return Err(PolicyError::Input(format!(
                "{at}: the template resolves to more than {MAX_RESOURCES} resources"
            )));
        }
        let mut body = Value::Object(body);
        normalize_body(&mut body);
        self.out.resources.push(Resource {
            body,
            api_version,
            source: Some(SourceLocation {
                file: self.file.to_string(),
                line: self.line(path),
            }),
        });
        if let Some((key, children)) = entry_ci(m, "resources") {
            let mut p = path.to_vec();
            p.push(Seg::Key(key.clone()));
            let me = Parent { rtype, name };
            self.resources(tpl, children, p, Some(&me), target, depth)?;
        }
        Ok(())
    }

    /// A nested `Microsoft.Resources/deployments`: its inline template's resources, flattened.
    fn nested(
        &mut self,
        tpl: &Tpl<'_>,
        m: &Map<String, Value>,
        path: &[Seg],
        target: &Target,
        name: &str,
        depth: usize,
    ) -> Result<(), PolicyError> {
        let at = self.at(path);
        if depth >= MAX_NESTING {
            return Err(PolicyError::Input(format!(
                "{at}: nested deployments deeper than {MAX_NESTING} levels"
            )));
        }
        let err = |e: PolicyError| match e {
            PolicyError::Input(msg) => PolicyError::Input(format!("{at}: {msg}")),
            other => PolicyError::Input(format!("{at}: {other}")),
        };
        let Some((pkey, props)) = entry_ci(m, "properties") else {
            return Ok(());
        };
        let props_m = obj(props);
        let Some((tkey, inner)) = entry_ci(props_m, "template") else {
            if get_ci(props_m, "templateLink").is_some() {
                self.out.notes.push(format!(
                    "{at}: nested deployment '{name}' links its template (templateLink): its \
                     resources are not evaluated; scan that template separately"
                ));
            }
            return Ok(());
        };
        if !inner.is_object() {
            return Err(PolicyError::Input(format!(
                "{at}: properties.template must be an object"
            )));
        }
        // Where the nested deployment deploys.
        let mut inner_target = target.clone();
        if let Some(sub) = get_ci(m, "subscriptionId") {
            inner_target.subscription_id = tpl.display_value(sub).map_err(err)?;
        }
        if let Some(rg) = get_ci(m, "resourceGroup") {
            inner_target.resource_group = tpl.display_value(rg).map_err(err)?;
            inner_target.level = Level::ResourceGroup;
        } else if get_ci(m, "subscriptionId").is_some() && target.level != Level::ResourceGroup {
            inner_target.level = Level::Subscription;
        }
        if let Some(sch) = inner.get("$schema").and_then(Value::as_str) {
            let s = sch.to_ascii_lowercase();
            if s.contains("subscriptiondeploymenttemplate") && get_ci(m, "resourceGroup").is_none()
            {
                inner_target.level = Level::Subscription;
            }
        }
        let inner_scope = get_ci(props_m, "expressionEvaluationOptions")
            .and_then(|o| get_ci(obj(o), "scope"))
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("inner"));
        let mut inner_path = path.to_vec();
        inner_path.push(Seg::Key(pkey.clone()));
        inner_path.push(Seg::Key(tkey.clone()));
        let Some((rkey, resources)) = entry_ci(obj(inner), "resources") else {
            return Ok(());
        };
        inner_path.push(Seg::Key(rkey.clone()));
        if inner_scope {
            let mut supplied = HashMap::new();
            if let Some(Value::Object(params)) = get_ci(props_m, "parameters") {
                for (k, entry) in params {
                    let e = obj(entry);
                    let v = if let Some(v) = e.get("value") {
                        tpl.resolve(v).map_err(err)?
                    } else if e.contains_key("reference") {
                        unknown(format!("parameter '{k}' is a Key Vault secret reference"))
                    } else {
                        return Err(PolicyError::Input(format!(
                            "{at}: parameter '{k}' has neither \"value\" nor \"reference\""
                        )));
                    };
                    supplied.insert(k.to_lowercase(), (k.clone(), v));
                }
            }
            let inner_tpl = Tpl::new(
                self.file,
                inner,
                inner_target.clone(),
                name.rsplit('/').next().unwrap_or(name).to_string(),
                supplied,
                None,
            )
            .map_err(|e| match e {
                PolicyError::Input(msg) => {
                    PolicyError::Input(format!("{at}: nested deployment '{name}': {msg}"))
                }
                other => other,
            })?;
            self.resources(
                &inner_tpl,
                resources,
                inner_path,
                None,
                &inner_target,
                depth + 1,
            )
        } else {
            self.resources(tpl, resources, inner_path, None, &inner_target, depth + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_interleave_types_and_names() {
        assert_eq!(
            interleave("Microsoft.Sql/servers/databases", &["srv", "db"]),
            "Microsoft.Sql/servers/srv/databases/db"
        );
        assert_eq!(
            interleave("Microsoft.CognitiveServices/accounts/projects", &["a/p"]),
            "Microsoft.CognitiveServices/accounts/a/projects/p"
        );
        assert_eq!(file_stem("dir/azuredeploy.json"), "azuredeploy");
        assert!(looks_like_guid("00000000-0000-0000-0000-000000000000"));
        assert!(!looks_like_guid("rg"));
    }
}
