//! `podscope trace http` / `trace grpc` on HTTP/2 without TLS (h2c), against
//! real servers and clients: nginx's `http2` listener with curl
//! (`--http2-prior-knowledge`) and h2load (several streams per connection),
//! nginx's access log as the independent witness; a Python gRPC server and
//! client (Debian's python3-grpcio, generic handlers) with unary,
//! server-streaming and failing calls, the client's own count as the
//! witness; and a gRPC connection opened before the trace started.
//! Needs root (BPF), nginx, curl, h2load (nghttp2-client) and python3-grpcio
//! (scripts/setup.sh); a missing one fails the test, naming the package.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::Cgroup;
use serde_json::Value;

const NGINX: &str = "/usr/sbin/nginx";
const PYTHON: &str = "/usr/bin/python3";
const SECRET: &str = "H2SECRET77";
const UNKNOWN: &str = "http2 header state unknown";

fn ready(tools: &[(&str, &str)]) -> bool {
    common::root_and_tools(tools)
}

fn grpc_ready() -> bool {
    if !ready(&[(PYTHON, "python3")]) {
        return false;
    }
    let ok = Command::new(PYTHON)
        .args(["-c", "import grpc"])
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "{PYTHON} cannot import grpc: install Debian's python3-grpcio (bash scripts/setup.sh)"
    );
    true
}

/// A loopback address of this test's own (127.0.1.x: others test on
/// 127.0.0.x at the same time) and a free port on it.
fn address(offset: u32) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 0, 1, 2 + ((std::process::id() + offset) % 200) as u8);
    let port = TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SocketAddr::from((ip, port))
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("podscope-h2-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("www")).unwrap();
    d
}

fn wait_listening(addr: SocketAddr, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what} did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    certs: PathBuf,
    addr: SocketAddr,
    tls_addr: SocketAddr,
}

impl Nginx {
    /// nginx with an h2c (prior knowledge) listener, and a plain HTTP/1
    /// one behind /post so the POST body is read whole.
    /// `tag` names its directory: the tests of this file run at once.
    fn start(cg: &Cgroup, tag: &str) -> Nginx {
        let dir = scratch(&format!("nginx-{tag}"));
        std::fs::write(dir.join("www/index.html"), "hello\n").unwrap();
        // Two DATA frames (nginx sends 8 KiB ones) that still fit in one
        // 16 KiB capture: a read holding more frames than its capture loses
        // the frame headers past it (see docs/probes.md, "HTTP/2").
        let big: String = (0..12_000)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        std::fs::write(dir.join("www/big.txt"), big).unwrap();
        let addr = address(0);
        let back = address(0);
        let tls_addr = address(0);
        let certs = common::make_certs("h2");
        let (ip, port, bport, tport) = (addr.ip(), addr.port(), back.port(), tls_addr.port());
        let d = dir.display();
        let c = certs.display();
        let conf = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  log_format witness '$request_method $request_uri $status $server_protocol';
  access_log {d}/access.log witness;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  sendfile on;
  server {{
    listen {ip}:{port} http2;
    root {d}/www;
    location /post {{ proxy_pass http://{ip}:{bport}/sink; }}
    location /cookie {{ add_header Set-Cookie "sid={SECRET}"; return 200 "ok\n"; }}
  }}
  server {{
    listen {ip}:{bport};
    location /sink {{ return 200 "posted\n"; }}
  }}
  server {{
    listen {ip}:{tport} ssl http2;
    ssl_certificate {c}/hub.pem;
    ssl_certificate_key {c}/hub.key;
    root {d}/www;
    location /post {{ proxy_pass http://{ip}:{bport}/sink; }}
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
        wait_listening(addr, "nginx");
        wait_listening(tls_addr, "nginx (TLS)");
        Nginx {
            child,
            dir,
            certs,
            addr,
            tls_addr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The same files over TLS (h2 by ALPN; the certificate is for
    /// 127.0.0.1, so clients skip the name check).
    fn tls_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.tls_addr)
    }

    /// The HTTP/2 requests in the access log: (method, uri redacted, status).
    fn h2_log(&self) -> Vec<(String, String, u16)> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with(" HTTP/2.0"))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 4, "access log line {l:?}");
                (
                    f[0].to_string(),
                    podscope_proto::redact_query(f[1]),
                    f[2].parse().unwrap(),
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
        let _ = std::fs::remove_dir_all(&self.certs);
    }
}

/// `podscope trace PROBES --cgroup CG -o json --http-capture-bytes 16K`.
struct Trace {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Trace {
    fn start(cg: &Cgroup, probes: &str) -> Trace {
        Trace::start_with(cg, probes, &[])
    }

    fn start_with(cg: &Cgroup, probes: &str, extra: &[&str]) -> Trace {
        let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
            .args(["trace", probes, "--cgroup"])
            .arg(&cg.0)
            .args(["-o", "json", "--http-capture-bytes", "16K"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let seen = common::wait_attached(&mut stderr);
        assert!(!seen.contains("warning"), "{seen}");
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

    /// Stops it (SIGINT) and returns (events, stderr).
    fn stop(mut self) -> (Vec<Value>, String) {
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
        assert!(!out.contains(SECRET), "a credential leaked: {out}");
        assert!(!err.contains(SECRET), "a credential leaked: {err}");
        let events = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (events, err)
    }
}

fn run(cg: &Cgroup, args: &[&str]) -> String {
    let out = cg.command(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn h2_requests(events: &[Value], comm: &str, role: &str) -> Vec<(String, String, u16)> {
    events
        .iter()
        .filter(|e| {
            e["probe"] == "http"
                && e["comm"] == comm
                && e["role"] == role
                && e["version"] == "HTTP/2"
        })
        .map(|e| {
            assert_eq!(e["kind"], "request", "{e}");
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap_or(0) as u16,
            )
        })
        .collect()
}

/// Every HTTP/2 request event that is incomplete or truncated.
fn h2_defects(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["probe"] == "http" && e["version"] == "HTTP/2")
        .filter(|e| e.get("error").is_some() || e.get("truncated").is_some())
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e["comm"], e["role"], e["path"], e["error"], e["response_bytes"]
            )
        })
        .collect()
}

/// HTTP/2 inside TLS (ALPN h2): `trace http` brings the tls probe along,
/// whose plaintext is sniffed as HTTP/2 and parsed like h2c; nginx's access
/// log is the witness on both sides.
#[test]
fn h2_over_tls_agrees_exactly_with_nginx_access_log_on_both_sides() {
    if !ready(&[
        (NGINX, "nginx"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/h2load", "nghttp2-client"),
        ("/usr/bin/openssl", "openssl"),
    ]) {
        return;
    }
    let cg = Cgroup::new("h2tls");
    let nginx = Nginx::start(&cg, "tls");
    let trace = Trace::start(&cg, "http");
    for url in [
        nginx.tls_url("/index.html"),
        nginx.tls_url("/missing?token=abc"),
        nginx.tls_url("/big.txt"),
    ] {
        run(
            &cg,
            &[
                "/usr/bin/curl",
                "-sk",
                "--http2",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                &url,
            ],
        );
    }
    let h2load = run(
        &cg,
        &[
            "/usr/bin/h2load",
            "-n",
            "20",
            "-c",
            "2",
            "-m",
            "5",
            &nginx.tls_url("/index.html"),
            &nginx.tls_url("/missing?q=1"),
        ],
    );
    assert!(h2load.contains("20 done"), "{h2load}");
    let (events, err) = trace.stop();
    let defects = h2_defects(&events);
    assert!(defects.is_empty(), "{defects:#?}\n{err}");
    let mut witness = nginx.h2_log();
    assert_eq!(witness.len(), 3 + 20, "nginx logged {witness:?}");
    let mut server = h2_requests(&events, "nginx", "server");
    let mut clients = h2_requests(&events, "curl", "client");
    clients.extend(h2_requests(&events, "h2load", "client"));
    eprintln!(
        "nginx access log: {} HTTP/2 requests over TLS; podscope: {} served, {} sent",
        witness.len(),
        server.len(),
        clients.len()
    );
    witness.sort();
    server.sort();
    clients.sort();
    assert_eq!(server, witness, "served by nginx vs its access log\n{err}");
    assert_eq!(
        clients, witness,
        "sent by curl/h2load vs nginx's log\n{err}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e["kind"] == "request")
            .all(|e| e["tls"] == true && e["version"] == "HTTP/2"),
        "every request came through the tls probe as HTTP/2"
    );
}

/// `--capture-headers` on HTTP/2 (HPACK-decoded): the regular header fields
/// kept for curl's request and nginx's response are exactly those `curl -v`
/// says it sent and got (its `Host` line is HTTP/2's `:authority`, a
/// pseudo-header, reported as `host`), on both ends; credentials never.
#[test]
fn h2c_captured_headers_agree_with_curls_own_account() {
    if !ready(&[(NGINX, "nginx"), ("/usr/bin/curl", "curl")]) {
        return;
    }
    let cg = Cgroup::new("h2hdr");
    let nginx = Nginx::start(&cg, "h2hdr");
    let trace = Trace::start_with(
        &cg,
        "http",
        &["--capture-headers", "--redact-header", "x-tenant"],
    );
    let (auth, tenant) = (
        format!("Authorization: Bearer {SECRET}"),
        format!("X-Tenant: {SECRET}"),
    );
    let url = nginx.url("/index.html");
    let out = cg
        .command(&[
            "/usr/bin/curl",
            "-s",
            "-v",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-H",
            &auth,
            "-H",
            &tenant,
            "-H",
            "X-Order: 42",
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let verbose = String::from_utf8_lossy(&out.stderr).to_string();
    let (events, err) = trace.stop();
    let said = |mark: &str| -> Vec<(String, String)> {
        verbose
            .lines()
            .filter_map(|l| l.strip_prefix(mark))
            .filter_map(|l| l.trim_end().split_once(": "))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .filter(|(n, _)| n != "host")
            .map(|(n, v)| {
                let v = if n == "authorization" || n == "x-tenant" {
                    "[redacted]".to_string()
                } else {
                    v
                };
                (n, v)
            })
            .collect()
    };
    let (sent, got) = (said("> "), said("< "));
    assert!(
        sent.iter().any(|(n, v)| n == "x-order" && v == "42"),
        "{verbose}"
    );
    assert!(got.iter().any(|(n, _)| n == "content-length"), "{verbose}");
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .unwrap_or_else(|| panic!("no headers: {v}"))
            .iter()
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
            .collect()
    };
    for (comm, role) in [("curl", "client"), ("nginx", "server")] {
        let e: Vec<&Value> = events
            .iter()
            .filter(|e| e["probe"] == "http" && e["comm"] == comm && e["role"] == role)
            .collect();
        assert_eq!(e.len(), 1, "{comm}: {events:?}\n{err}");
        assert_eq!(e[0]["version"], "HTTP/2", "{}", e[0]);
        assert_eq!(
            pairs(&e[0]["capture"]["request_headers"]),
            sent,
            "{comm}: {}",
            e[0]
        );
        assert_eq!(
            pairs(&e[0]["capture"]["response_headers"]),
            got,
            "{comm}: {}",
            e[0]
        );
    }
}

/// `--capture-body` on HTTP/2 (DATA frames): a form POSTed by curl
/// (`--http2-prior-knowledge`, then h2 over TLS: the tls probe's plaintext)
/// through nginx's proxy location is kept on both ends exactly as curl sent
/// it (`--trace-ascii`'s own account of the bytes), its password redacted,
/// and the answer exactly as curl wrote it to its output file; the proxied
/// HTTP/1 requests nginx makes carry the same redacted body.
#[test]
fn h2c_captured_bodies_agree_with_what_curl_sent_and_got() {
    if !ready(&[
        (NGINX, "nginx"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/openssl", "openssl"),
    ]) {
        return;
    }
    let cg = Cgroup::new("h2body");
    let nginx = Nginx::start(&cg, "h2body");
    let trace = Trace::start_with(&cg, "http", &["--capture-body", "256"]);
    let form = format!("user=ann&password={SECRET}&n=1");
    let dir = scratch("body");
    // h2c with prior knowledge, then h2 over TLS (the tls probe's plaintext).
    let mut answers = Vec::new();
    for (tls, url) in [(false, nginx.url("/post")), (true, nginx.tls_url("/post"))] {
        let (got, ascii) = (
            dir.join(format!("got-{tls}")),
            dir.join(format!("trace-{tls}")),
        );
        let how = if tls {
            "--http2"
        } else {
            "--http2-prior-knowledge"
        };
        run(
            &cg,
            &[
                "/usr/bin/curl",
                "-sk",
                "--max-time",
                "10",
                how,
                "--trace-ascii",
                ascii.to_str().unwrap(),
                "-o",
                got.to_str().unwrap(),
                "--data",
                &form,
                &url,
            ],
        );
        // curl's own account: the form went out as one DATA frame's bytes.
        let sent = std::fs::read_to_string(&ascii).unwrap();
        assert!(sent.contains(&form), "curl --trace-ascii: {sent}");
        answers.push((tls, std::fs::read_to_string(&got).unwrap()));
    }
    let (events, err) = trace.stop();
    let redacted = "user=ann&password=[redacted]&n=1";
    let body = |e: &Value, which: &str| e["capture"][which].as_str().map(str::to_string);
    for (tls, answer) in &answers {
        assert_eq!(answer, "posted\n");
        for (comm, role) in [("curl", "client"), ("nginx", "server")] {
            let e: Vec<&Value> = events
                .iter()
                .filter(|e| e["probe"] == "http" && e["comm"] == comm && e["role"] == role)
                .filter(|e| e["version"] == "HTTP/2" && (e["tls"] == true) == *tls)
                .collect();
            assert_eq!(e.len(), 1, "{comm} tls={tls}: {events:?}\n{err}");
            assert_eq!(e[0]["method"], "POST", "{}", e[0]);
            assert_eq!(e[0]["status"], 200, "{}", e[0]);
            assert_eq!(
                body(e[0], "request_body").as_deref(),
                Some(redacted),
                "{comm}: {}",
                e[0]
            );
            assert_eq!(
                body(e[0], "response_body").as_deref(),
                Some(answer.as_str()),
                "{comm}: {}",
                e[0]
            );
        }
    }
    let proxied: Vec<&Value> = events
        .iter()
        .filter(|e| e["probe"] == "http" && e["comm"] == "nginx" && e["role"] == "client")
        .collect();
    assert_eq!(proxied.len(), 2, "{events:?}");
    for p in proxied {
        assert_eq!(p["path"], "/sink", "{p}");
        assert_eq!(body(p, "request_body").as_deref(), Some(redacted), "{p}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn h2c_requests_agree_exactly_with_nginx_access_log_on_both_sides() {
    if !ready(&[
        (NGINX, "nginx"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/h2load", "nghttp2-client"),
    ]) {
        return;
    }
    let cg = Cgroup::new("h2c");
    let nginx = Nginx::start(&cg, "h2c");
    let trace = Trace::start(&cg, "http");

    // curl: three requests (a 404 and a file longer than one DATA frame
    // among them), a HEAD, a POST with a body and a request with credentials.
    let curl = |args: &[&str]| {
        let mut all = vec![
            "/usr/bin/curl",
            "-s",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
        ];
        all.extend_from_slice(args);
        run(&cg, &all);
    };
    let (a, b, c) = (
        nginx.url("/index.html"),
        nginx.url("/big.txt"),
        nginx.url("/missing?token=abc&x"),
    );
    // One URL per curl: curl 7.88 (Debian 12) fails (exit 16) reusing a
    // prior-knowledge connection for a second URL; h2load below puts many
    // streams on one connection.
    for url in [&a, &b, &c] {
        curl(&["-o", "/dev/null", url]);
    }
    curl(&["-I", "-o", "/dev/null", &a]);
    curl(&[
        "-o",
        "/dev/null",
        "-d",
        "name=value&other=1",
        &nginx.url("/post?k=v"),
    ]);
    curl(&[
        "-o",
        "/dev/null",
        "-H",
        &format!("Authorization: Bearer {SECRET}"),
        "-b",
        &format!("session={SECRET}"),
        &nginx.url("/cookie"),
    ]);
    // h2load: 2 connections, up to 10 concurrent streams each, 3 paths;
    // every request with the same traceparent (HPACK-indexed after the first).
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let h2load = run(
        &cg,
        &[
            "/usr/bin/h2load",
            "-n",
            "60",
            "-c",
            "2",
            "-m",
            "10",
            "-H",
            &format!("traceparent: {tp}"),
            &nginx.url("/index.html"),
            &nginx.url("/missing?q=1"),
            &nginx.url("/big.txt"),
        ],
    );
    // (h2load counts the 404s as "failed": they are answered requests.)
    assert!(
        h2load.contains("60 done") && h2load.contains("40 2xx, 0 3xx, 20 4xx"),
        "h2load did not finish its 60 requests: {h2load}"
    );

    let (events, err) = trace.stop();
    let defects = h2_defects(&events);
    assert!(
        defects.is_empty(),
        "{} incomplete or truncated:\n{}\n{err}",
        defects.len(),
        defects.join("\n")
    );
    let mut witness = nginx.h2_log();
    assert_eq!(witness.len(), 6 + 60, "nginx logged {witness:?}");
    let mut server = h2_requests(&events, "nginx", "server");
    let mut clients = h2_requests(&events, "curl", "client");
    clients.extend(h2_requests(&events, "h2load", "client"));
    eprintln!(
        "nginx access log: {} HTTP/2 requests; podscope: {} served by nginx, {} sent by curl and h2load",
        witness.len(),
        server.len(),
        clients.len()
    );
    witness.sort();
    server.sort();
    clients.sort();
    assert_eq!(server, witness, "served by nginx vs its access log\n{err}");
    assert_eq!(
        clients, witness,
        "sent by curl/h2load vs nginx's access log\n{err}"
    );
    // The trace context h2load sent, on each of its 60 requests at both
    // ends, and on nothing else.
    for (comm, role) in [
        ("nginx", "server"),
        ("h2load", "client"),
        ("curl", "client"),
    ] {
        let with: Vec<&Value> = events
            .iter()
            .filter(|e| e["probe"] == "http" && e["comm"] == comm && e["role"] == role)
            .filter(|e| e.get("trace_context").is_some())
            .collect();
        let want = if comm == "curl" { 0 } else { 60 };
        assert_eq!(with.len(), want, "{comm} {role}: {with:?}");
        for e in with {
            let c = &e["trace_context"];
            assert_eq!(
                (&c["format"], &c["trace_id"], &c["span_id"], &c["sampled"]),
                (
                    &Value::from("w3c"),
                    &Value::from("0af7651916cd43dd8448eb211c80319c"),
                    &Value::from("b7ad6b7169203331"),
                    &Value::from(true)
                ),
                "{e}"
            );
        }
    }
    assert!(
        err.contains("trace context: 120 requests carried one, 0 invalid ones ignored"),
        "{err}"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert!(
        err.contains("with the header state unknown; parse errors: 0 preface, 0 hpack, 0 padding, 0 block too long, 0 continuation"),
        "{err}"
    );
    assert!(
        err.contains("132 requests (0 gRPC calls), 0 with the header state unknown"),
        "{err}"
    );
    assert!(
        err.contains("0 incomplete, 0 with truncated heads, 0 parse errors, 0 bytes not parsed"),
        "{err}"
    );
}

/// demo.Echo (Say, Stream, Missing), shared with scripts/record-corpus.sh.
const GRPC_SERVER: &str = include_str!("grpc_echo_server.py");

/// Calls per line on stdin: `say N`, `stream N`, `missing N`; prints `ok`
/// after each line, so calls before and after the trace starts share one
/// connection.
const GRPC_CLIENT: &str = r#"
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
ident = lambda b: b
say = ch.unary_unary("/demo.Echo/Say", request_serializer=ident, response_deserializer=ident)
stream = ch.unary_stream("/demo.Echo/Stream", request_serializer=ident, response_deserializer=ident)
missing = ch.unary_unary("/demo.Echo/Missing", request_serializer=ident, response_deserializer=ident)
for line in sys.stdin:
    what, n = line.split()
    for _ in range(int(n)):
        if what == "say":
            assert say(b"hi", timeout=10) == b"hi"
        elif what == "stream":
            assert len(list(stream(b"s", timeout=10))) == 3
        else:
            try:
                missing(b"k1", timeout=10)
                raise SystemExit("Missing succeeded")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND, e
                assert e.details() == "no such key: k1", e
    print("ok", flush=True)
"#;

struct Grpc {
    server: Child,
    client: Child,
    client_out: BufReader<ChildStdout>,
    dir: PathBuf,
}

/// Which gRPC implementation a side of a test runs.
#[derive(Clone, Copy, PartialEq, Debug)]
enum GrpcImpl {
    /// grpcio (C-core): tests/grpc_echo_server.py, and GRPC_CLIENT.
    Python,
    /// grpc-go: tests/grpc_echo_server.go (server, and `client`).
    Go,
    /// grpc-go over TLS (Go's crypto/tls, a certificate made here).
    GoTls,
}

use common::GO;
/// Debian's golang-google-grpc-dev, for GOPATH mode.
const GOPATH: &str = "/usr/share/gocode";

/// Builds tests/grpc_echo_server.go (server and client; GOPATH mode, offline: Debian's Go
/// packages; Go's build cache in the temp dir keeps later builds short).
fn go_echo_server(dir: &Path) -> PathBuf {
    for (path, pkg) in [
        (GO.to_string(), "golang-go"),
        (
            format!("{GOPATH}/src/google.golang.org/grpc"),
            "golang-google-grpc-dev",
        ),
    ] {
        assert!(
            Path::new(&path).exists(),
            "{path} is missing: install Debian's {pkg} (bash scripts/setup.sh)"
        );
    }
    common::go_build(dir, GO_SERVER, "grpc-echo", Some(GOPATH), false)
}

const GO_SERVER: &str = include_str!("grpc_echo_server.go");

impl Grpc {
    fn start(cg: &Cgroup, tag: &str) -> Grpc {
        Grpc::start_with(cg, tag, GrpcImpl::Python, GrpcImpl::Python)
    }

    fn start_with(cg: &Cgroup, tag: &str, server: GrpcImpl, client: GrpcImpl) -> Grpc {
        let dir = scratch(tag);
        std::fs::write(dir.join("server.py"), GRPC_SERVER).unwrap();
        std::fs::write(dir.join("client.py"), GRPC_CLIENT).unwrap();
        let addr = address(7).to_string();
        let go = if server != GrpcImpl::Python || client != GrpcImpl::Python {
            go_echo_server(&dir).display().to_string()
        } else {
            String::new()
        };
        let (cert, key) = if server == GrpcImpl::GoTls {
            common::self_signed(&dir)
        } else {
            Default::default()
        };
        let (server_py, client_py) = (dir.join("server.py"), dir.join("client.py"));
        let mut args: Vec<&str> = match server {
            GrpcImpl::Python => vec![PYTHON, server_py.to_str().unwrap()],
            GrpcImpl::Go | GrpcImpl::GoTls => vec![&go],
        };
        args.push(&addr);
        let mut cmd = cg.command(&args);
        if server == GrpcImpl::GoTls {
            cmd.env("GRPC_TLS_CERT", &cert).env("GRPC_TLS_KEY", &key);
        }
        let mut server = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the gRPC server did not start");
        let args: Vec<&str> = match client {
            GrpcImpl::Python => vec![PYTHON, client_py.to_str().unwrap(), &addr],
            GrpcImpl::Go | GrpcImpl::GoTls => vec![&go, "client", &addr],
        };
        let mut client = cg
            .command(&args)
            .env(
                "GRPC_TLS",
                if client == GrpcImpl::GoTls { "1" } else { "0" },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let client_out = BufReader::new(client.stdout.take().unwrap());
        Grpc {
            server,
            client,
            client_out,
            dir,
        }
    }

    /// Makes the calls and waits for the client to have made them all.
    fn calls(&mut self, what: &str, n: u32) {
        let stdin = self.client.stdin.as_mut().unwrap();
        writeln!(stdin, "{what} {n}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.client_out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "the gRPC client failed its {what} calls");
    }

    /// Ends the client (closing its connection) and the server.
    fn stop(&mut self) {
        drop(self.client.stdin.take());
        let status = self.client.wait().unwrap();
        assert!(status.success(), "the gRPC client failed");
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Drop for Grpc {
    fn drop(&mut self) {
        let _ = self.client.kill();
        let _ = self.client.wait();
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Call = (String, String, Option<u64>, Option<String>);

fn calls(events: &[Value], role: &str) -> Vec<Call> {
    let mut v: Vec<Call> = events
        .iter()
        .filter(|e| e["probe"] == "http" && e["kind"] == "request" && e["role"] == role)
        .map(|e| {
            let rpc = &e["rpc"];
            assert_eq!(rpc["system"], "grpc", "not a gRPC call: {e}");
            assert_eq!(e["version"], "HTTP/2", "{e}");
            assert_eq!(e["status"], 200, "{e}");
            (
                rpc["service"].as_str().unwrap_or("").to_string(),
                rpc["method"].as_str().unwrap_or("").to_string(),
                rpc["status"].as_u64(),
                rpc["message"].as_str().map(str::to_string),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn grpc_unary_streaming_and_failing_calls_exact_on_both_sides() {
    grpc_calls_exact_on_both_sides(GrpcImpl::Python, GrpcImpl::Python);
}

/// The same calls from the Python client to a Go server (grpc-go: its own
/// HTTP/2 and HPACK, Huffman-coded headers, trailers in their own frame).
#[test]
fn grpc_go_server_calls_exact_on_both_sides() {
    grpc_calls_exact_on_both_sides(GrpcImpl::Go, GrpcImpl::Python);
}

/// And from a Go client (grpc-go's client encoder) to the Python server.
#[test]
fn grpc_go_client_calls_exact_on_both_sides() {
    grpc_calls_exact_on_both_sides(GrpcImpl::Python, GrpcImpl::Go);
}

/// grpc-go on both sides over TLS: the calls come from the plaintext of Go's
/// crypto/tls (the tls probe's Go hooks), HTTP/2 inside it.
#[test]
fn grpc_go_over_tls_calls_exact_on_both_sides() {
    grpc_calls_exact_on_both_sides(GrpcImpl::GoTls, GrpcImpl::GoTls);
}

fn grpc_calls_exact_on_both_sides(server_impl: GrpcImpl, client_impl: GrpcImpl) {
    if !grpc_ready() {
        return;
    }
    let tag = format!("grpc-{server_impl:?}-{client_impl:?}").to_lowercase();
    let tag = tag.as_str();
    let cg = Cgroup::new(tag);
    let metrics = address(9);
    let mut rx = common::otlp::GrpcReceiver::start(address(10));
    // Go over TLS: the programs run before the trace, so its first scan
    // attaches their executable (one file, both sides) before the client
    // connects (at its first call); one started after the trace is attached
    // some milliseconds after its exec, and a connection made in between is
    // not seen from its start (HTTP/2 then cannot be parsed).
    let mut early = (server_impl == GrpcImpl::GoTls)
        .then(|| Grpc::start_with(&cg, tag, server_impl, client_impl));
    let trace = Trace::start_with(
        &cg,
        "grpc",
        &[
            "--metrics-listen",
            &metrics.to_string(),
            "--capture-body",
            "64",
            "--otlp-endpoint",
            &rx.url(),
            "--otlp-protocol",
            "grpc",
            "--spans",
            "requests",
        ],
    );
    let mut g = early
        .take()
        .unwrap_or_else(|| Grpc::start_with(&cg, tag, server_impl, client_impl));
    g.calls("say", 3);
    g.calls("stream", 2);
    g.calls("missing", 2);
    g.stop();
    // The exporter's series: per service, method and status, both sides.
    let scrape = || {
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let sample = |text: &str, name: &str, needles: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let mut text = scrape();
    let t = std::time::Instant::now();
    while sample(&text, "podscope_grpc_client_calls_total", &[]) < 7.0
        && t.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        text = scrape();
    }
    for side in ["server", "client"] {
        let name = format!("podscope_grpc_{side}_calls_total");
        for (method, status, n) in [
            ("Say", "OK", 3.0),
            ("Stream", "OK", 2.0),
            ("Missing", "NOT_FOUND", 2.0),
        ] {
            let labels = [
                "service=\"demo.Echo\"".to_string(),
                format!("method=\"{method}\""),
                format!("grpc_status=\"{status}\""),
            ];
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            assert_eq!(sample(&text, &name, &labels), n, "{side} {method}:\n{text}");
        }
        assert_eq!(sample(&text, &name, &[]), 7.0, "{text}");
        assert_eq!(
            sample(
                &text,
                &format!("podscope_grpc_{side}_call_duration_seconds_count"),
                &[]
            ),
            7.0
        );
    }
    let (events, err) = trace.stop();
    let req: Vec<&Value> = events.iter().filter(|e| e["kind"] == "request").collect();
    for e in &req {
        assert!(e.get("error").is_none(), "incomplete call: {e}\n{err}");
    }
    let want = |svc: &str, m: &str, st: u64, msg: Option<&str>, n: usize| {
        vec![
            (
                svc.to_string(),
                m.to_string(),
                Some(st),
                msg.map(str::to_string)
            );
            n
        ]
    };
    let mut expected = want("demo.Echo", "Missing", 5, Some("no such key: k1"), 2);
    expected.extend(want("demo.Echo", "Say", 0, None, 3));
    expected.extend(want("demo.Echo", "Stream", 0, None, 2));
    expected.sort();
    let server = calls(&events, "server");
    let client = calls(&events, "client");
    eprintln!(
        "gRPC client made 7 calls; podscope: {} served, {} sent",
        server.len(),
        client.len()
    );
    assert_eq!(
        server, expected,
        "served by the {server_impl:?} server\n{err}"
    );
    assert_eq!(
        client, expected,
        "sent by the {client_impl:?} client\n{err}"
    );
    assert!(
        err.contains("14 requests (14 gRPC calls), 0 with the header state unknown"),
        "{err}"
    );
    // Both ends name each call by its stream's id: one call per
    // (connection, stream) on each side, the same calls, odd ids (the
    // client's).
    let mut ends: std::collections::BTreeMap<(String, u64), Vec<String>> = Default::default();
    for e in &req {
        let id = e["stream_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no stream_id: {e}"));
        assert_eq!(id % 2, 1, "a client-initiated stream's id is odd: {e}");
        // A dual-stack socket's IPv4 addresses come as ::ffff:a.b.c.d.
        let end = |a: &str, p: &str| {
            let ip = e[a].as_str().unwrap();
            format!("{}:{}", ip.strip_prefix("::ffff:").unwrap_or(ip), e[p])
        };
        let (local, peer) = (end("saddr", "sport"), end("daddr", "dport"));
        let conn = if e["role"] == "server" {
            format!("{peer}-{local}")
        } else {
            format!("{local}-{peer}")
        };
        ends.entry((conn, id)).or_default().push(format!(
            "{} {}",
            e["role"].as_str().unwrap(),
            e["rpc"]["method"].as_str().unwrap()
        ));
    }
    assert_eq!(ends.len(), 7, "{ends:#?}");
    for (k, v) in &ends {
        let mut v = v.clone();
        v.sort();
        let method = v[0].split_once(' ').unwrap().1;
        assert_eq!(
            v,
            [format!("client {method}"), format!("server {method}")],
            "{k:?}: one call at each end"
        );
    }
    // So each SERVER span is parented to its CLIENT span (`hop`).
    let spans = rx.store.spans();
    rx.stop();
    let kind = |g: &common::otlp::Got| g.span.kind;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let clients: std::collections::HashMap<Vec<u8>, &common::otlp::Got> = spans
        .iter()
        .filter(|g| kind(g) == SpanKind::Client as i32)
        .map(|g| (g.span.span_id.clone(), g))
        .collect();
    let servers: Vec<&common::otlp::Got> = spans
        .iter()
        .filter(|g| kind(g) == SpanKind::Server as i32)
        .collect();
    assert_eq!((clients.len(), servers.len()), (7, 7), "{spans:#?}");
    for s in &servers {
        assert_eq!(s.attrs["podscope.trace.parent"], "hop", "{s:#?}\n{err}");
        let c = clients
            .get(&s.span.parent_span_id)
            .unwrap_or_else(|| panic!("{s:#?}: its parent is no CLIENT span"));
        assert_eq!(c.span.trace_id, s.span.trace_id);
        assert_eq!(c.attrs["rpc.method"], s.attrs["rpc.method"], "{s:#?}");
    }
    // --capture-body: each call's messages as the client script sent and
    // got them, in gRPC's framing (a 0 compression flag, a 4-byte length):
    // Say echoes b"hi", Stream answers b"s" with three messages, Missing
    // answers with trailers only (no DATA).
    let framed = |msgs: &[&[u8]]| -> String {
        let mut b = Vec::new();
        for m in msgs {
            b.push(0u8);
            b.extend_from_slice(&(m.len() as u32).to_be_bytes());
            b.extend_from_slice(m);
        }
        String::from_utf8(b).unwrap()
    };
    for e in &req {
        let body = |which: &str| e["capture"][which].as_str().map(str::to_string);
        let (sent, got) = match e["rpc"]["method"].as_str().unwrap() {
            "Say" => (framed(&[b"hi"]), Some(framed(&[b"hi"]))),
            "Stream" => (
                framed(&[b"s"]),
                Some(framed(&[b"s\x00", b"s\x01", b"s\x02"])),
            ),
            _ => (framed(&[b"k1"]), None),
        };
        assert_eq!(body("request_body"), Some(sent), "{e}");
        assert_eq!(body("response_body"), got, "{e}");
    }
}

#[test]
fn a_grpc_connection_opened_before_the_trace_reports_header_state_unknown() {
    if !grpc_ready() {
        return;
    }
    let cg = Cgroup::new("grpc-late");
    let mut g = Grpc::start(&cg, "grpc-late");
    // The connection opens and its HPACK tables fill before the trace.
    g.calls("say", 2);
    let trace = Trace::start(&cg, "http");
    g.calls("say", 3);
    g.stop();
    let (events, err) = trace.stop();
    for role in ["server", "client"] {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["probe"] == "http" && e["kind"] == "request" && e["role"] == role)
            .collect();
        eprintln!("{role}: {} requests reported: {mine:?}", mine.len());
        assert_eq!(mine.len(), 3, "{role}: {mine:?}\n{err}");
        for e in mine {
            assert_eq!(e["version"], "HTTP/2", "{e}");
            let why = e["error"].as_str().unwrap_or("");
            assert!(why.contains(UNKNOWN), "{role}: no header-state reason: {e}");
            assert_eq!(e["truncated"], true, "{e}");
        }
    }
}
