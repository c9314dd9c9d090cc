//! podscope's own cost, read at scrape time: process CPU and RSS, and the run
//! time and run count of its BPF programs (kernel BPF statistics, reported
//! only while `kernel.bpf_stats_enabled` is 1: the kernel counts nothing otherwise).

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// USER_HZ, the unit of /proc/PID/stat times; 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// The self-metrics collector.
#[derive(Debug)]
pub(crate) struct SelfStats;

/// utime + stime of /proc/self/stat, in seconds.
pub(crate) fn parse_stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// VmRSS of /proc/self/status, in bytes.
pub(crate) fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One BPF program's kernel statistics, from /proc/self/fdinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProgStats {
    pub id: u64,
    pub prog_type: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

pub(crate) fn parse_prog_fdinfo(text: &str) -> Option<ProgStats> {
    let get = |key: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().parse().ok())?
        })
    };
    Some(ProgStats {
        id: get("prog_id")?,
        prog_type: u32::try_from(get("prog_type")?).ok()?,
        run_time_ns: get("run_time_ns").unwrap_or(0),
        run_cnt: get("run_cnt").unwrap_or(0),
    })
}

fn prog_type_name(t: u32) -> &'static str {
    match t {
        1 => "socket_filter",
        2 => "kprobe",
        3 => "sched_cls",
        4 => "sched_act",
        5 => "tracepoint",
        6 => "xdp",
        7 => "perf_event",
        8 => "cgroup_skb",
        9 => "cgroup_sock",
        13 => "sock_ops",
        16 => "sk_msg",
        17 => "raw_tracepoint",
        18 => "cgroup_sock_addr",
        26 => "tracing",
        _ => "other",
    }
}

/// The BPF programs this process holds, by program id.
fn own_programs() -> BTreeMap<u64, ProgStats> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for entry in dir.flatten() {
        let is_prog = std::fs::read_link(entry.path())
            .map(|t| t.as_os_str() == "anon_inode:bpf-prog")
            .unwrap_or(false);
        if !is_prog {
            continue;
        }
        let info = format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Some(p) = std::fs::read_to_string(info)
            .ok()
            .and_then(|s| parse_prog_fdinfo(&s))
        {
            out.insert(p.id, p);
        }
    }
    out
}

impl Collector for SelfStats {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        if let Some(cpu) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat_cpu_seconds(&s))
        {
            let c = ConstCounter::new(cpu);
            let m = enc.encode_descriptor(
                "process_cpu_seconds",
                "CPU time podscope used, user and system.",
                None,
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        if let Some(rss) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_status_rss(&s))
        {
            let g = ConstGauge::new(rss as i64);
            let m = enc.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the podscope process.",
                None,
                g.metric_type(),
            )?;
            g.encode(m)?;
        }
        let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        if !enabled {
            return Ok(());
        }
        let progs = own_programs();
        if progs.is_empty() {
            return Ok(());
        }
        let labels: Vec<(String, &ProgStats)> =
            progs.values().map(|p| (p.id.to_string(), p)).collect();
        let mut m = enc.encode_descriptor(
            "podscope_bpf_program_run_seconds",
            "Time podscope's BPF programs ran in the kernel (needs sysctl kernel.bpf_stats_enabled=1).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (id, p) in &labels {
            let l = [
                ("program_id", id.as_str()),
                ("type", prog_type_name(p.prog_type)),
            ];
            ConstCounter::new(p.run_time_ns as f64 / 1e9).encode(m.encode_family(&l)?)?;
        }
        let mut m = enc.encode_descriptor(
            "podscope_bpf_program_runs",
            "Times podscope's BPF programs ran (needs sysctl kernel.bpf_stats_enabled=1).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (id, p) in &labels {
            let l = [
                ("program_id", id.as_str()),
                ("type", prog_type_name(p.prog_type)),
            ];
            ConstCounter::new(p.run_cnt).encode(m.encode_family(&l)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        let stat = "42 (pod scope) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 0 0";
        assert_eq!(parse_stat_cpu_seconds(stat), Some(3.0));
        let status = "Name:\tpodscope\nVmRSS:\t   2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1055\nprog_type:\t5\nprog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t77\nrun_time_ns:\t12345\nrun_cnt:\t9\n";
        assert_eq!(
            parse_prog_fdinfo(fdinfo),
            Some(ProgStats {
                id: 77,
                prog_type: 5,
                run_time_ns: 12345,
                run_cnt: 9
            })
        );
    }

    #[test]
    fn own_cpu_and_rss_are_readable() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_seconds(&stat).is_some());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_status_rss(&status).unwrap() > 0);
    }
}
