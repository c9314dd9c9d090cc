//! `podscope exec` against real pods on the containerd test bed (testbed/podbed.sh):
//! namespaces joined, exit codes, timeouts, several pods, errors a user can act on.
//!
//! Needs root, the test bed and tcpdump:
//!
//! ```sh
//! bash testbed/podbed.sh up
//! PODBED_SOCKET=/run/podscope-testbed/containerd.sock cargo test -p podscope --test exec
//! ```
//!
//! Without them these tests fail and say so: they never pass silently.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::IMAGE;
use podscope_runtime::blocking::BlockingCriClient;
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use podscope_runtime::{ContainerState, Pod};

/// No test command should get anywhere near this; it only stops a hung test.
const WATCHDOG: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// The test bed: its socket, checked, and the endpoint flag value for podscope.
struct Bed {
    socket: PathBuf,
    endpoint: String,
}

fn bed() -> Bed {
    assert!(
        is_root(),
        "the exec tests need root (setns, containerd): run them as root"
    );
    let Some(sock) = std::env::var_os("PODBED_SOCKET") else {
        panic!(
            "PODBED_SOCKET is not set. These tests need the containerd test bed:\n  \
             bash testbed/podbed.sh up\n  \
             export PODBED_SOCKET=/run/podscope-testbed/containerd.sock"
        );
    };
    let socket = PathBuf::from(sock);
    assert!(
        socket.exists(),
        "PODBED_SOCKET={} does not exist: is the test bed up? (bash testbed/podbed.sh up)",
        socket.display()
    );
    let endpoint = format!("unix://{}", socket.display());
    Bed { socket, endpoint }
}

/// A name unique to this test run: `<tag>-<pid>`.
fn unique(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// Removes its pod on drop, so a failed assertion leaves no pod or cgroup behind.
struct PodGuard {
    socket: PathBuf,
    sandbox_id: String,
    cgroup: String,
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        match BlockingCriClient::connect(&self.socket) {
            Ok(mut c) => {
                if let Err(e) = c.remove_pod(&self.sandbox_id, Some(&self.cgroup)) {
                    eprintln!("cleanup of sandbox {} failed: {e}", self.sandbox_id);
                }
            }
            Err(e) => eprintln!("cleanup of sandbox {}: {e}", self.sandbox_id),
        }
    }
}

/// Starts a pod whose containers run `sleep 3600` (or the given commands).
fn pod(
    bed: &Bed,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    containers: &[(&str, &[&str])],
) -> (Pod, PodGuard) {
    let mut client = BlockingCriClient::connect(&bed.socket).unwrap();
    let mut spec = PodSpec::new(name, namespace).unwrap();
    for (k, v) in labels {
        spec = spec.label(k, v);
    }
    spec.log_directory = Some(
        bed.socket
            .parent()
            .unwrap()
            .join("pod-logs")
            .join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid)),
    );
    let specs: Vec<ContainerSpec> = containers
        .iter()
        .map(|(c, cmd)| ContainerSpec::new(c, IMAGE, cmd))
        .collect();
    let pod = client
        .run_pod(&spec, &specs)
        .unwrap_or_else(|e| panic!("creating pod {namespace}/{name}: {e}"));
    let guard = PodGuard {
        socket: bed.socket.clone(),
        sandbox_id: pod.sandbox_id.clone().unwrap(),
        cgroup: spec.cgroup_parent(),
    };
    assert!(pod.ip.is_some(), "pod {namespace}/{name} has no IP");
    (pod, guard)
}

fn sleeper(bed: &Bed, namespace: &str, name: &str, labels: &[(&str, &str)]) -> (Pod, PodGuard) {
    pod(bed, namespace, name, labels, &[("app", &["sleep", "3600"])])
}

/// Kills a child on drop, so a failed assertion leaves no tool running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `podscope exec --runtime-endpoint <bed> ARGS...`, with `each_tick` called
/// every 50 ms while it runs.
fn exec_with(bed: Option<&Bed>, args: &[&str], mut each_tick: impl FnMut()) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podscope"));
    cmd.arg("exec");
    if let Some(bed) = bed {
        cmd.arg("--runtime-endpoint").arg(&bed.endpoint);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let out = read_all(child.0.stdout.take().unwrap());
    let err = read_all(child.0.stderr.take().unwrap());
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < WATCHDOG,
            "podscope exec {args:?} still runs after {WATCHDOG:?}"
        );
        each_tick();
        thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    }
}

fn exec(bed: &Bed, args: &[&str]) -> Out {
    exec_with(Some(bed), args, || {})
}

/// The host's own IPv4 addresses, loopback excluded.
fn host_ipv4_addresses() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            f.position(|w| w == "inet")?;
            f.next()?.split('/').next().map(str::to_owned)
        })
        .filter(|a| !a.starts_with("127."))
        .collect()
}

#[test]
fn ip_addr_shows_the_pods_address_not_the_hosts() {
    let bed = bed();
    let ns = unique("px-ip");
    let name = unique("web");
    let (p, _guard) = sleeper(&bed, &ns, &name, &[]);
    let ip = p.ip.clone().unwrap();

    let o = exec(&bed, &["--pod", &name, "-n", &ns, "--", "ip", "-o", "addr"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(&format!("inet {ip}/")),
        "pod IP {ip} missing: {o:?}"
    );
    let host = host_ipv4_addresses();
    // The bridge shares the pod's subnet (whatever PODBED_SUBNET the bed uses).
    let subnet = &ip[..ip.rfind('.').unwrap() + 1];
    assert!(
        host.iter().any(|a| a.starts_with(subnet)),
        "the host should have the podbed bridge address in {subnet}0/24: {host:?}"
    );
    for a in &host {
        assert!(
            !o.stdout.contains(&format!("inet {a}/")),
            "host address {a} seen inside the pod: {}",
            o.stdout
        );
    }
}

#[test]
fn tcpdump_captures_packets_sent_to_the_pod() {
    let bed = bed();
    assert!(
        Command::new("tcpdump")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tcpdump is not installed: apt-get install tcpdump"
    );
    let ns = unique("px-tcpdump");
    let name = unique("web");
    let (p, _guard) = sleeper(&bed, &ns, &name, &[]);
    let ip = p.ip.clone().unwrap();

    // Datagrams from the host side until tcpdump has seen five; nothing in
    // the pod listens, so only these match `udp` (replies are ICMP).
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    let mut sent = 0;
    let o = exec_with(
        Some(&bed),
        &[
            "--pod", &name, "-n", &ns, "--", "tcpdump", "-i", "eth0", "-c", "5", "-n", "udp",
        ],
        || {
            if sock.send_to(b"podscope", (ip.as_str(), 9999)).is_ok() {
                sent += 1;
            }
        },
    );
    assert_eq!(o.code, 0, "{o:?}");
    let packets: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("> {ip}.9999: UDP")))
        .collect();
    assert_eq!(packets.len(), 5, "{o:?}");
    assert!(o.stderr.contains("5 packets captured"), "{o:?}");
    assert!(sent >= 5, "sent {sent}");
}

#[test]
fn exit_codes_pass_through() {
    let bed = bed();
    let ns = unique("px-codes");
    let name = unique("web");
    let (_p, _guard) = sleeper(&bed, &ns, &name, &[]);
    let pod = ["--pod", name.as_str(), "-n", ns.as_str()];
    let run = |extra: &[&str]| exec(&bed, &[&pod[..], extra].concat());

    let o = run(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(o.code, 7, "{o:?}");
    let o = run(&["--ns", "pid", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        o.code, 3,
        "through the pid namespace's waiting child: {o:?}"
    );
    let o = run(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.code, 128 + 15, "signal death is 128+N: {o:?}");

    let missing = unique("no-such-tool");
    let o = run(&["--", &missing, "--flag"]);
    assert_eq!(o.code, 127, "{o:?}");
    assert!(
        o.stderr
            .contains(&format!("{missing}: command not found on this host")),
        "{o:?}"
    );
    assert!(o.stderr.contains("add mnt to --ns"), "{o:?}");
    let o = run(&["--ns", "pid", "--", &missing]);
    assert_eq!(o.code, 127, "{o:?}");
    let o = run(&["--ns", "mnt", "--", "/podbed-marker"]);
    assert_eq!(o.code, 126, "a file that is not executable: {o:?}");
    assert!(o.stderr.contains("cannot execute"), "{o:?}");
}

/// Every process whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn timeout_stops_the_tool_with_124() {
    let bed = bed();
    let ns = unique("px-timeout");
    let name = unique("web");
    let (_p, _guard) = sleeper(&bed, &ns, &name, &[]);

    let o = exec(
        &bed,
        &["--pod", &name, "-n", &ns, "-t", "1s", "--", "sleep", "30"],
    );
    assert_eq!(o.code, 124, "{o:?}");
    assert!(o.elapsed < Duration::from_secs(5), "took {:?}", o.elapsed);

    // A tool that ignores SIGTERM, behind the pid namespace's waiting child:
    // SIGKILL 2 s later must reach the tool too, not only that child.
    let secs = (1000 + std::process::id() % 100_000).to_string();
    let o = exec(
        &bed,
        &[
            "--pod",
            &name,
            "-n",
            &ns,
            "--ns",
            "pid",
            "-t",
            "1s",
            "--",
            "sh",
            "-c",
            &format!("trap '' TERM; sleep {secs}"),
        ],
    );
    assert_eq!(o.code, 124, "{o:?}");
    assert!(
        o.elapsed >= Duration::from_secs(3) && o.elapsed < Duration::from_secs(6),
        "SIGKILL 2 s after SIGTERM; took {:?}",
        o.elapsed
    );
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        processes_running(&["sleep", &secs]),
        Vec::<u32>::new(),
        "the tool outlived podscope exec"
    );
}

#[test]
fn mnt_runs_the_containers_own_files_and_pid_sees_its_processes() {
    let bed = bed();
    let ns = unique("px-mnt");
    let name = unique("web");
    let (p, _guard) = sleeper(&bed, &ns, &name, &[]);
    assert!(
        !Path::new("/podbed-marker").exists(),
        "the marker must exist only in the image"
    );
    let cpid = p.containers[0].pid.unwrap();
    let marker = std::fs::read_to_string(format!("/proc/{cpid}/root/podbed-marker")).unwrap();
    assert!(!marker.is_empty());

    let o = exec(
        &bed,
        &[
            "--pod",
            &name,
            "-n",
            &ns,
            "--ns",
            "mnt",
            "--",
            "cat",
            "/podbed-marker",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, marker);

    let o = exec(
        &bed,
        &["--pod", &name, "-n", &ns, "--", "cat", "/podbed-marker"],
    );
    assert_ne!(o.code, 0, "without mnt the host's files are seen: {o:?}");
    assert!(o.stderr.contains("No such file"), "{o:?}");

    // pid + mnt: the container's ps and /proc, where its sleep is pid 1.
    let o = exec(
        &bed,
        &["--pod", &name, "-n", &ns, "--ns", "pid,mnt", "--", "ps"],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"1") && l.contains("sleep 3600")
        }),
        "{o:?}"
    );
}

#[test]
fn selector_runs_in_every_matching_pod_with_prefixes_or_files() {
    let bed = bed();
    let ns = unique("px-sel");
    let app = unique("sel");
    let (a, _ga) = sleeper(&bed, &ns, &unique("sel-a"), &[("app", &app)]);
    let (b, _gb) = sleeper(&bed, &ns, &unique("sel-b"), &[("app", &app)]);
    let (_c, _gc) = sleeper(&bed, &ns, &unique("other"), &[("app", "other")]);
    let selector = format!("app={app}");
    let script = "ip -o -4 addr show dev eth0; echo to-stderr >&2";

    let o = exec(
        &bed,
        &["-l", &selector, "-n", &ns, "--", "sh", "-c", script],
    );
    assert_eq!(o.code, 0, "{o:?}");
    for p in [&a, &b] {
        let prefix = format!("{ns}/{}: ", p.name);
        let ip = p.ip.as_deref().unwrap();
        let lines: Vec<&str> = o
            .stdout
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        assert_eq!(lines.len(), 1, "{prefix}: {o:?}");
        assert!(
            lines[0].contains(&format!("inet {ip}/")),
            "{prefix} runs in its own pod: {o:?}"
        );
        assert!(o.stderr.contains(&format!("{prefix}to-stderr\n")), "{o:?}");
    }
    assert_eq!(o.stdout.lines().count(), 2, "only the labelled pods: {o:?}");
    assert!(
        !o.stdout.contains("to-stderr"),
        "stderr stays on stderr: {o:?}"
    );

    let o = exec(
        &bed,
        &["-l", &selector, "-n", &ns, "--", "sh", "-c", "exit 3"],
    );
    assert_eq!(o.code, 3, "{o:?}");

    let dir = std::env::temp_dir().join(unique("podscope-exec-out"));
    let _ = std::fs::remove_dir_all(&dir);
    let out_dir = dir.join("nested");
    let o = exec(
        &bed,
        &[
            "-l",
            &selector,
            "-n",
            &ns,
            "--output-dir",
            out_dir.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "", "output went to the files: {o:?}");
    let files: BTreeSet<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = [&a, &b]
        .iter()
        .map(|p| format!("{ns}_{}.log", p.name))
        .collect();
    assert_eq!(files, want);
    for p in [&a, &b] {
        let text = std::fs::read_to_string(out_dir.join(format!("{ns}_{}.log", p.name))).unwrap();
        assert!(
            text.contains(&format!("inet {}/", p.ip.as_deref().unwrap())),
            "{text}"
        );
        assert!(text.contains("to-stderr\n"), "{text}");
        assert!(
            !text.contains(&format!("{ns}/")),
            "no prefixes in files: {text}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_pod_exits_1_and_names_the_real_ones() {
    let bed = bed();
    let ns = unique("px-missing");
    let name = unique("web");
    let (_p, _guard) = sleeper(&bed, &ns, &name, &[]);

    let typo = format!("{name}x");
    let o = exec(&bed, &["--pod", &typo, "-n", &ns, "--", "true"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains(&format!("no pod {typo} in namespace {ns}")),
        "{o:?}"
    );
    assert!(
        o.stderr.contains(&format!("did you mean {ns}/{name}")),
        "{o:?}"
    );
    assert!(o.stderr.contains("pods on this node ("), "{o:?}");
}

#[test]
fn stopped_container_is_named() {
    let bed = bed();
    let ns = unique("px-stopped");
    let name = unique("web");
    let (_p, _guard) = pod(
        &bed,
        &ns,
        &name,
        &[],
        &[("app", &["sleep", "3600"]), ("job", &["true"])],
    );
    // Wait for the runtime to see the job finish.
    let start = Instant::now();
    loop {
        let pods = podscope_runtime::discover(Some(&bed.endpoint)).unwrap();
        let p = pods
            .iter()
            .find(|p| p.name == name)
            .expect("pod discovered");
        if p.container("job")
            .is_some_and(|c| c.state == ContainerState::Exited)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "job never exited: {p:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }

    let o = exec(
        &bed,
        &[
            "--pod",
            &name,
            "-n",
            &ns,
            "--container",
            "job",
            "--",
            "true",
        ],
    );
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains(&format!(
            "container job of pod {ns}/{name} is not running (state: exited)"
        )),
        "{o:?}"
    );
    let o = exec(
        &bed,
        &[
            "--pod",
            &name,
            "-n",
            &ns,
            "--container",
            "app",
            "--",
            "true",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn without_root_the_missing_capability_is_named() {
    assert!(
        is_root(),
        "this test drops root with setpriv, so it must start as root"
    );
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_podscope"))
        .args(["exec", "--pod", "web-0", "-n", "shop", "--", "true"])
        .output()
        .expect("setpriv (util-linux) runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
}

#[test]
fn bad_namespaces_and_missing_pod_flags_are_explained() {
    let o = exec_with(
        None,
        &["--pod", "web-0", "--ns", "net,usr", "--", "true"],
        || {},
    );
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("unknown namespace 'usr'"), "{o:?}");
    assert!(
        o.stderr.contains("net, pid, mnt, uts, ipc, cgroup"),
        "{o:?}"
    );

    let o = exec_with(None, &["--", "true"], || {});
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("--pod NAME"), "{o:?}");
    assert!(o.stderr.contains("-l SELECTOR"), "{o:?}");
}
