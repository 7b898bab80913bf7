//! Recursive-descent parser from tokens to the syntax tree, enforcing the compile-time limits.

use super::ast::{BinOp, Cmp, Const, Func, Method, Node, UnOp, Var};
use super::js_regex::compile_regex;
use super::lexer::{Lexer, P, Tok, Token};
use super::{ConditionError, MAX_DEPTH, MAX_NODES, MAX_SOURCE_LEN};

const VARIABLES: &str = "userId, tags, clientVersion, osName, osVersion";

pub(super) fn parse(src: &str) -> Result<Node, ConditionError> {
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
    pub(super) fn peek(&self) -> &Tok<'s> {
        self.peek_at(0)
    }

    fn peek_at(&self, k: usize) -> &Tok<'s> {
        self.toks.get(self.i + k).map_or(&EOF, |t| &t.tok)
    }

    pub(super) fn pos(&self) -> usize {
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
    pub(super) fn node(&mut self, n: Node) -> Result<Node, ConditionError> {
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
    pub(super) fn nested<T>(
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
        self.logical_chain(P::OrOr, Self::parse_and, Node::Or)
    }

    fn parse_and(&mut self) -> Result<Node, ConditionError> {
        self.logical_chain(P::AndAnd, Self::parse_equality, Node::And)
    }

    /// `a op b op c ...` as one n-ary node (`&&`, `||` short-circuit over a flat list), or the
    /// lone operand when `op` does not follow it.
    fn logical_chain(
        &mut self,
        op: P,
        operand: fn(&mut Self) -> Result<Node, ConditionError>,
        node: fn(Vec<Node>) -> Node,
    ) -> Result<Node, ConditionError> {
        let first = operand(self)?;
        if self.peek() != &Tok::P(op) {
            return Ok(first);
        }
        let mut xs = vec![first];
        while self.eat(op) {
            xs.push(operand(self)?);
        }
        self.node(node(xs))
    }

    /// The binary levels below `&&`, from equality (the loosest) down.
    fn parse_equality(&mut self) -> Result<Node, ConditionError> {
        self.binary_level(0)
    }

    /// One left-associative binary precedence level (a loop, so long chains do not recurse):
    /// its operands are the next tighter level, or unary expressions below the tightest.
    fn binary_level(&mut self, level: u8) -> Result<Node, ConditionError> {
        let operand = |p: &mut Self| {
            if level == TIGHTEST_BINARY {
                p.parse_unary()
            } else {
                p.binary_level(level + 1)
            }
        };
        let mut left = operand(self)?;
        loop {
            let op = match self.peek() {
                Tok::P(p) => match binary_op(*p) {
                    Some((op, l)) if l == level => op,
                    _ => return Ok(left),
                },
                _ => return Ok(left),
            };
            self.bump();
            let right = operand(self)?;
            left = self.node(Node::Binary(op, Box::new(left), Box::new(right)))?;
        }
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

/// The precedence level of `*`, `/` and `%`, the tightest binary operators.
const TIGHTEST_BINARY: u8 = 3;

/// The binary operator a punctuator stands for, with its precedence level: 0 equality,
/// 1 relational, 2 additive, [`TIGHTEST_BINARY`] multiplicative (JavaScript's order).
fn binary_op(p: P) -> Option<(BinOp, u8)> {
    Some(match p {
        P::Cmp(c @ (Cmp::Eq | Cmp::Ne | Cmp::StrictEq | Cmp::StrictNe)) => (BinOp::Cmp(c), 0),
        P::Cmp(c @ (Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge)) => (BinOp::Cmp(c), 1),
        P::Plus => (BinOp::Add, 2),
        P::Minus => (BinOp::Sub, 2),
        P::Star => (BinOp::Mul, TIGHTEST_BINARY),
        P::Slash => (BinOp::Div, TIGHTEST_BINARY),
        P::Percent => (BinOp::Rem, TIGHTEST_BINARY),
        _ => return None,
    })
}
