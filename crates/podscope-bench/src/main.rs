//! podscope-bench: runs bounded storms of real kernel events (exec, loopback
//! TCP, openat, O_DIRECT writes) with podscope, with bpftrace doing the same
//! job, and with no tracer, and prints what each cost. Needs root.
//!
//! Usage: podscope-bench [--quick] [--pods | --only-pods | --only-cluster | --contention | --http | --xtrace | --drop | --net | --hub-scale] [--json FILE]
//! (`podscope-bench workload KIND N CGROUP` is the storm child it spawns;
//! `cluster-storm` and `cluster-client` are the cluster benchmark's children;
//! `record-http OUT -- CMD` records the parsers' regression corpus.)

mod accel;
mod cluster;
mod contention;
mod corpus;
mod drop;
mod http;
mod hubscale;
mod linkcodec;
mod net;
mod pods;
mod top;
mod traced;
mod uimap;
mod workload;
mod xtrace;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("workload") {
        let [_, kind, n, cg] = args.as_slice() else {
            bail!("usage: podscope-bench workload KIND N CGROUP_DIR");
        };
        return workload::run(kind, n.parse()?, Path::new(cg));
    }
    match args.first().map(String::as_str) {
        Some("spin") => contention::spin(),
        Some("cluster-storm") => return cluster::storm_main(&args[1..]),
        Some("cluster-client") => return cluster::client_main(&args[1..]),
        Some("record-http") => return corpus::record(&args[1..]),
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only_cluster = args.iter().any(|a| a == "--only-cluster");
    let with_pods = args.iter().any(|a| a == "--pods" || a == "--only-pods");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let json_out = value("--json").map(PathBuf::from);
    let contention = args.iter().any(|a| a == "--contention");
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: podscope-bench [--quick] [--pods | --only-pods | --only-cluster] [--json FILE]\n\n--pods adds the pod benchmarks and the cluster benchmark (needs PODBED_SOCKET from testbed/podbed.sh up and a release podbed); --only-pods runs just the pod benchmarks, --only-cluster just the cluster one.\n\nRuns exec, tcp, open and bio storms under podscope, under bpftrace and untraced; prints events generated/captured/lost, tracer CPU per 1000 events, peak RSS, attach time and workload slowdown. Needs root, a release build of podscope next to this binary (cargo build --release -p podscope -p podscope-bench), and bpftrace for the comparison.\n\nThe cluster benchmark runs podscope hub and agent on loopback and an open storm in one pod, streamed to a REST client: events/s without loss, CPU per 1000 events and peak RSS of hub, agent, its trace child and the client, and kernel-to-client latency. --cluster-rates R1,R2,... sets the stepped rates in events/s (default 20000,50000,100000,150000,200000,0; 0: as fast as possible); --hub-args \"...\" and --agent-args \"...\" pass extra flags (e.g. \"--client-queue 65536\"); a run during which other processes take more than 10% of the machine is repeated up to --cluster-retries times (default 2), keeping the least disturbed; --cluster-tls runs the hub with TLS (a throwaway CA made with openssl), the agent and the client trusting it. --cluster-sessions K (with --only-cluster) instead compares one session with K concurrent sessions on one agent, each selecting its own pod with its own open storm at --session-rate events/s (default 10000): agent CPU per delivered event, peak RSS, BPF programs held, events crossing between sessions.\n\n--http runs only the HTTP benchmark: nginx serving a 1 KiB file on loopback driven by wrk (32 connections, 10 s; 5 s with --quick), --rounds N (default 3) alternating untraced and `podscope trace http --all -o none` runs; prints throughput traced/untraced, requests wrk completed vs nginx's access log vs podscope's count, podscope CPU and kernel BPF time (bpf_stats) per request, and an iperf3 bulk transfer with and without the http probe; --podscope-args \"...\" adds flags to the traced runs (e.g. \"--capture-headers --capture-body 1024\"). Needs nginx, wrk, iperf3, bpftool.\n\n--xtrace runs only the request-trace benchmark (needs PODBED_SOCKET, a release podbed, nginx, python3, wrk): a chain of three pods on the test bed running the host's programs (nginx proxying to a Python WSGI app, a thread per request, that reads a file and calls nginx in a third pod), wrk against the first (16 connections, 10 s; 5 s with --quick; each request with its own traceparent), --rounds N (default 3) alternating untraced and `podscope trace http,open,tcp -n NS --spans requests` exporting over OTLP/HTTP to a receiver in the benchmark that decodes every request; prints throughput traced/untraced, podscope CPU per request, spans produced/exported/failed/dropped against what the receiver decoded, and podscope's report of how spans were parented.\n\n--drop runs only the drop probe benchmark: datagrams to a closed UDP port from a netns of its own (its UdpNoPorts is the witness), --rounds N (default 3) of untraced, `podscope trace drop --all` (every drop reported) and a pod selection that matches nothing (every drop filtered out in the kernel); prints sends/s, events and losses, the kfree_skb program's runs and ns per run (bpf_stats), podscope CPU per event; then iperf3 on loopback with and without the probe. Needs bpftool, iperf3, unshare.\n\n--net runs only the net probe benchmark: iperf3 on loopback, --rounds N (default 3) of untraced, `podscope trace net --all` (every packet followed, per-flow totals in the kernel), a pod selection that matches nothing (every packet looked at, none followed) and `--all --flow 'tcp and port 39173'` (a record per packet and stage); prints Gbit/s, the net programs' runs and ns per run and per packet followed (bpf_stats), events and losses, and each mode's throughput / untraced. Needs bpftool, iperf3.\n\n--accelerate runs only the socket-redirect acceleration benchmark (needs PODBED_SOCKET, iperf3): two pods on the test bed; --rounds N (default 3) alternating without and with `podscope accelerate` on both: a 64-byte ping-pong (20,000 timed round trips on one connection; 5,000 with --quick) for request/response latency p50/p99, and iperf3 (one stream, 5 s; 3 s with --quick) for throughput, pod B to pod A; prints each round, the redirected bytes --status counted, and the medians on/off.\n\n--hub-scale runs only the hub scale benchmark (no root, no BPF): a real podscope hub and --agents N (default 100) simulated agents speaking the real agent protocol, each reporting --agent-pods M (default 50) pods; measures `podscope --hub URL ps -A` end to end (30 runs) and the REST pod listing (100 runs), and checks that a session selecting one pod on each of 10 nodes starts on exactly those nodes.\n\n--contention runs only the contention benchmark: the exec, tcp and open storms, 3 runs each, traced (and untraced, and once under bpftrace) while two CPU-bound competitors run at the same priority, one pinned per core (taskset); then the 1,000,000-open storm at its natural rate traced with `podscope trace open --all -o columns` into a file (--open-storm N changes the count, --podscope-args \"...\" passes flags such as \"--ring-budget 100ms\"); --only-natural-open runs just that storm.\n\n--top runs only the `podscope top` benchmark (needs PODBED_SOCKET, tmux): --top-pods N (default 50; 20 with --quick) pods each exec and open every 100 ms; rounds alternate `podscope trace exec,tcp,bio,cache,open -n NS -o none` and `podscope top -n NS` drawing in a 160x50 tmux terminal; prints podscope's CPU over the same window with and without the view. --ui-view does the same for the web view: `podscope trace exec,tcp,http,dns -n NS -o none` against `podscope ui` with a headless Chromium on its pods page (needs chromium).\n\n--link-codec runs only the link codec benchmark (no root, no BPF): ns of CPU per event at each step agent -> hub -> client, for an open, a tcp and an http event, with JSON lines (as the link carried events before) and with typed records (now), --codec-events N calls per step (default 200000).\n\n--ui-map runs only the web view's service-map benchmark (no root, no BPF): a real hub whose map holds --map-pods N (default 500) pods and --map-edges M (default 5000) edges (synthetic), and 100 GET /ui/api/map over HTTP with a logged-in cookie; prints p50/p99/max latency (target p99 <= 100 ms) and the answer's size.");
        return Ok(());
    }
    if args.iter().any(|a| a == "--link-codec") {
        let n = match value("--codec-events") {
            Some(v) => v.parse().context("--codec-events takes a number")?,
            None => 200_000,
        };
        let c = linkcodec::run(n)?;
        linkcodec::print(&c);
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&c)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--ui-map") {
        let num = |flag: &str, default: usize| -> Result<usize> {
            value(flag).map_or(Ok(default), |v| {
                v.parse()
                    .with_context(|| format!("{flag} takes a number, got {v:?}"))
            })
        };
        let f = uimap::run(num("--map-pods", 500)?, num("--map-edges", 5000)?, 100)?;
        println!(
            "ui-map: GET /ui/api/map with {} pods and {} edges over HTTP, {} requests: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 100 ms); {} bytes per answer",
            f.pods, f.edges, f.requests, f.p50_ms, f.p99_ms, f.max_ms, f.bytes
        );
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&f)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--hub-scale") {
        let num = |flag: &str, default: usize| -> Result<usize> {
            match value(flag) {
                Some(v) => v.parse().with_context(|| format!("{flag} takes a number")),
                None => Ok(default),
            }
        };
        let podscope = std::env::current_exe()?.with_file_name("podscope");
        if !podscope.exists() {
            bail!(
                "{} not found; build both first: cargo build --release -p podscope -p podscope-bench",
                podscope.display()
            );
        }
        let f = hubscale::run(&podscope, num("--agents", 100)?, num("--agent-pods", 50)?)?;
        hubscale::print(&f);
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&f)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    if let Some(port) = value("--accel-echo-server") {
        return accel::echo_server(port.parse().context("--accel-echo-server takes a port")?);
    }
    if args.iter().any(|a| a == "--accel-rr-client") {
        let i = args.iter().position(|a| a == "--accel-rr-client").unwrap();
        let get = |k: usize| args.get(i + k).cloned().unwrap_or_default();
        return accel::rr_client(
            &get(1),
            get(2).parse().context("--accel-rr-client IP PORT N SIZE")?,
            get(3).parse().context("--accel-rr-client IP PORT N SIZE")?,
            get(4).parse().context("--accel-rr-client IP PORT N SIZE")?,
        );
    }
    if args.iter().any(|a| a == "--accelerate") {
        let rounds = match value("--rounds") {
            Some(v) => v.parse().context("--rounds takes a number")?,
            None => 3,
        };
        let me = std::env::current_exe()?;
        let r = accel::run(&me, rounds, quick)?;
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    if let Some(secs) = value("--drop-storm-child") {
        return drop::storm_child(secs.parse().context("--drop-storm-child takes seconds")?);
    }
    let bench = Bench::new(quick)?;
    if args.iter().any(|a| a == "--drop") {
        let rounds = match value("--rounds") {
            Some(v) => v.parse().context("--rounds takes a number")?,
            None => 3,
        };
        let r = drop::run(&bench, rounds)?;
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--net") {
        let rounds = match value("--rounds") {
            Some(v) => v.parse().context("--rounds takes a number")?,
            None => 3,
        };
        let r = net::run(&bench, rounds)?;
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--top" || a == "--ui-view") {
        let web = args.iter().any(|a| a == "--ui-view");
        let num = |k: &str, d: u64| -> Result<u64> {
            value(k).map_or(Ok(d), |v| {
                v.parse()
                    .with_context(|| format!("{k} takes a number, got {v:?}"))
            })
        };
        let bed = pods::Bed::new(&bench.me)?;
        let (pods, window, rounds) = if quick {
            (num("--top-pods", 20)?, 10, 2)
        } else {
            (num("--top-pods", 50)?, 20, 3)
        };
        let c = top::run(&bed, &bench.podscope, pods as usize, window, rounds, web)?;
        println!(
            "{}: {} pods making events; podscope CPU over {} s windows: without a view (trace -o none) median {:.0} ms, with {} median {:.0} ms -> {:.2}x (target <= 1.2x); events: trace {:?} (per run), view {:?}",
            if web { "ui-view" } else { "top" },
            c.pods,
            c.window_s,
            top::median(&c.trace_cpu_ms),
            if web {
                "`podscope ui` and a headless Chromium on its pods page"
            } else {
                "`podscope top` drawing in a 160x50 terminal"
            },
            top::median(&c.top_cpu_ms),
            c.ratio,
            c.trace_events,
            c.top_events
        );
        if let Some(p) = &json_out {
            std::fs::write(
                p,
                serde_json::to_string_pretty(&serde_json::Value::Object(
                    [(
                        if web { "ui_view" } else { "top" }.to_string(),
                        serde_json::to_value(&c)?,
                    )]
                    .into_iter()
                    .collect(),
                ))?,
            )?;
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--xtrace") {
        let rounds = match value("--rounds") {
            Some(v) => v.parse().context("--rounds takes a number")?,
            None => 3,
        };
        let secs = if quick { 5 } else { 10 };
        let r = xtrace::run(&bench, rounds, secs)?;
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--http") {
        let rounds = match value("--rounds") {
            Some(v) => v.parse().context("--rounds takes a number")?,
            None => 3,
        };
        let secs = if quick { 5 } else { 10 };
        let extra: Vec<String> = value("--podscope-args")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let r = http::run(&bench, rounds, secs, &extra)?;
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    let only_open = args.iter().any(|a| a == "--only-natural-open");
    if contention || only_open {
        let mut doc = serde_json::json!({});
        if contention {
            doc["contention"] = contention::run(&bench)?;
        }
        let n = match value("--open-storm") {
            Some(v) => v.parse().context("--open-storm takes a number of opens")?,
            None => 1_000_000,
        };
        let extra: Vec<String> = value("--podscope-args")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        doc["natural_open"] = contention::natural_open(&bench, n, &extra)?;
        if let Some(path) = json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
            println!("figures written to {}", path.display());
        }
        return Ok(());
    }
    let mut doc = if args.iter().any(|a| a == "--only-pods") || only_cluster {
        serde_json::json!({})
    } else {
        bench.run()?
    };
    if with_pods {
        let bed = pods::Bed::new(&bench.me)?;
        let n = if quick { 20 } else { 100 };
        eprintln!("pods: {n} new pods while tracing them by name ...");
        let only_admission = args.iter().any(|a| a == "--only-admission");
        let a = pods::admission(&bed, &bench.podscope, n)?;
        doc["pods_admission"] = serde_json::to_value(&a)?;
        println!(
            "\nnew pods: {}/{} had their entrypoint exec captured ({}/{} their pause exec: admitted in the kernel at cgroup mkdir); \
             naming delay (event -> delivered with pod name) p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
             pause exec -> first app exec: min {:.0} ms, p50 {:.0} ms",
            a.first_exec_captured, a.pods, a.pause_exec_captured, a.pods, a.naming_ms_p50, a.naming_ms_p99,
            a.naming_ms_max, a.exec_margin_ms_min, a.exec_margin_ms_p50
        );
        if only_admission {
            return Ok(());
        }
        let (np, ne) = if quick { (6, 150) } else { (20, 400) };
        eprintln!("pods: {np} pods storming at once, 1 selected ...");
        let c = pods::crowd(&bed, &bench.podscope, np, ne)?;
        println!(
            "crowd: {} pods x {} execs at once; mean storm time of the {} unselected pods: untraced {:.2}s, while tracing pod 0 {:.2}s -> {:+.1}% (target < 2%); {} events from pod 0",
            c.pods, c.execs_per_pod, c.pods - 1, c.untraced_mean_s, c.traced_mean_s, c.slowdown_pct, c.selected_pod_events
        );
        doc["pods_crowd"] = serde_json::to_value(&c)?;
    }
    if only_cluster || args.iter().any(|a| a == "--pods") {
        let bed = pods::Bed::new(&bench.me)?;
        let split = |v: Option<&String>| -> Vec<String> {
            v.map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let rates = match value("--cluster-rates") {
            Some(list) => list
                .split(',')
                .map(|r| r.trim().parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .context("--cluster-rates takes events/s separated by commas, 0 for no limit: 50000,100000,0")?,
            None => vec![20_000, 50_000, 100_000, 150_000, 200_000, 0],
        };
        let settings = cluster::Settings {
            quick,
            rates,
            hub_args: split(value("--hub-args")),
            agent_args: split(value("--agent-args")),
            retries: match value("--cluster-retries") {
                Some(v) => v
                    .parse()
                    .context("--cluster-retries takes a number (default 2)")?,
                None => 2,
            },
            tls: args.iter().any(|a| a == "--cluster-tls"),
        };
        if let Some(k) = value("--cluster-sessions") {
            let k: usize =
                k.parse().ok().filter(|k| *k >= 2).context(
                    "--cluster-sessions takes a number of sessions, at least 2 (e.g. 8)",
                )?;
            let rate: u64 = match value("--session-rate") {
                Some(r) => r
                    .parse()
                    .context("--session-rate takes events/s per session")?,
                None => 10_000,
            };
            let runs = cluster::sessions(&bed, &bench.me, &bench.podscope, &settings, k, rate)?;
            cluster::print_sessions(&runs);
            doc["cluster_sessions"] = serde_json::to_value(&runs)?;
        } else {
            let f = cluster::run(&bed, &bench.me, &bench.podscope, &settings)?;
            cluster::print(&f);
            doc["cluster"] = serde_json::to_value(&f)?;
        }
    }
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// CPU time of every live thread of `pid`, in ns, from schedstat (the
/// /proc/PID/stat tick counts are too coarse for short storms).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn v2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .context("no cgroup v2 mount")
}

/// A traced run's figures.
#[derive(Debug, Clone, Default, Serialize)]
struct Measured {
    events: u64,
    matched: u64,
    lost: u64,
    cpu_s: f64,
    rss_mb: f64,
    attach_ms: f64,
    attach_reported_ms: Option<f64>,
    /// The tracer's summary record (podscope only).
    #[serde(skip)]
    summary: Option<serde_json::Value>,
}

type Classifier = fn(&serde_json::Value) -> bool;

/// A tracer process (podscope or bpftrace) and the threads reading it.
struct Traced {
    child: Child,
    pid: u32,
    attach_ms: f64,
    attach_reported_ms: Option<f64>,
    counts: Arc<Mutex<(u64, u64, Option<serde_json::Value>)>>,
    cpu_at_attach: u64,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Traced {
    fn podscope(bin: &Path, probes: &str, cgroup: &Path, classify: Classifier) -> Result<Traced> {
        Self::podscope_with(bin, probes, cgroup, classify, &[])
    }

    fn podscope_with(
        bin: &Path,
        probes: &str,
        cgroup: &Path,
        classify: Classifier,
        extra: &[&str],
    ) -> Result<Traced> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["trace", probes, "--cgroup"])
            .arg(cgroup)
            .args(["-o", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let mut readers = vec![std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(ms) = line.split("attached in ").nth(1) {
                    let ms = ms
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<f64>().ok());
                    let _ = tx.send(ms);
                }
            }
        })];
        let reported = rx
            .recv_timeout(Duration::from_secs(30))
            .context("podscope did not attach within 30 s")?;
        let attach_ms = started.elapsed().as_secs_f64() * 1e3;
        let counts = Arc::new(Mutex::new((0u64, 0u64, None)));
        let c = counts.clone();
        let stdout = child.stdout.take().unwrap();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let mut g = c.lock().unwrap();
                match v["kind"].as_str() {
                    Some("summary") => g.2 = Some(v),
                    Some("lost") => {}
                    _ => {
                        g.0 += 1;
                        if classify(&v) {
                            g.1 += 1;
                        }
                    }
                }
            }
        }));
        let pid = child.id();
        Ok(Traced {
            child,
            pid,
            attach_ms,
            attach_reported_ms: reported,
            counts,
            cpu_at_attach: cpu_ns(pid),
            readers,
        })
    }

    fn bpftrace(script: &str) -> Result<Traced> {
        let started = Instant::now();
        let mut child = Command::new("bpftrace")
            .args(["-B", "full", "-e", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace (apt-get install bpftrace)")?;
        let (tx, rx) = mpsc::channel();
        let counts = Arc::new(Mutex::new((0u64, 0u64, None)));
        let c = counts.clone();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Attaching ") {
                    let _ = tx.send(());
                    continue;
                }
                if line.is_empty() {
                    continue;
                }
                let mut g = c.lock().unwrap();
                g.0 += 1;
                g.1 += 1;
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .context("bpftrace did not attach")?;
        // "Attaching" is printed before the attach completes; give it a moment.
        std::thread::sleep(Duration::from_millis(500));
        let attach_ms = started.elapsed().as_secs_f64() * 1e3;
        let pid = child.id();
        Ok(Traced {
            child,
            pid,
            attach_ms,
            attach_reported_ms: None,
            counts,
            cpu_at_attach: cpu_ns(pid),
            readers: vec![reader],
        })
    }

    /// Waits for the output to settle, then stops the tracer and collects figures.
    fn finish(mut self, expect: u64) -> Result<Measured> {
        let mut last = (u64::MAX, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.counts.lock().unwrap().1;
            if n != last.0 {
                last = (n, Instant::now());
            }
            if (n >= expect && last.1.elapsed() > Duration::from_millis(200))
                || last.1.elapsed() > Duration::from_millis(1500)
                || Instant::now() > deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let cpu = cpu_ns(self.pid).saturating_sub(self.cpu_at_attach);
        let rss = peak_rss_kb(self.pid);
        Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status()?;
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let g = self.counts.lock().unwrap();
        let lost = g.2.as_ref().and_then(|s| s["lost"].as_u64()).unwrap_or(0);
        Ok(Measured {
            summary: g.2.clone(),
            events: g.0,
            matched: g.1,
            lost,
            cpu_s: cpu as f64 / 1e9,
            rss_mb: rss as f64 / 1024.0,
            attach_ms: self.attach_ms,
            attach_reported_ms: self.attach_reported_ms,
        })
    }
}

struct Storm {
    kind: &'static str,
    probe: &'static str,
    n: u64,
    /// Events of the probe that the storm makes, per operation.
    events_per_op: u64,
    classify: Classifier,
    bpftrace: &'static str,
}

fn storms(quick: bool) -> Vec<Storm> {
    let scale = if quick { 4 } else { 1 };
    vec![
        Storm {
            kind: "exec",
            probe: "exec",
            n: 4000 / scale,
            events_per_op: 1,
            classify: |v| v["filename"] == "/bin/true",
            bpftrace: r#"tracepoint:syscalls:sys_enter_execve /cgroup == cgroupid("CG")/ { printf("%d %s ", pid, comm); join(args->argv); }"#,
        },
        Storm {
            kind: "tcp",
            probe: "tcp",
            n: 10000 / scale,
            // connect + accept + a close for each end
            events_per_op: 4,
            classify: |v| matches!(v["kind"].as_str(), Some("connect" | "accept" | "close")),
            bpftrace: r#"tracepoint:sock:inet_sock_set_state /cgroup == cgroupid("CG")/ { printf("%d %s %d %d %d %d\n", pid, comm, args->sport, args->dport, args->oldstate, args->newstate); }"#,
        },
        Storm {
            kind: "open",
            probe: "open",
            n: 200_000 / scale,
            events_per_op: 1,
            classify: |v| {
                v["flags"] == 524288 // O_RDONLY|O_CLOEXEC: the storm's opens, not the file's creation
                    && v["path"].as_str().is_some_and(|p| p.contains("podscope-bench-open"))
            },
            bpftrace: r#"tracepoint:syscalls:sys_enter_openat /cgroup == cgroupid("CG")/ { @f[tid] = args->filename; } tracepoint:syscalls:sys_exit_openat /@f[tid]/ { printf("%d %s %s %d\n", pid, comm, str(@f[tid]), args->ret); delete(@f[tid]); } END { clear(@f); }"#,
        },
        Storm {
            kind: "bio",
            probe: "bio",
            n: 3000 / scale,
            events_per_op: 1,
            classify: |v| v["op"] == "write" && v["bytes"] == 4096,
            bpftrace: r#"tracepoint:block:block_rq_issue /cgroup == cgroupid("CG")/ { @s[args->dev, args->sector] = nsecs; } tracepoint:block:block_rq_complete /@s[args->dev, args->sector]/ { printf("%d %d %d\n", args->dev, args->nr_sector, nsecs - @s[args->dev, args->sector]); delete(@s[args->dev, args->sector]); } END { clear(@s); }"#,
        },
    ]
}

#[derive(Debug, Serialize)]
struct Row {
    storm: &'static str,
    operations: u64,
    expected_events: u64,
    baseline_s: f64,
    podscope: Measured,
    podscope_s: f64,
    bpftrace: Option<Measured>,
    bpftrace_s: Option<f64>,
}

struct Bench {
    me: PathBuf,
    podscope: PathBuf,
    work: PathBuf,
    other: PathBuf,
    quick: bool,
    have_bpftrace: bool,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.work);
        let _ = std::fs::remove_dir(&self.other);
    }
}

impl Bench {
    fn new(quick: bool) -> Result<Bench> {
        let me = std::env::current_exe()?;
        let podscope = me.with_file_name("podscope");
        if !podscope.exists() {
            bail!(
                "{} not found; build both first: cargo build --release -p podscope -p podscope-bench",
                podscope.display()
            );
        }
        let root = v2_root()?;
        let work = root.join(format!("podscope-bench-{}-work", std::process::id()));
        let other = root.join(format!("podscope-bench-{}-other", std::process::id()));
        std::fs::create_dir_all(&work).context("creating a cgroup (are you root?)")?;
        std::fs::create_dir_all(&other)?;
        let have_bpftrace = Command::new("bpftrace")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        Ok(Bench {
            me,
            podscope,
            work,
            other,
            quick,
            have_bpftrace,
        })
    }

    fn workload(&self, kind: &str, n: u64) -> Result<workload::Report> {
        let out = Command::new(&self.me)
            .args(["workload", kind, &n.to_string()])
            .arg(&self.work)
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("workload {kind} failed");
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn baseline(&self, kind: &str, n: u64) -> Result<f64> {
        let a = self.workload(kind, n)?.elapsed_ns;
        let b = self.workload(kind, n)?.elapsed_ns;
        Ok(a.min(b) as f64 / 1e9)
    }

    fn run(&self) -> Result<serde_json::Value> {
        println!(
            "podscope-bench: {} cores, kernel {}, {}",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
            if self.quick {
                "quick sizes"
            } else {
                "full sizes"
            }
        );
        if !self.have_bpftrace {
            println!(
                "bpftrace not found: comparison columns are skipped (apt-get install bpftrace)"
            );
        }
        let mut rows = Vec::new();
        for s in storms(self.quick) {
            eprintln!("storm {} x{} ...", s.kind, s.n);
            let baseline_s = self.baseline(s.kind, s.n)?;
            let expected = s.n * s.events_per_op;
            let t = Traced::podscope(&self.podscope, s.probe, &self.work, s.classify)?;
            let rep = self.workload(s.kind, s.n)?;
            let podscope = t.finish(expected)?;
            let podscope_s = rep.elapsed_ns as f64 / 1e9;
            let script = s.bpftrace.replace("CG", self.work.to_str().unwrap());
            // bpftrace may not run a script on every kernel (its 0.17 fails
            // the open script on 5.10): say so and keep podscope's figures.
            let bt = if self.have_bpftrace {
                Traced::bpftrace(&script)
                    .map_err(|e| {
                        eprintln!(
                            "storm {}: bpftrace did not run ({e:#}); no comparison",
                            s.kind
                        )
                    })
                    .ok()
            } else {
                None
            };
            let (bpftrace, bpftrace_s) = match bt {
                Some(t) => {
                    let rep = self.workload(s.kind, s.n)?;
                    (Some(t.finish(expected)?), Some(rep.elapsed_ns as f64 / 1e9))
                }
                None => (None, None),
            };
            rows.push(Row {
                storm: s.kind,
                operations: s.n,
                expected_events: expected,
                baseline_s,
                podscope,
                podscope_s,
                bpftrace,
                bpftrace_s,
            });
        }
        print_rows(&rows);

        // In-kernel filtering: the TCP storm while podscope traces only an unrelated cgroup.
        eprintln!("filter cost: tcp storm, podscope tracing an unrelated cgroup ...");
        let n = if self.quick { 2500 } else { 10000 };
        let mut base = Vec::new();
        let mut traced = Vec::new();
        for _ in 0..3 {
            base.push(self.workload("tcp", n)?.elapsed_ns as f64 / 1e9);
            let t = Traced::podscope(&self.podscope, "tcp", &self.other, |_| true)?;
            traced.push(self.workload("tcp", n)?.elapsed_ns as f64 / 1e9);
            let m = t.finish(0)?;
            if m.events != 0 {
                println!(
                    "WARNING: {} events leaked through the unrelated-cgroup filter",
                    m.events
                );
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let (untraced_s, traced_s) = (med(&mut base), med(&mut traced));
        let filter_slowdown = (traced_s / untraced_s - 1.0) * 100.0;
        println!(
            "\nunrelated-cgroup filter: tcp storm x{n}: untraced {untraced_s:.3}s, traced {traced_s:.3}s (median of 3) -> slowdown {filter_slowdown:+.1}% (target < 5%)"
        );

        // The Prometheus exporter's cost: the TCP storm traced with and without --metrics-listen.
        eprintln!("metrics cost: tcp storm with and without --metrics-listen ...");
        let n = if self.quick { 2500 } else { 12500 };
        let mut metrics_cost = Vec::new();
        for extra in [&[][..], &["--metrics-listen", "127.0.0.1:0"][..]] {
            let t = Traced::podscope_with(&self.podscope, "tcp", &self.work, |_| true, extra)?;
            let rep = self.workload("tcp", n)?;
            let m = t.finish(n * 4)?;
            let rate = m.events as f64 / (rep.elapsed_ns as f64 / 1e9);
            println!(
                "tcp storm x{n} {}: {} events at {:.0} events/s, {} lost, tracer CPU {:.2} ms per 1,000 events, peak RSS {:.1} MB",
                if extra.is_empty() { "metrics off" } else { "metrics on " },
                m.events,
                rate,
                m.lost,
                m.cpu_s * 1e6 / m.events.max(1) as f64,
                m.rss_mb
            );
            metrics_cost.push(serde_json::json!({"metrics": !extra.is_empty(), "events": m.events, "events_per_s": rate, "lost": m.lost, "cpu_ms_per_1k": m.cpu_s * 1e6 / m.events.max(1) as f64, "rss_mb": m.rss_mb}));
        }

        // Everything on: attach time and memory.
        eprintln!("all probes: attach time and peak RSS during an exec storm ...");
        let t = Traced::podscope(&self.podscope, "all", &self.work, |_| true)?;
        let n = if self.quick { 500 } else { 2000 };
        self.workload("exec", n)?;
        let all = t.finish(n)?;
        println!(
            "all 6 probes: attached in {:.0} ms (podscope's own figure {} ms; target < 200 ms), peak RSS {:.1} MB (target < 30 MB), {} events, {} lost",
            all.attach_ms,
            all.attach_reported_ms.map_or("?".into(), |v| format!("{v:.0}")),
            all.rss_mb,
            all.events,
            all.lost
        );

        Ok(serde_json::json!({
            "storms": rows,
            "unrelated_cgroup_filter": { "untraced_s": untraced_s, "traced_s": traced_s, "slowdown_pct": filter_slowdown },
            "all_probes": all,
            "metrics_cost": metrics_cost,
        }))
    }
}

fn print_rows(rows: &[Row]) {
    println!(
        "\n{:<5} {:>7} {:>8} | {:>9} {:>6} {:>9} {:>7} {:>7} {:>8} | {:>9} {:>9} {:>8} | {:>9}",
        "STORM",
        "OPS",
        "EXPECTED",
        "CAPTURED",
        "LOST",
        "CPU/1kEV",
        "RSS_MB",
        "ATTACH",
        "SLOWDOWN",
        "BT_LINES",
        "BT_CPU/1k",
        "BT_SLOW",
        "CPU_RATIO"
    );
    for r in rows {
        let p = &r.podscope;
        let per_k = |m: &Measured| {
            if m.matched == 0 {
                f64::NAN
            } else {
                m.cpu_s * 1e3 / (m.events.max(1) as f64) * 1e3
            }
        };
        let slow = |s: f64| (s / r.baseline_s - 1.0) * 100.0;
        let (bl, bc, bs, ratio) = match (&r.bpftrace, r.bpftrace_s) {
            (Some(b), Some(s)) => (
                b.events.to_string(),
                format!("{:.2}ms", per_k(b)),
                format!("{:+.1}%", slow(s)),
                format!("{:.2}", per_k(p) / per_k(b)),
            ),
            _ => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<5} {:>7} {:>8} | {:>9} {:>6} {:>7.2}ms {:>7.1} {:>5.0}ms {:>+7.1}% | {:>9} {:>9} {:>8} | {:>9}",
            r.storm,
            r.operations,
            r.expected_events,
            p.matched,
            p.lost,
            per_k(p),
            p.rss_mb,
            p.attach_ms,
            slow(r.podscope_s),
            bl,
            bc,
            bs,
            ratio
        );
    }
    println!("CPU/1kEV: tracer CPU ms per 1,000 events delivered (all threads, /proc/PID/task/*/schedstat); SLOWDOWN: storm time vs untraced (best of 2)");
    println!("bio: the storm's fsyncs also write metadata from the same process, so more 4 KiB writes arrive than the storm's own");
    println!("BT_*: bpftrace with an equivalent tracepoint script on the same storm; CPU_RATIO: podscope CPU per event / bpftrace's (target <= 0.5)");
}
