//! `--contention`: the exec, tcp and open storms traced while two CPU-bound
//! competitors (one per core, same priority as everything else) keep the
//! machine busy, 3 runs each; and the 1,000,000-open storm at its natural
//! rate traced with `--all`, columns written to a file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{cpu_ns, peak_rss_kb, storms, Bench, Measured, Traced};

/// Entry point of `podscope-bench spin`: burns CPU until killed.
pub fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        // Cheap, unoptimisable work; no syscalls, so it competes for the CPU only.
        for _ in 0..1_000_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        std::hint::black_box(x);
    }
}

/// Two CPU-bound processes pinned one per core, at the default priority.
struct Competitors(Vec<Child>);

impl Competitors {
    fn start(me: &Path) -> Result<Competitors> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut kids = Vec::new();
        for cpu in 0..cores.min(2) {
            kids.push(
                Command::new("taskset")
                    .args(["-c", &cpu.to_string()])
                    .arg(me)
                    .arg("spin")
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting a competitor (taskset, util-linux)")?,
            );
        }
        // Let them reach full speed.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Competitors(kids))
    }
}

impl Drop for Competitors {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Serialize)]
struct Run {
    storm: &'static str,
    run: u32,
    generated: u64,
    captured: u64,
    /// Counted losses podscope reported (all reasons).
    lost: u64,
    /// Of which: kernel ring full, and user-space queue full (new binaries).
    ring_lost: Option<u64>,
    queue_full: Option<u64>,
    untraced_s: f64,
    traced_s: f64,
    podscope_cpu_ms_per_1k: f64,
    bpftrace_lines: Option<u64>,
    bpftrace_s: Option<f64>,
    loadavg: String,
}

/// The per-probe loss split from a summary record, if the binary reports it.
fn split(m: &Measured) -> (Option<u64>, Option<u64>) {
    let p = m.summary.as_ref().and_then(|s| s["probes"].get(0).cloned());
    match p {
        Some(p) => (p["lost"].as_u64(), p["queue_full"].as_u64()),
        None => (None, None),
    }
}

pub fn run(bench: &Bench) -> Result<serde_json::Value> {
    println!(
        "\ncontention: storms with two CPU-bound competitors (one per core, nice 0); load before: {}",
        loadavg()
    );
    let mut runs = Vec::new();
    for s in storms(bench.quick).into_iter().filter(|s| s.kind != "bio") {
        let expected = s.n * s.events_per_op;
        for run in 1..=3 {
            eprintln!("contention: storm {} x{} run {run} ...", s.kind, s.n);
            let busy = Competitors::start(&bench.me)?;
            let load = loadavg();
            let untraced_s = bench.workload(s.kind, s.n)?.elapsed_ns as f64 / 1e9;
            let t = Traced::podscope(&bench.podscope, s.probe, &bench.work, s.classify)?;
            let rep = bench.workload(s.kind, s.n)?;
            let m = t.finish(expected)?;
            let (ring_lost, queue_full) = split(&m);
            // bpftrace once per storm: it shows the same machine's baseline.
            let (bpftrace_lines, bpftrace_s) = if run == 1 && bench.have_bpftrace {
                let script = s.bpftrace.replace("CG", bench.work.to_str().unwrap());
                match Traced::bpftrace(&script) {
                    Ok(b) => {
                        let rep = bench.workload(s.kind, s.n)?;
                        let bm = b.finish(expected)?;
                        (Some(bm.events), Some(rep.elapsed_ns as f64 / 1e9))
                    }
                    Err(e) => {
                        eprintln!("storm {}: bpftrace did not run ({e:#})", s.kind);
                        (None, None)
                    }
                }
            } else {
                (None, None)
            };
            drop(busy);
            runs.push(Run {
                storm: s.kind,
                run,
                generated: expected,
                captured: m.matched,
                lost: m.lost,
                ring_lost,
                queue_full,
                untraced_s,
                traced_s: rep.elapsed_ns as f64 / 1e9,
                podscope_cpu_ms_per_1k: m.cpu_s * 1e6 / m.events.max(1) as f64,
                bpftrace_lines,
                bpftrace_s,
                loadavg: load,
            });
        }
    }
    println!(
        "{:<5} {:>3} {:>9} {:>9} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} | LOADAVG",
        "STORM",
        "RUN",
        "GENERATED",
        "CAPTURED",
        "LOST",
        "RING_LOST",
        "QUEUE_FULL",
        "LOST%",
        "UNTRACED",
        "TRACED",
        "CPU/1kEV",
        "BT_LINES",
    );
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for r in &runs {
        println!(
            "{:<5} {:>3} {:>9} {:>9} {:>7} {:>9} {:>10} {:>8.3}% {:>8.2}s {:>8.2}s {:>7.2}ms {:>9} | {}",
            r.storm,
            r.run,
            r.generated,
            r.captured,
            r.lost,
            opt(r.ring_lost),
            opt(r.queue_full),
            r.lost as f64 * 100.0 / r.generated as f64,
            r.untraced_s,
            r.traced_s,
            r.podscope_cpu_ms_per_1k,
            opt(r.bpftrace_lines),
            r.loadavg
        );
    }
    let target = |storm: &str, max_pct: f64| {
        let ok = runs
            .iter()
            .filter(|r| r.storm == storm)
            .filter(|r| r.lost as f64 * 100.0 / r.generated as f64 <= max_pct)
            .count();
        format!("{storm}: {ok} of 3 runs within {max_pct}% lost")
    };
    println!(
        "targets: {}; {}; {}",
        target("exec", 0.0),
        target("tcp", 0.0),
        target("open", 0.1)
    );
    Ok(serde_json::to_value(&runs)?)
}

#[derive(Debug, Serialize)]
struct NaturalOpen {
    opens: u64,
    captured: u64,
    events_total: u64,
    lost: u64,
    summary_lost_line: String,
    storm_s: f64,
    untraced_s: f64,
    podscope_cpu_s: f64,
    podscope_cpu_us_per_event: f64,
    podscope_rss_mb: f64,
    /// CPU seconds per thread name during the storm.
    threads: Vec<(String, f64)>,
    loadavg: String,
}

/// CPU time per thread name of `pid` (threads of one name summed).
fn thread_cpu_ns(pid: u32) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.filter_map(|t| t.ok()) {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let name = name.trim().to_string();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += ns,
            None => out.push((name, ns)),
        }
    }
    out
}

/// The 1,000,000-open storm at its natural rate, `podscope trace open --all`
/// with columns written to a file (as the anchors ran it).
pub fn natural_open(bench: &Bench, n: u64, extra: &[String]) -> Result<serde_json::Value> {
    let load = loadavg();
    eprintln!("natural-rate open storm x{n}, podscope trace open --all to a file ...");
    let untraced_s = bench.workload("open", n)?.elapsed_ns as f64 / 1e9;
    let out_path = std::env::temp_dir().join(format!("podscope-bench-cols-{}", std::process::id()));
    let out = std::fs::File::create(&out_path)?;
    let mut child = Command::new(&bench.podscope)
        .args(["trace", "open", "--all", "-o", "columns"])
        .args(extra)
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if l.contains("attached in") {
                let _ = tx.send(());
            }
            lines.push(l);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(30))
        .context("podscope did not attach within 30 s")?;
    let cpu0 = cpu_ns(pid);
    let threads0 = thread_cpu_ns(pid);
    let rep = bench.workload("open", n)?;
    // Let it write what it read, then stop it.
    let settle = Instant::now();
    let mut last = 0;
    while settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(300));
        let len = std::fs::metadata(&out_path).map_or(0, |m| m.len());
        if len == last {
            break;
        }
        last = len;
    }
    let cpu = cpu_ns(pid).saturating_sub(cpu0);
    let threads: Vec<(String, f64)> = thread_cpu_ns(pid)
        .into_iter()
        .map(|(name, ns)| {
            let before = threads0
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .sum::<u64>();
            (name, ns.saturating_sub(before) as f64 / 1e9)
        })
        .collect();
    let rss = peak_rss_kb(pid);
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    let _ = child.wait();
    let stderr = reader.join().unwrap_or_default();
    let text = std::fs::read_to_string(&out_path)?;
    let _ = std::fs::remove_file(&out_path);
    let captured = text
        .lines()
        .filter(|l| l.contains("podscope-bench-open") && l.contains("O_RDONLY|O_CLOEXEC"))
        .count() as u64;
    // "podscope: traced for 3.2s: 1000123 events, 0 lost"
    let line = stderr
        .iter()
        .find(|l| l.contains(" events, ") && l.contains(" lost"))
        .cloned()
        .unwrap_or_default();
    let nums: Vec<u64> = line
        .rsplit(": ")
        .next()
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|v| v.parse().ok())
        .collect();
    let (events_total, lost) = match nums.as_slice() {
        [e, l, ..] => (*e, *l),
        _ => bail!("no summary from podscope: {stderr:?}"),
    };
    let r = NaturalOpen {
        opens: n,
        captured,
        events_total,
        lost,
        summary_lost_line: stderr
            .iter()
            .skip_while(|l| !l.contains(" events, "))
            .cloned()
            .collect::<Vec<_>>()
            .join(" | "),
        storm_s: rep.elapsed_ns as f64 / 1e9,
        untraced_s,
        podscope_cpu_s: cpu as f64 / 1e9,
        podscope_cpu_us_per_event: cpu as f64 / 1e3 / events_total.max(1) as f64,
        podscope_rss_mb: rss as f64 / 1024.0,
        threads,
        loadavg: load,
    };
    println!(
        "\nnatural-rate open storm x{}: {:.2}s traced ({:.0} opens/s; untraced {:.2}s), captured {} of the storm's opens, podscope saw {} events and reported {} lost; podscope CPU {:.2}s = {:.2} us per event, peak RSS {:.1} MB; load before {}",
        r.opens,
        r.storm_s,
        r.opens as f64 / r.storm_s,
        r.untraced_s,
        r.captured,
        r.events_total,
        r.lost,
        r.podscope_cpu_s,
        r.podscope_cpu_us_per_event,
        r.podscope_rss_mb,
        r.loadavg
    );
    println!("  summary: {}", r.summary_lost_line);
    let per_thread: Vec<String> = r
        .threads
        .iter()
        .filter(|(_, s)| *s > 0.0005)
        .map(|(n, s)| format!("{n} {s:.2}s"))
        .collect();
    println!("  podscope CPU by thread: {}", per_thread.join(", "));
    Ok(serde_json::to_value(&r)?)
}
