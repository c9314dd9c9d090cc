//! Everything `--metrics-listen` needs, started with one call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{Error, Metrics, Observer, PodSelect, PodWatcher, Server};

/// How to run the exporter.
pub struct ExporterConfig {
    /// Where to serve `/metrics`.
    pub listen: SocketAddr,
    /// The `node` label.
    pub node: String,
    /// How long the series of a pod that went away are kept.
    pub grace: Duration,
    /// How often the pod list is refreshed.
    pub refresh: Duration,
    /// The CRI endpoint; None finds it (or falls back to /proc).
    pub runtime_endpoint: Option<String>,
    /// Narrows the pods (and containers) resource metrics are read for.
    pub select: Option<PodSelect>,
}

impl std::fmt::Debug for ExporterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterConfig")
            .field("listen", &self.listen)
            .field("node", &self.node)
            .field("grace", &self.grace)
            .field("refresh", &self.refresh)
            .field("runtime_endpoint", &self.runtime_endpoint)
            .field("select", &self.select.as_ref().map(|_| "fn"))
            .finish()
    }
}

/// A running exporter: metrics, the HTTP endpoint and the pod watcher.
#[derive(Debug)]
pub struct Exporter {
    metrics: Arc<Metrics>,
    // Dropped first: stop serving before the watcher goes.
    server: Server,
    _watcher: PodWatcher,
}

impl Exporter {
    /// Binds the address, then starts the server and the pod watcher.
    pub fn start(cfg: ExporterConfig) -> Result<Exporter, Error> {
        let metrics = Metrics::new(cfg.node, cfg.grace);
        let server = Server::start(cfg.listen, metrics.clone())?;
        let watcher = PodWatcher::spawn(
            metrics.clone(),
            cfg.runtime_endpoint,
            cfg.select,
            cfg.refresh,
        )?;
        Ok(Exporter {
            metrics,
            server,
            _watcher: watcher,
        })
    }

    /// The address `/metrics` is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A hot-path handle for the tracing thread.
    pub fn observer(&self) -> Observer {
        self.metrics.observer()
    }
}
