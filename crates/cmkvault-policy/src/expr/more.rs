//! More context-free functions of the common library: the array, object, string, encoding,
//! date and hashing functions ARM templates (and Bicep output) use.
//!
//! `uniqueString` and `guid` are deterministic but are **not** Azure's exact values: Azure's
//! hash is not published. `uniqueString` gives 13 characters of `[a-z2-7]` (MurmurHash64A of
//! the arguments joined with `-`, base-32), `guid` a UUID-shaped string from two such hashes.
//! Both are stable across runs and machines, so ids and names built from them are stable.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{arity, equals_ci, int_arg, string_arg, to_text, type_name};
use crate::datetime::DateTime;
use crate::error::PolicyError;

/// The largest `range()` result (ARM's limit).
const MAX_RANGE: i64 = 10_000;

pub(super) fn common(name: &str, args: &[Value]) -> Option<Result<Value, PolicyError>> {
    let r = match name {
        "take" | "skip" => take_skip(name, args),
        "indexof" | "lastindexof" => index_of(name, args),
        "padleft" => pad_left(args),
        "join" => arity(name, args, 2, 2).and_then(|_| match &args[0] {
            Value::Array(a) => {
                let sep = string_arg(name, &args[1])?;
                Ok(Value::String(
                    a.iter().map(to_text).collect::<Vec<_>>().join(sep),
                ))
            }
            v => Err(PolicyError::Eval(format!(
                "join() expects an array, got {}",
                type_name(v)
            ))),
        }),
        "items" => arity(name, args, 1, 1).and_then(|_| match &args[0] {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by_key(|k| k.to_lowercase());
                Ok(Value::Array(
                    keys.into_iter()
                        .map(|k| {
                            let mut o = Map::new();
                            o.insert("key".into(), Value::String(k.clone()));
                            o.insert("value".into(), m[k.as_str()].clone());
                            Value::Object(o)
                        })
                        .collect(),
                ))
            }
            v => Err(PolicyError::Eval(format!(
                "items() expects an object, got {}",
                type_name(v)
            ))),
        }),
        "objectkeys" => arity(name, args, 1, 1).and_then(|_| match &args[0] {
            Value::Object(m) => Ok(Value::Array(
                m.keys().map(|k| Value::String(k.clone())).collect(),
            )),
            v => Err(PolicyError::Eval(format!(
                "objectKeys() expects an object, got {}",
                type_name(v)
            ))),
        }),
        "range" => arity(name, args, 2, 2).and_then(|_| {
            let start = int_arg(name, &args[0])?;
            let count = int_arg(name, &args[1])?;
            if !(0..=MAX_RANGE).contains(&count) {
                return Err(PolicyError::Eval(format!(
                    "range() count {count} is outside 0..{MAX_RANGE}"
                )));
            }
            Ok(Value::Array(
                (0..count).map(|i| Value::from(start + i)).collect(),
            ))
        }),
        "min" | "max" => min_max(name, args),
        "intersection" => intersection(args),
        "flatten" => arity(name, args, 1, 1).and_then(|_| match &args[0] {
            Value::Array(a) => {
                let mut out = Vec::new();
                for v in a {
                    match v {
                        Value::Array(inner) => out.extend(inner.iter().cloned()),
                        other => out.push(other.clone()),
                    }
                }
                Ok(Value::Array(out))
            }
            v => Err(PolicyError::Eval(format!(
                "flatten() expects an array, got {}",
                type_name(v)
            ))),
        }),
        "array" => arity(name, args, 1, 1).map(|_| match &args[0] {
            Value::Array(a) => Value::Array(a.clone()),
            v => Value::Array(vec![v.clone()]),
        }),
        "tryget" => try_get(args),
        "shallowmerge" => arity(name, args, 1, 1).and_then(|_| match &args[0] {
            Value::Array(a) => {
                let mut m = Map::new();
                for v in a {
                    if let Value::Object(o) = v {
                        for (k, x) in o {
                            m.insert(k.clone(), x.clone());
                        }
                    }
                }
                Ok(Value::Object(m))
            }
            v => Err(PolicyError::Eval(format!(
                "shallowMerge() expects an array, got {}",
                type_name(v)
            ))),
        }),
        "base64" => arity(name, args, 1, 1)
            .and_then(|_| string_arg(name, &args[0]))
            .map(|s| Value::String(b64().encode(s.as_bytes()))),
        "base64tostring" | "base64tojson" => arity(name, args, 1, 1).and_then(|_| {
            let text = decode_b64_text(name, string_arg(name, &args[0])?)?;
            if name == "base64tostring" {
                Ok(Value::String(text))
            } else {
                serde_json::from_str(&text)
                    .map_err(|e| PolicyError::Eval(format!("base64ToJson(): {e}")))
            }
        }),
        "datauri" => arity(name, args, 1, 1).map(|_| {
            Value::String(format!(
                "data:text/plain;charset=utf8;base64,{}",
                b64().encode(to_text(&args[0]).as_bytes())
            ))
        }),
        "datauritostring" => arity(name, args, 1, 1).and_then(|_| {
            let s = string_arg(name, &args[0])?;
            let (head, data) = s.split_once(',').ok_or_else(|| {
                PolicyError::Eval("dataUriToString(): not a data URI".to_string())
            })?;
            if head.ends_with(";base64") {
                decode_b64_text(name, data).map(Value::String)
            } else {
                Ok(Value::String(percent_decode(data)))
            }
        }),
        "uri" => arity(name, args, 2, 2).and_then(|_| {
            let base = string_arg(name, &args[0])?;
            let rel = string_arg(name, &args[1])?;
            Ok(Value::String(uri_combine(base, rel)))
        }),
        "uricomponent" => arity(name, args, 1, 1)
            .and_then(|_| string_arg(name, &args[0]))
            .map(|s| Value::String(percent_encode(s))),
        "uricomponenttostring" => arity(name, args, 1, 1)
            .and_then(|_| string_arg(name, &args[0]))
            .map(|s| Value::String(percent_decode(s))),
        "datetimeadd" => arity(name, args, 2, 3).and_then(|_| {
            let base = parse_dt(name, &args[0])?;
            let dur = string_arg(name, &args[1])?;
            let t = base.add_duration(dur).ok_or_else(|| {
                PolicyError::Eval(format!("dateTimeAdd(): bad ISO 8601 duration {dur:?}"))
            })?;
            let fmt = args.get(2).map(|f| string_arg(name, f)).transpose()?;
            Ok(Value::String(t.format(fmt)))
        }),
        "datetimefromepoch" => arity(name, args, 1, 1)
            .and_then(|_| int_arg(name, &args[0]))
            .map(|s| Value::String(DateTime::from_epoch(s).format(None))),
        "datetimetoepoch" => arity(name, args, 1, 1)
            .and_then(|_| parse_dt(name, &args[0]))
            .map(|t| Value::from(t.secs)),
        "uniquestring" => {
            strings(name, args, 1).map(|parts| Value::String(unique_string(&parts.join("-"))))
        }
        "guid" => strings(name, args, 1).map(|parts| Value::String(guid(&parts.join("-")))),
        _ => return None,
    };
    Some(r)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn decode_b64_text(name: &str, s: &str) -> Result<String, PolicyError> {
    let bytes = b64()
        .decode(s.trim())
        .map_err(|e| PolicyError::Eval(format!("{name}(): not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| PolicyError::Eval(format!("{name}(): not UTF-8 text")))
}

fn parse_dt(name: &str, v: &Value) -> Result<DateTime, PolicyError> {
    let s = string_arg(name, v)?;
    DateTime::parse(s)
        .ok_or_else(|| PolicyError::Eval(format!("{name}(): {s:?} is not an ISO 8601 date-time")))
}

fn strings(name: &str, args: &[Value], min: usize) -> Result<Vec<String>, PolicyError> {
    if args.len() < min {
        return Err(PolicyError::Eval(format!(
            "{name}() takes at least {min} argument"
        )));
    }
    args.iter()
        .map(|a| string_arg(name, a).map(str::to_string))
        .collect()
}

fn take_skip(name: &str, args: &[Value]) -> Result<Value, PolicyError> {
    arity(name, args, 2, 2)?;
    let n = usize::try_from(int_arg(name, &args[1])?.max(0)).unwrap_or(usize::MAX);
    let take = name == "take";
    match &args[0] {
        Value::Array(a) => {
            let n = n.min(a.len());
            Ok(Value::Array(if take {
                a[..n].to_vec()
            } else {
                a[n..].to_vec()
            }))
        }
        Value::String(s) => Ok(Value::String(if take {
            s.chars().take(n).collect()
        } else {
            s.chars().skip(n).collect()
        })),
        v => Err(PolicyError::Eval(format!(
            "{name}() expects an array or a string, got {}",
            type_name(v)
        ))),
    }
}

/// `indexOf`/`lastIndexOf`: case-insensitive, in characters, -1 when absent.
fn index_of(name: &str, args: &[Value]) -> Result<Value, PolicyError> {
    arity(name, args, 2, 2)?;
    if let Value::Array(a) = &args[0] {
        let mut it = a.iter().enumerate().filter(|(_, v)| equals_ci(v, &args[1]));
        let found = if name == "indexof" {
            it.next()
        } else {
            it.next_back()
        };
        return Ok(Value::from(found.map_or(-1, |(i, _)| i as i64)));
    }
    let hay: Vec<char> = string_arg(name, &args[0])?.to_lowercase().chars().collect();
    let needle: Vec<char> = string_arg(name, &args[1])?.to_lowercase().chars().collect();
    if needle.is_empty() {
        return Ok(Value::from(if name == "indexof" {
            0
        } else {
            hay.len().saturating_sub(1) as i64
        }));
    }
    let mut hits = (0..hay.len().saturating_sub(needle.len() - 1))
        .filter(|&i| hay[i..i + needle.len()] == needle[..]);
    let found = if name == "indexof" {
        hits.next()
    } else {
        hits.next_back()
    };
    Ok(Value::from(found.map_or(-1, |i| i as i64)))
}

fn pad_left(args: &[Value]) -> Result<Value, PolicyError> {
    arity("padLeft", args, 2, 3)?;
    let s = to_text(&args[0]);
    let total = usize::try_from(int_arg("padLeft", &args[1])?.max(0)).unwrap_or(0);
    let pad = match args.get(2) {
        Some(p) => string_arg("padLeft", p)?.chars().next().unwrap_or(' '),
        None => ' ',
    };
    let len = s.chars().count();
    let mut out: String = std::iter::repeat_n(pad, total.saturating_sub(len)).collect();
    out.push_str(&s);
    Ok(Value::String(out))
}

fn min_max(name: &str, args: &[Value]) -> Result<Value, PolicyError> {
    let items: Vec<&Value> = match args {
        [Value::Array(a)] => a.iter().collect(),
        _ => args.iter().collect(),
    };
    let mut nums = items
        .into_iter()
        .map(|v| int_arg(name, v))
        .collect::<Result<Vec<_>, _>>()?;
    nums.sort_unstable();
    let r = if name == "min" {
        nums.first()
    } else {
        nums.last()
    };
    r.map(|n| Value::from(*n))
        .ok_or_else(|| PolicyError::Eval(format!("{name}() of nothing")))
}

fn intersection(args: &[Value]) -> Result<Value, PolicyError> {
    let Some((first, rest)) = args.split_first() else {
        return Err(PolicyError::Eval("intersection() needs arguments".into()));
    };
    match first {
        Value::Array(a) => {
            let mut out: Vec<Value> = Vec::new();
            for v in a {
                let everywhere = rest.iter().all(|o| match o {
                    Value::Array(x) => x.iter().any(|w| w == v),
                    _ => false,
                });
                if everywhere && !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let everywhere = rest.iter().all(|o| match o {
                    Value::Object(x) => x.get(k) == Some(v),
                    _ => false,
                });
                if everywhere {
                    out.insert(k.clone(), v.clone());
                }
            }
            Ok(Value::Object(out))
        }
        v => Err(PolicyError::Eval(format!(
            "intersection() expects arrays or objects, got {}",
            type_name(v)
        ))),
    }
}

/// `tryGet(value, key, ...)`: a nested property or array element, null when missing.
fn try_get(args: &[Value]) -> Result<Value, PolicyError> {
    let Some((first, keys)) = args.split_first() else {
        return Err(PolicyError::Eval("tryGet() needs arguments".into()));
    };
    let mut cur = first.clone();
    for k in keys {
        cur = match (&cur, k) {
            (Value::Object(m), Value::String(s)) => {
                super::get_ci(m, s).cloned().unwrap_or(Value::Null)
            }
            (Value::Array(a), Value::Number(n)) => n
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| a.get(i))
                .cloned()
                .unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }
    Ok(cur)
}

/// ARM's `uri(base, relative)`: a base ending in `/` is followed by the relative part; otherwise
/// everything after the base's last `/` (past the scheme's `//`) is replaced.
fn uri_combine(base: &str, rel: &str) -> String {
    if rel.contains("://") {
        return rel.to_string();
    }
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    if let Some(stripped) = rel.strip_prefix('/') {
        return format!("{}/{stripped}", &base[..authority_end]);
    }
    if base.ends_with('/') {
        return format!("{base}{rel}");
    }
    match base[authority_end..].rfind('/') {
        Some(i) => format!("{}{rel}", &base[..authority_end + i + 1]),
        None => format!("{base}/{rel}"),
    }
}

/// `uriComponent`: percent-encodes all but the unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// MurmurHash64A (Austin Appleby's public-domain 64-bit MurmurHash2).
fn murmur64a(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (data.len() as u64).wrapping_mul(M);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut k = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate() {
            h ^= u64::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// 13 characters of `[a-z2-7]` from a 64-bit hash of `s` (see the module note).
pub(crate) fn unique_string(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let v = u128::from(murmur64a(s.as_bytes(), 0)) << 1; // 65 bits = 13 × 5
    (0..13)
        .map(|i| ALPHABET[((v >> (60 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// A UUID-shaped (version 5 layout) deterministic identifier of `s` (see the module note).
pub(crate) fn guid(s: &str) -> String {
    let hi = murmur64a(s.as_bytes(), 0x5bd1_e995);
    let lo = murmur64a(s.as_bytes(), 0xc6a4_a793);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::expr::{eval_str, NoScope};
    use serde_json::json;

    fn ev(s: &str) -> Value {
        eval_str(s, &NoScope).unwrap()
    }

    #[test]
    fn arrays_and_objects() {
        assert_eq!(ev("[take(createArray(1, 2, 3), 2)]"), json!([1, 2]));
        assert_eq!(ev("[skip('abcdef', 4)]"), json!("ef"));
        assert_eq!(ev("[take('ab', 5)]"), json!("ab"));
        assert_eq!(ev("[range(5, 3)]"), json!([5, 6, 7]));
        assert_eq!(ev("[min(createArray(4, 2, 9))]"), json!(2));
        assert_eq!(ev("[max(4, 2, 9)]"), json!(9));
        assert_eq!(
            ev("[items(json('{\"b\":2,\"a\":1}'))]"),
            json!([{"key": "a", "value": 1}, {"key": "b", "value": 2}])
        );
        assert_eq!(
            ev("[intersection(createArray('a', 'b', 'c'), createArray('c', 'a'))]"),
            json!(["a", "c"])
        );
        assert_eq!(ev("[join(createArray('a', 1), ',')]"), json!("a,1"));
        assert_eq!(
            ev("[tryGet(json('{\"a\":{\"b\":1}}'), 'a', 'b')]"),
            json!(1)
        );
        assert_eq!(ev("[tryGet(json('{\"a\":{}}'), 'a', 'x')]"), json!(null));
        assert_eq!(
            ev("[flatten(createArray(createArray(1), 2))]"),
            json!([1, 2])
        );
        assert!(eval_str("[range(0, 10001)]", &NoScope).is_err());
    }

    #[test]
    fn strings_and_encodings() {
        assert_eq!(ev("[indexOf('Test', 'T')]"), json!(0));
        assert_eq!(ev("[lastIndexOf('test', 't')]"), json!(3));
        assert_eq!(ev("[indexOf('abc', 'z')]"), json!(-1));
        assert_eq!(ev("[padLeft('7', 3, '0')]"), json!("007"));
        assert_eq!(ev("[base64('one, two')]"), json!("b25lLCB0d28="));
        assert_eq!(ev("[base64ToString('b25lLCB0d28=')]"), json!("one, two"));
        assert_eq!(ev("[base64ToJson(base64('{\"a\":1}')).a]"), json!(1));
        assert_eq!(ev("[dataUriToString(dataUri('Hello'))]"), json!("Hello"));
        assert_eq!(ev("[uriComponent('a b/c')]"), json!("a%20b%2Fc"));
        assert_eq!(ev("[uriComponentToString('a%20b%2Fc')]"), json!("a b/c"));
        assert_eq!(
            ev("[uri('http://contoso.com/resources/', 'nested/azuredeploy.json')]"),
            json!("http://contoso.com/resources/nested/azuredeploy.json")
        );
        assert_eq!(
            ev("[uri('http://contoso.org/firstpath', 'myscript.sh')]"),
            json!("http://contoso.org/myscript.sh")
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            ev("[dateTimeAdd('2020-04-07 14:53:14Z', 'P3Y')]"),
            json!("2023-04-07T14:53:14Z")
        );
        assert_eq!(
            ev("[dateTimeAdd('2020-04-07T14:53:14Z', '-PT1H', 'yyyy-MM-dd HH:mm')]"),
            json!("2020-04-07 13:53")
        );
        assert_eq!(
            ev("[dateTimeToEpoch('2020-04-07T14:53:14Z')]"),
            json!(1_586_271_194)
        );
        assert_eq!(
            ev("[dateTimeFromEpoch(1586271194)]"),
            json!("2020-04-07T14:53:14Z")
        );
        assert!(eval_str("[dateTimeAdd('soon', 'P1D')]", &NoScope).is_err());
    }

    #[test]
    fn deterministic_hashes() {
        let a = ev("[uniqueString('sub', 'rg')]");
        assert_eq!(a, ev("[uniqueString('sub', 'rg')]"));
        assert_ne!(a, ev("[uniqueString('sub', 'rg2')]"));
        let s = a.as_str().unwrap();
        assert_eq!(s.len(), 13);
        assert!(s
            .bytes()
            .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)));
        let g = ev("[guid('a', 'b')]");
        let g = g.as_str().unwrap();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "5");
        assert_ne!(g, ev("[guid('a', 'c')]").as_str().unwrap());
    }

    #[test]
    fn unknowns_stay_inside_built_values() {
        use crate::resource::{unknown, unknown_reason};
        let u = unknown("why");
        let arr = common("createarray", &[json!(1), u.clone()]);
        assert!(arr.is_none()); // createArray lives in the first table
        let v = super::super::call_common("createarray", &[json!(1), u.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(unknown_reason(&v[1]), Some("why"));
        let v = super::super::call_common("createobject", &[json!("k"), u.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(unknown_reason(&v["k"]), Some("why"));
        let v = super::super::call_common("createobject", &[u.clone(), json!(1)])
            .unwrap()
            .unwrap();
        assert_eq!(unknown_reason(&v), Some("why"));
        let v = super::super::call_common("take", &[u, json!(1)])
            .unwrap()
            .unwrap();
        assert_eq!(unknown_reason(&v), Some("why"));
    }
}
