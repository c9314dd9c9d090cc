//! One tracer per node, shared by every session: probes are loaded once, and
//! only those some session needs; the in-kernel cgroup filter is the union of
//! the sessions' pods; events are demultiplexed to sessions in user space.
//! A local `podscope trace` is a node with one session; the agent runs the
//! hub's sessions on one node the same way.
//!
//! Not `Send`: a node lives on one thread (the tracer's rings are read there).

use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use podscope_bpf::{CgroupWatch, Filter, ProbeStats, TraceOptions, Tracer};
use podscope_model::{Event, EventData, Implementation, ProbeKind};

use crate::enrich::{KernelFilter, PodIndex};
use crate::format::Sink;
use crate::select::PodSelection;
use crate::store::PodStore;

/// A session's key, chosen by the caller (unique among its running sessions).
pub type SessionId = u64;

/// What one session traces: a validated spec (the CLI's flags, the hub's
/// StartSession and the agent API's Trace all turn into this).
#[derive(Debug, Clone, Default)]
pub struct SessionSpec {
    /// Probes, in the order given.
    pub probes: Vec<ProbeKind>,
    /// Pods and containers; None traces host processes (local traces only).
    pub selection: Option<PodSelection>,
    /// Wait for pods that do not exist yet instead of failing.
    pub wait: bool,
    /// Stop after this many events.
    pub max_events: Option<u64>,
    /// Settings of the probes that take them (syscalls, tracepoint).
    pub hooks: Hooks,
}

/// A session's settings of the probes that take them. Sessions on one node
/// may differ: the kernel runs with what they need together (the union of
/// their syscalls and tracepoints; errors-only and a filter only when every
/// session has them) and each session gets only what its own settings
/// choose. Stream and summary mode of the syscalls probe are different
/// programs: a node runs one of them at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hooks {
    /// The syscalls probe's (`--syscall`, `--errors-only`, `--summary`).
    pub syscalls: podscope_bpf::SyscallOptions,
    /// The tracepoint probe's (`tp:SUBSYSTEM:EVENT`, `--filter`).
    pub tracepoints: podscope_bpf::TracepointOptions,
    /// Summary mode: how often this session gets the totals (no faster than
    /// the node's interval; None: every interval).
    pub summary_interval: Option<Duration>,
    /// The http probe's request events: headers and bodies kept
    /// (`--capture-headers`, `--capture-body`, `--redact-header`); user
    /// space only, so sessions may differ.
    pub capture: podscope_proto::Capture,
}

/// `tp:sched:sched_process_fork` and `sched:sched_process_fork` are one name.
fn tracepoint_name(n: &str) -> &str {
    let n = n.trim();
    n.strip_prefix("tp:")
        .or_else(|| n.strip_prefix("tracepoint:"))
        .unwrap_or(n)
}

/// What the kernel must run with for these sessions' hooks together.
fn union_hooks<'a>(
    all: impl Iterator<Item = (&'a [ProbeKind], &'a Hooks)> + Clone,
) -> (
    podscope_bpf::SyscallOptions,
    podscope_bpf::TracepointOptions,
) {
    let sys: Vec<&podscope_bpf::SyscallOptions> = all
        .clone()
        .filter(|(p, _)| p.contains(&ProbeKind::Syscalls))
        .map(|(_, h)| &h.syscalls)
        .collect();
    let mut syscalls = podscope_bpf::SyscallOptions::default();
    if !sys.is_empty() {
        syscalls.summary = sys[0].summary;
        syscalls.errors_only = sys.iter().all(|o| o.errors_only);
        if sys.iter().all(|o| !o.only.is_empty()) {
            for o in &sys {
                for nr in &o.only {
                    if !syscalls.only.contains(nr) {
                        syscalls.only.push(*nr);
                    }
                }
            }
        }
    }
    let tps: Vec<&podscope_bpf::TracepointOptions> = all
        .filter(|(p, _)| p.contains(&ProbeKind::Tracepoint))
        .map(|(_, h)| &h.tracepoints)
        .collect();
    let mut tracepoints = podscope_bpf::TracepointOptions::default();
    for o in &tps {
        for n in &o.names {
            let n = tracepoint_name(n);
            if !tracepoints.names.iter().any(|m| m == n) {
                tracepoints.names.push(n.to_string());
            }
        }
    }
    if let Some(first) = tps.first() {
        if tps.iter().all(|o| o.filter == first.filter) {
            tracepoints.filter = first.filter.clone();
        }
    }
    (syscalls, tracepoints)
}

/// How the node's tracer is set up; the same for every session on it.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name, written into every event.
    pub node: String,
    /// The CRI endpoint; found by itself when None.
    pub runtime_endpoint: Option<String>,
    /// Kernel ring buffer per probe; 0: sized from `ring_budget` per probe.
    pub ring_buffer_bytes: u32,
    /// With `ring_buffer_bytes` 0: how long each ring holds its probe's peak rate.
    pub ring_budget: Duration,
    /// How often aggregating probes report.
    pub interval: Duration,
    /// The host-level filter of a local trace (--pid, --cgroup, --comm, or
    /// nothing for --all). None: pod sessions, filtered by their pods'
    /// cgroups, with new pods admitted in the kernel at once (pending).
    pub host_filter: Option<Filter>,
    /// Force implementations (tests).
    pub implementations: Vec<(ProbeKind, String)>,
    /// Payload bytes the http and dns probes copy per message.
    pub http_capture_bytes: u32,
    /// How often sessions ask the pod store for a full listing (new pods are
    /// named without one, from the kernel's cgroup events).
    pub pod_refresh: Duration,
}

impl NodeConfig {
    fn pod_mode(&self) -> bool {
        self.host_filter.is_none()
    }
}

/// A session that started.
#[derive(Debug, Default)]
pub struct Started {
    /// Requested probes this kernel could not load, and why (the others run).
    pub failed: Vec<(ProbeKind, String)>,
    /// Warnings for the user (discovery fell back to /proc; waiting for pods).
    pub warnings: Vec<String>,
}

/// How a session ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// Events handed to the sink.
    pub written: u64,
    /// The session's share of the probes' counts (since it started).
    pub stats: Vec<ProbeStats>,
    /// How long it ran.
    pub elapsed: Duration,
    /// The sink's output was closed (a closed pipe): no summary was written.
    pub pipe_closed: bool,
    /// The sink failed otherwise.
    pub error: Option<String>,
    /// Events left out because the runtime had not named their pod in time.
    pub unnamed_dropped: u64,
    /// cgroup changes the kernel watcher could not report.
    pub watcher_lost: u64,
    /// The protocol stage's summary lines (http, dns), empty without them.
    pub protocol_summary: String,
}

struct Session {
    id: SessionId,
    probes: Vec<ProbeKind>,
    /// HTTPS plaintext is wanted (http, grpc or tls asked for); a session
    /// that has tls only for DNS over TLS (`dns`) does not get it.
    tls_requests: bool,
    index: PodIndex,
    /// Raw socket data in, one event per request out (http, dns): state per
    /// connection, so one per session (sessions see different pods).
    proto: podscope_proto::Stage,
    /// What NAT did to its client requests' peers ([`crate::dnat`]).
    nat: crate::dnat::DnatCounts,
    sink: Box<dyn Sink>,
    max_events: Option<u64>,
    written: u64,
    started: Instant,
    /// The probes' counts when the session started (or the probe loaded).
    baseline: HashMap<ProbeKind, ProbeStats>,
    lost_seen: HashMap<ProbeKind, u64>,
    /// No more events wanted (--max-events reached, or the sink closed).
    done: bool,
    pipe_closed: bool,
    error: Option<String>,
    /// Its probe settings, and what it keeps of their events.
    hooks: Hooks,
    /// Its tracepoints' names (SUBSYSTEM:EVENT) and filter, for the records
    /// the kernel passes for other sessions.
    tp_names: Vec<String>,
    tp_filter: podscope_bpf::tracepoint::filter::Expr,
    /// Summary mode: the totals when it started (the kernel's count from
    /// when the probe loaded), by (cgroup, syscall number).
    summary_base: HashMap<(u64, u32), podscope_model::SyscallSummaryEvent>,
    last_summary: Option<Instant>,
}

impl Session {
    /// Whether an event of a probe it wants is one its own settings keep
    /// (the kernel runs with every session's settings together).
    fn keeps(&self, e: &Event) -> bool {
        match &e.data {
            EventData::Syscall(c) => {
                let o = &self.hooks.syscalls;
                (o.only.is_empty() || o.only.contains(&c.nr))
                    && (!o.errors_only || c.errno.is_some())
            }
            EventData::SyscallSummary(t) => {
                let o = &self.hooks.syscalls;
                o.only.is_empty() || o.only.contains(&t.nr)
            }
            EventData::Tracepoint(t) => {
                self.tp_names.contains(&t.tracepoint)
                    && podscope_bpf::tracepoint::filter::matches(
                        &self.tp_filter,
                        &t.tracepoint,
                        &t.fields,
                    )
            }
            _ => true,
        }
    }

    /// Summary totals as this session counts them: since it started, and
    /// only every `summary_interval` (the totals are running sums, so a
    /// skipped report loses nothing). `finishing`: the last report, always.
    fn own_summaries(&mut self, events: &mut Vec<Event>, finishing: bool) {
        if !self.hooks.syscalls.summary
            || !events
                .iter()
                .any(|e| matches!(e.data, EventData::SyscallSummary(_)))
        {
            return;
        }
        let due = finishing
            || match (self.last_summary, self.hooks.summary_interval) {
                (Some(last), Some(every)) => {
                    // A report is due within half a node interval of its time.
                    last.elapsed() + Duration::from_millis(100) >= every
                }
                _ => true,
            };
        if due {
            self.last_summary = Some(Instant::now());
        }
        let elapsed = self.started.elapsed().as_nanos() as u64;
        let base = &self.summary_base;
        events.retain_mut(|e| {
            let cgroup = e.cgroup_id;
            let EventData::SyscallSummary(t) = &mut e.data else {
                return true;
            };
            if !due {
                return false;
            }
            if let Some(b) = base.get(&(cgroup, t.nr)) {
                t.calls = t.calls.saturating_sub(b.calls);
                t.errors = t.errors.saturating_sub(b.errors);
                t.total_ns = t.total_ns.saturating_sub(b.total_ns);
                for (i, h) in t.hist.iter_mut().enumerate() {
                    *h = h.saturating_sub(b.hist.get(i).copied().unwrap_or(0));
                }
                while t.hist.last() == Some(&0) {
                    t.hist.pop();
                }
                t.avg_ns = t.total_ns.checked_div(t.calls).unwrap_or(0);
                t.p99_ns = podscope_bpf::syscall_percentile(&t.hist, 0.99);
            }
            t.elapsed_ns = elapsed;
            t.calls > 0
        });
    }

    /// `p` is a kernel probe (events carry those): `grpc` wants `http`'s.
    fn wants(&self, p: ProbeKind) -> bool {
        (p != ProbeKind::Tls || self.tls_requests)
            && self.probes.iter().any(|q| q.kernel_probe() == p)
    }
}

/// The kernel probes a list of requested ones runs (`grpc` is `http`'s).
fn kernel_probes(probes: &[ProbeKind]) -> Vec<ProbeKind> {
    let mut k: Vec<ProbeKind> = Vec::new();
    for p in probes {
        if !k.contains(&p.kernel_probe()) {
            k.push(p.kernel_probe());
        }
    }
    k
}

/// Which sessions want each cgroup in the kernel filter. A cgroup stays in
/// the filter while a session claims it, or while a session has not yet
/// decided about a new pod the kernel admitted as pending.
#[derive(Debug, Default)]
struct Claims {
    claimed: HashMap<u64, HashSet<SessionId>>,
    undecided: HashMap<u64, HashSet<SessionId>>,
}

impl Claims {
    fn allow(&mut self, tracer: &Tracer, s: SessionId, id: u64) -> Result<(), podscope_bpf::Error> {
        if let Some(u) = self.undecided.get_mut(&id) {
            u.remove(&s);
            if u.is_empty() {
                self.undecided.remove(&id);
            }
        }
        let set = self.claimed.entry(id).or_default();
        let first = set.is_empty();
        set.insert(s);
        if first {
            tracer.allow_cgroup(id)?;
        }
        Ok(())
    }

    fn deny(&mut self, tracer: &Tracer, s: SessionId, id: u64) -> Result<(), podscope_bpf::Error> {
        if let Some(u) = self.undecided.get_mut(&id) {
            u.remove(&s);
            if u.is_empty() {
                self.undecided.remove(&id);
            }
        }
        if let Some(set) = self.claimed.get_mut(&id) {
            set.remove(&s);
            if set.is_empty() {
                self.claimed.remove(&id);
            }
        }
        if !self.claimed.contains_key(&id) && !self.undecided.contains_key(&id) {
            tracer.deny_cgroup(id)?;
        }
        Ok(())
    }

    /// Everything a session claimed or had not decided, released.
    fn release(&mut self, tracer: &Tracer, s: SessionId) {
        let ids: Vec<u64> = self
            .claimed
            .iter()
            .filter(|(_, v)| v.contains(&s))
            .chain(self.undecided.iter().filter(|(_, v)| v.contains(&s)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Err(e) = self.deny(tracer, s, id) {
                eprintln!("podscope: warning: {e}");
            }
        }
    }
}

/// A session's view of the kernel filter.
struct SessionFilter<'a> {
    tracer: &'a Tracer,
    claims: &'a std::cell::RefCell<Claims>,
    session: SessionId,
    /// Host-level traces do not change the filter from pod decisions.
    pod_mode: bool,
}

impl KernelFilter for SessionFilter<'_> {
    fn allow_cgroup(&self, id: u64) -> Result<(), podscope_bpf::Error> {
        if !self.pod_mode {
            return Ok(());
        }
        self.claims
            .borrow_mut()
            .allow(self.tracer, self.session, id)
    }
    fn deny_cgroup(&self, id: u64) -> Result<(), podscope_bpf::Error> {
        if !self.pod_mode {
            return Ok(());
        }
        self.claims.borrow_mut().deny(self.tracer, self.session, id)
    }
}

/// The node's tracer and its sessions.
pub struct Node {
    cfg: NodeConfig,
    store: PodStore,
    tracer: Option<Tracer>,
    sessions: Vec<Session>,
    claims: std::cell::RefCell<Claims>,
    batch: Vec<Event>,
    last_loss_check: Instant,
    /// Network namespace inode of each sandbox (or container) pid read so far.
    netns_of: HashMap<u32, u32>,
    /// The net probe's settings ([`Node::set_net`]).
    net: podscope_bpf::NetOptions,
    /// Where NAT sent the sessions' client connections (conntrack).
    dnat: crate::dnat::Dnat,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.cfg.node)
            .field("probes", &self.probes())
            .field(
                "sessions",
                &self.sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Node {
    /// A node with no session and nothing loaded.
    pub fn new(cfg: NodeConfig) -> Node {
        let store = PodStore::new(cfg.runtime_endpoint.clone());
        Node::with_store(cfg, store)
    }

    /// A node whose sessions share this pod store (the agent's reports use
    /// it too).
    pub fn with_store(cfg: NodeConfig, store: PodStore) -> Node {
        Node {
            cfg,
            store,
            tracer: None,
            sessions: Vec::new(),
            claims: Default::default(),
            batch: Vec::with_capacity(4096),
            last_loss_check: Instant::now(),
            netns_of: HashMap::new(),
            net: Default::default(),
            dnat: Default::default(),
        }
    }

    /// The net probe's per-packet switch and `--flow` filter (node-wide:
    /// the last session's settings win).
    pub fn set_net(&mut self, opts: podscope_bpf::NetOptions) {
        self.net = opts;
    }

    /// The probes loaded now.
    pub fn probes(&self) -> Vec<ProbeKind> {
        self.tracer.as_ref().map(Tracer::probes).unwrap_or_default()
    }

    /// The implementation each loaded probe uses.
    pub fn implementations(&self) -> Vec<(ProbeKind, &'static Implementation)> {
        self.tracer
            .as_ref()
            .map(Tracer::implementations)
            .unwrap_or_default()
    }

    /// How long loading the first probes took.
    pub fn attach_time(&self) -> Duration {
        self.tracer
            .as_ref()
            .map(Tracer::attach_time)
            .unwrap_or_default()
    }

    /// The probes' counts since they loaded.
    pub fn stats(&self) -> Vec<ProbeStats> {
        self.tracer.as_ref().map(Tracer::stats).unwrap_or_default()
    }

    /// The running sessions.
    pub fn sessions(&self) -> Vec<SessionId> {
        self.sessions.iter().map(|s| s.id).collect()
    }

    /// cgroup ids in the kernel filter on behalf of the sessions (tests and
    /// `docs/cluster.md`'s accounting).
    pub fn filtered_cgroups(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.claims.borrow().claimed.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Whether a session wants no more events (its limit, or its sink closed).
    pub fn is_done(&self, id: SessionId) -> bool {
        self.sessions.iter().any(|s| s.id == id && s.done)
    }

    /// Sessions that want no more events.
    pub fn done(&self) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|s| s.done)
            .map(|s| s.id)
            .collect()
    }

    /// Starts a session: finds its pods, loads the probes it needs that are
    /// not loaded yet, adds its pods to the kernel filter. A selection that
    /// matches nothing is an error unless the spec waits.
    pub fn start(
        &mut self,
        id: SessionId,
        spec: SessionSpec,
        sink: Box<dyn Sink>,
    ) -> Result<Started> {
        if self.sessions.iter().any(|s| s.id == id) {
            anyhow::bail!("session {id} is already running on this node");
        }
        if spec.probes.is_empty() {
            anyhow::bail!("no probes selected");
        }
        // `http` brings `tls` along (HTTPS requests are HTTP requests too),
        // and so does `dns` (DNS over TLS), which wants only that of it.
        let mut spec = spec;
        let tls_requests = spec
            .probes
            .iter()
            .any(|p| matches!(p, ProbeKind::Http | ProbeKind::Grpc | ProbeKind::Tls));
        spec.probes = ProbeKind::with_implied(&spec.probes);
        if self.cfg.pod_mode() && spec.selection.is_none() {
            anyhow::bail!("a session on a shared node tracer needs a pod selection");
        }
        // Hook settings: checked before anything changes on the node.
        let wants_sys = spec.probes.contains(&ProbeKind::Syscalls);
        if wants_sys {
            if let Some(other) = self.sessions.iter().find(|s| {
                s.probes.contains(&ProbeKind::Syscalls)
                    && s.hooks.syscalls.summary != spec.hooks.syscalls.summary
            }) {
                let mode = |summary: bool| if summary { "summary" } else { "stream" };
                anyhow::bail!(
                    "the syscalls probe on node {} runs in {} mode for session {}; a {} session                      can start when that one ends (a node runs one syscalls mode at a time:                      stream and summary are different kernel programs)",
                    self.cfg.node,
                    mode(!spec.hooks.syscalls.summary),
                    other.id,
                    mode(spec.hooks.syscalls.summary),
                );
            }
        }
        let wants_tp = spec.probes.contains(&ProbeKind::Tracepoint);
        let mut tp_names = Vec::new();
        let mut tp_filter = podscope_bpf::tracepoint::filter::Expr::default();
        if wants_tp {
            if spec.hooks.tracepoints.names.is_empty() {
                anyhow::bail!("the tracepoint probe needs tracepoints: tp:SUBSYSTEM:EVENT");
            }
            // Unknown tracepoints and filter fields fail here, with close matches.
            podscope_bpf::tracepoint::resolve(&spec.hooks.tracepoints)?;
            tp_names = spec
                .hooks
                .tracepoints
                .names
                .iter()
                .map(|n| tracepoint_name(n).to_string())
                .collect();
            if let Some(f) = &spec.hooks.tracepoints.filter {
                tp_filter =
                    podscope_bpf::tracepoint::filter::parse(f).map_err(|e| anyhow::anyhow!(e))?;
            }
        }
        let (hook_sys, hook_tp) = union_hooks(
            self.sessions
                .iter()
                .map(|s| (&s.probes[..], &s.hooks))
                .chain(std::iter::once((&spec.probes[..], &spec.hooks))),
        );
        let mut started = Started::default();
        let (index, discovery) = PodIndex::new(
            self.store.clone(),
            spec.selection.clone(),
            self.cfg.node.clone(),
            self.cfg.pod_refresh,
        )
        .context("finding the node's pods")?;
        if let Some(sel) = &spec.selection {
            if let Some(w) = &index.warning {
                started.warnings.push(w.clone());
            }
            // A pod that matches with no container that does (--container) is no match either.
            if index.selected_pods() == 0 || sel.select(&discovery.pods).is_empty() {
                if !spec.wait {
                    return Err(sel.no_match(&discovery))
                        .context("nothing to trace (add --wait to wait for matching pods)");
                }
                started.warnings.push(format!(
                    "no {} yet; waiting for one to start (--wait)",
                    sel.describe()
                ));
            }
        }

        // Load what is missing.
        match &mut self.tracer {
            None => {
                let parents = index
                    .watch_parents()
                    .iter()
                    .filter_map(cgroup_ino)
                    .collect();
                let mut filter = self.cfg.host_filter.clone().unwrap_or(Filter {
                    cgroups: Some(Vec::new()),
                    ..Filter::default()
                });
                if spec.selection.is_some() && filter.cgroups.is_none() {
                    // A local pod trace: the pods' cgroups only.
                    filter.cgroups = Some(Vec::new());
                }
                let admit = spec.selection.is_some();
                let opts = TraceOptions {
                    probes: kernel_probes(&spec.probes),
                    filter,
                    ring_buffer_bytes: self.cfg.ring_buffer_bytes,
                    ring_budget: self.cfg.ring_budget,
                    queue_bytes: podscope_bpf::DEFAULT_QUEUE_BYTES,
                    wakeup_bytes: None,
                    interval: self.cfg.interval,
                    exclude_self: true,
                    watch_cgroups: Some(CgroupWatch {
                        admit_new_pods: admit,
                        parents,
                    }),
                    implementations: self.cfg.implementations.clone(),
                    http_capture_bytes: self.cfg.http_capture_bytes,
                    syscalls: hook_sys,
                    tracepoints: hook_tp,
                };
                let tracer = Tracer::new(&opts)?;
                started.failed = tracer
                    .failed()
                    .iter()
                    .map(|f| (f.probe, f.error.to_string()))
                    .collect();
                self.tracer = Some(tracer);
            }
            Some(t) => {
                // Widened for this session while the probes run; probes
                // loaded below take these settings too.
                let refused = t.set_hook_options(&hook_sys, &hook_tp)?;
                if !refused.is_empty() {
                    anyhow::bail!(
                        "the probes {refused:?} cannot change their settings while they run"
                    );
                }
                let missing: Vec<ProbeKind> = kernel_probes(&spec.probes)
                    .into_iter()
                    .filter(|p| !t.probes().contains(p))
                    .collect();
                if !missing.is_empty() {
                    started.failed = t
                        .add_probes(&missing)?
                        .into_iter()
                        .map(|f| (f.probe, f.error.to_string()))
                        .collect();
                }
            }
        }
        let tracer = self.tracer.as_ref().expect("loaded above");
        let loaded = tracer.probes();
        let probes: Vec<ProbeKind> = spec
            .probes
            .iter()
            .copied()
            .filter(|p| loaded.contains(&p.kernel_probe()))
            .collect();
        if probes.is_empty() {
            let why: Vec<String> = started
                .failed
                .iter()
                .map(|(p, e)| format!("{p}: {e}"))
                .collect();
            self.unload_unused();
            self.narrow_hooks();
            anyhow::bail!("none of the probes could be loaded: {}", why.join("; "));
        }
        let baseline = tracer
            .stats()
            .into_iter()
            .filter(|s| probes.iter().any(|p| p.kernel_probe() == s.probe))
            .map(|s| (s.probe, s))
            .collect();
        if spec.selection.is_some() {
            let f = SessionFilter {
                tracer,
                claims: &self.claims,
                session: id,
                pod_mode: true,
            };
            for cg in index.selected_cgroups() {
                f.allow_cgroup(cg)?;
            }
        }
        let mut proto = podscope_proto::Stage::new();
        proto
            .set_grpc_only(probes.contains(&ProbeKind::Grpc) && !probes.contains(&ProbeKind::Http));
        proto.set_capture(spec.hooks.capture.clone());
        // Summary totals count from when the probe loaded: a session joining
        // a running summary probe starts from what it has counted so far.
        let mut summary_base = HashMap::new();
        if wants_sys && spec.hooks.syscalls.summary {
            if let Some(t) = self.tracer.as_mut() {
                for e in t.peek_totals(ProbeKind::Syscalls)? {
                    if let EventData::SyscallSummary(x) = e.data {
                        summary_base.insert((e.cgroup_id, x.nr), x);
                    }
                }
            }
        }
        self.sessions.push(Session {
            id,
            probes,
            tls_requests,
            index,
            proto,
            nat: Default::default(),
            sink,
            max_events: spec.max_events,
            written: 0,
            started: Instant::now(),
            baseline,
            lost_seen: HashMap::new(),
            done: spec.max_events == Some(0),
            pipe_closed: false,
            error: None,
            hooks: spec.hooks,
            tp_names,
            tp_filter,
            summary_base,
            last_summary: None,
        });
        self.sync_pod_nets();
        if let Some(t) = self.tracer.as_mut() {
            t.set_net_options(&self.net)?;
        }
        // Probes that attach to the selected processes' libraries (tls) look
        // at the processes already running before the session is reported
        // as started.
        if let Some(t) = self.tracer.as_mut() {
            t.rescan();
        }
        Ok(started)
    }

    /// Waits up to `timeout` for events and hands them to the sessions.
    pub fn step(&mut self, timeout: Duration) -> Result<()> {
        let Some(tracer) = self.tracer.as_mut() else {
            std::thread::sleep(timeout);
            return Ok(());
        };
        tracer.poll(timeout, &mut self.batch)?;
        self.route(false);
        if self.last_loss_check.elapsed() >= Duration::from_secs(1) {
            self.last_loss_check = Instant::now();
            self.report_losses();
            self.sync_pod_nets();
            for pos in 0..self.sessions.len() {
                let stats = self.session_stats(pos);
                let s = &mut self.sessions[pos];
                if !s.done {
                    if let Err(e) = s.sink.stats(&stats) {
                        fail(s, e);
                    }
                }
            }
        }
        for s in &mut self.sessions {
            if s.done {
                continue;
            }
            if let Err(e) = s.sink.flush() {
                fail(s, e);
            }
        }
        Ok(())
    }

    /// New and removed cgroups to every session, then each event to the
    /// sessions that want it.
    fn route(&mut self, finishing: bool) {
        let Some(tracer) = self.tracer.as_mut() else {
            return;
        };
        let changes = tracer.take_cgroup_changes();
        let tracer = self.tracer.as_ref().expect("checked");
        let selecting: HashSet<SessionId> = self
            .sessions
            .iter()
            .filter(|s| s.index_selects())
            .map(|s| s.id)
            .collect();
        if !selecting.is_empty() {
            let all = selecting;
            let mut claims = self.claims.borrow_mut();
            for ch in changes.iter().filter(|c| c.created && c.admitted) {
                claims.undecided.insert(ch.id, all.clone());
            }
        }
        let mut batch = std::mem::take(&mut self.batch);
        let n = self.sessions.len();
        for (i, s) in self.sessions.iter_mut().enumerate() {
            let f = SessionFilter {
                tracer,
                claims: &self.claims,
                session: s.id,
                pod_mode: s.index_selects(),
            };
            s.index.on_cgroup_changes(&changes, &f);
            if !finishing {
                s.index.tick(&f);
            }
            if s.done {
                continue;
            }
            // Demultiplexed by pod before enrichment: events of pods this
            // session does not select are not even copied for it.
            let wanted =
                |e: &Event| s.wants(e.probe()) && !s.index.rejects(e.cgroup_id) && s.keeps(e);
            let mut mine: Vec<Event> = if i + 1 == n {
                let mut b = std::mem::take(&mut batch);
                b.retain(wanted);
                b
            } else {
                batch.iter().filter(|e| wanted(e)).cloned().collect()
            };
            s.own_summaries(&mut mine, finishing);
            let mut out = s.proto.process(s.index.process(mine));
            s.nat
                .add(self.dnat.translate(&mut out, |a| s.index.is_local(a)));
            s.index.name_peers(&mut out);
            deliver(s, out);
        }
        batch.clear();
        self.batch = batch;
    }

    /// Hands the sessions' pods' network namespaces and addresses to the
    /// drop probe (which finds a packet's pod by them where the packet has
    /// no socket). Once a second: a pod's drops in its first second are
    /// seen only where its socket names it.
    fn sync_pod_nets(&mut self) {
        let Some(tracer) = self.tracer.as_mut() else {
            return;
        };
        if !tracer
            .probes()
            .iter()
            .any(|p| matches!(p, ProbeKind::Drop | ProbeKind::Net))
        {
            return;
        }
        // A --cgroup trace: only its processes' sockets (the maps stay empty).
        let by_cgroup = self
            .cfg
            .host_filter
            .as_ref()
            .is_some_and(|f| f.cgroups.is_some());
        let host_ns = netns_inode("self");
        let mut nets: Vec<podscope_bpf::PodNet> = Vec::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut live_pids: HashSet<u32> = HashSet::new();
        for s in self.sessions.iter().filter(|_| !by_cgroup) {
            for pod in s.index.selected_pod_list() {
                let Some(cg) = pod
                    .cgroup_id
                    .or_else(|| pod.containers.iter().find_map(|c| c.cgroup_id))
                else {
                    continue;
                };
                if !seen.insert(cg) {
                    continue;
                }
                // The sandbox's netns, else a container's (they share it;
                // a listing made as the pod starts may not have the pause
                // pid yet). Only inodes read are remembered: a pid not yet
                // readable is asked again next time.
                let pids = pod
                    .sandbox_pid
                    .into_iter()
                    .chain(pod.containers.iter().filter_map(|c| c.pid));
                let mut netns = None;
                for pid in pids {
                    live_pids.insert(pid);
                    if let Some(ns) = self.netns_of.get(&pid) {
                        netns = Some(*ns);
                        break;
                    }
                    if let Some(ns) = netns_inode(&pid.to_string()) {
                        self.netns_of.insert(pid, ns);
                        netns = Some(ns);
                        break;
                    }
                }
                // A host-network pod shares the host's netns and address.
                if netns.is_some() && netns == host_ns {
                    continue;
                }
                nets.push(podscope_bpf::PodNet {
                    cgroup_id: cg,
                    netns,
                    addrs: pod.ip.iter().filter_map(|a| a.parse().ok()).collect(),
                });
            }
        }
        self.netns_of.retain(|pid, _| live_pids.contains(pid));
        if let Err(e) = tracer.set_pod_nets(&nets) {
            eprintln!("podscope: warning: {e}");
        }
    }

    fn report_losses(&mut self) {
        let Some(tracer) = &self.tracer else { return };
        let stats = tracer.stats();
        for s in &mut self.sessions {
            if s.pipe_closed {
                continue;
            }
            for st in &stats {
                if !s.wants(st.probe) {
                    continue;
                }
                let base = s.baseline.get(&st.probe).map_or(0, |b| b.total_lost());
                let total = st.total_lost().saturating_sub(base);
                let seen = s.lost_seen.entry(st.probe).or_default();
                if total > *seen {
                    let delta = total - *seen;
                    *seen = total;
                    if let Err(e) = s.sink.lost(st.probe, delta, total) {
                        fail(s, e);
                        break;
                    }
                }
            }
        }
    }

    /// Ends a session: what the kernel already handed over is delivered
    /// first (never dropped), then its losses and summary go to its sink.
    /// Its pods leave the kernel filter unless another session has them;
    /// probes no other session needs are unloaded.
    pub fn finish(&mut self, id: SessionId) -> Result<Ended> {
        let Some(pos) = self.sessions.iter().position(|s| s.id == id) else {
            anyhow::bail!("no session {id} on this node");
        };
        if let Some(t) = self.tracer.as_mut() {
            t.flush(&mut self.batch)?;
        }
        self.route(true);
        {
            let tracer = self.tracer.as_ref();
            let s = &mut self.sessions[pos];
            if !s.done {
                if let Some(tracer) = tracer {
                    let f = SessionFilter {
                        tracer,
                        claims: &self.claims,
                        session: s.id,
                        pod_mode: s.index_selects(),
                    };
                    if s.index.held() > 0 {
                        s.index.refresh(&f);
                    }
                }
                let mut events = s.index.process(Vec::new());
                events.extend(s.index.release_held());
                let mut events = s.proto.process(events);
                events.extend(s.proto.finish());
                s.nat
                    .add(self.dnat.translate(&mut events, |a| s.index.is_local(a)));
                s.index.name_peers(&mut events);
                deliver(s, events);
            }
        }
        self.report_losses();
        let stats = self.session_stats(pos);
        let watcher_lost = self.tracer.as_ref().map_or(0, Tracer::watcher_lost);
        let protocol_summary = match &self.tracer {
            Some(t) => {
                let s = &self.sessions[pos];
                let counters = t.counters();
                let mut text = s.proto.summary_text(&s.probes, &counters);
                if s.probes.contains(&ProbeKind::Tracepoint) {
                    text.push_str(&tracepoint_summary(&counters));
                }
                if s.probes.contains(&ProbeKind::Net) {
                    text.push_str(&net_summary(&counters));
                }
                text.push_str(&s.nat.summary_text());
                text
            }
            None => String::new(),
        };
        let mut s = self.sessions.remove(pos);
        let elapsed = s.started.elapsed();
        if !s.pipe_closed && s.error.is_none() {
            if let Err(e) = s
                .sink
                .summary(elapsed.as_nanos() as u64, &stats)
                .and_then(|_| s.sink.flush())
            {
                fail(&mut s, e);
            }
        }
        if let Some(t) = &self.tracer {
            self.claims.borrow_mut().release(t, s.id);
        }
        self.unload_unused();
        self.narrow_hooks();
        Ok(Ended {
            written: s.written,
            stats,
            elapsed,
            pipe_closed: s.pipe_closed,
            error: s.error,
            unnamed_dropped: s.index.unnamed_dropped,
            watcher_lost,
            protocol_summary,
        })
    }

    /// The session's share: each probe's counts since the session started.
    fn session_stats(&self, pos: usize) -> Vec<ProbeStats> {
        let s = &self.sessions[pos];
        let Some(t) = &self.tracer else {
            return Vec::new();
        };
        let now = t.stats();
        kernel_probes(&s.probes)
            .iter()
            .filter_map(|p| now.iter().find(|st| st.probe == *p))
            .map(|st| {
                let b = s.baseline.get(&st.probe);
                let sub = |f: fn(&ProbeStats) -> u64| f(st).saturating_sub(b.map_or(0, f));
                ProbeStats {
                    probe: st.probe,
                    events: sub(|x| x.events),
                    lost: sub(|x| x.lost),
                    map_full: sub(|x| x.map_full),
                    decode_errors: sub(|x| x.decode_errors),
                    queue_full: sub(|x| x.queue_full),
                }
            })
            .collect()
    }

    /// The kernel's hook settings back to what the sessions left need (a
    /// session's end narrows them, as it narrows the pod filter).
    fn narrow_hooks(&mut self) {
        let (sys, tp) = union_hooks(self.sessions.iter().map(|s| (&s.probes[..], &s.hooks)));
        if let Some(t) = self.tracer.as_mut() {
            if let Err(e) = t.set_hook_options(&sys, &tp) {
                eprintln!("podscope: warning: narrowing the probes' settings: {e}");
            }
        }
    }

    /// Unloads probes no session needs; everything when no session is left.
    fn unload_unused(&mut self) {
        if self.sessions.is_empty() {
            self.tracer = None;
            *self.claims.borrow_mut() = Claims::default();
            return;
        }
        let Some(t) = self.tracer.as_mut() else {
            return;
        };
        let unused: Vec<ProbeKind> = t
            .probes()
            .into_iter()
            .filter(|p| !self.sessions.iter().any(|s| s.wants(*p)))
            .collect();
        if !unused.is_empty() {
            if let Err(e) = t.remove_probes(&unused) {
                eprintln!("podscope: warning: unloading {unused:?}: {e}");
            }
        }
    }
}

impl Session {
    /// A pod-selecting session (its decisions change the kernel filter).
    fn index_selects(&self) -> bool {
        self.index.has_selection()
    }
}

fn fail(s: &mut Session, e: io::Error) {
    s.done = true;
    if e.kind() == ErrorKind::BrokenPipe {
        s.pipe_closed = true;
    } else if s.error.is_none() {
        s.error = Some(format!("writing events: {e}"));
    }
}

fn deliver(s: &mut Session, events: Vec<Event>) {
    for ev in events {
        if s.done {
            return;
        }
        if s.max_events.is_some_and(|m| s.written >= m) {
            s.done = true;
            return;
        }
        if let Err(e) = s.sink.event(&ev) {
            fail(s, e);
            return;
        }
        s.written += 1;
        if s.max_events.is_some_and(|m| s.written >= m) {
            s.done = true;
        }
    }
}

/// The inode of a process's network namespace (what the kernel's
/// `net->ns.inum` holds), or None if it cannot be read.
fn netns_inode(pid: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino() as u32)
}

fn cgroup_ino(p: &PathBuf) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// The tracepoint probe's kernel counters at the end of a trace: how many
/// records passed the pod filter and how many of those `--filter` cut in
/// the kernel (never copied to user space).
pub fn tracepoint_summary(counters: &[(ProbeKind, &str, u64)]) -> String {
    let get = |name: &str| {
        counters
            .iter()
            .find(|(p, n, _)| *p == ProbeKind::Tracepoint && *n == name)
            .map_or(0, |c| c.2)
    };
    let seen = get("tracepoint_seen");
    let filtered = get("tracepoint_filtered");
    format!(
        "podscope: tracepoint: {seen} records passed the pod filter, {filtered} of them cut by --filter in the kernel, {} sent to user space; {} records longer than {} bytes were cut\n",
        seen.saturating_sub(filtered),
        get("tracepoint_truncated"),
        podscope_bpf::tracepoint::DATA_MAX
    )
}

/// The net probe's kernel counters at the end of a trace.
pub fn net_summary(counters: &[(ProbeKind, &str, u64)]) -> String {
    let get = |name: &str| {
        counters
            .iter()
            .find(|(p, n, _)| *p == ProbeKind::Net && *n == name)
            .map_or(0, |c| c.2)
    };
    format!(
        "podscope: net: {} packets followed, {} of the selected pods' packets left out by --flow in the kernel, {} dropped; {} skb addresses seen again as new packets, {} flows not counted (flow map full)\n",
        get("net_packets"),
        get("net_filtered_in_kernel"),
        get("net_drops"),
        get("net_skb_reused"),
        get("net_flows_full"),
    )
}

/// A ring buffer size as given on the command line: bytes, or K/M/G
/// suffixes; a power of two between 4 KiB and 1 GiB; or `auto` (0: sized
/// per probe from the ring budget).
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Ok(0);
    }
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => {
            let mult = match t[i..].to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => 1u64 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                other => return Err(format!("unknown size suffix '{other}'; use K, M or G")),
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size; use e.g. 4096, 256K, 1M"))?;
    let bytes = n * mult;
    if bytes < 4096 || !bytes.is_power_of_two() || bytes > (1 << 30) {
        return Err(format!(
            "ring buffer size {bytes} must be a power of two between 4K and 1G (e.g. 256K, 1M, 8M)"
        ));
    }
    Ok(bytes as u32)
}
