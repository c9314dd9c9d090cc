//! Fake nodes for tests and benchmarks: cgroup v1 or v2 trees and /proc
//! network files for any number of pods, in a temporary directory, with known
//! values. Lets the whole exposition be checked (and timed with hundreds of
//! pods) without root or real containers.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use podscope_runtime::cgroup::CgroupMount;
use podscope_runtime::{Container, ContainerState, Pod, PodState, Source};

use crate::Host;

/// The cgroup layout of a [`FakeNode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeLayout {
    /// Pure cgroup v2 with the cpu, io and memory controllers enabled.
    V2,
    /// Hybrid: v1 controllers (cpu, cpuacct, memory, blkio) plus a controller-less
    /// v2 without the core `cpu.stat`, so CPU comes from v1 cpuacct as on a pure v1 node.
    Hybrid,
}

/// What every fake container reports.
pub mod values {
    /// CPU usage, user and system, in microseconds.
    pub const CPU_USEC: (u64, u64, u64) = (2_500_000, 2_000_000, 500_000);
    /// CFS periods, throttled periods, throttled microseconds.
    pub const THROTTLE: (u64, u64, u64) = (100, 7, 350_000);
    /// Memory usage, inactive file cache, limit (bytes), OOM kills.
    pub const MEMORY: (u64, u64, u64, u64) = (64 << 20, 4 << 20, 128 << 20, 1);
    /// Block I/O read bytes, write bytes, read ops, write ops on device 254:0.
    pub const IO: (u64, u64, u64, u64) = (4096, 8192, 1, 2);
    /// eth0 rx bytes, rx packets, rx drops, tx bytes, tx packets, tx drops.
    pub const NET: (u64, u64, u64, u64, u64, u64) = (5000, 40, 3, 3000, 30, 1);
}

/// A temporary fake node; removed when dropped.
#[derive(Debug)]
pub struct FakeNode {
    /// Its root directory.
    pub root: PathBuf,
    /// Where the exporter should look.
    pub host: Host,
    /// Its pods, as discovery would report them.
    pub pods: Vec<Pod>,
}

fn write(dir: &Path, file: &str, text: &str) {
    fs::create_dir_all(dir).expect("creating a fake cgroup directory");
    fs::write(dir.join(file), text).expect("writing a fake cgroup file");
}

fn mount(root: &Path, name: &str, v2: bool) -> CgroupMount {
    CgroupMount {
        mount_point: root.join(name),
        root: "/".into(),
        v2,
        controllers: if v2 { vec![] } else { vec![name.to_owned()] },
    }
}

impl FakeNode {
    /// `pods` pods of `containers` containers each, in namespace `fake`.
    pub fn new(layout: FakeLayout, pods: usize, containers: usize) -> FakeNode {
        let root = std::env::temp_dir().join(format!(
            "podscope-fakenode-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let cg = root.join("cgroup");
        let mounts = match layout {
            FakeLayout::V2 => vec![mount(&cg, "v2", true)],
            FakeLayout::Hybrid => vec![
                mount(&cg, "unified", true),
                mount(&cg, "cpu", false),
                mount(&cg, "cpuacct", false),
                mount(&cg, "memory", false),
                mount(&cg, "blkio", false),
            ],
        };
        let proc = root.join("proc");
        fs::create_dir_all(proc.join("self/ns")).expect("creating fake /proc");
        std::os::unix::fs::symlink("net:[4026531840]", proc.join("self/ns/net"))
            .expect("fake netns link");
        let (usage, user, system) = values::CPU_USEC;
        let (periods, throttled, throttled_usec) = values::THROTTLE;
        let (mem, inactive, limit, ooms) = values::MEMORY;
        let (rb, wb, ro, wo) = values::IO;
        let (rxb, rxp, rxd, txb, txp, txd) = values::NET;
        let mut out = Vec::with_capacity(pods);
        for i in 0..pods {
            let uid = format!("00000000-0000-0000-0000-{i:012}");
            let pod_path = format!("/kubepods/besteffort/pod{uid}");
            let mut cs = Vec::new();
            for j in 0..containers {
                let id = format!("{i:032x}{j:032x}");
                let path = format!("{pod_path}/{id}");
                let rel = path.trim_start_matches('/');
                match layout {
                    FakeLayout::V2 => {
                        let d = cg.join("v2").join(rel);
                        write(&d, "cgroup.controllers", "cpuset cpu io memory pids\n");
                        write(&d, "cpu.stat", &format!(
                            "usage_usec {usage}\nuser_usec {user}\nsystem_usec {system}\nnr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {throttled_usec}\n"
                        ));
                        write(&d, "cpu.max", "50000 100000\n");
                        write(&d, "memory.current", &format!("{mem}\n"));
                        write(
                            &d,
                            "memory.stat",
                            &format!(
                                "anon {}\nfile {inactive}\ninactive_file {inactive}\n",
                                mem - inactive
                            ),
                        );
                        write(&d, "memory.max", &format!("{limit}\n"));
                        write(
                            &d,
                            "memory.events",
                            &format!("low 0\nhigh 0\nmax 3\noom 1\noom_kill {ooms}\n"),
                        );
                        write(&d, "io.stat", &format!("254:0 rbytes={rb} wbytes={wb} rios={ro} wios={wo} dbytes=0 dios=0\n"));
                    }
                    FakeLayout::Hybrid => {
                        write(&cg.join("unified").join(rel), "cgroup.controllers", "");
                        let per_cpu_user = user * 1000 / 2;
                        let per_cpu_sys = system * 1000 / 2;
                        let d = cg.join("cpuacct").join(rel);
                        write(&d, "cpuacct.usage", &format!("{}\n", usage * 1000));
                        write(&d, "cpuacct.usage_all", &format!(
                            "cpu user system\n0 {per_cpu_user} {per_cpu_sys}\n1 {per_cpu_user} {per_cpu_sys}\n"
                        ));
                        write(&cg.join("cpu").join(rel), "cpu.cfs_quota_us", "50000\n");
                        write(&cg.join("cpu").join(rel), "cpu.stat", &format!(
                            "nr_periods {periods}\nnr_throttled {throttled}\nthrottled_time {}\n", throttled_usec * 1000
                        ));
                        let d = cg.join("memory").join(rel);
                        write(&d, "memory.usage_in_bytes", &format!("{mem}\n"));
                        write(
                            &d,
                            "memory.stat",
                            &format!(
                                "cache {inactive}\nrss {}\ntotal_inactive_file {inactive}\n",
                                mem - inactive
                            ),
                        );
                        write(&d, "memory.limit_in_bytes", &format!("{limit}\n"));
                        write(
                            &d,
                            "memory.oom_control",
                            &format!("oom_kill_disable 0\nunder_oom 0\noom_kill {ooms}\n"),
                        );
                        let d = cg.join("blkio").join(rel);
                        write(&d, "blkio.throttle.io_service_bytes_recursive", &format!(
                            "254:0 Read {rb}\n254:0 Write {wb}\n254:0 Sync 0\n254:0 Async 0\n254:0 Discard 0\n254:0 Total {}\nTotal {}\n", rb + wb, rb + wb
                        ));
                        write(
                            &d,
                            "blkio.throttle.io_serviced_recursive",
                            &format!(
                                "254:0 Read {ro}\n254:0 Write {wo}\n254:0 Total {}\nTotal {}\n",
                                ro + wo,
                                ro + wo
                            ),
                        );
                    }
                }
                cs.push(Container {
                    id,
                    name: format!("c{j}"),
                    image: "localhost/busybox:latest".into(),
                    pid: None,
                    cgroup_path: Some(path),
                    cgroup_id: None,
                    state: ContainerState::Running,
                });
            }
            let pid = 1_000_000 + i as u32;
            let pd = proc.join(pid.to_string());
            fs::create_dir_all(pd.join("ns")).expect("fake /proc/PID");
            std::os::unix::fs::symlink(format!("net:[{}]", 5_000_000 + i), pd.join("ns/net"))
                .expect("fake netns link");
            write(&pd.join("net"), "dev", &format!(
                "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  eth0: {rxb} {rxp} 0 {rxd} 0 0 0 0 {txb} {txp} 0 {txd} 0 0 0 0\n"
            ));
            out.push(Pod {
                uid,
                name: format!("pod-{i}"),
                namespace: "fake".into(),
                labels: BTreeMap::new(),
                runtime: "containerd".into(),
                sandbox_id: Some(format!("sandbox{i}")),
                state: PodState::Ready,
                ip: None,
                sandbox_pid: Some(pid),
                cgroup_path: Some(pod_path),
                cgroup_id: None,
                source: Source::Cri,
                containers: cs,
            });
        }
        FakeNode {
            host: Host {
                cgroup_mounts: mounts,
                proc,
            },
            root,
            pods: out,
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}
