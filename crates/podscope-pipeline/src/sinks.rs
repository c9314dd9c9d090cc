//! Sinks that feed the exporters: Prometheus counters (podscope-export's
//! Observer) and OTLP queues, each wrapping the sink that prints; and the
//! sink of `-o none`.

use std::io;

use podscope_bpf::ProbeStats;
use podscope_model::{Event, ProbeKind};

use crate::format::Sink;

/// Counts each event for the exporter, then hands it on.
#[allow(missing_debug_implementations)]
pub struct Observed<S> {
    pub inner: S,
    pub observer: podscope_export::Observer,
    /// For the probes' own counts (self-metrics).
    pub metrics: std::sync::Arc<podscope_export::Metrics>,
}

impl<S: Sink> Sink for Observed<S> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.observer.observe(ev);
        self.inner.event(ev)
    }
    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> io::Result<()> {
        self.inner.lost(probe, delta, total)
    }
    fn summary(&mut self, elapsed_ns: u64, stats: &[ProbeStats]) -> io::Result<()> {
        self.inner.summary(elapsed_ns, stats)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn stats(&mut self, stats: &[ProbeStats]) -> io::Result<()> {
        for st in stats {
            self.metrics
                .probe_stats(st.probe, st.events, st.total_lost());
        }
        self.inner.stats(stats)
    }
}

/// `-o none`: no events; losses and the summary go to stderr.
#[derive(Debug)]
pub struct Discard;

impl Sink for Discard {
    fn event(&mut self, _ev: &Event) -> io::Result<()> {
        Ok(())
    }
    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> io::Result<()> {
        eprintln!(
            "podscope: {} lost {delta} events ({total} in total); try a larger --ring-buffer-size",
            probe.name()
        );
        Ok(())
    }
    fn summary(&mut self, elapsed_ns: u64, stats: &[ProbeStats]) -> io::Result<()> {
        eprint!("{}", crate::format::summary_text(elapsed_ns, stats));
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The body of an OTLP log record: the `DETAILS` column of `-o columns`
/// after the command and kind (`curl exec: /usr/bin/curl ...`), the same for
/// local traces and the agent's exports.
pub fn otlp_log_body() -> podscope_export::otlp::LogBody {
    Box::new(|ev: &Event| format!("{} {}: {}", ev.comm, ev.kind(), crate::format::details(ev)))
}

/// Hands each event to the OTLP exporter (queued, never waits), then on.
#[allow(missing_debug_implementations)]
pub struct Exported<S> {
    pub inner: S,
    pub otlp: podscope_export::OtlpObserver,
}

impl<S: Sink> Sink for Exported<S> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.otlp.observe(ev);
        self.inner.event(ev)
    }
    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> io::Result<()> {
        self.otlp.lost(probe, delta, total);
        self.inner.lost(probe, delta, total)
    }
    fn summary(&mut self, elapsed_ns: u64, stats: &[ProbeStats]) -> io::Result<()> {
        self.inner.summary(elapsed_ns, stats)
    }
    fn flush(&mut self) -> io::Result<()> {
        // Request spans wait for their parents; what is decided goes out.
        self.otlp.tick();
        self.inner.flush()
    }
    fn stats(&mut self, stats: &[ProbeStats]) -> io::Result<()> {
        self.inner.stats(stats)
    }
}
