//! The hub: a registry of agents and their pods, trace sessions, the REST API
//! (axum) and the agents' gRPC link, all on one port.
//!
//! State lives in memory only, yet sessions survive a hub restart: the
//! agents keep their traces running for a grace period and report them when
//! they re-register, and the new hub adopts them under their old ids. A hub
//! stopped with SIGTERM/SIGINT tells every stream to reconnect.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;
use podscope_runtime::Pod;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

mod compat;
mod grpc_api;
mod openapi;
mod rest;
mod service;
mod ui;

use crate::agent::AgentArgs;
use crate::api::{NodeSession, Selection, SessionSpec, SessionView};
use crate::proto::{
    agent_message, hub_api_server, hub_message, hub_server, AgentMessage, ExecResult, HubMessage,
    StartSession, StopSession,
};
pub use ui::bench_map_server;

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

    /// Probes of the web view's observer session (every pod, while a page
    /// of /ui/ is open): its live counts, service map and traces. Add open
    /// or bio for those kernel child spans in the traces.
    #[arg(long, value_name = "PROBES", default_value = ui::DEFAULT_UI_PROBES)]
    pub ui_probes: String,
}

/// A record of a session's stream, typed as it came from a node (or made
/// here); its JSON (docs/json-schema.md) is made once, the first time a REST
/// client or the web view needs it, and shared by all of them.
pub(crate) struct Rec {
    pub(crate) rec: crate::proto::Record,
    json: std::sync::OnceLock<Box<str>>,
}

impl Rec {
    pub(crate) fn new(rec: crate::proto::Record) -> Line {
        Arc::new(Rec {
            rec,
            json: std::sync::OnceLock::new(),
        })
    }

    /// The record as one NDJSON line (without the newline).
    pub(crate) fn json(&self) -> &str {
        self.json
            .get_or_init(|| crate::records::to_json(&self.rec).into())
    }
}

/// What a streaming client receives: records, shared by all clients.
pub(crate) type Line = Arc<Rec>;

/// A control record of `kind`; the caller sets the fields that kind has.
pub(crate) fn ctl(kind: &str) -> crate::proto::ControlRecord {
    crate::proto::ControlRecord {
        kind: kind.into(),
        ..Default::default()
    }
}

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
            let rec = crate::proto::ControlRecord {
                r#where: Some("hub".into()),
                probe: Some(p),
                gap: Some(n),
                gap_total: Some(*total),
                ..ctl("gap")
            };
            out.push(Rec::new(crate::records::control(rec)));
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
    /// Each pod of `pods` as `GET /v1/pods` lists it (with `node`), made
    /// when the node reports its pods: listings copy these instead of
    /// cloning and serialising thousands of pods per call.
    pods_json: Vec<Arc<str>>,
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
    /// Per container (namespace, pod, container): CPU seconds and memory at
    /// the last two usage reports, for the web view's and `top`'s CPU % and
    /// MEM.
    usage: BTreeMap<(String, String, String), PodUsage>,
}

/// A container's (or, summed, a pod's) resource usage as its node last
/// reported it.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodUsage {
    pub(crate) cpu_seconds: Option<f64>,
    at: Option<std::time::Instant>,
    /// CPU used between the last two reports, % of one CPU.
    pub(crate) cpu_percent: Option<f64>,
    pub(crate) memory_bytes: Option<u64>,
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
    /// CLIENT spans handed between its nodes (docs/otlp.md, "Across nodes").
    hops: HopCounts,
}

/// A session's CLIENT spans from its nodes: sent on to the node with the
/// server's address, or not (no node of the session has a pod there; that
/// node's link was full).
#[derive(Debug, Clone, Copy, Default)]
struct HopCounts {
    relayed: u64,
    no_node: u64,
    dropped: u64,
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

    fn control(&mut self, rec: crate::proto::ControlRecord) {
        self.record(crate::records::control(rec));
    }

    /// A record every client gets, whatever its backlog.
    fn record(&mut self, rec: crate::proto::Record) {
        let line = Rec::new(rec);
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
                syscalls: self.spec.syscalls.as_ref().map(Into::into),
                tracepoint: self.spec.tracepoint.as_ref().map(Into::into),
                otlp: self.spec.otlp,
                ftrace_buffer_bytes: self.spec.ftrace_buffer_bytes.unwrap_or(0),
                capture: self.spec.capture.as_ref().map(Into::into),
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
            let h = self.hops;
            if h.relayed + h.no_node + h.dropped > 0 {
                eprintln!(
                    "podscope hub: session {}: CLIENT spans across nodes: {} sent on to the server's node, \
                     {} with a server address no node of the session has, {} dropped (the node's link was full)",
                    self.id, h.relayed, h.no_node, h.dropped
                );
            }
            let view = self.view();
            let rec = crate::proto::ControlRecord {
                session: Some(self.id.clone()),
                state: Some("stopped".into()),
                reason: self.stop_reason.clone(),
                events: Some(view.events),
                gaps: Some(view.gaps),
                ..ctl("end")
            };
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
    /// Which node has the pod of each pod IP address (for the CLIENT spans
    /// handed between nodes).
    pod_ips: HashMap<String, String>,
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
    /// The web view's logins and live aggregate.
    ui: Arc<ui::UiState>,
    /// container-tracer sessions' own fields (compat.rs).
    compat: compat::Metas,
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

/// A node's pods as the REST listing has them, one JSON object each.
fn render_pods(node: &str, pods: &[Pod]) -> Vec<Arc<str>> {
    #[derive(serde::Serialize)]
    struct Listed<'a> {
        node: &'a str,
        #[serde(flatten)]
        pod: &'a Pod,
    }
    pods.iter()
        .map(|pod| {
            serde_json::to_string(&Listed { node, pod })
                .unwrap_or_default()
                .into()
        })
        .collect()
}

/// `node`'s pods are now `pods`: the address index follows.
fn index_pods(ips: &mut HashMap<String, String>, node: &str, pods: &[Pod]) {
    ips.retain(|_, n| n != node);
    for p in pods {
        if let Some(ip) = p.ip.as_deref().filter(|ip| !ip.is_empty()) {
            ips.insert(ip.to_string(), node.to_string());
        }
    }
}

fn send_to(node: &NodeEntry, msg: HubMessage) {
    if let Some(tx) = &node.tx {
        // Control messages are rare; a full link means the agent is stuck and will be dropped.
        let _ = tx.try_send(Ok(msg));
    }
}

impl Hub {
    /// A hub with this bearer token.
    pub fn new(token: String, enable_exec: bool, client_queue: usize, ui_probes: &str) -> Hub {
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
                pod_ips: HashMap::new(),
            })),
            token: token.into(),
            enable_exec,
            client_queue: client_queue.max(1),
            ui: Arc::new(ui::UiState::new(ui_probes)),
            compat: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The axum router: REST, health, OpenAPI and the gRPC service.
    pub fn router(&self) -> Router {
        let grpc = hub_server::HubServer::new(self.clone());
        let grpc_api = hub_api_server::HubApiServer::with_interceptor(
            grpc_api::GrpcApi(self.clone()),
            crate::auth::RequireBearer(self.token.clone()),
        );
        let api = rest::routes(self);
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(|| async { "ok\n" }))
            .merge(api)
            // The web view (docs/ui.md).
            .merge(ui::routes(self))
            // The agents' link; authenticated in `connect` (gRPC status UNAUTHENTICATED).
            .route_service("/podscope.cluster.v1.Hub/{*rest}", grpc)
            // The REST operations over gRPC.
            .route_service("/podscope.cluster.v1.HubApi/{*rest}", grpc_api)
            .fallback(rest::no_such_path)
            .layer(axum::middleware::from_fn(rest::json_errors))
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
        if hello.link_version < crate::LINK_VERSION {
            let why = format!(
                "the agent on node {} (podscope {}) speaks link version {}, which sends events as JSON lines; this hub (podscope {}) reads link version {} (typed events): run the same podscope version on the agents and the hub",
                hello.node,
                if hello.version.is_empty() { "?" } else { &hello.version },
                hello.link_version,
                env!("CARGO_PKG_VERSION"),
                crate::LINK_VERSION
            );
            eprintln!("podscope hub: refused an agent: {why}");
            return Err(Status::failed_precondition(why));
        }
        let pods: Vec<Pod> = hello
            .pods
            .iter()
            .cloned()
            .map(Pod::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| Status::invalid_argument(format!("Hello.pods: {e}")))?;
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
            index_pods(&mut st.pod_ips, &node, &pods);
            st.nodes.insert(
                node.clone(),
                NodeEntry {
                    kernel: hello.kernel,
                    probes: hello.probes,
                    pods_json: render_pods(&node, &pods),
                    pods,
                    up: true,
                    registered: now,
                    last_seen: now,
                    exec_enabled: hello.exec_enabled,
                    version: hello.version,
                    tx: Some(tx.clone()),
                    conn,
                    instance: hello.instance,
                    usage: BTreeMap::new(),
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
                    let rec = crate::proto::ControlRecord {
                        session: Some(s.id.clone()),
                        node: Some(node.to_string()),
                        message: Some(format!("node {node} is back; its trace kept running")),
                        ..ctl("node_resumed")
                    };
                    s.control(rec);
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
            syscalls: ss.syscalls.clone().map(Into::into),
            tracepoint: ss.tracepoint.clone().map(Into::into),
            otlp: ss.otlp,
            ftrace_buffer_bytes: (ss.ftrace_buffer_bytes > 0).then_some(ss.ftrace_buffer_bytes),
            capture: ss.capture.clone().map(Into::into),
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
                hops: HopCounts::default(),
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
                let pods: Result<Vec<Pod>, String> =
                    p.pods.into_iter().map(Pod::try_from).collect();
                if let Ok(pods) = pods {
                    let st = &mut *st;
                    if let Some(n) = st.nodes.get_mut(node) {
                        index_pods(&mut st.pod_ips, node, &pods);
                        n.pods_json = render_pods(node, &pods);
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
            Some(agent_message::Msg::Usage(u)) => {
                if let Some(n) = st.nodes.get_mut(node) {
                    let now = std::time::Instant::now();
                    let mut next = BTreeMap::new();
                    for c in u.containers {
                        let k = (c.namespace, c.pod, c.container);
                        let prev = n.usage.get(&k);
                        let cpu = c.cpu_seconds;
                        let cpu_percent = match (prev.and_then(|p| p.cpu_seconds.zip(p.at)), cpu) {
                            (Some((c0, t0)), Some(c1)) if c1 >= c0 => {
                                let dt = now.duration_since(t0).as_secs_f64();
                                (dt > 0.0).then(|| (c1 - c0) / dt * 100.0)
                            }
                            _ => None,
                        };
                        next.insert(
                            k,
                            PodUsage {
                                cpu_seconds: cpu,
                                at: Some(now),
                                cpu_percent,
                                memory_bytes: c.memory_bytes,
                            },
                        );
                    }
                    n.usage = next;
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
            Some(agent_message::Msg::Hops(h)) => {
                let st = &mut *st;
                let Some(s) = st.sessions.get_mut(&h.session) else {
                    return;
                };
                if s.run != h.run {
                    return;
                }
                // Each span to the node with a pod at its server address,
                // when that node runs the session too.
                let mut to: BTreeMap<&str, Vec<crate::proto::HopSpan>> = BTreeMap::new();
                for span in h.spans {
                    match st.pod_ips.get(span.server_addr.as_str()) {
                        Some(n)
                            if n != node
                                && s.nodes.get(n).is_some_and(|ns| ns.state == "running") =>
                        {
                            to.entry(n.as_str()).or_default().push(span);
                        }
                        _ => s.hops.no_node += 1,
                    }
                }
                for (n, spans) in to {
                    let count = spans.len() as u64;
                    let msg = HubMessage {
                        msg: Some(hub_message::Msg::Hops(crate::proto::HopSpans {
                            session: h.session.clone(),
                            run: h.run,
                            spans,
                        })),
                    };
                    match st.nodes.get(n).and_then(|e| e.tx.as_ref()) {
                        Some(tx) if tx.try_send(Ok(msg)).is_ok() => s.hops.relayed += count,
                        _ => s.hops.dropped += count,
                    }
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
                let mut items: Vec<(Line, Option<&str>)> = Vec::with_capacity(b.records.len());
                for rec in b.records {
                    let probe = crate::records::probe_of(&rec);
                    match (&rec.kind, probe) {
                        (_, Some(_)) => events += 1,
                        (Some(crate::proto::record::Kind::Lost(l)), _) => lost += l.lost,
                        _ => {}
                    }
                    items.push((Rec::new(rec), probe));
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
                        gap_records.push(crate::proto::ControlRecord {
                            r#where: Some("agent".into()),
                            node: Some(node.to_string()),
                            probe: Some(probe.clone()),
                            gap: Some(total - before),
                            gap_total: Some(*total),
                            ..ctl("gap")
                        });
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
                if let Some(sum) = u.summary {
                    let sv = crate::api::SummaryView::from(sum.clone());
                    ns.lost = ns.lost.max(sv.lost);
                    summary = Some(crate::records::summary(sum));
                    ns.summary = Some(sv);
                }
                let failed = (u.state == "failed").then(|| u.error.clone());
                for r in gap_records {
                    s.control(r);
                }
                if let Some(e) = failed {
                    let rec = crate::proto::ControlRecord {
                        node: Some(node.to_string()),
                        session: Some(s.id.clone()),
                        message: Some(e),
                        ..ctl("error")
                    };
                    s.control(rec);
                }
                if let Some(v) = summary {
                    s.record(v);
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
            let rec = crate::proto::ControlRecord {
                session: Some(s.id.clone()),
                node: Some(node.to_string()),
                message: Some(format!(
                    "lost node {node}: its agent disconnected during the session"
                )),
                ..ctl("node_lost")
            };
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
            let rec = crate::proto::ControlRecord {
                session: Some(s.id.clone()),
                reason: Some(reason.to_string()),
                ..ctl("reconnect")
            };
            s.control(rec);
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
        let hub = Hub::new(token, args.enable_exec, args.client_queue, &args.ui_probes);
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

/// `podscope ui`.
#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    /// Address of the web view (and of the in-process hub's REST API and
    /// gRPC link). Keep it on loopback unless others should reach it: the
    /// token is all that protects it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7701")]
    pub listen: SocketAddr,

    /// Container runtime CRI socket (found by itself when omitted).
    #[arg(long, value_name = "ENDPOINT")]
    pub runtime_endpoint: Option<String>,

    /// This node's name in the view (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Probes of the observer session behind the live counts, the service
    /// map and the traces (every pod, while a page is open). Add open or
    /// bio for those kernel child spans in the traces.
    #[arg(long, value_name = "PROBES", default_value = ui::DEFAULT_UI_PROBES)]
    pub ui_probes: String,
}

/// `podscope ui`: the web view of this machine, with no cluster: a hub and
/// an agent in this process, the agent linked to the hub over loopback.
/// Serves until SIGTERM/SIGINT.
pub fn run_ui(args: UiArgs, token_file: Option<PathBuf>) -> Result<()> {
    use clap::{Args as _, FromArgMatches as _};
    // The token the user gave, or a fresh one shown in the login link.
    let token = match crate::auth::load_token(token_file.as_deref()) {
        Ok(t) => t,
        Err(_) if token_file.is_none() => ui::random_token(),
        Err(e) => return Err(e),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| {
            format!(
                "listening on {} (give another --listen HOST:PORT if it is taken)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let hub = Hub::new(token.clone(), false, 65536, &args.ui_probes);
    let app = hub.router();
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("podscope ui: serving stopped: {e}");
        }
    });
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let shown = if addr.is_ipv6() {
        format!("[{host}]")
    } else {
        host
    };
    eprintln!(
        "podscope ui: open http://{shown}:{}/ui/login?token={token}\n\
         podscope ui: (the link logs in once and sets a session cookie; the same token works \
         for the REST API at http://{shown}:{}/v1 as 'Authorization: Bearer TOKEN')",
        addr.port(),
        addr.port()
    );
    let cmd = AgentArgs::augment_args(clap::Command::new("agent"));
    let mut agent = AgentArgs::from_arg_matches(&cmd.get_matches_from(["agent"]))
        .context("default agent settings")?;
    agent.runtime_endpoint = args.runtime_endpoint;
    agent.node = args.node;
    // The agent dials the hub where it listens (0.0.0.0 and :: take 127.0.0.1).
    let url = format!("http://{shown}:{}", addr.port());
    let r = crate::agent::run_with(agent, url, token, None);
    rt.shutdown_timeout(Duration::from_millis(500));
    r
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
