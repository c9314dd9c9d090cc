//! Per-pod tracing and `podscope ps` against real containerd CRI pods (the
//! test bed: testbed/podbed.sh). Needs root and PODBED_SOCKET; without them
//! these tests fail and say how to start the test bed.

mod common;

use std::io::BufReader;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{endpoint, pod, suffix, wait_attached, IMAGE};
use serde_json::Value;

/// A shell loop that execs a distinctive command every 200 ms (cat is exec'd by busybox sh; ls is not).
fn busy(tag: &str) -> String {
    format!("while true; do cat /{tag} 2>/dev/null; sleep 0.2; done")
}

fn podscope(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_podscope"));
    c.args(args).arg("--runtime-endpoint").arg(endpoint());
    c
}

/// Starts `podscope trace ... -o json`, waits until its probes are attached.
fn start_trace(args: &[&str]) -> Child {
    let mut child = podscope(&[&["trace"], args, &["-o", "json"]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    wait_attached(&mut stderr);
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    });
    child
}

fn events(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "podscope trace failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] != "summary" && v["kind"] != "lost")
        .collect()
}

fn execs_with_arg<'a>(evs: &'a [Value], arg: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| {
            e["probe"] == "exec"
                && e["args"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == arg))
        })
        .collect()
}

#[test]
fn trace_by_pod_sees_only_that_pod_with_identity() {
    let s = suffix();
    let (ns1, ns2) = (format!("ns1-{s}"), format!("ns2-{s}"));
    let a = pod("a", &ns1, &[], &[("app", &busy("work"))]);
    let _b = pod("a", &ns2, &[], &[("app", &busy("work"))]);
    let child = start_trace(&["exec,tcp", "--pod", "a", "-n", &ns1, "--duration", "3s"]);
    let evs = events(child);
    assert!(!evs.is_empty(), "pod a's loop must produce exec events");
    for e in &evs {
        assert_eq!(e["namespace"], ns1.as_str(), "only ns1/a: {e}");
        assert_eq!(e["pod"], "a", "{e}");
        assert_eq!(e["pod_uid"], a.pod.uid.as_str(), "{e}");
        assert!(e["node"].as_str().is_some_and(|n| !n.is_empty()), "{e}");
    }
    let work = execs_with_arg(&evs, "/work");
    assert!(!work.is_empty(), "the ls /work execs of pod a");
    for e in work {
        assert_eq!(e["container"], "app");
        assert_eq!(e["image"], IMAGE);
        assert_eq!(e["container_id"], a.pod.containers[0].id.as_str());
    }
}

#[test]
fn pod_created_after_the_trace_started_has_its_first_command_captured() {
    let s = suffix();
    let ns = format!("late-{s}");
    let child = start_trace(&[
        "exec",
        "-n",
        &ns,
        "--pod",
        "late-*",
        "--wait",
        "--duration",
        "60s",
    ]);
    let marker = format!("first-{s}");
    let script = format!("echo {marker}; sleep 1");
    let late = pod("late-1", &ns, &[], &[("main", &script)]);
    // However long pod creation took (other tests create pods too), stop 2 s after it.
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let evs = events(child);
    // The container's very first exec is its entrypoint: sh -c "echo first-...; sleep 1",
    // after the runtime's own `runc init`, which execs in the container's
    // cgroup just before (and is attributed to the container when seen).
    let first = evs
        .iter()
        .filter(|e| e["args"] != serde_json::json!(["runc", "init"]))
        .find(|e| e["probe"] == "exec" && e["container"] == "main")
        .unwrap_or_else(|| panic!("no exec from the late pod's container: {evs:?}"));
    assert_eq!(
        first["args"],
        serde_json::json!(["sh", "-c", script]),
        "the entrypoint is the first exec seen"
    );
    assert_eq!(first["pod"], "late-1");
    assert_eq!(first["namespace"], ns.as_str());
    assert_eq!(first["pod_uid"], late.pod.uid.as_str());
}

#[test]
fn label_selection_across_namespaces_and_container_selection() {
    let s = suffix();
    let app = format!("web{s}");
    let (ns1, ns2) = (format!("l1-{s}"), format!("l2-{s}"));
    let _w1 = pod("w1", &ns1, &[("app", &app)], &[("c", &busy("lab"))]);
    let _w2 = pod("w2", &ns2, &[("app", &app)], &[("c", &busy("lab"))]);
    let _other = pod("o", &ns1, &[("app", "other")], &[("c", &busy("lab"))]);
    let child = start_trace(&[
        "exec",
        "-l",
        &format!("app={app}"),
        "-A",
        "--duration",
        "3s",
    ]);
    let evs = events(child);
    let pods: std::collections::BTreeSet<String> = evs
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["namespace"]
                    .as_str()
                    .unwrap_or_else(|| panic!("an event without its pod: {e}")),
                e["pod"].as_str().unwrap()
            )
        })
        .collect();
    let want: std::collections::BTreeSet<String> =
        [format!("{ns1}/w1"), format!("{ns2}/w2")].into();
    assert_eq!(pods, want, "both labelled pods, and not the other one");

    let ns3 = format!("c-{s}");
    let _two = pod(
        "two",
        &ns3,
        &[],
        &[("web", &busy("webc")), ("db", &busy("dbc"))],
    );
    let child = start_trace(&["exec", "-n", &ns3, "--container", "db", "--duration", "3s"]);
    let evs = events(child);
    assert!(
        !execs_with_arg(&evs, "/dbc").is_empty(),
        "the db container's execs"
    );
    assert!(
        execs_with_arg(&evs, "/webc").is_empty(),
        "nothing from the web container"
    );
    assert!(evs.iter().all(|e| e["container"] == "db"), "{evs:?}");
}

#[test]
fn unknown_pod_error_lists_the_real_pods() {
    let s = suffix();
    let ns = format!("err-{s}");
    let _p = pod("real-pod", &ns, &[], &[("c", "sleep 30")]);
    let out = podscope(&["trace", "exec", "--pod", "rael-pod", "-n", &ns])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no pod rael-pod in namespace {ns}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("did you mean {ns}/real-pod")),
        "{err}"
    );
    assert!(err.contains("pods on this node"), "{err}");
}

#[test]
fn ps_shows_pods_with_pids_and_cgroup_ids_that_match_proc() {
    let s = suffix();
    let ns = format!("ps-{s}");
    let p1 = pod("p1", &ns, &[], &[("c", "sleep 60")]);
    let p2 = pod("p2", &ns, &[], &[("c", "sleep 60")]);
    let out = podscope(&["ps", "-n", &ns, "-o", "json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let v2 = podscope_runtime::cgroup::cgroup2_mount().unwrap();
    for (guard, name) in [(&p1, "p1"), (&p2, "p2")] {
        let row = rows.iter().find(|r| r["pod"] == name).expect("pod row");
        assert_eq!(row["namespace"], ns.as_str());
        assert_eq!(row["image"], IMAGE);
        let pid = guard.pod.containers[0].pid.unwrap();
        let pids: Vec<u64> = row["pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        assert!(pids.contains(&(pid as u64)), "{pids:?} has {pid}");
        // Check the cgroup id against /proc and the cgroup directory's inode.
        let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let path = line
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_string();
        let ino = std::fs::metadata(v2.dir_of(&path)).unwrap().ino();
        assert_eq!(row["cgroup_id"].as_u64(), Some(ino), "{name}: {path}");
    }
    let out = podscope(&["ps", "-n", &ns]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("NAMESPACE"), "{text}");
    assert!(text.contains("p1") && text.contains("p2"), "{text}");
}

/// The agent's DaemonSet runs podscope with the host's PID namespace but a
/// cgroup namespace of its own, where /proc/PID/cgroup of the pods' processes
/// reads "/../kubepods/...". podscope joins the host's cgroup namespace, so
/// `ps` run that way gives the same cgroup ids as on the host.
#[test]
fn ps_in_a_cgroup_namespace_of_its_own_finds_the_same_cgroups() {
    let s = suffix();
    let ns = format!("cgns-{s}");
    let p = pod("p1", &ns, &[], &[("c", "sleep 60")]);
    let v2 = podscope_runtime::cgroup::cgroup2_mount().unwrap();
    let rows = |out: std::process::Output| -> Vec<(String, u64)> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|r| {
                (
                    r["pod"].as_str().unwrap().to_string(),
                    r["cgroup_id"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let host = rows(podscope(&["ps", "-n", &ns, "-o", "json"]).output().unwrap());
    assert_eq!(host.len(), 1);
    assert!(host[0].1 > 0);
    // A cgroup to be the new namespace's root, next to the pods' QoS
    // cgroups (as the agent's own container is): the pods' paths then read
    // "/../besteffort/pod.../...", which name nothing when taken as they are.
    let pod_path = p.pod.containers[0].cgroup_path.clone().unwrap();
    let top = pod_path.trim_start_matches('/').split('/').next().unwrap();
    let dir = v2.dir_of(&format!("/{top}/podscope-cgns-{s}"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --cgroup \"$@\"",
        dir.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script, "sh", env!("CARGO_BIN_EXE_podscope")])
        .args([
            "ps",
            "-n",
            &ns,
            "-o",
            "json",
            "--runtime-endpoint",
            &endpoint(),
        ]);
    let out = cmd.output().unwrap();
    // The view from inside really is relative: this shell sees "/.." paths.
    let inside = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec unshare --cgroup cat /proc/1/cgroup",
                dir.display()
            ),
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&dir);
    assert!(
        String::from_utf8_lossy(&inside.stdout).contains("0::/../"),
        "{}",
        String::from_utf8_lossy(&inside.stdout)
    );
    assert_eq!(rows(out), host, "same pods and cgroup ids as on the host");
}

/// The ftrace hook (no BPF) follows one pod's tasks by pid: exactly the N
/// failing opens the pod makes on a trigger, with the pod's identity (also
/// for the short-lived `cat`s, attributed through their fork records), the
/// same count the BPF tracepoint hook reports at the same time, and nothing
/// of an identical pod in another namespace.
#[test]
fn ftrace_hook_traces_exactly_one_pods_tasks() {
    const N: usize = 9;
    let s = suffix();
    let (ns1, ns2) = (format!("fta-{s}"), format!("ftb-{s}"));
    let script = format!(
        "while [ ! -e /go ]; do sleep 0.1; done; for i in {}; do cat /ftmiss 2>/dev/null; done; \
         echo ok > /done; while true; do sleep 1; done",
        (1..=N).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
    );
    let a = pod("ft", &ns1, &[], &[("app", &script)]);
    let b = pod("ft", &ns2, &[], &[("app", &script)]);
    let ftrace = start_trace(&["ftrace:syscalls:sys_exit_openat", "--pod", "ft", "-n", &ns1]);
    let bpf = start_trace(&["tp:syscalls:sys_exit_openat", "--pod", "ft", "-n", &ns1]);
    for p in [&a, &b] {
        std::fs::write(p.path_in("app", "/go"), "go").unwrap();
    }
    for p in [&a, &b] {
        common::wait_for("the opens", Duration::from_secs(10), || {
            p.path_in("app", "/done").exists()
        });
    }
    // Both read what the kernel still holds when they stop.
    let stop = |c: &Child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap()
    };
    stop(&ftrace);
    stop(&bpf);
    let (fe, be) = (events(ftrace), events(bpf));
    let failed = |evs: &[Value]| {
        evs.iter()
            .filter(|e| e["fields"]["ret"].as_i64() == Some(-2))
            .count()
    };
    assert_eq!(failed(&be), N, "the BPF hook");
    assert_eq!(failed(&fe), N, "the ftrace hook: {fe:?}");
    for e in &fe {
        assert_eq!(e["tracepoint"], "syscalls:sys_exit_openat", "{e}");
        assert_eq!(
            e["namespace"],
            ns1.as_str(),
            "only pod a, with its identity: {e}"
        );
        assert_eq!(e["pod"], "ft", "{e}");
        assert_eq!(e["container"], "app", "{e}");
    }
}
