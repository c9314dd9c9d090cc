//! OpenTelemetry (OTLP) export of traced events: one span per TCP connection,
//! a span for the trace session, and log records for the probes asked for,
//! sent over OTLP/gRPC or OTLP/HTTP from a background thread.
//!
//! - [`OtlpConfig`]: flags and `OTEL_*` variables, resolved and validated.
//! - [`Otlp`]: the running exporter (bounded queues + export thread).
//! - [`OtlpObserver`]: the tracing thread's handle; never blocks on the network.
//!
//! Written on the official protocol messages and gRPC client of the
//! `opentelemetry-proto` crate rather than the SDK: the SDK gives a tracer
//! provider one resource, while podscope reports for many pods at once, and
//! it does not expose the exported/failed/dropped counts podscope reports.
//! docs/otlp.md has the layout, the attributes and the loss accounting.

mod config;
mod convert;
mod queue;
mod transport;
mod worker;
pub mod xtrace;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use podscope_model::{Event, ProbeKind};

pub use config::{
    parse_pairs, OtlpConfig, OtlpFlags, Protocol, Signal, SignalConfig, DEFAULT_QUEUE_SIZE,
    DEFAULT_SESSION_EVENTS,
};
pub use convert::{
    event_attrs, LogBody, SessionInfo, SpanIds, MAX_CONNECTION_EVENTS, MAX_OPEN_CONNECTIONS,
};
pub use queue::SignalStats;
pub use worker::LOG_EVERY;

use convert::{LogItem, SpanItem, Tap};
use queue::Queue;
use worker::Worker;

/// What can go wrong starting the OTLP exporter.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// A flag or variable is wrong; the message names it and what would be right.
    #[error("{0}")]
    Config(String),
    /// The export thread or its runtime could not be started.
    #[error("cannot start the {what}: {source}")]
    Thread {
        /// Which.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// The running exporter.
#[derive(Debug)]
pub struct Otlp {
    cfg: OtlpConfig,
    tap: Arc<Mutex<Tap>>,
    spans: Arc<Queue<SpanItem>>,
    logs: Option<Arc<Queue<LogItem>>>,
    worker: Worker,
}

/// The tracing thread's handle: converts events and queues them.
#[derive(Debug, Clone)]
pub struct OtlpObserver {
    tap: Arc<Mutex<Tap>>,
}

impl OtlpObserver {
    /// One delivered event.
    pub fn observe(&self, ev: &Event) {
        self.tap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(ev);
    }

    /// Periodically (every loop of the trace): queues the request spans
    /// whose parents are decided (docs/otlp.md, "Request traces").
    pub fn tick(&self) {
        self.tap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tick();
    }

    /// CLIENT request spans whose SERVER span is on another node (an
    /// agent's hub session, `remote_hold_ns` set): for the hub to hand on.
    pub fn take_hops(&self) -> Vec<xtrace::Hop> {
        self.tap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_hops()
    }

    /// CLIENT request spans of other nodes, from the hub.
    pub fn push_hops(&self, hops: Vec<xtrace::Hop>) {
        if hops.is_empty() {
            return;
        }
        self.tap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_hops(hops);
    }

    /// A probe lost events (a span event on the session span).
    pub fn lost(&self, probe: ProbeKind, delta: u64, total: u64) {
        self.tap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lost(probe, delta, total);
    }
}

/// Counts at one moment; after [`Otlp::finish`] every item is accounted for:
/// `produced = exported + failed + dropped` for each signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtlpStats {
    /// Spans.
    pub spans: SignalStats,
    /// Log records, when asked for.
    pub logs: Option<SignalStats>,
    /// How request spans were parented.
    pub requests: xtrace::BuildStats,
}

impl fmt::Display for OtlpStats {
    /// The exit report: one line per signal, for stderr.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, what: &str, s: &SignalStats| {
            writeln!(
                f,
                "podscope: OTLP {what}: {} produced, {} exported, {} failed, {} dropped ({} requests sent, {} failed requests)",
                s.produced, s.exported, s.failed, s.dropped, s.requests, s.failed_requests
            )
        };
        if self.requests.server + self.requests.client > 0 {
            write!(f, "{}", self.requests)?;
        }
        line(f, "spans", &self.spans)?;
        if let Some(l) = &self.logs {
            line(f, "logs", l)?;
        }
        Ok(())
    }
}

impl Otlp {
    /// Builds the clients (a bad endpoint fails here; an unreachable backend
    /// does not) and starts the export thread.
    pub fn start(cfg: OtlpConfig, log_body: Option<LogBody>) -> Result<Otlp, OtlpError> {
        let spans = Arc::new(Queue::new(cfg.traces.queue_size, cfg.traces.batch_size));
        let logs = cfg
            .logs
            .as_ref()
            .map(|l| Arc::new(Queue::new(l.queue_size, l.batch_size)));
        let worker = Worker::spawn(&cfg, spans.clone(), logs.clone(), log_body)?;
        let tap = Tap::new(&cfg, spans.clone(), logs.clone());
        Ok(Otlp {
            cfg,
            tap: Arc::new(Mutex::new(tap)),
            spans,
            logs,
            worker,
        })
    }

    /// The tracing thread's handle.
    pub fn observer(&self) -> OtlpObserver {
        OtlpObserver {
            tap: self.tap.clone(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &OtlpConfig {
        &self.cfg
    }

    /// One line on where spans (and logs) go, for the start-up message.
    pub fn describe(&self) -> String {
        let t = &self.cfg.traces;
        let mut s = format!("spans to {} ({})", t.url, t.protocol.name());
        if let Some(l) = &self.cfg.logs {
            let probes: Vec<&str> = self.cfg.log_probes.iter().map(|p| p.name()).collect();
            s.push_str(&format!(
                ", {} events as logs to {} ({})",
                probes.join(","),
                l.url,
                l.protocol.name()
            ));
        }
        s
    }

    /// The counts now.
    pub fn stats(&self) -> OtlpStats {
        OtlpStats {
            spans: self.spans.stats(),
            logs: self.logs.as_ref().map(|l| l.stats()),
            requests: self
                .tap
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .request_stats(),
        }
    }

    /// Ends the session: spans for connections still open, the session span,
    /// then sends what is queued for at most the shutdown timeout (5 s).
    pub fn finish(mut self, info: &SessionInfo, events: u64, lost: u64) -> OtlpStats {
        self.tap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finish(info, events, lost);
        self.worker
            .finish(Instant::now() + self.cfg.shutdown_timeout);
        self.stats()
    }
}
