//! `podscope top`'s table: per-pod (or per-container) rates from two samples
//! of the exporter's counters, the columns, sorting and filtering. No
//! terminal here: the view draws what this computes, and `--once -o json`
//! prints it.

use std::collections::HashMap;

use podscope_export::ContainerSample;
use podscope_runtime::Pod;
use serde::Serialize;

/// (namespace, pod, container); container is empty for a pod row.
pub type Key = (String, String, String);

/// One row: rates over the last interval, totals since top started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub namespace: String,
    pub pod: String,
    /// Set on per-container rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The pod's node, through the hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Percent of one CPU over the interval (cgroup usage).
    pub cpu_percent: Option<f64>,
    /// Memory working set now, bytes (cgroup).
    pub memory_bytes: Option<u64>,
    pub execs_per_s: f64,
    /// Connects and accepts.
    pub connections_per_s: f64,
    /// TCP payload bytes (counted when each connection closes).
    pub tcp_tx_bytes_per_s: f64,
    pub tcp_rx_bytes_per_s: f64,
    pub retransmits_per_s: f64,
    pub bio_ops_per_s: f64,
    /// Upper bound of the bucket holding the p99 block I/O latency of the
    /// interval, seconds; None without block I/O in it.
    pub bio_p99_s: Option<f64>,
    /// Page lookups served from the cache, percent; None without lookups.
    pub cache_hit_percent: Option<f64>,
    /// Requests served (HTTP/1, HTTP/2, gRPC).
    pub requests_per_s: f64,
    /// Failed share of the interval's served requests (5xx, non-OK gRPC).
    pub error_percent: Option<f64>,
    /// p99 served request duration bound, seconds.
    pub request_p99_s: Option<f64>,
    /// Counts since top started.
    pub totals: Totals,
}

/// Counts since `podscope top` started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub execs: u64,
    pub exec_failures: u64,
    pub tcp_connects: u64,
    pub tcp_accepts: u64,
    pub tcp_retransmits: u64,
    pub tcp_tx_bytes: u64,
    pub tcp_rx_bytes: u64,
    pub tcp_active: i64,
    pub file_opens: u64,
    pub bio_ops: u64,
    pub bio_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub requests_served: u64,
    pub requests_failed: u64,
    pub requests_made: u64,
}

/// The samples of one moment, by container.
pub type Samples = HashMap<Key, ContainerSample>;

pub fn index(samples: Vec<ContainerSample>) -> Samples {
    samples
        .into_iter()
        .map(|s| ((s.namespace.clone(), s.pod.clone(), s.container.clone()), s))
        .collect()
}

/// `a` plus `b`, for a pod's containers (the buckets of a pod add up).
fn add(a: &mut ContainerSample, b: &ContainerSample) {
    a.execs += b.execs;
    a.exec_failures += b.exec_failures;
    a.tcp_connects += b.tcp_connects;
    a.tcp_accepts += b.tcp_accepts;
    a.tcp_connect_failures += b.tcp_connect_failures;
    a.tcp_retransmits += b.tcp_retransmits;
    a.tcp_sent_bytes += b.tcp_sent_bytes;
    a.tcp_received_bytes += b.tcp_received_bytes;
    a.tcp_active += b.tcp_active;
    a.file_opens += b.file_opens;
    a.file_open_failures += b.file_open_failures;
    a.cache_hits += b.cache_hits;
    a.cache_misses += b.cache_misses;
    a.bio_ops += b.bio_ops;
    a.bio_bytes += b.bio_bytes;
    a.bio_latency.add(&b.bio_latency);
    a.requests_served += b.requests_served;
    a.requests_failed += b.requests_failed;
    a.request_duration.add(&b.request_duration);
    a.requests_made += b.requests_made;
    a.cpu_seconds = match (a.cpu_seconds, b.cpu_seconds) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    a.memory_bytes = match (a.memory_bytes, b.memory_bytes) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
}

/// Folds containers into their pod when `per_container` is off.
fn group(samples: &Samples, per_container: bool) -> Samples {
    if per_container {
        return samples.clone();
    }
    let mut out: Samples = HashMap::new();
    for s in samples.values() {
        let k = (s.namespace.clone(), s.pod.clone(), String::new());
        match out.get_mut(&k) {
            Some(acc) => add(acc, s),
            None => {
                let mut acc = s.clone();
                acc.container = String::new();
                out.insert(k, acc);
            }
        }
    }
    out
}

fn rate(now: u64, then: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(then) as f64 / secs
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// The table for `pods` (every selected pod gets a row, idle or not; pods
/// that left keep theirs while their counters are kept): rates between
/// `prev` and `cur` over `secs`, totals since `start`.
pub fn rows(
    pods: &[Pod],
    start: &Samples,
    prev: &Samples,
    cur: &Samples,
    secs: f64,
    per_container: bool,
) -> Vec<Row> {
    let (start, prev, cur) = (
        group(start, per_container),
        group(prev, per_container),
        group(cur, per_container),
    );
    let mut keys: Vec<Key> = cur.keys().cloned().collect();
    for p in pods {
        if per_container {
            for c in &p.containers {
                keys.push((p.namespace.clone(), p.name.clone(), c.name.clone()));
            }
        } else {
            keys.push((p.namespace.clone(), p.name.clone(), String::new()));
        }
    }
    keys.sort();
    keys.dedup();
    // Host processes (no pod) are not rows: top shows pods.
    keys.retain(|k| !k.1.is_empty());
    keys.into_iter()
        .map(|k| {
            let empty = ContainerSample::new(&k.0, &k.1, &k.2);
            let c = cur.get(&k).unwrap_or(&empty);
            let p = prev.get(&k).unwrap_or(&empty);
            let s = start.get(&k).unwrap_or(&empty);
            row(&k, s, p, c, secs, per_container)
        })
        .collect()
}

fn row(
    k: &Key,
    s: &ContainerSample,
    p: &ContainerSample,
    c: &ContainerSample,
    secs: f64,
    per_container: bool,
) -> Row {
    let hits = c.cache_hits.saturating_sub(p.cache_hits);
    let misses = c.cache_misses.saturating_sub(p.cache_misses);
    let served = c.requests_served.saturating_sub(p.requests_served);
    let failed = c.requests_failed.saturating_sub(p.requests_failed);
    let cpu_percent = match (c.cpu_seconds, p.cpu_seconds) {
        (Some(now), Some(then)) if secs > 0.0 => Some(((now - then).max(0.0)) * 100.0 / secs),
        _ => None,
    };
    Row {
        namespace: k.0.clone(),
        pod: k.1.clone(),
        container: per_container.then(|| k.2.clone()),
        node: None,
        cpu_percent,
        memory_bytes: c.memory_bytes,
        execs_per_s: rate(c.execs, p.execs, secs),
        connections_per_s: rate(
            c.tcp_connects + c.tcp_accepts,
            p.tcp_connects + p.tcp_accepts,
            secs,
        ),
        tcp_tx_bytes_per_s: rate(c.tcp_sent_bytes, p.tcp_sent_bytes, secs),
        tcp_rx_bytes_per_s: rate(c.tcp_received_bytes, p.tcp_received_bytes, secs),
        retransmits_per_s: rate(c.tcp_retransmits, p.tcp_retransmits, secs),
        bio_ops_per_s: rate(c.bio_ops, p.bio_ops, secs),
        bio_p99_s: c.bio_latency.since(&p.bio_latency).quantile_bound(0.99),
        cache_hit_percent: share(hits, hits + misses),
        requests_per_s: rate(c.requests_served, p.requests_served, secs),
        error_percent: share(failed, served),
        request_p99_s: c
            .request_duration
            .since(&p.request_duration)
            .quantile_bound(0.99),
        totals: Totals {
            execs: c.execs.saturating_sub(s.execs),
            exec_failures: c.exec_failures.saturating_sub(s.exec_failures),
            tcp_connects: c.tcp_connects.saturating_sub(s.tcp_connects),
            tcp_accepts: c.tcp_accepts.saturating_sub(s.tcp_accepts),
            tcp_retransmits: c.tcp_retransmits.saturating_sub(s.tcp_retransmits),
            tcp_tx_bytes: c.tcp_sent_bytes.saturating_sub(s.tcp_sent_bytes),
            tcp_rx_bytes: c.tcp_received_bytes.saturating_sub(s.tcp_received_bytes),
            tcp_active: c.tcp_active,
            file_opens: c.file_opens.saturating_sub(s.file_opens),
            bio_ops: c.bio_ops.saturating_sub(s.bio_ops),
            bio_bytes: c.bio_bytes.saturating_sub(s.bio_bytes),
            cache_hits: c.cache_hits.saturating_sub(s.cache_hits),
            cache_misses: c.cache_misses.saturating_sub(s.cache_misses),
            requests_served: c.requests_served.saturating_sub(s.requests_served),
            requests_failed: c.requests_failed.saturating_sub(s.requests_failed),
            requests_made: c.requests_made.saturating_sub(s.requests_made),
        },
    }
}

/// A container's CPU % and memory as its node last reported them (through
/// the hub, where this machine's cgroups are not the pods').
pub type Usage = HashMap<Key, Used>;

/// CPU % of one CPU, and memory bytes.
pub type Used = (Option<f64>, Option<u64>);

/// Through the hub: names each row's node, and takes its CPU and memory
/// from the nodes' reports (a pod's are its containers' summed).
pub fn with_nodes(rows: &mut [Row], nodes: &HashMap<(String, String), String>, usage: &Usage) {
    let sum = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    let mut pods: HashMap<(&str, &str), Used> = HashMap::new();
    for ((ns, pod, _), (cpu, mem)) in usage {
        let e = pods.entry((ns, pod)).or_default();
        e.0 = sum(e.0, *cpu);
        e.1 = match (e.1, mem) {
            (Some(x), Some(y)) => Some(x + y),
            (x, y) => x.or(*y),
        };
    }
    for r in rows {
        r.node = nodes.get(&(r.namespace.clone(), r.pod.clone())).cloned();
        let u = match &r.container {
            Some(c) => usage
                .get(&(r.namespace.clone(), r.pod.clone(), c.clone()))
                .copied(),
            None => pods.get(&(r.namespace.as_str(), r.pod.as_str())).copied(),
        };
        (r.cpu_percent, r.memory_bytes) = u.unwrap_or_default();
    }
}

/// The table's columns, in screen order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Namespace,
    Pod,
    Node,
    Cpu,
    Mem,
    Exec,
    Conn,
    Tx,
    Rx,
    Retrans,
    Bio,
    BioP99,
    Cache,
    Req,
    Err,
    ReqP99,
}

pub const COLUMNS: [Col; 15] = [
    Col::Namespace,
    Col::Pod,
    Col::Cpu,
    Col::Mem,
    Col::Exec,
    Col::Conn,
    Col::Tx,
    Col::Rx,
    Col::Retrans,
    Col::Bio,
    Col::BioP99,
    Col::Cache,
    Col::Req,
    Col::Err,
    Col::ReqP99,
];

/// The columns of a local table, or (`remote`) one through the hub, which
/// has a NODE column.
pub fn columns(remote: bool) -> Vec<Col> {
    let mut c = COLUMNS.to_vec();
    if remote {
        c.insert(2, Col::Node);
    }
    c
}

impl Col {
    pub fn header(self) -> &'static str {
        match self {
            Col::Namespace => "NAMESPACE",
            Col::Pod => "POD",
            Col::Node => "NODE",
            Col::Cpu => "CPU%",
            Col::Mem => "MEM",
            Col::Exec => "EXEC/s",
            Col::Conn => "CONN/s",
            Col::Tx => "TX/s",
            Col::Rx => "RX/s",
            Col::Retrans => "RETR/s",
            Col::Bio => "BIO/s",
            Col::BioP99 => "BIO-P99",
            Col::Cache => "HIT%",
            Col::Req => "REQ/s",
            Col::Err => "ERR%",
            Col::ReqP99 => "REQ-P99",
        }
    }

    /// Text columns sort ascending, numbers descending (busiest first).
    pub fn numeric(self) -> bool {
        !matches!(self, Col::Namespace | Col::Pod | Col::Node)
    }

    /// The cell as shown.
    pub fn cell(self, r: &Row) -> String {
        match self {
            Col::Namespace => r.namespace.clone(),
            Col::Pod => match &r.container {
                Some(c) => format!("{}/{}", r.pod, c),
                None => r.pod.clone(),
            },
            Col::Node => r.node.clone().unwrap_or_else(|| "-".into()),
            Col::Cpu => r.cpu_percent.map_or("-".into(), |v| format!("{v:.1}")),
            Col::Mem => r.memory_bytes.map_or("-".into(), human_bytes),
            Col::Exec => human_rate(r.execs_per_s),
            Col::Conn => human_rate(r.connections_per_s),
            Col::Tx => human_bytes_rate(r.tcp_tx_bytes_per_s),
            Col::Rx => human_bytes_rate(r.tcp_rx_bytes_per_s),
            Col::Retrans => human_rate(r.retransmits_per_s),
            Col::Bio => human_rate(r.bio_ops_per_s),
            Col::BioP99 => r.bio_p99_s.map_or("-".into(), human_secs),
            Col::Cache => r
                .cache_hit_percent
                .map_or("-".into(), |v| format!("{v:.0}")),
            Col::Req => human_rate(r.requests_per_s),
            Col::Err => r.error_percent.map_or("-".into(), |v| format!("{v:.1}")),
            Col::ReqP99 => r.request_p99_s.map_or("-".into(), human_secs),
        }
    }

    fn value(self, r: &Row) -> f64 {
        let o = |v: Option<f64>| v.unwrap_or(-1.0);
        match self {
            Col::Namespace | Col::Pod | Col::Node => 0.0,
            Col::Cpu => o(r.cpu_percent),
            Col::Mem => r.memory_bytes.map_or(-1.0, |v| v as f64),
            Col::Exec => r.execs_per_s,
            Col::Conn => r.connections_per_s,
            Col::Tx => r.tcp_tx_bytes_per_s,
            Col::Rx => r.tcp_rx_bytes_per_s,
            Col::Retrans => r.retransmits_per_s,
            Col::Bio => r.bio_ops_per_s,
            Col::BioP99 => o(r.bio_p99_s),
            Col::Cache => o(r.cache_hit_percent),
            Col::Req => r.requests_per_s,
            Col::Err => o(r.error_percent),
            Col::ReqP99 => o(r.request_p99_s),
        }
    }
}

/// Sorts by `col` (numbers: largest first; text: A to Z), `reverse` flips;
/// ties keep namespace/pod order.
pub fn sort(rows: &mut [Row], col: Col, reverse: bool) {
    rows.sort_by(|a, b| {
        let name = (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container));
        let o = match col {
            Col::Namespace => name,
            Col::Pod => {
                (&a.pod, &a.container, &a.namespace).cmp(&(&b.pod, &b.container, &b.namespace))
            }
            Col::Node => a.node.cmp(&b.node).then(name),
            _ => col
                .value(b)
                .partial_cmp(&col.value(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(name),
        };
        if reverse {
            o.reverse()
        } else {
            o
        }
    });
}

/// Rows whose namespace, pod or container contains `text` (case-insensitive).
pub fn filter(rows: Vec<Row>, text: &str) -> Vec<Row> {
    let t = text.trim().to_lowercase();
    if t.is_empty() {
        return rows;
    }
    rows.into_iter()
        .filter(|r| {
            r.namespace.to_lowercase().contains(&t)
                || r.pod.to_lowercase().contains(&t)
                || r.container
                    .as_deref()
                    .is_some_and(|c| c.to_lowercase().contains(&t))
        })
        .collect()
}

pub fn human_bytes(b: u64) -> String {
    podscope_pipeline::format::human_bytes(b)
}

fn human_bytes_rate(v: f64) -> String {
    if v <= 0.0 {
        "0".into()
    } else {
        podscope_pipeline::format::human_bytes(v.round() as u64)
    }
}

/// 0, 0.4, 12, 3.4k, 1.2M.
pub fn human_rate(v: f64) -> String {
    if v <= 0.0 {
        "0".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else if v < 1000.0 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

/// A bucket bound as 250us, 5ms, 1.0s, >2.5s (+Inf).
fn human_secs(v: f64) -> String {
    if v.is_infinite() {
        return "max+".into();
    }
    if v < 1e-3 {
        format!("{:.0}us", v * 1e6)
    } else if v < 1.0 {
        format!("{}ms", trim(v * 1e3))
    } else {
        format!("{}s", trim(v))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ns: &str, pod: &str, c: &str, execs: u64, cpu: f64) -> ContainerSample {
        let mut s = ContainerSample::new(ns, pod, c);
        s.execs = execs;
        s.cpu_seconds = Some(cpu);
        s
    }

    #[test]
    fn rates_totals_and_pod_grouping() {
        let start = index(vec![sample("a", "web", "app", 10, 1.0)]);
        let prev = index(vec![
            sample("a", "web", "app", 20, 2.0),
            sample("a", "web", "side", 0, 0.5),
        ]);
        let mut hit = sample("a", "web", "app", 40, 2.5);
        hit.cache_hits = 30;
        hit.cache_misses = 10;
        let cur = index(vec![hit, sample("a", "web", "side", 4, 1.0)]);
        let rows = rows(&[], &start, &prev, &cur, 2.0, false);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.namespace.as_str(), r.pod.as_str()), ("a", "web"));
        // (40 + 4 - 20 - 0) execs over 2 s.
        assert_eq!(r.execs_per_s, 12.0);
        // (2.5 + 1.0 - 2.0 - 0.5) CPU seconds over 2 s = 50 %.
        assert_eq!(r.cpu_percent, Some(50.0));
        assert_eq!(r.cache_hit_percent, Some(75.0));
        // 'side' has no start sample: counted from zero.
        assert_eq!(r.totals.execs, 40 + 4 - 10);
        let per = super::rows(&[], &start, &prev, &cur, 2.0, true);
        assert_eq!(per.len(), 2);
        assert_eq!(per[1].container.as_deref(), Some("side"));
        assert_eq!(per[1].execs_per_s, 2.0);
    }

    #[test]
    fn sorting_and_filtering() {
        let cur = index(vec![
            sample("a", "quiet", "c", 1, 0.0),
            sample("b", "busy", "c", 100, 0.0),
        ]);
        let mut rows = rows(&[], &HashMap::new(), &HashMap::new(), &cur, 1.0, false);
        sort(&mut rows, Col::Exec, false);
        assert_eq!(rows[0].pod, "busy");
        sort(&mut rows, Col::Exec, true);
        assert_eq!(rows[0].pod, "quiet");
        sort(&mut rows, Col::Pod, false);
        assert_eq!(rows[0].pod, "busy");
        assert_eq!(filter(rows.clone(), "QUI").len(), 1);
        assert_eq!(filter(rows, "").len(), 2);
    }

    #[test]
    fn units() {
        assert_eq!(human_rate(0.0), "0");
        assert_eq!(human_rate(2.26), "2.3");
        assert_eq!(human_rate(1500.0), "1.5k");
        assert_eq!(human_secs(0.00025), "250us");
        assert_eq!(human_secs(0.005), "5ms");
        assert_eq!(human_secs(2.5), "2.5s");
        assert_eq!(human_secs(f64::INFINITY), "max+");
    }
}
