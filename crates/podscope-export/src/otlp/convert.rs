//! Events into OTLP: one span per TCP connection and per HTTP request, the
//! session span, log records, and the per-pod/container resources they are
//! grouped under.
//!
//! The tracing thread (the [`Tap`]) pairs events and queues compact work
//! items ([`SpanWork`], [`LogWork`]: the event's own fields, a few hundred
//! bytes); the export thread turns them into OTLP messages, so the trace
//! loop neither waits for the network nor pays for building protobuf
//! messages, and a full queue holds ~6x less memory than OTLP spans would.
//! Resources are built once per container and shared (`Arc`) by every item.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status::StatusCode, Span, Status};
use podscope_model::{
    Event, EventData, HttpEvent, Identity, ProbeKind, TcpEvent, TcpKind, Timestamp,
};

use super::config::OtlpConfig;
use super::queue::Queue;

/// Connections remembered between connect/accept and close (to give the
/// close's span the ids its connect already used and to attach retransmits
/// and resets). Beyond this, new connections still get a span at close, only
/// without the events in between.
pub const MAX_OPEN_CONNECTIONS: usize = 16_384;
/// Span events (retransmits, resets) kept per connection span.
pub const MAX_CONNECTION_EVENTS: usize = 32;
/// Resources cached before the cache is cleared (host processes in `--all`
/// mode can come from many cgroups and commands).
const MAX_RESOURCES: usize = 8192;

/// Makes the body of a log record: a short line a person reads.
pub type LogBody = Box<dyn Fn(&Event) -> String + Send>;

/// A resource (pod/container, or host process, or podscope itself), shared
/// by the items that belong to it.
#[derive(Debug)]
pub struct Res {
    identity: Identity,
    /// The OTLP resource.
    pub resource: Resource,
}

/// A span to send, with its resource.
pub type SpanItem = (Arc<Res>, SpanWork);
/// A log record to send, with its resource.
pub type LogItem = (Arc<Res>, LogWork);

/// A trace id and a span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpanIds {
    pub(super) trace: [u8; 16],
    pub(super) span: [u8; 8],
}

impl SpanIds {
    /// Ids as given (another node's span, received through the hub).
    pub fn new(trace: [u8; 16], span: [u8; 8]) -> SpanIds {
        SpanIds { trace, span }
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace
    }

    /// The span id.
    pub fn span_id(&self) -> [u8; 8] {
        self.span
    }
}

/// A queued span: a connection still in its compact form, or a span built
/// already (the session span, once).
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every item is a connection; boxing it would add an allocation per span"
)]
pub enum SpanWork {
    /// One TCP connection.
    Conn(ConnSpan),
    /// One HTTP request and its response.
    Request(RequestSpan),
    /// Kernel work done while serving a request: a child of its span.
    Kernel(KernelSpan),
    /// A finished span.
    Ready(Box<Span>),
}

impl SpanWork {
    /// The OTLP span (built on the export thread).
    pub fn into_span(self) -> Span {
        match self {
            SpanWork::Conn(c) => c.into_span(),
            SpanWork::Request(r) => r.into_span(),
            SpanWork::Kernel(k) => k.into_span(),
            SpanWork::Ready(s) => *s,
        }
    }
}

/// What a connection span is built from.
#[derive(Debug)]
pub struct ConnSpan {
    ids: SpanIds,
    session: SpanIds,
    start: u64,
    end: u64,
    established: u64,
    pid: u32,
    comm: String,
    tcp: TcpEvent,
    between: Vec<span::Event>,
    dropped_events: u32,
    open_at_exit: bool,
}

/// What a request span is built from.
#[derive(Debug)]
pub struct RequestSpan {
    ids: SpanIds,
    session: SpanIds,
    start: u64,
    pid: u32,
    tid: u32,
    comm: String,
    http: HttpEvent,
    /// The parent span (the caller's on the wire, the peer's CLIENT span or
    /// the SERVER span being served); absent for a trace's root.
    parent: Option<[u8; 8]>,
    /// How the parent was found (`podscope.trace.parent`).
    how: Option<super::xtrace::How>,
    /// Why a CLIENT span has no parent.
    unparented: Option<String>,
    /// The candidate parents of an unparented span.
    links: Vec<SpanIds>,
    /// Kernel child spans left out over the cap.
    children_dropped: u32,
    /// TCP retransmits on the connection during the request.
    retransmits: u32,
}

/// What a kernel child span of a request is built from.
#[derive(Debug)]
pub struct KernelSpan {
    ids: SpanIds,
    parent: [u8; 8],
    ev: Event,
}

/// A queued log record: the event without its identity (the resource has it).
#[derive(Debug)]
pub struct LogWork {
    ev: Event,
    observed: u64,
    ids: Option<SpanIds>,
}

/// Span and trace ids from a SplitMix64 stream seeded by the process's
/// random hasher keys and the clock: unique enough for tracing, no `rand`.
#[derive(Debug)]
pub(super) struct Ids(u64);

impl Ids {
    pub(super) fn new() -> Ids {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(Timestamp::now().0);
        h.write_u32(std::process::id());
        Ids(h.finish())
    }

    fn next(&mut self) -> u64 {
        loop {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }

    /// A new trace id.
    pub(super) fn trace(&mut self) -> [u8; 16] {
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&self.next().to_be_bytes());
        trace[8..].copy_from_slice(&self.next().to_be_bytes());
        trace
    }

    /// A new span id.
    pub(super) fn span(&mut self) -> [u8; 8] {
        self.next().to_be_bytes()
    }

    fn ids(&mut self) -> SpanIds {
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&self.next().to_be_bytes());
        trace[8..].copy_from_slice(&self.next().to_be_bytes());
        SpanIds {
            trace,
            span: self.next().to_be_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConnKey {
    saddr: String,
    sport: u16,
    daddr: String,
    dport: u16,
}

impl ConnKey {
    fn of(t: &TcpEvent) -> ConnKey {
        ConnKey {
            saddr: t.saddr.clone(),
            sport: t.sport,
            daddr: t.daddr.clone(),
            dport: t.dport,
        }
    }
}

#[derive(Debug)]
struct OpenConn {
    at: u64,
    ids: SpanIds,
    events: Vec<span::Event>,
    dropped_events: u32,
    /// For a span if the connection is still open at exit.
    res: Arc<Res>,
    pid: u32,
    comm: String,
    tcp: TcpEvent,
}

#[derive(Debug)]
struct Session {
    ids: SpanIds,
    start: u64,
    events: Vec<span::Event>,
    dropped_events: u32,
    cap: usize,
    res: Arc<Res>,
}

/// What the session span says about the run, given at exit.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Probe names.
    pub probes: Vec<String>,
    /// What was traced, in words (`pods in namespace shop`).
    pub scope: String,
    /// The hub's session id, for a session an agent exports
    /// (`podscope.session.id`); empty for a local trace.
    pub session: String,
}

/// The tracing thread's side: turns events into spans and log records.
pub struct Tap {
    node: String,
    extra: Vec<KeyValue>,
    log_probes: [bool; ProbeKind::ALL.len() + 1],
    resources: HashMap<u64, Arc<Res>>,
    containers: HashMap<String, Arc<Res>>,
    hosts: HashMap<String, Arc<Res>>,
    open: HashMap<ConnKey, OpenConn>,
    /// Connections not remembered because [`MAX_OPEN_CONNECTIONS`] were open.
    pub untracked: u64,
    session: Session,
    ids: Ids,
    spans: Arc<Queue<SpanItem>>,
    logs: Option<Arc<Queue<LogItem>>>,
    /// The request-trace stage: decides request spans' traces and parents.
    requests: super::xtrace::Builder<Arc<Res>>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("node", &self.node)
            .field("resources", &self.resources.len())
            .field("open", &self.open.len())
            .finish_non_exhaustive()
    }
}

/// The probe's slot in `log_probes`; the one after ALL's for the
/// tracepoint probe (not in ALL).
fn probe_index(p: ProbeKind) -> usize {
    ProbeKind::ALL
        .iter()
        .position(|x| *x == p)
        .unwrap_or(ProbeKind::ALL.len())
}

impl Tap {
    /// A tap feeding `spans` and (when logs were asked for) `logs`.
    pub fn new(
        cfg: &OtlpConfig,
        spans: Arc<Queue<SpanItem>>,
        logs: Option<Arc<Queue<LogItem>>>,
    ) -> Tap {
        let extra: Vec<KeyValue> = cfg
            .resource_attributes
            .iter()
            .map(|(k, v)| kv_str(k, v))
            .collect();
        let mut own = vec![
            kv_str("service.name", &cfg.service_name),
            kv_str("service.version", env!("CARGO_PKG_VERSION")),
        ];
        if !cfg.node.is_empty() {
            own.push(kv_str("k8s.node.name", &cfg.node));
            own.push(kv_str("host.name", &cfg.node));
        }
        own.extend(extra.iter().cloned());
        let mut ids = Ids::new();
        let session = Session {
            ids: ids.ids(),
            start: Timestamp::now().0,
            events: Vec::new(),
            dropped_events: 0,
            cap: cfg.session_events,
            res: Arc::new(Res {
                identity: Identity::default(),
                resource: Resource {
                    attributes: own,
                    ..Default::default()
                },
            }),
        };
        let mut log_probes = [false; ProbeKind::ALL.len() + 1];
        if logs.is_some() {
            for p in &cfg.log_probes {
                log_probes[probe_index(*p)] = true;
            }
        }
        Tap {
            node: cfg.node.clone(),
            extra,
            log_probes,
            resources: HashMap::new(),
            containers: HashMap::new(),
            hosts: HashMap::new(),
            open: HashMap::new(),
            untracked: 0,
            session,
            ids,
            spans,
            logs,
            requests: super::xtrace::Builder::new(cfg.requests),
        }
    }

    /// Queues the request spans (and their kernel children) decided by now.
    pub fn tick(&mut self) {
        let out = self.requests.tick(Timestamp::now().0);
        self.queue_decided(out);
    }

    /// CLIENT spans for the nodes at the other end of their connections.
    pub fn take_hops(&mut self) -> Vec<super::xtrace::Hop> {
        self.requests.take_hops()
    }

    /// CLIENT spans of other nodes, for the SERVER spans here.
    pub fn push_hops(&mut self, hops: Vec<super::xtrace::Hop>) {
        let now = Timestamp::now().0;
        for h in hops {
            self.requests.push_remote(h, now);
        }
    }

    /// The request-trace stage's counts.
    pub fn request_stats(&self) -> super::xtrace::BuildStats {
        self.requests.stats()
    }

    fn queue_decided(&mut self, out: Vec<super::xtrace::Decided<Arc<Res>>>) {
        use super::xtrace::Decided;
        for d in out {
            match d {
                Decided::Request {
                    res,
                    ids,
                    parent,
                    how,
                    unparented,
                    links,
                    ev,
                    children_dropped,
                    retransmits,
                } => {
                    let EventData::Http(http) = ev.data else {
                        continue;
                    };
                    let span = RequestSpan {
                        ids,
                        session: self.session.ids,
                        start: ev.timestamp.0,
                        pid: ev.pid,
                        tid: ev.tid,
                        comm: ev.comm,
                        http: *http,
                        parent,
                        how: Some(how),
                        unparented,
                        links,
                        children_dropped,
                        retransmits,
                    };
                    self.spans.push((res, SpanWork::Request(span)));
                }
                Decided::Kernel {
                    res,
                    ids,
                    parent,
                    ev,
                } => {
                    self.spans
                        .push((res, SpanWork::Kernel(KernelSpan { ids, parent, ev })));
                }
            }
        }
    }

    /// One event from the trace.
    pub fn observe(&mut self, ev: &Event) {
        let log = self.log_probes[probe_index(ev.probe())];
        let mut ids = None;
        match &ev.data {
            EventData::Tcp(t) => match t.kind {
                TcpKind::Connect | TcpKind::Accept => ids = self.opened(ev, t),
                TcpKind::Close | TcpKind::ConnectFailed => {
                    let res = self.resource(ev);
                    let conn = self.connection(ev, t);
                    ids = Some(conn.ids);
                    self.spans.push((res, SpanWork::Conn(conn)));
                }
                TcpKind::Retransmit | TcpKind::ResetSent | TcpKind::ResetReceived => {
                    ids = self.on_connection(ev, t);
                    if ids.is_none() {
                        self.session_event(ev);
                    }
                }
            },
            EventData::Exec(_) | EventData::Exit(_) => self.session_event(ev),
            // Request spans are decided by the request-trace stage (held
            // until their parent is known; see xtrace.rs).
            EventData::Http(h) if h.kind == "request" => {
                let res = self.resource(ev);
                self.requests.push_request(ev, res, Timestamp::now().0);
            }
            // High-volume probes: log records only (--otlp-logs), and
            // kernel child spans of the requests being served.
            EventData::Bio(_)
            | EventData::Cache(_)
            | EventData::Open(_)
            | EventData::SockData(_)
            | EventData::Http(_)
            | EventData::Dns(_)
            | EventData::Syscall(_)
            | EventData::SyscallSummary(_)
            | EventData::Tracepoint(_)
            | EventData::Drop(_)
            | EventData::NetPacket(_)
            | EventData::NetFlow(_) => {}
        }
        if !matches!(&ev.data, EventData::Http(_)) {
            self.requests.push_event(ev);
        }
        if log {
            let res = self.resource(ev);
            let work = LogWork {
                ev: Event {
                    timestamp: ev.timestamp,
                    identity: Identity::default(),
                    pid: ev.pid,
                    tid: ev.tid,
                    uid: ev.uid,
                    comm: ev.comm.clone(),
                    cgroup_id: ev.cgroup_id,
                    data: ev.data.clone(),
                },
                observed: Timestamp::now().0,
                // A record of no span of its own (a syscall, a tracepoint
                // record) belongs to the session: its span is the record's
                // context, so backends show the records under the session.
                ids: ids.or(Some(self.session.ids)),
            };
            if let Some(q) = &self.logs {
                q.push((res, work));
            }
        }
    }

    /// A probe lost events: a span event on the session span.
    pub fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) {
        let ev = span::Event {
            time_unix_nano: Timestamp::now().0,
            name: "podscope.events_lost".into(),
            attributes: vec![
                kv_str("podscope.probe", probe.name()),
                kv_int("podscope.lost", delta as i64),
                kv_int("podscope.lost_total", total as i64),
            ],
            dropped_attributes_count: 0,
        };
        self.push_session_event(ev);
    }

    /// Exit: spans for connections still open and the session span.
    pub fn finish(&mut self, info: &SessionInfo, events: u64, lost: u64) {
        let decided = self.requests.finish();
        self.queue_decided(decided);
        let rs = self.requests.stats();
        let now = Timestamp::now().0;
        let open: Vec<OpenConn> = self.open.drain().map(|(_, o)| o).collect();
        for o in open {
            let conn = ConnSpan {
                ids: o.ids,
                session: self.session.ids,
                start: o.at.min(now),
                end: now,
                established: o.at,
                pid: o.pid,
                comm: o.comm,
                tcp: o.tcp,
                between: o.events,
                dropped_events: o.dropped_events,
                open_at_exit: true,
            };
            self.spans.push((o.res, SpanWork::Conn(conn)));
        }
        let s = &mut self.session;
        let mut attributes = vec![
            kv_str("podscope.probes", &info.probes.join(",")),
            kv_str("podscope.scope", &info.scope),
            kv_int("podscope.events", events as i64),
            kv_int("podscope.events_lost", lost as i64),
            kv_int("podscope.connections_untracked", self.untracked as i64),
            kv_int("process.pid", std::process::id() as i64),
        ];
        for (k, v) in rs.pairs() {
            attributes.push(kv_int(&format!("podscope.requests.{k}"), v as i64));
        }
        if !self.node.is_empty() {
            attributes.push(kv_str("k8s.node.name", &self.node));
        }
        if !info.session.is_empty() {
            attributes.push(kv_str("podscope.session.id", &info.session));
        }
        let span = Span {
            trace_id: s.ids.trace.to_vec(),
            span_id: s.ids.span.to_vec(),
            name: "podscope trace".into(),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: s.start,
            end_time_unix_nano: now.max(s.start),
            attributes,
            events: std::mem::take(&mut s.events),
            dropped_events_count: s.dropped_events,
            ..Default::default()
        };
        self.spans
            .push((s.res.clone(), SpanWork::Ready(Box::new(span))));
    }

    fn resource(&mut self, ev: &Event) -> Arc<Res> {
        let id = &ev.identity;
        if id.pod.is_empty() && id.container_id.is_empty() {
            if let Some(r) = self.hosts.get(ev.comm.as_str()) {
                return r.clone();
            }
            if self.hosts.len() >= MAX_RESOURCES {
                self.hosts.clear();
            }
            let r = Arc::new(self.build_resource(ev));
            self.hosts.insert(ev.comm.clone(), r.clone());
            return r;
        }
        if let Some(r) = self.resources.get(&ev.cgroup_id) {
            if r.identity == *id {
                return r.clone();
            }
        }
        if self.resources.len() >= MAX_RESOURCES {
            self.resources.clear();
            self.containers.clear();
        }
        // Another cgroup of the same container (a sub-cgroup, a socket owner's
        // cgroup) shares the container's resource.
        let key = format!("{}/{}/{}", id.pod_uid, id.container_id, id.container);
        let r = match self.containers.get(&key) {
            Some(r) if r.identity == *id => r.clone(),
            _ => {
                let r = Arc::new(self.build_resource(ev));
                self.containers.insert(key, r.clone());
                r
            }
        };
        self.resources.insert(ev.cgroup_id, r.clone());
        r
    }

    fn build_resource(&self, ev: &Event) -> Res {
        let id = &ev.identity;
        let mut a = Vec::with_capacity(10 + self.extra.len());
        // Workloads are named after their container (pod when the container is
        // unknown); host processes as the specification's SDK default does.
        let service = if !id.container.is_empty() {
            id.container.clone()
        } else if !id.pod.is_empty() {
            id.pod.clone()
        } else {
            format!("unknown_service:{}", ev.comm)
        };
        a.push(kv_str("service.name", &service));
        let node = if id.node.is_empty() {
            &self.node
        } else {
            &id.node
        };
        for (k, v) in [
            ("k8s.node.name", node),
            ("k8s.namespace.name", &id.namespace),
            ("k8s.pod.name", &id.pod),
            ("k8s.pod.uid", &id.pod_uid),
            ("k8s.container.name", &id.container),
            ("container.id", &id.container_id),
        ] {
            if !v.is_empty() {
                a.push(kv_str(k, v));
            }
        }
        if !id.image.is_empty() {
            let (name, tag) = split_image(&id.image);
            a.push(kv_str("container.image.name", name));
            if let Some(tag) = tag {
                a.push(kv(
                    "container.image.tags",
                    Value::ArrayValue(ArrayValue {
                        values: vec![str_value(tag)],
                    }),
                ));
            }
        }
        a.extend(self.extra.iter().cloned());
        Res {
            identity: id.clone(),
            resource: Resource {
                attributes: a,
                ..Default::default()
            },
        }
    }

    fn opened(&mut self, ev: &Event, t: &TcpEvent) -> Option<SpanIds> {
        let key = ConnKey::of(t);
        if !self.open.contains_key(&key) && self.open.len() >= MAX_OPEN_CONNECTIONS {
            self.untracked += 1;
            return None;
        }
        let ids = self.ids.ids();
        let o = OpenConn {
            at: ev.timestamp.0,
            ids,
            events: Vec::new(),
            dropped_events: 0,
            res: self.resource(ev),
            pid: ev.pid,
            comm: ev.comm.clone(),
            tcp: t.clone(),
        };
        self.open.insert(key, o);
        Some(ids)
    }

    fn on_connection(&mut self, ev: &Event, t: &TcpEvent) -> Option<SpanIds> {
        let o = self.open.get_mut(&ConnKey::of(t))?;
        if o.events.len() < MAX_CONNECTION_EVENTS {
            o.events.push(span::Event {
                time_unix_nano: ev.timestamp.0,
                name: format!("tcp.{}", t.kind.name()),
                attributes: vec![kv_str("podscope.tcp.state", &t.state)],
                dropped_attributes_count: 0,
            });
        } else {
            o.dropped_events += 1;
        }
        Some(o.ids)
    }

    /// The close (or failed connect) of a connection, paired with its open.
    fn connection(&mut self, ev: &Event, t: &TcpEvent) -> ConnSpan {
        let end = ev.timestamp.0;
        let start = end.saturating_sub(t.duration_ns.unwrap_or(0));
        let (ids, established, between, dropped_events) = match self.open.remove(&ConnKey::of(t)) {
            Some(o) => (o.ids, o.at, o.events, o.dropped_events),
            None => (self.ids.ids(), start, Vec::new(), 0),
        };
        ConnSpan {
            ids,
            session: self.session.ids,
            start,
            end,
            established,
            pid: ev.pid,
            comm: ev.comm.clone(),
            tcp: t.clone(),
            between,
            dropped_events,
            open_at_exit: false,
        }
    }

    fn session_event(&mut self, ev: &Event) {
        if self.session.events.len() >= self.session.cap {
            self.session.dropped_events += 1;
            return;
        }
        let mut attributes = identity_attrs(&ev.identity);
        attributes.extend(event_attrs(ev));
        let e = span::Event {
            time_unix_nano: ev.timestamp.0,
            name: event_name(ev),
            attributes,
            dropped_attributes_count: 0,
        };
        self.push_session_event(e);
    }

    fn push_session_event(&mut self, e: span::Event) {
        if self.session.events.len() >= self.session.cap {
            self.session.dropped_events += 1;
        } else {
            self.session.events.push(e);
        }
    }
}

impl ConnSpan {
    /// The OTLP span.
    pub fn into_span(self) -> Span {
        let ConnSpan {
            ids,
            session,
            start,
            end,
            established,
            pid,
            comm,
            tcp,
            mut between,
            dropped_events,
            open_at_exit,
        } = self;
        let t = &tcp;
        // The span ends when the kernel destroys the socket; its length is the
        // lifetime the probe measured, so an earlier connect timestamp never
        // falls before the span: clamp event times into it.
        let clamp = |ts: u64| ts.clamp(start, end);
        let failed = t.kind == TcpKind::ConnectFailed;
        let mut events = Vec::with_capacity(between.len() + 3);
        if !failed {
            events.push(span::Event {
                time_unix_nano: clamp(established),
                name: "tcp.established".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            });
        }
        for e in &mut between {
            e.time_unix_nano = clamp(e.time_unix_nano);
        }
        events.append(&mut between);
        if failed {
            events.push(span::Event {
                time_unix_nano: end,
                name: "tcp.connect_failed".into(),
                attributes: t.error.iter().map(|e| kv_str("error.type", e)).collect(),
                dropped_attributes_count: 0,
            });
        } else if !open_at_exit {
            events.push(span::Event {
                time_unix_nano: end,
                name: "tcp.data_transfer".into(),
                attributes: vec![
                    kv_int("podscope.tcp.bytes_sent", t.tx_bytes.unwrap_or(0) as i64),
                    kv_int(
                        "podscope.tcp.bytes_received",
                        t.rx_bytes.unwrap_or(0) as i64,
                    ),
                    kv_int(
                        "podscope.tcp.retransmits",
                        t.retransmits.unwrap_or(0) as i64,
                    ),
                ],
                dropped_attributes_count: 0,
            });
            let mut attrs = vec![kv_str("podscope.tcp.state", &t.state)];
            if let Some(e) = &t.error {
                attrs.push(kv_str("error.type", e));
            }
            events.push(span::Event {
                time_unix_nano: end,
                name: "tcp.closed".into(),
                attributes: attrs,
                dropped_attributes_count: 0,
            });
        }

        let (name, kind) = match (t.role.as_str(), t.kind) {
            ("client", _) | (_, TcpKind::ConnectFailed) => ("tcp connect", span::SpanKind::Client),
            ("server", _) => ("tcp accept", span::SpanKind::Server),
            _ => ("tcp connection", span::SpanKind::Internal),
        };
        let mut attributes = Vec::with_capacity(16);
        attributes.extend(network_attrs(t));
        attributes.push(kv_int("process.pid", pid as i64));
        attributes.push(kv_str("process.executable.name", &comm));
        if !failed && !open_at_exit {
            attributes.push(kv_int(
                "podscope.tcp.bytes_sent",
                t.tx_bytes.unwrap_or(0) as i64,
            ));
            attributes.push(kv_int(
                "podscope.tcp.bytes_received",
                t.rx_bytes.unwrap_or(0) as i64,
            ));
            attributes.push(kv_int(
                "podscope.tcp.retransmits",
                t.retransmits.unwrap_or(0) as i64,
            ));
        }
        if open_at_exit {
            attributes.push(kv_bool("podscope.tcp.open_at_exit", true));
        }
        let status = match &t.error {
            Some(e) => Some(Status {
                message: e.clone(),
                code: StatusCode::Error as i32,
            }),
            None if failed => Some(Status {
                message: "connect failed".into(),
                code: StatusCode::Error as i32,
            }),
            None => None,
        };
        if let Some(e) = &t.error {
            attributes.push(kv_str("error.type", e));
        }
        Span {
            trace_id: ids.trace.to_vec(),
            span_id: ids.span.to_vec(),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            events,
            dropped_events_count: dropped_events,
            links: vec![span::Link {
                trace_id: session.trace.to_vec(),
                span_id: session.span.to_vec(),
                attributes: vec![kv_str("podscope.link", "session")],
                ..Default::default()
            }],
            status,
            ..Default::default()
        }
    }
}

impl RequestSpan {
    /// The OTLP span, named and attributed as OpenTelemetry's HTTP semantic
    /// conventions say (`GET`, `http.request.method`, `url.path`, ...).
    pub fn into_span(self) -> Span {
        let RequestSpan {
            ids,
            session,
            start,
            pid,
            tid,
            comm,
            http: h,
            parent,
            how,
            unparented,
            links: candidates,
            children_dropped,
            retransmits,
        } = self;
        let server = h.role == "server";
        let kind = if server {
            span::SpanKind::Server
        } else {
            span::SpanKind::Client
        };
        let known = matches!(
            h.method.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
        );
        let (name, method) = if known {
            (h.method.clone(), h.method.as_str())
        } else {
            ("HTTP".to_string(), "_OTHER")
        };
        let mut a = Vec::with_capacity(24);
        // A gRPC call: named and attributed by the RPC conventions.
        let name = match &h.rpc {
            Some(r) => {
                a.push(kv_str("rpc.system", &r.system));
                a.push(kv_str("rpc.service", &r.service));
                a.push(kv_str("rpc.method", &r.method));
                if let Some(c) = r.status {
                    a.push(kv_int("rpc.grpc.status_code", i64::from(c)));
                }
                format!("{}/{}", r.service, r.method)
            }
            None => name,
        };
        a.push(kv_str("http.request.method", method));
        if !known && !h.method.is_empty() {
            a.push(kv_str("http.request.method_original", &h.method));
        }
        let (path, query) = match h.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (h.path.as_str(), None),
        };
        if !path.is_empty() {
            a.push(kv_str("url.path", path));
        }
        a.push(kv_str("url.scheme", if h.tls { "https" } else { "http" }));
        if let Some(q) = query {
            a.push(kv_str("url.query", q));
        }
        if let Some(st) = h.status {
            a.push(kv_int("http.response.status_code", i64::from(st)));
        }
        if let Some(v) = h.version.strip_prefix("HTTP/") {
            a.push(kv_str("network.protocol.name", "http"));
            a.push(kv_str("network.protocol.version", v));
        }
        // A dual-stack socket shows IPv4 peers as `::ffff:a.b.c.d`: the
        // conventions want the address itself.
        let (daddr, saddr) = (plain_addr(&h.daddr), plain_addr(&h.saddr));
        let family = if daddr.contains(':') { "ipv6" } else { "ipv4" };
        a.push(kv_str("network.transport", "tcp"));
        a.push(kv_str("network.type", family));
        a.push(kv_str("network.peer.address", daddr));
        a.push(kv_int("network.peer.port", i64::from(h.dport)));
        a.push(kv_str("network.local.address", saddr));
        a.push(kv_int("network.local.port", i64::from(h.sport)));
        // The server's name: the Host header where the client sent one.
        let (host, port) = match h.host.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => (host, port.parse().ok()),
            _ if !h.host.is_empty() => (h.host.as_str(), None),
            _ if server => (saddr, Some(h.sport)),
            // NAT sent it on: the server the client named is the address
            // it dialed (a Service's), the peer is who answered.
            _ if !h.dialed_addr.is_empty() => (plain_addr(&h.dialed_addr), Some(h.dialed_port)),
            _ => (daddr, Some(h.dport)),
        };
        a.push(kv_str("server.address", host));
        if let Some(p) = port.or(Some(if server { h.sport } else { h.dport })) {
            a.push(kv_int("server.port", i64::from(p)));
        }
        if server {
            a.push(kv_str("client.address", daddr));
            a.push(kv_int("client.port", i64::from(h.dport)));
        }
        if !h.dialed_addr.is_empty() {
            a.push(kv_str(
                "podscope.dialed.address",
                plain_addr(&h.dialed_addr),
            ));
            a.push(kv_int("podscope.dialed.port", i64::from(h.dialed_port)));
        }
        if !h.peer_pod.is_empty() {
            a.push(kv_str(
                "podscope.peer.k8s.namespace.name",
                &h.peer_namespace,
            ));
            a.push(kv_str("podscope.peer.k8s.pod.name", &h.peer_pod));
        }
        a.push(kv_int("http.request.size", h.request_bytes as i64));
        a.push(kv_int("http.response.size", h.response_bytes as i64));
        if h.truncated {
            a.push(kv_bool("podscope.http.truncated", true));
        }
        // --capture-headers: `http.request.header.<name>` as the conventions
        // have them (a string array: a name may repeat); --capture-body.
        if let Some(c) = &h.capture {
            for (side, headers) in [
                ("request", &c.request_headers),
                ("response", &c.response_headers),
            ] {
                let mut by_name: Vec<(&str, Vec<AnyValue>)> = Vec::new();
                for (n, v) in headers {
                    match by_name.iter_mut().find(|(k, _)| k == n) {
                        Some((_, vs)) => vs.push(str_value(v)),
                        None => by_name.push((n, vec![str_value(v)])),
                    }
                }
                for (n, values) in by_name {
                    a.push(kv(
                        &format!("http.{side}.header.{n}"),
                        Value::ArrayValue(ArrayValue { values }),
                    ));
                }
            }
            if let Some(b) = &c.request_body {
                a.push(kv_str("podscope.http.request.body", b));
            }
            if let Some(b) = &c.response_body {
                a.push(kv_str("podscope.http.response.body", b));
            }
        }
        a.push(kv_int("process.pid", i64::from(pid)));
        a.push(kv_int("thread.id", i64::from(tid)));
        a.push(kv_str("process.executable.name", &comm));
        if let Some(how) = how {
            a.push(kv_str("podscope.trace.parent", how.name()));
        }
        if let Some(why) = &unparented {
            a.push(kv_str("podscope.trace.unparented", why));
        }
        if let Some(c) = &h.trace_context {
            a.push(kv_str("podscope.trace.context", &c.format));
        }
        if children_dropped > 0 {
            a.push(kv_int(
                "podscope.trace.children_dropped",
                i64::from(children_dropped),
            ));
        }
        if retransmits > 0 {
            a.push(kv_int("podscope.tcp.retransmits", i64::from(retransmits)));
        }
        // Errors as the conventions define them: 5xx for servers, 4xx and
        // 5xx for clients, or no response at all.
        // gRPC: servers count the codes the conventions call server errors,
        // clients every code but OK.
        let rpc_error = h.rpc.as_ref().and_then(|r| r.status).filter(|c| {
            if server {
                matches!(c, 2 | 4 | 12 | 13 | 14 | 15)
            } else {
                *c != 0
            }
        });
        let error = match (h.status, &h.error) {
            (_, Some(e)) => Some(e.clone()),
            _ if rpc_error.is_some() => {
                rpc_error.map(|c| podscope_model::grpc_code_name(c).to_string())
            }
            (Some(st), None) if st >= 500 || (!server && st >= 400) => Some(st.to_string()),
            (None, None) => Some("no response".to_string()),
            _ => None,
        };
        let status = error.map(|e| {
            a.push(kv_str("error.type", &e));
            Status {
                message: h
                    .error
                    .clone()
                    .or_else(|| h.rpc.as_ref().and_then(|r| r.message.clone()))
                    .unwrap_or_default(),
                code: StatusCode::Error as i32,
            }
        });
        Span {
            trace_id: ids.trace.to_vec(),
            span_id: ids.span.to_vec(),
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start.saturating_add(h.duration_ns),
            attributes: a,
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            trace_state: h
                .trace_context
                .as_ref()
                .and_then(|c| c.tracestate.clone())
                .unwrap_or_default(),
            links: std::iter::once(span::Link {
                trace_id: session.trace.to_vec(),
                span_id: session.span.to_vec(),
                attributes: vec![kv_str("podscope.link", "session")],
                ..Default::default()
            })
            .chain(candidates.iter().map(|c| span::Link {
                trace_id: c.trace.to_vec(),
                span_id: c.span.to_vec(),
                attributes: vec![kv_str("podscope.link", "candidate_parent")],
                ..Default::default()
            }))
            .collect(),
            status,
            ..Default::default()
        }
    }
}

impl KernelSpan {
    /// The OTLP span: an INTERNAL child of the request span, named after
    /// what the kernel did (`open /etc/hosts`, `bio write vda`,
    /// `connect 10.0.0.4:9000`, `dns A api.shop`, `exec /bin/sh`).
    pub fn into_span(self) -> Span {
        let KernelSpan { ids, parent, ev } = self;
        let start = super::xtrace::child_start(&ev);
        let mut end = ev.timestamp.0;
        let mut a = event_attrs(&ev);
        a.push(kv_str("podscope.probe", ev.probe().name()));
        let mut failed = None;
        let name = match &ev.data {
            EventData::Open(o) => {
                failed = o.error.clone();
                format!("open {}", o.path)
            }
            EventData::Bio(b) => {
                failed = b.error.map(|e| e.to_string());
                format!("bio {} {}", b.op, b.disk)
            }
            EventData::Tcp(t) => {
                failed = t.error.clone();
                format!("connect {}:{}", plain_addr(&t.daddr), t.dport)
            }
            EventData::Dns(d) => {
                end = start.saturating_add(d.latency_ns.unwrap_or(0));
                a.push(kv_str("dns.question.name", &d.name));
                a.push(kv_str("podscope.dns.qtype", &d.qtype));
                if d.transport == "tls" {
                    // DNS over TLS: TCP underneath, as the conventions name it.
                    a.push(kv_str("network.transport", "tcp"));
                    a.push(kv_str("podscope.dns.transport", "tls"));
                } else if !d.transport.is_empty() {
                    a.push(kv_str("network.transport", &d.transport));
                }
                if let Some(r) = &d.rcode {
                    a.push(kv_str("podscope.dns.rcode", r));
                    if r != "NOERROR" {
                        failed = Some(r.clone());
                    }
                }
                if !d.answers.is_empty() {
                    a.push(kv(
                        "podscope.dns.answers",
                        Value::ArrayValue(ArrayValue {
                            values: d.answers.iter().map(|s| str_value(s)).collect(),
                        }),
                    ));
                }
                a.push(kv_str("network.peer.address", plain_addr(&d.daddr)));
                a.push(kv_int("network.peer.port", i64::from(d.dport)));
                if let Some(e) = &d.error {
                    failed = Some(e.clone());
                }
                format!("dns {} {}", d.qtype, d.name)
            }
            EventData::Exec(e) => {
                failed = e.error.clone();
                format!("exec {}", e.filename)
            }
            _ => event_name(&ev),
        };
        let status = failed.map(|e| {
            if !a.iter().any(|k| k.key == "error.type") {
                a.push(kv_str("error.type", &e));
            }
            Status {
                message: e,
                code: StatusCode::Error as i32,
            }
        });
        Span {
            trace_id: ids.trace.to_vec(),
            span_id: ids.span.to_vec(),
            parent_span_id: parent.to_vec(),
            name,
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end.max(start),
            attributes: a,
            status,
            ..Default::default()
        }
    }
}

/// `::ffff:10.0.0.1` -> `10.0.0.1`; any other address as it is.
fn plain_addr(a: &str) -> &str {
    match a.strip_prefix("::ffff:") {
        Some(v4) if v4.parse::<std::net::Ipv4Addr>().is_ok() => v4,
        _ => a,
    }
}

/// The OTLP log record of a queued event (built on the export thread).
pub fn log_record(w: LogWork, body: Option<&LogBody>) -> LogRecord {
    let ev = &w.ev;
    let (severity, text) = if failure(ev) {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    };
    let body = match body {
        Some(f) => f(ev),
        None => format!("{} {} {}", event_name(ev), ev.comm, ev.pid),
    };
    let (trace_id, span_id) = match w.ids {
        Some(i) => (i.trace.to_vec(), i.span.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    LogRecord {
        time_unix_nano: ev.timestamp.0,
        observed_time_unix_nano: w.observed,
        severity_number: severity as i32,
        severity_text: text.into(),
        body: Some(str_value(&body)),
        attributes: event_attrs(ev),
        trace_id,
        span_id,
        event_name: event_name(ev),
        ..Default::default()
    }
}

/// The scope every span and record is reported under.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "podscope".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// `tcp.close`, `exec`, `open`: what a log record or span event is.
fn event_name(ev: &Event) -> String {
    match &ev.data {
        EventData::Tcp(t) => format!("tcp.{}", t.kind.name()),
        EventData::Bio(_) => "bio".into(),
        EventData::Cache(_) => "cache".into(),
        _ => ev.kind().into(),
    }
}

fn failure(ev: &Event) -> bool {
    match &ev.data {
        EventData::Exec(e) => e.error.is_some(),
        EventData::Exit(e) => e.signal.is_some() || e.exit_code.is_some_and(|c| c != 0),
        EventData::Tcp(t) => matches!(
            t.kind,
            TcpKind::ConnectFailed | TcpKind::ResetSent | TcpKind::ResetReceived
        ),
        EventData::Bio(b) => b.error.is_some(),
        EventData::Cache(_) => false,
        EventData::Open(o) => o.error.is_some(),
        EventData::SockData(_) => false,
        EventData::Syscall(c) => c.error.is_some(),
        EventData::SyscallSummary(_) => false,
        EventData::Tracepoint(_) => false,
        // A dropped packet is what the probe reports: always a failure.
        EventData::Drop(_) => true,
        EventData::NetPacket(p) => p.reason.is_some(),
        EventData::NetFlow(_) => false,
        EventData::Http(h) => h.error.is_some() || h.status.is_some_and(|s| s >= 500),
        EventData::Dns(d) => {
            d.error.is_some() || d.rcode.as_deref().is_some_and(|r| r != "NOERROR")
        }
    }
}

/// `localhost/busybox:latest` -> (`localhost/busybox`, `latest`); digests stay in the name.
fn split_image(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') && !name.is_empty() => (name, Some(tag)),
        _ => (image, None),
    }
}

fn identity_attrs(id: &Identity) -> Vec<KeyValue> {
    let mut a = Vec::new();
    for (k, v) in [
        ("k8s.namespace.name", &id.namespace),
        ("k8s.pod.name", &id.pod),
        ("k8s.container.name", &id.container),
    ] {
        if !v.is_empty() {
            a.push(kv_str(k, v));
        }
    }
    a
}

fn network_attrs(t: &TcpEvent) -> Vec<KeyValue> {
    let mut a = vec![
        kv_str("network.transport", "tcp"),
        kv_str("network.type", &t.family),
        kv_str("network.peer.address", &t.daddr),
        kv_int("network.peer.port", t.dport as i64),
        kv_str("network.local.address", &t.saddr),
        kv_int("network.local.port", t.sport as i64),
    ];
    match t.role.as_str() {
        // NAT sent it on: the server the client named is what it dialed.
        "client" if !t.dialed_addr.is_empty() => {
            a.push(kv_str("server.address", plain_addr(&t.dialed_addr)));
            a.push(kv_int("server.port", t.dialed_port as i64));
            a.push(kv_str(
                "podscope.dialed.address",
                plain_addr(&t.dialed_addr),
            ));
            a.push(kv_int("podscope.dialed.port", t.dialed_port as i64));
        }
        "client" => {
            a.push(kv_str("server.address", &t.daddr));
            a.push(kv_int("server.port", t.dport as i64));
        }
        "server" => {
            a.push(kv_str("client.address", &t.daddr));
            a.push(kv_int("client.port", t.dport as i64));
        }
        _ => {}
    }
    a
}

/// The event's fields as attributes: semantic-convention names where one
/// exists, `podscope.<probe>.<field>` otherwise.
/// A packet's flow as OpenTelemetry's network attributes (IP packets only).
fn net_flow_attrs(
    a: &mut Vec<KeyValue>,
    protocol: &str,
    family: &str,
    saddr: &str,
    sport: u16,
    daddr: &str,
    dport: u16,
) {
    if family.is_empty() {
        return;
    }
    a.push(kv_str("network.transport", protocol));
    a.push(kv_str("network.type", family));
    a.push(kv_str("source.address", saddr));
    a.push(kv_int("source.port", sport as i64));
    a.push(kv_str("destination.address", daddr));
    a.push(kv_int("destination.port", dport as i64));
}

pub fn event_attrs(ev: &Event) -> Vec<KeyValue> {
    let mut a = vec![
        kv_int("process.pid", ev.pid as i64),
        kv_int("thread.id", ev.tid as i64),
        kv_str("process.executable.name", &ev.comm),
        kv_int("process.real_user.id", ev.uid as i64),
        kv_int("podscope.cgroup_id", ev.cgroup_id as i64),
    ];
    match &ev.data {
        EventData::Exec(e) => {
            a.push(kv_int("process.parent_pid", e.ppid as i64));
            a.push(kv_str("process.executable.path", &e.filename));
            a.push(kv(
                "process.command_args",
                Value::ArrayValue(ArrayValue {
                    values: e.args.iter().map(|s| str_value(s)).collect(),
                }),
            ));
            if e.args_truncated {
                a.push(kv_bool("podscope.exec.args_truncated", true));
            }
            a.push(kv_int("podscope.exec.retval", e.retval as i64));
            if let Some(err) = &e.error {
                a.push(kv_str("error.type", err));
            }
        }
        EventData::Exit(e) => {
            a.push(kv_int("process.parent_pid", e.ppid as i64));
            if let Some(c) = e.exit_code {
                a.push(kv_int("process.exit.code", c as i64));
            }
            if let Some(s) = e.signal {
                a.push(kv_int("podscope.exit.signal", s as i64));
            }
            if e.core_dumped {
                a.push(kv_bool("podscope.exit.core_dumped", true));
            }
            a.push(kv_int("podscope.exit.lifetime_ns", e.lifetime_ns as i64));
        }
        EventData::Tcp(t) => {
            a.extend(network_attrs(t));
            a.push(kv_str("podscope.tcp.kind", t.kind.name()));
            a.push(kv_str("podscope.tcp.role", &t.role));
            a.push(kv_str("podscope.tcp.state", &t.state));
            if let Some(d) = t.duration_ns {
                a.push(kv_int("podscope.tcp.duration_ns", d as i64));
            }
            if let Some(b) = t.tx_bytes {
                a.push(kv_int("podscope.tcp.bytes_sent", b as i64));
            }
            if let Some(b) = t.rx_bytes {
                a.push(kv_int("podscope.tcp.bytes_received", b as i64));
            }
            if let Some(r) = t.retransmits {
                a.push(kv_int("podscope.tcp.retransmits", r as i64));
            }
            if let Some(e) = &t.error {
                a.push(kv_str("error.type", e));
            }
        }
        EventData::Bio(b) => {
            a.push(kv_str("podscope.bio.disk", &b.disk));
            a.push(kv_str("podscope.bio.dev", &b.dev));
            a.push(kv_str("podscope.bio.op", &b.op));
            a.push(kv_int("podscope.bio.sector", b.sector as i64));
            a.push(kv_int("podscope.bio.bytes", b.bytes as i64));
            a.push(kv_int("podscope.bio.latency_ns", b.latency_ns as i64));
            a.push(kv_int("podscope.bio.queued_ns", b.queued_ns as i64));
            if b.sync {
                a.push(kv_bool("podscope.bio.sync", true));
            }
            if let Some(e) = b.error {
                a.push(kv_int("podscope.bio.error", e as i64));
            }
        }
        EventData::Cache(c) => {
            a.push(kv_int("process.parent_pid", c.ppid as i64));
            a.push(kv_int("podscope.cache.hits", c.hits as i64));
            a.push(kv_int("podscope.cache.misses", c.misses as i64));
            a.push(kv_int("podscope.cache.dirtied", c.dirtied as i64));
            a.push(kv_int("podscope.cache.added", c.added as i64));
            if let Some(r) = c.hit_ratio {
                a.push(kv("podscope.cache.hit_ratio", Value::DoubleValue(r)));
            }
            a.push(kv_int("podscope.cache.interval_ns", c.interval_ns as i64));
            a.push(kv_str("podscope.cache.method", &c.method));
        }
        EventData::Open(o) => {
            a.push(kv_str("file.path", &o.path));
            if let Some(d) = o.dirfd {
                a.push(kv_int("podscope.open.dirfd", d as i64));
            }
            a.push(kv_int("podscope.open.flags", o.flags as i64));
            a.push(kv_str("podscope.open.flags_str", &o.flags_str));
            a.push(kv_int("podscope.open.mode", o.mode as i64));
            if let Some(fd) = o.fd {
                a.push(kv_int("podscope.open.fd", fd as i64));
            }
            if let Some(e) = o.errno {
                a.push(kv_int("podscope.open.errno", e as i64));
            }
            if let Some(e) = &o.error {
                a.push(kv_str("error.type", e));
            }
        }
        EventData::Drop(d) => {
            a.push(kv_str("podscope.drop.reason", &d.reason));
            a.push(kv_str("podscope.drop.location", &d.location));
            a.push(kv_str("podscope.drop.attributed_by", &d.attributed_by));
            a.push(kv_int("podscope.drop.netns", d.netns as i64));
            if !d.ifname.is_empty() {
                a.push(kv_str("network.interface.name", &d.ifname));
            }
            if !d.family.is_empty() {
                a.push(kv_str("network.transport", &d.protocol));
                a.push(kv_str("network.type", &d.family));
                a.push(kv_str("source.address", &d.saddr));
                a.push(kv_int("source.port", d.sport as i64));
                a.push(kv_str("destination.address", &d.daddr));
                a.push(kv_int("destination.port", d.dport as i64));
            }
            a.push(kv_str("error.type", &d.reason));
        }
        EventData::NetPacket(p) => {
            a.push(kv_str("podscope.net.stage", &p.stage));
            a.push(kv_int("podscope.net.packet", p.packet as i64));
            a.push(kv_int("podscope.net.step_ns", p.step_ns as i64));
            a.push(kv_int("podscope.net.total_ns", p.total_ns as i64));
            if !p.ifname.is_empty() {
                a.push(kv_str("network.interface.name", &p.ifname));
            }
            net_flow_attrs(
                &mut a,
                &p.protocol,
                &p.family,
                &p.saddr,
                p.sport,
                &p.daddr,
                p.dport,
            );
            if let Some(r) = &p.reason {
                a.push(kv_str("error.type", r));
            }
        }
        EventData::NetFlow(f) => {
            a.push(kv_int("podscope.net.packets", f.packets as i64));
            a.push(kv_int("podscope.net.bytes", f.bytes as i64));
            a.push(kv_int("podscope.net.drops", f.drops as i64));
            a.push(kv_int(
                "podscope.net.end_to_end_p50_ns",
                f.end_to_end_p50_ns as i64,
            ));
            net_flow_attrs(
                &mut a,
                &f.protocol,
                &f.family,
                &f.saddr,
                f.sport,
                &f.daddr,
                f.dport,
            );
        }
        // Request spans and metrics are a later slice (issue 10); log
        // records carry the common attributes only for now.
        EventData::Syscall(c) => {
            a.push(kv_str("podscope.syscall.name", &c.syscall));
            a.push(kv_int("podscope.syscall.nr", i64::from(c.nr)));
            if let Some(d) = &c.decoded {
                a.push(kv_str("podscope.syscall.args", d));
            }
            if let Some(r) = c.ret {
                a.push(kv_int("podscope.syscall.ret", r));
            }
            if let Some(e) = &c.error {
                a.push(kv_str("error.type", e));
            }
            a.push(kv_int("podscope.syscall.duration_ns", c.duration_ns as i64));
        }
        EventData::SyscallSummary(t) => {
            a.push(kv_str("podscope.syscall.name", &t.syscall));
            a.push(kv_int("podscope.syscall.calls", t.calls as i64));
            a.push(kv_int("podscope.syscall.errors", t.errors as i64));
            a.push(kv_int("podscope.syscall.total_ns", t.total_ns as i64));
            a.push(kv_int("podscope.syscall.p99_ns", t.p99_ns as i64));
        }
        EventData::Tracepoint(t) => {
            a.push(kv_str("podscope.tracepoint", &t.tracepoint));
            for (k, v) in &t.fields.0 {
                let key = format!("podscope.tp.{k}");
                match v {
                    podscope_model::TpValue::Int(i) => a.push(kv_int(&key, *i)),
                    podscope_model::TpValue::Uint(u) => a.push(kv_int(&key, *u as i64)),
                    other => a.push(kv_str(&key, &other.to_string())),
                }
            }
        }
        // Request spans carry these (issue 10); log records of them the
        // common attributes only.
        EventData::SockData(_) | EventData::Http(_) | EventData::Dns(_) => {}
    }
    a
}

fn str_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.to_string())),
    }
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn kv_str(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.to_string()))
}

fn kv_int(k: &str, v: i64) -> KeyValue {
    kv(k, Value::IntValue(v))
}

fn kv_bool(k: &str, v: bool) -> KeyValue {
    kv(k, Value::BoolValue(v))
}

/// Items grouped by resource, in the order their resources first appear.
pub fn group<T>(items: Vec<(Arc<Res>, T)>) -> Vec<(Arc<Res>, Vec<T>)> {
    let mut out: Vec<(Arc<Res>, Vec<T>)> = Vec::new();
    let mut index: HashMap<*const Res, usize> = HashMap::new();
    for (res, item) in items {
        let key = Arc::as_ptr(&res);
        match index.get(&key) {
            Some(&i) => out[i].1.push(item),
            None => {
                index.insert(key, out.len());
                out.push((res, vec![item]));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::otlp::config::{OtlpConfig, OtlpFlags};
    use podscope_model::{ExecEvent, OpenEvent};

    fn grpc_span_event() -> EventData {
        EventData::Http(Box::new(grpc_http("server", 0)))
    }

    fn grpc_span(role: &str, status: u32) -> Span {
        let h = grpc_http(role, status);
        RequestSpan {
            ids: SpanIds::default(),
            session: SpanIds::default(),
            start: 5,
            pid: 1,
            tid: 1,
            comm: "srv".into(),
            http: h,
            parent: None,
            how: None,
            unparented: None,
            links: Vec::new(),
            children_dropped: 0,
            retransmits: 0,
        }
        .into_span()
    }

    fn grpc_http(role: &str, status: u32) -> HttpEvent {
        HttpEvent {
            dialed_addr: String::new(),
            dialed_port: 0,
            stream_id: 0,
            kind: "request".into(),
            role: role.into(),
            version: "HTTP/2".into(),
            method: "POST".into(),
            path: "/kv.Store/Get".into(),
            host: "api:50051".into(),
            status: Some(200),
            duration_ns: 1_000,
            request_bytes: 10,
            response_bytes: 20,
            tls: true,
            truncated: false,
            family: "ipv6".into(),
            saddr: "::ffff:10.0.0.1".into(),
            sport: 50051,
            daddr: "::ffff:10.0.0.2".into(),
            dport: 40000,
            peer_namespace: String::new(),
            peer_pod: String::new(),
            capture: None,
            trace_context: None,
            rpc: Some(podscope_model::RpcInfo {
                system: "grpc".into(),
                service: "kv.Store".into(),
                method: "Get".into(),
                status: Some(status),
                message: Some("no such key".into()),
            }),
            error: None,
        }
    }

    #[test]
    fn grpc_request_spans_follow_the_rpc_conventions() {
        let s = grpc_span("server", 5);
        assert_eq!(s.name, "kv.Store/Get");
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.end_time_unix_nano, 1_005);
        let a = &s.attributes;
        assert_eq!(
            attr(a, "rpc.system"),
            Some(&Value::StringValue("grpc".into()))
        );
        assert_eq!(
            attr(a, "rpc.service"),
            Some(&Value::StringValue("kv.Store".into()))
        );
        assert_eq!(
            attr(a, "rpc.method"),
            Some(&Value::StringValue("Get".into()))
        );
        assert_eq!(attr(a, "rpc.grpc.status_code"), Some(&Value::IntValue(5)));
        assert_eq!(
            attr(a, "url.scheme"),
            Some(&Value::StringValue("https".into()))
        );
        assert_eq!(
            attr(a, "client.address"),
            Some(&Value::StringValue("10.0.0.2".into()))
        );
        assert_eq!(
            attr(a, "network.type"),
            Some(&Value::StringValue("ipv4".into()))
        );
        assert!(s.status.is_none(), "NOT_FOUND is not a server error");
        let s = grpc_span("client", 5);
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        let st = s.status.expect("every code but OK is a client error");
        assert_eq!(st.code, StatusCode::Error as i32);
        assert_eq!(st.message, "no such key");
        assert_eq!(
            attr(&s.attributes, "error.type"),
            Some(&Value::StringValue("NOT_FOUND".into()))
        );
        assert!(
            grpc_span("server", 14).status.is_some(),
            "UNAVAILABLE is a server error"
        );
        assert!(grpc_span("client", 0).status.is_none());
    }

    pub fn attr<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn s(attrs: &[KeyValue], k: &str) -> String {
        match attr(attrs, k) {
            Some(Value::StringValue(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        }
    }

    fn i(attrs: &[KeyValue], k: &str) -> i64 {
        match attr(attrs, k) {
            Some(Value::IntValue(v)) => *v,
            other => panic!("{k}: {other:?}"),
        }
    }

    pub fn identity(pod: &str, container: &str) -> Identity {
        Identity {
            node: "node-1".into(),
            namespace: "shop".into(),
            pod: pod.into(),
            pod_uid: format!("uid-{pod}"),
            container: container.into(),
            container_id: format!("cid-{pod}-{container}"),
            image: "localhost/busybox:latest".into(),
        }
    }

    pub fn tcp(kind: TcpKind, role: &str, ts: u64, id: Identity, sport: u16, dport: u16) -> Event {
        Event {
            timestamp: Timestamp(ts),
            identity: id,
            pid: 100,
            tid: 101,
            uid: 0,
            comm: "nc".into(),
            cgroup_id: sport as u64,
            data: EventData::Tcp(TcpEvent {
                dialed_addr: Box::default(),
                dialed_port: 0,
                kind,
                role: role.into(),
                family: "ipv4".into(),
                saddr: "127.0.0.1".into(),
                daddr: "127.0.0.1".into(),
                sport,
                dport,
                state: "ESTABLISHED".into(),
                duration_ns: matches!(kind, TcpKind::Close | TcpKind::ConnectFailed)
                    .then_some(5_000),
                tx_bytes: (kind == TcpKind::Close).then_some(10),
                rx_bytes: (kind == TcpKind::Close).then_some(20),
                retransmits: (kind == TcpKind::Close).then_some(1),
                error: (kind == TcpKind::ConnectFailed).then(|| "ECONNREFUSED".into()),
            }),
        }
    }

    fn built(items: Vec<SpanItem>) -> Vec<(Arc<Res>, Span)> {
        items.into_iter().map(|(r, w)| (r, w.into_span())).collect()
    }

    fn records(items: Vec<LogItem>) -> Vec<(Arc<Res>, LogRecord)> {
        items
            .into_iter()
            .map(|(r, w)| (r, log_record(w, None)))
            .collect()
    }

    fn tap(
        log_probes: Vec<ProbeKind>,
        cap: usize,
    ) -> (Tap, Arc<Queue<SpanItem>>, Arc<Queue<LogItem>>) {
        let flags = OtlpFlags {
            log_probes: log_probes.clone(),
            session_events: Some(cap),
            ..Default::default()
        };
        let cfg = OtlpConfig::resolve(&flags, "node-1", &|_| None).unwrap();
        let spans = Arc::new(Queue::new(100, 10));
        let logs = Arc::new(Queue::new(100, 10));
        let t = Tap::new(&cfg, spans.clone(), Some(logs.clone()));
        (t, spans, logs)
    }

    #[test]
    fn a_served_request_is_in_the_callers_trace_with_its_kernel_work_as_children() {
        let (mut t, spans, _) = tap(vec![], 10);
        let id = identity("api-0", "app");
        let mut open = tcp(TcpKind::Connect, "client", 1_500, id.clone(), 40000, 9000);
        open.data = EventData::Open(podscope_model::OpenEvent {
            kind: "open".into(),
            path: "/srv/catalog.json".into(),
            dirfd: None,
            flags: 0,
            flags_str: "O_RDONLY".into(),
            mode: 0,
            fd: None,
            errno: Some(2),
            error: Some("ENOENT".into()),
        });
        let mut req = tcp(TcpKind::Accept, "server", 1_000, id, 8000, 50000);
        req.tid = open.tid;
        let mut h = match grpc_span_event() {
            EventData::Http(h) => h,
            _ => unreachable!(),
        };
        h.rpc = None;
        h.trace_context = Some(Box::new(podscope_model::TraceContext {
            format: "w3c".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: None,
            sampled: Some(true),
            tracestate: Some("rojo=1".into()),
        }));
        req.data = EventData::Http(h);
        t.observe(&open);
        t.observe(&req);
        t.finish(&SessionInfo::default(), 2, 0);
        let got = built(spans.pop_batch(100));
        let server = got
            .iter()
            .find(|(_, s)| s.kind == span::SpanKind::Server as i32)
            .map(|(_, s)| s)
            .expect("the request span");
        assert_eq!(
            server.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(
            server.parent_span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(server.trace_state, "rojo=1");
        assert_eq!(
            attr(&server.attributes, "podscope.trace.parent"),
            Some(&Value::StringValue("wire".into()))
        );
        let child = got
            .iter()
            .find(|(_, s)| s.name == "open /srv/catalog.json")
            .map(|(_, s)| s)
            .expect("the open as a child span");
        assert_eq!(child.parent_span_id, server.span_id);
        assert_eq!(child.trace_id, server.trace_id);
        assert_eq!(child.kind, span::SpanKind::Internal as i32);
        assert_eq!(
            child.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );
        let errors = child
            .attributes
            .iter()
            .filter(|k| k.key == "error.type")
            .count();
        assert_eq!(errors, 1, "error.type once");
    }

    #[test]
    fn a_connection_becomes_one_span_with_its_events() {
        let (mut tap, spans, logs) = tap(vec![ProbeKind::Tcp], 10);
        let id = identity("web", "client");
        tap.observe(&tcp(
            TcpKind::Connect,
            "client",
            1_000,
            id.clone(),
            40000,
            7000,
        ));
        let mut re = tcp(
            TcpKind::Retransmit,
            "client",
            2_000,
            id.clone(),
            40000,
            7000,
        );
        if let EventData::Tcp(t) = &mut re.data {
            t.state = "ESTABLISHED".into();
        }
        tap.observe(&re);
        tap.observe(&tcp(
            TcpKind::Close,
            "client",
            6_000,
            id.clone(),
            40000,
            7000,
        ));
        let items = built(spans.pop_batch(10));
        assert_eq!(items.len(), 1);
        let (res, span) = &items[0];
        assert_eq!(span.name, "tcp connect");
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(span.start_time_unix_nano, 1_000);
        assert_eq!(span.end_time_unix_nano, 6_000);
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(i(&span.attributes, "network.peer.port"), 7000);
        assert_eq!(i(&span.attributes, "network.local.port"), 40000);
        assert_eq!(s(&span.attributes, "network.transport"), "tcp");
        assert_eq!(s(&span.attributes, "network.type"), "ipv4");
        assert_eq!(i(&span.attributes, "podscope.tcp.bytes_sent"), 10);
        assert_eq!(i(&span.attributes, "process.pid"), 100);
        let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tcp.established",
                "tcp.retransmit",
                "tcp.data_transfer",
                "tcp.closed"
            ]
        );
        assert_eq!(span.links.len(), 1);
        let r = &res.resource.attributes;
        assert_eq!(s(r, "k8s.namespace.name"), "shop");
        assert_eq!(s(r, "k8s.pod.name"), "web");
        assert_eq!(s(r, "k8s.container.name"), "client");
        assert_eq!(s(r, "service.name"), "client");
        assert_eq!(s(r, "container.image.name"), "localhost/busybox");
        assert_eq!(s(r, "k8s.node.name"), "node-1");
        // Log records of the connection carry its span's ids.
        let recs = records(logs.pop_batch(10));
        assert_eq!(recs.len(), 3);
        assert!(recs.iter().all(|(_, r)| r.span_id == span.span_id));
        assert_eq!(recs[2].1.event_name, "tcp.close");
    }

    #[test]
    fn unpaired_close_and_failed_connect() {
        let (mut tap, spans, _) = tap(vec![], 10);
        let id = identity("web", "server");
        tap.observe(&tcp(
            TcpKind::Close,
            "server",
            10_000,
            id.clone(),
            7000,
            40000,
        ));
        tap.observe(&tcp(TcpKind::ConnectFailed, "client", 10_000, id, 40001, 9));
        let items = built(spans.pop_batch(10));
        assert_eq!(items.len(), 2);
        let server = &items[0].1;
        assert_eq!(server.name, "tcp accept");
        assert_eq!(server.start_time_unix_nano, 5_000, "end - duration");
        assert_eq!(i(&server.attributes, "client.port"), 40000);
        let failed = &items[1].1;
        assert_eq!(
            failed.status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert_eq!(failed.status.as_ref().unwrap().message, "ECONNREFUSED");
        assert_eq!(failed.events.last().unwrap().name, "tcp.connect_failed");
        assert!(
            Arc::ptr_eq(&items[0].0, &items[1].0),
            "one resource per container"
        );
    }

    #[test]
    fn session_span_caps_its_events_and_ends_open_connections() {
        let (mut tap, spans, logs) = tap(vec![ProbeKind::Open], 2);
        let mut ev = tcp(TcpKind::Connect, "client", 1, identity("a", "c"), 1, 2);
        tap.observe(&ev);
        for n in 0..5 {
            ev.data = EventData::Exec(ExecEvent {
                kind: "exec".into(),
                ppid: 1,
                filename: "/bin/true".into(),
                args: vec!["true".into(), format!("{n}")],
                args_truncated: false,
                retval: 0,
                error: None,
            });
            tap.observe(&ev);
        }
        ev.data = EventData::Open(OpenEvent {
            kind: "open".into(),
            path: "/etc/hosts".into(),
            dirfd: None,
            flags: 0,
            flags_str: "O_RDONLY".into(),
            mode: 0,
            fd: None,
            errno: Some(2),
            error: Some("ENOENT".into()),
        });
        tap.observe(&ev);
        let info = SessionInfo {
            probes: vec!["tcp".into(), "exec".into()],
            scope: "pods".into(),
            session: "s-1".into(),
        };
        tap.finish(&info, 7, 0);
        let items = built(spans.pop_batch(10));
        assert_eq!(items.len(), 2);
        let conn = &items[0].1;
        assert!(matches!(
            attr(&conn.attributes, "podscope.tcp.open_at_exit"),
            Some(Value::BoolValue(true))
        ));
        let session = &items[1].1;
        assert_eq!(session.name, "podscope trace");
        assert_eq!(session.events.len(), 2);
        assert_eq!(session.dropped_events_count, 3);
        assert_eq!(s(&session.events[0].attributes, "k8s.pod.name"), "a");
        assert_eq!(
            s(&items[1].0.resource.attributes, "service.name"),
            "podscope"
        );
        assert_eq!(conn.links[0].span_id, session.span_id);
        let recs = records(logs.pop_batch(10));
        assert_eq!(recs.len(), 1, "only the open probe was asked for");
        let r = &recs[0].1;
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(s(&r.attributes, "file.path"), "/etc/hosts");
        assert_eq!(s(&r.attributes, "error.type"), "ENOENT");
        // The open has no span of its own: it is the session's.
        assert_eq!(
            (&r.trace_id, &r.span_id),
            (&session.trace_id, &session.span_id)
        );
        assert_eq!(s(&session.attributes, "podscope.session.id"), "s-1");
    }

    #[test]
    fn host_processes_are_named_after_their_command() {
        let (mut tap, spans, _) = tap(vec![], 10);
        let mut a = tcp(TcpKind::Close, "client", 10_000, Identity::default(), 1, 2);
        tap.observe(&a);
        a.comm = "curl".into();
        tap.observe(&a);
        let items = built(spans.pop_batch(10));
        assert_eq!(
            s(&items[0].0.resource.attributes, "service.name"),
            "unknown_service:nc"
        );
        assert_eq!(
            s(&items[1].0.resource.attributes, "service.name"),
            "unknown_service:curl"
        );
        assert!(attr(&items[0].0.resource.attributes, "k8s.pod.name").is_none());
        let groups = group(items);
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn image_names_split_off_their_tag() {
        assert_eq!(
            split_image("localhost/busybox:latest"),
            ("localhost/busybox", Some("latest"))
        );
        assert_eq!(
            split_image("registry:5000/app"),
            ("registry:5000/app", None)
        );
        assert_eq!(split_image("nginx@sha256:abc"), ("nginx@sha256:abc", None));
        assert_eq!(split_image("nginx"), ("nginx", None));
    }
}
