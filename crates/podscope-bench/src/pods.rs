//! Pod benchmarks on the containerd test bed (testbed/podbed.sh): whether new
//! pods are traced from their first exec, how long naming them takes, and
//! what tracing one pod costs the pods that are not selected.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Runs a `podbed run-pod` command: the pod as it printed it.
fn run_pod_json(mut cmd: Command, name: &str, ns: &str) -> Result<serde_json::Value> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "podbed run-pod {ns}/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Stops a tracer child if the benchmark bails out early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates and removes pods through the test bed's `podbed` binary.
pub struct Bed {
    podbed: PathBuf,
    socket: String,
}

impl Bed {
    pub fn new(me: &Path) -> Result<Bed> {
        let socket = std::env::var("PODBED_SOCKET").context(
            "--pods needs the containerd test bed: export PODBED_SOCKET=$(bash testbed/podbed.sh up)",
        )?;
        let podbed = me.with_file_name("podbed");
        if !podbed.exists() {
            bail!(
                "{} not found; build it: cargo build --release -p podscope-runtime",
                podbed.display()
            );
        }
        Ok(Bed { podbed, socket })
    }

    /// The containerd socket's path.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Starts a pod whose one container runs `sh -c script`; returns the
    /// container's host pid, if it still runs.
    pub fn run_pod(&self, name: &str, ns: &str, script: &str) -> Result<Option<u32>> {
        let mut cmd = Command::new(&self.podbed);
        cmd.args([
            "--socket",
            &self.socket,
            "run-pod",
            "--name",
            name,
            "--namespace",
            ns,
        ])
        .args(["--container-name", "main", "--", "sh", "-c", script]);
        let v = run_pod_json(cmd, name, ns)?;
        Ok(v["pid"].as_u64().map(|p| p as u32))
    }

    /// Starts a pod whose one container runs a host program (`argv`): the
    /// host's /usr, /lib and /lib64 read-only, `dir` at /srv. Returns the
    /// container's pid and the pod's address.
    pub fn run_host_pod(
        &self,
        name: &str,
        ns: &str,
        dir: &Path,
        argv: &[&str],
    ) -> Result<(u32, String)> {
        let mut cmd = Command::new(&self.podbed);
        cmd.args(["--socket", &self.socket, "run-pod", "--name", name])
            .args(["--namespace", ns, "--container-name", "main"])
            .args(["--mount", "/usr:/usr:ro", "--mount", "/lib:/lib:ro"]);
        if Path::new("/lib64").exists() {
            cmd.args(["--mount", "/lib64:/lib64:ro"]);
        }
        cmd.arg("--mount")
            .arg(format!("{}:/srv", dir.display()))
            .arg("--")
            .args(argv);
        let v = run_pod_json(cmd, name, ns)?;
        match (v["pid"].as_u64(), v["ip"].as_str()) {
            (Some(pid), Some(ip)) => Ok((pid as u32, ip.to_string())),
            _ => bail!("pod {ns}/{name} has no running container or no address: {v}"),
        }
    }

    pub fn rm_pod(&self, name: &str, ns: &str) {
        let _ = Command::new(&self.podbed)
            .args([
                "--socket",
                &self.socket,
                "rm-pod",
                "--name",
                name,
                "--namespace",
                ns,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[derive(Debug, Serialize)]
pub struct Admission {
    pub pods: usize,
    pub first_exec_captured: usize,
    pub pause_exec_captured: usize,
    pub naming_ms_p50: f64,
    pub naming_ms_p99: f64,
    pub naming_ms_max: f64,
    pub exec_margin_ms_min: f64,
    pub exec_margin_ms_p50: f64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// New pods while `podscope trace exec --wait` selects them by name: is each
/// pod's entrypoint exec captured, and how long after the event is it named?
pub fn admission(bed: &Bed, podscope: &Path, n: usize) -> Result<Admission> {
    let ns = format!("bench-adm-{}", std::process::id());
    let mut child = Command::new(podscope)
        .args([
            "trace", "exec", "-n", &ns, "--pod", "adm-*", "--wait", "-o", "json",
        ])
        .args(["--runtime-endpoint", &format!("unix://{}", bed.socket)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut guard = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("probes attached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .context("podscope did not attach")?;
    // (event, wall-clock ns when podscope delivered it)
    let seen: Arc<Mutex<Vec<(serde_json::Value, u64)>>> = Arc::default();
    let s = seen.clone();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                s.lock().unwrap().push((v, now));
            }
        }
    });
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("adm-{i}");
        bed.run_pod(&name, &ns, &format!("cat /dev/null; exit 0 # pod {i}"))?;
        names.push(name);
    }
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill")
        .args(["-INT", &guard.0.id().to_string()])
        .status()?;
    let _ = guard.0.wait();
    let _ = reader.join();
    for name in &names {
        bed.rm_pod(name, &ns);
    }
    let seen = seen.lock().unwrap();
    let ts = |v: &serde_json::Value| -> u64 {
        v["timestamp"].as_str().and_then(humantime_ns).unwrap_or(0)
    };
    let (mut first, mut pause) = (0, 0);
    let (mut naming, mut margin) = (Vec::new(), Vec::new());
    for i in 0..n {
        let pod = format!("adm-{i}");
        let mine: Vec<&(serde_json::Value, u64)> = seen
            .iter()
            .filter(|(v, _)| v["pod"] == pod.as_str())
            .collect();
        let entry = mine.iter().find(|(v, _)| {
            v["container"] == "main" && v["args"][0] == "sh" && v["args"][1] == "-c"
        });
        let p = mine.iter().find(|(v, _)| v["container"] == "POD");
        if let Some((v, arrived)) = entry {
            first += 1;
            naming.push(arrived.saturating_sub(ts(v)) as f64 / 1e6);
            if let Some((pv, _)) = p {
                margin.push(ts(v).saturating_sub(ts(pv)) as f64 / 1e6);
            }
        }
        if p.is_some() {
            pause += 1;
        }
    }
    Ok(Admission {
        pods: n,
        first_exec_captured: first,
        pause_exec_captured: pause,
        naming_ms_p50: pct(&mut naming.clone(), 0.5),
        naming_ms_p99: pct(&mut naming.clone(), 0.99),
        naming_ms_max: pct(&mut naming, 1.0),
        exec_margin_ms_min: pct(&mut margin.clone(), 0.0),
        exec_margin_ms_p50: pct(&mut margin, 0.5),
    })
}

/// RFC 3339 with nanoseconds -> ns since the epoch (UTC, "Z" suffix).
pub fn humantime_ns(t: &str) -> Option<u64> {
    // 2026-11-22T03:54:21.872152425Z
    let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (h.next()?.ok()?, h.next()?.ok()?, h.next()?.ok()?);
    // days from civil (Howard Hinnant's algorithm)
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + hh * 3600 + mm * 60 + ss;
    let ns: u64 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(secs as u64 * 1_000_000_000 + ns)
}

#[derive(Debug, Serialize)]
pub struct Crowd {
    pub pods: usize,
    pub execs_per_pod: u64,
    pub untraced_mean_s: f64,
    pub traced_mean_s: f64,
    pub slowdown_pct: f64,
    pub selected_pod_events: u64,
}

/// 20 pods run exec storms at the same moment; mean storm time of the 19
/// pods not selected, untraced vs while podscope traces pod 0 only. Rounds
/// alternate (untraced, traced, untraced, traced) so drift on a busy 2-core
/// machine does not land on one side.
pub fn crowd(bed: &Bed, podscope: &Path, pods: usize, execs: u64) -> Result<Crowd> {
    let mean = |v: &[f64]| v[1..].iter().sum::<f64>() / (v.len() - 1) as f64;
    let (mut untraced, mut traced, mut events) = (Vec::new(), Vec::new(), 0);
    for round in 0..2 {
        untraced.push(mean(&crowd_round(
            bed,
            None,
            pods,
            execs,
            &format!("u{round}"),
        )?));
        let ns = format!("bench-crowd-t{round}-{}", std::process::id());
        let mut child = Command::new(podscope)
            .args([
                "trace", "exec", "-n", &ns, "--pod", "crowd-0", "--wait", "-o", "json",
            ])
            .args(["--runtime-endpoint", &format!("unix://{}", bed.socket)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let count = std::thread::spawn(move || {
            stdout
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.contains("\"probe\":\"exec\""))
                .count()
        });
        std::thread::sleep(Duration::from_millis(500));
        let r = crowd_round(bed, Some(&ns), pods, execs, "t")?;
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()?;
        let _ = child.wait();
        events += count.join().unwrap_or(0) as u64;
        traced.push(mean(&r));
    }
    let (u, t) = (
        untraced.iter().sum::<f64>() / untraced.len() as f64,
        traced.iter().sum::<f64>() / traced.len() as f64,
    );
    eprintln!("crowd rounds: untraced {untraced:.2?} s, traced {traced:.2?} s");
    Ok(Crowd {
        pods,
        execs_per_pod: execs,
        untraced_mean_s: u,
        traced_mean_s: t,
        slowdown_pct: (t / u - 1.0) * 100.0,
        selected_pod_events: events / 2,
    })
}

/// One round: all pods start their storm at the same uptime second; returns
/// each pod's storm duration (index 0 is the selected pod).
fn crowd_round(
    bed: &Bed,
    ns: Option<&str>,
    pods: usize,
    execs: u64,
    tag: &str,
) -> Result<Vec<f64>> {
    let ns = ns
        .map(str::to_string)
        .unwrap_or_else(|| format!("bench-crowd-{tag}-{}", std::process::id()));
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("reading /proc/uptime")?;
    // Enough time to create every pod (about 0.2 s each) before the storms start.
    let start = uptime as u64 + 3 + (pods as u64) / 3;
    let script = format!(
        "while :; do read u _ </proc/uptime; [ ${{u%.*}} -ge {start} ] && break; sleep 0.05; done; \
         read s _ </proc/uptime; i=0; while [ $i -lt {execs} ]; do cat /dev/null; i=$((i+1)); done; \
         read e _ </proc/uptime; echo \"$s $e\" > /result; sleep 3600"
    );
    let mut pids = Vec::new();
    for i in 0..pods {
        pids.push(
            bed.run_pod(&format!("crowd-{i}"), &ns, &script)?
                .context("a crowd pod's container is not running")?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut out = vec![f64::NAN; pods];
    while out.iter().any(|d| d.is_nan()) && Instant::now() < deadline {
        for (i, pid) in pids.iter().enumerate() {
            if out[i].is_nan() {
                if let Ok(r) = std::fs::read_to_string(format!("/proc/{pid}/root/result")) {
                    let v: Vec<f64> = r
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    if v.len() == 2 {
                        out[i] = v[1] - v[0];
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..pods {
        bed.rm_pod(&format!("crowd-{i}"), &ns);
    }
    if out.iter().any(|d| d.is_nan()) {
        bail!("some crowd pods did not finish their storm");
    }
    Ok(out)
}
