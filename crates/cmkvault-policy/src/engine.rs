//! The engine: definitions compiled once, evaluated over many resources in parallel.
//!
//! For each (resource, policy) pair, in resource order then policy order:
//!
//! 1. **Effect `Disabled`**: no result (unless [`EngineOptions::evaluate_disabled`]); effects
//!    `DenyAction` and `Manual` never produce results offline.
//! 2. **Mode**: `Microsoft.KeyVault.Data` definitions see only ARM `Microsoft.KeyVault/vaults/keys`
//!    resources, through the data-plane mapping of [`crate::alias`]. `All` sees everything.
//!    `Indexed` is not filtered further (Azure limits it to types that support tags and location;
//!    every definition of the reference also tests `type`, so the filter is a no-op there).
//! 3. **Applicability**, as Azure decides it (policy-applicability.md): for `AuditIfNotExists`
//!    and `DeployIfNotExists` the whole `if`; for other effects only the `type`, `name` and
//!    `kind` conditions of the `if`, other conditions counting as true (false under a `not`),
//!    with Azure's special cases (only `kind` or only `name` conditions: applies to everything;
//!    `type` with only `kind` or only `name`: `type` alone decides); in mode
//!    `Microsoft.KeyVault.Data` the `type` conditions alone. A resource the definition does not
//!    apply to produces no result.
//! 4. **The `if`**: false → `Compliant`; unknown → `Unknown`; true → the effect decides:
//!    `Audit`, `Deny`, `Modify`, `Append` (and `Disabled` when evaluated) → `NonCompliant`;
//!    `AuditIfNotExists`/`DeployIfNotExists` → the related resources (`details.type`, `name`,
//!    `existenceCondition`) are looked up in the same input: the resource itself when the type
//!    and name are its own, children by parent name, others in the same resource group;
//!    `Compliant` when one meets the `existenceCondition`, `NonCompliant` otherwise.
//!
//! A condition that cannot be evaluated (e.g. `less` between a string and a boolean) is an
//! evaluation failure, which Azure treats as an implicit deny: the result is `NonCompliant` for
//! effect `Deny` and `Unknown` otherwise, with the error as the reason.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::alias::FieldCategory;
use crate::condition::{self, Compiler, Cond, Ctx, Env, Tmpl, Tri};
use crate::definition::{
    check_value, Assignment, ParameterDefinition, PolicyDefinition, PolicyDocument,
    PolicySetDefinition,
};
use crate::error::PolicyError;
use crate::expr::get_ci;
use crate::outcome::{ComplianceState, Effect, PolicyOutcome};
use crate::resource::{unknown, Resource};
use crate::time::Instant;

/// How the engine evaluates.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The time `utcNow()` returns (and the creation time of keys not yet created).
    pub now: SystemTime,
    /// Evaluate definitions whose effect is `Disabled` too (their results carry effect
    /// `Disabled`).
    pub evaluate_disabled: bool,
    /// Worker threads for [`Engine::evaluate`]; 0 = the number of available cores.
    pub threads: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            now: SystemTime::now(),
            evaluate_disabled: false,
            threads: 0,
        }
    }
}

/// A policy as the engine evaluates it: a definition with its parameter values, standalone or
/// as a member of an initiative.
#[derive(Clone, Debug)]
pub struct PolicyInfo {
    /// The definition's `name` (a GUID for built-ins).
    pub name: String,
    /// The definition's `id`.
    pub id: String,
    /// The definition's display name.
    pub display_name: String,
    /// The definition's description.
    pub description: String,
    /// The effect in force (after parameters and the assignment).
    pub effect: Effect,
    /// The definition's mode, as written.
    pub mode: String,
    /// The definition's version.
    pub version: Option<String>,
    /// The definition's category (`metadata.category`).
    pub category: Option<String>,
    /// The initiative it was loaded through: its `name`.
    pub policy_set_name: Option<String>,
    /// The initiative's `id`.
    pub policy_set_id: Option<String>,
    /// The member's `policyDefinitionReferenceId`.
    pub reference_id: Option<String>,
    /// The parameter values in force (an unknown marker for a parameter without a value).
    pub parameters: Map<String, Value>,
    /// Parameters that have neither a value nor a default: results that depend on them are
    /// `Unknown`.
    pub missing_parameters: Vec<String>,
    /// The file it was read from.
    pub origin: String,
}

#[derive(Debug)]
struct Details {
    /// `details.type`, lower case.
    type_lower: String,
    /// `details.type` as written.
    type_name: String,
    name: Option<Tmpl>,
    existence: Option<Cond>,
    /// `existenceScope` is `Subscription` (else the resource group).
    subscription_scope: bool,
}

#[derive(Debug)]
struct Compiled {
    info: PolicyInfo,
    env: Env,
    cond: Cond,
    /// The applicability condition (`None`: the whole `if` decides, for *IfNotExists).
    applicability: Option<Cond>,
    /// The lower-case types the policy can apply to (`None`: any).
    types: Option<Vec<String>>,
    data_mode: bool,
    details: Option<Details>,
    /// Produces results at all.
    active: bool,
}

/// The compiled policies, ready to evaluate resources. `Sync`: one engine serves all threads.
#[derive(Debug)]
pub struct Engine {
    compiled: Vec<Compiled>,
    infos: Vec<PolicyInfo>,
    warnings: Vec<String>,
    threads: usize,
}

fn system_to_instant(t: SystemTime) -> Instant {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => Instant {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        Err(e) => Instant {
            secs: -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        },
    }
}

/// Resolves declared parameters from supplied values, then defaults; a parameter with
/// neither becomes an unknown marker.
fn resolve_parameters(
    decls: &[ParameterDefinition],
    supplied: &Map<String, Value>,
    supplied_by: &str,
    what: &str,
) -> Result<(Map<String, Value>, Vec<String>), PolicyError> {
    let mut out = Map::new();
    let mut missing = Vec::new();
    for d in decls {
        let given = get_ci(supplied, &d.name);
        let v = match given.or(d.default_value.as_ref()) {
            Some(v) => check_value(d, v).map_err(|why| {
                let by = if given.is_some() {
                    format!(" (value from {supplied_by})")
                } else {
                    String::new()
                };
                PolicyError::Definition(format!("{what}: parameter {}{by}: {why}", d.name))
            })?,
            None => {
                missing.push(d.name.clone());
                unknown(format!(
                    "parameter '{}' has no value (no defaultValue; supply it in an assignment)",
                    d.name
                ))
            }
        };
        out.insert(d.name.clone(), v);
    }
    for k in supplied.keys() {
        if !decls.iter().any(|d| d.name.eq_ignore_ascii_case(k)) {
            return Err(PolicyError::Definition(format!(
                "{what}: parameter {k:?} is not declared"
            )));
        }
    }
    Ok((out, missing))
}

/// The subset of `supplied` a document declares.
fn declared_subset(
    decls: &[ParameterDefinition],
    supplied: &Map<String, Value>,
) -> Map<String, Value> {
    supplied
        .iter()
        .filter(|(k, _)| decls.iter().any(|d| d.name.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

struct Membership<'a> {
    set: &'a PolicySetDefinition,
    reference_id: Option<String>,
}

fn compile(
    def: &PolicyDefinition,
    params: Map<String, Value>,
    missing: Vec<String>,
    member: Option<Membership<'_>>,
    now: Instant,
    evaluate_disabled: bool,
) -> Result<Compiled, PolicyError> {
    let what = format!("{}: definition {}", def.origin, def.name);
    let err = |msg: String| PolicyError::Definition(format!("{what}: {msg}"));
    let data_mode = if def.mode.eq_ignore_ascii_case("Microsoft.KeyVault.Data") {
        true
    } else if def.mode.eq_ignore_ascii_case("All") || def.mode.eq_ignore_ascii_case("Indexed") {
        false
    } else {
        return Err(err(format!(
            "mode {:?} is not supported offline (All, Indexed, Microsoft.KeyVault.Data)",
            def.mode
        )));
    };
    let mut policy_obj = Map::new();
    policy_obj.insert("definitionId".into(), Value::String(def.id.clone()));
    policy_obj.insert("assignmentId".into(), Value::String(String::new()));
    policy_obj.insert(
        "setDefinitionId".into(),
        Value::String(
            member
                .as_ref()
                .map(|m| m.set.id.clone())
                .unwrap_or_default(),
        ),
    );
    policy_obj.insert(
        "definitionReferenceId".into(),
        Value::String(
            member
                .as_ref()
                .and_then(|m| m.reference_id.clone())
                .unwrap_or_default(),
        ),
    );
    let mut env = Env {
        params: params.clone(),
        now,
        data_mode,
        policy: Value::Object(policy_obj),
        fields: HashMap::new(),
    };
    let rule = def
        .policy_rule
        .as_object()
        .ok_or_else(|| err("policyRule is not an object".into()))?;
    let if_json = get_ci(rule, "if").ok_or_else(|| err("policyRule has no if".into()))?;
    let then = get_ci(rule, "then")
        .and_then(Value::as_object)
        .ok_or_else(|| err("policyRule has no then".into()))?;
    let mut c = Compiler::new(&mut env);
    let cond = c.cond(if_json).map_err(|m| err(format!("if: {m}")))?;
    let effect_json = get_ci(then, "effect").ok_or_else(|| err("then has no effect".into()))?;
    let effect = match c
        .tmpl(effect_json)
        .map_err(|m| err(format!("then.effect: {m}")))?
    {
        Tmpl::Const(Value::String(s)) => {
            Effect::parse(&s).ok_or_else(|| err(format!("then.effect: unknown effect {s:?}")))?
        }
        Tmpl::Const(v) => {
            let why = condition::find_unknown(&v)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{v} is not an effect name"));
            return Err(err(format!("then.effect: {why}")));
        }
        _ => return Err(err("then.effect depends on the resource".into())),
    };
    let ifne = matches!(effect, Effect::AuditIfNotExists | Effect::DeployIfNotExists);
    let details = if ifne {
        let d = get_ci(then, "details")
            .and_then(Value::as_object)
            .ok_or_else(|| err("an IfNotExists effect needs then.details".into()))?;
        let type_name = match get_ci(d, "type").map(|t| c.tmpl(t)).transpose() {
            Ok(Some(Tmpl::Const(Value::String(s)))) => s,
            Ok(_) => return Err(err("then.details.type must be a constant string".into())),
            Err(m) => return Err(err(format!("then.details.type: {m}"))),
        };
        let name = get_ci(d, "name")
            .map(|n| c.tmpl(n))
            .transpose()
            .map_err(|m| err(format!("then.details.name: {m}")))?;
        let existence = get_ci(d, "existenceCondition")
            .map(|e| c.cond(e))
            .transpose()
            .map_err(|m| err(format!("then.details.existenceCondition: {m}")))?;
        let subscription_scope = get_ci(d, "existenceScope")
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("subscription"));
        Some(Details {
            type_lower: type_name.to_ascii_lowercase(),
            type_name,
            name,
            existence,
            subscription_scope,
        })
    } else {
        None
    };
    let applicability = if ifne {
        None
    } else if data_mode {
        Some(cond.restrict_to(&|l| l.category() == FieldCategory::Type, false))
    } else {
        // Azure's table: type conditions always count; name and kind conditions count only
        // when the `if` has other conditions too (only kind / only name: applies to all;
        // type with only kind or only name: type alone decides).
        let mut other = false;
        cond.leaves(&mut |l| other |= l.category() == FieldCategory::Other);
        Some(cond.restrict_to(
            &|l| match l.category() {
                FieldCategory::Type => true,
                FieldCategory::Name | FieldCategory::Kind => other,
                FieldCategory::Other => false,
            },
            false,
        ))
    };
    let types = applicability.as_ref().unwrap_or(&cond).required_types();
    let active = match effect {
        Effect::DenyAction | Effect::Manual => false,
        Effect::Disabled => evaluate_disabled,
        _ => true,
    };
    let info = PolicyInfo {
        name: def.name.clone(),
        id: def.id.clone(),
        display_name: def.display_name.clone(),
        description: def.description.clone(),
        effect,
        mode: def.mode.clone(),
        version: def.version.clone(),
        category: def.category.clone(),
        policy_set_name: member.as_ref().map(|m| m.set.name.clone()),
        policy_set_id: member.as_ref().map(|m| m.set.id.clone()),
        reference_id: member.and_then(|m| m.reference_id),
        parameters: params,
        missing_parameters: missing,
        origin: def.origin.clone(),
    };
    Ok(Compiled {
        info,
        env,
        cond,
        applicability,
        types,
        data_mode,
        details,
        active,
    })
}

/// Related resources of the input, for the *IfNotExists effects.
struct Related<'r> {
    resources: &'r [Resource],
    /// (type, full name) → indexes, lower case.
    by_name: HashMap<(String, String), Vec<usize>>,
    /// (type, parent full name, scope) → indexes, lower case; the scope is the resource
    /// group (`false`) or the subscription (`true`), so a lookup reads only the candidates in
    /// the evaluated resource's scope (no scan of every resource of the type).
    by_parent: HashMap<(String, String, bool, String), Vec<usize>>,
}

fn full_name_of(r: &Resource) -> String {
    let id = r.id();
    let lower = id.to_ascii_lowercase();
    if let Some(pos) = lower.rfind("/providers/") {
        let parts: Vec<&str> = id[pos + "/providers/".len()..].split('/').collect();
        if parts.len() >= 3 && parts.len() % 2 == 1 {
            return parts[2..]
                .iter()
                .step_by(2)
                .copied()
                .collect::<Vec<_>>()
                .join("/");
        }
    }
    r.name().to_string()
}

/// `/subscriptions/x/resourcegroups/y` of an id, lower case.
fn scope_of(id: &str, subscription_only: bool) -> Option<String> {
    let lower = id.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let s = parts.iter().position(|p| *p == "subscriptions")?;
    let sub = parts.get(s + 1)?;
    if subscription_only {
        return Some(format!("/subscriptions/{sub}"));
    }
    let g = parts.iter().position(|p| *p == "resourcegroups")?;
    Some(format!(
        "/subscriptions/{sub}/resourcegroups/{}",
        parts.get(g + 1)?
    ))
}

impl<'r> Related<'r> {
    fn build(resources: &'r [Resource], types: &[String]) -> Related<'r> {
        let mut by_name: HashMap<(String, String), Vec<usize>> = HashMap::new();
        let mut by_parent: HashMap<(String, String, bool, String), Vec<usize>> = HashMap::new();
        if types.is_empty() {
            return Related {
                resources,
                by_name,
                by_parent,
            };
        }
        for (i, r) in resources.iter().enumerate() {
            let t = r.resource_type().to_ascii_lowercase();
            if !types.contains(&t) {
                continue;
            }
            let full = full_name_of(r).to_ascii_lowercase();
            let parent = full
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            by_name.entry((t.clone(), full)).or_default().push(i);
            for sub in [false, true] {
                let scope = scope_of(r.id(), sub).unwrap_or_default();
                by_parent
                    .entry((t.clone(), parent.clone(), sub, scope))
                    .or_default()
                    .push(i);
            }
        }
        Related {
            resources,
            by_name,
            by_parent,
        }
    }

    fn find(&self, res: &Resource, d: &Details, name: Option<&str>) -> Vec<&'r Resource> {
        let rt = res.resource_type().to_ascii_lowercase();
        let full = full_name_of(res).to_ascii_lowercase();
        let own_parent = full
            .rsplit_once('/')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        let parent = if d.type_lower.starts_with(&format!("{rt}/")) {
            full
        } else if d.type_lower == rt {
            own_parent
        } else {
            String::new()
        };
        let scope = scope_of(res.id(), d.subscription_scope);
        let hits = match name {
            Some(n) => {
                let n = n.to_ascii_lowercase();
                let key = if parent.is_empty() || n.contains('/') {
                    n
                } else {
                    format!("{parent}/{n}")
                };
                self.by_name.get(&(d.type_lower.clone(), key))
            }
            None => match &scope {
                Some(sc) => self.by_parent.get(&(
                    d.type_lower.clone(),
                    parent,
                    d.subscription_scope,
                    sc.clone(),
                )),
                // No scope in the id (a template placeholder): every candidate of the type
                // and parent, as before.
                None => {
                    return self
                        .by_parent
                        .iter()
                        .filter(|(k, _)| {
                            k.0 == d.type_lower && k.1 == parent && k.2 == d.subscription_scope
                        })
                        .flat_map(|(_, v)| v.iter().map(|&i| &self.resources[i]))
                        .collect()
                }
            },
        };
        hits.map(|v| {
            v.iter()
                .map(|&i| &self.resources[i])
                .filter(|c| match (&scope, scope_of(c.id(), d.subscription_scope)) {
                    (Some(a), Some(b)) => *a == b,
                    _ => true,
                })
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Engine {
    /// Compiles the documents: standalone definitions in order, initiatives expanded into their
    /// members in order. The assignment's parameters override defaults: with a
    /// `policyDefinitionId`, for that document only; without, for every document that declares
    /// them (a parameter no document declares is an error). An initiative member whose
    /// definition is not loaded is skipped with a warning ([`Engine::warnings`]). Errors name
    /// the file and definition: an unknown alias, a malformed condition or expression, a
    /// parameter value of the wrong type or not allowed, an unsupported mode, no effect.
    pub fn new(
        documents: Vec<PolicyDocument>,
        assignment: Option<&Assignment>,
        options: EngineOptions,
    ) -> Result<Engine, PolicyError> {
        let now = system_to_instant(options.now);
        let empty = Map::new();
        if let Some(a) = assignment {
            match &a.policy_definition_id {
                Some(id) => {
                    if !documents.iter().any(|d| a.targets(d)) {
                        return Err(PolicyError::Definition(format!(
                            "{}: policyDefinitionId {id} matches none of the loaded policies",
                            a.origin
                        )));
                    }
                }
                None => {
                    for k in a.parameters.keys() {
                        let declared = documents.iter().any(|d| {
                            d.parameters()
                                .iter()
                                .any(|p| p.name.eq_ignore_ascii_case(k))
                        });
                        if !declared {
                            return Err(PolicyError::Definition(format!(
                                "{}: parameter {k:?} is not declared by any loaded policy",
                                a.origin
                            )));
                        }
                    }
                }
            }
        }
        let supplied_for = |doc: &PolicyDocument| -> Map<String, Value> {
            match assignment {
                Some(a) if a.targets(doc) => declared_subset(doc.parameters(), &a.parameters),
                _ => empty.clone(),
            }
        };
        let definitions: Vec<&PolicyDefinition> = documents
            .iter()
            .filter_map(|d| match d {
                PolicyDocument::Definition(x) => Some(x),
                PolicyDocument::Initiative(_) => None,
            })
            .collect();
        let by = assignment.map_or_else(String::new, |a| format!("assignment {}", a.origin));
        let mut compiled = Vec::new();
        let mut warnings = Vec::new();
        for doc in &documents {
            match doc {
                PolicyDocument::Definition(def) => {
                    let what = format!("{}: definition {}", def.origin, def.name);
                    let (params, missing) =
                        resolve_parameters(&def.parameters, &supplied_for(doc), &by, &what)?;
                    compiled.push(compile(
                        def,
                        params,
                        missing,
                        None,
                        now,
                        options.evaluate_disabled,
                    )?);
                }
                PolicyDocument::Initiative(set) => {
                    let what = format!("{}: initiative {}", set.origin, set.name);
                    let (set_params, _) =
                        resolve_parameters(&set.parameters, &supplied_for(doc), &by, &what)?;
                    let set_env = Env {
                        params: set_params,
                        now,
                        data_mode: false,
                        policy: Value::Null,
                        fields: HashMap::new(),
                    };
                    for m in &set.members {
                        let target = m.definition_name();
                        let Some(def) = definitions.iter().find(|d| {
                            d.id.eq_ignore_ascii_case(&m.definition_id)
                                || d.name.eq_ignore_ascii_case(target)
                        }) else {
                            warnings.push(format!(
                                "{what}: member {} ({}) is not loaded; skipped",
                                m.reference_id.as_deref().unwrap_or(target),
                                m.definition_id
                            ));
                            continue;
                        };
                        let member_what = format!(
                            "{what}: member {}",
                            m.reference_id.as_deref().unwrap_or(target)
                        );
                        let mut supplied = Map::new();
                        for (k, v) in &m.parameters {
                            let val = eval_json(v, &set_env).map_err(|e| {
                                PolicyError::Definition(format!(
                                    "{member_what}: parameter {k}: {e}"
                                ))
                            })?;
                            supplied.insert(k.clone(), val);
                        }
                        let (params, missing) = resolve_parameters(
                            &def.parameters,
                            &supplied,
                            &format!("initiative {}", set.name),
                            &member_what,
                        )?;
                        compiled.push(compile(
                            def,
                            params,
                            missing,
                            Some(Membership {
                                set,
                                reference_id: m.reference_id.clone(),
                            }),
                            now,
                            options.evaluate_disabled,
                        )?);
                    }
                }
            }
        }
        let infos = compiled.iter().map(|c| c.info.clone()).collect();
        let threads = if options.threads > 0 {
            options.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        Ok(Engine {
            compiled,
            infos,
            warnings,
            threads,
        })
    }

    /// The policies in evaluation order (name, id, display name, effect, initiative, ...).
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.infos
    }

    /// What was skipped while loading (initiative members whose definition is not loaded).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Evaluates every policy on every resource: one outcome per (resource, policy) that
    /// applies, in resource order then policy order. Runs on [`EngineOptions::threads`] threads
    /// for large inputs.
    pub fn evaluate(&self, resources: &[Resource]) -> Vec<PolicyOutcome> {
        self.evaluate_with_progress(resources, &|_| {})
    }

    /// [`Engine::evaluate`], calling `progress(n)` each time `n` more resources are done (from
    /// the worker threads).
    pub fn evaluate_with_progress(
        &self,
        resources: &[Resource],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Vec<PolicyOutcome> {
        let detail_types: Vec<String> = self
            .compiled
            .iter()
            .filter(|c| c.active)
            .filter_map(|c| c.details.as_ref().map(|d| d.type_lower.clone()))
            .collect();
        let related = Related::build(resources, &detail_types);
        const BLOCK: usize = 1024;
        let run = |chunk: &[Resource]| {
            let mut out = Vec::new();
            for block in chunk.chunks(BLOCK) {
                for r in block {
                    self.evaluate_resource(r, &related, &mut out);
                }
                progress(block.len());
            }
            out
        };
        let threads = self.threads.min(resources.len() / BLOCK).max(1);
        if threads == 1 {
            return run(resources);
        }
        let per = resources.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = resources
                .chunks(per)
                .map(|chunk| s.spawn(move || run(chunk)))
                .collect();
            let mut all = Vec::new();
            for h in handles {
                match h.join() {
                    Ok(part) => all.extend(part),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
            all
        })
    }

    /// Evaluates every policy on one resource (no related resources other than itself).
    pub fn evaluate_one(&self, resource: &Resource) -> Vec<PolicyOutcome> {
        let detail_types: Vec<String> = self
            .compiled
            .iter()
            .filter_map(|c| c.details.as_ref().map(|d| d.type_lower.clone()))
            .collect();
        let one = std::slice::from_ref(resource);
        let related = Related::build(one, &detail_types);
        let mut out = Vec::new();
        self.evaluate_resource(resource, &related, &mut out);
        out
    }

    fn evaluate_resource(&self, r: &Resource, related: &Related<'_>, out: &mut Vec<PolicyOutcome>) {
        let rtype = r.resource_type();
        let is_key = rtype.eq_ignore_ascii_case("Microsoft.KeyVault/vaults/keys")
            || rtype.eq_ignore_ascii_case("Microsoft.KeyVault.Data/vaults/keys");
        for p in &self.compiled {
            if !p.active || (p.data_mode && !is_key) {
                continue;
            }
            if let Some(types) = &p.types {
                let view = if p.data_mode && is_key {
                    "microsoft.keyvault.data/vaults/keys"
                } else {
                    rtype
                };
                if !types.iter().any(|t| t.eq_ignore_ascii_case(view)) {
                    continue;
                }
            }
            if let Some(o) = self.evaluate_policy(p, r, related) {
                out.push(o);
            }
        }
    }

    fn outcome(
        &self,
        p: &Compiled,
        r: &Resource,
        state: ComplianceState,
        reason: String,
    ) -> PolicyOutcome {
        PolicyOutcome {
            resource_id: r.id().to_string(),
            resource_type: r.resource_type().to_string(),
            policy_definition_name: p.info.name.clone(),
            policy_definition_id: p.info.id.clone(),
            display_name: p.info.display_name.clone(),
            policy_set_definition_name: p.info.policy_set_name.clone(),
            policy_set_definition_id: p.info.policy_set_id.clone(),
            policy_definition_reference_id: p.info.reference_id.clone(),
            effect: p.info.effect,
            state,
            reason,
            source: r.source.clone(),
        }
    }

    fn failed(&self, p: &Compiled, r: &Resource, e: &PolicyError) -> PolicyOutcome {
        if p.info.effect == Effect::Deny {
            self.outcome(
                p,
                r,
                ComplianceState::NonCompliant,
                format!("evaluation failed (an implicit deny): {e}"),
            )
        } else {
            self.outcome(
                p,
                r,
                ComplianceState::Unknown,
                format!("evaluation failed: {e}"),
            )
        }
    }

    fn evaluate_policy(
        &self,
        p: &Compiled,
        r: &Resource,
        related: &Related<'_>,
    ) -> Option<PolicyOutcome> {
        let ctx = Ctx::new(r, &p.env);
        if let Some(app) = &p.applicability {
            match condition::eval(app, &ctx, None) {
                Ok(Tri::False) => return None,
                Ok(_) => {}
                Err(e) => return Some(self.failed(p, r, &e)),
            }
        }
        let truth = match condition::eval(&p.cond, &ctx, None) {
            Ok(t) => t,
            Err(e) => return Some(self.failed(p, r, &e)),
        };
        let explain = |default: &str| {
            let mut notes = Vec::new();
            let _ = condition::eval(&p.cond, &ctx, Some(&mut notes));
            if notes.is_empty() {
                default.to_string()
            } else {
                notes.join("; ")
            }
        };
        match truth {
            Tri::False if p.details.is_some() => None,
            Tri::False => Some(self.outcome(
                p,
                r,
                ComplianceState::Compliant,
                explain("the policy rule does not match"),
            )),
            Tri::Unknown => Some(self.outcome(
                p,
                r,
                ComplianceState::Unknown,
                explain("a value is unknown offline"),
            )),
            Tri::True => match &p.details {
                None => Some(self.outcome(
                    p,
                    r,
                    ComplianceState::NonCompliant,
                    explain("the policy rule matches"),
                )),
                Some(d) => Some(self.existence(p, r, d, related)),
            },
        }
    }

    fn existence(
        &self,
        p: &Compiled,
        r: &Resource,
        d: &Details,
        related: &Related<'_>,
    ) -> PolicyOutcome {
        let ctx = Ctx::new(r, &p.env);
        let name = match d
            .name
            .as_ref()
            .map(|t| condition::eval_detail_name(t, &ctx))
        {
            None => None,
            Some(Ok(Ok(n))) => Some(n),
            Some(Ok(Err(reason))) => {
                return self.outcome(
                    p,
                    r,
                    ComplianceState::Unknown,
                    format!("the related resource's name is unknown offline: {reason}"),
                )
            }
            Some(Err(e)) => return self.failed(p, r, &e),
        };
        let candidates = related.find(r, d, name.as_deref());
        let shown = name.clone().unwrap_or_else(|| "(any)".into());
        if candidates.is_empty() {
            return self.outcome(
                p,
                r,
                ComplianceState::NonCompliant,
                format!("no related {} named {shown} in the input", d.type_name),
            );
        }
        let Some(cond) = &d.existence else {
            return self.outcome(
                p,
                r,
                ComplianceState::Compliant,
                format!(
                    "related {} {} exists",
                    d.type_name,
                    full_name_of(candidates[0])
                ),
            );
        };
        let mut unknown_reason: Option<String> = None;
        let mut first_failure: Option<String> = None;
        for c in &candidates {
            let cctx = Ctx {
                res: c,
                expr_res: r,
                env: &p.env,
                frames: None,
            };
            let prefix = if std::ptr::eq(*c, r) {
                String::new()
            } else {
                format!("related {} {}: ", d.type_name, full_name_of(c))
            };
            let mut notes = Vec::new();
            match condition::eval(cond, &cctx, Some(&mut notes)) {
                Ok(Tri::True) => {
                    return self.outcome(
                        p,
                        r,
                        ComplianceState::Compliant,
                        format!("{prefix}{}", notes.join("; ")),
                    )
                }
                Ok(Tri::Unknown) => {
                    unknown_reason.get_or_insert(format!("{prefix}{}", notes.join("; ")));
                }
                Ok(Tri::False) => {
                    first_failure.get_or_insert(format!("{prefix}{}", notes.join("; ")));
                }
                Err(e) => return self.failed(p, r, &e),
            }
        }
        match unknown_reason {
            Some(u) => self.outcome(p, r, ComplianceState::Unknown, u),
            None => self.outcome(
                p,
                r,
                ComplianceState::NonCompliant,
                first_failure.unwrap_or_else(|| "the existenceCondition is not met".into()),
            ),
        }
    }
}

/// Evaluates a JSON value with `[...]` expressions against constant parameters (initiative
/// member parameter values).
fn eval_json(v: &Value, env: &Env) -> Result<Value, PolicyError> {
    match v {
        Value::String(s) => match crate::expr::classify(s) {
            crate::expr::Template::Literal(l) => Ok(Value::String(l.into_owned())),
            crate::expr::Template::Expression(t) => {
                condition::eval_constant(&crate::expr::parse(t)?, env)
            }
        },
        Value::Array(a) => a
            .iter()
            .map(|x| eval_json(x, env))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| eval_json(x, env).map(|y| (k.clone(), y)))
            .collect::<Result<_, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
    }
}
