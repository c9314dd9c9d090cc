//! Command-line flags, parsed and validated in one place before any work starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Trace what the processes in pods, containers and on this machine do in the
/// kernel, live, with eBPF.
#[derive(Debug, Parser)]
#[command(
    name = "podscope",
    version,
    about,
    after_help = "Examples:\n  \
        podscope probes                          list probes and whether this kernel supports them\n  \
        podscope trace exec,tcp --all            every process on this machine\n  \
        podscope trace bio -o json --duration 10s\n  \
        podscope trace open --pid 1234           or --cgroup /sys/fs/cgroup/..., --comm nginx\n  \
        podscope ps -A                           pods and containers on this node\n  \
        podscope trace exec,tcp --pod web-0 -n shop\n  \
        podscope exec --pod web-0 -n shop -- tcpdump -i eth0 -c 100\n\n\
        podscope needs root (or CAP_BPF + CAP_PERFMON) to load its probes."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    // --- cluster mode (docs/cluster.md) ---
    /// Run `ps`, `trace` and `exec` through the hub at this URL (http://hub:7700)
    /// across every node; for `agent`, the hub to dial. kube://NAMESPACE/SERVICE:PORT
    /// reaches it through the Kubernetes API server's service proxy with your
    /// kubeconfig (the default when run as `kubectl podscope`:
    /// kube://podscope/podscope-hub:7700).
    #[arg(long, global = true, value_name = "URL")]
    pub hub: Option<String>,

    /// File holding the bearer token for the hub (else $PODSCOPE_TOKEN; for a
    /// kube:// hub, else the Secret podscope-token in the hub's namespace).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Kubeconfig for a kube:// hub (else $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context for a kube:// hub (else the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// CA certificate (PEM) that signed the hub's TLS certificate, for an
    /// https:// --hub URL: trusted instead of the system's CA certificates.
    #[arg(long, global = true, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// Which hub API `ps`, `trace` and `exec` use with --hub: rest (HTTP/1.1
    /// JSON; also through kube://) or grpc (service podscope.cluster.v1.HubApi).
    #[arg(long, global = true, value_name = "API", value_enum, default_value_t)]
    pub hub_api: podscope_cluster::client::HubApi,
    // --- end cluster mode ---
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every probe, what it reports, its kernel hooks, and whether this kernel supports it.
    #[command(after_help = "Examples:\n  \
        podscope probes\n  \
        podscope probes --tracepoints 'sched:*'      tracepoints and their fields (for tp:SUBSYSTEM:EVENT)\n  \
        podscope probes --tracepoints '*xmit*' -o json")]
    Probes {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Columns)]
        output: Format,
        /// Instead of the probes: the kernel's tracepoints matching GLOB
        /// (SUBSYSTEM:EVENT, default every one) with their fields, as `podscope
        /// trace tp:SUBSYSTEM:EVENT` decodes them.
        #[arg(long, value_name = "GLOB", num_args = 0..=1, default_missing_value = "*")]
        tracepoints: Option<String>,
    },
    /// List the hook kinds a trace session can use (syscalls, tracepoint and
    /// every probe), with their arguments and what they report.
    #[command(after_help = "Examples:\n  \
        podscope hooks\n  \
        podscope hooks -o json        one object per hook kind: kind, description, usage, args\n\n\
        The same catalogue is what a session's \"hook\": {\"kind\": ..., \"args\": {...}} takes.")]
    Hooks {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Columns)]
        output: Format,
    },
    /// Trace kernel events live until Ctrl-C, --duration or --max-events.
    #[command(after_help = "Examples:\n  \
        podscope trace exec,tcp --all\n  \
        podscope trace tcp --comm nginx -o json\n  \
        podscope trace bio,open --cgroup /sys/fs/cgroup/unified/mygroup --duration 30s\n  \
        podscope trace all --pid 1234 --max-events 100\n  \
        podscope trace tp:sched:sched_process_fork,tp:net:net_dev_xmit --all -o json\n  \
        podscope trace tp:net:net_dev_xmit --all --filter 'len > 1000 && name == \"eth0\"'\n  \
        podscope trace net --pod web-0 -n shop                       per-flow totals, stage latencies\n  \
        podscope trace net --pod web-0 -n shop --flow 'tcp and port 80'   and each matching packet\n\n\
        Probes: exec, exit, tcp, bio, cache, open, http, dns, tls, grpc, syscalls, drop, net (comma-separated,\n\
        or 'all': every probe but syscalls and net),\n\
        and any tracepoint as tp:SUBSYSTEM:EVENT (podscope probes --tracepoints lists them).\n\
        http brings tls along (HTTPS requests from OpenSSL's plaintext); tls alone: HTTPS only;\n\
        dns brings it along for DNS over TLS (port 853), and reports only DNS.\n\
        Pods: --pod NAME (globs), -n NAMESPACE, -A, -l SELECTOR, --container NAME; --wait for pods\n\
        that do not exist yet. New pods that match are traced from their first exec.\n\
        Events are filtered in the kernel: choose --all, pod flags, or --pid, --cgroup, --comm\n\
        (they combine with AND). At exit a summary reports events and lost events per probe.")]
    Trace(TraceArgs),
    /// Live table of this node's pods: CPU, memory, execs, connections, TCP
    /// bytes, retransmits, block I/O, page cache, requests; Enter opens a
    /// pod's live events and top talkers.
    #[command(after_help = "Examples:\n  \
        podscope top                          every pod on this node, refreshed every second\n  \
        podscope top -n shop -l app=web       same pod flags as trace\n  \
        podscope top --probes exec,tcp,http   add request rate, errors and p99 (REQ/s, ERR%, REQ-P99)\n  \
        podscope top --once -o json           one snapshot after one --interval, for scripts\n  \
        podscope top -o json --interval 5s    a JSON snapshot every 5 s\n\n\
        Keys: Up/Down select, Enter open a pod, < > sort column, r reverse, / filter,\n\
        c pods/containers, p pause, ? help, q quit.\n\
        Rates are per second over the last --interval and come from the same per-pod\n\
        counters as --metrics-listen (docs/metrics.md); TCP bytes count when a\n\
        connection closes; CPU and memory come from the containers' cgroups.")]
    Top(TopArgs),
    /// List the pods and containers on this node: namespace, pod, container, image, runtime, pids, cgroup id.
    #[command(after_help = "Examples:\n  \
        podscope ps -A\n  \
        podscope ps -n shop -l app=web -o json")]
    Ps(PsArgs),
    /// Run a host tool inside a pod's namespaces (network by default), by pod name.
    #[command(after_help = "Examples:\n  \
        podscope exec --pod web-0 -n shop -- tcpdump -i eth0 -c 100 -w /tmp/web.pcap\n  \
        podscope exec -l app=web -n shop -t 30s -- ss -tanp     (several pods in parallel, lines prefixed)\n  \
        podscope exec --pod web-0 -n shop --ns mnt,pid -- ps    (the container's own binaries)\n\n\
        The tool's exit code is podscope's; with several pods, the first non-zero one.\n\
        -t/--timeout stops the tool (SIGTERM, then SIGKILL 2 s later) and exits 124.")]
    Exec(ExecArgs),
    /// Web view of this machine in a browser: pods with live counts, a
    /// service map from kernel data, trace sessions (an in-process hub and
    /// agent; no cluster needed).
    #[command(after_help = "Examples:\n  \
        podscope ui                               serve http://127.0.0.1:7701/ui/ (prints a login link)\n  \
        podscope ui --listen 0.0.0.0:7701 --token-file /etc/podscope/token\n\n\
        Without --token-file or PODSCOPE_TOKEN a fresh token is made and shown in the link.\n\
        The page asks for the token once and keeps a session cookie (HttpOnly, SameSite=Strict).\n\
        In a cluster, the hub serves the same view at /ui/ on its port (docs/ui.md).")]
    Ui(podscope_cluster::hub::UiArgs),
    /// Redirect TCP between the selected pods on this node at the socket
    /// layer (sockops + sk_msg): data skips both TCP/IP stacks, the veths and
    /// the bridge. Stays on after this command exits, until --off.
    #[command(after_help = "Examples:\n  \
        podscope accelerate --pod 'web-*' -n shop     accelerate connections among these pods (both ends selected)\n  \
        podscope accelerate -n shop                   every pod of namespace shop\n  \
        podscope accelerate --status                  what is accelerated: bytes/messages redirected, connections left alone and why\n  \
        podscope accelerate --status -o json\n  \
        podscope accelerate --off                     stop: new connections take the normal path; removes every pin\n\n\
        What is accelerated: TCP connections established after this command between two selected pods\n\
        on this node (pod IP to pod IP). Left alone, and counted by reason in --status: peers that are\n\
        not a pod on this node (remote hosts, the node itself, Service IPs), unselected pods, loopback\n\
        inside a pod, connections that existed before (counted as pre-existing).\n\
        Running it again replaces the selection (idempotent); it does not follow pods created later.\n\
        Redirected data bypasses netfilter, tc, NetworkPolicy and packet capture: tcpdump and\n\
        `podscope trace net` do not see it. The programs stay attached through pins under\n\
        /sys/fs/bpf/podscope/accel: a podscope crash changes nothing. --off detaches and unpins; connections\n\
        accelerated before it stay so until they close (taking them out could stall a blocked reader).\n\
        See docs/accelerate.md.")]
    Accelerate(AccelerateArgs),
    // --- cluster mode (docs/cluster.md) ---
    /// Run the cluster hub: agent registry, trace sessions, REST API (bearer token required).
    #[command(
        after_help = "Example:\n  podscope hub --listen 0.0.0.0:7700 --token-file /etc/podscope/token"
    )]
    Hub(podscope_cluster::hub::HubArgs),
    /// Run the node agent: dials the hub, reports this node's pods, runs its trace sessions.
    #[command(
        after_help = "Example:\n  podscope agent --hub http://hub:7700 --node node-1 --token-file /etc/podscope/token"
    )]
    Agent(podscope_cluster::agent::AgentArgs),
    // --- end cluster mode ---
    /// Internal: joins namespaces then runs a command (used by `podscope exec`).
    #[command(hide = true, name = "__nsenter")]
    Nsenter(NsenterArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct AccelerateArgs {
    #[command(flatten)]
    pub pods: PodArgs,

    /// Show what is accelerated instead of changing anything.
    #[arg(long, conflicts_with = "off")]
    pub status: bool,

    /// Turn acceleration off: detach the sockops program and remove every pin
    /// (open accelerated connections stay so until they close).
    #[arg(long)]
    pub off: bool,

    /// Output format (of --status and of what was done).
    #[arg(short, long, value_enum, default_value_t = Format::Columns)]
    pub output: Format,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub pods: PodArgs,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Columns)]
    pub output: Format,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub pods: PodArgs,

    /// Probes feeding the table, comma-separated (exec, tcp, bio, cache,
    /// open, http, grpc, dns, tls). http or grpc adds requests.
    #[arg(long, value_name = "PROBES", default_value = "exec,tcp,bio,cache,open")]
    pub probes: String,

    /// How often the table is refreshed (the span of its rates).
    #[arg(short = 'i', long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Print one table (or, with -o json, one JSON object) after one
    /// --interval, then exit.
    #[arg(long)]
    pub once: bool,

    /// Output: the live table on the terminal, or JSON snapshots (one
    /// object per --interval, see docs/top.md).
    #[arg(short, long, value_enum, default_value_t = TopFormat::Table)]
    pub output: TopFormat,

    /// One row per container instead of per pod (the `c` key switches).
    #[arg(long)]
    pub containers: bool,

    /// Stop after this long.
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// `podscope top -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopFormat {
    /// The live table (on a terminal), or with --once a plain-text table.
    Table,
    /// JSON snapshots, one object per line.
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub pods: PodArgs,

    /// Namespaces to join, comma-separated: net, pid, mnt, uts, ipc, cgroup.
    #[arg(long = "ns", value_name = "NAMESPACES", default_value = "net")]
    pub namespaces: String,

    /// Stop the tool after this long (e.g. 30s).
    #[arg(short = 't', long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Write each pod's output to DIR/<namespace>_<pod>.log instead of the terminal.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NsenterArgs {
    /// Host pid whose namespaces to join.
    #[arg(long)]
    pub target: u32,
    /// Namespaces to join, comma-separated.
    #[arg(long = "ns")]
    pub namespaces: String,
    /// The command.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Probes to run, comma-separated (exec,exit,tcp,bio,cache,open,http,dns,syscalls,drop,net) or 'all'
    /// (every probe but syscalls and net), and tracepoints as tp:SUBSYSTEM:EVENT.
    #[arg(value_name = "PROBES")]
    pub probes: String,

    #[command(flatten)]
    pub pods: PodArgs,

    /// With pod selection: if nothing matches yet, wait for matching pods instead of failing.
    #[arg(long)]
    pub wait: bool,

    /// Stop when the parent process goes away (used by `podscope agent` for
    /// its trace children, so none outlive a killed agent).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,

    /// Trace every process on this machine (no filter).
    #[arg(long, conflicts_with_all = ["pid", "cgroup", "comm", "pod", "selector", "namespace", "all_namespaces", "container"])]
    pub all: bool,

    /// Only this process id (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,

    /// Only processes in this cgroup or below it (repeatable). A path under
    /// /sys/fs/cgroup (v1 controller paths are mapped to cgroup v2), or a path
    /// relative to the cgroup v2 root such as /kubepods/besteffort.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<PathBuf>,

    /// Only tasks with exactly this command name (at most 15 bytes, as the kernel keeps it).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Output format: aligned columns with human units, one JSON object per
    /// line, or none (with --metrics-listen: metrics only).
    #[arg(short, long, value_enum, default_value_t = TraceFormat::Columns)]
    pub output: TraceFormat,

    /// Stop after this long (e.g. 10s, 5m, 1h30m).
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many events (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_events: Option<u64>,

    /// Kernel ring buffer per probe: 'auto' sizes each probe's ring to hold
    /// --ring-budget at its expected peak rate (see docs/probes.md), or
    /// bytes (power of two, >= 4096; K/M suffixes allowed) for every probe.
    /// With ftrace: the instance's buffer per CPU (auto: ftrace's default).
    #[arg(long, value_name = "BYTES|auto", default_value = "auto", value_parser = parse_size)]
    pub ring_buffer_size: u32,

    /// http probe: bytes of each socket message copied for parsing (at most 16K).
    #[arg(long, value_name = "BYTES", default_value = "1K", value_parser = parse_capture)]
    pub http_capture_bytes: u32,

    /// http/grpc/tls: keep each request's and response's headers (-o json:
    /// capture.request_headers, .response_headers; OTLP: http.request.header.NAME).
    /// The values of Authorization, Proxy-Authorization, Cookie, Set-Cookie,
    /// X-Api-Key, X-Auth-Token, X-CSRF-Token, X-XSRF-Token and of every
    /// --redact-header name are never kept ("[redacted]").
    #[arg(long)]
    pub capture_headers: bool,

    /// http/grpc/tls: keep the first BYTES of each request and response
    /// body (HTTP/1, de-chunked; HTTP/2 and gRPC: the stream's DATA, padding
    /// removed; -o json: capture.request_body, .response_body), at most what
    /// the kernel copied (--http-capture-bytes per read or write). Values of
    /// JSON members and form fields named like secrets (password, token,
    /// secret, api_key, auth, session, ...) and Bearer/Basic tokens are
    /// "[redacted]".
    #[arg(long, value_name = "BYTES", value_parser = parse_capture)]
    pub capture_body: Option<u32>,

    /// A header whose value is never kept (repeatable or comma-separated),
    /// beside the built-in credential headers; in captured bodies, fields
    /// with this name are redacted too.
    #[arg(long = "redact-header", value_name = "NAME", value_delimiter = ',')]
    pub redact_header: Vec<String>,

    /// With --ring-buffer-size auto: how long each ring holds events at its
    /// probe's expected peak rate while user space cannot read (more: more
    /// kernel memory, fewer losses on a busy machine).
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = parse_duration)]
    pub ring_budget: Duration,

    /// syscalls probe: only these system calls, comma-separated names of this
    /// architecture (e.g. openat,connect,execve); default every call.
    #[arg(long = "syscall", value_name = "LIST", value_delimiter = ',')]
    pub syscall: Vec<String>,

    /// syscalls probe: only calls that failed (-errno), chosen in the kernel.
    #[arg(long)]
    pub errors_only: bool,

    /// syscalls probe: no event per call; per container and syscall, calls,
    /// errors, total/avg/p99 latency since the start, every --interval.
    #[arg(long, conflicts_with = "errors_only")]
    pub summary: bool,

    /// Tracepoints (tp:...): keep only records where FIELD OP VALUE holds,
    /// decided in the kernel; OP is == != < <= > >=, several joined by &&
    /// and || (&& binds tighter; no parentheses; at most 4 in all), strings
    /// quoted and compared with == or != only, one
    /// element of an integer array as FIELD[N] (e.g. 'len > 1000 && name ==
    /// "eth0"', 'args[0] == 3'). EVENT: before a clause makes it that
    /// tracepoint's, clauses joined by ; ('net_dev_xmit: len > 1000;
    /// kfree_skb: reason == 2'). A tracepoint lacking a field of the clause
    /// without a name is traced unfiltered (with a warning).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,

    /// net probe: a record per packet and stage (device queue, transmit,
    /// receive, drop) besides the per-flow totals.
    #[arg(long)]
    pub per_packet: bool,

    /// net probe: only packets of matching flows, each packet reported
    /// (implies --per-packet). Terms: tcp, udp, icmp, icmpv6, host ADDR,
    /// port N (source or destination), pod NAME (globs), joined with 'and',
    /// e.g. 'tcp and port 80 and host 10.0.0.5'. Protocol, port and host
    /// are decided in the kernel, pod after the pod is known.
    #[arg(long, value_name = "FILTER")]
    pub flow: Option<String>,

    /// How often the cache probe reports per-process totals, the
    /// syscalls probe its --summary and the net probe its flows.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics while tracing (e.g.
    /// 127.0.0.1:9464): per-pod counts from the probes, container CPU, memory
    /// and I/O from cgroups, pod network counters. See docs/metrics.md.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// With --metrics-listen: how long the series of a pod that went away are kept.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub metrics_grace: Duration,

    // --- OTLP export (docs/otlp.md) ---
    /// OTLP flags, boxed so they do not grow every `Command` variant.
    #[command(flatten)]
    pub otlp: Box<OtlpArgs>,
    // --- end OTLP ---
}

// --- OTLP export flags of `podscope trace` (docs/otlp.md) ---
/// OpenTelemetry export: spans per TCP connection and per session, log records.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "OpenTelemetry (OTLP) export")]
pub struct OtlpArgs {
    /// Send OpenTelemetry spans (one per TCP connection and HTTP request, one for the session)
    /// to the endpoint from OTEL_EXPORTER_OTLP_* (default http://localhost:4318,
    /// http/protobuf). Implied by the other --otlp flags. Through --hub: the
    /// agents export the session, each to its own --otlp-endpoint (a session
    /// span per node, syscall and tracepoint records as logs under it).
    #[arg(long = "otlp")]
    pub enabled: bool,

    /// OTLP endpoint base URL, e.g. http://127.0.0.1:4317 or
    /// https://collector:4317 (beats OTEL_EXPORTER_OTLP_ENDPOINT and the
    /// _TRACES_/_LOGS_ variants).
    #[arg(long = "otlp-endpoint", value_name = "URL")]
    pub endpoint: Option<String>,

    /// CA certificates (PEM) an https:// collector's certificate must chain
    /// to, instead of the system's (beats OTEL_EXPORTER_OTLP_CERTIFICATE).
    #[arg(long = "otlp-ca", value_name = "FILE")]
    pub ca: Option<String>,

    /// OTLP protocol (beats OTEL_EXPORTER_OTLP_PROTOCOL; default http/protobuf).
    #[arg(long = "otlp-protocol", value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub protocol: Option<String>,

    /// Header (gRPC metadata) for every OTLP request, KEY=VALUE (repeatable;
    /// beats the same key in OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(long = "otlp-header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,

    /// Also send these probes' events as OTLP log records (comma-separated, or
    /// 'all' for every traced probe).
    #[arg(long = "otlp-logs", value_name = "PROBES")]
    pub logs: Option<String>,

    /// Spans (and, separately, log records) held while the OTLP backend is
    /// slow or down; when full the oldest are dropped and counted (default 8192).
    #[arg(long = "otlp-queue-size", value_name = "N")]
    pub queue_size: Option<usize>,

    /// Events kept as span events on the session span (exec, exit, failed
    /// connects, resets, losses); the rest are counted as dropped events.
    #[arg(long = "otlp-session-events", value_name = "N", default_value_t = 1000)]
    pub session_events: usize,

    /// Which HTTP/gRPC request spans to export (needs the http or grpc
    /// probe). `requests`: every request; one that arrived with trace
    /// context (W3C traceparent or B3) joins that trace under the caller's
    /// span, one without starts a new trace. `requests-with-context`: only
    /// requests whose trace came from the wire (the rest are counted).
    /// Either way a request made while serving one is its child, and the
    /// two ends of a request between traced pods are joined by connection
    /// (docs/otlp.md, "Request traces").
    #[arg(long = "spans", value_name = "WHICH", value_parser = ["requests", "requests-with-context"])]
    pub spans: Option<String>,

    /// Kernel events of the serving thread (file opens, block I/O, TCP
    /// connects, DNS lookups, execs; when those probes are traced) kept as
    /// child spans of each SERVER span; the rest are counted on the span
    /// (podscope.trace.children_dropped). 0 for none.
    #[arg(long = "span-children", value_name = "N", default_value_t = 64)]
    pub span_children: usize,
}
// --- end OTLP export flags ---

/// Pod and container selection, kubectl style (shared by trace, ps and exec).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PodArgs {
    /// Pod name; globs allowed ('web-*').
    #[arg(long, value_name = "NAME")]
    pub pod: Option<String>,

    /// Namespace of the pods. trace: 'default' unless -A (as kubectl);
    /// ps: every namespace unless -n is given.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Pods in every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,

    /// Label selector: 'app=web', 'tier!=db', 'env in (prod,stage)', 'app' (comma = AND).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Container name in the chosen pods; globs allowed.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,

    /// Container runtime CRI socket (unix:///run/containerd/containerd.sock);
    /// found by itself when omitted, with a /proc scan as the fallback.
    /// Docker and podman containers are added from their Engine API sockets
    /// ($DOCKER_HOST, $CONTAINER_HOST, or the default sockets).
    #[arg(long, value_name = "ENDPOINT")]
    pub runtime_endpoint: Option<String>,
}

impl PodArgs {
    /// The pod flags, for the pipeline's one validator.
    pub fn flags(&self) -> podscope_pipeline::PodFlags {
        podscope_pipeline::PodFlags {
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            all_namespaces: self.all_namespaces,
            selector: self.selector.clone(),
            container: self.container.clone(),
        }
    }
}

/// `podscope trace -o`: the shared formats plus `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// Aligned columns with a header and human units.
    Columns,
    /// One JSON object per line (see docs/json-schema.md).
    Json,
    /// No event output (losses and the summary still go to stderr); for --metrics-listen.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header and human units.
    Columns,
    /// One JSON object per line (see docs/json-schema.md).
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); use e.g. 500ms, 10s, 5m, 1h"))?;
    if d.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    Ok(d)
}

/// `--http-capture-bytes`: 1..=16K (K suffix allowed).
fn parse_capture(s: &str) -> Result<u32, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.strip_suffix("kib").or(t.strip_suffix('k')) {
        Some(n) => (n.to_string(), 1024u64),
        None => (t.clone(), 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size; use e.g. 512, 1K, 16K"))?;
    let bytes = n * mult;
    if bytes == 0 || bytes > u64::from(podscope_bpf::HTTP_MAX_CAPTURE_BYTES) {
        return Err(format!(
            "capture size {bytes} must be between 1 and 16K bytes (e.g. 1K, 4K)"
        ));
    }
    Ok(bytes as u32)
}

fn parse_size(s: &str) -> Result<u32, String> {
    podscope_pipeline::parse_ring_size(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("256K").unwrap(), 256 << 10);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert!(parse_size("3000").unwrap_err().contains("power of two"));
        assert!(parse_size("1T").unwrap_err().contains("suffix"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("ten")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn all_conflicts_with_filters() {
        let r = Cli::try_parse_from(["podscope", "trace", "exec", "--all", "--pid", "1"]);
        assert!(r.is_err());
    }
}
