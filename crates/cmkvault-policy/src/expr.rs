//! The `[...]` expression language shared by Azure Policy rules and ARM templates.
//!
//! A JSON string is an expression when it starts with `[` and ends with `]`; a string starting
//! with `[[` is a literal with the first `[` removed. Grammar:
//!
//! ```text
//! expr    := primary ( '.' IDENT | '[' expr ']' )*
//! primary := STRING ('…' with '' for a quote) | NUMBER | IDENT '(' [expr (',' expr)*] ')'
//!          | 'true' | 'false' | 'null'
//! ```
//!
//! [`parse`] builds an [`Expr`]; [`eval`] evaluates it with a [`Scope`], which supplies the
//! context functions (`parameters`, `field`, `variables`, `copyIndex`, ...). Functions that do
//! not depend on a context (`concat`, `toLower`, `if`, ...) are in [`call_common`]. A value that
//! cannot be known offline is an unknown marker (see [`crate::resource::unknown`]): most
//! functions given one return one, so the uncertainty reaches the verdict.

use serde_json::{Map, Number, Value};

use crate::error::PolicyError;
use crate::resource::{unknown, unknown_reason};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// `true`, `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A function call: the name as written, and the arguments.
    Call(String, Vec<Expr>),
    /// `.name` member access.
    Member(Box<Expr>, String),
    /// `[index]` access (array index or object key).
    Index(Box<Expr>, Box<Expr>),
}

/// What a JSON string holds: an expression or a literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Template<'a> {
    /// A plain string (an escaped `[[...` already unescaped).
    Literal(std::borrow::Cow<'a, str>),
    /// The text between the outer brackets of `[...]`.
    Expression(&'a str),
}

/// Classifies a JSON string as an expression or a literal.
pub fn classify(s: &str) -> Template<'_> {
    if let Some(rest) = s.strip_prefix("[[") {
        return Template::Literal(std::borrow::Cow::Owned(format!("[{rest}")));
    }
    if s.len() >= 2 && s.starts_with('[') && s.ends_with(']') {
        return Template::Expression(&s[1..s.len() - 1]);
    }
    Template::Literal(std::borrow::Cow::Borrowed(s))
}

/// Parses the text of an expression (without the outer brackets).
pub fn parse(text: &str) -> Result<Expr, PolicyError> {
    let mut p = Parser {
        src: text,
        chars: text.char_indices().collect(),
        pos: 0,
    };
    p.skip_ws();
    let e = p.expr()?;
    p.skip_ws();
    if p.pos < p.chars.len() {
        return Err(p.err("unexpected text after the expression"));
    }
    Ok(e)
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &str) -> PolicyError {
        let at = self.chars.get(self.pos).map_or(self.src.len(), |c| c.0);
        PolicyError::Parse {
            expr: self.src.to_string(),
            reason: format!("{reason} at offset {at}"),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|c| c.1)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, PolicyError> {
        let mut e = self.primary()?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    self.skip_ws();
                    let name = self.ident()?;
                    e = Expr::Member(Box::new(e), name);
                }
                Some('[') => {
                    self.pos += 1;
                    self.skip_ws();
                    let idx = self.expr()?;
                    if !self.eat(']') {
                        return Err(self.err("expected ']'"));
                    }
                    e = Expr::Index(Box::new(e), Box::new(idx));
                }
                _ => return Ok(e),
            }
        }
    }

    fn ident(&mut self) -> Result<String, PolicyError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err("expected a name"));
        }
        Ok(self.chars[start..self.pos].iter().map(|c| c.1).collect())
    }

    fn primary(&mut self) -> Result<Expr, PolicyError> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.err("unexpected end of expression")),
            Some('\'') => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err("unterminated string")),
                        Some('\'') => {
                            self.pos += 1;
                            if self.peek() == Some('\'') {
                                s.push('\'');
                                self.pos += 1;
                            } else {
                                return Ok(Expr::Str(s));
                            }
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().map(|c| c.1).collect();
                text.parse::<i64>()
                    .map(Expr::Int)
                    .map_err(|_| self.err("bad number"))
            }
            Some(_) => {
                let name = self.ident()?;
                if !self.eat('(') {
                    return match name.to_ascii_lowercase().as_str() {
                        "true" => Ok(Expr::Bool(true)),
                        "false" => Ok(Expr::Bool(false)),
                        "null" => Ok(Expr::Null),
                        _ => Err(self.err("expected '(' after a function name")),
                    };
                }
                let mut args = Vec::new();
                if !self.eat(')') {
                    loop {
                        args.push(self.expr()?);
                        if self.eat(')') {
                            break;
                        }
                        if !self.eat(',') {
                            return Err(self.err("expected ',' or ')'"));
                        }
                    }
                }
                Ok(Expr::Call(name, args))
            }
        }
    }
}

/// The context an expression is evaluated in: it supplies the functions that depend on it.
pub trait Scope {
    /// Calls the context function `name` (lower-cased) with evaluated `args`. Returns `None`
    /// when the scope does not define it (the common library is tried next).
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>>;
}

/// A scope with no context functions (only the common library).
pub struct NoScope;

impl Scope for NoScope {
    fn call(&self, _name: &str, _args: &[Value]) -> Option<Result<Value, PolicyError>> {
        None
    }
}

/// Evaluates an expression. `if` evaluates only the branch it takes.
pub fn eval(e: &Expr, scope: &dyn Scope) -> Result<Value, PolicyError> {
    match e {
        Expr::Str(s) => Ok(Value::String(s.clone())),
        Expr::Int(i) => Ok(Value::Number((*i).into())),
        Expr::Bool(b) => Ok(Value::Bool(*b)),
        Expr::Null => Ok(Value::Null),
        Expr::Member(inner, name) => {
            let v = eval(inner, scope)?;
            member(&v, name)
        }
        Expr::Index(inner, idx) => {
            let v = eval(inner, scope)?;
            let i = eval(idx, scope)?;
            index(&v, &i)
        }
        Expr::Call(name, args) => {
            let lname = name.to_ascii_lowercase();
            if lname == "if" {
                if args.len() != 3 {
                    return Err(PolicyError::Eval("if() takes 3 arguments".into()));
                }
                let c = eval(&args[0], scope)?;
                if unknown_reason(&c).is_some() {
                    return Ok(c);
                }
                return if truthy(&c)? {
                    eval(&args[1], scope)
                } else {
                    eval(&args[2], scope)
                };
            }
            let vals = args
                .iter()
                .map(|a| eval(a, scope))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(r) = scope.call(&lname, &vals) {
                return r;
            }
            call_common(&lname, &vals)
                .unwrap_or_else(|| Err(PolicyError::Eval(format!("unknown function {name}()"))))
        }
    }
}

/// Evaluates a JSON string: an expression is parsed and evaluated, a literal returned as is.
pub fn eval_str(s: &str, scope: &dyn Scope) -> Result<Value, PolicyError> {
    match classify(s) {
        Template::Literal(l) => Ok(Value::String(l.into_owned())),
        Template::Expression(text) => eval(&parse(text)?, scope),
    }
}

/// `.name` on a value: an object's property (case-insensitive), or null when absent.
fn member(v: &Value, name: &str) -> Result<Value, PolicyError> {
    if unknown_reason(v).is_some() {
        return Ok(v.clone());
    }
    match v {
        Value::Object(m) => Ok(get_ci(m, name).cloned().unwrap_or(Value::Null)),
        _ => Err(PolicyError::Eval(format!(
            "cannot read property {name:?} of {}",
            type_name(v)
        ))),
    }
}

fn index(v: &Value, i: &Value) -> Result<Value, PolicyError> {
    if unknown_reason(v).is_some() {
        return Ok(v.clone());
    }
    if unknown_reason(i).is_some() {
        return Ok(i.clone());
    }
    match (v, i) {
        (Value::Array(a), Value::Number(n)) => {
            let idx = n.as_u64().and_then(|u| usize::try_from(u).ok());
            idx.and_then(|u| a.get(u)).cloned().ok_or_else(|| {
                PolicyError::Eval(format!("index {n} out of range (length {})", a.len()))
            })
        }
        (Value::Object(m), Value::String(k)) => Ok(get_ci(m, k).cloned().unwrap_or(Value::Null)),
        _ => Err(PolicyError::Eval(format!(
            "cannot index {} with {}",
            type_name(v),
            type_name(i)
        ))),
    }
}

/// An object's property by case-insensitive name (exact match first).
pub fn get_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The name of a JSON value's type, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A boolean argument (`true`/`false`, also the strings `"true"`/`"false"`).
pub fn truthy(v: &Value) -> Result<bool, PolicyError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(PolicyError::Eval(format!(
            "expected a boolean, got {}",
            type_name(v)
        ))),
    }
}

/// A value as text, the way `concat`/`format`/`string` render it.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn arity(name: &str, args: &[Value], min: usize, max: usize) -> Result<(), PolicyError> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(PolicyError::Eval(format!(
            "{name}() takes {want} arguments, got {}",
            args.len()
        )));
    }
    Ok(())
}

fn string_arg<'a>(name: &str, v: &'a Value) -> Result<&'a str, PolicyError> {
    v.as_str().ok_or_else(|| {
        PolicyError::Eval(format!("{name}() expects a string, got {}", type_name(v)))
    })
}

fn int_arg(name: &str, v: &Value) -> Result<i64, PolicyError> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| PolicyError::Eval(format!("{name}() expects an integer, got {}", type_name(v))))
}

/// Case-insensitive equality of JSON values (strings compared ignoring ASCII case).
pub fn equals_ci(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equals_ci(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| get_ci(y, k).is_some_and(|w| equals_ci(v, w)))
        }
        _ => a == b,
    }
}

/// The functions that do not depend on a context. `None` when `name` (lower-case) is not one.
pub fn call_common(name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>> {
    // Most functions are strict in their arguments: an unknown argument gives an unknown result.
    // `coalesce` looks for the first non-null one; `createArray`/`createObject` keep an unknown
    // element inside the value they build (an unknown object key still makes it unknown).
    if !matches!(name, "coalesce" | "createarray" | "createobject") {
        if let Some(u) = args.iter().find(|a| unknown_reason(a).is_some()) {
            return Some(Ok(u.clone()));
        }
    }
    common(name, args)
}

fn common(name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>> {
    let r = match name {
        "concat" => concat(args),
        "format" => format_fn(args),
        "tolower" => arity(name, args, 1, 1)
            .and_then(|_| string_arg(name, &args[0]))
            .map(|s| Value::String(s.to_lowercase())),
        "toupper" => arity(name, args, 1, 1)
            .and_then(|_| string_arg(name, &args[0]))
            .map(|s| Value::String(s.to_uppercase())),
        "equals" => arity(name, args, 2, 2).map(|_| Value::Bool(equals_ci(&args[0], &args[1]))),
        "not" => arity(name, args, 1, 1)
            .and_then(|_| truthy(&args[0]))
            .map(|b| Value::Bool(!b)),
        "and" | "or" => {
            let bools: Result<Vec<bool>, _> = args.iter().map(truthy).collect();
            bools.map(|b| {
                Value::Bool(if name == "and" {
                    b.iter().all(|x| *x)
                } else {
                    b.iter().any(|x| *x)
                })
            })
        }
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "null" => Ok(Value::Null),
        "length" => arity(name, args, 1, 1).and_then(|_| match &args[0] {
            Value::String(s) => Ok(Value::from(s.chars().count())),
            Value::Array(a) => Ok(Value::from(a.len())),
            Value::Object(m) => Ok(Value::from(m.len())),
            v => Err(PolicyError::Eval(format!("length() of {}", type_name(v)))),
        }),
        "empty" => arity(name, args, 1, 1).map(|_| {
            Value::Bool(match &args[0] {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(m) => m.is_empty(),
                _ => false,
            })
        }),
        "string" => arity(name, args, 1, 1).map(|_| Value::String(to_text(&args[0]))),
        "int" => arity(name, args, 1, 1)
            .and_then(|_| int_arg(name, &args[0]))
            .map(Value::from),
        "bool" => arity(name, args, 1, 1).and_then(|_| match &args[0] {
            Value::Number(n) => Ok(Value::Bool(n.as_f64() != Some(0.0))),
            v => truthy(v).map(Value::Bool),
        }),
        "createarray" => Ok(Value::Array(args.to_vec())),
        "coalesce" => Ok(args
            .iter()
            .find(|a| !a.is_null())
            .cloned()
            .unwrap_or(Value::Null)),
        "first" | "last" => arity(name, args, 1, 1).and_then(|_| {
            let first = name == "first";
            match &args[0] {
                Value::Array(a) => Ok(if first { a.first() } else { a.last() }
                    .cloned()
                    .unwrap_or(Value::Null)),
                Value::String(s) => {
                    let c = if first {
                        s.chars().next()
                    } else {
                        s.chars().last()
                    };
                    Ok(Value::String(c.map(String::from).unwrap_or_default()))
                }
                v => Err(PolicyError::Eval(format!("{name}() of {}", type_name(v)))),
            }
        }),
        "split" => arity(name, args, 2, 2).and_then(|_| {
            let s = string_arg(name, &args[0])?;
            let seps: Vec<String> = match &args[1] {
                Value::Array(a) => a.iter().map(to_text).collect(),
                v => vec![to_text(v)],
            };
            let mut parts = vec![s.to_string()];
            for sep in seps.iter().filter(|s| !s.is_empty()) {
                parts = parts
                    .iter()
                    .flat_map(|p| p.split(sep.as_str()).map(str::to_string))
                    .collect();
            }
            Ok(Value::Array(parts.into_iter().map(Value::String).collect()))
        }),
        "contains" => arity(name, args, 2, 2).map(|_| {
            Value::Bool(match &args[0] {
                Value::String(s) => s.to_lowercase().contains(&to_text(&args[1]).to_lowercase()),
                Value::Array(a) => a.iter().any(|x| equals_ci(x, &args[1])),
                Value::Object(m) => get_ci(m, &to_text(&args[1])).is_some(),
                _ => false,
            })
        }),
        "startswith" | "endswith" => arity(name, args, 2, 2).and_then(|_| {
            let s = string_arg(name, &args[0])?.to_lowercase();
            let p = string_arg(name, &args[1])?.to_lowercase();
            Ok(Value::Bool(if name == "startswith" {
                s.starts_with(&p)
            } else {
                s.ends_with(&p)
            }))
        }),
        "replace" => arity(name, args, 3, 3).and_then(|_| {
            let s = string_arg(name, &args[0])?;
            let from = string_arg(name, &args[1])?;
            let to = string_arg(name, &args[2])?;
            Ok(Value::String(if from.is_empty() {
                s.to_string()
            } else {
                s.replace(from, to)
            }))
        }),
        "trim" => arity(name, args, 1, 1)
            .and_then(|_| string_arg(name, &args[0]))
            .map(|s| Value::String(s.trim().to_string())),
        "substring" => arity(name, args, 2, 3).and_then(|_| {
            let s: Vec<char> = string_arg(name, &args[0])?.chars().collect();
            let start = usize::try_from(int_arg(name, &args[1])?).ok();
            let len = match args.get(2) {
                Some(v) => usize::try_from(int_arg(name, v)?).ok(),
                None => start.map(|st| s.len().saturating_sub(st)),
            };
            match (start, len) {
                (Some(st), Some(l)) if st + l <= s.len() => {
                    Ok(Value::String(s[st..st + l].iter().collect()))
                }
                _ => Err(PolicyError::Eval("substring() out of range".into())),
            }
        }),
        "less" | "lessorequals" | "greater" | "greaterorequals" => arity(name, args, 2, 2)
            .and_then(|_| {
                let ord = compare(&args[0], &args[1])?;
                Ok(Value::Bool(match name {
                    "less" => ord.is_lt(),
                    "lessorequals" => ord.is_le(),
                    "greater" => ord.is_gt(),
                    _ => ord.is_ge(),
                }))
            }),
        "add" | "sub" | "mul" | "div" | "mod" => arity(name, args, 2, 2).and_then(|_| {
            let a = int_arg(name, &args[0])?;
            let b = int_arg(name, &args[1])?;
            let r = match name {
                "add" => a.checked_add(b),
                "sub" => a.checked_sub(b),
                "mul" => a.checked_mul(b),
                "div" => a.checked_div(b),
                _ => a.checked_rem(b),
            };
            r.map(Value::from)
                .ok_or_else(|| PolicyError::Eval(format!("{name}() overflow or division by zero")))
        }),
        "json" => arity(name, args, 1, 1).and_then(|_| {
            serde_json::from_str(string_arg(name, &args[0])?)
                .map_err(|e| PolicyError::Eval(format!("json(): {e}")))
        }),
        "union" => union(args),
        "createobject" => {
            if let Some(u) = args.iter().step_by(2).find(|a| unknown_reason(a).is_some()) {
                return Some(Ok(u.clone()));
            }
            if !args.len().is_multiple_of(2) {
                Err(PolicyError::Eval(
                    "createObject() takes key/value pairs".into(),
                ))
            } else {
                let mut m = Map::new();
                for pair in args.chunks(2) {
                    m.insert(to_text(&pair[0]), pair[1].clone());
                }
                Ok(Value::Object(m))
            }
        }
        _ => return more::common(name, args),
    };
    Some(r)
}

/// Ordering for `less`/`greater` and the policy conditions: numbers numerically, strings
/// ordinally ignoring case (so `2021-04-01-preview` < `2021-06-01-preview`).
pub fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, PolicyError> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(p, q)| p.partial_cmp(&q))
            .ok_or_else(|| PolicyError::Eval("cannot compare numbers".into())),
        (Value::String(x), Value::String(y)) => Ok(x.to_lowercase().cmp(&y.to_lowercase())),
        _ => Err(PolicyError::Eval(format!(
            "cannot compare {} with {}",
            type_name(a),
            type_name(b)
        ))),
    }
}

fn concat(args: &[Value]) -> Result<Value, PolicyError> {
    if args.iter().any(Value::is_array) {
        let mut out = Vec::new();
        for a in args {
            match a {
                Value::Array(x) => out.extend(x.iter().cloned()),
                Value::Null => {}
                v => {
                    return Err(PolicyError::Eval(format!(
                        "concat() mixes arrays with {}",
                        type_name(v)
                    )))
                }
            }
        }
        return Ok(Value::Array(out));
    }
    Ok(Value::String(args.iter().map(to_text).collect()))
}

/// `format('{0}-{1}', a, b)` (.NET composite formatting, without format specifiers).
fn format_fn(args: &[Value]) -> Result<Value, PolicyError> {
    let Some((fmt, rest)) = args.split_first() else {
        return Err(PolicyError::Eval("format() needs a format string".into()));
    };
    let fmt = string_arg("format", fmt)?;
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut spec = String::new();
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                    spec.push(d);
                }
                let idx = spec.split([':', ',']).next().unwrap_or("");
                let i: usize = idx.trim().parse().map_err(|_| {
                    PolicyError::Eval(format!("format(): bad placeholder {{{spec}}}"))
                })?;
                let v = rest
                    .get(i)
                    .ok_or_else(|| PolicyError::Eval(format!("format(): no argument {i}")))?;
                out.push_str(&to_text(v));
            }
            c => out.push(c),
        }
    }
    Ok(Value::String(out))
}

fn union(args: &[Value]) -> Result<Value, PolicyError> {
    if args.iter().all(Value::is_object) {
        let mut m = Map::new();
        for a in args {
            if let Value::Object(x) = a {
                for (k, v) in x {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        return Ok(Value::Object(m));
    }
    let mut out: Vec<Value> = Vec::new();
    for a in args {
        let Value::Array(x) = a else {
            return Err(PolicyError::Eval(
                "union() takes all arrays or all objects".into(),
            ));
        };
        for v in x {
            if !out.iter().any(|o| o == v) {
                out.push(v.clone());
            }
        }
    }
    Ok(Value::Array(out))
}

mod more;

/// A number value from an `i64`.
pub fn int(i: i64) -> Value {
    Value::Number(Number::from(i))
}

/// An unknown marker for a function that cannot be evaluated offline (`reference()`, ...).
pub fn unresolvable(function: &str) -> Value {
    unknown(format!("{function}() cannot be resolved offline"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ev(s: &str) -> Value {
        eval_str(s, &NoScope).unwrap()
    }

    #[test]
    fn literals_and_escapes() {
        assert_eq!(ev("plain"), json!("plain"));
        assert_eq!(ev("[[not an expression]"), json!("[not an expression]"));
        assert_eq!(ev("['it''s']"), json!("it's"));
        assert_eq!(ev("[-3]"), json!(-3));
        assert_eq!(ev("[true]"), json!(true));
    }

    #[test]
    fn calls_members_and_indexes() {
        assert_eq!(ev("[concat('a', 'b', string(1))]"), json!("ab1"));
        assert_eq!(ev("[toLower('AbC')]"), json!("abc"));
        assert_eq!(
            ev("[format('{0}/{1}', 'acct', 'proj')]"),
            json!("acct/proj")
        );
        assert_eq!(ev("[json('{\"a\":{\"B\":[1,2]}}').a.b[1]]"), json!(2));
        assert_eq!(ev("[if(equals('X', 'x'), 'yes', 'no')]"), json!("yes"));
        assert_eq!(ev("[length(createArray(1, 2, 3))]"), json!(3));
        assert_eq!(
            ev("[less('2021-04-01-preview', '2021-06-01-preview')]"),
            json!(true)
        );
    }

    #[test]
    fn if_evaluates_only_the_branch_taken() {
        // The untaken branch would fail (unknown function).
        assert_eq!(ev("[if(true(), 'a', nosuch())]"), json!("a"));
    }

    #[test]
    fn unknown_propagates() {
        struct S;
        impl Scope for S {
            fn call(&self, name: &str, _: &[Value]) -> Option<Result<Value, PolicyError>> {
                (name == "reference").then(|| Ok(unresolvable("reference")))
            }
        }
        let v = eval_str("[concat('x', reference('r').id)]", &S).unwrap();
        assert!(unknown_reason(&v).unwrap().contains("reference()"));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = parse("concat('a'").unwrap_err().to_string();
        assert!(e.contains("expected ',' or ')'"), "{e}");
        let e = parse("'open").unwrap_err().to_string();
        assert!(e.contains("unterminated string"), "{e}");
        assert!(eval_str("[nosuch()]", &NoScope).is_err());
    }
}
