//! Sending one export request: OTLP/gRPC through tonic's channel, or
//! OTLP/HTTP (protobuf bodies) through hyper's client; both reconnect by
//! themselves when the backend comes back.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

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
        /// Pooled HTTP/1.1 client.
        client: Client<HttpConnector, Full<Bytes>>,
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

impl Transport {
    /// Builds the client; connects on first use (must run inside the runtime).
    pub fn new(cfg: &SignalConfig) -> Result<Transport, OtlpError> {
        let bad = |e: &dyn std::fmt::Display| {
            OtlpError::Config(format!("OTLP endpoint '{}': {e}", cfg.url))
        };
        match cfg.protocol {
            Protocol::Grpc => {
                let endpoint = Endpoint::from_shared(cfg.url.clone())
                    .map_err(|e| bad(&e))?
                    .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
                    .timeout(cfg.timeout)
                    .tcp_nodelay(true);
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
