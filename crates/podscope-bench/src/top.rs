//! `--top`: what `podscope top`'s terminal view costs. N pods make events
//! (an exec, an open and a sleep exec every 100 ms each); rounds alternate
//! `podscope trace PROBES -n NS -o none` (the same probes, no view) and
//! `podscope top -n NS` drawing in a real terminal (tmux, 160x50, refreshed
//! every second). podscope's CPU over the same window of each round comes
//! from its threads' schedstat.
//!
//! `--ui-view`: the same for the web view: rounds alternate `podscope trace
//! exec,tcp,http,dns -n NS -o none` and `podscope ui` (its observer session
//! has those probes on every pod of the bed, which are the NS pods) with a
//! headless Chromium showing its pods page (live over Server-Sent Events).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::pods::Bed;

const PROBES: &str = "exec,tcp,bio,cache,open";
/// The web view's observer probes (podscope-cluster `DEFAULT_UI_PROBES`).
const UI_PROBES: &str = "exec,tcp,http,dns";

#[derive(Debug, Serialize)]
pub struct TopCost {
    pub pods: usize,
    pub window_s: u64,
    /// podscope CPU over the window, ms, per round.
    pub trace_cpu_ms: Vec<f64>,
    pub top_cpu_ms: Vec<f64>,
    /// Median top / median trace.
    pub ratio: f64,
    /// Events the probes delivered per round (whole run, from the summary).
    pub trace_events: Vec<u64>,
    pub top_events: Vec<u64>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[s.len() / 2]
}

/// "podscope: traced for 1.33s: 1234 events, 0 lost" -> 1234.
fn summary_events(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.contains("traced for"))
        .find_map(|l| {
            let rest = l.split_once("s: ")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn wait_file(path: &Path, needle: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "{} did not say {needle:?} within {timeout:?}: {}",
                path.display(),
                std::fs::read_to_string(path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pid_of(pattern: &str) -> Result<u32> {
    let out = Command::new("pgrep").args(["-f", pattern]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "podscope")
        })
        .with_context(|| format!("no podscope process matching {pattern:?}"))
}

/// One traced round without a view: CPU over the window, events.
fn trace_round(
    bed: &Bed,
    podscope: &Path,
    probes: &str,
    ns: &str,
    window: Duration,
) -> Result<(f64, u64)> {
    let mut child = Command::new(podscope)
        .args(["trace", probes, "-n", ns, "-o", "none"])
        .args(["--runtime-endpoint", &format!("unix://{}", bed.socket())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line)? == 0 {
            bail!("podscope trace exited before attaching: {said}");
        }
        said.push_str(&line);
        if line.contains("probes attached") {
            break;
        }
    }
    // Past the start-up (pod listing, first refresh).
    std::thread::sleep(Duration::from_secs(2));
    let c0 = crate::cpu_ns(child.id());
    std::thread::sleep(window);
    let c1 = crate::cpu_ns(child.id());
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest)?;
    child.wait()?;
    Ok(((c1 - c0) as f64 / 1e6, summary_events(&rest)))
}

/// One round with `podscope top` drawing in tmux.
fn top_round(
    bed: &Bed,
    podscope: &Path,
    ns: &str,
    window: Duration,
    tag: &str,
) -> Result<(f64, u64)> {
    let socket = format!("podscope-bench-top-{tag}");
    let err = std::env::temp_dir().join(format!("podscope-bench-top-{tag}.err"));
    let _ = std::fs::remove_file(&err);
    let cmd = format!(
        "{} top -n {ns} --probes {PROBES} --runtime-endpoint unix://{} 2>{}",
        podscope.display(),
        bed.socket(),
        err.display()
    );
    let ok = Command::new("tmux")
        .args([
            "-L",
            &socket,
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            &cmd,
        ])
        .status()
        .context("--top needs tmux (apt-get install tmux)")?;
    if !ok.success() {
        bail!("tmux new-session failed");
    }
    let kill = || {
        let _ = Command::new("tmux")
            .args(["-L", &socket, "kill-server"])
            .status();
    };
    let r = (|| -> Result<(f64, u64)> {
        wait_file(&err, "probes attached", Duration::from_secs(30))?;
        let pid = pid_of(&format!("top -n {ns} "))?;
        std::thread::sleep(Duration::from_secs(2));
        let c0 = crate::cpu_ns(pid);
        std::thread::sleep(window);
        let c1 = crate::cpu_ns(pid);
        // The screen shows the pods (the view really draws).
        let screen = Command::new("tmux")
            .args(["-L", &socket, "capture-pane", "-p", "-t", "0"])
            .output()?;
        let screen = String::from_utf8_lossy(&screen.stdout).into_owned();
        if !screen.contains("top-0") {
            bail!("the view does not show the pods:\n{screen}");
        }
        Command::new("tmux")
            .args(["-L", &socket, "send-keys", "-t", "0", "q"])
            .status()?;
        wait_file(&err, "events", Duration::from_secs(20))?;
        Ok((
            (c1 - c0) as f64 / 1e6,
            summary_events(&std::fs::read_to_string(&err)?),
        ))
    })();
    kill();
    r
}

/// One round with `podscope ui` and a headless Chromium on its pods page.
fn ui_round(bed: &Bed, podscope: &Path, window: Duration, tag: &str) -> Result<(f64, u64)> {
    const TOKEN: &str = "podscope-bench-ui-token";
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let err = std::env::temp_dir().join(format!("podscope-bench-ui-{tag}.err"));
    let mut ui = Command::new(podscope)
        .args(["ui", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--runtime-endpoint", &format!("unix://{}", bed.socket())])
        .env("PODSCOPE_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let profile = std::env::temp_dir().join(format!("podscope-bench-chromium-{tag}"));
    let mut browser: Option<std::process::Child> = None;
    let r = (|| -> Result<(f64, u64)> {
        wait_file(&err, "registered with the hub", Duration::from_secs(30))?;
        browser = Some(
            Command::new("chromium")
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--window-size=1280,1000",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(format!("{base}/ui/login?token={TOKEN}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("--ui-view needs chromium (apt-get install chromium)")?,
        );
        // The page is open once the observer session traces the node.
        let observer = || -> Option<serde_json::Value> {
            let r = podscope_cluster::http::request(
                &base,
                "GET",
                "/v1/sessions",
                Some(TOKEN),
                None,
                &[],
            )
            .ok()?;
            let v = r.json().ok()?;
            v.as_array()?.first().cloned()
        };
        let start = Instant::now();
        loop {
            let running = observer().is_some_and(|s| {
                s["nodes"]
                    .as_object()
                    .is_some_and(|n| !n.is_empty() && n.values().all(|x| x["state"] == "running"))
            });
            if running {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the web view's observer session did not start: {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(2));
        let e0 = observer().and_then(|s| s["events"].as_u64()).unwrap_or(0);
        let c0 = crate::cpu_ns(ui.id());
        std::thread::sleep(window);
        let c1 = crate::cpu_ns(ui.id());
        let e1 = observer().and_then(|s| s["events"].as_u64()).unwrap_or(0);
        Ok(((c1 - c0) as f64 / 1e6, e1 - e0))
    })();
    if let Some(mut b) = browser {
        let _ = b.kill();
        let _ = b.wait();
    }
    let _ = Command::new("kill")
        .args(["-INT", &ui.id().to_string()])
        .status();
    let _ = ui.wait();
    let _ = std::fs::remove_dir_all(&profile);
    r
}

pub fn run(
    bed: &Bed,
    podscope: &Path,
    pods: usize,
    window_s: u64,
    rounds: usize,
    web: bool,
) -> Result<TopCost> {
    let ns = format!("bench-top-{}", std::process::id());
    let script = "while :; do cat /dev/null; sleep 0.1; done";
    eprintln!("top: starting {pods} pods in {ns} ...");
    for i in 0..pods {
        bed.run_pod(&format!("top-{i}"), &ns, script)?;
    }
    let window = Duration::from_secs(window_s);
    let mut cost = TopCost {
        pods,
        window_s,
        trace_cpu_ms: Vec::new(),
        top_cpu_ms: Vec::new(),
        ratio: 0.0,
        trace_events: Vec::new(),
        top_events: Vec::new(),
    };
    let r = (|| -> Result<()> {
        for round in 0..rounds {
            let probes = if web { UI_PROBES } else { PROBES };
            let (c, e) = trace_round(bed, podscope, probes, &ns, window)?;
            eprintln!("top: round {round}: trace (no view) {c:.0} ms CPU, {e} events");
            cost.trace_cpu_ms.push(c);
            cost.trace_events.push(e);
            let (c, e) = if web {
                ui_round(bed, podscope, window, &round.to_string())?
            } else {
                top_round(bed, podscope, &ns, window, &round.to_string())?
            };
            eprintln!(
                "top: round {round}: {} (view open) {c:.0} ms CPU, {e} events{}",
                if web { "ui" } else { "top" },
                if web { " in the window" } else { "" }
            );
            cost.top_cpu_ms.push(c);
            cost.top_events.push(e);
        }
        Ok(())
    })();
    for i in 0..pods {
        bed.rm_pod(&format!("top-{i}"), &ns);
    }
    r?;
    cost.ratio = median(&cost.top_cpu_ms) / median(&cost.trace_cpu_ms);
    Ok(cost)
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_line() {
        assert_eq!(
            super::summary_events("x\npodscope: traced for 1.33s: 1234 events, 0 lost\n"),
            1234
        );
    }
}
