//! Tree-walking evaluation of a compiled condition against one session, with JS semantics.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Range;

use regex::Captures;

use super::ast::{BinOp, Cmp, Const, Func, JsRegex, Method, Node, UnOp, Var};
use super::budget::{Budget, push_capped};
use super::value::{Value, is_js_space, parse_float, parse_int, string_to_number, to_int32};
use super::{EvalError, STEPS_PER_REGEX_MATCH, SessionVars};

/// Evaluates `node`, charging one step for it (and its string work) to `b`.
pub(super) fn eval<'a>(
    node: &'a Node,
    vars: &SessionVars<'a>,
    b: &mut Budget,
) -> Result<Value<'a>, EvalError> {
    b.charge(1)?;
    Ok(match node {
        Node::Const(c) => match c {
            Const::Undefined => Value::Undefined,
            Const::Null => Value::Null,
            Const::Bool(b) => Value::Bool(*b),
            Const::Number(n) => Value::Number(*n),
            Const::Str(s) => Value::Str(Cow::Borrowed(s)),
        },
        Node::Var(v) => {
            let s = match v {
                Var::UserId => vars.user_id,
                Var::Tags => vars.tags,
                Var::ClientVersion => vars.client_version,
                Var::OsName => vars.os_name,
                Var::OsVersion => vars.os_version,
            };
            // Nashorn maps a Java null binding to JS null (not undefined).
            s.map_or(Value::Null, |s| Value::Str(Cow::Borrowed(s)))
        }
        Node::Unary(op, x) => {
            let x = eval(x, vars, b)?;
            match op {
                UnOp::Not => Value::Bool(!x.truthy()),
                UnOp::Neg => Value::Number(-x.to_number()),
                UnOp::Plus => Value::Number(x.to_number()),
                UnOp::TypeOf => Value::Str(Cow::Borrowed(x.type_of())),
            }
        }
        Node::Binary(op, x, y) => {
            let x = eval(x, vars, b)?;
            binary(*op, x, eval(y, vars, b)?, b)?
        }
        Node::And(xs) => match xs.split_last() {
            Some((last, init)) => {
                for x in init {
                    let v = eval(x, vars, b)?;
                    if !v.truthy() {
                        return Ok(v);
                    }
                }
                eval(last, vars, b)?
            }
            None => Value::Undefined,
        },
        Node::Or(xs) => match xs.split_last() {
            Some((last, init)) => {
                for x in init {
                    let v = eval(x, vars, b)?;
                    if v.truthy() {
                        return Ok(v);
                    }
                }
                eval(last, vars, b)?
            }
            None => Value::Undefined,
        },
        Node::Cond(c, x, y) => {
            if eval(c, vars, b)?.truthy() {
                eval(x, vars, b)?
            } else {
                eval(y, vars, b)?
            }
        }
        Node::Length(x) => match eval(x, vars, b)? {
            Value::Str(s) => Value::Number(u16_len(&s) as f64),
            Value::Null => {
                return Err(EvalError::NullProperty {
                    property: "length",
                    base: "null",
                });
            }
            Value::Undefined => {
                return Err(EvalError::NullProperty {
                    property: "length",
                    base: "undefined",
                });
            }
            // Numbers and booleans have no `length`: JS yields undefined, no error.
            _ => Value::Undefined,
        },
        Node::Method(recv, m, args) => {
            let s = match eval(recv, vars, b)? {
                Value::Str(s) => s,
                Value::Null => {
                    return Err(EvalError::NullProperty {
                        property: m.name(),
                        base: "null",
                    });
                }
                Value::Undefined => {
                    return Err(EvalError::NullProperty {
                        property: m.name(),
                        base: "undefined",
                    });
                }
                other => {
                    return Err(EvalError::NotAFunction {
                        method: m.name(),
                        base: other.type_of(),
                    });
                }
            };
            eval_extra(args, m.arity(), vars, b)?;
            call_method(s, m, args, vars, b)?
        }
        Node::Test(re, args) => {
            eval_extra(args, 1, vars, b)?;
            // A regex literal is a fresh object per evaluation in JS, so `lastIndex` is always
            // 0 and `test` is stateless even with the g flag.
            let hay = arg(args, 0, vars, b)?.into_js_string();
            b.scan(hay.len())?;
            Value::Bool(re.re.is_match(&hay))
        }
        Node::Call(f, args) => {
            eval_extra(args, f.arity(), vars, b)?;
            match f {
                Func::ParseInt => {
                    let s = arg(args, 0, vars, b)?.into_js_string();
                    b.scan(s.len())?;
                    let radix = match arg(args, 1, vars, b)? {
                        Value::Undefined => 0,
                        r => to_int32(r.to_number()),
                    };
                    Value::Number(parse_int(&s, radix))
                }
                Func::ParseFloat => {
                    let s = arg(args, 0, vars, b)?.into_js_string();
                    b.scan(s.len())?;
                    Value::Number(parse_float(&s))
                }
                // `Number()` is 0 but `Number(undefined)` is NaN, hence the emptiness checks.
                Func::Number if args.is_empty() => Value::Number(0.0),
                Func::Number => Value::Number(arg(args, 0, vars, b)?.to_number()),
                Func::String if args.is_empty() => Value::Str(Cow::Borrowed("")),
                Func::String => Value::Str(arg(args, 0, vars, b)?.into_js_string()),
            }
        }
    })
}

/// Argument `i`, or `undefined` when the call has fewer arguments (as JS).
fn arg<'a>(
    args: &'a [Node],
    i: usize,
    vars: &SessionVars<'a>,
    b: &mut Budget,
) -> Result<Value<'a>, EvalError> {
    args.get(i)
        .map_or(Ok(Value::Undefined), |n| eval(n, vars, b))
}

/// Evaluates arguments beyond those a function reads: JS does, and they may throw.
fn eval_extra<'a>(
    args: &'a [Node],
    used: usize,
    vars: &SessionVars<'a>,
    b: &mut Budget,
) -> Result<(), EvalError> {
    for a in args.iter().skip(used) {
        eval(a, vars, b)?;
    }
    Ok(())
}

fn binary<'a>(
    op: BinOp,
    a: Value<'a>,
    b: Value<'a>,
    budget: &mut Budget,
) -> Result<Value<'a>, EvalError> {
    Ok(match op {
        BinOp::Add => {
            if matches!(a, Value::Str(_)) || matches!(b, Value::Str(_)) {
                let (x, y) = (a.into_js_string(), b.into_js_string());
                budget.produce(x.len().saturating_add(y.len()))?;
                let mut out = String::with_capacity(x.len() + y.len());
                out.push_str(&x);
                out.push_str(&y);
                Value::Str(Cow::Owned(out))
            } else {
                Value::Number(a.to_number() + b.to_number())
            }
        }
        BinOp::Sub => Value::Number(a.to_number() - b.to_number()),
        BinOp::Mul => Value::Number(a.to_number() * b.to_number()),
        BinOp::Div => Value::Number(a.to_number() / b.to_number()),
        // Rust's f64 `%` is fmod with the dividend's sign, exactly JS `%`.
        BinOp::Rem => Value::Number(a.to_number() % b.to_number()),
        // JS defines all four via "a < b", where NaN gives undefined, i.e. false.
        BinOp::Cmp(Cmp::Lt) => Value::Bool(js_less(&a, &b) == Some(true)),
        BinOp::Cmp(Cmp::Gt) => Value::Bool(js_less(&b, &a) == Some(true)),
        BinOp::Cmp(Cmp::Le) => Value::Bool(js_less(&b, &a) == Some(false)),
        BinOp::Cmp(Cmp::Ge) => Value::Bool(js_less(&a, &b) == Some(false)),
        BinOp::Cmp(Cmp::Eq) => Value::Bool(loose_eq(&a, &b)),
        BinOp::Cmp(Cmp::Ne) => Value::Bool(!loose_eq(&a, &b)),
        BinOp::Cmp(Cmp::StrictEq) => Value::Bool(strict_eq(&a, &b)),
        BinOp::Cmp(Cmp::StrictNe) => Value::Bool(!strict_eq(&a, &b)),
    })
}

/// JS abstract relational comparison `a < b`; `None` means undefined (a NaN was involved).
fn js_less(a: &Value<'_>, b: &Value<'_>) -> Option<bool> {
    if let (Value::Str(x), Value::Str(y)) = (a, b) {
        return Some(cmp_utf16(x, y) == Ordering::Less);
    }
    let (x, y) = (a.to_number(), b.to_number());
    if x.is_nan() || y.is_nan() {
        None
    } else {
        Some(x < y)
    }
}

/// JS compares strings by UTF-16 code units; UTF-8 byte order differs only for characters above
/// U+FFFF against U+E000..U+FFFF, so ASCII (the common case) takes the byte comparison.
fn cmp_utf16(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// JS `==` (IsLooselyEqual) restricted to primitives.
fn loose_eq(a: &Value<'_>, b: &Value<'_>) -> bool {
    use Value::{Bool, Null, Number, Str, Undefined};
    match (a, b) {
        (Undefined | Null, Undefined | Null) => true,
        (Undefined | Null, _) | (_, Undefined | Null) => false,
        (Number(x), Number(y)) => x == y,
        (Str(x), Str(y)) => x == y,
        (Bool(x), Bool(y)) => x == y,
        (Number(x), Str(s)) | (Str(s), Number(x)) => *x == string_to_number(s),
        (Bool(x), other) | (other, Bool(x)) => loose_eq(&Number(f64::from(u8::from(*x))), other),
    }
}

/// JS `===`.
fn strict_eq(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Undefined, Value::Undefined) | (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        _ => false,
    }
}

fn call_method<'a>(
    s: Cow<'a, str>,
    m: &'a Method,
    args: &'a [Node],
    vars: &SessionVars<'a>,
    b: &mut Budget,
) -> Result<Value<'a>, EvalError> {
    // Every method reads the receiver; the searches also read their argument.
    b.scan(s.len())?;
    Ok(match m {
        Method::IndexOf => {
            let search = arg(args, 0, vars, b)?.into_js_string();
            b.scan(search.len())?;
            Value::Number(index_of(&s, &search, arg(args, 1, vars, b)?.to_number()))
        }
        Method::Includes => {
            let search = arg(args, 0, vars, b)?.into_js_string();
            b.scan(search.len())?;
            Value::Bool(index_of(&s, &search, arg(args, 1, vars, b)?.to_number()) >= 0.0)
        }
        Method::LastIndexOf => {
            let search = arg(args, 0, vars, b)?.into_js_string();
            b.scan(search.len())?;
            let pos = arg(args, 1, vars, b)?.to_number();
            Value::Number(last_index_of(
                &s,
                &search,
                if pos.is_nan() { f64::INFINITY } else { pos },
            ))
        }
        Method::StartsWith => {
            let search = arg(args, 0, vars, b)?.into_js_string();
            b.scan(search.len())?;
            let start = clamp_index(arg(args, 1, vars, b)?.to_number(), u16_len(&s));
            Value::Bool(match u16_to_byte(&s, start) {
                Ok(b) => s.get(b..).is_some_and(|t| t.starts_with(&*search)),
                // Inside a surrogate pair: only the empty string can start at a low surrogate.
                Err(_) => search.is_empty(),
            })
        }
        Method::EndsWith => {
            let search = arg(args, 0, vars, b)?.into_js_string();
            b.scan(search.len())?;
            let len = u16_len(&s);
            let end = match arg(args, 1, vars, b)? {
                Value::Undefined => len,
                v => clamp_index(v.to_number(), len),
            };
            Value::Bool(match u16_to_byte(&s, end) {
                Ok(b) => s.get(..b).is_some_and(|t| t.ends_with(&*search)),
                Err(_) => search.is_empty(),
            })
        }
        Method::ToLowerCase => Value::Str(map_case(s, b, CaseMap::LOWER)?),
        Method::ToUpperCase => Value::Str(map_case(s, b, CaseMap::UPPER)?),
        Method::Trim => {
            let start = s.len() - s.trim_start_matches(is_js_space).len();
            let end = s.trim_end_matches(is_js_space).len().max(start);
            Value::Str(sub_cow(s, start..end))
        }
        Method::Substring => {
            let len = u16_len(&s);
            let a = clamp_index(arg(args, 0, vars, b)?.to_number(), len);
            let b = match arg(args, 1, vars, b)? {
                Value::Undefined => len,
                v => clamp_index(v.to_number(), len),
            };
            let (from, to) = (a.min(b), a.max(b));
            let from = u16_to_byte(&s, from).unwrap_or_else(|b| b);
            let to = u16_to_byte(&s, to).unwrap_or_else(|b| b);
            Value::Str(sub_cow(s, from..to))
        }
        Method::CharAt => {
            let n = arg(args, 0, vars, b)?.to_number();
            let n = if n.is_nan() { 0.0 } else { n.trunc() };
            let len = u16_len(&s);
            if n < 0.0 || n >= len as f64 {
                Value::Str(Cow::Borrowed(""))
            } else {
                match u16_to_byte(&s, n as usize) {
                    Ok(b) => match s.get(b..).and_then(|t| t.chars().next()) {
                        Some(c) if c.len_utf16() == 1 => {
                            Value::Str(sub_cow(s, b..b + c.len_utf8()))
                        }
                        // The high half of a surrogate pair has no UTF-8 form.
                        _ => Value::Str(Cow::Borrowed("\u{FFFD}")),
                    },
                    Err(_) => Value::Str(Cow::Borrowed("\u{FFFD}")),
                }
            }
        }
        Method::Replace => {
            let pattern = arg(args, 0, vars, b)?.into_js_string();
            let replacement = arg(args, 1, vars, b)?.into_js_string();
            b.scan(pattern.len())?;
            Value::Str(replace_str(s, &pattern, &replacement, b)?)
        }
        Method::ReplaceRegex(re) => {
            let replacement = arg(args, 0, vars, b)?.into_js_string();
            Value::Str(replace_regex(re, s, &replacement, b)?)
        }
    })
}

/// A sub-slice that stays borrowed when the source is borrowed. Out-of-range or non-boundary
/// ranges (never produced by the callers) give "" rather than a panic.
/// One direction of `toLowerCase` / `toUpperCase`.
struct CaseMap {
    /// An ASCII byte this direction changes.
    changes: fn(&u8) -> bool,
    ascii: fn(&str) -> String,
    unicode: fn(&str) -> String,
}

impl CaseMap {
    const LOWER: Self = Self {
        changes: u8::is_ascii_uppercase,
        ascii: str::to_ascii_lowercase,
        unicode: str::to_lowercase,
    };
    const UPPER: Self = Self {
        changes: u8::is_ascii_lowercase,
        ascii: str::to_ascii_uppercase,
        unicode: str::to_uppercase,
    };
}

/// `s` case-mapped, borrowed when ASCII text has nothing to change.
fn map_case<'a>(s: Cow<'a, str>, b: &mut Budget, map: CaseMap) -> Result<Cow<'a, str>, EvalError> {
    if s.is_ascii() {
        if !s.bytes().any(|c| (map.changes)(&c)) {
            return Ok(s);
        }
        b.produce(s.len())?;
        return Ok(Cow::Owned((map.ascii)(&s)));
    }
    // Case mapping can lengthen non-ASCII text (up to 3x), so check the result.
    let out = (map.unicode)(&s);
    b.produce(out.len())?;
    Ok(Cow::Owned(out))
}

fn sub_cow(s: Cow<'_, str>, r: Range<usize>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.get(r).unwrap_or("")),
        Cow::Owned(o) if r.start == 0 && r.end == o.len() => Cow::Owned(o),
        Cow::Owned(o) => Cow::Owned(o.get(r).unwrap_or("").to_owned()),
    }
}

/// Length in UTF-16 code units (JS `length`).
fn u16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().map(char::len_utf16).sum()
    }
}

/// Byte offset of UTF-16 index `u` (clamped to the end). `Err(start of that character)` when
/// `u` points at the low half of a surrogate pair, which has no UTF-8 boundary.
fn u16_to_byte(s: &str, u: usize) -> Result<usize, usize> {
    if s.is_ascii() {
        return Ok(u.min(s.len()));
    }
    let mut units = 0;
    for (b, c) in s.char_indices() {
        if units == u {
            return Ok(b);
        }
        units += c.len_utf16();
        if units > u {
            return Err(b);
        }
    }
    Ok(s.len())
}

/// UTF-16 index of byte offset `b` (a char boundary).
fn byte_to_u16(s: &str, b: usize) -> usize {
    s.get(..b).map_or(0, u16_len)
}

/// JS ToIntegerOrInfinity followed by clamping to `0..=len`.
fn clamp_index(n: f64, len: usize) -> usize {
    if n.is_nan() || n <= 0.0 {
        0
    } else if n >= len as f64 {
        len
    } else {
        n as usize
    }
}

fn index_of(s: &str, search: &str, pos: f64) -> f64 {
    let start = clamp_index(pos, u16_len(s));
    // From inside a surrogate pair the next possible match starts after the pair.
    let b = u16_to_byte(s, start).unwrap_or_else(|b| {
        b + s
            .get(b..)
            .and_then(|t| t.chars().next())
            .map_or(0, char::len_utf8)
    });
    match s.get(b..).and_then(|t| t.find(search)) {
        Some(i) => byte_to_u16(s, b + i) as f64,
        None => -1.0,
    }
}

fn last_index_of(s: &str, search: &str, pos: f64) -> f64 {
    let start = clamp_index(pos, u16_len(s));
    // Byte offsets and UTF-16 indices are monotonic, so "index <= start" is "byte <= limit".
    let limit = u16_to_byte(s, start).unwrap_or_else(|b| b);
    match s.rmatch_indices(search).find(|(b, _)| *b <= limit) {
        Some((b, _)) => byte_to_u16(s, b) as f64,
        None => -1.0,
    }
}

/// JS `replace` with a string pattern: the first occurrence only.
fn replace_str<'a>(
    s: Cow<'a, str>,
    pattern: &str,
    replacement: &str,
    b: &mut Budget,
) -> Result<Cow<'a, str>, EvalError> {
    let Some(start) = s.find(pattern) else {
        return Ok(s);
    };
    let end = start + pattern.len();
    let mut out = String::new();
    push_capped(&mut out, s.get(..start).unwrap_or(""))?;
    expand_replacement(replacement, &s, start..end, None, &mut out)?;
    push_capped(&mut out, s.get(end..).unwrap_or(""))?;
    b.produce(out.len())?;
    Ok(Cow::Owned(out))
}

fn replace_regex<'a>(
    re: &JsRegex,
    s: Cow<'a, str>,
    replacement: &str,
    b: &mut Budget,
) -> Result<Cow<'a, str>, EvalError> {
    Ok(match s {
        Cow::Borrowed(h) => replace_regex_in(re, h, replacement, b)?,
        Cow::Owned(o) => Cow::Owned(replace_regex_in(re, &o, replacement, b)?.into_owned()),
    })
}

/// `Regex::replacen`'s loop (same matches, same empty-match handling), with the budget checked
/// per match: the output is capped before it grows, and each match costs steps.
fn replace_regex_in<'h>(
    re: &JsRegex,
    hay: &'h str,
    replacement: &str,
    b: &mut Budget,
) -> Result<Cow<'h, str>, EvalError> {
    // Without the g flag JS replaces the first match only.
    let limit = if re.global { usize::MAX } else { 1 };
    let mut out = String::new();
    let mut last = 0;
    let mut matched = false;
    // Without groups, `$n` and `$<name>` stay literal, so the match range is all that
    // GetSubstitution needs, and finding matches is much cheaper than capturing them.
    if replacement.contains('$') && re.re.captures_len() > 1 {
        for caps in re.re.captures_iter(hay).take(limit) {
            let Some(m) = caps.get(0) else { continue };
            b.charge(STEPS_PER_REGEX_MATCH)?;
            matched = true;
            push_capped(&mut out, hay.get(last..m.start()).unwrap_or(""))?;
            let groups = Some((&caps, re.named_groups));
            expand_replacement(replacement, hay, m.range(), groups, &mut out)?;
            last = m.end();
        }
    } else {
        let expand = replacement.contains('$');
        for m in re.re.find_iter(hay).take(limit) {
            b.charge(STEPS_PER_REGEX_MATCH)?;
            matched = true;
            push_capped(&mut out, hay.get(last..m.start()).unwrap_or(""))?;
            if expand {
                expand_replacement(replacement, hay, m.range(), None, &mut out)?;
            } else {
                // The common case (e.g. `replace(/[^\d]/g, "")`).
                push_capped(&mut out, replacement)?;
            }
            last = m.end();
        }
    }
    if !matched {
        return Ok(Cow::Borrowed(hay));
    }
    push_capped(&mut out, hay.get(last..).unwrap_or(""))?;
    b.produce(out.len())?;
    Ok(Cow::Owned(out))
}

/// JS GetSubstitution: `$$`, `$&`, `` $` ``, `$'`, and with a regex `$n`/`$nn` and `$<name>`.
fn expand_replacement(
    replacement: &str,
    hay: &str,
    m: Range<usize>,
    caps: Option<(&Captures<'_>, bool)>,
    out: &mut String,
) -> Result<(), EvalError> {
    let b = replacement.as_bytes();
    let (mut i, mut literal_from) = (0, 0);
    while i + 1 < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let group = |n: usize| caps.and_then(|(c, _)| c.get(n)).map_or("", |g| g.as_str());
        let groups = caps.map_or(0, |(c, _)| c.len() - 1);
        let (text, consumed): (&str, usize) = match b[i + 1] {
            b'$' => ("$", 2),
            b'&' => (hay.get(m.clone()).unwrap_or(""), 2),
            b'`' => (hay.get(..m.start).unwrap_or(""), 2),
            b'\'' => (hay.get(m.end..).unwrap_or(""), 2),
            d @ b'0'..=b'9' => {
                let one = usize::from(d - b'0');
                let two = b
                    .get(i + 2)
                    .filter(|c| c.is_ascii_digit())
                    .map(|c| one * 10 + usize::from(c - b'0'));
                match two {
                    Some(n) if (1..=groups).contains(&n) => (group(n), 3),
                    _ if (1..=groups).contains(&one) => (group(one), 2),
                    _ => ("", 0),
                }
            }
            b'<' if caps.is_some_and(|(_, named)| named) => {
                match replacement.get(i + 2..).and_then(|t| t.find('>')) {
                    Some(len) => {
                        let name = replacement.get(i + 2..i + 2 + len).unwrap_or("");
                        let text = caps
                            .and_then(|(c, _)| c.name(name))
                            .map_or("", |g| g.as_str());
                        (text, len + 3)
                    }
                    None => ("", 0),
                }
            }
            _ => ("", 0),
        };
        if consumed == 0 {
            i += 1;
            continue;
        }
        push_capped(out, replacement.get(literal_from..i).unwrap_or(""))?;
        push_capped(out, text)?;
        i += consumed;
        literal_from = i;
    }
    push_capped(out, replacement.get(literal_from..).unwrap_or(""))
}
