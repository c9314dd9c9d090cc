//! The end-to-end cluster benchmark: a real `podscope hub` and `podscope
//! agent` on loopback, one containerd pod, a paced open storm inside the
//! pod's container, and a REST client streaming the session: events/s
//! without loss, CPU and peak memory of each process, kernel-to-client latency.
//!
//! Three kinds of child process do the work, so that each one's CPU and memory
//! can be read on its own: `podscope-bench cluster-storm` (joins the
//! container's cgroups, then opens a file at a set rate), `podscope-bench
//! cluster-client` (streams the session's NDJSON and measures latency), and
//! the podscope processes themselves (hub and agent; agents before the
//! in-process pipeline also had a `podscope trace -o json` child per session).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use podscope_cluster::http::{request_with, Response};
use podscope_cluster::tls::ClientTls;

use crate::pods::{humantime_ns, Bed};
use crate::{cpu_ns, peak_rss_kb};

const NODE: &str = "bench-node";
/// The storm's file: every open of it is one event of the run.
const MARKER: &str = "podscope-bench-cluster-";
/// Paths that do not exist, named after CLOCK_REALTIME just before the open:
/// the clock check compares them with the event's timestamp.
const STAMP: &str = "podscope-bench-stamp-";

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    /// Stepped rates (events/s) for the search for the highest rate without
    /// loss; 0 means as fast as the storm can go.
    pub rates: Vec<u64>,
    /// Extra arguments for `podscope hub` and `podscope agent` (to try other
    /// queue sizes); the defaults are what the figures are about.
    pub hub_args: Vec<String>,
    pub agent_args: Vec<String>,
    /// How many times a disturbed run is repeated.
    pub retries: u32,
    /// The hub serves TLS (a throwaway CA and certificate made with openssl);
    /// the agent and the client trust that CA.
    pub tls: bool,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

// ---------------------------------------------------------------------------
// The storm child: `podscope-bench cluster-storm CONTAINER_PID RATE N file|stamp`

/// What the storm child did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StormReport {
    pub operations: u64,
    pub elapsed_ns: u64,
    /// CLOCK_REALTIME at the first and after the last open.
    pub start_wall_ns: u64,
    pub end_wall_ns: u64,
    pub cpu_ns: u64,
}

/// The cgroup.procs files of every hierarchy `pid` is in, opened for
/// writing, the cgroup v2 one last: the tracer identifies containers by their
/// v2 cgroup id, so no open after the move to v2 may be the storm's own set-up.
fn cgroup_procs_files(pid: u32) -> Result<Vec<(PathBuf, File)>> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    // (mount point, "cgroup" or "cgroup2", super options)
    let mounts: Vec<(String, String, String)> = mounts
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split_whitespace();
            let fstype = post.next()?.to_string();
            let opts = post.nth(1).unwrap_or("").to_string();
            Some((pre.split_whitespace().nth(4)?.to_string(), fstype, opts))
        })
        .filter(|(_, t, _)| t == "cgroup" || t == "cgroup2")
        .collect();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup of the pod's container"))?;
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mount = if ctrls.is_empty() {
            mounts.iter().find(|(_, t, _)| t == "cgroup2")
        } else {
            mounts.iter().find(|(_, t, opts)| {
                t == "cgroup" && ctrls.split(',').all(|c| opts.split(',').any(|o| o == c))
            })
        };
        let Some((root, _, _)) = mount else {
            continue;
        };
        let file = PathBuf::from(format!("{root}{path}/cgroup.procs"));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .with_context(|| format!("opening {}", file.display()))?;
        if ctrls.is_empty() {
            v2.push((file, f));
        } else {
            v1.push((file, f));
        }
    }
    if v2.is_empty() {
        bail!("the container (pid {pid}) has no cgroup v2 path; the tracer needs one");
    }
    v1.extend(v2);
    Ok(v1)
}

pub fn storm_main(args: &[String]) -> Result<()> {
    let [cpid, rate, n, mode] = args else {
        bail!("usage: podscope-bench cluster-storm CONTAINER_PID RATE N file|stamp");
    };
    let (cpid, rate, n): (u32, u64, u64) = (cpid.parse()?, rate.parse()?, n.parse()?);
    let stamp = match mode.as_str() {
        "file" => false,
        "stamp" => true,
        other => bail!("storm mode '{other}' is not file or stamp"),
    };
    let me = std::process::id();
    let file = std::env::temp_dir().join(format!("{MARKER}{me}"));
    std::fs::write(&file, b"x")?;
    // Never created: those opens fail with ENOENT, and a failed open is an event too.
    let stamp_dir = std::env::temp_dir().join(format!("{STAMP}{me}"));
    // Opened now: after the move every open is an event of the run, and the
    // storm is single-threaded, so its thread's schedstat is its CPU time.
    let schedstat = File::open("/proc/thread-self/schedstat")?;
    let targets = cgroup_procs_files(cpid)?;
    for (path, mut f) in targets {
        f.write_all(me.to_string().as_bytes())
            .with_context(|| format!("moving the storm into {}", path.display()))?;
    }
    let start = Instant::now();
    let start_wall_ns = wall_ns();
    let mut done = 0u64;
    while done < n {
        let due = if rate == 0 {
            n
        } else {
            let el = start.elapsed().as_nanos();
            ((el * rate as u128 / 1_000_000_000) as u64 + 1).min(n)
        };
        if done >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        while done < due {
            if stamp {
                let _ = File::open(stamp_dir.join(wall_ns().to_string()));
            } else {
                drop(File::open(&file)?);
            }
            done += 1;
        }
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let end_wall_ns = wall_ns();
    let _ = std::fs::remove_file(&file);
    let report = StormReport {
        operations: n,
        elapsed_ns,
        start_wall_ns,
        end_wall_ns,
        cpu_ns: {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 128];
            let n = schedstat.read_at(&mut buf, 0)?;
            std::str::from_utf8(&buf[..n])?
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        },
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Where the hub answers: `http(s)://127.0.0.1:PORT`, and the CA to trust
/// for https.
#[derive(Clone)]
struct HubAt {
    base: String,
    tls: Option<ClientTls>,
}

impl HubAt {
    fn new(base: String, ca: Option<&Path>) -> Result<HubAt> {
        let tls = ClientTls::for_url(&base, ca)?;
        Ok(HubAt { base, tls })
    }

    fn get(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> Result<Response> {
        request_with(
            self.tls.as_ref(),
            &self.base,
            method,
            path,
            Some(token),
            body,
            &[],
        )
        .with_context(|| format!("{method} {path} on the hub at {}", self.base))
    }
}

/// A REST call to the hub whose answer is JSON.
fn api(
    at: &HubAt,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let b = body.map(|b| b.to_string());
    let r = at.get(method, path, token, b.as_deref())?;
    let status = r.status;
    Ok((status, r.json().unwrap_or(Value::Null)))
}

// ---------------------------------------------------------------------------
// The client child: `podscope-bench cluster-client HUB_URL TOKEN SESSION [CA_PEM]`

/// Latency percentiles in ms (or µs for the clock check), with the count.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Pcts {
    pub n: u64,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// A latency histogram: 1 µs steps to 10 ms, 100 µs to 1 s, 10 ms to 100 s.
/// Fixed memory, so the client's own footprint does not grow with the run.
struct Hist {
    buckets: Vec<u64>,
    n: u64,
    min_ns: i64,
    max_ns: i64,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            buckets: vec![0; 30_000],
            n: 0,
            min_ns: i64::MAX,
            max_ns: i64::MIN,
        }
    }

    fn add(&mut self, ns: i64) {
        self.n += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        let us = ns.max(0) as u64 / 1000;
        let i = if us < 10_000 {
            us
        } else if us < 1_000_000 {
            10_000 + (us - 10_000) / 100
        } else {
            (19_900 + (us - 1_000_000) / 10_000).min(29_999)
        };
        self.buckets[i as usize] += 1;
    }

    /// The bucket's lower bound, in µs.
    fn bucket_us(i: usize) -> f64 {
        let i = i as f64;
        if i < 10_000.0 {
            i
        } else if i < 19_900.0 {
            10_000.0 + (i - 10_000.0) * 100.0
        } else {
            1_000_000.0 + (i - 19_900.0) * 10_000.0
        }
    }

    fn pct_us(&self, p: f64) -> f64 {
        let want = ((self.n as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::bucket_us(i);
            }
        }
        f64::NAN
    }

    fn ms(&self) -> Option<Pcts> {
        (self.n > 0).then(|| Pcts {
            n: self.n,
            min: self.min_ns as f64 / 1e6,
            p50: self.pct_us(0.5) / 1e3,
            p99: self.pct_us(0.99) / 1e3,
            max: self.max_ns as f64 / 1e6,
        })
    }
}

/// What the client saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientReport {
    /// Event records (they carry `pid`).
    pub events: u64,
    /// Of those, opens of the storm's file or stamp paths.
    pub storm_events: u64,
    /// `lost` records' `lost`, summed.
    pub lost_records: u64,
    pub gap_agent: u64,
    pub gap_hub: u64,
    pub summaries: Vec<Value>,
    pub errors: Vec<String>,
    pub end: Option<Value>,
    pub first_event_wall_ns: u64,
    pub last_event_wall_ns: u64,
    /// Client receive time (CLOCK_REALTIME) minus the event's timestamp.
    pub latency_ms: Option<Pcts>,
    /// Event timestamp minus the storm's CLOCK_REALTIME just before open(), in µs.
    pub clock_check_us: Option<Pcts>,
    pub cpu_ns: u64,
    pub peak_rss_kb: u64,
    /// The first few events that are not the storm's.
    pub other_samples: Vec<String>,
}

/// Reads the stream until `end`: the parent gets `ready` once the stream is
/// open, `progress N` (events so far) every 100 ms, and `report {json}` last.
///
/// With `-` instead, it reads `podscope trace -o json` output from stdin
/// until EOF: the latency of the trace alone.
pub fn client_main(args: &[String]) -> Result<()> {
    let body: Box<dyn Read + Send> = match args {
        [dash] if dash == "-" => {
            println!("ready");
            Box::new(std::io::stdin())
        }
        [base, token, session, rest @ ..] => {
            let at = HubAt::new(base.clone(), rest.first().map(Path::new))?;
            let r = at.get(
                "GET",
                &format!("/v1/sessions/{session}/events"),
                token,
                None,
            )?;
            if r.status != 200 {
                let status = r.status;
                let t = r.text().unwrap_or_default();
                bail!("streaming session {session}: HTTP {status}: {t}");
            }
            Box::new(r.into_body())
        }
        _ => bail!("usage: podscope-bench cluster-client HUB_URL TOKEN SESSION [CA_PEM] | -"),
    };
    let mut r = BufReader::with_capacity(256 * 1024, body);
    let progress = Arc::new(AtomicU64::new(0));
    let p = progress.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        println!("progress {}", p.load(Ordering::Relaxed));
    });
    let mut rep = ClientReport::default();
    let mut hist = Hist::new();
    let mut clock: Vec<i64> = Vec::new();
    let mut line = Vec::with_capacity(1024);
    let mut ready = false;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let now = wall_ns();
        let text = String::from_utf8_lossy(&line);
        // Events carry a pid and start with their timestamp; looking for
        // those (str::contains is vectorised) instead of parsing every line
        // keeps this client cheap next to the processes it measures.
        if text.contains("\"pid\":") {
            rep.events += 1;
            progress.store(rep.events, Ordering::Relaxed);
            if rep.first_event_wall_ns == 0 {
                rep.first_event_wall_ns = now;
            }
            rep.last_event_wall_ns = now;
            const TS: &str = "\"timestamp\":\"";
            let ts = if text.get(1..).is_some_and(|t| t.starts_with(TS)) {
                Some(1)
            } else {
                text.find(TS)
            }
            .and_then(|i| text.get(i + TS.len()..i + TS.len() + 30))
            .and_then(humantime_ns);
            if let Some(ts) = ts {
                hist.add(now as i64 - ts as i64);
            }
            if text.contains(MARKER) {
                rep.storm_events += 1;
            } else if let Some(i) = text.find(STAMP) {
                rep.storm_events += 1;
                let digits: String = text[i + STAMP.len()..]
                    .chars()
                    .skip_while(|c| c.is_ascii_digit())
                    .skip(1) // the '/' after the storm's pid
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                let stamp = digits.parse::<i64>().ok();
                if let (Some(s), Some(ts)) = (stamp, ts) {
                    clock.push(ts as i64 - s);
                }
            } else if rep.other_samples.len() < 5 {
                rep.other_samples.push(text.trim().to_string());
            }
            continue;
        }
        let v: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
        match v["kind"].as_str().unwrap_or("") {
            "session" if !ready => {
                ready = true;
                println!("ready");
            }
            "lost" => rep.lost_records += v["lost"].as_u64().unwrap_or(0),
            "gap" if v["where"] == "hub" => rep.gap_hub += v["gap"].as_u64().unwrap_or(0),
            "gap" => rep.gap_agent += v["gap"].as_u64().unwrap_or(0),
            "summary" => rep.summaries.push(v),
            "error" | "node_lost" => rep.errors.push(v.to_string()),
            "end" | "interrupted" => {
                rep.end = Some(v);
                break;
            }
            _ => {}
        }
    }
    rep.latency_ms = hist.ms();
    if !clock.is_empty() {
        clock.sort_unstable();
        let at = |p: f64| clock[((clock.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
        rep.clock_check_us = Some(Pcts {
            n: clock.len() as u64,
            min: at(0.0),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        });
    }
    let me = std::process::id();
    rep.cpu_ns = cpu_ns(me);
    rep.peak_rss_kb = peak_rss_kb(me);
    println!("report {}", serde_json::to_string(&rep)?);
    Ok(())
}

// ---------------------------------------------------------------------------
// The parent: processes, runs, figures.

/// A child process stopped on drop: SIGINT, then SIGKILL after 5 s.
struct Proc {
    child: Child,
    what: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the exit, up to `limit`; false on timeout.
    fn wait_for(&mut self, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.interrupt();
        if !self.wait_for(Duration::from_secs(5)) {
            eprintln!("cluster: {} did not stop on SIGINT; killing it", self.what);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU ns (in all and per thread id) and peak RSS kB of a process, read while it runs.
#[derive(Debug, Clone, Default)]
struct Usage {
    cpu_ns: u64,
    peak_kb: u64,
    threads: BTreeMap<u32, u64>,
    /// Voluntary + involuntary context switches of all threads.
    switches: u64,
}

fn usage(pid: u32) -> Usage {
    let mut threads = BTreeMap::new();
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        threads.insert(tid, ns);
        switches += std::fs::read_to_string(t.path().join("status"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Usage {
        cpu_ns: cpu_ns(pid),
        peak_kb: peak_rss_kb(pid),
        threads,
        switches,
    }
}

/// The agent's CPU ms per 1,000 events, split between the threads the
/// session started (they read the trace's stdout and stderr; being spawned
/// from a tokio worker they share its thread name, so they are told apart by
/// id) and the threads it had before (tokio workers: batching, the gRPC link).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AgentSplit {
    pub session_threads: f64,
    pub runtime_threads: f64,
}

fn agent_split(earlier: &Usage, before: &Usage, after: &Usage, events: u64) -> AgentSplit {
    let mut split = AgentSplit::default();
    for (tid, ns) in &after.threads {
        let d = ns.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)) as f64
            / 1e6
            / (events.max(1) as f64 / 1e3);
        if earlier.threads.contains_key(tid) {
            split.runtime_threads += d;
        } else {
            split.session_threads += d;
        }
    }
    split
}

/// The agent's `podscope trace` child.
fn trace_child(agent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(agent) && cmd.split(|b| *b == 0).any(|a| a == b"trace")
        })
}

/// CPU ms per 1,000 events for each process of a run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cost {
    pub hub: Option<f64>,
    pub agent: Option<f64>,
    pub trace: f64,
    pub client: Option<f64>,
    pub storm: f64,
}

/// Context switches per 1,000 delivered events, per process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Switches {
    pub hub: f64,
    pub agent: f64,
    pub trace: f64,
}

/// Peak RSS (VmHWM) in MB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    pub hub: Option<f64>,
    pub agent: Option<f64>,
    pub trace: f64,
    pub client: Option<f64>,
}

/// One run's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    pub name: String,
    /// Events/s asked of the storm; 0 = as fast as it goes.
    pub target_rate: u64,
    pub generated: u64,
    pub generated_per_s: f64,
    /// Storm events delivered to the client (trace-only: written to /dev/null).
    pub delivered: u64,
    /// Events delivered that the storm did not make (expected: 0).
    pub other_events: u64,
    /// Kernel-side losses (the trace's summary).
    pub lost: u64,
    pub gap_agent: u64,
    pub gap_hub: u64,
    /// delivered + lost + gaps == generated, and the trace's own counts agree.
    pub accounted: bool,
    /// Delivered events / (last event at the client - storm start).
    pub end_to_end_per_s: f64,
    pub cpu_ms_per_1k: Cost,
    /// The agent's part of it, by thread.
    pub agent_split_ms_per_1k: AgentSplit,
    /// Context switches per 1,000 events (a thread woken per event or per
    /// batch shows here).
    pub switches_per_1k: Switches,
    pub peak_rss_mb: Memory,
    pub latency_ms: Option<Pcts>,
    pub clock_check_us: Option<Pcts>,
    /// How busy the cores were while the storm ran (every process, /proc/stat).
    pub machine_busy_pct: f64,
    /// The part of that taken by processes other than the benchmark's (other
    /// engineers' builds on a shared machine): a disturbed run shows here.
    pub other_load_pct: f64,
    /// Which attempt this is (runs disturbed by other work are repeated).
    pub attempt: u32,
    pub notes: Vec<String>,
}

/// The machine's CPU time (/proc/stat) and the benchmark's own processes'
/// CPU time while the storm runs: a run that was short of CPU, and how much
/// of the machine other work took meanwhile.
struct Window {
    busy_ticks: u64,
    total_ticks: u64,
    pids: Vec<u32>,
    cpu: Vec<u64>,
}

fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // user nice system idle iowait irq softirq steal
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

impl Window {
    fn start(pids: &[u32]) -> Window {
        let (busy_ticks, total_ticks) = machine_ticks();
        Window {
            busy_ticks,
            total_ticks,
            pids: pids.to_vec(),
            cpu: pids.iter().map(|p| cpu_ns(*p)).collect(),
        }
    }

    /// (busy %, % taken by other processes), both of all cores.
    fn end(&self, storm_cpu_ns: u64) -> (f64, f64) {
        let (busy, total) = machine_ticks();
        // /proc/stat counts in USER_HZ, 100 per second on Linux.
        let tick_ns = 1e7;
        let total = total.saturating_sub(self.total_ticks).max(1) as f64 * tick_ns;
        let busy = busy.saturating_sub(self.busy_ticks) as f64 * tick_ns;
        let ours: u64 = self
            .pids
            .iter()
            .zip(&self.cpu)
            .map(|(p, c)| cpu_ns(*p).saturating_sub(*c))
            .sum::<u64>()
            + storm_cpu_ns;
        (
            busy * 100.0 / total,
            ((busy - ours as f64) * 100.0 / total).max(0.0),
        )
    }
}

/// The pod, the binaries and the settings shared by every run.
struct Ctx<'a> {
    me: PathBuf,
    podscope: PathBuf,
    socket: String,
    ns: String,
    pod: String,
    container_pid: u32,
    settings: &'a Settings,
    logs: PathBuf,
    token: String,
    token_file: PathBuf,
    /// With --cluster-tls: the hub's certificate and key, and the CA.
    tls: Option<TlsFiles>,
}

struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// A throwaway CA and a certificate for 127.0.0.1 (P-256), made with the
/// openssl CLI in `dir`.
fn make_certs(dir: &Path) -> Result<TlsFiles> {
    let openssl = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context(
                "running openssl (Debian package openssl) to make the benchmark's certificates",
            )?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=podscope bench CA",
    ];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&a)?;
    let mut a = vec!["req", "-subj", "/CN=podscope-hub"];
    a.extend(ec);
    a.extend(["-keyout", "hub.key", "-out", "hub.csr"]);
    openssl(&a)?;
    std::fs::write(
        dir.join("hub.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "hub.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "hub.cnf",
        "-out",
        "hub.pem",
    ])?;
    Ok(TlsFiles {
        cert: dir.join("hub.pem"),
        key: dir.join("hub.key"),
        ca: dir.join("ca.pem"),
    })
}

/// A hub and one agent on loopback.
struct Cluster {
    // Field order is drop order: the agent stops before the hub.
    agent: Proc,
    hub: Proc,
    at: HubAt,
}

impl Ctx<'_> {
    fn start_cluster(&self, tag: &str) -> Result<Cluster> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let log = |name: &str| -> Result<File> {
            Ok(File::create(self.logs.join(format!("{tag}-{name}.log")))?)
        };
        let mut hub_tls = Vec::new();
        let mut agent_tls = Vec::new();
        if let Some(t) = &self.tls {
            hub_tls = vec![
                "--tls-cert".into(),
                t.cert.clone().into_os_string(),
                "--tls-key".into(),
                t.key.clone().into_os_string(),
            ];
            agent_tls = vec!["--tls-ca".into(), t.ca.clone().into_os_string()];
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{addr}");
        let hub = Proc {
            child: Command::new(&self.podscope)
                .args(["hub", "--listen", &addr, "--token-file"])
                .arg(&self.token_file)
                .args(&hub_tls)
                .args(&self.settings.hub_args)
                .stdout(Stdio::null())
                .stderr(log("hub")?)
                .spawn()
                .context("starting podscope hub")?,
            what: "the hub",
        };
        let t = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!(
                    "the hub did not listen on {addr} within 10 s; see {}",
                    self.logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let agent = Proc {
            child: Command::new(&self.podscope)
                .args(["agent", "--hub", &base, "--node", NODE])
                .args(&agent_tls)
                .args(["--runtime-endpoint", &format!("unix://{}", self.socket)])
                .arg("--token-file")
                .arg(&self.token_file)
                .args(&self.settings.agent_args)
                .stdout(Stdio::null())
                .stderr(log("agent")?)
                .spawn()
                .context("starting podscope agent")?,
            what: "the agent",
        };
        let at = HubAt::new(base, self.tls.as_ref().map(|t| t.ca.as_path()))?;
        let c = Cluster { agent, hub, at };
        let t = Instant::now();
        loop {
            let (_, nodes) = api(&c.at, &self.token, "GET", "/v1/nodes", None)?;
            let up = nodes
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n["node"] == NODE && n["state"] == "up"));
            if up {
                break;
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!(
                    "the agent did not register within 20 s; see {}",
                    self.logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(c)
    }

    fn storm(&self, rate: u64, n: u64, stamp: bool) -> Result<StormReport> {
        let out = Command::new(&self.me)
            .args(["cluster-storm", &self.container_pid.to_string()])
            .args([&rate.to_string(), &n.to_string()])
            .arg(if stamp { "stamp" } else { "file" })
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("the cluster storm failed");
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// One run through hub and agent.
    fn run(&self, name: &str, rate: u64, n: u64, stamp: bool) -> Result<Run> {
        let c = self.start_cluster(name)?;
        let tok = self.token.as_str();
        let (st, s) = api(
            &c.at,
            tok,
            "POST",
            "/v1/sessions",
            Some(
                json!({"namespace": self.ns, "pod": self.pod, "probes": ["open"], "start": false}),
            ),
        )?;
        if st != 201 {
            bail!("creating the session: HTTP {st}: {s}");
        }
        let id = s["id"]
            .as_str()
            .context("the session has no id")?
            .to_string();

        // The client streams first, then the session starts: it sees everything.
        let mut client = Proc {
            child: Command::new(&self.me)
                .args(["cluster-client", &c.at.base, tok, &id])
                .args(self.tls.iter().map(|t| &t.ca))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?,
            what: "the client",
        };
        let progress = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (report_tx, report_rx) = mpsc::channel();
        let out = BufReader::new(client.child.stdout.take().expect("piped"));
        let p = progress.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if l == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(n) = l.strip_prefix("progress ") {
                    p.store(n.parse().unwrap_or(0), Ordering::Relaxed);
                } else if let Some(r) = l.strip_prefix("report ") {
                    let _ = report_tx.send(serde_json::from_str::<ClientReport>(r));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the client did not open the stream")?;
        let path = format!("/v1/sessions/{id}");
        let agent_threads = usage(c.agent.pid());
        let (st, s) = api(&c.at, tok, "PUT", &path, Some(json!({"state": "running"})))?;
        if st != 200 {
            bail!("starting the session: HTTP {st}: {s}");
        }
        let t = Instant::now();
        loop {
            let (_, s) = api(&c.at, tok, "GET", &path, None)?;
            if s["nodes"][NODE]["state"] == "running" {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("the agent's trace did not attach within 30 s: {s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Agents before the in-process pipeline ran each session as a
        // `podscope trace` child; today the agent traces in process (the
        // TRACE column is then 0 and the agent's figures include the trace).
        let trace = trace_child(c.agent.pid());
        let trace_usage = || trace.map(usage).unwrap_or_default();
        let before = [usage(c.hub.pid()), usage(c.agent.pid()), trace_usage()];

        let mut watched = vec![c.hub.pid(), c.agent.pid(), client.pid()];
        watched.extend(trace);
        let window = Window::start(&watched);
        let storm = self.storm(rate, n, stamp)?;
        let (busy, other) = window.end(storm.cpu_ns);

        // Wait until the client has everything (or stops getting more).
        let t = Instant::now();
        let mut last = (u64::MAX, Instant::now());
        loop {
            let got = progress.load(Ordering::Relaxed);
            if got != last.0 {
                last = (got, Instant::now());
            }
            let quiet = last.1.elapsed();
            if (got >= n && quiet > Duration::from_millis(300))
                || quiet > Duration::from_secs(2)
                || t.elapsed() > Duration::from_secs(120)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let after = [usage(c.hub.pid()), usage(c.agent.pid()), trace_usage()];
        let (st, s) = api(&c.at, tok, "PUT", &path, Some(json!({"state": "stopped"})))?;
        if st != 200 {
            bail!("stopping the session: HTTP {st}: {s}");
        }
        let rep = report_rx
            .recv_timeout(Duration::from_secs(60))
            .context("the client did not report within 60 s of the stop")??;
        client.wait_for(Duration::from_secs(5));
        drop(c);
        let mut run = self.figures(name, rate, n, &storm, &rep, &agent_threads, &before, &after);
        run.machine_busy_pct = busy;
        run.other_load_pct = other;
        Ok(run)
    }

    #[allow(clippy::too_many_arguments)]
    fn figures(
        &self,
        name: &str,
        rate: u64,
        n: u64,
        storm: &StormReport,
        rep: &ClientReport,
        agent_threads: &Usage,
        before: &[Usage; 3],
        after: &[Usage; 3],
    ) -> Run {
        let sum = |k: &str| -> u64 {
            rep.summaries
                .iter()
                .map(|s| s[k].as_u64().unwrap_or(0))
                .sum()
        };
        let (lost, emitted, decoded) = (sum("lost"), sum("emitted"), sum("events"));
        let delivered = rep.storm_events;
        let other = rep.events - rep.storm_events;
        let gaps = rep.gap_agent + rep.gap_hub;
        let mut notes = Vec::new();
        // Everything the storm made is delivered or reported, and the stream
        // agrees with the trace: what it wrote was delivered or counted as a gap.
        // Kernel losses are not per pod: while other pods' events reach the
        // trace (decoded > emitted, see below), some of the losses may be
        // theirs, so the storm's side is then only bounded.
        let foreign = decoded > emitted;
        let covered = if foreign {
            delivered + gaps <= n && delivered + lost + gaps >= n
        } else {
            delivered + lost + gaps == n
        };
        let accounted = covered && rep.events + gaps == emitted && rep.summaries.len() == 1;
        if !accounted {
            notes.push(format!(
                "accounting: generated {n}, delivered {delivered} (+{other} other), lost {lost} (lost records {}), gaps {gaps}; the trace wrote {emitted}; {} summaries",
                rep.lost_records,
                rep.summaries.len()
            ));
        }
        if other > 0 {
            notes.push(format!(
                "{other} events that are not the storm's: {:?}",
                rep.other_samples
            ));
        }
        if foreign {
            // Other engineers' new pods on the shared test bed: admitted in the
            // kernel at cgroup mkdir, dropped by the trace once named.
            notes.push(format!(
                "the trace decoded {} events it did not write (new pods outside the selection); its losses may include theirs",
                decoded - emitted
            ));
        }
        notes.extend(rep.errors.iter().cloned());
        let per_k = |ns: u64| ns as f64 / 1e6 / (delivered.max(1) as f64 / 1e3);
        let mb = |kb: u64| kb as f64 / 1024.0;
        let span = rep.last_event_wall_ns.saturating_sub(storm.start_wall_ns) as f64 / 1e9;
        Run {
            name: name.into(),
            target_rate: rate,
            generated: n,
            generated_per_s: n as f64 / (storm.elapsed_ns as f64 / 1e9),
            delivered,
            other_events: other,
            lost,
            gap_agent: rep.gap_agent,
            gap_hub: rep.gap_hub,
            accounted,
            end_to_end_per_s: if span > 0.0 {
                delivered as f64 / span
            } else {
                0.0
            },
            cpu_ms_per_1k: Cost {
                hub: Some(per_k(after[0].cpu_ns.saturating_sub(before[0].cpu_ns))),
                agent: Some(per_k(after[1].cpu_ns.saturating_sub(before[1].cpu_ns))),
                trace: per_k(after[2].cpu_ns.saturating_sub(before[2].cpu_ns)),
                client: Some(per_k(rep.cpu_ns)),
                storm: per_k(storm.cpu_ns),
            },
            agent_split_ms_per_1k: agent_split(agent_threads, &before[1], &after[1], delivered),
            switches_per_1k: {
                let sw = |i: usize| {
                    after[i].switches.saturating_sub(before[i].switches) as f64
                        / (delivered.max(1) as f64 / 1e3)
                };
                Switches {
                    hub: sw(0),
                    agent: sw(1),
                    trace: sw(2),
                }
            },
            peak_rss_mb: Memory {
                hub: Some(mb(after[0].peak_kb)),
                agent: Some(mb(after[1].peak_kb)),
                trace: mb(after[2].peak_kb),
                client: Some(mb(rep.peak_rss_kb)),
            },
            latency_ms: rep.latency_ms,
            clock_check_us: rep.clock_check_us,
            machine_busy_pct: 0.0,
            other_load_pct: 0.0,
            attempt: 1,
            notes,
        }
    }

    /// The trace alone with its stdout piped to the client: the latency that
    /// the trace's own batching adds, before the agent and the hub.
    fn trace_pipe(&self, name: &str, rate: u64, n: u64) -> Result<Run> {
        let mut p = Proc {
            child: Command::new(&self.podscope)
                .args([
                    "trace", "open", "-n", &self.ns, "--pod", &self.pod, "-o", "json",
                ])
                .args(["--runtime-endpoint", &format!("unix://{}", self.socket)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?,
            what: "the trace",
        };
        let stdout = p.child.stdout.take().expect("piped");
        let client = Command::new(&self.me)
            .args(["cluster-client", "-"])
            .stdin(stdout)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (att_tx, att_rx) = mpsc::channel();
        let err = BufReader::new(p.child.stderr.take().expect("piped"));
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                if l.contains("probes attached") {
                    let _ = att_tx.send(());
                }
            }
        });
        att_rx
            .recv_timeout(Duration::from_secs(30))
            .context("podscope trace did not attach within 30 s")?;
        let before = usage(p.pid());
        let window = Window::start(&[p.pid(), client.id()]);
        let storm = self.storm(rate, n, false)?;
        let (busy, other) = window.end(storm.cpu_ns);
        std::thread::sleep(Duration::from_millis(500));
        let after = usage(p.pid());
        p.interrupt();
        let out = client.wait_with_output()?;
        p.wait_for(Duration::from_secs(5));
        let rep: ClientReport = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("report "))
            .context("the client printed no report")
            .and_then(|r| Ok(serde_json::from_str(r)?))?;
        let lost: u64 = rep
            .summaries
            .iter()
            .map(|s| s["lost"].as_u64().unwrap_or(0))
            .sum();
        let delivered = rep.storm_events;
        let per_k = |ns: u64| ns as f64 / 1e6 / (delivered.max(1) as f64 / 1e3);
        let mut notes = vec!["podscope trace -o json | client, no agent/hub".to_string()];
        let accounted = delivered + lost == n && rep.summaries.len() == 1;
        if !accounted {
            notes.push(format!(
                "accounting: generated {n}, delivered {delivered}, lost {lost}, {} summaries",
                rep.summaries.len()
            ));
        }
        let span = rep.last_event_wall_ns.saturating_sub(storm.start_wall_ns) as f64 / 1e9;
        Ok(Run {
            name: name.into(),
            target_rate: rate,
            generated: n,
            generated_per_s: n as f64 / (storm.elapsed_ns as f64 / 1e9),
            delivered,
            other_events: rep.events - rep.storm_events,
            lost,
            accounted,
            end_to_end_per_s: if span > 0.0 {
                delivered as f64 / span
            } else {
                0.0
            },
            cpu_ms_per_1k: Cost {
                trace: per_k(after.cpu_ns.saturating_sub(before.cpu_ns)),
                client: Some(per_k(rep.cpu_ns)),
                storm: per_k(storm.cpu_ns),
                ..Default::default()
            },
            peak_rss_mb: Memory {
                trace: after.peak_kb as f64 / 1024.0,
                client: Some(rep.peak_rss_kb as f64 / 1024.0),
                ..Default::default()
            },
            latency_ms: rep.latency_ms,
            machine_busy_pct: busy,
            other_load_pct: other,
            notes,
            ..Default::default()
        })
    }

    /// The trace child's own ceiling: `podscope trace open -o json` on the
    /// same pod with stdout on /dev/null, no agent, hub or client.
    fn trace_alone(&self, name: &str, rate: u64, n: u64) -> Result<Run> {
        let mut p = Proc {
            child: Command::new(&self.podscope)
                .args([
                    "trace", "open", "-n", &self.ns, "--pod", &self.pod, "-o", "json",
                ])
                .args(["--runtime-endpoint", &format!("unix://{}", self.socket)])
                .stdout(File::create("/dev/null")?)
                .stderr(Stdio::piped())
                .spawn()?,
            what: "the trace",
        };
        let (att_tx, att_rx) = mpsc::channel();
        let (sum_tx, sum_rx) = mpsc::channel();
        let err = BufReader::new(p.child.stderr.take().expect("piped"));
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                if l.contains("probes attached") {
                    let _ = att_tx.send(());
                }
                // "podscope: traced for 3.2s: 123 events, 4 lost"
                if let Some(rest) = l.split("events, ").nth(1) {
                    let events = l
                        .split(": ")
                        .nth(2)
                        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
                    let lost = rest
                        .split_whitespace()
                        .next()
                        .and_then(|s| s.parse::<u64>().ok());
                    let _ = sum_tx.send((events, lost));
                }
            }
        });
        att_rx
            .recv_timeout(Duration::from_secs(30))
            .context("podscope trace did not attach within 30 s")?;
        let before = usage(p.pid());
        let window = Window::start(&[p.pid()]);
        let storm = self.storm(rate, n, false)?;
        let (busy, other) = window.end(storm.cpu_ns);
        // Writing to /dev/null keeps up or loses in the ring: 0.5 s drains a poll or ten.
        std::thread::sleep(Duration::from_millis(500));
        let after = usage(p.pid());
        p.interrupt();
        let (events, lost) = sum_rx
            .recv_timeout(Duration::from_secs(10))
            .context("podscope trace printed no summary")?;
        p.wait_for(Duration::from_secs(5));
        let (events, lost) = (events.unwrap_or(0), lost.unwrap_or(0));
        let per_k = |ns: u64| ns as f64 / 1e6 / (events.max(1) as f64 / 1e3);
        let mut notes = vec!["podscope trace -o json > /dev/null, no agent/hub/client".to_string()];
        // Its output is not read, so events of other new pods that it
        // decoded and then dropped cannot be told apart: at least n.
        let accounted = events + lost >= n;
        if events + lost != n {
            notes.push(format!(
                "generated {n}, decoded {events}, lost {lost}: the difference is other new pods' events, decoded and dropped"
            ));
        }
        Ok(Run {
            name: name.into(),
            target_rate: rate,
            generated: n,
            generated_per_s: n as f64 / (storm.elapsed_ns as f64 / 1e9),
            delivered: events,
            lost,
            accounted,
            end_to_end_per_s: f64::NAN,
            cpu_ms_per_1k: Cost {
                trace: per_k(after.cpu_ns.saturating_sub(before.cpu_ns)),
                storm: per_k(storm.cpu_ns),
                ..Default::default()
            },
            peak_rss_mb: Memory {
                trace: after.peak_kb as f64 / 1024.0,
                ..Default::default()
            },
            machine_busy_pct: busy,
            other_load_pct: other,
            notes,
            ..Default::default()
        })
    }
}

/// Everything the cluster benchmark found.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub load_before: String,
    /// The storm untraced, before and after the runs: CPU µs per open+close.
    /// The guest cannot see contention on the host (no steal time is
    /// reported), so a machine that got slower shows here and in every
    /// process's CPU per event.
    pub untraced_storm_us_per_op: [f64; 2],
    pub runs: Vec<Run>,
    /// Highest end-to-end rate of a run with no loss and no gap.
    pub max_lossless_per_s: f64,
    /// The hub served TLS (--cluster-tls).
    #[serde(default)]
    pub tls: bool,
}

pub fn run(bed: &Bed, me: &Path, podscope: &Path, settings: &Settings) -> Result<Figures> {
    let load_before = std::fs::read_to_string("/proc/loadavg")?
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let pid = std::process::id();
    let logs = std::env::temp_dir().join(format!("podscope-bench-cluster-{pid}"));
    std::fs::create_dir_all(&logs)?;
    let token = format!("bench-{pid}-{}", wall_ns() % 1_000_000_007);
    let token_file = logs.join("token");
    std::fs::write(&token_file, format!("{token}\n"))?;
    let ns = format!("bench-cluster-{pid}");
    let pod = "storm".to_string();
    let container_pid = bed
        .run_pod(&pod, &ns, "exec sleep 3600")?
        .context("the benchmark pod's container is not running")?;
    let ctx = Ctx {
        me: me.to_path_buf(),
        podscope: podscope.to_path_buf(),
        socket: bed.socket().to_string(),
        ns: ns.clone(),
        pod: pod.clone(),
        container_pid,
        settings,
        logs: logs.clone(),
        token,
        token_file,
        tls: if settings.tls {
            Some(make_certs(&logs)?)
        } else {
            None
        },
    };
    let calibrate = || -> Result<f64> {
        let r = ctx.storm(0, 1_000_000, false)?;
        Ok(r.cpu_ns as f64 / r.operations as f64 / 1e3)
    };
    let result = (|| -> Result<([f64; 2], Vec<Run>)> {
        let first = calibrate()?;
        let runs = runs(&ctx)?;
        Ok(([first, calibrate()?], runs))
    })();
    bed.rm_pod(&pod, &ns);
    let (untraced_storm_us_per_op, runs) = result?;
    let max_lossless_per_s = runs
        .iter()
        .filter(|r| {
            // Through agent and hub only: the trace-alone runs are not end to end.
            r.cpu_ms_per_1k.agent.is_some()
                && r.accounted
                && r.lost == 0
                && r.gap_agent + r.gap_hub == 0
                && r.end_to_end_per_s > 0.0
        })
        .map(|r| r.end_to_end_per_s)
        .fold(0.0, f64::max);
    let _ = std::fs::remove_dir_all(&logs);
    Ok(Figures {
        load_before,
        untraced_storm_us_per_op,
        runs,
        max_lossless_per_s,
        tls: settings.tls,
    })
}

/// Other work taking more than this share of the machine while the storm
/// runs makes a run "disturbed".
const DISTURBED_PCT: f64 = 10.0;

fn runs(ctx: &Ctx) -> Result<Vec<Run>> {
    let quick = ctx.settings.quick;
    let secs: u64 = if quick { 3 } else { 10 };
    let step_secs: u64 = if quick { 2 } else { 5 };
    let mut out = Vec::new();
    // On a shared machine a run that other work disturbed is repeated, and
    // the least disturbed attempt is kept (the others are printed too).
    let mut go = |what: &str, f: &dyn Fn() -> Result<Run>| -> Result<()> {
        eprintln!("cluster: {what} ...");
        let mut best: Option<Run> = None;
        for attempt in 0..=ctx.settings.retries {
            let mut r = f()?;
            r.attempt = attempt + 1;
            print_run(&r);
            let other = r.other_load_pct;
            if best
                .as_ref()
                .is_none_or(|b| r.other_load_pct < b.other_load_pct)
            {
                best = Some(r);
            }
            if other <= DISTURBED_PCT {
                break;
            }
            eprintln!(
                "    other work took {other:.0}% of the machine during the storm; {}",
                if attempt < ctx.settings.retries {
                    "running it again"
                } else {
                    "keeping the least disturbed attempt"
                }
            );
        }
        out.extend(best);
        Ok(())
    };
    go("clock check at 200 events/s", &|| {
        ctx.run("clock", 200, 400, true)
    })?;
    go(&format!("10,000 events/s for {secs} s"), &|| {
        ctx.run("latency", 10_000, 10_000 * secs, false)
    })?;
    for &rate in &ctx.settings.rates {
        let n = match (rate, quick) {
            (0, true) => 300_000,
            (0, false) => 1_000_000,
            _ => rate * step_secs,
        };
        let name = if rate == 0 {
            "max".to_string()
        } else {
            format!("step {}k", rate / 1000)
        };
        go(&format!("{name}: {n} events"), &|| {
            ctx.run(&name, rate, n, false)
        })?;
    }
    go(
        "trace alone piped to the client at 10,000 events/s",
        &|| ctx.trace_pipe("trace to client 10k", 10_000, 10_000 * secs),
    )?;
    for (rate, name) in [(200_000, "trace only 200k"), (0, "trace only max")] {
        let n = if quick { 300_000 } else { 1_000_000 };
        go(
            &format!("{name} (podscope trace -o json > /dev/null)"),
            &|| ctx.trace_alone(name, rate, n),
        )?;
    }
    Ok(out)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

/// One line per run as it finishes, so a long benchmark shows progress.
fn print_run(r: &Run) {
    eprintln!(
        "  {} (attempt {}): {} generated at {:.0}/s, {} delivered, {} lost, {} agent gaps, {} hub gaps, {:.0}/s end to end; other work {:.0}% of the machine{}",
        r.name,
        r.attempt,
        r.generated,
        r.generated_per_s,
        r.delivered,
        r.lost,
        r.gap_agent,
        r.gap_hub,
        r.end_to_end_per_s,
        r.other_load_pct,
        if r.accounted { "" } else { " (NOT ACCOUNTED)" }
    );
    for n in &r.notes {
        eprintln!("    {n}");
    }
}

pub fn print(f: &Figures) {
    println!(
        "\ncluster: agent -> hub -> client on loopback{}, open storm in one pod (load average before: {})",
        if f.tls { " over TLS" } else { "" },
        f.load_before
    );
    println!(
        "{:<19} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7} {:>7} {:>4} {:>8} | {:>7} {:>7} {:>7}",
        "RUN",
        "TARGET/s",
        "GEN/s",
        "GENERATED",
        "DELIVERED",
        "LOST",
        "GAP_AG",
        "GAP_HUB",
        "OK",
        "E2E/s",
        "p50_ms",
        "p99_ms",
        "max_ms"
    );
    for r in &f.runs {
        let lat = r.latency_ms.unwrap_or_default();
        let has = r.latency_ms.is_some();
        println!(
            "{:<19} {:>8} {:>8.0} {:>9} {:>9} {:>8} {:>7} {:>7} {:>4} {:>8} | {:>7} {:>7} {:>7}",
            r.name,
            if r.target_rate == 0 {
                "max".into()
            } else {
                r.target_rate.to_string()
            },
            r.generated_per_s,
            r.generated,
            r.delivered,
            r.lost,
            r.gap_agent,
            r.gap_hub,
            if r.accounted { "yes" } else { "NO" },
            if r.end_to_end_per_s.is_finite() {
                format!("{:.0}", r.end_to_end_per_s)
            } else {
                "-".into()
            },
            opt(has.then_some(lat.p50), 1),
            opt(has.then_some(lat.p99), 1),
            opt(has.then_some(lat.max), 1),
        );
    }
    println!(
        "\n{:<19} {:>7} {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} | {:>5} {:>5}",
        "CPU ms/1k ev",
        "HUB",
        "AGENT",
        "TRACE",
        "CLIENT",
        "STORM",
        "RSS hub",
        "agent",
        "trace",
        "client",
        "BUSY",
        "OTHER"
    );
    for r in &f.runs {
        let c = &r.cpu_ms_per_1k;
        let m = &r.peak_rss_mb;
        println!(
            "{:<19} {:>7} {:>7} {:>7.2} {:>7} {:>7.2} | {:>7} {:>7} {:>7.1} {:>7} | {:>4.0}% {:>4.0}%",
            r.name,
            opt(c.hub, 2),
            opt(c.agent, 2),
            c.trace,
            opt(c.client, 2),
            c.storm,
            opt(m.hub, 1),
            opt(m.agent, 1),
            m.trace,
            opt(m.client, 1),
            r.machine_busy_pct,
            r.other_load_pct,
        );
    }
    println!(
        "\n{:<19} {:>22} {:>22}",
        "", "AGENT CPU ms/1k:", "CONTEXT SWITCHES/1k:"
    );
    println!(
        "{:<19} {:>11} {:>10} {:>7} {:>7} {:>7}",
        "", "readers", "tokio", "hub", "agent", "trace"
    );
    for r in f.runs.iter().filter(|r| r.cpu_ms_per_1k.agent.is_some()) {
        let a = r.agent_split_ms_per_1k;
        let w = r.switches_per_1k;
        println!(
            "{:<19} {:>11.2} {:>10.2} {:>7.0} {:>7.0} {:>7.0}",
            r.name, a.session_threads, a.runtime_threads, w.hub, w.agent, w.trace
        );
    }
    println!("readers: the agent threads the session started (the trace's stdout and stderr); tokio: its runtime (batching, gRPC)");
    println!(
        "\nuntraced storm (machine speed check): {:.2} us CPU per open+close before the runs, {:.2} us after",
        f.untraced_storm_us_per_op[0], f.untraced_storm_us_per_op[1]
    );
    if let Some(c) = f.runs.iter().find_map(|r| r.clock_check_us) {
        println!(
            "\nclock check ({} opens of stamped paths): event timestamp - the storm's CLOCK_REALTIME just before open(): min {:.1} us, p50 {:.1} us, max {:.1} us",
            c.n, c.min, c.p50, c.max
        );
    }
    println!(
        "highest end-to-end rate with no loss and no gap: {:.0} events/s (target >= 200,000)",
        f.max_lossless_per_s
    );
    if let Some(r) = f.runs.iter().find(|r| r.name == "latency") {
        if let Some(l) = r.latency_ms {
            println!(
                "kernel -> client latency at {:.0} events/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 100 ms)",
                r.generated_per_s, l.p50, l.p99, l.max
            );
        }
    }
    if let Some(l) = f
        .runs
        .iter()
        .find(|r| r.name.starts_with("trace to client"))
        .and_then(|r| r.latency_ms)
    {
        println!(
            "  of which the trace alone (its stdout piped to the client): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.p50, l.p99, l.max
        );
    }
    println!("GEN/s: the storm's own rate; E2E/s: storm events delivered / (last event at the client - storm start); LOST: kernel ring (trace summary); GAP_AG/GAP_HUB: agent queue / hub client queue; OK: delivered + lost + gaps = generated and the trace's counts agree");
    println!("CPU per 1,000 delivered events: hub, agent, its trace child, the streaming client, the storm itself; RSS: peak (VmHWM) MB; BUSY: all cores' busy time while the storm ran (/proc/stat, every process); OTHER: the part of it not taken by the benchmark's processes (other work on the machine)");
}

// --- Concurrent sessions on one agent (issue 9's "8 concurrent sessions") ---

/// One agent serving K sessions at once, each selecting a pod of its own
/// with its own open storm.
#[derive(Debug, Clone, Serialize)]
pub struct SessionsRun {
    pub sessions: usize,
    pub rate_each: u64,
    pub generated: u64,
    /// The storms' opens that reached their session's client.
    pub delivered: u64,
    /// Events of one session's pod delivered to another session.
    pub crossed: u64,
    /// Kernel losses: the largest session's share (they share the ring).
    pub lost: u64,
    pub gaps: u64,
    pub agent_cpu_ms_per_1k: f64,
    pub agent_peak_rss_mb: f64,
    /// BPF programs the agent holds while the sessions run (read from its
    /// file descriptors), and how many distinct names they have.
    pub programs: usize,
    pub distinct_programs: usize,
    pub other_load_pct: f64,
}

/// The names of the BPF programs a process holds (its /proc fdinfo, named
/// by bpftool).
fn programs_of(pid: u32) -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for l in std::fs::read_to_string(fd.path())
            .unwrap_or_default()
            .lines()
        {
            if let Some(v) = l.strip_prefix("prog_id:") {
                ids.extend(v.trim().parse::<u64>().ok());
            }
        }
    }
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output();
    let all: Vec<Value> = out
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default();
    all.iter()
        .filter(|p| p["id"].as_u64().is_some_and(|i| ids.contains(&i)))
        .map(|p| p["name"].as_str().unwrap_or("").to_string())
        .collect()
}

impl Ctx<'_> {
    fn sessions_run(
        &self,
        pods: &[(String, u32)],
        rate_each: u64,
        n_each: u64,
    ) -> Result<SessionsRun> {
        let c = self.start_cluster(&format!("sessions-{}", pods.len()))?;
        let tok = self.token.as_str();
        let mut clients = Vec::new();
        for (pod, _) in pods {
            let (st, s) = api(
                &c.at,
                tok,
                "POST",
                "/v1/sessions",
                Some(json!({"namespace": self.ns, "pod": pod, "probes": ["open"], "start": false})),
            )?;
            if st != 201 {
                bail!("creating the session for {pod}: HTTP {st}: {s}");
            }
            let id = s["id"].as_str().context("no session id")?.to_string();
            let mut client = Proc {
                child: Command::new(&self.me)
                    .args(["cluster-client", &c.at.base, tok, &id])
                    .args(self.tls.iter().map(|t| &t.ca))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()?,
                what: "a client",
            };
            let out = BufReader::new(client.child.stdout.take().expect("piped"));
            let (ready_tx, ready_rx) = mpsc::channel();
            let (report_tx, report_rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in out.lines().map_while(Result::ok) {
                    if l == "ready" {
                        let _ = ready_tx.send(());
                    } else if let Some(r) = l.strip_prefix("report ") {
                        let _ = report_tx.send(serde_json::from_str::<ClientReport>(r));
                    }
                }
            });
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .context("a client did not open its stream")?;
            clients.push((id, client, report_rx, pod.clone()));
        }
        for (id, ..) in &clients {
            let path = format!("/v1/sessions/{id}");
            let (st, s) = api(&c.at, tok, "PUT", &path, Some(json!({"state": "running"})))?;
            if st != 200 {
                bail!("starting session {id}: HTTP {st}: {s}");
            }
        }
        for (id, ..) in &clients {
            let path = format!("/v1/sessions/{id}");
            let t = Instant::now();
            while api(&c.at, tok, "GET", &path, None)?.1["nodes"][NODE]["state"] != "running" {
                if t.elapsed() > Duration::from_secs(30) {
                    bail!("session {id} did not run within 30 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let progs = programs_of(c.agent.pid());
        let distinct = progs
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let before = usage(c.agent.pid());
        let window = Window::start(&[c.hub.pid(), c.agent.pid()]);
        let storms: Vec<_> = pods
            .iter()
            .map(|(_, pid)| {
                let (me, pid) = (self.me.clone(), *pid);
                std::thread::spawn(move || {
                    Command::new(&me)
                        .args(["cluster-storm", &pid.to_string()])
                        .args([&rate_each.to_string(), &n_each.to_string(), "file"])
                        .stderr(Stdio::inherit())
                        .output()
                })
            })
            .collect();
        let mut storm_cpu = 0;
        for s in storms {
            let out = s
                .join()
                .map_err(|_| anyhow::anyhow!("a storm thread panicked"))??;
            if !out.status.success() {
                bail!("a storm failed");
            }
            let r: StormReport = serde_json::from_slice(&out.stdout)?;
            storm_cpu += r.cpu_ns;
        }
        let (_, other) = window.end(storm_cpu);
        // Let the last events drain through agent and hub.
        std::thread::sleep(Duration::from_secs(2));
        let after = usage(c.agent.pid());
        let mut run = SessionsRun {
            sessions: pods.len(),
            rate_each,
            generated: n_each * pods.len() as u64,
            delivered: 0,
            crossed: 0,
            lost: 0,
            gaps: 0,
            agent_cpu_ms_per_1k: 0.0,
            agent_peak_rss_mb: after.peak_kb as f64 / 1024.0,
            programs: progs.len(),
            distinct_programs: distinct,
            other_load_pct: other,
        };
        for (id, mut client, report_rx, _pod) in clients {
            let path = format!("/v1/sessions/{id}");
            api(&c.at, tok, "PUT", &path, Some(json!({"state": "stopped"})))?;
            let rep = report_rx
                .recv_timeout(Duration::from_secs(60))
                .context("a client did not report within 60 s of the stop")??;
            client.wait_for(Duration::from_secs(5));
            run.delivered += rep.storm_events;
            // The client counts opens of any storm's file as the storm's: a
            // session that got another pod's opens would show more than its
            // own storm made.
            run.crossed += rep.storm_events.saturating_sub(n_each);
            run.gaps += rep.gap_agent + rep.gap_hub;
            // The sessions share the kernel ring: each summary's `lost` is
            // the probe's loss while that session ran, so the largest share
            // (not the sum) is the node's loss.
            run.lost = run.lost.max(
                rep.summaries
                    .iter()
                    .map(|s| s["lost"].as_u64().unwrap_or(0))
                    .sum::<u64>(),
            );
        }
        run.agent_cpu_ms_per_1k = after.cpu_ns.saturating_sub(before.cpu_ns) as f64
            / 1e6
            / (run.delivered.max(1) as f64 / 1e3);
        drop(c);
        Ok(run)
    }
}

/// `--cluster-sessions K`: one session alone, then K at once, each with its
/// own pod and storm at `rate_each` events/s.
pub fn sessions(
    bed: &Bed,
    me: &Path,
    podscope: &Path,
    settings: &Settings,
    k: usize,
    rate_each: u64,
) -> Result<Vec<SessionsRun>> {
    let pid = std::process::id();
    let logs = std::env::temp_dir().join(format!("podscope-bench-sessions-{pid}"));
    std::fs::create_dir_all(&logs)?;
    let token = format!("bench-{pid}-{}", wall_ns() % 1_000_000_007);
    let token_file = logs.join("token");
    std::fs::write(&token_file, format!("{token}\n"))?;
    let ns = format!("bench-sessions-{pid}");
    let mut pods = Vec::new();
    for i in 0..k {
        let name = format!("storm-{i}");
        let cpid = bed
            .run_pod(&name, &ns, "exec sleep 3600")?
            .with_context(|| format!("pod {name}'s container is not running"))?;
        pods.push((name, cpid));
    }
    let ctx = Ctx {
        me: me.to_path_buf(),
        podscope: podscope.to_path_buf(),
        socket: bed.socket().to_string(),
        ns: ns.clone(),
        pod: pods[0].0.clone(),
        container_pid: pods[0].1,
        settings,
        logs: logs.clone(),
        token,
        token_file,
        tls: None,
    };
    let secs = if settings.quick { 3 } else { 10 };
    let result = (|| -> Result<Vec<SessionsRun>> {
        let mut out = Vec::new();
        for count in [1, k] {
            eprintln!("cluster: {count} session(s) at once, {rate_each} events/s each ...");
            let r = ctx.sessions_run(&pods[..count], rate_each, rate_each * secs)?;
            eprintln!(
                "  {} sessions: {} generated, {} delivered, {} crossed, {} lost, {} gaps, agent {:.2} ms/1k, RSS {:.1} MB, {} programs ({} distinct); other work {:.0}%",
                r.sessions, r.generated, r.delivered, r.crossed, r.lost, r.gaps,
                r.agent_cpu_ms_per_1k, r.agent_peak_rss_mb, r.programs, r.distinct_programs,
                r.other_load_pct
            );
            out.push(r);
        }
        Ok(out)
    })();
    for (name, _) in &pods {
        bed.rm_pod(name, &ns);
    }
    let _ = std::fs::remove_dir_all(&logs);
    result
}

pub fn print_sessions(runs: &[SessionsRun]) {
    println!("\nconcurrent sessions on one agent: each selects its own pod, which runs its own open storm");
    println!(
        "{:>8} {:>8} {:>9} {:>9} {:>7} {:>6} {:>6} {:>10} {:>7} {:>6} {:>8}",
        "SESSIONS",
        "RATE/ea",
        "GENERATED",
        "DELIVERED",
        "CROSSED",
        "LOST",
        "GAPS",
        "AGENT/1kEV",
        "RSS_MB",
        "PROGS",
        "DISTINCT"
    );
    for r in runs {
        println!(
            "{:>8} {:>8} {:>9} {:>9} {:>7} {:>6} {:>6} {:>10.2} {:>7.1} {:>6} {:>8}",
            r.sessions,
            r.rate_each,
            r.generated,
            r.delivered,
            r.crossed,
            r.lost,
            r.gaps,
            r.agent_cpu_ms_per_1k,
            r.agent_peak_rss_mb,
            r.programs,
            r.distinct_programs
        );
    }
    if let [one, many] = runs {
        println!(
            "agent CPU per delivered event, {} sessions vs 1: {:.2}x (target <= 1.3x); programs {} vs {} (one copy: equal); RSS {:.1} MB (target <= 40 MB)",
            many.sessions,
            many.agent_cpu_ms_per_1k / one.agent_cpu_ms_per_1k.max(1e-9),
            many.programs,
            one.programs,
            many.agent_peak_rss_mb
        );
    }
}
