//! Unit and property tests of the condition language: documented examples, JS semantics, limits.

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
