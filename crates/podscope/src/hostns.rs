//! Process set-up: seeing the host's cgroup paths from inside a container.

/// In a container with the host's PID namespace (the agent's DaemonSet),
/// podscope still has the container's own cgroup namespace, where
/// /proc/PID/cgroup of the pods' processes reads `/../../kubepods/...` and
/// names no real directory. Joining PID 1's cgroup namespace (the host's)
/// makes those paths absolute again. Nothing happens when they are the same
/// namespace already, or without the privilege to look (then paths that
/// climb above the root are ignored by discovery, which falls back to the
/// runtime's cgroup paths).
pub fn join_host_cgroup_namespace() {
    let (Ok(host), Ok(own)) = (
        std::fs::read_link("/proc/1/ns/cgroup"),
        std::fs::read_link("/proc/self/ns/cgroup"),
    ) else {
        return;
    };
    if host == own {
        return;
    }
    let joined = std::fs::File::open("/proc/1/ns/cgroup")
        .map_err(|e| e.to_string())
        .and_then(|f| {
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(|e| e.to_string())
        });
    if let Err(e) = joined {
        eprintln!(
            "podscope: warning: running in a cgroup namespace of its own, and joining the host's \
             (/proc/1/ns/cgroup) failed: {e}; cgroup paths of other processes may not resolve"
        );
    }
}
