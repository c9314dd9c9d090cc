//! `--link-codec`: what one event costs on its way agent -> hub -> client,
//! per step, with the JSON lines the link carried before (the agent wrote
//! each event's JSON, the hub passed the text on, the client parsed it) and
//! with typed records (the agent converts and encodes, the hub decodes and,
//! for REST clients, renders the JSON once; a gRPC client decodes). CPU
//! time of this thread (/proc/thread-self/schedstat), so other work on the
//! machine changes the figures little; no BPF, no root.

use std::hint::black_box;

use anyhow::Result;
use podscope_cluster::proto::{Record, RecordBatch};
use podscope_cluster::records;
use podscope_model as m;
use prost::Message;
use serde::Serialize;

/// This thread's time on CPU so far, ns (the scheduler's own count).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// ns of CPU per call of `f`, over `n` calls (the best of 3 rounds).
fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = thread_cpu_ns();
        for _ in 0..n {
            f();
        }
        best = best.min((thread_cpu_ns() - t) as f64 / n as f64);
    }
    best
}

fn identity() -> m::Identity {
    m::Identity {
        node: "bench-node".into(),
        namespace: "bench".into(),
        pod: "storm-0".into(),
        pod_uid: "8d1f5b3e-2c4a-4f7e-9b1a-0c2d3e4f5a6b".into(),
        container: "storm".into(),
        container_id: "4f1c2b3a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70".into(),
        image: "docker.io/library/busybox:1.36".into(),
    }
}

/// The cluster benchmark's event (an open of its storm), a TCP close and
/// an HTTP request, as a pod's events are on a real node.
fn samples() -> Vec<(&'static str, m::Event)> {
    let ev = |data| m::Event {
        timestamp: m::Timestamp(1_764_669_600_123_456_789),
        identity: identity(),
        pid: 48213,
        tid: 48213,
        uid: 0,
        comm: "podscope-bench".into(),
        cgroup_id: 12345,
        data,
    };
    vec![
        (
            "open",
            ev(m::EventData::Open(m::OpenEvent {
                kind: "open".into(),
                path: "/tmp/podscope-bench-storm/f-17".into(),
                dirfd: Some(-100),
                flags: 0,
                flags_str: "O_RDONLY".into(),
                mode: 0,
                fd: None,
                errno: Some(2),
                error: Some("ENOENT".into()),
            })),
        ),
        (
            "tcp",
            ev(m::EventData::Tcp(m::TcpEvent {
                dialed_addr: Box::default(),
                dialed_port: 0,
                kind: m::TcpKind::Close,
                role: "client".into(),
                family: "ipv4".into(),
                saddr: "10.88.91.12".into(),
                daddr: "10.88.91.13".into(),
                sport: 40312,
                dport: 8080,
                state: "FIN_WAIT1".into(),
                duration_ns: Some(1_250_000),
                tx_bytes: Some(1024),
                rx_bytes: Some(65536),
                retransmits: Some(0),
                error: None,
            })),
        ),
        (
            "http",
            ev(m::EventData::Http(Box::new(m::HttpEvent {
                dialed_addr: String::new(),
                dialed_port: 0,
                stream_id: 0,
                kind: "request".into(),
                role: "server".into(),
                version: "HTTP/1.1".into(),
                method: "GET".into(),
                path: "/api/v1/orders/12345".into(),
                host: "api.shop.svc".into(),
                status: Some(200),
                duration_ns: 830_000,
                request_bytes: 212,
                response_bytes: 1834,
                tls: false,
                truncated: false,
                family: "ipv4".into(),
                saddr: "10.88.91.12".into(),
                sport: 8080,
                daddr: "10.88.91.14".into(),
                dport: 51234,
                peer_namespace: "shop".into(),
                peer_pod: "web-0".into(),
                error: None,
                rpc: None,
                trace_context: None,
                capture: None,
            }))),
        ),
    ]
}

/// One event kind's costs, ns of CPU per event.
#[derive(Debug, Serialize)]
pub struct Costs {
    pub event: &'static str,
    pub json_bytes: usize,
    pub proto_bytes: usize,
    /// JSON lines: the agent writes the event's JSON.
    pub old_agent_ns: f64,
    /// JSON lines: the hub copies the text into its record (and the batch).
    pub old_hub_ns: f64,
    /// JSON lines and typed REST: the client parses the line (serde_json::Value).
    pub client_parse_ns: f64,
    /// Typed: the agent converts the event and encodes it.
    pub new_agent_ns: f64,
    /// Typed: the hub decodes it.
    pub new_hub_decode_ns: f64,
    /// Typed: the hub renders its JSON for REST clients (once per record).
    pub new_hub_json_ns: f64,
    /// Typed: the hub encodes it again for a gRPC client.
    pub new_hub_grpc_ns: f64,
    /// Typed: a gRPC client decodes it and makes the JSON line its printer reads.
    pub new_grpc_client_ns: f64,
}

pub fn run(n: usize) -> Result<Vec<Costs>> {
    let mut out = Vec::new();
    for (name, ev) in samples() {
        let json = serde_json::to_string(&ev)?;
        let rec = records::event(&ev);
        let bytes = rec.encode_to_vec();
        // Same JSON after the trip, or the comparison is void.
        anyhow::ensure!(
            records::to_json(&Record::decode(bytes.as_slice())?) == json,
            "the {name} event's JSON changed on the wire"
        );
        let mut buf = Vec::with_capacity(1024);
        let old_agent_ns = per_call(n, || {
            black_box(serde_json::to_string(black_box(&ev)).unwrap());
        });
        let old_hub_ns = per_call(n, || {
            let s: std::sync::Arc<str> = black_box(json.as_str()).into();
            black_box(s);
        });
        let client_parse_ns = per_call(n, || {
            black_box(serde_json::from_str::<serde_json::Value>(black_box(&json)).unwrap());
        });
        let new_agent_ns = per_call(n, || {
            buf.clear();
            records::event(black_box(&ev)).encode(&mut buf).unwrap();
            black_box(&buf);
        });
        let new_hub_decode_ns = per_call(n, || {
            black_box(Record::decode(black_box(bytes.as_slice())).unwrap());
        });
        let new_hub_json_ns = per_call(n, || {
            black_box(records::to_json(black_box(&rec)));
        });
        let new_hub_grpc_ns = per_call(n, || {
            buf.clear();
            let b = RecordBatch {
                records: vec![black_box(&rec).clone()],
            };
            b.encode(&mut buf).unwrap();
            black_box(&buf);
        });
        let new_grpc_client_ns = per_call(n, || {
            let r = Record::decode(black_box(bytes.as_slice())).unwrap();
            black_box(records::to_json(&r));
        });
        out.push(Costs {
            event: name,
            json_bytes: json.len(),
            proto_bytes: bytes.len(),
            old_agent_ns,
            old_hub_ns,
            client_parse_ns,
            new_agent_ns,
            new_hub_decode_ns,
            new_hub_json_ns,
            new_hub_grpc_ns,
            new_grpc_client_ns,
        });
    }
    Ok(out)
}

pub fn print(costs: &[Costs]) {
    println!(
        "link codec, ns of CPU per event (best of 3 rounds); JSON lines = before (agent writes JSON, hub copies, client parses), typed = now"
    );
    println!(
        "| event | bytes JSON / proto | JSON lines: agent / hub / client | typed: agent / hub decode / hub JSON (REST) / hub re-encode (gRPC) | client parse (REST) | gRPC client decode + JSON | total JSON lines | total typed REST | total typed gRPC |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in costs {
        let old = c.old_agent_ns + c.old_hub_ns + c.client_parse_ns;
        let rest = c.new_agent_ns + c.new_hub_decode_ns + c.new_hub_json_ns + c.client_parse_ns;
        let grpc = c.new_agent_ns
            + c.new_hub_decode_ns
            + c.new_hub_grpc_ns
            + c.new_grpc_client_ns
            + c.client_parse_ns;
        println!(
            "| {} | {} / {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} / {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            c.event,
            c.json_bytes,
            c.proto_bytes,
            c.old_agent_ns,
            c.old_hub_ns,
            c.client_parse_ns,
            c.new_agent_ns,
            c.new_hub_decode_ns,
            c.new_hub_json_ns,
            c.new_hub_grpc_ns,
            c.client_parse_ns,
            c.new_grpc_client_ns,
            old,
            rest,
            grpc
        );
    }
}
