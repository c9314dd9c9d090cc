//! Cross-layer traces: the stage that decides, for every HTTP/gRPC request
//! event, which trace its span belongs to and which span is its parent, and
//! which kernel events become its child spans (docs/otlp.md, "Request
//! traces"). Events in, finished span decisions out: it never reaches back
//! into the stages before it, and it knows nothing of OTLP messages.
//!
//! A request event arrives when its response has ended, so a span's parent
//! is often not seen yet when the span is: nginx's SERVER span comes after
//! its own upstream CLIENT span, which comes after the API's SERVER span.
//! Every span is therefore held until its parent is decided and its trace
//! id is known up its chain, at most `hold` (plus the chain above it);
//! what is still undecided then is decided with what is known, and counted.
//!
//! Rules, in order:
//! - SERVER: the CLIENT span seen on the other end of the same connection
//!   (4-tuple) for the same request (n-th request on it; HTTP/2: the same
//!   stream id) is its parent
//!   (`hop`); else the span id on the wire (`wire`); else a new trace.
//! - CLIENT: the SERVER span in the same process whose request carried the
//!   same trace id and that covers it in time (`trace_id`); else the one
//!   SERVER span the same thread was serving then (`thread`); else the span
//!   id on its own wire context (`wire`); else a trace of its own, linked to
//!   the candidates, with `podscope.trace.unparented` saying why.

use std::collections::{HashMap, VecDeque};

use podscope_model::{Event, EventData, TcpKind};

use super::convert::{Ids, SpanIds};

/// How far the two ends' times of one request may overlap the wrong way:
/// both are taken at syscall exit, and a writer preempted after waking its
/// reader records its exit after the reader's (CI saw more than 1 ms on a
/// loaded 2-core machine). The order checks in `same_request` keep a larger
/// slack from joining neighbouring requests.
const NEST_SLACK_NS: u64 = 10_000_000;
/// Across nodes the two ends' clocks are not one clock (NTP keeps nodes
/// within a few ms): the times of a hop joined through the hub may disagree
/// by this much more.
const REMOTE_SKEW_NS: u64 = 100_000_000;
/// Spans held at once; beyond that the oldest are decided early (counted).
pub const MAX_HELD: usize = 65_536;
/// Kernel events remembered per thread while waiting for the request span.
const MAX_THREAD_EVENTS: usize = 512;
/// Threads whose kernel events are remembered.
const MAX_THREADS: usize = 16_384;

/// The stage's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long a span waits for the span that decides its parent.
    pub hold_ns: u64,
    /// Kernel child spans per SERVER span; the rest are counted on it.
    pub max_children: usize,
    /// Only requests whose trace came from the wire are exported
    /// (`--spans requests-with-context`).
    pub context_only: bool,
    /// Request events can come (a probe that sees requests is traced);
    /// without them kernel events are not kept for children.
    pub requests_traced: bool,
    /// Hops are joined across nodes too (an agent's hub session): CLIENT
    /// spans with no SERVER span on this node are handed out
    /// ([`Builder::take_hops`]) for the node at the other end, and a SERVER
    /// span with no CLIENT span here waits this much longer for one to come
    /// from another node ([`Builder::push_remote`]). 0: one node only.
    pub remote_hold_ns: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hold_ns: 1_000_000_000,
            max_children: 64,
            context_only: false,
            requests_traced: true,
            remote_hold_ns: 0,
        }
    }
}

/// How the parent of an exported request span was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// SERVER: the peer's CLIENT span for the same request on the connection.
    Hop,
    /// The span id in the request's own trace-context header.
    Wire,
    /// CLIENT: the SERVER span in the process with the same trace id.
    TraceId,
    /// CLIENT: the one SERVER span its thread was serving.
    Thread,
    /// A new trace: a SERVER span with no context and no peer span, or a
    /// CLIENT span with no incoming request to belong to.
    NewTrace,
}

impl How {
    /// The `podscope.trace.parent` attribute value.
    pub fn name(self) -> &'static str {
        match self {
            How::Hop => "hop",
            How::Wire => "wire",
            How::TraceId => "trace_id",
            How::Thread => "thread",
            How::NewTrace => "new_trace",
        }
    }
}

/// A CLIENT request span as the node at the other end of its connection
/// needs it to parent its SERVER span (docs/otlp.md, "Across nodes"): the
/// connection, the request's place on it, its times and its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The client's address and port (its socket's local end).
    pub client: (String, u16),
    /// The server's address and port (the client's peer).
    pub server: (String, u16),
    /// The request's place on the connection as the client saw it (0: the
    /// first its trace saw).
    pub order: u64,
    /// When the client began writing the request and finished reading the
    /// response (wall clock, ns).
    pub start: u64,
    /// See `start`.
    pub end: u64,
    /// The CLIENT span's trace and span id.
    pub ids: SpanIds,
    /// Its trace came from a trace-context header (`--spans
    /// requests-with-context` exports its children).
    pub from_wire: bool,
}

/// Hops waiting to be taken, at most (the oldest are dropped, counted).
const MAX_HOPS_OUT: usize = 65_536;

/// A decided span, handed to the exporter.
#[derive(Debug)]
pub enum Decided<R> {
    /// An HTTP/gRPC request span.
    Request {
        /// Its resource.
        res: R,
        /// Its trace and span id.
        ids: SpanIds,
        /// The parent span id, absent for a trace's root.
        parent: Option<[u8; 8]>,
        /// How the parent was found.
        how: How,
        /// Why a CLIENT span has no parent (else absent).
        unparented: Option<String>,
        /// Spans it is linked to (the candidate parents of an unparented one).
        links: Vec<SpanIds>,
        /// The request event.
        ev: Event,
        /// Kernel child spans left out over the cap.
        children_dropped: u32,
        /// TCP retransmits on its connection while it ran (the tcp probe's).
        retransmits: u32,
    },
    /// A kernel event made while serving a request: a child of its SERVER span.
    Kernel {
        /// The resource (the request span's).
        res: R,
        /// Its ids (the request's trace).
        ids: SpanIds,
        /// The SERVER span.
        parent: [u8; 8],
        /// The kernel event.
        ev: Event,
    },
}

/// The stage's counts (the exit report and the session span).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// SERVER spans decided.
    pub server: u64,
    /// ... parented to the caller's CLIENT span through the connection.
    pub server_hop: u64,
    /// ... parented to the span id on the wire.
    pub server_wire: u64,
    /// ... starting a new trace.
    pub server_new: u64,
    /// CLIENT spans decided.
    pub client: u64,
    /// ... parented by the same trace id.
    pub client_trace_id: u64,
    /// ... parented by the thread serving one request.
    pub client_thread: u64,
    /// ... parented to the span id of their own wire context.
    pub client_wire: u64,
    /// ... in a trace of their own: the thread served no request then.
    pub client_no_request: u64,
    /// ... in a trace of their own: the thread served several requests.
    pub client_ambiguous: u64,
    /// Spans decided when their hold ran out (not by a match).
    pub expired: u64,
    /// CLIENT spans that matched a SERVER span already decided without them.
    pub hop_late: u64,
    /// Peer spans at the same place on a connection whose times do not nest
    /// (a request lost on one side): not joined.
    pub hop_mismatch: u64,
    /// Spans decided early because [`MAX_HELD`] were held.
    pub evicted: u64,
    /// SERVER spans parented to a CLIENT span on another node (of
    /// `server_hop`).
    pub server_hop_remote: u64,
    /// CLIENT spans with no SERVER span on this node, handed out for the
    /// node at the other end.
    pub hops_out: u64,
    /// ... dropped before they were taken ([`MAX_HOPS_OUT`] waiting).
    pub hops_out_dropped: u64,
    /// CLIENT spans of other nodes received.
    pub hops_in: u64,
    /// ... that no SERVER span here matched while they were kept.
    pub hops_in_unmatched: u64,
    /// Kernel child spans produced.
    pub children: u64,
    /// Kernel child spans left out over `--span-children` (counted on the span).
    pub children_dropped: u64,
    /// Kernel events forgotten because their thread kept too many.
    pub kernel_events_forgotten: u64,
    /// Kernel events no request span claimed (made outside any request the
    /// trace saw being served); they are in the event stream as always.
    pub kernel_events_unclaimed: u64,
    /// Spans not exported: their trace had no context from the wire
    /// (`--spans requests-with-context`).
    pub not_exported: u64,
    /// Spans held now.
    pub held: u64,
}

impl BuildStats {
    /// `(name, count)` in report order (session-span attributes
    /// `podscope.requests.<name>`).
    pub fn pairs(&self) -> [(&'static str, u64); 25] {
        [
            ("server", self.server),
            ("server_hop", self.server_hop),
            ("server_wire", self.server_wire),
            ("server_new_trace", self.server_new),
            ("client", self.client),
            ("client_trace_id", self.client_trace_id),
            ("client_thread", self.client_thread),
            ("client_wire", self.client_wire),
            ("client_no_request", self.client_no_request),
            ("client_ambiguous", self.client_ambiguous),
            ("expired", self.expired),
            ("hop_late", self.hop_late),
            ("hop_mismatch", self.hop_mismatch),
            ("evicted", self.evicted),
            ("server_hop_remote", self.server_hop_remote),
            ("hops_out", self.hops_out),
            ("hops_out_dropped", self.hops_out_dropped),
            ("hops_in", self.hops_in),
            ("hops_in_unmatched", self.hops_in_unmatched),
            ("children", self.children),
            ("children_dropped", self.children_dropped),
            ("kernel_events_forgotten", self.kernel_events_forgotten),
            ("kernel_events_unclaimed", self.kernel_events_unclaimed),
            ("not_exported", self.not_exported),
            ("held", self.held),
        ]
    }
}

impl std::fmt::Display for BuildStats {
    /// The exit report's line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                100.0 * n as f64 / of as f64
            }
        };
        let parented = self.client_trace_id + self.client_thread + self.client_wire;
        write!(
            f,
            "podscope: request spans: {} SERVER ({} parented to the caller's CLIENT span by connection, \
             {} to the span id on the wire, {} new traces); {} CLIENT ({} by trace id, {} by serving thread, \
             {} to their own wire context: {:.1}% parented; own trace: {} while the thread served no request, \
             {} while it served several); {} decided when their hold ran out, {} late peer spans, {} peer spans whose times do not nest, {} decided early (too many held); \
             {} kernel child spans, {} over --span-children, {} kernel events forgotten (too many on a thread), {} not made while serving a request; \
             {} spans not exported (no context)",
            self.server,
            self.server_hop,
            self.server_wire,
            self.server_new,
            self.client,
            self.client_trace_id,
            self.client_thread,
            self.client_wire,
            pct(parented, self.client),
            self.client_no_request,
            self.client_ambiguous,
            self.expired,
            self.hop_late,
            self.hop_mismatch,
            self.evicted,
            self.children,
            self.children_dropped,
            self.kernel_events_forgotten,
            self.kernel_events_unclaimed,
            self.not_exported,
        )?;
        if self.hops_out + self.hops_in > 0 {
            write!(
                f,
                "; across nodes: {} SERVER spans parented to a CLIENT span of another node, {} CLIENT spans sent \
                 to the node at the other end ({} dropped unsent), {} received ({} matched no SERVER span here)",
                self.server_hop_remote,
                self.hops_out,
                self.hops_out_dropped,
                self.hops_in,
                self.hops_in_unmatched,
            )?;
        }
        writeln!(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    Undecided,
    Wire,
    Local(u64),
    /// A CLIENT span of another node: its ids and whether its trace came
    /// from the wire.
    Remote(SpanIds, bool),
    Root,
}

/// Both ends of a TCP connection, the same from either side: client
/// address and port, server address and port.
type ConnKey = (String, u16, String, u16);

/// One end of a connection.
type Endpoint = (String, u16);

/// A connection's two ends in a fixed order, whichever side saw it.
fn ends(a: (&str, u16), b: (&str, u16)) -> (Endpoint, Endpoint) {
    let (a, b) = ((plain(a.0).to_string(), a.1), (plain(b.0).to_string(), b.1));
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Retransmit times kept per connection, and connections with any.
const MAX_RETRANSMITS: usize = 256;
const MAX_RETRANSMIT_CONNS: usize = 16_384;

#[derive(Debug)]
struct Node<R> {
    res: R,
    ev: Event,
    server: bool,
    start: u64,
    end: u64,
    wire: Option<SpanIds>,
    span: [u8; 8],
    parent: Parent,
    how: How,
    unparented: Option<String>,
    links: Vec<u64>,
    deadline: u64,
    /// Known once decided up the chain: the trace and whether it came from the wire.
    trace: Option<([u8; 16], bool)>,
    emitted: bool,
    conn: Option<(ConnKey, u64)>,
    /// A SERVER span's kernel child spans, claimed when it came (and at
    /// its emission), and those left out over the cap.
    children: Vec<Event>,
    children_dropped: u32,
}

/// The stage.
#[derive(Debug)]
pub struct Builder<R> {
    cfg: Config,
    ids: Ids,
    next: u64,
    nodes: HashMap<u64, Node<R>>,
    /// In arrival order, until emitted (emitted ones leave from the front).
    open: VecDeque<u64>,
    /// Spans not yet emitted.
    unemitted: usize,
    /// When each SERVER and CLIENT span's hold ends, in arrival order.
    server_due: VecDeque<(u64, u64)>,
    client_due: VecDeque<(u64, u64)>,
    /// Decided since the last step: emitted then if their trace is known.
    ready: Vec<u64>,
    /// Spans waiting for another span's emission (their parent's, or a
    /// link's): looked at again when it is emitted.
    waiting: HashMap<u64, Vec<u64>>,
    /// SERVER spans by process and the trace id on their wire, and the
    /// undecided CLIENT spans with a wire trace id (the `trace_id` rule).
    servers_by_trace: HashMap<(u32, [u8; 16]), VecDeque<u64>>,
    clients_by_trace: HashMap<(u32, [u8; 16]), VecDeque<u64>>,
    /// SERVER spans by thread (the `thread` rule).
    servers_by_tid: HashMap<u32, VecDeque<u64>>,
    /// Emitted, kept as possible parents until the time given.
    retired: VecDeque<(u64, u64)>,
    clients_by_conn: HashMap<(ConnKey, u64), u64>,
    servers_by_conn: HashMap<(ConnKey, u64), u64>,
    /// Requests seen per connection and side (client = false).
    conn_requests: HashMap<(ConnKey, bool), u64>,
    thread_events: HashMap<u32, VecDeque<Event>>,
    /// CLIENT spans of other nodes no SERVER span here has taken yet, and
    /// when each came (in arrival order, for forgetting).
    remote_clients: HashMap<(ConnKey, u64), (Hop, u64)>,
    remote_order: VecDeque<(u64, (ConnKey, u64))>,
    /// CLIENT spans for other nodes, until taken.
    hops_out: VecDeque<Hop>,
    /// When each connection (its two ends, the lower first) last
    /// retransmitted, for the request spans on it.
    retransmits: HashMap<(Endpoint, Endpoint), VecDeque<u64>>,
    stats: BuildStats,
}

fn plain(a: &str) -> &str {
    match a.strip_prefix("::ffff:") {
        Some(v4) if v4.parse::<std::net::Ipv4Addr>().is_ok() => v4,
        _ => a,
    }
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether a kernel event can be a child span of a request.
fn is_child_kind(ev: &Event) -> bool {
    match &ev.data {
        EventData::Open(_) | EventData::Bio(_) | EventData::Exec(_) => true,
        EventData::Tcp(t) => matches!(t.kind, TcpKind::Connect | TcpKind::ConnectFailed),
        EventData::Dns(d) => d.role == "client",
        _ => false,
    }
}

/// When a kernel event started (a block I/O was submitted before it completed).
pub fn child_start(ev: &Event) -> u64 {
    match &ev.data {
        EventData::Bio(b) => ev
            .timestamp
            .0
            .saturating_sub(b.latency_ns.saturating_add(b.queued_ns)),
        _ => ev.timestamp.0,
    }
}

impl<R: Clone> Builder<R> {
    /// An empty stage.
    pub fn new(cfg: Config) -> Builder<R> {
        Builder {
            cfg,
            ids: Ids::new(),
            next: 0,
            nodes: HashMap::new(),
            open: VecDeque::new(),
            unemitted: 0,
            server_due: VecDeque::new(),
            client_due: VecDeque::new(),
            ready: Vec::new(),
            waiting: HashMap::new(),
            servers_by_trace: HashMap::new(),
            clients_by_trace: HashMap::new(),
            servers_by_tid: HashMap::new(),
            retired: VecDeque::new(),
            clients_by_conn: HashMap::new(),
            servers_by_conn: HashMap::new(),
            conn_requests: HashMap::new(),
            thread_events: HashMap::new(),
            remote_clients: HashMap::new(),
            remote_order: VecDeque::new(),
            hops_out: VecDeque::new(),
            retransmits: HashMap::new(),
            stats: BuildStats::default(),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> BuildStats {
        BuildStats {
            held: self.unemitted as u64,
            ..self.stats
        }
    }

    /// A request event (`res` is its span's resource); `now` is wall-clock
    /// nanoseconds.
    pub fn push_request(&mut self, ev: &Event, res: R, now: u64) {
        if matches!(&ev.data, EventData::Http(h) if h.kind == "request") {
            self.request(ev, res, now);
        }
    }

    /// Any other event: kept a while if it can be a request's child span.
    pub fn push_event(&mut self, ev: &Event) {
        if !self.cfg.requests_traced {
            return;
        }
        if let EventData::Tcp(t) = &ev.data {
            if t.kind == TcpKind::Retransmit {
                self.retransmit(
                    ends((&t.saddr, t.sport), (&t.daddr, t.dport)),
                    ev.timestamp.0,
                );
                return;
            }
        }
        if self.cfg.max_children > 0 && is_child_kind(ev) {
            self.kernel_event(ev);
        }
    }

    fn retransmit(&mut self, conn: (Endpoint, Endpoint), at: u64) {
        if self.retransmits.len() >= MAX_RETRANSMIT_CONNS && !self.retransmits.contains_key(&conn) {
            // Forget the connections that retransmitted longest ago.
            let cutoff = at.saturating_sub(10 * self.cfg.hold_ns);
            self.retransmits
                .retain(|_, q| q.back().is_some_and(|t| *t >= cutoff));
            if self.retransmits.len() >= MAX_RETRANSMIT_CONNS {
                self.retransmits.clear();
            }
        }
        let q = self.retransmits.entry(conn).or_default();
        let cutoff = at.saturating_sub(10 * self.cfg.hold_ns);
        while q.front().is_some_and(|t| *t < cutoff) || q.len() >= MAX_RETRANSMITS {
            q.pop_front();
        }
        q.push_back(at);
    }

    /// Retransmits on a request's connection between its first read or
    /// write and its last (and up to the slack after: they are recorded
    /// when the timer fires).
    fn retransmits_during(&self, n: &Node<R>) -> u32 {
        let EventData::Http(h) = &n.ev.data else {
            return 0;
        };
        let conn = ends((&h.saddr, h.sport), (&h.daddr, h.dport));
        self.retransmits.get(&conn).map_or(0, |q| {
            q.iter().filter(|t| **t >= n.start && **t <= n.end).count() as u32
        })
    }

    #[cfg(test)]
    fn push(&mut self, ev: &Event, res: impl FnOnce() -> R, now: u64) {
        match &ev.data {
            EventData::Http(_) => self.push_request(ev, res(), now),
            _ => self.push_event(ev),
        }
    }

    fn kernel_event(&mut self, ev: &Event) {
        if !self.thread_events.contains_key(&ev.tid) && self.thread_events.len() >= MAX_THREADS {
            // Forget the threads with the oldest last event.
            let cutoff = ev.timestamp.0.saturating_sub(10 * self.cfg.hold_ns);
            let before = self.thread_events.values().map(|q| q.len()).sum::<usize>();
            self.thread_events
                .retain(|_, q| q.back().is_some_and(|e| e.timestamp.0 >= cutoff));
            if self.thread_events.len() >= MAX_THREADS {
                self.thread_events.clear();
            }
            let after = self.thread_events.values().map(|q| q.len()).sum::<usize>();
            self.stats.kernel_events_forgotten += (before - after) as u64;
        }
        let q = self.thread_events.entry(ev.tid).or_default();
        if q.len() >= MAX_THREAD_EVENTS {
            q.pop_front();
            self.stats.kernel_events_forgotten += 1;
        }
        q.push_back(ev.clone());
    }

    fn request(&mut self, ev: &Event, res: R, now: u64) {
        let EventData::Http(h) = &ev.data else {
            return;
        };
        let server = h.role == "server";
        let key = self.next;
        self.next += 1;
        let wire = h.trace_context.as_ref().and_then(|c| {
            Some(SpanIds {
                trace: hex::<16>(&c.trace_id)?,
                span: hex::<8>(&c.span_id)?,
            })
        });
        let (local, peer) = (
            (plain(&h.saddr).to_string(), h.sport),
            (plain(&h.daddr).to_string(), h.dport),
        );
        let conn_key: ConnKey = if server {
            (peer.0, peer.1, local.0, local.1)
        } else {
            (local.0, local.1, peer.0, peer.1)
        };
        // HTTP/2 streams end in any order, so the n-th request to end on a
        // connection need not be the same one at both ends: its place is
        // its stream's id, the same at both ends (none known: no join).
        let h2 = h.version == "HTTP/2";
        let joinable = !h2 || h.stream_id != 0;
        if self.conn_requests.len() >= MAX_HELD * 4 {
            self.conn_requests.clear();
        }
        let order = if h2 {
            u64::from(h.stream_id)
        } else if joinable {
            let n = self
                .conn_requests
                .entry((conn_key.clone(), server))
                .or_insert(0);
            *n += 1;
            *n - 1
        } else {
            0
        };
        let node = Node {
            res,
            ev: ev.clone(),
            server,
            start: ev.timestamp.0,
            end: ev.timestamp.0.saturating_add(h.duration_ns),
            wire,
            span: self.ids.span(),
            parent: Parent::Undecided,
            how: How::NewTrace,
            unparented: None,
            links: Vec::new(),
            // A SERVER span's CLIENT span may come from another node, later.
            deadline: now
                .saturating_add(self.cfg.hold_ns)
                .saturating_add(if server && joinable {
                    self.cfg.remote_hold_ns
                } else {
                    0
                }),
            trace: None,
            emitted: false,
            conn: joinable.then(|| (conn_key.clone(), order)),
            children: Vec::new(),
            children_dropped: 0,
        };
        let (pid, tid, deadline) = (ev.pid, ev.tid, node.deadline);
        self.nodes.insert(key, node);
        self.open.push_back(key);
        self.unemitted += 1;
        let ck = (conn_key, order);
        if server {
            self.servers_by_tid.entry(tid).or_default().push_back(key);
            self.server_due.push_back((deadline, key));
            // The thread's kernel events during the request are here by now.
            self.claim_children(key);
            if let Some(w) = wire {
                self.servers_by_trace
                    .entry((pid, w.trace))
                    .or_default()
                    .push_back(key);
                // CLIENT spans of the process waiting for this trace id.
                if let Some(list) = self.clients_by_trace.remove(&(pid, w.trace)) {
                    let mut still = VecDeque::new();
                    for c in list {
                        match self.by_trace_id(c) {
                            Some(s) => self.decide(c, Parent::Local(s), How::TraceId),
                            None if self
                                .nodes
                                .get(&c)
                                .is_some_and(|n| n.parent == Parent::Undecided) =>
                            {
                                still.push_back(c)
                            }
                            None => {}
                        }
                    }
                    if !still.is_empty() {
                        self.clients_by_trace.insert((pid, w.trace), still);
                    }
                }
            }
        } else {
            self.client_due.push_back((deadline, key));
            if let Some(w) = wire {
                match self.by_trace_id(key) {
                    Some(s) => self.decide(key, Parent::Local(s), How::TraceId),
                    None => self
                        .clients_by_trace
                        .entry((pid, w.trace))
                        .or_default()
                        .push_back(key),
                }
            }
        }
        if !joinable {
            if server {
                // Nothing to wait for.
                let has_wire = self.nodes[&key].wire.is_some();
                self.decide(
                    key,
                    if has_wire { Parent::Wire } else { Parent::Root },
                    if has_wire { How::Wire } else { How::NewTrace },
                );
            }
        } else if server {
            if let Some(&c) = self.clients_by_conn.get(&ck) {
                if self.nodes.contains_key(&c) {
                    if self.same_request(c, key) {
                        self.decide(key, Parent::Local(c), How::Hop);
                    } else {
                        self.stats.hop_mismatch += 1;
                    }
                }
            }
            if let Some((hop, _)) = self.remote_clients.remove(&ck) {
                self.remote_hop(key, &hop);
            }
            self.servers_by_conn.insert(ck, key);
        } else {
            if let Some(&s) = self.servers_by_conn.get(&ck) {
                match self.nodes.get(&s).map(|n| n.parent) {
                    Some(_) if !self.same_request(key, s) => self.stats.hop_mismatch += 1,
                    Some(Parent::Undecided) => self.decide(s, Parent::Local(key), How::Hop),
                    Some(_) => self.stats.hop_late += 1,
                    None => {}
                }
            }
            self.clients_by_conn.insert(ck, key);
        }
        if self.unemitted > MAX_HELD {
            let oldest: Vec<u64> = self
                .open
                .iter()
                .copied()
                .take(self.open.len() / 4)
                .collect();
            for k in oldest {
                if self
                    .nodes
                    .get(&k)
                    .is_some_and(|n| n.parent == Parent::Undecided)
                {
                    self.stats.evicted += 1;
                    self.expire(k);
                }
            }
        }
    }

    /// One node, one clock: the server's request lies inside the client's
    /// (it read the request after the client began writing it and wrote the
    /// response's end before the client read it). Otherwise the n-th request
    /// on the connection is not the same one at both ends (one was lost).
    fn same_request(&self, client: u64, server: u64) -> bool {
        match (self.nodes.get(&client), self.nodes.get(&server)) {
            // Times are taken at syscall exit: a reader can return before
            // the writer that woke it does, hence the slack.
            // And strictly, with no slack: the server began reading before
            // the client had read the whole response, and the client began
            // writing before the server had written it (one thread's own
            // order: the client's next request starts after it read this
            // response, the server's after it wrote this one).
            (Some(c), Some(s)) => {
                c.start <= s.start.saturating_add(NEST_SLACK_NS)
                    && s.end <= c.end.saturating_add(NEST_SLACK_NS)
                    && s.start < c.end
                    && c.start < s.end
            }
            _ => false,
        }
    }

    /// A CLIENT span of another node for the SERVER span `server`: its
    /// parent when the times agree (within the nodes' clock skew).
    fn remote_hop(&mut self, server: u64, hop: &Hop) {
        let Some(s) = self.nodes.get(&server) else {
            return;
        };
        let slack = NEST_SLACK_NS + REMOTE_SKEW_NS;
        let same = hop.start <= s.start.saturating_add(slack)
            && s.end <= hop.end.saturating_add(slack)
            && s.start < hop.end.saturating_add(REMOTE_SKEW_NS)
            && hop.start < s.end.saturating_add(REMOTE_SKEW_NS);
        if !same {
            self.stats.hop_mismatch += 1;
            self.stats.hops_in_unmatched += 1;
        } else if s.parent != Parent::Undecided {
            self.stats.hop_late += 1;
            self.stats.hops_in_unmatched += 1;
        } else {
            self.stats.server_hop_remote += 1;
            self.decide(server, Parent::Remote(hop.ids, hop.from_wire), How::Hop);
        }
    }

    /// A CLIENT span of another node whose server end may be here (the hub
    /// sends it to the node that has the server's address).
    pub fn push_remote(&mut self, hop: Hop, now: u64) {
        self.stats.hops_in += 1;
        let ck: (ConnKey, u64) = (
            (
                plain(&hop.client.0).to_string(),
                hop.client.1,
                plain(&hop.server.0).to_string(),
                hop.server.1,
            ),
            hop.order,
        );
        if let Some(&s) = self.servers_by_conn.get(&ck) {
            if self.nodes.contains_key(&s) {
                self.remote_hop(s, &hop);
                return;
            }
        }
        // The SERVER span has not come yet (or never will: its pod is not
        // traced here); kept a while.
        if self.remote_clients.len() >= MAX_HELD {
            if let Some((_, old)) = self.remote_order.pop_front() {
                if self.remote_clients.remove(&old).is_some() {
                    self.stats.hops_in_unmatched += 1;
                }
            }
        }
        self.remote_order.push_back((now, ck.clone()));
        if self.remote_clients.insert(ck, (hop, now)).is_some() {
            // A second one for the same place: the first is replaced.
            self.stats.hops_in_unmatched += 1;
        }
    }

    /// The CLIENT spans decided since the last call whose SERVER span is not
    /// on this node (with [`Config::remote_hold_ns`]).
    pub fn take_hops(&mut self) -> Vec<Hop> {
        self.hops_out.drain(..).collect()
    }

    fn decide(&mut self, key: u64, parent: Parent, how: How) {
        let Some(n) = self.nodes.get_mut(&key) else {
            return;
        };
        if n.parent != Parent::Undecided {
            return;
        }
        n.parent = parent;
        n.how = how;
        self.ready.push(key);
        if parent == Parent::Root {
            let t = self.ids.trace();
            n.trace = Some((t, false));
        }
        let s = &mut self.stats;
        match (n.server, how) {
            (true, How::Hop) => s.server_hop += 1,
            (true, How::Wire) => s.server_wire += 1,
            (true, _) => s.server_new += 1,
            (false, How::TraceId) => s.client_trace_id += 1,
            (false, How::Thread) => s.client_thread += 1,
            (false, How::Wire) => s.client_wire += 1,
            (false, _) => {}
        }
        if n.server {
            s.server += 1;
        } else {
            s.client += 1;
        }
    }

    /// Of `list`, the SERVER spans of the CLIENT span's process covering its time.
    fn covering<'a>(
        &'a self,
        c: &'a Node<R>,
        list: Option<&'a VecDeque<u64>>,
    ) -> impl Iterator<Item = u64> + 'a {
        list.into_iter().flatten().copied().filter(move |k| {
            self.nodes
                .get(k)
                .is_some_and(|s| s.ev.pid == c.ev.pid && s.start <= c.start && s.end >= c.end)
        })
    }

    /// The SERVER spans the CLIENT span's thread was serving while it ran.
    fn on_thread(&self, key: u64) -> Vec<u64> {
        let Some(c) = self.nodes.get(&key) else {
            return Vec::new();
        };
        self.covering(c, self.servers_by_tid.get(&c.ev.tid))
            .collect()
    }

    /// A CLIENT span's parent by trace id, if one is there to be found.
    fn by_trace_id(&self, key: u64) -> Option<u64> {
        let c = self.nodes.get(&key)?;
        let trace = c.wire?.trace;
        self.covering(c, self.servers_by_trace.get(&(c.ev.pid, trace)))
            .max_by_key(|k| self.nodes[k].start)
    }

    /// Decides a span with what is known now (its hold ran out).
    fn expire(&mut self, key: u64) {
        let Some(n) = self.nodes.get(&key) else {
            return;
        };
        let (server, has_wire) = (n.server, n.wire.is_some());
        if server {
            let p = if has_wire { Parent::Wire } else { Parent::Root };
            let how = if has_wire { How::Wire } else { How::NewTrace };
            self.decide(key, p, how);
            return;
        }
        if let Some(s) = self.by_trace_id(key) {
            self.decide(key, Parent::Local(s), How::TraceId);
            return;
        }
        let on_thread = self.on_thread(key);
        if on_thread.len() == 1 {
            self.decide(key, Parent::Local(on_thread[0]), How::Thread);
            return;
        }
        if has_wire {
            self.decide(key, Parent::Wire, How::Wire);
            return;
        }
        let why = if on_thread.is_empty() {
            self.stats.client_no_request += 1;
            "the thread was serving no request".to_string()
        } else {
            self.stats.client_ambiguous += 1;
            format!(
                "the thread was serving {} requests and the request carried no trace id of one of them",
                on_thread.len()
            )
        };
        self.decide(key, Parent::Root, How::NewTrace);
        if let Some(n) = self.nodes.get_mut(&key) {
            n.unparented = Some(why);
            n.links = on_thread.into_iter().take(8).collect();
        }
    }

    fn trace_of(&self, key: u64, depth: u32) -> Option<([u8; 16], bool)> {
        let n = self.nodes.get(&key)?;
        if let Some(t) = n.trace {
            return Some(t);
        }
        match n.parent {
            Parent::Wire => n.wire.map(|w| (w.trace, true)),
            Parent::Remote(ids, from_wire) => Some((ids.trace, from_wire)),
            Parent::Local(p) if depth < 64 => self.trace_of(p, depth + 1),
            _ => None,
        }
    }

    /// Decides what is due and returns the spans ready to export.
    pub fn tick(&mut self, now: u64) -> Vec<Decided<R>> {
        self.step(now, false)
    }

    /// The trace ends: everything held is decided and returned.
    pub fn finish(&mut self) -> Vec<Decided<R>> {
        let out = self.step(u64::MAX, true);
        let left: usize = self.thread_events.drain().map(|(_, q)| q.len()).sum();
        self.stats.kernel_events_unclaimed += left as u64;
        out
    }

    fn step(&mut self, now: u64, all: bool) -> Vec<Decided<R>> {
        // Holds that ended. Servers first: a client's thread rule looks at
        // them, not the reverse.
        for server in [true, false] {
            loop {
                let q = if server {
                    &mut self.server_due
                } else {
                    &mut self.client_due
                };
                match q.front() {
                    Some(&(at, k)) if all || at <= now => {
                        q.pop_front();
                        if self
                            .nodes
                            .get(&k)
                            .is_some_and(|n| n.parent == Parent::Undecided)
                        {
                            self.stats.expired += 1;
                            self.expire(k);
                        }
                    }
                    _ => break,
                }
            }
        }
        // What was decided (and what waited for it) goes out once its trace
        // is known up its chain.
        let mut out = Vec::new();
        // In the order they were decided (what waited joins the end).
        let mut i = 0;
        while let Some(&k) = self.ready.get(i) {
            i += 1;
            self.try_emit(k, now, all, &mut out);
        }
        self.ready.clear();
        if all {
            // A chain whose top was forgotten: a trace of its own.
            let left: Vec<u64> = self
                .open
                .iter()
                .copied()
                .filter(|k| self.nodes.get(k).is_some_and(|n| !n.emitted))
                .collect();
            for k in left {
                let t = (self.ids.trace(), false);
                self.emit(k, t, now, &mut out);
            }
            self.waiting.clear();
        }
        while self
            .open
            .front()
            .is_some_and(|k| self.nodes.get(k).is_none_or(|n| n.emitted))
        {
            self.open.pop_front();
        }
        self.forget(now);
        out
    }

    /// Emits a decided span if its trace is known (and its links' are);
    /// else it waits for the span that keeps it.
    fn try_emit(&mut self, key: u64, now: u64, all: bool, out: &mut Vec<Decided<R>>) {
        let Some(n) = self.nodes.get(&key) else {
            return;
        };
        if n.emitted || n.parent == Parent::Undecided {
            return;
        }
        // An unparented span waits for its candidate parents' trace ids too
        // (its links name them).
        if !all {
            if let Some(&l) = n
                .links
                .iter()
                .find(|l| self.nodes.contains_key(l) && self.trace_of(**l, 0).is_none())
            {
                self.waiting.entry(l).or_default().push(key);
                return;
            }
        }
        match self.trace_of(key, 0) {
            Some(t) => {
                self.emit(key, t, now, out);
                if let Some(w) = self.waiting.remove(&key) {
                    self.ready.extend(w);
                }
            }
            None => {
                if let Parent::Local(p) = n.parent {
                    self.waiting.entry(p).or_default().push(key);
                }
            }
        }
    }

    /// Moves the thread's kernel events made during the SERVER span's
    /// request into it (at most the cap; the rest counted).
    fn claim_children(&mut self, key: u64) {
        if self.cfg.max_children == 0 {
            return;
        }
        let Some(n) = self.nodes.get_mut(&key) else {
            return;
        };
        let Some(q) = self.thread_events.get_mut(&n.ev.tid) else {
            return;
        };
        let (start, end) = (n.start, n.end);
        // Another request of the thread may still claim the others (an
        // event loop's requests overlap); old ones are pruned by time. An
        // event that ended before the request began cannot be its child.
        let mut i = q
            .partition_point(|e| e.timestamp.0 < start)
            .saturating_sub(64);
        while i < q.len() {
            let s = child_start(&q[i]);
            if s >= start && s <= end {
                let Some(e) = q.remove(i) else { break };
                if n.children.len() < self.cfg.max_children {
                    n.children.push(e);
                } else {
                    n.children_dropped += 1;
                }
            } else {
                i += 1;
            }
        }
    }

    fn emit(&mut self, key: u64, trace: ([u8; 16], bool), now: u64, out: &mut Vec<Decided<R>>) {
        let parent_span = {
            let Some(n) = self.nodes.get(&key) else {
                return;
            };
            match n.parent {
                Parent::Wire => n.wire.map(|w| w.span),
                Parent::Local(p) => self.nodes.get(&p).map(|p| p.span),
                Parent::Remote(ids, _) => Some(ids.span),
                _ => None,
            }
        };
        let links: Vec<SpanIds> = self.nodes[&key]
            .links
            .iter()
            .filter_map(|l| {
                let t = self.trace_of(*l, 0)?;
                Some(SpanIds {
                    trace: t.0,
                    span: self.nodes[l].span,
                })
            })
            .collect();
        let Some(n) = self.nodes.get_mut(&key) else {
            return;
        };
        n.trace = Some(trace);
        n.emitted = true;
        let ids = SpanIds {
            trace: trace.0,
            span: n.span,
        };
        let export = trace.1 || !self.cfg.context_only;
        if n.server {
            // Stragglers: events that arrived after the request did.
            self.claim_children(key);
        }
        let Some(n) = self.nodes.get_mut(&key) else {
            return;
        };
        self.unemitted = self.unemitted.saturating_sub(1);
        let children = std::mem::take(&mut n.children);
        let dropped = n.children_dropped;
        if self.cfg.remote_hold_ns > 0 && !n.server {
            if let Some((ck, order)) = &n.conn {
                // No SERVER span here: the server end is on another node
                // (or not traced at all; the hub knows which).
                if !self.servers_by_conn.contains_key(&(ck.clone(), *order)) {
                    if self.hops_out.len() >= MAX_HOPS_OUT {
                        self.hops_out.pop_front();
                        self.stats.hops_out_dropped += 1;
                    }
                    self.stats.hops_out += 1;
                    self.hops_out.push_back(Hop {
                        client: (ck.0.clone(), ck.1),
                        server: (ck.2.clone(), ck.3),
                        order: *order,
                        start: n.start,
                        end: n.end,
                        ids,
                        from_wire: trace.1,
                    });
                }
            }
        }
        self.retired
            .push_back((now.saturating_add(4 * self.cfg.hold_ns), key));
        if !export {
            self.stats.not_exported += 1 + children.len() as u64;
            return;
        }
        self.stats.children += children.len() as u64;
        self.stats.children_dropped += u64::from(dropped);
        let res = n.res.clone();
        let retransmits = {
            let n = &self.nodes[&key];
            self.retransmits_during(n)
        };
        let Some(n) = self.nodes.get_mut(&key) else {
            return;
        };
        for ev in children {
            out.push(Decided::Kernel {
                res: res.clone(),
                ids: SpanIds {
                    trace: trace.0,
                    span: self.ids.span(),
                },
                parent: ids.span,
                ev,
            });
        }
        out.push(Decided::Request {
            res,
            ids,
            parent: parent_span,
            how: n.how,
            unparented: n.unparented.clone(),
            links,
            ev: n.ev.clone(),
            children_dropped: dropped,
            retransmits,
        });
    }

    fn forget(&mut self, now: u64) {
        while let Some(&(at, key)) = self.retired.front() {
            if at > now {
                break;
            }
            self.retired.pop_front();
            if let Some(n) = self.nodes.remove(&key) {
                if let Some(ck) = n.conn {
                    let map = if n.server {
                        &mut self.servers_by_conn
                    } else {
                        &mut self.clients_by_conn
                    };
                    if map.get(&ck) == Some(&key) {
                        map.remove(&ck);
                    }
                }
                // Spans leave about in the order they came: near the front.
                fn drop_key(l: &mut VecDeque<u64>, key: u64) {
                    if let Some(i) = l.iter().position(|k| *k == key) {
                        l.remove(i);
                    }
                }
                let trace_key = n.wire.map(|w| (n.ev.pid, w.trace));
                if n.server {
                    if let Some(l) = self.servers_by_tid.get_mut(&n.ev.tid) {
                        drop_key(l, key);
                        if l.is_empty() {
                            self.servers_by_tid.remove(&n.ev.tid);
                        }
                    }
                }
                if let Some(tk) = trace_key {
                    let map = if n.server {
                        &mut self.servers_by_trace
                    } else {
                        &mut self.clients_by_trace
                    };
                    if let Some(l) = map.get_mut(&tk) {
                        drop_key(l, key);
                        if l.is_empty() {
                            map.remove(&tk);
                        }
                    }
                }
            }
        }
        // CLIENT spans of other nodes no SERVER span took.
        let keep = 4 * self.cfg.hold_ns + self.cfg.remote_hold_ns;
        while let Some((at, _)) = self.remote_order.front() {
            if now != u64::MAX && at.saturating_add(keep) > now {
                break;
            }
            let Some((_, ck)) = self.remote_order.pop_front() else {
                break;
            };
            if self
                .remote_clients
                .get(&ck)
                .is_some_and(|(_, at)| at.saturating_add(keep) <= now)
            {
                self.remote_clients.remove(&ck);
                self.stats.hops_in_unmatched += 1;
            }
        }
        // Kernel events no request can claim any more.
        if now != u64::MAX {
            let cutoff = now.saturating_sub(3 * self.cfg.hold_ns);
            for q in self.thread_events.values_mut() {
                while q.front().is_some_and(|e| e.timestamp.0 < cutoff) {
                    q.pop_front();
                    self.stats.kernel_events_unclaimed += 1;
                }
            }
            self.thread_events.retain(|_, q| !q.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podscope_model::{HttpEvent, Identity, OpenEvent, Timestamp, TraceContext};

    const MS: u64 = 1_000_000;

    #[allow(clippy::too_many_arguments)]
    fn http(
        role: &str,
        pid: u32,
        tid: u32,
        start: u64,
        dur: u64,
        local: (&str, u16),
        peer: (&str, u16),
        ctx: Option<(&str, &str)>,
    ) -> Event {
        Event {
            timestamp: Timestamp(start),
            identity: Identity::default(),
            pid,
            tid,
            uid: 0,
            comm: "x".into(),
            cgroup_id: 1,
            data: EventData::Http(Box::new(HttpEvent {
                dialed_addr: String::new(),
                dialed_port: 0,
                stream_id: 0,
                kind: "request".into(),
                role: role.into(),
                version: "HTTP/1.1".into(),
                method: "GET".into(),
                path: "/".into(),
                host: String::new(),
                status: Some(200),
                duration_ns: dur,
                request_bytes: 1,
                response_bytes: 1,
                tls: false,
                truncated: false,
                family: "ipv4".into(),
                saddr: local.0.into(),
                sport: local.1,
                daddr: peer.0.into(),
                dport: peer.1,
                peer_namespace: String::new(),
                peer_pod: String::new(),
                error: None,
                rpc: None,
                capture: None,
                trace_context: ctx.map(|(t, s)| {
                    Box::new(TraceContext {
                        format: "w3c".into(),
                        trace_id: t.into(),
                        span_id: s.into(),
                        parent_span_id: None,
                        sampled: Some(true),
                        tracestate: None,
                    })
                }),
            })),
        }
    }

    fn open(tid: u32, at: u64, path: &str) -> Event {
        Event {
            timestamp: Timestamp(at),
            identity: Identity::default(),
            pid: tid,
            tid,
            uid: 0,
            comm: "x".into(),
            cgroup_id: 1,
            data: EventData::Open(OpenEvent {
                kind: "open".into(),
                path: path.into(),
                dirfd: None,
                flags: 0,
                flags_str: "O_RDONLY".into(),
                mode: 0,
                fd: Some(3),
                errno: None,
                error: None,
            }),
        }
    }

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";

    /// (resource, ids, parent, how, why unparented) of a request span.
    type Req = (String, SpanIds, Option<[u8; 8]>, How, Option<String>);

    struct Got {
        requests: Vec<Req>,
        kernel: Vec<(SpanIds, [u8; 8], String)>,
    }

    fn sort(out: Vec<Decided<&'static str>>) -> Got {
        let mut g = Got {
            requests: Vec::new(),
            kernel: Vec::new(),
        };
        for d in out {
            match d {
                Decided::Request {
                    res,
                    ids,
                    parent,
                    how,
                    unparented,
                    ..
                } => g
                    .requests
                    .push((res.to_string(), ids, parent, how, unparented)),
                Decided::Kernel {
                    ids, parent, ev, ..
                } => {
                    let EventData::Open(o) = ev.data else {
                        panic!()
                    };
                    g.kernel.push((ids, parent, o.path))
                }
            }
        }
        g
    }

    /// nginx (pid 10) proxies to the api (pid 20, thread 21) which calls a
    /// callee (pid 30); events arrive in the order the kernel ends them.
    #[test]
    fn a_chain_is_one_trace_parented_hop_by_hop() {
        for with_context in [true, false] {
            let mut b: Builder<&'static str> = Builder::new(Config::default());
            let ctx = with_context.then_some((T, CALLER));
            let now = 1_000 * MS;
            let nginx = ("10.0.0.2", 80);
            let api = ("10.0.0.3", 8000);
            let callee = ("10.0.0.4", 9000);
            let evs = [
                (open(21, 12 * MS, "/etc/order.json"), "api"),
                // The callee answers first, then the api's call to it ends ...
                (
                    http(
                        "server",
                        30,
                        31,
                        14 * MS,
                        MS,
                        callee,
                        ("10.0.0.3", 40001),
                        ctx,
                    ),
                    "callee",
                ),
                (
                    http(
                        "client",
                        20,
                        21,
                        13 * MS,
                        3 * MS,
                        ("10.0.0.3", 40001),
                        callee,
                        ctx,
                    ),
                    "api-client",
                ),
                // ... then the api's request, nginx's upstream call, nginx's request.
                (
                    http(
                        "server",
                        20,
                        21,
                        11 * MS,
                        6 * MS,
                        api,
                        ("10.0.0.2", 50000),
                        ctx,
                    ),
                    "api",
                ),
                (
                    http(
                        "client",
                        10,
                        10,
                        10 * MS,
                        8 * MS,
                        ("10.0.0.2", 50000),
                        api,
                        ctx,
                    ),
                    "nginx-client",
                ),
                (
                    http(
                        "server",
                        10,
                        10,
                        9 * MS,
                        10 * MS,
                        nginx,
                        ("10.0.0.1", 33333),
                        ctx,
                    ),
                    "nginx",
                ),
            ];
            for (e, r) in &evs {
                b.push(e, || *r, now);
            }
            // The root (nginx's SERVER span) waits out its hold for a peer
            // CLIENT span that never comes; the rest wait for it.
            assert!(sort(b.tick(now + MS)).requests.is_empty());
            let got = sort(b.tick(now + 2_000 * MS));
            assert_eq!(got.requests.len(), 5, "{with_context}");
            let by = |name: &str| {
                got.requests
                    .iter()
                    .find(|r| r.0 == name)
                    .unwrap_or_else(|| panic!("{name}"))
                    .clone()
            };
            let trace = by("nginx").1.trace;
            if with_context {
                assert_eq!(trace, hex::<16>(T).unwrap());
                assert_eq!(by("nginx").2, hex::<8>(CALLER));
                assert_eq!(by("nginx").3, How::Wire);
            } else {
                assert_eq!(by("nginx").2, None);
                assert_eq!(by("nginx").3, How::NewTrace);
            }
            assert!(got.requests.iter().all(|r| r.1.trace == trace));
            assert_eq!(by("nginx-client").2, Some(by("nginx").1.span));
            assert_eq!(by("api").2, Some(by("nginx-client").1.span));
            assert_eq!(by("api").3, How::Hop);
            assert_eq!(by("api-client").2, Some(by("api").1.span));
            assert_eq!(
                by("api-client").3,
                if with_context {
                    How::TraceId
                } else {
                    How::Thread
                }
            );
            assert_eq!(by("callee").2, Some(by("api-client").1.span));
            assert_eq!(got.kernel.len(), 1);
            assert_eq!(got.kernel[0].1, by("api").1.span);
            assert_eq!(got.kernel[0].0.trace, trace);
            assert_eq!(got.kernel[0].2, "/etc/order.json");
            let st = b.stats();
            assert_eq!((st.server, st.client, st.server_hop), (3, 2, 2));
            assert_eq!(st.held, 0);
        }
    }

    #[test]
    fn an_event_loop_client_without_context_gets_its_own_trace_and_why() {
        let mut b: Builder<&'static str> = Builder::new(Config::default());
        let now = 1_000 * MS;
        let up = ("10.0.0.9", 80);
        // One thread serving two requests at once calls upstream without a header.
        b.push(
            &http(
                "server",
                5,
                5,
                10 * MS,
                10 * MS,
                ("10.0.0.5", 80),
                ("10.0.0.1", 1),
                None,
            ),
            || "a",
            now,
        );
        b.push(
            &http(
                "server",
                5,
                5,
                11 * MS,
                10 * MS,
                ("10.0.0.5", 80),
                ("10.0.0.1", 2),
                None,
            ),
            || "b",
            now,
        );
        b.push(
            &http("client", 5, 5, 12 * MS, MS, ("10.0.0.5", 3), up, None),
            || "c",
            now,
        );
        // And a thread serving nothing calls out.
        b.push(
            &http("client", 5, 6, 12 * MS, MS, ("10.0.0.5", 4), up, None),
            || "d",
            now,
        );
        let got = sort(b.tick(now + 2_000 * MS));
        let c = got.requests.iter().find(|r| r.0 == "c").unwrap();
        assert_eq!((c.2, c.3), (None, How::NewTrace));
        assert!(c.4.as_deref().unwrap().contains("serving 2 requests"));
        let d = got.requests.iter().find(|r| r.0 == "d").unwrap();
        assert_eq!(d.4.as_deref(), Some("the thread was serving no request"));
        let st = b.stats();
        assert_eq!((st.client_ambiguous, st.client_no_request), (1, 1));
    }

    #[test]
    fn children_are_capped_and_context_only_drops_new_traces() {
        let mut b: Builder<&'static str> = Builder::new(Config {
            max_children: 2,
            context_only: true,
            ..Config::default()
        });
        let now = 1_000 * MS;
        for i in 0..5 {
            b.push(&open(7, 10 * MS + i, "/f"), || "x", now);
        }
        b.push(&open(7, 30 * MS, "/after"), || "x", now);
        b.push(
            &http(
                "server",
                7,
                7,
                10 * MS,
                MS,
                ("1.1.1.1", 80),
                ("2.2.2.2", 5),
                Some((T, CALLER)),
            ),
            || "with",
            now,
        );
        b.push(
            &http(
                "server",
                8,
                8,
                10 * MS,
                MS,
                ("1.1.1.1", 80),
                ("2.2.2.2", 6),
                None,
            ),
            || "without",
            now,
        );
        let out = b.tick(now + 2_000 * MS);
        let dropped: Vec<u32> = out
            .iter()
            .filter_map(|d| match d {
                Decided::Request {
                    children_dropped, ..
                } => Some(*children_dropped),
                _ => None,
            })
            .collect();
        assert_eq!(dropped, [3]);
        let got = sort(out);
        assert_eq!(got.requests.len(), 1);
        assert_eq!(got.kernel.len(), 2);
        let st = b.stats();
        assert_eq!(
            (st.children, st.children_dropped, st.not_exported),
            (2, 3, 1)
        );
    }

    #[test]
    fn http2_is_joined_by_stream_id_not_by_connection_order() {
        let mut b: Builder<&'static str> = Builder::new(Config::default());
        let now = 1_000 * MS;
        let h2 = |mut e: Event, stream: u32| {
            if let EventData::Http(h) = &mut e.data {
                h.version = "HTTP/2".into();
                h.stream_id = stream;
            }
            e
        };
        let srv = ("10.0.0.3", 50051);
        let cli = ("10.0.0.2", 40000);
        // Streams 1 and 3 on one connection, ending in a different order at
        // each end; stream 1 carried the caller's context.
        let s1 = h2(
            http("server", 3, 3, 10 * MS, MS, srv, cli, Some((T, CALLER))),
            1,
        );
        b.push(&s1, || "s1", now);
        b.push(
            &h2(http("server", 3, 3, 9 * MS, 3 * MS, srv, cli, None), 3),
            || "s3",
            now,
        );
        b.push(
            &h2(http("client", 2, 2, 8 * MS, 5 * MS, cli, srv, None), 3),
            || "c3",
            now,
        );
        b.push(
            &h2(http("client", 2, 2, 9 * MS, 3 * MS, cli, srv, None), 1),
            || "c1",
            now,
        );
        // A stream whose id is not known (0) joins nothing and waits for nothing.
        b.push(
            &h2(http("server", 3, 3, 30 * MS, MS, srv, cli, None), 0),
            || "s0",
            now,
        );
        let got = sort(b.tick(now + 2_000 * MS));
        let find = |n: &str| got.requests.iter().find(|r| r.0 == n).unwrap().clone();
        let (c1, c3, s1, s3, s0) = (find("c1"), find("c3"), find("s1"), find("s3"), find("s0"));
        assert_eq!((s3.2, s3.3), (Some(c3.1.span), How::Hop));
        assert_eq!(s3.1.trace, c3.1.trace);
        assert_eq!((s1.2, s1.3), (Some(c1.1.span), How::Hop));
        assert_eq!(s1.1.trace, c1.1.trace);
        assert_eq!(s0.3, How::NewTrace);
        assert_eq!(b.stats().server_hop, 2);
        assert_eq!(b.stats().hop_mismatch, 0);
    }

    /// One connection's request events, pushed in order: (role, start,
    /// duration, name), the client on 10.0.0.2:40000, the server on
    /// 10.0.0.3:80; then what a tick 3 s later decides for `server`.
    fn on_one_connection(
        events: &[(&str, u64, u64, &'static str)],
        server: &str,
    ) -> (Decided<&'static str>, BuildStats) {
        let mut b: Builder<&'static str> = Builder::new(Config::default());
        let now = 1_000 * MS;
        let (cli, srv) = (("10.0.0.2", 40000), ("10.0.0.3", 80));
        for &(role, start, dur, name) in events {
            let ev = if role == "client" {
                http("client", 2, 2, start, dur, cli, srv, None)
            } else {
                http("server", 3, 3, start, dur, srv, cli, None)
            };
            b.push(&ev, || name, now);
        }
        let got = b.tick(now + 3_000 * MS);
        let found = got
            .into_iter()
            .find(|d| matches!(d, Decided::Request { res, .. } if *res == server))
            .expect("the server span is decided");
        (found, b.stats())
    }

    /// The server's last write recorded 5 ms after the client's read of
    /// it returned (the writer preempted after waking the reader), and its
    /// first read 4 ms before the client's write: still one request.
    #[test]
    fn a_request_whose_ends_are_skewed_by_preemption_is_joined() {
        let (s0, stats) = on_one_connection(
            &[
                ("client", 10 * MS, 2 * MS, "c0"),
                ("server", 6 * MS, 11 * MS, "s0"),
            ],
            "s0",
        );
        assert!(matches!(s0, Decided::Request { how: How::Hop, .. }));
        assert_eq!((stats.hop_mismatch, stats.server_hop), (0, 1));
    }

    #[test]
    fn a_request_lost_on_one_side_is_not_joined_to_the_next_one() {
        // The client's first request was not seen by the server's side.
        let (s1, stats) = on_one_connection(
            &[
                ("client", 10 * MS, 2 * MS, "c0"),
                ("server", 21 * MS, MS, "s1"),
                ("client", 20 * MS, 3 * MS, "c1"),
            ],
            "s1",
        );
        assert!(matches!(
            s1,
            Decided::Request {
                parent: None,
                how: How::NewTrace,
                ..
            }
        ));
        assert_eq!((stats.hop_mismatch, stats.server_hop), (1, 0));
    }

    /// Two nodes' stages, as two agents of one hub session run them: the
    /// client (pid 2) on node A calls the server (pid 3) on node B twice on
    /// one connection, without context; a third request's server end is
    /// on B but its client's span never comes.
    #[test]
    fn a_hop_across_nodes_is_joined_by_the_client_span_the_hub_hands_on() {
        let cfg = Config {
            remote_hold_ns: 3_000 * MS,
            ..Config::default()
        };
        let mut a: Builder<&'static str> = Builder::new(cfg);
        let mut b: Builder<&'static str> = Builder::new(cfg);
        let now = 1_000 * MS;
        let (cli, srv) = (("10.0.1.2", 40000), ("10.0.2.3", 80));
        b.push(
            &http("server", 3, 3, 11 * MS, MS, srv, cli, None),
            || "s0",
            now,
        );
        a.push(
            &http("client", 2, 2, 10 * MS, 3 * MS, cli, srv, None),
            || "c0",
            now,
        );
        b.push(
            &http("server", 3, 3, 21 * MS, MS, srv, cli, None),
            || "s1",
            now,
        );
        a.push(
            &http("client", 2, 2, 20 * MS, 3 * MS, cli, srv, None),
            || "c1",
            now,
        );
        let other = ("10.0.1.9", 41000);
        b.push(
            &http("server", 3, 3, 31 * MS, MS, srv, other, None),
            || "s2",
            now,
        );
        // B's servers wait past the local hold for a CLIENT span from elsewhere.
        assert!(b.tick(now + 1_500 * MS).is_empty(), "nothing decided yet");
        // A's clients serve no request: their own traces, after the hold.
        let at_a = sort(a.tick(now + 1_500 * MS));
        assert_eq!(at_a.requests.len(), 2);
        let hops = a.take_hops();
        assert_eq!(hops.len(), 2, "{hops:?}");
        assert_eq!(hops[0].client, ("10.0.1.2".to_string(), 40000));
        assert_eq!(hops[0].server, ("10.0.2.3".to_string(), 80));
        assert_eq!((hops[0].order, hops[1].order), (0, 1));
        assert!(a.take_hops().is_empty(), "taken once");
        for h in hops {
            b.push_remote(h, now + 1_600 * MS);
        }
        let at_b = sort(b.tick(now + 1_700 * MS));
        for (c, s) in [("c0", "s0"), ("c1", "s1")] {
            let c = at_a.requests.iter().find(|r| r.0 == c).unwrap();
            let s = at_b.requests.iter().find(|r| r.0 == s).unwrap();
            assert_eq!(s.1.trace, c.1.trace, "{s:?} in {c:?}'s trace");
            assert_eq!((s.2, s.3), (Some(c.1.span), How::Hop), "{s:?}");
        }
        assert_eq!(at_b.requests.len(), 2, "s2 still waits");
        let st = b.stats();
        assert_eq!(
            (
                st.server_hop,
                st.server_hop_remote,
                st.hops_in,
                st.hop_mismatch
            ),
            (2, 2, 2, 0)
        );
        // s2's client never comes: it starts a trace when the longer hold ends.
        let late = sort(b.tick(now + 4_100 * MS));
        assert_eq!(late.requests.len(), 1);
        assert_eq!(
            (late.requests[0].2, late.requests[0].3),
            (None, How::NewTrace)
        );
        assert_eq!(a.stats().hops_out, 2);
        // A CLIENT span whose SERVER span is on its own node is not handed out.
        a.push(
            &http(
                "server",
                5,
                5,
                51 * MS,
                MS,
                ("10.0.1.5", 80),
                ("10.0.1.2", 40001),
                None,
            ),
            || "s5",
            now,
        );
        a.push(
            &http(
                "client",
                2,
                2,
                50 * MS,
                3 * MS,
                ("10.0.1.2", 40001),
                ("10.0.1.5", 80),
                None,
            ),
            || "c5",
            now,
        );
        a.tick(now + 5_000 * MS);
        assert!(a.take_hops().is_empty());
        // One whose times are not the server's request's is not joined (a
        // request one side did not see): counted.
        let mut c: Builder<&'static str> = Builder::new(cfg);
        c.push(
            &http("server", 3, 3, 900 * MS, MS, srv, cli, None),
            || "s9",
            now,
        );
        c.push_remote(
            Hop {
                client: ("10.0.1.2".into(), 40000),
                server: ("10.0.2.3".into(), 80),
                order: 0,
                start: 10 * MS,
                end: 13 * MS,
                ids: SpanIds::new([1; 16], [2; 8]),
                from_wire: false,
            },
            now,
        );
        let st = c.stats();
        assert_eq!(
            (st.hop_mismatch, st.hops_in_unmatched, st.server_hop),
            (1, 1, 0)
        );
    }

    fn retransmit(at: u64, local: (&str, u16), peer: (&str, u16)) -> Event {
        Event {
            timestamp: Timestamp(at),
            identity: Identity::default(),
            pid: 0,
            tid: 0,
            uid: 0,
            comm: String::new(),
            cgroup_id: 1,
            data: EventData::Tcp(podscope_model::TcpEvent {
                dialed_addr: Box::default(),
                dialed_port: 0,
                kind: TcpKind::Retransmit,
                role: String::new(),
                family: "ipv4".into(),
                saddr: local.0.into(),
                daddr: peer.0.into(),
                sport: local.1,
                dport: peer.1,
                state: "ESTABLISHED".into(),
                duration_ns: None,
                tx_bytes: None,
                rx_bytes: None,
                retransmits: None,
                error: None,
            }),
        }
    }

    /// Retransmits on a request's connection while it ran are counted on
    /// its span, whichever end's socket retransmitted; those before, after
    /// or on another connection are not.
    #[test]
    fn retransmits_during_a_request_are_counted_on_its_span() {
        let mut b: Builder<&'static str> = Builder::new(Config::default());
        let now = 1_000 * MS;
        let (cli, srv) = (("10.0.0.2", 40000), ("10.0.0.3", 80));
        for (at, local, peer) in [
            (5 * MS, cli, srv),               // before both
            (11 * MS, cli, srv), // the client's request segment, before the server read it
            (15 * MS, srv, cli), // during both
            (19 * MS, srv, cli), // the response, after the server's last write
            (15 * MS, cli, ("10.0.0.4", 80)), // another connection
            (30 * MS, cli, srv), // after both
        ] {
            b.push(&retransmit(at, local, peer), || "tcp", now);
        }
        b.push(
            &http("server", 3, 3, 12 * MS, 6 * MS, srv, cli, None),
            || "s",
            now,
        );
        b.push(
            &http("client", 2, 2, 10 * MS, 10 * MS, cli, srv, None),
            || "c",
            now,
        );
        let got = b.tick(now + 3_000 * MS);
        let count = |name: &str| {
            got.iter()
                .find_map(|d| match d {
                    Decided::Request {
                        res, retransmits, ..
                    } if *res == name => Some(*retransmits),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!((count("c"), count("s")), (3, 1));
    }
}
