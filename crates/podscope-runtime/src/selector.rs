//! Kubernetes label selectors in kubectl syntax: parse once, match many label sets.
//!
//! Grammar (comma = AND): `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//! `k` (exists), `!k` (does not exist), `k>N`, `k<N`. As in Kubernetes,
//! `!=` and `notin` also match when the key is absent.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A selector that did not parse: the input, where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {input:?} at column {}: {message}", .column + 1)]
pub struct SelectorError {
    /// The selector as given.
    pub input: String,
    /// 0-based character column of the problem.
    pub column: usize,
    /// What was wrong and what would be right.
    pub message: String,
}

/// A requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `k=v` or `k==v`.
    Eq,
    /// `k!=v`.
    NotEq,
    /// `k in (a,b)`.
    In,
    /// `k notin (a,b)`.
    NotIn,
    /// `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
    /// `k>N`.
    Gt,
    /// `k<N`.
    Lt,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Op,
    /// The values (one for `=`, `!=`, `>`, `<`; one or more for the set operators).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let in_set = |v: &String| self.values.iter().any(|x| x == v);
        match self.op {
            Op::Eq | Op::In => value.is_some_and(in_set),
            Op::NotEq | Op::NotIn => !value.is_some_and(in_set),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        match self.op {
            Op::Eq => write!(f, "{k}={}", self.values[0]),
            Op::NotEq => write!(f, "{k}!={}", self.values[0]),
            Op::Gt => write!(f, "{k}>{}", self.values[0]),
            Op::Lt => write!(f, "{k}<{}", self.values[0]),
            Op::In => write!(f, "{k} in ({})", self.values.join(",")),
            Op::NotIn => write!(f, "{k} notin ({})", self.values.join(",")),
            Op::Exists => write!(f, "{k}"),
            Op::DoesNotExist => write!(f, "!{k}"),
        }
    }
}

/// A parsed label selector: all requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses kubectl selector syntax.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser::new(input).parse()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order given.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Not,   // !
    NotEq, // !=
    Eq,    // = or ==
    Gt,    // >
    Lt,    // <
    Open,  // (
    Close, // )
    Comma, // ,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("{s:?}"),
            Tok::Not => "'!'".into(),
            Tok::NotEq => "'!='".into(),
            Tok::Eq => "'='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Lt => "'<'".into(),
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::End => "the end".into(),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    toks: Vec<(usize, Tok)>,
    i: usize,
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '>' | '<' | '(' | ')' | ',') || c.is_whitespace()
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        let chars: Vec<char> = input.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let start = i;
            let next = chars.get(i + 1).copied();
            let tok = match c {
                c if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                '!' if next == Some('=') => {
                    i += 2;
                    Tok::NotEq
                }
                '!' => {
                    i += 1;
                    Tok::Not
                }
                '=' if next == Some('=') => {
                    i += 2;
                    Tok::Eq
                }
                '=' => {
                    i += 1;
                    Tok::Eq
                }
                '>' => {
                    i += 1;
                    Tok::Gt
                }
                '<' => {
                    i += 1;
                    Tok::Lt
                }
                '(' => {
                    i += 1;
                    Tok::Open
                }
                ')' => {
                    i += 1;
                    Tok::Close
                }
                ',' => {
                    i += 1;
                    Tok::Comma
                }
                _ => {
                    while i < chars.len() && !is_special(chars[i]) {
                        i += 1;
                    }
                    Tok::Ident(chars[start..i].iter().collect())
                }
            };
            toks.push((start, tok));
        }
        toks.push((chars.len(), Tok::End));
        Parser { input, toks, i: 0 }
    }

    fn peek(&self) -> &(usize, Tok) {
        &self.toks[self.i]
    }

    fn next(&mut self) -> (usize, Tok) {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn err(&self, column: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            input: self.input.to_owned(),
            column,
            message: message.into(),
        }
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().1 == Tok::End {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                (_, Tok::Comma) => continue,
                (_, Tok::End) => break,
                (col, t) => {
                    return Err(self.err(
                        col,
                        format!(
                            "expected ',' or the end after a requirement, found {}",
                            t.describe()
                        ),
                    ))
                }
            }
        }
        Ok(Selector { requirements })
    }

    fn key(&mut self) -> Result<(usize, String), SelectorError> {
        match self.next() {
            (col, Tok::Ident(k)) => {
                validate_key(&k).map_err(|m| self.err(col, m))?;
                Ok((col, k))
            }
            (col, t) => Err(self.err(col, format!("expected a label key, found {}", t.describe()))),
        }
    }

    fn value(&mut self, after: &str) -> Result<String, SelectorError> {
        // `k=` (empty value) is valid: the value is simply absent before ',' or the end.
        match self.peek().clone() {
            (col, Tok::Ident(v)) => {
                self.next();
                validate_value(&v).map_err(|m| self.err(col, m))?;
                Ok(v)
            }
            (_, Tok::Comma | Tok::End | Tok::Close) => Ok(String::new()),
            (col, t) => Err(self.err(
                col,
                format!("expected a value after {after}, found {}", t.describe()),
            )),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek().1 == Tok::Not {
            self.next();
            let (_, key) = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
                values: Vec::new(),
            });
        }
        let (_, key) = self.key()?;
        let (col, tok) = self.peek().clone();
        let op = match tok {
            Tok::Comma | Tok::End => {
                return Ok(Requirement {
                    key,
                    op: Op::Exists,
                    values: Vec::new(),
                })
            }
            Tok::Eq => Op::Eq,
            Tok::NotEq => Op::NotEq,
            Tok::Gt => Op::Gt,
            Tok::Lt => Op::Lt,
            Tok::Ident(ref w) if w == "in" => Op::In,
            Tok::Ident(ref w) if w == "notin" => Op::NotIn,
            t => {
                return Err(self.err(
                    col,
                    format!(
                        "expected an operator (=, ==, !=, in, notin, >, <), ',' or the end after key {key:?}, found {}",
                        t.describe()
                    ),
                ))
            }
        };
        self.next();
        let values = match op {
            Op::In | Op::NotIn => self.value_set(&key)?,
            Op::Gt | Op::Lt => {
                let (vcol, _) = self.peek().clone();
                let v = self.value(&format!("{key:?} and the operator"))?;
                if v.parse::<i64>().is_err() {
                    return Err(self.err(
                        vcol,
                        format!("'>' and '<' need an integer value, found {v:?}"),
                    ));
                }
                vec![v]
            }
            _ => vec![self.value(&format!("{key:?} and the operator"))?],
        };
        Ok(Requirement { key, op, values })
    }

    fn value_set(&mut self, key: &str) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            (_, Tok::Open) => {}
            (col, t) => {
                return Err(self.err(
                    col,
                    format!(
                        "expected '(' to open the value set of {key:?}, found {}",
                        t.describe()
                    ),
                ))
            }
        }
        let mut values = Vec::new();
        loop {
            let (col, tok) = self.peek().clone();
            match tok {
                Tok::Ident(v) => {
                    self.next();
                    validate_value(&v).map_err(|m| self.err(col, m))?;
                    values.push(v);
                }
                Tok::Close if values.is_empty() => {
                    return Err(self.err(
                        col,
                        format!("the value set of {key:?} is empty: name at least one value"),
                    ))
                }
                // An empty value between commas (`(a,,b)` or `(a,)`) is the empty string.
                Tok::Comma | Tok::Close => values.push(String::new()),
                t => {
                    return Err(self.err(
                        col,
                        format!(
                            "expected a value in the set of {key:?}, found {}",
                            t.describe()
                        ),
                    ))
                }
            }
            match self.next() {
                (_, Tok::Comma) => continue,
                (_, Tok::Close) => break,
                (col, t) => {
                    return Err(self.err(
                        col,
                        format!(
                            "expected ',' or ')' in the value set of {key:?}, found {}",
                            t.describe()
                        ),
                    ))
                }
            }
        }
        Ok(values)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A label name or value: at most 63 characters, alphanumerics, `-`, `_`, `.`,
/// starting and ending with an alphanumeric.
fn validate_name(s: &str, what: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!("{what} {s:?} is longer than 63 characters"));
    }
    if let Some(c) = s.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "{what} {s:?} has {c:?}; only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    let first = s.chars().next();
    let last = s.chars().last();
    if !first.is_some_and(|c| c.is_ascii_alphanumeric())
        || !last.is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "{what} {s:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

fn validate_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(format!(
                    "label key prefix {prefix:?} must be 1 to 253 characters"
                ));
            }
            let ok = prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
            if !ok {
                return Err(format!(
                    "label key prefix {prefix:?} must be a DNS subdomain (lowercase letters, digits, '-', '.')"
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(format!("label key {key:?} has an empty name"));
    }
    validate_name(name, "label key name")
}

fn validate_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    validate_name(v, "label value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_form() {
        let s = sel("app=web, tier==front,env!=prod,zone in (a, b),team notin (x),ready,!canary,replicas>2,age<10");
        let ops: Vec<Op> = s.requirements().iter().map(|r| r.op).collect();
        assert_eq!(
            ops,
            vec![
                Op::Eq,
                Op::Eq,
                Op::NotEq,
                Op::In,
                Op::NotIn,
                Op::Exists,
                Op::DoesNotExist,
                Op::Gt,
                Op::Lt
            ]
        );
        assert_eq!(s.requirements()[3].values, vec!["a", "b"]);
        assert_eq!(
            s.to_string(),
            "app=web,tier=front,env!=prod,zone in (a,b),team notin (x),ready,!canary,replicas>2,age<10"
        );
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(sel("").matches(&labels(&[])));
        assert!(sel("   ").is_empty());
    }

    #[test]
    fn matching_semantics() {
        let l = labels(&[
            ("app", "web"),
            ("env", "dev"),
            ("replicas", "3"),
            ("example.com/team", "core"),
        ]);
        for (s, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app=api", false),
            ("app!=api", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (api,web)", true),
            ("app in (api)", false),
            ("missing in (x)", false),
            ("app notin (api)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("replicas>2", true),
            ("replicas>3", false),
            ("replicas<4", true),
            ("app>1", false),
            ("missing<1", false),
            ("example.com/team=core", true),
            ("app=web,env=dev", true),
            ("app=web,env=prod", false),
            ("missing=", false),
        ] {
            assert_eq!(sel(s).matches(&l), want, "{s}");
        }
        assert!(sel("k=").matches(&labels(&[("k", "")])));
        assert!(sel("k in (,a)").matches(&labels(&[("k", "")])));
    }

    #[test]
    fn errors_say_where_and_what() {
        for (s, col, needle) in [
            ("app in (a", 9, "expected ',' or ')'"),
            ("app in a", 7, "expected '('"),
            ("app in ()", 8, "empty"),
            ("app ~ web", 4, "expected an operator"),
            ("=web", 0, "expected a label key"),
            ("app=web,", 8, "expected a label key"),
            ("app=web env=dev", 8, "expected ',' or the end"),
            ("app=w@b", 4, "'@'"),
            ("-app=web", 0, "start and end"),
            ("Example.com/app=x", 0, "DNS subdomain"),
            ("replicas>two", 9, "integer"),
            ("a=b=c", 3, "expected ',' or the end"),
            ("!", 1, "expected a label key"),
        ] {
            let e = Selector::parse(s).expect_err(s);
            assert_eq!(e.column, col, "{s}: {e}");
            assert!(e.message.contains(needle), "{s}: {e}");
            assert!(
                e.to_string().contains(&format!("column {}", col + 1)),
                "{e}"
            );
        }
        let long = "a".repeat(64);
        assert!(Selector::parse(&format!("{long}=x"))
            .unwrap_err()
            .message
            .contains("63"));
    }

    #[test]
    fn from_str_works() {
        let s: Selector = "a=b".parse().unwrap();
        assert_eq!(s.requirements().len(), 1);
    }
}
