//! A real OTLP/gRPC receiver for the tests: the official protocol
//! definitions' generated TraceService/LogsService servers (opentelemetry-proto
//! on tonic) on a loopback port, keeping everything they receive.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::codegen::http;

use super::wait_for;

pub fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| value(&Some(v.clone())))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}

pub fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(&kv.value)))
        .collect()
}

/// What a receiver got: requests with their headers (gRPC metadata).
#[derive(Default)]
pub struct Store {
    pub traces: Mutex<Vec<(HashMap<String, String>, ExportTraceServiceRequest)>>,
    pub logs: Mutex<Vec<(HashMap<String, String>, ExportLogsServiceRequest)>>,
}

/// One received span with its resource's attributes and the request headers.
#[derive(Debug, Clone)]
pub struct Got {
    pub resource: BTreeMap<String, String>,
    pub attrs: BTreeMap<String, String>,
    pub headers: HashMap<String, String>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct GotLog {
    pub resource: BTreeMap<String, String>,
    pub attrs: BTreeMap<String, String>,
    pub headers: HashMap<String, String>,
    pub record: LogRecord,
}

impl Store {
    pub fn spans(&self) -> Vec<Got> {
        let mut out = Vec::new();
        for (headers, req) in self.traces.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let resource = attrs(&rs.resource.clone().unwrap_or_default().attributes);
                for ss in &rs.scope_spans {
                    assert_eq!(ss.scope.as_ref().unwrap().name, "podscope");
                    for span in &ss.spans {
                        out.push(Got {
                            resource: resource.clone(),
                            attrs: attrs(&span.attributes),
                            headers: headers.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Every span from any instrumentation scope (an application's own SDK
    /// spans beside podscope's), with its scope's name.
    pub fn spans_of_any_scope(&self) -> Vec<(String, Got)> {
        let mut out = Vec::new();
        for (headers, req) in self.traces.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let resource = attrs(&rs.resource.clone().unwrap_or_default().attributes);
                for ss in &rs.scope_spans {
                    let scope = ss
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for span in &ss.spans {
                        out.push((
                            scope.clone(),
                            Got {
                                resource: resource.clone(),
                                attrs: attrs(&span.attributes),
                                headers: headers.clone(),
                                span: span.clone(),
                            },
                        ));
                    }
                }
            }
        }
        out
    }

    pub fn logs(&self) -> Vec<GotLog> {
        let mut out = Vec::new();
        for (headers, req) in self.logs.lock().unwrap().iter() {
            for rl in &req.resource_logs {
                let resource = attrs(&rl.resource.clone().unwrap_or_default().attributes);
                for sl in &rl.scope_logs {
                    for record in &sl.log_records {
                        out.push(GotLog {
                            resource: resource.clone(),
                            attrs: attrs(&record.attributes),
                            headers: headers.clone(),
                            record: record.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

struct Recv(Arc<Store>);

fn metadata(m: &tonic::metadata::MetadataMap) -> HashMap<String, String> {
    m.clone()
        .into_headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Recv {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let md = metadata(req.metadata());
        self.0.traces.lock().unwrap().push((md, req.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Recv {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let md = metadata(req.metadata());
        self.0.logs.lock().unwrap().push((md, req.into_inner()));
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// Both generated services on one port, routed by gRPC path (what tonic's
/// router does, without building axum for it).
#[derive(Clone)]
struct Both {
    traces: TraceServiceServer<Recv>,
    logs: LogsServiceServer<Recv>,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Both {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFut<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req
            .uri()
            .path()
            .starts_with("/opentelemetry.proto.collector.logs.")
        {
            Box::pin(self.logs.call(req))
        } else {
            Box::pin(self.traces.call(req))
        }
    }
}

/// An OTLP/gRPC receiver on a loopback port, in its own thread and runtime.
pub struct GrpcReceiver {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcReceiver {
    pub fn start(addr: SocketAddr) -> GrpcReceiver {
        GrpcReceiver::start_with(addr, None)
    }

    /// With `tls` (certificate and key PEM), the receiver speaks TLS only.
    pub fn start_with(addr: SocketAddr, tls: Option<(Vec<u8>, Vec<u8>)>) -> GrpcReceiver {
        let store = Arc::new(Store::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = Both {
            traces: TraceServiceServer::new(Recv(store.clone())),
            logs: LogsServiceServer::new(Recv(store.clone())),
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut server = tonic::transport::Server::builder();
                if let Some((cert, key)) = tls {
                    server = server
                        .tls_config(
                            tonic::transport::ServerTlsConfig::new()
                                .identity(tonic::transport::Identity::from_pem(cert, key)),
                        )
                        .unwrap();
                }
                server
                    .serve_with_shutdown(addr, svc, async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap_or_else(|e| panic!("OTLP receiver on {addr}: {e}"));
            });
        });
        wait_for(
            "the OTLP receiver to listen",
            Duration::from_secs(10),
            || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
        );
        GrpcReceiver {
            addr,
            store,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving (graceful: in-flight requests finish) and frees the port.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for GrpcReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}
