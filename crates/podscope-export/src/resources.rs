//! Container resource usage read from cgroup files, and pod network counters
//! read from the pod's network namespace, at scrape time.
//!
//! Which files: per controller, cgroup v2 when the container's v2 cgroup has
//! that controller (pure v2 nodes), else the v1 hierarchy of that controller
//! (hybrid and v1 nodes). On a hybrid node the v2 cgroup still has the core
//! `cpu.stat` usage, which is the last resort for CPU. The files to read are
//! worked out when the pod list changes, so a scrape only reads files.
//!
//! Network: `/proc/<pid>/net/dev` shows the network namespace of `<pid>`, so
//! reading it for the pod's sandbox (pause) process gives the pod's interfaces
//! without joining the namespace. Pods on the host network are skipped: their
//! counters would be the node's.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use podscope_runtime::cgroup::{self, CgroupMount};
use podscope_runtime::{Container, Pod};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// v1 `memory.limit_in_bytes` at or above this means "no limit".
const V1_UNLIMITED: u64 = 1 << 62;

/// Where one controller's files of one container live.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Src {
    V1(PathBuf),
    V2(PathBuf),
}

/// Where CPU usage comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CpuSrc {
    /// A v2 `cpu.stat`: the cgroup core keeps exact usage, user and system
    /// for every v2 cgroup, with or without the cpu controller, so this is
    /// preferred even on hybrid nodes (one read instead of two).
    V2Stat(PathBuf),
    /// A v1 cpuacct directory (nodes without cgroup v2).
    V1Acct(PathBuf),
}

/// Where v1 block I/O counts are: the throttle policy's files, and BFQ's
/// when BFQ is a disk's scheduler (the kernel may fill only one of them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlkioFiles {
    bytes: PathBuf,
    ops: PathBuf,
    bfq: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IoSrc {
    V2Stat(PathBuf),
    V1(BlkioFiles),
}

/// One container and the files to read for it. Paths, and the limits (which
/// change rarely), are worked out whenever the pod list is refreshed.
#[derive(Debug, Clone)]
struct ContainerTarget {
    namespace: String,
    pod: String,
    container: String,
    cpu: Option<CpuSrc>,
    /// A `cpu.stat` with CFS counts, only when the container has a CPU limit.
    throttle: Option<Src>,
    memory: Option<Src>,
    memory_limit: Option<u64>,
    io: Option<IoSrc>,
}

/// One pod's network namespace, through its sandbox process.
#[derive(Debug, Clone)]
struct NetTarget {
    namespace: String,
    pod: String,
    pid: u32,
}

/// What a scrape reads.
#[derive(Debug, Default)]
struct Targets {
    containers: Vec<ContainerTarget>,
    pods: Vec<NetTarget>,
}

/// Where the exporter finds cgroups and processes: [`Host::detect`] on a
/// node; tests and benchmarks point it at fake trees.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// cgroup mounts (v1 and v2), as /proc/self/mountinfo lists them.
    pub cgroup_mounts: Vec<CgroupMount>,
    /// The proc file system (`/proc`).
    pub proc: PathBuf,
}

impl Host {
    /// This machine's cgroup mounts and /proc.
    pub fn detect() -> Host {
        Host {
            cgroup_mounts: cgroup::cgroup_mounts().unwrap_or_default(),
            proc: PathBuf::from("/proc"),
        }
    }
}

/// The cgroup mounts of this node.
#[derive(Debug, Default)]
struct Layout {
    v2: Option<CgroupMount>,
    v1: Vec<CgroupMount>,
    proc: PathBuf,
}

impl Layout {
    fn new(host: Host) -> Layout {
        Layout {
            v2: cgroup::pick_cgroup2(&host.cgroup_mounts),
            v1: host.cgroup_mounts.into_iter().filter(|m| !m.v2).collect(),
            proc: host.proc,
        }
    }

    fn v1_mount(&self, controller: &str) -> Option<&CgroupMount> {
        self.v1
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
    }

    /// The files to read for a container, or None if its cgroup is gone.
    fn resolve(&self, pod: &Pod, c: &Container) -> Option<ContainerTarget> {
        let v2_dir = match (&self.v2, &c.cgroup_path) {
            (Some(m), Some(p)) => Some(m.dir_of(p)).filter(|d| d.is_dir()),
            _ => None,
        };
        let v2_controllers: HashSet<String> = v2_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        // v1 paths can differ from the v2 one (other drivers): ask /proc when the container runs.
        let proc = c.pid.and_then(|pid| {
            std::fs::read_to_string(self.proc.join(format!("{pid}/cgroup")))
                .ok()
                .map(|s| cgroup::parse_proc_cgroup(&s))
        });
        let v1_dir = |controller: &str| -> Option<PathBuf> {
            let mount = self.v1_mount(controller)?;
            let path = proc
                .as_ref()
                .and_then(|pc| pc.v1_path(controller))
                .or(c.cgroup_path.as_deref())?;
            Some(mount.dir_of(path)).filter(|d| d.is_dir())
        };
        let v2_with = |controller: &str| {
            v2_dir
                .clone()
                .filter(|_| v2_controllers.contains(controller))
        };
        let first_line = |f: PathBuf| {
            std::fs::read_to_string(f)
                .ok()
                .map(|s| s.lines().next().unwrap_or("").trim().to_owned())
        };
        let cpu = v2_dir
            .as_ref()
            .map(|d| d.join("cpu.stat"))
            .filter(|f| f.is_file())
            .map(CpuSrc::V2Stat)
            .or_else(|| v1_dir("cpuacct").map(CpuSrc::V1Acct));
        // Throttling counts mean something only under a limit (cpu.max /
        // cfs_quota_us); without one they would be zeros in every series.
        let throttle = match v2_with("cpu") {
            Some(d) => first_line(d.join("cpu.max"))
                .filter(|l| !l.starts_with("max"))
                .map(|_| Src::V2(d.join("cpu.stat"))),
            None => v1_dir("cpu").and_then(|d| {
                first_line(d.join("cpu.cfs_quota_us"))
                    .filter(|q| q.parse::<i64>().is_ok_and(|q| q > 0))
                    .map(|_| Src::V1(d.join("cpu.stat")))
            }),
        };
        let (memory, memory_limit) = match v2_with("memory") {
            Some(d) => {
                let limit = first_line(d.join("memory.max")).and_then(|l| l.parse().ok());
                (Some(Src::V2(d)), limit)
            }
            None => match v1_dir("memory") {
                Some(d) => {
                    let limit = first_line(d.join("memory.limit_in_bytes"))
                        .and_then(|l| l.parse::<u64>().ok())
                        .filter(|l| *l < V1_UNLIMITED);
                    (Some(Src::V1(d)), limit)
                }
                None => (None, None),
            },
        };
        let io = match v2_with("io") {
            Some(d) => Some(IoSrc::V2Stat(d.join("io.stat"))),
            None => v1_dir("blkio").map(|d| {
                let pick = |names: [&str; 2]| {
                    names
                        .iter()
                        .map(|n| d.join(n))
                        .find(|p| p.is_file())
                        .unwrap_or_else(|| d.join(names[1]))
                };
                let bfq = d.join("blkio.bfq.io_service_bytes").is_file().then(|| {
                    (
                        pick([
                            "blkio.bfq.io_service_bytes_recursive",
                            "blkio.bfq.io_service_bytes",
                        ]),
                        pick(["blkio.bfq.io_serviced_recursive", "blkio.bfq.io_serviced"]),
                    )
                });
                IoSrc::V1(BlkioFiles {
                    bytes: pick([
                        "blkio.throttle.io_service_bytes_recursive",
                        "blkio.throttle.io_service_bytes",
                    ]),
                    ops: pick([
                        "blkio.throttle.io_serviced_recursive",
                        "blkio.throttle.io_serviced",
                    ]),
                    bfq,
                })
            }),
        };
        if cpu.is_none() && memory.is_none() && io.is_none() {
            return None;
        }
        Some(ContainerTarget {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: c.name.clone(),
            cpu,
            throttle,
            memory,
            memory_limit,
            io,
        })
    }
}

/// The resource collector: reads the targets' files on every scrape.
#[derive(Debug)]
pub(crate) struct Resources {
    node: String,
    layout: Layout,
    targets: RwLock<Arc<Targets>>,
    /// `major:minor` -> disk name.
    disk_names: Mutex<HashMap<String, String>>,
    /// Each container's files as last worked out, and when: a listing of
    /// the same pods again (every refresh) reuses them for a while.
    resolved: Mutex<HashMap<ResolveKey, (Instant, Option<ContainerTarget>)>>,
    /// For the views: each memory cgroup's inactive file pages, and when
    /// they were read (memory.stat is the dearest file to read: the kernel
    /// flushes the cgroup's statistics for it).
    inactive: Mutex<HashMap<PathBuf, (Instant, u64)>>,
}

/// How long the views reuse a container's inactive file pages (its working
/// set follows memory.current every time).
const INACTIVE_AGAIN: Duration = Duration::from_secs(5);

/// A container as listed: its pod and name, id, cgroup and process.
type ResolveKey = ([String; 4], Option<String>, Option<u32>);

/// How long a container's worked-out files (and limits) are reused.
const RESOLVE_AGAIN: Duration = Duration::from_secs(30);

impl Resources {
    pub(crate) fn new(node: String, host: Host) -> Resources {
        Resources {
            node,
            layout: Layout::new(host),
            targets: RwLock::new(Arc::new(Targets::default())),
            disk_names: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            inactive: Mutex::new(HashMap::new()),
        }
    }

    /// Works out the files to read for `pods`.
    pub(crate) fn update(&self, pods: &[Pod]) {
        let proc = &self.layout.proc;
        let own_netns = std::fs::read_link(proc.join("self/ns/net")).ok();
        let mut t = Targets::default();
        let now = Instant::now();
        let mut resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(resolved.len());
        for pod in pods {
            for c in &pod.containers {
                let key: ResolveKey = (
                    [
                        pod.namespace.clone(),
                        pod.name.clone(),
                        c.name.clone(),
                        c.id.clone(),
                    ],
                    c.cgroup_path.clone(),
                    c.pid,
                );
                let entry = match resolved.remove(&key) {
                    Some(e) if now.duration_since(e.0) < RESOLVE_AGAIN => e,
                    _ => (now, self.layout.resolve(pod, c)),
                };
                if let Some(target) = &entry.1 {
                    t.containers.push(target.clone());
                }
                next.insert(key, entry);
            }
            if let Some(pid) = pod.sandbox_pid {
                let ns = std::fs::read_link(proc.join(format!("{pid}/ns/net"))).ok();
                if ns.is_some() && ns != own_netns {
                    t.pods.push(NetTarget {
                        namespace: pod.namespace.clone(),
                        pod: pod.name.clone(),
                        pid,
                    });
                }
            }
        }
        *resolved = next;
        drop(resolved);
        *self.targets.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(t);
    }

    /// CPU seconds and memory working set of every target container now,
    /// as (namespace, pod, container, cpu, memory): the same files a scrape
    /// reads, for the views (`podscope top`).
    pub(crate) fn usage(&self) -> Vec<Usage> {
        let targets = self
            .targets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Only what the views show: 3 files per container, where a scrape
        // reads 5 (measured: the view's reads were most of `top`'s cost
        // over a trace's).
        let now = Instant::now();
        let mut kept = self.inactive.lock().unwrap_or_else(PoisonError::into_inner);
        let known: HashMap<PathBuf, (Instant, u64)> = std::mem::take(&mut *kept);
        let read = par_map(&targets.containers, |t| read_usage(t, &known, now));
        for (t, (_, _, inactive)) in targets.containers.iter().zip(&read) {
            if let (Some(Src::V1(d) | Src::V2(d)), Some(i)) = (&t.memory, inactive) {
                kept.insert(d.clone(), *i);
            }
        }
        drop(kept);
        targets
            .containers
            .iter()
            .zip(read)
            .map(|(t, (cpu, memory, _))| Usage {
                namespace: t.namespace.clone(),
                pod: t.pod.clone(),
                container: t.container.clone(),
                cpu_seconds: cpu,
                memory_bytes: memory,
            })
            .collect()
    }

    fn disk_name(&self, dev: &str) -> String {
        let mut names = self
            .disk_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        names
            .entry(dev.to_owned())
            .or_insert_with(|| {
                std::fs::read_link(format!("/sys/dev/block/{dev}"))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| dev.to_owned())
            })
            .clone()
    }
}

/// One container's resource usage at one moment ([`Resources::usage`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// CPU time used since the container started, seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory working set, bytes.
    pub memory_bytes: Option<u64>,
}

/// CPU and memory of pods' containers, read from their cgroups (the files a
/// scrape of the exporter reads), for views that are not Prometheus: the
/// agent's reports to the hub's web view.
#[derive(Debug)]
pub struct UsageReader(Resources);

impl UsageReader {
    /// A reader for this machine's cgroup layout.
    pub fn new(node: String) -> UsageReader {
        UsageReader(Resources::new(node, Host::detect()))
    }

    /// Works out the files to read for `pods`.
    pub fn update(&self, pods: &[Pod]) {
        self.0.update(pods)
    }

    /// Every container's usage now.
    pub fn read(&self) -> Vec<Usage> {
        self.0.usage()
    }
}

/// CPU time, in seconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Cpu {
    pub usage: f64,
    pub user: f64,
    pub system: f64,
}

/// CFS bandwidth control counts.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Throttle {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_seconds: f64,
}

/// Memory, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    pub usage: u64,
    pub working_set: u64,
    pub limit: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// Block I/O totals for one device.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Io {
    pub dev: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// Counters of one network interface.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct NetDev {
    pub interface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_drops: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_drops: u64,
}

#[derive(Debug, Default)]
struct ContainerStats {
    cpu: Option<Cpu>,
    throttle: Option<Throttle>,
    memory: Option<Memory>,
    io: Vec<Io>,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// `key value` lines (cpu.stat, memory.stat, memory.events, memory.oom_control).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// v1 `cpuacct.usage_all`: `cpu user system` then one line per CPU, in ns.
pub(crate) fn parse_cpuacct_usage_all(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines();
    if !lines.next()?.starts_with("cpu") {
        return None;
    }
    let (mut user, mut system) = (0u64, 0u64);
    for l in lines {
        let mut f = l.split_whitespace().skip(1);
        user += f.next()?.parse::<u64>().ok()?;
        system += f.next()?.parse::<u64>().ok()?;
    }
    Some((user, system))
}

/// v2 `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..`.
pub(crate) fn parse_io_stat(text: &str) -> Vec<Io> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let mut io = Io {
                dev: f.next()?.to_owned(),
                ..Io::default()
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => io.read_bytes = v,
                    "wbytes" => io.write_bytes = v,
                    "rios" => io.read_ops = v,
                    "wios" => io.write_ops = v,
                    _ => {}
                }
            }
            Some(io)
        })
        .collect()
}

/// v1 `blkio.throttle.io_service_bytes` and `io_serviced`: `MAJ:MIN Read N` lines.
pub(crate) fn parse_blkio(bytes: &str, ops: &str) -> Vec<Io> {
    let mut out: Vec<Io> = Vec::new();
    let mut add = |text: &str, is_bytes: bool| {
        for l in text.lines() {
            let mut f = l.split_whitespace();
            let (Some(dev), Some(op), Some(v)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            let i = match out.iter().position(|x| x.dev == dev) {
                Some(i) => i,
                None => {
                    out.push(Io {
                        dev: dev.to_owned(),
                        ..Io::default()
                    });
                    out.len() - 1
                }
            };
            let io = &mut out[i];
            match (op, is_bytes) {
                ("Read", true) => io.read_bytes = v,
                ("Write", true) => io.write_bytes = v,
                ("Read", false) => io.read_ops = v,
                ("Write", false) => io.write_ops = v,
                _ => {}
            }
        }
    };
    add(bytes, true);
    add(ops, false);
    out
}

/// `/proc/<pid>/net/dev`.
pub(crate) fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            if v.len() < 16 {
                return None;
            }
            Some(NetDev {
                interface: name.trim().to_owned(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_drops: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_drops: v[11],
            })
        })
        .collect()
}

fn parse_v2_cpu(s: &str) -> Option<Cpu> {
    Some(Cpu {
        usage: keyed(s, "usage_usec")? as f64 / 1e6,
        user: keyed(s, "user_usec").unwrap_or(0) as f64 / 1e6,
        system: keyed(s, "system_usec").unwrap_or(0) as f64 / 1e6,
    })
}

fn read_v1_cpu(d: &Path) -> Option<Cpu> {
    let usage: u64 = read(d, "cpuacct.usage")?.trim().parse().ok()?;
    let (user, system) = read(d, "cpuacct.usage_all")
        .and_then(|s| parse_cpuacct_usage_all(&s))
        .unwrap_or((0, 0));
    // The user/system split is sampled at timer ticks while the total is
    // exact: split the exact total in the sampled proportion, so user +
    // system = usage as on cgroup v2.
    let split = user + system;
    let user_share = if split == 0 {
        0.0
    } else {
        user as f64 / split as f64
    };
    let usage = usage as f64 / 1e9;
    Some(Cpu {
        usage,
        user: usage * user_share,
        system: usage * (1.0 - user_share),
    })
}

fn parse_throttle(s: &str, v2: bool) -> Option<Throttle> {
    let throttled_seconds = if v2 {
        keyed(s, "throttled_usec")? as f64 / 1e6
    } else {
        keyed(s, "throttled_time")? as f64 / 1e9
    };
    Some(Throttle {
        periods: keyed(s, "nr_periods")?,
        throttled_periods: keyed(s, "nr_throttled")?,
        throttled_seconds,
    })
}

/// Memory in use (memory.current, or v1's usage_in_bytes).
fn memory_current(src: &Src) -> Option<u64> {
    match src {
        Src::V2(d) => read(d, "memory.current"),
        Src::V1(d) => read(d, "memory.usage_in_bytes"),
    }?
    .trim()
    .parse()
    .ok()
}

/// Memory usage and working set (usage less inactive file pages).
fn memory_usage(src: &Src) -> Option<(u64, u64)> {
    let (d, inactive_key) = match src {
        Src::V2(d) => (d, "inactive_file"),
        Src::V1(d) => (d, "total_inactive_file"),
    };
    let usage = memory_current(src)?;
    let inactive = read(d, "memory.stat")
        .and_then(|s| keyed(&s, inactive_key))
        .unwrap_or(0);
    Some((usage, usage.saturating_sub(inactive)))
}

fn read_memory(src: &Src, limit: Option<u64>) -> Option<Memory> {
    let (usage, working_set) = memory_usage(src)?;
    let oom_kills = match src {
        Src::V2(d) => read(d, "memory.events"),
        Src::V1(d) => read(d, "memory.oom_control"),
    }
    .and_then(|s| keyed(&s, "oom_kill"));
    Some(Memory {
        usage,
        working_set,
        limit,
        oom_kills,
    })
}

fn read_io(src: &IoSrc) -> Vec<Io> {
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    match src {
        IoSrc::V2Stat(f) => parse_io_stat(&text(f)),
        IoSrc::V1(f) => {
            // Bytes first: with no device listed there is nothing to count ops for.
            let bytes = text(&f.bytes);
            if bytes.lines().any(|l| l.contains(':')) {
                return parse_blkio(&bytes, &text(&f.ops));
            }
            match &f.bfq {
                Some((b, o)) => {
                    let bytes = text(b);
                    if bytes.lines().any(|l| l.contains(':')) {
                        parse_blkio(&bytes, &text(o))
                    } else {
                        Vec::new()
                    }
                }
                None => Vec::new(),
            }
        }
    }
}

/// CPU seconds and memory working set only (no throttling, OOM kills or
/// I/O), with the inactive file pages read again only every
/// [`INACTIVE_AGAIN`] (`known`: as last read).
fn read_usage(
    t: &ContainerTarget,
    known: &HashMap<PathBuf, (Instant, u64)>,
    now: Instant,
) -> (Option<f64>, Option<u64>, Option<(Instant, u64)>) {
    let cpu = match &t.cpu {
        Some(CpuSrc::V2Stat(f)) => std::fs::read_to_string(f)
            .ok()
            .and_then(|s| parse_v2_cpu(&s)),
        Some(CpuSrc::V1Acct(d)) => read_v1_cpu(d),
        None => None,
    };
    let mut inactive = None;
    let memory = t.memory.as_ref().and_then(|src| {
        let (Src::V1(d) | Src::V2(d)) = src;
        match known.get(d) {
            Some(&(at, i)) if now.duration_since(at) < INACTIVE_AGAIN => {
                let usage = memory_current(src)?;
                inactive = Some((at, i));
                Some(usage.saturating_sub(i))
            }
            _ => {
                let (usage, working_set) = memory_usage(src)?;
                inactive = Some((now, usage - working_set));
                Some(working_set)
            }
        }
    });
    (cpu.map(|c| c.usage), memory, inactive)
}

fn read_stats(t: &ContainerTarget) -> ContainerStats {
    let v2_cpu_stat = match &t.cpu {
        Some(CpuSrc::V2Stat(f)) => std::fs::read_to_string(f).ok().map(|s| (f, s)),
        _ => None,
    };
    let cpu = match &t.cpu {
        Some(CpuSrc::V2Stat(_)) => v2_cpu_stat.as_ref().and_then(|(_, s)| parse_v2_cpu(s)),
        Some(CpuSrc::V1Acct(d)) => read_v1_cpu(d),
        None => None,
    };
    let throttle = t.throttle.as_ref().and_then(|src| {
        let (Src::V1(f) | Src::V2(f)) = src;
        let v2 = matches!(src, Src::V2(_));
        match &v2_cpu_stat {
            // Same file as the usage: read once.
            Some((cf, s)) if *cf == f => parse_throttle(s, v2),
            _ => parse_throttle(&std::fs::read_to_string(f).ok()?, v2),
        }
    });
    ContainerStats {
        cpu,
        throttle,
        memory: t
            .memory
            .as_ref()
            .and_then(|m| read_memory(m, t.memory_limit)),
        io: t.io.as_ref().map(read_io).unwrap_or_default(),
    }
}

/// `items.iter().map(f)`, on up to 4 threads when there are many items.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const MIN_PER_THREAD: usize = 32;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

type Who<'a> = [(&'static str, &'a str); 4];

/// Encodes one family from `(labels, value)` pairs; nothing when there are none.
pub(crate) fn family<L: EncodeLabelSet, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result
where
    V: Into<f64>,
{
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        let v: f64 = v.into();
        let mut s = m.encode_family(&labels)?;
        // Whole numbers (bytes, packets, periods) print as integers.
        let int = (v.fract() == 0.0 && (0.0..9.0e15).contains(&v)).then_some(v as u64);
        match (kind, int) {
            (MetricType::Counter, Some(i)) => s.encode_counter::<NoLabelSet, u64, u64>(&i, None)?,
            (MetricType::Counter, None) => s.encode_counter::<NoLabelSet, f64, f64>(&v, None)?,
            (_, Some(i)) => s.encode_gauge(&(i as i64))?,
            (_, None) => s.encode_gauge(&v)?,
        }
    }
    Ok(())
}

fn u(v: u64) -> f64 {
    v as f64
}

impl Collector for Resources {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let targets = self
            .targets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let node = self.node.as_str();
        // Reading ~6 cgroup files costs ~50-70 us per container on kernfs:
        // spread the reads over the CPUs so 500 pods stay well under a second.
        let read = par_map(&targets.containers, read_stats);
        let stats: Vec<(Who, ContainerStats)> = targets
            .containers
            .iter()
            .zip(read)
            .map(|(t, st)| {
                let who = [
                    ("namespace", t.namespace.as_str()),
                    ("pod", t.pod.as_str()),
                    ("container", t.container.as_str()),
                    ("node", node),
                ];
                (who, st)
            })
            .collect();
        let e = &mut enc;
        use MetricType::{Counter, Gauge};
        let cpu = |f: fn(&Cpu) -> f64| {
            stats
                .iter()
                .filter_map(move |(w, s)| s.cpu.as_ref().map(|c| (*w, f(c))))
        };
        family(
            e,
            "podscope_container_cpu_usage_seconds",
            "CPU time the container used, user and system, from its cgroup.",
            Counter,
            cpu(|c| c.usage),
        )?;
        family(
            e,
            "podscope_container_cpu_user_seconds",
            "CPU time the container used in user mode, from its cgroup.",
            Counter,
            cpu(|c| c.user),
        )?;
        family(
            e,
            "podscope_container_cpu_system_seconds",
            "CPU time the container used in kernel mode, from its cgroup.",
            Counter,
            cpu(|c| c.system),
        )?;
        let thr = |f: fn(&Throttle) -> f64| {
            stats
                .iter()
                .filter_map(move |(w, s)| s.throttle.as_ref().map(|t| (*w, f(t))))
        };
        family(
            e,
            "podscope_container_cpu_cfs_periods",
            "CFS enforcement periods that elapsed while the container had a CPU limit and runnable tasks.",
            Counter,
            thr(|t| u(t.periods)),
        )?;
        family(
            e,
            "podscope_container_cpu_cfs_throttled_periods",
            "CFS periods in which the container hit its CPU limit and was throttled.",
            Counter,
            thr(|t| u(t.throttled_periods)),
        )?;
        family(
            e,
            "podscope_container_cpu_cfs_throttled_seconds",
            "Time the container's tasks spent throttled by its CPU limit.",
            Counter,
            thr(|t| t.throttled_seconds),
        )?;
        let mem = |f: fn(&Memory) -> Option<u64>| {
            stats
                .iter()
                .filter_map(move |(w, s)| s.memory.as_ref().and_then(f).map(|v| (*w, u(v))))
        };
        family(
            e,
            "podscope_container_memory_usage_bytes",
            "Memory charged to the container's cgroup: anonymous, page cache, shared memory and kernel memory.",
            Gauge,
            mem(|m| Some(m.usage)),
        )?;
        family(
            e,
            "podscope_container_memory_working_set_bytes",
            "Memory usage minus inactive file cache: what the kernel cannot easily reclaim (the OOM killer and kubelet's eviction watch this).",
            Gauge,
            mem(|m| Some(m.working_set)),
        )?;
        family(
            e,
            "podscope_container_memory_limit_bytes",
            "The container's memory limit; absent when it has none.",
            Gauge,
            mem(|m| m.limit),
        )?;
        family(
            e,
            "podscope_container_oom_kills",
            "Processes of the container the OOM killer killed.",
            Counter,
            mem(|m| m.oom_kills),
        )?;
        // Block I/O: per container, disk and direction.
        let disks: Vec<(Who, &Io, String)> = stats
            .iter()
            .flat_map(|(w, s)| s.io.iter().map(move |x| (*w, x)))
            .map(|(w, x)| (w, x, self.disk_name(&x.dev)))
            .collect();
        let io = |f: fn(&Io, bool) -> u64| {
            disks.iter().flat_map(move |(w, x, name)| {
                [true, false].into_iter().map(move |read| {
                    let op = if read { "read" } else { "write" };
                    let l = [w[0], w[1], w[2], w[3], ("disk", name.as_str()), ("op", op)];
                    (l, u(f(x, read)))
                })
            })
        };
        family(
            e,
            "podscope_container_block_io_bytes",
            "Bytes the container read from and wrote to block devices, from its cgroup.",
            Counter,
            io(|x, read| if read { x.read_bytes } else { x.write_bytes }),
        )?;
        family(
            e,
            "podscope_container_block_io_operations",
            "Block I/O operations of the container, from its cgroup.",
            Counter,
            io(|x, read| if read { x.read_ops } else { x.write_ops }),
        )?;
        // Network: per pod and interface.
        let proc = &self.layout.proc;
        let devs = par_map(&targets.pods, |p| {
            std::fs::read_to_string(proc.join(format!("{}/net/dev", p.pid)))
                .map(|s| parse_net_dev(&s))
                .unwrap_or_default()
        });
        let net: Vec<([(&str, &str); 4], NetDev)> = targets
            .pods
            .iter()
            .zip(devs)
            .flat_map(|(p, devs)| devs.into_iter().map(move |d| (p, d)))
            .map(|(p, d)| {
                (
                    [
                        ("namespace", p.namespace.as_str()),
                        ("pod", p.pod.as_str()),
                        ("node", node),
                        ("interface", ""),
                    ],
                    d,
                )
            })
            .collect();
        let netfam = |f: fn(&NetDev) -> u64| {
            net.iter().map(move |(l, d)| {
                let mut l = *l;
                l[3] = ("interface", d.interface.as_str());
                (l, u(f(d)))
            })
        };
        family(
            e,
            "podscope_pod_network_receive_bytes",
            "Bytes the pod's network interfaces received (from /proc/<sandbox pid>/net/dev).",
            Counter,
            netfam(|d| d.rx_bytes),
        )?;
        family(
            e,
            "podscope_pod_network_transmit_bytes",
            "Bytes the pod's network interfaces sent.",
            Counter,
            netfam(|d| d.tx_bytes),
        )?;
        family(
            e,
            "podscope_pod_network_receive_packets",
            "Packets the pod's network interfaces received.",
            Counter,
            netfam(|d| d.rx_packets),
        )?;
        family(
            e,
            "podscope_pod_network_transmit_packets",
            "Packets the pod's network interfaces sent.",
            Counter,
            netfam(|d| d.tx_packets),
        )?;
        family(
            e,
            "podscope_pod_network_receive_packets_dropped",
            "Received packets the pod's network interfaces dropped.",
            Counter,
            netfam(|d| d.rx_drops),
        )?;
        family(
            e,
            "podscope_pod_network_transmit_packets_dropped",
            "Packets the pod's network interfaces dropped on sending.",
            Counter,
            netfam(|d| d.tx_drops),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_file_parsers() {
        let v2 = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\nthrottled_usec 120000\n";
        assert_eq!(keyed(v2, "usage_usec"), Some(2_500_000));
        assert_eq!(keyed(v2, "nr_throttled"), Some(3));
        assert_eq!(keyed(v2, "nope"), None);
        let all = "cpu user system\n0 1000 20\n1 3000 40\n";
        assert_eq!(parse_cpuacct_usage_all(all), Some((4000, 60)));
        let io = "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n";
        assert_eq!(
            parse_io_stat(io),
            vec![Io {
                dev: "254:0".into(),
                read_bytes: 4096,
                write_bytes: 8192,
                read_ops: 1,
                write_ops: 2
            }]
        );
        let bytes =
            "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\n254:0 Total 12288\nTotal 12288\n";
        let ops = "254:0 Read 1\n254:0 Write 2\n254:0 Total 3\nTotal 3\n";
        assert_eq!(parse_blkio(bytes, ops), parse_io_stat(io));
    }

    #[test]
    fn net_dev_parser() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
 eth0:    5000      40    0    7    0     0          0         0     3000      30    0    1    0     0       0          0\n";
        let d = parse_net_dev(text);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[1],
            NetDev {
                interface: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 40,
                rx_drops: 7,
                tx_bytes: 3000,
                tx_packets: 30,
                tx_drops: 1,
            }
        );
    }
}
