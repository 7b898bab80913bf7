//! Regex literals: JS syntax translated to the `regex` crate's (linear time, no backtracking).

use regex::RegexBuilder;

use super::ConditionError;
use super::ast::JsRegex;

/// Compiled-size limit of one regex literal (and of its lazy DFA cache).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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
pub(super) fn compile_regex(
    body: &str,
    flags: &str,
    pos: usize,
) -> Result<JsRegex, ConditionError> {
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
    pub(super) fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).map(|&(_, c)| c)
    }

    pub(super) fn next(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        Some(c)
    }

    /// Error at char index `at` of the pattern.
    pub(super) fn err(&self, at: usize, msg: impl Into<String>) -> ConditionError {
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

    pub(super) fn run(mut self) -> Result<String, ConditionError> {
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
    pub(super) fn escape(&mut self, at: usize) -> Result<bool, ConditionError> {
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

    pub(super) fn group(&mut self, at: usize) -> Result<(), ConditionError> {
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

    pub(super) fn class(&mut self, at: usize) -> Result<(), ConditionError> {
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
