//! Trace context on the wire: W3C `traceparent`/`tracestate` and B3 (the
//! single `b3` header and the `X-B3-*` headers), parsed strictly. Anything
//! malformed is treated as absent and reported as invalid (the stage counts
//! it); only these headers are looked at, and only their ids are kept.

use podscope_model::TraceContext;

/// The longest `tracestate` kept (the W3C limit is 512 characters).
pub const MAX_TRACESTATE: usize = 512;

/// What a request's headers said about trace context.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pickup {
    /// No trace-context header at all.
    #[default]
    None,
    /// A valid context (boxed: most requests carry none).
    Valid(Box<TraceContext>),
    /// Headers were there but not valid (the reason); the request is
    /// treated as having none.
    Invalid(&'static str),
}

/// Collects the trace-context headers of one request head.
#[derive(Debug, Default)]
pub struct Collector {
    traceparent: Vec<Vec<u8>>,
    tracestate: Vec<Vec<u8>>,
    b3: Vec<Vec<u8>>,
    trace_id: Vec<Vec<u8>>,
    span_id: Vec<Vec<u8>>,
    parent_id: Vec<Vec<u8>>,
    sampled: Vec<Vec<u8>>,
    flags: Vec<Vec<u8>>,
}

impl Collector {
    /// One header (any case in `name`); others are ignored without a copy.
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        let slot = match name.len() {
            2 if name.eq_ignore_ascii_case(b"b3") => &mut self.b3,
            10 if name.eq_ignore_ascii_case(b"x-b3-flags") => &mut self.flags,
            10 if name.eq_ignore_ascii_case(b"tracestate") => &mut self.tracestate,
            11 if name.eq_ignore_ascii_case(b"traceparent") => &mut self.traceparent,
            11 if name.eq_ignore_ascii_case(b"x-b3-spanid") => &mut self.span_id,
            12 if name.eq_ignore_ascii_case(b"x-b3-traceid") => &mut self.trace_id,
            12 if name.eq_ignore_ascii_case(b"x-b3-sampled") => &mut self.sampled,
            17 if name.eq_ignore_ascii_case(b"x-b3-parentspanid") => &mut self.parent_id,
            _ => return,
        };
        if slot.len() < 4 {
            slot.push(value.to_vec());
        }
    }

    fn any(&self) -> bool {
        !(self.traceparent.is_empty()
            && self.tracestate.is_empty()
            && self.b3.is_empty()
            && self.trace_id.is_empty()
            && self.span_id.is_empty()
            && self.parent_id.is_empty()
            && self.sampled.is_empty()
            && self.flags.is_empty())
    }

    /// The context: W3C first, then `b3`, then `X-B3-*` (the order
    /// OpenTelemetry's composite propagators extract in).
    pub fn finish(self) -> Pickup {
        if !self.any() {
            return Pickup::None;
        }
        let mut first_error = None;
        if !self.traceparent.is_empty() {
            match w3c(&self.traceparent, &self.tracestate) {
                Ok(c) => return Pickup::Valid(Box::new(c)),
                Err(e) => first_error = Some(e),
            }
        }
        if !self.b3.is_empty() {
            match b3_single(&self.b3) {
                Ok(Some(c)) => return Pickup::Valid(Box::new(c)),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !self.trace_id.is_empty() || !self.span_id.is_empty() {
            match b3_multi(&self) {
                Ok(c) => return Pickup::Valid(Box::new(c)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Pickup::Invalid(e),
            // Only a sampling decision (`b3: 0`, `X-B3-Sampled` alone) or a
            // tracestate without traceparent: no context, nothing wrong.
            None if self.traceparent.is_empty()
                && self.b3.is_empty()
                && self.trace_id.is_empty() =>
            {
                if !self.tracestate.is_empty() && self.sampled.is_empty() && self.flags.is_empty() {
                    Pickup::Invalid("tracestate without traceparent")
                } else {
                    Pickup::None
                }
            }
            None => Pickup::None,
        }
    }
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|c| *c == b'0')
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// OWS around a header value is not part of it.
fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !matches!(c, b' ' | b'\t'));
    let e = b.iter().rposition(|c| !matches!(c, b' ' | b'\t'));
    match (s, e) {
        (Some(s), Some(e)) => &b[s..=e],
        _ => &[],
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (W3C Trace Context level 1; a later
/// version may append `-...` after the flags).
fn w3c(parents: &[Vec<u8>], states: &[Vec<u8>]) -> Result<TraceContext, &'static str> {
    if parents.len() > 1 {
        return Err("traceparent sent more than once");
    }
    let v = trim(&parents[0]);
    if v.len() < 55 {
        return Err("traceparent shorter than 55 characters");
    }
    let (version, trace, span, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err("traceparent fields not separated by '-'");
    }
    if !is_lower_hex(version) || version == b"ff" {
        return Err("traceparent version not 2 lowercase hex digits below ff");
    }
    if version == b"00" && v.len() != 55 {
        return Err("traceparent version 00 longer than 55 characters");
    }
    if v.len() > 55 && v[55] != b'-' {
        return Err("traceparent has characters after the flags");
    }
    if !is_lower_hex(trace) || all_zero(trace) {
        return Err("traceparent trace-id not 32 lowercase hex digits, not all zero");
    }
    if !is_lower_hex(span) || all_zero(span) {
        return Err("traceparent parent-id not 16 lowercase hex digits, not all zero");
    }
    if !is_lower_hex(flags) {
        return Err("traceparent flags not 2 lowercase hex digits");
    }
    let flags = u8::from_str_radix(std::str::from_utf8(flags).unwrap_or("00"), 16).unwrap_or(0);
    Ok(TraceContext {
        format: "w3c".into(),
        trace_id: text(trace),
        span_id: text(span),
        parent_span_id: None,
        sampled: Some(flags & 1 == 1),
        tracestate: tracestate(states),
    })
}

/// Several `tracestate` headers are one list joined by commas. An invalid
/// list is dropped (the traceparent stays valid), as the spec says.
fn tracestate(states: &[Vec<u8>]) -> Option<String> {
    if states.is_empty() {
        return None;
    }
    let joined: Vec<&[u8]> = states.iter().map(|s| trim(s)).collect();
    let joined = joined.join(&b","[..]);
    if joined.len() > MAX_TRACESTATE || joined.is_empty() {
        return None;
    }
    let s = std::str::from_utf8(&joined).ok()?;
    let mut members = 0;
    for m in s.split(',') {
        let m = m.trim_matches([' ', '\t']);
        if m.is_empty() {
            continue;
        }
        let (k, v) = m.split_once('=')?;
        let key_ok = !k.is_empty()
            && k.len() <= 256
            && k.bytes()
                .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'));
        let value_ok = !v.is_empty()
            && v.len() <= 256
            && v.bytes()
                .all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=');
        if !key_ok || !value_ok {
            return None;
        }
        members += 1;
    }
    (members > 0 && members <= 32).then(|| s.to_string())
}

fn trace_id_128(b: &[u8]) -> Result<String, &'static str> {
    if (b.len() != 16 && b.len() != 32) || !is_lower_hex(b) || all_zero(b) {
        return Err("B3 trace id not 16 or 32 lowercase hex digits, not all zero");
    }
    Ok(if b.len() == 16 {
        format!("{:0>32}", text(b))
    } else {
        text(b)
    })
}

fn span_id_64(b: &[u8], what: &'static str) -> Result<String, &'static str> {
    if b.len() != 16 || !is_lower_hex(b) || all_zero(b) {
        return Err(what);
    }
    Ok(text(b))
}

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`, or a bare
/// sampling state (`0`, `1`, `d`: no context).
fn b3_single(values: &[Vec<u8>]) -> Result<Option<TraceContext>, &'static str> {
    if values.len() > 1 {
        return Err("b3 sent more than once");
    }
    let v = trim(&values[0]);
    if matches!(v, b"0" | b"1" | b"d") {
        return Ok(None);
    }
    let parts: Vec<&[u8]> = v.split(|c| *c == b'-').collect();
    if parts.len() < 2 || parts.len() > 4 {
        return Err("b3 not TraceId-SpanId[-Sampled[-ParentSpanId]]");
    }
    let trace_id = trace_id_128(parts[0])?;
    let span_id = span_id_64(
        parts[1],
        "b3 span id not 16 lowercase hex digits, not all zero",
    )?;
    let sampled = match parts.get(2).copied() {
        None => None,
        Some(b"1") | Some(b"d") => Some(true),
        Some(b"0") => Some(false),
        Some(_) => return Err("b3 sampling state not 0, 1 or d"),
    };
    let parent_span_id = match parts.get(3).copied() {
        None => None,
        Some(p) => Some(span_id_64(
            p,
            "b3 parent span id not 16 lowercase hex digits, not all zero",
        )?),
    };
    Ok(Some(TraceContext {
        format: "b3".into(),
        trace_id,
        span_id,
        parent_span_id,
        sampled,
        tracestate: None,
    }))
}

fn one<'a>(v: &'a [Vec<u8>], name: &'static str) -> Result<Option<&'a [u8]>, &'static str> {
    match v.len() {
        0 => Ok(None),
        1 => Ok(Some(trim(&v[0]))),
        _ => Err(name),
    }
}

fn b3_multi(c: &Collector) -> Result<TraceContext, &'static str> {
    let trace = one(&c.trace_id, "X-B3-TraceId sent more than once")?
        .ok_or("X-B3-SpanId without X-B3-TraceId")?;
    let span = one(&c.span_id, "X-B3-SpanId sent more than once")?
        .ok_or("X-B3-TraceId without X-B3-SpanId")?;
    let trace_id = trace_id_128(trace)?;
    let span_id = span_id_64(
        span,
        "X-B3-SpanId not 16 lowercase hex digits, not all zero",
    )?;
    let parent_span_id = match one(&c.parent_id, "X-B3-ParentSpanId sent more than once")? {
        None => None,
        Some(p) => Some(span_id_64(
            p,
            "X-B3-ParentSpanId not 16 lowercase hex digits, not all zero",
        )?),
    };
    let debug = match one(&c.flags, "X-B3-Flags sent more than once")? {
        None => false,
        Some(b"1") => true,
        Some(_) => return Err("X-B3-Flags not 1"),
    };
    let sampled = match one(&c.sampled, "X-B3-Sampled sent more than once")? {
        None if debug => Some(true),
        None => None,
        Some(b"1") | Some(b"true") => Some(true),
        Some(b"0") | Some(b"false") => Some(false),
        Some(_) => return Err("X-B3-Sampled not 0 or 1"),
    };
    Ok(TraceContext {
        format: "b3multi".into(),
        trace_id,
        span_id,
        parent_span_id,
        sampled,
        tracestate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(headers: &[(&str, &str)]) -> Pickup {
        let mut c = Collector::default();
        for (n, v) in headers {
            c.header(n.as_bytes(), v.as_bytes());
        }
        c.finish()
    }

    fn valid(p: Pickup) -> TraceContext {
        match p {
            Pickup::Valid(c) => *c,
            other => panic!("not valid: {other:?}"),
        }
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn w3c_traceparent_and_tracestate() {
        let c = valid(pick(&[
            ("Traceparent", TP),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("cookie", "secret"),
        ]));
        assert_eq!(c.format, "w3c");
        assert_eq!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id, "00f067aa0ba902b7");
        assert_eq!(c.sampled, Some(true));
        assert_eq!(
            c.tracestate.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        // A future version may append fields; version 00 may not.
        let c = valid(pick(&[(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra",
        )]));
        assert_eq!(c.sampled, Some(false));
        // A bad tracestate is dropped, the traceparent stays.
        let c = valid(pick(&[
            ("traceparent", TP),
            ("tracestate", "no equals sign"),
        ]));
        assert_eq!(c.tracestate, None);
    }

    #[test]
    fn invalid_traceparents_are_absent_with_a_reason() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert!(
                matches!(pick(&[("traceparent", bad)]), Pickup::Invalid(_)),
                "{bad:?}"
            );
        }
        assert_eq!(
            pick(&[("traceparent", TP), ("traceparent", TP)]),
            Pickup::Invalid("traceparent sent more than once")
        );
        assert_eq!(pick(&[("host", "a"), ("user-agent", "b")]), Pickup::None);
    }

    #[test]
    fn w3c_wins_over_b3_and_a_bad_one_falls_back() {
        let both = [
            ("traceparent", TP),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ];
        assert_eq!(valid(pick(&both)).format, "w3c");
        let c = valid(pick(&[
            ("traceparent", "garbage"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]));
        assert_eq!(c.format, "b3");
    }

    #[test]
    fn b3_single_header() {
        let c = valid(pick(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]));
        assert_eq!(
            (
                c.trace_id.as_str(),
                c.span_id.as_str(),
                c.sampled,
                c.parent_span_id.as_deref()
            ),
            (
                "80f198ee56343ba864fe8b2a57d3eff7",
                "e457b5a2e4d86bd1",
                Some(true),
                Some("05e3ac9a4f6e3b90")
            )
        );
        // 64-bit trace ids are left-padded.
        let c = valid(pick(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")]));
        assert_eq!(c.trace_id, "0000000000000000a3ce929d0e0e4736");
        assert_eq!(c.sampled, None);
        // Sampling only: no context, nothing wrong.
        assert_eq!(pick(&[("b3", "0")]), Pickup::None);
        for bad in [
            "a3ce929d0e0e4736",
            "a3ce929d0e0e4736-00f067aa0ba902b7-x",
            "a3ce929d0e0e473-00f067aa0ba902b7",
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-0",
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90-1",
        ] {
            assert!(
                matches!(pick(&[("b3", bad)]), Pickup::Invalid(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn b3_multi_headers() {
        let c = valid(pick(&[
            ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
            ("X-B3-SpanId", "a2fb4a1d1a96d312"),
            ("X-B3-ParentSpanId", "0020000000000001"),
            ("X-B3-Sampled", "1"),
        ]));
        assert_eq!(c.format, "b3multi");
        assert_eq!(c.parent_span_id.as_deref(), Some("0020000000000001"));
        assert_eq!(c.sampled, Some(true));
        let c = valid(pick(&[
            ("x-b3-traceid", "48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-flags", "1"),
        ]));
        assert_eq!(c.sampled, Some(true), "debug implies sampled");
        assert!(matches!(
            pick(&[("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124")]),
            Pickup::Invalid("X-B3-TraceId without X-B3-SpanId")
        ));
        assert!(matches!(
            pick(&[
                ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
                ("X-B3-SpanId", "a2fb4a1d1a96d312"),
                ("X-B3-Sampled", "yes"),
            ]),
            Pickup::Invalid(_)
        ));
        assert_eq!(pick(&[("X-B3-Sampled", "0")]), Pickup::None);
    }
}
