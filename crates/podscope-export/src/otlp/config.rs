//! OTLP settings from `podscope trace` flags and the standard `OTEL_*`
//! environment variables, resolved and validated in one place.
//!
//! Precedence, per signal (traces, logs): a flag, then the signal's own
//! variable (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), then the general one
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), then the specification's default.

use std::time::Duration;

use podscope_model::ProbeKind;

use super::OtlpError;

/// The wire protocol of one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    HttpProtobuf,
}

impl Protocol {
    /// The name used by `--otlp-protocol` and `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// Parses a protocol name; `what` names where it came from for the error.
    pub fn parse(s: &str, what: &str) -> Result<Protocol, OtlpError> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(OtlpError::Config(format!(
                "{what}: unknown OTLP protocol '{other}'; use grpc or http/protobuf \
                 (http/json is not supported)"
            ))),
        }
    }
}

/// The two OTLP signals podscope sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Log records.
    Logs,
}

impl Signal {
    fn env(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Logs => "LOGS",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "v1/traces",
            Signal::Logs => "v1/logs",
        }
    }

    /// `spans` or `logs`, as the exit report says.
    pub fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Logs => "logs",
        }
    }
}

/// What the command line said about OTLP (all optional).
#[derive(Debug, Clone, Default)]
pub struct OtlpFlags {
    /// `--otlp-endpoint`: the base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: Option<String>,
    /// `--otlp-protocol`.
    pub protocol: Option<String>,
    /// `--otlp-header K=V`, repeatable; beats the same key from the environment.
    pub headers: Vec<String>,
    /// `--otlp-logs PROBES`: probes whose events become log records.
    pub log_probes: Vec<ProbeKind>,
    /// `--otlp-queue-size`: items held per signal while the backend is slow or down.
    pub queue_size: Option<usize>,
    /// `--otlp-session-events`: span events kept on the session span.
    pub session_events: Option<usize>,
    /// `--otlp-ca FILE`: the CA certificates (PEM) an https collector's
    /// certificate must chain to (as `OTEL_EXPORTER_OTLP_CERTIFICATE`);
    /// without it the system's CA certificates.
    pub ca: Option<String>,
}

/// Where and how one signal is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalConfig {
    /// Which signal.
    pub signal: Signal,
    /// Wire protocol.
    pub protocol: Protocol,
    /// gRPC: the server's base URL; HTTP: the full URL POSTed to.
    pub url: String,
    /// Headers (gRPC metadata) sent with every export request.
    pub headers: Vec<(String, String)>,
    /// How long one export request may take.
    pub timeout: Duration,
    /// Items (spans or log records) held while the backend is slow or down.
    pub queue_size: usize,
    /// Items per export request.
    pub batch_size: usize,
    /// How long an incomplete batch waits before it is sent anyway.
    pub delay: Duration,
    /// https: the CA file to trust instead of the system's certificates,
    /// and where that setting came from (for messages).
    pub ca: Option<(String, String)>,
}

/// Everything the OTLP exporter needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Spans.
    pub traces: SignalConfig,
    /// Log records; None when `--otlp-logs` was not given.
    pub logs: Option<SignalConfig>,
    /// Probes whose events become log records.
    pub log_probes: Vec<ProbeKind>,
    /// `service.name` of podscope's own session span (`OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, added to every resource.
    pub resource_attributes: Vec<(String, String)>,
    /// Span events kept on the session span; the rest are counted in its
    /// `dropped_events_count`.
    pub session_events: usize,
    /// Node name (`k8s.node.name`).
    pub node: String,
    /// How long the exit may wait for the backlog to go out.
    pub shutdown_timeout: Duration,
    /// Request spans: parents, hold time, kernel children (`--spans`,
    /// `--span-children`; docs/otlp.md, "Request traces").
    pub requests: super::xtrace::Config,
}

/// Default span/log queue per signal; about 1 KiB per queued span, so ~8 MiB.
pub const DEFAULT_QUEUE_SIZE: usize = 8192;
/// Default span events kept on the session span.
pub const DEFAULT_SESSION_EVENTS: usize = 1000;
const DEFAULT_BATCH: usize = 512;
const DEFAULT_DELAY: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpConfig {
    /// Resolves flags and environment (`env` looks a variable up; tests pass
    /// a map, the binary `std::env::var`).
    pub fn resolve(
        flags: &OtlpFlags,
        node: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OtlpConfig, OtlpError> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let traces = signal_config(Signal::Traces, flags, &get)?;
        let logs = if flags.log_probes.is_empty() {
            None
        } else {
            Some(signal_config(Signal::Logs, flags, &get)?)
        };
        let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(v) => parse_pairs(&v, "OTEL_RESOURCE_ATTRIBUTES")?,
            None => Vec::new(),
        };
        // The specification: OTEL_SERVICE_NAME wins over a service.name in
        // OTEL_RESOURCE_ATTRIBUTES.
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "podscope".into());
        let session_events = flags.session_events.unwrap_or(DEFAULT_SESSION_EVENTS);
        Ok(OtlpConfig {
            traces,
            logs,
            log_probes: flags.log_probes.clone(),
            service_name,
            resource_attributes: resource_attributes
                .into_iter()
                .filter(|(k, _)| k != "service.name")
                .collect(),
            session_events,
            node: node.to_string(),
            shutdown_timeout: Duration::from_secs(5),
            requests: super::xtrace::Config::default(),
        })
    }
}

fn signal_config(
    signal: Signal,
    flags: &OtlpFlags,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<SignalConfig, OtlpError> {
    let s = signal.env();
    let own = |name: &str| {
        let k = format!("OTEL_EXPORTER_OTLP_{s}_{name}");
        get(&k).map(|v| (k, v))
    };
    let general = |name: &str| {
        let k = format!("OTEL_EXPORTER_OTLP_{name}");
        get(&k).map(|v| (k, v))
    };

    let protocol = match &flags.protocol {
        Some(p) => Protocol::parse(p, "--otlp-protocol")?,
        None => match own("PROTOCOL").or_else(|| general("PROTOCOL")) {
            Some((k, v)) => Protocol::parse(&v, &k)?,
            // The specification's default for SDKs.
            None => Protocol::HttpProtobuf,
        },
    };

    // A signal-specific URL is used as is; a base URL gets the signal's path
    // appended for HTTP (gRPC routes by service name, not path).
    let (url, from) = if let Some(base) = &flags.endpoint {
        check_bare(base, "--otlp-endpoint")?;
        (
            base_url(base, signal, protocol),
            "--otlp-endpoint".to_string(),
        )
    } else if let Some((k, v)) = own("ENDPOINT") {
        check_bare(&v, &k)?;
        (v, k)
    } else if let Some((k, v)) = general("ENDPOINT") {
        check_bare(&v, &k)?;
        (base_url(&v, signal, protocol), k)
    } else {
        let default = match protocol {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::HttpProtobuf => "http://localhost:4318",
        };
        (
            base_url(default, signal, protocol),
            "the default".to_string(),
        )
    };
    let url = check_url(&url, &from)?;
    let ca = match &flags.ca {
        Some(f) => Some((f.clone(), "--otlp-ca".to_string())),
        None => own("CERTIFICATE")
            .or_else(|| general("CERTIFICATE"))
            .map(|(k, v)| (v, k)),
    };
    if let Some((file, from)) = &ca {
        if !url.starts_with("https://") {
            return Err(OtlpError::Config(format!(
                "{from} {file} is for an https:// collector, but the endpoint is {url}"
            )));
        }
        if let Err(e) = std::fs::metadata(file) {
            return Err(OtlpError::Config(format!(
                "{from} {file}: cannot read it: {e}"
            )));
        }
    }

    let mut headers = Vec::new();
    for (k, v) in [general("HEADERS"), own("HEADERS")].into_iter().flatten() {
        merge(&mut headers, parse_pairs(&v, &k)?);
    }
    for h in &flags.headers {
        merge(&mut headers, parse_pairs(h, "--otlp-header")?);
    }
    for (k, v) in &headers {
        check_header(k, v)?;
    }

    let timeout = match own("TIMEOUT").or_else(|| general("TIMEOUT")) {
        Some((k, v)) => Duration::from_millis(parse_number(&v, &k, "milliseconds")? as u64),
        None => DEFAULT_TIMEOUT,
    };
    let (queue_var, batch_var, delay_var) = match signal {
        Signal::Traces => (
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "OTEL_BSP_SCHEDULE_DELAY",
        ),
        Signal::Logs => (
            "OTEL_BLRP_MAX_QUEUE_SIZE",
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
            "OTEL_BLRP_SCHEDULE_DELAY",
        ),
    };
    let queue_size = match (flags.queue_size, get(queue_var)) {
        (Some(n), _) => n,
        (None, Some(v)) => parse_number(&v, queue_var, "items")?,
        (None, None) => DEFAULT_QUEUE_SIZE,
    };
    if queue_size == 0 {
        return Err(OtlpError::Config(
            "the OTLP queue size must be at least 1 (e.g. --otlp-queue-size 8192)".into(),
        ));
    }
    let batch_size = match get(batch_var) {
        Some(v) => parse_number(&v, batch_var, "items")?.max(1),
        None => DEFAULT_BATCH,
    }
    .min(queue_size);
    let delay = match get(delay_var) {
        Some(v) => Duration::from_millis(parse_number(&v, delay_var, "milliseconds")? as u64),
        None => DEFAULT_DELAY,
    };
    Ok(SignalConfig {
        signal,
        protocol,
        url,
        headers,
        timeout,
        queue_size,
        batch_size,
        delay,
        ca,
    })
}

fn base_url(base: &str, signal: Signal, protocol: Protocol) -> String {
    let base = with_scheme(base);
    match protocol {
        Protocol::Grpc => base,
        Protocol::HttpProtobuf => format!("{}/{}", base.trim_end_matches('/'), signal.http_path()),
    }
}

/// `localhost:4317` means `http://localhost:4317`, as other exporters accept
/// (without a scheme, a port is required: `collector` alone is more likely a
/// mistake than a collector on port 80).
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// A URL given without a scheme must at least have a port.
fn check_bare(url: &str, from: &str) -> Result<(), OtlpError> {
    if url.contains("://") {
        return Ok(());
    }
    let authority = url.split('/').next().unwrap_or("");
    let port = authority.rsplit_once(':').map(|(_, p)| p);
    if port.is_some_and(|p| p.parse::<u16>().is_ok()) {
        return Ok(());
    }
    let host = if authority.is_empty() {
        "collector"
    } else {
        authority
    };
    Err(OtlpError::Config(format!(
        "{from}: '{url}' is not a URL: give a scheme and a port, e.g. http://{host}:4317 \
         (OTLP/gRPC) or http://{host}:4318 (OTLP/HTTP)"
    )))
}

fn check_url(url: &str, from: &str) -> Result<String, OtlpError> {
    let url = with_scheme(url);
    let uri: http::Uri = url.parse().map_err(|e| {
        OtlpError::Config(format!(
            "{from}: '{url}' is not a URL ({e}); use e.g. http://127.0.0.1:4317"
        ))
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(OtlpError::Config(format!(
                "{from}: '{url}' must start with http:// or https://"
            )))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(OtlpError::Config(format!(
            "{from}: '{url}' has no host; use e.g. http://127.0.0.1:4317"
        )));
    }
    Ok(url)
}

fn parse_number(v: &str, what: &str, unit: &str) -> Result<usize, OtlpError> {
    v.trim()
        .parse()
        .map_err(|_| OtlpError::Config(format!("{what}: '{v}' is not a whole number of {unit}")))
}

/// `k1=v1,k2=v2` with percent-encoded values (the W3C baggage format the
/// specification uses for headers and resource attributes).
pub fn parse_pairs(s: &str, what: &str) -> Result<Vec<(String, String)>, OtlpError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(OtlpError::Config(format!(
                "{what}: '{part}' is not KEY=VALUE (e.g. authorization=Bearer%20token)"
            )));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(OtlpError::Config(format!(
                "{what}: '{part}' has an empty key"
            )));
        }
        out.push((k.to_string(), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(x) = u8::from_str_radix(hex, 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Later pairs replace earlier ones with the same (case-insensitive) key.
fn merge(into: &mut Vec<(String, String)>, pairs: Vec<(String, String)>) {
    for (k, v) in pairs {
        into.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
        into.push((k, v));
    }
}

fn check_header(k: &str, v: &str) -> Result<(), OtlpError> {
    let lower = k.to_ascii_lowercase();
    if http::HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.ends_with("-bin") {
        return Err(OtlpError::Config(format!(
            "OTLP header name '{k}' is not a valid ASCII header name"
        )));
    }
    if http::HeaderValue::from_str(v).is_err() {
        return Err(OtlpError::Config(format!(
            "OTLP header '{k}' has a value with characters not allowed in a header"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(flags: OtlpFlags, env: &[(&str, &str)]) -> Result<OtlpConfig, OtlpError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpConfig::resolve(&flags, "node-1", &move |k| env.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_specification() {
        let c = resolve(OtlpFlags::default(), &[]).unwrap();
        assert_eq!(c.traces.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.traces.url, "http://localhost:4318/v1/traces");
        assert_eq!(c.traces.timeout, Duration::from_secs(10));
        assert_eq!(c.traces.queue_size, DEFAULT_QUEUE_SIZE);
        assert_eq!(c.service_name, "podscope");
        assert!(c.logs.is_none());
        let c = resolve(
            OtlpFlags::default(),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
        )
        .unwrap();
        assert_eq!(c.traces.url, "http://localhost:4317");
    }

    #[test]
    fn base_and_signal_endpoints() {
        let flags = OtlpFlags {
            log_probes: vec![ProbeKind::Exec],
            ..Default::default()
        };
        let c = resolve(
            flags.clone(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/otlp/"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo:4318/x"),
            ],
        )
        .unwrap();
        assert_eq!(c.traces.url, "http://tempo:4318/x", "signal URL as is");
        assert_eq!(
            c.logs.unwrap().url,
            "http://collector:4318/otlp/v1/logs",
            "base URL + signal path"
        );
        // The flag beats both variables.
        let c = resolve(
            OtlpFlags {
                endpoint: Some("127.0.0.1:4317".into()),
                protocol: Some("grpc".into()),
                ..flags
            },
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo:4318/x"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap();
        assert_eq!(c.traces.protocol, Protocol::Grpc);
        assert_eq!(c.traces.url, "http://127.0.0.1:4317");
    }

    #[test]
    fn headers_merge_and_decode() {
        let c = resolve(
            OtlpFlags {
                headers: vec!["X-Tenant=b".into()],
                ..Default::default()
            },
            &[
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20abc, x-tenant=a",
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-extra=1"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.traces.headers,
            vec![
                ("authorization".to_string(), "Bearer abc".to_string()),
                ("x-extra".to_string(), "1".to_string()),
                ("X-Tenant".to_string(), "b".to_string()),
            ]
        );
    }

    #[test]
    fn service_name_and_resource_attributes() {
        let c = resolve(
            OtlpFlags::default(),
            &[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=fromattrs,deployment.environment=prod",
            )],
        )
        .unwrap();
        assert_eq!(c.service_name, "fromattrs");
        assert_eq!(
            c.resource_attributes,
            vec![("deployment.environment".to_string(), "prod".to_string())]
        );
        let c = resolve(
            OtlpFlags::default(),
            &[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=fromattrs"),
                ("OTEL_SERVICE_NAME", "agent"),
            ],
        )
        .unwrap();
        assert_eq!(c.service_name, "agent");
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let err =
            |flags: OtlpFlags, env: &[(&str, &str)]| resolve(flags, env).unwrap_err().to_string();
        assert!(err(
            OtlpFlags {
                protocol: Some("http/json".into()),
                ..Default::default()
            },
            &[]
        )
        .contains("--otlp-protocol: unknown OTLP protocol 'http/json'"));
        assert!(err(
            OtlpFlags::default(),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")]
        )
        .contains("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let e = err(
            OtlpFlags {
                endpoint: Some("notaurl".into()),
                ..Default::default()
            },
            &[],
        );
        assert!(
            e.contains("'notaurl' is not a URL") && e.contains("http://notaurl:4317"),
            "{e}"
        );
        assert!(err(
            OtlpFlags {
                endpoint: Some("ftp://x:21".into()),
                ..Default::default()
            },
            &[]
        )
        .contains("must start with http:// or https://"));
        assert!(err(
            OtlpFlags {
                endpoint: Some("http://x:4317".into()),
                ca: Some("/etc/hostname".into()),
                ..Default::default()
            },
            &[]
        )
        .contains("--otlp-ca /etc/hostname is for an https:// collector"));
        assert!(err(
            OtlpFlags {
                endpoint: Some("https://x:4317".into()),
                ..Default::default()
            },
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")]
        )
        .contains("OTEL_EXPORTER_OTLP_CERTIFICATE /nonexistent/ca.pem: cannot read it"));
        // https with the system's CA certificates, and a port-less URL with a scheme.
        assert!(resolve(
            OtlpFlags {
                endpoint: Some("https://collector.example".into()),
                ..Default::default()
            },
            &[]
        )
        .is_ok());
        assert!(resolve(
            OtlpFlags {
                endpoint: Some("collector:4317".into()),
                ..Default::default()
            },
            &[]
        )
        .is_ok());
        assert!(err(
            OtlpFlags {
                headers: vec!["novalue".into()],
                ..Default::default()
            },
            &[]
        )
        .contains("--otlp-header: 'novalue' is not KEY=VALUE"));
        assert!(err(
            OtlpFlags::default(),
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "5s")]
        )
        .contains("OTEL_EXPORTER_OTLP_TIMEOUT: '5s' is not a whole number of milliseconds"));
        assert!(err(
            OtlpFlags {
                queue_size: Some(0),
                ..Default::default()
            },
            &[]
        )
        .contains("at least 1"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
