//! `podscope trace dns` against a real dnsmasq and glibc's resolver
//! (`getent`, in a mount namespace of its own whose /etc/resolv.conf points at
//! that dnsmasq), over UDP and over TCP (`options use-vc`): what podscope
//! reports on the server side (dnsmasq) and the client side (getent) must
//! agree exactly with dnsmasq's own query log. Also batches (sendmmsg and
//! recvmmsg) and DNS over TLS through dnsdist.
//! Needs root and Debian's dnsmasq and dnsdist (scripts/setup.sh).

mod common;

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Stdio;
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

/// The lookups of `role` over `transport`, of the process named `comm`
/// (any process when None): each must have been answered.
fn rows(events: &[Value], comm: Option<&str>, role: &str, transport: &str) -> Vec<Row> {
    let mut v: Vec<Row> = events
        .iter()
        .filter(|e| {
            e["probe"] == "dns"
                && comm.is_none_or(|c| e["comm"] == c)
                && e["role"] == role
                && e["transport"] == transport
        })
        .map(|e| {
            assert!(e.get("error").is_none(), "{e}");
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
    let Some(dir) = prepare(transport, &[(DNSMASQ, "dnsmasq-base")]) else {
        return;
    };
    // (The UDP and TCP tests run at once: each takes its own address.)
    let ip = free_loopback(
        if transport == "tcp" {
            150..200
        } else {
            100..150
        },
        &[53],
    );
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
    let mut dnsmasq = start_dnsmasq(&cg, ip, &dir);
    let trace = common::JsonTrace::start(&["dns", "--cgroup", cg.0.to_str().unwrap()]);

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

    let (events, err) = trace.stop();
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();

    let mut want = witness(&std::fs::read_to_string(&log).unwrap());
    want.sort();
    // ahosts: A + AAAA; hosts: AAAA then A (glibc tries v6 first); ahostsv4: A.
    assert_eq!(want.len(), 5, "dnsmasq logged {want:?}");
    let server = rows(&events, Some("dnsmasq"), "server", transport);
    let client = rows(&events, Some("getent"), "client", transport);
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

/// Root (else skipped, said), the servers `tools` (program, Debian package)
/// installed, and an empty scratch directory for the test `tag`.
fn prepare(tag: &str, tools: &[(&str, &str)]) -> Option<std::path::PathBuf> {
    if !common::root_and_tools(tools) {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("podscope-dns-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Some(dir)
}

/// A loopback address in `range` (127.0.0.X) whose `ports` are all free
/// for both UDP and TCP (127.0.0.53 may be systemd-resolved's). Tests
/// that run at once take addresses from different ranges.
fn free_loopback(range: std::ops::Range<u8>, ports: &[u16]) -> Ipv4Addr {
    range
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .find(|at| {
            ports
                .iter()
                .all(|p| UdpSocket::bind((*at, *p)).is_ok() && TcpListener::bind((*at, *p)).is_ok())
        })
        .unwrap_or_else(|| {
            panic!("no address in that part of 127.0.0.0/24 with ports {ports:?} free")
        })
}

/// dnsmasq on ip:53 in `cg`, logging its queries to dir/dnsmasq.log, with
/// `known.test` (10.1.2.3) and `missing.test` (NXDOMAIN); waited for.
fn start_dnsmasq(cg: &Cgroup, ip: Ipv4Addr, dir: &Path) -> std::process::Child {
    let log = dir.join("dnsmasq.log");
    let dnsmasq = cg
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
    dnsmasq
}

/// A DNS server and client in one program that move their messages in
/// batches with sendmmsg and recvmmsg (as dnsdist and high-rate resolvers
/// do). It prints every call's message ids, its own account.
const MMSG_C: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAXB 16
static unsigned char q[MAXB][512], r[MAXB][512];

static int build(unsigned char *b, int id, const char *name) {
	int n = 12;
	memset(b, 0, 12);
	b[0] = id >> 8; b[1] = id; b[2] = 0x01; b[5] = 1;
	for (const char *p = name; *p;) {
		const char *dot = strchr(p, '.');
		int l = dot ? dot - p : (int)strlen(p);
		b[n++] = l; memcpy(b + n, p, l); n += l;
		p += l; if (*p == '.') p++;
	}
	b[n++] = 0; b[n++] = 0; b[n++] = 1; b[n++] = 0; b[n++] = 1;
	return n;
}

static void show(const char *who, struct mmsghdr *m, int k) {
	printf("%s", who);
	for (int i = 0; i < k; i++) {
		unsigned char *b = m[i].msg_hdr.msg_iov->iov_base;
		printf(" %d", b[0] << 8 | b[1]);
	}
	printf("\n");
}

int main(int argc, char **argv) {
	struct sockaddr_in at = { .sin_family = AF_INET, .sin_port = htons(53) };
	inet_pton(AF_INET, argv[1], &at.sin_addr);
	int srv = socket(AF_INET, SOCK_DGRAM, 0), cli = socket(AF_INET, SOCK_DGRAM, 0);
	if (bind(srv, (void *)&at, sizeof(at)) || connect(cli, (void *)&at, sizeof(at))) { perror("socket"); return 1; }
	for (int a = 2; a < argc; a++) {
		int n = atoi(argv[a]);
		struct mmsghdr m[MAXB]; struct iovec v[MAXB]; struct sockaddr_in from[MAXB];
		char name[64];
		memset(m, 0, sizeof(m));
		for (int i = 0; i < n; i++) {
			snprintf(name, sizeof(name), "m%d-%d.test", a, i);
			v[i].iov_base = q[i]; v[i].iov_len = build(q[i], a * 100 + i, name);
			m[i].msg_hdr.msg_iov = &v[i]; m[i].msg_hdr.msg_iovlen = 1;
		}
		int k = sendmmsg(cli, m, n, 0);
		if (k != n) { perror("sendmmsg"); return 1; }
		show("client sendmmsg", m, k);
		int got = 0;
		while (got < n) {
			memset(m, 0, sizeof(m));
			for (int i = 0; i < MAXB; i++) {
				v[i].iov_base = q[got + i < MAXB ? got + i : 0]; v[i].iov_len = 512;
				m[i].msg_hdr.msg_iov = &v[i]; m[i].msg_hdr.msg_iovlen = 1;
				m[i].msg_hdr.msg_name = &from[i]; m[i].msg_hdr.msg_namelen = sizeof(from[i]);
			}
			k = recvmmsg(srv, m, n - got, MSG_WAITFORONE, NULL);
			if (k <= 0) { perror("recvmmsg"); return 1; }
			show("server recvmmsg", m, k);
			for (int i = 0; i < k; i++) {
				/* The answer: the query with QR and RA set; odd ones NXDOMAIN,
				 * even ones one A record, 10.0.0.(i+1). */
				int len = m[i].msg_len, j = got + i;
				unsigned char *b = r[j];
				memcpy(b, q[j], len);
				b[2] |= 0x80; b[3] = 0x80 | (j % 2 ? 3 : 0);
				if (j % 2 == 0) {
					unsigned char a[] = { 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, j + 1 };
					b[7] = 1; memcpy(b + len, a, sizeof(a)); len += sizeof(a);
				}
				r[j][511] = len & 0xff; /* (unused) */
				v[i].iov_base = b; v[i].iov_len = len;
			}
			for (int i = 0; i < k; i++) {
				m[i].msg_hdr.msg_namelen = sizeof(from[i]);
			}
			int s = sendmmsg(srv, m, k, 0);
			if (s != k) { perror("sendmmsg"); return 1; }
			show("server sendmmsg", m, s);
			got += k;
		}
		got = 0;
		while (got < n) {
			memset(m, 0, sizeof(m));
			for (int i = 0; i < MAXB; i++) {
				v[i].iov_base = r[i]; v[i].iov_len = 512;
				m[i].msg_hdr.msg_iov = &v[i]; m[i].msg_hdr.msg_iovlen = 1;
			}
			k = recvmmsg(cli, m, n - got, MSG_WAITFORONE, NULL);
			if (k <= 0) { perror("recvmmsg"); return 1; }
			show("client recvmmsg", m, k);
			got += k;
		}
	}
	return 0;
}
"#;

/// sendmmsg and recvmmsg on both ends of port 53 (a batch of 3, then of 6:
/// more than the 4 messages a call's record can carry): podscope reports
/// exactly the lookups whose query and answer were among the first 4 of
/// their calls, by name and rcode, on each side, as the program's own
/// account of every call says, and counts every message past those 4.
#[test]
fn dns_over_sendmmsg_and_recvmmsg_agrees_with_the_programs_own_account() {
    if !common::root_or_skip() {
        return;
    }
    let bin = common::compile_c("dns-mmsg", MMSG_C, "m");
    let ip = (40..100)
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .find(|at| UdpSocket::bind((*at, 53)).is_ok())
        .expect("a free UDP port 53 on 127.0.0.40-99");
    let cg = Cgroup::new("dns-mmsg");
    let trace = common::JsonTrace::start(&["dns", "--cgroup", cg.0.to_str().unwrap()]);
    let out = cg
        .command(&[bin.to_str().unwrap(), &ip.to_string(), "3", "6"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let (events, err) = trace.stop();

    // The program's account: the ids each call moved; a record carries the
    // first 4 of a call, the rest are counted.
    let mut seen: std::collections::HashMap<&str, std::collections::BTreeSet<u64>> =
        Default::default();
    let mut past = 0;
    for line in said.lines() {
        let (who, ids) = line.split_at(15);
        let ids: Vec<u64> = ids.split_whitespace().map(|i| i.parse().unwrap()).collect();
        past += ids.len().saturating_sub(4);
        seen.entry(who).or_default().extend(ids.into_iter().take(4));
    }
    assert!(
        past >= 8,
        "the batch of 6 crossed the 4 in each call: {said}"
    );
    for (role, query, answer) in [
        ("client", "client sendmmsg", "client recvmmsg"),
        ("server", "server recvmmsg", "server sendmmsg"),
    ] {
        let both: Vec<u64> = seen[query].intersection(&seen[answer]).copied().collect();
        let one = seen[query].symmetric_difference(&seen[answer]).count();
        // (batch a, message i) has id a*100+i, name m{a}-{i}.test, and
        // NXDOMAIN when i is odd.
        let mut want: Vec<(String, String)> = both
            .iter()
            .map(|id| {
                let (a, i) = (id / 100, id % 100);
                let rcode = if i % 2 == 1 { "NXDOMAIN" } else { "NOERROR" };
                (format!("m{a}-{i}.test"), rcode.to_string())
            })
            .collect();
        want.sort();
        let mut got: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["probe"] == "dns" && e["role"] == role && e.get("error").is_none())
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["rcode"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "{role}: the program said\n{said}\n{err}");
        let incomplete = events
            .iter()
            .filter(|e| e["probe"] == "dns" && e["role"] == role && e.get("error").is_some())
            .count();
        assert_eq!(incomplete, one, "{role}: {events:?}\n{said}");
    }
    assert!(
        err.contains(&format!(
            "TCP stream gaps, {past} messages past the first 4 of a sendmmsg/recvmmsg (not copied)"
        )),
        "{err}\n{said}"
    );
}

const DNSDIST: &str = "/usr/bin/dnsdist";

/// A DNS-over-TLS client (RFC 7858) with Python's ssl module (OpenSSL):
/// one connection, one query after another (NAME:TYPE arguments), each
/// answer read before the next; prints "id qtype name rcode" per answer,
/// its own account.
const DOT_CLIENT: &str = r#"
import socket, ssl, struct, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
def exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit("the server closed the connection")
        b += c
    return b
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((host, port)) as raw:
    with ctx.wrap_socket(raw, server_hostname="dot.test") as s:
        for i, arg in enumerate(sys.argv[4:], 1):
            name, qtype = arg.split(":")
            q = struct.pack(">HHHHHH", 0x1000 + i, 0x0100, 1, 0, 0, 0)
            for label in name.split("."):
                q += bytes([len(label)]) + label.encode()
            q += b"\0" + struct.pack(">HH", {"A": 1, "AAAA": 28}[qtype], 1)
            s.sendall(struct.pack(">H", len(q)) + q)
            (n,) = struct.unpack(">H", exact(s, 2))
            r = exact(s, n)
            rid, flags = struct.unpack(">HH", r[:4])
            print(rid, qtype, name, RCODES.get(flags & 15, flags & 15), flush=True)
"#;

/// DNS over TLS: a Python client (OpenSSL) asks dnsdist on port 853
/// (OpenSSL too), which asks dnsmasq over TCP. `trace dns` brings the tls
/// probe along and reads each side's plaintext: the client's lookups over
/// tls agree with its own account and with dnsmasq's query log, dnsdist's
/// serving side over tls and its asking side over tcp agree with the log,
/// and dnsmasq's side over tcp too. No HTTPS is reported by a dns trace.
#[test]
fn dns_over_tls_agrees_with_the_clients_account_and_dnsmasqs_log() {
    let Some(dir) = prepare("dot", &[(DNSMASQ, "dnsmasq-base"), (DNSDIST, "dnsdist")]) else {
        return;
    };
    let ip = free_loopback(200..250, &[53, 853, 5300, 4433]);
    let cg = Cgroup::new("dns-dot");
    let mut dnsmasq = start_dnsmasq(&cg, ip, &dir);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=dot.test",
            "-addext",
            "subjectAltName=DNS:dot.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl req: {made:?}");
    // No security polling (it asks the Internet), and the backend's health
    // check only once, at start, before the trace.
    let conf = dir.join("dnsdist.conf");
    std::fs::write(
        &conf,
        format!(
            "setSecurityPollSuffix('')\n\
             setLocal('{ip}:5300')\n\
             addTLSLocal('{ip}:853', '{}', '{}', {{provider='openssl'}})\n\
             newServer({{address='{ip}:53', checkInterval=3600}})\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let said = dir.join("dnsdist.out");
    let mut dnsdist = cg
        .command(&[
            DNSDIST,
            "--supervised",
            "--disable-syslog",
            "-C",
            conf.to_str().unwrap(),
        ])
        .stdout(std::fs::File::create(&said).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let out = std::fs::read_to_string(&said).unwrap_or_default();
        if out.contains(&format!("Listening on {ip}:853 for TLS")) && out.contains("as 'up'") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "dnsdist did not start: {out}"
        );
        assert!(
            dnsdist.try_wait().unwrap().is_none(),
            "dnsdist exited: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let trace = common::JsonTrace::start(&["dns", "--cgroup", cg.0.to_str().unwrap()]);
    let asked = ["known.test:A", "nx.missing.test:A", "known.test:AAAA"];
    let mut args = vec!["python3", "-c", DOT_CLIENT];
    let (ip_s, cert_s) = (ip.to_string(), cert.to_str().unwrap().to_string());
    args.extend([ip_s.as_str(), "853", cert_s.as_str()]);
    args.extend(asked);
    let out = cg.command(&args).output().unwrap();
    assert!(out.status.success(), "the DoT client: {out:?}");
    // And an HTTPS request from the same cgroup (curl, OpenSSL): not DNS.
    let mut https = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("{ip}:4433"),
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://{ip}:4433/");
    let mut fetched = None;
    for _ in 0..50 {
        let o = cg
            .command(&[
                "curl",
                "-sk",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ])
            .output()
            .unwrap();
        if o.status.success() {
            fetched = Some(String::from_utf8_lossy(&o.stdout).to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = https.kill();
    let _ = https.wait();
    assert_eq!(
        fetched.as_deref(),
        Some("200"),
        "curl {url} (openssl s_server)"
    );
    let (events, err) = trace.stop();
    let _ = dnsdist.kill();
    let _ = dnsdist.wait();
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();

    // The client's own account: (qtype, name, rcode).
    let mut own: Vec<(String, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect();
    own.sort();
    assert_eq!(own.len(), asked.len(), "{out:?}");
    // dnsmasq's log, without dnsdist's health check (before the trace).
    let mut want: Vec<Row> = witness(&std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap())
        .into_iter()
        .filter(|r| r.1.ends_with(".test"))
        .collect();
    want.sort();
    let short = |v: &[Row]| -> Vec<(String, String, String)> {
        v.iter()
            .map(|r| (r.0.clone(), r.1.clone(), r.2.clone()))
            .collect()
    };
    assert_eq!(short(&want), own, "dnsmasq's log vs the client's account");
    let client = rows(&events, Some("python3"), "client", "tls");
    assert_eq!(client, want, "the client's side over TLS\n{err}");
    assert_eq!(
        rows(&events, None, "server", "tls"),
        want,
        "dnsdist serving over TLS\n{err}"
    );
    assert_eq!(
        rows(&events, None, "client", "tcp"),
        want,
        "dnsdist asking dnsmasq over TCP\n{err}"
    );
    assert_eq!(
        rows(&events, Some("dnsmasq"), "server", "tcp"),
        want,
        "dnsmasq's side over TCP\n{err}"
    );
    eprintln!(
        "dot: {} lookups; podscope: {} each on the client's and dnsdist's TLS sides and dnsdist's and dnsmasq's TCP sides",
        want.len(),
        client.len()
    );
    assert!(
        !events
            .iter()
            .any(|e| e["probe"] == "http" || e["probe"] == "tls"),
        "a dns trace reports DNS only, not curl's HTTPS request: {err}"
    );
    assert!(
        err.contains("podscope: dns: 24 messages, 12 queries, 0 without an answer or a query, 0 messages not DNS, 0 TCP stream gaps"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
