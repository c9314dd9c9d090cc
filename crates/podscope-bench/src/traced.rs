//! A `podscope trace` run of the benchmarks (`-o none`, stopped with SIGINT,
//! its stderr kept for the summary) and the bpf_stats of the programs it
//! holds.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// `podscope trace PROBES ARGS -o none`, attached.
pub struct Podscope {
    child: Child,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl Podscope {
    /// Starts it and waits (at most 30 s) until its probes are attached.
    pub fn start(bin: &Path, probes: &str, args: &[&str]) -> Result<Podscope> {
        let mut child = Command::new(bin)
            .args(["trace", probes])
            .args(args)
            .args(["-o", "none"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
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
        Ok(Podscope { child, reader })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then its stderr (the summary is at the end).
    pub fn stop(mut self) -> Result<Vec<String>> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(self.reader.join().unwrap_or_default())
    }
}

/// (run_cnt, run_time_ns) summed over the BPF programs `pid` holds whose
/// name `want` accepts (bpf_stats must be on): their ids from its file
/// descriptors, their counts from bpftool. None without bpftool.
pub fn prog_stats(pid: u32, want: impl Fn(&str) -> bool) -> Option<(u64, u64)> {
    let mut ids = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            ids.insert(id);
        }
    }
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut sum = (0, 0);
    for p in v.as_array()?.iter().filter(|p| {
        p["id"].as_u64().is_some_and(|id| ids.contains(&id))
            && want(p["name"].as_str().unwrap_or(""))
    }) {
        sum.0 += p["run_cnt"].as_u64().unwrap_or(0);
        sum.1 += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    Some(sum)
}
