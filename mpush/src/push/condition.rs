//! Broadcast condition expressions (spec §9.5): a small, sandboxed evaluator for the subset of
//! JavaScript that MPush conditions are written in.
//!
//! # Why not a JS engine, and why not CEL
//! The Java server evaluated `condition` with Nashorn, which no longer ships with modern JDKs, so
//! there every condition silently evaluates to `false` (quirk Q17). CEL (`cel` crate, see
//! CRATES-AND-STYLE §3.3) would make operators rewrite their conditions (`indexOf`, regex
//! literals, `%` on string ids do not exist there). A full JS engine is a large attack surface for
//! one boolean expression per session. So this module implements just the expression subset that
//! Java-era conditions use, with JavaScript semantics, compiled once per broadcast and evaluated
//! per session without a context to build (well under 2 µs per evaluation for the documented
//! examples in a release build).
//!
//! # Supported syntax
//! - Literals: numbers (`12`, `1.5`, `.5`, `1e3`, `0x1F`), `'single'` and `"double"` quoted
//!   strings with JS escapes, `true`, `false`, `null`, `undefined`, `NaN`, `Infinity`.
//! - Variables: `userId`, `tags`, `clientVersion`, `osName`, `osVersion` (strings, or `null` when
//!   the session has no value). Any other identifier is a compile error naming it.
//! - Operators, by JS precedence: `a ? b : c`; `||`; `&&`; `== != === !==`; `< <= > >=`; `+ -`;
//!   `* / %`; unary `! - + typeof`; member access and calls; parentheses. Trailing `;` is allowed.
//!   `//` and `/* */` comments are skipped.
//! - `s.length` and string methods: `indexOf(s[,pos])`, `lastIndexOf(s[,pos])`,
//!   `includes(s[,pos])`, `startsWith(s[,pos])`, `endsWith(s[,end])`, `toLowerCase()`,
//!   `toUpperCase()`, `trim()`, `substring(a[,b])`, `charAt(i)`, `replace(pattern, replacement)`
//!   where `pattern` is a string (first occurrence only, as JS) or a regex literal `/re/flags`
//!   (flags `g i m s`). Replacement patterns (`$$`, `$&`, ``$` ``, `$'`, `$1`..`$99`,
//!   `$<name>`) are expanded as in JS.
//! - `/re/flags.test(s)`, and the global functions `parseInt(s[,radix])`, `parseFloat(s)`,
//!   `Number(x)`, `String(x)`.
//!
//! # Semantics
//! Values are JS primitives ([`Value`]). `+` concatenates when either side is a string, other
//! arithmetic and mixed comparisons use JS `ToNumber` (`"123" % 100` is `23`, `"abc" < 1` is
//! false because of `NaN`), string-vs-string comparisons are lexicographic in UTF-16 code-unit
//! order, `==` is JS loose equality (`null == undefined`, `1 == "1"`, `true == 1`), `&&`/`||`
//! short-circuit and return an operand. Numbers print as JS does (`1`, `0.5`, `1e+21`).
//! Compile errors carry a 0-based byte position ([`ConditionError`]).
//!
//! The Java server cast the script result to `Boolean` and treated any exception as "no match",
//! so [`Condition::matches`] is `true` only when the result is exactly the boolean `true` (a
//! truthy non-boolean such as `1` or `"x"` does not match), and any evaluation error (a property
//! read or method call on `null`/`undefined`, a method called on a number) makes it `false`.
//! Syntax errors and unsupported constructs are reported by [`Condition::compile`].
//!
//! # Differences from full JavaScript
//! - Only the constructs above: no assignments, loops, functions, objects, arrays, `new`,
//!   `in`, bitwise operators, `??`, `?.`, template literals, `split`, `match`, or other globals.
//!   A regex literal may only be used in `/re/.test(s)` or as the first argument of `replace`.
//!   Unknown methods/properties are compile errors (JS would yield `undefined` or a TypeError).
//!   Legacy octal literals and octal escapes (`017`, `"\1"`) are rejected rather than guessed.
//! - Regexes run on the `regex` crate (linear time, no catastrophic backtracking), translated
//!   from JS syntax: backreferences and lookaround are compile errors, as are the `u`/`y`/`d`
//!   flags. `\d \w \s \b .` keep their JS meaning, but matching works on Unicode scalar values,
//!   not UTF-16 code units (`.` matches a whole emoji), and non-ASCII case folding under `/i`
//!   follows Unicode simple folding, which differs from JS for a few characters.
//! - Strings are UTF-8: `length` and all indices are in UTF-16 code units as in JS, but an index
//!   that falls inside a surrogate pair cannot produce a lone surrogate: `charAt` returns U+FFFD
//!   there and `substring` moves the boundary to the start of that character. Lone surrogate
//!   escapes in string literals become U+FFFD.
//!
//! # Limits (sandbox)
//! Sources over [`MAX_SOURCE_LEN`] bytes, nesting deeper than [`MAX_DEPTH`] and more than
//! [`MAX_NODES`] syntax-tree nodes are compile errors; each regex is limited to 1 MiB compiled.
//! The grammar has no loops, so one evaluation is bounded by the size of the tree, and its
//! recursion by the depth limit (a chain like `a+b+c+...` counts one level per operator, while
//! `&&`/`||` chains such as `userId=='1'||userId=='2'||...` are flat).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Range;

use regex::{Captures, NoExpand, Regex, RegexBuilder};

/// Longest accepted condition source, in bytes.
pub const MAX_SOURCE_LEN: usize = 4096;
/// Deepest accepted nesting: of parentheses, unary operators, ternaries and call arguments in
/// the source, and of the syntax tree (where each binary operator or method call in a chain
/// adds a level; `&&` and `||` chains are flat).
pub const MAX_DEPTH: usize = 64;
/// Largest accepted number of syntax-tree nodes in one condition.
pub const MAX_NODES: usize = 512;
/// Compiled-size limit of one regex literal (and of its lazy DFA cache).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The variables a condition sees.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionVars<'a> {
    /// `userId`.
    pub user_id: Option<&'a str>,
    /// `tags`.
    pub tags: Option<&'a str>,
    /// `clientVersion`.
    pub client_version: Option<&'a str>,
    /// `osName`.
    pub os_name: Option<&'a str>,
    /// `osVersion`.
    pub os_version: Option<&'a str>,
}

/// A compile error: where in the source, and what is wrong. Displays as `at 12: expected ')'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {position}: {message}")]
pub struct ConditionError {
    /// 0-based byte offset into the condition source.
    pub position: usize,
    /// Human-readable description of the problem.
    pub message: String,
}

impl ConditionError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

/// A JavaScript runtime error (always a `TypeError` here). [`Condition::matches`] turns it into
/// "no match", as the Java server did. It holds only static text so that the error path, which
/// can be common (e.g. `tags.indexOf(..)` with no tags), does not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A property read or method call on `null` or `undefined`.
    #[error("TypeError: cannot read property '{property}' of {base}")]
    NullProperty {
        /// The property or method name.
        property: &'static str,
        /// `"null"` or `"undefined"`.
        base: &'static str,
    },
    /// A string method called on a number or boolean.
    #[error("TypeError: {method} is not a function on a {base}")]
    NotAFunction {
        /// The method name.
        method: &'static str,
        /// `"number"` or `"boolean"`.
        base: &'static str,
    },
}

/// A JavaScript primitive value. Strings borrow from the condition or the session when they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `undefined`.
    Undefined,
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number (IEEE double, as JS).
    Number(f64),
    /// A string.
    Str(Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// JS truthiness (`ToBoolean`).
    pub fn truthy(&self) -> bool {
        match self {
            Value::Undefined | Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::Str(s) => !s.is_empty(),
        }
    }

    /// JS `ToNumber`.
    pub fn to_number(&self) -> f64 {
        match self {
            Value::Undefined => f64::NAN,
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
            Value::Str(s) => string_to_number(s),
        }
    }

    /// JS `typeof` (`null` is `"object"`).
    pub fn type_of(&self) -> &'static str {
        match self {
            Value::Undefined => "undefined",
            Value::Null => "object",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::Str(_) => "string",
        }
    }

    /// JS `ToString`, consuming the value so a string is passed through without copying.
    pub fn into_js_string(self) -> Cow<'a, str> {
        match self {
            Value::Undefined => Cow::Borrowed("undefined"),
            Value::Null => Cow::Borrowed("null"),
            Value::Bool(true) => Cow::Borrowed("true"),
            Value::Bool(false) => Cow::Borrowed("false"),
            Value::Number(n) => Cow::Owned(number_to_string(n)),
            Value::Str(s) => s,
        }
    }

    /// Detaches the value from the condition and session it borrows from.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Undefined => Value::Undefined,
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Number(n) => Value::Number(n),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        }
    }
}

/// Formats as JS `String(value)`.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => f.write_str(&number_to_string(*n)),
            Value::Str(s) => f.write_str(s),
            other => f.write_str(&other.clone().into_js_string()),
        }
    }
}

/// A compiled condition. Compile once per broadcast, then call [`Condition::matches`] per
/// session; it is `Send + Sync` and cheap to share.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    root: Node,
}

impl Condition {
    /// Parses `src` (see the module docs for the accepted subset) and precompiles its regex
    /// literals. Fails on syntax errors, unknown identifiers or methods, unsupported regex
    /// features and the size limits.
    pub fn compile(src: &str) -> Result<Self, ConditionError> {
        let root = parse(src)?;
        Ok(Self {
            source: src.to_owned(),
            root,
        })
    }

    /// The source this condition was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against a session: `true` only if the result is the boolean `true`. A
    /// non-boolean result or an evaluation error is `false`, as in the Java server.
    pub fn matches(&self, vars: &SessionVars<'_>) -> bool {
        matches!(self.eval(vars), Ok(Value::Bool(true)))
    }

    /// Evaluates against a session and returns the JS value (or the `TypeError`).
    pub fn eval<'a>(&'a self, vars: &SessionVars<'a>) -> Result<Value<'a>, EvalError> {
        eval(&self.root, vars)
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax tree
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    Const(Const),
    Var(Var),
    Unary(UnOp, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    /// `a && b && ...` flattened, so long chains do not deepen the tree.
    And(Vec<Node>),
    /// `a || b || ...` flattened.
    Or(Vec<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Length(Box<Node>),
    Method(Box<Node>, Method, Vec<Node>),
    Test(Box<JsRegex>, Vec<Node>),
    Call(Func, Vec<Node>),
}

#[derive(Debug, Clone)]
enum Const {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    Str(Box<str>),
}

#[derive(Debug, Clone, Copy)]
enum Var {
    UserId,
    Tags,
    ClientVersion,
    OsName,
    OsVersion,
}

#[derive(Debug, Clone, Copy)]
enum UnOp {
    Not,
    Neg,
    Plus,
    TypeOf,
}

#[derive(Debug, Clone, Copy)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    StrictEq,
    StrictNe,
}

#[derive(Debug, Clone)]
enum Method {
    IndexOf,
    LastIndexOf,
    Includes,
    StartsWith,
    EndsWith,
    ToLowerCase,
    ToUpperCase,
    Trim,
    Substring,
    CharAt,
    /// `replace(string, replacement)`.
    Replace,
    /// `replace(/re/, replacement)`: the regex is taken out of the argument list.
    ReplaceRegex(Box<JsRegex>),
}

impl Method {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "indexOf" => Method::IndexOf,
            "lastIndexOf" => Method::LastIndexOf,
            "includes" => Method::Includes,
            "startsWith" => Method::StartsWith,
            "endsWith" => Method::EndsWith,
            "toLowerCase" => Method::ToLowerCase,
            "toUpperCase" => Method::ToUpperCase,
            "trim" => Method::Trim,
            "substring" => Method::Substring,
            "charAt" => Method::CharAt,
            "replace" => Method::Replace,
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Method::IndexOf => "indexOf",
            Method::LastIndexOf => "lastIndexOf",
            Method::Includes => "includes",
            Method::StartsWith => "startsWith",
            Method::EndsWith => "endsWith",
            Method::ToLowerCase => "toLowerCase",
            Method::ToUpperCase => "toUpperCase",
            Method::Trim => "trim",
            Method::Substring => "substring",
            Method::CharAt => "charAt",
            Method::Replace | Method::ReplaceRegex(_) => "replace",
        }
    }

    /// Arguments the method reads; JS evaluates and ignores the rest.
    fn arity(&self) -> usize {
        match self {
            Method::ToLowerCase | Method::ToUpperCase | Method::Trim => 0,
            Method::CharAt | Method::ReplaceRegex(_) => 1,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Func {
    ParseInt,
    ParseFloat,
    Number,
    String,
}

impl Func {
    fn arity(self) -> usize {
        match self {
            Func::ParseInt => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone)]
struct JsRegex {
    re: Regex,
    global: bool,
    /// JS expands `$<name>` only when the regex has named groups.
    named_groups: bool,
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

fn eval<'a>(node: &'a Node, vars: &SessionVars<'a>) -> Result<Value<'a>, EvalError> {
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
            let x = eval(x, vars)?;
            match op {
                UnOp::Not => Value::Bool(!x.truthy()),
                UnOp::Neg => Value::Number(-x.to_number()),
                UnOp::Plus => Value::Number(x.to_number()),
                UnOp::TypeOf => Value::Str(Cow::Borrowed(x.type_of())),
            }
        }
        Node::Binary(op, a, b) => binary(*op, eval(a, vars)?, eval(b, vars)?),
        Node::And(xs) => match xs.split_last() {
            Some((last, init)) => {
                for x in init {
                    let v = eval(x, vars)?;
                    if !v.truthy() {
                        return Ok(v);
                    }
                }
                eval(last, vars)?
            }
            None => Value::Undefined,
        },
        Node::Or(xs) => match xs.split_last() {
            Some((last, init)) => {
                for x in init {
                    let v = eval(x, vars)?;
                    if v.truthy() {
                        return Ok(v);
                    }
                }
                eval(last, vars)?
            }
            None => Value::Undefined,
        },
        Node::Cond(c, a, b) => {
            if eval(c, vars)?.truthy() {
                eval(a, vars)?
            } else {
                eval(b, vars)?
            }
        }
        Node::Length(x) => match eval(x, vars)? {
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
            let s = match eval(recv, vars)? {
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
            eval_extra(args, m.arity(), vars)?;
            call_method(s, m, args, vars)?
        }
        Node::Test(re, args) => {
            eval_extra(args, 1, vars)?;
            // A regex literal is a fresh object per evaluation in JS, so `lastIndex` is always
            // 0 and `test` is stateless even with the g flag.
            Value::Bool(re.re.is_match(&arg(args, 0, vars)?.into_js_string()))
        }
        Node::Call(f, args) => {
            eval_extra(args, f.arity(), vars)?;
            match f {
                Func::ParseInt => {
                    let s = arg(args, 0, vars)?.into_js_string();
                    let radix = match arg(args, 1, vars)? {
                        Value::Undefined => 0,
                        r => to_int32(r.to_number()),
                    };
                    Value::Number(parse_int(&s, radix))
                }
                Func::ParseFloat => {
                    Value::Number(parse_float(&arg(args, 0, vars)?.into_js_string()))
                }
                // `Number()` is 0 but `Number(undefined)` is NaN, hence the emptiness checks.
                Func::Number if args.is_empty() => Value::Number(0.0),
                Func::Number => Value::Number(arg(args, 0, vars)?.to_number()),
                Func::String if args.is_empty() => Value::Str(Cow::Borrowed("")),
                Func::String => Value::Str(arg(args, 0, vars)?.into_js_string()),
            }
        }
    })
}

/// Argument `i`, or `undefined` when the call has fewer arguments (as JS).
fn arg<'a>(args: &'a [Node], i: usize, vars: &SessionVars<'a>) -> Result<Value<'a>, EvalError> {
    args.get(i).map_or(Ok(Value::Undefined), |n| eval(n, vars))
}

/// Evaluates arguments beyond those a function reads: JS does, and they may throw.
fn eval_extra<'a>(args: &'a [Node], used: usize, vars: &SessionVars<'a>) -> Result<(), EvalError> {
    for a in args.iter().skip(used) {
        eval(a, vars)?;
    }
    Ok(())
}

fn binary<'a>(op: BinOp, a: Value<'a>, b: Value<'a>) -> Value<'a> {
    match op {
        BinOp::Add => {
            if matches!(a, Value::Str(_)) || matches!(b, Value::Str(_)) {
                let mut out = a.into_js_string().into_owned();
                out.push_str(&b.into_js_string());
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
        BinOp::Lt => Value::Bool(js_less(&a, &b) == Some(true)),
        BinOp::Gt => Value::Bool(js_less(&b, &a) == Some(true)),
        BinOp::Le => Value::Bool(js_less(&b, &a) == Some(false)),
        BinOp::Ge => Value::Bool(js_less(&a, &b) == Some(false)),
        BinOp::Eq => Value::Bool(loose_eq(&a, &b)),
        BinOp::Ne => Value::Bool(!loose_eq(&a, &b)),
        BinOp::StrictEq => Value::Bool(strict_eq(&a, &b)),
        BinOp::StrictNe => Value::Bool(!strict_eq(&a, &b)),
    }
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
) -> Result<Value<'a>, EvalError> {
    Ok(match m {
        Method::IndexOf => {
            let search = arg(args, 0, vars)?.into_js_string();
            Value::Number(index_of(&s, &search, arg(args, 1, vars)?.to_number()))
        }
        Method::Includes => {
            let search = arg(args, 0, vars)?.into_js_string();
            Value::Bool(index_of(&s, &search, arg(args, 1, vars)?.to_number()) >= 0.0)
        }
        Method::LastIndexOf => {
            let search = arg(args, 0, vars)?.into_js_string();
            let pos = arg(args, 1, vars)?.to_number();
            Value::Number(last_index_of(
                &s,
                &search,
                if pos.is_nan() { f64::INFINITY } else { pos },
            ))
        }
        Method::StartsWith => {
            let search = arg(args, 0, vars)?.into_js_string();
            let start = clamp_index(arg(args, 1, vars)?.to_number(), u16_len(&s));
            Value::Bool(match u16_to_byte(&s, start) {
                Ok(b) => s.get(b..).is_some_and(|t| t.starts_with(&*search)),
                // Inside a surrogate pair: only the empty string can start at a low surrogate.
                Err(_) => search.is_empty(),
            })
        }
        Method::EndsWith => {
            let search = arg(args, 0, vars)?.into_js_string();
            let len = u16_len(&s);
            let end = match arg(args, 1, vars)? {
                Value::Undefined => len,
                v => clamp_index(v.to_number(), len),
            };
            Value::Bool(match u16_to_byte(&s, end) {
                Ok(b) => s.get(..b).is_some_and(|t| t.ends_with(&*search)),
                Err(_) => search.is_empty(),
            })
        }
        Method::ToLowerCase => Value::Str(if s.is_ascii() {
            if s.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(s.to_ascii_lowercase())
            } else {
                s
            }
        } else {
            Cow::Owned(s.to_lowercase())
        }),
        Method::ToUpperCase => Value::Str(if s.is_ascii() {
            if s.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(s.to_ascii_uppercase())
            } else {
                s
            }
        } else {
            Cow::Owned(s.to_uppercase())
        }),
        Method::Trim => {
            let start = s.len() - s.trim_start_matches(is_js_space).len();
            let end = s.trim_end_matches(is_js_space).len().max(start);
            Value::Str(sub_cow(s, start..end))
        }
        Method::Substring => {
            let len = u16_len(&s);
            let a = clamp_index(arg(args, 0, vars)?.to_number(), len);
            let b = match arg(args, 1, vars)? {
                Value::Undefined => len,
                v => clamp_index(v.to_number(), len),
            };
            let (from, to) = (a.min(b), a.max(b));
            let from = u16_to_byte(&s, from).unwrap_or_else(|b| b);
            let to = u16_to_byte(&s, to).unwrap_or_else(|b| b);
            Value::Str(sub_cow(s, from..to))
        }
        Method::CharAt => {
            let n = arg(args, 0, vars)?.to_number();
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
            let pattern = arg(args, 0, vars)?.into_js_string();
            let replacement = arg(args, 1, vars)?.into_js_string();
            Value::Str(replace_str(s, &pattern, &replacement))
        }
        Method::ReplaceRegex(re) => {
            let replacement = arg(args, 0, vars)?.into_js_string();
            Value::Str(replace_regex(re, s, &replacement))
        }
    })
}

/// A sub-slice that stays borrowed when the source is borrowed. Out-of-range or non-boundary
/// ranges (never produced by the callers) give "" rather than a panic.
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
fn replace_str<'a>(s: Cow<'a, str>, pattern: &str, replacement: &str) -> Cow<'a, str> {
    let Some(start) = s.find(pattern) else {
        return s;
    };
    let end = start + pattern.len();
    let mut out = String::with_capacity(s.len() + replacement.len());
    out.push_str(s.get(..start).unwrap_or(""));
    expand_replacement(replacement, &s, start..end, None, &mut out);
    out.push_str(s.get(end..).unwrap_or(""));
    Cow::Owned(out)
}

fn replace_regex<'a>(re: &JsRegex, s: Cow<'a, str>, replacement: &str) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => replace_regex_in(re, b, replacement),
        Cow::Owned(o) => Cow::Owned(replace_regex_in(re, &o, replacement).into_owned()),
    }
}

fn replace_regex_in<'h>(re: &JsRegex, hay: &'h str, replacement: &str) -> Cow<'h, str> {
    // Without the g flag JS replaces the first match only; `replacen(.., 0, ..)` means all.
    let limit = usize::from(!re.global);
    if replacement.contains('$') {
        re.re.replacen(hay, limit, |caps: &Captures<'_>| {
            let mut out = String::new();
            let m = caps.get(0).map_or(0..0, |m| m.range());
            expand_replacement(replacement, hay, m, Some((caps, re.named_groups)), &mut out);
            out
        })
    } else {
        // The common case (e.g. `replace(/[^\d]/g, "")`): no per-match allocation.
        re.re.replacen(hay, limit, NoExpand(replacement))
    }
}

/// JS GetSubstitution: `$$`, `$&`, `` $` ``, `$'`, and with a regex `$n`/`$nn` and `$<name>`.
fn expand_replacement(
    replacement: &str,
    hay: &str,
    m: Range<usize>,
    caps: Option<(&Captures<'_>, bool)>,
    out: &mut String,
) {
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
        out.push_str(replacement.get(literal_from..i).unwrap_or(""));
        out.push_str(text);
        i += consumed;
        literal_from = i;
    }
    out.push_str(replacement.get(literal_from..).unwrap_or(""));
}

// ---------------------------------------------------------------------------------------------
// Number conversions (ECMA-262 ToNumber, parseInt, parseFloat, Number::toString)
// ---------------------------------------------------------------------------------------------

/// JS WhiteSpace and LineTerminator (what `trim` and `ToNumber` strip). Not Rust's
/// `char::is_whitespace`: JS includes U+FEFF and excludes U+0085.
fn is_js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{B}' | '\u{C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202F}'
                | '\u{205F}'
                | '\u{3000}'
                | '\u{FEFF}'
    )
}

/// Length of the longest prefix that is an unsigned JS decimal literal (`1`, `1.`, `.5`,
/// `1.5e-3`); 0 if there is none.
fn decimal_prefix_len(b: &[u8]) -> usize {
    let digits = |from: usize| {
        b.get(from..)
            .map_or(0, |t| t.iter().take_while(|c| c.is_ascii_digit()).count())
    };
    let int = digits(0);
    let mut i = int;
    let mut frac = 0;
    if b.get(i) == Some(&b'.') {
        frac = digits(i + 1);
        if int > 0 || frac > 0 {
            i += 1 + frac;
        }
    }
    if int == 0 && frac == 0 {
        return 0;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp = digits(j);
        if exp > 0 {
            i = j + exp;
        }
    }
    i
}

/// Parses a validated decimal literal. Rust's grammar is a superset of JS's for these.
fn parse_decimal(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

/// Digits in `radix` (2..=36), all of them valid and at least one; f64 accumulation.
fn parse_radix_digits(s: &str, radix: u32) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.chars().try_fold(0.0, |acc, c| {
        c.to_digit(radix)
            .map(|d| acc * f64::from(radix) + f64::from(d))
    })
}

/// JS StringToNumber: whitespace-trimmed decimal, `Infinity` or 0x/0o/0b literal; "" is 0.
fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_space);
    if t.is_empty() {
        return 0.0;
    }
    let b = t.as_bytes();
    if b.len() > 2 && b[0] == b'0' {
        let radix = match b[1] {
            b'x' | b'X' => 16,
            b'o' | b'O' => 8,
            b'b' | b'B' => 2,
            _ => 0,
        };
        if radix != 0 {
            return t
                .get(2..)
                .and_then(|d| parse_radix_digits(d, radix))
                .unwrap_or(f64::NAN);
        }
    }
    let (neg, body) = match b[0] {
        b'-' => (true, t.get(1..).unwrap_or("")),
        b'+' => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    let v = if body == "Infinity" {
        f64::INFINITY
    } else if !body.is_empty() && decimal_prefix_len(body.as_bytes()) == body.len() {
        parse_decimal(body)
    } else {
        return f64::NAN;
    };
    if neg { -v } else { v }
}

/// JS `parseFloat`: the longest decimal (or `Infinity`) prefix after leading whitespace.
fn parse_float(s: &str) -> f64 {
    let t = s.trim_start_matches(is_js_space);
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("")),
        Some(b'+') => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    let v = if body.starts_with("Infinity") {
        f64::INFINITY
    } else {
        match decimal_prefix_len(body.as_bytes()) {
            0 => return f64::NAN,
            n => parse_decimal(body.get(..n).unwrap_or("")),
        }
    };
    if neg { -v } else { v }
}

/// JS `parseInt(s, radix)` with `radix` already converted by ToInt32 (0 = automatic).
fn parse_int(s: &str, radix: i32) -> f64 {
    let t = s.trim_start_matches(is_js_space);
    let (neg, mut body) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("")),
        Some(b'+') => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    // A 0x prefix is honoured only with radix 0 (automatic) or 16.
    let (mut radix, strip_prefix) = match radix {
        0 => (10, true),
        16 => (16, true),
        r @ 2..=36 => (r.unsigned_abs(), false),
        _ => return f64::NAN,
    };
    if strip_prefix && (body.starts_with("0x") || body.starts_with("0X")) {
        radix = 16;
        body = body.get(2..).unwrap_or("");
    }
    let end = body
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(body.len());
    let digits = body.get(..end).unwrap_or("");
    if digits.is_empty() {
        return f64::NAN;
    }
    let v = if radix == 10 {
        // Exact decimal rounding rather than accumulation.
        parse_decimal(digits)
    } else {
        parse_radix_digits(digits, radix).unwrap_or(f64::NAN)
    };
    if neg { -v } else { v }
}

/// JS ToInt32.
fn to_int32(n: f64) -> i32 {
    if !n.is_finite() {
        return 0;
    }
    let m = n.trunc().rem_euclid(4_294_967_296.0);
    (if m >= 2_147_483_648.0 {
        m - 4_294_967_296.0
    } else {
        m
    }) as i32
}

/// JS Number::toString(10): shortest round-trip digits, exponent form outside 1e-7..1e21.
fn number_to_string(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x == 0.0 {
        return "0".to_owned(); // also -0
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let mut out = String::new();
    if x < 0.0 {
        out.push('-');
    }
    let a = x.abs();
    if a < 9_007_199_254_740_992.0 && a.fract() == 0.0 {
        // Integers below 2^53 are exact, and their shortest digits are the integer itself.
        out.push_str(&(a as u64).to_string());
        return out;
    }
    // `{:e}` gives Rust's shortest round-trip digits, e.g. "1.2345e-7".
    let sci = format!("{a:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i32;
    let n = exp.parse::<i32>().unwrap_or(0) + 1;
    let zeros = |count: i32| "0".repeat(count.max(0) as usize);
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.push_str(&zeros(n - k));
    } else if 0 < n && n <= 21 {
        out.push_str(digits.get(..n as usize).unwrap_or(""));
        out.push('.');
        out.push_str(digits.get(n as usize..).unwrap_or(""));
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.push_str(&zeros(-n));
        out.push_str(&digits);
    } else {
        out.push_str(digits.get(..1).unwrap_or(""));
        if k > 1 {
            out.push('.');
            out.push_str(digits.get(1..).unwrap_or(""));
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).unsigned_abs().to_string());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum P {
    LParen,
    RParen,
    Dot,
    Comma,
    Question,
    Colon,
    Semi,
    Not,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    StrictEq,
    StrictNe,
    AndAnd,
    OrOr,
}

impl P {
    fn text(self) -> &'static str {
        match self {
            P::LParen => "(",
            P::RParen => ")",
            P::Dot => ".",
            P::Comma => ",",
            P::Question => "?",
            P::Colon => ":",
            P::Semi => ";",
            P::Not => "!",
            P::Plus => "+",
            P::Minus => "-",
            P::Star => "*",
            P::Slash => "/",
            P::Percent => "%",
            P::Lt => "<",
            P::Le => "<=",
            P::Gt => ">",
            P::Ge => ">=",
            P::Eq => "==",
            P::Ne => "!=",
            P::StrictEq => "===",
            P::StrictNe => "!==",
            P::AndAnd => "&&",
            P::OrOr => "||",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'s> {
    Num(f64),
    Str(String),
    Regex { body: &'s str, flags: &'s str },
    Ident(&'s str),
    P(P),
    Eof,
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::Num(_) => "number".to_owned(),
            Tok::Str(_) => "string".to_owned(),
            Tok::Regex { .. } => "regex literal".to_owned(),
            Tok::Ident(name) => format!("'{name}'"),
            Tok::P(p) => format!("'{}'", p.text()),
            Tok::Eof => "end of input".to_owned(),
        }
    }
}

#[derive(Debug)]
struct Token<'s> {
    tok: Tok<'s>,
    pos: usize,
}

struct Lexer<'s> {
    src: &'s str,
    i: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$' || (!c.is_ascii() && c.is_alphabetic())
}

fn is_ident_part(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || (!c.is_ascii() && c.is_alphanumeric())
}

fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

impl<'s> Lexer<'s> {
    fn peek(&self, k: usize) -> Option<char> {
        self.src.get(self.i..)?.chars().nth(k)
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += c.len_utf8();
        Some(c)
    }

    fn tokenize(mut self) -> Result<Vec<Token<'s>>, ConditionError> {
        let mut out: Vec<Token<'s>> = Vec::new();
        loop {
            self.skip_space_and_comments()?;
            let pos = self.i;
            let Some(c) = self.peek(0) else {
                out.push(Token { tok: Tok::Eof, pos });
                return Ok(out);
            };
            // A '/' starts a regex unless it follows something that ends an operand.
            let regex_ok = match out.last() {
                None => true,
                Some(t) => matches!(t.tok, Tok::P(p) if p != P::RParen),
            };
            let tok = match c {
                '"' | '\'' => Tok::Str(self.string(c)?),
                '0'..='9' => Tok::Num(self.number()?),
                '.' if self.peek(1).is_some_and(|d| d.is_ascii_digit()) => Tok::Num(self.number()?),
                '/' if regex_ok => self.regex()?,
                c if is_ident_start(c) => {
                    let start = self.i;
                    while self.peek(0).is_some_and(is_ident_part) {
                        self.next_char();
                    }
                    Tok::Ident(self.src.get(start..self.i).unwrap_or(""))
                }
                _ => Tok::P(self.punct(c)?),
            };
            out.push(Token { tok, pos });
        }
    }

    fn skip_space_and_comments(&mut self) -> Result<(), ConditionError> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if is_js_space(c) => {
                    self.next_char();
                }
                (Some('/'), Some('/')) => {
                    while self.peek(0).is_some_and(|c| !is_line_terminator(c)) {
                        self.next_char();
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.i;
                    match self.src.get(self.i + 2..).and_then(|t| t.find("*/")) {
                        Some(end) => self.i += 2 + end + 2,
                        None => return Err(ConditionError::new(start, "unterminated comment")),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn punct(&mut self, c: char) -> Result<P, ConditionError> {
        let pos = self.i;
        let rest = self.src.get(self.i..).unwrap_or("");
        let unsupported = |what: &str| Err(ConditionError::new(pos, what.to_owned()));
        let (p, len) = match c {
            '(' => (P::LParen, 1),
            ')' => (P::RParen, 1),
            '.' => (P::Dot, 1),
            ',' => (P::Comma, 1),
            ':' => (P::Colon, 1),
            ';' => (P::Semi, 1),
            '*' if rest.starts_with("**") => return unsupported("operator '**' is not supported"),
            '*' => (P::Star, 1),
            '/' => (P::Slash, 1),
            '%' => (P::Percent, 1),
            '?' if rest.starts_with("??") => return unsupported("operator '??' is not supported"),
            // `a?.5:1` is a ternary, so `?.` is optional chaining only before a non-digit.
            '?' if rest.starts_with("?.")
                && !rest[2..].starts_with(|d: char| d.is_ascii_digit()) =>
            {
                return unsupported("optional chaining '?.' is not supported");
            }
            '?' => (P::Question, 1),
            '!' if rest.starts_with("!==") => (P::StrictNe, 3),
            '!' if rest.starts_with("!=") => (P::Ne, 2),
            '!' => (P::Not, 1),
            '=' if rest.starts_with("===") => (P::StrictEq, 3),
            '=' if rest.starts_with("==") => (P::Eq, 2),
            '=' if rest.starts_with("=>") => {
                return unsupported("arrow functions are not supported");
            }
            '=' => return unsupported("assignment is not supported (did you mean '=='?)"),
            '<' if rest.starts_with("<<") => {
                return unsupported("shift operators are not supported");
            }
            '<' if rest.starts_with("<=") => (P::Le, 2),
            '<' => (P::Lt, 1),
            '>' if rest.starts_with(">>") => {
                return unsupported("shift operators are not supported");
            }
            '>' if rest.starts_with(">=") => (P::Ge, 2),
            '>' => (P::Gt, 1),
            '&' if rest.starts_with("&&") => (P::AndAnd, 2),
            '&' => return unsupported("bitwise '&' is not supported (did you mean '&&'?)"),
            '|' if rest.starts_with("||") => (P::OrOr, 2),
            '|' => return unsupported("bitwise '|' is not supported (did you mean '||'?)"),
            '+' if rest.starts_with("++") => return unsupported("'++' is not supported"),
            '+' => (P::Plus, 1),
            '-' if rest.starts_with("--") => return unsupported("'--' is not supported"),
            '-' => (P::Minus, 1),
            '^' | '~' => return unsupported("bitwise operators are not supported"),
            '`' => return unsupported("template literals are not supported"),
            c => {
                return Err(ConditionError::new(
                    pos,
                    format!("unexpected character '{c}'"),
                ));
            }
        };
        self.i += len;
        Ok(p)
    }

    fn string(&mut self, quote: char) -> Result<String, ConditionError> {
        let start = self.i;
        self.next_char();
        let mut out = String::new();
        let unterminated = || ConditionError::new(start, "unterminated string literal");
        loop {
            let c = self.next_char().ok_or_else(unterminated)?;
            match c {
                c if c == quote => return Ok(out),
                '\n' | '\r' => return Err(unterminated()),
                '\\' => {
                    let esc_pos = self.i - 1;
                    let e = self.next_char().ok_or_else(unterminated)?;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{C}'),
                        'v' => out.push('\u{B}'),
                        '0' if !self.peek(0).is_some_and(|d| d.is_ascii_digit()) => out.push('\0'),
                        '0'..='9' => {
                            return Err(ConditionError::new(
                                esc_pos,
                                "octal escape sequences are not supported",
                            ));
                        }
                        'x' => {
                            let v = self.hex_digits(2).ok_or_else(|| {
                                ConditionError::new(esc_pos, "invalid \\x escape")
                            })?;
                            out.push(char::from_u32(v).unwrap_or('\u{FFFD}'));
                        }
                        'u' => {
                            let unit = self.unicode_escape(esc_pos)?;
                            out.push(self.finish_surrogate(unit));
                        }
                        // Line continuation.
                        '\r' => {
                            if self.peek(0) == Some('\n') {
                                self.next_char();
                            }
                        }
                        '\n' | '\u{2028}' | '\u{2029}' => {}
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex_digits(&mut self, n: usize) -> Option<u32> {
        let digits = self.src.get(self.i..self.i + n)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u32::from_str_radix(digits, 16).ok()?;
        self.i += n;
        Some(v)
    }

    /// After `\u`: `XXXX` or `{X...}`; returns a code point or UTF-16 code unit.
    fn unicode_escape(&mut self, esc_pos: usize) -> Result<u32, ConditionError> {
        let bad = || ConditionError::new(esc_pos, "invalid \\u escape");
        if self.peek(0) == Some('{') {
            let rest = self.src.get(self.i + 1..).unwrap_or("");
            let len = rest.find('}').ok_or_else(bad)?;
            let digits = rest.get(..len).unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            let v = u32::from_str_radix(digits, 16)
                .ok()
                .filter(|v| *v <= 0x10FFFF)
                .ok_or_else(bad)?;
            self.i += len + 2;
            Ok(v)
        } else {
            self.hex_digits(4).ok_or_else(bad)
        }
    }

    /// Joins `\uD83D\uDE00`-style pairs; a lone surrogate has no UTF-8 form and becomes U+FFFD.
    fn finish_surrogate(&mut self, unit: u32) -> char {
        if (0xD800..0xDC00).contains(&unit)
            && self.src.get(self.i..).is_some_and(|t| t.starts_with("\\u"))
        {
            let save = self.i;
            self.i += 2;
            match self.hex_digits(4) {
                Some(low @ 0xDC00..=0xDFFF) => {
                    let cp = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    return char::from_u32(cp).unwrap_or('\u{FFFD}');
                }
                _ => self.i = save,
            }
        }
        char::from_u32(unit).unwrap_or('\u{FFFD}')
    }

    fn number(&mut self) -> Result<f64, ConditionError> {
        let start = self.i;
        let rest = self.src.get(start..).unwrap_or("");
        let b = rest.as_bytes();
        let value = if b.len() > 1
            && b[0] == b'0'
            && matches!(b[1], b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        {
            let radix = match b[1] {
                b'x' | b'X' => 16,
                b'o' | b'O' => 8,
                _ => 2,
            };
            let len = rest
                .get(2..)
                .map_or(0, |t| t.chars().take_while(|c| c.is_digit(radix)).count());
            let v = rest
                .get(2..2 + len)
                .and_then(|d| parse_radix_digits(d, radix));
            let v = v.ok_or_else(|| ConditionError::new(start, "invalid numeric literal"))?;
            self.i += 2 + len;
            v
        } else if b.len() > 1 && b[0] == b'0' && b[1].is_ascii_digit() {
            return Err(ConditionError::new(
                start,
                "legacy octal literals (leading 0) are not supported",
            ));
        } else {
            let len = decimal_prefix_len(b);
            if len == 0 {
                return Err(ConditionError::new(start, "invalid numeric literal"));
            }
            self.i += len;
            parse_decimal(rest.get(..len).unwrap_or(""))
        };
        if self
            .peek(0)
            .is_some_and(|c| is_ident_start(c) || c.is_ascii_digit())
        {
            return Err(ConditionError::new(
                self.i,
                "identifier starts immediately after numeric literal",
            ));
        }
        Ok(value)
    }

    fn regex(&mut self) -> Result<Tok<'s>, ConditionError> {
        let start = self.i;
        self.next_char();
        let body_start = self.i;
        let unterminated = || ConditionError::new(start, "unterminated regex literal");
        let mut in_class = false;
        loop {
            let c = self.next_char().ok_or_else(unterminated)?;
            match c {
                c if is_line_terminator(c) => return Err(unterminated()),
                '\\' => match self.next_char() {
                    Some(e) if !is_line_terminator(e) => {}
                    _ => return Err(unterminated()),
                },
                '[' => in_class = true,
                ']' => in_class = false,
                '/' if !in_class => break,
                _ => {}
            }
        }
        let body = self.src.get(body_start..self.i - 1).unwrap_or("");
        let flags_start = self.i;
        while self.peek(0).is_some_and(is_ident_part) {
            self.next_char();
        }
        let flags = self.src.get(flags_start..self.i).unwrap_or("");
        Ok(Tok::Regex { body, flags })
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

const VARIABLES: &str = "userId, tags, clientVersion, osName, osVersion";

fn parse(src: &str) -> Result<Node, ConditionError> {
    if src.len() > MAX_SOURCE_LEN {
        return Err(ConditionError::new(
            MAX_SOURCE_LEN,
            format!(
                "condition is {} bytes long; the limit is {MAX_SOURCE_LEN}",
                src.len()
            ),
        ));
    }
    let toks = Lexer { src, i: 0 }.tokenize()?;
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
        nodes: 0,
    };
    if p.peek() == &Tok::Eof {
        return Err(ConditionError::new(p.pos(), "empty condition"));
    }
    // The top level is depth 0: MAX_DEPTH counts nested constructs.
    let root = p.parse_ternary()?;
    while p.eat(P::Semi) {}
    if p.peek() != &Tok::Eof {
        return Err(ConditionError::new(
            p.pos(),
            format!("unexpected {}", p.peek().describe()),
        ));
    }
    Ok(root)
}

struct Parser<'s> {
    toks: Vec<Token<'s>>,
    i: usize,
    depth: usize,
    nodes: usize,
}

const EOF: Tok<'static> = Tok::Eof;

impl<'s> Parser<'s> {
    fn peek(&self) -> &Tok<'s> {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> &Tok<'s> {
        self.toks.get(self.i + k).map_or(&EOF, |t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks
            .get(self.i)
            .or(self.toks.last())
            .map_or(0, |t| t.pos)
    }

    fn bump(&mut self) {
        // Never move past the final Eof token.
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
    }

    fn eat(&mut self, p: P) -> bool {
        if self.peek() == &Tok::P(p) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: P) -> Result<(), ConditionError> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(ConditionError::new(
                self.pos(),
                format!("expected '{}'", p.text()),
            ))
        }
    }

    /// Counts every node built against [`MAX_NODES`] and checks the tree depth against
    /// [`MAX_DEPTH`]: evaluation recurses once per level, and `a+b+c+...` or long method
    /// chains deepen the tree without nesting syntactically.
    fn node(&mut self, n: Node) -> Result<Node, ConditionError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ConditionError::new(
                self.pos(),
                format!("condition has more than {MAX_NODES} syntax nodes"),
            ));
        }
        // Levels above the leaves, so that 64 `!` are 64 levels in both measures.
        if tree_depth(&n) - 1 > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(n)
    }

    fn too_deep(&self) -> ConditionError {
        ConditionError::new(
            self.pos(),
            format!("condition is nested deeper than {MAX_DEPTH} levels"),
        )
    }

    /// Runs `f` one nesting level deeper; the limit also bounds parser and evaluator recursion.
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ConditionError>,
    ) -> Result<T, ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.too_deep());
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn parse_expr(&mut self) -> Result<Node, ConditionError> {
        self.nested(Self::parse_ternary)
    }

    fn parse_ternary(&mut self) -> Result<Node, ConditionError> {
        let cond = self.parse_or()?;
        if !self.eat(P::Question) {
            return Ok(cond);
        }
        let a = self.parse_expr()?;
        self.expect(P::Colon)?;
        let b = self.parse_expr()?;
        self.node(Node::Cond(Box::new(cond), Box::new(a), Box::new(b)))
    }

    fn parse_or(&mut self) -> Result<Node, ConditionError> {
        let first = self.parse_and()?;
        if self.peek() != &Tok::P(P::OrOr) {
            return Ok(first);
        }
        let mut xs = vec![first];
        while self.eat(P::OrOr) {
            xs.push(self.parse_and()?);
        }
        self.node(Node::Or(xs))
    }

    fn parse_and(&mut self) -> Result<Node, ConditionError> {
        let first = self.parse_equality()?;
        if self.peek() != &Tok::P(P::AndAnd) {
            return Ok(first);
        }
        let mut xs = vec![first];
        while self.eat(P::AndAnd) {
            xs.push(self.parse_equality()?);
        }
        self.node(Node::And(xs))
    }

    /// One left-associative binary precedence level (a loop, so long chains do not recurse).
    fn binary_level(
        &mut self,
        operand: fn(&mut Self) -> Result<Node, ConditionError>,
        op_of: fn(P) -> Option<BinOp>,
    ) -> Result<Node, ConditionError> {
        let mut left = operand(self)?;
        loop {
            let op = match self.peek() {
                Tok::P(p) => match op_of(*p) {
                    Some(op) => op,
                    None => return Ok(left),
                },
                _ => return Ok(left),
            };
            self.bump();
            let right = operand(self)?;
            left = self.node(Node::Binary(op, Box::new(left), Box::new(right)))?;
        }
    }

    fn parse_equality(&mut self) -> Result<Node, ConditionError> {
        self.binary_level(Self::parse_relational, |p| match p {
            P::Eq => Some(BinOp::Eq),
            P::Ne => Some(BinOp::Ne),
            P::StrictEq => Some(BinOp::StrictEq),
            P::StrictNe => Some(BinOp::StrictNe),
            _ => None,
        })
    }

    fn parse_relational(&mut self) -> Result<Node, ConditionError> {
        self.binary_level(Self::parse_additive, |p| match p {
            P::Lt => Some(BinOp::Lt),
            P::Le => Some(BinOp::Le),
            P::Gt => Some(BinOp::Gt),
            P::Ge => Some(BinOp::Ge),
            _ => None,
        })
    }

    fn parse_additive(&mut self) -> Result<Node, ConditionError> {
        self.binary_level(Self::parse_multiplicative, |p| match p {
            P::Plus => Some(BinOp::Add),
            P::Minus => Some(BinOp::Sub),
            _ => None,
        })
    }

    fn parse_multiplicative(&mut self) -> Result<Node, ConditionError> {
        self.binary_level(Self::parse_unary, |p| match p {
            P::Star => Some(BinOp::Mul),
            P::Slash => Some(BinOp::Div),
            P::Percent => Some(BinOp::Rem),
            _ => None,
        })
    }

    fn parse_unary(&mut self) -> Result<Node, ConditionError> {
        let op = match self.peek() {
            Tok::P(P::Not) => UnOp::Not,
            Tok::P(P::Minus) => UnOp::Neg,
            Tok::P(P::Plus) => UnOp::Plus,
            Tok::Ident("typeof") => UnOp::TypeOf,
            _ => return self.parse_postfix(),
        };
        self.bump();
        let x = self.nested(Self::parse_unary)?;
        // Fold `-1` (as in `indexOf(..) != -1`) into a constant.
        if let (UnOp::Neg, Node::Const(Const::Number(n))) = (op, &x) {
            return self.node(Node::Const(Const::Number(-n)));
        }
        self.node(Node::Unary(op, Box::new(x)))
    }

    fn parse_postfix(&mut self) -> Result<Node, ConditionError> {
        let mut x = self.parse_primary()?;
        while self.eat(P::Dot) {
            let pos = self.pos();
            let name = match self.peek() {
                Tok::Ident(name) => *name,
                _ => {
                    return Err(ConditionError::new(
                        pos,
                        "expected a property name after '.'",
                    ));
                }
            };
            self.bump();
            if name == "length" {
                x = self.node(Node::Length(Box::new(x)))?;
                continue;
            }
            let Some(method) = Method::from_name(name) else {
                let msg = match name {
                    "match" | "search" => format!("'{name}' is not supported; use /re/.test(s)"),
                    "test" => {
                        "test() is only available on a regex literal: /re/.test(s)".to_owned()
                    }
                    _ => format!("unsupported property or method '{name}'"),
                };
                return Err(ConditionError::new(pos, msg));
            };
            if !self.eat(P::LParen) {
                return Err(ConditionError::new(
                    self.pos(),
                    format!("expected '(' after '{name}'"),
                ));
            }
            let (method, args) = match (method, self.peek().clone(), self.peek_at(1)) {
                // `replace(/re/, ..)`: the regex literal is the pattern, not a value.
                (Method::Replace, Tok::Regex { body, flags }, next) if next != &Tok::P(P::Dot) => {
                    let re = compile_regex(body, flags, self.pos())?;
                    self.bump();
                    let args = if self.eat(P::Comma) {
                        self.parse_args()?
                    } else {
                        self.expect(P::RParen)?;
                        Vec::new()
                    };
                    (Method::ReplaceRegex(Box::new(re)), args)
                }
                (method, _, _) => (method, self.parse_args()?),
            };
            x = self.node(Node::Method(Box::new(x), method, args))?;
        }
        Ok(x)
    }

    /// Arguments after the opening '(' up to and including ')'. A trailing comma is allowed.
    fn parse_args(&mut self) -> Result<Vec<Node>, ConditionError> {
        let mut args = Vec::new();
        loop {
            if self.eat(P::RParen) {
                return Ok(args);
            }
            args.push(self.parse_expr()?);
            if !self.eat(P::Comma) {
                self.expect(P::RParen)?;
                return Ok(args);
            }
        }
    }

    fn parse_primary(&mut self) -> Result<Node, ConditionError> {
        let pos = self.pos();
        let tok = self.peek().clone();
        let node = match tok {
            Tok::Num(n) => Node::Const(Const::Number(n)),
            Tok::Str(s) => Node::Const(Const::Str(s.into_boxed_str())),
            Tok::P(P::LParen) => {
                self.bump();
                let x = self.parse_expr()?;
                self.expect(P::RParen)?;
                return Ok(x);
            }
            Tok::Regex { body, flags } => {
                let is_test = self.peek_at(1) == &Tok::P(P::Dot)
                    && self.peek_at(2) == &Tok::Ident("test")
                    && self.peek_at(3) == &Tok::P(P::LParen);
                if !is_test {
                    return Err(ConditionError::new(
                        pos,
                        "a regex literal can only be used in /re/.test(s) or replace(/re/, s)",
                    ));
                }
                let re = compile_regex(body, flags, pos)?;
                for _ in 0..4 {
                    self.bump();
                }
                let args = self.parse_args()?;
                return self.node(Node::Test(Box::new(re), args));
            }
            Tok::Ident(name) => match name {
                "true" => Node::Const(Const::Bool(true)),
                "false" => Node::Const(Const::Bool(false)),
                "null" => Node::Const(Const::Null),
                "undefined" => Node::Const(Const::Undefined),
                "NaN" => Node::Const(Const::Number(f64::NAN)),
                "Infinity" => Node::Const(Const::Number(f64::INFINITY)),
                "userId" => Node::Var(Var::UserId),
                "tags" => Node::Var(Var::Tags),
                "clientVersion" => Node::Var(Var::ClientVersion),
                "osName" => Node::Var(Var::OsName),
                "osVersion" => Node::Var(Var::OsVersion),
                "parseInt" | "parseFloat" | "Number" | "String" => {
                    let func = match name {
                        "parseInt" => Func::ParseInt,
                        "parseFloat" => Func::ParseFloat,
                        "Number" => Func::Number,
                        _ => Func::String,
                    };
                    self.bump();
                    if !self.eat(P::LParen) {
                        return Err(ConditionError::new(
                            pos,
                            format!("'{name}' can only be called, as {name}(x)"),
                        ));
                    }
                    let args = self.parse_args()?;
                    return self.node(Node::Call(func, args));
                }
                _ => {
                    return Err(ConditionError::new(
                        pos,
                        format!("unknown identifier '{name}' (variables: {VARIABLES})"),
                    ));
                }
            },
            Tok::Eof => return Err(ConditionError::new(pos, "unexpected end of input")),
            Tok::P(p) => {
                return Err(ConditionError::new(
                    pos,
                    format!("unexpected '{}'", p.text()),
                ));
            }
        };
        self.bump();
        self.node(node)
    }
}

/// Depth of a tree whose subtrees were already checked (so this recursion stays shallow).
fn tree_depth(n: &Node) -> usize {
    let max = |xs: &[Node]| xs.iter().map(tree_depth).max().unwrap_or(0);
    1 + match n {
        Node::Const(_) | Node::Var(_) => 0,
        Node::Unary(_, x) | Node::Length(x) => tree_depth(x),
        Node::Binary(_, a, b) => tree_depth(a).max(tree_depth(b)),
        Node::And(xs) | Node::Or(xs) | Node::Call(_, xs) | Node::Test(_, xs) => max(xs),
        Node::Cond(c, a, b) => tree_depth(c).max(tree_depth(a)).max(tree_depth(b)),
        Node::Method(recv, _, args) => tree_depth(recv).max(max(args)),
    }
}

// ---------------------------------------------------------------------------------------------
// Regex literals: JS syntax translated to the `regex` crate's
// ---------------------------------------------------------------------------------------------

/// JS `.` without the s flag: anything but a JS line terminator (the crate's `.` only skips \n).
const DOT: &str = r"[^\n\r\x{2028}\x{2029}]";
const DOT_ALL: &str = r"(?s:.)";
/// JS `\s`: WhiteSpace plus LineTerminator.
const SPACE: &str = concat!(
    r"[\t\n\x0B\x0C\r\x20\xA0\x{1680}\x{2000}-\x{200A}",
    r"\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}]"
);
const NOT_SPACE: &str = concat!(
    r"[^\t\n\x0B\x0C\r\x20\xA0\x{1680}\x{2000}-\x{200A}",
    r"\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}]"
);

/// JS `\d \D \w \W \s \S` are ASCII-only (except `\s`), unlike the crate's Unicode classes.
fn class_escape(c: char) -> Option<&'static str> {
    Some(match c {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        's' => SPACE,
        'S' => NOT_SPACE,
        _ => return None,
    })
}

/// `pos` is the byte offset of the opening '/' in the condition source.
fn compile_regex(body: &str, flags: &str, pos: usize) -> Result<JsRegex, ConditionError> {
    let (mut global, mut icase, mut multiline, mut dotall) = (false, false, false, false);
    for (k, f) in flags.char_indices() {
        let flag_pos = pos + body.len() + 2 + k;
        let slot = match f {
            'g' => &mut global,
            'i' => &mut icase,
            'm' => &mut multiline,
            's' => &mut dotall,
            _ => {
                return Err(ConditionError::new(
                    flag_pos,
                    format!("unsupported regex flag '{f}' (supported: g, i, m, s)"),
                ));
            }
        };
        if *slot {
            return Err(ConditionError::new(
                flag_pos,
                format!("duplicate regex flag '{f}'"),
            ));
        }
        *slot = true;
    }
    let pattern = RegexTranslator {
        chars: body.char_indices().collect(),
        i: 0,
        base: pos + 1,
        end: body.len(),
        dotall,
        out: String::with_capacity(body.len() * 2),
    }
    .run()?;
    let re = RegexBuilder::new(&pattern)
        .case_insensitive(icase)
        .multi_line(multiline)
        .crlf(multiline)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let msg = match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("regex is too large once compiled (limit {limit} bytes)")
                }
                regex::Error::Syntax(s) => {
                    // The crate's message points into the translated pattern; keep its summary.
                    let summary = s
                        .lines()
                        .rev()
                        .find_map(|l| l.strip_prefix("error: "))
                        .unwrap_or("syntax error");
                    format!("invalid regex: {summary}")
                }
                _ => "invalid regex".to_owned(),
            };
            ConditionError::new(pos, msg)
        })?;
    let named_groups = re.capture_names().any(|n| n.is_some());
    Ok(JsRegex {
        re,
        global,
        named_groups,
    })
}

struct RegexTranslator {
    chars: Vec<(usize, char)>,
    i: usize,
    /// Source offset of the pattern body, for error positions.
    base: usize,
    end: usize,
    dotall: bool,
    out: String,
}

enum ClassAtom {
    Char(char),
    Set(&'static str),
}

impl RegexTranslator {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).map(|&(_, c)| c)
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        Some(c)
    }

    /// Error at char index `at` of the pattern.
    fn err(&self, at: usize, msg: impl Into<String>) -> ConditionError {
        let off = self.chars.get(at).map_or(self.end, |&(b, _)| b);
        ConditionError::new(self.base + off, msg)
    }

    /// Every literal is emitted as `\x{..}` unless it is an ASCII letter or digit: no JS
    /// character can then turn into crate syntax (`#`, `&&`, `~~`, `\<`, ...).
    fn push_literal(&mut self, c: char) {
        if c.is_ascii_alphanumeric() {
            self.out.push(c);
        } else {
            self.out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }

    fn run(mut self) -> Result<String, ConditionError> {
        // JS rejects a quantifier with nothing (quantifiable) before it; the crate is laxer.
        let mut can_quantify = false;
        while let Some(c) = self.next() {
            let at = self.i - 1;
            match c {
                '\\' => can_quantify = self.escape(at)?,
                '[' => {
                    self.class(at)?;
                    can_quantify = true;
                }
                '(' => {
                    self.group(at)?;
                    can_quantify = false;
                }
                ')' => {
                    self.out.push(')');
                    can_quantify = true;
                }
                '|' | '^' | '$' => {
                    self.out.push(c);
                    can_quantify = false;
                }
                '.' => {
                    self.out.push_str(if self.dotall { DOT_ALL } else { DOT });
                    can_quantify = true;
                }
                '*' | '+' | '?' => {
                    if !can_quantify {
                        return Err(self.err(at, "invalid regex: nothing to repeat"));
                    }
                    self.out.push(c);
                    self.lazy_suffix();
                    can_quantify = false;
                }
                '{' => match self.brace_quantifier_len() {
                    Some(len) => {
                        if !can_quantify {
                            return Err(self.err(at, "invalid regex: nothing to repeat"));
                        }
                        self.out.push('{');
                        for _ in 0..len {
                            if let Some(c) = self.next() {
                                self.out.push(c);
                            }
                        }
                        self.lazy_suffix();
                        can_quantify = false;
                    }
                    // Not a quantifier: JS (without the u flag) takes '{' literally.
                    None => {
                        self.push_literal('{');
                        can_quantify = true;
                    }
                },
                c => {
                    self.push_literal(c);
                    can_quantify = true;
                }
            }
        }
        Ok(self.out)
    }

    fn lazy_suffix(&mut self) {
        if self.peek(0) == Some('?') {
            self.i += 1;
            self.out.push('?');
        }
    }

    /// Length after '{' of `n}`, `n,}` or `n,m}`, if that is what follows.
    fn brace_quantifier_len(&self) -> Option<usize> {
        let mut k = 0;
        let digits = |k: &mut usize| {
            let start = *k;
            while self.peek(*k).is_some_and(|c| c.is_ascii_digit()) {
                *k += 1;
            }
            *k > start
        };
        if !digits(&mut k) {
            return None;
        }
        if self.peek(k) == Some(',') {
            k += 1;
            digits(&mut k);
        }
        (self.peek(k) == Some('}')).then_some(k + 1)
    }

    /// After a '\' outside a class; returns whether the result can take a quantifier.
    fn escape(&mut self, at: usize) -> Result<bool, ConditionError> {
        let c = self
            .next()
            .ok_or_else(|| self.err(at, "invalid regex: '\\' at end of pattern"))?;
        match c {
            // JS word boundaries use the ASCII \w.
            'b' => self.out.push_str(r"(?-u:\b)"),
            'B' => self.out.push_str(r"(?-u:\B)"),
            '1'..='9' => {
                return Err(self.err(at, "backreferences (\\1 ...) are not supported in regexes"));
            }
            'k' if self.peek(0) == Some('<') => {
                return Err(self.err(at, "named backreferences are not supported in regexes"));
            }
            c => match class_escape(c) {
                Some(set) => {
                    self.out.push_str(set);
                    return Ok(true);
                }
                None => {
                    let ch = self.char_escape(c, at)?;
                    self.push_literal(ch);
                    return Ok(true);
                }
            },
        }
        Ok(false)
    }

    /// A character escape (after '\'): `\t \n \r \f \v \0 \xHH \uHHHH \cX`, else the character
    /// itself (JS identity escapes without the u flag).
    fn char_escape(&mut self, c: char, at: usize) -> Result<char, ConditionError> {
        Ok(match c {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'f' => '\u{C}',
            'v' => '\u{B}',
            '0' if !self.peek(0).is_some_and(|d| d.is_ascii_digit()) => '\0',
            '0'..='9' => return Err(self.err(at, "octal escapes are not supported in regexes")),
            'x' => match self.hex(2) {
                Some(v) => char::from_u32(v).unwrap_or('\u{FFFD}'),
                None => 'x',
            },
            'u' if self.peek(0) == Some('{') => {
                return Err(self.err(at, "\\u{...} needs the u flag, which is not supported"));
            }
            'u' => match self.hex(4) {
                Some(high @ 0xD800..=0xDBFF) => {
                    let low = (self.peek(0) == Some('\\') && self.peek(1) == Some('u'))
                        .then(|| {
                            self.i += 2;
                            self.hex(4)
                        })
                        .flatten()
                        .filter(|low| (0xDC00..=0xDFFF).contains(low));
                    match low {
                        Some(low) => {
                            let cp = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                            char::from_u32(cp).unwrap_or('\u{FFFD}')
                        }
                        None => {
                            return Err(
                                self.err(at, "lone surrogate escapes are not supported in regexes")
                            );
                        }
                    }
                }
                Some(v) => char::from_u32(v).ok_or_else(|| {
                    self.err(at, "lone surrogate escapes are not supported in regexes")
                })?,
                None => 'u',
            },
            'c' => match self.peek(0) {
                Some(l) if l.is_ascii_alphabetic() => {
                    self.i += 1;
                    char::from(l as u8 % 32)
                }
                _ => return Err(self.err(at, "invalid \\c escape in regex")),
            },
            other => other,
        })
    }

    fn hex(&mut self, n: usize) -> Option<u32> {
        let mut v = 0;
        for k in 0..n {
            v = v * 16 + self.peek(k)?.to_digit(16)?;
        }
        self.i += n;
        Some(v)
    }

    fn group(&mut self, at: usize) -> Result<(), ConditionError> {
        if self.peek(0) != Some('?') {
            self.out.push('(');
            return Ok(());
        }
        match (self.peek(1), self.peek(2)) {
            (Some(':'), _) => {
                self.i += 2;
                self.out.push_str("(?:");
                Ok(())
            }
            (Some('=' | '!'), _) => {
                Err(self.err(at, "lookahead assertions are not supported in regexes"))
            }
            (Some('<'), Some('=' | '!')) => {
                Err(self.err(at, "lookbehind assertions are not supported in regexes"))
            }
            (Some('<'), _) => {
                self.i += 2;
                let mut name = String::new();
                loop {
                    match self.next() {
                        Some('>') if !name.is_empty() => break,
                        Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        _ => return Err(self.err(at, "invalid regex group name")),
                    }
                }
                if name.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(self.err(at, "invalid regex group name"));
                }
                self.out.push_str("(?P<");
                self.out.push_str(&name);
                self.out.push('>');
                Ok(())
            }
            _ => Err(self.err(at, "invalid regex group")),
        }
    }

    fn class(&mut self, at: usize) -> Result<(), ConditionError> {
        let negated = self.peek(0) == Some('^');
        if negated {
            self.i += 1;
        }
        if self.peek(0) == Some(']') {
            // JS `[]` matches nothing and `[^]` matches any character.
            self.i += 1;
            self.out.push_str(if negated { DOT_ALL } else { "[a&&b]" });
            return Ok(());
        }
        self.out.push_str(if negated { "[^" } else { "[" });
        loop {
            match self.peek(0) {
                None => return Err(self.err(at, "invalid regex: unterminated character class")),
                Some(']') => {
                    self.i += 1;
                    self.out.push(']');
                    return Ok(());
                }
                Some(_) => {}
            }
            let first = self.class_atom()?;
            let is_range = self.peek(0) == Some('-') && self.peek(1).is_some_and(|c| c != ']');
            if !is_range {
                self.push_class_atom(first);
                continue;
            }
            let dash = self.i;
            self.i += 1;
            let second = self.class_atom()?;
            match (first, second) {
                (ClassAtom::Char(lo), ClassAtom::Char(hi)) => {
                    if lo > hi {
                        return Err(
                            self.err(dash, "invalid regex: range out of order in character class")
                        );
                    }
                    self.push_literal(lo);
                    self.out.push('-');
                    self.push_literal(hi);
                }
                // `[\d-z]`: without the u flag JS reads the '-' literally.
                (first, second) => {
                    self.push_class_atom(first);
                    self.push_literal('-');
                    self.push_class_atom(second);
                }
            }
        }
    }

    fn push_class_atom(&mut self, atom: ClassAtom) {
        match atom {
            ClassAtom::Char(c) => self.push_literal(c),
            // The crate allows nested classes, which unite with the outer one.
            ClassAtom::Set(set) => self.out.push_str(set),
        }
    }

    fn class_atom(&mut self) -> Result<ClassAtom, ConditionError> {
        let at = self.i;
        let c = self
            .next()
            .ok_or_else(|| self.err(at, "invalid regex: unterminated character class"))?;
        if c != '\\' {
            return Ok(ClassAtom::Char(c));
        }
        let e = self
            .next()
            .ok_or_else(|| self.err(at, "invalid regex: unterminated character class"))?;
        if let Some(set) = class_escape(e) {
            return Ok(ClassAtom::Set(set));
        }
        Ok(ClassAtom::Char(match e {
            // In a class `\b` is a backspace.
            'b' => '\u{8}',
            '1'..='9' => return Err(self.err(at, "octal escapes are not supported in regexes")),
            e => self.char_escape(e, at)?,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EX_USER: &str = "userId % 100 < 20";
    const EX_TAGS: &str = r#"tags!=null && tags.indexOf("test")!=-1"#;
    const EX_VERSION: &str =
        r#"clientVersion.indexOf("android")!=-1 && clientVersion.replace(/[^\d]/g,"") > 20"#;

    fn user(id: Option<&str>) -> SessionVars<'_> {
        SessionVars {
            user_id: id,
            ..SessionVars::default()
        }
    }

    fn tags(t: Option<&str>) -> SessionVars<'_> {
        SessionVars {
            tags: t,
            ..SessionVars::default()
        }
    }

    fn version(v: Option<&str>) -> SessionVars<'_> {
        SessionVars {
            client_version: v,
            ..SessionVars::default()
        }
    }

    fn eval_with(src: &str, vars: &SessionVars<'_>) -> Value<'static> {
        let c = Condition::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        c.eval(vars)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .into_owned()
    }

    fn js(src: &str) -> Value<'static> {
        eval_with(src, &SessionVars::default())
    }

    fn num(src: &str) -> f64 {
        match js(src) {
            Value::Number(n) => n,
            other => panic!("{src}: expected a number, got {other:?}"),
        }
    }

    fn text(src: &str) -> String {
        match js(src) {
            Value::Str(s) => s.into_owned(),
            other => panic!("{src}: expected a string, got {other:?}"),
        }
    }

    fn truth(src: &str) -> bool {
        match js(src) {
            Value::Bool(b) => b,
            other => panic!("{src}: expected a boolean, got {other:?}"),
        }
    }

    fn err(src: &str) -> ConditionError {
        match Condition::compile(src) {
            Ok(_) => panic!("{src}: compiled, expected an error"),
            Err(e) => e,
        }
    }

    fn matches(src: &str, vars: &SessionVars<'_>) -> bool {
        Condition::compile(src).unwrap().matches(vars)
    }

    #[test]
    fn example_user_id_modulo() {
        let c = Condition::compile(EX_USER).unwrap();
        let m = |id| c.matches(&user(id));
        assert!(!m(Some("123"))); // 23 < 20 is false
        assert!(m(Some("119")));
        assert!(m(Some("5")));
        assert!(!m(Some("20")));
        assert!(m(Some("-5"))); // -5 % 100 == -5
        assert!(m(Some(" 1000 "))); // whitespace is trimmed by ToNumber
        assert!(!m(Some("0x14"))); // 20
        assert!(!m(Some("abc"))); // NaN < 20 is false
        assert!(!m(Some("12a")));
        // ToNumber(null) and ToNumber("") are 0, so JS (and Nashorn) match these.
        assert!(m(None));
        assert!(m(Some("")));
    }

    #[test]
    fn example_tags() {
        let c = Condition::compile(EX_TAGS).unwrap();
        let m = |t| c.matches(&tags(t));
        assert!(m(Some("test")));
        assert!(m(Some("vip,test,beta")));
        assert!(m(Some("tester"))); // substring, as indexOf
        assert!(!m(Some("prod")));
        assert!(!m(Some("TEST")));
        assert!(!m(Some("")));
        assert!(!m(None));
        // The null guard short-circuits: no TypeError, a plain false.
        assert_eq!(c.eval(&tags(None)), Ok(Value::Bool(false)));
    }

    #[test]
    fn example_client_version() {
        let c = Condition::compile(EX_VERSION).unwrap();
        let m = |v| c.matches(&version(v));
        assert!(m(Some("android 2.1"))); // "21" > 20
        assert!(m(Some("android-1.10.3"))); // "1103"
        assert!(!m(Some("android 2.0"))); // "20" > 20 is false
        assert!(!m(Some("android"))); // "" is 0
        assert!(!m(Some("ios 9.9")));
        assert!(!m(Some("Android 5.0"))); // case-sensitive
        // No null guard: a TypeError, which counts as no match.
        assert!(!m(None));
        assert_eq!(
            c.eval(&version(None)),
            Err(EvalError::NullProperty {
                property: "indexOf",
                base: "null"
            })
        );
    }

    #[test]
    fn arithmetic() {
        assert_eq!(num("1 + 2 * 3"), 7.0);
        assert_eq!(num("(1 + 2) * 3"), 9.0);
        assert_eq!(num("10 - 4 - 3"), 3.0); // left-associative
        assert_eq!(num("7 % 3"), 1.0);
        assert_eq!(num("-7 % 3"), -1.0);
        assert_eq!(num("5.5 % 2"), 1.5);
        assert_eq!(num("10 / 4"), 2.5);
        assert_eq!(num("1 / 0"), f64::INFINITY);
        assert!(num("0 / 0").is_nan());
        assert_eq!(num(r#""5" - 2"#), 3.0);
        assert_eq!(num(r#""5" * "2""#), 10.0);
        assert_eq!(num(r#"+"3""#), 3.0);
        assert_eq!(num(r#"+" 12 ""#), 12.0);
        assert_eq!(num(r#"+"""#), 0.0);
        assert!(num(r#"-"x""#).is_nan());
        assert_eq!(num("+true"), 1.0);
        assert_eq!(num("+null"), 0.0);
        assert!(num("+undefined").is_nan());
        assert_eq!(num("- -2"), 2.0);
        assert_eq!(num("2 * -3"), -6.0);
        assert_eq!(num("true + true"), 2.0);
        assert_eq!(num("null + 1"), 1.0);
        assert!(num("undefined + 1").is_nan());
    }

    #[test]
    fn number_literals() {
        assert_eq!(num(".5 + 1."), 1.5);
        assert_eq!(num("1e3"), 1000.0);
        assert_eq!(num("1.5E-3"), 0.0015);
        assert_eq!(num("0x1F"), 31.0);
        assert_eq!(num("0b101 + 0o17"), 20.0);
        assert_eq!(num("Infinity"), f64::INFINITY);
        assert!(num("NaN").is_nan());
    }

    #[test]
    fn string_concatenation_and_number_formatting() {
        assert_eq!(text(r#""a" + 1"#), "a1");
        assert_eq!(text(r#"1 + "a""#), "1a");
        assert_eq!(text(r#"1 + 2 + "3""#), "33");
        assert_eq!(text(r#""3" + 1 + 2"#), "312");
        assert_eq!(
            text(r#""x" + null + undefined + true"#),
            "xnullundefinedtrue"
        );
        assert_eq!(text(r#""" + 1.5"#), "1.5");
        assert_eq!(text(r#""" + -0"#), "0");
        assert_eq!(text(r#""" + (0.1 + 0.2)"#), "0.30000000000000004");
        assert_eq!(text(r#""" + 1 / 3"#), "0.3333333333333333");
        assert_eq!(text(r#""" + 1e21"#), "1e+21");
        assert_eq!(text(r#""" + 123e18"#), "123000000000000000000");
        assert_eq!(text(r#""" + 1.5e-7"#), "1.5e-7");
        assert_eq!(text(r#""" + 0.000001"#), "0.000001");
        assert_eq!(text(r#""" + -2.5e30"#), "-2.5e+30");
        assert_eq!(text(r#""" + 1 / 0"#), "Infinity");
        assert_eq!(text(r#""" + 0 / 0"#), "NaN");
        assert_eq!(
            eval_with(r#"userId + 1"#, &user(Some("41"))),
            Value::Str("411".into())
        );
        assert_eq!(
            eval_with(r#"userId - 1"#, &user(Some("41"))),
            Value::Number(40.0)
        );
    }

    #[test]
    fn relational() {
        assert!(truth(r#""10" < "9""#)); // string comparison
        assert!(!truth(r#""10" < 9"#)); // numeric comparison
        assert!(truth(r#""b" > "a""#));
        assert!(truth(r#""B" < "a""#));
        assert!(truth(r#""abc" <= "abc""#));
        assert!(!truth(r#""abc" < 1"#));
        assert!(!truth(r#""abc" >= 1"#)); // NaN: every comparison is false
        assert!(!truth("NaN <= NaN"));
        assert!(truth("null >= 0"));
        assert!(!truth("undefined >= 0"));
        assert!(truth("2 >= 2 && 2 <= 2 && 1 < 2 && 3 > 2"));
        assert!(truth("true > false"));
        // UTF-16 order: U+FFFF sorts after the surrogates of U+10000 (byte order says otherwise).
        assert!(!truth(r#""\uFFFF" < "\u{10000}""#));
    }

    #[test]
    fn loose_and_strict_equality() {
        let table = [
            ("null == undefined", true),
            ("null === undefined", false),
            (r#"1 == "1""#, true),
            (r#"1 === "1""#, false),
            (r#"1 != "1""#, false),
            (r#"1 !== "1""#, true),
            (r#"0 == """#, true),
            (r#"0 == "0""#, true),
            (r#""" == "0""#, false),
            ("true == 1", true),
            (r#"true == "1""#, true),
            (r#"false == """#, true),
            ("true === 1", false),
            ("null == 0", false),
            ("null == false", false),
            ("undefined == 0", false),
            ("NaN == NaN", false),
            ("NaN != NaN", true),
            ("NaN === NaN", false),
            ("0 === -0", true),
            (r#""abc" == 'abc'"#, true),
            (r#""abc" === "abc""#, true),
            (r#""1.0" == 1"#, true),
            (r#"" 1 " == 1"#, true),
        ];
        for (src, want) in table {
            assert_eq!(truth(src), want, "{src}");
        }
        assert!(matches("tags == null", &tags(None)));
        assert!(matches("tags === null", &tags(None)));
        assert!(!matches("tags === undefined", &tags(None)));
        assert!(matches("tags == undefined", &tags(None)));
        assert!(matches(r#"userId == 42"#, &user(Some("42"))));
        assert!(!matches(r#"userId === 42"#, &user(Some("42"))));
    }

    #[test]
    fn logical_operators_precedence_and_values() {
        // `a || b && c` is `a || (b && c)`.
        assert!(truth("true || false && false"));
        assert!(truth("false && true || true"));
        assert!(!truth("(true || false) && false"));
        // && binds tighter than ||, == tighter than &&, + tighter than <.
        assert!(truth("1 + 1 == 2 && 2 < 1 + 2"));
        // They return operands, not booleans.
        assert_eq!(js(r#""" || "x""#), Value::Str("x".into()));
        assert_eq!(js(r#""a" && 0"#), Value::Number(0.0));
        assert_eq!(js(r#"null || 0 || "z""#), Value::Str("z".into()));
        assert_eq!(js("1 && 2 && 3"), Value::Number(3.0));
        assert_eq!(js("0 || null"), Value::Null);
        // Short-circuit: the right side would throw on null tags.
        assert!(!matches("tags != null && tags.length > 2", &tags(None)));
        assert!(matches("tags == null || tags.length > 2", &tags(None)));
        assert!(matches("true || tags.length", &tags(None)));
    }

    #[test]
    fn unary_and_typeof() {
        assert!(matches("!tags", &tags(None)));
        assert!(!matches("!tags", &tags(Some("x"))));
        assert!(matches("!!tags", &tags(Some("x"))));
        assert!(matches("!tags", &tags(Some("")))); // "" is falsy
        assert!(truth("!0 && !NaN && !null && !undefined && !!1"));
        assert_eq!(text("typeof tags"), "object"); // null
        assert_eq!(
            eval_with("typeof tags", &tags(Some("x"))),
            Value::Str("string".into())
        );
        assert_eq!(text("typeof undefined"), "undefined");
        assert_eq!(text("typeof 1 + typeof true"), "numberboolean");
        assert!(matches(
            r#"typeof osName !== "undefined""#,
            &SessionVars::default()
        ));
    }

    #[test]
    fn ternary() {
        assert_eq!(
            eval_with(r#"userId == "1" ? "one" : "other""#, &user(Some("1"))),
            Value::Str("one".into())
        );
        assert_eq!(
            eval_with(r#"userId == "1" ? "one" : "other""#, &user(Some("2"))),
            Value::Str("other".into())
        );
        assert_eq!(text(r#"1 ? 2 ? "a" : "b" : "c""#), "a");
        assert_eq!(num("0 ? 1 : 0 ? 2 : 3"), 3.0); // right-associative
        assert_eq!(text(r#"1 + 1 == 2 ? "yes" : "no""#), "yes");
        assert!(matches("tags ? tags.length > 1 : true", &tags(None)));
        assert!(!matches("tags ? tags.length > 1 : true", &tags(Some("a"))));
    }

    #[test]
    fn string_literals() {
        assert!(truth(r#"'single' == "single""#));
        assert_eq!(text(r#""a\tb\n""#), "a\tb\n");
        assert_eq!(text(r#"'it\'s' + "\"q\"""#), "it's\"q\"");
        assert_eq!(text(r#""\x41\u0042\u{43}\\""#), "ABC\\");
        assert_eq!(text(r#""\uD83D\uDE00""#), "😀");
        assert_eq!(text(r#""\uD83D""#), "\u{FFFD}");
        assert_eq!(text(r#""a\qb""#), "aqb"); // identity escape
        assert_eq!(text("\"a\\\nb\""), "ab"); // line continuation
        assert_eq!(text(r#""中文""#), "中文");
        assert_eq!(num("/* c */ 1 // trailing"), 1.0);
        assert_eq!(num("1;"), 1.0);
    }

    #[test]
    fn string_methods() {
        assert_eq!(num(r#""hello".length"#), 5.0);
        assert_eq!(num(r#""é😀".length"#), 3.0); // UTF-16 code units
        assert_eq!(num(r#""abcabc".indexOf("c")"#), 2.0);
        assert_eq!(num(r#""abcabc".indexOf("c", 3)"#), 5.0);
        assert_eq!(num(r#""abc".indexOf("")"#), 0.0);
        assert_eq!(num(r#""abc".indexOf("", 10)"#), 3.0);
        assert_eq!(num(r#""abc".indexOf("x")"#), -1.0);
        assert_eq!(num(r#""😀a".indexOf("a")"#), 2.0);
        assert_eq!(num(r#""abcabc".lastIndexOf("b")"#), 4.0);
        assert_eq!(num(r#""abcabc".lastIndexOf("b", 3)"#), 1.0);
        assert_eq!(num(r#""abcabc".lastIndexOf("b", -5)"#), -1.0);
        assert_eq!(num(r#""abc".lastIndexOf("")"#), 3.0);
        assert!(truth(r#""a,vip,b".includes("vip")"#));
        assert!(!truth(r#""a,vip,b".includes("vip", 3)"#));
        assert!(truth(r#""android 9".startsWith("android")"#));
        assert!(truth(r#""android 9".startsWith("9", 8)"#));
        assert!(!truth(r#""android 9".startsWith("ios")"#));
        assert!(truth(r#""v1.2.3".endsWith(".3")"#));
        assert!(truth(r#""v1.2.3".endsWith("1", 2)"#));
        assert_eq!(text(r#""MiXed".toLowerCase()"#), "mixed");
        assert_eq!(text(r#""MiXed".toUpperCase()"#), "MIXED");
        assert_eq!(text(r#""straße".toUpperCase()"#), "STRASSE");
        assert_eq!(text(r#""ÉCOLE".toLowerCase()"#), "école");
        assert_eq!(text("\"\\u00a0 \\t x y \\n\\uFEFF\".trim()"), "x y");
        assert_eq!(text(r#""hello".substring(1, 3)"#), "el");
        assert_eq!(text(r#""hello".substring(3, 1)"#), "el"); // swapped
        assert_eq!(text(r#""hello".substring(-2, 2)"#), "he");
        assert_eq!(text(r#""hello".substring(2)"#), "llo");
        assert_eq!(text(r#""hello".substring(NaN, 99)"#), "hello");
        assert_eq!(text(r#""héllo".substring(1, 3)"#), "él");
        assert_eq!(text(r#""hello".charAt(1)"#), "e");
        assert_eq!(text(r#""hello".charAt()"#), "h");
        assert_eq!(text(r#""hello".charAt(9)"#), "");
        assert_eq!(text(r#""a😀".charAt(1)"#), "\u{FFFD}"); // half a surrogate pair
        assert_eq!(
            text(r#""  Android ".trim().toLowerCase().substring(0, 3)"#),
            "and"
        );
        assert_eq!(
            eval_with(
                "osVersion.length",
                &SessionVars {
                    os_version: Some("10.0"),
                    ..SessionVars::default()
                }
            ),
            Value::Number(4.0)
        );
        assert_eq!(js("(1).length"), Value::Undefined); // numbers have no length, no error
    }

    #[test]
    fn replace_first_only_global_and_flags() {
        assert_eq!(text(r#""a-b-c".replace("-", "+")"#), "a+b-c"); // string pattern: first only
        assert_eq!(text(r#""a-b-c".replace(/-/, "+")"#), "a+b-c");
        assert_eq!(text(r#""a-b-c".replace(/-/g, "+")"#), "a+b+c");
        assert_eq!(text(r#""AbA".replace(/a/gi, "x")"#), "xbx");
        assert_eq!(text(r#""AbA".replace(/a/g, "x")"#), "AbA");
        assert_eq!(text(r#""abc".replace("x", "y")"#), "abc");
        assert_eq!(text(r#""abc".replace("", "^")"#), "^abc");
        assert_eq!(text(r#""abc".replace(/x*/g, "-")"#), "-a-b-c-");
        assert_eq!(text(r#""v1.2.3".replace(/[^\d]/g, "")"#), "123");
        assert_eq!(text(r#""a.b".replace(".", "")"#), "ab"); // a string pattern is literal
        assert_eq!(text(r#""a1b".replace(/\d/, 7)"#), "a7b"); // replacement through ToString
        assert_eq!(text(r#""ab".replace(/b/)"#), "aundefined");
        // JS replacement patterns.
        assert_eq!(text(r#""abc".replace("b", "[$&]")"#), "a[b]c");
        assert_eq!(text(r#""abc".replace("b", "$`")"#), "aac");
        assert_eq!(text(r#""abc".replace("b", "$'")"#), "acc");
        assert_eq!(text(r#""abc".replace("b", "$$")"#), "a$c");
        assert_eq!(text(r#""abc".replace("b", "$1")"#), "a$1c"); // no groups with a string
        assert_eq!(text(r#""abc".replace(/(b)/, "$1$1")"#), "abbc");
        assert_eq!(text(r#""abc".replace(/(b)/, "$2")"#), "a$2c");
        assert_eq!(
            text(r#""john smith".replace(/(\w+)\s(\w+)/, "$2 $1")"#),
            "smith john"
        );
        assert_eq!(
            text(r#""2024-05".replace(/(?<y>\d+)-(?<m>\d+)/, "$<m>/$<y>")"#),
            "05/2024"
        );
        assert_eq!(text(r#""a$b".replace("$", "$")"#), "a$b");
        assert_eq!(text(r#""x😀y".replace(/./g, "-")"#), "---"); // code points, not UTF-16 units
        assert!(!matches(r#"tags.replace("a", "b") == "b""#, &tags(None)));
        assert!(matches(
            r#"tags.replace("a", "b") == "b""#,
            &tags(Some("a"))
        ));
    }

    #[test]
    fn regex_test_and_translation() {
        let v = version(Some("Android-8.1"));
        assert!(matches(r"/^android/i.test(clientVersion)", &v));
        assert!(!matches(r"/^android/.test(clientVersion)", &v));
        assert!(matches(
            r"/\d+\.\d+/.test(clientVersion) && /android/i.test(clientVersion)",
            &v
        ));
        assert!(!matches(r"/^ios/i.test(clientVersion)", &version(None))); // "null"
        assert!(truth(r#"/\bfoo\b/.test("a foo b")"#));
        assert!(!truth(r#"/\bfoo\b/.test("afoob")"#));
        assert!(!truth(r#"/a.c/.test("a\nc")"#));
        assert!(!truth(r#"/a.c/.test("a\rc")"#)); // JS '.' also skips \r
        assert!(truth(r#"/a.c/s.test("a\nc")"#));
        assert!(truth(r#"/^b$/m.test("a\nb\nc")"#));
        assert!(!truth(r#"/^b$/.test("a\nb\nc")"#));
        assert!(!truth(r#"/[]/.test("a")"#));
        assert!(truth(r#"/[^]/.test("\n")"#));
        assert!(truth(r#"/a{2}/.test("caab")"#));
        assert!(truth(r#"/a{,2}/.test("a{,2}")"#)); // not a quantifier: literal braces
        assert!(truth(r#"/[/]/.test("/") && /\//.test("/")"#));
        assert!(truth(r#"/\s/.test("\u00a0") && /\s/.test("\uFEFF")"#));
        assert!(!truth(r#"/\d/.test("٣")"#)); // JS \d is ASCII only
        assert!(!truth(r#"/\w/.test("é")"#));
        assert!(truth(r#"/[\d-z]/.test("-")"#)); // literal '-' next to a class escape
        assert!(truth(r#"/[a-c#&~]+$/.test("b#&~")"#));
        assert!(truth(r#"/a+?b*?c??/.test("abc")"#));
        assert!(truth(r#"/(?:ab)+|\x41\u0042/.test("AB")"#));
        assert!(truth(r#"/<a>/.test("<a>")"#));
        assert!(truth(r#"/[\b]/.test("\b")"#));
        assert!(truth(r#"/\cJ/.test("\n")"#));
        assert!(truth(r#"/\uD83D\uDE00/.test("😀")"#));
        assert!(truth(r#"/x/g.test("x") && /x/g.test("x")"#)); // stateless, unlike a reused RegExp
    }

    #[test]
    fn global_functions() {
        assert_eq!(num(r#"parseInt("42px")"#), 42.0);
        assert_eq!(num(r#"parseInt("  -12")"#), -12.0);
        assert_eq!(num(r#"parseInt("0x1F")"#), 31.0);
        assert_eq!(num(r#"parseInt("0x1F", 16)"#), 31.0);
        assert_eq!(num(r#"parseInt("0x1F", 10)"#), 0.0);
        assert_eq!(num(r#"parseInt("1010", 2)"#), 10.0);
        assert_eq!(num(r#"parseInt("z", 36)"#), 35.0);
        assert_eq!(num(r#"parseInt("3.9")"#), 3.0);
        assert_eq!(num("parseInt(1e21)"), 1.0); // via "1e+21"
        assert!(num(r#"parseInt("abc")"#).is_nan());
        assert!(num(r#"parseInt("12", 1)"#).is_nan());
        assert!(num("parseInt(null)").is_nan());
        assert_eq!(num(r#"parseFloat("2.5abc")"#), 2.5);
        assert_eq!(num(r#"parseFloat(" .5")"#), 0.5);
        assert_eq!(num(r#"parseFloat("1e3x")"#), 1000.0);
        assert_eq!(num(r#"parseFloat("-Infinityx")"#), f64::NEG_INFINITY);
        assert!(num(r#"parseFloat("e5")"#).is_nan());
        assert_eq!(num(r#"Number("12")"#), 12.0);
        assert_eq!(num(r#"Number("  1e3 ")"#), 1000.0);
        assert_eq!(num(r#"Number("0x10")"#), 16.0);
        assert_eq!(num(r#"Number("")"#), 0.0);
        assert_eq!(num("Number(null)"), 0.0);
        assert_eq!(num("Number()"), 0.0);
        assert_eq!(num("Number(true)"), 1.0);
        assert_eq!(num(r#"Number("-Infinity")"#), f64::NEG_INFINITY);
        for bad in ["12px", "infinity", "1_000", "0x", "--1", "-0x10", "1e", "."] {
            assert!(num(&format!("Number({bad:?})")).is_nan(), "{bad}");
        }
        assert!(num("Number(undefined)").is_nan());
        assert_eq!(text("String(1.5)"), "1.5");
        assert_eq!(text("String(null)"), "null");
        assert_eq!(text("String()"), "");
        assert_eq!(text("String(tags)"), "null");
        assert!(matches(
            r#"parseInt(clientVersion.substring(clientVersion.indexOf(" ") + 1)) >= 8"#,
            &version(Some("android 8.1"))
        ));
    }

    #[test]
    fn result_must_be_boolean_true() {
        let v = SessionVars {
            tags: Some("x"),
            ..SessionVars::default()
        };
        assert!(matches("true", &v));
        assert!(!matches("false", &v));
        assert!(!matches("1", &v)); // truthy but not a boolean
        assert!(!matches(r#""true""#, &v));
        assert!(!matches("tags", &v));
        assert!(!matches("tags || true", &v)); // "x", not a boolean
        assert!(matches("tags && true || 1", &v)); // ("x" && true) is true
        assert!(matches("!!tags", &v));
    }

    #[test]
    fn evaluation_errors_are_no_match() {
        let none = SessionVars::default();
        let cases = [
            (
                r#"tags.indexOf("x") != -1"#,
                EvalError::NullProperty {
                    property: "indexOf",
                    base: "null",
                },
            ),
            (
                "osName.length > 0",
                EvalError::NullProperty {
                    property: "length",
                    base: "null",
                },
            ),
            (
                "undefined.length",
                EvalError::NullProperty {
                    property: "length",
                    base: "undefined",
                },
            ),
            (
                r#"(1).indexOf("x")"#,
                EvalError::NotAFunction {
                    method: "indexOf",
                    base: "number",
                },
            ),
            (
                "true.trim()",
                EvalError::NotAFunction {
                    method: "trim",
                    base: "boolean",
                },
            ),
            // An error is not absorbed by a later `|| true` (JS throws before reaching it).
            (
                "tags.trim() == '' || true",
                EvalError::NullProperty {
                    property: "trim",
                    base: "null",
                },
            ),
            (
                "!tags.trim()",
                EvalError::NullProperty {
                    property: "trim",
                    base: "null",
                },
            ),
            // Extra arguments are evaluated, as in JS.
            (
                "'a'.trim(tags.length) == 'a'",
                EvalError::NullProperty {
                    property: "length",
                    base: "null",
                },
            ),
        ];
        for (src, want) in cases {
            let c = Condition::compile(src).unwrap();
            assert_eq!(c.eval(&none), Err(want), "{src}");
            assert!(!c.matches(&none), "{src}");
        }
        assert_eq!(
            EvalError::NullProperty {
                property: "indexOf",
                base: "null"
            }
            .to_string(),
            "TypeError: cannot read property 'indexOf' of null"
        );
    }

    #[test]
    fn compile_errors_with_positions() {
        let cases = [
            ("(userId == \"1\"", 14, "expected ')'"),
            ("userId % 100 <", 14, "unexpected end of input"),
            ("1 +* 2", 3, "unexpected '*'"),
            ("userId == 1 2", 12, "unexpected number"),
            ("foo == 1", 0, "unknown identifier 'foo'"),
            (
                "tags != null && userid == 1",
                16,
                "unknown identifier 'userid'",
            ),
            ("userId = \"1\"", 7, "assignment is not supported"),
            ("tags & 1", 5, "did you mean '&&'"),
            (
                "tags.split(\",\")",
                5,
                "unsupported property or method 'split'",
            ),
            ("tags.match(/a/)", 5, "use /re/.test(s)"),
            ("tags.indexOf", 12, "expected '(' after 'indexOf'"),
            ("tags.", 5, "expected a property name"),
            ("\"abc", 0, "unterminated string literal"),
            ("'a\nb'", 0, "unterminated string literal"),
            ("017 == 15", 0, "legacy octal"),
            (
                "3in",
                1,
                "identifier starts immediately after numeric literal",
            ),
            ("\"\\1\"", 1, "octal escape"),
            ("Number == 1", 0, "'Number' can only be called"),
            ("tags?.length", 4, "optional chaining"),
            ("userId++", 6, "'++' is not supported"),
            ("x => 1", 2, "arrow functions are not supported"),
            ("`a`", 0, "template literals"),
            ("/* open", 0, "unterminated comment"),
            ("", 0, "empty condition"),
            ("   ", 3, "empty condition"),
            ("tags ? 1", 8, "expected ':'"),
            ("userId.length()", 13, "unexpected '('"),
            ("/a/", 0, "regex literal can only be used in"),
            ("/a/.exec(tags)", 0, "regex literal can only be used"),
            (
                "/a(?=b)/.test(tags)",
                2,
                "lookahead assertions are not supported",
            ),
            (
                "/(?<!a)b/.test(tags)",
                1,
                "lookbehind assertions are not supported",
            ),
            ("/(a)\\1/.test(tags)", 4, "backreferences"),
            ("/a/u.test(tags)", 3, "unsupported regex flag 'u'"),
            ("/a/gg.test(tags)", 4, "duplicate regex flag 'g'"),
            ("/a**/.test(tags)", 3, "nothing to repeat"),
            ("/*a/.test(tags)", 0, "unterminated comment"),
            ("/(*a)/.test(tags)", 2, "nothing to repeat"),
            ("/[z-a]/.test(tags)", 3, "range out of order"),
            ("/[ab/.test(tags)", 0, "unterminated regex literal"),
            ("/(a/.test(tags)", 0, "invalid regex"),
            ("tags.replace(/a/u, '')", 16, "unsupported regex flag"),
        ];
        for (src, pos, msg) in cases {
            let e = err(src);
            assert!(
                e.position == pos && e.message.contains(msg),
                "{src:?}: got {e}, want at {pos}: ..{msg}.."
            );
        }
        assert_eq!(err("(userId == \"1\"").to_string(), "at 14: expected ')'");
        let e = err("osname == 'android'");
        assert!(
            e.to_string()
                .contains("unknown identifier 'osname' (variables: userId, tags")
        );
    }

    #[test]
    fn limits() {
        let ok = format!("{}true", " ".repeat(MAX_SOURCE_LEN - 4));
        assert!(Condition::compile(&ok).is_ok());
        let long = format!("{}true", " ".repeat(MAX_SOURCE_LEN - 3));
        let e = err(&long);
        assert!(e.message.contains("limit is 4096"), "{e}");

        let nest = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert!(Condition::compile(&nest(MAX_DEPTH)).is_ok());
        assert!(
            err(&nest(MAX_DEPTH + 1))
                .message
                .contains("nested deeper than 64")
        );
        assert!(Condition::compile(&format!("{}true", "!".repeat(MAX_DEPTH))).is_ok());
        assert!(
            err(&format!("{}true", "!".repeat(MAX_DEPTH + 1)))
                .message
                .contains("nested")
        );
        let ternaries = format!("{}0", "1 ? 1 : ".repeat(MAX_DEPTH + 1));
        assert!(err(&ternaries).message.contains("nested"));

        // Long flat chains are fine (they neither nest nor recurse) up to the node limit.
        let users: Vec<String> = (0..100).map(|i| format!("userId=='{i}'")).collect();
        let c = Condition::compile(&users.join("||")).unwrap();
        assert!(c.matches(&user(Some("99"))));
        assert!(!c.matches(&user(Some("100"))));
        let e = err(&format!("{}true", "userId=='x'||".repeat(200)));
        assert!(e.message.contains("more than 512 syntax nodes"), "{e}");
        // `+` and method chains deepen the tree one level per operator.
        assert!(Condition::compile(&format!("{}1", "1+".repeat(MAX_DEPTH))).is_ok());
        let e = err(&format!("{}1", "1+".repeat(MAX_DEPTH + 1)));
        assert!(e.message.contains("nested deeper than 64"), "{e}");
        assert!(Condition::compile(&format!("tags{}", ".trim()".repeat(MAX_DEPTH))).is_ok());
        let e = err(&format!("tags{}", ".trim()".repeat(MAX_DEPTH + 1)));
        assert!(e.message.contains("nested deeper than 64"), "{e}");

        let e = err(r"/(.{100}){100}/.test(tags)");
        assert!(e.message.contains("too large"), "{e}");
    }

    #[test]
    fn worst_case_recursion_fits_a_small_stack() {
        // Deepest compile (nesting at the limit through every precedence level) and deepest
        // evaluation (a method chain at the depth limit) on a 512 KiB thread: enough for a
        // debug build (release needs under 128 KiB); tokio workers get 2 MiB.
        let run = || {
            let nested = format!(
                "{}tags{}",
                "!(".repeat(MAX_DEPTH / 2),
                ")".repeat(MAX_DEPTH / 2)
            );
            let c = Condition::compile(&nested).unwrap();
            assert_eq!(c.eval(&tags(None)), Ok(Value::Bool(false))); // 32 negations of null
            let chain = format!("tags{} == 'x'", ".trim()".repeat(MAX_DEPTH - 1));
            let c = Condition::compile(&chain).unwrap();
            assert!(c.matches(&tags(Some(" x "))));
        };
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn condition_is_shareable_and_keeps_source() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Condition>();
        let c = Condition::compile(EX_TAGS).unwrap();
        assert_eq!(c.source(), EX_TAGS);
        assert!(c.clone().matches(&tags(Some("test"))));
    }

    #[test]
    fn value_conversions() {
        assert_eq!(Value::Number(2.5).to_string(), "2.5");
        assert_eq!(Value::Null.to_string(), "null");
        assert_eq!(Value::Undefined.to_string(), "undefined");
        assert_eq!(Value::Bool(true).to_string(), "true");
        assert!(!Value::Number(f64::NAN).truthy());
        assert!(Value::Str(" ".into()).truthy());
        assert_eq!(Value::Str("0b11".into()).to_number(), 3.0);
    }

    /// Conditions exercising every construct, for the never-panic property below.
    const CORPUS: &[&str] = &[
        EX_USER,
        EX_TAGS,
        EX_VERSION,
        "userId.substring(userId.length - 2, 99).charAt(1) + tags > osName",
        "tags.lastIndexOf(osName, userId) + tags.indexOf(clientVersion, -userId)",
        "clientVersion.replace(/(\\d+)\\.(?<m>\\d*)/g, \"$2$<m>$&$`$'$$\").length % 7",
        "osVersion.replace(userId, tags).toUpperCase().trim().toLowerCase()",
        "parseInt(userId, osVersion) + parseFloat(tags) * Number(clientVersion) + String(osName)",
        concat!(
            "/^[a-z]+\\s*\\d{1,3}$/i.test(clientVersion) ? userId.startsWith(tags, 1)",
            " : osName.endsWith(osVersion, 3)"
        ),
        "typeof userId == 'string' && userId.includes(tags) || userId === tags || userId == 0",
        "userId < tags || userId >= osName || -userId <= +tags || userId / tags > userId - tags",
    ];

    proptest! {
        #[test]
        fn compile_never_panics_on_random_text(src in "\\PC{0,200}") {
            let _ = Condition::compile(&src);
        }

        #[test]
        fn compile_and_eval_never_panic_on_token_soup(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("userId"), Just("tags"), Just("clientVersion"), Just("osName"),
                    Just("osVersion"), Just("("), Just(")"), Just("."), Just(","), Just("?"),
                    Just(":"), Just("!"), Just("+"), Just("-"), Just("*"), Just("/"), Just("%"),
                    Just("<"), Just("<="), Just("=="), Just("!=="), Just("&&"), Just("||"),
                    Just("1"), Just(".5"), Just("'a'"), Just("\"\\u00e9\""), Just("null"),
                    Just("undefined"), Just("length"), Just("indexOf("), Just("replace("),
                    Just("substring("), Just("charAt("), Just("/a[^b]*/g"), Just("/\\d+/i.test("),
                    Just("parseInt("), Just("Number("), Just("String("), Just("typeof"), Just(" "),
                ],
                0..40,
            ),
            id in proptest::option::of("\\PC{0,12}"),
        ) {
            if let Ok(c) = Condition::compile(&parts.concat()) {
                let vars = SessionVars {
                    user_id: id.as_deref(),
                    tags: id.as_deref(),
                    ..SessionVars::default()
                };
                let _ = c.matches(&vars);
            }
        }

        #[test]
        fn eval_never_panics_on_random_sessions(
            user_id in proptest::option::of("\\PC{0,16}"),
            tags in proptest::option::of("[a-z,0-9 ]{0,16}|\\PC{0,16}"),
            client_version in proptest::option::of("(android|ios)? ?[0-9.]{0,8}|\\PC{0,16}"),
            os_name in proptest::option::of("\\PC{0,8}"),
            os_version in proptest::option::of("-?[0-9]{0,3}|\\PC{0,8}"),
        ) {
            let vars = SessionVars {
                user_id: user_id.as_deref(),
                tags: tags.as_deref(),
                client_version: client_version.as_deref(),
                os_name: os_name.as_deref(),
                os_version: os_version.as_deref(),
            };
            for src in CORPUS {
                let c = Condition::compile(src).unwrap();
                let result = c.eval(&vars);
                prop_assert_eq!(c.matches(&vars), matches!(result, Ok(Value::Bool(true))));
            }
        }
    }
}
