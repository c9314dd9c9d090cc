//! Ring sizes from a time budget: each probe's ring holds `budget` worth of
//! records at that probe's expected peak rate, so a consumer that stops
//! reading for that long (descheduled on a busy node) loses nothing.

use std::time::Duration;

use podscope_model::ProbeKind;

/// How long each ring holds its probe's peak rate by default.
pub const DEFAULT_RING_BUDGET: Duration = Duration::from_millis(50);

/// The smallest ring auto sizing picks.
pub const AUTO_RING_MIN: u32 = 64 << 10;

/// The largest ring auto sizing picks per probe. Kernel memory is the price:
/// rings are allocated (and charged to the memory cgroup) up front.
pub const AUTO_RING_MAX: u32 = 16 << 20;

/// Before Linux 5.11 BPF memory counts against RLIMIT_MEMLOCK (often 8 MiB
/// for all maps together), so auto sizing stays at the old fixed size there.
const AUTO_RING_MAX_MEMLOCK: u32 = 1 << 20;

/// How a ring's size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSize {
    /// This many bytes for every probe (a power of two, at least 4096).
    Bytes(u32),
    /// Enough for this long at each probe's expected peak rate.
    Budget(Duration),
}

/// The event rate (per second, the whole machine) a probe's ring is sized
/// for, and its typical record size in bytes (including the ring's 8-byte
/// record header). Rates are the storms podscope-bench drives on a 2-core
/// machine, rounded up: the open storm reaches ~600,000/s traced, the tcp
/// storm ~200,000 events/s; execs and exits are bounded by fork+exec cost.
pub fn expected_peak(kind: ProbeKind) -> (u64, u64) {
    let rec = |b: usize| b as u64 + 8;
    match kind {
        ProbeKind::Exec => (20_000, rec(crate::exec::typical_record_bytes())),
        ProbeKind::Exit => (20_000, rec(crate::exit::RECORD_BYTES)),
        ProbeKind::Tcp => (400_000, rec(crate::tcp::RECORD_BYTES)),
        ProbeKind::Open => (1_000_000, rec(crate::open::RECORD_BYTES)),
        ProbeKind::Bio => (200_000, rec(crate::bio::RECORD_BYTES)),
        // A request and its response, each up to the copied 1 KiB (the
        // default capture) plus the record's header.
        ProbeKind::Http | ProbeKind::Grpc => (50_000, rec(1024 + 96)),
        // HTTPS: about half the plain rate (the TLS work bounds it).
        ProbeKind::Tls => (25_000, rec(1024 + 96)),
        ProbeKind::Dns => (20_000, rec(crate::dns::RECORD_BYTES)),
        // A SYN flood at a closed port or a DROP rule under iperf3-sized
        // load: on the order of the tcp storm.
        ProbeKind::Drop => (200_000, rec(crate::drop::RECORD_BYTES)),
        // Per-packet records (--per-packet, --flow) at several stages each
        // of a busy flow; flow totals stay in a map.
        ProbeKind::Net => (200_000, rec(crate::net::RECORD_BYTES)),
        // Aggregates in maps: no ring.
        ProbeKind::Cache => (0, 0),
        // A getppid loop runs ~2,000,000 calls/s per core untraced; traced,
        // the event itself bounds it near the open storm's rate. (Summary
        // mode has no ring: it keeps 4 KiB whatever this says.)
        ProbeKind::Syscalls => (1_000_000, rec(crate::syscalls::RECORD_BYTES)),
        // Records are the fixed part plus strings, mostly well under 256
        // bytes; a busy tracepoint (sched_switch, net_dev_xmit) fires at
        // about this rate on a 2-core machine.
        ProbeKind::Tracepoint => (200_000, rec(256)),
    }
}

/// The ring size auto sizing picks for `kind` with this budget: peak rate x
/// record size x budget, rounded up to a power of two, within
/// [`AUTO_RING_MIN`]..=[`AUTO_RING_MAX`] (1 MiB at most before Linux 5.11).
pub fn auto_ring_bytes(kind: ProbeKind, budget: Duration) -> u32 {
    let (rate, bytes) = expected_peak(kind);
    let want = (rate as u128 * bytes as u128 * budget.as_nanos() / 1_000_000_000) as u64;
    let max = if memlock_accounting() {
        AUTO_RING_MAX_MEMLOCK
    } else {
        AUTO_RING_MAX
    };
    want.max(1)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .clamp(AUTO_RING_MIN as u64, max as u64) as u32
}

/// The ring size `kind` gets.
pub fn ring_bytes(kind: ProbeKind, size: RingSize) -> u32 {
    match size {
        RingSize::Bytes(n) => n,
        RingSize::Budget(b) => auto_ring_bytes(kind, b),
    }
}

/// True on kernels that charge BPF maps to RLIMIT_MEMLOCK (before 5.11).
fn memlock_accounting() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    match (nums.next(), nums.next()) {
        (Some(major), Some(minor)) => (major, minor) < (5, 11),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_sizes_are_powers_of_two_within_bounds_and_grow_with_the_budget() {
        for kind in ProbeKind::ALL {
            let small = auto_ring_bytes(kind, Duration::from_millis(1));
            let big = auto_ring_bytes(kind, Duration::from_secs(1));
            assert!(
                small.is_power_of_two() && small >= AUTO_RING_MIN,
                "{kind}: {small}"
            );
            assert!(
                big <= AUTO_RING_MAX && big >= small,
                "{kind}: {small} {big}"
            );
        }
        if !memlock_accounting() {
            // 50 ms of 1,000,000 opens/s of ~330 bytes: 16.5 MB -> the cap.
            assert_eq!(
                auto_ring_bytes(ProbeKind::Open, DEFAULT_RING_BUDGET),
                AUTO_RING_MAX
            );
            assert!(auto_ring_bytes(ProbeKind::Open, Duration::from_millis(10)) < AUTO_RING_MAX);
        }
        assert_eq!(ring_bytes(ProbeKind::Open, RingSize::Bytes(4096)), 4096);
    }
}
