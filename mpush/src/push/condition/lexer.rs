//! Tokenizer of condition sources: punctuators, identifiers, numbers, strings, regex literals.

use super::ConditionError;
use super::ast::Cmp;
use super::value::{decimal_prefix_len, is_js_space, parse_decimal, parse_radix_digits};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum P {
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
    Cmp(Cmp),
    AndAnd,
    OrOr,
}

impl P {
    pub(super) fn text(self) -> &'static str {
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
            P::Cmp(Cmp::Lt) => "<",
            P::Cmp(Cmp::Le) => "<=",
            P::Cmp(Cmp::Gt) => ">",
            P::Cmp(Cmp::Ge) => ">=",
            P::Cmp(Cmp::Eq) => "==",
            P::Cmp(Cmp::Ne) => "!=",
            P::Cmp(Cmp::StrictEq) => "===",
            P::Cmp(Cmp::StrictNe) => "!==",
            P::AndAnd => "&&",
            P::OrOr => "||",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok<'s> {
    Num(f64),
    Str(String),
    Regex { body: &'s str, flags: &'s str },
    Ident(&'s str),
    P(P),
    Eof,
}

impl Tok<'_> {
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Token<'s> {
    pub(super) tok: Tok<'s>,
    pub(super) pos: usize,
}

pub(super) struct Lexer<'s> {
    pub(super) src: &'s str,
    pub(super) i: usize,
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
    pub(super) fn peek(&self, k: usize) -> Option<char> {
        self.src.get(self.i..)?.chars().nth(k)
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += c.len_utf8();
        Some(c)
    }

    pub(super) fn tokenize(mut self) -> Result<Vec<Token<'s>>, ConditionError> {
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
            '!' if rest.starts_with("!==") => (P::Cmp(Cmp::StrictNe), 3),
            '!' if rest.starts_with("!=") => (P::Cmp(Cmp::Ne), 2),
            '!' => (P::Not, 1),
            '=' if rest.starts_with("===") => (P::Cmp(Cmp::StrictEq), 3),
            '=' if rest.starts_with("==") => (P::Cmp(Cmp::Eq), 2),
            '=' if rest.starts_with("=>") => {
                return unsupported("arrow functions are not supported");
            }
            '=' => return unsupported("assignment is not supported (did you mean '=='?)"),
            '<' if rest.starts_with("<<") => {
                return unsupported("shift operators are not supported");
            }
            '<' if rest.starts_with("<=") => (P::Cmp(Cmp::Le), 2),
            '<' => (P::Cmp(Cmp::Lt), 1),
            '>' if rest.starts_with(">>") => {
                return unsupported("shift operators are not supported");
            }
            '>' if rest.starts_with(">=") => (P::Cmp(Cmp::Ge), 2),
            '>' => (P::Cmp(Cmp::Gt), 1),
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

    pub(super) fn string(&mut self, quote: char) -> Result<String, ConditionError> {
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

    pub(super) fn number(&mut self) -> Result<f64, ConditionError> {
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

    pub(super) fn regex(&mut self) -> Result<Tok<'s>, ConditionError> {
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
