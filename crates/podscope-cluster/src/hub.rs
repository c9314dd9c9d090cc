//! The hub: a registry of agents and their pods, trace sessions, the REST API
//! (axum) and the agents' gRPC link, all on one port.
//!
//! State lives in memory only, yet sessions survive a hub restart: the
//! agents keep their traces running for a grace period and report them when
//! they re-register, and the new hub adopts them under their old ids. A hub
//! stopped with SIGTERM/SIGINT tells every stream to reconnect.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use podscope_model::ProbeKind;
use podscope_runtime::Pod;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use crate::api::{
    CreateSession, ErrorBody, NodePod, NodeSession, NodeView, Selection, SessionSpec, SessionView,
    UpdateSession,
};
use crate::proto::{
    agent_message, hub_api_server, hub_message, hub_server, AgentMessage, ExecRequest, ExecResult,
    HubMessage, Json as JsonMsg, Query as QueryMsg, SessionId, SessionUpdate, StartSession,
    StopSession,
};

/// `podscope hub`.
#[derive(Debug, Clone, clap::Args)]
pub struct HubArgs {
    /// Address for REST and the agents' gRPC link.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7700")]
    pub listen: SocketAddr,

    /// Allow exec through the hub (agents need --enable-exec too). Off by default.
    #[arg(long)]
    pub enable_exec: bool,

    /// Records buffered per streaming client before the hub counts gaps for
    /// it. The default holds about 0.3 s at 200,000 events/s, about 25 MB
    /// when full.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub client_queue: usize,

    /// Serve TLS only on --listen, with this certificate chain (PEM; needs
    /// --tls-key). ALPN offers h2 (the agents' gRPC) and http/1.1 (REST).
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

/// What a streaming client receives: NDJSON lines.
type Line = Arc<str>;

/// One streaming client. Events are bounded per client (`--client-queue`):
/// a client that reads too slowly misses events, counted per probe and
/// reported to it as `gap` records once it has room again. Control records
/// (summaries, gaps, `end`, `interrupted`) always get through, in order.
struct Subscriber {
    /// Records go in batches: one message (and one HTTP chunk) per agent batch.
    tx: mpsc::UnboundedSender<Vec<Line>>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    /// Missed and not yet reported: probe -> count.
    missed: BTreeMap<String, u64>,
    missed_total: BTreeMap<String, u64>,
}

impl Subscriber {
    /// Queues what fits of a batch of events (probe Some) and `lost` records
    /// (probe None); the events that do not fit are counted as missed. False
    /// when the client has gone.
    fn offer(&mut self, items: &[(Line, Option<&str>)]) -> bool {
        let room = self
            .limit
            .saturating_sub(self.queued.load(Ordering::Relaxed));
        let mut out = Vec::with_capacity(items.len().min(room) + 1);
        for (line, probe) in items {
            if out.len() >= room {
                if let Some(p) = probe {
                    *self.missed.entry(p.to_string()).or_default() += 1;
                }
                continue;
            }
            if out.is_empty() {
                self.missed_records(&mut out);
            }
            out.push(line.clone());
        }
        if out.is_empty() {
            return !self.tx.is_closed();
        }
        self.queued.fetch_add(out.len(), Ordering::Relaxed);
        self.tx.send(out).is_ok()
    }

    /// `gap` records for what this client missed so far.
    fn missed_records(&mut self, out: &mut Vec<Line>) {
        for (p, n) in std::mem::take(&mut self.missed) {
            let total = self.missed_total.entry(p.clone()).or_default();
            *total += n;
            let rec =
                json!({"kind": "gap", "where": "hub", "probe": p, "gap": n, "gap_total": *total});
            out.push(rec.to_string().into());
        }
    }

    /// Queues a control record, whatever the client's backlog; missed events are reported first.
    fn must(&mut self, line: Line) {
        let mut out = Vec::new();
        self.missed_records(&mut out);
        out.push(line);
        self.queued.fetch_add(out.len(), Ordering::Relaxed);
        let _ = self.tx.send(out);
    }
}

struct NodeEntry {
    kernel: String,
    probes: Vec<String>,
    pods: Vec<Pod>,
    up: bool,
    registered: SystemTime,
    last_seen: SystemTime,
    exec_enabled: bool,
    version: String,
    tx: Option<mpsc::Sender<Result<HubMessage, Status>>>,
    /// Which connection is current, so a stale one's end does not mark a re-registered node down.
    conn: u64,
    /// The agent process behind the link (Hello.instance; empty from older agents).
    instance: String,
}

struct Session {
    id: String,
    spec: SessionSpec,
    state: &'static str,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
    stopped_at: Option<SystemTime>,
    stop_reason: Option<String>,
    run: u64,
    nodes: BTreeMap<String, NodeSession>,
    subscribers: Vec<Subscriber>,
    /// Adopted from the agents after a hub restart (its counts start then).
    resumed: bool,
}

const FINAL: [&str; 3] = ["finished", "failed", "lost"];

impl Session {
    fn view(&self) -> SessionView {
        SessionView {
            id: self.id.clone(),
            state: self.state.to_string(),
            spec: self.spec.clone(),
            created_at: rfc3339(self.created_at),
            started_at: self.started_at.map(rfc3339),
            stopped_at: self.stopped_at.map(rfc3339),
            stop_reason: self.stop_reason.clone(),
            run: self.run,
            events: self.nodes.values().map(|n| n.events).sum(),
            lost: self.nodes.values().map(|n| n.lost).sum(),
            gaps: self.nodes.values().flat_map(|n| n.gaps.values()).sum(),
            nodes: self.nodes.clone(),
            resumed: self.resumed,
        }
    }

    fn broadcast(&mut self, items: &[(Line, Option<&str>)]) {
        self.subscribers.retain_mut(|s| s.offer(items));
    }

    fn control(&mut self, rec: Value) {
        let line: Line = rec.to_string().into();
        for s in &mut self.subscribers {
            s.must(line.clone());
        }
    }

    fn start_message(&self) -> HubMessage {
        let sel = &self.spec.selection;
        HubMessage {
            msg: Some(hub_message::Msg::Start(StartSession {
                session: self.id.clone(),
                run: self.run,
                probes: self.spec.probes.clone(),
                pod: sel.pod.clone().unwrap_or_default(),
                namespace: sel.namespace.clone().unwrap_or_default(),
                all_namespaces: sel.all_namespaces,
                label_selector: sel.selector.clone().unwrap_or_default(),
                container: sel.container.clone().unwrap_or_default(),
                duration: self.spec.duration.clone().unwrap_or_default(),
                deadline_unix_ms: match (self.started_at, self.spec.duration_ms) {
                    (Some(t), Some(ms)) => unix_ms(t) + ms,
                    _ => 0,
                },
                started_unix_ms: self.started_at.map(unix_ms).unwrap_or(0),
            })),
        }
    }

    /// Whether a node with these pods should run this session: only nodes
    /// with a matching pod get it (and nodes that gain one later, see
    /// `join_matching`).
    fn wants(&self, pods: &[Pod]) -> bool {
        !self.spec.selection.select(pods).is_empty()
    }

    /// Starts a running session on `node` if it is not part of this run yet
    /// (or was lost: its agent came back) and has a matching pod.
    fn join_if_matching(&mut self, node: &str, entry: &NodeEntry) -> bool {
        let joined = self.nodes.get(node).is_some_and(|n| n.state != "lost");
        if self.state != "running" || joined || !self.wants(&entry.pods) {
            return false;
        }
        // A node that comes back keeps the counts of its earlier part.
        let ns = self.nodes.entry(node.to_string()).or_default();
        ns.state = "starting".into();
        ns.error = None;
        send_to(entry, self.start_message());
        true
    }

    /// After a stop: once every node is final, the session is stopped and the streams end.
    fn check_done(&mut self) {
        if self.state == "stopping"
            && self
                .nodes
                .values()
                .all(|n| FINAL.contains(&n.state.as_str()))
        {
            self.state = "stopped";
            self.stopped_at = Some(SystemTime::now());
            let rec = json!({"kind": "end", "session": self.id, "state": "stopped",
                "reason": self.stop_reason, "events": self.view().events, "gaps": self.view().gaps});
            self.control(rec);
            self.subscribers.clear();
        }
    }
}

struct HubState {
    boot: String,
    next_id: u64,
    next_conn: u64,
    nodes: BTreeMap<String, NodeEntry>,
    sessions: BTreeMap<String, Session>,
    /// Exec requests waiting for their agent's answer: id -> (node, answer).
    execs: BTreeMap<String, (String, tokio::sync::oneshot::Sender<ExecResult>)>,
}

/// The hub's shared state and settings.
#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<HubState>>,
    token: Arc<str>,
    enable_exec: bool,
    client_queue: usize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

fn send_to(node: &NodeEntry, msg: HubMessage) {
    if let Some(tx) = &node.tx {
        // Control messages are rare; a full link means the agent is stuck and will be dropped.
        let _ = tx.try_send(Ok(msg));
    }
}

impl Hub {
    /// A hub with this bearer token.
    pub fn new(token: String, enable_exec: bool, client_queue: usize) -> Hub {
        let boot = format!(
            "{:06x}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros()
                & 0xff_ffff
        );
        Hub {
            state: Arc::new(Mutex::new(HubState {
                boot,
                next_id: 1,
                execs: BTreeMap::new(),
                next_conn: 1,
                nodes: BTreeMap::new(),
                sessions: BTreeMap::new(),
            })),
            token: token.into(),
            enable_exec,
            client_queue: client_queue.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The axum router: REST, health, OpenAPI and the gRPC service.
    pub fn router(&self) -> Router {
        let grpc = hub_server::HubServer::new(self.clone());
        let grpc_api = hub_api_server::HubApiServer::with_interceptor(
            GrpcApi(self.clone()),
            crate::auth::RequireBearer(self.token.clone()),
        );
        let api = Router::new()
            .route("/openapi.json", get(openapi))
            .route("/v1/nodes", get(nodes))
            .route("/v1/pods", get(pods))
            .route("/v1/probes", get(probes))
            .route("/v1/sessions", post(create).get(list).delete(delete_all))
            .route(
                "/v1/sessions/{id}",
                get(get_one).put(update).delete(delete_one),
            )
            .route("/v1/sessions/{id}/events", get(events))
            .route("/v1/exec", post(exec))
            .layer(middleware::from_fn(require_json_body))
            .layer(middleware::from_fn_with_state(self.clone(), require_token));
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(|| async { "ok\n" }))
            .merge(api)
            // The agents' link; authenticated in `connect` (gRPC status UNAUTHENTICATED).
            .route_service("/podscope.cluster.v1.Hub/{*rest}", grpc)
            // The REST operations over gRPC.
            .route_service("/podscope.cluster.v1.HubApi/{*rest}", grpc_api)
            .fallback(no_such_path)
            .layer(middleware::from_fn(json_errors))
            .with_state(self.clone())
    }

    /// Start a session's run on every connected agent that has a matching pod.
    fn start_session(&self, st: &mut HubState, id: &str) {
        let Some(s) = st.sessions.get_mut(id) else {
            return;
        };
        if s.state == "running" || s.state == "stopping" {
            return;
        }
        s.run += 1;
        s.state = "running";
        s.started_at = Some(SystemTime::now());
        s.stopped_at = None;
        s.stop_reason = None;
        s.nodes.clear();
        for (name, n) in st.nodes.iter().filter(|(_, n)| n.up) {
            s.join_if_matching(name, n);
        }
        if let Some(ms) = s.spec.duration_ms {
            let (hub, id, run) = (self.clone(), id.to_string(), s.run);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let mut st = hub.lock();
                if st.sessions.get(&id).is_some_and(|s| s.run == run) {
                    stop_session(&mut st, &id, "duration");
                }
            });
        }
    }
}

fn stop_session(st: &mut HubState, id: &str, reason: &str) {
    let Some(s) = st.sessions.get_mut(id) else {
        return;
    };
    if s.state != "running" {
        return;
    }
    s.state = "stopping";
    s.stop_reason = Some(reason.to_string());
    let msg = HubMessage {
        msg: Some(hub_message::Msg::Stop(StopSession {
            session: id.to_string(),
            run: s.run,
        })),
    };
    for (name, ns) in s.nodes.iter_mut() {
        if FINAL.contains(&ns.state.as_str()) {
            continue;
        }
        match st.nodes.get(name) {
            Some(n) if n.up => {
                ns.state = "stopping".into();
                send_to(n, msg.clone());
            }
            _ => {
                ns.state = "lost".into();
                ns.error
                    .get_or_insert_with(|| format!("node {name} is down"));
            }
        }
    }
    s.check_done();
}

async fn require_token(State(hub): State<Hub>, req: Request, next: Next) -> Response {
    let ok = [header::AUTHORIZATION.as_str(), crate::auth::PROXY_HEADER]
        .iter()
        .any(|name| {
            let given = req.headers().get(*name).and_then(|v| v.to_str().ok());
            crate::auth::bearer_ok(given, &hub.token)
        });
    if !ok {
        let mut r = err(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        return r;
    }
    next.run(req).await
}

/// The largest request body the REST API reads (axum's default limit).
const MAX_BODY: usize = 2 << 20;

async fn no_such_path(req: Request) -> Response {
    err(
        StatusCode::NOT_FOUND,
        format!(
            "no such path: {} {}; the API is under /v1 (GET /openapi.json lists every path)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A request body that is not JSON is refused (415) before a handler
/// parses it: the API only reads JSON. A body without a Content-Type is
/// read as JSON (simple clients), one that says otherwise is not.
async fn require_json_body(req: Request, next: Next) -> Response {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
    let has_body = matches!(req.method().as_str(), "POST" | "PUT" | "PATCH");
    if let Some(ct) = ct.filter(|_| has_body) {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return err(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "{} {} takes a JSON body: send 'Content-Type: application/json', not '{ct}'",
                    req.method(),
                    req.uri().path()
                ),
            );
        }
    }
    next.run(req).await
}

/// The methods a REST path takes, for a 405 (axum does not say).
fn allowed_methods(path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["v1", "sessions"] => "GET, POST, DELETE",
        ["v1", "sessions", _] => "GET, PUT, DELETE",
        ["v1", "exec"] => "POST",
        _ => "GET",
    }
}

/// Every REST error answer in the documented shape `{"error": "..."}`,
/// including the ones axum makes itself (405 for a method a path does not
/// take, 413 for a body over the limit, its extractors' rejections). gRPC
/// answers are left alone.
async fn json_errors(req: Request, next: Next) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let r = next.run(req).await;
    let status = r.status();
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if grpc || json || !(status.is_client_error() || status.is_server_error()) {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let msg = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = allowed_methods(&path);
            if let Ok(v) = header::HeaderValue::from_str(allow) {
                parts.headers.insert(header::ALLOW, v);
            }
            format!("{method} is not allowed on {path}; it takes {allow}")
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body of {method} {path} is too large: at most {} MiB",
            MAX_BODY >> 20
        ),
        _ if text.is_empty() => format!(
            "{method} {path}: {}",
            status.canonical_reason().unwrap_or("error")
        ),
        _ => text,
    };
    let body = serde_json::to_vec(&ErrorBody { error: msg }).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

async fn nodes(State(hub): State<Hub>) -> Json<Vec<NodeView>> {
    let st = hub.lock();
    Json(
        st.nodes
            .iter()
            .map(|(name, n)| NodeView {
                node: name.clone(),
                state: if n.up { "up" } else { "down" }.into(),
                kernel: n.kernel.clone(),
                probes: n.probes.clone(),
                pods: n.pods.len(),
                last_seen: rfc3339(n.last_seen),
                registered: rfc3339(n.registered),
                exec_enabled: n.exec_enabled,
                version: n.version.clone(),
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodQuery {
    pod: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    all_namespaces: bool,
    selector: Option<String>,
    container: Option<String>,
    node: Option<String>,
}

async fn pods(State(hub): State<Hub>, q: Result<Query<PodQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("bad query ({e}); allowed are pod, namespace, all_namespaces=true, selector, container, node")),
    };
    // No filter at all lists every namespace, as `podscope ps` does.
    let any =
        q.pod.is_some() || q.namespace.is_some() || q.selector.is_some() || q.container.is_some();
    let sel = match Selection::new(
        q.pod,
        q.namespace,
        q.all_namespaces || !any,
        q.selector,
        q.container,
    ) {
        Ok(s) => s,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let st = hub.lock();
    let mut out = Vec::new();
    for (name, n) in &st.nodes {
        if q.node.as_ref().is_some_and(|want| want != name) {
            continue;
        }
        for pod in sel.select(&n.pods) {
            out.push(NodePod {
                node: name.clone(),
                pod,
            });
        }
    }
    Json(out).into_response()
}

async fn probes(State(hub): State<Hub>) -> Json<Vec<Value>> {
    let st = hub.lock();
    Json(
        ProbeKind::ALL
            .iter()
            .map(|p| {
                let supported: Vec<&String> = st
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.probes.iter().any(|x| x == p.name()))
                    .map(|(k, _)| k)
                    .collect();
                json!({"probe": p.name(), "description": p.description(), "nodes": supported})
            })
            .collect(),
    )
}

async fn create(State(hub): State<Hub>, body: Bytes) -> Response {
    let req: CreateSession = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return err(StatusCode::BAD_REQUEST, format!("malformed session request: {e}; expected e.g. {{\"namespace\":\"shop\",\"pod\":\"web-*\",\"probes\":[\"tcp\"],\"duration\":\"60s\"}}"))
        }
    };
    let spec = match req.validate() {
        Ok(s) => s,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let mut st = hub.lock();
    if req.wait == Some(false) {
        // As `podscope trace` on a node: a selection that matches nothing
        // is a mistake to show, not a session that waits in silence.
        let known: Vec<NodePod> = st
            .nodes
            .iter()
            .filter(|(_, n)| n.up)
            .flat_map(|(name, n)| {
                n.pods.iter().map(|p| NodePod {
                    node: name.clone(),
                    pod: p.clone(),
                })
            })
            .collect();
        if let Some(msg) = spec.selection.no_match(&known) {
            return err(
                StatusCode::NOT_FOUND,
                format!(
                    "nothing to trace (add --wait, or \"wait\": true, to wait for matching pods): {msg}"
                ),
            );
        }
    }
    let id = format!("{}-{}", st.boot, st.next_id);
    st.next_id += 1;
    st.sessions.insert(
        id.clone(),
        Session {
            id: id.clone(),
            spec,
            state: "created",
            created_at: SystemTime::now(),
            started_at: None,
            stopped_at: None,
            stop_reason: None,
            run: 0,
            nodes: BTreeMap::new(),
            subscribers: Vec::new(),
            resumed: false,
        },
    );
    if req.start.unwrap_or(true) {
        hub.start_session(&mut st, &id);
    }
    eprintln!("podscope hub: session {id} created");
    (StatusCode::CREATED, Json(st.sessions[&id].view())).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    pod: Option<String>,
    container: Option<String>,
    namespace: Option<String>,
    state: Option<String>,
}

impl SessionQuery {
    /// Wildcards match the session's own pod/container pattern (container-tracer's model).
    fn matches(&self, s: &Session) -> bool {
        let g = |pat: &Option<String>, val: &Option<String>| {
            pat.as_ref().is_none_or(|p| {
                podscope_runtime::names::glob_match(p, val.as_deref().unwrap_or("*"))
            })
        };
        g(&self.pod, &s.spec.selection.pod)
            && g(&self.container, &s.spec.selection.container)
            && g(&self.namespace, &s.spec.selection.namespace)
            && self.state.as_ref().is_none_or(|st| st == s.state)
    }
}

async fn list(State(hub): State<Hub>, q: Result<Query<SessionQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("bad query ({e}); allowed are pod, container, namespace (globs) and state"),
            )
        }
    };
    let st = hub.lock();
    let v: Vec<SessionView> = st
        .sessions
        .values()
        .filter(|s| q.matches(s))
        .map(Session::view)
        .collect();
    Json(v).into_response()
}

async fn delete_all(
    State(hub): State<Hub>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("bad query ({e}); allowed are pod, container, namespace (globs) and state"),
            )
        }
    };
    let mut st = hub.lock();
    let ids: Vec<String> = st
        .sessions
        .values()
        .filter(|s| q.matches(s))
        .map(|s| s.id.clone())
        .collect();
    for id in &ids {
        remove_session(&mut st, id);
    }
    Json(json!({"deleted": ids})).into_response()
}

fn remove_session(st: &mut HubState, id: &str) {
    stop_session(st, id, "deleted");
    if let Some(mut s) = st.sessions.remove(id) {
        if !s.subscribers.is_empty() {
            s.control(
                json!({"kind": "end", "session": id, "state": "deleted", "reason": "deleted"}),
            );
        }
        // Agents whose run is still stopping get the stop already; their late records are ignored.
    }
}

fn unknown(st: &HubState, id: &str) -> Response {
    // Ids start with the hub's boot tag: one from an earlier hub means it
    // restarted. Such a session comes back when the agents that kept running
    // it re-register (within seconds), so this is "not found (yet)".
    match id.split_once('-') {
        Some((boot, n)) if boot != st.boot && n.parse::<u64>().is_ok() => err(
            StatusCode::NOT_FOUND,
            format!(
                "no session {id} here yet: it is from before the hub restarted, and it comes back \
                 when the agents that kept it running re-register (within seconds, if they kept it)"
            ),
        ),
        _ => err(StatusCode::NOT_FOUND, format!("no session {id}")),
    }
}

async fn get_one(State(hub): State<Hub>, Path(id): Path<String>) -> Response {
    let st = hub.lock();
    match st.sessions.get(&id) {
        Some(s) => Json(s.view()).into_response(),
        None => unknown(&st, &id),
    }
}

async fn update(State(hub): State<Hub>, Path(id): Path<String>, body: Bytes) -> Response {
    let req: UpdateSession = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("malformed update: {e}; expected {{\"state\":\"running\"}} or {{\"state\":\"stopped\"}}")),
    };
    let mut st = hub.lock();
    if !st.sessions.contains_key(&id) {
        return unknown(&st, &id);
    }
    match req.state.as_str() {
        "running" => {
            if st.sessions[&id].state == "stopping" {
                return err(
                    StatusCode::CONFLICT,
                    format!("session {id} is still stopping; try again in a moment"),
                );
            }
            hub.start_session(&mut st, &id)
        }
        "stopped" => stop_session(&mut st, &id, "requested"),
        other => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("state '{other}' is not one of running, stopped"),
            )
        }
    }
    Json(st.sessions[&id].view()).into_response()
}

async fn delete_one(State(hub): State<Hub>, Path(id): Path<String>) -> Response {
    let mut st = hub.lock();
    if !st.sessions.contains_key(&id) {
        return unknown(&st, &id);
    }
    remove_session(&mut st, &id);
    Json(json!({"deleted": [id]})).into_response()
}

/// POST /v1/exec: run a host tool in one pod's namespaces on its node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecBody {
    #[serde(default)]
    namespace: Option<String>,
    pod: String,
    #[serde(default)]
    container: Option<String>,
    command: Vec<String>,
    /// Namespaces to join (default ["net"]).
    #[serde(default)]
    namespaces: Option<Vec<String>>,
    /// Default 30s, at most 10m.
    #[serde(default)]
    timeout: Option<String>,
}

const EXEC_MAX_TIMEOUT: Duration = Duration::from_secs(600);

async fn exec(State(hub): State<Hub>, body: Bytes) -> Response {
    if !hub.enable_exec {
        eprintln!("podscope hub: refused an exec request: exec is disabled");
        return err(StatusCode::FORBIDDEN, "exec through the hub is disabled; it needs --enable-exec on both the hub and the agent");
    }
    let b: ExecBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return err(StatusCode::BAD_REQUEST, format!("malformed exec request: {e}; expected e.g. {{\"namespace\":\"shop\",\"pod\":\"web-0\",\"command\":[\"ss\",\"-tan\"],\"timeout\":\"30s\"}}"))
        }
    };
    let ns = b.namespace.clone().unwrap_or_else(|| "default".into());
    if let Err(e) = crate::api::check_exec_target(&ns, &b.pod, &b.command) {
        return err(StatusCode::BAD_REQUEST, e);
    }
    let timeout = match b.timeout.as_deref().map(crate::api::parse_duration) {
        None => Duration::from_secs(30),
        Some(Ok(d)) if d <= EXEC_MAX_TIMEOUT => d,
        Some(Ok(_)) => {
            return err(
                StatusCode::BAD_REQUEST,
                "exec timeout is longer than the maximum of 10m",
            )
        }
        Some(Err(e)) => return err(StatusCode::BAD_REQUEST, e),
    };
    let namespaces = b.namespaces.clone().unwrap_or_default();
    const KINDS: [&str; 6] = ["net", "pid", "mnt", "uts", "ipc", "cgroup"];
    if let Some(bad) = namespaces.iter().find(|n| !KINDS.contains(&n.as_str())) {
        return err(
            StatusCode::BAD_REQUEST,
            format!("unknown namespace kind {bad:?}; use net, pid, mnt, uts, ipc or cgroup"),
        );
    }
    let rx = {
        let mut st = hub.lock();
        let found = st
            .nodes
            .iter()
            .find(|(_, n)| n.up && n.pods.iter().any(|p| p.namespace == ns && p.name == b.pod));
        let Some((node, entry)) = found else {
            let all: Vec<String> = st
                .nodes
                .values()
                .filter(|n| n.up)
                .flat_map(|n| n.pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)))
                .collect();
            let near = podscope_runtime::names::closest_names(
                &format!("{ns}/{}", b.pod),
                all.iter().map(String::as_str),
                3,
            );
            let hint = if near.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", near.join(", "))
            };
            return err(
                StatusCode::NOT_FOUND,
                format!("no pod {ns}/{} on any connected node{hint}", b.pod),
            );
        };
        if !entry.exec_enabled {
            eprintln!(
                "podscope hub: refused exec in {ns}/{}: node {node}'s agent has exec disabled",
                b.pod
            );
            return err(
                StatusCode::FORBIDDEN,
                format!("exec is disabled on node {node}: its agent runs without --enable-exec"),
            );
        }
        let node = node.clone();
        let id = format!("exec-{}-{}", st.boot, st.next_id);
        st.next_id += 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = ExecRequest {
            id: id.clone(),
            namespace: ns.clone(),
            pod: b.pod.clone(),
            container: b.container.clone().unwrap_or_default(),
            command: b.command.clone(),
            namespaces,
            timeout_ms: timeout.as_millis() as u64,
        };
        eprintln!(
            "podscope hub: AUDIT exec {id} on node {node} in {ns}/{} container {:?}: {:?}",
            b.pod, b.container, b.command
        );
        if let Some(entry) = st.nodes.get(&node) {
            send_to(
                entry,
                HubMessage {
                    msg: Some(hub_message::Msg::Exec(req)),
                },
            );
        }
        st.execs.insert(id.clone(), (node, tx));
        (id, rx)
    };
    let (id, rx) = rx;
    let answer = tokio::time::timeout(timeout + Duration::from_secs(10), rx).await;
    hub.lock().execs.remove(&id);
    let r = match answer {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => {
            return err(
                StatusCode::BAD_GATEWAY,
                "the node's agent disconnected before the exec finished",
            )
        }
        Err(_) => {
            return err(
                StatusCode::GATEWAY_TIMEOUT,
                "the node's agent did not answer the exec in time",
            )
        }
    };
    if !r.error.is_empty() {
        let code = if r.error.contains("disabled") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        };
        return err(code, format!("node {}: {}", r.node, r.error));
    }
    Json(json!({
        "node": r.node, "namespace": ns, "pod": b.pod, "exit_code": r.exit_code,
        "stdout": String::from_utf8_lossy(&r.stdout), "stderr": String::from_utf8_lossy(&r.stderr),
        "truncated": r.truncated,
    }))
    .into_response()
}

/// `?keepalive=SECONDS` of the event stream: an empty line after that much
/// silence, so a client can tell a quiet session from a hub that hangs.
fn keepalive(query: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(q) = query else { return Ok(None) };
    let mut out = None;
    for (k, v) in q.split('&').filter_map(|kv| kv.split_once('=')) {
        if k != "keepalive" {
            return Err(format!(
                "unknown query parameter '{k}' for the event stream; it takes keepalive=SECONDS"
            ));
        }
        match v.parse::<u64>() {
            Ok(n @ 1..=300) => out = Some(Duration::from_secs(n)),
            _ => {
                return Err(format!(
                    "keepalive={v}: give the seconds of silence after which the stream sends an empty line, 1 to 300"
                ))
            }
        }
    }
    Ok(out)
}

async fn events(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let keepalive = match keepalive(query.as_deref()) {
        Ok(k) => k,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let (tx, rx) = mpsc::unbounded_channel::<Vec<Line>>();
    let queued = Arc::new(AtomicUsize::new(0));
    {
        let mut st = hub.lock();
        let Some(s) = st.sessions.get_mut(&id) else {
            return unknown(&st, &id);
        };
        if s.state == "stopped" {
            return err(StatusCode::CONFLICT, format!("session {id} is stopped: start it (PUT {{\"state\":\"running\"}}) and stream again"));
        }
        let _ = tx.send(vec![
            json!({"kind": "session", "session": id, "state": s.state})
                .to_string()
                .into(),
        ]);
        s.subscribers.push(Subscriber {
            tx,
            queued: queued.clone(),
            limit: hub.client_queue,
            missed: BTreeMap::new(),
            missed_total: BTreeMap::new(),
        });
    }
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    use futures_util::StreamExt;
    let stream = UnboundedReceiverStream::new(rx).map(move |batch| {
        // Every record counts against the limit while queued.
        let _ = queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
            Some(q.saturating_sub(batch.len()))
        });
        batch
    });
    if sse {
        let s = stream
            .flat_map(futures_util::stream::iter)
            .map(|l| Ok::<_, std::convert::Infallible>(SseEvent::default().data(&*l)));
        Sse::new(s).keep_alive(KeepAlive::default()).into_response()
    } else {
        // One HTTP chunk per batch.
        let s = stream.map(|batch| {
            let mut b = Vec::with_capacity(batch.iter().map(|l| l.len() + 1).sum());
            for l in &batch {
                b.extend_from_slice(l.as_bytes());
                b.push(b'\n');
            }
            Bytes::from(b)
        });
        // With ?keepalive: an empty line after each quiet spell; the stream
        // still ends when the session's records do.
        let s = futures_util::stream::unfold(Box::pin(s), move |mut s| async move {
            let next = match keepalive {
                None => s.next().await,
                Some(d) => match tokio::time::timeout(d, s.next()).await {
                    Ok(next) => next,
                    Err(_) => Some(Bytes::from_static(b"\n")),
                },
            };
            next.map(|b| (Ok::<_, std::convert::Infallible>(b), s))
        });
        (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(s),
        )
            .into_response()
    }
}

type HubStream = Pin<Box<dyn Stream<Item = Result<HubMessage, Status>> + Send>>;

#[tonic::async_trait]
impl hub_server::Hub for Hub {
    type ConnectStream = HubStream;

    async fn connect(
        &self,
        req: GrpcRequest<Streaming<AgentMessage>>,
    ) -> Result<GrpcResponse<HubStream>, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !crate::auth::bearer_ok(auth, &self.token) {
            eprintln!("podscope hub: refused an agent connection: missing or wrong bearer token");
            return Err(Status::unauthenticated("missing or wrong bearer token"));
        }
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentMessage {
                msg: Some(agent_message::Msg::Hello(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        if hello.node.is_empty() {
            return Err(Status::invalid_argument("Hello.node must name the node"));
        }
        let pods: Vec<Pod> = serde_json::from_str(&hello.pods_json)
            .map_err(|e| Status::invalid_argument(format!("Hello.pods_json: {e}")))?;
        let (tx, rx) = mpsc::channel(256);
        let node = hello.node.clone();
        let conn;
        {
            let mut st = self.lock();
            conn = st.next_conn;
            st.next_conn += 1;
            let now = SystemTime::now();
            if let Some(old) = st.nodes.get(&node) {
                if old.up
                    && !old.instance.is_empty()
                    && !hello.instance.is_empty()
                    && old.instance != hello.instance
                {
                    // Two agents with one --node would take the link from
                    // each other in a loop: the first one keeps it.
                    let msg = format!(
                        "node {node} is already connected from another agent (registered at {}): \
                         two agents cannot share a node name; give this agent its own --node, or stop the other one",
                        rfc3339(old.registered)
                    );
                    eprintln!("podscope hub: refused a second agent for node {node}: {msg}");
                    return Err(Status::already_exists(msg));
                }
                if old.up {
                    eprintln!("podscope hub: node {node} registered again; replacing its old link");
                }
            }
            st.nodes.insert(
                node.clone(),
                NodeEntry {
                    kernel: hello.kernel,
                    probes: hello.probes,
                    pods,
                    up: true,
                    registered: now,
                    last_seen: now,
                    exec_enabled: hello.exec_enabled,
                    version: hello.version,
                    tx: Some(tx.clone()),
                    conn,
                    instance: hello.instance,
                },
            );
            // Sessions this agent kept running across a hub restart.
            for ss in &hello.sessions {
                self.adopt(&mut st, &node, ss);
            }
            // Running sessions whose pods this node has start here.
            let st = &mut *st;
            if let Some(entry) = st.nodes.get(&node) {
                for s in st.sessions.values_mut() {
                    s.join_if_matching(&node, entry);
                }
            }
        }
        eprintln!("podscope hub: node {node} registered");
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => hub.on_agent_message(&node, conn, m),
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!(
                            "podscope hub: link to node {node} broke (its agent went away, or the network): {}",
                            crate::grpc_client::error_text(&e)
                        );
                        break;
                    }
                }
            }
            hub.on_agent_gone(&node, conn);
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Hub {
    /// A session an agent still runs: this hub takes it over (after a
    /// restart it knows nothing of it), or marks the node running again.
    fn adopt(&self, st: &mut HubState, node: &str, ss: &StartSession) {
        let stale = HubMessage {
            msg: Some(hub_message::Msg::Stop(StopSession {
                session: ss.session.clone(),
                run: ss.run,
            })),
        };
        if let Some(s) = st.sessions.get_mut(&ss.session) {
            if s.run == ss.run && s.state == "running" {
                let ns = s.nodes.entry(node.to_string()).or_default();
                let was_lost = ns.state == "lost";
                ns.state = "running".into();
                ns.error = None;
                if was_lost {
                    s.control(
                        json!({"kind": "node_resumed", "session": s.id, "node": node,
                        "message": format!("node {node} is back; its trace kept running")}),
                    );
                }
            } else if let Some(n) = st.nodes.get(node) {
                // Another run, or stopped meanwhile: the agent's trace is stale.
                send_to(n, stale);
            }
            return;
        }
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
        let spec = SessionSpec {
            selection: Selection {
                pod: opt(&ss.pod),
                namespace: opt(&ss.namespace),
                all_namespaces: ss.all_namespaces,
                selector: opt(&ss.label_selector),
                container: opt(&ss.container),
            },
            probes: ss.probes.clone(),
            duration: opt(&ss.duration),
            duration_ms: (ss.deadline_unix_ms > 0)
                .then(|| ss.deadline_unix_ms.saturating_sub(ss.started_unix_ms)),
        };
        let started = std::time::UNIX_EPOCH + Duration::from_millis(ss.started_unix_ms);
        let mut nodes = BTreeMap::new();
        nodes.insert(
            node.to_string(),
            NodeSession {
                state: "running".into(),
                ..Default::default()
            },
        );
        eprintln!(
            "podscope hub: resumed session {} (run {}) that node {node} kept running",
            ss.session, ss.run
        );
        st.sessions.insert(
            ss.session.clone(),
            Session {
                id: ss.session.clone(),
                spec,
                state: "running",
                created_at: started,
                started_at: Some(started),
                stopped_at: None,
                stop_reason: None,
                run: ss.run,
                nodes,
                subscribers: Vec::new(),
                resumed: true,
            },
        );
        if ss.deadline_unix_ms > 0 {
            let left = ss
                .deadline_unix_ms
                .saturating_sub(unix_ms(SystemTime::now()));
            let (hub, id, run) = (self.clone(), ss.session.clone(), ss.run);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(left)).await;
                let mut st = hub.lock();
                if st.sessions.get(&id).is_some_and(|s| s.run == run) {
                    stop_session(&mut st, &id, "duration");
                }
            });
        }
    }

    fn on_agent_message(&self, node: &str, conn: u64, m: AgentMessage) {
        let mut st = self.lock();
        match st.nodes.get_mut(node) {
            Some(n) if n.conn == conn => n.last_seen = SystemTime::now(),
            _ => return,
        }
        match m.msg {
            Some(agent_message::Msg::Pods(p)) => {
                if let Ok(pods) = serde_json::from_str(&p.pods_json) {
                    let st = &mut *st;
                    if let Some(n) = st.nodes.get_mut(node) {
                        n.pods = pods;
                        // A matching pod appeared here: the running sessions
                        // that did not include this node start on it now.
                        for s in st.sessions.values_mut() {
                            if s.join_if_matching(node, n) {
                                eprintln!(
                                    "podscope hub: session {} now includes node {node} (a matching pod appeared)",
                                    s.id
                                );
                            }
                        }
                    }
                }
            }
            Some(agent_message::Msg::ExecResult(r)) => {
                if let Some((_, tx)) = st.execs.remove(&r.id) {
                    eprintln!(
                        "podscope hub: AUDIT exec {} on node {node} exited {}{}",
                        r.id,
                        r.exit_code,
                        if r.error.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", r.error)
                        }
                    );
                    let _ = tx.send(r);
                }
            }
            Some(agent_message::Msg::Events(b)) => {
                let Some(s) = st.sessions.get_mut(&b.session) else {
                    return;
                };
                if s.run != b.run {
                    return;
                }
                let mut events = 0;
                let mut lost = 0;
                let lines: Vec<(Line, String, bool)> = b
                    .lines
                    .into_iter()
                    .map(|l| (Line::from(l.json), l.probe, l.event))
                    .collect();
                let mut items: Vec<(Line, Option<&str>)> = Vec::with_capacity(lines.len());
                for (line, probe, event) in &lines {
                    if *event {
                        events += 1;
                        items.push((line.clone(), Some(probe.as_str())));
                    } else {
                        if let Ok(v) = serde_json::from_str::<Value>(line) {
                            lost += v["lost"].as_u64().unwrap_or(0);
                        }
                        items.push((line.clone(), None));
                    }
                }
                s.broadcast(&items);
                let ns = s.nodes.entry(node.to_string()).or_default();
                ns.events += events;
                ns.lost += lost;
            }
            Some(agent_message::Msg::Status(u)) => {
                let Some(s) = st.sessions.get_mut(&u.session) else {
                    return;
                };
                if s.run != u.run {
                    return;
                }
                let ns = s.nodes.entry(node.to_string()).or_default();
                let mut gap_records = Vec::new();
                for (probe, total) in &u.gaps {
                    let before = ns.gaps.get(probe).copied().unwrap_or(0);
                    if *total > before {
                        gap_records.push(json!({"kind": "gap", "where": "agent", "node": node,
                            "probe": probe, "gap": total - before, "gap_total": total}));
                        ns.gaps.insert(probe.clone(), *total);
                    }
                }
                if !FINAL.contains(&ns.state.as_str()) || u.state == "failed" {
                    ns.state = u.state.clone();
                }
                if !u.error.is_empty() {
                    ns.error = Some(u.error.clone());
                }
                let mut summary = None;
                if !u.summary_json.is_empty() {
                    if let Ok(v) = serde_json::from_str::<Value>(&u.summary_json) {
                        ns.lost = ns.lost.max(v["lost"].as_u64().unwrap_or(0));
                        ns.summary = Some(v.clone());
                        summary = Some(v);
                    }
                }
                let failed = (u.state == "failed").then(|| u.error.clone());
                for r in gap_records {
                    s.control(r);
                }
                if let Some(e) = failed {
                    s.control(
                        json!({"kind": "error", "node": node, "session": s.id, "message": e}),
                    );
                }
                if let Some(v) = summary {
                    s.control(v);
                }
                s.check_done();
            }
            _ => {}
        }
    }

    fn on_agent_gone(&self, node: &str, conn: u64) {
        let mut st = self.lock();
        match st.nodes.get_mut(node) {
            Some(n) if n.conn == conn => {
                n.up = false;
                n.tx = None;
            }
            _ => return,
        }
        eprintln!("podscope hub: node {node} is down");
        // Its pending execs get no answer: dropping their senders says so.
        st.execs.retain(|_, (n, _)| n != node);
        for s in st.sessions.values_mut() {
            let Some(ns) = s.nodes.get_mut(node) else {
                continue;
            };
            if FINAL.contains(&ns.state.as_str()) {
                continue;
            }
            ns.state = "lost".into();
            ns.error = Some(format!("lost node {node}: its agent disconnected"));
            let rec = json!({"kind": "node_lost", "session": s.id, "node": node,
                "message": format!("lost node {node}: its agent disconnected during the session")});
            s.control(rec);
            s.check_done();
        }
    }

    /// The hub is going away (SIGTERM, e.g. a rolling update): every
    /// streaming client is told to reconnect, and the agents keep their
    /// traces for their --resume-grace, so the next hub adopts the sessions.
    /// A session nobody resumes ends on its own when that grace runs out.
    fn shutting_down(&self, reason: &str) {
        let mut st = self.lock();
        let st = &mut *st;
        for s in st.sessions.values_mut() {
            s.control(json!({"kind": "reconnect", "session": s.id, "reason": reason}));
            s.subscribers.clear();
        }
        for n in st.nodes.values_mut() {
            // Ends the agents' streams so the server can close; they re-dial the next hub.
            n.tx = None;
        }
    }
}

/// `podscope hub`: serves until SIGTERM/SIGINT.
pub fn run(args: HubArgs, token_file: Option<PathBuf>) -> Result<()> {
    let token = crate::auth::load_token(token_file.as_deref())?;
    let tls = crate::tls::server_config(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let hub = Hub::new(token, args.enable_exec, args.client_queue);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "podscope hub: listening on {} (REST, gRPC{}){}",
            listener.local_addr()?,
            if tls.is_some() { "; TLS only" } else { "" },
            if args.enable_exec { "; exec enabled" } else { "" }
        );
        let listener = crate::tls::HubListener::new(listener, tls)?;
        let app = hub.router();
        let h2 = hub.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                eprintln!("podscope hub: shutting down; streaming clients are told their sessions are interrupted");
                h2.shutting_down(
                "the hub is restarting: reconnect; the agents keep the session's traces running \
                 for their resume grace (default 30s) and the next hub resumes it",
            );
                // Let the records reach the clients before the connections close.
                tokio::time::sleep(Duration::from_millis(300)).await;
                // Connections that do not close by themselves must not keep the hub alive.
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_secs(2));
                    std::process::exit(0);
                });
            })
            .await
            .context("serving")?;
        Ok(())
    })
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

// --- the REST operations over gRPC (service HubApi) ---

/// Serves each HubApi call with the REST handler of the same operation, so
/// both APIs validate, answer and fail the same way.
#[derive(Clone)]
struct GrpcApi(Hub);

impl std::fmt::Debug for GrpcApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcApi")
    }
}

/// The gRPC code for a REST status.
fn grpc_code(status: StatusCode) -> tonic::Code {
    match status.as_u16() {
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::FailedPrecondition,
        410 => tonic::Code::Aborted,
        502 | 503 => tonic::Code::Unavailable,
        504 => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::Internal,
    }
}

/// A REST handler's answer as a gRPC answer.
async fn to_grpc(r: Response) -> Result<GrpcResponse<JsonMsg>, Status> {
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 64 << 20)
        .await
        .map_err(|e| Status::internal(format!("reading the answer: {e}")))?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        return Ok(GrpcResponse::new(JsonMsg { json: text }));
    }
    let msg = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text);
    Err(Status::new(grpc_code(status), msg))
}

/// A query map as the REST handlers' query extractor.
fn query<T: serde::de::DeserializeOwned>(q: &QueryMsg) -> Result<Query<T>, QueryRejection> {
    let qs: Vec<String> = q
        .params
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect();
    let uri: axum::http::Uri = format!("/?{}", qs.join("&"))
        .parse()
        .unwrap_or_else(|_| axum::http::Uri::from_static("/"));
    Query::try_from_uri(&uri)
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type JsonStream = Pin<Box<dyn Stream<Item = Result<JsonMsg, Status>> + Send>>;

#[tonic::async_trait]
impl hub_api_server::HubApi for GrpcApi {
    async fn list_nodes(&self, _: GrpcRequest<QueryMsg>) -> Result<GrpcResponse<JsonMsg>, Status> {
        to_grpc(nodes(State(self.0.clone())).await.into_response()).await
    }

    async fn list_pods(&self, r: GrpcRequest<QueryMsg>) -> Result<GrpcResponse<JsonMsg>, Status> {
        to_grpc(pods(State(self.0.clone()), query(r.get_ref())).await).await
    }

    async fn list_probes(&self, _: GrpcRequest<QueryMsg>) -> Result<GrpcResponse<JsonMsg>, Status> {
        to_grpc(probes(State(self.0.clone())).await.into_response()).await
    }

    async fn create_session(
        &self,
        r: GrpcRequest<JsonMsg>,
    ) -> Result<GrpcResponse<JsonMsg>, Status> {
        let body = Bytes::from(r.into_inner().json);
        to_grpc(create(State(self.0.clone()), body).await).await
    }

    async fn list_sessions(
        &self,
        r: GrpcRequest<QueryMsg>,
    ) -> Result<GrpcResponse<JsonMsg>, Status> {
        to_grpc(list(State(self.0.clone()), query(r.get_ref())).await).await
    }

    async fn get_session(
        &self,
        r: GrpcRequest<SessionId>,
    ) -> Result<GrpcResponse<JsonMsg>, Status> {
        to_grpc(get_one(State(self.0.clone()), Path(r.into_inner().id)).await).await
    }

    async fn update_session(
        &self,
        r: GrpcRequest<SessionUpdate>,
    ) -> Result<GrpcResponse<JsonMsg>, Status> {
        let u = r.into_inner();
        to_grpc(update(State(self.0.clone()), Path(u.id), Bytes::from(u.json)).await).await
    }

    async fn delete_session(
        &self,
        r: GrpcRequest<SessionId>,
    ) -> Result<GrpcResponse<JsonMsg>, Status> {
        to_grpc(delete_one(State(self.0.clone()), Path(r.into_inner().id)).await).await
    }

    async fn delete_sessions(
        &self,
        r: GrpcRequest<QueryMsg>,
    ) -> Result<GrpcResponse<JsonMsg>, Status> {
        to_grpc(delete_all(State(self.0.clone()), query(r.get_ref())).await).await
    }

    type StreamEventsStream = JsonStream;

    async fn stream_events(
        &self,
        r: GrpcRequest<SessionId>,
    ) -> Result<GrpcResponse<JsonStream>, Status> {
        let resp = events(
            State(self.0.clone()),
            Path(r.into_inner().id),
            RawQuery(None),
            HeaderMap::new(),
        )
        .await;
        if !resp.status().is_success() {
            return Err(to_grpc(resp)
                .await
                .err()
                .unwrap_or_else(|| Status::internal("the stream failed")));
        }
        // The NDJSON body, one record per message.
        let mut data = resp.into_body().into_data_stream();
        let (tx, rx) = mpsc::channel::<Result<JsonMsg, Status>>(256);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut pending: Vec<u8> = Vec::new();
            while let Some(chunk) = data.next().await {
                let Ok(chunk) = chunk else { break };
                pending.extend_from_slice(&chunk);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    let json = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    if !json.is_empty() && tx.send(Ok(JsonMsg { json })).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn exec(&self, r: GrpcRequest<JsonMsg>) -> Result<GrpcResponse<JsonMsg>, Status> {
        let body = Bytes::from(r.into_inner().json);
        to_grpc(exec(State(self.0.clone()), body).await).await
    }
}
