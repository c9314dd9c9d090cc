//! `podscope top`: every selected pod's CPU, memory and probe activity,
//! refreshed live in the terminal (ratatui), or as JSON snapshots.
//!
//! Threads: the probes run on this (main) thread, exactly as `podscope trace`
//! runs them (one node tracer, one session). The view runs on a thread of its
//! own and only reads: each interval it samples the exporter's per-pod
//! counters ([`podscope_export::Metrics::snapshot`], the same series
//! `--metrics-listen` serves) and turns two samples into rates. A slow
//! terminal therefore never holds up the probes; the one thing the event
//! path does for the view is copy the opened pod's events into a bounded
//! queue (oldest dropped, counted).

mod model;
mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podscope_bpf::ProbeStats;
use podscope_cluster::proto::{record::Kind, ControlRecord};
use podscope_cluster::records::Received;
use podscope_model::{Event, EventData, ProbeKind, TcpKind};
use podscope_pipeline::sinks::Observed;
use podscope_pipeline::store::PodStore;
use podscope_pipeline::{Node, NodeConfig, PodSelection, SessionSpec, Sink};
use podscope_runtime::Pod;
use serde::Serialize;

use crate::cli::{TopArgs, TopFormat};

pub use model::{Col, Row};

const ID: podscope_pipeline::SessionId = 1;
const POLL: Duration = Duration::from_millis(20);
/// Lines of the opened pod's event stream kept for scrolling back.
const STREAM_LINES: usize = 2000;
/// Peers remembered for the opened pod's top talkers.
const MAX_TALKERS: usize = 256;

/// What the event path shares with the view.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set by either side to end top (shared with a session through the hub).
    pub stop: Arc<AtomicBool>,
    /// Whether a pod is opened (checked before taking the lock).
    focused: AtomicBool,
    focus: Mutex<Focus>,
    /// Lost events per probe (totals), as the probes report them.
    losses: Mutex<BTreeMap<ProbeKind, u64>>,
    /// The probes' counts, about once a second.
    stats: Mutex<Vec<ProbeStats>>,
    /// Through the hub: events its queues could not pass on (gap records).
    pub gaps: std::sync::atomic::AtomicU64,
    /// Through the hub: events of a probe this client does not know.
    pub unknown: std::sync::atomic::AtomicU64,
}

/// The opened pod: its recent events and who it talks to.
#[derive(Debug, Default)]
pub struct Focus {
    /// (namespace, pod).
    pub pod: Option<(String, String)>,
    pub lines: VecDeque<String>,
    /// Lines pushed out of `lines` by newer ones.
    pub evicted: u64,
    /// Peer (pod as ns/name, else address) -> (bytes, requests).
    pub talkers: HashMap<String, (u64, u64)>,
    /// Peers not remembered because the table was full.
    pub talkers_dropped: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Opens `pod` (or closes the pod view with None): its stream starts empty.
    pub fn open(&self, pod: Option<(String, String)>) {
        let mut f = lock(&self.focus);
        *f = Focus {
            pod,
            ..Focus::default()
        };
        self.focused.store(f.pod.is_some(), Ordering::Release);
    }

    /// Runs `f` on the opened pod's state.
    pub fn with_focus<R>(&self, f: impl FnOnce(&Focus) -> R) -> R {
        f(&lock(&self.focus))
    }

    pub fn losses(&self) -> BTreeMap<ProbeKind, u64> {
        lock(&self.losses).clone()
    }

    pub fn stats(&self) -> Vec<ProbeStats> {
        lock(&self.stats).clone()
    }
}

/// The session's sink: hands the opened pod's events to the view.
struct TopSink {
    shared: Arc<Shared>,
}

impl Sink for TopSink {
    fn event(&mut self, ev: &Event) -> std::io::Result<()> {
        if !self.shared.focused.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut f = lock(&self.shared.focus);
        let ours = f
            .pod
            .as_ref()
            .is_some_and(|(ns, pod)| *ns == ev.identity.namespace && *pod == ev.identity.pod);
        if !ours {
            return Ok(());
        }
        if f.lines.len() >= STREAM_LINES {
            f.lines.pop_front();
            f.evicted += 1;
        }
        f.lines
            .push_back(podscope_pipeline::format::event_line(ev, false));
        let talk = match &ev.data {
            EventData::Tcp(t) if t.kind == TcpKind::Close => Some((
                t.daddr.clone(),
                t.tx_bytes.unwrap_or(0) + t.rx_bytes.unwrap_or(0),
                0,
            )),
            EventData::Http(h) if h.kind == "request" => {
                let peer = if h.peer_pod.is_empty() {
                    h.daddr.clone()
                } else {
                    format!("{}/{}", h.peer_namespace, h.peer_pod)
                };
                Some((peer, 0, 1))
            }
            _ => None,
        };
        if let Some((peer, bytes, reqs)) = talk {
            let full = f.talkers.len() >= MAX_TALKERS && !f.talkers.contains_key(&peer);
            if full {
                f.talkers_dropped += 1;
            } else {
                let e = f.talkers.entry(peer).or_default();
                e.0 += bytes;
                e.1 += reqs;
            }
        }
        Ok(())
    }
    fn lost(&mut self, probe: ProbeKind, _delta: u64, total: u64) -> std::io::Result<()> {
        lock(&self.shared.losses).insert(probe, total);
        Ok(())
    }
    fn summary(&mut self, _elapsed_ns: u64, _stats: &[ProbeStats]) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn stats(&mut self, stats: &[ProbeStats]) -> std::io::Result<()> {
        *lock(&self.shared.stats) = stats.to_vec();
        Ok(())
    }
}

/// Where the pods come from: this node's runtime, or the hub.
pub enum PodSource {
    Local {
        store: PodStore,
        selection: PodSelection,
        last_version: u64,
    },
    Hub {
        target: podscope_cluster::client::HubTarget,
        pods: podscope_cluster::client::RemotePods,
        last: Option<Instant>,
    },
}

/// What the view thread needs.
pub struct Source {
    pub metrics: Arc<podscope_export::Metrics>,
    pub from: PodSource,
    pub shared: Arc<Shared>,
    pub node: String,
    pub probes: String,
    pub interval: Duration,
    /// Probes that could not load, and why (shown in the header).
    pub failed: Vec<(ProbeKind, String)>,
    pods: Vec<Pod>,
    /// Every pod known (selected or not), to name peers by address.
    known: Vec<Pod>,
    /// (namespace, pod) -> node, through the hub.
    pub nodes: Option<HashMap<(String, String), String>>,
    /// Through the hub: each container's CPU and memory as its node last
    /// reported them.
    pub usage: model::Usage,
    /// Why the last pod listing failed, if it did.
    pub listing_error: Option<String>,
}

/// One sample of every selected pod, and when it was taken.
pub struct Sampled {
    pub at: Instant,
    pub samples: model::Samples,
}

impl Source {
    /// The selected pods now (the node's pod store's latest listing, or
    /// through the hub its listing every 2 s); the exporter follows them for
    /// CPU and memory.
    pub fn pods(&mut self) -> &[Pod] {
        match &mut self.from {
            PodSource::Local {
                store,
                selection,
                last_version,
            } => {
                // The node's sessions list the pods already (every
                // REFRESH_PERIOD, and at once for a new cgroup): the view
                // reads their latest listing and lists only when none exists.
                let snap = match store.latest() {
                    Some(s) => s,
                    None => store.refresh_now(),
                };
                if snap.version != *last_version {
                    *last_version = snap.version;
                    match &snap.discovery {
                        Ok(d) => {
                            self.pods = selection.select(&d.pods);
                            self.known = d.pods.clone();
                            self.metrics.set_pods(&self.pods);
                            self.listing_error = None;
                        }
                        Err(e) => self.listing_error = Some(e.clone()),
                    }
                }
            }
            PodSource::Hub { target, pods, last } => {
                if last.is_none_or(|l| l.elapsed() >= Duration::from_secs(2)) {
                    *last = Some(Instant::now());
                    // Another node's cgroups are not here: CPU and memory
                    // come from the nodes' reports (the exporter is not told
                    // of the pods).
                    match podscope_cluster::client::pods(target, pods, true) {
                        Ok(list) => {
                            self.usage = list
                                .iter()
                                .flat_map(|p| {
                                    p.usage.iter().flatten().map(|u| {
                                        (
                                            (
                                                p.pod.namespace.clone(),
                                                p.pod.name.clone(),
                                                u.container.clone(),
                                            ),
                                            (u.cpu_percent, u.memory_bytes),
                                        )
                                    })
                                })
                                .collect();
                            self.nodes = Some(
                                list.iter()
                                    .map(|p| {
                                        (
                                            (p.pod.namespace.clone(), p.pod.name.clone()),
                                            p.node.clone(),
                                        )
                                    })
                                    .collect(),
                            );
                            self.pods = list.into_iter().map(|p| p.pod).collect();
                            self.known = self.pods.clone();
                            self.listing_error = None;
                        }
                        Err(e) => self.listing_error = Some(format!("{e:#}")),
                    }
                }
            }
        }
        &self.pods
    }

    /// Through the hub.
    pub fn is_remote(&self) -> bool {
        matches!(self.from, PodSource::Hub { .. })
    }

    /// Pod IP -> ns/name.
    pub fn pod_ips(&self) -> HashMap<String, String> {
        self.known
            .iter()
            .filter_map(|p| {
                p.ip.clone()
                    .map(|ip| (ip, format!("{}/{}", p.namespace, p.name)))
            })
            .collect()
    }

    pub fn sample(&self) -> Sampled {
        Sampled {
            at: Instant::now(),
            samples: model::index(self.metrics.snapshot()),
        }
    }
}

/// A table as `--once -o json` and `-o json` print it.
#[derive(Debug, Serialize)]
pub struct Snapshot<'a> {
    pub node: &'a str,
    /// Seconds the rates are over.
    pub interval_s: f64,
    /// Seconds since top started (the totals' span).
    pub elapsed_s: f64,
    pub pods: &'a [Row],
    /// Events each probe delivered, and lost, since top started.
    pub events: BTreeMap<String, u64>,
    pub lost: BTreeMap<String, u64>,
}

pub fn snapshot<'a>(src: &'a Source, rows: &'a [Row], interval: f64, elapsed: f64) -> Snapshot<'a> {
    let stats = src.shared.stats();
    let mut lost: BTreeMap<String, u64> = stats
        .iter()
        .map(|s| (s.probe.name().to_string(), s.total_lost()))
        .collect();
    for (p, n) in src.shared.losses() {
        let e = lost.entry(p.name().to_string()).or_default();
        *e = (*e).max(n);
    }
    Snapshot {
        node: &src.node,
        interval_s: interval,
        elapsed_s: elapsed,
        pods: rows,
        events: stats
            .iter()
            .map(|s| (s.probe.name().to_string(), s.events))
            .collect(),
        lost,
    }
}

fn spawn_view(
    src: Source,
    args: &TopArgs,
    tui: bool,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let args = args.clone();
    std::thread::Builder::new()
        .name("podscope-top".into())
        .spawn(move || {
            if tui {
                view::run(src, &args)
            } else {
                print_snapshots(src, &args)
            }
        })
        .context("starting the view thread")
}

fn default_selection(args: &TopArgs) -> Result<PodSelection> {
    let mut flags = args.pods.flags();
    if flags.pod.is_none()
        && flags.namespace.is_none()
        && flags.selector.is_none()
        && flags.container.is_none()
    {
        // Every pod on this node, as top promises.
        flags.all_namespaces = true;
    }
    Ok(PodSelection::from_flags(&flags)?.expect("pod flags are set, so there is a selection"))
}

pub fn run(args: TopArgs) -> Result<()> {
    let probes = ProbeKind::parse_list(&args.probes).context("--probes")?;
    let selection = default_selection(&args)?;
    let tui = args.output == TopFormat::Table && !args.once;
    if tui && !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        bail!(
            "podscope top draws on a terminal and stdin/stdout are not one; for scripts use \
             --once (a table) or -o json (a snapshot per --interval; with --once, one)"
        );
    }
    podscope_bpf::check_privileges()?;
    let node_name = crate::trace::hostname();
    let store = PodStore::new(args.pods.runtime_endpoint.clone());
    let mut node = Node::with_store(
        NodeConfig {
            node: node_name.clone(),
            runtime_endpoint: args.pods.runtime_endpoint.clone(),
            ring_buffer_bytes: 0,
            ring_budget: Duration::from_millis(50),
            interval: Duration::from_secs(1),
            host_filter: None,
            implementations: Vec::new(),
            http_capture_bytes: 1024,
            pod_refresh: podscope_pipeline::enrich::REFRESH_PERIOD,
        },
        store.clone(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let metrics = podscope_export::Metrics::new(node_name.clone(), Duration::from_secs(30));
    let shared = Arc::new(Shared::default());
    let sink = Observed {
        inner: TopSink {
            shared: shared.clone(),
        },
        observer: metrics.observer(),
        metrics: metrics.clone(),
    };
    let spec = SessionSpec {
        probes: probes.clone(),
        selection: Some(selection.clone()),
        // An empty node is an empty table, not an error.
        wait: true,
        max_events: None,
        hooks: Default::default(),
    };
    let started = node.start(ID, spec, Box::new(sink))?;
    for (probe, error) in &started.failed {
        eprintln!("podscope: warning: not tracing {probe}: {error}");
    }
    if started.failed.len() == probes.len() {
        bail!("none of the probes could be loaded on this kernel (see the warnings above)");
    }
    let loaded: Vec<&str> = node.probes().iter().map(|p| p.name()).collect();
    eprintln!(
        "podscope: top: {} ({}); {} probes attached in {} ms; first snapshot in {}.",
        loaded.join(","),
        selection.describe(),
        loaded.len(),
        node.attach_time().as_millis(),
        humantime::format_duration(args.interval)
    );
    let src = Source {
        metrics,
        from: PodSource::Local {
            store,
            selection,
            last_version: 0,
        },
        shared: shared.clone(),
        node: node_name,
        probes: loaded.join(","),
        interval: args.interval,
        failed: started.failed.clone(),
        pods: Vec::new(),
        known: Vec::new(),
        nodes: None,
        usage: Default::default(),
        listing_error: None,
    };
    let began = Instant::now();
    let deadline = args.duration.map(|d| began + d);
    let view = spawn_view(src, &args, tui)?;
    loop {
        if stop.load(Ordering::Relaxed)
            || shared.stop.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| Instant::now() >= d)
            || view.is_finished()
        {
            break;
        }
        node.step(POLL)?;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let viewed = view.join();
    let end = node.finish(ID)?;
    match viewed {
        Ok(r) => r?,
        Err(_) => {
            bail!("the view thread panicked (the terminal was restored); the message is above")
        }
    }
    if tui {
        // The screen is gone: what top saw, per probe.
        eprint!(
            "{}",
            podscope_pipeline::format::summary_text(end.elapsed.as_nanos() as u64, &end.stats)
        );
    }
    Ok(())
}

/// `--once` and `-o json`: a table (plain text) or a JSON object per
/// interval; with `--once`, one after the first interval.
fn print_snapshots(mut src: Source, args: &TopArgs) -> Result<()> {
    let began = Instant::now();
    src.pods();
    let start = src.sample();
    let mut prev = start.samples.clone();
    let mut prev_at = start.at;
    let mut out = std::io::stdout().lock();
    loop {
        let next = prev_at + args.interval;
        while Instant::now() < next {
            if src.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20).min(next - Instant::now().min(next)));
        }
        let pods = src.pods().to_vec();
        let cur = src.sample();
        let secs = cur.at.duration_since(prev_at).as_secs_f64();
        let mut rows = model::rows(
            &pods,
            &start.samples,
            &prev,
            &cur.samples,
            secs,
            args.containers,
        );
        if let Some(n) = &src.nodes {
            model::with_nodes(&mut rows, n, &src.usage);
        }
        model::sort(&mut rows, Col::Namespace, false);
        let elapsed = cur.at.duration_since(began).as_secs_f64();
        match args.output {
            TopFormat::Json => {
                let snap = snapshot(&src, &rows, secs, elapsed);
                serde_json::to_writer(&mut out, &snap)?;
                writeln!(out)?;
            }
            TopFormat::Table => {
                let cols = model::columns(src.is_remote());
                write!(out, "{}", view::plain_table(&rows, &cols))?;
            }
        }
        out.flush()?;
        if args.once {
            src.shared.stop.store(true, Ordering::Relaxed);
            return Ok(());
        }
        prev = cur.samples;
        prev_at = cur.at;
    }
}

// --- `podscope --hub URL top` ---

/// A session through the hub feeding the same counters as a local top:
/// each event the hub streams is counted by the exporter's observer here.
struct RemoteSink {
    sink: Observed<TopSink>,
    shared: Arc<Shared>,
    tui: bool,
    /// Messages held while the screen is the view's, printed after it.
    said: Vec<String>,
}

impl podscope_cluster::client::Records for RemoteSink {
    fn record(&mut self, rec: &Received, _line: Option<&str>) -> std::io::Result<()> {
        match rec {
            Received::Event(ev) => self.sink.event(ev)?,
            // A probe this client does not know (a newer agent).
            Received::Unreadable { .. } => {
                self.shared.unknown.fetch_add(1, Ordering::Relaxed);
            }
            Received::Record(r) => match &r.kind {
                Some(Kind::Lost(l)) => {
                    let probe = ProbeKind::parse_list(&l.probe)
                        .ok()
                        .and_then(|l| l.first().copied());
                    if let Some(p) = probe {
                        let total = {
                            let mut losses = lock(&self.shared.losses);
                            let e = losses.entry(p).or_default();
                            *e += l.lost;
                            *e
                        };
                        self.sink.lost(p, 0, total)?;
                    }
                }
                Some(Kind::Control(c)) if c.kind == "gap" => {
                    self.shared
                        .gaps
                        .fetch_add(c.gap.unwrap_or(0), Ordering::Relaxed);
                }
                _ => {}
            },
        }
        Ok(())
    }
    fn interrupted(&mut self, _rec: &ControlRecord) -> std::io::Result<()> {
        Ok(())
    }
    fn say(&mut self, msg: &str) {
        if self.tui {
            self.said.push(msg.to_string());
        } else {
            eprint!("{msg}");
        }
    }
}

/// `podscope --hub URL top`: the pods of every node the hub knows, their
/// probe counts from a session through the hub (a NODE column; no CPU or
/// memory: those are read from cgroups on the node itself).
pub fn run_remote(
    args: TopArgs,
    target: podscope_cluster::client::HubTarget,
    mut pods: podscope_cluster::client::RemotePods,
) -> Result<()> {
    ProbeKind::parse_list(&args.probes).context("--probes")?;
    if pods.pod.is_none()
        && pods.namespace.is_none()
        && pods.selector.is_none()
        && pods.container.is_none()
    {
        pods.all_namespaces = true;
    }
    let tui = args.output == TopFormat::Table && !args.once;
    if tui && !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        bail!(
            "podscope top draws on a terminal and stdin/stdout are not one; for scripts use \
             --once (a table) or -o json (a snapshot per --interval; with --once, one)"
        );
    }
    let metrics = podscope_export::Metrics::new("hub", Duration::from_secs(30));
    let shared = Arc::new(Shared::default());
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, shared.stop.clone())
            .context("installing signal handlers")?;
    }
    let src = Source {
        metrics: metrics.clone(),
        from: PodSource::Hub {
            target: target.clone(),
            pods: pods.clone(),
            last: None,
        },
        shared: shared.clone(),
        node: target.url.clone(),
        probes: args.probes.clone(),
        interval: args.interval,
        failed: Vec::new(),
        pods: Vec::new(),
        known: Vec::new(),
        nodes: Some(HashMap::new()),
        usage: Default::default(),
        listing_error: None,
    };
    let t = podscope_cluster::client::RemoteTrace {
        probes: args.probes.clone(),
        pods,
        json: true,
        quiet: false,
        duration: args.duration,
        max_events: None,
        wait: true,
        syscalls: None,
        tracepoint: None,
        otlp: false,
        ftrace_buffer_bytes: None,
        capture: None,
    };
    let mut sink = RemoteSink {
        sink: Observed {
            inner: TopSink {
                shared: shared.clone(),
            },
            observer: metrics.observer(),
            metrics,
        },
        shared: shared.clone(),
        tui,
        said: Vec::new(),
    };
    let view = spawn_view(src, &args, tui)?;
    let r = podscope_cluster::client::trace_into(&target, &t, shared.stop.clone(), &mut sink);
    shared.stop.store(true, Ordering::Relaxed);
    let viewed = view.join();
    for m in &sink.said {
        eprint!("{m}");
    }
    match viewed {
        Ok(v) => v?,
        Err(_) => {
            bail!("the view thread panicked (the terminal was restored); the message is above")
        }
    }
    r?;
    Ok(())
}
