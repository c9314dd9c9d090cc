//! Pod discovery without any runtime socket: group /proc/*/cgroup by pod uid and container id.
//!
//! Names, namespaces, labels and images are unknown this way: a pod is named
//! by its uid, a container by its short id. The sandbox (pause) container is
//! told apart by its only process being called `pause`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use crate::cgroup::{self, CgroupMount};
use crate::error::{Error, Result};
use crate::layout::{parse_kube_cgroup, KubeCgroup};
use crate::model::{short_id, Container, ContainerState, Pod, PodState, Source};

/// What the scan needs to know about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// `comm` (the first 15 bytes of the executable name).
    pub comm: String,
    /// The process's cgroup path: the v2 one, or a v1 one when that is the
    /// one that shows a pod (a hybrid node whose runtime skips the v2 tree).
    pub cgroup: String,
}

/// Picks, from a /proc/PID/cgroup, the path that shows a pod: the v2 one first.
pub fn pod_cgroup_path(pc: &cgroup::ProcCgroup) -> Option<(String, KubeCgroup)> {
    let candidates = pc
        .unified
        .iter()
        .map(String::as_str)
        .chain(pc.v1_path("memory"))
        .chain(pc.v1_path("pids"))
        .chain(pc.v1_path("name=systemd"))
        .chain(pc.v1.iter().map(|(_, p)| p.as_str()));
    for path in candidates {
        if let Some(k) = parse_kube_cgroup(path) {
            return Some((path.to_owned(), k));
        }
    }
    None
}

/// Parses `ppid` and `comm` out of /proc/PID/stat text.
pub fn parse_stat(stat: &str) -> Option<(String, u32)> {
    // pid (comm) state ppid ...; comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// Reads every process under a /proc root whose cgroup shows a Kubernetes pod.
/// Processes that vanish during the scan are skipped.
pub fn read_processes(proc_root: &Path) -> Result<Vec<ProcInfo>> {
    let entries = fs::read_dir(proc_root).map_err(|e| Error::io(proc_root, e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(text) = fs::read_to_string(dir.join("cgroup")) else {
            continue;
        };
        let Some((path, _)) = pod_cgroup_path(&cgroup::parse_proc_cgroup(&text)) else {
            continue;
        };
        let Some((comm, ppid)) = fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            continue;
        };
        out.push(ProcInfo {
            pid,
            ppid,
            comm,
            cgroup: path,
        });
    }
    Ok(out)
}

#[derive(Default)]
struct ContainerAcc {
    cgroup: String,
    runtime: Option<&'static str>,
    procs: Vec<(u32, u32, String)>,
}

/// Groups processes into pods (pure: cgroup ids are filled in by the caller).
pub fn pods_from_processes(procs: &[ProcInfo]) -> Vec<Pod> {
    // uid -> (pod cgroup, container id -> accumulator)
    let mut pods: BTreeMap<String, (String, BTreeMap<String, ContainerAcc>)> = BTreeMap::new();
    for p in procs {
        let Some(k) = parse_kube_cgroup(&p.cgroup) else {
            continue;
        };
        let (Some(cid), Some(ccg)) = (k.container_id, k.container_cgroup) else {
            continue;
        };
        if k.conmon {
            continue;
        }
        let (_, containers) = pods
            .entry(k.pod_uid)
            .or_insert_with(|| (k.pod_cgroup.clone(), BTreeMap::new()));
        let acc = containers.entry(cid).or_default();
        acc.cgroup = ccg;
        acc.runtime = acc.runtime.or(k.runtime);
        acc.procs.push((p.pid, p.ppid, p.comm.clone()));
    }

    let mut out = Vec::new();
    for (uid, (pod_cgroup, containers)) in pods {
        let mut pod = Pod {
            name: uid.clone(),
            uid,
            namespace: String::new(),
            labels: BTreeMap::new(),
            runtime: "unknown".to_owned(),
            sandbox_id: None,
            state: PodState::Unknown,
            ip: None,
            sandbox_pid: None,
            cgroup_path: Some(pod_cgroup),
            cgroup_id: None,
            source: Source::Proc,
            containers: Vec::new(),
        };
        for (id, acc) in containers {
            if let Some(rt) = acc.runtime {
                pod.runtime = rt.to_owned();
            }
            let pids: BTreeSet<u32> = acc.procs.iter().map(|(pid, _, _)| *pid).collect();
            // The init process: the one whose parent is outside the container
            // (the shim); the lowest pid if several are.
            let init = acc
                .procs
                .iter()
                .filter(|(_, ppid, _)| !pids.contains(ppid))
                .map(|(pid, _, _)| *pid)
                .min()
                .or_else(|| pids.iter().next().copied());
            let is_pause = acc.procs.len() == 1 && acc.procs[0].2 == "pause";
            if is_pause && pod.sandbox_id.is_none() {
                pod.sandbox_id = Some(id);
                pod.sandbox_pid = init;
                continue;
            }
            pod.containers.push(Container {
                name: short_id(&id).to_owned(),
                id,
                image: String::new(),
                pid: init,
                cgroup_path: Some(acc.cgroup),
                cgroup_id: None,
                state: ContainerState::Running,
            });
        }
        out.push(pod);
    }
    out
}

/// Fills in cgroup v2 ids from the directories under the cgroup2 mount.
/// Cgroups that have vanished keep `None`.
pub fn fill_cgroup_ids(pods: &mut [Pod], mount: &CgroupMount) {
    for pod in pods {
        if let Some(p) = &pod.cgroup_path {
            pod.cgroup_id = cgroup::cgroup_id_of_path(mount, p).ok();
        }
        for c in &mut pod.containers {
            if let Some(p) = &c.cgroup_path {
                c.cgroup_id = cgroup::cgroup_id_of_path(mount, p).ok();
            }
        }
    }
}

/// Discovers pods from /proc alone.
pub fn scan_proc() -> Result<Vec<Pod>> {
    let procs = read_processes(Path::new("/proc"))?;
    let mut pods = pods_from_processes(&procs);
    // Without a cgroup2 mount the pods are still worth returning.
    if let Ok(mount) = cgroup::cgroup2_mount() {
        fill_cgroup_ids(&mut pods, &mount);
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "11111111-2222-3333-4444-555555555555";
    const U2: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const PAUSE: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const APP: &str = "00000000000000000000000000000000000000000000000000000000000000a2";
    const SIDE: &str = "00000000000000000000000000000000000000000000000000000000000000b3";

    fn p(pid: u32, ppid: u32, comm: &str, cgroup: String) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            comm: comm.into(),
            cgroup,
        }
    }

    #[test]
    fn stat_parsing() {
        assert_eq!(
            parse_stat("123 (sh) S 45 123 123 0 -1 4194560"),
            Some(("sh".into(), 45))
        );
        assert_eq!(
            parse_stat("7 (a (b) c) R 1 7 7"),
            Some(("a (b) c".into(), 1))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn groups_processes_into_pods() {
        let base = format!("/kubepods/besteffort/pod{U1}");
        let procs = vec![
            p(100, 90, "pause", format!("{base}/{PAUSE}")),
            p(200, 91, "sh", format!("{base}/{APP}")),
            p(201, 200, "sleep", format!("{base}/{APP}")),
            p(300, 92, "nginx", format!("{base}/{SIDE}")),
            p(301, 92, "nginx", format!("{base}/{SIDE}")),
            // Another pod, systemd driver, CRI-O, with a conmon that must be skipped.
            p(
                400,
                1,
                "conmon",
                format!(
                    "/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{APP}.scope",
                    U2.replace('-', "_")
                ),
            ),
            p(
                401,
                400,
                "app",
                format!(
                    "/kubepods.slice/kubepods-pod{}.slice/crio-{APP}.scope",
                    U2.replace('-', "_")
                ),
            ),
            // Not in a pod.
            p(1, 0, "init", "/".into()),
            // The pod level itself: no container.
            p(500, 1, "x", base.clone()),
        ];
        let pods = pods_from_processes(&procs);
        assert_eq!(pods.len(), 2);

        let a = &pods[0];
        assert_eq!(a.uid, U1);
        assert_eq!(a.name, U1);
        assert_eq!(a.source, Source::Proc);
        assert_eq!(a.sandbox_id.as_deref(), Some(PAUSE));
        assert_eq!(a.sandbox_pid, Some(100));
        assert_eq!(a.cgroup_path.as_deref(), Some(base.as_str()));
        assert_eq!(a.runtime, "unknown");
        assert_eq!(a.containers.len(), 2);
        assert_eq!(a.containers[0].id, APP);
        assert_eq!(a.containers[0].name, &APP[..12]);
        assert_eq!(
            a.containers[0].pid,
            Some(200),
            "init is the one whose parent is outside"
        );
        assert_eq!(a.containers[1].pid, Some(300), "lowest pid among several");
        assert_eq!(
            a.containers[1].cgroup_path.as_deref(),
            Some(format!("{base}/{SIDE}").as_str())
        );

        let b = &pods[1];
        assert_eq!(b.uid, U2);
        assert_eq!(b.runtime, "cri-o");
        assert_eq!(b.sandbox_id, None);
        assert_eq!(b.containers.len(), 1);
        assert_eq!(b.containers[0].pid, Some(401));
    }

    #[test]
    fn prefers_v2_path_then_v1() {
        let pc = cgroup::parse_proc_cgroup(&format!("4:memory:/kubepods/pod{U1}/{APP}\n0::/\n"));
        let (path, k) = pod_cgroup_path(&pc).unwrap();
        assert_eq!(path, format!("/kubepods/pod{U1}/{APP}"));
        assert_eq!(k.pod_uid, U1);
        let pc = cgroup::parse_proc_cgroup("0::/init.scope\n");
        assert!(pod_cgroup_path(&pc).is_none());
    }

    #[test]
    fn reads_a_fake_proc_tree() {
        let dir = std::env::temp_dir().join(format!("podscope-proc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (pid, ppid, comm, cg) in [
            (
                10,
                1,
                "pause",
                format!("/kubepods/besteffort/pod{U1}/{PAUSE}"),
            ),
            (11, 2, "sh", format!("/kubepods/besteffort/pod{U1}/{APP}")),
            (12, 1, "bash", "/user.slice".to_owned()),
        ] {
            let d = dir.join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("cgroup"), format!("0::{cg}\n")).unwrap();
            fs::write(d.join("stat"), format!("{pid} ({comm}) S {ppid} 0 0")).unwrap();
        }
        fs::create_dir_all(dir.join("self")).unwrap();
        fs::create_dir_all(dir.join("99")).unwrap(); // vanished: no files
        let procs = read_processes(&dir).unwrap();
        assert_eq!(procs.len(), 2);
        let pods = pods_from_processes(&procs);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].containers[0].pid, Some(11));
        fs::remove_dir_all(&dir).unwrap();
    }
}
