//! A blocking facade over [`CriClient`] for callers without an async runtime.
//!
//! Each client owns a small current-thread tokio runtime. Do not use it from
//! inside an async runtime (tokio panics on nested `block_on`): use
//! [`CriClient`] there.

use std::path::Path;

use crate::cri::{ContainerSpec, CriClient, PodSpec};
use crate::error::{Error, Result};
use crate::model::Pod;

/// A blocking CRI client.
#[derive(Debug)]
pub struct BlockingCriClient {
    rt: tokio::runtime::Runtime,
    inner: CriClient,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Error::AsyncRuntime)
}

impl BlockingCriClient {
    /// Connects to a socket path. See [`CriClient::connect`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let rt = runtime()?;
        let inner = rt.block_on(CriClient::connect(path))?;
        Ok(BlockingCriClient { rt, inner })
    }

    /// Connects to an explicit endpoint or the first well-known socket that
    /// answers. See [`CriClient::connect_endpoint`].
    pub fn connect_endpoint(endpoint: Option<&str>) -> Result<Self> {
        let rt = runtime()?;
        let inner = rt.block_on(CriClient::connect_endpoint(endpoint))?;
        Ok(BlockingCriClient { rt, inner })
    }

    /// The async client inside.
    pub fn inner(&self) -> &CriClient {
        &self.inner
    }

    /// The socket path.
    pub fn endpoint(&self) -> &Path {
        self.inner.endpoint()
    }

    /// The runtime's name (`containerd`, `cri-o`, ...).
    pub fn runtime_name(&self) -> &str {
        self.inner.runtime_name()
    }

    /// See [`CriClient::pods`].
    pub fn pods(&mut self) -> Result<Vec<Pod>> {
        self.rt.block_on(self.inner.pods())
    }

    /// Every pod, as [`crate::discover_detailed`] finds them, over this
    /// connection (Docker and podman containers included).
    pub fn discover(&mut self) -> Result<crate::Discovery> {
        self.rt
            .block_on(crate::discover::discover_with(&mut self.inner))
    }

    /// See [`CriClient::pod`].
    pub fn pod(&mut self, sandbox_id: &str) -> Result<Pod> {
        self.rt.block_on(self.inner.pod(sandbox_id))
    }

    /// See [`CriClient::run_pod`].
    pub fn run_pod(&mut self, pod: &PodSpec, containers: &[ContainerSpec]) -> Result<Pod> {
        self.rt.block_on(self.inner.run_pod(pod, containers))
    }

    /// See [`CriClient::run_pod_sandbox`].
    pub fn run_pod_sandbox(&mut self, spec: &PodSpec) -> Result<String> {
        self.rt.block_on(self.inner.run_pod_sandbox(spec))
    }

    /// See [`CriClient::create_container`].
    pub fn create_container(
        &mut self,
        sandbox_id: &str,
        pod: &PodSpec,
        spec: &ContainerSpec,
    ) -> Result<String> {
        self.rt
            .block_on(self.inner.create_container(sandbox_id, pod, spec))
    }

    /// See [`CriClient::start_container`].
    pub fn start_container(&mut self, container_id: &str) -> Result<()> {
        self.rt.block_on(self.inner.start_container(container_id))
    }

    /// See [`CriClient::stop_pod_sandbox`].
    pub fn stop_pod_sandbox(&mut self, sandbox_id: &str) -> Result<()> {
        self.rt.block_on(self.inner.stop_pod_sandbox(sandbox_id))
    }

    /// See [`CriClient::remove_pod_sandbox`].
    pub fn remove_pod_sandbox(&mut self, sandbox_id: &str) -> Result<()> {
        self.rt.block_on(self.inner.remove_pod_sandbox(sandbox_id))
    }

    /// See [`CriClient::remove_pod`].
    pub fn remove_pod(&mut self, sandbox_id: &str, pod_cgroup: Option<&str>) -> Result<()> {
        self.rt
            .block_on(self.inner.remove_pod(sandbox_id, pod_cgroup))
    }

    /// See [`CriClient::list_pod_sandboxes`].
    pub fn list_pod_sandboxes(&mut self) -> Result<Vec<crate::cri::types::PodSandbox>> {
        self.rt.block_on(self.inner.list_pod_sandboxes())
    }

    /// See [`CriClient::list_containers`].
    pub fn list_containers(
        &mut self,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<crate::cri::types::Container>> {
        self.rt.block_on(self.inner.list_containers(sandbox_id))
    }
}
