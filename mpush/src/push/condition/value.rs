//! JavaScript primitive values and the ECMA-262 number conversions they need.

use std::borrow::Cow;
use std::fmt;

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
// ---------------------------------------------------------------------------------------------
// Number conversions (ECMA-262 ToNumber, parseInt, parseFloat, Number::toString)
// ---------------------------------------------------------------------------------------------

/// JS WhiteSpace and LineTerminator (what `trim` and `ToNumber` strip). Not Rust's
/// `char::is_whitespace`: JS includes U+FEFF and excludes U+0085.
pub(super) fn is_js_space(c: char) -> bool {
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
pub(super) fn decimal_prefix_len(b: &[u8]) -> usize {
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
pub(super) fn parse_decimal(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

/// Digits in `radix` (2..=36), all of them valid and at least one; f64 accumulation.
pub(super) fn parse_radix_digits(s: &str, radix: u32) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.chars().try_fold(0.0, |acc, c| {
        c.to_digit(radix)
            .map(|d| acc * f64::from(radix) + f64::from(d))
    })
}

/// JS StringToNumber: whitespace-trimmed decimal, `Infinity` or 0x/0o/0b literal; "" is 0.
pub(super) fn string_to_number(s: &str) -> f64 {
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
pub(super) fn parse_float(s: &str) -> f64 {
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
pub(super) fn parse_int(s: &str, radix: i32) -> f64 {
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
pub(super) fn to_int32(n: f64) -> i32 {
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
