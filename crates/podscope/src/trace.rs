//! `podscope trace`: load probes, stream events through enrich and filter to
//! a sink, report losses.

use std::io::{self, BufWriter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podscope_bpf::Filter;
use podscope_model::{Event, ProbeKind};

use crate::cli::{TraceArgs, TraceFormat};
use podscope_pipeline::sinks::{Discard, Exported, Observed};
use podscope_pipeline::PodSelection;
use podscope_pipeline::{Columns, JsonLines, Sink};
use podscope_pipeline::{Node, NodeConfig, SessionId, SessionSpec};

/// How long one poll waits at most: bounds event latency when traffic is too
/// light to trigger a kernel wakeup.
const POLL: Duration = Duration::from_millis(20);

fn host_filter(args: &TraceArgs, pod_mode: bool) -> Result<Filter> {
    let mut filter = Filter::default();
    if args.all {
        return Ok(filter);
    }
    if !pod_mode && args.pid.is_empty() && args.cgroup.is_empty() && args.comm.is_none() {
        bail!(
            "say what to trace: --all for every process, --pod/-l/-n for pods, or --pid PID, \
             --cgroup PATH, --comm NAME (e.g. podscope trace {} --all)",
            args.probes
        );
    }
    if pod_mode && !args.cgroup.is_empty() {
        bail!("--cgroup cannot be combined with pod selection (--pod, -l, -n, -A, --container); use one or the other");
    }
    if !args.pid.is_empty() {
        for pid in &args.pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                bail!("no process with pid {pid} is running");
            }
        }
        filter.pids = Some(args.pid.clone());
    }
    if !args.cgroup.is_empty() {
        let ids = args
            .cgroup
            .iter()
            .map(|p| podscope_pipeline::cgroup::resolve(p))
            .collect::<Result<Vec<_>>>()?;
        filter.cgroups = Some(ids);
    }
    filter.comm = args.comm.clone();
    Ok(filter)
}

fn scope(args: &TraceArgs, selection: Option<&PodSelection>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = selection {
        parts.push(s.describe());
    }
    if args.all {
        parts.push("all processes".into());
    }
    if !args.pid.is_empty() {
        parts.push(format!("pid {:?}", args.pid));
    }
    for c in &args.cgroup {
        parts.push(format!("cgroup {}", c.display()));
    }
    if let Some(c) = &args.comm {
        parts.push(format!("comm {c}"));
    }
    parts.join(" and ")
}

/// The node's name for events: $NODE_NAME when set (the agent DaemonSet sets
/// it from spec.nodeName, and the agent passes its own to its traces; inside a
/// pod the host name is the pod's), else the host name.
pub fn hostname() -> String {
    if let Some(n) = std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
    {
        return n.trim().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `--capture-headers`, `--capture-body`, `--redact-header`: settings of the
/// request probes.
fn capture_options(args: &TraceArgs, probes: &[ProbeKind]) -> Result<podscope_proto::Capture> {
    let asked =
        args.capture_headers || args.capture_body.is_some() || !args.redact_header.is_empty();
    let requests = [ProbeKind::Http, ProbeKind::Grpc, ProbeKind::Tls]
        .iter()
        .any(|p| probes.contains(p));
    if asked && !requests {
        bail!("--capture-headers, --capture-body and --redact-header are settings of the request probes: add http, grpc or tls (podscope trace http --capture-headers ...)");
    }
    // (The body size was checked by the flag's parser.)
    let capture = podscope_proto::Capture::new(
        args.capture_headers,
        args.capture_body.map(u64::from),
        &args.redact_header,
    )
    .map_err(|e| anyhow::anyhow!("--redact-header {e}"))?;
    if let Some(b) = args.capture_body {
        if b > args.http_capture_bytes {
            eprintln!(
                "podscope: note: --capture-body {b} keeps at most what the kernel copies of each read or write (--http-capture-bytes {}): a body past that in one call is cut there",
                args.http_capture_bytes
            );
        }
    }
    Ok(capture)
}

/// `tp:sched:sched_process_fork,exec` -> (["tp:sched:sched_process_fork"], "exec").
fn split_tracepoints(list: &str) -> (Vec<String>, String) {
    let (tps, rest): (Vec<&str>, Vec<&str>) = list
        .split(',')
        .map(str::trim)
        .partition(|p| p.starts_with("tp:") || p.starts_with("tracepoint:"));
    (
        tps.into_iter().map(str::to_string).collect(),
        rest.join(","),
    )
}

/// Subsystems whose events often fire in softirq, interrupt or kernel-thread
/// context, where the task the filter looks at is not the one that caused them.
const NOT_TASK_CONTEXT: &[&str] = &[
    "net",
    "skb",
    "napi",
    "irq",
    "block",
    "timer",
    "workqueue",
    "tcp",
    "sock",
    "qdisc",
    "xdp",
];

/// `podscope trace ftrace:SUBSYSTEM:EVENT`: the tracepoints through a
/// tracefs instance, no BPF (podscope_pipeline::ftrace).
fn run_ftrace(args: &TraceArgs, names: Vec<String>) -> Result<()> {
    if args.comm.is_some() {
        bail!("ftrace: follows tasks by pid (set_event_pid): select pods, --pid, --cgroup or --all, not --comm");
    }
    if args.metrics_listen.is_some() {
        bail!("ftrace: --metrics-listen counts the BPF probes' events; ftrace records go to -o columns|json|none and, with --otlp, to OTLP as log records");
    }
    let selection = PodSelection::from_flags(&args.pods.flags())?;
    let pod_mode = selection.is_some();
    if args.wait && !pod_mode {
        bail!("--wait waits for pods: combine it with --pod, -l, -n, -A or --container");
    }
    host_filter(args, pod_mode)?;
    let spec = podscope_pipeline::ftrace::FtraceSpec {
        names,
        selection,
        wait: args.wait,
        pids: args.pid.clone(),
        cgroups: args.cgroup.clone(),
        max_events: args.max_events,
        node: hostname(),
        runtime_endpoint: args.pods.runtime_endpoint.clone(),
        filter: args.filter.clone(),
        // "auto" (0) sizes BPF rings by rate; ftrace keeps its default.
        buffer_bytes: (args.ring_buffer_size != 0).then_some(args.ring_buffer_size),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    // ftrace makes only records: with --otlp they are log records (under
    // the trace's session span) unless --otlp-logs says otherwise.
    let otlp = start_otlp(args, &[ProbeKind::Tracepoint], &[ProbeKind::Tracepoint])?;
    let stdout = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut sink: Box<dyn Sink> = match args.output {
        TraceFormat::Columns => Box::new(Columns::new(stdout)),
        TraceFormat::Json => Box::new(JsonLines::new(stdout)),
        TraceFormat::None => Box::new(Discard),
    };
    if let Some(o) = &otlp {
        sink = Box::new(Exported {
            inner: sink,
            otlp: o.observer(),
        });
    }
    let what = spec.names.join(",");
    let end = podscope_pipeline::ftrace::run(
        &spec,
        sink.as_mut(),
        &|| stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d),
        &mut |dir, stale| {
            for s in stale {
                eprintln!(
                    "podscope: removed the tracefs instance {s} of a podscope that no longer runs"
                );
            }
            eprintln!(
                "podscope: tracing {what} through ftrace in the tracefs instance {} (no BPF; \
                 probes attached: none, tasks followed by set_event_pid and event-fork). Ctrl-C to stop.",
                dir.display()
            );
        },
    )?;
    eprintln!(
        "podscope: ftrace: {} records ({} of tasks gone before they were read, without pod fields), {} lost (ftrace's own count), {} lines not parsed; instance {} removed",
        end.written,
        end.unattributed,
        end.lost,
        end.unparsed,
        end.instance.display()
    );
    drop(sink);
    if let Some(o) = otlp {
        let info = podscope_export::otlp::SessionInfo {
            session: String::new(),
            probes: spec.names.clone(),
            scope: scope(args, spec.selection.as_ref()),
        };
        finish_otlp(o, &info, end.written, end.lost)?;
    }
    Ok(())
}

pub fn run(args: TraceArgs) -> Result<()> {
    let (ftrace_names, others) = podscope_pipeline::ftrace::split_names(&args.probes);
    if !ftrace_names.is_empty() {
        podscope_pipeline::ftrace::check_alone(&ftrace_names, &others)?;
        return run_ftrace(&args, ftrace_names);
    }
    let (tp_names, rest) = split_tracepoints(&args.probes);
    let mut probes = if rest.trim().is_empty() && !tp_names.is_empty() {
        Vec::new()
    } else {
        ProbeKind::parse_list(&rest)?
    };
    let rest = rest.as_str();
    if !tp_names.is_empty() {
        probes.push(ProbeKind::Tracepoint);
    }
    if args.filter.is_some() && tp_names.is_empty() {
        bail!("--filter compares tracepoint fields: add a tracepoint (podscope trace tp:SUBSYSTEM:EVENT --filter ...)");
    }
    let tracepoints = podscope_bpf::TracepointOptions {
        names: tp_names,
        filter: args.filter.clone(),
    };
    let syscalls = podscope_bpf::SyscallOptions {
        only: podscope_bpf::resolve_syscalls(&args.syscall)?,
        errors_only: args.errors_only,
        summary: args.summary,
    };
    if (!args.syscall.is_empty() || args.errors_only || args.summary)
        && !probes.contains(&ProbeKind::Syscalls)
    {
        bail!("--syscall, --errors-only and --summary are settings of the syscalls probe: add it (podscope trace syscalls ...)");
    }
    let capture = capture_options(&args, &probes)?;
    let flow = match &args.flow {
        Some(text) => Some(podscope_model::FlowFilter::parse(text)?),
        None => None,
    };
    if (args.per_packet || flow.is_some()) && !probes.contains(&ProbeKind::Net) {
        bail!("--per-packet and --flow are settings of the net probe: add it (podscope trace net --flow 'tcp and port 80' ...)");
    }
    if probes.contains(&ProbeKind::Net) && (!args.pid.is_empty() || args.comm.is_some()) {
        bail!(
            "the net probe cannot filter by --pid or --comm: packets are mostly handled in \
             softirq context, not by the process they belong to; select pods (--pod, -l, -n, -A) \
             or --all (e.g. podscope trace net --pod web-0 -n shop)"
        );
    }
    if probes.contains(&ProbeKind::Net) && !args.cgroup.is_empty() {
        bail!("the net probe finds a packet's pod by its network namespace, not by cgroup: select pods (--pod, -l, -n, -A) or --all");
    }
    let net_pods = flow.as_ref().map(|f| f.pods.clone()).unwrap_or_default();
    let net = podscope_bpf::NetOptions {
        per_packet: args.per_packet,
        filter: flow,
    };
    let selection = PodSelection::from_flags(&args.pods.flags())?;
    let pod_mode = selection.is_some();
    if args.wait && !pod_mode {
        bail!("--wait waits for pods: combine it with --pod, -l, -n, -A or --container");
    }
    let filter = host_filter(&args, pod_mode)?;
    let task_filter = !args.pid.is_empty() || args.comm.is_some();
    let named_drop = rest.split(',').any(|p| p.trim() == "drop");
    if task_filter && probes.contains(&ProbeKind::Drop) && !named_drop {
        // `all` with a task filter: the probes that can honour it.
        probes.retain(|p| *p != ProbeKind::Drop);
        eprintln!("podscope: note: 'all' leaves out drop with --pid/--comm (dropped packets are not attributed to tasks)");
    }
    if task_filter && probes.contains(&ProbeKind::Drop) {
        bail!(
            "the drop probe cannot filter by --pid or --comm: packets are mostly dropped in \
             softirq context, not by the process they belong to; select pods (--pod, -l, -n, -A), \
             --cgroup PATH (the sockets of its processes) or --all (e.g. podscope trace drop --all)"
        );
    }
    podscope_bpf::check_privileges()?;
    if !tracepoints.names.is_empty() {
        // Unknown tracepoints and fields fail here, before anything loads.
        let resolved = podscope_bpf::tracepoint::resolve(&tracepoints)?;
        for w in resolved.warnings(&tracepoints) {
            eprintln!("podscope: warning: {w}");
        }
        let odd: Vec<&str> = resolved
            .formats
            .iter()
            .map(|f| f.name.as_str())
            .filter(|n| NOT_TASK_CONTEXT.contains(&n.split(':').next().unwrap_or("")))
            .collect();
        if !args.all && !odd.is_empty() {
            eprintln!(
                "podscope: note: the filter tests the task running when a tracepoint fires; {} often fire in                  softirq or kernel-thread context, which a pod or process filter leaves out: --all traces them node-wide",
                odd.join(", ")
            );
        }
    }

    let started = Instant::now();
    // A local trace is a node tracer with one session (the agent runs many
    // the same way).
    let mut node = Node::new(NodeConfig {
        node: hostname(),
        runtime_endpoint: args.pods.runtime_endpoint.clone(),
        ring_buffer_bytes: args.ring_buffer_size,
        ring_budget: args.ring_budget,
        interval: args.interval,
        host_filter: (!pod_mode || filter != Filter::default()).then_some(filter),
        implementations: Vec::new(),
        http_capture_bytes: args.http_capture_bytes,
        pod_refresh: podscope_pipeline::enrich::REFRESH_PERIOD,
    });
    node.set_net(net);

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }

    // The metrics port is bound before the probes load, so a busy port fails fast.
    let exporter = match args.metrics_listen {
        Some(addr) => Some(start_exporter(addr, &args, selection.clone())?),
        None => None,
    };
    // OTLP settings are checked before the probes load too (docs/otlp.md).
    let otlp = start_otlp(&args, &probes, &[])?;

    let stdout = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut sink: Box<dyn Sink> = match args.output {
        TraceFormat::Columns => Box::new(Columns::new(stdout)),
        TraceFormat::Json => Box::new(JsonLines::new(stdout)),
        TraceFormat::None => Box::new(Discard),
    };
    // Every delivered event is also counted for the metrics.
    if let Some(e) = &exporter {
        sink = Box::new(Observed {
            inner: sink,
            observer: e.observer(),
            metrics: e.metrics().clone(),
        });
    }
    // Every delivered event also goes to the OTLP exporter's queues.
    if let Some(o) = &otlp {
        sink = Box::new(Exported {
            inner: sink,
            otlp: o.observer(),
        });
    }
    // The --flow filter's pod terms: after enrichment, counted.
    let pod_filtered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if !net_pods.is_empty() {
        sink = Box::new(NetPodFilter {
            inner: sink,
            pods: net_pods,
            filtered: pod_filtered.clone(),
        });
    }
    const ID: SessionId = 1;
    let spec = SessionSpec {
        probes,
        selection: selection.clone(),
        wait: args.wait,
        max_events: args.max_events,
        hooks: podscope_pipeline::Hooks {
            syscalls,
            tracepoints,
            summary_interval: None,
            capture,
        },
    };
    let session = node.start(ID, spec, sink)?;
    for w in &session.warnings {
        eprintln!("podscope: {w}");
    }
    // A probe this kernel cannot run does not stop the others (exit status
    // stays 0 as long as one probe the user asked for traces).
    for (probe, error) in &session.failed {
        eprintln!("podscope: warning: not tracing {probe}: {error}");
    }
    eprintln!(
        "podscope: tracing {} ({}); {} probes attached in {} ms. Ctrl-C to stop.",
        describe_probes(&node),
        scope(&args, selection.as_ref()),
        node.probes().len(),
        node.attach_time().as_millis()
    );
    eprintln!("podscope: {}", describe_rings(&node, &args));

    let deadline = args.duration.map(|d| started + d);
    let parent = nix::unistd::getppid();
    loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if args.exit_with_parent && nix::unistd::getppid() != parent {
            eprintln!("podscope: the parent process went away; stopping");
            break;
        }
        let wait = deadline.map_or(POLL, |d| {
            POLL.min(d.saturating_duration_since(Instant::now()))
        });
        node.step(wait)?;
        if node.is_done(ID) {
            break;
        }
    }

    // Whatever the kernel already handed over is delivered, never dropped.
    let end = node.finish(ID)?;
    if let Some(e) = &end.error {
        bail!("{e}");
    }
    if end.pipe_closed {
        eprint!(
            "{}",
            podscope_pipeline::format::summary_text(end.elapsed.as_nanos() as u64, &end.stats)
        );
    }
    eprint!("{}", end.protocol_summary);
    let filtered = pod_filtered.load(Ordering::Relaxed);
    if filtered > 0 || args.flow.as_deref().is_some_and(|f| f.contains("pod")) {
        eprintln!("podscope: net: {filtered} records left out by the --flow filter's pod terms (in user space)");
    }
    if end.unnamed_dropped > 0 {
        eprintln!(
            "podscope: {} events were left out because the runtime had not named their pod (a new pod that may not match the selection)",
            end.unnamed_dropped
        );
    }
    if end.watcher_lost > 0 {
        eprintln!(
            "podscope: the cgroup watcher missed {} changes; some new containers may lack names",
            end.watcher_lost
        );
    }
    if let Some(o) = otlp {
        let info = podscope_export::otlp::SessionInfo {
            session: String::new(),
            probes: end
                .stats
                .iter()
                .map(|s| s.probe.name().to_string())
                .collect(),
            scope: scope(&args, selection.as_ref()),
        };
        let events = end.stats.iter().map(|s| s.events).sum();
        let lost = end.stats.iter().map(|s| s.total_lost()).sum();
        finish_otlp(o, &info, events, lost)?;
    }
    Ok(())
}

/// Sends the session span and what is queued, prints what became of every
/// span and log record; none delivered at all is a failed run (a wrong URL,
/// an untrusted certificate, no collector).
fn finish_otlp(
    o: podscope_export::Otlp,
    info: &podscope_export::otlp::SessionInfo,
    events: u64,
    lost: u64,
) -> Result<()> {
    let url = o.describe();
    let st = o.finish(info, events, lost);
    eprint!("{st}");
    if st.spans.produced > 0 && st.spans.exported == 0 {
        anyhow::bail!(
            "the OTLP export failed: none of the {} spans reached the collector (spans to {url}); the errors above say why",
            st.spans.produced
        );
    }
    Ok(())
}

/// `exec,bio (bio: block_getrq)`: the probes and, where a probe runs on a
/// fallback implementation, which one.
/// The kernel ring sizes, e.g. "rings (auto: 50ms at peak rate): open 16 MiB".
fn describe_rings(node: &Node, args: &TraceArgs) -> String {
    let size = match args.ring_buffer_size {
        0 => podscope_bpf::RingSize::Budget(args.ring_budget),
        n => podscope_bpf::RingSize::Bytes(n),
    };
    let rings: Vec<String> = node
        .probes()
        .into_iter()
        .filter(|p| podscope_bpf::expected_peak(*p).0 > 0)
        .map(|p| {
            let b = podscope_bpf::ring_bytes(p, size);
            format!("{p} {}", podscope_pipeline::format::human_bytes(b as u64))
        })
        .collect();
    let how = match size {
        podscope_bpf::RingSize::Budget(b) => {
            format!(
                "auto: {} at each probe's peak rate",
                humantime::format_duration(b)
            )
        }
        podscope_bpf::RingSize::Bytes(_) => "--ring-buffer-size".to_string(),
    };
    format!("kernel rings ({how}): {}", rings.join(", "))
}

fn describe_probes(node: &Node) -> String {
    let imps = node.implementations();
    let names: Vec<&str> = imps.iter().map(|(p, _)| p.name()).collect();
    let fallbacks: Vec<String> = imps
        .iter()
        .filter(|(p, i)| p.implementations().first() != Some(*i))
        .map(|(p, i)| format!("{p}: {}", i.name))
        .collect();
    if fallbacks.is_empty() {
        names.join(",")
    } else {
        format!("{} ({})", names.join(","), fallbacks.join(", "))
    }
}

fn start_exporter(
    addr: std::net::SocketAddr,
    args: &TraceArgs,
    selection: Option<PodSelection>,
) -> Result<podscope_export::Exporter> {
    let exporter = podscope_export::Exporter::start(podscope_export::ExporterConfig {
        listen: addr,
        node: hostname(),
        grace: args.metrics_grace,
        refresh: Duration::from_secs(5),
        runtime_endpoint: args.pods.runtime_endpoint.clone(),
        // Resource metrics follow the same pods and containers as the trace.
        select: selection.map(|sel| {
            Box::new(move |pods: &[podscope_runtime::Pod]| sel.select(pods))
                as podscope_export::PodSelect
        }),
    })?;
    eprintln!(
        "podscope: serving metrics on http://{}/metrics",
        exporter.local_addr()
    );
    Ok(exporter)
}

// --- OTLP export (docs/otlp.md) ---

/// `default_logs`: the probes whose events are log records when
/// --otlp-logs is not given.
fn start_otlp(
    args: &TraceArgs,
    probes: &[ProbeKind],
    default_logs: &[ProbeKind],
) -> Result<Option<podscope_export::Otlp>> {
    use podscope_export::otlp::{Otlp, OtlpConfig, OtlpFlags};
    let o = &args.otlp;
    let wanted = o.enabled
        || o.endpoint.is_some()
        || o.protocol.is_some()
        || !o.headers.is_empty()
        || o.logs.is_some()
        || o.queue_size.is_some()
        || o.ca.is_some()
        || o.spans.is_some();
    if !wanted {
        return Ok(None);
    }
    if o.spans.is_some()
        && !probes.contains(&ProbeKind::Http)
        && !probes.contains(&ProbeKind::Grpc)
        && !probes.contains(&ProbeKind::Tls)
    {
        bail!(
            "--spans {}: request spans come from the http, grpc or tls probe; add one (podscope trace {},http ...)",
            o.spans.as_deref().unwrap_or_default(),
            args.probes
        );
    }
    let log_probes = match &o.logs {
        // 'all' means every probe this trace runs.
        Some(list) if list.trim() == "all" => probes.to_vec(),
        Some(list) => {
            // `tracepoint` (or a `tp:` name) stands for the trace's tracepoints.
            let (tps, rest): (Vec<&str>, Vec<&str>) = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .partition(|p| {
                    *p == "tracepoint" || p.starts_with("tp:") || p.starts_with("ftrace:")
                });
            let mut l = if rest.is_empty() {
                Vec::new()
            } else {
                ProbeKind::parse_list(&rest.join(",")).context("--otlp-logs")?
            };
            if !tps.is_empty() {
                l.push(ProbeKind::Tracepoint);
            }
            if let Some(p) = l.iter().find(|p| !probes.contains(p)) {
                bail!(
                    "--otlp-logs {p}: the {p} probe is not traced; add it to PROBES (e.g. podscope trace {},{p} ...)",
                    args.probes
                );
            }
            l
        }
        None => default_logs.to_vec(),
    };
    let flags = OtlpFlags {
        endpoint: o.endpoint.clone(),
        protocol: o.protocol.clone(),
        headers: o.headers.clone(),
        log_probes,
        queue_size: o.queue_size,
        session_events: Some(o.session_events),
        ca: o.ca.clone(),
    };
    let mut cfg = OtlpConfig::resolve(&flags, &hostname(), &|k| std::env::var(k).ok())?;
    cfg.requests.context_only = o.spans.as_deref() == Some("requests-with-context");
    cfg.requests.max_children = o.span_children;
    cfg.requests.requests_traced = [ProbeKind::Http, ProbeKind::Grpc, ProbeKind::Tls]
        .iter()
        .any(|p| probes.contains(p));
    let otlp = Otlp::start(cfg, Some(podscope_pipeline::sinks::otlp_log_body()))?;
    eprintln!("podscope: exporting OTLP {}", otlp.describe());
    Ok(Some(otlp))
}

// --- end OTLP ---

/// The `pod NAME` terms of `--flow`: net records of other pods are left out
/// (and counted) once enrichment has named their pod.
struct NetPodFilter {
    inner: Box<dyn Sink>,
    pods: Vec<String>,
    filtered: Arc<std::sync::atomic::AtomicU64>,
}

impl NetPodFilter {
    fn keeps(&self, ev: &Event) -> bool {
        if ev.probe() != ProbeKind::Net {
            return true;
        }
        let f = podscope_model::FlowFilter {
            pods: self.pods.clone(),
            ..Default::default()
        };
        f.pod_matches(&ev.identity.pod)
    }
}

impl Sink for NetPodFilter {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        if self.keeps(ev) {
            self.inner.event(ev)
        } else {
            self.filtered.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> io::Result<()> {
        self.inner.lost(probe, delta, total)
    }
    fn summary(&mut self, elapsed_ns: u64, stats: &[podscope_bpf::ProbeStats]) -> io::Result<()> {
        self.inner.summary(elapsed_ns, stats)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn stats(&mut self, stats: &[podscope_bpf::ProbeStats]) -> io::Result<()> {
        self.inner.stats(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracepoints_are_split_from_the_probe_list() {
        assert_eq!(
            split_tracepoints("tp:sched:sched_process_fork,exec, tp:net:net_dev_xmit"),
            (
                vec![
                    "tp:sched:sched_process_fork".to_string(),
                    "tp:net:net_dev_xmit".to_string()
                ],
                "exec".to_string()
            )
        );
        assert_eq!(
            split_tracepoints("exec,tcp"),
            (vec![], "exec,tcp".to_string())
        );
        assert_eq!(split_tracepoints("tp:a:b").1, "");
    }
}
