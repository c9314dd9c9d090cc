//! Pod discovery against a real containerd: the test bed (testbed/podbed.sh).
//!
//! Needs root and a running test bed; `PODBED_SOCKET` names its socket:
//!
//! ```sh
//! bash testbed/podbed.sh up
//! PODBED_SOCKET=/run/podscope-testbed/containerd.sock cargo test -p podscope-runtime --test cri
//! ```
//!
//! Without them these tests fail and say so: they never pass silently.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use podscope_runtime::blocking::BlockingCriClient;
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use podscope_runtime::layout::parse_kube_cgroup;
use podscope_runtime::{cgroup, discover, discover_detailed, procscan, Pod, Selector, Source};

const IMAGE: &str = "localhost/busybox:latest";

fn socket() -> PathBuf {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "the CRI tests need root (containerd, cgroups): run them as root"
    );
    let Some(sock) = std::env::var_os("PODBED_SOCKET") else {
        panic!(
            "PODBED_SOCKET is not set. These tests need the containerd test bed:\n  \
             bash testbed/podbed.sh install && bash testbed/podbed.sh up\n  \
             export PODBED_SOCKET=/run/podscope-testbed/containerd.sock"
        );
    };
    let sock = PathBuf::from(sock);
    assert!(
        sock.exists(),
        "PODBED_SOCKET={} does not exist: is the test bed up? (bash testbed/podbed.sh up)",
        sock.display()
    );
    sock
}

/// The cgroup2 mount point, found independently of the library.
fn cgroup2_root() -> PathBuf {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .map(|l| PathBuf::from(l.split(' ').nth(4).unwrap()))
        .collect();
    found.sort_by_key(|p| p != Path::new("/sys/fs/cgroup"));
    found.into_iter().next().expect("a cgroup2 mount")
}

fn unified_line(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .expect("a 0:: line")
}

fn suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{:x}", std::process::id(), nanos)
}

/// Removes its pod on drop, so a failed assertion leaves no pod or cgroup behind.
struct PodGuard {
    socket: PathBuf,
    sandbox_id: String,
    cgroup: String,
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = BlockingCriClient::connect(&self.socket) {
            if let Err(e) = c.remove_pod(&self.sandbox_id, Some(&self.cgroup)) {
                eprintln!("cleanup of sandbox {} failed: {e}", self.sandbox_id);
            }
        }
    }
}

fn run(
    client: &mut BlockingCriClient,
    sock: &Path,
    spec: &PodSpec,
    containers: &[ContainerSpec],
) -> (Pod, PodGuard) {
    let pod = client
        .run_pod(spec, containers)
        .unwrap_or_else(|e| panic!("creating pod {}/{}: {e}", spec.namespace, spec.name));
    let guard = PodGuard {
        socket: sock.to_owned(),
        sandbox_id: pod.sandbox_id.clone().unwrap(),
        cgroup: spec.cgroup_parent(),
    };
    (pod, guard)
}

fn check_pod(found: &Pod, spec: &PodSpec, container_names: &[&str], v2: &Path) {
    let what = format!("{}/{}", spec.namespace, spec.name);
    assert_eq!(found.uid, spec.uid, "{what}");
    assert_eq!(found.name, spec.name, "{what}");
    assert_eq!(found.namespace, spec.namespace, "{what}");
    assert_eq!(
        found.labels, spec.labels,
        "{what}: labels without kubelet's io.kubernetes.*"
    );
    assert_eq!(found.source, Source::Cri);
    assert_eq!(found.runtime, "containerd");
    assert!(
        found.ip.as_deref().is_some_and(|ip| !ip.is_empty()),
        "{what}: pod IP"
    );

    // The pod cgroup: what kubelet would have made, and its id is its inode.
    let pod_cg = found.cgroup_path.as_deref().expect("pod cgroup path");
    assert_eq!(pod_cg, spec.cgroup_parent(), "{what}");
    let pod_dir = v2.join(pod_cg.trim_start_matches('/'));
    assert_eq!(
        found.cgroup_id,
        Some(fs::metadata(&pod_dir).unwrap().ino()),
        "{what}: pod cgroup id"
    );

    // The sandbox's pause process is in the pod, in its own container cgroup.
    let spid = found.sandbox_pid.expect("sandbox pid");
    let spath = unified_line(spid);
    assert_eq!(
        parse_kube_cgroup(&spath).unwrap().container_id.as_deref(),
        found.sandbox_id.as_deref(),
        "{what}: pause process cgroup"
    );

    let mut names: Vec<&str> = found.containers.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, container_names, "{what}");
    for c in &found.containers {
        let pid = c.pid.unwrap_or_else(|| panic!("{what}/{}: no pid", c.name));
        assert_eq!(c.image, IMAGE);
        // The pid is really in the container's cgroup ...
        let line = unified_line(pid);
        assert_eq!(
            c.cgroup_path.as_deref(),
            Some(line.as_str()),
            "{what}/{}",
            c.name
        );
        let k = parse_kube_cgroup(&line).unwrap();
        assert_eq!(k.pod_uid, spec.uid);
        assert_eq!(k.container_id.as_deref(), Some(c.id.as_str()));
        assert_eq!(k.pod_cgroup, pod_cg);
        // ... and the id is the directory's inode, as bpf_get_current_cgroup_id() sees it.
        let dir = v2.join(line.trim_start_matches('/'));
        assert_eq!(
            c.cgroup_id,
            Some(fs::metadata(&dir).unwrap().ino()),
            "{what}/{}",
            c.name
        );
        assert_eq!(cgroup::cgroup_id_of_pid(pid).unwrap(), c.cgroup_id.unwrap());
        // ... and in the container's mount namespace (the file exists only in the image).
        assert!(
            Path::new(&format!("/proc/{pid}/root/podbed-marker")).exists(),
            "{what}/{}: /proc/{pid}/root is not the busybox image",
            c.name
        );
    }
}

#[test]
fn cri_discovery_finds_pods_in_two_namespaces_and_proc_agrees() {
    let sock = socket();
    assert!(
        !Path::new("/podbed-marker").exists(),
        "the marker must exist only in the image"
    );
    let v2 = cgroup2_root();
    let mut client = BlockingCriClient::connect(&sock).unwrap();
    let sfx = suffix();
    let log_base = sock.parent().unwrap().join("pod-logs");

    let mut web = PodSpec::new(&format!("web-{sfx}"), "podscope-test-a").unwrap();
    web = web.label("app", "web").label("tier", "front");
    web.log_directory = Some(log_base.join(format!("{}_{}_{}", web.namespace, web.name, web.uid)));
    let mut db = PodSpec::new(&format!("db-{sfx}"), "podscope-test-b").unwrap();
    db = db.label("app", "db");
    db.log_directory = Some(log_base.join(format!("{}_{}_{}", db.namespace, db.name, db.uid)));

    let sleep = ["sh", "-c", "sleep 3600"];
    let (_, web_guard) = run(
        &mut client,
        &sock,
        &web,
        &[
            ContainerSpec::new("app", IMAGE, &sleep),
            ContainerSpec::new("sidecar", IMAGE, &sleep),
        ],
    );
    let (_, db_guard) = run(
        &mut client,
        &sock,
        &db,
        &[ContainerSpec::new("db", IMAGE, &sleep)],
    );

    // CRI discovery through the public entry point, with an explicit endpoint.
    let endpoint = format!("unix://{}", sock.display());
    let d = discover_detailed(Some(&endpoint)).unwrap();
    assert_eq!(d.source, Source::Cri);
    assert_eq!(d.warning, None);
    assert_eq!(d.runtime.as_deref(), Some("containerd"));
    let by_uid: BTreeMap<&str, &Pod> = d.pods.iter().map(|p| (p.uid.as_str(), p)).collect();
    let found_web = by_uid.get(web.uid.as_str()).expect("web pod discovered");
    let found_db = by_uid.get(db.uid.as_str()).expect("db pod discovered");
    check_pod(found_web, &web, &["app", "sidecar"], &v2);
    check_pod(found_db, &db, &["db"], &v2);
    assert_ne!(found_web.ip, found_db.ip);

    // Selectors and names work on what discovery returns.
    let sel = Selector::parse("app in (web,db),tier!=back").unwrap();
    assert!(sel.matches(&found_web.labels) && sel.matches(&found_db.labels));
    assert!(!Selector::parse("tier=front")
        .unwrap()
        .matches(&found_db.labels));

    // The /proc fallback finds the same pods, containers, pids and cgroup ids.
    let proc_pods = procscan::scan_proc().unwrap();
    for cri_pod in [found_web, found_db] {
        let p = proc_pods
            .iter()
            .find(|p| p.uid == cri_pod.uid)
            .unwrap_or_else(|| panic!("/proc scan misses pod {}", cri_pod.uid));
        assert_eq!(p.source, Source::Proc);
        assert_eq!(
            p.name, cri_pod.uid,
            "names are unknown to /proc: the uid stands in"
        );
        assert_eq!(
            p.sandbox_id, cri_pod.sandbox_id,
            "pause container told apart"
        );
        assert_eq!(p.sandbox_pid, cri_pod.sandbox_pid);
        assert_eq!(p.cgroup_path, cri_pod.cgroup_path);
        assert_eq!(p.cgroup_id, cri_pod.cgroup_id);
        let mut want: Vec<(&str, Option<u32>, Option<u64>)> = cri_pod
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c.pid, c.cgroup_id))
            .collect();
        let mut got: Vec<(&str, Option<u32>, Option<u64>)> = p
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c.pid, c.cgroup_id))
            .collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "containers of pod {}", cri_pod.uid);
    }

    // Removal: the pods, their containers' and their pod cgroups, everywhere.
    let cgroups = [web.cgroup_parent(), db.cgroup_parent()];
    drop(web_guard);
    drop(db_guard);
    let after = discover(Some(&endpoint)).unwrap();
    assert!(
        after.iter().all(|p| p.uid != web.uid && p.uid != db.uid),
        "pods removed"
    );
    for m in cgroup::cgroup_mounts().unwrap() {
        for cg in &cgroups {
            let dir = m.dir_of(cg);
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }
}

#[test]
fn host_network_pod_has_no_ip_of_its_own() {
    let sock = socket();
    let mut client = BlockingCriClient::connect(&sock).unwrap();
    let mut spec = PodSpec::new(&format!("hostnet-{}", suffix()), "podscope-test-a").unwrap();
    spec.host_network = true;
    let (pod, _guard) = run(
        &mut client,
        &sock,
        &spec,
        &[ContainerSpec::new("c", IMAGE, &["sleep", "3600"])],
    );
    assert_eq!(pod.ip, None);
    let pid = pod.containers[0].pid.unwrap();
    let netns = |p: &str| fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_eq!(
        netns(&pid.to_string()),
        netns("self"),
        "shares the host network namespace"
    );
}

#[test]
fn explicit_endpoints_that_do_not_answer_are_errors_naming_them() {
    let e = discover(Some("unix:///nonexistent/podscope.sock"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/podscope.sock"), "{e}");
    let e = discover(Some("tcp://127.0.0.1:1")).unwrap_err().to_string();
    assert!(e.contains("only unix sockets"), "{e}");
}
