//! `--drop`: what the drop probe costs. A storm of datagrams to a closed UDP
//! port from a network namespace of the benchmark's own (a thread's, so its
//! counters are the storm's alone: `UdpNoPorts` is the witness), untraced,
//! traced with every drop reported (`podscope trace drop --all`) and traced
//! with every drop filtered out in the kernel (a pod selection that matches
//! nothing); the kernel time per program run from bpf_stats. Then iperf3 on
//! loopback (no drops: the probe must cost nothing there) with and without it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::traced::{prog_stats, Podscope};
use crate::{cpu_ns, Bench};

const PORT: u16 = 39171;

/// One storm run.
#[derive(Debug, Clone, Serialize)]
pub struct StormRun {
    /// `untraced`, `reported` (drop --all) or `filtered` (a selection of no pod).
    pub mode: String,
    /// Datagrams sent per second.
    pub sends_per_s: f64,
    /// Datagrams the kernel dropped for want of a socket (the witness).
    pub udp_noports: u64,
    /// Drop events podscope reported, and lost.
    pub events: Option<u64>,
    /// Events podscope lost.
    pub lost: Option<u64>,
    /// Runs of the kfree_skb program and their kernel time (bpf_stats).
    pub bpf_runs: Option<u64>,
    /// Mean kernel time per run, in ns.
    pub bpf_ns_per_run: Option<f64>,
    /// podscope's CPU per reported event, in µs.
    pub podscope_cpu_us_per_event: Option<f64>,
}

/// The figures of `--drop`.
#[derive(Debug, Serialize)]
pub struct DropBench {
    /// Storm runs, in order.
    pub storm: Vec<StormRun>,
    /// iperf3 loopback bits/s untraced and with `drop --all`, alternating.
    pub iperf_untraced: Vec<f64>,
    /// With the probe.
    pub iperf_traced: Vec<f64>,
    /// Mean traced / mean untraced.
    pub iperf_ratio: f64,
}

/// `podscope: traced for Xs: N events, L lost`.
fn summary(lines: &[String]) -> (Option<u64>, Option<u64>) {
    for l in lines {
        if let Some(rest) = l.strip_prefix("podscope: traced for ") {
            let nums: Vec<u64> = rest
                .split([' ', ','])
                .filter_map(|w| w.parse().ok())
                .collect();
            return (nums.first().copied(), nums.get(1).copied());
        }
    }
    (None, None)
}

fn udp_noports() -> u64 {
    let text = std::fs::read_to_string("/proc/self/net/snmp").unwrap_or_default();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    if rows.len() < 2 {
        return 0;
    }
    let i = rows[0]
        .split_whitespace()
        .position(|n| n == "NoPorts")
        .unwrap_or(0);
    rows[1]
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Datagrams to a closed port for `secs` from a fresh netns: (sent,
/// dropped). The benchmark runs itself there (`unshare -n`), as
/// [`storm_child`].
fn storm(me: &Path, secs: f64) -> Result<(u64, u64)> {
    let out = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            r#"ip link set lo up && exec "$0" --drop-storm-child "$1""#,
        ])
        .arg(me)
        .arg(secs.to_string())
        .output()
        .context("running the storm in a new netns (unshare, util-linux)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [sent, dropped] if out.status.success() => Ok((sent, dropped)),
        _ => anyhow::bail!(
            "the storm failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The storm itself, in its own netns: prints `SENT NOPORTS`.
pub fn storm_child(secs: f64) -> Result<()> {
    let before = udp_noports();
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..256 {
            if s.send_to(b"x", ("127.0.0.1", PORT)).is_ok() {
                sent += 1;
            }
        }
    }
    println!("{sent} {}", udp_noports() - before);
    Ok(())
}

fn iperf(secs: u64) -> Result<f64> {
    let port = "39172";
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", port])
        .stdout(Stdio::null())
        .spawn()
        .context("starting iperf3 (apt-get install iperf3)")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", port, "-t", &secs.to_string(), "-J"])
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
pub fn run(bench: &Bench, rounds: usize) -> Result<DropBench> {
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let secs = if bench.quick { 3.0 } else { 5.0 };
    let mut runs = Vec::new();
    for round in 0..rounds {
        for mode in ["untraced", "reported", "filtered"] {
            eprintln!("drop: storm round {}/{rounds}, {mode} ...", round + 1);
            let ps = match mode {
                "reported" => Some(Podscope::start(&bench.podscope, "drop", &["--all"])?),
                // A namespace no pod is in: the kernel filter lets nothing through.
                "filtered" => Some(Podscope::start(
                    &bench.podscope,
                    "drop",
                    &["-n", "podscope-bench-no-such-namespace", "--wait"],
                )?),
                _ => None,
            };
            let pid = ps.as_ref().map(|p| p.pid());
            let stats0 = pid.and_then(|p| prog_stats(p, |n| n == "kfree_skb"));
            let cpu0 = pid.map(cpu_ns);
            let start = Instant::now();
            let (sent, dropped) = storm(&bench.me, secs)?;
            let elapsed = start.elapsed().as_secs_f64();
            let stats1 = pid.and_then(|p| prog_stats(p, |n| n == "kfree_skb"));
            // Let the consumer catch up before its CPU is read.
            std::thread::sleep(Duration::from_millis(500));
            let cpu1 = pid.map(cpu_ns);
            let (events, lost) = match ps {
                Some(p) => summary(&p.stop()?),
                None => (None, None),
            };
            let (runs_n, ns) = match (stats0, stats1) {
                (Some(a), Some(b)) => (Some(b.0 - a.0), Some(b.1 - a.1)),
                _ => (None, None),
            };
            let run = StormRun {
                mode: mode.into(),
                sends_per_s: sent as f64 / elapsed,
                udp_noports: dropped,
                events: events.filter(|_| mode == "reported"),
                lost,
                bpf_runs: runs_n,
                bpf_ns_per_run: runs_n
                    .zip(ns)
                    .filter(|(r, _)| *r > 0)
                    .map(|(r, n)| n as f64 / r as f64),
                podscope_cpu_us_per_event: match (cpu0, cpu1, events) {
                    (Some(a), Some(b), Some(e)) if e > 0 && mode == "reported" => {
                        Some((b - a) as f64 / 1e3 / e as f64)
                    }
                    _ => None,
                },
            };
            eprintln!("  {run:?}");
            runs.push(run);
        }
    }
    let isecs = if bench.quick { 5 } else { 10 };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("drop: iperf3 round {}/{rounds} ...", round + 1);
        off.push(iperf(isecs)?);
        let ps = Podscope::start(&bench.podscope, "drop", &["--all"])?;
        on.push(iperf(isecs)?);
        ps.stop()?;
    }
    let r = DropBench {
        storm: runs,
        iperf_ratio: mean(&on) / mean(&off),
        iperf_untraced: off,
        iperf_traced: on,
    };
    print(&r);
    Ok(r)
}

fn print(r: &DropBench) {
    println!("\ndrop probe: datagrams to a closed UDP port from a netns of its own");
    println!(
        "{:<9} {:>12} {:>12} {:>10} {:>6} {:>10} {:>10} {:>12}",
        "MODE", "SENDS/S", "NOPORTS", "EVENTS", "LOST", "BPF_RUNS", "NS/RUN", "CPU_US/EVENT"
    );
    for s in &r.storm {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "{:<9} {:>12.0} {:>12} {:>10} {:>6} {:>10} {:>10} {:>12}",
            s.mode,
            s.sends_per_s,
            s.udp_noports,
            opt(s.events),
            opt(s.lost),
            opt(s.bpf_runs),
            s.bpf_ns_per_run.map_or("-".into(), |v| format!("{v:.0}")),
            s.podscope_cpu_us_per_event
                .map_or("-".into(), |v| format!("{v:.2}")),
        );
    }
    println!(
        "iperf3 loopback: untraced {:.2} Gbit/s, with drop --all {:.2} Gbit/s: ratio {:.3}",
        mean(&r.iperf_untraced) / 1e9,
        mean(&r.iperf_traced) / 1e9,
        r.iperf_ratio
    );
}
