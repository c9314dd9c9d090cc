//! Helpers shared by the podscope integration tests that run against the
//! containerd test bed (testbed/podbed.sh). Each test binary uses a subset.
#![allow(dead_code)]

pub mod otlp;
pub mod prom;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{ChildStderr, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use podscope_runtime::blocking::BlockingCriClient;
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use podscope_runtime::Pod;

pub const IMAGE: &str = "localhost/busybox:latest";

pub fn socket() -> PathBuf {
    let Some(sock) = std::env::var_os("PODBED_SOCKET") else {
        panic!(
            "PODBED_SOCKET is not set. These tests need root and the containerd test bed:\n  \
             bash testbed/podbed.sh install && export PODBED_SOCKET=$(bash testbed/podbed.sh up)"
        );
    };
    PathBuf::from(sock)
}

pub fn endpoint() -> String {
    format!("unix://{}", socket().display())
}

pub fn suffix() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{:x}", std::process::id(), n % 0xfffff)
}

/// A pod on the test bed at PODBED_SOCKET, removed on drop.
pub struct PodGuard {
    pub pod: Pod,
    pub cgroup: String,
}

impl PodGuard {
    pub fn remove(&self) {
        if let Ok(mut c) = BlockingCriClient::connect(socket()) {
            let _ = c.remove_pod(self.pod.sandbox_id.as_deref().unwrap(), Some(&self.cgroup));
        }
    }

    pub fn container(&self, name: &str) -> &podscope_runtime::Container {
        self.pod
            .container(name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// A path inside a running container's root file system, seen from the host.
    pub fn path_in(&self, container: &str, path: &str) -> PathBuf {
        let pid = self.container(container).pid.expect("container pid");
        PathBuf::from(format!("/proc/{pid}/root{path}"))
    }
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs a pod from ready-made specs on the test bed.
pub fn run_pod(spec: &PodSpec, cs: &[ContainerSpec]) -> PodGuard {
    let mut client = BlockingCriClient::connect(socket()).unwrap();
    let pod = client
        .run_pod(spec, cs)
        .unwrap_or_else(|e| panic!("creating pod {}/{}: {e}", spec.namespace, spec.name));
    PodGuard {
        pod,
        cgroup: spec.cgroup_parent(),
    }
}

/// A busybox pod whose containers run `sh -c SCRIPT`.
pub fn pod(name: &str, ns: &str, labels: &[(&str, &str)], containers: &[(&str, &str)]) -> PodGuard {
    let mut spec = PodSpec::new(name, ns).unwrap();
    for (k, v) in labels {
        spec = spec.label(k, v);
    }
    let cs: Vec<ContainerSpec> = containers
        .iter()
        .map(|(cname, script)| ContainerSpec::new(cname, IMAGE, &["sh", "-c", script]))
        .collect();
    run_pod(&spec, &cs)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads a starting `podscope trace`'s stderr up to its "probes attached"
/// line; returns everything read so far.
pub fn wait_attached(stderr: &mut BufReader<ChildStderr>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("podscope exited before attaching: {all}");
        }
        all.push_str(&line);
        if line.contains("probes attached") {
            break;
        }
    }
    all
}

/// A running `podscope trace`, started and waited for until its probes are
/// attached; its stderr is collected by a thread; stopped with SIGINT so it
/// flushes; killed on drop.
pub struct Traced {
    pub child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Traced {
    /// Spawns `cmd` (its stderr must be piped) and waits for "probes attached".
    pub fn spawn(mut cmd: Command) -> Traced {
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().expect("a piped stderr"));
        let all = wait_attached(&mut stderr);
        let text = std::sync::Arc::new(std::sync::Mutex::new(all));
        let t = text.clone();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                t.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Traced {
            child,
            stderr: text,
            reader: Some(reader),
        }
    }

    /// What it printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGINT, then everything it printed on stderr; it must exit 0 within 30 s.
    pub fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                let text = self.stderr_so_far();
                assert!(status.success(), "podscope failed: {text}");
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "podscope did not exit within 30 s of SIGINT: {}",
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `podscope trace ... -o json`, started and waited for until its
/// probes are attached; its stdout is read as it comes (`so_far`), and
/// `stop` (SIGINT) gives every JSON line it wrote and all of its stderr.
pub struct JsonTrace {
    child: std::process::Child,
    stderr: std::thread::JoinHandle<String>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stdout: std::thread::JoinHandle<()>,
}

impl JsonTrace {
    /// `podscope trace ARGS -o json`.
    pub fn start(args: &[&str]) -> JsonTrace {
        let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
            .arg("trace")
            .args(args)
            .args(["-o", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let seen = wait_attached(&mut stderr);
        let stderr = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
            seen + &rest
        });
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let l = lines.clone();
        let stdout = std::thread::spawn(move || {
            let mut line = String::new();
            while out.read_line(&mut line).unwrap_or(0) > 0 {
                if line.starts_with('{') {
                    l.lock().unwrap().push(line.trim_end().to_string());
                }
                line.clear();
            }
        });
        JsonTrace {
            child,
            stderr,
            lines,
            stdout,
        }
    }

    /// The JSON events it has written so far (while it runs).
    pub fn so_far(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// SIGINT; then the JSON lines it wrote and its stderr (it must exit 0).
    pub fn stop(self) -> (Vec<serde_json::Value>, String) {
        let JsonTrace {
            mut child,
            stderr,
            lines,
            stdout,
        } = self;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        stdout.join().unwrap();
        let status = child.wait().unwrap();
        let err = stderr.join().unwrap();
        assert!(status.success(), "podscope failed: {err}");
        let lines = lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines, err)
    }
}

/// A container's memory working set as its own cgroup says now
/// (memory.current less inactive_file; cgroup v1's memory controller where
/// it is mounted), the witness of the agents' memory reports. `cgroup_path`
/// is the container's, as the runtime lists it.
pub fn cgroup_working_set(cgroup_path: &str) -> u64 {
    let cg = cgroup_path.trim_start_matches('/');
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").join(cg);
    let (dir, usage_file, inactive_key) = if v1.join("memory.usage_in_bytes").exists() {
        (v1, "memory.usage_in_bytes", "total_inactive_file ")
    } else {
        let root = podscope_pipeline::cgroup::v2_mount().unwrap();
        (root.join(cg), "memory.current", "inactive_file ")
    };
    let current: u64 = std::fs::read_to_string(dir.join(usage_file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .trim()
        .parse()
        .unwrap();
    let inactive: u64 = std::fs::read_to_string(dir.join("memory.stat"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(inactive_key))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    current.saturating_sub(inactive)
}

/// A container's CPU time so far as its own cgroup says now, seconds
/// (cgroup v1's cpuacct.usage where that controller is mounted, else v2's
/// cpu.stat usage_usec).
pub fn cgroup_cpu_seconds(cgroup_path: &str) -> f64 {
    let cg = cgroup_path.trim_start_matches('/');
    let v1 = std::path::Path::new("/sys/fs/cgroup/cpuacct")
        .join(cg)
        .join("cpuacct.usage");
    if let Ok(ns) = std::fs::read_to_string(&v1) {
        return ns.trim().parse::<f64>().unwrap() / 1e9;
    }
    let v2 = podscope_pipeline::cgroup::v2_mount()
        .unwrap()
        .join(cg)
        .join("cpu.stat");
    let stat = std::fs::read_to_string(&v2)
        .unwrap_or_else(|e| panic!("neither {} nor {}: {e}", v1.display(), v2.display()));
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no usage_usec in {}", v2.display()))
        / 1e6
}

/// [`root_or_skip`], then each of `tools` (program, Debian package) must be
/// installed: a missing one fails the test, naming the package.
pub fn root_and_tools(tools: &[(&str, &str)]) -> bool {
    if !root_or_skip() {
        return false;
    }
    for (bin, pkg) in tools {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: install Debian's {pkg} (bash scripts/setup.sh)"
        );
    }
    true
}

/// Root, or skipped when PODSCOPE_SKIP_ROOT_TESTS says so (and says so).
pub fn root_or_skip() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root && std::env::var_os("PODSCOPE_SKIP_ROOT_TESTS").is_some() {
        eprintln!("SKIPPED: needs root (PODSCOPE_SKIP_ROOT_TESTS is set)");
        return false;
    }
    assert!(
        root,
        "this test loads BPF programs and needs root; set PODSCOPE_SKIP_ROOT_TESTS=1 to skip"
    );
    true
}

/// A cgroup v2 directory of our own: podscope traces only it, so the
/// machine's other HTTP traffic stays out.
pub struct Cgroup(pub PathBuf);

impl Cgroup {
    pub fn new(tag: &str) -> Cgroup {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = info
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split_whitespace().next()? == "cgroup2")
                    .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
            })
            .expect("a cgroup v2 mount");
        let p = root.join(format!("podscope-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&p);
        std::fs::create_dir(&p).unwrap();
        Cgroup(p)
    }

    /// `sh -c 'join; exec ARGS'`: the command runs inside the cgroup.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$@\"",
                self.0.display()
            ))
            .arg("sh")
            .args(args);
        c
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A directory of test certificates made with the openssl CLI: `ca.pem`
/// (`ca.key`) and `other-ca.pem`; `hub.pem`/`hub.key` signed by `ca` for
/// 127.0.0.1 and localhost; `elsewhere.pem`/`.key` for another name only.
/// The caller removes the directory.
pub fn make_certs(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podscope-{tag}-certs-{}", suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| {
                    panic!("these tests make their certificates with the openssl CLI (Debian package openssl): {e}")
                });
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
        let subj = format!("/CN=podscope test {ca}");
        let mut a = vec!["req", "-x509", "-days", "2", "-subj", &subj];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &pem]);
        openssl(&a);
    }
    // hub.pem for 127.0.0.1 and localhost; elsewhere.pem for another name only.
    for (name, san) in [
        ("hub", "IP:127.0.0.1,DNS:localhost"),
        ("elsewhere", "DNS:elsewhere.example"),
    ] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.cnf"),
        );
        let mut a = vec!["req", "-subj", "/CN=podscope-hub"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr]);
        openssl(&a);
        let ext_text = format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        );
        std::fs::write(dir.join(&ext), ext_text).unwrap();
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
    }
    dir
}

/// The host's address on the pods' bridge: the one in the pod's /24 (what a
/// pod dials to reach a server on the host).
pub fn host_address_towards(pod_ip: &str) -> String {
    let prefix = pod_ip.rsplit_once('.').unwrap().0.to_string() + ".";
    let out = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.split_once('/').map(|p| p.0.to_string()))
        .find(|a| a.starts_with(&prefix) && a != pod_ip)
        .unwrap_or_else(|| panic!("no host address in {prefix}0/24"))
}

/// A C workload compiled static (gcc's `cc` where installed, else Debian's
/// clang, scripts/setup.sh) into a directory of its own: its binary.
pub fn compile_c(tag: &str, src: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podscope-c-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let bin = dir.join(name);
    let cc = ["cc", "clang-19", "clang"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect("a C compiler (cc or clang-19) for the workload");
    let ok = Command::new(cc)
        .args(["-O1", "-static", "-o"])
        .arg(&bin)
        .arg(&c)
        .status()
        .unwrap()
        .success();
    assert!(ok, "compiling {name} (static; needs libc6-dev)");
    bin
}

/// A self-signed certificate (EC P-256, `CN=podscope-test`, one day) made
/// with the openssl CLI in `dir`: (cert.pem, key.pem).
pub fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=podscope-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {out:?}");
    (cert, key)
}

/// Debian's Go.
pub const GO: &str = "/usr/bin/go";

/// A Go program (`src`, one file) built into `dir/name` in GOPATH mode,
/// offline (`gopath`: Debian's Go packages, for imports beyond the
/// standard library); Go's build cache in the temp dir keeps later builds
/// short. `stripped`: without its symbol table (`-ldflags=-s -w`).
pub fn go_build(
    dir: &std::path::Path,
    src: &str,
    name: &str,
    gopath: Option<&str>,
    stripped: bool,
) -> PathBuf {
    assert!(
        std::path::Path::new(GO).exists(),
        "{GO} is missing: install Debian's golang-go (bash scripts/setup.sh)"
    );
    let file = dir.join(format!("{name}.go"));
    std::fs::write(&file, src).unwrap();
    let bin = dir.join(name);
    let mut cmd = Command::new(GO);
    cmd.arg("build");
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    if let Some(p) = gopath {
        cmd.env("GOPATH", p);
    }
    let out = cmd
        .arg("-o")
        .arg(&bin)
        .arg(&file)
        .env("GO111MODULE", "off")
        .env(
            "GOCACHE",
            std::env::temp_dir().join("podscope-test-gocache"),
        )
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "go build of {name}: {out:?}");
    bin
}
