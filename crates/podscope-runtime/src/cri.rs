//! A client for the Kubernetes CRI API (runtime.v1) over a unix socket, and
//! the mapping from sandboxes and containers to [`Pod`]s.
//!
//! Discovery calls `ListPodSandbox`, `ListContainers` and the verbose
//! `PodSandboxStatus`/`ContainerStatus`: only the verbose `info["info"]` JSON
//! holds the host pids and the OCI `runtimeSpec` (with `cgroupsPath`).
//! containerd and CRI-O both fill it.
//!
//! The write calls (`RunPodSandbox`, `CreateContainer`, ...) are here for test
//! beds: they build requests the way kubelet does (pod cgroup parent
//! `/kubepods/besteffort/pod<uid>`, the `io.kubernetes.*` labels kubelet adds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use api::runtime_service_client::RuntimeServiceClient;

use crate::cgroup::{self, CgroupMount};
use crate::endpoint::{parse_endpoint, WELL_KNOWN_SOCKETS};
use crate::error::{Error, Result, Tried};
use crate::layout::parse_kube_cgroup;
use crate::model::{Container, ContainerState, Pod, PodState, Source};

/// The CRI runtime.v1 messages and client, generated from `proto/api.proto`
/// (kubernetes/cri-api `pkg/apis/runtime/v1/api.proto`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]
pub mod types {
    tonic::include_proto!("runtime.v1");
}
use types as api;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A socket that accepts but never answers (not a CRI server, a hung
/// runtime) must not stall discovery for the full call timeout.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Big nodes list many containers; the gRPC default limit is 4 MiB.
const MAX_MESSAGE: usize = 64 << 20;

/// Labels kubelet adds for its own bookkeeping; not the pod's labels.
const KUBELET_LABEL_PREFIX: &str = "io.kubernetes.";

/// A connected CRI runtime service client.
#[derive(Debug, Clone)]
pub struct CriClient {
    client: RuntimeServiceClient<Channel>,
    path: PathBuf,
    runtime_name: String,
    runtime_version: String,
}

/// What the runtime says about one pod sandbox: its status and the parsed verbose info.
#[derive(Debug, Clone)]
pub struct SandboxDetails {
    /// `PodSandboxStatus.status`.
    pub status: api::PodSandboxStatus,
    /// `info["info"]` parsed as JSON (`Value::Null` when absent or not JSON).
    pub info: Value,
}

/// What the runtime says about one container.
#[derive(Debug, Clone)]
pub struct ContainerDetails {
    /// The sandbox the container belongs to (from `ListContainers`).
    pub sandbox_id: String,
    /// `ContainerStatus.status`.
    pub status: api::ContainerStatus,
    /// `info["info"]` parsed as JSON (`Value::Null` when absent or not JSON).
    pub info: Value,
}

fn render_error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

fn parse_info(info: &std::collections::HashMap<String, String>) -> Value {
    info.get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

fn info_pid(info: &Value) -> Option<u32> {
    info.get("pid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
}

fn info_str<'a>(info: &'a Value, pointer: &str) -> Option<&'a str> {
    info.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A cgroup path from an OCI `cgroupsPath`: as is for cgroupfs, expanded for systemd's `slice:prefix:name`.
fn cgroup_path_from_spec(cgroups_path: &str) -> Option<String> {
    if cgroups_path.starts_with('/') {
        Some(cgroups_path.to_owned())
    } else {
        cgroup::expand_systemd_cgroups_path(cgroups_path)
    }
}

fn container_state(s: i32) -> ContainerState {
    match api::ContainerState::try_from(s) {
        Ok(api::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(api::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(api::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

fn pod_state(s: i32) -> PodState {
    match api::PodSandboxState::try_from(s) {
        Ok(api::PodSandboxState::SandboxReady) => PodState::Ready,
        Ok(api::PodSandboxState::SandboxNotready) => PodState::NotReady,
        Err(_) => PodState::Unknown,
    }
}

/// Builds a [`Pod`] from what the runtime said (pure: no /proc or /sys access).
/// Pids and cgroup paths come from the verbose info; [`resolve_cgroups`] then
/// checks them against /proc and fills in cgroup ids.
pub fn pod_from_cri(
    runtime: &str,
    sandbox: &SandboxDetails,
    containers: &[ContainerDetails],
) -> Pod {
    let st = &sandbox.status;
    let meta = st.metadata.clone().unwrap_or_default();
    let label = |k: &str| st.labels.get(k).cloned().unwrap_or_default();
    let uid = if meta.uid.is_empty() {
        label("io.kubernetes.pod.uid")
    } else {
        meta.uid
    };
    let name = if meta.name.is_empty() {
        label("io.kubernetes.pod.name")
    } else {
        meta.name
    };
    let namespace = if meta.namespace.is_empty() {
        label("io.kubernetes.pod.namespace")
    } else {
        meta.namespace
    };
    let labels: BTreeMap<String, String> = st
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with(KUBELET_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A hostNetwork pod's address is the node's: it names no one pod.
    let host_network = st
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network == api::NamespaceMode::Node as i32);
    let ip = st
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .filter(|ip| !ip.is_empty() && !host_network);

    // The pod cgroup as configured: cgroup_parent is the pod level.
    let configured_pod_cgroup =
        info_str(&sandbox.info, "/config/linux/cgroup_parent").and_then(|p| {
            if p.starts_with('/') {
                Some(p.to_owned())
            } else {
                cgroup::expand_slice(p)
            }
        });

    // Keep one container per name: the running one, else the newest attempt.
    let mut by_name: BTreeMap<String, &ContainerDetails> = BTreeMap::new();
    for c in containers.iter().filter(|c| c.sandbox_id == st.id) {
        let name = c
            .status
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let better = match by_name.get(&name) {
            None => true,
            Some(old) => {
                let running = |d: &ContainerDetails| {
                    d.status.state == api::ContainerState::ContainerRunning as i32
                };
                (running(c), c.status.created_at) > (running(old), old.status.created_at)
            }
        };
        if better {
            by_name.insert(name, c);
        }
    }

    let mut out_containers: Vec<Container> = by_name
        .into_iter()
        .map(|(name, c)| {
            let s = &c.status;
            let image = info_str(
                &c.info,
                "/runtimeSpec/annotations/io.kubernetes.cri.image-name",
            )
            .map(str::to_owned)
            .or_else(|| {
                s.image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .filter(|i| !i.is_empty())
            })
            .unwrap_or_else(|| s.image_ref.clone());
            let name = if name.is_empty() {
                crate::model::short_id(&s.id).to_owned()
            } else {
                name
            };
            Container {
                id: s.id.clone(),
                name,
                image,
                pid: info_pid(&c.info),
                cgroup_path: info_str(&c.info, "/runtimeSpec/linux/cgroupsPath")
                    .and_then(cgroup_path_from_spec),
                cgroup_id: None,
                state: container_state(s.state),
            }
        })
        .collect();
    out_containers.sort_by(|a, b| a.name.cmp(&b.name));

    let pod_cgroup = configured_pod_cgroup.or_else(|| {
        info_str(&sandbox.info, "/runtimeSpec/linux/cgroupsPath")
            .and_then(cgroup_path_from_spec)
            .and_then(|p| parse_kube_cgroup(&p).map(|k| k.pod_cgroup))
    });

    Pod {
        uid,
        name,
        namespace,
        labels,
        runtime: runtime.to_owned(),
        sandbox_id: Some(st.id.clone()),
        state: pod_state(st.state),
        ip,
        sandbox_pid: info_pid(&sandbox.info),
        cgroup_path: pod_cgroup,
        cgroup_id: None,
        source: Source::Cri,
        containers: out_containers,
    }
}

/// Checks pids against /proc and fills in cgroup paths and ids: a live
/// process's own `0::` cgroup wins over the configured `cgroupsPath`
/// (they differ when the runtime nests, e.g. CRI-O's `container` sub-cgroup).
/// A pid that no longer exists is cleared.
pub fn resolve_cgroups(pod: &mut Pod, mount: Option<&CgroupMount>) {
    // A path that climbs above the root ("/../..") was read from inside a
    // cgroup namespace of our own: it names no directory we can open, so the
    // runtime's cgroupsPath is kept instead.
    let live_path = |pid: u32| {
        cgroup::cgroup_path_of_pid(pid)
            .ok()
            .filter(|p| !p.starts_with("/.."))
    };
    if let Some(pid) = pod.sandbox_pid {
        match live_path(pid) {
            Some(p) => {
                if let Some(k) = parse_kube_cgroup(&p) {
                    pod.cgroup_path = Some(k.pod_cgroup);
                }
            }
            None if !Path::new(&format!("/proc/{pid}")).exists() => pod.sandbox_pid = None,
            None => {}
        }
    }
    for c in &mut pod.containers {
        if let Some(pid) = c.pid {
            match live_path(pid) {
                // On a hybrid node a runtime may leave processes in the v2 root ("/").
                Some(p) if p != "/" => c.cgroup_path = Some(p),
                Some(_) => {}
                None if !Path::new(&format!("/proc/{pid}")).exists() => c.pid = None,
                None => {}
            }
        }
        if let (Some(m), Some(p)) = (mount, &c.cgroup_path) {
            c.cgroup_id = cgroup::cgroup_id_of_path(m, p).ok();
        }
    }
    if pod.cgroup_path.is_none() {
        pod.cgroup_path = pod
            .containers
            .iter()
            .filter_map(|c| c.cgroup_path.as_deref())
            .find_map(|p| parse_kube_cgroup(p).map(|k| k.pod_cgroup));
    }
    if let (Some(m), Some(p)) = (mount, &pod.cgroup_path) {
        pod.cgroup_id = cgroup::cgroup_id_of_path(m, p).ok();
    }
}

/// Reads a uuid from the kernel, for pod uids.
pub fn new_uid() -> Result<String> {
    let path = "/proc/sys/kernel/random/uuid";
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io(path, e))
}

/// A pod to create (test beds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid (a UUID).
    pub uid: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Share the host's network namespace (no pod IP, empty hostname).
    pub host_network: bool,
    /// Where the runtime writes container logs; created if missing.
    pub log_directory: Option<PathBuf>,
}

impl PodSpec {
    /// A pod with a fresh uid.
    pub fn new(name: &str, namespace: &str) -> Result<Self> {
        Ok(PodSpec {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: new_uid()?,
            labels: BTreeMap::new(),
            host_network: false,
            log_directory: None,
        })
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The pod-level cgroup kubelet would use with the cgroupfs driver (BestEffort QoS).
    pub fn cgroup_parent(&self) -> String {
        format!("/kubepods/besteffort/pod{}", self.uid)
    }

    fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("name", &self.name),
            ("namespace", &self.namespace),
            ("uid", &self.uid),
        ] {
            if v.is_empty() {
                return Err(Error::Spec(format!("pod {what} is empty")));
            }
        }
        Ok(())
    }

    /// The sandbox config, the way kubelet builds it.
    pub fn sandbox_config(&self) -> api::PodSandboxConfig {
        let mut labels: std::collections::HashMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert("io.kubernetes.pod.name".into(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), self.uid.clone());
        let network = if self.host_network {
            api::NamespaceMode::Node
        } else {
            api::NamespaceMode::Pod
        };
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // hostNetwork pods must send an empty hostname.
            hostname: if self.host_network {
                String::new()
            } else {
                self.name.clone()
            },
            log_directory: self
                .log_directory
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            labels,
            annotations: [(
                "kubernetes.io/config.source".to_owned(),
                "podscope-testbed".to_owned(),
            )]
            .into(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: network as i32,
                        pid: api::NamespaceMode::Container as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A container to create in a [`PodSpec`]'s sandbox (test beds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Image reference, e.g. `localhost/busybox:latest`.
    pub image: String,
    /// Command and arguments (replace the image's entrypoint and cmd when non-empty).
    pub command: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Host paths bind-mounted into the container: (host path, container
    /// path, read-only). Test pods run the host's programs this way
    /// (the host's /usr, read-only).
    pub mounts: Vec<(String, String, bool)>,
}

impl ContainerSpec {
    /// A container running `command` in `image`.
    pub fn new(name: &str, image: &str, command: &[&str]) -> Self {
        ContainerSpec {
            name: name.to_owned(),
            image: image.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            mounts: Vec::new(),
        }
    }

    /// Adds a bind mount of `host` at `path` in the container.
    pub fn mount(mut self, host: &str, path: &str, read_only: bool) -> Self {
        self.mounts
            .push((host.to_owned(), path.to_owned(), read_only));
        self
    }

    fn config(&self, pod: &PodSpec) -> api::ContainerConfig {
        let labels = [
            ("io.kubernetes.container.name", self.name.as_str()),
            ("io.kubernetes.pod.name", pod.name.as_str()),
            ("io.kubernetes.pod.namespace", pod.namespace.as_str()),
            ("io.kubernetes.pod.uid", pod.uid.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let network = if pod.host_network {
            api::NamespaceMode::Node
        } else {
            api::NamespaceMode::Pod
        };
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: self.name.clone(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: self.command.clone(),
            envs: self
                .env
                .iter()
                .map(|(k, v)| api::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            mounts: self
                .mounts
                .iter()
                .map(|(host, path, ro)| api::Mount {
                    host_path: host.clone(),
                    container_path: path.clone(),
                    readonly: *ro,
                    ..Default::default()
                })
                .collect(),
            labels,
            log_path: pod
                .log_directory
                .as_ref()
                .map(|_| format!("{}/0.log", self.name))
                .unwrap_or_default(),
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: network as i32,
                        pid: api::NamespaceMode::Container as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

async fn connect_channel(path: &Path) -> Result<Channel> {
    let socket = path.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| Error::Connect {
            path: path.to_owned(),
            reason: render_error_chain(&e),
        })
}

impl CriClient {
    /// Connects to a CRI socket and checks it answers `Version`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let channel = connect_channel(&path).await?;
        let client = RuntimeServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut me = CriClient {
            client,
            path,
            runtime_name: String::new(),
            runtime_version: String::new(),
        };
        let v = match tokio::time::timeout(HELLO_TIMEOUT, me.version()).await {
            Ok(v) => v?,
            Err(_) => {
                return Err(Error::Rpc {
                    call: "Version",
                    path: me.path,
                    code: tonic::Code::DeadlineExceeded,
                    message: format!(
                        "no answer within {}s: is this a CRI socket?",
                        HELLO_TIMEOUT.as_secs()
                    ),
                })
            }
        };
        me.runtime_name = v.runtime_name;
        me.runtime_version = v.runtime_version;
        Ok(me)
    }

    /// Connects to an explicit endpoint (`unix:///path` or `/path`), or else
    /// to the first of [`WELL_KNOWN_SOCKETS`] that answers. The error lists
    /// every socket tried and why it was not used.
    pub async fn connect_endpoint(endpoint: Option<&str>) -> Result<Self> {
        if let Some(e) = endpoint {
            return CriClient::connect(parse_endpoint(e)?).await;
        }
        let mut tried = Vec::new();
        for candidate in WELL_KNOWN_SOCKETS {
            let path = PathBuf::from(candidate);
            let reason = match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
                Err(e) => e.to_string(),
                Ok(m) if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                    "not a socket".to_owned()
                }
                Ok(_) => match CriClient::connect(&path).await {
                    Ok(c) => return Ok(c),
                    Err(e) => e.to_string(),
                },
            };
            tried.push(Tried { path, reason });
        }
        Err(Error::NoRuntime { tried })
    }

    /// The socket path.
    pub fn endpoint(&self) -> &Path {
        &self.path
    }

    /// The runtime's name as it reports it (`containerd`, `cri-o`, `docker`).
    pub fn runtime_name(&self) -> &str {
        &self.runtime_name
    }

    /// The runtime's version.
    pub fn runtime_version(&self) -> &str {
        &self.runtime_version
    }

    fn rpc_err(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> Error + '_ {
        move |s| Error::Rpc {
            call,
            path: self.path.clone(),
            code: s.code(),
            message: s.message().to_owned(),
        }
    }

    /// `Version`.
    pub async fn version(&mut self) -> Result<api::VersionResponse> {
        let req = api::VersionRequest {
            version: "v1".to_owned(),
        };
        let r = self.client.version(req).await;
        r.map(tonic::Response::into_inner)
            .map_err(self.rpc_err("Version"))
    }

    /// `ListPodSandbox` (all sandboxes, ready or not).
    pub async fn list_pod_sandboxes(&mut self) -> Result<Vec<api::PodSandbox>> {
        let r = self
            .client
            .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
            .await;
        Ok(r.map_err(self.rpc_err("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    /// `ListContainers`, optionally of one sandbox.
    pub async fn list_containers(
        &mut self,
        sandbox_id: Option<&str>,
    ) -> Result<Vec<api::Container>> {
        let filter = sandbox_id.map(|id| api::ContainerFilter {
            pod_sandbox_id: id.to_owned(),
            ..Default::default()
        });
        let r = self
            .client
            .list_containers(api::ListContainersRequest { filter })
            .await;
        Ok(r.map_err(self.rpc_err("ListContainers"))?
            .into_inner()
            .containers)
    }

    /// Verbose `PodSandboxStatus`.
    pub async fn pod_sandbox_status(&mut self, sandbox_id: &str) -> Result<SandboxDetails> {
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            verbose: true,
        };
        let r = self.client.pod_sandbox_status(req).await;
        let r = r.map_err(self.rpc_err("PodSandboxStatus"))?.into_inner();
        let status = r.status.ok_or_else(|| Error::BadResponse {
            call: "PodSandboxStatus",
            path: self.path.clone(),
            reason: format!("no status for sandbox {sandbox_id}"),
        })?;
        Ok(SandboxDetails {
            status,
            info: parse_info(&r.info),
        })
    }

    /// Verbose `ContainerStatus`.
    pub async fn container_status(
        &mut self,
        container_id: &str,
        sandbox_id: &str,
    ) -> Result<ContainerDetails> {
        let req = api::ContainerStatusRequest {
            container_id: container_id.to_owned(),
            verbose: true,
        };
        let r = self.client.container_status(req).await;
        let r = r.map_err(self.rpc_err("ContainerStatus"))?.into_inner();
        let status = r.status.ok_or_else(|| Error::BadResponse {
            call: "ContainerStatus",
            path: self.path.clone(),
            reason: format!("no status for container {container_id}"),
        })?;
        Ok(ContainerDetails {
            sandbox_id: sandbox_id.to_owned(),
            status,
            info: parse_info(&r.info),
        })
    }

    /// Every pod the runtime knows, with containers, pids and cgroup ids.
    /// Several sandboxes of one pod uid (kubelet keeps stopped ones until
    /// garbage collection) are reduced to the ready one, else the newest.
    pub async fn pods(&mut self) -> Result<Vec<Pod>> {
        let mut sandboxes = self.list_pod_sandboxes().await?;
        sandboxes.sort_by_key(|s| {
            (
                s.state == api::PodSandboxState::SandboxReady as i32,
                s.created_at,
            )
        });
        let mut newest: BTreeMap<String, api::PodSandbox> = BTreeMap::new();
        for s in sandboxes {
            let uid = s
                .metadata
                .as_ref()
                .map(|m| m.uid.clone())
                .unwrap_or_default();
            let key = if uid.is_empty() { s.id.clone() } else { uid };
            newest.insert(key, s); // sorted ascending: the best one comes last
        }
        let containers = self.list_containers(None).await?;
        let mount = cgroup::cgroup2_mount().ok();
        let mut pods = Vec::with_capacity(newest.len());
        for s in newest.values() {
            // A sandbox or container removed between the list and the status call is skipped.
            let details = match self.pod_sandbox_status(&s.id).await {
                Ok(d) => d,
                Err(Error::Rpc {
                    code: tonic::Code::NotFound,
                    ..
                }) => continue,
                Err(e) => return Err(e),
            };
            let mut cds = Vec::new();
            for c in containers.iter().filter(|c| c.pod_sandbox_id == s.id) {
                match self.container_status(&c.id, &s.id).await {
                    Ok(d) => cds.push(d),
                    Err(Error::Rpc {
                        code: tonic::Code::NotFound,
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
            let mut pod = pod_from_cri(&self.runtime_name, &details, &cds);
            resolve_cgroups(&mut pod, mount.as_ref());
            pods.push(pod);
        }
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(pods)
    }

    /// One pod, by sandbox id.
    pub async fn pod(&mut self, sandbox_id: &str) -> Result<Pod> {
        let details = self.pod_sandbox_status(sandbox_id).await?;
        let mut cds = Vec::new();
        for c in self.list_containers(Some(sandbox_id)).await? {
            cds.push(self.container_status(&c.id, sandbox_id).await?);
        }
        let mut pod = pod_from_cri(&self.runtime_name, &details, &cds);
        resolve_cgroups(&mut pod, cgroup::cgroup2_mount().ok().as_ref());
        Ok(pod)
    }

    /// `RunPodSandbox`; returns the sandbox id. Creates the log directory first.
    pub async fn run_pod_sandbox(&mut self, spec: &PodSpec) -> Result<String> {
        spec.validate()?;
        if let Some(dir) = &spec.log_directory {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let req = api::RunPodSandboxRequest {
            config: Some(spec.sandbox_config()),
            runtime_handler: String::new(),
        };
        let r = self.client.run_pod_sandbox(req).await;
        Ok(r.map_err(self.rpc_err("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// `CreateContainer` in a sandbox made from `pod`; returns the container id.
    pub async fn create_container(
        &mut self,
        sandbox_id: &str,
        pod: &PodSpec,
        spec: &ContainerSpec,
    ) -> Result<String> {
        if spec.name.is_empty() || spec.image.is_empty() {
            return Err(Error::Spec(
                "container name and image must not be empty".into(),
            ));
        }
        let req = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(spec.config(pod)),
            sandbox_config: Some(pod.sandbox_config()),
        };
        let r = self.client.create_container(req).await;
        Ok(r.map_err(self.rpc_err("CreateContainer"))?
            .into_inner()
            .container_id)
    }

    /// `StartContainer`.
    pub async fn start_container(&mut self, container_id: &str) -> Result<()> {
        let req = api::StartContainerRequest {
            container_id: container_id.to_owned(),
        };
        let r = self.client.start_container(req).await;
        r.map_err(self.rpc_err("StartContainer")).map(drop)
    }

    /// `StopPodSandbox`: stops every container of the sandbox and tears down its network.
    pub async fn stop_pod_sandbox(&mut self, sandbox_id: &str) -> Result<()> {
        let req = api::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
        };
        let r = self.client.stop_pod_sandbox(req).await;
        r.map_err(self.rpc_err("StopPodSandbox")).map(drop)
    }

    /// `RemovePodSandbox`: removes the sandbox and its containers.
    pub async fn remove_pod_sandbox(&mut self, sandbox_id: &str) -> Result<()> {
        let req = api::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
        };
        let r = self.client.remove_pod_sandbox(req).await;
        r.map_err(self.rpc_err("RemovePodSandbox")).map(drop)
    }

    /// Creates a sandbox and its containers, starts them, and returns the
    /// discovered [`Pod`]. On failure the half-made sandbox is removed again.
    pub async fn run_pod(&mut self, pod: &PodSpec, containers: &[ContainerSpec]) -> Result<Pod> {
        let sandbox_id = self.run_pod_sandbox(pod).await?;
        let started = async {
            for c in containers {
                let id = self.create_container(&sandbox_id, pod, c).await?;
                self.start_container(&id).await?;
            }
            self.pod(&sandbox_id).await
        }
        .await;
        match started {
            Ok(p) => Ok(p),
            Err(e) => {
                let _ = self
                    .remove_pod(&sandbox_id, Some(&pod.cgroup_parent()))
                    .await;
                Err(e)
            }
        }
    }

    /// Stops and removes a sandbox, then removes the pod-level cgroup in
    /// every hierarchy (containerd leaves it; kubelet would remove it). Pass
    /// the pod cgroup path to remove (e.g. [`Pod::cgroup_path`]), or `None`
    /// to leave cgroups alone.
    pub async fn remove_pod(&mut self, sandbox_id: &str, pod_cgroup: Option<&str>) -> Result<()> {
        self.stop_pod_sandbox(sandbox_id).await?;
        self.remove_pod_sandbox(sandbox_id).await?;
        let Some(cg) = pod_cgroup else { return Ok(()) };
        // Container cgroups go away as their shim finishes; retry briefly.
        let mut last = None;
        for _ in 0..50 {
            match cgroup::remove_cgroup_everywhere(cg) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or(Error::Spec(format!("cannot remove cgroup {cg}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b5b3c33-7f0e-4a53-8e0c-2f1d2a3b4c5d";
    const SID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const C1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const C3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn sandbox() -> SandboxDetails {
        let status = api::PodSandboxStatus {
            id: SID.into(),
            metadata: Some(api::PodSandboxMetadata {
                name: "web-1".into(),
                uid: UID.into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            state: api::PodSandboxState::SandboxReady as i32,
            network: Some(api::PodSandboxNetworkStatus {
                ip: "10.88.77.5".into(),
                ..Default::default()
            }),
            labels: [
                ("app", "web"),
                ("io.kubernetes.pod.name", "web-1"),
                ("io.kubernetes.pod.uid", UID),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Default::default()
        };
        // The shape containerd 1.6 gives in info["info"].
        let info = serde_json::json!({
            "pid": 4242,
            "config": {"linux": {"cgroup_parent": format!("/kubepods/besteffort/pod{UID}")}},
            "runtimeSpec": {"linux": {"cgroupsPath": format!("/kubepods/besteffort/pod{UID}/{SID}")}}
        });
        SandboxDetails { status, info }
    }

    fn container(
        id: &str,
        name: &str,
        state: api::ContainerState,
        created: i64,
        pid: u32,
    ) -> ContainerDetails {
        ContainerDetails {
            sandbox_id: SID.into(),
            status: api::ContainerStatus {
                id: id.into(),
                metadata: Some(api::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                state: state as i32,
                created_at: created,
                image: Some(api::ImageSpec {
                    image: "sha256:deadbeef".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            info: serde_json::json!({
                "pid": pid,
                "sandboxID": SID,
                "runtimeSpec": {
                    "annotations": {"io.kubernetes.cri.image-name": "localhost/busybox:latest"},
                    "linux": {"cgroupsPath": format!("/kubepods/besteffort/pod{UID}/{id}")}
                }
            }),
        }
    }

    #[test]
    fn builds_a_pod() {
        let cs = vec![
            container(C1, "app", api::ContainerState::ContainerRunning, 10, 5000),
            // An older, exited attempt of the same container: dropped.
            container(C2, "app", api::ContainerState::ContainerExited, 5, 0),
            container(C3, "side", api::ContainerState::ContainerCreated, 11, 0),
        ];
        let pod = pod_from_cri("containerd", &sandbox(), &cs);
        assert_eq!(pod.uid, UID);
        assert_eq!(pod.name, "web-1");
        assert_eq!(pod.namespace, "shop");
        assert_eq!(pod.labels, BTreeMap::from([("app".into(), "web".into())]));
        assert_eq!(pod.ip.as_deref(), Some("10.88.77.5"));
        assert_eq!(pod.sandbox_pid, Some(4242));
        assert_eq!(pod.state, PodState::Ready);
        assert_eq!(pod.source, Source::Cri);
        assert_eq!(
            pod.cgroup_path,
            Some(format!("/kubepods/besteffort/pod{UID}"))
        );
        assert_eq!(pod.containers.len(), 2);
        let app = &pod.containers[0];
        assert_eq!((app.id.as_str(), app.name.as_str()), (C1, "app"));
        assert_eq!(app.image, "localhost/busybox:latest");
        assert_eq!(app.pid, Some(5000));
        assert_eq!(app.state, ContainerState::Running);
        assert_eq!(
            app.cgroup_path,
            Some(format!("/kubepods/besteffort/pod{UID}/{C1}"))
        );
        let side = &pod.containers[1];
        assert_eq!(side.pid, None, "pid 0 means not running");
        assert_eq!(side.state, ContainerState::Created);
    }

    #[test]
    fn falls_back_to_labels_and_systemd_paths() {
        let mut sb = sandbox();
        sb.status.metadata = None;
        sb.status.network = None;
        sb.info = serde_json::json!({
            "config": {"linux": {"cgroup_parent": "kubepods-besteffort-pod0b5b3c33_7f0e_4a53_8e0c_2f1d2a3b4c5d.slice"}}
        });
        let mut c = container(C1, "", api::ContainerState::ContainerRunning, 1, 7);
        c.info = serde_json::json!({
            "pid": 7,
            "runtimeSpec": {"linux": {"cgroupsPath": format!(
                "kubepods-besteffort-pod{}.slice:cri-containerd:{C1}", UID.replace('-', "_"))}}
        });
        let pod = pod_from_cri("containerd", &sb, &[c]);
        assert_eq!(pod.uid, UID);
        assert_eq!(pod.name, "web-1");
        assert_eq!(pod.namespace, "");
        assert_eq!(pod.ip, None);
        assert_eq!(
            pod.cgroup_path.as_deref(),
            Some("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b5b3c33_7f0e_4a53_8e0c_2f1d2a3b4c5d.slice")
        );
        let c = &pod.containers[0];
        assert_eq!(c.name, &C1[..12]);
        assert_eq!(c.image, "sha256:deadbeef");
        assert!(c
            .cgroup_path
            .as_deref()
            .unwrap()
            .ends_with(&format!("cri-containerd-{C1}.scope")));
    }

    #[test]
    fn info_without_json_is_tolerated() {
        let mut sb = sandbox();
        sb.info = Value::Null;
        let pod = pod_from_cri("cri-o", &sb, &[]);
        assert_eq!(pod.sandbox_pid, None);
        assert_eq!(pod.cgroup_path, None);
        assert_eq!(pod.runtime, "cri-o");
        let m: std::collections::HashMap<String, String> =
            [("info".to_owned(), "not json".to_owned())].into();
        assert_eq!(parse_info(&m), Value::Null);
    }

    #[test]
    fn sandbox_config_is_kubelet_like() {
        let mut spec = PodSpec {
            name: "a".into(),
            namespace: "ns1".into(),
            uid: UID.into(),
            labels: BTreeMap::new(),
            host_network: false,
            log_directory: Some("/tmp/logs".into()),
        }
        .label("app", "web");
        let c = spec.sandbox_config();
        assert_eq!(c.hostname, "a");
        assert_eq!(c.labels["app"], "web");
        assert_eq!(c.labels["io.kubernetes.pod.uid"], UID);
        let linux = c.linux.unwrap();
        assert_eq!(
            linux.cgroup_parent,
            format!("/kubepods/besteffort/pod{UID}")
        );
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.pid, api::NamespaceMode::Container as i32);
        assert_eq!(ns.network, api::NamespaceMode::Pod as i32);
        spec.host_network = true;
        let c = spec.sandbox_config();
        assert_eq!(
            c.hostname, "",
            "hostNetwork pods must send an empty hostname"
        );
        let cc = ContainerSpec::new("c", "img", &["sh", "-c", "true"]).config(&spec);
        assert_eq!(cc.log_path, "c/0.log");
        assert_eq!(cc.labels["io.kubernetes.container.name"], "c");
        assert_eq!(cc.command, vec!["sh", "-c", "true"]);
    }

    #[test]
    fn error_chain_rendering() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(render_error_chain(&inner), "no such file");
    }
}
