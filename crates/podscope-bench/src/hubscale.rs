//! `podscope-bench --hub-scale`: one real `podscope hub` and N simulated
//! agents that speak the real agent protocol (gRPC `Hub.Connect`: a Hello
//! with the node's pods, then they wait for the hub's StartSession), each
//! reporting M pods. Measures `podscope --hub URL ps -A` end to end (the
//! real CLI, process start included) and the REST listing itself, and
//! checks that a session selecting 10 pods on 10 of the nodes starts on
//! exactly those 10 nodes. No kernel, no BPF: this is the hub's own cost.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podscope_cluster::auth::Bearer;
use podscope_cluster::http::request;
use podscope_cluster::proto::hub_client::HubClient;
use podscope_cluster::proto::{agent_message, hub_message, AgentMessage, Container, Hello, Pod};
use serde::Serialize;
use tokio_stream::wrappers::ReceiverStream;

const TOKEN: &str = "bench-hub-scale-token";

/// Per simulated node: the sessions the hub asked it to start, and when the last came.
type Started = Arc<Mutex<BTreeMap<String, (Vec<String>, Instant)>>>;

/// The figures.
#[derive(Debug, Serialize)]
pub struct HubScale {
    pub agents: usize,
    pub pods_per_agent: usize,
    /// From the first Hello to every agent listed as up.
    pub register_s: f64,
    /// `podscope --hub URL ps -A` (the CLI, process start to exit), ms.
    pub ps_runs: usize,
    pub ps_ms_p50: f64,
    pub ps_ms_p99: f64,
    pub ps_ms_max: f64,
    /// The rows `ps -A` printed (one per container: should be agents x pods).
    pub ps_rows: usize,
    /// `GET /v1/pods?all_namespaces=true` alone (the hub's answer, read whole), ms.
    pub rest_runs: usize,
    pub rest_ms_p50: f64,
    pub rest_ms_p99: f64,
    pub rest_bytes: usize,
    /// The nodes the session selecting 10 pods (one on each of 10 nodes) started on.
    pub session_nodes_wanted: Vec<String>,
    pub session_nodes_started: Vec<String>,
    /// From the POST to the last StartSession a simulated agent received, ms.
    pub session_start_ms: f64,
    /// Hub CPU over the whole run, and its peak RSS.
    pub hub_cpu_ms: f64,
    pub hub_peak_rss_kb: u64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn node_name(i: usize) -> String {
    format!("sim-{i:03}")
}

/// The pods a simulated node reports; pod 0 of every tenth node carries
/// `pick=yes`, the session's selector.
fn pods_of(node: usize, n: usize) -> Vec<Pod> {
    (0..n)
        .map(|j| {
            let mut labels = std::collections::HashMap::new();
            labels.insert("app".to_string(), format!("app-{}", j % 7));
            if j == 0 && node.is_multiple_of(10) {
                labels.insert("pick".to_string(), "yes".to_string());
            }
            let uid = format!("{node:03}-{j:03}-0000-0000-000000000000");
            Pod {
                uid: uid.clone(),
                name: format!("pod-{node}-{j}"),
                namespace: format!("ns-{}", j % 5),
                labels,
                runtime: "containerd".into(),
                sandbox_id: Some(format!("sb{uid}")),
                state: "ready".into(),
                ip: Some(format!("10.{}.{}.{}", node / 250, node % 250, j + 1)),
                sandbox_pid: Some(1000 + j as u32),
                cgroup_path: Some(format!("/kubepods/pod{uid}")),
                cgroup_id: Some((node * 1000 + j) as u64 + 1),
                source: "cri".into(),
                containers: vec![Container {
                    id: format!("c{uid}"),
                    name: "app".into(),
                    image: "registry.example/app:1".into(),
                    pid: Some(2000 + j as u32),
                    cgroup_path: Some(format!("/kubepods/pod{uid}/c")),
                    cgroup_id: Some((node * 1000 + j) as u64 + 500_000),
                    state: "running".into(),
                }],
            }
        })
        .collect()
}

/// Runs the benchmark against `podscope` (the release binary).
pub fn run(podscope: &Path, agents: usize, pods: usize) -> Result<HubScale> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let tok = std::env::temp_dir().join(format!("podscope-bench-hubscale-{}", std::process::id()));
    std::fs::write(&tok, TOKEN)?;
    let mut hub = Command::new(podscope)
        .args([
            "hub",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token-file",
        ])
        .arg(&tok)
        .stderr(Stdio::null())
        .spawn()
        .context("starting podscope hub")?;
    let hub_pid = hub.id();
    let result = (|| {
        let t = Instant::now();
        while request(&url, "GET", "/healthz", None, None, &[]).map_or(true, |r| r.status != 200) {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the hub did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        // node -> (session ids it was asked to start, when the last came).
        let started: Started = Default::default();
        let t0 = Instant::now();
        for i in 0..agents {
            let (url, started) = (url.clone(), started.clone());
            rt.spawn(async move {
                if let Err(e) = sim_agent(&url, i, pods, started).await {
                    eprintln!("hub-scale: simulated agent {i}: {e:#}");
                }
            });
        }
        let up = |url: &str| -> usize {
            request(url, "GET", "/v1/nodes", Some(TOKEN), None, &[])
                .ok()
                .and_then(|r| r.json().ok())
                .and_then(|v| {
                    v.as_array()
                        .map(|a| a.iter().filter(|n| n["state"] == "up").count())
                })
                .unwrap_or(0)
        };
        while up(&url) < agents {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!(
                    "only {} of {agents} simulated agents registered within 60 s",
                    up(&url)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let register_s = t0.elapsed().as_secs_f64();
        eprintln!("hub-scale: {agents} agents x {pods} pods registered in {register_s:.2} s");

        // The REST listing itself.
        let mut rest = Vec::new();
        let mut rest_bytes = 0;
        for _ in 0..100 {
            let t = Instant::now();
            let r = request(
                &url,
                "GET",
                "/v1/pods?all_namespaces=true",
                Some(TOKEN),
                None,
                &[],
            )?;
            let body = r.text()?;
            rest.push(t.elapsed().as_secs_f64() * 1e3);
            rest_bytes = body.len();
        }
        // The CLI, end to end.
        let mut ps = Vec::new();
        let mut ps_rows = 0;
        for _ in 0..30 {
            let t = Instant::now();
            let o = Command::new(podscope)
                .args(["--hub", &url, "--token-file"])
                .arg(&tok)
                .args(["ps", "-A"])
                .output()?;
            ps.push(t.elapsed().as_secs_f64() * 1e3);
            if !o.status.success() {
                bail!("ps -A failed: {}", String::from_utf8_lossy(&o.stderr));
            }
            // The header line is not a pod.
            ps_rows = String::from_utf8_lossy(&o.stdout)
                .lines()
                .count()
                .saturating_sub(1);
        }

        // A session selecting one pod on each of 10 nodes.
        let wanted: Vec<String> = (0..agents)
            .filter(|i| i.is_multiple_of(10))
            .map(node_name)
            .collect();
        let body =
            serde_json::json!({"all_namespaces": true, "selector": "pick=yes", "probes": ["exec"]});
        let t = Instant::now();
        let r = request(
            &url,
            "POST",
            "/v1/sessions",
            Some(TOKEN),
            Some(&body.to_string()),
            &[],
        )?;
        if r.status != 201 {
            let status = r.status;
            bail!(
                "creating the session: {status} {}",
                r.text().unwrap_or_default()
            );
        }
        let id = r.json()?["id"].as_str().unwrap_or_default().to_string();
        let deadline = t + Duration::from_secs(5);
        let got = loop {
            let got: Vec<(String, Instant)> = started
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, (ids, _))| ids.contains(&id))
                .map(|(n, (_, at))| (n.clone(), *at))
                .collect();
            if got.len() >= wanted.len() || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Late starts elsewhere would show within a moment.
        std::thread::sleep(Duration::from_millis(500));
        let all: Vec<String> = started
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (ids, _))| ids.contains(&id))
            .map(|(n, _)| n.clone())
            .collect();
        let session_start_ms = got
            .iter()
            .map(|(_, at)| at.saturating_duration_since(t).as_secs_f64() * 1e3)
            .fold(0.0, f64::max);
        let cpu_ms = crate::cpu_ns(hub_pid) as f64 / 1e6;
        Ok(HubScale {
            agents,
            pods_per_agent: pods,
            register_s,
            ps_runs: ps.len(),
            ps_ms_p50: pct(&mut ps, 0.5),
            ps_ms_p99: pct(&mut ps, 0.99),
            ps_ms_max: pct(&mut ps, 1.0),
            ps_rows,
            rest_runs: rest.len(),
            rest_ms_p50: pct(&mut rest, 0.5),
            rest_ms_p99: pct(&mut rest, 0.99),
            rest_bytes,
            session_nodes_wanted: wanted,
            session_nodes_started: all,
            session_start_ms,
            hub_cpu_ms: cpu_ms,
            hub_peak_rss_kb: crate::peak_rss_kb(hub_pid),
        })
    })();
    let _ = hub.kill();
    let _ = hub.wait();
    let _ = std::fs::remove_file(&tok);
    result
}

/// One simulated agent: registers with its pods and records the sessions
/// the hub asks it to start.
async fn sim_agent(url: &str, i: usize, pods: usize, started: Started) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await?;
    let mut client = HubClient::with_interceptor(channel, Bearer::new(TOKEN)?);
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(16);
    let node = node_name(i);
    tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            node: node.clone(),
            kernel: "6.18.0-sim".into(),
            probes: vec!["exec".into(), "tcp".into(), "open".into()],
            pods: pods_of(i, pods),
            exec_enabled: false,
            version: "bench".into(),
            sessions: Vec::new(),
            instance: format!("sim-{i}-{}", std::process::id()),
            link_version: podscope_cluster::LINK_VERSION,
        })),
    })
    .await
    .ok();
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(m) = inbound.message().await? {
        if let Some(hub_message::Msg::Start(s)) = m.msg {
            let mut st = started.lock().unwrap();
            let e = st
                .entry(node.clone())
                .or_insert_with(|| (Vec::new(), Instant::now()));
            e.0.push(s.session);
            e.1 = Instant::now();
        }
    }
    drop(tx);
    Ok(())
}

/// Prints the figures against the targets.
pub fn print(f: &HubScale) {
    let exact = {
        let mut a = f.session_nodes_started.clone();
        a.sort();
        a == f.session_nodes_wanted
    };
    println!(
        "\nhub scale: {} simulated agents x {} pods = {} pods, registered in {:.2} s\n\
         ps -A through the hub (the CLI, {} runs): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 100 ms); {} rows\n\
         GET /v1/pods?all_namespaces=true ({} runs, {} KiB): p50 {:.1} ms, p99 {:.1} ms\n\
         session selecting 10 pods on 10 nodes: started on {} nodes ({}), last start {:.1} ms after the POST\n\
         hub: {:.0} ms CPU over the run, peak RSS {} KiB",
        f.agents,
        f.pods_per_agent,
        f.agents * f.pods_per_agent,
        f.register_s,
        f.ps_runs,
        f.ps_ms_p50,
        f.ps_ms_p99,
        f.ps_ms_max,
        f.ps_rows,
        f.rest_runs,
        f.rest_bytes / 1024,
        f.rest_ms_p50,
        f.rest_ms_p99,
        f.session_nodes_started.len(),
        if exact { "exactly the 10 wanted" } else { "NOT the 10 wanted" },
        f.session_start_ms,
        f.hub_cpu_ms,
        f.hub_peak_rss_kb
    );
}
