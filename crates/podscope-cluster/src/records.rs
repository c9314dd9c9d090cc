//! A session's records as typed protobuf (proto/events.proto) and back: the
//! agent sends its events this way, the hub forwards them to gRPC clients as
//! they came, and renders a record's JSON (docs/json-schema.md) only for REST
//! clients, the web view's control counts and the CLI's printer.
//!
//! Every event message has the field names of its JSON, so the conversions
//! are one list of fields per type ([`mirror!`]); the few fields whose Rust
//! type differs from the wire's (`u16` ports, `Cow` strings, the kind enums,
//! tracepoint fields) convert through [`Wire`]. JSON made from a converted
//! event equals the JSON of the event itself (tested for every probe).

use std::borrow::Cow;

use podscope_model as m;
use serde_json::{Map, Value};

use crate::proto::{self, event::Data, record::Kind};

/// One field's conversion between its model type and its wire type.
trait Wire<W> {
    fn to_wire(&self) -> W;
    fn from_wire(w: W) -> Self;
}

impl<T: Clone> Wire<T> for T {
    fn to_wire(&self) -> T {
        self.clone()
    }
    fn from_wire(w: T) -> T {
        w
    }
}

impl Wire<u32> for u16 {
    fn to_wire(&self) -> u32 {
        u32::from(*self)
    }
    fn from_wire(w: u32) -> u16 {
        // Ports and ids are u16 on the node; a larger value is not ours.
        u16::try_from(w).unwrap_or(u16::MAX)
    }
}

impl Wire<Option<u32>> for Option<u16> {
    fn to_wire(&self) -> Option<u32> {
        self.map(u32::from)
    }
    fn from_wire(w: Option<u32>) -> Option<u16> {
        w.map(|v| u16::try_from(v).unwrap_or(u16::MAX))
    }
}

impl Wire<String> for Cow<'static, str> {
    fn to_wire(&self) -> String {
        self.to_string()
    }
    fn from_wire(w: String) -> Self {
        Cow::Owned(w)
    }
}

impl Wire<String> for Box<str> {
    fn to_wire(&self) -> String {
        self.to_string()
    }
    fn from_wire(w: String) -> Self {
        w.into_boxed_str()
    }
}

impl Wire<u64> for m::Timestamp {
    fn to_wire(&self) -> u64 {
        self.0
    }
    fn from_wire(w: u64) -> Self {
        m::Timestamp(w)
    }
}

impl Wire<i32> for m::TcpKind {
    fn to_wire(&self) -> i32 {
        use proto::TcpKind as P;
        (match self {
            m::TcpKind::Connect => P::Connect,
            m::TcpKind::Accept => P::Accept,
            m::TcpKind::Close => P::Close,
            m::TcpKind::ConnectFailed => P::ConnectFailed,
            m::TcpKind::Retransmit => P::Retransmit,
            m::TcpKind::ResetSent => P::ResetSent,
            m::TcpKind::ResetReceived => P::ResetReceived,
        }) as i32
    }
    fn from_wire(w: i32) -> Self {
        use proto::TcpKind as P;
        match P::try_from(w).unwrap_or(P::Connect) {
            P::Connect => m::TcpKind::Connect,
            P::Accept => m::TcpKind::Accept,
            P::Close => m::TcpKind::Close,
            P::ConnectFailed => m::TcpKind::ConnectFailed,
            P::Retransmit => m::TcpKind::Retransmit,
            P::ResetSent => m::TcpKind::ResetSent,
            P::ResetReceived => m::TcpKind::ResetReceived,
        }
    }
}

impl Wire<i32> for m::SockDataKind {
    fn to_wire(&self) -> i32 {
        (match self {
            m::SockDataKind::Data => proto::SockDataKind::Data,
            m::SockDataKind::Close => proto::SockDataKind::Close,
        }) as i32
    }
    fn from_wire(w: i32) -> Self {
        match proto::SockDataKind::try_from(w) {
            Ok(proto::SockDataKind::Close) => m::SockDataKind::Close,
            _ => m::SockDataKind::Data,
        }
    }
}

impl Wire<proto::TpValue> for m::TpValue {
    fn to_wire(&self) -> proto::TpValue {
        use proto::tp_value::Value as V;
        proto::TpValue {
            value: Some(match self {
                m::TpValue::Int(v) => V::Int(*v),
                m::TpValue::Uint(v) => V::Uint(*v),
                m::TpValue::Str(s) => V::Str(s.clone()),
                m::TpValue::List(l) => V::List(proto::TpList {
                    values: l.iter().map(Wire::to_wire).collect(),
                }),
            }),
        }
    }
    fn from_wire(w: proto::TpValue) -> Self {
        use proto::tp_value::Value as V;
        match w.value {
            Some(V::Int(v)) => m::TpValue::Int(v),
            Some(V::Uint(v)) => m::TpValue::Uint(v),
            Some(V::Str(s)) => m::TpValue::Str(s),
            Some(V::List(l)) => {
                m::TpValue::List(l.values.into_iter().map(Wire::from_wire).collect())
            }
            None => m::TpValue::Str(String::new()),
        }
    }
}

impl Wire<Vec<proto::TpField>> for m::TpFields {
    fn to_wire(&self) -> Vec<proto::TpField> {
        self.0
            .iter()
            .map(|(name, v)| proto::TpField {
                name: name.clone(),
                value: Some(v.to_wire()),
            })
            .collect()
    }
    fn from_wire(w: Vec<proto::TpField>) -> Self {
        m::TpFields(
            w.into_iter()
                .map(|f| {
                    let v = f.value.map(Wire::from_wire);
                    (f.name, v.unwrap_or(m::TpValue::Str(String::new())))
                })
                .collect(),
        )
    }
}

impl Wire<Vec<proto::NetStage>> for Vec<m::NetStage> {
    fn to_wire(&self) -> Vec<proto::NetStage> {
        self.iter().map(Into::into).collect()
    }
    fn from_wire(w: Vec<proto::NetStage>) -> Self {
        w.into_iter().map(Into::into).collect()
    }
}

impl Wire<Option<proto::RpcInfo>> for Option<m::RpcInfo> {
    fn to_wire(&self) -> Option<proto::RpcInfo> {
        self.as_ref().map(Into::into)
    }
    fn from_wire(w: Option<proto::RpcInfo>) -> Self {
        w.map(Into::into)
    }
}

impl Wire<Option<proto::TraceContext>> for Option<Box<m::TraceContext>> {
    fn to_wire(&self) -> Option<proto::TraceContext> {
        self.as_deref().map(Into::into)
    }
    fn from_wire(w: Option<proto::TraceContext>) -> Self {
        w.map(|t| Box::new(t.into()))
    }
}

impl Wire<Vec<proto::Header>> for Vec<(String, String)> {
    fn to_wire(&self) -> Vec<proto::Header> {
        self.iter()
            .map(|(name, value)| proto::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }
    fn from_wire(w: Vec<proto::Header>) -> Self {
        w.into_iter().map(|h| (h.name, h.value)).collect()
    }
}

impl Wire<Option<proto::HttpCapture>> for Option<Box<m::HttpCapture>> {
    fn to_wire(&self) -> Option<proto::HttpCapture> {
        self.as_deref().map(Into::into)
    }
    fn from_wire(w: Option<proto::HttpCapture>) -> Self {
        w.map(|c| Box::new(c.into()))
    }
}

/// `From<&Model> for Wire` and `From<Wire> for Model`, field by field;
/// `skip` names model fields the wire does not carry (set to their default).
macro_rules! mirror {
    ($model:ty => $wire:ty { $($f:ident),* $(,)? } $(skip { $($s:ident),* })?) => {
        impl From<&$model> for $wire {
            fn from(v: &$model) -> Self {
                Self { $($f: Wire::to_wire(&v.$f)),* }
            }
        }
        impl From<$wire> for $model {
            fn from(w: $wire) -> Self {
                Self { $($f: Wire::from_wire(w.$f),)* $($($s: Default::default()),*)? }
            }
        }
    };
}

mirror!(m::ExecEvent => proto::ExecEvent { kind, ppid, filename, args, args_truncated, retval, error });
mirror!(m::ExitEvent => proto::ExitEvent { kind, ppid, exit_code, signal, core_dumped, lifetime_ns });
mirror!(m::TcpEvent => proto::TcpEvent {
    kind, role, family, saddr, daddr, sport, dport, state, duration_ns, tx_bytes, rx_bytes,
    retransmits, error, dialed_addr, dialed_port
});
mirror!(m::BioEvent => proto::BioEvent {
    kind, disk, dev, op, sector, bytes, latency_ns, queued_ns, sync, error
});
mirror!(m::CacheEvent => proto::CacheEvent {
    kind, ppid, hits, misses, dirtied, added, hit_ratio, interval_ns, method
});
mirror!(m::OpenEvent => proto::OpenEvent {
    kind, path, dirfd, flags, flags_str, mode, fd, errno, error
});
mirror!(m::SyscallEvent => proto::SyscallEvent {
    kind, syscall, nr, args, decoded, ret, errno, error, duration_ns
});
mirror!(m::SyscallSummaryEvent => proto::SyscallSummaryEvent {
    kind, syscall, nr, calls, errors, total_ns, avg_ns, p99_ns, hist, elapsed_ns
});
mirror!(m::SockDataEvent => proto::SockDataEvent {
    kind, protocol, tls, sock, fd, direction, syscall, len, seq, family, saddr, daddr, sport, dport
} skip { payload });
mirror!(m::TraceContext => proto::TraceContext {
    format, trace_id, span_id, parent_span_id, sampled, tracestate
});
mirror!(m::RpcInfo => proto::RpcInfo { system, service, method, status, message });
mirror!(m::HttpEvent => proto::HttpEvent {
    kind, role, version, method, path, host, status, duration_ns, request_bytes, response_bytes,
    tls, truncated, family, saddr, sport, daddr, dport, peer_namespace, peer_pod, error, rpc,
    trace_context, capture, dialed_addr, dialed_port, stream_id
});
mirror!(m::HttpCapture => proto::HttpCapture {
    request_headers, response_headers, request_body, response_body
});
mirror!(m::DnsEvent => proto::DnsEvent {
    kind, role, id, name, qtype, rcode, answers, latency_ns, family, saddr, sport, daddr, dport,
    peer_namespace, peer_pod, error, transport, dialed_addr, dialed_port
});
mirror!(m::TracepointEvent => proto::TracepointEvent { kind, tracepoint, fields, truncated });
mirror!(m::DropEvent => proto::DropEvent {
    kind, reason, reason_code, location, attributed_by, netns, ifname, ifindex, protocol, family,
    saddr, daddr, sport, dport, tcp_flags, len, ethertype
});
mirror!(m::NetPacketEvent => proto::NetPacketEvent {
    kind, packet, skb, stage, ifname, ifindex, netns, len, first, step_ns, total_ns, protocol,
    family, saddr, daddr, sport, dport, tcp_flags, ip_len, reason, location
});
mirror!(m::NetStage => proto::NetStage {
    stage, packets, step_p50_ns, step_p99_ns, total_p50_ns, total_p99_ns
});
mirror!(m::NetFlowEvent => proto::NetFlowEvent {
    kind, protocol, family, saddr, daddr, sport, dport, packets, bytes, drops, duration_ns,
    end_to_end_p50_ns, end_to_end_p99_ns, stages
});

impl From<&m::Event> for proto::Event {
    fn from(e: &m::Event) -> Self {
        let id = &e.identity;
        let data = match &e.data {
            m::EventData::Exec(d) => Data::Exec(Box::new(d.into())),
            m::EventData::Exit(d) => Data::Exit(Box::new(d.into())),
            m::EventData::Tcp(d) => Data::Tcp(Box::new(d.into())),
            m::EventData::Bio(d) => Data::Bio(Box::new(d.into())),
            m::EventData::Cache(d) => Data::Cache(Box::new(d.into())),
            m::EventData::Open(d) => Data::Open(Box::new(d.into())),
            m::EventData::Syscall(d) => Data::Syscalls(Box::new(d.into())),
            m::EventData::SyscallSummary(d) => Data::SyscallsTotals(Box::new(d.into())),
            m::EventData::SockData(d) => Data::HttpData(Box::new(d.into())),
            m::EventData::Http(d) => Data::Http(Box::new(d.as_ref().into())),
            m::EventData::Dns(d) => Data::Dns(Box::new(d.as_ref().into())),
            m::EventData::Tracepoint(d) => Data::Tracepoint(Box::new(d.into())),
            m::EventData::Drop(d) => Data::Drop(Box::new(d.as_ref().into())),
            m::EventData::NetPacket(d) => Data::Net(Box::new(d.as_ref().into())),
            m::EventData::NetFlow(d) => Data::NetFlows(Box::new(d.into())),
        };
        proto::Event {
            timestamp: e.timestamp.0,
            node: id.node.clone(),
            namespace: id.namespace.clone(),
            pod: id.pod.clone(),
            pod_uid: id.pod_uid.clone(),
            container: id.container.clone(),
            container_id: id.container_id.clone(),
            image: id.image.clone(),
            pid: e.pid,
            tid: e.tid,
            uid: e.uid,
            comm: e.comm.clone(),
            cgroup_id: e.cgroup_id,
            data: Some(data),
        }
    }
}

/// An event message without its probe's part (from a newer agent with a
/// probe this build does not know).
#[derive(Debug, thiserror::Error)]
#[error("an event record without a probe part this podscope knows (a newer agent?)")]
pub struct UnknownProbe;

impl TryFrom<proto::Event> for m::Event {
    type Error = UnknownProbe;
    fn try_from(e: proto::Event) -> Result<Self, UnknownProbe> {
        let data = match e.data.ok_or(UnknownProbe)? {
            Data::Exec(d) => m::EventData::Exec((*d).into()),
            Data::Exit(d) => m::EventData::Exit((*d).into()),
            Data::Tcp(d) => m::EventData::Tcp((*d).into()),
            Data::Bio(d) => m::EventData::Bio((*d).into()),
            Data::Cache(d) => m::EventData::Cache((*d).into()),
            Data::Open(d) => m::EventData::Open((*d).into()),
            Data::Syscalls(d) => m::EventData::Syscall((*d).into()),
            Data::SyscallsTotals(d) => m::EventData::SyscallSummary((*d).into()),
            Data::HttpData(d) => m::EventData::SockData((*d).into()),
            Data::Http(d) => m::EventData::Http(Box::new((*d).into())),
            Data::Dns(d) => m::EventData::Dns(Box::new((*d).into())),
            Data::Tracepoint(d) => m::EventData::Tracepoint((*d).into()),
            Data::Drop(d) => m::EventData::Drop(Box::new((*d).into())),
            Data::Net(d) => m::EventData::NetPacket(Box::new((*d).into())),
            Data::NetFlows(d) => m::EventData::NetFlow((*d).into()),
        };
        Ok(m::Event {
            timestamp: m::Timestamp(e.timestamp),
            identity: m::Identity {
                node: e.node,
                namespace: e.namespace,
                pod: e.pod,
                pod_uid: e.pod_uid,
                container: e.container,
                container_id: e.container_id,
                image: e.image,
            },
            pid: e.pid,
            tid: e.tid,
            uid: e.uid,
            comm: e.comm,
            cgroup_id: e.cgroup_id,
            data,
        })
    }
}

/// An event as a record.
pub fn event(ev: &m::Event) -> proto::Record {
    proto::Record {
        kind: Some(Kind::Event(ev.into())),
    }
}

/// A `lost` record of a node.
pub fn lost(probe: m::ProbeKind, delta: u64, total: u64, node: &str) -> proto::Record {
    proto::Record {
        kind: Some(Kind::Lost(proto::LostRecord {
            timestamp_ns: m::Timestamp::now().0,
            probe: probe.name().to_string(),
            lost: delta,
            lost_total: total,
            node: node.to_string(),
        })),
    }
}

/// A control record.
pub fn control(c: proto::ControlRecord) -> proto::Record {
    proto::Record {
        kind: Some(Kind::Control(c)),
    }
}

/// A summary record.
pub fn summary(s: proto::Summary) -> proto::Record {
    proto::Record {
        kind: Some(Kind::Summary(s)),
    }
}

/// The probe an event record belongs to (its JSON `probe` field's probe).
pub fn probe_of(r: &proto::Record) -> Option<&'static str> {
    let Some(Kind::Event(e)) = &r.kind else {
        return None;
    };
    Some(match e.data.as_ref()? {
        Data::Exec(_) => "exec",
        Data::Exit(_) => "exit",
        Data::Tcp(_) => "tcp",
        Data::Bio(_) => "bio",
        Data::Cache(_) => "cache",
        Data::Open(_) => "open",
        Data::Syscalls(_) | Data::SyscallsTotals(_) => "syscalls",
        Data::HttpData(d) if d.protocol.starts_with("dns") => "dns",
        Data::HttpData(d) if d.tls => "tls",
        Data::HttpData(_) | Data::Http(_) => "http",
        Data::Dns(_) => "dns",
        Data::Tracepoint(_) => "tracepoint",
        Data::Drop(_) => "drop",
        Data::Net(_) | Data::NetFlows(_) => "net",
    })
}

/// A record as the JSON of docs/json-schema.md (what `podscope trace -o
/// json` prints and REST streams carry): events in their fields' order,
/// the other records as objects with sorted keys.
pub fn to_json(r: &proto::Record) -> String {
    match &r.kind {
        Some(Kind::Event(e)) => match m::Event::try_from(e.clone()) {
            Ok(ev) => serde_json::to_string(&ev).unwrap_or_default(),
            Err(e) => serde_json::json!({"kind": "unreadable", "error": e.to_string()}).to_string(),
        },
        _ => to_value(r).to_string(),
    }
}

/// A record that is not an event as a JSON value (events: see [`to_json`]).
pub fn to_value(r: &proto::Record) -> Value {
    match &r.kind {
        Some(Kind::Event(e)) => m::Event::try_from(e.clone())
            .ok()
            .and_then(|ev| serde_json::to_value(ev).ok())
            .unwrap_or(Value::Null),
        Some(Kind::Lost(l)) => serde_json::json!({
            "timestamp": m::Timestamp(l.timestamp_ns).rfc3339(),
            "probe": l.probe,
            "kind": "lost",
            "lost": l.lost,
            "lost_total": l.lost_total,
            "node": l.node,
        }),
        Some(Kind::Summary(s)) => {
            serde_json::to_value(crate::api::SummaryView::from(s.clone())).unwrap_or(Value::Null)
        }
        Some(Kind::Control(c)) => {
            let mut o = Map::new();
            o.insert("kind".into(), c.kind.clone().into());
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            };
            put("session", c.session.clone().map(Value::from));
            put("node", c.node.clone().map(Value::from));
            put("state", c.state.clone().map(Value::from));
            put("reason", c.reason.clone().map(Value::from));
            put("message", c.message.clone().map(Value::from));
            put("probe", c.probe.clone().map(Value::from));
            put("where", c.r#where.clone().map(Value::from));
            put("gap", c.gap.map(Value::from));
            put("gap_total", c.gap_total.map(Value::from));
            put("events", c.events.map(Value::from));
            put("gaps", c.gaps.map(Value::from));
            if c.kind == "status" {
                let gaps: Map<String, Value> = c
                    .probe_gaps
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect();
                put("gaps", Some(Value::Object(gaps)));
            }
            Value::Object(o)
        }
        None => Value::Null,
    }
}

/// One record of a session's stream as a client reads it, typed: what
/// the CLI prints and `podscope --hub URL top` counts, from the gRPC stream
/// as it came or from a REST stream's JSON line.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// An event of a probe this build knows.
    Event(Box<m::Event>),
    /// A record that is not an event: `lost`, `summary` or a control record
    /// (`gap`, `end`, `node_lost`, ...). Never an event.
    Record(Box<proto::Record>),
    /// An event of a probe this build does not know (a newer agent): its
    /// node, and what can be shown of it as JSON.
    Unreadable {
        /// The node it came from.
        node: String,
        /// Its JSON line.
        json: String,
    },
}

impl Received {
    /// A record of the gRPC stream.
    pub fn from_record(r: proto::Record) -> Received {
        match r.kind {
            Some(Kind::Event(e)) => {
                let json = |e: &proto::Event| {
                    serde_json::json!({
                        "timestamp": m::Timestamp(e.timestamp).rfc3339(),
                        "node": e.node, "namespace": e.namespace, "pod": e.pod,
                        "pid": e.pid, "tid": e.tid, "comm": e.comm,
                        "error": UnknownProbe.to_string(),
                    })
                    .to_string()
                };
                if e.data.is_none() {
                    return Received::Unreadable {
                        json: json(&e),
                        node: e.node,
                    };
                }
                match m::Event::try_from(e) {
                    Ok(ev) => Received::Event(Box::new(ev)),
                    Err(_) => Received::Unreadable {
                        node: String::new(),
                        json: String::new(),
                    },
                }
            }
            kind => Received::Record(Box::new(proto::Record { kind })),
        }
    }

    /// A line of a REST stream (docs/json-schema.md); `None` for a blank
    /// line (the hub's keep-alive) or one that is not a JSON object.
    pub fn from_json(line: &str) -> Option<Received> {
        if line.trim().is_empty() {
            return None;
        }
        // Events are nearly every line: read as one straight away.
        if let Ok(ev) = serde_json::from_str::<m::Event>(line) {
            return Some(Received::Event(Box::new(ev)));
        }
        let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line) else {
            return None;
        };
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        let n = |k: &str| o.get(k).and_then(Value::as_u64);
        let kind = s("kind").unwrap_or_default();
        let rec = match kind.as_str() {
            "lost" => Kind::Lost(proto::LostRecord {
                timestamp_ns: o
                    .get("timestamp")
                    .and_then(|t| serde_json::from_value::<m::Timestamp>(t.clone()).ok())
                    .map_or(0, |t| t.0),
                probe: s("probe").unwrap_or_default(),
                lost: n("lost").unwrap_or(0),
                lost_total: n("lost_total").unwrap_or(0),
                node: s("node").unwrap_or_default(),
            }),
            "summary" => {
                match serde_json::from_value::<crate::api::SummaryView>(Value::Object(o)) {
                    Ok(v) => Kind::Summary((&v).into()),
                    Err(_) => return None,
                }
            }
            // Every event has a pid (docs/json-schema.md); one that did not
            // read as an event is of a probe this build does not know.
            _ if o.contains_key("pid") => {
                return Some(Received::Unreadable {
                    node: s("node").unwrap_or_default(),
                    json: line.to_string(),
                })
            }
            _ => {
                let probe_gaps = match (kind.as_str(), o.get("gaps")) {
                    ("status", Some(Value::Object(g))) => g
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect(),
                    _ => Default::default(),
                };
                Kind::Control(proto::ControlRecord {
                    session: s("session"),
                    node: s("node"),
                    state: s("state"),
                    reason: s("reason"),
                    message: s("message"),
                    probe: s("probe"),
                    r#where: s("where"),
                    gap: n("gap"),
                    gap_total: n("gap_total"),
                    events: n("events"),
                    gaps: n("gaps"),
                    probe_gaps,
                    kind,
                })
            }
        };
        Some(Received::Record(Box::new(proto::Record {
            kind: Some(rec),
        })))
    }

    /// The node it came from ("" when the record names none).
    pub fn node(&self) -> &str {
        match self {
            Received::Event(ev) => &ev.identity.node,
            Received::Record(r) => match &r.kind {
                Some(Kind::Lost(l)) => &l.node,
                Some(Kind::Summary(s)) => s.node.as_deref().unwrap_or(""),
                Some(Kind::Control(c)) => c.node.as_deref().unwrap_or(""),
                _ => "",
            },
            Received::Unreadable { node, .. } => node,
        }
    }

    /// Its JSON line (docs/json-schema.md), as a REST stream carries it.
    pub fn to_json(&self) -> String {
        match self {
            Received::Event(ev) => serde_json::to_string(ev).unwrap_or_default(),
            Received::Record(r) => to_value(r).to_string(),
            Received::Unreadable { json, .. } => json.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn base(data: m::EventData) -> m::Event {
        m::Event {
            timestamp: m::Timestamp(1_700_000_000_123_456_789),
            identity: m::Identity {
                node: "n1".into(),
                namespace: "shop".into(),
                pod: "web-0".into(),
                pod_uid: "u-1".into(),
                container: "web".into(),
                container_id: "c0ffee".into(),
                image: "nginx:1".into(),
            },
            pid: 41,
            tid: 42,
            uid: 1000,
            comm: "nginx".into(),
            cgroup_id: 77,
            data,
        }
    }

    /// One event of every probe, with optional fields both set and unset.
    fn every_probe() -> Vec<m::Event> {
        let tcp = |kind, some: bool| {
            m::EventData::Tcp(m::TcpEvent {
                dialed_addr: Box::default(),
                dialed_port: 0,
                kind,
                role: "client".into(),
                family: "ipv6".into(),
                saddr: "::1".into(),
                daddr: "fd00::2".into(),
                sport: 65535,
                dport: 443,
                state: "ESTABLISHED".into(),
                duration_ns: some.then_some(5),
                tx_bytes: some.then_some(1 << 40),
                rx_bytes: some.then_some(0),
                retransmits: some.then_some(3),
                error: some.then(|| "ECONNREFUSED".into()),
            })
        };
        let mut v = vec![
            m::EventData::Exec(m::ExecEvent {
                kind: "exec".into(),
                ppid: 1,
                filename: "/bin/sh".into(),
                args: vec!["sh".into(), "-c".into(), "ünïcode \"q\"".into()],
                args_truncated: true,
                retval: -2,
                error: Some("ENOENT".into()),
            }),
            m::EventData::Exit(m::ExitEvent {
                kind: "exit".into(),
                ppid: 1,
                exit_code: None,
                signal: Some(9),
                core_dumped: true,
                lifetime_ns: 12,
            }),
            tcp(m::TcpKind::Close, true),
            tcp(m::TcpKind::ConnectFailed, false),
            tcp(m::TcpKind::ResetReceived, false),
            m::EventData::Bio(m::BioEvent {
                kind: "io".into(),
                disk: "vda".into(),
                dev: "254:0".into(),
                op: "write".into(),
                sector: 99,
                bytes: 4096,
                latency_ns: 7,
                queued_ns: 1,
                sync: true,
                error: Some(-5),
            }),
            m::EventData::Cache(m::CacheEvent {
                kind: "interval".into(),
                ppid: 3,
                hits: 10,
                misses: 2,
                dirtied: 1,
                added: 2,
                hit_ratio: Some(0.8333),
                interval_ns: 1_000_000_000,
                method: "fentry".into(),
            }),
            m::EventData::Open(m::OpenEvent {
                kind: "open".into(),
                path: "/etc/hosts".into(),
                dirfd: Some(-100),
                flags: 0o2_000_000,
                flags_str: "O_RDONLY|O_CLOEXEC".into(),
                mode: 0,
                fd: None,
                errno: Some(2),
                error: Some("ENOENT".into()),
            }),
            m::EventData::Syscall(m::SyscallEvent {
                kind: "call".into(),
                syscall: "openat".into(),
                nr: 257,
                args: vec!["AT_FDCWD".into(), "\"/x\"".into()],
                decoded: Some("openat(AT_FDCWD, \"/x\")".into()),
                ret: Some(-2),
                errno: Some(2),
                error: Some("ENOENT".into()),
                duration_ns: 900,
            }),
            m::EventData::SyscallSummary(m::SyscallSummaryEvent {
                kind: "totals".into(),
                syscall: "read".into(),
                nr: 0,
                calls: 5,
                errors: 1,
                total_ns: 50,
                avg_ns: 10,
                p99_ns: 16,
                hist: vec![0, 1, 4],
                elapsed_ns: 1000,
            }),
            m::EventData::SockData(m::SockDataEvent {
                kind: m::SockDataKind::Close,
                protocol: "http".into(),
                tls: true,
                sock: 0xffff_8880_0000_0001,
                fd: 7,
                direction: "egress".into(),
                syscall: "write".into(),
                len: 100,
                seq: 3,
                family: "ipv4".into(),
                saddr: "10.0.0.1".into(),
                daddr: "10.0.0.2".into(),
                sport: 1,
                dport: 80,
                payload: Vec::new(),
            }),
            m::EventData::Http(Box::new(m::HttpEvent {
                dialed_addr: String::new(),
                dialed_port: 0,
                stream_id: 0,
                kind: "request".into(),
                role: "server".into(),
                version: "2".into(),
                method: "POST".into(),
                path: "/shop.Api/Get".into(),
                host: "api".into(),
                status: Some(200),
                duration_ns: 1234,
                request_bytes: 10,
                response_bytes: 20,
                tls: false,
                truncated: true,
                family: "ipv4".into(),
                saddr: "10.0.0.1".into(),
                sport: 50051,
                daddr: "10.0.0.2".into(),
                dport: 40000,
                peer_namespace: "shop".into(),
                peer_pod: "web-1".into(),
                error: None,
                rpc: Some(m::RpcInfo {
                    system: "grpc".into(),
                    service: "shop.Api".into(),
                    method: "Get".into(),
                    status: Some(5),
                    message: Some("not found".into()),
                }),
                trace_context: Some(Box::new(m::TraceContext {
                    format: "w3c".into(),
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                    span_id: "00f067aa0ba902b7".into(),
                    parent_span_id: None,
                    sampled: Some(true),
                    tracestate: Some("a=b".into()),
                })),
                capture: Some(Box::new(m::HttpCapture {
                    request_headers: vec![("user-agent".into(), "curl/8".into())],
                    response_headers: vec![("server".into(), "nginx".into())],
                    request_body: Some("{\"a\":1}".into()),
                    response_body: None,
                })),
            })),
            m::EventData::Dns(Box::new(m::DnsEvent {
                dialed_addr: "10.96.0.10".into(),
                dialed_port: 53,
                kind: "query".into(),
                role: "client".into(),
                id: 0xbeef,
                name: "example.test".into(),
                qtype: "A".into(),
                rcode: Some("NOERROR".into()),
                transport: "tcp".into(),
                answers: vec!["10.1.1.1".into(), "10.1.1.2".into()],
                latency_ns: Some(77),
                family: "ipv4".into(),
                saddr: "10.0.0.1".into(),
                sport: 5353,
                daddr: "10.0.0.53".into(),
                dport: 53,
                peer_namespace: String::new(),
                peer_pod: String::new(),
                error: None,
            })),
            m::EventData::Tracepoint(m::TracepointEvent {
                kind: "record".into(),
                tracepoint: "net:net_dev_xmit".into(),
                fields: m::TpFields(vec![
                    ("skbaddr".into(), m::TpValue::Str("0xffff8880".into())),
                    ("len".into(), m::TpValue::Uint(74)),
                    ("rc".into(), m::TpValue::Int(-1)),
                    (
                        "mac".into(),
                        m::TpValue::List(vec![m::TpValue::Uint(2), m::TpValue::Int(-3)]),
                    ),
                ]),
                truncated: true,
            }),
            m::EventData::Drop(Box::new(m::DropEvent {
                kind: "drop".into(),
                reason: "NO_SOCKET".into(),
                reason_code: Some(2),
                location: "tcp_v4_rcv+0x1a".into(),
                attributed_by: "netns".into(),
                netns: 4026531840,
                ifname: "eth0".into(),
                ifindex: 2,
                protocol: "tcp".into(),
                family: "ipv4".into(),
                saddr: "10.0.0.1".into(),
                daddr: "10.0.0.2".into(),
                sport: 1,
                dport: 9,
                tcp_flags: "SYN".into(),
                len: 60,
                ethertype: 0x0800,
            })),
            m::EventData::NetPacket(Box::new(m::NetPacketEvent {
                kind: "packet".into(),
                packet: 9,
                skb: "0xffff".into(),
                stage: "veth_xmit".into(),
                ifname: String::new(),
                ifindex: 5,
                netns: 1,
                len: 98,
                first: false,
                step_ns: 10,
                total_ns: 20,
                protocol: "icmp".into(),
                family: "ipv4".into(),
                saddr: "10.0.0.1".into(),
                daddr: "10.0.0.2".into(),
                sport: 0,
                dport: 0,
                tcp_flags: String::new(),
                ip_len: 84,
                reason: Some("NOT_SPECIFIED".into()),
                location: None,
            })),
            m::EventData::NetFlow(m::NetFlowEvent {
                kind: "flow".into(),
                protocol: "tcp".into(),
                family: "ipv4".into(),
                saddr: "10.0.0.1".into(),
                daddr: "10.0.0.2".into(),
                sport: 1,
                dport: 2,
                packets: 3,
                bytes: 4,
                drops: 0,
                duration_ns: 5,
                end_to_end_p50_ns: 6,
                end_to_end_p99_ns: 7,
                stages: vec![m::NetStage {
                    stage: "pod_xmit".into(),
                    packets: 3,
                    step_p50_ns: 1,
                    step_p99_ns: 2,
                    total_p50_ns: 3,
                    total_p99_ns: 4,
                }],
            }),
        ];
        let mut out: Vec<m::Event> = v.drain(..).map(base).collect();
        // A host process: no identity at all.
        let mut host = out[0].clone();
        host.identity = m::Identity::default();
        out.push(host);
        out
    }

    #[test]
    fn every_probes_event_survives_the_wire_with_the_same_json() {
        let events = every_probe();
        let mut probes = std::collections::BTreeSet::new();
        for ev in &events {
            probes.insert(ev.probe().name());
            let rec = event(ev);
            assert_eq!(probe_of(&rec), Some(ev.probe().name()));
            // Through the bytes, as the link carries it.
            let bytes = rec.encode_to_vec();
            let back = proto::Record::decode(bytes.as_slice()).unwrap();
            assert_eq!(back, rec);
            let json = serde_json::to_string(ev).unwrap();
            assert_eq!(to_json(&back), json, "{ev:?}");
            let Some(Kind::Event(e)) = back.kind else {
                panic!()
            };
            assert_eq!(&m::Event::try_from(e).unwrap(), ev);
        }
        // Every probe's record kinds are covered (tls is http_data with tls).
        for p in [
            "exec",
            "exit",
            "tcp",
            "bio",
            "cache",
            "open",
            "syscalls",
            "tls",
            "http",
            "dns",
            "tracepoint",
            "drop",
            "net",
        ] {
            assert!(probes.contains(p), "no sample event of probe {p}");
        }
    }

    #[test]
    fn other_records_render_as_their_documented_json() {
        let l = lost(m::ProbeKind::Open, 5, 9, "n1");
        let v: Value = serde_json::from_str(&to_json(&l)).unwrap();
        assert_eq!(
            (
                &v["kind"],
                &v["probe"],
                &v["lost"],
                &v["lost_total"],
                &v["node"]
            ),
            (
                &Value::from("lost"),
                &Value::from("open"),
                &Value::from(5),
                &Value::from(9),
                &Value::from("n1")
            )
        );
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        let g = control(proto::ControlRecord {
            kind: "gap".into(),
            r#where: Some("hub".into()),
            probe: Some("exec".into()),
            gap: Some(3),
            gap_total: Some(4),
            ..Default::default()
        });
        assert_eq!(
            to_json(&g),
            r#"{"gap":3,"gap_total":4,"kind":"gap","probe":"exec","where":"hub"}"#
        );
        let s = summary(proto::Summary {
            timestamp: "2026-12-02T10:00:00Z".into(),
            duration_ns: 1,
            events: 2,
            lost: 0,
            probes: vec![],
            emitted: Some(2),
            node: Some("n1".into()),
        });
        let v: Value = serde_json::from_str(&to_json(&s)).unwrap();
        assert_eq!(
            (&v["kind"], &v["emitted"]),
            (&Value::from("summary"), &Value::from(2))
        );
        assert_eq!(probe_of(&s), None);
    }

    /// A client reads the same typed record from a REST line as from the
    /// gRPC stream, for every kind of record the hub and agents send.
    #[test]
    fn a_rest_line_reads_as_the_record_it_was_made_from() {
        let mut recs: Vec<proto::Record> = every_probe().iter().map(event).collect();
        recs.push(lost(m::ProbeKind::Tcp, 5, 9, "n1"));
        recs.push(summary(proto::Summary {
            timestamp: "2026-12-02T10:00:00.000000001Z".into(),
            duration_ns: 7,
            events: 2,
            lost: 1,
            probes: vec![proto::ProbeSummary {
                probe: "exec".into(),
                events: 2,
                lost: 1,
                map_full: 0,
                queue_full: 0,
            }],
            emitted: Some(2),
            node: Some("n1".into()),
        }));
        let c = |kind: &str| proto::ControlRecord {
            kind: kind.into(),
            node: Some("n2".into()),
            ..Default::default()
        };
        recs.push(control(proto::ControlRecord {
            r#where: Some("agent".into()),
            probe: Some("open".into()),
            gap: Some(3),
            gap_total: Some(4),
            ..c("gap")
        }));
        recs.push(control(proto::ControlRecord {
            session: Some("s1".into()),
            reason: Some("duration".into()),
            events: Some(10),
            gaps: Some(0),
            ..c("end")
        }));
        recs.push(control(proto::ControlRecord {
            message: Some("agent went away".into()),
            ..c("node_lost")
        }));
        recs.push(control(proto::ControlRecord {
            state: Some("running".into()),
            probe_gaps: [("exec".to_string(), 2)].into(),
            ..c("status")
        }));
        for r in recs {
            let line = to_json(&r);
            let rest = Received::from_json(&line).unwrap_or_else(|| panic!("not read: {line}"));
            let grpc = Received::from_record(r.clone());
            // Typed alike (JSON cannot tell a tracepoint's positive signed
            // field from an unsigned one: they print the same).
            assert_eq!(
                std::mem::discriminant(&rest),
                std::mem::discriminant(&grpc),
                "{line}"
            );
            if !matches!(rest, Received::Event(_)) {
                assert_eq!(rest, grpc, "{line}");
            }
            assert_eq!(grpc.to_json(), line);
            assert_eq!(rest.to_json(), line);
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(rest.node(), v["node"].as_str().unwrap_or(""), "{line}");
            assert_eq!(grpc.node(), rest.node(), "{line}");
        }
        // Keep-alives and noise are not records.
        assert_eq!(Received::from_json(""), None);
        assert_eq!(Received::from_json("not json"), None);
        // An event of a probe this build does not know: shown, not lost.
        let newer = r#"{"timestamp":"2026-12-02T10:00:00Z","node":"n3","pid":1,"tid":1,"uid":0,"comm":"x","cgroup_id":1,"probe":"quic","kind":"packet"}"#;
        assert_eq!(
            Received::from_json(newer),
            Some(Received::Unreadable {
                node: "n3".into(),
                json: newer.into()
            })
        );
        let bare = proto::Record {
            kind: Some(Kind::Event(proto::Event {
                node: "n3".into(),
                pid: 1,
                ..Default::default()
            })),
        };
        match Received::from_record(bare) {
            Received::Unreadable { node, json } => {
                assert_eq!(node, "n3");
                assert!(json.contains("newer agent"), "{json}");
            }
            other => panic!("{other:?}"),
        }
    }
}
