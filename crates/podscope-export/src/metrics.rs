//! The metric registry, the families the probes feed, and the per-event hot
//! path into them ([`Observer`]).
//!
//! Why the observer caches: `Family::get_or_create` hashes the label set (four
//! strings) and takes a lock on every call. The observer instead keeps, per
//! cgroup id, clones of the series handles it has used (atomics behind an
//! `Arc`), so an event costs one `u64` map lookup, three string comparisons
//! that check the cgroup still belongs to the same container, and an atomic
//! add. Series are only created (and labels allocated) the first time a
//! container produces a kind of event.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use podscope_model::{Event, EventData, Identity, ProbeKind, TcpKind};
use podscope_runtime::Pod;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::hist::{Buckets, Hist};
use crate::labels::{
    DiskLabels, DnsLabels, DropLabels, GrpcLabels, HttpClientLabels, HttpServerLabels, PodLabels,
    ProbeLabels,
};
use crate::resources::{Host, Resources};
use crate::selfstats::SelfStats;
use crate::text::{self, Format};
use crate::Error;

/// Upper bounds of the TCP connection lifetime histogram, in seconds.
const CONN_BUCKETS: [f64; 15] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// Upper bounds of the block I/O latency histogram, in seconds.
const BIO_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];
/// Upper bounds of the HTTP request and DNS query duration histograms, in
/// seconds: OpenTelemetry's HTTP duration buckets, with five below 5 ms for
/// requests answered inside the node.
const REQUEST_BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Distinct (service, method) pairs one container's gRPC series may name;
/// past it they are `_OTHER` (the path comes from the wire: a client sending
/// random paths must not make unbounded series).
const MAX_RPC_METHODS: usize = 64;
/// The observer forgets its cache beyond this many cgroups (host processes in
/// `--all` mode can come from many short-lived cgroups).
const MAX_CACHED_CGROUPS: usize = 8192;

fn conn_histogram() -> Hist {
    Hist::new(&CONN_BUCKETS)
}

fn bio_histogram() -> Hist {
    Hist::new(&BIO_BUCKETS)
}

fn request_histogram() -> Hist {
    Hist::new(&REQUEST_BUCKETS)
}

/// The method label: the methods of RFC 9110 and PATCH as sent, any other
/// `_OTHER` (as OpenTelemetry's conventions say), so a client sending
/// random methods cannot make unbounded series.
fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "none",
    }
}

/// The pod-labelled counters, in [`COUNTERS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum C {
    TcpConnects,
    TcpAccepts,
    TcpConnectFailures,
    TcpCloses,
    TcpRetransmits,
    TcpResetsSent,
    TcpResetsReceived,
    TcpSentBytes,
    TcpReceivedBytes,
    CacheHits,
    CacheMisses,
    CacheDirtied,
    Execs,
    ExecFailures,
    FileOpens,
    FileOpenFailures,
}

const NC: usize = 16;

/// One counter family: registered name (the client appends `_bytes` when
/// `bytes` is set, then `_total`), whether it counts bytes, and its HELP.
struct Spec {
    name: &'static str,
    bytes: bool,
    help: &'static str,
}

const COUNTERS: [Spec; NC] = [
    Spec {
        name: "podscope_tcp_connects",
        bytes: false,
        help: "TCP connections the container opened (active opens that reached ESTABLISHED)",
    },
    Spec {
        name: "podscope_tcp_accepts",
        bytes: false,
        help: "TCP connections the container accepted (passive opens)",
    },
    Spec {
        name: "podscope_tcp_connect_failures",
        bytes: false,
        help: "TCP connects of the container that failed (refused, timed out, reset during the handshake)",
    },
    Spec {
        name: "podscope_tcp_closes",
        bytes: false,
        help: "TCP connections of the container that closed after being seen opening",
    },
    Spec {
        name: "podscope_tcp_retransmits",
        bytes: false,
        help: "TCP segments the container's connections retransmitted",
    },
    Spec {
        name: "podscope_tcp_resets_sent",
        bytes: false,
        help: "TCP resets the container's connections sent",
    },
    Spec {
        name: "podscope_tcp_resets_received",
        bytes: false,
        help: "TCP resets the container's connections received",
    },
    Spec {
        name: "podscope_tcp_sent",
        bytes: true,
        help: "TCP payload bytes the container sent, counted when each connection closes",
    },
    Spec {
        name: "podscope_tcp_received",
        bytes: true,
        help: "TCP payload bytes the container received, counted when each connection closes",
    },
    Spec {
        name: "podscope_page_cache_hits",
        bytes: false,
        help: "Page lookups of the container served from the page cache",
    },
    Spec {
        name: "podscope_page_cache_misses",
        bytes: false,
        help: "Page lookups of the container that missed the page cache and had to read",
    },
    Spec {
        name: "podscope_page_cache_dirtied",
        bytes: false,
        help: "Page-cache pages the container dirtied (wrote)",
    },
    Spec {
        name: "podscope_execs",
        bytes: false,
        help: "Program executions (execve) in the container, failed ones included",
    },
    Spec {
        name: "podscope_exec_failures",
        bytes: false,
        help: "Program executions (execve) in the container that failed",
    },
    Spec {
        name: "podscope_file_opens",
        bytes: false,
        help: "File opens (open, openat, openat2) in the container, failed ones included",
    },
    Spec {
        name: "podscope_file_open_failures",
        bytes: false,
        help: "File opens in the container that failed",
    },
];

/// Every family fed by events, plus podscope's own counters.
#[derive(Debug)]
struct Families {
    counters: Vec<Family<PodLabels, Counter>>,
    active: Family<PodLabels, Gauge>,
    duration: Family<PodLabels, Hist, fn() -> Hist>,
    bio_ops: Family<DiskLabels, Counter>,
    bio_bytes: Family<DiskLabels, Counter>,
    bio_latency: Family<DiskLabels, Hist, fn() -> Hist>,
    http_server: Family<HttpServerLabels, Counter>,
    http_server_duration: Family<HttpServerLabels, Hist, fn() -> Hist>,
    http_client: Family<HttpClientLabels, Counter>,
    http_client_duration: Family<HttpClientLabels, Hist, fn() -> Hist>,
    dns_queries: Family<DnsLabels, Counter>,
    packet_drops: Family<DropLabels, Counter>,
    dns_duration: Family<PodLabels, Hist, fn() -> Hist>,
    grpc_server: Family<GrpcLabels, Counter>,
    grpc_server_duration: Family<GrpcLabels, Hist, fn() -> Hist>,
    grpc_client: Family<GrpcLabels, Counter>,
    grpc_client_duration: Family<GrpcLabels, Hist, fn() -> Hist>,
    probe_events: Family<ProbeLabels, Counter>,
    probe_lost: Family<ProbeLabels, Counter>,
    pods_tracked: Gauge,
    discovery_errors: Counter,
    removed_pods: Counter,
}

impl Families {
    fn register(reg: &mut Registry) -> Families {
        let counters: Vec<Family<PodLabels, Counter>> = COUNTERS
            .iter()
            .map(|spec| {
                let f = Family::<PodLabels, Counter>::default();
                if spec.bytes {
                    reg.register_with_unit(spec.name, spec.help, Unit::Bytes, f.clone());
                } else {
                    reg.register(spec.name, spec.help, f.clone());
                }
                f
            })
            .collect();
        let active = Family::<PodLabels, Gauge>::default();
        reg.register(
            "podscope_tcp_active_connections",
            "TCP connections of the container open now (connects and accepts seen, minus closes)",
            active.clone(),
        );
        let duration: Family<PodLabels, Hist, fn() -> Hist> =
            Family::new_with_constructor(conn_histogram);
        reg.register_with_unit(
            "podscope_tcp_connection_duration",
            "Lifetime of the container's TCP connections, from connect or accept to close",
            Unit::Seconds,
            duration.clone(),
        );
        let bio_ops = Family::<DiskLabels, Counter>::default();
        reg.register(
            "podscope_block_io_operations",
            "Block I/O requests the container issued that completed, by disk and operation",
            bio_ops.clone(),
        );
        let bio_bytes = Family::<DiskLabels, Counter>::default();
        reg.register_with_unit(
            "podscope_block_io",
            "Bytes the container's completed block I/O requests transferred, by disk and operation",
            Unit::Bytes,
            bio_bytes.clone(),
        );
        let bio_latency: Family<DiskLabels, Hist, fn() -> Hist> =
            Family::new_with_constructor(bio_histogram);
        reg.register_with_unit(
            "podscope_block_io_latency",
            "Block I/O latency of the container's requests, from issue to the driver until completion",
            Unit::Seconds,
            bio_latency.clone(),
        );
        let http_server = Family::<HttpServerLabels, Counter>::default();
        reg.register(
            "podscope_http_server_requests",
            "HTTP requests the container answered, by method and status class",
            http_server.clone(),
        );
        let http_server_duration: Family<HttpServerLabels, Hist, fn() -> Hist> =
            Family::new_with_constructor(request_histogram);
        reg.register_with_unit(
            "podscope_http_server_request_duration",
            "Duration of the HTTP requests the container answered, from the request's first byte to the response's last",
            Unit::Seconds,
            http_server_duration.clone(),
        );
        let http_client = Family::<HttpClientLabels, Counter>::default();
        reg.register(
            "podscope_http_client_requests",
            "HTTP requests the container sent, by method, status class and the server's pod (empty: not a known pod)",
            http_client.clone(),
        );
        let http_client_duration: Family<HttpClientLabels, Hist, fn() -> Hist> =
            Family::new_with_constructor(request_histogram);
        reg.register_with_unit(
            "podscope_http_client_request_duration",
            "Duration of the HTTP requests the container sent, from the request's first byte to the response's last",
            Unit::Seconds,
            http_client_duration.clone(),
        );
        let packet_drops = Family::<DropLabels, Counter>::default();
        reg.register(
            "podscope_packet_drops",
            "Packets of the pod the kernel dropped (skb:kfree_skb), by drop reason",
            packet_drops.clone(),
        );
        let dns_queries = Family::<DnsLabels, Counter>::default();
        reg.register(
            "podscope_dns_queries",
            "DNS queries the container sent, by response code (none: no response)",
            dns_queries.clone(),
        );
        let dns_duration: Family<PodLabels, Hist, fn() -> Hist> =
            Family::new_with_constructor(request_histogram);
        reg.register_with_unit(
            "podscope_dns_query_duration",
            "Time from each DNS query the container sent to its response",
            Unit::Seconds,
            dns_duration.clone(),
        );
        let grpc_server = Family::<GrpcLabels, Counter>::default();
        reg.register(
            "podscope_grpc_server_calls",
            "gRPC calls the container answered, by service, method and status",
            grpc_server.clone(),
        );
        let grpc_server_duration: Family<GrpcLabels, Hist, fn() -> Hist> =
            Family::new_with_constructor(request_histogram);
        reg.register_with_unit(
            "podscope_grpc_server_call_duration",
            "Duration of the gRPC calls the container answered",
            Unit::Seconds,
            grpc_server_duration.clone(),
        );
        let grpc_client = Family::<GrpcLabels, Counter>::default();
        reg.register(
            "podscope_grpc_client_calls",
            "gRPC calls the container made, by service, method, status and the server's pod",
            grpc_client.clone(),
        );
        let grpc_client_duration: Family<GrpcLabels, Hist, fn() -> Hist> =
            Family::new_with_constructor(request_histogram);
        reg.register_with_unit(
            "podscope_grpc_client_call_duration",
            "Duration of the gRPC calls the container made",
            Unit::Seconds,
            grpc_client_duration.clone(),
        );
        let probe_events = Family::<ProbeLabels, Counter>::default();
        reg.register(
            "podscope_probe_events",
            "Events each probe delivered from the kernel to podscope",
            probe_events.clone(),
        );
        let probe_lost = Family::<ProbeLabels, Counter>::default();
        reg.register(
            "podscope_probe_lost_events",
            "Events each probe lost (ring buffer full, tracking map full, or undecodable)",
            probe_lost.clone(),
        );
        let pods_tracked = Gauge::default();
        reg.register(
            "podscope_pods_tracked",
            "Pods podscope currently tracks on this node (after pod selection)",
            pods_tracked.clone(),
        );
        let discovery_errors = Counter::default();
        reg.register(
            "podscope_pod_discovery_errors",
            "Failed attempts to list the node's pods from the container runtime",
            discovery_errors.clone(),
        );
        let removed_pods = Counter::default();
        reg.register(
            "podscope_pod_series_removals",
            "Pods whose series were removed because the pod had been gone longer than the grace period",
            removed_pods.clone(),
        );
        Families {
            counters,
            active,
            duration,
            bio_ops,
            bio_bytes,
            bio_latency,
            http_server,
            http_server_duration,
            http_client,
            http_client_duration,
            dns_queries,
            packet_drops,
            dns_duration,
            grpc_server,
            grpc_server_duration,
            grpc_client,
            grpc_client_duration,
            probe_events,
            probe_lost,
            pods_tracked,
            discovery_errors,
            removed_pods,
        }
    }
}

/// Every label set created for one pod, so they can be removed together.
#[derive(Debug)]
struct Tracked {
    pod_labels: Vec<PodLabels>,
    disk_labels: Vec<DiskLabels>,
    http_server: Vec<HttpServerLabels>,
    http_client: Vec<HttpClientLabels>,
    dns: Vec<DnsLabels>,
    drops: Vec<DropLabels>,
    grpc: Vec<GrpcLabels>,
    last_live: Instant,
}

/// The metric registry and its families; shared by the tracing thread (via
/// [`Observer`]), the HTTP server and the pod watcher.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    fam: Families,
    resources: Arc<Resources>,
    accel: Arc<crate::accel::AccelMetrics>,
    node: String,
    grace: Duration,
    /// Bumped whenever series are removed: observers drop their cached handles.
    generation: AtomicU64,
    /// (namespace, pod) -> its label sets.
    series: Mutex<HashMap<(String, String), Tracked>>,
    probe_seen: Mutex<HashMap<ProbeKind, (u64, u64)>>,
    last_render_len: AtomicU64,
    last_discovery_error: Mutex<Option<String>>,
}

impl Metrics {
    /// A registry with every family. `node` is the `node` label; series of
    /// pods gone for longer than `grace` are removed by [`set_pods`](Self::set_pods).
    pub fn new(node: impl Into<String>, grace: Duration) -> Arc<Metrics> {
        Metrics::with_host(node, grace, Host::detect())
    }

    /// [`new`](Self::new), reading cgroups and /proc where `host` says.
    pub fn with_host(node: impl Into<String>, grace: Duration, host: Host) -> Arc<Metrics> {
        let node = node.into();
        let mut registry = Registry::default();
        let fam = Families::register(&mut registry);
        let resources = Arc::new(Resources::new(node.clone(), host));
        registry.register_collector(Box::new(resources.clone()));
        registry.register_collector(Box::new(SelfStats));
        let accel = Arc::new(crate::accel::AccelMetrics::new(node.clone()));
        registry.register_collector(Box::new(accel.clone()));
        Arc::new(Metrics {
            registry,
            fam,
            resources,
            accel,
            node,
            grace,
            generation: AtomicU64::new(0),
            series: Mutex::new(HashMap::new()),
            probe_seen: Mutex::new(HashMap::new()),
            last_render_len: AtomicU64::new(16 * 1024),
            last_discovery_error: Mutex::new(None),
        })
    }

    /// The node label.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A hot-path handle for one tracing thread.
    pub fn observer(self: &Arc<Self>) -> Observer {
        Observer {
            metrics: self.clone(),
            generation: self.generation.load(Ordering::Acquire),
            cache: HashMap::new(),
        }
    }

    /// Records a probe's cumulative counts (from the tracer's stats); counters
    /// advance by the difference since the last call.
    pub fn probe_stats(&self, probe: ProbeKind, events: u64, lost: u64) {
        let mut seen = self
            .probe_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let last = seen.entry(probe).or_default();
        let labels = ProbeLabels {
            probe: probe.name().to_owned(),
        };
        self.fam
            .probe_events
            .get_or_create(&labels)
            .inc_by(events.saturating_sub(last.0));
        self.fam
            .probe_lost
            .get_or_create(&labels)
            .inc_by(lost.saturating_sub(last.1));
        *last = (events.max(last.0), lost.max(last.1));
    }

    /// The node's (selected) pods as the runtime lists them now: updates the
    /// resource targets and `podscope_pods_tracked`, and removes the series of
    /// pods that have been gone for longer than the grace period.
    pub fn set_pods(&self, pods: &[Pod]) {
        self.resources.update(pods);
        self.accel.update(pods);
        self.fam.pods_tracked.set(pods.len() as i64);
        let live: HashSet<(&str, &str)> = pods
            .iter()
            .map(|p| (p.namespace.as_str(), p.name.as_str()))
            .collect();
        self.retire(&live, Instant::now());
    }

    /// Notes a failed pod listing (the previous pod list stays in force).
    pub fn discovery_failed(&self, error: &str) {
        self.fam.discovery_errors.inc();
        *self
            .last_discovery_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_owned());
    }

    /// The last pod-listing error, if any.
    pub fn last_discovery_error(&self) -> Option<String> {
        self.last_discovery_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every container's counts so far (the same series `/metrics` shows),
    /// with its CPU seconds and memory from cgroups: what the views (`podscope
    /// top`) turn into rates. Reads the series, never creates one.
    pub fn snapshot(&self) -> Vec<ContainerSample> {
        let mut out: HashMap<(String, String, String), ContainerSample> = HashMap::new();
        fn entry<'a>(
            out: &'a mut HashMap<(String, String, String), ContainerSample>,
            ns: &str,
            pod: &str,
            container: &str,
        ) -> &'a mut ContainerSample {
            out.entry((ns.to_owned(), pod.to_owned(), container.to_owned()))
                .or_insert_with(|| ContainerSample::new(ns, pod, container))
        }
        {
            let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            for t in series.values() {
                for l in &t.pod_labels {
                    let s = entry(&mut out, &l.namespace, &l.pod, &l.container);
                    let get = |c: C| self.fam.counters[c as usize].get(l).map_or(0, |m| m.get());
                    s.execs = get(C::Execs);
                    s.exec_failures = get(C::ExecFailures);
                    s.tcp_connects = get(C::TcpConnects);
                    s.tcp_accepts = get(C::TcpAccepts);
                    s.tcp_connect_failures = get(C::TcpConnectFailures);
                    s.tcp_retransmits = get(C::TcpRetransmits);
                    s.tcp_sent_bytes = get(C::TcpSentBytes);
                    s.tcp_received_bytes = get(C::TcpReceivedBytes);
                    s.file_opens = get(C::FileOpens);
                    s.file_open_failures = get(C::FileOpenFailures);
                    s.cache_hits = get(C::CacheHits);
                    s.cache_misses = get(C::CacheMisses);
                    s.tcp_active = self.fam.active.get(l).map_or(0, |g| g.get());
                }
                for l in &t.disk_labels {
                    let s = entry(&mut out, &l.namespace, &l.pod, &l.container);
                    s.bio_ops += self.fam.bio_ops.get(l).map_or(0, |m| m.get());
                    s.bio_bytes += self.fam.bio_bytes.get(l).map_or(0, |m| m.get());
                    if let Some(h) = self.fam.bio_latency.get(l) {
                        s.bio_latency.add(&h.snapshot());
                    }
                }
                for l in &t.http_server {
                    let s = entry(&mut out, &l.namespace, &l.pod, &l.container);
                    let n = self.fam.http_server.get(l).map_or(0, |m| m.get());
                    s.requests_served += n;
                    if l.status_class == "5xx" {
                        s.requests_failed += n;
                    }
                    if let Some(h) = self.fam.http_server_duration.get(l) {
                        s.request_duration.add(&h.snapshot());
                    }
                }
                for l in &t.http_client {
                    let s = entry(&mut out, &l.namespace, &l.pod, &l.container);
                    s.requests_made += self.fam.http_client.get(l).map_or(0, |m| m.get());
                }
                for l in &t.grpc {
                    // A served gRPC call is an HTTP/2 request above (status
                    // 200): a non-OK grpc-status is its failure.
                    if l.grpc_status != "OK" && l.grpc_status != "none" {
                        let s = entry(&mut out, &l.namespace, &l.pod, &l.container);
                        s.requests_failed += self.fam.grpc_server.get(l).map_or(0, |m| m.get());
                    }
                }
            }
        }
        for u in self.resources.usage() {
            let s = entry(&mut out, &u.namespace, &u.pod, &u.container);
            s.cpu_seconds = u.cpu_seconds;
            s.memory_bytes = u.memory_bytes;
        }
        let mut v: Vec<ContainerSample> = out.into_values().collect();
        v.sort_by(|a, b| {
            (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
        });
        v
    }

    /// Removes the series of pods not in `live` whose grace period has passed.
    fn retire(&self, live: &HashSet<(&str, &str)>, now: Instant) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut removed = 0u64;
        series.retain(|(ns, pod), t| {
            // Host processes (no pod) are never retired.
            if pod.is_empty() || live.contains(&(ns.as_str(), pod.as_str())) {
                t.last_live = now;
                return true;
            }
            if now.duration_since(t.last_live) <= self.grace {
                return true;
            }
            for l in &t.pod_labels {
                for f in &self.fam.counters {
                    f.remove(l);
                }
                self.fam.active.remove(l);
                self.fam.duration.remove(l);
                self.fam.dns_duration.remove(l);
            }
            for l in &t.disk_labels {
                self.fam.bio_ops.remove(l);
                self.fam.bio_bytes.remove(l);
                self.fam.bio_latency.remove(l);
            }
            for l in &t.http_server {
                self.fam.http_server.remove(l);
                self.fam.http_server_duration.remove(l);
            }
            for l in &t.http_client {
                self.fam.http_client.remove(l);
                self.fam.http_client_duration.remove(l);
            }
            for l in &t.dns {
                self.fam.dns_queries.remove(l);
            }
            for l in &t.drops {
                self.fam.packet_drops.remove(l);
            }
            for l in &t.grpc {
                for f in [&self.fam.grpc_server, &self.fam.grpc_client] {
                    f.remove(l);
                }
                self.fam.grpc_server_duration.remove(l);
                self.fam.grpc_client_duration.remove(l);
            }
            removed += 1;
            false
        });
        if removed > 0 {
            self.fam.removed_pods.inc_by(removed);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Remembers a series' labels under its pod, so the series can be removed with the pod.
    fn track<T: Clone + PartialEq>(
        &self,
        namespace: &str,
        pod: &str,
        labels: &T,
        list: impl FnOnce(&mut Tracked) -> &mut Vec<T>,
    ) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let t = series
            .entry((namespace.to_owned(), pod.to_owned()))
            .or_insert_with(|| Tracked {
                pod_labels: Vec::new(),
                disk_labels: Vec::new(),
                http_server: Vec::new(),
                http_client: Vec::new(),
                dns: Vec::new(),
                drops: Vec::new(),
                grpc: Vec::new(),
                last_live: Instant::now(),
            });
        let l = list(t);
        if !l.contains(labels) {
            l.push(labels.clone());
        }
    }

    fn track_pod_labels(&self, labels: &PodLabels) {
        self.track(&labels.namespace, &labels.pod, labels, |t| {
            &mut t.pod_labels
        });
    }

    fn track_disk_labels(&self, labels: &DiskLabels) {
        self.track(&labels.namespace, &labels.pod, labels, |t| {
            &mut t.disk_labels
        });
    }

    fn counter(&self, c: C, labels: &PodLabels) -> Counter {
        self.track_pod_labels(labels);
        self.fam.counters[c as usize].get_or_create_owned(labels)
    }

    fn active_gauge(&self, labels: &PodLabels) -> Gauge {
        self.track_pod_labels(labels);
        self.fam.active.get_or_create_owned(labels)
    }

    fn duration_histogram(&self, labels: &PodLabels) -> Hist {
        self.track_pod_labels(labels);
        self.fam.duration.get_or_create_owned(labels)
    }

    fn disk_series(&self, pod: &PodLabels, disk: &str, op: &str) -> DiskSlot {
        let labels = DiskLabels {
            namespace: pod.namespace.clone(),
            pod: pod.pod.clone(),
            container: pod.container.clone(),
            node: pod.node.clone(),
            disk: disk.to_owned(),
            op: op.to_owned(),
        };
        self.track_disk_labels(&labels);
        DiskSlot {
            ops: self.fam.bio_ops.get_or_create_owned(&labels),
            bytes: self.fam.bio_bytes.get_or_create_owned(&labels),
            latency: self.fam.bio_latency.get_or_create_owned(&labels),
            disk: labels.disk,
            op: labels.op,
        }
    }

    fn request_series(
        &self,
        pod: &PodLabels,
        server: bool,
        method: &'static str,
        class: &'static str,
        peer_namespace: &str,
        peer_pod: &str,
    ) -> RequestSlot {
        let (count, duration) = if server {
            let labels = HttpServerLabels {
                namespace: pod.namespace.clone(),
                pod: pod.pod.clone(),
                container: pod.container.clone(),
                node: pod.node.clone(),
                method: method.to_owned(),
                status_class: class.to_owned(),
            };
            self.track(&pod.namespace, &pod.pod, &labels, |t| &mut t.http_server);
            (
                self.fam.http_server.get_or_create_owned(&labels),
                self.fam.http_server_duration.get_or_create_owned(&labels),
            )
        } else {
            let labels = HttpClientLabels {
                namespace: pod.namespace.clone(),
                pod: pod.pod.clone(),
                container: pod.container.clone(),
                node: pod.node.clone(),
                method: method.to_owned(),
                status_class: class.to_owned(),
                peer_namespace: peer_namespace.to_owned(),
                peer_pod: peer_pod.to_owned(),
            };
            self.track(&pod.namespace, &pod.pod, &labels, |t| &mut t.http_client);
            (
                self.fam.http_client.get_or_create_owned(&labels),
                self.fam.http_client_duration.get_or_create_owned(&labels),
            )
        };
        RequestSlot {
            server,
            method,
            class,
            peer_namespace: peer_namespace.to_owned(),
            peer_pod: peer_pod.to_owned(),
            count,
            duration,
        }
    }

    fn dns_counter(&self, pod: &PodLabels, rcode: &str) -> Counter {
        let labels = DnsLabels {
            namespace: pod.namespace.clone(),
            pod: pod.pod.clone(),
            container: pod.container.clone(),
            node: pod.node.clone(),
            rcode: rcode.to_owned(),
        };
        self.track(&pod.namespace, &pod.pod, &labels, |t| &mut t.dns);
        self.fam.dns_queries.get_or_create_owned(&labels)
    }

    fn drop_counter(&self, pod: &PodLabels, reason: &str) -> Counter {
        let labels = DropLabels {
            namespace: pod.namespace.clone(),
            pod: pod.pod.clone(),
            node: pod.node.clone(),
            reason: reason.to_owned(),
        };
        self.track(&pod.namespace, &pod.pod, &labels, |t| &mut t.drops);
        self.fam.packet_drops.get_or_create_owned(&labels)
    }

    fn rpc_series(&self, labels: GrpcLabels, server: bool) -> RpcSlot {
        self.track(&labels.namespace, &labels.pod, &labels, |t| &mut t.grpc);
        let (count, duration) = if server {
            (
                self.fam.grpc_server.get_or_create_owned(&labels),
                self.fam.grpc_server_duration.get_or_create_owned(&labels),
            )
        } else {
            (
                self.fam.grpc_client.get_or_create_owned(&labels),
                self.fam.grpc_client_duration.get_or_create_owned(&labels),
            )
        };
        RpcSlot {
            server,
            labels,
            count,
            duration,
        }
    }

    fn dns_histogram(&self, labels: &PodLabels) -> Hist {
        self.track_pod_labels(labels);
        self.fam.dns_duration.get_or_create_owned(labels)
    }

    /// The exposition in `format` (Prometheus text 0.0.4 or OpenMetrics 1.0).
    pub fn render(&self, format: Format) -> Result<String, Error> {
        let hint = self.last_render_len.load(Ordering::Relaxed) as usize;
        let mut om = String::with_capacity(hint + hint / 8);
        prometheus_client::encoding::text::encode(&mut om, &self.registry)?;
        self.last_render_len
            .store(om.len() as u64, Ordering::Relaxed);
        Ok(match format {
            Format::OpenMetrics => om,
            Format::Prometheus => text::openmetrics_to_prometheus(&om),
        })
    }
}

/// One container's counts since the metrics began ([`Metrics::snapshot`]).
/// Counters only grow (until the pod's series are removed); rates are the
/// difference of two samples.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSample {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub execs: u64,
    pub exec_failures: u64,
    pub tcp_connects: u64,
    pub tcp_accepts: u64,
    pub tcp_connect_failures: u64,
    pub tcp_retransmits: u64,
    /// Payload bytes, counted when each connection closes.
    pub tcp_sent_bytes: u64,
    pub tcp_received_bytes: u64,
    /// Connections open now.
    pub tcp_active: i64,
    pub file_opens: u64,
    pub file_open_failures: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub bio_ops: u64,
    pub bio_bytes: u64,
    /// Block I/O latency, seconds, all disks.
    pub bio_latency: Buckets,
    /// HTTP/1, HTTP/2 and gRPC requests the container served.
    pub requests_served: u64,
    /// Of those: 5xx answers and gRPC calls that ended non-OK.
    pub requests_failed: u64,
    /// Served requests' duration, seconds.
    pub request_duration: Buckets,
    /// Requests the container made (as a client).
    pub requests_made: u64,
    /// CPU time used, seconds (cgroup).
    pub cpu_seconds: Option<f64>,
    /// Memory working set, bytes (cgroup).
    pub memory_bytes: Option<u64>,
}

impl ContainerSample {
    /// Nothing counted yet.
    pub fn new(namespace: &str, pod: &str, container: &str) -> ContainerSample {
        ContainerSample {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
            execs: 0,
            exec_failures: 0,
            tcp_connects: 0,
            tcp_accepts: 0,
            tcp_connect_failures: 0,
            tcp_retransmits: 0,
            tcp_sent_bytes: 0,
            tcp_received_bytes: 0,
            tcp_active: 0,
            file_opens: 0,
            file_open_failures: 0,
            cache_hits: 0,
            cache_misses: 0,
            bio_ops: 0,
            bio_bytes: 0,
            bio_latency: Buckets::empty(&BIO_BUCKETS),
            requests_served: 0,
            requests_failed: 0,
            request_duration: Buckets::empty(&REQUEST_BUCKETS),
            requests_made: 0,
            cpu_seconds: None,
            memory_bytes: None,
        }
    }
}

/// Cached handles of one block device and operation.
#[derive(Debug)]
struct DiskSlot {
    disk: String,
    op: String,
    ops: Counter,
    bytes: Counter,
    latency: Hist,
}

/// Cached handles of one kind of HTTP request of one container.
#[derive(Debug)]
struct RequestSlot {
    server: bool,
    method: &'static str,
    class: &'static str,
    peer_namespace: String,
    peer_pod: String,
    count: Counter,
    duration: Hist,
}

/// Cached handles of one kind of gRPC call of one container.
#[derive(Debug)]
struct RpcSlot {
    server: bool,
    labels: GrpcLabels,
    count: Counter,
    duration: Hist,
}

/// Cached handles of one container (one cgroup id).
#[derive(Debug)]
struct Slot {
    labels: PodLabels,
    counters: [Option<Counter>; NC],
    active: Option<Gauge>,
    duration: Option<Hist>,
    disks: Vec<DiskSlot>,
    requests: Vec<RequestSlot>,
    dns: Vec<(String, Counter)>,
    drops: Vec<(String, Counter)>,
    dns_duration: Option<Hist>,
    rpcs: Vec<RpcSlot>,
}

impl Slot {
    fn new(node: &str, id: &Identity) -> Slot {
        Slot {
            labels: PodLabels {
                namespace: id.namespace.clone(),
                pod: id.pod.clone(),
                container: id.container.clone(),
                node: node.to_owned(),
            },
            counters: Default::default(),
            active: None,
            duration: None,
            disks: Vec::new(),
            requests: Vec::new(),
            dns: Vec::new(),
            drops: Vec::new(),
            dns_duration: None,
            rpcs: Vec::new(),
        }
    }

    fn is_for(&self, id: &Identity) -> bool {
        self.labels.pod == id.pod
            && self.labels.container == id.container
            && self.labels.namespace == id.namespace
    }

    fn inc(&mut self, m: &Metrics, c: C, by: u64) {
        let labels = &self.labels;
        self.counters[c as usize]
            .get_or_insert_with(|| m.counter(c, labels))
            .inc_by(by);
    }

    fn active(&mut self, m: &Metrics) -> &Gauge {
        let labels = &self.labels;
        self.active.get_or_insert_with(|| m.active_gauge(labels))
    }

    fn disk(&mut self, m: &Metrics, disk: &str, op: &str) -> &DiskSlot {
        let i = match self.disks.iter().position(|d| d.disk == disk && d.op == op) {
            Some(i) => i,
            None => {
                self.disks.push(m.disk_series(&self.labels, disk, op));
                self.disks.len() - 1
            }
        };
        &self.disks[i]
    }

    fn request(&mut self, m: &Metrics, h: &podscope_model::HttpEvent) -> &RequestSlot {
        let server = h.role == "server";
        let method = method_label(&h.method);
        let class = status_class(h.status);
        // A server's series carry no peer: the peer of a served request is
        // every client's own pod, an unbounded set.
        let (pns, ppod) = if server {
            ("", "")
        } else {
            (h.peer_namespace.as_str(), h.peer_pod.as_str())
        };
        let i = match self.requests.iter().position(|r| {
            r.server == server
                && r.method == method
                && r.class == class
                && r.peer_pod == ppod
                && r.peer_namespace == pns
        }) {
            Some(i) => i,
            None => {
                self.requests.push(m.request_series(
                    &self.labels,
                    server,
                    method,
                    class,
                    pns,
                    ppod,
                ));
                self.requests.len() - 1
            }
        };
        &self.requests[i]
    }

    fn rpc(
        &mut self,
        m: &Metrics,
        h: &podscope_model::HttpEvent,
        r: &podscope_model::RpcInfo,
    ) -> &RpcSlot {
        let server = h.role == "server";
        let status = r.status.map_or("none", podscope_model::grpc_code_name);
        let (pns, ppod) = if server {
            ("", "")
        } else {
            (h.peer_namespace.as_str(), h.peer_pod.as_str())
        };
        let known = |s: &RpcSlot| s.labels.service == r.service && s.labels.method == r.method;
        let (service, method) = if self.rpcs.iter().any(known) {
            (r.service.as_str(), r.method.as_str())
        } else {
            let mut distinct: Vec<(&str, &str)> = self
                .rpcs
                .iter()
                .map(|s| (s.labels.service.as_str(), s.labels.method.as_str()))
                .collect();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() >= MAX_RPC_METHODS {
                ("_OTHER", "_OTHER")
            } else {
                (r.service.as_str(), r.method.as_str())
            }
        };
        let i = match self.rpcs.iter().position(|s| {
            s.server == server
                && s.labels.service == service
                && s.labels.method == method
                && s.labels.grpc_status == status
                && s.labels.peer_pod == ppod
                && s.labels.peer_namespace == pns
        }) {
            Some(i) => i,
            None => {
                let labels = GrpcLabels {
                    namespace: self.labels.namespace.clone(),
                    pod: self.labels.pod.clone(),
                    container: self.labels.container.clone(),
                    node: self.labels.node.clone(),
                    service: service.to_owned(),
                    method: method.to_owned(),
                    grpc_status: status.to_owned(),
                    peer_namespace: pns.to_owned(),
                    peer_pod: ppod.to_owned(),
                };
                self.rpcs.push(m.rpc_series(labels, server));
                self.rpcs.len() - 1
            }
        };
        &self.rpcs[i]
    }

    fn dns(&mut self, m: &Metrics, rcode: &str) -> &Counter {
        let i = match self.dns.iter().position(|(r, _)| r == rcode) {
            Some(i) => i,
            None => {
                self.dns
                    .push((rcode.to_owned(), m.dns_counter(&self.labels, rcode)));
                self.dns.len() - 1
            }
        };
        &self.dns[i].1
    }

    fn packet_drop(&mut self, m: &Metrics, reason: &str) -> &Counter {
        let i = match self.drops.iter().position(|(r, _)| r == reason) {
            Some(i) => i,
            None => {
                self.drops
                    .push((reason.to_owned(), m.drop_counter(&self.labels, reason)));
                self.drops.len() - 1
            }
        };
        &self.drops[i].1
    }
}

/// The per-event path into [`Metrics`]: one per tracing thread, not shared.
#[derive(Debug)]
pub struct Observer {
    metrics: Arc<Metrics>,
    generation: u64,
    cache: HashMap<u64, Slot>,
}

impl Observer {
    /// The metrics this observer feeds.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts one enriched event (its `identity` filled in by the enrich stage).
    pub fn observe(&mut self, ev: &Event) {
        if matches!(ev.data, EventData::Exit(_)) {
            return;
        }
        let generation = self.metrics.generation.load(Ordering::Acquire);
        if generation != self.generation {
            // Some pod's series were removed: the cached handles may point at them.
            self.cache.clear();
            self.generation = generation;
        }
        if self.cache.len() >= MAX_CACHED_CGROUPS && !self.cache.contains_key(&ev.cgroup_id) {
            self.cache.clear();
        }
        let m: &Metrics = &self.metrics;
        let slot = self
            .cache
            .entry(ev.cgroup_id)
            .or_insert_with(|| Slot::new(&m.node, &ev.identity));
        if !slot.is_for(&ev.identity) {
            // The cgroup id was reused, or the event's pod was named late.
            *slot = Slot::new(&m.node, &ev.identity);
        }
        match &ev.data {
            EventData::Tcp(t) => match t.kind {
                TcpKind::Connect => {
                    slot.inc(m, C::TcpConnects, 1);
                    slot.active(m).inc();
                }
                TcpKind::Accept => {
                    slot.inc(m, C::TcpAccepts, 1);
                    slot.active(m).inc();
                }
                TcpKind::Close => {
                    slot.inc(m, C::TcpCloses, 1);
                    slot.active(m).dec();
                    if let Some(ns) = t.duration_ns {
                        let labels = &slot.labels;
                        slot.duration
                            .get_or_insert_with(|| m.duration_histogram(labels))
                            .observe(ns as f64 / 1e9);
                    }
                    if let Some(b) = t.tx_bytes.filter(|b| *b > 0) {
                        slot.inc(m, C::TcpSentBytes, b);
                    }
                    if let Some(b) = t.rx_bytes.filter(|b| *b > 0) {
                        slot.inc(m, C::TcpReceivedBytes, b);
                    }
                }
                TcpKind::ConnectFailed => slot.inc(m, C::TcpConnectFailures, 1),
                TcpKind::Retransmit => slot.inc(m, C::TcpRetransmits, 1),
                TcpKind::ResetSent => slot.inc(m, C::TcpResetsSent, 1),
                TcpKind::ResetReceived => slot.inc(m, C::TcpResetsReceived, 1),
            },
            EventData::Exec(e) => {
                slot.inc(m, C::Execs, 1);
                if e.retval != 0 {
                    slot.inc(m, C::ExecFailures, 1);
                }
            }
            EventData::Open(o) => {
                slot.inc(m, C::FileOpens, 1);
                if o.errno.is_some() {
                    slot.inc(m, C::FileOpenFailures, 1);
                }
            }
            EventData::Cache(c) => {
                if c.hits > 0 {
                    slot.inc(m, C::CacheHits, c.hits);
                }
                if c.misses > 0 {
                    slot.inc(m, C::CacheMisses, c.misses);
                }
                if c.dirtied > 0 {
                    slot.inc(m, C::CacheDirtied, c.dirtied);
                }
            }
            EventData::Bio(b) => {
                let d = slot.disk(m, &b.disk, &b.op);
                d.ops.inc();
                d.bytes.inc_by(u64::from(b.bytes));
                d.latency.observe(b.latency_ns as f64 / 1e9);
            }
            EventData::Http(h) if h.kind == "request" => {
                let r = slot.request(m, h);
                r.count.inc();
                r.duration.observe(h.duration_ns as f64 / 1e9);
                if let Some(rpc) = &h.rpc {
                    let r = slot.rpc(m, h, rpc);
                    r.count.inc();
                    r.duration.observe(h.duration_ns as f64 / 1e9);
                }
            }
            // Queries this container sent; answers it served are not RED
            // metrics of this container's dependencies.
            EventData::Dns(d) if d.role == "client" => {
                slot.dns(m, d.rcode.as_deref().unwrap_or("none")).inc();
                if let Some(ns) = d.latency_ns {
                    let labels = &slot.labels;
                    slot.dns_duration
                        .get_or_insert_with(|| m.dns_histogram(labels))
                        .observe(ns as f64 / 1e9);
                }
            }
            EventData::Drop(d) => {
                slot.packet_drop(m, &d.reason).inc();
            }
            EventData::Exit(_)
            | EventData::Syscall(_)
            | EventData::SyscallSummary(_)
            | EventData::SockData(_)
            | EventData::Http(_)
            | EventData::Dns(_)
            | EventData::Tracepoint(_)
            | EventData::NetPacket(_)
            | EventData::NetFlow(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podscope_model::{BioEvent, ExecEvent, OpenEvent, TcpEvent, Timestamp};

    fn ev(ns: &str, pod: &str, container: &str, cgroup_id: u64, data: EventData) -> Event {
        Event {
            timestamp: Timestamp(1),
            identity: Identity {
                node: "n1".into(),
                namespace: ns.into(),
                pod: pod.into(),
                pod_uid: "uid".into(),
                container: container.into(),
                container_id: "cid".into(),
                image: "img".into(),
            },
            pid: 1234,
            tid: 1234,
            uid: 0,
            comm: "x".into(),
            cgroup_id,
            data,
        }
    }

    fn tcp(kind: TcpKind, dur: Option<u64>, tx: Option<u64>, rx: Option<u64>) -> EventData {
        EventData::Tcp(TcpEvent {
            dialed_addr: Box::default(),
            dialed_port: 0,
            kind,
            role: "client".into(),
            family: "ipv4".into(),
            saddr: "127.0.0.1".into(),
            daddr: "127.0.0.1".into(),
            sport: 1,
            dport: 2,
            state: "X".into(),
            duration_ns: dur,
            tx_bytes: tx,
            rx_bytes: rx,
            retransmits: None,
            error: None,
        })
    }

    fn open(fail: bool) -> EventData {
        EventData::Open(OpenEvent {
            kind: "open".into(),
            path: "/x".into(),
            dirfd: None,
            flags: 0,
            flags_str: "O_RDONLY".into(),
            mode: 0,
            fd: (!fail).then_some(3),
            errno: fail.then_some(2),
            error: fail.then(|| "ENOENT".into()),
        })
    }

    /// The value of the sample line `name{...labels...} value` that contains all `needles`.
    fn value(out: &str, name: &str, needles: &[&str]) -> Option<f64> {
        out.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn events_become_pod_labelled_series() {
        let m = Metrics::new("n1", Duration::from_secs(60));
        let mut o = m.observer();
        for _ in 0..3 {
            o.observe(&ev(
                "shop",
                "web",
                "app",
                10,
                tcp(TcpKind::Connect, None, None, None),
            ));
        }
        o.observe(&ev(
            "shop",
            "web",
            "app",
            10,
            tcp(TcpKind::Close, Some(2_000_000), Some(100), Some(50)),
        ));
        o.observe(&ev("shop", "web", "app", 10, open(false)));
        o.observe(&ev("shop", "web", "app", 10, open(true)));
        o.observe(&ev(
            "shop",
            "web",
            "app",
            10,
            EventData::Exec(ExecEvent {
                kind: "exec".into(),
                ppid: 1,
                filename: "/bin/x".into(),
                args: vec![],
                args_truncated: false,
                retval: -2,
                error: Some("ENOENT".into()),
            }),
        ));
        o.observe(&ev(
            "shop",
            "web",
            "app",
            10,
            EventData::Bio(BioEvent {
                kind: "io".into(),
                disk: "vda".into(),
                dev: "254:0".into(),
                op: "write".into(),
                sector: 0,
                bytes: 4096,
                latency_ns: 300_000,
                queued_ns: 0,
                sync: false,
                error: None,
            }),
        ));
        let out = m.render(Format::Prometheus).unwrap();
        let who = [
            "namespace=\"shop\"",
            "pod=\"web\"",
            "container=\"app\"",
            "node=\"n1\"",
        ];
        assert_eq!(
            value(&out, "podscope_tcp_connects_total", &who),
            Some(3.0),
            "{out}"
        );
        assert_eq!(value(&out, "podscope_tcp_closes_total", &who), Some(1.0));
        assert_eq!(
            value(&out, "podscope_tcp_active_connections", &who),
            Some(2.0)
        );
        assert_eq!(
            value(&out, "podscope_tcp_sent_bytes_total", &who),
            Some(100.0)
        );
        assert_eq!(
            value(&out, "podscope_tcp_received_bytes_total", &who),
            Some(50.0)
        );
        assert_eq!(
            value(&out, "podscope_tcp_connection_duration_seconds_count", &who),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "podscope_tcp_connection_duration_seconds_bucket",
                &["pod=\"web\"", "le=\"0.005\""]
            ),
            Some(1.0)
        );
        assert_eq!(value(&out, "podscope_file_opens_total", &who), Some(2.0));
        assert_eq!(
            value(&out, "podscope_file_open_failures_total", &who),
            Some(1.0)
        );
        assert_eq!(value(&out, "podscope_execs_total", &who), Some(1.0));
        assert_eq!(value(&out, "podscope_exec_failures_total", &who), Some(1.0));
        let disk = ["pod=\"web\"", "disk=\"vda\"", "op=\"write\""];
        assert_eq!(
            value(&out, "podscope_block_io_operations_total", &disk),
            Some(1.0)
        );
        assert_eq!(
            value(&out, "podscope_block_io_bytes_total", &disk),
            Some(4096.0)
        );
        // Nothing that did not happen gets a series.
        assert!(!out.contains("podscope_tcp_accepts_total{"), "{out}");
        assert!(!out.contains("podscope_page_cache_hits_total{"), "{out}");
        assert!(!out.contains("pid="), "never labelled by pid");
    }

    fn http(role: &str, method: &str, status: Option<u16>, peer: (&str, &str)) -> EventData {
        EventData::Http(Box::new(podscope_model::HttpEvent {
            dialed_addr: String::new(),
            dialed_port: 0,
            stream_id: 0,
            kind: "request".into(),
            role: role.into(),
            version: "HTTP/1.1".into(),
            method: method.into(),
            path: "/x".into(),
            host: String::new(),
            status,
            duration_ns: 2_000_000,
            request_bytes: 10,
            response_bytes: 20,
            tls: false,
            truncated: false,
            family: "ipv4".into(),
            saddr: "10.0.0.1".into(),
            sport: 1,
            daddr: "10.0.0.2".into(),
            dport: 80,
            peer_namespace: peer.0.into(),
            peer_pod: peer.1.into(),
            capture: None,
            trace_context: None,
            rpc: None,
            error: None,
        }))
    }

    fn grpc(role: &str, service: &str, method: &str, status: Option<u32>) -> EventData {
        let mut e = http(role, "POST", Some(200), ("shop", "api"));
        if let EventData::Http(h) = &mut e {
            h.version = "HTTP/2".into();
            h.rpc = Some(podscope_model::RpcInfo {
                system: "grpc".into(),
                service: service.into(),
                method: method.into(),
                status,
                message: None,
            });
        }
        e
    }

    #[test]
    fn grpc_calls_by_service_method_and_status_with_a_cap() {
        let m = Metrics::new("n1", Duration::from_secs(60));
        let mut o = m.observer();
        for _ in 0..2 {
            o.observe(&ev(
                "shop",
                "api",
                "app",
                1,
                grpc("server", "kv.Store", "Get", Some(0)),
            ));
        }
        o.observe(&ev(
            "shop",
            "api",
            "app",
            1,
            grpc("server", "kv.Store", "Get", Some(5)),
        ));
        o.observe(&ev(
            "shop",
            "api",
            "app",
            1,
            grpc("server", "kv.Store", "Watch", None),
        ));
        o.observe(&ev(
            "shop",
            "web",
            "app",
            2,
            grpc("client", "kv.Store", "Get", Some(5)),
        ));
        // A client sending random paths: series stop at the cap.
        for i in 0..(MAX_RPC_METHODS + 10) {
            o.observe(&ev(
                "shop",
                "api",
                "app",
                1,
                grpc("server", "junk", &format!("m{i}"), Some(12)),
            ));
        }
        let out = m.render(Format::Prometheus).unwrap();
        let get = ["pod=\"api\"", "service=\"kv.Store\"", "method=\"Get\""];
        assert_eq!(
            value(
                &out,
                "podscope_grpc_server_calls_total",
                &[&get[..], &["grpc_status=\"OK\""]].concat()
            ),
            Some(2.0),
            "{out}"
        );
        assert_eq!(
            value(
                &out,
                "podscope_grpc_server_calls_total",
                &[&get[..], &["grpc_status=\"NOT_FOUND\""]].concat()
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "podscope_grpc_server_calls_total",
                &["method=\"Watch\"", "grpc_status=\"none\""]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "podscope_grpc_client_calls_total",
                &[
                    "pod=\"web\"",
                    "peer_pod=\"api\"",
                    "grpc_status=\"NOT_FOUND\""
                ]
            ),
            Some(1.0)
        );
        let methods: std::collections::BTreeSet<&str> = out
            .lines()
            .filter(|l| {
                l.starts_with("podscope_grpc_server_calls_total{") && l.contains("pod=\"api\"")
            })
            .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(
            methods.len(),
            MAX_RPC_METHODS + 1,
            "the cap, plus _OTHER: {methods:?}"
        );
        assert_eq!(
            value(
                &out,
                "podscope_grpc_server_calls_total",
                &["service=\"_OTHER\""]
            ),
            Some(12.0)
        );
        // Every call is an HTTP request too.
        assert_eq!(
            value(
                &out,
                "podscope_http_server_requests_total",
                &["pod=\"api\"", "method=\"POST\""]
            ),
            Some((4 + MAX_RPC_METHODS + 10) as f64)
        );
    }

    #[test]
    fn requests_become_red_series_per_pod_and_per_edge() {
        let m = Metrics::new("n1", Duration::from_secs(60));
        let mut o = m.observer();
        for _ in 0..3 {
            o.observe(&ev(
                "shop",
                "api",
                "app",
                1,
                http("server", "GET", Some(200), ("", "")),
            ));
        }
        o.observe(&ev(
            "shop",
            "api",
            "app",
            1,
            http("server", "GET", Some(404), ("", "")),
        ));
        o.observe(&ev(
            "shop",
            "api",
            "app",
            1,
            http("server", "BREW", Some(418), ("", "")),
        ));
        for _ in 0..2 {
            o.observe(&ev(
                "shop",
                "web",
                "app",
                2,
                http("client", "POST", Some(503), ("shop", "api")),
            ));
        }
        o.observe(&ev(
            "shop",
            "web",
            "app",
            2,
            http("client", "GET", None, ("", "")),
        ));
        let mut parse_error = http("server", "", None, ("", ""));
        if let EventData::Http(h) = &mut parse_error {
            h.kind = "parse_error".into();
        }
        o.observe(&ev("shop", "api", "app", 1, parse_error));
        let out = m.render(Format::Prometheus).unwrap();
        let api = ["pod=\"api\"", "method=\"GET\""];
        assert_eq!(
            value(
                &out,
                "podscope_http_server_requests_total",
                &[&api[..], &["status_class=\"2xx\""]].concat()
            ),
            Some(3.0),
            "{out}"
        );
        assert_eq!(
            value(
                &out,
                "podscope_http_server_requests_total",
                &[&api[..], &["status_class=\"4xx\""]].concat()
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "podscope_http_server_requests_total",
                &["method=\"_OTHER\""]
            ),
            Some(1.0),
            "unknown methods are one series"
        );
        assert_eq!(
            value(
                &out,
                "podscope_http_server_request_duration_seconds_count",
                &[&api[..], &["status_class=\"2xx\""]].concat()
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &out,
                "podscope_http_server_request_duration_seconds_bucket",
                &[&api[..], &["status_class=\"2xx\"", "le=\"0.0025\""]].concat()
            ),
            Some(3.0)
        );
        let edge = [
            "pod=\"web\"",
            "peer_namespace=\"shop\"",
            "peer_pod=\"api\"",
            "status_class=\"5xx\"",
        ];
        assert_eq!(
            value(&out, "podscope_http_client_requests_total", &edge),
            Some(2.0),
            "{out}"
        );
        assert_eq!(
            value(
                &out,
                "podscope_http_client_requests_total",
                &["pod=\"web\"", "status_class=\"none\""]
            ),
            Some(1.0)
        );
        assert!(
            !out.lines()
                .any(|l| l.starts_with("podscope_http_server_requests_total{")
                    && l.contains("peer_pod")),
            "served requests carry no peer labels"
        );
        assert!(!out.contains("path="), "never labelled by path: {out}");
        let total: f64 = out
            .lines()
            .filter(|l| l.starts_with("podscope_http_server_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(total, 5.0, "a parse error is not a request");
    }

    #[test]
    fn dns_queries_by_rcode() {
        let m = Metrics::new("n1", Duration::from_secs(60));
        let mut o = m.observer();
        let q = |role: &str, rcode: Option<&str>| {
            EventData::Dns(Box::new(podscope_model::DnsEvent {
                dialed_addr: String::new(),
                dialed_port: 0,
                kind: "query".into(),
                role: role.into(),
                id: 1,
                name: "a.test".into(),
                qtype: "A".into(),
                rcode: rcode.map(Into::into),
                transport: "udp".into(),
                answers: vec![],
                latency_ns: rcode.map(|_| 300_000),
                family: "ipv4".into(),
                saddr: "10.0.0.1".into(),
                sport: 5353,
                daddr: "10.0.0.53".into(),
                dport: 53,
                peer_namespace: String::new(),
                peer_pod: String::new(),
                error: None,
            }))
        };
        o.observe(&ev("a", "p", "c", 1, q("client", Some("NOERROR"))));
        o.observe(&ev("a", "p", "c", 1, q("client", Some("NXDOMAIN"))));
        o.observe(&ev("a", "p", "c", 1, q("client", Some("NXDOMAIN"))));
        o.observe(&ev("a", "p", "c", 1, q("client", None)));
        o.observe(&ev("a", "p", "c", 1, q("server", Some("NOERROR"))));
        let out = m.render(Format::Prometheus).unwrap();
        assert_eq!(
            value(&out, "podscope_dns_queries_total", &["rcode=\"NXDOMAIN\""]),
            Some(2.0),
            "{out}"
        );
        assert_eq!(
            value(&out, "podscope_dns_queries_total", &["rcode=\"NOERROR\""]),
            Some(1.0)
        );
        assert_eq!(
            value(&out, "podscope_dns_queries_total", &["rcode=\"none\""]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "podscope_dns_query_duration_seconds_count",
                &["pod=\"p\""]
            ),
            Some(3.0)
        );
    }

    #[test]
    fn packet_drops_by_pod_and_reason_without_container() {
        let m = Metrics::new("n1", Duration::from_secs(60));
        let mut o = m.observer();
        let d = |reason: &str| {
            EventData::Drop(Box::new(podscope_model::DropEvent {
                kind: "drop".into(),
                reason: reason.into(),
                reason_code: Some(3),
                location: "udp_rcv+0x1".into(),
                attributed_by: "netns".into(),
                netns: 4026531840,
                ifname: "lo".into(),
                ifindex: 1,
                protocol: "udp".into(),
                family: "ipv4".into(),
                saddr: "127.0.0.1".into(),
                daddr: "127.0.0.1".into(),
                sport: 1,
                dport: 2,
                tcp_flags: String::new(),
                len: 29,
                ethertype: 0x800,
            }))
        };
        // Two containers of one pod (socket-attributed) and the pod itself
        // (netns-attributed): one series per reason.
        o.observe(&ev("a", "p", "", 1, d("NO_SOCKET")));
        o.observe(&ev("a", "p", "c1", 2, d("NO_SOCKET")));
        o.observe(&ev("a", "p", "c2", 3, d("NETFILTER_DROP")));
        o.observe(&ev("a", "q", "", 4, d("NO_SOCKET")));
        let out = m.render(Format::Prometheus).unwrap();
        let p = |r: &str| {
            value(
                &out,
                "podscope_packet_drops_total",
                &["pod=\"p\"", &format!("reason=\"{r}\"")],
            )
        };
        assert_eq!(p("NO_SOCKET"), Some(2.0), "{out}");
        assert_eq!(p("NETFILTER_DROP"), Some(1.0), "{out}");
        assert!(
            !out.lines()
                .any(|l| l.starts_with("podscope_packet_drops_total{") && l.contains("container=")),
            "{out}"
        );
    }

    #[test]
    fn a_reused_cgroup_id_gets_the_new_containers_labels() {
        let m = Metrics::new("n1", Duration::from_secs(60));
        let mut o = m.observer();
        o.observe(&ev("a", "p1", "c", 7, open(false)));
        o.observe(&ev("a", "p2", "c", 7, open(false)));
        let out = m.render(Format::Prometheus).unwrap();
        assert_eq!(
            value(&out, "podscope_file_opens_total", &["pod=\"p1\""]),
            Some(1.0)
        );
        assert_eq!(
            value(&out, "podscope_file_opens_total", &["pod=\"p2\""]),
            Some(1.0)
        );
    }

    #[test]
    fn series_of_pods_gone_past_the_grace_period_are_removed() {
        let m = Metrics::new("n1", Duration::from_millis(50));
        let mut o = m.observer();
        o.observe(&ev("a", "gone", "c", 1, open(false)));
        o.observe(&ev(
            "a",
            "gone",
            "c",
            1,
            http("client", "GET", Some(200), ("a", "stays")),
        ));
        o.observe(&ev(
            "a",
            "gone",
            "c",
            1,
            http("server", "GET", Some(200), ("", "")),
        ));
        o.observe(&ev("a", "stays", "c", 2, open(false)));
        o.observe(&ev("", "", "", 3, open(false)));
        let live: HashSet<(&str, &str)> = [("a", "stays")].into();
        m.retire(&live, Instant::now());
        let out = m.render(Format::Prometheus).unwrap();
        assert!(out.contains("pod=\"gone\""), "kept during the grace period");
        m.retire(&live, Instant::now() + Duration::from_millis(100));
        let out = m.render(Format::Prometheus).unwrap();
        assert!(!out.contains("pod=\"gone\""), "{out}");
        assert!(out.contains("pod=\"stays\""), "{out}");
        assert_eq!(
            value(&out, "podscope_file_opens_total", &["container=\"\""]),
            Some(1.0),
            "host processes are never retired: {out}"
        );
        assert_eq!(
            value(&out, "podscope_pod_series_removals_total", &[]),
            Some(1.0)
        );
        // The observer notices and re-creates the series if the pod speaks again.
        o.observe(&ev("a", "gone", "c", 1, open(false)));
        let out = m.render(Format::Prometheus).unwrap();
        assert_eq!(
            value(&out, "podscope_file_opens_total", &["pod=\"gone\""]),
            Some(1.0)
        );
    }

    #[test]
    fn probe_stats_advance_by_the_difference() {
        let m = Metrics::new("n1", Duration::from_secs(60));
        m.probe_stats(ProbeKind::Tcp, 10, 1);
        m.probe_stats(ProbeKind::Tcp, 25, 1);
        let out = m.render(Format::Prometheus).unwrap();
        assert_eq!(
            value(&out, "podscope_probe_events_total", &["probe=\"tcp\""]),
            Some(25.0)
        );
        assert_eq!(
            value(&out, "podscope_probe_lost_events_total", &["probe=\"tcp\""]),
            Some(1.0)
        );
    }
}
