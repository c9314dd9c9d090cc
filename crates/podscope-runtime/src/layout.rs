//! Recognises kubelet's cgroup layouts (cgroupfs and systemd drivers) in a cgroup path.
//!
//! cgroupfs driver:
//! `/kubepods/<qos>/pod<uid>/<container>` and `/kubepods/pod<uid>/<container>` (Guaranteed).
//! systemd driver:
//! `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/<container>.scope`.
//! The container level is `<id>` (containerd, cgroupfs), `cri-containerd-<id>`,
//! `crio-<id>`, `docker-<id>` (each with `.scope` under systemd). Anything
//! above `kubepods` (a kubelet `--cgroup-root`, a kind node's own cgroup) is
//! allowed, and so is anything below the container level.

use serde::{Deserialize, Serialize};

/// Kubernetes pod QoS class, as the cgroup layout shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Pods directly under `kubepods`.
    Guaranteed,
    /// Pods under `kubepods/burstable`.
    Burstable,
    /// Pods under `kubepods/besteffort`.
    BestEffort,
}

/// Which kubelet cgroup driver produced the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Plain directories (`/kubepods/besteffort/pod<uid>`).
    Cgroupfs,
    /// systemd slices and scopes (`kubepods.slice/...`).
    Systemd,
}

/// What a cgroup path says about the pod and container it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeCgroup {
    /// The pod uid (with dashes, whatever the driver).
    pub pod_uid: String,
    /// The pod's QoS class.
    pub qos: QosClass,
    /// The cgroup driver.
    pub driver: CgroupDriver,
    /// The pod-level cgroup path: the given path cut after the pod level.
    pub pod_cgroup: String,
    /// The container id, when the path reaches a container's cgroup.
    pub container_id: Option<String>,
    /// The container-level cgroup path, when there is one.
    pub container_cgroup: Option<String>,
    /// The runtime the container-level name shows (`containerd`, `cri-o`,
    /// `docker`); `None` for a bare id (containerd or cri-dockerd with cgroupfs).
    pub runtime: Option<&'static str>,
    /// The level below the pod is CRI-O's `crio-conmon-<id>`: the monitor
    /// process of a container, not the container itself.
    pub conmon: bool,
}

fn is_hex_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uid(s: &str) -> bool {
    // Uids are UUIDs; static pods' are 32 hex digits (a config hash).
    s.len() >= 8 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The container level of a pod cgroup: (id, runtime, conmon).
fn parse_container_level(name: &str) -> Option<(String, Option<&'static str>, bool)> {
    let base = name.strip_suffix(".scope").unwrap_or(name);
    const PREFIXES: &[(&str, Option<&str>, bool)] = &[
        ("cri-containerd-", Some("containerd"), false),
        ("crio-conmon-", Some("cri-o"), true),
        ("crio-", Some("cri-o"), false),
        ("docker-", Some("docker"), false),
        ("cri-dockerd-", Some("docker"), false),
    ];
    for (prefix, runtime, conmon) in PREFIXES {
        if let Some(id) = base.strip_prefix(prefix) {
            return is_hex_id(id).then(|| (id.to_owned(), *runtime, *conmon));
        }
    }
    // A bare id is the cgroupfs form; under systemd a unit always has a prefix.
    (is_hex_id(base) && !name.ends_with(".scope")).then(|| (base.to_owned(), None, false))
}

fn join(components: &[&str]) -> String {
    let mut s = String::new();
    for c in components {
        s.push('/');
        s.push_str(c);
    }
    s
}

/// Parses a cgroup path (as /proc/PID/cgroup shows it). Returns `None` for
/// paths that are not inside a Kubernetes pod.
pub fn parse_kube_cgroup(path: &str) -> Option<KubeCgroup> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // The first "kubepods" level: `kubepods` (cgroupfs) or `[prefix-]kubepods.slice` (systemd).
    let (root, driver) = comps.iter().enumerate().find_map(|(i, c)| {
        if *c == "kubepods" {
            Some((i, CgroupDriver::Cgroupfs))
        } else if *c == "kubepods.slice" || c.ends_with("-kubepods.slice") {
            Some((i, CgroupDriver::Systemd))
        } else {
            None
        }
    })?;
    let mut i = root + 1;
    let mut qos = QosClass::Guaranteed;
    let pod_uid;
    match driver {
        CgroupDriver::Cgroupfs => {
            match *comps.get(i)? {
                "besteffort" => {
                    qos = QosClass::BestEffort;
                    i += 1;
                }
                "burstable" => {
                    qos = QosClass::Burstable;
                    i += 1;
                }
                _ => {}
            }
            let uid = comps.get(i)?.strip_prefix("pod")?;
            if !is_uid(uid) {
                return None;
            }
            pod_uid = uid.to_owned();
        }
        CgroupDriver::Systemd => {
            let base = comps[root].strip_suffix(".slice")?;
            let next = comps.get(i)?.strip_suffix(".slice")?;
            let rest = next.strip_prefix(base)?.strip_prefix('-')?;
            let pod_level = match rest {
                "besteffort" | "burstable" => {
                    qos = if rest == "besteffort" {
                        QosClass::BestEffort
                    } else {
                        QosClass::Burstable
                    };
                    i += 1;
                    comps
                        .get(i)?
                        .strip_suffix(".slice")?
                        .strip_prefix(next)?
                        .strip_prefix('-')?
                }
                _ => rest,
            };
            let uid = pod_level.strip_prefix("pod")?.replace('_', "-");
            if !is_uid(&uid) {
                return None;
            }
            pod_uid = uid;
        }
    }
    let pod_cgroup = join(&comps[..=i]);
    let (container_id, container_cgroup, runtime, conmon) = match comps
        .get(i + 1)
        .and_then(|c| parse_container_level(c))
    {
        Some((id, runtime, conmon)) => (Some(id), Some(join(&comps[..=i + 1])), runtime, conmon),
        None => (None, None, None, false),
    };
    Some(KubeCgroup {
        pod_uid,
        qos,
        driver,
        pod_cgroup,
        container_id,
        container_cgroup,
        runtime,
        conmon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1f2e3d4c-5b6a-4789-9abc-def012345678";
    const CID: &str = "4a9c3e1f8b7d6a5c4b3a29180f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d5c";

    fn parse(p: &str) -> KubeCgroup {
        parse_kube_cgroup(p).unwrap_or_else(|| panic!("{p} should parse"))
    }

    #[test]
    fn cgroupfs_besteffort_container() {
        let k = parse(&format!("/kubepods/besteffort/pod{UID}/{CID}"));
        assert_eq!(k.pod_uid, UID);
        assert_eq!(k.qos, QosClass::BestEffort);
        assert_eq!(k.driver, CgroupDriver::Cgroupfs);
        assert_eq!(k.container_id.as_deref(), Some(CID));
        assert_eq!(k.runtime, None);
        assert_eq!(k.pod_cgroup, format!("/kubepods/besteffort/pod{UID}"));
        assert_eq!(
            k.container_cgroup,
            Some(format!("/kubepods/besteffort/pod{UID}/{CID}"))
        );
        assert!(!k.conmon);
    }

    #[test]
    fn cgroupfs_burstable_and_guaranteed() {
        let k = parse(&format!("/kubepods/burstable/pod{UID}/{CID}/"));
        assert_eq!(k.qos, QosClass::Burstable);
        assert_eq!(k.container_id.as_deref(), Some(CID));
        let k = parse(&format!("/kubepods/pod{UID}/{CID}"));
        assert_eq!(k.qos, QosClass::Guaranteed);
        assert_eq!(k.pod_cgroup, format!("/kubepods/pod{UID}"));
    }

    #[test]
    fn cgroupfs_pod_level_only() {
        let k = parse(&format!("/kubepods/besteffort/pod{UID}"));
        assert_eq!(k.pod_uid, UID);
        assert_eq!(k.container_id, None);
        assert_eq!(k.container_cgroup, None);
    }

    #[test]
    fn cgroupfs_crio_and_nested() {
        let k = parse(&format!("/kubepods/burstable/pod{UID}/crio-{CID}"));
        assert_eq!(k.runtime, Some("cri-o"));
        assert_eq!(k.container_id.as_deref(), Some(CID));
        // Below the container level (a container running systemd, or cri-o's own sub-cgroup).
        let k = parse(&format!("/kubepods/besteffort/pod{UID}/{CID}/init.scope"));
        assert_eq!(k.container_id.as_deref(), Some(CID));
        assert_eq!(
            k.container_cgroup,
            Some(format!("/kubepods/besteffort/pod{UID}/{CID}"))
        );
    }

    #[test]
    fn cgroupfs_under_cgroup_root_and_kind() {
        let k = parse(&format!("/kubelet/kubepods/besteffort/pod{UID}/{CID}"));
        assert_eq!(
            k.pod_cgroup,
            format!("/kubelet/kubepods/besteffort/pod{UID}")
        );
        let k = parse(&format!(
            "/docker/0123456789abcdef0123456789abcdef/kubepods/pod{UID}/{CID}"
        ));
        assert_eq!(k.qos, QosClass::Guaranteed);
        assert_eq!(k.container_id.as_deref(), Some(CID));
    }

    #[test]
    fn static_pod_uid_is_a_hash() {
        let k = parse(&format!(
            "/kubepods/burstable/pod6e4d5b0a0c1c2f3e8d7a6b5c4d3e2f1a/{CID}"
        ));
        assert_eq!(k.pod_uid, "6e4d5b0a0c1c2f3e8d7a6b5c4d3e2f1a");
    }

    #[test]
    fn systemd_besteffort_containerd() {
        let u = UID.replace('-', "_");
        let k = parse(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{CID}.scope"
        ));
        assert_eq!(k.pod_uid, UID);
        assert_eq!(k.qos, QosClass::BestEffort);
        assert_eq!(k.driver, CgroupDriver::Systemd);
        assert_eq!(k.runtime, Some("containerd"));
        assert_eq!(k.container_id.as_deref(), Some(CID));
        assert_eq!(
            k.pod_cgroup,
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice")
        );
    }

    #[test]
    fn systemd_guaranteed_crio_docker_conmon() {
        let u = UID.replace('-', "_");
        let k = parse(&format!(
            "/kubepods.slice/kubepods-pod{u}.slice/crio-{CID}.scope"
        ));
        assert_eq!(k.qos, QosClass::Guaranteed);
        assert_eq!(k.runtime, Some("cri-o"));
        let k = parse(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/docker-{CID}.scope"
        ));
        assert_eq!(k.qos, QosClass::Burstable);
        assert_eq!(k.runtime, Some("docker"));
        let k = parse(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-conmon-{CID}.scope"
        ));
        assert!(k.conmon);
        assert_eq!(k.container_id.as_deref(), Some(CID));
        // CRI-O on cgroup v2 puts the container's processes one level lower.
        let k = parse(&format!(
            "/kubepods.slice/kubepods-pod{u}.slice/crio-{CID}.scope/container"
        ));
        assert_eq!(k.container_id.as_deref(), Some(CID));
    }

    #[test]
    fn systemd_with_cgroup_root_prefix() {
        let u = UID.replace('-', "_");
        let k = parse(&format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{CID}.scope"
        ));
        assert_eq!(k.pod_uid, UID);
        assert_eq!(k.qos, QosClass::BestEffort);
    }

    #[test]
    fn systemd_unit_without_prefix_is_not_a_container() {
        let u = UID.replace('-', "_");
        let k = parse(&format!(
            "/kubepods.slice/kubepods-pod{u}.slice/{CID}.scope"
        ));
        assert_eq!(k.container_id, None);
    }

    #[test]
    fn not_pods() {
        for p in [
            "/",
            "",
            "/system.slice/containerd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods",
            "/kubepods/besteffort",
            "/kubepods/burstable/notapod",
            "/kubepods/besteffort/podXYZ/abc",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/kubepods.slice/kubepods-besteffort.slice/other.slice",
            "/docker/4a9c3e1f8b7d",
            "/process_api/81853a1994a5f9f678faf0a9f250b35f",
        ] {
            assert_eq!(parse_kube_cgroup(p), None, "{p}");
        }
    }

    #[test]
    fn short_or_odd_container_levels_are_not_containers() {
        let k = parse(&format!("/kubepods/besteffort/pod{UID}/abc"));
        assert_eq!(k.container_id, None);
        let k = parse(&format!("/kubepods/besteffort/pod{UID}/crio-xyz"));
        assert_eq!(k.container_id, None);
    }
}
