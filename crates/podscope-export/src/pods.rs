//! The pod watcher: lists the node's pods from the container runtime every few
//! seconds, so resource metrics follow pods as they come and go and the series
//! of deleted pods are removed once their grace period is over.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use podscope_runtime::Pod;

use crate::metrics::Metrics;
use crate::Error;

/// Narrows the runtime's pod list to the pods being traced (e.g. a `--pod`/`-l`
/// selection), containers included.
pub type PodSelect = Box<dyn Fn(&[Pod]) -> Vec<Pod> + Send>;

/// A background thread feeding [`Metrics::set_pods`]; told to stop when dropped.
#[derive(Debug)]
pub struct PodWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PodWatcher {
    /// Lists pods through `endpoint` (or the well-known CRI sockets, with a
    /// /proc scan as the fallback) now and then every `period`.
    pub fn spawn(
        metrics: Arc<Metrics>,
        endpoint: Option<String>,
        select: Option<PodSelect>,
        period: Duration,
    ) -> Result<PodWatcher, Error> {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("podscope-pods".into())
            .spawn(move || loop {
                match podscope_runtime::discover_detailed(endpoint.as_deref()) {
                    Ok(d) => {
                        let pods = match &select {
                            Some(f) => f(&d.pods),
                            None => d.pods,
                        };
                        metrics.set_pods(&pods);
                    }
                    // Keep the last pod list: a runtime hiccup must not drop series.
                    Err(e) => metrics.discovery_failed(&e.to_string()),
                }
                match rx.recv_timeout(period) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            })
            .map_err(|source| Error::Thread {
                what: "pod watcher",
                source,
            })?;
        Ok(PodWatcher {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for PodWatcher {
    fn drop(&mut self) {
        // Tell the thread to stop, without waiting: it may be inside a runtime
        // call with a timeout of seconds, and exiting podscope must not wait for it.
        drop(self.stop.take());
        drop(self.thread.take());
    }
}
