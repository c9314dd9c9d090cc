//! Cross-layer traces for the web view: the observer session's records go
//! through the same span builder as the OTLP export (podscope-export
//! `otlp/xtrace.rs`: which request span is whose parent, which kernel events
//! are a request's child spans), and the decided spans of the last
//! [`MAX_TRACES`] traces are kept for the waterfall.

use std::collections::{HashMap, VecDeque};

use podscope_export::otlp::xtrace::{child_start, Builder, Config, Decided};
use podscope_model::{Event, EventData};
use serde::Serialize;
use serde_json::Value;

/// Traces kept; the oldest go first.
pub(crate) const MAX_TRACES: usize = 200;
/// Spans kept per trace; the rest are counted.
const MAX_SPANS: usize = 256;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One span of a trace.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SpanView {
    pub span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// `server`, `client` (requests) or `kernel`.
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    pub pod: String,
    pub comm: String,
    /// Wall-clock start, ns since the epoch, and duration in ns.
    pub start_ns: u64,
    pub duration_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How the parent of a request span was found (`hop`, `wire`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_by: Option<&'static str>,
}

#[derive(Debug, Default)]
struct Trace {
    spans: Vec<SpanView>,
    dropped: u64,
}

/// A trace in the list.
#[derive(Debug, Serialize)]
pub(crate) struct TraceSummary {
    pub trace_id: String,
    /// The root span's name and pod (the earliest span when no root is seen).
    pub root: String,
    pub root_pod: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub spans: usize,
    pub kernel_spans: usize,
    pub errors: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct TraceView {
    pub trace_id: String,
    pub spans: Vec<SpanView>,
    pub spans_dropped: u64,
}

/// The stage and what it decided.
pub(crate) struct Traces {
    builder: Builder<()>,
    traces: HashMap<[u8; 16], Trace>,
    order: VecDeque<[u8; 16]>,
}

impl Default for Traces {
    fn default() -> Self {
        Traces {
            builder: Builder::new(Config::default()),
            traces: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// A kernel child span's name, as the OTLP export names it.
fn kernel_name(ev: &Event) -> String {
    let v = serde_json::to_value(ev).unwrap_or(Value::Null);
    match &ev.data {
        EventData::Exec(_) => format!("exec {}", s(&v, "filename")),
        EventData::Tcp(_) => format!("connect {}:{}", s(&v, "daddr"), v["dport"]),
        EventData::Dns(_) => format!("dns {} {}", s(&v, "qtype"), s(&v, "name")),
        EventData::Open(_) => format!("open {}", s(&v, "path")),
        EventData::Bio(_) => format!("bio {} {}", s(&v, "op"), s(&v, "disk")),
        _ => ev.kind().to_string(),
    }
}

impl Traces {
    /// Takes one event of the observer session (wall-clock `now_ns`).
    pub(crate) fn ingest(&mut self, ev: &Event, now_ns: u64) {
        if matches!(ev.data, EventData::Http(_)) {
            self.builder.push_request(ev, (), now_ns);
        } else {
            self.builder.push_event(ev);
        }
    }

    /// Collects the spans decided by `now_ns`.
    pub(crate) fn tick(&mut self, now_ns: u64) {
        for d in self.builder.tick(now_ns) {
            self.keep(d);
        }
    }

    fn keep(&mut self, d: Decided<()>) {
        let (trace, span) = match d {
            Decided::Request {
                ids,
                parent,
                how,
                ev,
                ..
            } => {
                let EventData::Http(h) = &ev.data else { return };
                let name = match &h.rpc {
                    Some(r) => format!("{}/{}", r.service, r.method),
                    None => format!("{} {}", h.method, h.path),
                };
                (
                    ids.trace_id(),
                    SpanView {
                        span_id: hex(&ids.span_id()),
                        parent_id: parent.map(|p| hex(&p)),
                        kind: if h.role == "server" {
                            "server"
                        } else {
                            "client"
                        },
                        name,
                        namespace: ev.identity.namespace.clone(),
                        pod: ev.identity.pod.clone(),
                        comm: ev.comm.clone(),
                        start_ns: ev.timestamp.0,
                        duration_ns: h.duration_ns,
                        status: h.status.map(u64::from),
                        error: h.error.clone(),
                        parent_by: Some(how.name()),
                    },
                )
            }
            Decided::Kernel {
                ids, parent, ev, ..
            } => {
                let start = child_start(&ev);
                (
                    ids.trace_id(),
                    SpanView {
                        span_id: hex(&ids.span_id()),
                        parent_id: Some(hex(&parent)),
                        kind: "kernel",
                        name: kernel_name(&ev),
                        namespace: ev.identity.namespace.clone(),
                        pod: ev.identity.pod.clone(),
                        comm: ev.comm.clone(),
                        start_ns: start,
                        duration_ns: ev.timestamp.0.saturating_sub(start),
                        status: None,
                        error: None,
                        parent_by: None,
                    },
                )
            }
        };
        if !self.traces.contains_key(&trace) {
            if self.order.len() == MAX_TRACES {
                if let Some(old) = self.order.pop_front() {
                    self.traces.remove(&old);
                }
            }
            self.order.push_back(trace);
        }
        let t = self.traces.entry(trace).or_default();
        if t.spans.len() < MAX_SPANS {
            t.spans.push(span);
        } else {
            t.dropped += 1;
        }
    }

    /// The traces kept, newest first.
    pub(crate) fn list(&self) -> Vec<TraceSummary> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| self.traces.get(id).map(|t| (id, t)))
            .map(|(id, t)| {
                let ids: std::collections::HashSet<&str> =
                    t.spans.iter().map(|s| s.span_id.as_str()).collect();
                let root = t
                    .spans
                    .iter()
                    .filter(|s| s.kind != "kernel")
                    .find(|s| s.parent_id.as_deref().is_none_or(|p| !ids.contains(p)))
                    .or_else(|| t.spans.iter().min_by_key(|s| s.start_ns));
                let start = t.spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
                let end = t
                    .spans
                    .iter()
                    .map(|s| s.start_ns + s.duration_ns)
                    .max()
                    .unwrap_or(start);
                TraceSummary {
                    trace_id: hex(id),
                    root: root.map(|r| r.name.clone()).unwrap_or_default(),
                    root_pod: root
                        .map(|r| format!("{}/{}", r.namespace, r.pod))
                        .unwrap_or_default(),
                    start_ns: start,
                    duration_ns: end - start,
                    spans: t.spans.len(),
                    kernel_spans: t.spans.iter().filter(|s| s.kind == "kernel").count(),
                    errors: t
                        .spans
                        .iter()
                        .filter(|s| s.error.is_some() || s.status.is_some_and(|c| c >= 500))
                        .count(),
                }
            })
            .collect()
    }

    /// One trace by its id (32 hex digits).
    pub(crate) fn get(&self, id: &str) -> Option<TraceView> {
        let (k, t) = self.traces.iter().find(|(k, _)| hex(&k[..]) == id)?;
        let mut spans = t.spans.clone();
        spans.sort_by_key(|s| s.start_ns);
        Some(TraceView {
            trace_id: hex(k),
            spans,
            spans_dropped: t.dropped,
        })
    }
}
