//! `podscope trace drop` against real containerd CRI pods on the test bed
//! (testbed/podbed.sh): packets a pod sends to a closed port and packets a
//! host iptables rule drops are reported with the kernel's drop reason, the
//! pod and the flow, as many as the kernel's own counters say (the pod's
//! /proc/<pid>/net/snmp, the rule's packet counter); an unselected pod's
//! never appear; the Prometheus counter equals the events. Needs root,
//! PODBED_SOCKET and iptables (scripts/setup.sh installs them).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{endpoint, free_port, run_pod, suffix, wait_attached, wait_for, PodGuard, IMAGE};
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

/// Runs commands the test drops into /srv: `cmd.K` holds `udp|tcp ADDR PORT
/// N`; it sends N datagrams (each from a new socket) or makes N connects,
/// then writes what each connect got into `done.K`.
const RUNNER: &str = r#"
import errno, os, socket, time
k = 0
while True:
    p = "/srv/cmd.%d" % k
    if not os.path.exists(p):
        time.sleep(0.02)
        continue
    kind, ip, port, n = open(p).read().split()
    port, n = int(port), int(n)
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    res = []
    for i in range(n):
        if kind == "udp":
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.sendto(b"x", (ip, port))
            res.append("sent")
        else:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect((ip, port))
                res.append("connected")
            except OSError as e:
                res.append(errno.errorcode.get(e.errno, str(e.errno)))
        s.close()
    with open("/srv/done.%d.tmp" % k, "w") as f:
        f.write(" ".join(res))
    os.rename("/srv/done.%d.tmp" % k, "/srv/done.%d" % k)
    k += 1
"#;

/// A pod whose container runs RUNNER with the host's python (its /usr and
/// /lib read-only) and the test's directory at /srv.
struct Sender {
    pod: PodGuard,
    dir: PathBuf,
    next: usize,
}

impl Sender {
    fn start(name: &str, ns: &str) -> Sender {
        let dir = std::env::temp_dir().join(format!("podscope-drop-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("runner.py"), RUNNER).unwrap();
        let mut c = ContainerSpec::new("app", IMAGE, &[PYTHON, "/srv/runner.py"])
            .mount("/usr", "/usr", true)
            .mount("/lib", "/lib", true)
            .mount(dir.to_str().unwrap(), "/srv", false);
        if Path::new("/lib64").exists() {
            c = c.mount("/lib64", "/lib64", true);
        }
        let pod = run_pod(&PodSpec::new(name, ns).unwrap(), &[c]);
        Sender { pod, dir, next: 0 }
    }

    fn ip(&self) -> String {
        self.pod.pod.ip.clone().expect("pod IP")
    }

    fn pid(&self) -> u32 {
        self.pod.pod.sandbox_pid.expect("sandbox pid")
    }

    /// Runs one command in the pod and waits for it to finish.
    fn run(&mut self, kind: &str, addr: &str, port: u16, n: usize) -> Vec<String> {
        let k = self.next;
        self.next += 1;
        let tmp = self.dir.join(format!("cmd.{k}.tmp"));
        std::fs::write(&tmp, format!("{kind} {addr} {port} {n}")).unwrap();
        std::fs::rename(&tmp, self.dir.join(format!("cmd.{k}"))).unwrap();
        let done = self.dir.join(format!("done.{k}"));
        wait_for(
            &format!("{} to run {kind} {addr} {port} {n}", self.pod.pod.name),
            Duration::from_secs(60),
            || done.exists(),
        );
        std::fs::read_to_string(done)
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// A counter of the pod's network namespace from /proc/<pid>/net/snmp
    /// (or snmp6): the kernel's own count, independent of BPF.
    fn snmp(&self, file: &str, group: &str, field: &str) -> u64 {
        snmp_value(
            &std::fs::read_to_string(format!("/proc/{}/net/{file}", self.pid())).unwrap(),
            group,
            field,
        )
        .unwrap_or_else(|| panic!("no {group} {field} in {file}"))
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.pod.remove();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `Udp: ... NoPorts ...` header/value line pairs (snmp), or `Udp6NoPorts N` (snmp6).
fn snmp_value(text: &str, group: &str, field: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.windows(2) {
        let (h, v) = (pair[0], pair[1]);
        let prefix = format!("{group}:");
        if h.starts_with(&prefix) && v.starts_with(&prefix) {
            let names: Vec<&str> = h.split_whitespace().collect();
            let vals: Vec<&str> = v.split_whitespace().collect();
            let i = names.iter().position(|n| *n == field)?;
            return vals.get(i)?.parse().ok();
        }
    }
    let name = format!("{group}{field}");
    lines.iter().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(name.as_str())).then(|| w.next()?.parse().ok())?
    })
}

/// An iptables chain of our own, jumped to from INPUT, removed on drop
/// (however the test ends).
struct Rules {
    chain: String,
}

fn iptables(args: &[&str]) -> String {
    let out = Command::new("iptables")
        .args(["-w", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running iptables (scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "iptables {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Rules {
    fn new(tag: &str) -> Rules {
        let chain = format!("PSDROP-{tag}");
        iptables(&["-N", &chain]);
        let r = Rules { chain };
        iptables(&["-I", "INPUT", "-j", &r.chain]);
        r
    }

    fn drop_udp(&self, saddr: &str, dport: u16) {
        let port = dport.to_string();
        iptables(&[
            "-A", &self.chain, "-s", saddr, "-p", "udp", "--dport", &port, "-j", "DROP",
        ]);
    }

    /// Packets the chain's DROP rule for this source dropped.
    fn dropped(&self, saddr: &str) -> u64 {
        let out = iptables(&["-L", &self.chain, "-v", "-x", "-n"]);
        out.lines()
            .filter(|l| l.contains("DROP") && l.contains(&format!(" {saddr} ")))
            .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        let _ = Command::new("iptables")
            .args(["-w", "10", "-D", "INPUT", "-j", &self.chain])
            .status();
        let _ = Command::new("iptables")
            .args(["-w", "10", "-F", &self.chain])
            .status();
        let _ = Command::new("iptables")
            .args(["-w", "10", "-X", &self.chain])
            .status();
    }
}

/// `podscope trace drop ARGS -o json --metrics-listen ADDR`; killed on drop.
struct Trace {
    child: Child,
    metrics: SocketAddr,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Trace {
    fn start(args: &[&str]) -> Trace {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
            .args(["trace", "drop"])
            .args(args)
            .args(["--runtime-endpoint", &endpoint()])
            .args(["--metrics-listen", &metrics.to_string(), "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let seen = wait_attached(&mut stderr);
        let stderr = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            seen + &rest
        });
        Trace {
            child,
            metrics,
            stderr: Some(stderr),
        }
    }

    /// Our /metrics, as text.
    fn scrape(&self) -> String {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// SIGINT; the JSON lines and stderr (it must exit 0).
    fn stop(mut self) -> (Vec<Value>, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let mut lines = Vec::new();
        for l in BufReader::new(self.child.stdout.take().unwrap()).lines() {
            let l = l.unwrap();
            if l.starts_with('{') {
                lines.push(serde_json::from_str(&l).unwrap());
            }
        }
        let status = self.child.wait().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        assert!(status.success(), "podscope failed: {err}");
        (lines, err)
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn drops<'a>(events: &'a [Value], proto: &str, dport: u16) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["probe"] == "drop" && e["protocol"] == proto && e["dport"] == dport)
        .collect()
}

/// Pod A (selected) and pod B (not) each send N UDP datagrams to a closed
/// port over IPv4 and IPv6 loopback, make N connects to a closed port, and
/// send N datagrams a host iptables rule drops. The trace of pod A reports
/// exactly N drops of each with the kernel's reason and the flow, as the
/// kernel's counters say; none of B's; and the Prometheus counter per
/// reason equals the events.
#[test]
fn drops_of_the_selected_pod_with_reason_and_flow() {
    if !common::root_or_skip() {
        return;
    }
    const N: usize = 7;
    let sfx = suffix();
    let ns = format!("drop-{sfx}");
    let mut a = Sender::start(&format!("drop-a-{sfx}"), &ns);
    let mut b = Sender::start(&format!("drop-b-{sfx}"), &ns);
    let (a_ip, b_ip) = (a.ip(), b.ip());
    // The bridge's address: the first of the pods' subnet (CNI bridge gateway).
    let gw = {
        let mut o: Vec<&str> = a_ip.split('.').collect();
        o[3] = "1";
        o.join(".")
    };
    let (udp_port, tcp_port, udp6_port, nf_port) = (39121u16, 39122u16, 39123u16, 39151u16);
    let rules = Rules::new(&format!("{:x}", std::process::id()));
    rules.drop_udp(&a_ip, nf_port);
    rules.drop_udp(&b_ip, nf_port);

    let trace = Trace::start(&["--pod", &a.pod.pod.name, "-n", &ns]);

    let udp_before = a.snmp("snmp", "Udp", "NoPorts");
    let udp6_before = a.snmp("snmp6", "Udp6", "NoPorts");
    let rst_before = a.snmp("snmp", "Tcp", "OutRsts");
    let refused = a.run("tcp", "127.0.0.1", tcp_port, N);
    assert_eq!(refused, vec!["ECONNREFUSED"; N]);
    a.run("udp", "127.0.0.1", udp_port, N);
    a.run("udp", "::1", udp6_port, N);
    a.run("udp", &gw, nf_port, N);
    b.run("tcp", "127.0.0.1", tcp_port, N);
    b.run("udp", "127.0.0.1", udp_port, N);
    b.run("udp", "::1", udp6_port, N);
    b.run("udp", &gw, nf_port, N);
    // The kernel's own counts: every datagram found no socket, every SYN was
    // answered by a RST, the rule dropped every datagram.
    let udp_noports = a.snmp("snmp", "Udp", "NoPorts") - udp_before;
    let udp6_noports = a.snmp("snmp6", "Udp6", "NoPorts") - udp6_before;
    let rsts = a.snmp("snmp", "Tcp", "OutRsts") - rst_before;
    assert_eq!(
        (udp_noports, udp6_noports, rsts),
        (N as u64, N as u64, N as u64)
    );
    assert_eq!(rules.dropped(&a_ip), N as u64);
    assert_eq!(rules.dropped(&b_ip), N as u64);

    // The counter reaches 3N NO_SOCKET and N NETFILTER_DROP (then the events
    // are all through the pipeline); a missing one times out.
    let labels = |reason: &'static str| {
        let pod = a.pod.pod.name.clone();
        let ns = ns.clone();
        move |text: &str| {
            sample(
                text,
                "podscope_packet_drops_total",
                &[("namespace", &ns), ("pod", &pod), ("reason", reason)],
            )
            .unwrap_or(0.0)
        }
    };
    let (no_socket, netfilter) = (labels("NO_SOCKET"), labels("NETFILTER_DROP"));
    wait_for("the drops in /metrics", Duration::from_secs(20), || {
        let t = trace.scrape();
        no_socket(&t) >= (3 * N) as f64 && netfilter(&t) >= N as f64
    });
    let metrics = trace.scrape();
    let (events, err) = trace.stop();

    let mine: Vec<&Value> = events.iter().filter(|e| e["probe"] == "drop").collect();
    for e in &mine {
        assert_eq!(e["pod"], a.pod.pod.name.as_str(), "{e}");
        assert_eq!(e["namespace"], ns.as_str(), "{e}");
        for f in ["saddr", "daddr"] {
            assert_ne!(e[f], b_ip.as_str(), "pod B's packet: {e}");
        }
    }
    let tcp = drops(&events, "tcp", tcp_port);
    let udp = drops(&events, "udp", udp_port);
    let udp6 = drops(&events, "udp", udp6_port);
    let nf = drops(&events, "udp", nf_port);
    assert_eq!(
        (tcp.len(), udp.len(), udp6.len(), nf.len()),
        (N, N, N, N),
        "{err}"
    );
    eprintln!(
        "pod A: {} drop events; kernel counters: UdpNoPorts {udp_noports} Udp6NoPorts {udp6_noports} \
         OutRsts {rsts}, iptables {} ; e.g.\n{}\n{}",
        mine.len(),
        rules.dropped(&a_ip),
        tcp[0],
        nf[0]
    );
    for e in tcp.iter().chain(&udp).chain(&udp6) {
        assert_eq!(e["reason"], "NO_SOCKET", "{e}");
        assert_eq!(e["attributed_by"], "netns", "{e}");
        assert_eq!(e["ifname"], "lo", "{e}");
    }
    for e in &tcp {
        assert_eq!(e["tcp_flags"], "SYN", "{e}");
        assert_eq!((&e["saddr"], &e["daddr"]), (&"127.0.0.1".into(), &"127.0.0.1".into()));
    }
    for e in &udp6 {
        assert_eq!((&e["family"], &e["daddr"]), (&"ipv6".into(), &"::1".into()), "{e}");
    }
    for e in &nf {
        assert_eq!(e["reason"], "NETFILTER_DROP", "{e}");
        assert_eq!(e["saddr"], a_ip.as_str(), "{e}");
        assert_eq!(e["daddr"], gw.as_str(), "{e}");
        // Dropped in the host's netns: only its address names the pod.
        assert_eq!(e["attributed_by"], "address", "{e}");
    }
    // Every drop event of the pod is counted under its reason, and nothing else is.
    let count = |r: &str| mine.iter().filter(|e| e["reason"] == r).count() as f64;
    assert_eq!(no_socket(&metrics), count("NO_SOCKET"), "{metrics}");
    assert_eq!(netfilter(&metrics), count("NETFILTER_DROP"), "{metrics}");
    assert!(
        !metrics.contains(&format!("pod=\"{}\"", b.pod.pod.name)),
        "pod B in the metrics: {metrics}"
    );
    drop(rules);
}

/// `podscope probes` lists drop, and says whether this kernel has drop reasons.
#[test]
fn probes_lists_drop() {
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .arg("probes")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("drop "))
        .unwrap_or_else(|| panic!("no drop line: {text}"));
    assert!(line.contains("yes"), "{line}");
    assert!(text.contains("tracepoint:skb/kfree_skb"), "{text}");
}
