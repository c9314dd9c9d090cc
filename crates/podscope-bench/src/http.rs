//! `--http`: what tracing HTTP costs a busy server. nginx (Debian) serves a
//! 1 KiB file on loopback; wrk (Debian) drives it with 32 keep-alive
//! connections; runs alternate untraced and traced (`podscope trace http
//! --all -o none`), so drift in the machine's speed hits both alike. nginx's
//! access log is the witness for the request count. Then a bulk transfer
//! (iperf3, not HTTP) with and without the http probe: the probe must stop
//! copying payload once it has sniffed the connection as another protocol.
//!
//! podscope traces every process here (`--all`), so both wrk's requests and
//! nginx's answers are parsed: twice the work of tracing the server pod only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::traced::{prog_stats, Podscope};
use crate::{cpu_ns, peak_rss_kb, Bench};

const ADDR: &str = "127.0.3.1";

/// One wrk run.
#[derive(Debug, Clone, Serialize)]
pub struct WrkRun {
    /// Traced by podscope.
    pub traced: bool,
    /// Requests wrk completed.
    pub completed: u64,
    /// wrk's requests per second.
    pub rps: f64,
    /// Requests nginx logged during the run (the witness).
    pub nginx_logged: u64,
    /// Requests podscope reported served (nginx's side) and sent (wrk's side).
    pub served: Option<u64>,
    /// Requests podscope reported sent.
    pub sent: Option<u64>,
    /// Events podscope lost (all probes).
    pub lost: Option<u64>,
    /// podscope's CPU time during the run, in seconds.
    pub podscope_cpu_s: Option<f64>,
    /// podscope's peak RSS, in KiB.
    pub podscope_rss_kb: Option<u64>,
    /// Kernel time in podscope's BPF programs during the run (bpf_stats), in seconds.
    pub bpf_s: Option<f64>,
}

/// The figures of `--http`.
#[derive(Debug, Serialize)]
pub struct HttpBench {
    /// Every run, in order.
    pub runs: Vec<WrkRun>,
    /// Mean traced rps / mean untraced rps.
    pub throughput_ratio: f64,
    /// podscope CPU per request seen (served + sent), in µs.
    pub cpu_us_per_request: f64,
    /// Kernel BPF time per request seen, in µs.
    pub bpf_us_per_request: f64,
    /// iperf3 bits/s untraced, and traced with `http`.
    pub bulk_untraced_bps: Vec<f64>,
    /// iperf3 bits/s with `podscope trace http` running.
    pub bulk_traced_bps: Vec<f64>,
    /// Mean traced / untraced bulk throughput.
    pub bulk_ratio: f64,
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start() -> Result<Nginx> {
        let dir = std::env::temp_dir().join(format!("podscope-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("www"))?;
        std::fs::write(dir.join("www/1k.html"), vec![b'x'; 1024])?;
        let port = free_port()?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  keepalive_requests 1000000;\n\
             client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
             server {{\n    listen {ADDR}:{port};\n    root {d}/www;\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx (apt-get install nginx)")?;
        let t = Instant::now();
        while std::net::TcpStream::connect((ADDR, port)).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("nginx did not listen on {ADDR}:{port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nginx { child, dir, port })
    }

    fn log_lines(&self) -> u64 {
        std::fs::read(self.dir.join("access.log"))
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
            .unwrap_or(0)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((ADDR, 0))?.local_addr()?.port())
}

/// Sum of run_time_ns over the BPF programs `pid` holds (bpf_stats must be on).
fn bpf_run_ns(pid: u32) -> u64 {
    prog_stats(pid, |_| true).map_or(0, |(_, ns)| ns)
}

/// `podscope: http: N requests (S served, C sent), ...` and the total lost.
fn summary(lines: &[String]) -> (Option<u64>, Option<u64>, Option<u64>) {
    let mut served = None;
    let mut sent = None;
    let mut lost = None;
    for l in lines {
        if let Some(rest) = l.strip_prefix("podscope: http: ") {
            if let Some((_, tail)) = rest.split_once(" requests (") {
                let mut it = tail.split([' ', ',']).filter(|w| !w.is_empty());
                served = it.next().and_then(|w| w.parse().ok());
                sent = it.nth(1).and_then(|w| w.parse().ok());
            }
        }
        if l.starts_with("podscope: traced for ") {
            lost = l
                .rsplit(", ")
                .next()
                .and_then(|w| w.split_whitespace().next()?.parse().ok());
        }
    }
    (served, sent, lost)
}

fn wrk(port: u16, secs: u64) -> Result<(u64, f64)> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", "32", "-d", &format!("{secs}s")])
        .arg(format!("http://{ADDR}:{port}/1k.html"));
    let (completed, _, rps) = run_wrk(cmd)?;
    Ok((completed, rps))
}

/// Runs wrk: (requests completed, of them not 2xx/3xx, requests per second).
pub fn run_wrk(mut cmd: Command) -> Result<(u64, u64, f64)> {
    let out = cmd.output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let completed = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("wrk printed no request count: {text}"))?;
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk printed no Requests/sec: {text}"))?;
    Ok((completed, non_2xx, rps))
}

fn iperf(secs: u64) -> Result<f64> {
    let port = free_port()?.to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", ADDR, "-p", &port])
        .stdout(Stdio::null())
        .spawn()
        .context("starting iperf3 (apt-get install iperf3)")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args(["-c", ADDR, "-p", &port, "-t", &secs.to_string(), "-J"])
        .output()?;
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3: {}", String::from_utf8_lossy(&out.stderr)))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no throughput")
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Runs the benchmark: `rounds` untraced/traced pairs of `secs` each; the
/// traced runs add `extra` to `podscope trace http --all` (e.g. the
/// capture flags, to measure what they cost).
pub fn run(bench: &Bench, rounds: usize, secs: u64, extra: &[String]) -> Result<HttpBench> {
    let mut trace_args = vec!["--all"];
    trace_args.extend(extra.iter().map(String::as_str));
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let nginx = Nginx::start()?;
    // Warm up (page cache, nginx's first connections).
    wrk(nginx.port, 2)?;
    let mut runs = Vec::new();
    for round in 0..rounds {
        for traced in [false, true] {
            eprintln!(
                "http: round {}/{rounds}, {} ...",
                round + 1,
                if traced { "traced" } else { "untraced" }
            );
            let before = nginx.log_lines();
            let ps = if traced {
                Some(Podscope::start(&bench.podscope, "http", &trace_args)?)
            } else {
                None
            };
            let (cpu0, bpf0) = ps
                .as_ref()
                .map_or((0, 0), |p| (cpu_ns(p.pid()), bpf_run_ns(p.pid())));
            let (completed, rps) = wrk(nginx.port, secs)?;
            let mut run = WrkRun {
                traced,
                completed,
                rps,
                nginx_logged: 0,
                served: None,
                sent: None,
                lost: None,
                podscope_cpu_s: None,
                podscope_rss_kb: None,
                bpf_s: None,
            };
            if let Some(p) = ps {
                // Let the last responses drain through the pipeline.
                std::thread::sleep(Duration::from_millis(500));
                let pid = p.pid();
                run.podscope_cpu_s = Some(cpu_ns(pid).saturating_sub(cpu0) as f64 / 1e9);
                run.bpf_s = Some(bpf_run_ns(pid).saturating_sub(bpf0) as f64 / 1e9);
                run.podscope_rss_kb = Some(peak_rss_kb(pid));
                let lines = p.stop()?;
                (run.served, run.sent, run.lost) = summary(&lines);
            }
            run.nginx_logged = nginx.log_lines() - before;
            println!(
                "http {:>8}: wrk {} requests, {:.0} req/s; nginx logged {}{}",
                if traced { "traced" } else { "untraced" },
                run.completed,
                run.rps,
                run.nginx_logged,
                match (run.served, run.sent, run.podscope_cpu_s) {
                    (Some(s), Some(c), Some(cpu)) => format!(
                        "; podscope saw {s} served, {c} sent, {} lost, CPU {cpu:.2}s, BPF {:.2}s, RSS {} MiB",
                        run.lost.unwrap_or(0),
                        run.bpf_s.unwrap_or(0.0),
                        run.podscope_rss_kb.unwrap_or(0) / 1024
                    ),
                    _ => String::new(),
                }
            );
            runs.push(run);
        }
    }
    drop(nginx);
    let rps = |t: bool| {
        mean(
            &runs
                .iter()
                .filter(|r| r.traced == t)
                .map(|r| r.rps)
                .collect::<Vec<_>>(),
        )
    };
    let traced: Vec<&WrkRun> = runs.iter().filter(|r| r.traced).collect();
    let seen: u64 = traced
        .iter()
        .map(|r| r.served.unwrap_or(0) + r.sent.unwrap_or(0))
        .sum();
    let cpu: f64 = traced.iter().filter_map(|r| r.podscope_cpu_s).sum();
    let bpf: f64 = traced.iter().filter_map(|r| r.bpf_s).sum();
    let per = |s: f64| if seen > 0 { s * 1e6 / seen as f64 } else { 0.0 };

    let mut bulk_untraced_bps = Vec::new();
    let mut bulk_traced_bps = Vec::new();
    for round in 0..rounds.min(2) {
        eprintln!(
            "bulk: round {}, iperf3 untraced then traced with http ...",
            round + 1
        );
        bulk_untraced_bps.push(iperf(secs.min(5))?);
        let p = Podscope::start(&bench.podscope, "http", &trace_args)?;
        bulk_traced_bps.push(iperf(secs.min(5))?);
        p.stop()?;
    }
    let out = HttpBench {
        throughput_ratio: rps(true) / rps(false),
        cpu_us_per_request: per(cpu),
        bpf_us_per_request: per(bpf),
        bulk_ratio: mean(&bulk_traced_bps) / mean(&bulk_untraced_bps),
        runs,
        bulk_untraced_bps,
        bulk_traced_bps,
    };
    println!(
        "\nhttp: throughput traced/untraced {:.3} (target >= 0.95); podscope CPU {:.2} us and kernel BPF {:.2} us per request seen (each request is seen twice: wrk's and nginx's side); bulk iperf3 traced/untraced {:.3} (target >= 0.98)",
        out.throughput_ratio, out.cpu_us_per_request, out.bpf_us_per_request, out.bulk_ratio
    );
    Ok(out)
}
