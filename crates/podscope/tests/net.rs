//! `podscope trace net` against real containerd CRI pods on the test bed
//! (testbed/podbed.sh): pod A fetches a file over HTTP from pod B's busybox
//! httpd; tcpdump on A's and B's host-side veths is the witness. The
//! per-packet records follow each packet from A's eth0 across its veth and
//! the bridge to B's eth0 (and B's answers from A's veth to its eth0), with
//! stage latencies that add up; the per-flow totals (packets, IP bytes)
//! equal what tcpdump counted for the same flow, with and without --flow;
//! pod C, unselected, fetching the same file, never appears; a bad --flow
//! is refused naming the bad word. Needs root, PODBED_SOCKET and tcpdump
//! (scripts/setup.sh installs it).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{endpoint, run_pod, suffix, wait_for, JsonTrace, PodGuard, IMAGE};
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use serde_json::Value;

/// The HTTP port of pod B (this suite's range: 39200-39299).
const PORT: u16 = 39210;
/// The file B serves: three full-size segments and a bit.
const FILE_BYTES: usize = 4500;

/// A pod whose container runs `wget` against URL each time the test drops
/// `go.K` into its /srv, then writes `done.K`.
struct Client {
    pod: PodGuard,
    dir: PathBuf,
    next: usize,
}

impl Client {
    fn start(name: &str, ns: &str, url: &str) -> Client {
        let dir = std::env::temp_dir().join(format!("podscope-net-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "k=0; while true; do while [ ! -e /srv/go.$k ]; do sleep 0.05; done; \
             wget -q -O /srv/out.$k {url}; echo $? > /srv/rc.$k; mv /srv/rc.$k /srv/done.$k; \
             k=$((k+1)); done"
        );
        let c = ContainerSpec::new("app", IMAGE, &["sh", "-c", &script]).mount(
            dir.to_str().unwrap(),
            "/srv",
            false,
        );
        let pod = run_pod(&PodSpec::new(name, ns).unwrap(), &[c]);
        Client { pod, dir, next: 0 }
    }

    fn ip(&self) -> String {
        self.pod.pod.ip.clone().expect("pod IP")
    }

    /// One fetch; waits for it and checks the file arrived whole.
    fn fetch(&mut self) {
        let k = self.next;
        self.next += 1;
        std::fs::write(self.dir.join(format!("go.{k}")), "").unwrap();
        let done = self.dir.join(format!("done.{k}"));
        wait_for(
            &format!("{} to fetch", self.pod.pod.name),
            Duration::from_secs(30),
            || done.exists(),
        );
        assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "0");
        let got = std::fs::read(self.dir.join(format!("out.{k}"))).unwrap();
        assert_eq!(got.len(), FILE_BYTES);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.pod.remove();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The host-side veth of a pod: the peer of its eth0 (`eth0@ifN` in its
/// netns), named from the host's /sys/class/net.
fn host_veth(pid: u32) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let peer: u32 = text
        .split_once("eth0@if")
        .and_then(|(_, r)| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no eth0@ifN in {text:?}"));
    for e in std::fs::read_dir("/sys/class/net").unwrap() {
        let e = e.unwrap();
        let idx = std::fs::read_to_string(e.path().join("ifindex")).unwrap_or_default();
        if idx.trim() == peer.to_string() {
            return e.file_name().to_string_lossy().to_string();
        }
    }
    panic!("no host device with ifindex {peer}");
}

/// tcpdump writing packets of port PORT on a device to a file.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(dev: &str, tag: &str) -> Capture {
        let file = std::env::temp_dir().join(format!("podscope-net-{tag}.pcap"));
        let _ = std::fs::remove_file(&file);
        let mut child = Command::new("tcpdump")
            .args(["-i", dev, "-nn", "-U", "--immediate-mode", "-w"])
            .arg(&file)
            .arg(format!("tcp port {PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (scripts/setup.sh installs it)");
        // It says "listening on" once its socket is bound.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "tcpdump on {dev} exited"
            );
            if line.contains("listening on") {
                break;
            }
        }
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        });
        Capture { child, file }
    }

    /// Stops it; every packet as (source, destination, IP length).
    fn stop(mut self) -> Vec<(String, String, u64)> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        self.child.wait().unwrap();
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-nn", "-v"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        parse_tcpdump(&text)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `tcpdump -v` prints `... IP (tos ..., length N)` and then
/// `    SRC.PORT > DST.PORT: Flags ...` per packet.
fn parse_tcpdump(text: &str) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let mut len = None;
    for l in text.lines() {
        if !l.starts_with(' ') {
            len = l
                .rsplit_once("length ")
                .and_then(|(_, r)| r.trim_end_matches(')').parse::<u64>().ok());
        } else if let (Some(n), Some((src, rest))) = (len.take(), l.trim().split_once(" > ")) {
            let dst = rest.split(':').next().unwrap().to_string();
            out.push((src.to_string(), dst, n));
        }
    }
    out
}

/// (packets, bytes) the witness saw from `src_ip` to `dst_ip`.
fn witness(pkts: &[(String, String, u64)], src_ip: &str, dst_ip: &str) -> (u64, u64) {
    let m: Vec<_> = pkts
        .iter()
        .filter(|(s, d, _)| {
            s.starts_with(&format!("{src_ip}.")) && d.starts_with(&format!("{dst_ip}."))
        })
        .collect();
    (m.len() as u64, m.iter().map(|p| p.2).sum())
}

/// The last totals of each flow from `saddr` to `daddr` on PORT, summed.
fn flow_totals(events: &[Value], saddr: &str, daddr: &str) -> (u64, u64, Vec<Value>) {
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == "flow") {
        if e["saddr"] == saddr && e["daddr"] == daddr && (e["sport"] == PORT || e["dport"] == PORT)
        {
            last.insert(format!("{}:{}", e["sport"], e["dport"]), e);
        }
    }
    (
        last.values().map(|e| e["packets"].as_u64().unwrap()).sum(),
        last.values().map(|e| e["bytes"].as_u64().unwrap()).sum(),
        last.values().map(|e| (*e).clone()).collect(),
    )
}

/// The pod netns' TCP sockets (IPv4 and IPv6 tables; busybox httpd listens on ::).
fn tcp_table(pid: u32) -> String {
    let mut t = String::new();
    for f in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap();
        t.extend(text.lines().skip(1).map(|l| format!("{l}\n")));
    }
    t
}

/// No socket of the pod's netns on PORT is still exchanging packets (all
/// closed, in TIME_WAIT, or listening).
fn settled(pid: u32) -> bool {
    let text = tcp_table(pid);
    let port = format!(":{PORT:04X}");
    text.lines().all(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        !(f[1].ends_with(&port) || f[2].ends_with(&port)) || f[3] == "06" || f[3] == "0A"
    })
}

#[test]
fn pod_http_exchange_followed_across_veth_and_counted_like_tcpdump() {
    if !common::root_or_skip() {
        return;
    }
    const N: usize = 3;
    let sfx = suffix();
    let ns = format!("net-{sfx}");
    let server_script = format!(
        "mkdir -p /www && head -c {FILE_BYTES} /dev/zero | tr '\\0' x > /www/f && exec httpd -f -p {PORT} -h /www"
    );
    let b = run_pod(
        &PodSpec::new(&format!("net-b-{sfx}"), &ns).unwrap(),
        &[ContainerSpec::new(
            "web",
            IMAGE,
            &["sh", "-c", &server_script],
        )],
    );
    let b_ip = b.pod.ip.clone().expect("pod B IP");
    let url = format!("http://{b_ip}:{PORT}/f");
    let mut a = Client::start(&format!("net-a-{sfx}"), &ns, &url);
    let mut c = Client::start(&format!("net-c-{sfx}"), &ns, &url);
    let (a_ip, c_ip) = (a.ip(), c.ip());
    let (a_pid, b_pid) = (
        a.pod.pod.sandbox_pid.expect("A's sandbox pid"),
        b.pod.sandbox_pid.expect("B's sandbox pid"),
    );
    // httpd listening first (C's fetch also proves it).
    wait_for("B's httpd", Duration::from_secs(20), || {
        tcp_table(b_pid).lines().any(|l| {
            l.contains(&format!(":{PORT:04X} ")) && l.split_whitespace().nth(3) == Some("0A")
        })
    });
    let (veth_a, veth_b) = (host_veth(a_pid), host_veth(b_pid));

    let common = [
        "--pod",
        a.pod.pod.name.as_str(),
        "-n",
        ns.as_str(),
        "--runtime-endpoint",
    ];
    let ep = endpoint();
    let mut per_packet: Vec<&str> = vec!["net"];
    per_packet.extend(common);
    per_packet.extend([ep.as_str(), "--interval", "1h"]);
    let flow_arg = format!("tcp and port {PORT}");
    per_packet.extend(["--flow", flow_arg.as_str()]);
    let mut totals_only: Vec<&str> = vec!["net"];
    totals_only.extend(common);
    totals_only.extend([ep.as_str(), "--interval", "1h"]);

    // The whole namespace (A, B and C), cut down to A by --flow's pod term in
    // user space: B's answers to A and C's packets are B's and C's.
    let pod_flow = format!("tcp and port {PORT} and pod {}", a.pod.pod.name);
    let by_pod: Vec<&str> = vec![
        "net",
        "-n",
        ns.as_str(),
        "--runtime-endpoint",
        ep.as_str(),
        "--interval",
        "1h",
        "--flow",
        pod_flow.as_str(),
    ];
    let cap_a = Capture::start(&veth_a, &format!("a-{sfx}"));
    let cap_b = Capture::start(&veth_b, &format!("b-{sfx}"));
    let t1 = JsonTrace::start(&per_packet);
    let t2 = JsonTrace::start(&totals_only);
    let t3 = JsonTrace::start(&by_pod);
    for _ in 0..N {
        a.fetch();
        c.fetch();
    }
    let c_pid = c.pod.pod.sandbox_pid.unwrap();
    wait_for("the connections to close", Duration::from_secs(30), || {
        settled(a_pid) && settled(b_pid) && settled(c_pid)
    });
    let pkts_a = cap_a.stop();
    let pkts_b = cap_b.stop();
    let (events, err1) = t1.stop();
    let (totals, err2) = t2.stop();
    let (named, err3) = t3.stop();

    let w_ab = witness(&pkts_a, &a_ip, &b_ip);
    let w_ba = witness(&pkts_a, &b_ip, &a_ip);
    // What reached B's veth from A, and what B sent to A there.
    assert_eq!(
        witness(&pkts_b, &a_ip, &b_ip),
        w_ab,
        "B's veth saw other packets of A"
    );
    assert_eq!(witness(&pkts_b, &b_ip, &a_ip), w_ba);
    // 3-way handshake, request, response, close: at least 8 each way for 3 fetches.
    assert!(
        w_ab.0 >= 3 * N as u64 && w_ba.0 >= 4 * N as u64,
        "{pkts_a:?}"
    );
    eprintln!(
        "witness on {veth_a}: A->B {w_ab:?}, B->A {w_ba:?} (packets, IP bytes); {}",
        err1.lines()
            .filter(|l| l.contains("net:"))
            .collect::<Vec<_>>()
            .join("; ")
    );

    // Only pod A, only its flow with B on PORT.
    for e in events
        .iter()
        .chain(&totals)
        .filter(|e| e["kind"] != "summary")
    {
        assert!(e["kind"] == "packet" || e["kind"] == "flow", "{e}");
        assert_eq!(e["pod"], a.pod.pod.name.as_str(), "{e}");
        for f in ["saddr", "daddr"] {
            assert_ne!(e[f], c_ip.as_str(), "pod C's packet: {e}");
        }
    }
    assert!(
        totals.iter().all(|e| e["kind"] != "packet"),
        "per-packet records without --flow/--per-packet"
    );
    for e in events
        .iter()
        .filter(|e| e["kind"] == "packet" || e["kind"] == "flow")
    {
        assert!(
            e["sport"] == PORT || e["dport"] == PORT,
            "--flow let through {e}"
        );
    }

    // Per-flow totals equal the witness, with --flow and without.
    for (evs, what) in [(&events, "--flow"), (&totals, "totals")] {
        let (p, by, flows) = flow_totals(evs, &a_ip, &b_ip);
        assert_eq!((p, by), w_ab, "{what}: A->B flows {flows:?}");
        let (p, by, flows) = flow_totals(evs, &b_ip, &a_ip);
        assert_eq!((p, by), w_ba, "{what}: B->A flows {flows:?}");
        assert_eq!(flows.len(), N, "{what}: one flow per fetch each way");
    }

    // Each packet's records: the path, in order, latencies that add up.
    let mut packets: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == "packet") {
        packets
            .entry(e["packet"].as_u64().unwrap())
            .or_default()
            .push(e);
    }
    let out_path = [
        "pod_queue",
        "pod_xmit",
        "veth_recv",
        "host_queue",
        "host_xmit",
        "peer_recv",
    ];
    let in_path = ["veth_queue", "veth_xmit", "pod_recv"];
    let (mut outs, mut ins) = (0u64, 0u64);
    for (id, recs) in &packets {
        let stages: Vec<&str> = recs.iter().map(|r| r["stage"].as_str().unwrap()).collect();
        let first = recs[0];
        assert_eq!(first["first"], true, "packet {id}: {recs:?}");
        assert_eq!(first["step_ns"], 0, "packet {id}");
        let skb = &first["skb"];
        let mut sum = 0u64;
        for r in recs {
            // The same sk_buff from A's eth0 to B's eth0.
            assert_eq!(&r["skb"], skb, "packet {id}: {recs:?}");
            sum += r["step_ns"].as_u64().unwrap();
            assert!(r["total_ns"].as_u64().unwrap() >= sum - r["step_ns"].as_u64().unwrap());
        }
        let last = recs.last().unwrap()["total_ns"].as_u64().unwrap();
        assert!(
            last >= sum,
            "packet {id}: end to end {last} < sum of stages {sum}"
        );
        if first["saddr"] == a_ip.as_str() {
            assert_eq!(stages, out_path, "packet {id} from A: {recs:?}");
            assert_eq!(recs[0]["ifname"], "eth0");
            assert_eq!(recs[2]["ifname"], veth_a.as_str());
            assert_eq!(recs[3]["ifname"], veth_b.as_str());
            assert_eq!(recs[5]["ifname"], "eth0");
            outs += 1;
        } else {
            assert_eq!(stages, in_path, "packet {id} to A: {recs:?}");
            assert_eq!(recs[0]["ifname"], veth_a.as_str());
            assert_eq!(recs[2]["ifname"], "eth0");
            ins += 1;
        }
    }
    assert_eq!(
        (outs, ins),
        (w_ab.0, w_ba.0),
        "packets followed vs the witness"
    );
    // The summaries' per-stage counts say the same.
    let (_, _, flows) = flow_totals(&events, &a_ip, &b_ip);
    for f in &flows {
        let stages: Vec<&str> = f["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, out_path, "{f}");
        for s in f["stages"].as_array().unwrap() {
            assert_eq!(s["packets"], f["packets"], "{f}");
        }
        assert!(f["end_to_end_p50_ns"].as_u64().unwrap() > 0, "{f}");
    }
    let _ = err2;

    // --flow's pod term: only A's records; A's flows to B as the witness
    // says; B's and C's records left out in user space, and counted.
    for e in named.iter().filter(|e| e["kind"] != "summary") {
        assert_eq!(e["pod"], a.pod.pod.name.as_str(), "{e}");
    }
    let (p, by, _) = flow_totals(&named, &a_ip, &b_ip);
    assert_eq!((p, by), w_ab, "pod-filtered trace: A->B");
    let left_out: u64 = err3
        .lines()
        .filter(|l| l.contains("pod terms"))
        .find_map(|l| l.strip_prefix("podscope: net: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pod-term count in: {err3}"));
    assert!(
        left_out > 0,
        "B's and C's records were not left out: {err3}"
    );
    drop(b);
}

#[test]
fn a_bad_flow_filter_names_the_word() {
    for (flow, want) in [
        ("tcp and prot 80", "word 3: unknown term 'prot'"),
        ("tcp or udp", "'or' is not supported"),
        ("port 99999", "'99999' is not a port number"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
            .args(["trace", "net", "--all", "--flow", flow])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(want), "{flow}: {err}");
        assert!(err.contains("port N"), "the error lists the terms: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args(["trace", "tcp", "--all", "--flow", "tcp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("settings of the net probe"));
}

#[test]
fn probes_lists_net() {
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .arg("probes")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("net"))
        .unwrap_or_else(|| panic!("no net in {text}"));
    assert!(line.contains("packet path"), "{line}");
}
