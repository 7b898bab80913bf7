//! Syntax tree of a compiled condition.

use regex::Regex;

#[derive(Debug, Clone)]
pub(super) enum Node {
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
pub(super) enum Const {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    Str(Box<str>),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Var {
    UserId,
    Tags,
    ClientVersion,
    OsName,
    OsVersion,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum UnOp {
    Not,
    Neg,
    Plus,
    TypeOf,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Cmp(Cmp),
}

/// A comparison: both a punctuator (the lexer's `P::Cmp`) and a binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmp {
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
pub(super) enum Method {
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
    pub(super) fn from_name(name: &str) -> Option<Self> {
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

    pub(super) fn name(&self) -> &'static str {
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
    pub(super) fn arity(&self) -> usize {
        match self {
            Method::ToLowerCase | Method::ToUpperCase | Method::Trim => 0,
            Method::CharAt | Method::ReplaceRegex(_) => 1,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Func {
    ParseInt,
    ParseFloat,
    Number,
    String,
}

impl Func {
    pub(super) fn arity(self) -> usize {
        match self {
            Func::ParseInt => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct JsRegex {
    pub(super) re: Regex,
    pub(super) global: bool,
    /// JS expands `$<name>` only when the regex has named groups.
    pub(super) named_groups: bool,
}
