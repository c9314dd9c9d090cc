//! Containers and pods for podscope: which pods run on this node, their
//! containers' host pids and cgroup v2 ids, from the CRI API or from /proc.
//!
//! - [`discover()`] / [`discover_detailed()`]: CRI first (containerd, CRI-O,
//!   cri-dockerd, k3s), a /proc scan as the fallback.
//! - [`cri::CriClient`] (async) and [`blocking::BlockingCriClient`]: the CRI
//!   runtime.v1 API over a unix socket, including the calls a test bed needs
//!   to create pods.
//! - [`cgroup`]: the cgroup v2 mount and ids; [`layout`]: kubelet's cgroup
//!   layouts; [`procscan`]: the /proc fallback.
//! - [`selector`]: kubectl label selectors; [`names`]: name globs and
//!   "did you mean" suggestions.
//!
//! - [`engine`]: plain Docker and podman containers through the Docker
//!   Engine API, each as a pod of its own, added to what CRI or /proc found.
//!   Docker-run Kubernetes pods are still found through cri-dockerd's CRI
//!   socket or the /proc scan, not twice.

pub mod blocking;
pub mod cgroup;
pub mod cri;
pub mod discover;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod layout;
pub mod model;
pub mod names;
pub mod procscan;
pub mod selector;

pub use discover::{discover, discover_async, discover_detailed, Discovery};
pub use error::{Error, Result};
pub use model::{Container, ContainerState, Pod, PodState, Source};
pub use selector::Selector;
