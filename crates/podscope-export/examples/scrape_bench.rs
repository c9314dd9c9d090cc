//! How long a `/metrics` render takes with many pods tracked.
//!
//! cargo run --release -p podscope-export --example scrape_bench -- [--pods 500] [--containers 2] [--real]
//!
//! Every container gets probe series (TCP, opens, execs, block I/O) and
//! resource series. Default: a fake node (cgroup v2 files in a temp dir, with
//! per-pod /proc/PID/net/dev). `--real` (root) makes real, empty cgroups in
//! this machine's hierarchies (v1 cpu, cpuacct, memory, blkio and v2 on a
//! hybrid node; v2 only on a pure v2 node) under /podscope-bench and reads
//! those: kernfs reads, as on a node (no network files then).

use std::time::{Duration, Instant};

use podscope_export::testing::{FakeLayout, FakeNode};
use podscope_export::{Format, Host, Metrics};
use podscope_model::{
    BioEvent, Event, EventData, ExecEvent, Identity, OpenEvent, TcpEvent, TcpKind, Timestamp,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn events(ns: &str, pod: &str, container: &str, cgroup_id: u64) -> Vec<Event> {
    let base = |data| Event {
        timestamp: Timestamp::now(),
        identity: Identity {
            namespace: ns.into(),
            pod: pod.into(),
            container: container.into(),
            ..Identity::default()
        },
        pid: 1,
        tid: 1,
        uid: 0,
        comm: "x".into(),
        cgroup_id,
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
            duration_ns: Some(3_000_000),
            tx_bytes: Some(100),
            rx_bytes: Some(1000),
            retransmits: None,
            error: None,
        })
    };
    vec![
        base(tcp(TcpKind::Connect)),
        base(tcp(TcpKind::Accept)),
        base(tcp(TcpKind::Close)),
        base(EventData::Open(OpenEvent {
            kind: "open".into(),
            path: "/etc/hosts".into(),
            dirfd: None,
            flags: 0,
            flags_str: "O_RDONLY".into(),
            mode: 0,
            fd: Some(3),
            errno: None,
            error: None,
        })),
        base(EventData::Exec(ExecEvent {
            kind: "exec".into(),
            ppid: 1,
            filename: "/bin/sh".into(),
            args: vec![],
            args_truncated: false,
            retval: 0,
            error: None,
        })),
        base(EventData::Bio(BioEvent {
            kind: "io".into(),
            disk: "vda".into(),
            dev: "254:0".into(),
            op: "write".into(),
            sector: 0,
            bytes: 4096,
            latency_ns: 200_000,
            queued_ns: 0,
            sync: false,
            error: None,
        })),
    ]
}

/// Real cgroups for `pods` x `containers` under /podscope-bench; removed on drop.
struct RealCgroups {
    dirs: Vec<std::path::PathBuf>,
}

impl RealCgroups {
    fn make(pods: &[podscope_runtime::Pod]) -> RealCgroups {
        let mounts = podscope_runtime::cgroup::cgroup_mounts().expect("cgroup mounts");
        let wanted = ["cpu", "cpuacct", "memory", "blkio"];
        let roots: Vec<_> = mounts
            .iter()
            .filter(|m| m.v2 || m.controllers.iter().any(|c| wanted.contains(&c.as_str())))
            .collect();
        let mut dirs = Vec::new();
        for m in &roots {
            let top = m.dir_of("/podscope-bench");
            for p in pods {
                for c in &p.containers {
                    let d = m.dir_of(c.cgroup_path.as_deref().unwrap());
                    std::fs::create_dir_all(&d).expect("mkdir cgroup (run as root)");
                    dirs.push(d);
                }
                dirs.push(m.dir_of(p.cgroup_path.as_deref().unwrap()));
            }
            dirs.push(m.dir_of("/podscope-bench/kubepods/besteffort"));
            dirs.push(m.dir_of("/podscope-bench/kubepods"));
            dirs.push(top);
        }
        RealCgroups { dirs }
    }
}

impl Drop for RealCgroups {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn main() {
    let pods = arg("--pods", 500);
    let containers = arg("--containers", 2);
    let real = std::env::args().any(|a| a == "--real");
    let no_events = std::env::args().any(|a| a == "--no-events");
    let no_pods = std::env::args().any(|a| a == "--no-pods");
    let fake = FakeNode::new(FakeLayout::V2, pods, containers);
    let mut node_pods = fake.pods.clone();
    let (host, _real) = if real {
        for p in &mut node_pods {
            p.cgroup_path = p
                .cgroup_path
                .as_ref()
                .map(|c| format!("/podscope-bench{c}"));
            for c in &mut p.containers {
                c.cgroup_path = c
                    .cgroup_path
                    .as_ref()
                    .map(|c| format!("/podscope-bench{c}"));
            }
        }
        let made = RealCgroups::make(&node_pods);
        (Host::detect(), Some(made))
    } else {
        (fake.host.clone(), None)
    };
    let m = Metrics::with_host("bench-node", Duration::from_secs(300), host);
    let t = Instant::now();
    if !no_pods {
        m.set_pods(&node_pods);
    }
    let set_pods = t.elapsed();
    let mut obs = m.observer();
    let mut id = 0u64;
    for p in &node_pods {
        for c in &p.containers {
            id += 1;
            if no_events {
                continue;
            }
            for ev in events(&p.namespace, &p.name, &c.name, id) {
                obs.observe(&ev);
            }
        }
    }
    // Hot-path cost: one event through an existing series.
    let evs = events("fake", "pod-0", "c0", 1);
    let n = 1_000_000;
    let t = Instant::now();
    for i in 0..n {
        obs.observe(&evs[i % 4]);
    }
    let per_event = t.elapsed() / n as u32;

    for format in [Format::Prometheus, Format::OpenMetrics] {
        let mut times: Vec<Duration> = (0..30)
            .map(|_| {
                let t = Instant::now();
                let out = m.render(format).expect("render");
                std::hint::black_box(out.len());
                t.elapsed()
            })
            .collect();
        times.sort();
        let out = m.render(format).unwrap();
        let series = out.lines().filter(|l| !l.starts_with('#')).count();
        println!(
            "{format:?}: {pods} pods x {containers} containers ({}): render median {:.1} ms, max {:.1} ms; {series} series, {} KiB",
            if real { "real cgroupfs" } else { "fake cgroup v2 files" },
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            out.len() / 1024
        );
    }
    println!(
        "set_pods (resolving cgroup paths): {:.1} ms; observe(): {} ns per event",
        set_pods.as_secs_f64() * 1e3,
        per_event.as_nanos()
    );
}
