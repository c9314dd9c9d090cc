//! `podscope trace http` against a real nginx and a real curl: what podscope
//! reports, on the server side (nginx) and on the client side (curl), must
//! agree exactly with nginx's own access log, the independent witness.
//! Needs root (BPF) and Debian's nginx and curl (scripts/setup.sh); the pod
//! test needs the containerd test bed (testbed/podbed.sh, PODBED_SOCKET).

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use common::Cgroup;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NGINX: &str = "/usr/sbin/nginx";
const SECRET: &str = "SECRET123";

fn is_root() -> bool {
    if !common::root_or_skip() {
        return false;
    }
    for (bin, pkg) in [(NGINX, "nginx"), ("/usr/bin/curl", "curl")] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install Debian's {pkg} (bash scripts/setup.sh)"
        );
    }
    true
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("podscope-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("www")).unwrap();
    d
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    /// nginx on 127.0.0.x:port with its own config, files and access log
    /// (`method uri status request_length bytes_sent` per line).
    fn start(cg: &Cgroup, tag: &str) -> Nginx {
        let dir = scratch(tag);
        std::fs::write(dir.join("www/index.html"), "hello\n").unwrap();
        // Longer than the 1 KiB capture; nginx sends it with sendfile.
        let big: String = (0..20_000)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        std::fs::write(dir.join("www/big.txt"), big).unwrap();
        let ip = Ipv4Addr::new(127, 0, 0, 2 + (std::process::id() % 200) as u8);
        let port = TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
  sendfile on;
  server {{
    listen {ip}:{port};
    root {d}/www;
    # Proxied to ourselves, so nginx reads the request body (its length is
    # then in $request_length) and nginx is an HTTP client too.
    location /post {{ proxy_pass http://{ip}:{port}/sink; }}
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
        let addr = SocketAddr::from((ip, port));
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
        format!("http://{}{path}", self.addr)
    }

    /// The access log: (method, uri, status, request bytes, bytes_sent).
    fn log(&self) -> Vec<(String, String, u16, u64, u64)> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 6, "access log line {l:?}");
                let mut request_length: u64 = f[3].parse().unwrap();
                // `return` answers without reading the body; nginx then
                // discards it and leaves it out of $request_length. It was on
                // the wire all the same.
                if f[1].starts_with("/sink") {
                    request_length += f[5].parse::<u64>().unwrap_or(0);
                }
                (
                    f[0].to_string(),
                    f[1].to_string(),
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

/// `podscope trace http --cgroup CG`, attached and ready.
struct Trace {
    child: Child,
}

impl Trace {
    fn start(cg: &Cgroup, output: &str) -> Trace {
        Trace::start_with(cg, output, &[])
    }

    fn start_with(cg: &Cgroup, output: &str, extra: &[&str]) -> Trace {
        let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
            .args(["trace", "http", "--cgroup"])
            .arg(&cg.0)
            .args(["-o", output])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            use std::io::BufRead;
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("podscope exited before attaching: {seen}");
            }
            seen.push_str(&line);
            if line.contains("probes attached") {
                break;
            }
        }
        assert!(!seen.contains("warning"), "{seen}");
        child.stderr = None;
        // Keep reading stderr in the background so podscope never blocks on it.
        let handle = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            seen + &rest
        });
        STDERR.with(|s| *s.borrow_mut() = Some(handle));
        Trace { child }
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
        let err = STDERR
            .with(|s| s.borrow_mut().take())
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        assert!(status.success(), "podscope failed: {err}");
        (out, err)
    }
}

thread_local! {
    static STDERR: std::cell::RefCell<Option<std::thread::JoinHandle<String>>> =
        const { std::cell::RefCell::new(None) };
}

fn curl(cg: &Cgroup, args: &[&str]) {
    let mut all = vec!["/usr/bin/curl", "-s", "--max-time", "10"];
    all.extend_from_slice(args);
    let out = cg.command(&all).output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {out:?}");
}

type Row = (String, String, u16, u64, u64);

fn requests(events: &[Value], comm: &str, role: &str) -> Vec<Row> {
    events
        .iter()
        .filter(|e| e["probe"] == "http" && e["comm"] == comm && e["role"] == role)
        .map(|e| {
            assert_eq!(e["kind"], "request", "{e}");
            assert!(e.get("error").is_none(), "incomplete exchange: {e}");
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap() as u16,
                e["request_bytes"].as_u64().unwrap(),
                e["response_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn http_requests_agree_exactly_with_nginx_access_log_on_both_sides() {
    if !is_root() {
        return;
    }
    let cg = Cgroup::new("witness");
    let nginx = Nginx::start(&cg, "witness");
    let trace = Trace::start(&cg, "json");

    // Keep-alive: four requests over one connection, a 404 among them, and a
    // file longer than the capture (its body goes by sendfile).
    let (a, b, c, d) = (
        nginx.url("/index.html"),
        nginx.url("/big.txt"),
        nginx.url("/missing?token=abc&x"),
        nginx.url("/index.html?q=1"),
    );
    curl(
        &cg,
        &[
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &a,
            &b,
            &c,
            &d,
        ],
    );
    curl(&cg, &["-I", "-o", "/dev/null", &a]);
    curl(
        &cg,
        &[
            "-o",
            "/dev/null",
            "-d",
            "name=value&other=1",
            &nginx.url("/post"),
        ],
    );
    // A chunked POST of 5000 bytes: each chunk is longer than the capture.
    let body = nginx.dir.join("body.bin");
    std::fs::write(&body, vec![b'b'; 5000]).unwrap();
    let at_body = format!("@{}", body.display());
    curl(
        &cg,
        &[
            "-o",
            "/dev/null",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &at_body,
            &nginx.url("/post?chunked=yes"),
        ],
    );

    let (out, err) = trace.stop();
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut witness: Vec<Row> = nginx
        .log()
        .into_iter()
        .map(|(m, uri, s, rl, bs)| (m, podscope_proto::redact_query(&uri), s, rl, bs))
        .collect();
    // 7 from curl, 2 from nginx's proxy to itself.
    assert_eq!(witness.len(), 9, "nginx logged {witness:?}");
    let mut server = requests(&events, "nginx", "server");
    let mut client = requests(&events, "curl", "client");
    let mut proxy = requests(&events, "nginx", "client");
    eprintln!(
        "nginx access log: {} requests; podscope: {} served by nginx, {} sent by curl, {} sent by nginx's proxy",
        witness.len(),
        server.len(),
        client.len(),
        proxy.len()
    );
    witness.sort();
    server.sort();
    client.sort();
    proxy.sort();
    let (mut to_sink, mut from_curl): (Vec<Row>, Vec<Row>) = witness
        .iter()
        .cloned()
        .partition(|r| r.1.starts_with("/sink"));
    to_sink.sort();
    from_curl.sort();
    assert_eq!(server, witness, "served by nginx vs its access log\n{err}");
    assert_eq!(
        client, from_curl,
        "sent by curl vs nginx's access log\n{err}"
    );
    assert_eq!(
        proxy, to_sink,
        "sent by nginx's proxy vs its access log\n{err}"
    );
    assert!(!out.contains("abc"), "a query value was printed: {out}");
    let truncated: Vec<&Value> = events.iter().filter(|e| e["truncated"] == true).collect();
    assert!(
        truncated.is_empty(),
        "heads reported truncated: {truncated:?}"
    );
    // Nothing lost and nothing unparsed.
    let summary = events.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert!(
        err.contains("podscope: http: 0 connections were another protocol"),
        "{err}"
    );
    assert!(
        err.contains("podscope: http: 18 requests (9 served, 9 sent), 0 incomplete, 0 with truncated heads, 0 parse errors, 0 bytes not parsed"),
        "{err}"
    );
}

#[test]
fn credentials_never_appear_in_any_output() {
    if !is_root() {
        return;
    }
    let cg = Cgroup::new("redact");
    let nginx = Nginx::start(&cg, "redact");
    for output in ["columns", "json"] {
        let trace = Trace::start(&cg, output);
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
            "the request is reported with its query redacted ({output}): {out}"
        );
        assert!(out.contains("200"), "{out}");
        assert!(
            !out.contains(SECRET) && !err.contains(SECRET),
            "a credential leaked into the {output} output:\n{out}\n{err}"
        );
    }
    let log = nginx.log();
    assert_eq!(log.len(), 2, "{log:?}");
}

/// `--capture-headers --capture-body N --redact-header NAME`: the headers
/// podscope keeps for curl's request are exactly those `curl -v` says it
/// sent, and nginx's response headers exactly those curl says it got (both
/// in order, credential values `[redacted]`); the bodies are what curl sent
/// and nginx's configured answer, seen by curl, by nginx serving it and by
/// nginx's proxy making it; no credential reaches any output.
#[test]
fn captured_headers_and_bodies_agree_with_curls_own_account() {
    if !is_root() {
        return;
    }
    let cg = Cgroup::new("capture");
    let nginx = Nginx::start(&cg, "capture");
    let trace = Trace::start_with(
        &cg,
        "json",
        &[
            "--capture-headers",
            "--capture-body",
            "256",
            "--redact-header",
            "x-tenant",
        ],
    );
    let body = format!(r#"{{"user":"ann","password":"{SECRET}","n":1}}"#);
    let kept_body = r#"{"user":"ann","password":"[redacted]","n":1}"#;
    let mut all = vec![
        "/usr/bin/curl",
        "-s",
        "-v",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
    ];
    let (auth, tenant, cookie) = (
        format!("Authorization: Bearer {SECRET}"),
        format!("X-Tenant: {SECRET}"),
        format!("session={SECRET}"),
    );
    let url = nginx.url("/post?k=v");
    all.extend_from_slice(&[
        "-H",
        &auth,
        "-H",
        &tenant,
        "-b",
        &cookie,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
        &url,
    ]);
    let out = cg.command(&all).output().unwrap();
    assert!(out.status.success(), "curl: {out:?}");
    let verbose = String::from_utf8_lossy(&out.stderr).to_string();
    let (out, err) = trace.stop();
    // curl's own account: `> Name: value` sent, `< Name: value` received.
    let said = |mark: &str| -> Vec<(String, String)> {
        verbose
            .lines()
            .filter_map(|l| l.strip_prefix(mark))
            .filter_map(|l| l.trim_end().split_once(": "))
            .map(|(n, v)| {
                let n = n.to_ascii_lowercase();
                let v = if ["authorization", "cookie", "x-tenant"].contains(&n.as_str()) {
                    "[redacted]".to_string()
                } else {
                    v.to_string()
                };
                (n, v)
            })
            .collect()
    };
    let (sent, got) = (said("> "), said("< "));
    assert!(sent.len() >= 6 && got.len() >= 3, "{verbose}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .unwrap_or_else(|| panic!("no headers: {v}"))
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let one = |comm: &str, role: &str, path: &str| -> &Value {
        let v: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["probe"] == "http" && e["comm"] == comm && e["role"] == role && e["path"] == path
            })
            .collect();
        assert_eq!(v.len(), 1, "{comm} {role} {path}: {out}\n{err}");
        v[0]
    };
    let client = one("curl", "client", "/post?k=?");
    assert_eq!(
        pairs(&client["capture"]["request_headers"]),
        sent,
        "{client}"
    );
    assert_eq!(
        pairs(&client["capture"]["response_headers"]),
        got,
        "{client}"
    );
    assert_eq!(client["capture"]["request_body"], kept_body, "{client}");
    assert_eq!(client["capture"]["response_body"], "posted\n", "{client}");
    let served = one("nginx", "server", "/post?k=?");
    assert_eq!(
        pairs(&served["capture"]["request_headers"]),
        sent,
        "{served}"
    );
    assert_eq!(served["capture"]["request_body"], kept_body, "{served}");
    // nginx's proxy passes the body on (and its own headers).
    let proxied = one("nginx", "client", "/sink?k=?");
    assert_eq!(proxied["capture"]["request_body"], kept_body, "{proxied}");
    assert_eq!(proxied["capture"]["response_body"], "posted\n", "{proxied}");
    assert!(
        !out.contains(SECRET) && !err.contains(SECRET),
        "a credential leaked:\n{out}\n{err}"
    );
}

/// Pod selection: busybox httpd and a wget loop in pod web-*, the same in a
/// pod that is not selected. Only web's requests are reported, both sides,
/// with the pod's identity.
#[test]
fn http_by_pod_reports_that_pods_requests_with_identity() {
    if !is_root() {
        return;
    }
    let s = common::suffix();
    let ns = format!("shop-{s}");
    let serve =
        "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www";
    let fetch = "sleep 1; while true; do wget -q -O /dev/null http://127.0.0.1:8080/index.html; \
                 wget -q -O /dev/null http://127.0.0.1:8080/nope?k=v; sleep 0.2; done";
    let web = common::pod(
        &format!("web-{s}"),
        &ns,
        &[],
        &[("server", serve), ("client", fetch)],
    );
    let _other = common::pod(
        &format!("other-{s}"),
        &ns,
        &[],
        &[("server", serve), ("client", fetch)],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args([
            "trace",
            "http",
            "--pod",
            "web-*",
            "-n",
            &ns,
            "--duration",
            "4s",
            "-o",
            "json",
        ])
        .arg("--runtime-endpoint")
        .arg(common::endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    common::wait_attached(&mut stderr);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["probe"] == "http")
        .collect();
    let pod_name = format!("web-{s}");
    let mut seen = std::collections::BTreeMap::new();
    for e in &events {
        assert_eq!(e["namespace"], ns.as_str(), "{e}");
        assert_eq!(e["pod"], pod_name.as_str(), "only the selected pod: {e}");
        assert_eq!(e["pod_uid"], web.pod.uid.as_str(), "{e}");
        // The client loops: a request in flight when --duration ends is
        // reported with "the trace ended first" (never dropped); any other
        // error is a defect.
        if let Some(err) = e.get("error").and_then(Value::as_str) {
            assert!(err.contains("the trace ended first"), "{e}");
            continue;
        }
        let expect = match (
            e["container"].as_str().unwrap(),
            e["role"].as_str().unwrap(),
        ) {
            ("server", "server") | ("client", "client") => true,
            other => panic!("role {other:?} in the wrong container: {e}"),
        };
        assert!(expect);
        let key = (
            e["role"].as_str().unwrap().to_string(),
            e["path"].as_str().unwrap().to_string(),
            e["status"].as_u64().unwrap(),
        );
        *seen.entry(key).or_insert(0u32) += 1;
    }
    for want in [
        ("client", "/index.html", 200),
        ("server", "/index.html", 200),
        ("client", "/nope?k=?", 404),
        ("server", "/nope?k=?", 404),
    ] {
        let n = seen
            .get(&(want.0.to_string(), want.1.to_string(), want.2))
            .copied()
            .unwrap_or(0);
        assert!(n >= 3, "{want:?} seen {n} times: {seen:?}");
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

/// A forking server (busybox httpd's shape): the parent accepts, forks, and
/// closes its copy of the connection's fd; the child reads the request,
/// answers without a length (the body runs until close), shuts its side and
/// exits without close(). `a`: the child is done and gone before the parent
/// closes its copy, so that close() is the socket's last one and is made by
/// a process that never moved a byte on it. `b`: the parent closes its copy
/// between the child's read of the request and its answer, a close() that is
/// not the socket's last. Prints "req_bytes resp_bytes" per connection.
const FORKING_SERVER_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = atoi(argv[1]), n = atoi(argv[2]);
    char mode = argv[3][0];
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 16)) { perror("listen"); return 1; }
    printf("ready\n");
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        int c = accept(l, 0, 0), up[2], down[2];
        char x;
        if (c < 0 || pipe(up) || pipe(down)) { perror("accept"); return 1; }
        pid_t pid = fork();
        if (pid == 0) {
            char buf[4096];
            int got = 0, r;
            const char *resp = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such page\n";
            close(l);
            while (got < (int)sizeof buf - 1 && (r = read(c, buf + got, sizeof buf - 1 - got)) > 0) {
                got += r;
                buf[got] = 0;
                if (strstr(buf, "\r\n\r\n")) break;
            }
            if (mode == 'b') {
                /* The parent closes its copy now. */
                if (write(up[1], "r", 1) != 1 || read(down[0], &x, 1) != 1) _exit(2);
            }
            int w = write(c, resp, strlen(resp));
            shutdown(c, SHUT_WR);
            printf("%d %d\n", got, w);
            fflush(stdout);
            _exit(0);
        }
        if (mode == 'a') {
            waitpid(pid, 0, 0);
            usleep(100000);
            close(c);
        } else {
            if (read(up[0], &x, 1) != 1) return 1;
            close(c);
            if (write(down[1], "p", 1) != 1) return 1;
            waitpid(pid, 0, 0);
        }
        close(up[0]); close(up[1]); close(down[0]); close(down[1]);
    }
    return 0;
}
"#;

/// A connection is closed when its socket's last reference goes, and the
/// close is the serving process's: a forking server's requests are reported
/// as they end, whichever of parent and child closes last (CI once saw a
/// busybox httpd request reported only when the trace stopped, because the
/// parent's close() of its copy came after the child had exited), and a
/// parent's close() of its copy does not cut the child's request short.
/// The server's own byte counts and curl's are the witnesses.
#[test]
fn a_forking_servers_requests_end_when_its_socket_is_last_closed() {
    if !is_root() {
        return;
    }
    const N: usize = 3;
    let bin = common::compile_c("http-fork", FORKING_SERVER_C, "fsrv");
    let cg = Cgroup::new("http-fork");
    let trace = common::JsonTrace::start(&["http", "--cgroup", cg.0.to_str().unwrap()]);
    let mut witness = Vec::new();
    for mode in ["a", "b"] {
        let port = common::free_port();
        let mut srv = cg
            .command(&[
                bin.to_str().unwrap(),
                &port.to_string(),
                &N.to_string(),
                mode,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(srv.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "ready\n", "the forking server did not start");
        for i in 0..N {
            let url = format!("http://127.0.0.1:{port}/{mode}{i}");
            let out = cg
                .command(&[
                    "/usr/bin/curl",
                    "-s",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download}",
                    &url,
                ])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).to_string();
            assert_eq!(said, "404 13", "curl {url}: {out:?}");
        }
        assert!(srv.wait().unwrap().success(), "the forking server failed");
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        for l in rest.lines() {
            let (req, resp) = l.split_once(' ').expect("req_bytes resp_bytes");
            witness.push((
                mode,
                req.parse::<u64>().unwrap(),
                resp.parse::<u64>().unwrap(),
            ));
        }
    }
    assert_eq!(witness.len(), 2 * N, "the server's account: {witness:?}");
    // Reported while the trace runs: a request whose close was missed would
    // only come out when the trace stops.
    let servers = |evs: &[Value]| requests(evs, "fsrv", "server").len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while servers(&trace.so_far()) < 2 * N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let live = servers(&trace.so_far());
    let (events, stderr) = trace.stop();
    assert_eq!(
        live,
        2 * N,
        "server requests reported within 10 s of their end, before the trace stopped: {stderr}"
    );
    let mut got = requests(&events, "fsrv", "server");
    let mut want: Vec<Row> = witness
        .iter()
        .enumerate()
        .map(|(i, (mode, req, resp))| {
            let path = format!("/{mode}{}", i % N);
            ("GET".to_string(), path, 404, *req, *resp)
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "podscope vs the forking server's own account: {stderr}"
    );
    let clients = requests(&events, "curl", "client");
    assert_eq!(clients.len(), 2 * N, "{clients:?}");
    assert!(clients.iter().all(|c| c.2 == 404), "{clients:?}");
    assert!(
        stderr.contains(&format!(
            "{} requests ({N2} served, {N2} sent), 0 incomplete",
            4 * N,
            N2 = 2 * N
        )),
        "{stderr}"
    );
}
