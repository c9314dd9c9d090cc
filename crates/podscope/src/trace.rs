//! `podscope trace`: load probes, stream events to a sink, report losses.

use std::io::{self, BufWriter, ErrorKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podscope_bpf::{Filter, TraceOptions, Tracer};
use podscope_model::{Event, ProbeKind};

use crate::cli::{Format, TraceArgs};
use crate::output::{Columns, JsonLines, Sink};

/// How long one poll waits at most: bounds event latency when traffic is too
/// light to trigger a kernel wakeup.
const POLL: Duration = Duration::from_millis(50);

fn build_options(args: &TraceArgs) -> Result<TraceOptions> {
    let probes = ProbeKind::parse_list(&args.probes)?;
    let mut filter = Filter::default();
    if !args.all {
        if args.pid.is_empty() && args.cgroup.is_empty() && args.comm.is_none() {
            bail!(
                "say what to trace: --all for every process, or --pid PID, --cgroup PATH, --comm NAME \
                 (e.g. podscope trace {} --all)",
                args.probes
            );
        }
        if !args.pid.is_empty() {
            for pid in &args.pid {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    bail!("no process with pid {pid} is running");
                }
            }
            filter.pids = Some(args.pid.clone());
        }
        if !args.cgroup.is_empty() {
            let ids = args
                .cgroup
                .iter()
                .map(|p| crate::cgroup::resolve(p))
                .collect::<Result<Vec<_>>>()?;
            filter.cgroups = Some(ids);
        }
        filter.comm = args.comm.clone();
    }
    Ok(TraceOptions {
        probes,
        filter,
        ring_buffer_bytes: args.ring_buffer_size,
        wakeup_bytes: None,
        interval: args.interval,
        exclude_self: true,
    })
}

fn scope(args: &TraceArgs) -> String {
    if args.all {
        return "all processes".into();
    }
    let mut parts = Vec::new();
    if !args.pid.is_empty() {
        parts.push(format!("pid {:?}", args.pid));
    }
    for c in &args.cgroup {
        parts.push(format!("cgroup {}", c.display()));
    }
    if let Some(c) = &args.comm {
        parts.push(format!("comm {c}"));
    }
    parts.join(" and ")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn run(args: TraceArgs) -> Result<()> {
    let opts = build_options(&args)?;
    podscope_bpf::check_privileges()?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }

    let started = Instant::now();
    let mut tracer = Tracer::new(&opts)?;
    let names: Vec<&str> = opts.probes.iter().map(|p| p.name()).collect();
    eprintln!(
        "podscope: tracing {} ({}); {} probes attached in {} ms. Ctrl-C to stop.",
        names.join(","),
        scope(&args),
        opts.probes.len(),
        tracer.attach_time().as_millis()
    );

    let stdout = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut sink: Box<dyn Sink> = match args.output {
        Format::Columns => Box::new(Columns::new(stdout)),
        Format::Json => Box::new(JsonLines::new(stdout)),
    };
    let node = hostname();
    let deadline = args.duration.map(|d| started + d);
    let mut written: u64 = 0;
    let mut lost_seen = vec![0u64; opts.probes.len()];
    let mut last_loss_check = Instant::now();
    let mut batch: Vec<Event> = Vec::with_capacity(4096);
    let mut pipe_closed = false;

    let emit =
        |sink: &mut Box<dyn Sink>, batch: &mut Vec<Event>, written: &mut u64| -> io::Result<bool> {
            for mut ev in batch.drain(..) {
                if args.max_events.is_some_and(|m| *written >= m) {
                    return Ok(false);
                }
                ev.identity.node.clone_from(&node);
                sink.event(&ev)?;
                *written += 1;
            }
            Ok(args.max_events.is_none_or(|m| *written < m))
        };

    loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let wait = deadline.map_or(POLL, |d| {
            POLL.min(d.saturating_duration_since(Instant::now()))
        });
        tracer.poll(wait, &mut batch)?;
        let more = match emit(&mut sink, &mut batch, &mut written) {
            Ok(more) => more,
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                pipe_closed = true;
                false
            }
            Err(e) => return Err(e).context("writing events"),
        };
        if last_loss_check.elapsed() >= Duration::from_secs(1) || !more {
            last_loss_check = Instant::now();
            report_losses(&tracer, sink.as_mut(), &mut lost_seen).ok();
        }
        if !more {
            break;
        }
        if let Err(e) = sink.flush() {
            if e.kind() == ErrorKind::BrokenPipe {
                pipe_closed = true;
                break;
            }
            return Err(e).context("writing events");
        }
    }

    // Whatever the kernel already handed over is delivered, never dropped.
    if !pipe_closed && args.max_events.is_none_or(|m| written < m) {
        tracer.flush(&mut batch)?;
        if emit(&mut sink, &mut batch, &mut written).is_err() {
            pipe_closed = true;
        }
    }
    if !pipe_closed {
        report_losses(&tracer, sink.as_mut(), &mut lost_seen).ok();
    }
    let stats = tracer.stats();
    let elapsed = started.elapsed().as_nanos() as u64;
    if pipe_closed {
        eprint!("{}", crate::output::summary_text(elapsed, &stats));
    } else {
        sink.summary(elapsed, &stats).ok();
    }
    Ok(())
}

fn report_losses(tracer: &Tracer, sink: &mut dyn Sink, seen: &mut [u64]) -> io::Result<()> {
    for (i, st) in tracer.stats().iter().enumerate() {
        let total = st.total_lost();
        if total > seen[i] {
            sink.lost(st.probe, total - seen[i], total)?;
            seen[i] = total;
        }
    }
    Ok(())
}
