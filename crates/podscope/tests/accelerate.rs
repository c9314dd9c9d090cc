//! `podscope accelerate` against real containerd CRI pods on the test bed
//! (testbed/podbed.sh): two selected pods exchange byte-exact data (echo
//! round trips, 16 MiB each way with sha256, nginx keep-alive GETs read
//! through edge-triggered epoll with FIONREAD checked) with acceleration on;
//! the kernel's redirect counters agree exactly with what the applications
//! sent; tcpdump inside the client pod sees no payload of an accelerated
//! connection and sees a new one after --off; loopback inside a pod is
//! left alone and counted; a connection open across
//! --off (with a thread blocked in recv() on it) and one opened before
//! acceleration keep working; pod-to-host and
//! unselected-pod connections are left alone and counted by reason; --off
//! leaves no pin and no attached program. Needs root, PODBED_SOCKET,
//! python3, nginx and tcpdump (scripts/setup.sh).
//!
//! Acceleration is one node-wide state (pins under /sys/fs/bpf/podscope/accel),
//! so the root tests of this file take a lock and run one at a time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{endpoint, root_or_skip, run_pod, suffix, wait_for, PodGuard, IMAGE};
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";
const NGINX: &str = "/usr/sbin/nginx";
const RUNNER: &str = include_str!("accelerate_runner.py");
/// Ports of this test (the accel worktree's range 39300-39399).
const ECHO_PORT: u16 = 39310;
const NGINX_PORT: u16 = 39311;
const HOST_PORT: u16 = 39312;
const LOOP_PORT: u16 = 39313;
const PIN_DIR: &str = "/sys/fs/bpf/podscope/accel";

static NODE_STATE: Mutex<()> = Mutex::new(());

fn tools_or_panic() {
    for (bin, pkg) in [
        (PYTHON, "python3"),
        (NGINX, "nginx"),
        ("/usr/bin/tcpdump", "tcpdump"),
        ("/usr/sbin/bpftool", "bpftool"),
    ] {
        assert!(
            Path::new(bin).exists() || which(bin),
            "{bin} is missing: scripts/setup.sh installs {pkg}"
        );
    }
}

fn which(bin: &str) -> bool {
    let name = Path::new(bin).file_name().unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {}", name.to_string_lossy()))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn podscope(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .arg("accelerate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn podscope_ok(args: &[&str]) -> String {
    let (ok, out, err) = podscope(args);
    assert!(ok, "podscope accelerate {args:?} failed:\n{out}\n{err}");
    out
}

fn status() -> Value {
    let out = podscope_ok(&["--status", "-o", "json", "--runtime-endpoint", &endpoint()]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("--status -o json: {e}: {out}"))
}

fn counter(st: &Value, name: &str) -> u64 {
    st["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {st}"))
}

fn pod_stat(st: &Value, pod: &str, field: &str) -> u64 {
    st["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == pod)
        .unwrap_or_else(|| panic!("pod {pod} not in --status: {st}"))[field]
        .as_u64()
        .unwrap()
}

/// A pod whose container runs the runner (the host's python, /usr and /lib
/// read-only, the test's directory at /srv); the server also runs nginx.
struct Runner {
    pod: PodGuard,
    dir: PathBuf,
    next: usize,
}

fn host_mounts(mut c: ContainerSpec, dir: &Path) -> ContainerSpec {
    c = c
        .mount("/usr", "/usr", true)
        .mount("/lib", "/lib", true)
        .mount(dir.to_str().unwrap(), "/srv", false);
    if Path::new("/lib64").exists() {
        c = c.mount("/lib64", "/lib64", true);
    }
    c
}

impl Runner {
    fn start(name: &str, ns: &str, server: bool) -> Runner {
        let dir = std::env::temp_dir().join(format!("podscope-accel-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("runner.py"), RUNNER).unwrap();
        let mut cs = Vec::new();
        if server {
            let port = ECHO_PORT.to_string();
            cs.push(host_mounts(
                ContainerSpec::new("app", IMAGE, &[PYTHON, "/srv/runner.py", "server", &port]),
                &dir,
            ));
            std::fs::create_dir_all(dir.join("www")).unwrap();
            std::fs::write(dir.join("www/big"), pattern(1_000_000)).unwrap();
            std::fs::write(
                dir.join("nginx.conf"),
                format!(
                    "daemon off; master_process off; user root; worker_processes 1;\n\
                     pid /srv/nginx.pid; error_log /srv/error.log;\n\
                     events {{ use epoll; }}\n\
                     http {{ log_format sent '$request_uri $status $bytes_sent'; access_log /srv/access.log sent; client_body_temp_path /srv/tmp;\n\
                       proxy_temp_path /srv/tmp; fastcgi_temp_path /srv/tmp; uwsgi_temp_path /srv/tmp;\n\
                       scgi_temp_path /srv/tmp; sendfile on; keepalive_requests 100000;\n\
                       server {{ listen {NGINX_PORT}; root /srv/www; }} }}\n"
                ),
            )
            .unwrap();
            std::fs::create_dir_all(dir.join("tmp")).unwrap();
            cs.push(host_mounts(
                ContainerSpec::new(
                    "nginx",
                    IMAGE,
                    &[NGINX, "-e", "/srv/error.log", "-c", "/srv/nginx.conf"],
                )
                .mount("/etc", "/etc", true),
                &dir,
            ));
        } else {
            cs.push(host_mounts(
                ContainerSpec::new("app", IMAGE, &[PYTHON, "/srv/runner.py", "client"]),
                &dir,
            ));
        }
        let pod = run_pod(&PodSpec::new(name, ns).unwrap(), &cs);
        Runner { pod, dir, next: 0 }
    }

    fn ip(&self) -> String {
        self.pod.pod.ip.clone().expect("pod IP")
    }

    fn pid(&self) -> u32 {
        self.pod.pod.sandbox_pid.expect("sandbox pid")
    }

    /// Runs one command in the client and returns its result.
    fn run(&mut self, cmd: Value) -> Value {
        let k = self.next;
        self.next += 1;
        let tmp = self.dir.join(format!("cmd.{k}.tmp"));
        std::fs::write(&tmp, cmd.to_string()).unwrap();
        std::fs::rename(&tmp, self.dir.join(format!("cmd.{k}"))).unwrap();
        let done = self.dir.join(format!("done.{k}"));
        wait_for(
            &format!("{} to run {cmd}", self.pod.pod.name),
            Duration::from_secs(120),
            || done.exists(),
        );
        let v: Value = serde_json::from_str(&std::fs::read_to_string(done).unwrap()).unwrap();
        assert!(v.get("error").is_none(), "{cmd} failed in the pod: {v}");
        v
    }

    /// N echo round trips of `size` bytes on connection `conn`; asserts
    /// every echo came back byte-exact, with no stall and no FIONREAD 0.
    fn rr(&mut self, conn: &str, n: u64, size: u64) -> Value {
        let r = self.run(json!({"op": "rr", "conn": conn, "n": n, "size": size}));
        assert_eq!(r["ok"], n, "echo round trips on {conn}: {r}");
        assert_eq!(r["stalls"], 0, "epoll wake-ups missed on {conn}: {r}");
        assert_eq!(
            r["fion0"], 0,
            "FIONREAD said 0 with data ready on {conn}: {r}"
        );
        r
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.pod.remove();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// tcpdump on a pod's eth0 (in its netns) for one TCP port: the payload
/// bytes it saw, summed from its `length N` fields.
struct Dump {
    child: Child,
    pid: u32,
}

impl Dump {
    fn start(netns_pid: u32, port: u16) -> Dump {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/proc/{netns_pid}/ns/net"))
            .args(["tcpdump", "-l", "-nn", "-i", "eth0", "tcp", "port"])
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "tcpdump ended before listening"
            );
        }
        let pid = child.id();
        Dump { child, pid }
    }

    fn stop(mut self) -> u64 {
        // A SIGINT makes tcpdump print what it captured and exit.
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let _ = self.child.wait();
        out.lines()
            .filter_map(|l| {
                l.rsplit_once("length ")
                    .and_then(|(_, n)| n.trim().parse::<u64>().ok())
            })
            .sum()
    }
}

/// A host echo server (the pod-to-remote peer).
fn host_echo(addr: &str) -> std::thread::JoinHandle<()> {
    let l = TcpListener::bind((addr.parse::<IpAddr>().unwrap(), HOST_PORT)).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            // The runner's "echo\n" hello is for the pod server: not echoed.
            let mut hello = [0u8; 5];
            if s.read_exact(&mut hello).is_err() {
                return;
            }
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    })
}

fn sockets_of<'a>(st: &'a Value, pred: impl Fn(&Value) -> bool + 'a) -> Vec<&'a Value> {
    st["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| pred(s))
        .collect()
}

fn cgroup_root_programs() -> String {
    let root = podscope_runtime::cgroup::cgroup2_mount()
        .unwrap()
        .mount_point;
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(root)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Turns acceleration off however the test ends.
/// The node's acceleration state to this test alone, off (and off again
/// when the test ends), and an echo server and a client pod in a namespace
/// of their own (`PREFIX-…`, pods `SHORT-srv`, `SHORT-cli`), the server
/// listening. Bind in this order: the pods go first, the lock last.
fn echo_pair(
    prefix: &str,
    short: &str,
) -> (
    std::sync::MutexGuard<'static, ()>,
    OffOnDrop,
    String,
    Runner,
    Runner,
) {
    tools_or_panic();
    let lock = NODE_STATE.lock().unwrap_or_else(|e| e.into_inner());
    podscope_ok(&["--off"]);
    let off = OffOnDrop;
    let ns = format!("{prefix}-{}", suffix());
    let srv = Runner::start(&format!("{short}-srv"), &ns, true);
    let cli = Runner::start(&format!("{short}-cli"), &ns, false);
    let srv_ip = srv.ip();
    wait_for("the pod server to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect((srv_ip.parse::<IpAddr>().unwrap(), ECHO_PORT)).is_ok()
    });
    (lock, off, ns, srv, cli)
}

struct OffOnDrop;

impl Drop for OffOnDrop {
    fn drop(&mut self) {
        let _ = podscope(&["--off"]);
    }
}

#[test]
fn accelerated_pods_exchange_byte_exact_data_and_counters_match() {
    if !root_or_skip() {
        return;
    }
    tools_or_panic();
    let _lock = NODE_STATE.lock().unwrap_or_else(|e| e.into_inner());
    podscope_ok(&["--off"]);
    let _off = OffOnDrop;
    let ns = format!("acc-{}", suffix());
    let srv = Runner::start("a-srv", &ns, true);
    let mut cli = Runner::start("a-cli", &ns, false);
    let mut other = Runner::start("b-other", &ns, false);
    let (srv_ip, cli_ip, other_ip) = (srv.ip(), cli.ip(), other.ip());
    // The servers are up once the client can connect.
    wait_for("the pod servers to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect((srv_ip.parse::<IpAddr>().unwrap(), ECHO_PORT)).is_ok()
            && std::net::TcpStream::connect((srv_ip.parse::<IpAddr>().unwrap(), NGINX_PORT)).is_ok()
    });

    // A connection from before acceleration.
    cli.run(json!({"op": "open", "conn": "pre", "ip": srv_ip, "port": ECHO_PORT}));
    cli.rr("pre", 10, 100);

    let out = podscope_ok(&[
        "--pod",
        "a-*",
        "-n",
        &ns,
        "--runtime-endpoint",
        &endpoint(),
        "-o",
        "json",
    ]);
    let on: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(on["action"], "attached", "{on}");
    assert_eq!(on["pods"].as_array().unwrap().len(), 2, "{on}");
    // The pre-existing connection, one socket in each pod.
    assert_eq!(on["preexisting_not_accelerated"], 2, "{on}");
    assert!(Path::new(PIN_DIR).join("sockops_link").exists());
    assert!(cgroup_root_programs().contains("accel_sockops"));

    let st0 = status();
    assert_eq!(st0["enabled"], true);
    assert_eq!(counter(&st0, "preexisting_not_accelerated"), 2);

    // Request/response on a new connection: redirected, exactly what was sent.
    let opened = cli.run(json!({"op": "open", "conn": "acc", "ip": srv_ip, "port": ECHO_PORT}));
    let acc_port = opened["port"].as_u64().unwrap();
    let dump = Dump::start(cli.pid(), ECHO_PORT);
    let rr = cli.rr("acc", 200, 100);
    let seen = dump.stop();
    assert_eq!(
        seen, 0,
        "tcpdump on the client pod's eth0 saw {seen} payload bytes of an accelerated connection"
    );
    let st1 = status();
    let mine = sockets_of(&st1, |s| s["local"] == format!("{cli_ip}:{acc_port}"));
    assert_eq!(mine.len(), 1, "client socket of 'acc' in --status: {st1}");
    assert_eq!(mine[0]["accelerated"], true);
    assert_eq!(
        mine[0]["bytes_redirected"], rr["sent"],
        "client bytes: {}",
        mine[0]
    );
    assert_eq!(mine[0]["bytes_passed"], 0);
    let peer = sockets_of(&st1, |s| s["remote"] == format!("{cli_ip}:{acc_port}"));
    assert_eq!(peer.len(), 1, "server socket of 'acc' in --status: {st1}");
    assert_eq!(
        peer[0]["bytes_redirected"],
        200 * 100,
        "server echoed bytes: {}",
        peer[0]
    );
    assert_eq!(peer[0]["pod"], "a-srv");
    // The pre-existing connection still works and is not in the map.
    cli.rr("pre", 20, 100);
    assert_eq!(
        sockets_of(&status(), |s| s["pod"] == "a-cli").len(),
        1,
        "only 'acc' of a-cli is mapped"
    );

    // Bulk both ways, sha256-checked; per-pod byte counters grow by exactly
    // what each side's application sent.
    let before = status();
    let n = 16 << 20;
    let up = cli.run(json!({"op": "up", "ip": srv_ip, "port": ECHO_PORT, "n": n, "seed": 7}));
    assert_eq!(up["ok"], true, "upload: {up}");
    let down = cli.run(json!({"op": "down", "ip": srv_ip, "port": ECHO_PORT, "n": n, "seed": 9}));
    assert_eq!(down["ok"], true, "download: {down}");
    assert_eq!(down["got"], n);
    for r in [&up, &down] {
        assert_eq!(r["stalls"], 0, "{r}");
        assert_eq!(r["fion0"], 0, "{r}");
    }
    let after = status();
    let d = |pod: &str, f: &str| pod_stat(&after, pod, f) - pod_stat(&before, pod, f);
    let reply_len = up["reply"].as_str().unwrap().len() as u64 + 1;
    assert_eq!(
        d("a-cli", "bytes_redirected"),
        up["sent"].as_u64().unwrap() + down["sent"].as_u64().unwrap(),
        "client pod: redirected bytes vs what it sent"
    );
    assert_eq!(
        d("a-srv", "bytes_redirected"),
        reply_len + n,
        "server pod: redirected bytes vs what it sent"
    );
    assert_eq!(
        d("a-cli", "connections_accelerated") + d("a-srv", "connections_accelerated"),
        2
    );
    assert_eq!(d("a-cli", "bytes_passed") + d("a-srv", "bytes_passed"), 0);

    // nginx (epoll, sendfile) through edge-triggered epoll with FIONREAD checked.
    std::fs::write(cli.dir.join("expected-big"), pattern(1_000_000)).unwrap();
    let before = status();
    let http = cli.run(
        json!({"op": "http", "ip": srv_ip, "port": NGINX_PORT, "n": 20,
        "path": "/big", "file": "/srv/expected-big"}),
    );
    assert_eq!(http["ok"], 20, "nginx GETs byte-exact: {http}");
    assert_eq!(http["stalls"], 0, "{http}");
    assert_eq!(http["fion0"], 0, "{http}");
    let after = status();
    // nginx's own count of what it sent ($bytes_sent, headers included).
    let log = std::fs::read_to_string(srv.dir.join("access.log")).unwrap();
    let nginx_sent: u64 = log
        .lines()
        .filter(|l| l.contains("/big"))
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        log.lines().filter(|l| l.contains("/big")).count(),
        20,
        "{log}"
    );
    let d = |pod: &str, f: &str| pod_stat(&after, pod, f) - pod_stat(&before, pod, f);
    assert_eq!(
        d("a-srv", "bytes_redirected"),
        nginx_sent,
        "nginx's $bytes_sent vs redirected"
    );
    assert_eq!(
        d("a-cli", "bytes_redirected"),
        http["sent"].as_u64().unwrap()
    );

    // Loopback inside a pod (app <-> sidecar): left alone (docs/accelerate.md
    // says why), both ends counted; it keeps working across --off below.
    cli.run(json!({"op": "listen", "port": LOOP_PORT}));
    let before = status();
    cli.run(json!({"op": "open", "conn": "loop", "ip": "127.0.0.1", "port": LOOP_PORT}));
    cli.rr("loop", 100, 500);
    let after = status();
    assert_eq!(
        counter(&after, "left_alone_loopback") - counter(&before, "left_alone_loopback"),
        2,
        "both ends of the loopback connection"
    );
    assert!(sockets_of(&after, |s| s["local"].as_str().unwrap().starts_with("127.")).is_empty());
    // The same pod through its own IP, to a server thread blocked in recv():
    // accelerated; it must survive --off below.
    let o = cli.run(json!({"op": "open", "conn": "self", "ip": cli_ip, "port": LOOP_PORT}));
    let self_port = o["port"].as_u64().unwrap();
    let sr = cli.rr("self", 100, 500);
    let st = status();
    let me = sockets_of(&st, |s| s["local"] == format!("{cli_ip}:{self_port}"));
    assert_eq!(me.len(), 1, "self connection in --status: {st}");
    assert_eq!(me[0]["accelerated"], true);
    assert_eq!(me[0]["bytes_redirected"], sr["sent"]);

    // Pod to the host: left alone, counted as peer not local.
    let host = common::host_address_towards(&srv_ip);
    let echo = host_echo(&host);
    let before = status();
    cli.run(json!({"op": "open", "conn": "remote", "ip": host, "port": HOST_PORT}));
    let dump = Dump::start(cli.pid(), HOST_PORT);
    cli.rr("remote", 10, 100);
    let seen = dump.stop();
    assert!(
        seen >= 2 * 10 * 100,
        "tcpdump saw {seen} payload bytes of the pod-to-host connection"
    );
    cli.run(json!({"op": "close", "conn": "remote"}));
    echo.join().unwrap();
    let after = status();
    assert_eq!(
        counter(&after, "left_alone_peer_not_local")
            - counter(&before, "left_alone_peer_not_local"),
        1
    );

    // An unselected pod: its socket is not touched; the server's end is
    // left alone as "peer not selected".
    let before = status();
    other.run(json!({"op": "open", "conn": "o", "ip": srv_ip, "port": ECHO_PORT}));
    other.rr("o", 10, 100);
    let after = status();
    assert_eq!(
        counter(&after, "left_alone_peer_not_selected")
            - counter(&before, "left_alone_peer_not_selected"),
        1
    );
    assert!(sockets_of(&after, |s| s["local"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{other_ip}:"))
        || s["remote"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{other_ip}:")))
    .is_empty());
    assert!(after["pods"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["pod"] != "b-other"));

    // The table names the pods and the counters.
    let table = podscope_ok(&["--status", "--runtime-endpoint", &endpoint()]);
    for want in [
        "a-cli",
        "a-srv",
        "connections accelerated:",
        "left alone: peer not local",
    ] {
        assert!(table.contains(want), "--status lacks {want:?}:\n{table}");
    }
    assert!(!table.contains("b-other"), "{table}");

    // Prometheus (a real server) scraping a trace's exporter sees the same
    // counters, per pod by name, while nothing else moves.
    let exporter = common::prom::MetricsTrace::start(&["exec", "-n", &ns]);
    let prom = common::prom::Prometheus::start(exporter.addr);
    let st = status();
    let secs = Duration::from_secs(30);
    for pod in ["a-srv", "a-cli"] {
        for (metric, field) in [
            ("podscope_accel_redirected_bytes_total", "bytes_redirected"),
            (
                "podscope_accel_redirected_messages_total",
                "messages_redirected",
            ),
            (
                "podscope_accel_connections_accelerated_total",
                "connections_accelerated",
            ),
            ("podscope_accel_sockets", "sockets_now"),
        ] {
            let q = format!("{metric}{{namespace=\"{ns}\",pod=\"{pod}\"}}");
            let want = pod_stat(&st, pod, field) as f64;
            assert_eq!(
                prom.wait_value(&q, want, secs),
                Some(want),
                "{q} vs --status {field}"
            );
        }
    }
    assert_eq!(
        prom.wait_value("podscope_accel_enabled", 1.0, secs),
        Some(1.0)
    );
    for reason in ["loopback", "peer_not_local", "peer_not_selected"] {
        let q = format!("podscope_accel_left_alone_total{{reason=\"{reason}\"}}");
        let want = counter(&st, &format!("left_alone_{reason}")) as f64;
        assert_eq!(prom.wait_value(&q, want, secs), Some(want), "{q}");
    }
    assert!(
        prom.query("podscope_accel_sockets{pod=\"b-other\"}")
            .is_empty(),
        "an unselected pod has no series"
    );
    drop(prom);
    drop(exporter);

    // Idempotent: again is an update, not a second attachment.
    let again: Value = serde_json::from_str(
        podscope_ok(&[
            "--pod",
            "a-*",
            "-n",
            &ns,
            "--runtime-endpoint",
            &endpoint(),
            "-o",
            "json",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(again["action"], "updated");
    assert_eq!(cgroup_root_programs().matches("accel_sockops").count(), 1);

    // Off: no pin and no attachment left; new connections take the stack
    // (tcpdump sees them); open accelerated ones stay accelerated and keep
    // working (one has a thread blocked in recv(): taking such a socket out
    // of the map stalled it, hence this model) until they close, after
    // which the kernel frees every program and map of ours.
    let mapped = status()["sockets"].as_array().unwrap().len();
    assert_eq!(mapped, 4, "acc and self, both ends each");
    let off: Value = serde_json::from_str(podscope_ok(&["--off", "-o", "json"]).trim()).unwrap();
    assert_eq!(off["was_on"], true);
    assert_eq!(off["sockets_still_accelerated"], 4, "{off}");
    assert!(!Path::new(PIN_DIR).exists(), "{PIN_DIR} left behind");
    assert!(!cgroup_root_programs().contains("accel_sockops"));
    cli.rr("acc", 50, 1000);
    cli.rr("self", 10, 500);
    cli.rr("pre", 10, 100);
    cli.rr("loop", 10, 500);
    cli.run(json!({"op": "open", "conn": "new", "ip": srv_ip, "port": ECHO_PORT}));
    let dump = Dump::start(cli.pid(), ECHO_PORT);
    cli.rr("new", 50, 1000);
    let seen = dump.stop();
    assert!(
        seen >= 2 * 50 * 1000,
        "after --off tcpdump saw only {seen} payload bytes of a new connection"
    );
    for c in ["acc", "self"] {
        cli.run(json!({"op": "close", "conn": c}));
    }
    // The kernel frees the programs and the sockhash once the last mapped
    // socket has closed (after an RCU grace period): none may stay loaded.
    wait_for(
        "the accelerate programs and maps to be freed",
        Duration::from_secs(30),
        || {
            let progs = Command::new("bpftool")
                .args(["prog", "list"])
                .output()
                .unwrap();
            let maps = Command::new("bpftool")
                .args(["map", "list"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&progs.stdout).into_owned()
                + &String::from_utf8_lossy(&maps.stdout);
            !text.contains("accel_msg")
                && !text.contains("accel_sockops")
                && !text.contains("accel_socks")
        },
    );
    cli.rr("new", 10, 100);
    let off2: Value = serde_json::from_str(podscope_ok(&["--off", "-o", "json"]).trim()).unwrap();
    assert_eq!(off2["was_on"], false);
    assert_eq!(status()["enabled"], false);
}

/// The sockhash key of one end (bpf/accel.h struct accel_key) as bpftool hex words.
fn key_hex(local: &str, lport: u16, remote: &str, rport: u16) -> Vec<String> {
    let mapped = |a: &str| match a.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut k = Vec::new();
    k.extend_from_slice(&mapped(local));
    k.extend_from_slice(&mapped(remote));
    k.extend_from_slice(&u32::from(lport).to_ne_bytes());
    k.extend_from_slice(&u32::from(rport).to_ne_bytes());
    k.extend_from_slice(&0u64.to_ne_bytes());
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fn bpftool(args: &[&str]) {
    let out = Command::new("bpftool").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens an accelerated connection, then takes the server's end out of the
/// sockhash: the client's socket stays mapped while its data now arrives
/// through the TCP stack (what a socket whose peer left the map, or joined
/// it late, sees). Returns the echo result on that half-mapped socket.
fn half_mapped_rr(cli: &mut Runner, srv_ip: &str, conn: &str) -> Value {
    let o = cli.run(json!({"op": "open", "conn": conn, "ip": srv_ip, "port": ECHO_PORT}));
    let port = o["port"].as_u64().unwrap() as u16;
    cli.rr(conn, 5, 100);
    let mut args = vec![
        "map".to_string(),
        "delete".into(),
        "pinned".into(),
        format!("{PIN_DIR}/accel_socks"),
        "key".into(),
        "hex".into(),
    ];
    args.extend(key_hex(srv_ip, ECHO_PORT, &cli.ip(), port));
    bpftool(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let r = cli.run(json!({"op": "rr", "conn": conn, "n": 50, "size": 100}));
    assert_eq!(r["ok"], 50, "echo on a half-mapped socket: {r}");
    r
}

/// The sockmap receive regression of Linux 6.6.128+/6.12.75+/6.18.14+
/// (commit 929e30f93125): a mapped socket with no stream verdict reports
/// FIONREAD 0 for data that came through the TCP stack. With podscope's
/// pass-through stream verdict FIONREAD is right; with the verdict taken
/// away (bpftool) the bug shows on affected kernels: the evidence that the
/// work-around is what keeps it away.
#[test]
fn fionread_regression_is_worked_around_by_the_stream_verdict() {
    if !root_or_skip() {
        return;
    }
    let (_lock, _off, ns, srv, mut cli) = echo_pair("accr", "r");
    let srv_ip = srv.ip();
    podscope_ok(&["--pod", "r-*", "-n", &ns, "--runtime-endpoint", &endpoint()]);

    let with = half_mapped_rr(&mut cli, &srv_ip, "with");
    assert_eq!(
        with["fion0"], 0,
        "FIONREAD 0 with the stream verdict attached: {with}"
    );
    assert_eq!(with["stalls"], 0, "{with}");

    bpftool(&[
        "prog",
        "detach",
        "pinned",
        &format!("{PIN_DIR}/accel_skb_pass"),
        "stream_verdict",
        "pinned",
        &format!("{PIN_DIR}/accel_socks"),
    ]);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let affected = podscope_bpf::fionread_regression(release.trim());
    // The kernel bug shows by timing (measured: 44-50 of 50 reads), and CI
    // once saw 0 of 50 in one connection: on an affected kernel up to three
    // connections are tried for the evidence.
    let mut without = half_mapped_rr(&mut cli, &srv_ip, "without");
    for attempt in 2..=3 {
        if !affected || without["fion0"].as_u64().unwrap() > 0 {
            break;
        }
        eprintln!("no wrong FIONREAD without the verdict on that connection ({without}); another");
        without = half_mapped_rr(&mut cli, &srv_ip, &format!("without{attempt}"));
    }
    eprintln!(
        "kernel {}: half-mapped socket, 50 echoes: FIONREAD 0 with data {} times with the stream verdict, {} without",
        release.trim(),
        with["fion0"],
        without["fion0"]
    );
    if affected {
        // Counted only for reads right after an epoll wake-up (no race with
        // data still arriving), so not necessarily all 50 (measured: 44-50).
        assert!(
            without["fion0"].as_u64().unwrap() > 0,
            "this kernel is in the affected range, yet FIONREAD was right without the verdict on 3 connections: {without}"
        );
    } else {
        assert_eq!(without["fion0"], 0, "an unaffected kernel: {without}");
    }
    let off: Value = serde_json::from_str(podscope_ok(&["--off", "-o", "json"]).trim()).unwrap();
    assert_eq!(
        off["was_on"], true,
        "--off with the stream verdict already detached"
    );
    assert!(!Path::new(PIN_DIR).exists());
}

/// What a podscope killed in the middle of `accelerate` leaves (some pins,
/// no sockops link): the next `accelerate` cleans it up and attaches
/// afresh; --off afterwards leaves nothing.
#[test]
fn leftovers_of_an_interrupted_enable_are_replaced() {
    if !root_or_skip() {
        return;
    }
    let (_lock, _off, ns, srv, mut cli) = echo_pair("accl", "l");
    let srv_ip = srv.ip();
    std::fs::create_dir_all(PIN_DIR).unwrap();
    bpftool(&[
        "map",
        "create",
        &format!("{PIN_DIR}/accel_stats"),
        "type",
        "array",
        "key",
        "4",
        "value",
        "8",
        "entries",
        "1",
        "name",
        "leftover",
    ]);
    assert_eq!(status()["enabled"], false, "no link pin: not on");
    let on: Value = serde_json::from_str(
        podscope_ok(&[
            "--pod",
            "l-*",
            "-n",
            &ns,
            "--runtime-endpoint",
            &endpoint(),
            "-o",
            "json",
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(on["action"], "attached", "{on}");
    cli.run(json!({"op": "open", "conn": "c", "ip": srv_ip, "port": ECHO_PORT}));
    cli.rr("c", 20, 100);
    let st = status();
    assert_eq!(counter(&st, "bytes_redirected"), 5 + 2 * 20 * 100, "{st}");
    let off: Value = serde_json::from_str(podscope_ok(&["--off", "-o", "json"]).trim()).unwrap();
    assert_eq!(off["sockets_still_accelerated"], 2, "{off}");
    assert!(!Path::new(PIN_DIR).exists());
    cli.rr("c", 20, 100);
}

#[test]
fn bad_flags_are_refused_with_what_to_do() {
    let (ok, _, err) = podscope(&[]);
    assert!(!ok);
    assert!(err.contains("accelerate needs a pod selection"), "{err}");
    let (ok, _, err) = podscope(&["--status", "--pod", "x"]);
    assert!(!ok);
    assert!(err.contains("--status takes no pod flags"), "{err}");
    let (ok, _, err) = podscope(&["--container", "app", "-n", "x"]);
    assert!(!ok);
    assert!(err.contains("--container does not apply"), "{err}");
    let (ok, _, err) = podscope(&["--status", "--off"]);
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args(["--hub", "http://127.0.0.1:9", "accelerate", "--status"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("accelerate is a node command"), "{err}");
}
