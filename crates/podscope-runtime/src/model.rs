//! The pod and container model that discovery produces, whatever the source.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a [`Pod`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The container runtime's CRI API: names, labels and images are known.
    Cri,
    /// A scan of /proc/*/cgroup: only uids, container ids, pids and cgroups are known.
    Proc,
    /// The Docker Engine API of dockerd or podman: a plain container, as a
    /// pod of its own (see [`crate::engine`] for the mapping).
    Engine,
}

/// Pod sandbox state as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodState {
    /// The sandbox is running (CRI `SANDBOX_READY`).
    Ready,
    /// The sandbox is stopped (CRI `SANDBOX_NOTREADY`).
    NotReady,
    /// Not known (e.g. found through /proc).
    Unknown,
}

/// Container state as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// Not known.
    Unknown,
}

/// A Kubernetes pod (a CRI pod sandbox) and its containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pod {
    /// The pod's Kubernetes uid.
    pub uid: String,
    /// Pod name; the uid when unknown (the /proc source).
    pub name: String,
    /// Pod namespace; empty when unknown.
    pub namespace: String,
    /// Pod labels, without kubelet's own `io.kubernetes.*` bookkeeping labels.
    pub labels: BTreeMap<String, String>,
    /// The container runtime: `containerd`, `cri-o`, `docker`, `podman`, or `unknown`.
    pub runtime: String,
    /// The CRI pod sandbox id (the pause container's id).
    pub sandbox_id: Option<String>,
    /// Sandbox state.
    pub state: PodState,
    /// The pod's primary IP address, if it has its own network namespace.
    pub ip: Option<String>,
    /// Host pid of the sandbox (pause) process.
    pub sandbox_pid: Option<u32>,
    /// The pod-level cgroup, relative to the cgroup v2 root (e.g. `/kubepods/besteffort/pod<uid>`).
    pub cgroup_path: Option<String>,
    /// The cgroup v2 id of the pod-level cgroup (what `bpf_get_current_cgroup_id()`
    /// returns for a task directly in it; containers are its children).
    pub cgroup_id: Option<u64>,
    /// Which source produced this pod.
    pub source: Source,
    /// The pod's containers, without the sandbox (pause) container.
    pub containers: Vec<Container>,
}

/// One container of a [`Pod`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Container {
    /// The runtime's container id (64 hex digits for containerd and CRI-O).
    pub id: String,
    /// Container name; the first 12 characters of the id when unknown.
    pub name: String,
    /// Image reference; empty when unknown.
    pub image: String,
    /// Host pid of the container's init process, while it runs.
    pub pid: Option<u32>,
    /// The container's cgroup, relative to the cgroup v2 root.
    pub cgroup_path: Option<String>,
    /// The cgroup v2 id of the container's cgroup: the inode number of its directory.
    pub cgroup_id: Option<u64>,
    /// Container state.
    pub state: ContainerState,
}

impl Pod {
    /// `namespace/name`, or just the name when the namespace is unknown.
    pub fn qualified_name(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    /// The container with this name, if any.
    pub fn container(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The container with this id or unique id prefix (at least 4 characters), if any.
    pub fn container_by_id(&self, id: &str) -> Option<&Container> {
        if id.len() < 4 {
            return None;
        }
        let mut found = self.containers.iter().filter(|c| c.id.starts_with(id));
        match (found.next(), found.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    }

    /// Every cgroup v2 id that belongs to this pod: the pod cgroup and each container's.
    pub fn cgroup_ids(&self) -> Vec<u64> {
        self.cgroup_id
            .into_iter()
            .chain(self.containers.iter().filter_map(|c| c.cgroup_id))
            .collect()
    }
}

/// The short form of a container id used where a name is unknown.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        Pod {
            uid: "u".into(),
            name: "web".into(),
            namespace: "prod".into(),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            runtime: "containerd".into(),
            sandbox_id: Some("s".into()),
            state: PodState::Ready,
            ip: Some("10.0.0.2".into()),
            sandbox_pid: Some(10),
            cgroup_path: Some("/kubepods/besteffort/podu".into()),
            cgroup_id: Some(100),
            source: Source::Cri,
            containers: vec![
                Container {
                    id: "abcdef0123".into(),
                    name: "app".into(),
                    image: "img".into(),
                    pid: Some(11),
                    cgroup_path: None,
                    cgroup_id: Some(101),
                    state: ContainerState::Running,
                },
                Container {
                    id: "abcfff".into(),
                    name: "side".into(),
                    image: "img".into(),
                    pid: None,
                    cgroup_path: None,
                    cgroup_id: None,
                    state: ContainerState::Exited,
                },
            ],
        }
    }

    #[test]
    fn lookups() {
        let p = pod();
        assert_eq!(p.qualified_name(), "prod/web");
        assert_eq!(p.container("side").unwrap().id, "abcfff");
        assert!(p.container("nope").is_none());
        assert_eq!(p.container_by_id("abcd").unwrap().name, "app");
        assert!(p.container_by_id("abc").is_none(), "too short");
        assert!(p.container_by_id("abcX").is_none());
        assert_eq!(p.cgroup_ids(), vec![100, 101]);
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn serde_round_trip() {
        let p = pod();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"source\":\"cri\""));
        assert!(json.contains("\"state\":\"running\""));
        let back: Pod = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
