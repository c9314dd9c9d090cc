//! `podscope ps`: the pods and containers on this node.

use anyhow::{Context, Result};
use podscope_runtime::cgroup::cgroup2_mount;

use crate::cli::{Format, PsArgs};
use podscope_pipeline::podtable::{pod_rows, write_json, write_table};
use podscope_pipeline::PodSelection;

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
    let rows = pod_rows(pods.iter().map(|p| (None, p)), |c| {
        Some(pids_of(c.cgroup_path.as_deref()))
    });
    let out = std::io::stdout();
    let mut out = out.lock();
    match args.output {
        Format::Json => write_json(&mut out, &rows)?,
        Format::Columns => {
            write_table(&mut out, &rows, false)?;
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
