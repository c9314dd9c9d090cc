//! `podscope accelerate`'s counters for Prometheus (docs/accelerate.md):
//! read from its pinned maps at each scrape, so any exporter on the node
//! (`podscope trace --metrics-listen`, the agent's) shows them while
//! acceleration is on. Per pod: messages and bytes redirected and passed,
//! connections accelerated, sockets in the sockhash now; node-wide:
//! connections left alone by reason.

use std::collections::HashMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};

use podscope_runtime::Pod;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::resources::family;

/// The collector: the node's pod names by pod-level cgroup id.
#[derive(Debug)]
pub struct AccelMetrics {
    node: String,
    names: RwLock<HashMap<u64, (String, String)>>,
}

impl AccelMetrics {
    pub fn new(node: String) -> AccelMetrics {
        AccelMetrics {
            node,
            names: RwLock::new(HashMap::new()),
        }
    }

    /// The pods as the runtime lists them now (names for the counters).
    pub fn update(&self, pods: &[Pod]) {
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        for p in pods {
            if let Some(id) = p.cgroup_id {
                names.insert(id, (p.namespace.clone(), p.name.clone()));
            }
        }
    }
}

impl Collector for AccelMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let node = self.node.as_str();
        let st = podscope_bpf::accel_status().ok().flatten();
        let e = &mut enc;
        family(
            e,
            "podscope_accel_enabled",
            "1 while podscope accelerate redirects TCP between local pods on this node (its pins exist), else 0.",
            MetricType::Gauge,
            [([("node", node)], u64::from(st.is_some()) as f64)],
        )?;
        let Some(st) = st else {
            return Ok(());
        };
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        let unknown = |id: u64| (String::new(), format!("cgroup:{id}"));
        let pods: Vec<(String, String, podscope_bpf::AccelPodStats, usize)> = st
            .selected
            .iter()
            .map(|&id| {
                let (ns, pod) = names.get(&id).cloned().unwrap_or_else(|| unknown(id));
                let (s, now) = st.pod(id);
                (ns, pod, s, now)
            })
            .collect();
        let per_pod = |f: fn(&podscope_bpf::AccelPodStats, usize) -> u64| {
            pods.iter().map(move |(ns, pod, s, now)| {
                (
                    [
                        ("namespace", ns.as_str()),
                        ("pod", pod.as_str()),
                        ("node", node),
                    ],
                    f(s, *now) as f64,
                )
            })
        };
        use MetricType::{Counter, Gauge};
        family(
            e,
            "podscope_accel_redirected_messages",
            "Messages the pod's sockets sent that sk_msg redirected straight to the local peer socket.",
            Counter,
            per_pod(|s, _| s.messages),
        )?;
        family(
            e,
            "podscope_accel_redirected_bytes",
            "Bytes the pod's sockets sent that were redirected (what the application passed to send/write).",
            Counter,
            per_pod(|s, _| s.bytes),
        )?;
        family(
            e,
            "podscope_accel_passed_messages",
            "Messages of the pod's mapped sockets that took the normal TCP path (no peer in the sockhash).",
            Counter,
            per_pod(|s, _| s.passed_messages),
        )?;
        family(
            e,
            "podscope_accel_passed_bytes",
            "Bytes of the pod's mapped sockets that took the normal TCP path.",
            Counter,
            per_pod(|s, _| s.passed_bytes),
        )?;
        family(
            e,
            "podscope_accel_connections_accelerated",
            "Connections of the pod accelerated (both ends in the sockhash; counted on the second end to join).",
            Counter,
            per_pod(|s, _| s.accelerated),
        )?;
        family(
            e,
            "podscope_accel_sockets",
            "The pod's sockets in the sockhash now.",
            Gauge,
            per_pod(|_, now| now as u64),
        )?;
        let reasons: Vec<(&str, u64)> = st
            .counters
            .iter()
            .filter_map(|(n, v)| n.strip_prefix("left_alone_").map(|r| (r, *v)))
            .collect();
        family(
            e,
            "podscope_accel_left_alone",
            "TCP sockets acceleration left on the normal path, by reason (docs/accelerate.md; not_selected counts every other socket of the node).",
            Counter,
            reasons
                .iter()
                .map(|(r, v)| ([("reason", *r), ("node", node)], *v as f64)),
        )?;
        family(
            e,
            "podscope_accel_preexisting_not_accelerated",
            "Established sockets of the selected pods when accelerate last ran (not picked up).",
            Gauge,
            [(
                [("node", node)],
                st.counter("preexisting_not_accelerated") as f64,
            )],
        )?;
        Ok(())
    }
}
