//! `podscope trace dns` against a real dnsmasq and glibc's resolver
//! (`getent`, in a mount namespace of its own whose /etc/resolv.conf points at
//! that dnsmasq), over UDP and over TCP (`options use-vc`): what podscope
//! reports on the server side (dnsmasq) and the client side (getent) must
//! agree exactly with dnsmasq's own query log.
//! Needs root and Debian's dnsmasq (scripts/setup.sh).

mod common;

use std::io::{BufReader, Read};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Cgroup;
use serde_json::Value;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

type Row = (String, String, String, Vec<String>);

/// (qtype, name, rcode, answers) per query, in dnsmasq's log order.
fn witness(log: &str) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for line in log.lines() {
        let Some((_, msg)) = line.split_once("]: ") else {
            continue;
        };
        if let Some(rest) = msg.strip_prefix("query[") {
            let (qtype, rest) = rest.split_once("] ").unwrap();
            let name = rest.split(' ').next().unwrap();
            out.push((qtype.into(), name.into(), String::new(), Vec::new()));
        } else if let Some(rest) = msg.strip_prefix("config ") {
            let (_, result) = rest.split_once(" is ").unwrap();
            let last = out.last_mut().expect("a reply after its query");
            let result = result.split(' ').next().unwrap();
            match result {
                "NXDOMAIN" | "REFUSED" | "SERVFAIL" => last.2 = result.into(),
                ip => {
                    last.2 = "NOERROR".into();
                    last.3.push(ip.into());
                }
            }
        }
    }
    out
}

fn rows(events: &[Value], comm: &str, role: &str, transport: &str) -> Vec<Row> {
    let mut v: Vec<Row> = events
        .iter()
        .filter(|e| e["probe"] == "dns" && e["comm"] == comm && e["role"] == role)
        .map(|e| {
            assert!(e.get("error").is_none(), "{e}");
            assert_eq!(e["transport"], transport, "{e}");
            assert!(e["latency_ns"].as_u64().is_some(), "{e}");
            (
                e["qtype"].as_str().unwrap().to_string(),
                e["name"].as_str().unwrap().to_string(),
                e["rcode"].as_str().unwrap().to_string(),
                e["answers"]
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn dns_queries_agree_exactly_with_dnsmasq_log_on_both_sides() {
    against_dnsmasq("udp");
}

/// The same lookups over TCP: glibc writes both queries of a lookup with one
/// writev (each after its two-byte length) and dnsmasq, in a child it forks
/// per connection, reads each length a byte at a time.
#[test]
fn dns_over_tcp_agrees_exactly_with_dnsmasq_log_on_both_sides() {
    against_dnsmasq("tcp");
}

fn against_dnsmasq(transport: &str) {
    if !common::root_or_skip() {
        return;
    }
    assert!(
        Path::new(DNSMASQ).exists(),
        "{DNSMASQ} is missing: install Debian's dnsmasq (bash scripts/setup.sh)"
    );
    let dir = std::env::temp_dir().join(format!("podscope-dns-{transport}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A loopback address whose port 53 is free (127.0.0.53 may be systemd-resolved's).
    // (The UDP and TCP tests run at once: each takes its own address.)
    let mut ip = None;
    for i in if transport == "tcp" {
        150..250
    } else {
        100..150
    } {
        let at = Ipv4Addr::new(127, 0, 0, i);
        if UdpSocket::bind((at, 53)).is_ok() && TcpListener::bind((at, 53)).is_ok() {
            ip = Some(at);
            break;
        }
    }
    let ip = ip.expect("a free port 53 on 127.0.0.100-249");
    let options = if transport == "tcp" {
        "options use-vc\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("resolv.conf"),
        format!("nameserver {ip}\n{options}"),
    )
    .unwrap();
    let log = dir.join("dnsmasq.log");
    let cg = Cgroup::new(&format!("dns-{transport}"));
    let mut dnsmasq = cg
        .command(&[
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            &format!("--listen-address={ip}"),
            "--bind-interfaces",
            "--port=53",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--address=/known.test/10.1.2.3",
            "--address=/missing.test/",
            "--log-queries",
            &format!("--log-facility={}", log.display()),
            &format!("--pid-file={}", dir.join("pid").display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("cleared cache")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "dnsmasq did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut trace = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args(["trace", "dns", "--cgroup"])
        .arg(&cg.0)
        .args(["-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(trace.stderr.take().unwrap());
    common::wait_attached(&mut stderr);
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // glibc's resolver, as any program would use it: A and AAAA in one
    // sendmmsg (ahosts), a name that does not exist, and a v4-only lookup.
    let resolv = dir.join("resolv.conf");
    for (args, ok) in [
        (vec!["ahosts", "known.test"], true),
        (vec!["hosts", "nx.missing.test"], false),
        (vec!["ahostsv4", "known.test"], true),
    ] {
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec getent \"$@\"",
            resolv.display()
        );
        let mut full = vec!["unshare", "-m", "sh", "-c", &script, "sh"];
        full.extend(args.iter());
        let out = cg.command(&full).output().unwrap();
        assert_eq!(out.status.success(), ok, "getent {args:?}: {out:?}");
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(trace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut out = String::new();
    trace
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(trace.wait().unwrap().success());
    let err = err.join().unwrap();
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let mut want = witness(&std::fs::read_to_string(&log).unwrap());
    want.sort();
    // ahosts: A + AAAA; hosts: AAAA then A (glibc tries v6 first); ahostsv4: A.
    assert_eq!(want.len(), 5, "dnsmasq logged {want:?}");
    let server = rows(&events, "dnsmasq", "server", transport);
    let client = rows(&events, "getent", "client", transport);
    eprintln!(
        "{transport}: dnsmasq log: {} queries; podscope: {} answered by dnsmasq, {} asked by getent",
        want.len(),
        server.len(),
        client.len()
    );
    assert_eq!(server, want, "dnsmasq's side vs its log\n{err}");
    assert_eq!(client, want, "getent's side vs dnsmasq's log\n{err}");
    assert!(
        err.contains("podscope: dns: 20 messages, 10 queries, 0 without an answer or a query, 0 messages not DNS, 0 TCP stream gaps"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
