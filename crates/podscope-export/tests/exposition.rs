//! The whole exposition against fake nodes (cgroup v2 and hybrid v1 layouts):
//! every resource metric with the values the fake cgroup files hold.

use std::time::Duration;

use podscope_export::testing::{values, FakeLayout, FakeNode};
use podscope_export::{Format, Metrics};

/// Sample lines of `name` (exactly that sample name) that contain every needle.
fn samples<'a>(out: &'a str, name: &str, needles: &[&str]) -> Vec<(&'a str, f64)> {
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n == name))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(|l| (l, l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()))
        .collect()
}

fn one(out: &str, name: &str, needles: &[&str]) -> f64 {
    let s = samples(out, name, needles);
    assert_eq!(s.len(), 1, "{name} {needles:?}: {s:?}\n{out}");
    s[0].1
}

fn check_layout(layout: FakeLayout) {
    let node = FakeNode::new(layout, 3, 2);
    let m = Metrics::with_host("n1", Duration::from_secs(60), node.host.clone());
    m.set_pods(&node.pods);
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let out = m.render(format).unwrap();
        let c = [
            "namespace=\"fake\"",
            "pod=\"pod-1\"",
            "container=\"c1\"",
            "node=\"n1\"",
        ];
        let (usage, user, system) = values::CPU_USEC;
        let (periods, throttled, throttled_usec) = values::THROTTLE;
        let (mem, inactive, limit, ooms) = values::MEMORY;
        let (rb, wb, ro, wo) = values::IO;
        let (rxb, rxp, rxd, txb, txp, txd) = values::NET;
        let sec = |usec: u64| usec as f64 / 1e6;
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        for (name, want) in [
            ("podscope_container_cpu_usage_seconds_total", usage),
            ("podscope_container_cpu_user_seconds_total", user),
            ("podscope_container_cpu_system_seconds_total", system),
        ] {
            let got = one(&out, name, &c);
            assert!(close(got, sec(want)), "{name}: {got} vs {}", sec(want));
        }
        assert_eq!(
            one(&out, "podscope_container_cpu_cfs_periods_total", &c),
            periods as f64
        );
        assert_eq!(
            one(
                &out,
                "podscope_container_cpu_cfs_throttled_periods_total",
                &c
            ),
            throttled as f64
        );
        assert_eq!(
            one(
                &out,
                "podscope_container_cpu_cfs_throttled_seconds_total",
                &c
            ),
            sec(throttled_usec)
        );
        assert_eq!(
            one(&out, "podscope_container_memory_usage_bytes", &c),
            mem as f64
        );
        assert_eq!(
            one(&out, "podscope_container_memory_working_set_bytes", &c),
            (mem - inactive) as f64
        );
        assert_eq!(
            one(&out, "podscope_container_memory_limit_bytes", &c),
            limit as f64
        );
        assert_eq!(
            one(&out, "podscope_container_oom_kills_total", &c),
            ooms as f64
        );
        let read = [c.as_slice(), &["op=\"read\""]].concat();
        let write = [c.as_slice(), &["op=\"write\""]].concat();
        assert_eq!(
            one(&out, "podscope_container_block_io_bytes_total", &read),
            rb as f64
        );
        assert_eq!(
            one(&out, "podscope_container_block_io_bytes_total", &write),
            wb as f64
        );
        assert_eq!(
            one(&out, "podscope_container_block_io_operations_total", &read),
            ro as f64
        );
        assert_eq!(
            one(&out, "podscope_container_block_io_operations_total", &write),
            wo as f64
        );
        let eth0 = ["namespace=\"fake\"", "pod=\"pod-2\"", "interface=\"eth0\""];
        for (name, want) in [
            ("podscope_pod_network_receive_bytes_total", rxb),
            ("podscope_pod_network_receive_packets_total", rxp),
            ("podscope_pod_network_receive_packets_dropped_total", rxd),
            ("podscope_pod_network_transmit_bytes_total", txb),
            ("podscope_pod_network_transmit_packets_total", txp),
            ("podscope_pod_network_transmit_packets_dropped_total", txd),
        ] {
            assert_eq!(one(&out, name, &eth0), want as f64, "{name}");
        }
        assert!(
            samples(
                &out,
                "podscope_pod_network_receive_bytes_total",
                &["container="]
            )
            .is_empty(),
            "network series are per pod"
        );
        assert_eq!(
            samples(&out, "podscope_container_memory_usage_bytes", &[]).len(),
            6,
            "3 pods x 2 containers"
        );
        assert_eq!(one(&out, "podscope_pods_tracked", &[]), 3.0);
    }
}

#[test]
fn resource_metrics_from_cgroup_v2() {
    check_layout(FakeLayout::V2);
}

#[test]
fn resource_metrics_from_cgroup_v1_on_a_hybrid_node() {
    check_layout(FakeLayout::Hybrid);
}

#[test]
fn pods_that_go_away_lose_their_resource_series_at_once() {
    let node = FakeNode::new(FakeLayout::V2, 2, 1);
    let m = Metrics::with_host("n1", Duration::from_secs(60), node.host.clone());
    m.set_pods(&node.pods);
    m.set_pods(&node.pods[..1]);
    let out = m.render(Format::Prometheus).unwrap();
    assert_eq!(
        samples(&out, "podscope_container_memory_usage_bytes", &[]).len(),
        1
    );
    assert!(!out.contains("pod=\"pod-1\""), "{out}");
}
