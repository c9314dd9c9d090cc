//! podscope's exporters: per-pod Prometheus metrics from the probes, container
//! resource usage read from cgroups at scrape time, and the `/metrics` endpoint.
//!
//! - [`Metrics`]: the registry (official `prometheus-client` crate) and every
//!   metric family, labelled `namespace`, `pod`, `container`, `node` (never by
//!   pid, so cardinality stays bounded by the pods on the node).
//! - [`Observer`]: the per-event hot path; one per tracing thread.
//! - [`Exporter`]: metrics + the HTTP endpoint + a pod watcher that keeps the
//!   resource targets current and drops the series of pods gone for longer
//!   than a grace period.
//!
//! Every metric is documented in `docs/metrics.md`.

mod accel;
mod error;
mod exporter;
pub mod hist;
mod labels;
mod metrics;
pub mod otlp; // OTLP export (docs/otlp.md)
mod pods;
mod resources;
mod selfstats;
mod server;
#[doc(hidden)]
pub mod testing;
pub mod text;

pub use error::Error;
pub use exporter::{Exporter, ExporterConfig};
pub use labels::{DiskLabels, PodLabels, ProbeLabels};
pub use metrics::{ContainerSample, Metrics, Observer};
pub use otlp::{Otlp, OtlpConfig, OtlpFlags, OtlpObserver, OtlpStats};
pub use pods::PodSelect;
pub use pods::PodWatcher;
pub use resources::{Host, Usage, UsageReader};
pub use server::Server;
pub use text::Format;
