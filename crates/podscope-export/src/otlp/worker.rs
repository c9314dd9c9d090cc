//! The export thread: drains the queues in batches, sends them, retries
//! while the backend is unreachable, logs failures at a bounded rate, and at
//! exit flushes what it can before a deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use tokio::sync::Notify;

use super::config::{OtlpConfig, Signal, SignalConfig};
use super::convert::{group, log_record, scope, LogBody, LogItem, Res, SpanItem, SpanWork};
use super::queue::Queue;
use super::transport::{SendError, Transport};
use super::OtlpError;

/// At most one failure line per signal per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Tells the pipelines to finish.
#[derive(Debug, Default)]
struct Stop {
    flag: AtomicBool,
    deadline: Mutex<Option<Instant>>,
    traces: Notify,
    logs: Notify,
}

impl Stop {
    fn stopping(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn past_deadline(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }
}

/// The running export thread.
#[derive(Debug)]
pub struct Worker {
    thread: Option<JoinHandle<()>>,
    stop: Arc<Stop>,
    spans: Arc<Queue<SpanItem>>,
    logs: Option<Arc<Queue<LogItem>>>,
}

impl Worker {
    /// Builds the clients (so a bad endpoint fails now) and starts the thread.
    pub fn spawn(
        cfg: &OtlpConfig,
        spans: Arc<Queue<SpanItem>>,
        logs: Option<Arc<Queue<LogItem>>>,
        log_body: Option<LogBody>,
    ) -> Result<Worker, OtlpError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OtlpError::Thread {
                what: "OTLP export runtime",
                source: e,
            })?;
        let (traces_tx, logs_tx) = {
            let _guard = rt.enter();
            let t = Transport::new(&cfg.traces)?;
            let l = match &cfg.logs {
                Some(c) => Some(Transport::new(c)?),
                None => None,
            };
            (t, l)
        };
        let stop = Arc::new(Stop::default());
        let traces_cfg = cfg.traces.clone();
        let logs_cfg = cfg.logs.clone();
        let (s, st) = (spans.clone(), stop.clone());
        let lq = logs.clone();
        let thread = std::thread::Builder::new()
            .name("podscope-otlp".into())
            .spawn(move || {
                rt.block_on(async move {
                    let traces = run(traces_cfg, s, &st, &st.traces, build_traces, |r| {
                        traces_tx.send_traces(r)
                    });
                    match (logs_cfg, lq, logs_tx.as_ref()) {
                        (Some(c), Some(q), Some(t)) => {
                            let build = |items| build_logs(items, log_body.as_ref());
                            let logs = run(c, q, &st, &st.logs, build, |r| t.send_logs(r));
                            join(traces, logs).await;
                        }
                        _ => traces.await,
                    }
                });
            })
            .map_err(|e| OtlpError::Thread {
                what: "OTLP export",
                source: e,
            })?;
        Ok(Worker {
            thread: Some(thread),
            stop,
            spans,
            logs,
        })
    }

    /// Sends what is queued until `deadline`, then stops; whatever is left
    /// is counted (failed if an export was attempted, dropped if not).
    pub fn finish(&mut self, deadline: Instant) {
        *self
            .stop
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(deadline);
        self.stop.flag.store(true, Ordering::Release);
        for (q, n) in [(Some(&self.spans.ready), &self.stop.traces)]
            .into_iter()
            .chain([(self.logs.as_ref().map(|l| &l.ready), &self.stop.logs)])
        {
            if let Some(q) = q {
                q.notify_one();
            }
            n.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish(Instant::now());
        }
    }
}

/// Polls two futures to completion on this task (no `select!`: tokio's macros
/// feature is not built).
async fn join(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut a_done, mut b_done) = (false, false);
    std::future::poll_fn(|cx| {
        if !a_done {
            a_done = a.as_mut().poll(cx).is_ready();
        }
        if !b_done {
            b_done = b.as_mut().poll(cx).is_ready();
        }
        if a_done && b_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

fn build_traces(items: Vec<SpanItem>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: group(items)
            .into_iter()
            .map(|(res, spans)| ResourceSpans {
                resource: Some(res.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans: spans.into_iter().map(SpanWork::into_span).collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn build_logs(items: Vec<LogItem>, body: Option<&LogBody>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: group(items)
            .into_iter()
            .map(|(res, log_records)| ResourceLogs {
                resource: Some(res.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records: log_records
                        .into_iter()
                        .map(|w| log_record(w, body))
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// One signal's loop: wait for a batch (or the delay), send it, retry
/// retryable failures with backoff, count everything.
async fn run<T, R, B, F, Fut>(
    cfg: SignalConfig,
    q: Arc<Queue<(Arc<Res>, T)>>,
    stop: &Stop,
    wake: &Notify,
    build: B,
    send: F,
) where
    R: Clone,
    B: Fn(Vec<(Arc<Res>, T)>) -> R,
    F: Fn(R) -> Fut,
    Fut: Future<Output = Result<u64, SendError>>,
{
    let c = &q.counters;
    let mut limiter = Limiter::new(cfg.signal, &cfg.url, LOG_EVERY);
    loop {
        if q.len() < cfg.batch_size && !stop.stopping() {
            let _ = tokio::time::timeout(cfg.delay, q.ready.notified()).await;
        }
        if stop.stopping() && stop.past_deadline() {
            q.drop_all();
            return;
        }
        let batch = q.pop_batch(cfg.batch_size);
        if batch.is_empty() {
            if stop.stopping() {
                return;
            }
            continue;
        }
        let n = batch.len() as u64;
        let req = build(batch);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = send(req.clone());
            let result = match stop.deadline() {
                // At exit an attempt may not outlive the deadline.
                Some(d) => tokio::time::timeout_at(d.into(), attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(SendError {
                            message: "the exit deadline passed during the request".into(),
                            retryable: false,
                        })
                    }),
                None => attempt.await,
            };
            match result {
                Ok(rejected) => {
                    let rejected = rejected.min(n);
                    c.requests.fetch_add(1, Ordering::Relaxed);
                    c.exported.fetch_add(n - rejected, Ordering::Relaxed);
                    c.failed.fetch_add(rejected, Ordering::Relaxed);
                    if let Some(line) = limiter.success(Instant::now(), q.len()) {
                        eprintln!("{line}");
                    }
                    if rejected > 0 {
                        eprintln!(
                            "podscope: the OTLP backend at {} rejected {rejected} of {n} {}",
                            cfg.url,
                            cfg.signal.items()
                        );
                    }
                    break;
                }
                Err(e) => {
                    c.failed_requests.fetch_add(1, Ordering::Relaxed);
                    let give_up = !e.retryable || stop.past_deadline();
                    if let Some(line) = limiter.failure(Instant::now(), &e.message, n, give_up) {
                        eprintln!("{line}");
                    }
                    if give_up {
                        c.failed.fetch_add(n, Ordering::Relaxed);
                        break;
                    }
                    // Sleep, but wake at once when asked to stop.
                    let mut pause = backoff;
                    if let Some(d) = stop.deadline() {
                        pause = pause.min(d.saturating_duration_since(Instant::now()));
                    }
                    let _ = tokio::time::timeout(pause, wake.notified()).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Decides which failure lines get printed: the first, then at most one per
/// period with a count of the muted ones, and one line when exports work again.
#[derive(Debug)]
pub struct Limiter {
    what: String,
    every: Duration,
    last: Option<Instant>,
    muted: u64,
    failing_since: Option<Instant>,
    failures: u64,
}

impl Limiter {
    /// A limiter for one signal's endpoint.
    pub fn new(signal: Signal, url: &str, every: Duration) -> Limiter {
        Limiter {
            what: format!("OTLP {} export to {url}", signal.items()),
            every,
            last: None,
            muted: 0,
            failing_since: None,
            failures: 0,
        }
    }

    /// A failed request of `n` items; returns the line to print, if any.
    pub fn failure(&mut self, now: Instant, why: &str, n: u64, gave_up: bool) -> Option<String> {
        self.failures += 1;
        self.failing_since.get_or_insert(now);
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.muted += 1;
            return None;
        }
        let muted = std::mem::take(&mut self.muted);
        self.last = Some(now);
        let what = if gave_up {
            format!("{n} items counted as failed")
        } else {
            format!("{n} items kept, retrying")
        };
        let mut line = format!("podscope: {} failed: {why} ({what}", self.what);
        if muted > 0 {
            line.push_str(&format!("; {muted} more failures since the last report"));
        }
        line.push_str(&format!(
            "; at most one such line per {}s)",
            self.every.as_secs()
        ));
        Some(line)
    }

    /// A successful request; after failures, one line saying it works again.
    pub fn success(&mut self, now: Instant, queued: usize) -> Option<String> {
        let since = self.failing_since.take()?;
        let failures = std::mem::take(&mut self.failures);
        self.muted = 0;
        self.last = None;
        Some(format!(
            "podscope: {} works again after {failures} failed requests over {:.1}s; sending the {queued} queued items",
            self.what,
            now.duration_since(since).as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_at_a_bounded_rate() {
        let mut l = Limiter::new(Signal::Traces, "http://x:4317", Duration::from_secs(10));
        let t0 = Instant::now();
        let first = l.failure(t0, "refused", 5, false).unwrap();
        assert!(
            first.contains("OTLP spans export to http://x:4317 failed: refused"),
            "{first}"
        );
        assert!(first.contains("5 items kept, retrying"), "{first}");
        for s in 1..10 {
            assert!(l
                .failure(t0 + Duration::from_secs(s), "refused", 5, false)
                .is_none());
        }
        let next = l
            .failure(t0 + Duration::from_secs(10), "refused", 5, false)
            .unwrap();
        assert!(next.contains("9 more failures"), "{next}");
        let back = l.success(t0 + Duration::from_secs(12), 42).unwrap();
        assert!(
            back.contains("works again after 11 failed requests over 12.0s"),
            "{back}"
        );
        assert!(back.contains("42 queued"), "{back}");
        assert!(l.success(t0 + Duration::from_secs(13), 0).is_none());
        // A new outage is reported at once.
        assert!(l
            .failure(t0 + Duration::from_secs(14), "refused", 1, true)
            .unwrap()
            .contains("counted as failed"));
    }
}
