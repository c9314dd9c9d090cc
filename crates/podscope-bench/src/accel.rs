//! `--accelerate`: what socket-redirect acceleration buys pod to pod on this
//! node. Two pods on the test bed; a ping-pong client (small messages, one
//! in flight: request/response latency p50/p99) and iperf3 (one stream,
//! bulk throughput) from pod B to pod A, alternating rounds with and without
//! `podscope accelerate` on both pods. The processes run in the pods'
//! network namespaces and pod cgroups (that is how acceleration selects
//! sockets), started by this binary through nsenter.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::pods::Bed;

const RR_PORT: u16 = 39320;
const IPERF_PORT: u16 = 39321;

/// One round.
#[derive(Debug, Clone, Serialize)]
pub struct AccelRun {
    /// `off` or `on`.
    pub mode: String,
    /// Round trips timed.
    pub round_trips: u64,
    /// Message size, bytes (each way).
    pub msg_bytes: u64,
    /// Request/response latency percentiles, µs.
    pub rr_p50_us: f64,
    /// p99, µs.
    pub rr_p99_us: f64,
    /// iperf3's received bits/s.
    pub bits_per_s: f64,
    /// Bytes `podscope accelerate --status` counted as redirected in the round.
    pub redirected_bytes: Option<u64>,
}

/// The figures of `--accelerate`.
#[derive(Debug, Serialize)]
pub struct AccelBench {
    /// Every round, in order.
    pub runs: Vec<AccelRun>,
    /// Median p50 on / off.
    pub p50_ratio: f64,
    /// Median p99 on / off.
    pub p99_ratio: f64,
    /// Median throughput on / off.
    pub throughput_ratio: f64,
}

/// `--accel-echo-server PORT`: echoes each connection (a thread each).
pub fn echo_server(port: u16) -> Result<()> {
    let l = TcpListener::bind(("0.0.0.0", port))?;
    for s in l.incoming() {
        let mut s = s?;
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// `--accel-rr-client IP PORT N SIZE`: N round trips of SIZE bytes on one
/// connection (after 1000 untimed); prints `p50_us p99_us`.
pub fn rr_client(ip: &str, port: u16, n: usize, size: usize) -> Result<()> {
    let mut s =
        TcpStream::connect((ip, port)).with_context(|| format!("connecting {ip}:{port}"))?;
    s.set_nodelay(true)?;
    let msg = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 1000 {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if i >= 1000 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    if back != msg {
        bail!("echo differs");
    }
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!("{:.2} {:.2}", p(0.5), p(0.99));
    Ok(())
}

/// The pod-level unified cgroup of a container pid (its parent directory).
fn pod_cgroup_dir(pid: u32) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 line")?;
    let mount = if Path::new("/sys/fs/cgroup/unified").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    Ok(format!("{mount}{rel}"))
}

/// A command run inside a pod: its netns and its container's cgroup.
fn in_pod(pid: u32, args: &[&str]) -> Result<Command> {
    let cg = pod_cgroup_dir(pid)?;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "echo $$ > {cg}/cgroup.procs && exec nsenter --net=/proc/{pid}/ns/net -- \"$@\""
        ))
        .arg("sh")
        .args(args);
    Ok(c)
}

fn pod_ip(pid: u32) -> Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-4", "-o", "addr", "show", "eth0"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .context("pod has no IPv4 address on eth0")
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn redirected(podscope: &Path) -> Option<u64> {
    let out = Command::new(podscope)
        .args(["accelerate", "--status", "-o", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["counters"]["bytes_redirected"].as_u64()
}

pub fn run(me: &Path, rounds: usize, quick: bool) -> Result<AccelBench> {
    let bed = Bed::new(me)?;
    let podscope = me.with_file_name("podscope");
    let ns = format!("bench-accel-{}", std::process::id());
    let a = bed
        .run_pod("acc-a", &ns, "exec sleep 3600")?
        .context("pod acc-a did not start")?;
    let b = bed
        .run_pod("acc-b", &ns, "exec sleep 3600")?
        .context("pod acc-b did not start")?;
    let cleanup = || {
        let _ = Command::new(&podscope)
            .args(["accelerate", "--off"])
            .output();
        bed.rm_pod("acc-a", &ns);
        bed.rm_pod("acc-b", &ns);
    };
    let r = (|| -> Result<AccelBench> {
        let ip = pod_ip(a)?;
        let me_s = me.to_str().unwrap();
        let _echo = Kill(
            in_pod(a, &[me_s, "--accel-echo-server", &RR_PORT.to_string()])?
                .stdout(Stdio::null())
                .spawn()?,
        );
        let _iperf = Kill(
            in_pod(a, &["iperf3", "-s", "-p", &IPERF_PORT.to_string()])?
                .stdout(Stdio::null())
                .spawn()?,
        );
        std::thread::sleep(Duration::from_millis(500));
        let (n, secs) = if quick { (5000, 3) } else { (20000, 5) };
        let mut runs = Vec::new();
        for round in 0..rounds {
            for mode in ["off", "on"] {
                if mode == "on" {
                    let out = Command::new(&podscope)
                        .args([
                            "accelerate",
                            "--pod",
                            "acc-*",
                            "-n",
                            &ns,
                            "--runtime-endpoint",
                        ])
                        .arg(format!("unix://{}", bed.socket()))
                        .output()?;
                    if !out.status.success() {
                        bail!(
                            "podscope accelerate: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
                let before = redirected(&podscope);
                let out = in_pod(
                    b,
                    &[
                        me_s,
                        "--accel-rr-client",
                        &ip,
                        &RR_PORT.to_string(),
                        &n.to_string(),
                        "64",
                    ],
                )?
                .output()?;
                if !out.status.success() {
                    bail!("rr client: {}", String::from_utf8_lossy(&out.stderr));
                }
                let text = String::from_utf8_lossy(&out.stdout);
                let v: Vec<f64> = text
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                let out = in_pod(
                    b,
                    &[
                        "iperf3",
                        "-c",
                        &ip,
                        "-p",
                        &IPERF_PORT.to_string(),
                        "-t",
                        &secs.to_string(),
                        "-J",
                    ],
                )?
                .output()?;
                let j: serde_json::Value =
                    serde_json::from_slice(&out.stdout).with_context(|| {
                        format!("iperf3 -J: {}", String::from_utf8_lossy(&out.stderr))
                    })?;
                let bps = j["end"]["sum_received"]["bits_per_second"]
                    .as_f64()
                    .unwrap_or(0.0);
                let after = redirected(&podscope);
                let run = AccelRun {
                    mode: mode.into(),
                    round_trips: n as u64,
                    msg_bytes: 64,
                    rr_p50_us: v.first().copied().unwrap_or(f64::NAN),
                    rr_p99_us: v.get(1).copied().unwrap_or(f64::NAN),
                    bits_per_s: bps,
                    redirected_bytes: match (before, after) {
                        (Some(x), Some(y)) => Some(y - x),
                        _ => None,
                    },
                };
                eprintln!(
                    "round {round} {mode:>3}: rr p50 {:.1} us p99 {:.1} us, iperf3 {:.2} Gbit/s, redirected {:?} bytes",
                    run.rr_p50_us,
                    run.rr_p99_us,
                    bps / 1e9,
                    run.redirected_bytes
                );
                runs.push(run);
                if mode == "on" {
                    Command::new(&podscope)
                        .args(["accelerate", "--off"])
                        .output()?;
                }
            }
        }
        let pick = |mode: &str, f: fn(&AccelRun) -> f64| {
            median(runs.iter().filter(|r| r.mode == mode).map(f).collect())
        };
        let p50_ratio = pick("on", |r| r.rr_p50_us) / pick("off", |r| r.rr_p50_us);
        let p99_ratio = pick("on", |r| r.rr_p99_us) / pick("off", |r| r.rr_p99_us);
        let throughput_ratio = pick("on", |r| r.bits_per_s) / pick("off", |r| r.bits_per_s);
        println!(
            "accelerate, pod to pod: rr p50 on/off {p50_ratio:.2} (off {:.1} us, on {:.1} us), p99 on/off {p99_ratio:.2}, \
             iperf3 on/off {throughput_ratio:.2}x (off {:.2} Gbit/s, on {:.2} Gbit/s); medians of {rounds} rounds",
            pick("off", |r| r.rr_p50_us),
            pick("on", |r| r.rr_p50_us),
            pick("off", |r| r.bits_per_s) / 1e9,
            pick("on", |r| r.bits_per_s) / 1e9,
        );
        Ok(AccelBench {
            runs,
            p50_ratio,
            p99_ratio,
            throughput_ratio,
        })
    })();
    cleanup();
    r
}
