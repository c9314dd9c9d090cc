//! The discovery entry point: CRI first, /proc as the fallback; plain Docker
//! and podman containers added to either.

use std::path::PathBuf;

use crate::cri::CriClient;
use crate::engine::{self, EngineInfo};
use crate::error::Result;
use crate::model::{Pod, Source};
use crate::procscan;

/// What [`discover_detailed`] found, and how.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The pods.
    pub pods: Vec<Pod>,
    /// Where they came from.
    pub source: Source,
    /// The CRI socket used, if any.
    pub endpoint: Option<PathBuf>,
    /// The runtime's name (`containerd`, `cri-o`, ...), if CRI answered.
    pub runtime: Option<String>,
    /// Why CRI was not used, when it was not, and which Docker or podman
    /// socket could not be read: show this to the user.
    pub warning: Option<String>,
    /// The Docker and podman engines that answered; their containers are in
    /// [`pods`](Self::pods) with [`Source::Engine`].
    pub engines: Vec<EngineInfo>,
}

/// Discovers pods. With an explicit `endpoint` (`unix:///path` or `/path`)
/// only that runtime is asked and its failure is an error: a typo should not
/// silently turn into a /proc scan. Without one, the well-known sockets are
/// tried in order and, if none answers, /proc is scanned instead (names,
/// labels and images unknown) and [`Discovery::warning`] says why.
///
/// Either way, the running containers of Docker and podman (`$DOCKER_HOST`
/// or /var/run/docker.sock, `$CONTAINER_HOST` or /run/podman/podman.sock)
/// are added, each as a pod of its own ([`engine`]), except those CRI
/// already reported (cri-dockerd). An engine that cannot be read adds a
/// warning, not an error.
pub async fn discover_async(endpoint: Option<&str>) -> Result<Discovery> {
    let d = kube_pods(endpoint).await?;
    with_engines(d).await
}

/// [`discover_async`] over a CRI connection the caller keeps (a node's pod
/// store lists through one connection, not a new one each time).
pub async fn discover_with(client: &mut CriClient) -> Result<Discovery> {
    let pods = client.pods().await?;
    let d = Discovery {
        pods,
        source: Source::Cri,
        endpoint: Some(client.endpoint().to_owned()),
        runtime: Some(client.runtime_name().to_owned()),
        warning: None,
        engines: Vec::new(),
    };
    with_engines(d).await
}

/// Adds the Docker and podman containers and merges the warnings.
async fn with_engines(mut d: Discovery) -> Result<Discovery> {
    let (engines, warnings) = engine::add_engine_pods(&mut d.pods).await;
    if d.source == Source::Proc
        && !engines.is_empty()
        && d.pods.iter().all(|p| p.source == Source::Engine)
    {
        // The /proc scan found no pod, so no pod is unnamed: nothing to warn about.
        d.warning = None;
    }
    let all: Vec<String> = d.warning.take().into_iter().chain(warnings).collect();
    d.warning = (!all.is_empty()).then(|| all.join("; "));
    d.engines = engines;
    Ok(d)
}

/// Kubernetes pods: from CRI, else from /proc.
async fn kube_pods(endpoint: Option<&str>) -> Result<Discovery> {
    match CriClient::connect_endpoint(endpoint).await {
        Ok(mut client) => {
            let pods = client.pods().await?;
            Ok(Discovery {
                pods,
                source: Source::Cri,
                endpoint: Some(client.endpoint().to_owned()),
                runtime: Some(client.runtime_name().to_owned()),
                warning: None,
                engines: Vec::new(),
            })
        }
        Err(e) if endpoint.is_some() => Err(e),
        Err(e) => Ok(Discovery {
            pods: procscan::scan_proc()?,
            source: Source::Proc,
            endpoint: None,
            runtime: None,
            warning: Some(format!(
                "pods found through /proc, so their names, namespaces, labels and images are unknown, because {e}"
            )),
            engines: Vec::new(),
        }),
    }
}

/// Blocking [`discover_async`]. Must not be called from inside an async runtime.
pub fn discover_detailed(endpoint: Option<&str>) -> Result<Discovery> {
    crate::blocking::runtime()?.block_on(discover_async(endpoint))
}

/// Blocking discovery returning only the pods; see [`discover_detailed`] for
/// the source and the fallback warning.
pub fn discover(endpoint: Option<&str>) -> Result<Vec<Pod>> {
    discover_detailed(endpoint).map(|d| d.pods)
}
