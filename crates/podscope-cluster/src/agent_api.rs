//! The agent's own API on `--listen`: GET /healthz and /readyz for the
//! kubelet (no token), and the gRPC service podscope.cluster.v1.Agent
//! (ListPods, Trace, Exec, Health; bearer token) for tools that talk to one
//! node directly.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agent::{lock, Agent, Link, DIRECT};
use crate::proto::{
    agent_message, agent_server, ControlRecord, EventBatch, ExecRequest, ExecResult, HealthReply,
    HealthRequest, ListPodsRequest, Pods, StartSession,
};

/// Binds `addr` and serves the API on the current runtime.
pub(crate) async fn serve(agent: Arc<Agent>, addr: &str) -> Result<()> {
    let tls = crate::tls::server_config(
        agent.args.listen_tls_cert.as_deref(),
        agent.args.listen_tls_key.as_deref(),
    )
    .context("--listen-tls-cert/--listen-tls-key")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for --listen"))?;
    let local = tcp.local_addr()?;
    let listener = crate::tls::HubListener::new(tcp, tls)?;
    let grpc = agent_server::AgentServer::with_interceptor(
        Api {
            agent: agent.clone(),
        },
        crate::auth::RequireBearer(agent.token.as_str().into()),
    );
    let ready = agent.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let a = ready.clone();
                async move {
                    if lock(&a.link).is_some() {
                        (StatusCode::OK, format!("linked to the hub {}\n", a.hub))
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not linked to the hub {} (yet)\n", a.hub),
                        )
                    }
                    .into_response()
                }
            }),
        )
        .route_service("/podscope.cluster.v1.Agent/{*rest}", grpc);
    eprintln!(
        "podscope agent: API on {scheme}://{local} (/healthz, /readyz, gRPC podscope.cluster.v1.Agent)"
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("podscope agent: the API server stopped: {e}");
        }
    });
    Ok(())
}

struct Api {
    agent: Arc<Agent>,
}

type TraceStream = ReceiverStream<Result<EventBatch, Status>>;

#[tonic::async_trait]
impl agent_server::Agent for Api {
    async fn list_pods(&self, _: Request<ListPodsRequest>) -> Result<Response<Pods>, Status> {
        Ok(Response::new(Pods {
            pods: self.agent.pods().await.iter().map(Into::into).collect(),
        }))
    }

    type TraceStream = TraceStream;

    async fn trace(&self, req: Request<StartSession>) -> Result<Response<TraceStream>, Status> {
        let mut s = req.into_inner();
        if s.probes.is_empty() {
            return Err(Status::invalid_argument(
                "StartSession.probes names no probe (e.g. [\"exec\"])",
            ));
        }
        let n = self.agent.direct.fetch_add(1, Ordering::Relaxed);
        s.session = format!("{DIRECT}{n}");
        s.run = 1;
        // The trace's records come through a link of its own, as they would
        // go to the hub, and are turned into the call's stream here.
        let (atx, mut arx) = mpsc::channel::<crate::agent::Out>(64);
        let link: Link = Arc::new(Mutex::new(Some(atx)));
        self.agent.start_with(s.clone(), link);
        let (tx, rx) = mpsc::channel(16);
        let agent = self.agent.clone();
        tokio::spawn(async move {
            while let Some(m) = arx.recv().await {
                // The call's stream takes the events over from here.
                let (batch, last) = match m.into_msg().msg {
                    Some(agent_message::Msg::Events(b)) => (b, false),
                    Some(agent_message::Msg::Status(st)) => {
                        let last = st.state == "finished" || st.state == "failed";
                        let mut records = vec![crate::records::control(ControlRecord {
                            kind: "status".into(),
                            node: Some(agent.node.clone()),
                            state: Some(st.state),
                            message: (!st.error.is_empty()).then_some(st.error),
                            probe_gaps: st.gaps,
                            ..Default::default()
                        })];
                        records.extend(st.summary.map(crate::records::summary));
                        (
                            EventBatch {
                                session: st.session,
                                run: st.run,
                                records,
                            },
                            last,
                        )
                    }
                    _ => continue,
                };
                if tx.send(Ok(batch)).await.is_err() {
                    // The caller went away: stop the trace.
                    agent.stop(&s.session, None);
                    break;
                }
                if last {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResult>, Status> {
        let r = req.into_inner();
        if !self.agent.args.enable_exec {
            eprintln!(
                "podscope agent: refused exec in {}/{} through the agent API: disabled",
                r.namespace, r.pod
            );
            return Err(Status::permission_denied(format!(
                "exec is disabled on node {}: its agent runs without --enable-exec",
                self.agent.node
            )));
        }
        if let Err(e) = crate::api::check_exec_target(&r.namespace, &r.pod, &r.command) {
            return Err(Status::invalid_argument(e));
        }
        let agent = self.agent.clone();
        let res = tokio::task::spawn_blocking(move || agent.exec(&r))
            .await
            .map_err(|e| Status::internal(format!("exec task: {e}")))?;
        Ok(Response::new(res))
    }

    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        let a = &self.agent;
        Ok(Response::new(HealthReply {
            node: a.node.clone(),
            linked: lock(&a.link).is_some(),
            hub: a.hub.clone(),
            traces: lock(&a.sessions).len() as u64,
            version: env!("CARGO_PKG_VERSION").into(),
            exec_enabled: a.args.enable_exec,
        }))
    }
}
