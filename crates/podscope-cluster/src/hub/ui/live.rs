//! What the web view shows live: per-pod counters and the service map,
//! aggregated in the hub from the records of one observer session (tcp,
//! http, exec on every pod) that the hub runs while the view is in use.
//!
//! Edges come from the kernel's view of each connection and request:
//! - a client-side `connect` or `http` request of a traced pod makes (or
//!   counts on) the edge from that pod to its peer, the peer named by its
//!   address when a known pod has it, else shown as the address;
//! - a server-side record counts only when its peer is not a known pod (a
//!   request from outside): between two traced pods the client side is
//!   already counted, and counting both would double every request.
//!
//! Counters are totals since the observer started; the page takes rates
//! from the difference of two snapshots.

use std::collections::{BTreeMap, HashMap, VecDeque};

use podscope_model::{Event, EventData, TcpKind};
use serde::Serialize;
use serde_json::Value;

/// Recent requests kept per edge (shown when an edge is clicked).
const RECENT: usize = 50;
/// Request durations kept per edge for its p99.
const DURATIONS: usize = 1024;

/// A node of the map: a pod (`namespace/name`) or an address no known pod has.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum End {
    Pod { namespace: String, pod: String },
    Addr(String),
}

impl End {
    pub(crate) fn id(&self) -> String {
        match self {
            End::Pod { namespace, pod } => format!("pod:{namespace}/{pod}"),
            End::Addr(a) => format!("addr:{a}"),
        }
    }
}

/// Per-pod totals.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct PodCounts {
    pub execs: u64,
    /// Connections this pod opened (client) and accepted (server).
    pub conns_out: u64,
    pub conns_in: u64,
    /// Payload bytes of closed connections, as the pod's sockets counted them.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub retransmits: u64,
    /// HTTP/gRPC requests this pod answered (server side) and made (client side).
    pub requests_in: u64,
    pub requests_out: u64,
    /// Answered requests with status >= 500, or none at all.
    pub errors_in: u64,
}

/// One request as an edge keeps it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Recent {
    pub timestamp: String,
    pub role: String,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u64>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
}

#[derive(Debug, Default)]
struct Edge {
    conns: u64,
    failed: u64,
    tx_bytes: u64,
    rx_bytes: u64,
    requests: u64,
    errors: u64,
    durations: VecDeque<u64>,
    recent: VecDeque<Recent>,
}

/// An edge as the map endpoint serves it.
#[derive(Debug, Serialize)]
pub(crate) struct EdgeView {
    pub source: String,
    pub target: String,
    pub conns: u64,
    pub failed_conns: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub requests: u64,
    pub errors: u64,
    /// p99 of the last requests' durations, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// A node of the map.
#[derive(Debug, Serialize)]
pub(crate) struct NodeView {
    pub id: String,
    pub kind: &'static str,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct MapView {
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
}

/// The observer's aggregate.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pods: HashMap<(String, String), PodCounts>,
    edges: BTreeMap<(End, End), Edge>,
    /// Records taken, and gaps / losses the records reported.
    pub records: u64,
    pub lost: u64,
    pub gaps: u64,
    /// Event records that could not be read as an event (a newer agent).
    pub unreadable: u64,
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as the IPv4 address.
fn plain_ip(a: &str) -> &str {
    a.strip_prefix("::ffff:").unwrap_or(a)
}

impl Live {
    /// Takes a control record of the observer session (`lost`, `gap`).
    pub(crate) fn control(&mut self, rec: &Value) {
        self.records += 1;
        let n = |k: &str| rec.get(k).and_then(Value::as_u64).unwrap_or(0);
        match rec.get("kind").and_then(Value::as_str) {
            Some("lost") => self.lost += n("lost"),
            Some("gap") => self.gaps += n("gap"),
            _ => {}
        }
    }

    /// Takes one event of the observer session. `pod_of` names the pod
    /// that has an address.
    pub(crate) fn ingest(&mut self, ev: &Event, pod_of: &dyn Fn(&str) -> Option<(String, String)>) {
        self.records += 1;
        let (ns, pod) = (&ev.identity.namespace, &ev.identity.pod);
        if pod.is_empty() {
            return;
        }
        let me = End::Pod {
            namespace: ns.clone(),
            pod: pod.clone(),
        };
        let peer = |daddr: &str| {
            let ip = plain_ip(daddr);
            match pod_of(ip) {
                Some((namespace, pod)) => (End::Pod { namespace, pod }, true),
                None => (End::Addr(ip.to_string()), false),
            }
        };
        let counts = self.pods.entry((ns.clone(), pod.clone())).or_default();
        match &ev.data {
            EventData::Exec(_) => counts.execs += 1,
            EventData::Tcp(t) => match t.kind {
                TcpKind::Connect => {
                    counts.conns_out += 1;
                    let (p, _) = peer(&t.daddr);
                    self.edges.entry((me, p)).or_default().conns += 1;
                }
                TcpKind::ConnectFailed => {
                    let (p, _) = peer(&t.daddr);
                    self.edges.entry((me, p)).or_default().failed += 1;
                }
                TcpKind::Accept => {
                    counts.conns_in += 1;
                    let (p, known) = peer(&t.daddr);
                    if !known {
                        self.edges.entry((p, me)).or_default().conns += 1;
                    }
                }
                TcpKind::Close => {
                    let (tx, rx) = (t.tx_bytes.unwrap_or(0), t.rx_bytes.unwrap_or(0));
                    counts.tx_bytes += tx;
                    counts.rx_bytes += rx;
                    counts.retransmits += u64::from(t.retransmits.unwrap_or(0));
                    let (p, known) = peer(&t.daddr);
                    match t.role.as_str() {
                        "client" => {
                            let e = self.edges.entry((me, p)).or_default();
                            e.tx_bytes += tx;
                            e.rx_bytes += rx;
                        }
                        "server" if !known => {
                            // The edge points from the outside client to the pod.
                            let e = self.edges.entry((p, me)).or_default();
                            e.tx_bytes += rx;
                            e.rx_bytes += tx;
                        }
                        _ => {}
                    }
                }
                TcpKind::Retransmit => counts.retransmits += 1,
                _ => {}
            },
            EventData::Http(h) if h.kind == "request" => {
                let status = h.status.map(u64::from);
                let failed = status.is_none_or(|st| st >= 500)
                    || h.rpc
                        .as_ref()
                        .and_then(|r| r.status)
                        .is_some_and(|g| g != 0);
                let (p, known) = peer(&h.daddr);
                let key = match h.role.as_str() {
                    "client" => {
                        counts.requests_out += 1;
                        Some((me, p))
                    }
                    "server" => {
                        counts.requests_in += 1;
                        counts.errors_in += u64::from(failed);
                        (!known).then_some((p, me))
                    }
                    _ => None,
                };
                let Some(key) = key else { return };
                let e = self.edges.entry(key).or_default();
                e.requests += 1;
                e.errors += u64::from(failed);
                let d = h.duration_ns;
                if e.durations.len() == DURATIONS {
                    e.durations.pop_front();
                }
                e.durations.push_back(d);
                if e.recent.len() == RECENT {
                    e.recent.pop_front();
                }
                e.recent.push_back(Recent {
                    timestamp: ev.timestamp.rfc3339(),
                    role: h.role.clone(),
                    method: h.method.clone(),
                    path: h.path.clone(),
                    status,
                    duration_ms: d as f64 / 1e6,
                    error: h.error.clone(),
                    grpc: h
                        .rpc
                        .as_ref()
                        .map(|r| format!("{}/{}", r.service, r.method)),
                });
            }
            _ => {}
        }
    }

    pub(crate) fn pod(&self, namespace: &str, pod: &str) -> PodCounts {
        self.pods
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// The map: every pod in `pods` plus every end an edge has.
    pub(crate) fn map(&self, pods: &[(String, String)]) -> MapView {
        let mut nodes: BTreeMap<String, NodeView> = BTreeMap::new();
        let mut add = |e: &End| {
            let id = e.id();
            nodes.entry(id.clone()).or_insert_with(|| match e {
                End::Pod { namespace, pod } => NodeView {
                    id,
                    kind: "pod",
                    label: pod.clone(),
                    namespace: Some(namespace.clone()),
                },
                End::Addr(a) => NodeView {
                    id,
                    kind: "addr",
                    label: a.clone(),
                    namespace: None,
                },
            });
        };
        for (namespace, pod) in pods {
            add(&End::Pod {
                namespace: namespace.clone(),
                pod: pod.clone(),
            });
        }
        let mut edges = Vec::with_capacity(self.edges.len());
        for ((a, b), e) in &self.edges {
            add(a);
            add(b);
            edges.push(EdgeView {
                source: a.id(),
                target: b.id(),
                conns: e.conns,
                failed_conns: e.failed,
                tx_bytes: e.tx_bytes,
                rx_bytes: e.rx_bytes,
                requests: e.requests,
                errors: e.errors,
                p99_ms: p99(&e.durations),
            });
        }
        MapView {
            nodes: nodes.into_values().collect(),
            edges,
        }
    }

    /// An edge's recent requests, newest first; None for an edge not seen.
    pub(crate) fn recent(&self, source: &str, target: &str) -> Option<Vec<Recent>> {
        self.edges
            .iter()
            .find(|((a, b), _)| a.id() == source && b.id() == target)
            .map(|(_, e)| e.recent.iter().rev().cloned().collect())
    }

    #[cfg(test)]
    pub(crate) fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Synthetic edges for the benchmark of the map endpoint.
    pub(crate) fn add_synthetic(&mut self, a: End, b: End, requests: u64, dur_ns: u64) {
        let e = self.edges.entry((a, b)).or_default();
        e.conns += 1;
        e.requests += requests;
        for i in 0..requests.min(DURATIONS as u64) {
            e.durations.push_back(dur_ns + i);
        }
    }
}

/// The 99th percentile of durations (ns), in ms (nearest rank).
fn p99(d: &VecDeque<u64>) -> Option<f64> {
    if d.is_empty() {
        return None;
    }
    let mut v: Vec<u64> = d.iter().copied().collect();
    v.sort_unstable();
    let rank = ((v.len() as f64) * 0.99).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1] as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> Event {
        let mut v = v;
        let o = v.as_object_mut().unwrap();
        let probe = o["probe"].as_str().unwrap_or("").to_string();
        let mut extra = vec![
            ("family", json!("ipv4")),
            ("saddr", json!("10.0.0.9")),
            ("sport", json!(1)),
            ("dport", json!(80)),
        ];
        if probe == "tcp" {
            extra.push(("state", json!("ESTABLISHED")));
        }
        if probe == "http" {
            extra.extend([
                ("version", json!("HTTP/1.1")),
                ("request_bytes", json!(1)),
                ("response_bytes", json!(1)),
            ]);
        }
        for (k, d) in extra {
            o.entry(k).or_insert(d);
        }
        for (k, d) in [
            ("timestamp", json!("2026-12-02T00:00:00.000000001Z")),
            ("pid", json!(1)),
            ("tid", json!(1)),
            ("uid", json!(0)),
            ("comm", json!("x")),
            ("cgroup_id", json!(1)),
            ("node", json!("n")),
        ] {
            o.entry(k).or_insert(d);
        }
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    fn pods(ip: &str) -> Option<(String, String)> {
        match ip {
            "10.0.0.1" => Some(("shop".into(), "a".into())),
            "10.0.0.2" => Some(("shop".into(), "b".into())),
            _ => None,
        }
    }

    #[test]
    fn requests_between_traced_pods_count_once() {
        let mut l = Live::default();
        for i in 0..3 {
            let status = if i == 2 { 503 } else { 200 };
            let client = json!({"namespace":"shop","pod":"a","probe":"http","kind":"request","role":"client",
                "daddr":"10.0.0.2","method":"GET","path":"/x","status":status,"duration_ns":1_000_000u64 * (i + 1)});
            let server = json!({"namespace":"shop","pod":"b","probe":"http","kind":"request","role":"server",
                "daddr":"10.0.0.1","method":"GET","path":"/x","status":status,"duration_ns":900_000});
            l.ingest(&ev(client), &pods);
            l.ingest(&ev(server), &pods);
        }
        let outside = json!({"namespace":"shop","pod":"b","probe":"http","kind":"request","role":"server",
            "daddr":"::ffff:192.168.1.9","method":"POST","path":"/<b>","duration_ns":5});
        l.ingest(&ev(outside), &pods);
        let m = l.map(&[("shop".into(), "c".into())]);
        assert_eq!(m.edges.len(), 2);
        let ab = m
            .edges
            .iter()
            .find(|e| e.source == "pod:shop/a")
            .expect("a -> b");
        assert_eq!(
            (ab.target.as_str(), ab.requests, ab.errors),
            ("pod:shop/b", 3, 1)
        );
        assert_eq!(ab.p99_ms, Some(3.0));
        let ext = m
            .edges
            .iter()
            .find(|e| e.source == "addr:192.168.1.9")
            .expect("outside -> b");
        // No response at all is an error.
        assert_eq!((ext.requests, ext.errors), (1, 1));
        assert_eq!(m.nodes.len(), 4, "a, b, c and the outside address");
        let recent = l.recent("pod:shop/a", "pod:shop/b").expect("recent");
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0].status, Some(503), "newest first");
        let b = l.pod("shop", "b");
        assert_eq!((b.requests_in, b.errors_in), (4, 2));
    }

    #[test]
    fn connections_and_bytes() {
        let mut l = Live::default();
        l.ingest(
            &ev(json!({"namespace":"shop","pod":"a","probe":"tcp","kind":"connect","role":"client","daddr":"10.0.0.2"})),
            &pods,
        );
        l.ingest(
            &ev(json!({"namespace":"shop","pod":"b","probe":"tcp","kind":"accept","role":"server","daddr":"10.0.0.1"})),
            &pods,
        );
        l.ingest(
            &ev(json!({"namespace":"shop","pod":"a","probe":"tcp","kind":"close","role":"client","daddr":"10.0.0.2","tx_bytes":10,"rx_bytes":20})),
            &pods,
        );
        l.control(&json!({"kind":"lost","probe":"tcp","lost":4}));
        assert_eq!(l.edge_count(), 1);
        let m = l.map(&[]);
        assert_eq!(
            (m.edges[0].conns, m.edges[0].tx_bytes, m.edges[0].rx_bytes),
            (1, 10, 20)
        );
        assert_eq!(l.pod("shop", "a").conns_out, 1);
        assert_eq!(l.pod("shop", "b").conns_in, 1);
        assert_eq!(l.lost, 4);
    }
}
