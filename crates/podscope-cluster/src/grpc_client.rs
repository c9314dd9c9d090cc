//! The CLI's gRPC transport to the hub (`--hub-api grpc`): the hub's typed
//! operations over service HubApi, each answering with the API's typed
//! values (`crate::wire` converts) or a [`CallError`] in the REST API's
//! words, so the CLI's logic is the same over both APIs.

use std::time::Duration;

use anyhow::{Context, Result};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::api::{
    ApiError, CreateSession, Deleted, ErrorKind, ExecBody, ExecView, NodePod, PodQuery, SessionView,
};
use crate::auth::Bearer;
use crate::client::CallError;
use crate::proto::hub_api_client::HubApiClient;
use crate::proto::{self, RecordBatch};
use crate::records::Received;
use crate::tls::ClientTls;

type Client = HubApiClient<InterceptedService<Channel, Bearer>>;

/// HTTP/2 pings on the channel: one after this much silence...
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ...and the connection counts as dead when a ping is not answered within this.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the hub's HubApi service.
pub(crate) struct GrpcHub {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// For the words of a failed connection.
    url: String,
    tls: Option<ClientTls>,
}

impl std::fmt::Debug for GrpcHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcHub")
    }
}

impl GrpcHub {
    /// Connects lazily: the first call reports an unreachable hub.
    pub(crate) fn new(url: &str, token: &str, tls: Option<&ClientTls>) -> Result<GrpcHub> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the gRPC client's runtime")?;
        let mut ep = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("'{url}' is not a hub URL (e.g. http://hub:7700)"))?
            .connect_timeout(Duration::from_secs(5))
            // A hub that stops answering (frozen, or its network gone)
            // fails the call, a stream included, within about 10 s.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            ep = ep
                .tls_config(tls.tonic_config())
                .context("configuring TLS for the hub")?;
        }
        let channel = {
            let _guard = rt.enter();
            ep.connect_lazy()
        };
        Ok(GrpcHub {
            url: url.to_string(),
            tls: tls.cloned(),
            rt,
            client: HubApiClient::with_interceptor(channel, Bearer::new(token)?),
        })
    }

    /// Runs one call, or fails after `limit` naming the call: a hub that
    /// accepts and never answers must not hang the CLI. The hub's own
    /// errors come back as [`CallError::Api`], with the REST API's words.
    fn run<T>(
        &self,
        what: &str,
        limit: Duration,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CallError> {
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(limit, call).await })
            .map_err(|_| {
                CallError::Other(anyhow::anyhow!(
                    "{what}: no answer within {}s (the server accepted the connection but did not answer; is it a podscope hub, and is it stuck?)",
                    limit.as_secs()
                ))
            })?;
        r.map(tonic::Response::into_inner)
            .map_err(|st| self.status(st))
    }

    /// A failed call as the CLI reports it: a call that never reached the
    /// hub is a transport error (as a failed connection is over REST).
    fn status(&self, st: tonic::Status) -> CallError {
        use std::error::Error;
        if st.code() == tonic::Code::Unavailable && st.source().is_some() {
            if let Some(m) =
                crate::tls::explain(crate::tls::chain(&st), &self.url, self.tls.as_ref())
            {
                return CallError::Other(anyhow::anyhow!("{m}"));
            }
            return CallError::Other(anyhow::anyhow!("{}", error_text(&st)));
        }
        let error = ApiError::new(ErrorKind::from_grpc_code(st.code()), st.message());
        // The caller names the operation (`Hub::grpc_err`).
        CallError::Api {
            status: error.kind.http_status(),
            what: String::new(),
            error,
        }
    }

    pub(crate) fn list_pods(
        &self,
        q: PodQuery,
        limit: Duration,
    ) -> Result<Vec<NodePod>, CallError> {
        let mut c = self.client.clone();
        let l = self.run(
            "HubApi.ListPods, as GET /v1/pods",
            limit,
            c.list_pods(proto::PodQuery::from(q)),
        )?;
        l.pods
            .into_iter()
            .map(|p| {
                NodePod::try_from(p)
                    .map_err(|e| CallError::Other(anyhow::anyhow!("HubApi.ListPods: {e}")))
            })
            .collect()
    }

    pub(crate) fn create_session(
        &self,
        req: CreateSession,
        limit: Duration,
    ) -> Result<SessionView, CallError> {
        let mut c = self.client.clone();
        let v = self.run(
            "HubApi.CreateSession, as POST /v1/sessions",
            limit,
            c.create_session(proto::CreateSessionRequest::from(req)),
        )?;
        Ok(v.into())
    }

    pub(crate) fn update_session(
        &self,
        id: &str,
        state: &str,
        limit: Duration,
    ) -> Result<SessionView, CallError> {
        let mut c = self.client.clone();
        let u = proto::SessionUpdate {
            id: id.to_string(),
            state: state.to_string(),
        };
        Ok(self
            .run(
                &format!("HubApi.UpdateSession, as PUT /v1/sessions/{id}"),
                limit,
                c.update_session(u),
            )?
            .into())
    }

    pub(crate) fn delete_session(&self, id: &str, limit: Duration) -> Result<Deleted, CallError> {
        let mut c = self.client.clone();
        let r = proto::SessionId { id: id.to_string() };
        Ok(self
            .run(
                &format!("HubApi.DeleteSession, as DELETE /v1/sessions/{id}"),
                limit,
                c.delete_session(r),
            )?
            .into())
    }

    pub(crate) fn exec(&self, body: ExecBody, limit: Duration) -> Result<ExecView, CallError> {
        let mut c = self.client.clone();
        Ok(self
            .run(
                "HubApi.Exec, as POST /v1/exec",
                limit,
                c.exec(proto::ExecCall::from(body)),
            )?
            .into())
    }

    /// A session's records, typed, as they arrive. The start
    /// must answer within `limit`; then a silence of `idle` (if given) ends
    /// the stream with an error. The channel's HTTP/2 keep-alive pings find
    /// a hub that stopped answering without it.
    pub(crate) fn stream_events(
        &self,
        id: &str,
        limit: Duration,
        idle: Option<Duration>,
    ) -> Result<RecordStream, CallError> {
        let mut c = self.client.clone();
        let r = proto::SessionId { id: id.to_string() };
        let what = format!("HubApi.StreamEvents, as GET /v1/sessions/{id}/events");
        let s = self.run(&what, limit, c.stream_events(r))?;
        Ok(RecordStream::spawn(&self.rt, s, idle, &what))
    }
}

/// An error and its sources in words, each said once: tonic, hyper and
/// rustls each repeat their source's text in their own.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in crate::tls::chain(e) {
        let t = match e.downcast_ref::<tonic::Status>() {
            Some(st) => st.message().to_string(),
            None => e.to_string(),
        };
        let t = t.trim().to_string();
        if t.is_empty() || parts.iter().any(|p| p.contains(&t)) {
            continue;
        }
        // A later, longer text that contains an earlier one replaces it.
        parts.retain(|p| !t.contains(p.as_str()));
        parts.push(t);
    }
    parts.join(": ")
}

/// A session's records as they arrive on the gRPC stream, typed: the
/// stream's task converts each batch to model events, the caller takes them
/// one by one.
pub(crate) struct RecordStream {
    /// Batches of records, or why the stream broke.
    rx: tokio::sync::mpsc::Receiver<Result<Vec<Received>, String>>,
    batch: std::vec::IntoIter<Received>,
    rt: tokio::runtime::Handle,
    /// Silence after which a read fails, and the call, for the message.
    idle: Option<(Duration, String)>,
}

impl RecordStream {
    fn spawn(
        rt: &tokio::runtime::Runtime,
        mut s: tonic::Streaming<RecordBatch>,
        idle: Option<Duration>,
        what: &str,
    ) -> RecordStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<Received>, String>>(1024);
        let call = what.to_string();
        rt.spawn(async move {
            loop {
                let m = match s.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(st) => {
                        // E.g. the keep-alive pings went unanswered: say so.
                        let why = format!("{call}: the stream broke: {}", error_text(&st));
                        let _ = tx.send(Err(why)).await;
                        break;
                    }
                };
                let batch = m.records.into_iter().map(Received::from_record).collect();
                if tx.send(Ok(batch)).await.is_err() {
                    break;
                }
            }
        });
        RecordStream {
            rx,
            batch: Vec::new().into_iter(),
            rt: rt.handle().clone(),
            idle: idle.map(|d| (d, what.to_string())),
        }
    }

    /// The next record; `None` at the stream's end.
    pub(crate) fn next_record(&mut self) -> Option<std::io::Result<Received>> {
        loop {
            if let Some(r) = self.batch.next() {
                return Some(Ok(r));
            }
            let next = match &self.idle {
                None => self.rx.blocking_recv(),
                Some((d, what)) => {
                    let (d, rx) = (*d, &mut self.rx);
                    match self
                        .rt
                        .block_on(async { tokio::time::timeout(d, rx.recv()).await })
                    {
                        Ok(n) => n,
                        Err(_) => {
                            return Some(Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!(
                                    "{what}: nothing arrived for {:.1}s (idle stream, past the deadline of --duration)",
                                    d.as_secs_f64()
                                ),
                            )))
                        }
                    }
                }
            };
            match next {
                Some(Ok(b)) => self.batch = b.into_iter(),
                Some(Err(why)) => {
                    return Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        why,
                    )))
                }
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_texts_say_each_thing_once() {
        let inner = E("received corrupt message of type InvalidContentType", None);
        let mid = E(
            "transport error: received corrupt message of type InvalidContentType",
            Some(Box::new(inner)),
        );
        let st = tonic::Status::from_error(Box::new(mid));
        let t = error_text(&st);
        assert_eq!(t.matches("InvalidContentType").count(), 1, "{t}");
        let e = E("connection reset", Some(Box::new(E("broken pipe", None))));
        assert_eq!(error_text(&e), "connection reset: broken pipe");
    }
}
