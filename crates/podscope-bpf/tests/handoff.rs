//! The kernel-to-user hand-off with a stalled consumer: the drain thread
//! keeps emptying the kernel rings while nobody calls `poll`, up to the
//! user-space queue's bound, and counts what is beyond it. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::*;
use podscope_bpf::{ProbeStats, TraceOptions};
use podscope_model::{EventData, ProbeKind};

const EXECS: u64 = 1000;

/// Runs EXECS execs of /bin/true (plus the shell's own exec) in a fresh
/// cgroup without polling, then polls until quiet and flushes.
fn stalled_storm(ring_buffer_bytes: u32, queue_bytes: usize) -> (ProbeStats, Vec<String>) {
    let cg = TestCgroup::new();
    let mut t = tracer(TraceOptions {
        ring_buffer_bytes,
        queue_bytes,
        ..cg.options(&[ProbeKind::Exec])
    });
    let started = Instant::now();
    let script =
        format!("exec /bin/sh -c 'i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done'");
    // The consumer is stalled for the whole storm: nothing calls poll.
    assert!(cg.run(&script).success());
    let stalled = started.elapsed();
    let mut all = collect_until(&mut t, Duration::from_millis(500), usize::MAX, |_| false);
    t.flush(&mut all).unwrap();
    let s = t.stats()[0];
    eprintln!("consumer stalled {stalled:?} during {EXECS} execs: {s:?}");
    assert_eq!(
        s.events,
        all.len() as u64,
        "every event counted was delivered"
    );
    let files = all
        .iter()
        .map(|e| match &e.data {
            EventData::Exec(x) => x.filename.clone(),
            other => panic!("not an exec: {other:?}"),
        })
        .collect();
    (s, files)
}

/// The kernel ring holds about 190 exec records (64 KiB); the storm makes
/// 1001 while nobody polls. Before the drain thread, the ring overflowed;
/// now all of them wait in the user-space queue.
#[test]
fn a_stalled_consumer_loses_nothing_while_the_queue_holds() {
    if !require_root() {
        return;
    }
    let (s, files) = stalled_storm(64 << 10, 16 << 20);
    assert_eq!(
        s.lost, 0,
        "the drain thread kept the kernel ring from filling: {s:?}"
    );
    assert_eq!(s.queue_full, 0, "16 MiB holds every record: {s:?}");
    assert_eq!(
        s.events,
        EXECS + 1,
        "every exec delivered after the stall: {s:?}"
    );
    assert_eq!(
        files.iter().filter(|f| *f == "/bin/true").count() as u64,
        EXECS
    );
}

/// A queue of 32 KiB holds about a hundred exec records: those are
/// delivered (the first ones, the shell's exec included), every record
/// beyond the bound is counted per probe as queue_full, never silently lost:
/// produced = delivered + counted, exactly.
#[test]
fn a_stalled_consumer_beyond_the_queue_bound_is_counted_never_silent() {
    if !require_root() {
        return;
    }
    let (s, files) = stalled_storm(1 << 20, 32 << 10);
    assert_eq!(s.lost, 0, "a 1 MiB ring holds the whole storm: {s:?}");
    assert!(
        s.queue_full > 0,
        "a 32 KiB queue cannot hold 1001 execs: {s:?}"
    );
    assert!(
        s.events >= 50 && s.events * 300 <= 32 << 10,
        "the queue was used up to its bound (~330 bytes per record): {s:?}"
    );
    assert_eq!(
        s.events + s.total_lost(),
        EXECS + 1,
        "produced = delivered + counted: {s:?}"
    );
    assert_eq!(
        files[0], "/bin/sh",
        "the earliest records are the ones kept"
    );
}

/// A consumer that is behind takes a long queue a part at a time: one poll
/// hands over at most about 16,384 records (whole batches of up to 4,096),
/// the rest wait as raw records, and every event still arrives. Before,
/// one poll decoded all of them at once (a storm of 300,000 events/s held
/// 170 MB of decoded events in the agent).
#[test]
fn one_poll_takes_a_bounded_part_of_a_long_queue() {
    if !require_root() {
        return;
    }
    const OPENS: usize = 40_000;
    let cg = TestCgroup::new();
    let mut t = tracer(TraceOptions {
        queue_bytes: 64 << 20,
        ..cg.options(&[ProbeKind::Open])
    });
    let script = format!(
        "exec /bin/sh -c 'i=0; while [ $i -lt {OPENS} ]; do : < /etc/hostname; i=$((i+1)); done'"
    );
    // Nobody polls during the storm: the drain thread queues it all.
    assert!(cg.run(&script).success());
    let mut first = Vec::new();
    t.poll(Duration::from_millis(500), &mut first).unwrap();
    let mut all = first.clone();
    all.extend(collect_until(
        &mut t,
        Duration::from_millis(500),
        usize::MAX,
        |_| false,
    ));
    t.flush(&mut all).unwrap();
    let hostname = |evs: &[podscope_model::Event]| {
        evs.iter()
            .filter(|e| matches!(&e.data, EventData::Open(o) if o.path == "/etc/hostname"))
            .count()
    };
    eprintln!(
        "first poll: {} events; in all {} ({} of /etc/hostname)",
        first.len(),
        all.len(),
        hostname(&all)
    );
    assert!(
        !first.is_empty() && first.len() <= 16_384 + 4_096,
        "one poll took {} records",
        first.len()
    );
    assert!(
        all.len() > first.len(),
        "the queue held more than one poll's part"
    );
    assert_eq!(hostname(&all), OPENS, "every open delivered");
    let s = t.stats()[0];
    assert_eq!((s.lost, s.queue_full), (0, 0), "{s:?}");
}
