//! Which probes this kernel runs, found by loading them.

use podscope_bpf::{Filter, TraceOptions, Tracer};
use podscope_model::ProbeKind;

/// Loads `probe` alone, letting nothing through the filter, and unloads it:
/// the only way to know whether the kernel accepts a program (fentry is
/// refused on some kernels whose BTF lists the function).
pub fn trial_load(probe: ProbeKind) -> Result<&'static podscope_model::Implementation, String> {
    let opts = TraceOptions {
        probes: vec![probe],
        filter: Filter {
            cgroups: Some(Vec::new()),
            ..Filter::default()
        },
        ring_buffer_bytes: 4096,
        ..TraceOptions::default()
    };
    match Tracer::new(&opts) {
        Ok(t) => Ok(t.implementations()[0].1),
        Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
    }
}

/// The probes this kernel loads (each tried alone); needs the privileges to
/// load BPF programs.
pub fn supported() -> Vec<ProbeKind> {
    ProbeKind::ALL
        .iter()
        .copied()
        .filter(|p| trial_load(*p).is_ok())
        .collect()
}

/// The probes whose hooks this kernel has (tracefs events, BTF functions):
/// a few milliseconds, where [`supported`] loads every probe (seconds on a
/// busy machine). The kernel can still refuse one when it loads; a session
/// then says so.
pub fn available() -> Vec<ProbeKind> {
    ProbeKind::ALL
        .iter()
        .copied()
        .filter(|p| podscope_bpf::probe_support(*p) == podscope_bpf::ProbeSupport::Supported)
        .collect()
}
