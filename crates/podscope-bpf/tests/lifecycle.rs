//! The tracer's life cycle in a long-lived process (the agent loads and
//! unloads probes as sessions come and go). Needs root.

mod common;

use common::*;
use podscope_bpf::{Filter, TraceOptions};
use podscope_model::ProbeKind;

/// Regression (issue 9): every load leaked its skeleton's storage, so a
/// long-lived agent that loads and unloads probes grew. Load and unload a
/// probe 300 times (each load parses kernel BTF for CO-RE, ~0.1 s): RSS
/// stays flat. Not in probes.rs, so the kernel matrix's slow guests skip it.
#[test]
fn loading_and_unloading_300_times_keeps_rss_flat() {
    if !require_root() {
        return;
    }
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
    let o = TraceOptions {
        probes: vec![ProbeKind::Exit],
        filter: Filter {
            cgroups: Some(Vec::new()),
            ..Filter::default()
        },
        ring_buffer_bytes: 4096,
        ..TraceOptions::default()
    };
    for _ in 0..30 {
        drop(tracer(o.clone())); // warm up allocator and libbpf caches
    }
    let before = rss_kib();
    let started = std::time::Instant::now();
    for _ in 0..300 {
        drop(tracer(o.clone()));
    }
    let after = rss_kib();
    eprintln!(
        "300 loads and unloads in {:.1}s: RSS {before} KiB -> {after} KiB",
        started.elapsed().as_secs_f64()
    );
    assert!(
        after <= before + 512,
        "RSS grew by {} KiB over 300 loads",
        after - before
    );
}
