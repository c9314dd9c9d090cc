//! The two exposition formats and choosing between them by the `Accept` header.
//!
//! prometheus-client encodes OpenMetrics 1.0 text only. The Prometheus text
//! format 0.0.4 differs in a few places that matter to parsers: a counter's
//! HELP/TYPE lines name the sample (`x_total`, not `x`), there are no `# UNIT`
//! lines and no `# EOF` terminator, and `unknown` is called `untyped`. So the
//! Prometheus form is derived from the OpenMetrics one line by line.

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The response `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when the client
    /// lists it with a quality at least as high as plain text's (Prometheus
    /// servers do), else the Prometheus text format (curl, browsers, old scrapers).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let (mut om, mut text) = (0.0f64, 0.0f64);
        for range in accept.split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    (k.trim().eq_ignore_ascii_case("q")).then(|| v.trim().parse::<f64>().ok())?
                })
                .next()
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => om = om.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// Rewrites OpenMetrics text (as prometheus-client writes it) into the
/// Prometheus text format 0.0.4.
pub fn openmetrics_to_prometheus(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // HELP comes before TYPE; a counter's HELP must be renamed once TYPE says counter.
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                push_help(&mut out, name, "", text);
            }
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            if let Some((hname, text)) = help.take() {
                if hname == name {
                    push_help(&mut out, hname, suffix, text);
                } else {
                    push_help(&mut out, hname, "", text);
                }
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        if let Some((name, text)) = help.take() {
            push_help(&mut out, name, "", text);
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some((name, text)) = help.take() {
        push_help(&mut out, name, "", text);
    }
    out
}

fn push_help(out: &mut String, name: &str, suffix: &str, text: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push_str(suffix);
    out.push(' ');
    // OpenMetrics escapes `"` in HELP; the Prometheus format does not.
    out.push_str(&text.replace("\\\"", "\""));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_servers_get_openmetrics() {
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0.2, text/plain")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Prometheus
        );
    }

    #[test]
    fn counters_units_and_eof_are_rewritten() {
        let om = "# HELP a_total_thing Things.\n\
                  # TYPE a_total_thing counter\n\
                  a_total_thing_total{pod=\"x\"} 3\n\
                  # HELP b_seconds Time.\n\
                  # TYPE b_seconds histogram\n\
                  # UNIT b_seconds seconds\n\
                  b_seconds_sum 1.5\n\
                  b_seconds_count 2\n\
                  b_seconds_bucket{le=\"+Inf\"} 2\n\
                  # HELP c Gauge.\n\
                  # TYPE c gauge\n\
                  c 1\n\
                  # HELP d Unknown.\n\
                  # TYPE d unknown\n\
                  d 1\n\
                  # EOF\n";
        let want = "# HELP a_total_thing_total Things.\n\
                    # TYPE a_total_thing_total counter\n\
                    a_total_thing_total{pod=\"x\"} 3\n\
                    # HELP b_seconds Time.\n\
                    # TYPE b_seconds histogram\n\
                    b_seconds_sum 1.5\n\
                    b_seconds_count 2\n\
                    b_seconds_bucket{le=\"+Inf\"} 2\n\
                    # HELP c Gauge.\n\
                    # TYPE c gauge\n\
                    c 1\n\
                    # HELP d Unknown.\n\
                    # TYPE d untyped\n\
                    d 1\n";
        assert_eq!(openmetrics_to_prometheus(om), want);
    }
}
