//! The node agent: dials the hub, reports the node and its pods, and runs the
//! hub's sessions in process on one node tracer (podscope-pipeline's
//! [`NodeHandle`]): each probe is loaded once whatever the number of
//! sessions, the kernel filter is the union of their pods, and events are
//! demultiplexed to sessions by pod. Records go to the hub in batches.
//!
//! Memory is bounded: the node thread puts each event of a session into a
//! bounded queue without waiting; when the queue is full the event is
//! dropped and counted as a gap for its probe, and the gap counts go to the
//! hub in the session's status (they are never dropped). So a slow hub or
//! client never stalls the node thread, and so never the probes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use podscope_model::{Event, ProbeKind};
use podscope_pipeline::{NodeConfig, NodeHandle, PodFlags, PodSelection, SessionSpec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::proto::{
    agent_message, hub_client::HubClient, hub_message, AgentMessage, EventBatch, ExecRequest,
    ExecResult, Hello, HopSpan, HopSpans, Pods, Record, SessionStatus, StartSession,
};
use podscope_export::otlp::{xtrace::Hop, SpanIds};

/// How much longer a SERVER span of a session exported over OTLP waits for
/// its CLIENT span from another node (docs/otlp.md, "Across nodes"): that
/// span is decided on its node (up to the 1 s hold), then comes through the
/// hub.
pub const REMOTE_HOLD: Duration = Duration::from_secs(3);
/// How often a session's CLIENT spans for other nodes go to the hub.
const HOPS_EVERY: Duration = Duration::from_millis(100);

impl From<Hop> for HopSpan {
    fn from(h: Hop) -> HopSpan {
        HopSpan {
            client_addr: h.client.0,
            client_port: u32::from(h.client.1),
            server_addr: h.server.0,
            server_port: u32::from(h.server.1),
            order: h.order,
            start_unix_ns: h.start,
            end_unix_ns: h.end,
            trace_id: h.ids.trace_id().to_vec(),
            span_id: h.ids.span_id().to_vec(),
            trace_from_wire: h.from_wire,
        }
    }
}

impl TryFrom<HopSpan> for Hop {
    type Error = String;
    fn try_from(h: HopSpan) -> Result<Hop, String> {
        let trace: [u8; 16] = h.trace_id.as_slice().try_into().map_err(|_| {
            format!(
                "a hop span's trace id has {} bytes, not 16",
                h.trace_id.len()
            )
        })?;
        let span: [u8; 8] =
            h.span_id.as_slice().try_into().map_err(|_| {
                format!("a hop span's span id has {} bytes, not 8", h.span_id.len())
            })?;
        let port = |p: u32| u16::try_from(p).map_err(|_| format!("port {p} is not a TCP port"));
        Ok(Hop {
            client: (h.client_addr, port(h.client_port)?),
            server: (h.server_addr, port(h.server_port)?),
            order: h.order,
            start: h.start_unix_ns,
            end: h.end_unix_ns,
            ids: SpanIds::new(trace, span),
            from_wire: h.trace_from_wire,
        })
    }
}

/// `podscope agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// This node's name (default: $NODE_NAME, else the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Container runtime CRI socket (unix:///run/containerd/containerd.sock);
    /// found by itself when omitted.
    #[arg(long, value_name = "ENDPOINT")]
    pub runtime_endpoint: Option<String>,

    /// Events buffered per session between the trace and the hub link
    /// (queued, or handed to the link and not yet taken by it); beyond that
    /// they are dropped and reported as gaps. The default holds about 0.3 s at
    /// 200,000 events/s (one burst of the trace and then some).
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub queue_size: usize,

    /// Memory for the events of all sessions waiting for the hub (the same
    /// span as --queue-size), in bytes (suffixes K, M, G); what does not fit
    /// is dropped and reported as gaps. Bounds the agent's memory when the
    /// hub or the network is slower than the node's events: 16M holds about
    /// 28,000 open events (about 600 bytes each).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_bytes)]
    pub queue_bytes: u64,

    /// How often the node's pods are re-listed for the hub.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::api::parse_duration)]
    pub pod_refresh: Duration,

    /// Allow exec through the hub on this node (the hub needs it too). Off by default.
    #[arg(long)]
    pub enable_exec: bool,

    /// Serve always-on per-pod Prometheus metrics on this address (e.g.
    /// 0.0.0.0:9464): an always-on session of every pod on the node's one
    /// tracer (the --metrics-probes), sharing the programs with the sessions.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// Probes behind the always-on metrics and OTLP export.
    #[arg(long, value_name = "PROBES", default_value = "tcp,bio,cache,exec,open")]
    pub metrics_probes: String,

    /// Also export OpenTelemetry spans (one per TCP connection) from every pod
    /// on this node, to this endpoint (the OTEL_EXPORTER_OTLP_* variables are
    /// honoured too; see docs/otlp.md).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP protocol for --otlp-endpoint: grpc or http/protobuf.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub otlp_protocol: Option<String>,

    /// Kernel ring buffer per probe for the sessions' traces (power of two;
    /// K/M suffixes). 1 MiB holds about 3,000 open events, 20 ms at 150,000
    /// events/s; bigger rides out longer stalls of a saturated node, but
    /// measured 4M cost more CPU per event (cache) and did worse at 150-200k/s.
    #[arg(long, value_name = "BYTES", default_value = "1M")]
    pub ring_buffer_size: String,

    /// How long the hub's sessions keep running when the link to the hub
    /// drops: a hub that comes back within it (a restart) resumes them.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::api::parse_duration)]
    pub resume_grace: Duration,

    /// Serve the agent's own API on this address (e.g. 0.0.0.0:7701): GET
    /// /healthz (alive) and /readyz (linked to the hub), no token; and the
    /// gRPC service podscope.cluster.v1.Agent (ListPods, Trace, Exec,
    /// Health), bearer token required.
    #[arg(long, visible_alias = "health-listen", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Serve --listen with TLS only, with this certificate chain (PEM; needs
    /// --listen-tls-key). The kubelet's probes then use scheme HTTPS.
    #[arg(long, value_name = "PEM", requires = "listen")]
    pub listen_tls_cert: Option<PathBuf>,

    /// The private key of --listen-tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "listen")]
    pub listen_tls_key: Option<PathBuf>,
}

/// The link to the hub as the sessions see it: None while disconnected.
pub(crate) type Link = Arc<Mutex<Option<mpsc::Sender<Out>>>>;

/// A message for the hub, with the events it carries still counted against
/// their session's queue and the node's memory budget until the link takes
/// it (or it is dropped undelivered).
pub(crate) struct Out {
    pub(crate) msg: AgentMessage,
    /// Released when the message is taken (or dropped).
    _held: Option<Held>,
}

impl From<AgentMessage> for Out {
    fn from(msg: AgentMessage) -> Out {
        Out { msg, _held: None }
    }
}

impl Out {
    /// The message; what it held is released.
    pub(crate) fn into_msg(self) -> AgentMessage {
        self.msg
    }
}

/// Events counted in a session's queue and the node's queued bytes; given
/// back on drop.
struct Held {
    session: Arc<AtomicUsize>,
    node: Arc<AtomicUsize>,
    events: usize,
    bytes: usize,
}

impl Held {
    /// Takes `other`'s count over (one batch made of several chunks).
    fn absorb(&mut self, mut other: Held) {
        self.events += std::mem::take(&mut other.events);
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.session.fetch_sub(self.events, Ordering::Relaxed);
        self.node.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// `--queue-bytes`: a size in bytes, with an optional K, M or G (binary).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mul = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => {
                    return Err(format!(
                        "'{s}' is not a size: use bytes, or a number with K, M or G (e.g. 16M)"
                    ))
                }
            };
            (&t[..i], mul)
        }
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        format!("'{s}' is not a size: use bytes, or a number with K, M or G (e.g. 16M)")
    })?;
    n.checked_mul(mul)
        .filter(|b| *b >= 4096)
        .ok_or_else(|| format!("'{s}': the queue needs between 4K and 16E bytes (e.g. 16M)"))
}

/// Session-id prefix of the agent API's direct Trace calls.
pub(crate) const DIRECT: &str = "direct-";

/// Output kept per stream of an exec.
const EXEC_OUTPUT_MAX: usize = 1 << 20;

pub(crate) struct Running {
    run: u64,
    /// The session's key on the node tracer.
    key: u64,
    /// A stop was asked for: one that came while the session was still
    /// starting (its probes loading) is carried out once it has started.
    stopping: Arc<AtomicBool>,
    /// What the hub asked for: reported again to a restarted hub.
    spec: StartSession,
    /// Its OTLP export (`"otlp": true`): CLIENT spans of other nodes go in.
    otlp: Option<podscope_export::OtlpObserver>,
}

type Sessions = Arc<Mutex<HashMap<String, Running>>>;

pub(crate) struct Agent {
    /// Numbers the direct Trace calls of the agent API.
    pub(crate) direct: std::sync::atomic::AtomicU64,
    /// Counts the links made to a hub.
    pub(crate) generation: std::sync::atomic::AtomicU64,
    pub(crate) node: String,
    pub(crate) hub: String,
    pub(crate) token: String,
    /// Trust for an https:// hub URL.
    pub(crate) tls: Option<crate::tls::ClientTls>,
    pub(crate) args: AgentArgs,
    pub(crate) kernel: String,
    pub(crate) probes: Vec<String>,
    pub(crate) exe: PathBuf,
    /// The node's one tracer, shared by every session.
    pub(crate) tracer: NodeHandle,
    /// Numbers the sessions on the node tracer.
    pub(crate) keys: std::sync::atomic::AtomicU64,
    pub(crate) link: Link,
    /// Estimated bytes of the events of all sessions waiting for the hub
    /// (`--queue-bytes` bounds it).
    pub(crate) queued_bytes: Arc<AtomicUsize>,
    pub(crate) sessions: Sessions,
    /// This process among agents: tells the hub a reconnect of this agent
    /// from a second agent started with the same --node.
    pub(crate) instance: String,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `podscope agent`: runs until SIGTERM/SIGINT.
pub fn run(
    args: AgentArgs,
    hub: Option<String>,
    token_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
) -> Result<()> {
    let Some(hub) = hub else {
        bail!("podscope agent needs --hub URL (e.g. --hub http://hub:7700)");
    };
    if hub.starts_with("kube://") {
        bail!(
            "podscope agent dials the hub's Service directly, not through the API server: \
             give --hub http://SERVICE.NAMESPACE.svc:PORT (e.g. http://podscope-hub.podscope.svc:7700)"
        );
    }
    let token = crate::auth::load_token(token_file.as_deref())?;
    let tls = crate::tls::ClientTls::for_url(&hub, tls_ca.as_deref())?;
    run_with(args, hub, token, tls)
}

/// The agent with its hub, token and TLS settled (`podscope agent`, and the
/// in-process agent of `podscope ui`).
pub(crate) fn run_with(
    args: AgentArgs,
    hub: String,
    token: String,
    tls: Option<crate::tls::ClientTls>,
) -> Result<()> {
    let node = match args
        .node
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok())
    {
        Some(n) if !n.is_empty() => n,
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name for the node name (or give --node)")?
            .trim()
            .to_string(),
    };
    let exe = std::env::current_exe().context("finding this program for exec")?;
    let ring_buffer_bytes = podscope_pipeline::parse_ring_size(&args.ring_buffer_size)
        .map_err(|e| anyhow::anyhow!("--ring-buffer-size: {e}"))?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    // The probes whose hooks this kernel has (loading each one, as
    // `podscope probes` does, takes seconds on a busy node and would delay
    // the registration; a refusal at load time is reported by the session).
    let probes = podscope_pipeline::probes::available()
        .into_iter()
        .map(|p| p.name().to_string())
        .collect();
    let tracer = NodeHandle::spawn(NodeConfig {
        node: node.clone(),
        runtime_endpoint: args.runtime_endpoint.clone(),
        ring_buffer_bytes,
        ring_budget: podscope_bpf::DEFAULT_RING_BUDGET,
        interval: Duration::from_secs(1),
        host_filter: None,
        implementations: Vec::new(),
        http_capture_bytes: 1024,
        pod_refresh: podscope_pipeline::enrich::REFRESH_PERIOD,
    });
    let agent = Arc::new(Agent {
        direct: Default::default(),
        generation: Default::default(),
        node,
        hub,
        token,
        tls,
        args,
        kernel,
        probes,
        exe,
        tracer,
        keys: Default::default(),
        link: Arc::new(Mutex::new(None)),
        queued_bytes: Default::default(),
        sessions: Arc::new(Mutex::new(HashMap::new())),
        instance: format!(
            "{:x}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            std::process::id()
        ),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let always_on = agent.args.metrics_listen.is_some() || agent.args.otlp_endpoint.is_some();
    let metrics = if always_on {
        Some(AlwaysOn::start(&agent.tracer, &agent.node, &agent.args)?)
    } else {
        None
    };
    rt.block_on(async move {
        if let Some(addr) = agent.args.listen.clone() {
            crate::agent_api::serve(agent.clone(), &addr).await?;
        }
        let a = agent.clone();
        let link_task = tokio::spawn(async move { a.link_loop().await });
        crate::hub::shutdown_signal().await;
        eprintln!("podscope agent: shutting down: stopping sessions, sending their summaries");
        agent.stop_all();
        // Finish the sessions over the link that is up, if any.
        for _ in 0..100 {
            if lock(&agent.sessions).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        link_task.abort();
        if let Some(m) = metrics {
            m.stop();
        }
        Ok(())
    })
}

/// The session key of the always-on metrics/OTLP session on the node tracer.
const ALWAYS_ON: u64 = u64::MAX;

/// The always-on session behind the node's metrics and OTLP export: one
/// more session on the node tracer (every pod, the --metrics-probes),
/// counting into the Prometheus exporter and queueing OTLP spans.
struct AlwaysOn {
    tracer: NodeHandle,
    otlp: Option<podscope_export::Otlp>,
    _exporter: Option<podscope_export::Exporter>,
    probes: Vec<ProbeKind>,
}

impl AlwaysOn {
    fn start(tracer: &NodeHandle, node: &str, args: &AgentArgs) -> Result<AlwaysOn> {
        use podscope_pipeline::sinks::{Discard, Exported, Observed};
        let probes = ProbeKind::parse_list(&args.metrics_probes).context("--metrics-probes")?;
        let exporter = match &args.metrics_listen {
            Some(addr) => {
                let listen: std::net::SocketAddr = addr.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--metrics-listen {addr}: not an address; give HOST:PORT (e.g. 0.0.0.0:9464)"
                    )
                })?;
                let e = podscope_export::Exporter::start(podscope_export::ExporterConfig {
                    listen,
                    node: node.to_string(),
                    grace: Duration::from_secs(120),
                    refresh: Duration::from_secs(5),
                    runtime_endpoint: args.runtime_endpoint.clone(),
                    select: None,
                })?;
                eprintln!(
                    "podscope agent: serving metrics on http://{}/metrics",
                    e.local_addr()
                );
                Some(e)
            }
            None => None,
        };
        let otlp = match &args.otlp_endpoint {
            Some(ep) => {
                let flags = podscope_export::OtlpFlags {
                    endpoint: Some(ep.clone()),
                    protocol: args.otlp_protocol.clone(),
                    headers: Vec::new(),
                    log_probes: Vec::new(),
                    queue_size: None,
                    session_events: None,
                    ca: None,
                };
                let cfg =
                    podscope_export::OtlpConfig::resolve(&flags, node, &|k| std::env::var(k).ok())?;
                let o = podscope_export::Otlp::start(
                    cfg,
                    Some(podscope_pipeline::sinks::otlp_log_body()),
                )?;
                eprintln!("podscope agent: exporting OTLP {}", o.describe());
                Some(o)
            }
            None => None,
        };
        let mut sink: Box<dyn podscope_pipeline::Sink + Send> = match &exporter {
            Some(e) => Box::new(Observed {
                inner: Discard,
                observer: e.observer(),
                metrics: e.metrics().clone(),
            }),
            None => Box::new(Discard),
        };
        if let Some(o) = &otlp {
            sink = Box::new(Exported {
                inner: sink,
                otlp: o.observer(),
            });
        }
        let spec = SessionSpec {
            probes: probes.clone(),
            selection: Some(PodSelection {
                all_namespaces: true,
                ..PodSelection::default()
            }),
            wait: true,
            max_events: None,
            hooks: Default::default(),
        };
        let on_end: podscope_pipeline::thread::OnEnd = Box::new(|end| {
            if let Some(e) = end.error {
                eprintln!("podscope agent: the always-on metrics session failed: {e}");
            }
        });
        let started = tracer
            .start(ALWAYS_ON, spec, sink, on_end)
            .map_err(|e| anyhow::anyhow!("starting the always-on metrics session: {e}"))?;
        for (p, e) in &started.failed {
            eprintln!("podscope agent: metrics: not tracing {p}: {e}");
        }
        Ok(AlwaysOn {
            tracer: tracer.clone(),
            otlp,
            _exporter: exporter,
            probes,
        })
    }

    fn stop(self) {
        self.tracer.stop(ALWAYS_ON);
        if let Some(o) = self.otlp {
            let info = podscope_export::otlp::SessionInfo {
                session: String::new(),
                probes: self.probes.iter().map(|p| p.name().to_string()).collect(),
                scope: "every pod (always-on)".into(),
            };
            eprint!("{}", o.finish(&info, 0, 0));
        }
    }
}

impl Agent {
    async fn link_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let started = std::time::Instant::now();
            match self.clone().connect_once().await {
                Ok(()) => eprintln!("podscope agent: the hub closed the link; dialling again"),
                Err(e) => {
                    let e = crate::tls::explain_link(&self.hub, self.tls.as_ref(), e).await;
                    eprintln!("podscope agent: link to the hub {}: {e:#}", self.hub)
                }
            }
            let was_linked = lock(&self.link).take().is_some();
            // The hub's sessions keep running for --resume-grace: a hub that
            // comes back (a restart, a rolling update) adopts them. If none
            // does in time, they stop.
            let generation = self.generation.load(Ordering::Relaxed);
            let me = self.clone();
            tokio::spawn(async move {
                if !was_linked {
                    return;
                }
                tokio::time::sleep(me.args.resume_grace).await;
                if me.generation.load(Ordering::Relaxed) == generation
                    && lock(&me.link).is_none()
                    && lock(&me.sessions).keys().any(|k| !k.starts_with(DIRECT))
                {
                    eprintln!(
                        "podscope agent: no hub took the sessions back within {:?}; stopping them",
                        me.args.resume_grace
                    );
                    me.stop_all();
                }
            });
            if started.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(250);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn connect_once(self: Arc<Self>) -> Result<()> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.hub.clone())
            .with_context(|| format!("'{}' is not a hub URL (e.g. http://hub:7700)", self.hub))?
            .connect_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.tonic_config())
                .context("the TLS settings for the hub")?;
        }
        let channel = endpoint.connect().await.context("connecting")?;
        let mut client =
            HubClient::with_interceptor(channel, crate::auth::Bearer::new(&self.token)?);
        let pods = self.pods().await;
        let (tx, rx) = mpsc::channel::<Out>(64);
        let kept: Vec<StartSession> = lock(&self.sessions)
            .iter()
            .filter(|(k, _)| !k.starts_with(DIRECT))
            .map(|(_, r)| r.spec.clone())
            .collect();
        tx.send(Out::from(AgentMessage {
            msg: Some(agent_message::Msg::Hello(Hello {
                node: self.node.clone(),
                kernel: self.kernel.clone(),
                probes: self.probes.clone(),
                pods: pods.iter().map(Into::into).collect(),
                exec_enabled: self.args.enable_exec,
                version: env!("CARGO_PKG_VERSION").into(),
                sessions: kept,
                instance: self.instance.clone(),
                link_version: crate::LINK_VERSION,
            })),
        }))
        .await
        .ok();
        let mut inbound = client
            // Taking a message releases the events it held.
            .connect(ReceiverStream::new(rx).map(Out::into_msg))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::AlreadyExists => {
                    anyhow::anyhow!("the hub refused this agent: {}", s.message())
                }
                _ => anyhow::anyhow!("{}: {}", s.code(), s.message()),
            })?
            .into_inner();
        eprintln!(
            "podscope agent: registered with the hub {} as node {}",
            self.hub, self.node
        );
        *lock(&self.link) = Some(tx.clone());
        self.generation.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        let usage = Arc::new(podscope_export::UsageReader::new(self.node.clone()));
        usage.update(&pods);
        let poller = tokio::spawn(async move {
            let mut last = pods;
            loop {
                tokio::time::sleep(me.args.pod_refresh).await;
                let now = me.pods().await;
                if now != last {
                    usage.update(&now);
                }
                // The containers' CPU and memory, read off the event loop.
                let u = usage.clone();
                let read = tokio::task::spawn_blocking(move || u.read())
                    .await
                    .unwrap_or_default();
                let msg = AgentMessage {
                    msg: Some(agent_message::Msg::Usage(crate::proto::Usage {
                        containers: read
                            .into_iter()
                            .map(|u| crate::proto::ContainerUsage {
                                namespace: u.namespace,
                                pod: u.pod,
                                container: u.container,
                                cpu_seconds: u.cpu_seconds,
                                memory_bytes: u.memory_bytes,
                            })
                            .collect(),
                    })),
                };
                if tx.send(msg.into()).await.is_err() {
                    break;
                }
                if now != last {
                    let msg = AgentMessage {
                        msg: Some(agent_message::Msg::Pods(Pods {
                            pods: now.iter().map(Into::into).collect(),
                        })),
                    };
                    if tx.send(msg.into()).await.is_err() {
                        break;
                    }
                    last = now;
                }
            }
        });
        let result = loop {
            match inbound.message().await {
                Ok(Some(m)) => match m.msg {
                    Some(hub_message::Msg::Start(s)) => self.start(s),
                    Some(hub_message::Msg::Stop(s)) => self.stop(&s.session, Some(s.run)),
                    Some(hub_message::Msg::Hops(h)) => self.hops_in(h),
                    Some(hub_message::Msg::Exec(e)) => {
                        let (me, link) = (self.clone(), self.link.clone());
                        tokio::spawn(async move {
                            let r = tokio::task::spawn_blocking(move || me.exec(&e))
                                .await
                                .unwrap_or_default();
                            let msg = AgentMessage {
                                msg: Some(agent_message::Msg::ExecResult(r)),
                            };
                            send(&link, msg).await;
                        });
                    }
                    None => {}
                },
                Ok(None) => break Ok(()),
                Err(s) => break Err(anyhow::anyhow!("{}: {}", s.code(), s.message())),
            }
        };
        poller.abort();
        result
    }

    /// The node's pods for the hub, listed through the node's pod store
    /// (whose listing the sessions then use too: one poller per node).
    pub(crate) async fn pods(&self) -> Vec<podscope_runtime::Pod> {
        let store = self.tracer.pods().clone();
        // The node's sessions list pods through the same store: a listing
        // younger than half the refresh period is reused, not made again
        // (measured: CRI listings were a tenth of `podscope ui`'s CPU).
        let age = self.args.pod_refresh / 2;
        let snap = match tokio::task::spawn_blocking(move || store.fresh(age)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("podscope agent: listing pods: {e}");
                return Vec::new();
            }
        };
        match &snap.discovery {
            Ok(d) => d.pods.clone(),
            Err(e) => {
                eprintln!("podscope agent: listing pods: {e}");
                Vec::new()
            }
        }
    }

    pub(crate) fn stop(&self, session: &str, run: Option<u64>) {
        if let Some(r) = lock(&self.sessions).get(session) {
            if run.is_none_or(|x| x == r.run) {
                r.stopping.store(true, Ordering::SeqCst);
                // The node delivers what the kernel handed over, then the summary.
                self.tracer.stop(r.key);
            }
        }
    }

    /// `podscope exec` on this node for the hub or the agent API: output
    /// captured (up to 1 MiB per stream), every request logged.
    pub(crate) fn exec(&self, r: &ExecRequest) -> ExecResult {
        let mut res = ExecResult {
            id: r.id.clone(),
            node: self.node.clone(),
            exit_code: -1,
            ..Default::default()
        };
        if !self.args.enable_exec {
            res.error = format!(
                "exec is disabled on node {}: its agent runs without --enable-exec",
                self.node
            );
            eprintln!(
                "podscope agent: refused exec in {}/{}: disabled",
                r.namespace, r.pod
            );
            return res;
        }
        if let Err(e) = crate::api::check_exec_target(&r.namespace, &r.pod, &r.command) {
            res.error = e;
            return res;
        }
        let timeout_ms = if r.timeout_ms == 0 {
            30_000
        } else {
            r.timeout_ms
        };
        eprintln!(
            "podscope agent: AUDIT exec in {}/{} container {:?} namespaces {:?} timeout {}ms: {:?}",
            r.namespace, r.pod, r.container, r.namespaces, timeout_ms, r.command
        );
        let mut cmd = Command::new(&self.exe);
        cmd.args(["exec", "--pod", &r.pod, "-n", &r.namespace]);
        if !r.container.is_empty() {
            cmd.args(["--container", &r.container]);
        }
        if !r.namespaces.is_empty() {
            cmd.args(["--ns", &r.namespaces.join(",")]);
        }
        cmd.args(["-t", &format!("{timeout_ms}ms")]);
        if let Some(ep) = &self.args.runtime_endpoint {
            cmd.args(["--runtime-endpoint", ep]);
        }
        cmd.arg("--").args(&r.command);
        let mut child = match cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                res.error = format!("starting podscope exec: {e}");
                return res;
            }
        };
        let capture = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 8192];
                let mut cut = false;
                // Reads to the end so the tool never blocks on a full pipe.
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = EXEC_OUTPUT_MAX - kept.len();
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    cut |= n > room;
                }
                (kept, cut)
            })
        };
        let out = capture(Box::new(child.stdout.take().expect("piped stdout")));
        let err = capture(Box::new(child.stderr.take().expect("piped stderr")));
        let status = child.wait();
        let (stdout, cut1) = out.join().unwrap_or_default();
        let (stderr, cut2) = err.join().unwrap_or_default();
        use std::os::unix::process::ExitStatusExt;
        res.exit_code = match status {
            Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            Err(_) => -1,
        };
        res.stdout = stdout;
        res.stderr = stderr;
        res.truncated = cut1 || cut2;
        eprintln!(
            "podscope agent: AUDIT exec in {}/{} exited {}",
            r.namespace, r.pod, res.exit_code
        );
        res
    }

    /// Stops the hub's sessions (not the agent API's direct traces).
    fn stop_all(&self) {
        let ids: Vec<String> = lock(&self.sessions)
            .keys()
            .filter(|k| !k.starts_with(DIRECT))
            .cloned()
            .collect();
        for id in ids {
            self.stop(&id, None);
        }
    }

    /// The hub's StartSession as the pipeline's spec: the same validation
    /// and words as the CLI's flags.
    fn spec(s: &StartSession) -> Result<SessionSpec> {
        let mut probes = if s.probes.is_empty() && s.tracepoint.is_some() {
            Vec::new()
        } else {
            ProbeKind::parse_list(&s.probes.join(","))?
        };
        let mut hooks = podscope_pipeline::Hooks::default();
        if let Some(h) = &s.syscalls {
            hooks.syscalls = podscope_bpf::SyscallOptions {
                only: podscope_bpf::resolve_syscalls(&h.syscall)?,
                errors_only: h.errors_only,
                summary: h.summary,
            };
            if let Some(i) = &h.interval {
                hooks.summary_interval = Some(
                    crate::api::parse_duration(i).map_err(|e| anyhow::anyhow!("interval: {e}"))?,
                );
            }
            if !probes.contains(&ProbeKind::Syscalls) {
                probes.push(ProbeKind::Syscalls);
            }
        }
        if let Some(t) = &s.tracepoint {
            hooks.tracepoints = podscope_bpf::TracepointOptions {
                names: t.name.clone(),
                filter: t.filter.clone(),
            };
            if !probes.contains(&ProbeKind::Tracepoint) {
                probes.push(ProbeKind::Tracepoint);
            }
        }
        if let Some(c) = &s.capture {
            hooks.capture = podscope_proto::Capture::new(c.headers, c.body, &c.redact_header)
                .map_err(|e| anyhow::anyhow!("capture: {e}"))?;
        }
        Ok(SessionSpec {
            probes,
            selection: Some(Agent::selection(s)?),
            // Pods that do not exist yet are waited for (the hub checked the names).
            wait: true,
            max_events: None,
            hooks,
        })
    }

    /// The pods a session selects.
    fn selection(s: &StartSession) -> Result<PodSelection> {
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
        let selection = PodSelection::from_flags(&PodFlags {
            pod: opt(&s.pod),
            namespace: if s.all_namespaces {
                None
            } else {
                opt(&s.namespace)
            },
            all_namespaces: s.all_namespaces,
            selector: opt(&s.label_selector),
            container: opt(&s.container),
        })?
        // No pod flag: the default namespace, as kubectl (and the CLI) do.
        .unwrap_or_else(|| PodSelection {
            namespace: Some(podscope_pipeline::select::DEFAULT_NAMESPACE.into()),
            ..PodSelection::default()
        });
        Ok(selection)
    }

    /// A session of `ftrace:` tracepoints: its own tracefs instance (no
    /// BPF, not on the node tracer; container-tracer's model), run on a
    /// thread of its own until the session is stopped; its records go to
    /// `sink` as the node's would, then its summary.
    fn start_ftrace(
        &self,
        s: &StartSession,
        names: Vec<String>,
        mut sink: Box<dyn podscope_pipeline::Sink + Send>,
        shared: Arc<Shared>,
        stopping: Arc<AtomicBool>,
    ) {
        let spec = match Agent::selection(s) {
            Ok(sel) => podscope_pipeline::ftrace::FtraceSpec {
                names,
                selection: Some(sel),
                wait: true,
                node: self.node.clone(),
                runtime_endpoint: self.args.runtime_endpoint.clone(),
                // The session's ftrace filter rides in a tracepoint hook
                // without names (crate::api).
                filter: s.tracepoint.as_ref().and_then(|t| t.filter.clone()),
                buffer_bytes: (s.ftrace_buffer_bytes > 0).then_some(s.ftrace_buffer_bytes),
                ..Default::default()
            },
            Err(e) => {
                *lock(&shared.error) = Some(format!("{e:#}"));
                return;
            }
        };
        let (session, run) = (s.session.clone(), s.run);
        let on_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("podscope-ftrace".into())
            .spawn(move || {
                // The run ends with its summary; then the sink drops, which
                // ends the session's queue.
                let end = podscope_pipeline::ftrace::run(
                    &spec,
                    &mut *sink,
                    &|| stopping.load(Ordering::SeqCst),
                    &mut |dir, _| {
                        eprintln!(
                            "podscope agent: session {session} run {run}: tracing {} through ftrace in {}",
                            spec.names.join(","),
                            dir.display()
                        );
                        on_thread.attached.store(true, Ordering::Relaxed);
                    },
                );
                if let Err(e) = end {
                    eprintln!("podscope agent: session {session} run {run}: {e:#}");
                    *lock(&on_thread.error) = Some(format!("{e:#}"));
                }
            });
        if let Err(e) = spawned {
            *lock(&shared.error) = Some(format!("starting the ftrace thread: {e}"));
        }
    }

    fn start(self: &Arc<Self>, s: StartSession) {
        self.start_with(s, self.link.clone());
    }

    /// Runs `s` on the node tracer, its records going to `link` (the hub's,
    /// or a direct Trace call's).
    pub(crate) fn start_with(self: &Arc<Self>, s: StartSession, link: Link) {
        if let Some(r) = lock(&self.sessions).get(&s.session) {
            if r.run == s.run {
                return;
            }
        }
        self.stop(&s.session, None);
        let key = self.keys.fetch_add(1, Ordering::Relaxed) + 1;
        let shared = Arc::new(Shared::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let (qtx, qrx) = mpsc::unbounded_channel::<(Vec<Line>, Held)>();
        let queued = Arc::new(AtomicUsize::new(0));
        let queue = Queue {
            tx: qtx,
            queued: queued.clone(),
            limit: self.args.queue_size.max(1),
            bytes: self.queued_bytes.clone(),
            bytes_limit: usize::try_from(self.args.queue_bytes).unwrap_or(usize::MAX),
        };
        let sink = LinkSink {
            node: self.node.clone(),
            queue,
            shared: shared.clone(),
            chunk: Vec::new(),
            emitted: 0,
        };
        lock(&self.sessions).insert(
            s.session.clone(),
            Running {
                run: s.run,
                key,
                stopping: stopping.clone(),
                spec: s.clone(),
                otlp: None,
            },
        );
        let me = self.clone();
        // `"otlp": true`: the session's own exporter, beside the link.
        let (sink, otlp): (Box<dyn podscope_pipeline::Sink + Send>, _) = if s.otlp {
            match self.session_otlp(&s) {
                Ok(o) => {
                    eprintln!(
                        "podscope agent: session {}: exporting OTLP {}",
                        s.session,
                        o.describe()
                    );
                    let observer = o.observer();
                    if let Some(r) = lock(&self.sessions).get_mut(&s.session) {
                        r.otlp = Some(observer.clone());
                    }
                    self.forward_hops(&link, &s, observer.clone());
                    (
                        Box::new(podscope_pipeline::sinks::Exported {
                            inner: sink,
                            otlp: observer,
                        }),
                        Some(o),
                    )
                }
                Err(e) => {
                    eprintln!("podscope agent: session {} run {}: {e:#}", s.session, s.run);
                    *lock(&shared.error) = Some(format!("{e:#}"));
                    // No session: the queue ends with the sink.
                    drop(sink);
                    tokio::spawn(async move {
                        forward(&link, &s, qrx, &queued, &me.queued_bytes, &shared).await;
                        me.finish(&link, &s, &shared).await;
                    });
                    return;
                }
            }
        } else {
            (Box::new(sink), None)
        };
        let (ftrace, _) = podscope_pipeline::ftrace::split_names(&s.probes.join(","));
        if !ftrace.is_empty() {
            self.start_ftrace(&s, ftrace, sink, shared.clone(), stopping);
            let me = self.clone();
            tokio::spawn(async move {
                forward(&link, &s, qrx, &queued, &me.queued_bytes, &shared).await;
                finish_otlp(&s, otlp, &shared).await;
                me.finish(&link, &s, &shared).await;
            });
            return;
        }
        tokio::spawn(async move {
            let started = match Agent::spec(&s) {
                Ok(spec) => {
                    let (tracer, sh) = (me.tracer.clone(), shared.clone());
                    let on_end: podscope_pipeline::thread::OnEnd = Box::new(move |end| {
                        if let Some(e) = end.error {
                            *lock(&sh.error) = Some(e);
                        }
                    });
                    tokio::task::spawn_blocking(move || tracer.start(key, spec, sink, on_end))
                        .await
                        .unwrap_or_else(|e| Err(format!("starting the session: {e}")))
                }
                Err(e) => {
                    // The queue ends with the sink: no session, no records.
                    drop(sink);
                    Err(format!("{e:#}"))
                }
            };
            match &started {
                Ok(st) => {
                    eprintln!(
                        "podscope agent: session {} run {}: tracing {} ({})",
                        s.session,
                        s.run,
                        s.probes.join(","),
                        describe(&s)
                    );
                    for (p, e) in &st.failed {
                        eprintln!(
                            "podscope agent: session {}: not tracing {p}: {e}",
                            s.session
                        );
                    }
                    shared.attached.store(true, Ordering::Relaxed);
                    // Stopped while its probes loaded: the node did not
                    // know the session yet, so stop it now (a second stop
                    // is a no-op).
                    if stopping.load(Ordering::SeqCst) {
                        me.tracer.stop(key);
                    }
                }
                Err(e) => {
                    eprintln!("podscope agent: session {} run {}: {e}", s.session, s.run);
                    *lock(&shared.error) = Some(e.clone());
                }
            }
            // Ends when the node drops the session's sink (and so the queue).
            forward(&link, &s, qrx, &queued, &me.queued_bytes, &shared).await;
            finish_otlp(&s, otlp, &shared).await;
            me.finish(&link, &s, &shared).await;
        });
    }

    /// A session's queue has ended: its final status to the hub, and it is
    /// gone from the node's list.
    async fn finish(&self, link: &Link, s: &StartSession, shared: &Shared) {
        let gaps = lock(&shared.gaps).clone();
        let summary = lock(&shared.summary).clone();
        let (state, error) = match lock(&shared.error).clone() {
            None => ("finished", String::new()),
            Some(e) => ("failed", e),
        };
        send(link, status(&s.session, s.run, state, gaps, summary, error)).await;
        let mut sessions = lock(&self.sessions);
        if sessions.get(&s.session).is_some_and(|r| r.run == s.run) {
            sessions.remove(&s.session);
        }
    }
}

impl Agent {
    /// CLIENT spans of another node for a session's SERVER spans here.
    fn hops_in(&self, h: HopSpans) {
        let observer = match lock(&self.sessions).get(&h.session) {
            Some(r) if r.run == h.run => r.otlp.clone(),
            _ => None,
        };
        let Some(o) = observer else {
            return;
        };
        let hops: Vec<Hop> = h
            .spans
            .into_iter()
            .filter_map(|s| match Hop::try_from(s) {
                Ok(hop) => Some(hop),
                Err(e) => {
                    eprintln!("podscope agent: session {}: {e}; ignored", h.session);
                    None
                }
            })
            .collect();
        o.push_hops(hops);
    }

    /// While the session runs: its CLIENT spans whose SERVER end is not on
    /// this node go to the hub, which hands each to the node at the other
    /// end.
    fn forward_hops(
        self: &Arc<Self>,
        link: &Link,
        s: &StartSession,
        observer: podscope_export::OtlpObserver,
    ) {
        let (me, link, session, run) = (self.clone(), link.clone(), s.session.clone(), s.run);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HOPS_EVERY);
            loop {
                every.tick().await;
                let running = lock(&me.sessions)
                    .get(&session)
                    .is_some_and(|r| r.run == run);
                let spans: Vec<HopSpan> =
                    observer.take_hops().into_iter().map(Into::into).collect();
                if !spans.is_empty() {
                    let msg = AgentMessage {
                        msg: Some(agent_message::Msg::Hops(HopSpans {
                            session: session.clone(),
                            run,
                            spans,
                        })),
                    };
                    send(&link, msg).await;
                }
                if !running {
                    break;
                }
            }
        });
    }

    /// A session's own OTLP exporter (`"otlp": true`), to this agent's
    /// --otlp-endpoint: spans as a local trace makes them, its syscall and
    /// tracepoint records as log records in the session span's context.
    fn session_otlp(&self, s: &StartSession) -> Result<podscope_export::Otlp> {
        let Some(ep) = &self.args.otlp_endpoint else {
            anyhow::bail!(
                "the session asks for OTLP export and this agent has no endpoint: start the agent \
                 with --otlp-endpoint URL (docs/otlp.md), or create the session without \"otlp\""
            );
        };
        let names = s.probes.join(",");
        let (ftrace, rest) = podscope_pipeline::ftrace::split_names(&names);
        let probes = ProbeKind::parse_list(&rest.join(",")).unwrap_or_default();
        let mut log_probes = Vec::new();
        if s.syscalls.is_some() || probes.contains(&ProbeKind::Syscalls) {
            log_probes.push(ProbeKind::Syscalls);
        }
        if s.tracepoint.is_some() || !ftrace.is_empty() || probes.contains(&ProbeKind::Tracepoint) {
            log_probes.push(ProbeKind::Tracepoint);
        }
        let flags = podscope_export::OtlpFlags {
            endpoint: Some(ep.clone()),
            protocol: self.args.otlp_protocol.clone(),
            headers: Vec::new(),
            log_probes,
            queue_size: None,
            session_events: None,
            ca: None,
        };
        let mut cfg =
            podscope_export::OtlpConfig::resolve(&flags, &self.node, &|k| std::env::var(k).ok())?;
        cfg.requests.requests_traced = [ProbeKind::Http, ProbeKind::Grpc, ProbeKind::Tls]
            .iter()
            .any(|p| probes.contains(p));
        // Hub sessions join hops across nodes.
        cfg.requests.remote_hold_ns = REMOTE_HOLD.as_nanos() as u64;
        Ok(podscope_export::Otlp::start(
            cfg,
            Some(podscope_pipeline::sinks::otlp_log_body()),
        )?)
    }
}

/// The session has ended: its OTLP export (if any) sends the session span
/// and what is queued (at most its shutdown timeout) before the node says
/// it finished.
async fn finish_otlp(s: &StartSession, otlp: Option<podscope_export::Otlp>, shared: &Shared) {
    let Some(o) = otlp else {
        return;
    };
    let summary = lock(&shared.summary).clone();
    let (events, lost) = summary
        .map(|m| (m.emitted.unwrap_or(m.events), m.lost))
        .unwrap_or((0, 0));
    let info = podscope_export::otlp::SessionInfo {
        probes: s.probes.clone(),
        scope: describe(s),
        session: s.session.clone(),
    };
    let id = s.session.clone();
    let stats = tokio::task::spawn_blocking(move || o.finish(&info, events, lost)).await;
    match stats {
        Ok(st) => {
            for line in st.to_string().lines() {
                eprintln!(
                    "podscope agent: session {id}: {}",
                    line.trim_start_matches("podscope: ")
                );
            }
        }
        Err(e) => eprintln!("podscope agent: session {id}: the OTLP export ended badly: {e}"),
    }
}

/// The selection of a StartSession in words, for the agent's log.
fn describe(s: &StartSession) -> String {
    let ns = if s.all_namespaces {
        None
    } else if s.namespace.is_empty() {
        Some(podscope_pipeline::select::DEFAULT_NAMESPACE)
    } else {
        Some(s.namespace.as_str())
    };
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
    podscope_runtime::names::describe_selection(
        opt(&s.pod).as_deref(),
        ns,
        opt(&s.label_selector).as_deref(),
        opt(&s.container).as_deref(),
    )
}

/// A record on its way to the hub, with the probe its gaps count against.
pub(crate) struct Line {
    pub(crate) rec: Record,
    pub(crate) probe: &'static str,
    /// An event (true) or a `lost` record.
    pub(crate) event: bool,
    /// An event's estimated memory while it waits (0: not counted).
    pub(crate) bytes: u32,
}

/// The memory an event's record holds while it waits for the hub: its
/// place in a batch and, about, its strings (their encoded length).
fn held_bytes(rec: &Record) -> u32 {
    use prost::Message;
    (std::mem::size_of::<Line>() + rec.encoded_len()) as u32
}

/// A session's sink on the node thread: events as typed records into the
/// bounded queue (a gap when full), `lost` records and the summary aside.
struct LinkSink {
    node: String,
    queue: Queue,
    shared: Arc<Shared>,
    chunk: Vec<Line>,
    /// Events handed to the queue or counted as gaps.
    emitted: u64,
}

impl podscope_pipeline::Sink for LinkSink {
    fn event(&mut self, ev: &Event) -> std::io::Result<()> {
        self.emitted += 1;
        let rec = crate::records::event(ev);
        self.chunk.push(Line {
            bytes: held_bytes(&rec),
            rec,
            probe: ev.probe().name(),
            event: true,
        });
        if self.chunk.len() >= 1024 {
            self.queue
                .put(std::mem::take(&mut self.chunk), &self.shared);
        }
        Ok(())
    }

    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> std::io::Result<()> {
        lock(&self.shared.side).push(Line {
            rec: crate::records::lost(probe, delta, total, &self.node),
            probe: probe.name(),
            event: false,
            bytes: 0,
        });
        Ok(())
    }

    fn summary(
        &mut self,
        elapsed_ns: u64,
        stats: &[podscope_bpf::ProbeStats],
    ) -> std::io::Result<()> {
        self.flush()?;
        // The summary's `events` counts what the probes decoded while the
        // session ran, including other pods' events; `emitted` is what this
        // session delivered, which is what delivered + gaps add up to.
        let mut v = podscope_pipeline::format::summary_record(elapsed_ns, stats);
        v["emitted"] = serde_json::Value::from(self.emitted);
        v["node"] = serde_json::Value::String(self.node.clone());
        // Typed for the hub: the same fields as the JSON summary record.
        *lock(&self.shared.summary) = serde_json::from_value::<crate::api::SummaryView>(v)
            .ok()
            .map(|v| (&v).into());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.queue
            .put(std::mem::take(&mut self.chunk), &self.shared);
        Ok(())
    }
}

#[derive(Default)]
struct Shared {
    gaps: Mutex<BTreeMap<String, u64>>,
    /// `lost` records: few, never dropped.
    side: Mutex<Vec<Line>>,
    summary: Mutex<Option<crate::proto::Summary>>,
    attached: AtomicBool,
    /// Why the session failed (it did not start, or its sink broke).
    error: Mutex<Option<String>>,
}

fn status(
    session: &str,
    run: u64,
    state: &str,
    gaps: BTreeMap<String, u64>,
    summary: Option<crate::proto::Summary>,
    error: String,
) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Status(SessionStatus {
            session: session.into(),
            run,
            state: state.into(),
            gaps: gaps.into_iter().collect(),
            summary,
            error,
        })),
    }
}

pub(crate) async fn send(link: &Link, msg: impl Into<Out>) -> bool {
    let tx = lock(link).clone();
    match tx {
        Some(tx) => tx.send(msg.into()).await.is_ok(),
        None => false,
    }
}

/// The bounded queue between the node thread and the link: chunks of
/// events, bounded by the session's events and the node's bytes waiting
/// for the hub (queued here, or handed to the link and not yet taken).
struct Queue {
    tx: mpsc::UnboundedSender<(Vec<Line>, Held)>,
    /// This session's events waiting.
    queued: Arc<AtomicUsize>,
    limit: usize,
    /// Every session's bytes waiting.
    bytes: Arc<AtomicUsize>,
    bytes_limit: usize,
}

impl Queue {
    /// Queues what fits; the rest are gaps, counted per probe.
    fn put(&self, mut chunk: Vec<Line>, sh: &Shared) {
        if chunk.is_empty() {
            return;
        }
        let room = self
            .limit
            .saturating_sub(self.queued.load(Ordering::Relaxed));
        let mut bytes_room = self
            .bytes_limit
            .saturating_sub(self.bytes.load(Ordering::Relaxed));
        let mut fit = 0;
        let mut bytes = 0;
        for l in chunk.iter().take(room) {
            let b = l.bytes as usize;
            if b > bytes_room {
                break;
            }
            bytes_room -= b;
            bytes += b;
            fit += 1;
        }
        if chunk.len() > fit {
            let mut g = lock(&sh.gaps);
            for l in chunk.drain(fit..) {
                *g.entry(l.probe.to_string()).or_default() += 1;
            }
        }
        if !chunk.is_empty() {
            self.queued.fetch_add(chunk.len(), Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            // Given back when the link takes the events, or when they are
            // dropped on the way (the session's queue or the link closed).
            let held = Held {
                session: self.queued.clone(),
                node: self.bytes.clone(),
                events: chunk.len(),
                bytes,
            };
            let _ = self.tx.send((chunk, held));
        }
    }
}

/// Moves the queue to the hub in batches of up to 512 events or every 100 ms,
/// with the `lost` records and a status when the gaps or the state change.
async fn forward(
    link: &Link,
    s: &StartSession,
    mut q: mpsc::UnboundedReceiver<(Vec<Line>, Held)>,
    queued: &Arc<AtomicUsize>,
    node_bytes: &Arc<AtomicUsize>,
    sh: &Shared,
) {
    let mut batch: Vec<Line> = Vec::new();
    let empty = || Held {
        session: queued.clone(),
        node: node_bytes.clone(),
        events: 0,
        bytes: 0,
    };
    let mut held = empty();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent_gaps = BTreeMap::new();
    let mut sent_attached = false;
    send(
        link,
        status(
            &s.session,
            s.run,
            "starting",
            BTreeMap::new(),
            None,
            String::new(),
        ),
    )
    .await;
    loop {
        // Sends as soon as the queue is drained (up to 2048 events a batch):
        // no waiting for a timer, so the link adds little latency.
        let done = tokio::select! {
            item = q.recv() => match item {
                Some((chunk, h)) => {
                    batch.extend(chunk);
                    held.absorb(h);
                    while batch.len() < 2048 {
                        match q.try_recv() {
                            Ok((chunk, h)) => {
                                batch.extend(chunk);
                                held.absorb(h);
                            }
                            Err(_) => break,
                        }
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
        };
        let side = std::mem::take(&mut *lock(&sh.side));
        if !batch.is_empty() || !side.is_empty() {
            let lines: Vec<Line> = side.into_iter().chain(batch.drain(..)).collect();
            // Per probe, in case there is no hub to deliver to.
            let mut per_probe: BTreeMap<&'static str, u64> = BTreeMap::new();
            for l in lines.iter().filter(|l| l.event) {
                *per_probe.entry(l.probe).or_default() += 1;
            }
            // Counted until the link takes the batch (or drops it).
            let msg = Out {
                msg: AgentMessage {
                    msg: Some(agent_message::Msg::Events(EventBatch {
                        session: s.session.clone(),
                        run: s.run,
                        records: lines.into_iter().map(|l| l.rec).collect(),
                    })),
                },
                _held: Some(std::mem::replace(&mut held, empty())),
            };
            if !send(link, msg).await && !per_probe.is_empty() {
                // No hub to deliver to: still counted, never silent.
                let mut g = lock(&sh.gaps);
                for (p, n) in per_probe {
                    *g.entry(p.to_string()).or_default() += n;
                }
            }
        }
        let gaps = lock(&sh.gaps).clone();
        let attached = sh.attached.load(Ordering::Relaxed);
        if !done && (gaps != sent_gaps || attached != sent_attached) {
            let state = if attached { "running" } else { "starting" };
            // Not sent (no link): tried again on the next tick.
            let sent = send(
                link,
                status(&s.session, s.run, state, gaps.clone(), None, String::new()),
            )
            .await;
            if sent {
                sent_gaps = gaps;
                sent_attached = attached;
            }
        }
        if done {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_bytes_take_sizes_and_say_what_is_wrong() {
        assert_eq!(parse_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("65536"), Ok(65536));
        for bad in ["", "M", "16Q", "-1M", "sixteen"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains("(e.g. 16M)"), "{bad}: {e}");
        }
        assert!(parse_bytes("100").unwrap_err().contains("between 4K"));
    }

    fn line(bytes: u32) -> Line {
        Line {
            rec: Record::default(),
            probe: "open",
            event: true,
            bytes,
        }
    }

    /// The node's byte budget is shared by the sessions' queues, a full one
    /// makes gaps (counted per probe), and the budget comes back when the
    /// link takes the events or when they are dropped on the way.
    #[test]
    fn queues_share_the_node_byte_budget_and_give_it_back() {
        let node = Arc::new(AtomicUsize::new(0));
        let queue = || {
            let (tx, rx) = mpsc::unbounded_channel();
            let q = Queue {
                tx,
                queued: Arc::new(AtomicUsize::new(0)),
                limit: 100,
                bytes: node.clone(),
                bytes_limit: 1000,
            };
            (q, rx)
        };
        let (a, mut arx) = queue();
        let (b, mut brx) = queue();
        let (sa, sb) = (Shared::default(), Shared::default());
        a.put((0..6).map(|_| line(100)).collect(), &sa);
        assert_eq!(node.load(Ordering::Relaxed), 600);
        // b finds 400 bytes left: 4 of its 6 events fit.
        b.put((0..6).map(|_| line(100)).collect(), &sb);
        assert_eq!(node.load(Ordering::Relaxed), 1000);
        assert_eq!(b.queued.load(Ordering::Relaxed), 4);
        assert_eq!(lock(&sb.gaps).get("open"), Some(&2));
        // The record count bounds a session too.
        let (c, _crx) = queue();
        node.store(0, Ordering::Relaxed);
        let sc = Shared::default();
        c.put((0..150).map(|_| line(1)).collect(), &sc);
        assert_eq!(c.queued.load(Ordering::Relaxed), 100);
        assert_eq!(lock(&sc.gaps).get("open"), Some(&50));
        node.store(1000, Ordering::Relaxed);
        // Taken by the link: a's 600 bytes and 6 events come back.
        let (chunk, held) = arx.try_recv().unwrap();
        assert_eq!(chunk.len(), 6);
        let out = Out {
            msg: AgentMessage::default(),
            _held: Some(held),
        };
        assert_eq!(a.queued.load(Ordering::Relaxed), 6);
        drop(out.into_msg());
        assert_eq!(node.load(Ordering::Relaxed), 400);
        assert_eq!(a.queued.load(Ordering::Relaxed), 0);
        // Dropped with its queue (the session went away): b's come back too.
        drop(b);
        while let Ok(x) = brx.try_recv() {
            drop(x);
        }
        assert_eq!(node.load(Ordering::Relaxed), 0);
    }

    /// An open event waits in a few hundred bytes: the probes' parts are
    /// boxed (build.rs), else every record would take the largest one's
    /// room (about 800 bytes) in the queues.
    #[test]
    fn an_open_event_waits_in_a_few_hundred_bytes() {
        use podscope_model as m;
        let ev = m::Event {
            timestamp: m::Timestamp(1_700_000_000_123_456_789),
            identity: m::Identity {
                node: "node-1".into(),
                namespace: "shop".into(),
                pod: "web-0".into(),
                pod_uid: "0b7c6f52-1c1e-4b7e-9a53-2f1d2e3c4b5a".into(),
                container: "web".into(),
                container_id: "c0ffee".repeat(10),
                image: "docker.io/library/nginx:1.27".into(),
            },
            pid: 4242,
            tid: 4242,
            uid: 0,
            comm: "nginx".into(),
            cgroup_id: 7777,
            data: m::EventData::Open(m::OpenEvent {
                kind: "open".into(),
                path: "/usr/share/nginx/html/index.html".into(),
                dirfd: Some(-100),
                flags: 0o2_000_000,
                flags_str: "O_RDONLY|O_CLOEXEC".into(),
                mode: 0,
                fd: Some(7),
                errno: None,
                error: None,
            }),
        };
        let b = held_bytes(&crate::records::event(&ev));
        eprintln!("an open event waits in {b} bytes");
        assert!(
            b < 800,
            "an open event's record takes {b} bytes (about 600 expected)"
        );
    }
}
