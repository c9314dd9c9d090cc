//! `podscope ps`: the pods and containers on this node.

use anyhow::{Context, Result};
use podscope_runtime::cgroup::cgroup2_mount;
use serde::Serialize;

use crate::cli::{Format, PsArgs};
use podscope_pipeline::PodSelection;

#[derive(Serialize)]
struct Row {
    namespace: String,
    pod: String,
    pod_uid: String,
    container: String,
    container_id: String,
    image: String,
    runtime: String,
    state: String,
    pids: Vec<u32>,
    cgroup_id: Option<u64>,
    pod_cgroup_id: Option<u64>,
    ip: Option<String>,
    source: String,
}

/// Every pid in a cgroup (v2 `cgroup.procs`), for the PIDS column.
fn pids_of(cgroup_path: Option<&str>) -> Vec<u32> {
    let (Some(path), Ok(mount)) = (cgroup_path, cgroup2_mount()) else {
        return Vec::new();
    };
    std::fs::read_to_string(mount.dir_of(path).join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

pub fn run(args: PsArgs) -> Result<()> {
    let selection = PodSelection::from_flags(&args.pods.flags())?;
    let discovery = podscope_runtime::discover_detailed(args.pods.runtime_endpoint.as_deref())
        .context("finding the node's pods")?;
    if let Some(w) = &discovery.warning {
        eprintln!("podscope: warning: {w}");
    }
    // Without flags, ps shows every namespace (as `kubectl get pods -A` would).
    let pods = match &selection {
        Some(s) => {
            let chosen = s.select(&discovery.pods);
            if chosen.is_empty() && s.pod.is_some() {
                return Err(s.no_match(&discovery));
            }
            chosen
        }
        None => discovery.pods.clone(),
    };
    let mut rows = Vec::new();
    for pod in &pods {
        for c in &pod.containers {
            rows.push(Row {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                pod_uid: pod.uid.clone(),
                container: c.name.clone(),
                container_id: c.id.clone(),
                image: c.image.clone(),
                runtime: pod.runtime.clone(),
                state: format!("{:?}", c.state).to_lowercase(),
                pids: pids_of(c.cgroup_path.as_deref()),
                cgroup_id: c.cgroup_id,
                pod_cgroup_id: pod.cgroup_id,
                ip: pod.ip.clone(),
                source: format!("{:?}", pod.source).to_lowercase(),
            });
        }
    }
    rows.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
    });
    match args.output {
        Format::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        Format::Columns => {
            let w = |f: &dyn Fn(&Row) -> usize, min: usize| {
                rows.iter().map(f).max().unwrap_or(0).max(min)
            };
            let (wn, wp, wc, wi) = (
                w(&|r| r.namespace.len(), 9),
                w(&|r| r.pod.len(), 3),
                w(&|r| r.container.len(), 9),
                w(&|r| r.image.len(), 5),
            );
            println!(
                "{:<wn$}  {:<wp$}  {:<wc$}  {:<wi$}  {:<10}  {:<8}  {:<12}  {:>10}  PIDS",
                "NAMESPACE",
                "POD",
                "CONTAINER",
                "IMAGE",
                "RUNTIME",
                "STATE",
                "CONTAINER-ID",
                "CGROUP-ID"
            );
            for r in &rows {
                let pids: Vec<String> = r.pids.iter().map(u32::to_string).collect();
                println!(
                    "{:<wn$}  {:<wp$}  {:<wc$}  {:<wi$}  {:<10}  {:<8}  {:<12}  {:>10}  {}",
                    r.namespace,
                    r.pod,
                    r.container,
                    r.image,
                    r.runtime,
                    r.state,
                    &r.container_id[..r.container_id.len().min(12)],
                    r.cgroup_id.map_or("-".into(), |i| i.to_string()),
                    if pids.is_empty() {
                        "-".into()
                    } else {
                        pids.join(",")
                    }
                );
            }
            if rows.is_empty() {
                eprintln!(
                    "podscope: no pods on this node{}",
                    selection
                        .map(|s| format!(" matching {}", s.describe()))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
