//! Sending one export request: OTLP/gRPC through tonic's channel, or
//! OTLP/HTTP (protobuf bodies) through hyper's client; both reconnect by
//! themselves when the backend comes back, both speak TLS to an https://
//! collector (rustls; trust from the CA file or the system's certificates).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::config::{Protocol, SignalConfig};
use super::OtlpError;

/// Why an export failed, and whether trying again can help.
#[derive(Debug)]
pub struct SendError {
    /// What happened, for the log line.
    pub message: String,
    /// The backend is down, overloaded or unreachable: keep the batch and retry.
    pub retryable: bool,
}

/// One signal's connection to the backend.
#[allow(
    clippy::large_enum_variant,
    reason = "one per signal, built once at start; boxing buys nothing"
)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc {
        /// The lazily connected channel.
        channel: Channel,
        /// Metadata for every request.
        headers: Vec<(
            MetadataKey<tonic::metadata::Ascii>,
            MetadataValue<tonic::metadata::Ascii>,
        )>,
    },
    /// OTLP/HTTP with protobuf bodies.
    Http {
        /// Pooled HTTP/1.1 client (plain or TLS, as the URL says).
        client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
        /// The URL POSTed to.
        url: http::Uri,
        /// Headers for every request.
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        /// Per-request deadline.
        timeout: Duration,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Grpc { .. } => f.write_str("Transport::Grpc"),
            Transport::Http { url, .. } => write!(f, "Transport::Http({url})"),
        }
    }
}

/// The CA certificates an https collector must chain to: the file's only,
/// or the system's.
fn trust(cfg: &SignalConfig) -> Result<RootCertStore, OtlpError> {
    let mut roots = RootCertStore::empty();
    match &cfg.ca {
        Some((file, from)) => {
            let bad = |e: &dyn std::fmt::Display| {
                OtlpError::Config(format!(
                    "{from} {file}: {e}; expected PEM CA certificates ('-----BEGIN CERTIFICATE-----')"
                ))
            };
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(&e))?;
            if certs.is_empty() {
                return Err(bad(&"no certificate in it"));
            }
            for c in certs {
                roots.add(c).map_err(|e| bad(&e))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(OtlpError::Config(format!(
                    "OTLP endpoint '{}' is https, but this system has no CA certificates \
                     (install ca-certificates) and no --otlp-ca was given",
                    cfg.url
                )));
            }
        }
    }
    Ok(roots)
}

impl Transport {
    /// Builds the client; connects on first use (must run inside the runtime).
    pub fn new(cfg: &SignalConfig) -> Result<Transport, OtlpError> {
        let bad = |e: &dyn std::fmt::Display| {
            OtlpError::Config(format!("OTLP endpoint '{}': {e}", cfg.url))
        };
        let tls = cfg.url.starts_with("https://");
        match cfg.protocol {
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(cfg.url.clone())
                    .map_err(|e| bad(&e))?
                    .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
                    .timeout(cfg.timeout)
                    .tcp_nodelay(true);
                if tls {
                    let roots = trust(cfg)?;
                    endpoint = endpoint
                        .tls_config(
                            ClientTlsConfig::new()
                                .trust_anchors(roots.roots.iter().cloned())
                                .timeout(cfg.timeout.min(Duration::from_secs(10))),
                        )
                        .map_err(|e| bad(&e))?;
                }
                let mut headers = Vec::new();
                for (k, v) in &cfg.headers {
                    let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|e| OtlpError::Config(format!("OTLP header '{k}': {e}")))?;
                    let value = MetadataValue::try_from(v.as_str())
                        .map_err(|e| OtlpError::Config(format!("OTLP header '{k}': {e}")))?;
                    headers.push((key, value));
                }
                Ok(Transport::Grpc {
                    channel: endpoint.connect_lazy(),
                    headers,
                })
            }
            Protocol::HttpProtobuf => {
                let url: http::Uri = cfg.url.parse().map_err(|e| bad(&e))?;
                let mut headers = Vec::new();
                for (k, v) in &cfg.headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| OtlpError::Config(format!("OTLP header '{k}': {e}")))?;
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|e| OtlpError::Config(format!("OTLP header '{k}': {e}")))?;
                    headers.push((name, value));
                }
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(cfg.timeout.min(Duration::from_secs(5))));
                connector.set_nodelay(true);
                // The URL says TLS or not; http:// stays plain.
                connector.enforce_http(false);
                let roots = if tls {
                    trust(cfg)?
                } else {
                    RootCertStore::empty()
                };
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| bad(&e))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let connector = HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector);
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(connector);
                Ok(Transport::Http {
                    client,
                    url,
                    headers,
                    timeout: cfg.timeout,
                })
            }
        }
    }

    /// Sends spans; Ok(n) is how many the backend rejected in a partial success.
    pub async fn send_traces(&self, req: ExportTraceServiceRequest) -> Result<u64, SendError> {
        match self {
            Transport::Grpc {
                channel, headers, ..
            } => {
                let mut client = TraceServiceClient::new(channel.clone());
                let resp = client
                    .export(with_metadata(req, headers))
                    .await
                    .map_err(grpc_error)?;
                Ok(rejected_spans(resp.into_inner()))
            }
            Transport::Http { .. } => {
                let body = self.post(req.encode_to_vec()).await?;
                Ok(ExportTraceServiceResponse::decode(body)
                    .map(rejected_spans)
                    .unwrap_or(0))
            }
        }
    }

    /// Sends log records; Ok(n) is how many the backend rejected.
    pub async fn send_logs(&self, req: ExportLogsServiceRequest) -> Result<u64, SendError> {
        match self {
            Transport::Grpc {
                channel, headers, ..
            } => {
                let mut client = LogsServiceClient::new(channel.clone());
                let resp = client
                    .export(with_metadata(req, headers))
                    .await
                    .map_err(grpc_error)?;
                Ok(rejected_logs(resp.into_inner()))
            }
            Transport::Http { .. } => {
                let body = self.post(req.encode_to_vec()).await?;
                Ok(ExportLogsServiceResponse::decode(body)
                    .map(rejected_logs)
                    .unwrap_or(0))
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<Bytes, SendError> {
        let Transport::Http {
            client,
            url,
            headers,
            timeout,
        } = self
        else {
            unreachable!("post is only called for HTTP");
        };
        let mut req = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError {
                message: format!("building the request: {e}"),
                retryable: false,
            })?;
        for (k, v) in headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let exchange = async {
            let resp = client.request(req).await.map_err(|e| SendError {
                message: format!("HTTP request failed: {}", error_chain(&e)),
                retryable: true,
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, SendError>((status, body))
        };
        let (status, body) = tokio::time::timeout(*timeout, exchange)
            .await
            .map_err(|_| SendError {
                message: format!("no answer within {timeout:?}"),
                retryable: true,
            })??;
        if status.is_success() {
            return Ok(body);
        }
        // The specification's retryable HTTP codes; the rest drop the batch.
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Err(SendError {
            message: format!("HTTP {status}: {}", text.trim()),
            retryable,
        })
    }
}

fn with_metadata<T>(
    msg: T,
    headers: &[(
        MetadataKey<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )],
) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    for (k, v) in headers {
        req.metadata_mut().insert(k.clone(), v.clone());
    }
    req
}

fn grpc_error(s: tonic::Status) -> SendError {
    use tonic::Code;
    // The specification's retryable gRPC codes (RESOURCE_EXHAUSTED only with
    // retry info, which we do not parse: not retried).
    let retryable = matches!(
        s.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    );
    // The root cause says most ("Connection refused"); the layers between
    // repeat the status message.
    let mut message = format!("gRPC {:?}: {}", s.code(), s.message());
    let mut cause = std::error::Error::source(&s);
    while let Some(next) = cause.and_then(std::error::Error::source) {
        cause = Some(next);
    }
    if let Some(root) = cause.map(|c| c.to_string()) {
        if !message.contains(&root) {
            message.push_str(": ");
            message.push_str(&root);
        }
    }
    SendError { message, retryable }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn rejected_spans(r: ExportTraceServiceResponse) -> u64 {
    r.partial_success
        .map_or(0, |p| p.rejected_spans.max(0) as u64)
}

fn rejected_logs(r: ExportLogsServiceResponse) -> u64 {
    r.partial_success
        .map_or(0, |p| p.rejected_log_records.max(0) as u64)
}
