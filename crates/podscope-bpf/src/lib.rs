//! The kernel side of podscope: loads the BPF probes, owns the in-kernel
//! filter maps and ring buffers, counts losses, and decodes raw records into
//! [`podscope_model::Event`]s. The only podscope crate with `unsafe` code.

mod decode;
mod drain;
mod error;
mod load;
mod rings;
pub mod sys;
mod tracer;

mod accel;
mod bio;
mod cache;
mod cgroup;
mod dns;
mod drop;
mod exec;
mod exit;
mod golang;
mod http;
mod libssl;
mod net;
mod open;
mod skb_flow;
mod syscalls;
mod tcp;
mod tls;
pub mod tracepoint;

pub use accel::{
    accel_disable, accel_enable, accel_is_on, accel_status, fionread_regression, AccelEnabled,
    AccelPodStats, AccelSelection, AccelSocket, AccelStatus, ACCEL_COUNTERS, ACCEL_PIN_DIR,
};
pub use cgroup::{CgroupChange, FILTER_PENDING};
pub use drop::PodNet;
pub use error::Error;
pub use http::MAX_CAPTURE_BYTES as HTTP_MAX_CAPTURE_BYTES;
pub use net::{stage_name as net_stage_name, NetOptions};
pub use rings::{
    auto_ring_bytes, expected_peak, ring_bytes, RingSize, AUTO_RING_MAX, AUTO_RING_MIN,
    DEFAULT_RING_BUDGET,
};
pub use sys::{
    check_privileges, implementation_support, probe_support, tracefs_events, ProbeSupport,
};

/// CLOCK_MONOTONIC now, in nanoseconds (the clock BPF programs stamp
/// events with; ftrace's `mono` trace clock too).
pub fn monotonic_ns() -> u64 {
    decode::Clock::now_mono()
}
pub use syscalls::{
    percentile as syscall_percentile, resolve_syscalls, syscall_name, syscall_nr, SyscallOptions,
};
pub use tracepoint::TracepointOptions;
pub use tracer::{
    CgroupWatch, Filter, ProbeFailure, ProbeStats, TraceOptions, Tracer, DEFAULT_QUEUE_BYTES,
};
