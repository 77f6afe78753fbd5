//! Policy conditions: compiled once from a definition's JSON, evaluated per resource with
//! three-valued logic.
//!
//! A condition is a logical operator (`allOf`, `anyOf`, `not`) or a leaf: one of `field`,
//! `value`, `count` and one operator (`equals`, `notEquals`, `like`, `notLike`, `match`,
//! `notMatch`, `matchInsensitively`, `notMatchInsensitively`, `contains`, `notContains`, `in`,
//! `notIn`, `containsKey`, `notContainsKey`, `less`, `lessOrEquals`, `greater`,
//! `greaterOrEquals`, `exists`). Semantics (reference §2):
//!
//! - strings compare case-insensitively, except `match`/`notMatch`; booleans and numbers compare
//!   equal to their string forms (`enableSoftDelete equals "false"` holds for JSON `false`);
//! - an absent (or `null`) property: `exists false` holds; `equals`, `in`, `like`, `match`,
//!   `contains`, `containsKey` and the ordering operators are false; their negations are true;
//! - a `[*]` alias is evaluated for every selected element and the results are ANDed (vacuously
//!   true when the array is empty or absent); nested `[*]` selections are flattened;
//! - `less`/`greater…` compare numbers numerically, date-times as instants, other strings
//!   ordinally ignoring case (`2021-04-01-preview` < `2021-06-01-preview`);
//! - a value holding an unknown marker makes the leaf Unknown; `allOf` with a definite false is
//!   false, `anyOf` with a definite true is true, otherwise an Unknown member makes it Unknown.
//!
//! Expressions are parsed once; those that depend only on parameters are folded to constants
//! when the definition is compiled.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::alias::{self, FieldCategory, FieldRef, Read, Seg};
use crate::error::PolicyError;
use crate::expr::{self, get_ci, truthy, type_name, Expr, Scope};
use crate::resource::{unknown, unknown_reason, Resource};
use crate::time::{self, Instant};

/// What `requestContext().apiVersion` returns for an inventory resource (no request): compliance
/// scans use the latest API version, and `"latest"` orders after every dated version.
pub(crate) const LATEST_API_VERSION: &str = "latest";

/// Most value-count iterations one count may make (Azure's limit).
const MAX_VALUE_COUNT_ITERATIONS: usize = 100;
/// Most value counts in one policy rule (Azure's limit).
const MAX_VALUE_COUNTS: usize = 10;

/// A three-valued truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn from_bool(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }
    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

/// A condition operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Equals,
    NotEquals,
    Like,
    NotLike,
    Match,
    NotMatch,
    MatchInsensitively,
    NotMatchInsensitively,
    Contains,
    NotContains,
    In,
    NotIn,
    ContainsKey,
    NotContainsKey,
    Less,
    LessOrEquals,
    Greater,
    GreaterOrEquals,
    Exists,
}

const OPS: &[(&str, Op)] = &[
    ("equals", Op::Equals),
    ("notequals", Op::NotEquals),
    ("like", Op::Like),
    ("notlike", Op::NotLike),
    ("match", Op::Match),
    ("notmatch", Op::NotMatch),
    ("matchinsensitively", Op::MatchInsensitively),
    ("notmatchinsensitively", Op::NotMatchInsensitively),
    ("contains", Op::Contains),
    ("notcontains", Op::NotContains),
    ("in", Op::In),
    ("notin", Op::NotIn),
    ("containskey", Op::ContainsKey),
    ("notcontainskey", Op::NotContainsKey),
    ("less", Op::Less),
    ("lessorequals", Op::LessOrEquals),
    ("greater", Op::Greater),
    ("greaterorequals", Op::GreaterOrEquals),
    ("exists", Op::Exists),
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::NotEquals => "notEquals",
            Op::Like => "like",
            Op::NotLike => "notLike",
            Op::Match => "match",
            Op::NotMatch => "notMatch",
            Op::MatchInsensitively => "matchInsensitively",
            Op::NotMatchInsensitively => "notMatchInsensitively",
            Op::Contains => "contains",
            Op::NotContains => "notContains",
            Op::In => "in",
            Op::NotIn => "notIn",
            Op::ContainsKey => "containsKey",
            Op::NotContainsKey => "notContainsKey",
            Op::Less => "less",
            Op::LessOrEquals => "lessOrEquals",
            Op::Greater => "greater",
            Op::GreaterOrEquals => "greaterOrEquals",
            Op::Exists => "exists",
        }
    }

    /// The operator that states the opposite, for explaining a leaf that was false.
    fn negated_name(self) -> &'static str {
        match self {
            Op::Equals => "notEquals",
            Op::NotEquals => "equals",
            Op::Like => "notLike",
            Op::NotLike => "like",
            Op::Match => "notMatch",
            Op::NotMatch => "match",
            Op::MatchInsensitively => "notMatchInsensitively",
            Op::NotMatchInsensitively => "matchInsensitively",
            Op::Contains => "notContains",
            Op::NotContains => "contains",
            Op::In => "notIn",
            Op::NotIn => "in",
            Op::ContainsKey => "notContainsKey",
            Op::NotContainsKey => "containsKey",
            Op::Less => "not less",
            Op::LessOrEquals => "not lessOrEquals",
            Op::Greater => "not greater",
            Op::GreaterOrEquals => "not greaterOrEquals",
            Op::Exists => "exists",
        }
    }
}

/// A JSON value that may hold expressions.
#[derive(Clone, Debug)]
pub(crate) enum Tmpl {
    /// Known when the definition was compiled (literals, parameters, folded expressions).
    Const(Value),
    /// An expression that needs the resource (`field()`, `current()`, `requestContext()`).
    Expr(Expr),
    /// An array with expressions in it.
    Array(Vec<Tmpl>),
    /// An object with expressions in it.
    Object(Vec<(String, Tmpl)>),
}

/// The left side of a leaf.
#[derive(Clone, Debug)]
pub(crate) enum Lhs {
    /// `field`.
    Field(FieldRef),
    /// `value`.
    Value(Tmpl),
    /// `count`.
    Count(Box<Count>),
}

/// A `count` expression.
#[derive(Clone, Debug)]
pub(crate) struct Count {
    source: CountSource,
    filter: Option<Cond>,
}

#[derive(Clone, Debug)]
enum CountSource {
    /// A field count over a `[*]` alias (a `FieldRef::Path` with a wildcard).
    Field(FieldRef),
    /// A value count over an array, with the name `current('name')` uses.
    Value { values: Tmpl, name: Option<String> },
}

/// A leaf condition.
#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    lhs: Lhs,
    op: Op,
    rhs: Tmpl,
    /// The reason when the operand is a constant holding an unknown marker (a parameter
    /// without a value).
    rhs_unknown: Option<String>,
    /// Compare strings without whitespace and case (`location`, `identity.type`).
    normalise: bool,
    /// The left side as written, for reasons.
    text: String,
}

impl Leaf {
    /// The field category of a `field` leaf (`Other` for value and count leaves).
    pub(crate) fn category(&self) -> FieldCategory {
        match &self.lhs {
            Lhs::Field(f) => f.category(),
            _ => FieldCategory::Other,
        }
    }

    /// The constant type names a `type` leaf accepts (`equals` / `in`), lower-cased.
    pub(crate) fn type_set(&self) -> Option<Vec<String>> {
        if !matches!(self.lhs, Lhs::Field(FieldRef::Type { .. })) {
            return None;
        }
        match (self.op, &self.rhs) {
            (Op::Equals, Tmpl::Const(Value::String(s))) => Some(vec![s.to_ascii_lowercase()]),
            (Op::In, Tmpl::Const(Value::Array(a))) => a
                .iter()
                .map(|v| v.as_str().map(str::to_ascii_lowercase))
                .collect(),
            _ => None,
        }
    }
}

/// A compiled condition.
#[derive(Clone, Debug)]
pub(crate) enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Leaf(Box<Leaf>),
    /// A fixed truth (applicability replaces the conditions it ignores with one).
    Const(bool),
}

impl Cond {
    /// Visits every leaf (including those inside `count.where`).
    pub(crate) fn leaves<'c>(&'c self, f: &mut dyn FnMut(&'c Leaf)) {
        match self {
            Cond::All(v) | Cond::Any(v) => v.iter().for_each(|c| c.leaves(f)),
            Cond::Not(c) => c.leaves(f),
            Cond::Leaf(l) => f(l),
            Cond::Const(_) => {}
        }
    }

    /// The condition with every leaf not in `keep` replaced by a truth that does not restrict
    /// (true, or false under an odd number of `not`s): how Azure decides applicability.
    pub(crate) fn restrict_to(&self, keep: &dyn Fn(&Leaf) -> bool, negated: bool) -> Cond {
        match self {
            Cond::All(v) => Cond::All(v.iter().map(|c| c.restrict_to(keep, negated)).collect()),
            Cond::Any(v) => Cond::Any(v.iter().map(|c| c.restrict_to(keep, negated)).collect()),
            Cond::Not(c) => Cond::Not(Box::new(c.restrict_to(keep, !negated))),
            Cond::Leaf(l) if keep(l) => Cond::Leaf(l.clone()),
            Cond::Leaf(_) | Cond::Const(_) => Cond::Const(!negated),
        }
    }

    /// The lower-case resource types this condition can be true for, when it says
    /// (`None`: any type).
    pub(crate) fn required_types(&self) -> Option<Vec<String>> {
        match self {
            Cond::Leaf(l) => l.type_set(),
            Cond::All(v) => {
                let mut acc: Option<Vec<String>> = None;
                for c in v {
                    if let Some(t) = c.required_types() {
                        acc = Some(match acc {
                            None => t,
                            Some(a) => a.into_iter().filter(|x| t.contains(x)).collect(),
                        });
                    }
                }
                acc
            }
            Cond::Any(v) => {
                let mut all = Vec::new();
                for c in v {
                    all.extend(c.required_types()?);
                }
                Some(all)
            }
            Cond::Not(_) => None,
            Cond::Const(true) => None,
            Cond::Const(false) => Some(Vec::new()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Environment: parameters, time, pre-resolved fields.

/// What a definition's expressions see besides the resource: parameter values (a parameter
/// without a value is an unknown marker), the evaluation time, the `policy()` object, and the
/// aliases named in `field('…')`/`current('…')` calls, resolved once.
#[derive(Clone, Debug)]
pub(crate) struct Env {
    pub(crate) params: Map<String, Value>,
    pub(crate) now: Instant,
    pub(crate) data_mode: bool,
    pub(crate) policy: Value,
    pub(crate) fields: HashMap<String, FieldRef>,
}

impl Env {
    fn field(&self, alias: &str) -> Result<Cow<'_, FieldRef>, PolicyError> {
        match self.fields.get(&alias.to_ascii_lowercase()) {
            Some(f) => Ok(Cow::Borrowed(f)),
            None => alias::compile_field(alias, self.data_mode)
                .map(Cow::Owned)
                .map_err(|why| PolicyError::Eval(format!("unknown alias {alias:?}: {why}"))),
        }
    }
}

/// Functions that need the resource: not folded at compile time.
const CONTEXT_FUNCTIONS: &[&str] = &[
    "field",
    "current",
    "requestcontext",
    "resourcegroup",
    "subscription",
];

fn needs_context(e: &Expr) -> bool {
    match e {
        Expr::Call(name, args) => {
            CONTEXT_FUNCTIONS.contains(&name.to_ascii_lowercase().as_str())
                || args.iter().any(needs_context)
        }
        Expr::Member(inner, _) => needs_context(inner),
        Expr::Index(a, b) => needs_context(a) || needs_context(b),
        _ => false,
    }
}

/// The policy functions that do not need a resource.
fn policy_function(env: &Env, name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>> {
    if matches!(name, "adddays" | "iprangecontains" | "utcnow") {
        if let Some(u) = args.iter().find(|a| unknown_reason(a).is_some()) {
            return Some(Ok(u.clone()));
        }
    }
    let r = match name {
        "parameters" => match args {
            [Value::String(p)] => get_ci(&env.params, p)
                .cloned()
                .ok_or_else(|| PolicyError::Eval(format!("parameter {p:?} is not defined"))),
            _ => Err(PolicyError::Eval(
                "parameters() takes one parameter name".into(),
            )),
        },
        "utcnow" => match args {
            [] => Ok(Value::String(time::format_precise(env.now))),
            [Value::String(f)] => Ok(Value::String(time::format_dotnet(env.now, f))),
            _ => Err(PolicyError::Eval(
                "utcNow() takes an optional format".into(),
            )),
        },
        "adddays" => add_days(args),
        "iprangecontains" => ip_range_contains(args),
        "policy" => Ok(env.policy.clone()),
        _ => return None,
    };
    Some(r)
}

fn add_days(args: &[Value]) -> Result<Value, PolicyError> {
    let [dt, n] = args else {
        return Err(PolicyError::Eval(
            "addDays() takes a date-time and a number of days".into(),
        ));
    };
    let s = dt.as_str().ok_or_else(|| {
        PolicyError::Eval(format!(
            "addDays() expects a date-time, got {}",
            type_name(dt)
        ))
    })?;
    let t = time::parse_datetime(s)
        .ok_or_else(|| PolicyError::Eval(format!("addDays(): {s:?} is not a date-time")))?;
    let days = match n {
        Value::Number(x) => x.as_i64(),
        Value::String(x) => x.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| PolicyError::Eval(format!("addDays() expects a number of days, got {n}")))?;
    Ok(Value::String(time::format_precise(
        t.plus_secs(days.saturating_mul(86_400)),
    )))
}

/// An IP range: family (4 or 6) and inclusive bounds.
fn ip_range(s: &str) -> Result<(u8, u128, u128), PolicyError> {
    let bad = || {
        PolicyError::Eval(format!(
            "ipRangeContains(): {s:?} is not an IP, CIDR or range"
        ))
    };
    let as_u128 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => (4u8, u128::from(u32::from(a))),
        IpAddr::V6(a) => (6u8, u128::from(a)),
    };
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let (fa, lo) = as_u128(a.trim().parse().map_err(|_| bad())?);
        let (fb, hi) = as_u128(b.trim().parse().map_err(|_| bad())?);
        if fa != fb || lo > hi {
            return Err(bad());
        }
        return Ok((fa, lo, hi));
    }
    if let Some((a, bits)) = s.split_once('/') {
        let (f, base) = as_u128(a.trim().parse().map_err(|_| bad())?);
        let width = if f == 4 { 32 } else { 128 };
        let bits: u32 = bits.trim().parse().map_err(|_| bad())?;
        if bits > width {
            return Err(bad());
        }
        let host = width - bits;
        let mask = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        return Ok((f, base & !mask, (base & !mask) | mask));
    }
    let (f, v) = as_u128(s.parse().map_err(|_| bad())?);
    Ok((f, v, v))
}

fn ip_range_contains(args: &[Value]) -> Result<Value, PolicyError> {
    let [Value::String(range), Value::String(target)] = args else {
        return Err(PolicyError::Eval(
            "ipRangeContains() takes two strings".into(),
        ));
    };
    let (f1, lo1, hi1) = ip_range(range)?;
    let (f2, lo2, hi2) = ip_range(target)?;
    if f1 != f2 {
        return Err(PolicyError::Eval(format!(
            "ipRangeContains(): {range:?} and {target:?} are of different address families"
        )));
    }
    Ok(Value::Bool(lo1 <= lo2 && hi2 <= hi1))
}

struct FoldScope<'e> {
    env: &'e Env,
}

impl Scope for FoldScope<'_> {
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>> {
        policy_function(self.env, name, args)
    }
}

/// Evaluates an expression that needs no resource (parameters, utcNow, the common library):
/// the assignment's and initiatives' `[parameters('x')]` values, `then.effect`, `details.type`.
pub(crate) fn eval_constant(e: &Expr, env: &Env) -> Result<Value, PolicyError> {
    if needs_context(e) {
        return Err(PolicyError::Eval(
            "this expression cannot use field(), current() or requestContext()".into(),
        ));
    }
    expr::eval(e, &FoldScope { env })
}

// ---------------------------------------------------------------------------------------------
// Compilation.

/// Compiles conditions of one definition.
pub(crate) struct Compiler<'e> {
    pub(crate) env: &'e mut Env,
    value_counts: usize,
}

impl<'e> Compiler<'e> {
    /// A compiler over the definition's environment (its `fields` table is filled).
    pub(crate) fn new(env: &'e mut Env) -> Compiler<'e> {
        Compiler {
            env,
            value_counts: 0,
        }
    }

    /// Compiles a condition object.
    pub(crate) fn cond(&mut self, v: &Value) -> Result<Cond, String> {
        let Value::Object(m) = v else {
            return Err(format!(
                "a condition must be an object, got {}",
                type_name(v)
            ));
        };
        let find = |k: &str| m.iter().find(|(key, _)| key.eq_ignore_ascii_case(k));
        for (name, is_all) in [("allOf", true), ("anyOf", false)] {
            if let Some((_, list)) = find(name) {
                if m.len() != 1 {
                    return Err(format!("{name} must be alone in its object"));
                }
                let Value::Array(items) = list else {
                    return Err(format!("{name} must be an array"));
                };
                let cs = items
                    .iter()
                    .map(|c| self.cond(c))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(if is_all { Cond::All(cs) } else { Cond::Any(cs) });
            }
        }
        if let Some((_, inner)) = find("not") {
            if m.len() != 1 {
                return Err("not must be alone in its object".into());
            }
            return Ok(Cond::Not(Box::new(self.cond(inner)?)));
        }
        self.leaf(m).map(|l| Cond::Leaf(Box::new(l)))
    }

    fn leaf(&mut self, m: &Map<String, Value>) -> Result<Leaf, String> {
        let mut lhs_kind: Option<(&str, &Value)> = None;
        let mut op: Option<(Op, &Value)> = None;
        for (k, v) in m {
            let lk = k.to_ascii_lowercase();
            if matches!(lk.as_str(), "field" | "value" | "count") {
                if lhs_kind.is_some() {
                    return Err("a condition has more than one of field, value, count".into());
                }
                lhs_kind = Some((k.as_str(), v));
            } else if let Some((_, o)) = OPS.iter().find(|(n, _)| *n == lk) {
                if op.is_some() {
                    return Err(format!("a condition has more than one operator ({k})"));
                }
                op = Some((*o, v));
            } else {
                return Err(format!("unknown condition key {k:?}"));
            }
        }
        let Some((kind, lv)) = lhs_kind else {
            return Err("a condition needs field, value or count (or allOf/anyOf/not)".into());
        };
        let Some((op, rv)) = op else {
            return Err(format!("the {kind} condition has no operator"));
        };
        let (lhs, text, normalise) = match kind.to_ascii_lowercase().as_str() {
            "field" => {
                let f = self.field(lv)?;
                let normalise = matches!(f, FieldRef::Location)
                    || matches!(&f, FieldRef::Path { segs, .. } if segs.len() == 2
                        && matches!((&segs[0], &segs[1]), (Seg::Key(a), Seg::Key(b))
                            if a.eq_ignore_ascii_case("identity") && b.eq_ignore_ascii_case("type")));
                (Lhs::Field(f), text_of(lv), normalise)
            }
            "value" => (Lhs::Value(self.tmpl(lv)?), text_of(lv), false),
            _ => {
                let (c, text) = self.count(lv)?;
                (Lhs::Count(Box::new(c)), text, false)
            }
        };
        let rhs = self.tmpl(rv)?;
        let rhs_unknown = match &rhs {
            Tmpl::Const(v) => find_unknown(v).map(str::to_string),
            _ => None,
        };
        if let (Op::Exists, Tmpl::Const(v)) = (op, &rhs) {
            if rhs_unknown.is_none() && truthy(v).is_err() {
                return Err(format!("exists takes true or false, got {v}"));
            }
        }
        Ok(Leaf {
            lhs,
            op,
            rhs,
            rhs_unknown,
            normalise,
            text,
        })
    }

    fn field(&mut self, v: &Value) -> Result<FieldRef, String> {
        let t = self.tmpl(v)?;
        let name = match t {
            Tmpl::Const(Value::String(s)) => s,
            Tmpl::Const(other) => {
                return Err(format!(
                    "field must name an alias, got {}",
                    type_name(&other)
                ))
            }
            _ => return Err("field names that depend on the resource are not supported".into()),
        };
        alias::compile_field(&name, self.env.data_mode)
            .map_err(|why| format!("unknown alias {name:?}: {why}"))
    }

    fn count(&mut self, v: &Value) -> Result<(Count, String), String> {
        let Value::Object(m) = v else {
            return Err("count must be an object".into());
        };
        let mut field = None;
        let mut value = None;
        let mut name = None;
        let mut filter = None;
        for (k, x) in m {
            match k.to_ascii_lowercase().as_str() {
                "field" => field = Some(x),
                "value" => value = Some(x),
                "name" => name = Some(x.as_str().ok_or("count.name must be a string")?.to_string()),
                "where" => filter = Some(x),
                other => return Err(format!("unknown key {other:?} in count")),
            }
        }
        let filter = filter.map(|w| self.cond(w)).transpose()?;
        let (source, text) = match (field, value) {
            (Some(f), None) => {
                if name.is_some() {
                    return Err("count.name is only for value counts".into());
                }
                match self.field(f)? {
                    p @ FieldRef::Path { wildcard: true, .. } => {
                        (CountSource::Field(p), text_of(f))
                    }
                    _ => return Err(format!("count.field must be a [*] alias, got {f}")),
                }
            }
            (None, Some(val)) => {
                self.value_counts += 1;
                if self.value_counts > MAX_VALUE_COUNTS {
                    return Err(format!(
                        "more than {MAX_VALUE_COUNTS} value counts in one policy rule"
                    ));
                }
                (
                    CountSource::Value {
                        values: self.tmpl(val)?,
                        name,
                    },
                    text_of(val),
                )
            }
            _ => return Err("count needs exactly one of field and value".into()),
        };
        let text = if filter.is_some() {
            format!("count({text} where …)")
        } else {
            format!("count({text})")
        };
        Ok((Count { source, filter }, text))
    }

    /// Compiles a JSON value that may hold expressions.
    pub(crate) fn tmpl(&mut self, v: &Value) -> Result<Tmpl, String> {
        match v {
            Value::String(s) => match expr::classify(s) {
                expr::Template::Literal(l) => Ok(Tmpl::Const(Value::String(l.into_owned()))),
                expr::Template::Expression(text) => {
                    let e = expr::parse(text).map_err(|e| e.to_string())?;
                    self.register_fields(&e)?;
                    if needs_context(&e) {
                        Ok(Tmpl::Expr(e))
                    } else {
                        eval_constant(&e, self.env)
                            .map(Tmpl::Const)
                            .map_err(|err| format!("{s}: {err}"))
                    }
                }
            },
            Value::Array(a) => {
                let items = a
                    .iter()
                    .map(|x| self.tmpl(x))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|t| matches!(t, Tmpl::Const(_))) {
                    Ok(Tmpl::Const(Value::Array(
                        items
                            .into_iter()
                            .filter_map(|t| match t {
                                Tmpl::Const(c) => Some(c),
                                _ => None,
                            })
                            .collect(),
                    )))
                } else {
                    Ok(Tmpl::Array(items))
                }
            }
            Value::Object(m) => {
                let items = m
                    .iter()
                    .map(|(k, x)| self.tmpl(x).map(|t| (k.clone(), t)))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|(_, t)| matches!(t, Tmpl::Const(_))) {
                    Ok(Tmpl::Const(Value::Object(
                        items
                            .into_iter()
                            .filter_map(|(k, t)| match t {
                                Tmpl::Const(c) => Some((k, c)),
                                _ => None,
                            })
                            .collect(),
                    )))
                } else {
                    Ok(Tmpl::Object(items))
                }
            }
            other => Ok(Tmpl::Const(other.clone())),
        }
    }

    /// Resolves the literal aliases of `field('…')` and `current('…')` calls once.
    fn register_fields(&mut self, e: &Expr) -> Result<(), String> {
        match e {
            Expr::Call(name, args) => {
                let lname = name.to_ascii_lowercase();
                if let (true, [Expr::Str(a)]) = (lname == "field" || lname == "current", &args[..])
                {
                    let is_alias = lname == "field" || a.contains('/');
                    if is_alias {
                        let f = alias::compile_field(a, self.env.data_mode)
                            .map_err(|why| format!("unknown alias {a:?}: {why}"))?;
                        self.env.fields.insert(a.to_ascii_lowercase(), f);
                    }
                }
                args.iter().try_for_each(|a| self.register_fields(a))
            }
            Expr::Member(inner, _) => self.register_fields(inner),
            Expr::Index(a, b) => {
                self.register_fields(a)?;
                self.register_fields(b)
            }
            _ => Ok(()),
        }
    }
}

/// How a leaf's left side is shown in reasons: the alias, or the expression without brackets.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => match expr::classify(s) {
            expr::Template::Expression(t) => t.trim().to_string(),
            expr::Template::Literal(l) => l.into_owned(),
        },
        other => other.to_string(),
    }
}

/// The reason of the first unknown marker inside a value.
pub(crate) fn find_unknown(v: &Value) -> Option<&str> {
    if let Some(r) = unknown_reason(v) {
        return Some(r);
    }
    match v {
        Value::Array(a) => a.iter().find_map(find_unknown),
        Value::Object(m) => m.values().find_map(find_unknown),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation context.

/// The innermost `count` iterations, innermost first.
pub(crate) struct Frame<'a, 's> {
    kind: FrameKind<'a>,
    parent: Option<&'s Frame<'a, 's>>,
}

enum FrameKind<'a> {
    /// A field count's current element and the counted path.
    Field { prefix: &'a [Seg], elem: &'a Value },
    /// A value count's current element.
    Value {
        name: Option<&'a str>,
        elem: Cow<'a, Value>,
    },
}

/// What a condition is evaluated against.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a, 's> {
    /// The resource `field` leaves read (inside `existenceCondition`: the related resource).
    pub(crate) res: &'a Resource,
    /// The resource `field()` in expressions reads (the resource under evaluation).
    pub(crate) expr_res: &'a Resource,
    pub(crate) env: &'a Env,
    pub(crate) frames: Option<&'s Frame<'a, 's>>,
}

impl<'a, 's> Ctx<'a, 's> {
    /// A context for `res`.
    pub(crate) fn new(res: &'a Resource, env: &'a Env) -> Ctx<'a, 's> {
        Ctx {
            res,
            expr_res: res,
            env,
            frames: None,
        }
    }

    fn field_frame(&self, segs: &[Seg]) -> Option<(&'a [Seg], &'a Value)> {
        let mut f = self.frames;
        while let Some(fr) = f {
            if let FrameKind::Field { prefix, elem } = fr.kind {
                if alias::has_prefix(segs, prefix) {
                    return Some((prefix, elem));
                }
            }
            f = fr.parent;
        }
        None
    }
}

/// A field's value(s).
enum FieldRead<'a> {
    Single(Read<'a>),
    Many(Result<Vec<Option<&'a Value>>, &'a str>),
}

fn body_str<'a>(res: &'a Resource, k: &str) -> Read<'a> {
    match res.body.get(k) {
        None | Some(Value::Null) => Read::Missing,
        Some(v) => match unknown_reason(v) {
            Some(r) => Read::Unknown(Cow::Borrowed(r)),
            None => Read::Value(Cow::Borrowed(v)),
        },
    }
}

/// `fullName`: the names after the last provider namespace of the id (`vault/key`), else the
/// body's name.
fn full_name(res: &Resource) -> Option<String> {
    let id = res.id();
    let lower = id.to_ascii_lowercase();
    if let Some(pos) = lower.rfind("/providers/") {
        let parts: Vec<&str> = id[pos + "/providers/".len()..].split('/').collect();
        // namespace, type, name, type, name, ...
        if parts.len() >= 3 && parts.len() % 2 == 1 {
            let names: Vec<&str> = parts[2..].iter().step_by(2).copied().collect();
            return Some(names.join("/"));
        }
    }
    res.body
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn epoch_value<'a>(res: &'a Resource, path: &[Seg]) -> Result<Option<Instant>, Cow<'a, str>> {
    match alias::read_path(&res.body, path) {
        Read::Missing => Ok(None),
        Read::Unknown(r) => Err(r),
        Read::Value(v) => Ok(match v.as_ref() {
            Value::Number(n) => n.as_i64().map(Instant::from_secs),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .ok()
                .map(Instant::from_secs)
                .or_else(|| time::parse_datetime(s)),
            _ => None,
        }),
    }
}

fn created(res: &Resource, now: Instant) -> Result<Instant, Cow<'_, str>> {
    let path = [
        Seg::Key("properties".into()),
        Seg::Key("attributes".into()),
        Seg::Key("created".into()),
    ];
    Ok(epoch_value(res, &path)?.unwrap_or(now))
}

/// The data-plane `scheduledRotationDate` of an ARM key resource.
fn scheduled_rotation<'a>(
    res: &'a Resource,
    now: Instant,
) -> Result<Option<Instant>, Cow<'a, str>> {
    let actions = match alias::read_path(
        &res.body,
        &[
            Seg::Key("properties".into()),
            Seg::Key("rotationPolicy".into()),
            Seg::Key("lifetimeActions".into()),
        ],
    ) {
        Read::Missing => return Ok(None),
        Read::Unknown(r) => return Err(r),
        Read::Value(Cow::Borrowed(v)) => v,
        Read::Value(Cow::Owned(_)) => return Ok(None),
    };
    let Value::Array(list) = actions else {
        return Ok(None);
    };
    for a in list {
        if let Some(r) = find_unknown(a) {
            return Err(Cow::Borrowed(r));
        }
        let kind = a
            .get("action")
            .and_then(|x| x.as_object())
            .and_then(|x| get_ci(x, "type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !kind.eq_ignore_ascii_case("rotate") {
            continue;
        }
        let trigger = a
            .as_object()
            .and_then(|x| get_ci(x, "trigger"))
            .and_then(Value::as_object);
        let Some(trigger) = trigger else { continue };
        if let Some(d) = get_ci(trigger, "timeAfterCreate")
            .and_then(Value::as_str)
            .and_then(time::parse_duration)
        {
            return Ok(Some(time::add_duration(created(res, now)?, d, 1)));
        }
        if let Some(d) = get_ci(trigger, "timeBeforeExpiry")
            .and_then(Value::as_str)
            .and_then(time::parse_duration)
        {
            let attrs = [
                Seg::Key("properties".into()),
                Seg::Key("attributes".into()),
                Seg::Key("exp".into()),
            ];
            let expiry = match epoch_value(res, &attrs)? {
                Some(e) => Some(e),
                None => match alias::read_path(
                    &res.body,
                    &[
                        Seg::Key("properties".into()),
                        Seg::Key("rotationPolicy".into()),
                        Seg::Key("attributes".into()),
                        Seg::Key("expiryTime".into()),
                    ],
                ) {
                    Read::Unknown(r) => return Err(r),
                    Read::Value(v) => v
                        .as_str()
                        .and_then(time::parse_duration)
                        .map(|e| created(res, now).map(|c| time::add_duration(c, e, 1)))
                        .transpose()?,
                    Read::Missing => None,
                },
            };
            if let Some(e) = expiry {
                return Ok(Some(time::add_duration(e, d, -1)));
            }
        }
    }
    Ok(None)
}

fn read_field<'a>(ctx: &Ctx<'a, '_>, f: &FieldRef, res: &'a Resource) -> FieldRead<'a> {
    let owned = |s: String| Read::Value(Cow::Owned(Value::String(s)));
    match f {
        FieldRef::Type { data } => {
            let r = body_str(res, "type");
            if *data {
                if let Read::Value(v) = &r {
                    if v.as_str()
                        .is_some_and(|t| t.eq_ignore_ascii_case("Microsoft.KeyVault/vaults/keys"))
                    {
                        return FieldRead::Single(owned(
                            "Microsoft.KeyVault.Data/vaults/keys".into(),
                        ));
                    }
                }
            }
            FieldRead::Single(r)
        }
        FieldRef::Name => FieldRead::Single(match body_str(res, "name") {
            Read::Value(Cow::Borrowed(Value::String(s))) if s.contains('/') => {
                owned(s.rsplit('/').next().unwrap_or("").to_string())
            }
            other => other,
        }),
        FieldRef::FullName => FieldRead::Single(match body_str(res, "name") {
            Read::Unknown(r) => Read::Unknown(r),
            _ => match full_name(res) {
                Some(n) => owned(n),
                None => Read::Missing,
            },
        }),
        FieldRef::Kind => FieldRead::Single(body_str(res, "kind")),
        FieldRef::Id => FieldRead::Single(body_str(res, "id")),
        FieldRef::Location => FieldRead::Single(match body_str(res, "location") {
            Read::Value(v) => match v.as_str() {
                Some(s) => owned(alias::normalise(s)),
                None => Read::Value(v),
            },
            other => other,
        }),
        FieldRef::Path { segs, wildcard } => {
            let frame = if std::ptr::eq(res, ctx.res) {
                ctx.field_frame(segs)
            } else {
                None
            };
            let (root, rest, under) = match frame {
                Some((prefix, elem)) => (elem, &segs[prefix.len()..], true),
                None => (&res.body, &segs[..], false),
            };
            if *wildcard && rest.contains(&Seg::All) {
                let mut out = Vec::new();
                FieldRead::Many(alias::collect(root, rest, under, &mut out).map(|()| out))
            } else if frame.is_some() && *wildcard {
                // The counted alias itself (or a property of its element): the element only.
                FieldRead::Many(match alias::read_path(root, rest) {
                    Read::Missing => Ok(vec![None]),
                    Read::Unknown(r) => match r {
                        Cow::Borrowed(b) => Err(b),
                        Cow::Owned(_) => Err("unknown"),
                    },
                    Read::Value(Cow::Borrowed(v)) => Ok(vec![Some(v)]),
                    Read::Value(Cow::Owned(_)) => Ok(vec![None]),
                })
            } else {
                FieldRead::Single(alias::read_path(root, rest))
            }
        }
        FieldRef::Data(d) => FieldRead::Single(match d {
            alias::DataField::Epoch { path, default_now } => match epoch_value(res, path) {
                Err(r) => Read::Unknown(r),
                Ok(Some(t)) => owned(time::format_seconds(t)),
                Ok(None) if *default_now => owned(time::format_precise(ctx.env.now)),
                Ok(None) => match alias::read_path(&res.body, path) {
                    // Present but not a date: compared as it is.
                    Read::Value(v) => Read::Value(v),
                    _ => Read::Missing,
                },
            },
            alias::DataField::ScheduledRotation => match scheduled_rotation(res, ctx.env.now) {
                Err(r) => Read::Unknown(r),
                Ok(Some(t)) => owned(time::format_seconds(t)),
                Ok(None) => Read::Missing,
            },
        }),
    }
}

/// `field('alias')` in an expression.
fn field_function(ctx: &Ctx<'_, '_>, f: &FieldRef) -> Value {
    match read_field(ctx, f, ctx.expr_res) {
        FieldRead::Single(Read::Missing) => Value::String(String::new()),
        FieldRead::Single(Read::Unknown(r)) => unknown(r.into_owned()),
        FieldRead::Single(Read::Value(v)) => v.into_owned(),
        FieldRead::Many(Err(r)) => unknown(r),
        FieldRead::Many(Ok(vals)) => Value::Array(
            vals.into_iter()
                .map(|v| v.cloned().unwrap_or(Value::Null))
                .collect(),
        ),
    }
}

struct RunScope<'c, 'a, 's> {
    ctx: &'c Ctx<'a, 's>,
}

impl Scope for RunScope<'_, '_, '_> {
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>> {
        let ctx = self.ctx;
        let r = match name {
            "field" => match args {
                [Value::String(a)] => ctx.env.field(a).map(|f| field_function(ctx, &f)),
                _ => Err(PolicyError::Eval("field() takes one alias".into())),
            },
            "current" => current(ctx, args),
            "requestcontext" => {
                let v = ctx
                    .expr_res
                    .api_version
                    .clone()
                    .unwrap_or_else(|| LATEST_API_VERSION.to_string());
                let mut m = Map::new();
                m.insert("apiVersion".into(), Value::String(v));
                Ok(Value::Object(m))
            }
            "resourcegroup" => Ok(resource_group(ctx.expr_res)),
            "subscription" => Ok(subscription(ctx.expr_res)),
            _ => return policy_function(ctx.env, name, args),
        };
        Some(r)
    }
}

fn id_part(id: &str, key: &str) -> Option<String> {
    let parts: Vec<&str> = id.split('/').collect();
    parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case(key))
        .and_then(|i| parts.get(i + 1))
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
}

fn resource_group(res: &Resource) -> Value {
    let id = res.id();
    match (id_part(id, "subscriptions"), id_part(id, "resourceGroups")) {
        (Some(sub), Some(rg)) => {
            let mut m = Map::new();
            m.insert(
                "id".into(),
                Value::String(format!("/subscriptions/{sub}/resourceGroups/{rg}")),
            );
            m.insert("name".into(), Value::String(rg));
            m.insert(
                "location".into(),
                unknown("resourceGroup().location is not known offline"),
            );
            Value::Object(m)
        }
        _ => unknown("resourceGroup() is not known offline (the resource has no id)"),
    }
}

fn subscription(res: &Resource) -> Value {
    match id_part(res.id(), "subscriptions") {
        Some(sub) => {
            let mut m = Map::new();
            m.insert("id".into(), Value::String(format!("/subscriptions/{sub}")));
            m.insert("subscriptionId".into(), Value::String(sub));
            Value::Object(m)
        }
        None => unknown("subscription() is not known offline (the resource has no id)"),
    }
}

fn current(ctx: &Ctx<'_, '_>, args: &[Value]) -> Result<Value, PolicyError> {
    let mut f = ctx.frames;
    match args {
        [] => match f {
            Some(fr) => Ok(match &fr.kind {
                FrameKind::Field { elem, .. } => (*elem).clone(),
                FrameKind::Value { elem, .. } => elem.as_ref().clone(),
            }),
            None => Err(PolicyError::Eval("current() outside a count".into())),
        },
        [Value::String(key)] => {
            // A value count's name first.
            while let Some(fr) = f {
                if let FrameKind::Value {
                    name: Some(n),
                    elem,
                } = &fr.kind
                {
                    if n.eq_ignore_ascii_case(key) {
                        return Ok(elem.as_ref().clone());
                    }
                }
                f = fr.parent;
            }
            if key.contains('/') {
                let field = ctx.env.field(key)?;
                if let FieldRef::Path { segs, .. } = field.as_ref() {
                    if let Some((prefix, elem)) = ctx.field_frame(segs) {
                        let rest = &segs[prefix.len()..];
                        if rest.contains(&Seg::All) {
                            let mut out = Vec::new();
                            return Ok(match alias::collect(elem, rest, true, &mut out) {
                                Err(r) => unknown(r),
                                Ok(()) => Value::Array(
                                    out.into_iter()
                                        .map(|v| v.cloned().unwrap_or(Value::Null))
                                        .collect(),
                                ),
                            });
                        }
                        return Ok(match alias::read_path(elem, rest) {
                            Read::Missing => Value::Null,
                            Read::Unknown(r) => unknown(r.into_owned()),
                            Read::Value(v) => v.into_owned(),
                        });
                    }
                }
            }
            Err(PolicyError::Eval(format!(
                "current({key:?}): no enclosing count iterates it"
            )))
        }
        _ => Err(PolicyError::Eval("current() takes an optional name".into())),
    }
}

fn eval_tmpl<'a>(t: &'a Tmpl, ctx: &Ctx<'a, '_>) -> Result<Cow<'a, Value>, PolicyError> {
    match t {
        Tmpl::Const(v) => Ok(Cow::Borrowed(v)),
        Tmpl::Expr(e) => expr::eval(e, &RunScope { ctx }).map(Cow::Owned),
        Tmpl::Array(items) => Ok(Cow::Owned(Value::Array(
            items
                .iter()
                .map(|i| eval_tmpl(i, ctx).map(Cow::into_owned))
                .collect::<Result<_, _>>()?,
        ))),
        Tmpl::Object(items) => Ok(Cow::Owned(Value::Object(
            items
                .iter()
                .map(|(k, i)| eval_tmpl(i, ctx).map(|v| (k.clone(), v.into_owned())))
                .collect::<Result<_, _>>()?,
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Operators.

fn str_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

fn num_of_str(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn num_eq(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a.as_f64() == b.as_f64(),
    }
}

/// Equality of the policy language: strings ignoring case (or whitespace and case when
/// `norm`), booleans and numbers equal to their string forms, arrays and objects structurally.
pub(crate) fn loose_eq(a: &Value, b: &Value, norm: bool) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if norm {
                alias::normalise(x) == alias::normalise(y)
            } else {
                str_eq(x, y)
            }
        }
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => s
            .trim()
            .eq_ignore_ascii_case(if *x { "true" } else { "false" }),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            num_of_str(s).is_some_and(|f| n.as_f64() == Some(f))
        }
        (Value::Number(x), Value::Number(y)) => num_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| loose_eq(p, q, norm))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| get_ci(y, k).is_some_and(|w| loose_eq(v, w, norm)))
        }
        _ => a == b,
    }
}

/// A scalar as text for `like`/`contains`/`match` (`None` for arrays, objects, null).
fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// `like`: `*` matches any run of characters; case-insensitive.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// `match`: `#` a digit, `?` a letter, `.` any character, anything else itself.
fn pattern_match(text: &str, pattern: &str, insensitive: bool) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(c, q)| match q {
            '#' => c.is_ascii_digit(),
            '?' => c.is_alphabetic(),
            '.' => true,
            q if insensitive => c.to_lowercase().eq(q.to_lowercase()),
            q => c == q,
        })
}

fn ordering(a: &Value, b: &Value) -> Result<std::cmp::Ordering, PolicyError> {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => num_of_str(s),
        _ => None,
    };
    let err = || {
        PolicyError::Eval(format!(
            "cannot compare {} with {}",
            type_name(a),
            type_name(b)
        ))
    };
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if let (Some(p), Some(q)) = (time::parse_datetime(x), time::parse_datetime(y)) {
                return Ok(p.cmp(&q));
            }
            if let (Some(p), Some(q)) = (num_of_str(x), num_of_str(y)) {
                return p.partial_cmp(&q).ok_or_else(err);
            }
            Ok(if x.is_ascii() && y.is_ascii() {
                x.bytes()
                    .map(|c| c.to_ascii_lowercase())
                    .cmp(y.bytes().map(|c| c.to_ascii_lowercase()))
            } else {
                x.to_lowercase().cmp(&y.to_lowercase())
            })
        }
        (Value::Number(_), _) | (_, Value::Number(_)) => match (num(a), num(b)) {
            (Some(p), Some(q)) => p.partial_cmp(&q).ok_or_else(err),
            _ => Err(err()),
        },
        _ => Err(err()),
    }
}

/// Applies an operator to a present value (`Some`) or an absent one (`None`).
pub(crate) fn apply(
    op: Op,
    lhs: Option<&Value>,
    rhs: &Value,
    norm: bool,
) -> Result<bool, PolicyError> {
    let Some(v) = lhs else {
        return Ok(match op {
            Op::Exists => !truthy(rhs)?,
            Op::NotEquals
            | Op::NotLike
            | Op::NotMatch
            | Op::NotMatchInsensitively
            | Op::NotContains
            | Op::NotIn
            | Op::NotContainsKey => true,
            _ => false,
        });
    };
    let rhs_text = || {
        scalar_text(rhs).ok_or_else(|| {
            PolicyError::Eval(format!(
                "{} expects a string, got {}",
                op.name(),
                type_name(rhs)
            ))
        })
    };
    Ok(match op {
        Op::Exists => truthy(rhs)?,
        Op::Equals => loose_eq(v, rhs, norm),
        Op::NotEquals => !loose_eq(v, rhs, norm),
        Op::Like | Op::NotLike => {
            let pat = rhs_text()?;
            let m = scalar_text(v).is_some_and(|t| {
                if norm {
                    like(&alias::normalise(&t), &alias::normalise(&pat))
                } else {
                    like(&t, &pat)
                }
            });
            m == (op == Op::Like)
        }
        Op::Match | Op::NotMatch | Op::MatchInsensitively | Op::NotMatchInsensitively => {
            let pat = rhs_text()?;
            let insensitive = matches!(op, Op::MatchInsensitively | Op::NotMatchInsensitively);
            let m = scalar_text(v).is_some_and(|t| pattern_match(&t, &pat, insensitive));
            m == matches!(op, Op::Match | Op::MatchInsensitively)
        }
        Op::Contains | Op::NotContains => {
            let m = match v {
                Value::Array(a) => a.iter().any(|e| loose_eq(e, rhs, norm)),
                Value::Object(_) | Value::Null => false,
                scalar => {
                    let hay = scalar_text(scalar).unwrap_or_default().to_lowercase();
                    let needle = rhs_text()?.to_lowercase();
                    hay.contains(&needle)
                }
            };
            m == (op == Op::Contains)
        }
        Op::In | Op::NotIn => {
            let Value::Array(list) = rhs else {
                return Err(PolicyError::Eval(format!(
                    "{} expects an array, got {}",
                    op.name(),
                    type_name(rhs)
                )));
            };
            let m = list.iter().any(|e| loose_eq(v, e, norm));
            m == (op == Op::In)
        }
        Op::ContainsKey | Op::NotContainsKey => {
            let key = rhs_text()?;
            let m = match v {
                Value::Object(o) => o.keys().any(|k| str_eq(k, &key)),
                _ => false,
            };
            m == (op == Op::ContainsKey)
        }
        Op::Less => ordering(v, rhs)?.is_lt(),
        Op::LessOrEquals => ordering(v, rhs)?.is_le(),
        Op::Greater => ordering(v, rhs)?.is_gt(),
        Op::GreaterOrEquals => ordering(v, rhs)?.is_ge(),
    })
}

/// Operators whose result on a composite value depends on every part of it.
fn reads_whole(op: Op) -> bool {
    matches!(
        op,
        Op::Equals | Op::NotEquals | Op::In | Op::NotIn | Op::Contains | Op::NotContains
    )
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// Evaluates a condition. With `notes`, the leaves that decided the result describe themselves
/// there (`field is value (operator operand)`); without, nothing is allocated for reasons.
pub(crate) fn eval<'a>(
    c: &'a Cond,
    ctx: &Ctx<'a, '_>,
    notes: Option<&mut Vec<String>>,
) -> Result<Tri, PolicyError> {
    match c {
        Cond::Const(b) => Ok(Tri::from_bool(*b)),
        Cond::Not(inner) => eval(inner, ctx, notes).map(Tri::not),
        Cond::Leaf(l) => eval_leaf(l, ctx, notes),
        Cond::All(items) | Cond::Any(items) => {
            let all = matches!(c, Cond::All(_));
            let (decisive, other) = if all {
                (Tri::False, Tri::True)
            } else {
                (Tri::True, Tri::False)
            };
            match notes {
                None => {
                    let mut unknown = false;
                    for i in items {
                        match eval(i, ctx, None)? {
                            t if t == decisive => return Ok(decisive),
                            Tri::Unknown => unknown = true,
                            _ => {}
                        }
                    }
                    Ok(if unknown { Tri::Unknown } else { other })
                }
                Some(out) => {
                    let mut unknown_notes = Vec::new();
                    let mut other_notes = Vec::new();
                    let mut unknown = false;
                    for i in items {
                        let mut mine = Vec::new();
                        match eval(i, ctx, Some(&mut mine))? {
                            t if t == decisive => {
                                out.extend(mine);
                                return Ok(decisive);
                            }
                            Tri::Unknown => {
                                unknown = true;
                                unknown_notes.extend(mine);
                            }
                            _ => other_notes.extend(mine),
                        }
                    }
                    if unknown {
                        out.extend(unknown_notes);
                        Ok(Tri::Unknown)
                    } else {
                        out.extend(other_notes);
                        Ok(other)
                    }
                }
            }
        }
    }
}

/// Renders a value for a reason (long arrays and objects shortened).
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => {
            let shown: Vec<String> = a.iter().take(4).map(render).collect();
            if a.len() > 4 {
                format!("[{}, … ({} items)]", shown.join(", "), a.len())
            } else {
                format!("[{}]", shown.join(", "))
            }
        }
        Value::Object(_) => {
            let s = v.to_string();
            if s.chars().count() > 80 {
                format!("{}…", s.chars().take(80).collect::<String>())
            } else {
                s
            }
        }
        other => other.to_string(),
    }
}

fn note(leaf: &Leaf, subject: &str, truth: Tri, rhs: &Value) -> String {
    match truth {
        Tri::Unknown => format!("{} is unknown offline: {subject}", leaf.text),
        _ => {
            if leaf.op == Op::Exists {
                let want = truthy(rhs).unwrap_or(true) == (truth == Tri::True);
                return format!(
                    "{} {subject} (exists {})",
                    leaf.text,
                    if want { "true" } else { "false" }
                );
            }
            let op = if truth == Tri::True {
                leaf.op.name()
            } else {
                leaf.op.negated_name()
            };
            format!("{} {subject} ({op} {})", leaf.text, render(rhs))
        }
    }
}

fn subject_of(v: Option<&Value>) -> String {
    match v {
        None => "is missing".into(),
        Some(v) => format!("is {}", render(v)),
    }
}

fn eval_leaf<'a>(
    leaf: &'a Leaf,
    ctx: &Ctx<'a, '_>,
    notes: Option<&mut Vec<String>>,
) -> Result<Tri, PolicyError> {
    let rhs = eval_tmpl(&leaf.rhs, ctx)?;
    let rhs_unknown: Option<Cow<'_, str>> = match (&leaf.rhs_unknown, &leaf.rhs) {
        (Some(r), _) => Some(Cow::Borrowed(r.as_str())),
        (None, Tmpl::Const(_)) => None,
        (None, _) => find_unknown(&rhs).map(|r| Cow::Owned(r.to_string())),
    };
    let is_type = matches!(leaf.lhs, Lhs::Field(FieldRef::Type { .. }));
    let push = |notes: Option<&mut Vec<String>>, f: &dyn Fn() -> String| {
        if let Some(n) = notes {
            if !is_type {
                n.push(f());
            }
        }
    };
    if let Some(r) = rhs_unknown {
        push(notes, &|| {
            format!("{} {} an unknown value: {r}", leaf.text, leaf.op.name())
        });
        return Ok(Tri::Unknown);
    }
    let rhs = rhs.as_ref();
    match &leaf.lhs {
        Lhs::Field(f) => match read_field(ctx, f, ctx.res) {
            FieldRead::Single(Read::Unknown(r)) => {
                push(notes, &|| note(leaf, &r, Tri::Unknown, rhs));
                Ok(Tri::Unknown)
            }
            FieldRead::Single(Read::Missing) => {
                let t = Tri::from_bool(apply(leaf.op, None, rhs, leaf.normalise)?);
                push(notes, &|| note(leaf, "is missing", t, rhs));
                Ok(t)
            }
            FieldRead::Single(Read::Value(v)) => {
                if reads_whole(leaf.op) && (v.is_array() || v.is_object()) {
                    if let Some(r) = find_unknown(&v) {
                        push(notes, &|| note(leaf, r, Tri::Unknown, rhs));
                        return Ok(Tri::Unknown);
                    }
                }
                let t = Tri::from_bool(apply(leaf.op, Some(&v), rhs, leaf.normalise)?);
                push(notes, &|| note(leaf, &subject_of(Some(&v)), t, rhs));
                Ok(t)
            }
            FieldRead::Many(Err(r)) => {
                push(notes, &|| note(leaf, r, Tri::Unknown, rhs));
                Ok(Tri::Unknown)
            }
            FieldRead::Many(Ok(vals)) => {
                let mut all = true;
                for v in &vals {
                    if let Some(x) = v {
                        if reads_whole(leaf.op) && (x.is_array() || x.is_object()) {
                            if let Some(r) = find_unknown(x) {
                                push(notes, &|| note(leaf, r, Tri::Unknown, rhs));
                                return Ok(Tri::Unknown);
                            }
                        }
                    }
                    if !apply(leaf.op, *v, rhs, leaf.normalise)? {
                        all = false;
                        break;
                    }
                }
                let t = Tri::from_bool(all);
                push(notes, &|| {
                    let shown = Value::Array(
                        vals.iter()
                            .map(|v| v.cloned().unwrap_or(Value::Null))
                            .collect(),
                    );
                    note(leaf, &format!("is {}", render(&shown)), t, rhs)
                });
                Ok(t)
            }
        },
        Lhs::Value(t) => {
            let v = eval_tmpl(t, ctx)?;
            if let Some(r) = find_unknown(&v) {
                push(notes, &|| note(leaf, r, Tri::Unknown, rhs));
                return Ok(Tri::Unknown);
            }
            let present = (!v.is_null()).then_some(v.as_ref());
            let t = Tri::from_bool(apply(leaf.op, present, rhs, leaf.normalise)?);
            push(notes, &|| note(leaf, &subject_of(present), t, rhs));
            Ok(t)
        }
        Lhs::Count(c) => match count(c, ctx)? {
            Counted::Unknown(r) => {
                push(notes, &|| note(leaf, &r, Tri::Unknown, rhs));
                Ok(Tri::Unknown)
            }
            Counted::N(n) => {
                let v = Value::from(n);
                let t = Tri::from_bool(apply(leaf.op, Some(&v), rhs, false)?);
                push(notes, &|| note(leaf, &format!("is {n}"), t, rhs));
                Ok(t)
            }
        },
    }
}

/// Evaluates `then.details.name`: the name, or (inner `Err`) the reason it is unknown.
pub(crate) fn eval_detail_name<'a>(
    t: &'a Tmpl,
    ctx: &Ctx<'a, '_>,
) -> Result<Result<String, String>, PolicyError> {
    let v = eval_tmpl(t, ctx)?;
    if let Some(r) = find_unknown(&v) {
        return Ok(Err(r.to_string()));
    }
    match v.as_ref() {
        Value::String(s) => Ok(Ok(s.clone())),
        other => Err(PolicyError::Eval(format!(
            "details.name must be a string, got {}",
            type_name(other)
        ))),
    }
}

enum Counted {
    N(u64),
    Unknown(String),
}

fn count<'a>(c: &'a Count, ctx: &Ctx<'a, '_>) -> Result<Counted, PolicyError> {
    let mut n = 0u64;
    let mut unknown: Option<String> = None;
    match &c.source {
        CountSource::Field(field) => {
            let FieldRef::Path { segs, .. } = field else {
                return Err(PolicyError::Eval("count.field is not a [*] alias".into()));
            };
            let vals = match read_field(ctx, field, ctx.res) {
                FieldRead::Many(Ok(v)) => v,
                FieldRead::Many(Err(r)) => return Ok(Counted::Unknown(r.to_string())),
                FieldRead::Single(Read::Unknown(r)) => return Ok(Counted::Unknown(r.into_owned())),
                FieldRead::Single(_) => Vec::new(),
            };
            for elem in vals.into_iter().flatten() {
                let Some(filter) = &c.filter else {
                    n += 1;
                    continue;
                };
                let frame = Frame {
                    kind: FrameKind::Field { prefix: segs, elem },
                    parent: ctx.frames,
                };
                let sub = Ctx {
                    frames: Some(&frame),
                    ..*ctx
                };
                match eval(filter, &sub, None)? {
                    Tri::True => n += 1,
                    Tri::False => {}
                    Tri::Unknown => {
                        unknown.get_or_insert_with(|| explain_unknown(filter, &sub));
                    }
                }
            }
        }
        CountSource::Value { values, name } => {
            let arr = eval_tmpl(values, ctx)?;
            if let Some(r) = unknown_reason(&arr) {
                return Ok(Counted::Unknown(r.to_string()));
            }
            let Value::Array(items) = arr.as_ref() else {
                return Err(PolicyError::Eval(format!(
                    "count.value must be an array, got {}",
                    type_name(&arr)
                )));
            };
            if items.len() > MAX_VALUE_COUNT_ITERATIONS {
                return Err(PolicyError::Eval(format!(
                    "a value count iterates over {} items (at most {MAX_VALUE_COUNT_ITERATIONS})",
                    items.len()
                )));
            }
            for item in items {
                let Some(filter) = &c.filter else {
                    n += 1;
                    continue;
                };
                let elem = Cow::Owned(item.clone());
                let frame = Frame {
                    kind: FrameKind::Value {
                        name: name.as_deref(),
                        elem,
                    },
                    parent: ctx.frames,
                };
                let sub = Ctx {
                    frames: Some(&frame),
                    ..*ctx
                };
                match eval(filter, &sub, None)? {
                    Tri::True => n += 1,
                    Tri::False => {}
                    Tri::Unknown => {
                        unknown.get_or_insert_with(|| explain_unknown(filter, &sub));
                    }
                }
            }
        }
    }
    Ok(match unknown {
        Some(r) => Counted::Unknown(r),
        None => Counted::N(n),
    })
}

fn explain_unknown<'a>(c: &'a Cond, ctx: &Ctx<'a, '_>) -> String {
    let mut notes = Vec::new();
    let _ = eval(c, ctx, Some(&mut notes));
    if notes.is_empty() {
        "a count condition is unknown".into()
    } else {
        notes.join("; ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn like_and_match() {
        assert!(like("Microsoft.KeyVault", "microsoft.*"));
        assert!(like("abc", "*"));
        assert!(like("abc", "a*c"));
        assert!(!like("abc", "a*d"));
        assert!(like("a.b.c", "*.c"));
        assert!(pattern_match("ab-12", "??-##", false));
        assert!(!pattern_match("AB-12", "ab-##", false));
        assert!(pattern_match("AB-12", "ab-##", true));
        assert!(!pattern_match("ab-123", "??-##", false));
    }

    #[test]
    fn ip_ranges() {
        let t = |a: &str, b: &str| ip_range_contains(&[json!(a), json!(b)]).unwrap() == json!(true);
        assert!(t("10.0.0.0/24", "10.0.0.7"));
        assert!(!t("10.0.0.0/24", "10.0.1.7"));
        assert!(t("10.0.0.0/8", "10.1.0.0/16"));
        assert!(t("10.0.0.1-10.0.0.9", "10.0.0.9"));
        assert!(t("2001:db8::/32", "2001:db8::1"));
        assert!(ip_range_contains(&[json!("10.0.0.0/8"), json!("2001:db8::1")]).is_err());
    }
}
