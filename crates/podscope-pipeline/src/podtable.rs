//! `podscope ps`'s rows and table: one formatter for the node's own pods
//! and for every node's pods through the hub (which adds a NODE column and
//! has no PIDS: the hub does not know the processes).

use std::io::{self, Write};

use podscope_runtime::Pod;
use serde::Serialize;

/// One container of a pod, as `ps -o json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct PodRow {
    /// The node that reported it (through the hub only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub container_id: String,
    pub image: String,
    pub runtime: String,
    pub state: String,
    /// The container's processes (on the node only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<u32>>,
    pub cgroup_id: Option<u64>,
    pub pod_cgroup_id: Option<u64>,
    pub ip: Option<String>,
    pub source: String,
}

fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The rows of these pods, one per container, sorted by node, namespace,
/// pod and container. `pids` gives a container's processes (None: not
/// known here).
pub fn pod_rows<'a>(
    pods: impl IntoIterator<Item = (Option<&'a str>, &'a Pod)>,
    pids: impl Fn(&podscope_runtime::Container) -> Option<Vec<u32>>,
) -> Vec<PodRow> {
    let mut rows = Vec::new();
    for (node, pod) in pods {
        for c in &pod.containers {
            rows.push(PodRow {
                node: node.map(str::to_string),
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                pod_uid: pod.uid.clone(),
                container: c.name.clone(),
                container_id: c.id.clone(),
                image: c.image.clone(),
                runtime: pod.runtime.clone(),
                state: name(&c.state),
                pids: pids(c),
                cgroup_id: c.cgroup_id,
                pod_cgroup_id: pod.cgroup_id,
                ip: pod.ip.clone(),
                source: name(&pod.source),
            });
        }
    }
    rows.sort_unstable_by(|a, b| {
        (&a.node, &a.namespace, &a.pod, &a.container).cmp(&(
            &b.node,
            &b.namespace,
            &b.pod,
            &b.container,
        ))
    });
    rows
}

/// The rows as JSON lines.
pub fn write_json(out: &mut impl Write, rows: &[PodRow]) -> io::Result<()> {
    for r in rows {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The rows as a table: through the hub (`remote`) with NODE first and no
/// PIDS, on the node with PIDS last; the header is there even without rows.
pub fn write_table(out: &mut impl Write, rows: &[PodRow], remote: bool) -> io::Result<()> {
    let (with_node, with_pids) = (remote, !remote);
    let w =
        |f: &dyn Fn(&PodRow) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let wnode = w(&|r| r.node.as_deref().map_or(0, str::len), 4);
    let (wn, wp, wc, wi) = (
        w(&|r| r.namespace.len(), 9),
        w(&|r| r.pod.len(), 3),
        w(&|r| r.container.len(), 9),
        w(&|r| r.image.len(), 5),
    );
    if with_node {
        write!(out, "{:<wnode$}  ", "NODE")?;
    }
    write!(
        out,
        "{:<wn$}  {:<wp$}  {:<wc$}  {:<wi$}  {:<10}  {:<8}  {:<12}  {:>10}",
        "NAMESPACE", "POD", "CONTAINER", "IMAGE", "RUNTIME", "STATE", "CONTAINER-ID", "CGROUP-ID"
    )?;
    writeln!(out, "{}", if with_pids { "  PIDS" } else { "" })?;
    for r in rows {
        if with_node {
            write!(out, "{:<wnode$}  ", r.node.as_deref().unwrap_or("-"))?;
        }
        write!(
            out,
            "{:<wn$}  {:<wp$}  {:<wc$}  {:<wi$}  {:<10}  {:<8}  {:<12}  {:>10}",
            r.namespace,
            r.pod,
            r.container,
            r.image,
            r.runtime,
            r.state,
            &r.container_id[..r.container_id.len().min(12)],
            r.cgroup_id.map_or("-".into(), |i| i.to_string()),
        )?;
        match (&r.pids, with_pids) {
            (Some(p), _) if !p.is_empty() => {
                let p: Vec<String> = p.iter().map(u32::to_string).collect();
                writeln!(out, "  {}", p.join(","))?
            }
            (_, true) => writeln!(out, "  -")?,
            (_, false) => writeln!(out)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "uid": format!("u-{name}"), "name": name, "namespace": ns, "labels": {},
            "runtime": "containerd", "state": "ready", "source": "cri", "cgroup_id": 9,
            "containers": [{"id": "0123456789abcdef", "name": "app", "image": "img:1",
                "state": "running", "cgroup_id": 10}],
        }))
        .unwrap()
    }

    /// The node's table and the hub's differ only by the NODE and PIDS
    /// columns, and the JSON rows by the `node` and `pids` keys.
    #[test]
    fn local_and_remote_tables_share_their_columns() {
        let (a, b) = (pod("shop", "web-0"), pod("default", "api-0"));
        let local = pod_rows([(None, &a), (None, &b)], |_| Some(vec![42]));
        let remote = pod_rows([(Some("n2"), &a), (Some("n1"), &b)], |_| None);
        assert_eq!(local[0].pod, "api-0", "sorted by namespace");
        assert_eq!(
            remote[0].node.as_deref(),
            Some("n1"),
            "sorted by node first"
        );
        let mut l = Vec::new();
        write_table(&mut l, &local, false).unwrap();
        let l = String::from_utf8(l).unwrap();
        let mut r = Vec::new();
        write_table(&mut r, &remote, true).unwrap();
        let r = String::from_utf8(r).unwrap();
        assert!(
            l.starts_with("NAMESPACE") && l.lines().next().unwrap().ends_with("PIDS"),
            "{l}"
        );
        assert!(l.contains("0123456789ab") && l.contains("  42"), "{l}");
        assert!(r.starts_with("NODE") && !r.contains("PIDS"), "{r}");
        let strip = |s: &str| {
            s.lines()
                .map(|x| {
                    x.split_whitespace()
                        .skip(1)
                        .take(8)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
        };
        // The same columns after NODE (remote) as the first ones locally.
        let lr: Vec<String> = l
            .lines()
            .map(|x| x.split_whitespace().take(8).collect::<Vec<_>>().join(" "))
            .collect();
        let mut rr = strip(&r);
        rr.sort();
        let mut lr2 = lr.clone();
        lr2.sort();
        assert_eq!(rr, lr2);
        // Without rows: the header alone, NODE first through the hub.
        let mut e = Vec::new();
        write_table(&mut e, &[], true).unwrap();
        assert!(String::from_utf8(e).unwrap().starts_with("NODE"));
        let mut j = Vec::new();
        write_json(&mut j, &remote).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(j.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(v["node"], "n1");
        assert!(v.get("pids").is_none());
        assert_eq!(v["state"], "running");
    }
}
