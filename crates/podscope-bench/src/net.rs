//! `--net`: what the net probe costs. iperf3 on loopback (TCP, one stream)
//! untraced, with `podscope trace net --all` (every packet on the node
//! followed and counted per flow: loopback's queue, xmit and receive
//! stages), with a pod selection that matches nothing (every packet looked
//! at and left at the first map lookup: the cost on a node's other traffic)
//! and with `--all --flow 'tcp and port P'` (a record per packet and stage
//! through the ring); the kernel time per program run and per packet
//! followed from bpf_stats.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::traced::{prog_stats, Podscope};
use crate::Bench;

const PORT: u16 = 39173;
const PROGS: [&str; 5] = [
    "net_dev_queue",
    "net_dev_xmit",
    "netif_receive_skb",
    "napi_gro_receive_entry",
    "kfree_skb",
];

/// One iperf3 run.
#[derive(Debug, Clone, Serialize)]
pub struct NetRun {
    /// `untraced`, `totals` (net --all), `filtered` (a selection of no pod)
    /// or `per-packet` (net --all --flow).
    pub mode: String,
    /// iperf3's received bits/s.
    pub bits_per_s: f64,
    /// Runs of the probe's programs (all of them) during the run.
    pub bpf_runs: Option<u64>,
    /// Their mean kernel time per run, ns.
    pub bpf_ns_per_run: Option<f64>,
    /// Packets the probe followed (its end summary).
    pub packets: Option<u64>,
    /// Kernel time of all its programs per packet followed, ns.
    pub bpf_ns_per_packet: Option<f64>,
    /// Events written (per-packet records and flow totals) and lost.
    pub events: Option<u64>,
    /// Events lost.
    pub lost: Option<u64>,
}

/// The figures of `--net`.
#[derive(Debug, Serialize)]
pub struct NetBench {
    /// Every run, in order.
    pub runs: Vec<NetRun>,
    /// Mean throughput of each traced mode / untraced.
    pub ratios: Vec<(String, f64)>,
}

/// From the end of a trace: (events, lost) and the packets followed.
fn summary(lines: &[String]) -> (Option<u64>, Option<u64>, Option<u64>) {
    let mut out = (None, None, None);
    for l in lines {
        if let Some(rest) = l.strip_prefix("podscope: traced for ") {
            let nums: Vec<u64> = rest
                .split([' ', ','])
                .filter_map(|w| w.parse().ok())
                .collect();
            out.0 = nums.first().copied();
            out.1 = nums.get(1).copied();
        }
        if let Some(rest) = l.strip_prefix("podscope: net: ") {
            out.2 = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    out
}

fn iperf(secs: u64) -> Result<f64> {
    let port = PORT.to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
        .stdout(Stdio::null())
        .spawn()
        .context("starting iperf3 (apt-get install iperf3)")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            &secs.to_string(),
            "-J",
        ])
        .output()?;
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3: {}", String::from_utf8_lossy(&out.stderr)))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no throughput")
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Runs the benchmark.
pub fn run(bench: &Bench, rounds: usize) -> Result<NetBench> {
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let secs = if bench.quick { 5 } else { 10 };
    let flow = format!("tcp and port {PORT}");
    let modes: [(&str, Vec<&str>); 4] = [
        ("untraced", vec![]),
        ("totals", vec!["--all"]),
        (
            "filtered",
            vec!["-n", "podscope-bench-no-such-namespace", "--wait"],
        ),
        ("per-packet", vec!["--all", "--flow", flow.as_str()]),
    ];
    let mut runs = Vec::new();
    for round in 0..rounds {
        for (mode, args) in &modes {
            eprintln!("net: iperf3 round {}/{rounds}, {mode} ...", round + 1);
            let ps = if *mode == "untraced" {
                None
            } else {
                Some(Podscope::start(&bench.podscope, "net", args)?)
            };
            let pid = ps.as_ref().map(|p| p.pid());
            let s0 = pid.and_then(|p| prog_stats(p, |n| PROGS.contains(&n)));
            let bits = iperf(secs)?;
            let s1 = pid.and_then(|p| prog_stats(p, |n| PROGS.contains(&n)));
            let (events, lost, packets) = match ps {
                Some(p) => summary(&p.stop()?),
                None => (None, None, None),
            };
            let (n, ns) = match (s0, s1) {
                (Some(a), Some(b)) => (Some(b.0 - a.0), Some(b.1 - a.1)),
                _ => (None, None),
            };
            let r = NetRun {
                mode: mode.to_string(),
                bits_per_s: bits,
                bpf_runs: n,
                bpf_ns_per_run: n
                    .zip(ns)
                    .filter(|(r, _)| *r > 0)
                    .map(|(r, t)| t as f64 / r as f64),
                packets,
                bpf_ns_per_packet: packets
                    .zip(ns)
                    .filter(|(p, _)| *p > 0)
                    .map(|(p, t)| t as f64 / p as f64),
                events,
                lost,
            };
            eprintln!("  {r:?}");
            runs.push(r);
        }
    }
    let of = |m: &str| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.mode == m)
            .map(|r| r.bits_per_s)
            .collect()
    };
    let base = mean(&of("untraced"));
    let ratios = ["totals", "filtered", "per-packet"]
        .iter()
        .map(|m| (m.to_string(), mean(&of(m)) / base))
        .collect();
    let r = NetBench { runs, ratios };
    print(&r);
    Ok(r)
}

fn print(r: &NetBench) {
    println!("\nnet probe: iperf3 on loopback (one TCP stream)");
    println!(
        "{:<10} {:>10} {:>12} {:>8} {:>10} {:>12} {:>10} {:>6}",
        "MODE", "GBIT/S", "BPF_RUNS", "NS/RUN", "PACKETS", "NS/PACKET", "EVENTS", "LOST"
    );
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let optf = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    for s in &r.runs {
        println!(
            "{:<10} {:>10.2} {:>12} {:>8} {:>10} {:>12} {:>10} {:>6}",
            s.mode,
            s.bits_per_s / 1e9,
            opt(s.bpf_runs),
            optf(s.bpf_ns_per_run),
            opt(s.packets),
            optf(s.bpf_ns_per_packet),
            opt(s.events),
            opt(s.lost),
        );
    }
    for (m, x) in &r.ratios {
        println!("throughput {m} / untraced: {x:.3}");
    }
}
