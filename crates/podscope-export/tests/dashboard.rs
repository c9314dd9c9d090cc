//! deploy/grafana/podscope-dashboard.json parses, is laid out sanely, and
//! every metric it queries exists in the exporter's output (a fake node with
//! events of every kind, so every family has series).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use podscope_export::testing::{FakeLayout, FakeNode};
use podscope_export::{Format, Metrics};
use podscope_model::{
    BioEvent, CacheEvent, Event, EventData, ExecEvent, Identity, OpenEvent, ProbeKind, TcpEvent,
    TcpKind, Timestamp,
};
use serde_json::Value;

fn dashboard() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/grafana/podscope-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every event kind once, for one container of the fake node.
fn every_event() -> Vec<Event> {
    let ev = |data| Event {
        timestamp: Timestamp::now(),
        identity: Identity {
            namespace: "fake".into(),
            pod: "pod-0".into(),
            container: "c0".into(),
            ..Identity::default()
        },
        pid: 1,
        tid: 1,
        uid: 0,
        comm: "x".into(),
        cgroup_id: 42,
        data,
    };
    let tcp = |kind| {
        EventData::Tcp(TcpEvent {
            dialed_addr: Box::default(),
            dialed_port: 0,
            kind,
            role: "client".into(),
            family: "ipv4".into(),
            saddr: "10.0.0.1".into(),
            daddr: "10.0.0.2".into(),
            sport: 1,
            dport: 80,
            state: "X".into(),
            duration_ns: Some(1_000_000),
            tx_bytes: Some(10),
            rx_bytes: Some(20),
            retransmits: None,
            error: None,
        })
    };
    let mut out: Vec<Event> = [
        TcpKind::Connect,
        TcpKind::Accept,
        TcpKind::Close,
        TcpKind::ConnectFailed,
        TcpKind::Retransmit,
        TcpKind::ResetSent,
        TcpKind::ResetReceived,
    ]
    .into_iter()
    .map(|k| ev(tcp(k)))
    .collect();
    out.push(ev(EventData::Exec(ExecEvent {
        kind: "exec".into(),
        ppid: 1,
        filename: "/nope".into(),
        args: vec![],
        args_truncated: false,
        retval: -2,
        error: Some("ENOENT".into()),
    })));
    out.push(ev(EventData::Open(OpenEvent {
        kind: "open".into(),
        path: "/nope".into(),
        dirfd: None,
        flags: 0,
        flags_str: "O_RDONLY".into(),
        mode: 0,
        fd: None,
        errno: Some(2),
        error: Some("ENOENT".into()),
    })));
    out.push(ev(EventData::Cache(CacheEvent {
        kind: "interval".into(),
        ppid: 1,
        hits: 10,
        misses: 2,
        dirtied: 1,
        added: 3,
        hit_ratio: Some(0.8),
        interval_ns: 1_000_000_000,
        method: "tracepoints".into(),
    })));
    out.push(ev(EventData::Bio(BioEvent {
        kind: "io".into(),
        disk: "vda".into(),
        dev: "254:0".into(),
        op: "read".into(),
        sector: 0,
        bytes: 4096,
        latency_ns: 100_000,
        queued_ns: 0,
        sync: false,
        error: None,
    })));
    out
}

/// Identifiers in PromQL text that name podscope's (or the process) metrics.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut word = String::new();
    for ch in expr.chars().chain([' ']) {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
        } else {
            if word.starts_with("podscope_") || word.starts_with("process_") {
                out.insert(word.clone());
            }
            word.clear();
        }
    }
}

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn dashboard_parses_and_is_laid_out() {
    let d = dashboard();
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {p}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel wider than the grid: {p}");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{t}");
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
}

#[test]
fn every_metric_the_dashboard_queries_exists_in_the_exporters_output() {
    let node = FakeNode::new(FakeLayout::V2, 2, 1);
    let m = Metrics::with_host("n1", Duration::from_secs(60), node.host.clone());
    m.set_pods(&node.pods);
    let mut o = m.observer();
    for ev in every_event() {
        o.observe(&ev);
    }
    for p in ProbeKind::ALL {
        m.probe_stats(p, 1, 0);
    }
    let out = m.render(Format::Prometheus).unwrap();
    let exported: BTreeSet<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let d = dashboard();
    let mut all = Vec::new();
    strings(&d, &mut all);
    let mut queried = BTreeSet::new();
    for s in all {
        metric_names(s, &mut queried);
    }
    assert!(queried.len() >= 30, "{queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the exporter does not export: {missing:?}\nexported: {exported:?}"
    );
}
