//! `podscope trace http` over TLS against a real nginx (Debian, OpenSSL 3)
//! with a TLS server block and a self-signed certificate made here with the
//! openssl CLI, and a real curl over HTTPS: the tls probe's uprobes on
//! libssl see the plaintext of both sides, and what podscope reports must
//! agree exactly with nginx's access log, the independent witness. nginx
//! runs before the trace starts (attached from its /proc/PID/maps); each
//! curl starts after. The pod test runs curl from an image of its own (its
//! libssl exists only inside the image) and needs the containerd test bed
//! (testbed/podbed.sh, PODBED_SOCKET). Needs root, nginx, curl and openssl.

mod common;

use std::io::{BufRead, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Cgroup;
use serde_json::Value;

const NGINX: &str = "/usr/sbin/nginx";
const SECRET: &str = "SECRET456";

fn ready() -> bool {
    if !common::root_or_skip() {
        return false;
    }
    for (bin, pkg) in [
        (NGINX, "nginx"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/openssl", "openssl"),
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install Debian's {pkg} (bash scripts/setup.sh)"
        );
    }
    true
}

/// A loopback address and port of the ranges this test may use
/// (127.0.2.x, TCP 18200-18299), free now.
fn free_addr(slot: u8) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 0, 2, 10 + slot + (std::process::id() % 40) as u8);
    for port in 18200..18300 {
        if TcpListener::bind((ip, port)).is_ok() {
            return SocketAddr::from((ip, port));
        }
    }
    panic!("no free port in 18200-18299 on {ip}");
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    /// nginx with TLS on `addr`, its own config, certificate, files and
    /// access log (`method uri status request_length bytes_sent
    /// content_length` per line). `listen_any` listens on 0.0.0.0 (for pods).
    fn start(cg: &Cgroup, tag: &str, addr: SocketAddr, listen: &str) -> Nginx {
        let dir = std::env::temp_dir().join(format!("podscope-https-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/index.html"), "hello\n").unwrap();
        // Longer than the 1 KiB capture and than one TLS record (16 KiB).
        let big: String = (0..40_000)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        std::fs::write(dir.join("www/big.txt"), big).unwrap();
        common::self_signed(&dir);
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format witness '$request_method $request_uri $status $request_length $bytes_sent $content_length';
  access_log {d}/access.log witness;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen {listen} ssl;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    root {d}/www;
    location /sink {{ return 200 "posted\n"; }}
    location /cookie {{ add_header Set-Cookie "sid={SECRET}"; return 200 "ok\n"; }}
  }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let conf_path = dir.join("nginx.conf");
        let child = cg
            .command(&[
                NGINX,
                "-c",
                conf_path.to_str().unwrap(),
                "-p",
                &d.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen on {addr}: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, dir, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The access log: (method, uri, status, request bytes, bytes_sent).
    fn log(&self) -> Vec<Row> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 6, "access log line {l:?}");
                let mut request_length: u64 = f[3].parse().unwrap();
                // `return` answers without reading the body; nginx then
                // discards it and leaves it out of $request_length.
                if f[1].starts_with("/sink") {
                    request_length += f[5].parse::<u64>().unwrap_or(0);
                }
                (
                    f[0].to_string(),
                    podscope_proto::redact_query(f[1]),
                    f[2].parse().unwrap(),
                    request_length,
                    f[4].parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `podscope trace http ...`, attached.
struct Trace {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Trace {
    fn start(args: &[&str]) -> Trace {
        let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
            .arg("trace")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("podscope exited before attaching: {seen}");
            }
            seen.push_str(&line);
            if line.contains("probes attached") {
                break;
            }
        }
        assert!(!seen.contains("warning"), "{seen}");
        assert!(
            seen.contains("http,tls"),
            "http brings the tls probe along: {seen}"
        );
        let handle = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            seen + &rest
        });
        Trace {
            child,
            stderr: Some(handle),
        }
    }

    /// Stops it (SIGINT, as Ctrl-C) and returns (stdout, stderr).
    fn stop(mut self) -> (String, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        assert!(status.success(), "podscope failed: {err}");
        (out, err)
    }
}

fn curl(cg: &Cgroup, args: &[&str]) {
    let mut all = vec!["/usr/bin/curl", "-s", "-k", "--http1.1", "--max-time", "10"];
    all.extend_from_slice(args);
    let out = cg.command(&all).output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {out:?}");
}

type Row = (String, String, u16, u64, u64);

fn requests(events: &[Value], comm: &str, role: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = events
        .iter()
        .filter(|e| e["probe"] == "http" && e["comm"] == comm && e["role"] == role)
        .map(|e| {
            assert_eq!(e["kind"], "request", "{e}");
            assert_eq!(e["tls"], true, "an HTTPS request not marked tls: {e}");
            assert!(e.get("error").is_none(), "incomplete exchange: {e}");
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap() as u16,
                e["request_bytes"].as_u64().unwrap(),
                e["response_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `podscope: tls: ...` summary line.
fn tls_summary(err: &str) -> &str {
    err.lines()
        .find(|l| l.starts_with("podscope: tls:"))
        .unwrap_or_else(|| panic!("no tls summary line: {err}"))
}

#[test]
fn https_requests_agree_exactly_with_nginx_access_log_on_both_sides() {
    if !ready() {
        return;
    }
    let cg = Cgroup::new("https");
    // Started before the trace: found from its maps when the trace starts.
    let nginx = Nginx::start(&cg, "witness", free_addr(0), &free_addr(0).to_string());
    let cgroup = cg.0.display().to_string();
    let trace = Trace::start(&["http", "--cgroup", &cgroup, "-o", "json"]);

    // Keep-alive: four requests over one TLS connection, a 404 among them,
    // and a file longer than a TLS record.
    let (a, b, c, d) = (
        nginx.url("/index.html"),
        nginx.url("/big.txt"),
        nginx.url("/missing?token=abc&x"),
        nginx.url("/index.html?q=1"),
    );
    let null = "/dev/null";
    curl(
        &cg,
        &[
            "-o", null, "-o", null, "-o", null, "-o", null, &a, &b, &c, &d,
        ],
    );
    curl(&cg, &["-I", "-o", null, &a]);
    curl(
        &cg,
        &[
            "-o",
            null,
            "-d",
            "name=value&other=1",
            &nginx.url("/sink?p=1"),
        ],
    );

    let (out, err) = trace.stop();
    let events = json_lines(&out);
    let mut witness = nginx.log();
    witness.sort();
    assert_eq!(witness.len(), 6, "nginx logged {witness:?}");
    let server = requests(&events, "nginx", "server");
    let client = requests(&events, "curl", "client");
    eprintln!(
        "nginx access log: {} requests; podscope over TLS: {} served by nginx, {} sent by curl\n{}",
        witness.len(),
        server.len(),
        client.len(),
        tls_summary(&err)
    );
    assert_eq!(server, witness, "served by nginx vs its access log\n{err}");
    assert_eq!(client, witness, "sent by curl vs nginx's access log\n{err}");
    assert!(!out.contains("abc"), "a query value was printed: {out}");
    let summary = events.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["lost"], 0, "{summary}");
    let line = tls_summary(&err);
    assert!(line.contains(" 0 attach failures"), "{line}");
    assert!(!line.contains(" 0 libssl files"), "{line}");
    assert!(line.contains(" 0 unknown"), "{line}");
    assert!(
        line.contains("0 connections were another protocol"),
        "{line}"
    );
    // nginx peeks (MSG_PEEK) one byte of each new connection to tell TLS
    // from plain HTTP: not a message, so nothing is left unparsed.
    assert!(
        err.contains("podscope: http: 12 requests (6 served, 6 sent), 0 incomplete, 0 with truncated heads, 0 parse errors, 0 bytes not parsed"),
        "{err}"
    );
}

#[test]
fn credentials_sent_over_tls_never_appear_in_any_output() {
    if !ready() {
        return;
    }
    let cg = Cgroup::new("https-redact");
    let nginx = Nginx::start(&cg, "redact", free_addr(1), &free_addr(1).to_string());
    let cgroup = cg.0.display().to_string();
    for output in ["columns", "json"] {
        let trace = Trace::start(&["http", "--cgroup", &cgroup, "-o", output]);
        let url = nginx.url(&format!("/cookie?token={SECRET}"));
        curl(
            &cg,
            &[
                "-o",
                "/dev/null",
                "-H",
                &format!("Authorization: Bearer {SECRET}"),
                "-H",
                &format!("Proxy-Authorization: Basic {SECRET}"),
                "-b",
                &format!("session={SECRET}"),
                &url,
            ],
        );
        let (out, err) = trace.stop();
        assert!(
            out.contains("/cookie?token=?"),
            "the request is reported with its query redacted ({output}): {out}\n{err}"
        );
        // Both sides: served by nginx and sent by curl.
        assert_eq!(
            out.matches("/cookie?token=?").count(),
            2,
            "({output}) {out}\n{err}"
        );
        assert!(
            !out.contains(SECRET) && !err.contains(SECRET),
            "a credential leaked into the {output} output:\n{out}\n{err}"
        );
    }
    assert_eq!(nginx.log().len(), 2);
}

/// The image of the pod test: busybox and curl with every library curl
/// needs (libssl among them) copied from the host, so its libssl exists
/// only inside the image's layer, a file of its own.
fn build_curl_image(reference: &str) {
    let root = std::env::temp_dir().join(format!("podscope-https-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "usr/bin", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let copy = |from: &Path, to: &str| {
        let dst = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    };
    copy(Path::new("/bin/busybox"), "/bin/busybox");
    for applet in ["sh", "sleep", "test", "["] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    copy(Path::new("/usr/bin/curl"), "/usr/bin/curl");
    let ldd = Command::new("ldd").arg("/usr/bin/curl").output().unwrap();
    assert!(ldd.status.success(), "ldd /usr/bin/curl: {ldd:?}");
    let mut saw_libssl = false;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        saw_libssl |= path.contains("libssl.so");
        // The real file, not a symlink: the image holds its own copy.
        copy(&std::fs::canonicalize(path).unwrap(), path);
    }
    assert!(saw_libssl, "curl is not linked with libssl here: {ldd:?}");
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testbed/podbed.sh"
        ))
        .arg("import-rootfs")
        // The test bed PODBED_SOCKET belongs to (its state dir).
        .env("PODBED_DIR", common::socket().parent().unwrap())
        .arg(&root)
        .arg(reference)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        out.status.success(),
        "importing the curl image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// curl from an image of its own, in a real containerd pod, against nginx
/// on the host (the pod bridge's gateway): the pod's libssl is found under
/// /proc/PID/root and attached, and its HTTPS requests are reported with
/// the pod's identity, exactly as nginx logged them. nginx itself is not
/// in the pod, so only the client side is selected.
#[test]
fn https_from_a_pod_whose_libssl_is_only_in_its_image() {
    if !ready() {
        return;
    }
    let image = "localhost/podscope-curl:test";
    build_curl_image(image);
    let s = common::suffix();
    let ns = format!("tls-{s}");
    let name = format!("curl-{s}");
    // Waits for /tmp/go (made by the test once the trace is attached), then
    // fetches the URLs in /tmp/urls over one keep-alive connection.
    let script = "while [ ! -e /tmp/go ]; do sleep 0.1; done; \
                  export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu; \
                  curl -s -k --http1.1 --max-time 10 $(cat /tmp/urls) > /tmp/out 2>&1; \
                  echo $? > /tmp/done; exec sleep 3600";
    let spec = podscope_runtime::cri::PodSpec::new(&name, &ns).unwrap();
    let cs = [podscope_runtime::cri::ContainerSpec::new(
        "client",
        image,
        &["sh", "-c", script],
    )];
    let pod = common::run_pod(&spec, &cs);
    let pod_ip: Ipv4Addr = pod
        .pod
        .ip
        .as_deref()
        .expect("the pod has an IP")
        .parse()
        .unwrap();
    // host-local IPAM: the bridge (gateway) is .1 of the pod's /24.
    let o = pod_ip.octets();
    let gateway = Ipv4Addr::new(o[0], o[1], o[2], 1);
    let addr = (18200..18300)
        .map(|p| SocketAddr::from((gateway, p)))
        .find(|a| TcpListener::bind(a).is_ok())
        .expect("a free port in 18200-18299 on the pod bridge");
    let cg = Cgroup::new("https-pod-server");
    let nginx = Nginx::start(&cg, "pod", addr, &addr.to_string());
    let urls = [
        nginx.url("/index.html"),
        nginx.url("/missing?token=abc"),
        nginx.url("/big.txt"),
    ];
    let mut args = String::new();
    for u in &urls {
        args.push_str(&format!("-o /dev/null {u} "));
    }
    std::fs::write(pod.path_in("client", "/tmp/urls"), args).unwrap();

    let endpoint = common::endpoint();
    let trace = Trace::start(&[
        "http",
        "--pod",
        &name,
        "-n",
        &ns,
        "-o",
        "json",
        "--runtime-endpoint",
        &endpoint,
    ]);
    std::fs::write(pod.path_in("client", "/tmp/go"), "").unwrap();
    let done = pod.path_in("client", "/tmp/done");
    common::wait_for("curl in the pod", Duration::from_secs(20), || done.exists());
    let rc = std::fs::read_to_string(&done).unwrap_or_default();
    let curl_out = std::fs::read_to_string(pod.path_in("client", "/tmp/out")).unwrap_or_default();
    assert_eq!(rc.trim(), "0", "curl in the pod failed: {curl_out}");
    let (out, err) = trace.stop();
    let events = json_lines(&out);
    let mut witness = nginx.log();
    witness.sort();
    assert_eq!(witness.len(), 3, "{witness:?}");
    let client = requests(&events, "curl", "client");
    eprintln!(
        "nginx access log: {} requests; podscope: {} sent by curl in pod {ns}/{name}\n{}",
        witness.len(),
        client.len(),
        tls_summary(&err)
    );
    assert_eq!(
        client, witness,
        "sent by curl in the pod vs nginx's log\n{err}"
    );
    for e in events.iter().filter(|e| e["probe"] == "http") {
        assert_eq!(e["namespace"], ns.as_str(), "{e}");
        assert_eq!(e["pod"], name.as_str(), "{e}");
        assert_eq!(e["container"], "client", "{e}");
        assert_eq!(e["image"], image, "{e}");
    }
    let line = tls_summary(&err);
    // Only the image's own libssl: nginx (host) is not selected.
    assert!(
        line.contains(": 1 libssl files and 0 Go programs attached"),
        "{line}"
    );
    assert!(line.contains(" 0 attach failures"), "{line}");
}

/// The exec path: no selected process maps libssl when the trace starts
/// (nginx runs, but in a cgroup that is not traced), so nothing is attached;
/// curl processes then start in the traced cgroup. The first one's exec is
/// queued by the kernel and its libssl attached at the next poll; a curl
/// that finishes its TLS before that is missed (the documented worst case:
/// a local curl takes ~20-60 ms, the attach up to a few hundred ms on a busy
/// machine). So curls run for 2 s, one every 100 ms: the ones missed must be
/// the first few only, and from the first one seen on, every one is seen,
/// exactly as logged.
#[test]
fn libssl_first_mapped_after_the_trace_started_is_attached_from_the_exec() {
    if !ready() {
        return;
    }
    let server_cg = Cgroup::new("https-exec-server");
    let nginx = Nginx::start(&server_cg, "exec", free_addr(2), &free_addr(2).to_string());
    let cg = Cgroup::new("https-exec-client");
    let cgroup = cg.0.display().to_string();
    let trace = Trace::start(&["http", "--cgroup", &cgroup, "-o", "json"]);
    let started = Instant::now();
    let mut paths = Vec::new();
    const CURLS: usize = 20;
    for i in 0..CURLS {
        let path = format!("/index.html?n={i}");
        curl(&cg, &["-o", "/dev/null", &nginx.url(&path)]);
        paths.push(podscope_proto::redact_query(&path));
        std::thread::sleep(Duration::from_millis(100));
    }
    let first_took = started.elapsed();
    let (out, err) = trace.stop();
    let mut events = json_lines(&out);
    // The curl whose TLS straddles the attach: its request was written
    // before the uprobes were in, its response read after. At most one such
    // exchange, reported as such (never a made-up request), then dropped.
    let straddling = |e: &Value| {
        e["comm"] == "curl"
            && e["error"]
                .as_str()
                .is_some_and(|r| r.starts_with("response to a request not seen"))
    };
    let partial = events.iter().filter(|e| straddling(e)).count();
    assert!(partial <= 1, "more than the one curl at the attach: {out}");
    events.retain(|e| !straddling(e));
    let client = requests(&events, "curl", "client");
    assert!(
        requests(&events, "nginx", "server").is_empty(),
        "nginx is not in the traced cgroup: {out}"
    );
    let witness = nginx.log();
    assert_eq!(witness.len(), CURLS, "{witness:?}");
    eprintln!(
        "{CURLS} curls in {first_took:?}; podscope saw {} of them\n{}",
        client.len(),
        tls_summary(&err)
    );
    // All but the first few (until the attach is done), and from then on
    // every one, exactly as logged.
    assert!(client.len() >= CURLS / 2, "curls seen: {client:?}\n{err}");
    let mut expect: Vec<Row> = witness[CURLS - client.len()..].to_vec();
    eprintln!("{partial} exchange straddled the attach");
    expect.sort();
    assert_eq!(client, expect, "{err}");
    let line = tls_summary(&err);
    assert!(
        line.contains(": 1 libssl files and 0 Go programs attached"),
        "{line}"
    );
}

/// Python's ssl module (SSL_read_ex/SSL_write_ex) reading a 40 KB response
/// 64 bytes at a time: most reads are answered from OpenSSL's buffer with
/// no syscall, and must still be put on their connection (the socket this
/// SSL object used last). Both sides agree exactly with the access log.
#[test]
fn small_reads_from_openssls_buffer_stay_on_their_connection() {
    if !ready() {
        return;
    }
    const PYTHON: &str = "/usr/bin/python3";
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing: install Debian's python3 (bash scripts/setup.sh)"
    );
    let cg = Cgroup::new("https-small");
    let addr = free_addr(3);
    let nginx = Nginx::start(&cg, "small", addr, &addr.to_string());
    let cgroup = cg.0.display().to_string();
    let trace = Trace::start(&["http", "--cgroup", &cgroup, "-o", "json"]);
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("{ip}", {port})), server_hostname="podscope-test")
s.sendall(b"GET /big.txt?k=v HTTP/1.1\r\nHost: podscope-test\r\nConnection: close\r\n\r\n")
n = 0
while True:
    b = s.recv(64)
    if not b:
        break
    n += len(b)
s.close()
print(n)
"#,
        ip = addr.ip(),
        port = addr.port()
    );
    let out = cg.command(&[PYTHON, "-c", &script]).output().unwrap();
    assert!(out.status.success(), "python: {out:?}");
    let (out, err) = trace.stop();
    let events = json_lines(&out);
    let witness = nginx.log();
    assert_eq!(witness.len(), 1, "{witness:?}");
    let client = requests(&events, "python3", "client");
    let server = requests(&events, "nginx", "server");
    eprintln!("{}", tls_summary(&err));
    assert_eq!(client, witness, "sent by python vs nginx's log\n{err}");
    assert_eq!(server, witness, "served by nginx vs its log\n{err}");
    let line = tls_summary(&err);
    let from_ssl: u64 = line
        .split(" from its SSL object")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        from_ssl > 100,
        "reads answered from OpenSSL's buffer: {line}"
    );
    assert!(line.contains(" 0 from its thread, 0 unknown"), "{line}");
}

/// tests/go_https.go built (only Go's standard library) into `dir`;
/// `stripped`: without its symbol table (`-ldflags=-s -w`, as many images
/// ship Go programs).
fn go_https(dir: &Path, stripped: bool) -> PathBuf {
    common::go_build(dir, include_str!("go_https.go"), "go-https", None, stripped)
}

/// Go's crypto/tls (no libssl): a Go HTTPS server started before the trace
/// (found by the trace's first scan) and a Go client started after it
/// (found from its exec), and curl (OpenSSL) to the same server. What
/// podscope reports on both sides must agree exactly with the server's own
/// log of the requests it served.
#[test]
fn go_crypto_tls_requests_agree_exactly_with_the_servers_own_log() {
    go_crypto_tls(false);
}

/// The same with the executable stripped of its symbol table: the two
/// functions are found in the runtime's own table (.gopclntab).
#[test]
fn go_crypto_tls_of_a_stripped_executable() {
    go_crypto_tls(true);
}

fn go_crypto_tls(stripped: bool) {
    if !ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "podscope-go-https-{}-{stripped}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = go_https(&dir, stripped);
    let (cert, key) = common::self_signed(&dir);
    let cg = Cgroup::new(if stripped { "go-https-s" } else { "go-https" });
    let addr = free_addr(1 + u8::from(stripped));
    let (b, d) = (bin.display().to_string(), dir.display().to_string());
    let mut server = cg
        .command(&[
            &b,
            "server",
            &addr.to_string(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            &format!("{d}/served.log"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for("the Go server to listen", Duration::from_secs(10), || {
        TcpStream::connect(addr).is_ok()
    });
    let cgroup = cg.0.display().to_string();
    let trace = Trace::start(&["http", "--cgroup", &cgroup, "-o", "json"]);
    const N: usize = 5;
    let url = format!("https://{addr}");
    let got = cg
        .command(&[&b, "client", &format!("{url}/"), &N.to_string()])
        .output()
        .unwrap();
    assert!(got.status.success(), "the Go client: {got:?}");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["200"; N],
        "the Go client's own account"
    );
    // curl (libssl) to the Go server: keep-alive, a file longer than a TLS
    // record, a 404.
    let null = "/dev/null";
    curl(
        &cg,
        &[
            "-o",
            null,
            "-o",
            null,
            "-o",
            null,
            &format!("{url}/big"),
            &format!("{url}/missing"),
            &format!("{url}/"),
        ],
    );
    let (out, err) = trace.stop();
    let _ = server.kill();
    let _ = server.wait();
    let events = json_lines(&out);
    let served = std::fs::read_to_string(dir.join("served.log")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut witness: Vec<(String, String, u16)> = served
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                podscope_proto::redact_query(f[1]),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    witness.sort();
    assert_eq!(witness.len(), N + 3, "the server's log: {served}");
    let short = |rows: Vec<Row>| -> Vec<(String, String, u16)> {
        rows.into_iter().map(|r| (r.0, r.1, r.2)).collect()
    };
    let comm = "go-https";
    let server_seen = short(requests(&events, comm, "server"));
    let mut client_seen = short(requests(&events, comm, "client"));
    client_seen.extend(short(requests(&events, "curl", "client")));
    client_seen.sort();
    eprintln!(
        "the Go server logged {} requests; podscope: {} served by it, {} sent (Go client and curl)\n{}",
        witness.len(),
        server_seen.len(),
        client_seen.len(),
        tls_summary(&err)
    );
    assert_eq!(
        server_seen, witness,
        "served by the Go server vs its log\n{err}"
    );
    assert_eq!(
        client_seen, witness,
        "sent by the Go client and curl vs the server's log\n{err}"
    );
    let line = tls_summary(&err);
    assert!(line.contains("and 1 Go programs attached"), "{line}");
    assert!(line.contains(" 0 attach failures"), "{line}");
    assert!(line.contains(" 0 unknown"), "{line}");
    assert!(!line.contains(" 0 from its Go conn"), "{line}");
}
