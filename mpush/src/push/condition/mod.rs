//! Broadcast condition expressions (spec §9.5): a small, sandboxed evaluator for the subset of
//! JavaScript that MPush conditions are written in.
//!
//! # Why not a JS engine, and why not CEL
//! The Java server evaluated `condition` with Nashorn, which no longer ships with modern JDKs, so
//! there every condition silently evaluates to `false` (quirk Q17). CEL (`cel` crate, see
//! CRATES-AND-STYLE §3.3) would make operators rewrite their conditions (`indexOf`, regex
//! literals, `%` on string ids do not exist there). An embedded, sandboxed QuickJS (`rquickjs`)
//! was measured against this evaluator (`condition-bench/`, numbers in docs/CONDITIONS.md): it
//! costs 1.7 to 4 times more per evaluation (0.46 to 1.9 µs against 0.12 to 1.1 µs), i.e. 3 to
//! 7 % of broadcast throughput, plus ~0.5 ms of runtime setup per broadcast and a thread-bound
//! runtime in an async fan-out. So this module implements just the expression
//! subset that Java-era conditions use, with JavaScript semantics, compiled once per broadcast
//! and evaluated per session without a context to build, under a hard budget.
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
//! At compile time: sources over [`MAX_SOURCE_LEN`] bytes, nesting deeper than [`MAX_DEPTH`]
//! and more than [`MAX_NODES`] syntax-tree nodes are compile errors; each regex is limited to
//! 1 MiB compiled. The grammar has no loops, so recursion is bounded by the depth limit (a chain
//! like `a+b+c+...` counts one level per operator, while `&&`/`||` chains such as
//! `userId=='1'||userId=='2'||...` are flat).
//!
//! At evaluation time strings can still grow geometrically (`replace(/./g,'$&$&')` doubles),
//! so every evaluation runs under a hard budget (module `budget`): strings it produces are
//! capped at [`MAX_STRING_LEN`] bytes before they are allocated, and its work at
//! [`MAX_EVAL_STEPS`]. Exceeding either is [`EvalError::Budget`], which
//! [`Condition::try_matches`] reports as an error rather than "no match", and which a
//! [`BroadcastCondition`] turns into an error for the broadcast's sender.

mod ast;
mod budget;
mod eval;
mod js_regex;
mod lexer;
mod parser;
mod value;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use ast::Node;
use budget::Budget;
pub use budget::{
    BROADCAST_STEPS_BURST, BROADCAST_STEPS_PER_SESSION, BroadcastCondition, BudgetExceeded,
    MAX_EVAL_STEPS, MAX_STRING_LEN, STEPS_PER_REGEX_MATCH,
};
pub use value::Value;

/// Longest accepted condition source, in bytes.
pub const MAX_SOURCE_LEN: usize = 4096;
/// Deepest accepted nesting: of parentheses, unary operators, ternaries and call arguments in
/// the source, and of the syntax tree (where each binary operator or method call in a chain
/// adds a level; `&&` and `||` chains are flat).
pub const MAX_DEPTH: usize = 64;
/// Largest accepted number of syntax-tree nodes in one condition.
pub const MAX_NODES: usize = 512;

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
    pub(super) fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

/// An evaluation error: a JavaScript `TypeError`, which [`Condition::matches`] turns into "no
/// match" as the Java server did, or an exceeded budget. It holds only static text so that the
/// error path, which can be common (e.g. `tags.indexOf(..)` with no tags), does not allocate.
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
    /// The evaluation was stopped because it exceeded its budget (see [`BudgetExceeded`]).
    #[error("condition exceeded its budget: {0}")]
    Budget(#[from] BudgetExceeded),
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
        let root = parser::parse(src)?;
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
    /// non-boolean result or an evaluation error is `false`, as in the Java server; so is an
    /// exceeded budget (use [`Condition::try_matches`] or a [`BroadcastCondition`] to see it).
    pub fn matches(&self, vars: &SessionVars<'_>) -> bool {
        matches!(self.eval(vars), Ok(Value::Bool(true)))
    }

    /// As [`Condition::matches`], but an exceeded budget is an error, not "no match".
    pub fn try_matches(&self, vars: &SessionVars<'_>) -> Result<bool, BudgetExceeded> {
        match self.eval(vars) {
            Ok(v) => Ok(v == Value::Bool(true)),
            Err(EvalError::Budget(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// Evaluates against a session under a fresh budget and returns the JS value (or the
    /// `TypeError`, or the exceeded budget).
    pub fn eval<'a>(&'a self, vars: &SessionVars<'a>) -> Result<Value<'a>, EvalError> {
        self.eval_in(vars, &mut Budget::new())
    }

    fn eval_in<'a>(
        &'a self,
        vars: &SessionVars<'a>,
        budget: &mut Budget,
    ) -> Result<Value<'a>, EvalError> {
        eval::eval(&self.root, vars, budget)
    }
}
