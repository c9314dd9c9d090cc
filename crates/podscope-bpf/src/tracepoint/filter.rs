//! `--filter 'FIELD OP VALUE && ... || ...'` for tracepoints: parsed once,
//! then compiled per tracepoint into the predicates the kernel evaluates
//! (`&&` binds tighter than `||`, as in C and in ftrace's filters).

use super::format::{FieldKind, Format};

/// The kernel-side limits (bpf/tracepoint.h).
pub(crate) const PRED_MAX: usize = 4;
pub(crate) const STR_MAX: usize = 32;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    /// TP_OP_* in bpf/tracepoint.h.
    pub(crate) fn code(self) -> u8 {
        match self {
            Op::Eq => 1,
            Op::Ne => 2,
            Op::Lt => 3,
            Op::Le => 4,
            Op::Gt => 5,
            Op::Ge => 6,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// The right-hand side as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number (decimal, 0x hex, or negative).
    Int(i128),
    /// A quoted string, or a bare word that is not a number.
    Str(String),
}

/// One `FIELD OP VALUE` (or `FIELD[INDEX] OP VALUE` on an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmp {
    /// The field name.
    pub field: String,
    /// `FIELD[INDEX]`: one element of an integer array.
    pub index: Option<usize>,
    /// The operator.
    pub op: Op,
    /// The value.
    pub value: Value,
    /// Which `||` alternative of its clause it belongs to (0, 1, ...): the
    /// clause holds when every comparison of one alternative does.
    pub group: u8,
}

/// A whole `--filter`: comparisons for every traced tracepoint, and/or
/// clauses for one tracepoint each (`net_dev_xmit: len > 1000; kfree_skb:
/// reason == 2`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expr {
    /// The clauses as written, at most one unscoped and one per tracepoint.
    pub clauses: Vec<Clause>,
}

/// `[TRACEPOINT:] FIELD OP VALUE && ... || ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// `EVENT` or `SUBSYSTEM:EVENT` this clause is for; None: every
    /// tracepoint without a clause of its own.
    pub scope: Option<String>,
    /// The comparisons, alternative by alternative (`Cmp::group`): AND-ed
    /// within one, alternatives OR-ed.
    pub cmps: Vec<Cmp>,
}

impl Clause {
    /// Whether this clause is the one for `tracepoint` (`SUBSYSTEM:EVENT`).
    pub fn is_for(&self, tracepoint: &str) -> bool {
        self.scope.as_deref().is_some_and(|s| {
            s == tracepoint || tracepoint.split_once(':').is_some_and(|(_, ev)| ev == s)
        })
    }
}

impl Expr {
    /// No comparisons at all.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The comparisons that decide `tracepoint`'s records (`SUBSYSTEM:EVENT`):
    /// its own clause, else the unscoped one, else none.
    pub fn for_tracepoint(&self, tracepoint: &str) -> &[Cmp] {
        self.clauses
            .iter()
            .find(|c| c.is_for(tracepoint))
            .or_else(|| self.clauses.iter().find(|c| c.scope.is_none()))
            .map_or(&[], |c| &c.cmps)
    }
}

/// Parses `len > 1000 && name == "eth0"`, and per-tracepoint clauses joined
/// by `;` (`net_dev_xmit: len > 1000; kfree_skb: reason == 2`).
pub fn parse(s: &str) -> Result<Expr, String> {
    let mut e = Expr::default();
    for clause in s.split(';').map(str::trim) {
        if clause.is_empty() && s.contains(';') {
            return Err(format!(
                "--filter '{s}': an empty clause between ';' (write [TRACEPOINT:] FIELD OP VALUE && ..., clauses joined by ';')"
            ));
        }
        let (scope, body) = split_scope(clause);
        if let Some(sc) = &scope {
            if sc.is_empty()
                || !sc
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return Err(format!(
                    "--filter '{s}': '{sc}' is not a tracepoint (write EVENT: or SUBSYSTEM:EVENT: before a clause, e.g. 'net_dev_xmit: len > 1000')"
                ));
            }
        }
        let cmps = parse_or(body).map_err(|e| format!("--filter '{s}': {e}"))?;
        if e.clauses.iter().any(|c| c.scope == scope) {
            return Err(match &scope {
                Some(sc) => format!("--filter '{s}': two clauses for {sc}: join their comparisons with && in one"),
                None => format!("--filter '{s}': two clauses for every tracepoint: join their comparisons with && in one, or name a tracepoint before each (EVENT: ...)"),
            });
        }
        e.clauses.push(Clause { scope, cmps });
    }
    Ok(e)
}

/// `TRACEPOINT: rest` -> (Some(TRACEPOINT), rest): a `:` before the first
/// operator (field names have none).
fn split_scope(clause: &str) -> (Option<String>, &str) {
    let first_op = clause.find(['=', '!', '<', '>']).unwrap_or(clause.len());
    match clause[..first_op].rfind(':') {
        Some(i) => (Some(clause[..i].trim().to_string()), &clause[i + 1..]),
        None => (None, clause),
    }
}

/// `FIELD OP VALUE && ... || ...`: alternatives of AND-ed comparisons.
fn parse_or(s: &str) -> Result<Vec<Cmp>, String> {
    if s.contains(['(', ')']) {
        return Err(
            "parentheses are not supported: && binds tighter than ||, so write the alternatives out (e.g. 'a == 1 && b == 2 || a == 1 && c == 3')"
                .to_string(),
        );
    }
    let mut out = Vec::new();
    for (group, alt) in s.split("||").enumerate() {
        for part in alt.split("&&").map(str::trim) {
            if part.is_empty() {
                return Err(
                    "an empty comparison (write FIELD OP VALUE, joined by && or ||, e.g. 'len > 1000 && rc == 0 || rc < 0')"
                        .to_string(),
                );
            }
            let mut c = parse_one(part)?;
            c.group = group.min(usize::from(u8::MAX)) as u8;
            out.push(c);
        }
    }
    if out.len() > PRED_MAX {
        return Err(format!(
            "{} comparisons for one tracepoint; the kernel evaluates at most {PRED_MAX} (counting every alternative's)",
            out.len()
        ));
    }
    Ok(out)
}

fn parse_one(part: &str) -> Result<Cmp, String> {
    // Longest operators first so `<=` is not read as `<`.
    const OPS: [(&str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let found = OPS
        .iter()
        .filter_map(|(t, op)| part.find(t).map(|i| (i, *t, *op)))
        .min_by_key(|(i, t, _)| (*i, std::cmp::Reverse(t.len())));
    let Some((at, text, op)) = found else {
        return Err(format!(
            "'{part}' has no operator; use one of == != < <= > >= (e.g. 'len > 1000')"
        ));
    };
    let field = part[..at].trim();
    let value = part[at + text.len()..].trim();
    // `args[2]`: an element of an array field.
    let (field, index) = match field.strip_suffix(']').and_then(|f| f.split_once('[')) {
        Some((name, i)) => match i.trim().parse::<usize>() {
            Ok(i) => (name.trim(), Some(i)),
            Err(_) => {
                return Err(format!(
                    "'{part}': '{i}' is not an array index (a number from 0, e.g. 'args[0] == 1')"
                ))
            }
        },
        None => (field, None),
    };
    if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "'{part}': '{field}' is not a field name (letters, digits, _, and [N] for an array element; see podscope probes --tracepoints)"
        ));
    }
    if value.is_empty() {
        return Err(format!("'{part}': no value after '{text}'"));
    }
    if value.starts_with(['=', '<', '>', '!']) {
        return Err(format!(
            "'{part}': '{value}' is not a value (one operator per comparison)"
        ));
    }
    let value = if let Some(q) = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
    {
        Value::Str(q.to_string())
    } else if let Some(n) = parse_int(value) {
        Value::Int(n)
    } else if value.contains(['|', '&', ' ']) {
        return Err(format!(
            "'{part}': '{value}' is not a value (join comparisons with && or ||, and quote a string with spaces)"
        ));
    } else {
        Value::Str(value.to_string())
    };
    Ok(Cmp {
        field: field.to_string(),
        index,
        op,
        value,
        group: 0,
    })
}

fn parse_int(s: &str) -> Option<i128> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => i128::from_str_radix(h, 16).ok()?,
        None => s.parse::<i128>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// `cmps` (one tracepoint's) in ftrace's own filter syntax, for an `ftrace:`
/// instance's `events/SUBSYSTEM/EVENT/filter` file: the same operators,
/// `&&` and `||` with the same precedence, strings in double quotes. An
/// array element (`FIELD[N]`) has no ftrace form, and a string with a `"`
/// none either: both are errors.
pub fn ftrace_text(cmps: &[Cmp]) -> Result<String, String> {
    let mut out = String::new();
    for (i, c) in cmps.iter().enumerate() {
        if i > 0 {
            out.push_str(if c.group == cmps[i - 1].group {
                " && "
            } else {
                " || "
            });
        }
        if let Some(n) = c.index {
            return Err(format!(
                "--filter '{}[{n}]': ftrace filters cannot compare an array element; use tp:SUBSYSTEM:EVENT (the BPF hook) for that",
                c.field
            ));
        }
        let value = match &c.value {
            Value::Int(n) => n.to_string(),
            Value::Str(s) if s.contains('"') => {
                return Err(format!(
                    "--filter: the string {s:?} holds a '\"', which an ftrace filter cannot quote"
                ))
            }
            Value::Str(s) => format!("\"{s}\""),
        };
        out.push_str(&format!("{} {} {value}", c.field, c.op.text()));
    }
    Ok(out)
}

/// One predicate as the kernel takes it (`struct tp_pred`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pred {
    pub offset: u16,
    pub size: u8,
    pub field: u8,
    pub op: u8,
    pub group: u8,
    pub value: u64,
    pub str: [u8; STR_MAX],
}

/// The predicates of `cmps` for one tracepoint. `Ok(None)`: the tracepoint
/// lacks one of the fields, so the filter does not apply to it.
pub(crate) fn compile(fmt: &Format, cmps: &[Cmp]) -> Result<Option<Vec<Pred>>, String> {
    let mut out = Vec::new();
    for c in cmps {
        let Some(f) = fmt.field(&c.field) else {
            return Ok(None);
        };
        let signed = if f.signed { 2 } else { 1 };
        // (kernel kind, bytes compared, offset, bytes of the integer)
        let (kind, size, offset, bytes) = match (f.kind, c.index) {
            (FieldKind::Array { elem }, Some(i)) if matches!(elem, 1 | 2 | 4 | 8) => {
                let n = f.size / elem;
                if i >= n {
                    return Err(format!(
                        "--filter: {}'s field '{}' is {} ({n} elements): index {i} is past its end (0 to {})",
                        fmt.name,
                        c.field,
                        f.ctype,
                        n.saturating_sub(1)
                    ));
                }
                (signed, elem, f.offset + i * elem, elem)
            }
            (_, Some(i)) => {
                return Err(format!(
                    "--filter: {}'s field '{}' is {}, not an array of integers: '{}[{i}]' cannot be compared (index only fixed-size integer arrays, e.g. 'args[0] == 1')",
                    fmt.name, c.field, f.ctype, c.field
                ))
            }
            (FieldKind::Int | FieldKind::Pointer, None) => (signed, f.size, f.offset, f.size),
            (FieldKind::Chars, None) => (3, f.size, f.offset, f.size),
            (FieldKind::DataLoc { chars: true, .. }, None) => (4, 4, f.offset, 4),
            (FieldKind::RelLoc { chars: true, .. }, None) => (5, 4, f.offset, 4),
            (FieldKind::Array { .. }, None) => {
                return Err(format!(
                    "--filter: {}'s field '{}' is {} (an array): compare one element, e.g. '{}[0] == 1'",
                    fmt.name, c.field, f.ctype, c.field
                ))
            }
            _ => {
                return Err(format!(
                    "--filter: {}'s field '{}' is {} (bytes of variable length): only integers, pointers, strings and elements of fixed-size integer arrays can be compared",
                    fmt.name,
                    c.field,
                    f.ctype
                ))
            }
        };
        let mut p = Pred {
            offset: offset as u16,
            size: size.min(8) as u8,
            field: kind,
            op: c.op.code(),
            group: c.group,
            value: 0,
            str: [0; STR_MAX],
        };
        match (&c.value, kind) {
            (Value::Int(n), 1 | 2) => {
                let bits = (bytes.clamp(1, 8) * 8) as u32;
                let (min, max) = if f.signed {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                } else {
                    (0, (1i128 << bits) - 1)
                };
                if *n < min || *n > max {
                    return Err(format!(
                        "--filter: {} is out of range for {}'s field '{}' ({}, {} to {})",
                        n, fmt.name, c.field, f.ctype, min, max
                    ));
                }
                p.value = *n as i64 as u64;
            }
            (Value::Str(s), 1 | 2) => {
                return Err(format!(
                    "--filter: {}'s field '{}' is an integer ({}); '{s}' is not a number (decimal or 0x hex)",
                    fmt.name, c.field, f.ctype
                ))
            }
            (v, _) => {
                let s = match v {
                    Value::Str(s) => s.clone(),
                    Value::Int(_) => {
                        return Err(format!(
                            "--filter: {}'s field '{}' is a string: quote the value (e.g. {} == \"eth0\")",
                            fmt.name, c.field, c.field
                        ))
                    }
                };
                if !matches!(c.op, Op::Eq | Op::Ne) {
                    return Err(format!(
                        "--filter: '{}' {} is not defined for strings: strings compare with == and != only",
                        c.field,
                        c.op.text()
                    ));
                }
                if s.len() >= STR_MAX || s.contains('\0') {
                    return Err(format!(
                        "--filter: \"{s}\" is longer than the {} bytes the kernel compares",
                        STR_MAX - 1
                    ));
                }
                p.str[..s.len()].copy_from_slice(s.as_bytes());
            }
        }
        out.push(p);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The comparisons of a filter of one unscoped clause.
    fn one(s: &str) -> Vec<Cmp> {
        parse(s).unwrap().clauses.remove(0).cmps
    }

    #[test]
    fn parses_comparisons() {
        let c = one("len > 1000 && name == \"eth0\" && rc!=-1 && x<=0x10");
        assert_eq!(c.len(), 4);
        assert_eq!(
            c[0],
            Cmp {
                field: "len".into(),
                index: None,
                op: Op::Gt,
                value: Value::Int(1000),
                group: 0,
            }
        );
        assert_eq!(c[1].value, Value::Str("eth0".into()));
        assert_eq!((c[2].op, &c[2].value), (Op::Ne, &Value::Int(-1)));
        assert_eq!((c[3].op, &c[3].value), (Op::Le, &Value::Int(16)));
        assert_eq!(one("name == lo")[0].value, Value::Str("lo".into()));
        for bad in [
            "len",
            "len >",
            "> 3",
            "a == 1 &&",
            "a >> 3",
            "a.b == 1",
            "a==1&&b==2&&c==3&&d==4&&e==5",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("len").unwrap_err().contains("no operator"));
    }

    #[test]
    fn or_alternatives_bind_looser_than_and() {
        let c = one("rc < 0 || len > 1000 && name == \"eth0\" || rc == 7");
        let groups: Vec<(&str, u8)> = c.iter().map(|c| (c.field.as_str(), c.group)).collect();
        assert_eq!(groups, [("rc", 0), ("len", 1), ("name", 1), ("rc", 2)]);
        for (bad, why) in [
            ("a == 1 ||", "empty comparison"),
            ("|| a == 1", "empty comparison"),
            ("(a == 1 || b == 2) && c == 3", "parentheses"),
            ("a == 1 | b == 2", "not a value"),
            ("a == 1 & b == 2", "not a value"),
            ("a==1||b==2||c==3||d==4||e==5", "at most 4"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        // Decided in user space as the kernel decides it.
        use podscope_model::{TpFields, TpValue};
        let rec = |rc: i64, len: u64| {
            TpFields(vec![
                ("rc".into(), TpValue::Int(rc)),
                ("len".into(), TpValue::Uint(len)),
            ])
        };
        let e = parse("rc < 0 || len > 1000 && rc == 0").unwrap();
        let keep: Vec<bool> = [(-1, 0), (0, 2000), (0, 10), (1, 2000)]
            .iter()
            .map(|(rc, len)| matches(&e, "x:y", &rec(*rc, *len)))
            .collect();
        assert_eq!(keep, [true, true, false, false]);
    }

    #[test]
    fn ftrace_gets_the_same_filter_in_its_syntax() {
        assert_eq!(
            ftrace_text(&one("rc < 0 || len > 0x10 && name == eth0")).unwrap(),
            "rc < 0 || len > 16 && name == \"eth0\""
        );
        assert!(ftrace_text(&one("args[1] == 3"))
            .unwrap_err()
            .contains("array element"));
    }

    #[test]
    fn parses_clauses_per_tracepoint() {
        let e = parse(
            "net:net_dev_xmit: len > 1000 && name == \"a:b\"; kfree_skb: reason == 2; rc == 0",
        )
        .unwrap();
        let scopes: Vec<Option<&str>> = e.clauses.iter().map(|c| c.scope.as_deref()).collect();
        assert_eq!(scopes, [Some("net:net_dev_xmit"), Some("kfree_skb"), None]);
        assert_eq!(e.clauses[0].cmps[1].value, Value::Str("a:b".into()));
        // Each tracepoint takes its own clause, else the unscoped one.
        assert_eq!(e.for_tracepoint("net:net_dev_xmit")[0].field, "len");
        assert_eq!(e.for_tracepoint("skb:kfree_skb")[0].field, "reason");
        assert_eq!(e.for_tracepoint("sched:sched_switch")[0].field, "rc");
        let scoped = parse("kfree_skb: reason == 2").unwrap();
        assert!(scoped.for_tracepoint("net:net_dev_xmit").is_empty());
        // Four comparisons per clause, so per tracepoint.
        assert!(parse("a: w==1&&x==2&&y==3&&z==4; b: w==1&&x==2&&y==3&&z==4").is_ok());
        for (bad, why) in [
            ("a: x == 1; a: y == 2", "two clauses for a"),
            ("x == 1; y == 2", "two clauses for every tracepoint"),
            ("x == 1;", "empty clause"),
            ("a b: x == 1", "not a tracepoint"),
            (": x == 1", "not a tracepoint"),
            ("a: ", "empty comparison"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn compiles_against_a_format() {
        let text = "ID: 7\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:unsigned int len;\toffset:16;\tsize:4;\tsigned:0;\n\
            \tfield:int rc;\toffset:20;\tsize:4;\tsigned:1;\n\
            \tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;\n\
            \tfield:u8 mac[6];\toffset:28;\tsize:6;\tsigned:0;\n";
        let f = Format::parse("net:x", text).unwrap();
        let p = compile(&f, &one("len >= 100 && rc == -1 && name != \"lo\""))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p[0].offset, p[0].size, p[0].field, p[0].op, p[0].value),
            (16, 4, 1, 6, 100)
        );
        assert_eq!((p[1].field, p[1].value), (2, u64::MAX));
        assert_eq!((p[2].field, p[2].op, &p[2].str[..3]), (4, 2, &b"lo\0"[..]));
        assert_eq!(compile(&f, &one("other == 1")).unwrap(), None);
        assert!(compile(&f, &one("len == -1"))
            .unwrap_err()
            .contains("out of range"));
        assert!(compile(&f, &one("len == abc"))
            .unwrap_err()
            .contains("not a number"));
        assert!(compile(&f, &one("name > \"a\""))
            .unwrap_err()
            .contains("== and !="));
        assert!(compile(&f, &one("mac == 1"))
            .unwrap_err()
            .contains("mac[0] == 1"));
        // One element of an array: an integer of the element's size at its offset.
        let p = compile(&f, &one("mac[5] == 0xff && mac [ 0 ] != 2"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p[0].offset, p[0].size, p[0].field, p[0].value),
            (33, 1, 1, 255)
        );
        assert_eq!((p[1].offset, p[1].op), (28, 2));
        // The alternative each predicate belongs to goes to the kernel.
        let p = compile(&f, &one("len > 1 || rc == 0 && len < 9"))
            .unwrap()
            .unwrap();
        assert_eq!(p.iter().map(|p| p.group).collect::<Vec<_>>(), [0, 1, 1]);
        assert!(compile(&f, &one("mac[6] == 1"))
            .unwrap_err()
            .contains("past its end (0 to 5)"));
        assert!(compile(&f, &one("mac[0] == 256"))
            .unwrap_err()
            .contains("out of range"));
        assert!(compile(&f, &one("len[0] == 1"))
            .unwrap_err()
            .contains("not an array of integers"));
        assert!(parse("mac[x] == 1")
            .unwrap_err()
            .contains("not an array index"));
        assert_eq!(one("mac[3] == 1")[0].index, Some(3));
    }
}

/// Whether a decoded record of `tracepoint` passes the filter, decided as the kernel decides it
/// (for a node's session whose filter the kernel could not apply because
/// another session on the node traces the same tracepoints without it): a
/// record of a tracepoint that lacks one of the fields passes, strings
/// compare only with `==` and `!=`, pointers (hex strings) as numbers.
pub fn matches(expr: &Expr, tracepoint: &str, fields: &podscope_model::TpFields) -> bool {
    use podscope_model::TpValue;
    let cmps = expr.for_tracepoint(tracepoint);
    let mut values = Vec::with_capacity(cmps.len());
    for c in cmps {
        let v = match (fields.get(&c.field), c.index) {
            (Some(TpValue::List(l)), Some(i)) => l.get(i),
            (v, None) => v,
            (Some(_), Some(_)) => None,
            (None, _) => None,
        };
        match v {
            Some(v) => values.push(v),
            None => return true,
        }
    }
    // Some alternative whose every comparison holds (none: it passes).
    let held: Vec<(u8, bool)> = cmps
        .iter()
        .zip(values)
        .map(|(c, v)| (c.group, holds(c, v)))
        .collect();
    held.is_empty()
        || held
            .chunk_by(|a, b| a.0 == b.0)
            .any(|alt| alt.iter().all(|(_, ok)| *ok))
}

fn holds(c: &Cmp, v: &podscope_model::TpValue) -> bool {
    use podscope_model::TpValue;
    use std::cmp::Ordering;
    let ord: Ordering = match (v, &c.value) {
        (TpValue::Int(a), Value::Int(b)) => i128::from(*a).cmp(b),
        (TpValue::Uint(a), Value::Int(b)) => i128::from(*a).cmp(b),
        (TpValue::Str(a), Value::Int(b)) => match parse_int(a) {
            Some(a) => a.cmp(b),
            None => return true,
        },
        (TpValue::Str(a), Value::Str(b)) => {
            return match c.op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                _ => true,
            }
        }
        _ => return true,
    };
    match c.op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
    }
}

#[cfg(test)]
mod matches_tests {
    use super::*;
    use podscope_model::{TpFields, TpValue};

    #[test]
    fn user_space_filter_decides_like_the_kernel() {
        let f = TpFields(vec![
            ("len".into(), TpValue::Uint(1500)),
            ("name".into(), TpValue::Str("eth0".into())),
            ("rc".into(), TpValue::Int(-2)),
        ]);
        let m = |s: &str| matches(&parse(s).unwrap(), "net:x", &f);
        assert!(m("len > 1000"));
        assert!(!m("len < 1000"));
        assert!(m("len >= 1500 && name == eth0"));
        assert!(!m("len >= 1500 && name != \"eth0\""));
        assert!(m("rc == -2"));
        assert!(!m("rc >= 0"));
        // A field the record lacks: the filter does not apply to it.
        assert!(m("nosuch == 1"));
        // Array elements; an index past the record's list, like a missing
        // field, passes (the kernel refuses such a filter up front).
        let f = TpFields(vec![(
            "args".into(),
            TpValue::List(vec![TpValue::Uint(3), TpValue::Int(-1)]),
        )]);
        let m = |s: &str| matches(&parse(s).unwrap(), "net:x", &f);
        assert!(m("args[0] == 3 && args[1] < 0"));
        assert!(!m("args[0] != 3"));
        assert!(!m("args[1] >= 0"));
        assert!(m("args[7] == 1"));
        // A clause for another tracepoint does not decide this one's records.
        assert!(m("other: args[0] == 9"));
        assert!(!m("net:x: args[0] == 9"));
        assert!(!m("x: args[0] == 9; args[0] == 3"));
    }
}
