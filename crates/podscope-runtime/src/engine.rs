//! Plain Docker and podman containers, through the Docker Engine API both
//! serve on a unix socket: each running container becomes a pod of its own.
//!
//! The mapping (see docs/architecture.md, "Pods"): a container is a
//! pseudo-pod whose uid is the container id. Its namespace is the compose
//! project (`com.docker.compose.project`) or, without one, `default`, the
//! namespace Kubernetes gives to objects created without one. So `-n` keeps
//! meaning "namespace": `docker run` containers are where `kubectl run` pods
//! go, and a compose project is a namespace. The pod is named after the
//! container. The container inside it is named after the compose service
//! (`com.docker.compose.service`) when there is one: a compose replica is
//! then read like a pod (`shop-web-1`) and its container like the pod's
//! container (`web`). Without compose, the pod and the container are both
//! named after the container. The labels are the container's labels.
//!
//! Containers that kubelet runs through cri-dockerd (label
//! `io.kubernetes.docker.type`), and any container whose id CRI already
//! reported, are skipped: they are pods, found through CRI or /proc.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::cgroup;
use crate::error::{Error, Result};
use crate::model::{Container, ContainerState, Pod, PodState, Source};

/// Docker's socket when `$DOCKER_HOST` is not set.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Rootful podman's API socket when `$CONTAINER_HOST` is not set.
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

/// How long one engine may take to list its containers.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);

/// The label cri-dockerd (and dockershim before it) puts on kubelet's containers.
const CRI_DOCKERD_LABEL: &str = "io.kubernetes.docker.type";
/// The compose project of a container.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// The compose service of a container.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// The namespace of a container outside a compose project.
pub const PLAIN_NAMESPACE: &str = "default";

/// One socket to ask, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSocket {
    /// The socket path.
    pub path: PathBuf,
    /// The engine expected there (`docker` or `podman`), for messages; the
    /// answer's `Server` header says which one it really is.
    pub expected: &'static str,
    /// The environment variable that named it, if one did: then a missing
    /// socket is worth a warning, not silence.
    pub from_env: Option<&'static str>,
}

/// An engine that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// `docker` or `podman`.
    pub runtime: String,
    /// Its socket.
    pub socket: PathBuf,
    /// How many of its containers were added as pods.
    pub containers: usize,
}

/// The sockets to ask: `$DOCKER_HOST` or [`DOCKER_SOCKET`], and
/// `$CONTAINER_HOST` or [`PODMAN_SOCKET`] (as the docker and podman
/// clients choose them); plus warnings for variables that do not name a
/// unix socket.
pub fn engine_sockets() -> (Vec<EngineSocket>, Vec<String>) {
    sockets_from(
        std::env::var("DOCKER_HOST").ok().as_deref(),
        std::env::var("CONTAINER_HOST").ok().as_deref(),
    )
}

/// [`engine_sockets`] for given variable values.
pub fn sockets_from(
    docker_host: Option<&str>,
    container_host: Option<&str>,
) -> (Vec<EngineSocket>, Vec<String>) {
    let mut out: Vec<EngineSocket> = Vec::new();
    let mut warnings = Vec::new();
    for (var, value, default, expected) in [
        ("DOCKER_HOST", docker_host, DOCKER_SOCKET, "docker"),
        ("CONTAINER_HOST", container_host, PODMAN_SOCKET, "podman"),
    ] {
        let sock = match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => EngineSocket {
                path: PathBuf::from(default),
                expected,
                from_env: None,
            },
            Some(v) => match v.strip_prefix("unix://") {
                Some(p) if p.starts_with('/') => EngineSocket {
                    path: PathBuf::from(p),
                    expected,
                    from_env: Some(var),
                },
                _ => {
                    warnings.push(format!(
                        "{var}={v} is not used: podscope reads containers only from a local \
                         engine's unix socket ({var}=unix:///path/to.sock)"
                    ));
                    continue;
                }
            },
        };
        // podman-docker links docker.sock to podman's socket: ask it once.
        let same = |a: &Path, b: &Path| {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        };
        if !out.iter().any(|o| same(&o.path, &sock.path)) {
            out.push(sock);
        }
    }
    (out, warnings)
}

/// `docker` or `podman`, from the `Server` header of an answer
/// (`Docker/20.10.24 (linux)`, `Libpod/4.3.1 (linux)`).
pub fn runtime_of_server(server: Option<&str>, expected: &'static str) -> &'static str {
    match server {
        Some(s) if s.starts_with("Libpod") => "podman",
        Some(s) if s.starts_with("Docker") => "docker",
        _ => expected,
    }
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListEntry {
    /// The full container id.
    pub id: String,
    /// `/name` forms.
    #[serde(default)]
    pub names: Vec<String>,
    /// Labels; `null` in some podman answers.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// `running`, `exited`, ...
    #[serde(default)]
    pub state: String,
}

/// The parts of `GET /containers/{id}/json` that the model needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect {
    /// The full container id.
    pub id: String,
    /// `/name`.
    #[serde(default)]
    pub name: String,
    /// Image and labels.
    #[serde(default)]
    pub config: Option<InspectConfig>,
    /// State and pid.
    #[serde(default)]
    pub state: Option<InspectState>,
    /// Addresses.
    #[serde(default)]
    pub network_settings: Option<NetworkSettings>,
}

/// `Config` of an inspect answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    /// The image as the user named it (`localhost/busybox:latest`).
    #[serde(default)]
    pub image: String,
    /// Labels, the image's included.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `State` of an inspect answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectState {
    /// `running`, `exited`, `created`, `paused`, ...
    #[serde(default)]
    pub status: String,
    /// Host pid of the container's init process; 0 when it does not run.
    #[serde(default)]
    pub pid: i64,
}

/// `NetworkSettings` of an inspect answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// The default bridge's address (Docker), often empty.
    #[serde(default, rename = "IPAddress")]
    pub ip_address: String,
    /// Per network.
    #[serde(default)]
    pub networks: Option<BTreeMap<String, NetworkEndpoint>>,
}

/// One network of a container.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkEndpoint {
    /// Its address on that network, often empty.
    #[serde(default, rename = "IPAddress")]
    pub ip_address: String,
}

/// Whether a listed container belongs in the pod list: it runs and is not
/// kubelet's (through cri-dockerd) nor already reported by CRI.
pub fn wanted(entry: &ListEntry, known_ids: &HashSet<String>) -> bool {
    let kubelets = entry
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(CRI_DOCKERD_LABEL));
    entry.state == "running" && !kubelets && !known_ids.contains(&entry.id)
}

fn container_state(status: &str) -> ContainerState {
    match status {
        "running" | "paused" | "restarting" => ContainerState::Running,
        "created" => ContainerState::Created,
        "exited" | "dead" | "removing" | "stopped" => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

/// The pseudo-pod of one inspected container (see the module comment for
/// the mapping). `cgroup` is the container's cgroup v2 path and id, read
/// from /proc by the caller.
pub fn pod_from_inspect(runtime: &str, ins: &Inspect, cgroup: Option<(String, u64)>) -> Pod {
    let config = ins.config.clone().unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    let state = ins.state.clone().unwrap_or_default();
    let name = match ins.name.trim_start_matches('/') {
        "" => crate::model::short_id(&ins.id).to_owned(),
        n => n.to_owned(),
    };
    let nonempty = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    let namespace = nonempty(COMPOSE_PROJECT).unwrap_or_else(|| PLAIN_NAMESPACE.to_owned());
    let container_name = nonempty(COMPOSE_SERVICE).unwrap_or_else(|| name.clone());
    let ip = ins.network_settings.as_ref().and_then(|n| {
        std::iter::once(n.ip_address.as_str())
            .chain(
                n.networks
                    .iter()
                    .flatten()
                    .map(|(_, e)| e.ip_address.as_str()),
            )
            .find(|a| !a.is_empty())
            .map(str::to_owned)
    });
    let cstate = container_state(&state.status);
    let (cgroup_path, cgroup_id) = match cgroup {
        Some((p, id)) => (Some(p), Some(id)),
        None => (None, None),
    };
    Pod {
        uid: ins.id.clone(),
        name,
        namespace,
        labels,
        runtime: runtime.to_owned(),
        sandbox_id: None,
        state: if cstate == ContainerState::Running {
            PodState::Ready
        } else {
            PodState::NotReady
        },
        ip,
        sandbox_pid: None,
        cgroup_path: None,
        cgroup_id: None,
        source: Source::Engine,
        containers: vec![Container {
            id: ins.id.clone(),
            name: container_name,
            image: config.image,
            pid: u32::try_from(state.pid).ok().filter(|&p| p > 0),
            cgroup_path,
            cgroup_id,
            state: cstate,
        }],
    }
}

/// The container id in a cgroup path that Docker or podman made:
/// `/docker/<id>` (cgroupfs), `/system.slice/docker-<id>.scope` (systemd),
/// `/libpod_parent/libpod-<id>` and `/machine.slice/libpod-<id>.scope`.
/// For telling a new container's first events apart from host processes
/// before the engine has been asked about it.
pub fn container_id_of_cgroup(path: &str) -> Option<String> {
    let mut comps = path.rsplit('/').filter(|c| !c.is_empty());
    let last = comps.next()?;
    let parent = comps.next();
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let base = last.strip_suffix(".scope").unwrap_or(last);
    let id = if let Some(id) = base.strip_prefix("docker-") {
        id
    } else if let Some(id) = base.strip_prefix("libpod-") {
        id
    } else if parent == Some("docker") && last == base {
        base
    } else {
        return None;
    };
    is_id(id).then(|| id.to_owned())
}

/// An HTTP/1.1 connection to an engine socket (hyper, one request at a time).
struct Conn {
    path: PathBuf,
    expected: &'static str,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Conn {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Engine {
            runtime: self.expected,
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    async fn connect(sock: &EngineSocket) -> Result<Conn> {
        let err = |reason: String| Error::Engine {
            runtime: sock.expected,
            path: sock.path.clone(),
            reason,
        };
        let stream = tokio::net::UnixStream::connect(&sock.path)
            .await
            .map_err(|e| err(connect_reason(&e, sock)))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(format!("HTTP handshake failed: {e}")))?;
        // Drives the connection while requests are sent; ends when `sender` is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            path: sock.path.clone(),
            expected: sock.expected,
            sender,
        })
    }

    /// GETs `path`; returns the status, the `Server` header and the body.
    async fn get_any(&mut self, path: &str) -> Result<(hyper::StatusCode, Option<String>, Bytes)> {
        self.sender
            .ready()
            .await
            .map_err(|e| self.err(format!("connection closed before GET {path}: {e}")))?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::new())
            .map_err(|e| self.err(format!("GET {path}: {e}")))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| self.err(format!("GET {path}: {e}")))?;
        let status = resp.status();
        let server = resp
            .headers()
            .get(hyper::header::SERVER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.err(format!("reading the answer to GET {path}: {e}")))?
            .to_bytes();
        Ok((status, server, body))
    }

    /// GETs `path`; returns the `Server` header and the body of a 2xx answer.
    async fn get(&mut self, path: &str) -> Result<(Option<String>, Bytes)> {
        let (status, server, body) = self.get_any(path).await?;
        if !status.is_success() {
            return Err(self.status_err(path, status, &body));
        }
        Ok((server, body))
    }

    fn status_err(&self, path: &str, status: hyper::StatusCode, body: &[u8]) -> Error {
        // Engine errors are {"message": "..."}.
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        self.err(format!("GET {path} answered {status}: {message}"))
    }
}

fn connect_reason(e: &std::io::Error, sock: &EngineSocket) -> String {
    use std::io::ErrorKind;
    let daemon = if sock.expected == "podman" {
        "podman system service"
    } else {
        "dockerd"
    };
    match e.kind() {
        ErrorKind::PermissionDenied if sock.expected == "podman" => format!(
            "permission denied: rootful podman's socket needs root (run podscope as root, \
             or set CONTAINER_HOST=unix:///path to a socket you may use) ({e})"
        ),
        ErrorKind::PermissionDenied => format!(
            "permission denied: reading containers from Docker needs root or membership of \
             the socket's group (usually docker) ({e})"
        ),
        ErrorKind::NotFound => format!(
            "the socket does not exist: is {daemon} running{}? ({e})",
            sock.from_env
                .map(|v| format!(", and is {v} right"))
                .unwrap_or_default()
        ),
        ErrorKind::ConnectionRefused => format!(
            "connection refused: the socket exists but nothing listens on it; is {daemon} \
             running? ({e})"
        ),
        _ => e.to_string(),
    }
}

/// The pods of one engine: its running containers, without those in
/// `known_ids` (already reported by CRI or by another engine).
pub async fn engine_pods(
    sock: &EngineSocket,
    known_ids: &HashSet<String>,
) -> Result<(EngineInfo, Vec<Pod>)> {
    let mut conn = Conn::connect(sock).await?;
    let (server, body) = conn.get("/containers/json").await?;
    let runtime = runtime_of_server(server.as_deref(), sock.expected);
    let list: Vec<ListEntry> = serde_json::from_slice(&body).map_err(|e| {
        conn.err(format!(
            "the answer to GET /containers/json is not a container list: {e}"
        ))
    })?;
    let mount = cgroup::cgroup2_mount().ok();
    let last = take_last(&sock.path);
    let mut pods = Vec::new();
    for entry in list.iter().filter(|e| wanted(e, known_ids)) {
        if let Some(pod) = last.get(&entry.id) {
            if still_current(pod, entry, runtime, mount.as_ref()) {
                pods.push(pod.clone());
                continue;
            }
        }
        let path = format!("/containers/{}/json", entry.id);
        let (status, _, body) = conn.get_any(&path).await?;
        if status == hyper::StatusCode::NOT_FOUND {
            // Gone between the list and the inspect: it exited.
            continue;
        }
        if !status.is_success() {
            return Err(conn.status_err(&path, status, &body));
        }
        let ins: Inspect = serde_json::from_slice(&body)
            .map_err(|e| conn.err(format!("the answer to GET {path} is not a container: {e}")))?;
        let cgroup = ins
            .state
            .as_ref()
            .and_then(|s| u32::try_from(s.pid).ok())
            .filter(|&p| p > 0)
            .and_then(|pid| cgroup::cgroup_path_of_pid(pid).ok())
            .and_then(|p| {
                let id = cgroup::cgroup_id_of_path(mount.as_ref()?, &p).ok()?;
                Some((p, id))
            });
        pods.push(pod_from_inspect(runtime, &ins, cgroup));
    }
    keep_last(&sock.path, &pods);
    Ok((
        EngineInfo {
            runtime: runtime.to_owned(),
            socket: sock.path.clone(),
            containers: pods.len(),
        },
        pods,
    ))
}

/// The pods of each engine's last listing in this process, by socket and
/// container id. A trace refreshes every 5 s, and every 100 ms while a new
/// container waits for its name: with this, a refresh inspects only the
/// containers that are new or changed, not every running one again.
static LAST: std::sync::Mutex<BTreeMap<PathBuf, HashMap<String, Pod>>> =
    std::sync::Mutex::new(BTreeMap::new());

fn take_last(socket: &Path) -> HashMap<String, Pod> {
    LAST.lock()
        .map(|mut m| m.remove(socket).unwrap_or_default())
        .unwrap_or_default()
}

fn keep_last(socket: &Path, pods: &[Pod]) {
    if let Ok(mut m) = LAST.lock() {
        let by_id = pods.iter().map(|p| (p.uid.clone(), p.clone())).collect();
        m.insert(socket.to_owned(), by_id);
    }
}

/// Whether a container's pod from the last listing still holds: same
/// engine, name and labels (`docker rename` changes the name), and its init
/// still runs in the same cgroup (a restart gives a new pid and a new cgroup
/// with the same path, so the id is compared too).
pub fn still_current(
    pod: &Pod,
    entry: &ListEntry,
    runtime: &str,
    mount: Option<&cgroup::CgroupMount>,
) -> bool {
    let Some(c) = pod.containers.first() else {
        return false;
    };
    let name = entry.names.first().map(|n| n.trim_start_matches('/'));
    let labels = entry.labels.clone().unwrap_or_default();
    let same_cgroup = || {
        let (Some(pid), Some(path), Some(id), Some(m)) =
            (c.pid, &c.cgroup_path, c.cgroup_id, mount)
        else {
            return false;
        };
        cgroup::cgroup_path_of_pid(pid).is_ok_and(|p| &p == path)
            && cgroup::cgroup_id_of_path(m, path).is_ok_and(|i| i == id)
    };
    pod.runtime == runtime
        && name == Some(pod.name.as_str())
        && pod.labels == labels
        && same_cgroup()
}

/// Adds every reachable engine's containers to `pods`. Returns the engines
/// that answered and a warning per engine that could not be used. A default
/// socket that does not exist is not worth a warning (no such engine here).
pub async fn add_engine_pods(pods: &mut Vec<Pod>) -> (Vec<EngineInfo>, Vec<String>) {
    let (sockets, mut warnings) = engine_sockets();
    let mut known: HashSet<String> = pods
        .iter()
        .flat_map(|p| {
            p.containers
                .iter()
                .map(|c| c.id.clone())
                .chain(p.sandbox_id.clone())
        })
        .collect();
    let mut engines = Vec::new();
    for sock in sockets {
        if sock.from_env.is_none() && !sock.path.exists() {
            continue;
        }
        match tokio::time::timeout(ENGINE_TIMEOUT, engine_pods(&sock, &known)).await {
            Ok(Ok((info, found))) => {
                known.extend(found.iter().map(|p| p.uid.clone()));
                pods.extend(found);
                engines.push(info);
            }
            Ok(Err(e)) => warnings.push(e.to_string()),
            Err(_) => warnings.push(
                Error::Engine {
                    runtime: sock.expected,
                    path: sock.path.clone(),
                    reason: format!(
                        "no answer within {} s; containers of this engine are not named",
                        ENGINE_TIMEOUT.as_secs()
                    ),
                }
                .to_string(),
            ),
        }
    }
    (engines, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real answers of Debian's dockerd 20.10.24 and podman 4.3.1, captured on
    // the containers the tests in crates/podscope/tests/engines.rs make.
    const DOCKER_LIST: &str = include_str!("../fixtures/engine/docker-list.json");
    const DOCKER_WEB: &str = include_str!("../fixtures/engine/docker-inspect-web.json");
    const DOCKER_DONE: &str = include_str!("../fixtures/engine/docker-inspect-done.json");
    const PODMAN_LIST: &str = include_str!("../fixtures/engine/podman-list.json");
    const PODMAN_PWEB: &str = include_str!("../fixtures/engine/podman-inspect-pweb.json");

    #[test]
    fn docker_list_skips_kubelets_containers_and_known_ids() {
        let list: Vec<ListEntry> = serde_json::from_str(DOCKER_LIST).unwrap();
        let names = |known: &HashSet<String>| {
            list.iter()
                .filter(|e| wanted(e, known))
                .map(|e| e.names[0].clone())
                .collect::<Vec<_>>()
        };
        // The list also holds a container labelled as cri-dockerd labels kubelet's.
        assert_eq!(list.len(), 2);
        assert_eq!(names(&HashSet::new()), ["/web"]);
        let web = list.iter().find(|e| e.names == ["/web"]).unwrap();
        assert_eq!(
            names(&HashSet::from([web.id.clone()])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn docker_compose_container_maps_to_a_pod_in_the_project() {
        let ins: Inspect = serde_json::from_str(DOCKER_WEB).unwrap();
        let pod = pod_from_inspect("docker", &ins, Some(("/docker/x".into(), 42)));
        assert_eq!(pod.uid, ins.id);
        assert_eq!(pod.namespace, "shop", "the compose project");
        assert_eq!(pod.name, "web");
        assert_eq!(pod.runtime, "docker");
        assert_eq!(pod.source, Source::Engine);
        assert_eq!(pod.state, PodState::Ready);
        assert_eq!(pod.labels[COMPOSE_SERVICE], "web");
        assert_eq!(pod.cgroup_id, None, "a plain container has no pod cgroup");
        assert_eq!(pod.cgroup_ids(), vec![42]);
        let c = &pod.containers[0];
        assert_eq!(c.id, ins.id);
        assert_eq!(c.name, "web", "the compose service");
        assert_eq!(c.image, "localhost/pscope-busybox:latest");
        assert!(c.pid.is_some_and(|p| p > 1));
        assert_eq!(c.state, ContainerState::Running);
        assert_eq!(c.cgroup_path.as_deref(), Some("/docker/x"));
    }

    #[test]
    fn exited_docker_container_has_no_pid() {
        let ins: Inspect = serde_json::from_str(DOCKER_DONE).unwrap();
        let pod = pod_from_inspect("docker", &ins, None);
        assert_eq!(pod.namespace, PLAIN_NAMESPACE);
        assert_eq!(pod.name, "done");
        assert_eq!(pod.containers[0].name, "done");
        assert_eq!(pod.containers[0].pid, None);
        assert_eq!(pod.containers[0].state, ContainerState::Exited);
        assert_eq!(pod.state, PodState::NotReady);
        assert!(pod.cgroup_ids().is_empty());
    }

    #[test]
    fn podman_container_maps_to_a_pod_in_default() {
        let list: Vec<ListEntry> = serde_json::from_str(PODMAN_LIST).unwrap();
        assert_eq!(list.len(), 1);
        assert!(wanted(&list[0], &HashSet::new()));
        let ins: Inspect = serde_json::from_str(PODMAN_PWEB).unwrap();
        assert_eq!(ins.id, list[0].id);
        let pod = pod_from_inspect("podman", &ins, Some(("/libpod_parent/libpod-x".into(), 7)));
        assert_eq!(pod.namespace, "default");
        assert_eq!(pod.name, "pweb");
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("pweb"));
        assert_eq!(pod.containers[0].name, "pweb");
        assert_eq!(pod.containers[0].image, "localhost/pscope-busybox:latest");
        assert!(pod.containers[0].pid.is_some());
    }

    #[test]
    fn a_listed_container_is_inspected_again_only_when_it_changed() {
        let list: Vec<ListEntry> = serde_json::from_str(DOCKER_LIST).unwrap();
        let entry = list.iter().find(|e| e.names == ["/web"]).unwrap();
        let ins: Inspect = serde_json::from_str(DOCKER_WEB).unwrap();
        // This test's own process stands in for the container's init.
        let mount = cgroup::cgroup2_mount().unwrap();
        let me = std::process::id();
        let path = cgroup::cgroup_path_of_pid(me).unwrap();
        let id = cgroup::cgroup_id_of_path(&mount, &path).unwrap();
        let mut pod = pod_from_inspect("docker", &ins, Some((path, id)));
        pod.containers[0].pid = Some(me);
        assert!(still_current(&pod, entry, "docker", Some(&mount)));
        assert!(!still_current(&pod, entry, "podman", Some(&mount)));
        assert!(!still_current(&pod, entry, "docker", None));
        let mut renamed = entry.clone();
        renamed.names = vec!["/web2".into()];
        assert!(!still_current(&pod, &renamed, "docker", Some(&mount)));
        let mut relabelled = entry.clone();
        relabelled.labels = None;
        assert!(!still_current(&pod, &relabelled, "docker", Some(&mount)));
        let mut restarted = pod.clone();
        restarted.containers[0].cgroup_id = Some(id + 1);
        assert!(!still_current(&restarted, entry, "docker", Some(&mount)));
        let mut gone = pod.clone();
        gone.containers[0].pid = Some(u32::MAX - 1);
        assert!(!still_current(&gone, entry, "docker", Some(&mount)));
    }

    #[test]
    fn server_header_names_the_engine() {
        assert_eq!(
            runtime_of_server(Some("Docker/20.10.24+dfsg1 (linux)"), "podman"),
            "docker"
        );
        assert_eq!(
            runtime_of_server(Some("Libpod/4.3.1 (linux)"), "docker"),
            "podman"
        );
        assert_eq!(runtime_of_server(None, "podman"), "podman");
    }

    #[test]
    fn sockets_come_from_the_environment_or_the_defaults() {
        let (s, w) = sockets_from(None, None);
        assert!(w.is_empty());
        let paths: Vec<_> = s.iter().map(|s| s.path.to_str().unwrap()).collect();
        assert_eq!(paths, [DOCKER_SOCKET, PODMAN_SOCKET]);
        assert!(s.iter().all(|s| s.from_env.is_none()));

        let (s, w) = sockets_from(Some("unix:///tmp/d.sock"), Some("ssh://host/run/p.sock"));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].path, PathBuf::from("/tmp/d.sock"));
        assert_eq!(s[0].from_env, Some("DOCKER_HOST"));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("CONTAINER_HOST=ssh://host/run/p.sock is not used"),
            "{w:?}"
        );

        let (s, _) = sockets_from(Some("unix:///tmp/x.sock"), Some("unix:///tmp/x.sock"));
        assert_eq!(s.len(), 1, "one socket is asked once");
    }

    #[test]
    fn container_ids_in_engine_cgroup_paths() {
        let id = "275d5e86cdb421b988c6a7f0250aa097945c03b31ba8d1c42f2c0f8d5fcc24cb";
        for p in [
            format!("/docker/{id}"),
            format!("/system.slice/docker-{id}.scope"),
            format!("/libpod_parent/libpod-{id}"),
            format!("/machine.slice/libpod-{id}.scope"),
        ] {
            assert_eq!(container_id_of_cgroup(&p).as_deref(), Some(id), "{p}");
        }
        for p in [
            "/".to_string(),
            "/docker".to_string(),
            format!("/kubepods/besteffort/pod1/{id}"),
            format!("/libpod_parent/libpod-{}", &id[..12]),
            format!("/user.slice/{id}"),
        ] {
            assert_eq!(container_id_of_cgroup(&p), None, "{p}");
        }
    }

    #[test]
    fn connect_errors_say_what_to_do() {
        let sock = |expected, from_env| EngineSocket {
            path: "/x.sock".into(),
            expected,
            from_env,
        };
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(connect_reason(&denied, &sock("docker", None)).contains("needs root or membership"));
        assert!(connect_reason(&denied, &sock("podman", None)).contains("needs root"));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let r = connect_reason(&missing, &sock("docker", Some("DOCKER_HOST")));
        assert!(
            r.contains("is dockerd running, and is DOCKER_HOST right"),
            "{r}"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(connect_reason(&refused, &sock("podman", None)).contains("podman system service"));
    }
}
