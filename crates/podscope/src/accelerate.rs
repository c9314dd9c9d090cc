//! `podscope accelerate`: turns socket-redirect acceleration between the
//! selected local pods on and off, and shows what it did (docs/accelerate.md).

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use podscope_bpf::{AccelEnabled, AccelSelection, AccelStatus};
use podscope_pipeline::PodSelection;
use podscope_runtime::cgroup::cgroup2_mount;
use podscope_runtime::Pod;

use crate::cli::{AccelerateArgs, Format};

pub fn run(args: AccelerateArgs) -> Result<()> {
    let json = args.output == Format::Json;
    let any_pod_flag = args.pods.flags().pod.is_some()
        || args.pods.namespace.is_some()
        || args.pods.all_namespaces
        || args.pods.selector.is_some();
    if args.pods.container.is_some() {
        bail!(
            "--container does not apply to accelerate: a pod's containers share its network \
             namespace and sockets, so acceleration is per pod (select pods with --pod, -n, -l or -A)"
        );
    }
    if (args.off || args.status) && any_pod_flag {
        bail!(
            "--{} takes no pod flags: it covers whatever is accelerated now (podscope accelerate \
             --status shows which pods)",
            if args.off { "off" } else { "status" }
        );
    }
    if args.off {
        return off(json);
    }
    if args.status {
        return status(json, args.pods.runtime_endpoint.as_deref());
    }
    let Some(selection) = PodSelection::from_flags(&args.pods.flags())? else {
        bail!(
            "accelerate needs a pod selection: --pod NAME (globs: 'web-*') with -n NAMESPACE, \
             -l SELECTOR, -n NAMESPACE alone, or -A for every pod on this node; \
             --status shows what is on, --off turns it off"
        );
    };
    on(&selection, json, args.pods.runtime_endpoint.as_deref())
}

fn netns_inode(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Established TCP sockets in a pod's network namespace (both families),
/// from /proc/PID/net/tcp{,6}: state 01.
fn established_sockets(pid: u32) -> u64 {
    ["tcp", "tcp6"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
                .map(|t| {
                    t.lines()
                        .skip(1)
                        .filter(|l| l.split_whitespace().nth(3) == Some("01"))
                        .count() as u64
                })
                .unwrap_or(0)
        })
        .sum()
}

fn pod_pid(p: &Pod) -> Option<u32> {
    p.sandbox_pid
        .or_else(|| p.containers.iter().find_map(|c| c.pid))
}

fn on(selection: &PodSelection, json: bool, endpoint: Option<&str>) -> Result<()> {
    let discovery =
        podscope_runtime::discover_detailed(endpoint).context("finding the node's pods")?;
    if let Some(w) = &discovery.warning {
        eprintln!("podscope: warning: {w}");
    }
    let chosen = selection.select(&discovery.pods);
    if chosen.is_empty() {
        return Err(selection.no_match(&discovery));
    }
    let host_ns = netns_inode("self");
    let mut sel = AccelSelection::default();
    let mut names = Vec::new();
    let mut skipped = Vec::new();
    for p in &chosen {
        let Some(cg) = p.cgroup_id else {
            skipped.push(format!(
                "{} (no pod-level cgroup found)",
                p.qualified_name()
            ));
            continue;
        };
        let pid = pod_pid(p);
        if pid.and_then(|pid| netns_inode(&pid.to_string())) == host_ns || p.ip.is_none() {
            skipped.push(format!(
                "{} (host network: its sockets are the node's; accelerate works on pods with their own network namespace)",
                p.qualified_name()
            ));
            continue;
        }
        sel.cgroups.push(cg);
        sel.preexisting += pid.map(established_sockets).unwrap_or(0);
        names.push(p.qualified_name());
    }
    if sel.cgroups.is_empty() {
        bail!(
            "none of the selected pods can be accelerated: {}",
            skipped.join("; ")
        );
    }
    // Every pod address on the node, selected or not: a peer that is a local
    // but unselected pod is counted apart from a remote one.
    for p in &discovery.pods {
        let (Some(ip), Some(cg)) = (p.ip.as_deref(), p.cgroup_id) else {
            continue;
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            continue;
        };
        if pod_pid(p).and_then(|pid| netns_inode(&pid.to_string())) == host_ns {
            continue;
        }
        sel.addrs.push((ip, cg, sel.cgroups.contains(&cg)));
    }
    let root = cgroup2_mount().context(
        "finding the cgroup v2 mount (accelerate attaches its sockops program at its root)",
    )?;
    let what =
        podscope_bpf::accel_enable(&sel, &root.mount_point).context("turning acceleration on")?;
    let release = kernel_release();
    let out = std::io::stdout();
    let mut out = out.lock();
    if json {
        let v = serde_json::json!({
            "enabled": true,
            "action": match what { AccelEnabled::Attached => "attached", AccelEnabled::Updated => "updated" },
            "pods": names,
            "skipped": skipped,
            "preexisting_not_accelerated": sel.preexisting,
            "pin_dir": podscope_bpf::ACCEL_PIN_DIR,
            "kernel": release,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "acceleration {} for {} pod(s): {}",
            match what {
                AccelEnabled::Attached => "on",
                AccelEnabled::Updated => "was on; selection replaced",
            },
            names.len(),
            names.join(", ")
        )?;
        for s in &skipped {
            writeln!(out, "  left out: {s}")?;
        }
        writeln!(
            out,
            "  {} established socket(s) of these pods predate this and stay on the normal path",
            sel.preexisting
        )?;
        writeln!(
            out,
            "  pinned under {}; podscope accelerate --status shows the counters, --off undoes it",
            podscope_bpf::ACCEL_PIN_DIR
        )?;
        if podscope_bpf::fionread_regression(&release) {
            writeln!(out, "  {}", regression_note(&release))?;
        }
    }
    Ok(())
}

fn regression_note(release: &str) -> String {
    format!(
        "kernel {release} has the sockmap receive regression (commit 929e30f93125: FIONREAD 0 and \
         missed epoll wake-ups on mapped sockets); a pass-through stream verdict is attached to \
         avoid it (docs/accelerate.md)"
    )
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn off(json: bool) -> Result<()> {
    let was = podscope_bpf::accel_disable().context("turning acceleration off")?;
    if json {
        println!(
            "{}",
            serde_json::json!({"enabled": false, "was_on": was.is_some(), "sockets_still_accelerated": was.unwrap_or(0)})
        );
    } else if let Some(n) = was {
        println!(
            "acceleration off: sockops detached, {} removed; new connections take the normal TCP path; \
             {n} socket(s) of open connections stay accelerated until they close (docs/accelerate.md)",
            podscope_bpf::ACCEL_PIN_DIR
        );
    } else {
        println!(
            "acceleration was not on (nothing under {})",
            podscope_bpf::ACCEL_PIN_DIR
        );
    }
    Ok(())
}

fn status(json: bool, endpoint: Option<&str>) -> Result<()> {
    let Some(st) = podscope_bpf::accel_status().context("reading the acceleration maps")? else {
        if json {
            println!("{}", serde_json::json!({"enabled": false}));
        } else {
            println!("acceleration is off");
        }
        return Ok(());
    };
    // Pod names by cgroup id; a pod gone since is shown by its cgroup id.
    let names: HashMap<u64, (String, String)> = podscope_runtime::discover_detailed(endpoint)
        .map(|d| {
            d.pods
                .iter()
                .filter_map(|p| Some((p.cgroup_id?, (p.namespace.clone(), p.name.clone()))))
                .collect()
        })
        .unwrap_or_default();
    let release = kernel_release();
    let out = std::io::stdout();
    let mut out = out.lock();
    if json {
        writeln!(out, "{}", status_json(&st, &names, &release))?;
        return Ok(());
    }
    write_status(&mut out, &st, &names, &release)?;
    Ok(())
}

fn pod_name(names: &HashMap<u64, (String, String)>, cg: u64) -> (String, String) {
    names
        .get(&cg)
        .cloned()
        .unwrap_or_else(|| ("?".into(), format!("cgroup {cg}")))
}

fn status_json(
    st: &AccelStatus,
    names: &HashMap<u64, (String, String)>,
    release: &str,
) -> serde_json::Value {
    let counters: serde_json::Map<String, serde_json::Value> = st
        .counters
        .iter()
        .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
        .collect();
    let mut pods: Vec<serde_json::Value> = Vec::new();
    for cg in &st.selected {
        let (ns, name) = pod_name(names, *cg);
        let (p, now) = st.pod(*cg);
        pods.push(serde_json::json!({
            "namespace": ns, "pod": name, "cgroup_id": cg,
            "messages_redirected": p.messages, "bytes_redirected": p.bytes,
            "messages_passed": p.passed_messages, "bytes_passed": p.passed_bytes,
            "sockets_added": p.sockets, "connections_accelerated": p.accelerated,
            "sockets_now": now,
        }));
    }
    let sockets: Vec<serde_json::Value> = st
        .sockets
        .iter()
        .map(|s| {
            let (ns, name) = pod_name(names, s.cgroup_id);
            serde_json::json!({
                "namespace": ns, "pod": name,
                "local": format!("{}:{}", s.local.0, s.local.1),
                "remote": format!("{}:{}", s.remote.0, s.remote.1),
                "accelerated": s.accelerated,
                "messages_redirected": s.messages, "bytes_redirected": s.bytes,
                "messages_passed": s.passed_messages, "bytes_passed": s.passed_bytes,
            })
        })
        .collect();
    serde_json::json!({
        "enabled": true,
        "pin_dir": podscope_bpf::ACCEL_PIN_DIR,
        "kernel": release,
        "fionread_regression": podscope_bpf::fionread_regression(release),
        "stream_verdict_workaround": true,
        "counters": counters,
        "pods": pods,
        "sockets": sockets,
    })
}

fn write_status(
    out: &mut impl Write,
    st: &AccelStatus,
    names: &HashMap<u64, (String, String)>,
    release: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "acceleration is on (pinned under {})",
        podscope_bpf::ACCEL_PIN_DIR
    )?;
    if podscope_bpf::fionread_regression(release) {
        writeln!(out, "{}", regression_note(release))?;
    }
    writeln!(
        out,
        "{:<12} {:<20} {:>8} {:>6} {:>12} {:>14} {:>8} {:>12}",
        "NAMESPACE", "POD", "SOCKETS", "ACCEL", "MSGS", "BYTES", "PASSED", "PASSED-BYTES"
    )?;
    for cg in &st.selected {
        let (ns, name) = pod_name(names, *cg);
        let (p, now) = st.pod(*cg);
        writeln!(
            out,
            "{:<12} {:<20} {:>8} {:>6} {:>12} {:>14} {:>8} {:>12}",
            ns, name, now, p.accelerated, p.messages, p.bytes, p.passed_messages, p.passed_bytes
        )?;
    }
    let c = |n: &str| st.counter(n);
    writeln!(
        out,
        "connections accelerated: {} (sockets in the map now: {}, closed since: {})",
        c("connections_accelerated"),
        st.sockets.len(),
        c("sockets_closed")
    )?;
    writeln!(
        out,
        "redirected: {} messages, {} bytes; passed (peer not in the map): {} messages, {} bytes",
        c("messages_redirected"),
        c("bytes_redirected"),
        c("messages_passed"),
        c("bytes_passed")
    )?;
    writeln!(
        out,
        "left alone: peer not local {}, peer not selected {}, loopback {}, not selected {}, map full {}, map error {}, not IP {}; pre-existing (not accelerated) {}",
        c("left_alone_peer_not_local"),
        c("left_alone_peer_not_selected"),
        c("left_alone_loopback"),
        c("left_alone_not_selected"),
        c("left_alone_map_full"),
        c("left_alone_map_error"),
        c("left_alone_not_inet"),
        c("preexisting_not_accelerated")
    )?;
    Ok(())
}
