//! `podscope trace --otlp...` against real OTLP receivers running inside the
//! test: an OTLP/gRPC server built from the official protocol definitions
//! (`opentelemetry-proto`'s generated TraceService/LogsService servers on
//! tonic) and a small OTLP/HTTP server decoding the same protobuf messages,
//! with real containerd CRI pods (testbed/podbed.sh) making the connections.
//! The pod tests need root and PODBED_SOCKET; without them they fail and say
//! how to start the test bed.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::otlp::{attrs, value, Got, GotLog, GrpcReceiver, Store};
use common::{endpoint, free_port, run_pod, suffix, wait_for, PodGuard, Traced, IMAGE};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use prost::Message;

// ---------------------------------------------------------------- test bed

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

impl PodGuard {
    /// Creates /tmp/go<phase> in the client, waits for /tmp/done<phase>.
    fn run_phase(&self, phase: u32) {
        std::fs::write(self.path_in("client", &format!("/tmp/go{phase}")), "").unwrap();
        let done = self.path_in("client", &format!("/tmp/done{phase}"));
        wait_for(
            &format!("the client's phase {phase}"),
            Duration::from_secs(60),
            || done.is_dir(),
        );
    }
}

/// A pod with a server container (busybox nc accepting on 7000) and a client
/// container that, for each phase, waits for /tmp/goN (a stat, no exec of
/// note), makes exactly the phase's number of connections to the server over
/// the pod's loopback, and says it is done with mkdir /tmp/doneN.
fn connection_pod(ns: &str, phases: &[usize]) -> PodGuard {
    let mut client = String::new();
    for (i, n) in phases.iter().enumerate() {
        let p = i + 1;
        client.push_str(&format!(
            "while [ ! -e /tmp/go{p} ]; do sleep 0.2; done; \
             i=0; while [ $i -lt {n} ]; do nc 127.0.0.1 7000; i=$((i+1)); done; mkdir /tmp/done{p}; "
        ));
    }
    client.push_str("sleep 3600");
    let spec = PodSpec::new("busy", ns).unwrap();
    let cs = vec![
        ContainerSpec::new("server", IMAGE, &["sh", "-c", "nc -ll -p 7000 -e true"]),
        ContainerSpec::new("client", IMAGE, &["sh", "-c", &client]),
    ];
    run_pod(&spec, &cs)
}

// --------------------------------------------------------------- podscope

/// `podscope trace ... -o none` with OTLP flags; stopped with SIGINT so it
/// flushes and prints its OTLP report.
type Podscope = Traced;

fn start_podscope(args: &[&str], env: &[(&str, &str)]) -> Podscope {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podscope"));
    cmd.arg("trace")
        .args(args)
        .args(["--runtime-endpoint", &endpoint(), "-o", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The test's own environment must not redirect the export.
    for k in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_SERVICE_NAME",
    ] {
        if !env.iter().any(|(e, _)| *e == k) {
            cmd.env_remove(k);
        }
    }
    let t = Traced::spawn(cmd);
    let all = t.stderr_so_far();
    assert!(all.contains("podscope: exporting OTLP spans to"), "{all}");
    t
}

/// The exit report's counts for `spans` or `logs`:
/// (produced, exported, failed, dropped, failed requests).
fn report(stderr: &str, what: &str) -> (u64, u64, u64, u64, u64) {
    let prefix = format!("podscope: OTLP {what}: ");
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line in:\n{stderr}"));
    let nums: Vec<u64> = line[prefix.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 6, "{line}");
    (nums[0], nums[1], nums[2], nums[3], nums[5])
}

// ------------------------------------------------------------- receivers

/// A minimal OTLP/HTTP receiver: HTTP/1.1 with keep-alive, POST /v1/traces
/// and /v1/logs with protobuf bodies decoded as the official messages.
struct HttpReceiver {
    addr: SocketAddr,
    store: Arc<Store>,
    content_types: Arc<Mutex<BTreeSet<String>>>,
}

impl HttpReceiver {
    fn start() -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Store::default());
        let content_types = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, c) = (store.clone(), content_types.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (s, c) = (s.clone(), c.clone());
                std::thread::spawn(move || http_connection(conn, &s, &c));
            }
        });
        HttpReceiver {
            addr,
            store,
            content_types,
        }
    }
}

fn http_connection(conn: TcpStream, store: &Store, types: &Mutex<BTreeSet<String>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let mut request_line = String::new();
        if r.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if let Some(ct) = headers.get("content-type") {
            types.lock().unwrap().insert(ct.clone());
        }
        let status = match path.as_str() {
            "/v1/traces" => {
                let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                store.traces.lock().unwrap().push((headers, req));
                "200 OK"
            }
            "/v1/logs" => {
                let req = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
                store.logs.lock().unwrap().push((headers, req));
                "200 OK"
            }
            _ => "404 Not Found",
        };
        let _ = write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        );
    }
}

// ----------------------------------------------------------------- checks

fn in_pod<'a>(spans: &'a [Got], ns: &str, container: &str, kind: SpanKind) -> Vec<&'a Got> {
    spans
        .iter()
        .filter(|g| {
            g.resource.get("k8s.namespace.name").map(String::as_str) == Some(ns)
                && g.resource.get("k8s.pod.name").map(String::as_str) == Some("busy")
                && g.resource.get("k8s.container.name").map(String::as_str) == Some(container)
                && g.span.kind == kind as i32
        })
        .collect()
}

fn unique_ids(spans: &[Got], header: Option<(&str, &str)>) -> BTreeSet<Vec<u8>> {
    spans
        .iter()
        .filter(|g| header.is_none_or(|(k, v)| g.headers.get(k).map(String::as_str) == Some(v)))
        .map(|g| g.span.span_id.clone())
        .collect()
}

/// The connection spans of one pod: exactly `n` each side, with the pod's
/// resource, plausible times and matching ports.
fn check_connection_spans(spans: &[Got], p: &PodGuard, ns: &str, n: usize, window: (u64, u64)) {
    let clients = in_pod(spans, ns, "client", SpanKind::Client);
    let servers = in_pod(spans, ns, "server", SpanKind::Server);
    assert_eq!(clients.len(), n, "client connection spans: {clients:#?}");
    assert_eq!(servers.len(), n, "server connection spans: {servers:#?}");
    let client = p.container("client");
    for g in &clients {
        let r = &g.resource;
        assert_eq!(r["k8s.pod.uid"], p.pod.uid, "{r:?}");
        assert_eq!(r["container.id"], client.id, "{r:?}");
        assert_eq!(r["container.image.name"], "localhost/busybox", "{r:?}");
        assert_eq!(r["service.name"], "client", "{r:?}");
        assert!(!r["k8s.node.name"].is_empty());
        let a = &g.attrs;
        assert_eq!(g.span.name, "tcp connect");
        assert_eq!(a["network.peer.port"], "7000", "{a:?}");
        assert_eq!(a["network.peer.address"], "127.0.0.1");
        assert_eq!(a["network.transport"], "tcp");
        assert_eq!(a["network.type"], "ipv4");
        assert_eq!(a["process.executable.name"], "nc");
        assert!(a["process.pid"].parse::<u32>().unwrap() > 0);
        let names: Vec<&str> = g.span.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["tcp.established", "tcp.data_transfer", "tcp.closed"],
            "{g:#?}"
        );
        assert_eq!(g.span.trace_id.len(), 16);
        assert_eq!(g.span.links.len(), 1, "linked to the session span");
    }
    for g in clients.iter().chain(&servers) {
        let (start, end) = (g.span.start_time_unix_nano, g.span.end_time_unix_nano);
        assert!(end > start, "duration > 0: {g:#?}");
        assert!(
            start >= window.0 && end <= window.1,
            "span [{start}, {end}] outside the test's window {window:?}"
        );
    }
    for g in &servers {
        assert_eq!(g.span.name, "tcp accept");
        assert_eq!(g.attrs["network.local.port"], "7000");
        assert_eq!(g.resource["k8s.container.name"], "server");
    }
    // Every connection seen from both ends: the server's peer ports are the
    // clients' local ports.
    let client_ports: BTreeSet<&str> = clients
        .iter()
        .map(|g| g.attrs["network.local.port"].as_str())
        .collect();
    let server_peers: BTreeSet<&str> = servers
        .iter()
        .map(|g| g.attrs["network.peer.port"].as_str())
        .collect();
    assert_eq!(client_ports.len(), n);
    assert_eq!(client_ports, server_peers);
}

fn session_span(spans: &[Got]) -> &Got {
    let s: Vec<&Got> = spans
        .iter()
        .filter(|g| g.span.name == "podscope trace")
        .collect();
    assert_eq!(s.len(), 1, "one session span");
    s[0]
}

// ------------------------------------------------------------------ tests

#[test]
fn grpc_receiver_gets_one_span_per_connection_with_pod_resources() {
    const N: usize = 5;
    let ns = format!("otlp-{}", suffix());
    let p = connection_pod(&ns, &[N]);
    let mut rx = GrpcReceiver::start(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let ps = start_podscope(
        &[
            "tcp,exec",
            "-n",
            &ns,
            "--otlp-endpoint",
            &rx.url(),
            "--otlp-protocol",
            "grpc",
            "--otlp-header",
            "x-podscope-test=grpc",
            "--otlp-logs",
            "exec",
        ],
        &[],
    );
    let before = wall_ns();
    p.run_phase(1);
    wait_for("N spans each side", Duration::from_secs(30), || {
        let s = rx.store.spans();
        in_pod(&s, &ns, "client", SpanKind::Client).len() >= N
            && in_pod(&s, &ns, "server", SpanKind::Server).len() >= N
    });
    let stderr = ps.stop();
    let after = wall_ns();
    rx.stop();

    let spans = rx.store.spans();
    check_connection_spans(&spans, &p, &ns, N, (before, after));
    assert!(spans
        .iter()
        .all(|g| g.headers.get("x-podscope-test").map(String::as_str) == Some("grpc")));
    let session = session_span(&spans);
    assert_eq!(session.resource["service.name"], "podscope");
    assert_eq!(session.attrs["podscope.probes"], "tcp,exec");
    assert!(session.span.end_time_unix_nano > session.span.start_time_unix_nano);
    let link = &in_pod(&spans, &ns, "client", SpanKind::Client)[0]
        .span
        .links[0];
    assert_eq!(link.span_id, session.span.span_id);
    // Session span events: the execs (nc, sleep, true), each naming its pod.
    assert!(session.span.events.iter().any(|e| e.name == "exec"
        && attrs(&e.attributes).get("k8s.pod.name").map(String::as_str) == Some("busy")));

    // Exec log records: exactly one per `nc 127.0.0.1 7000` of the client.
    let logs = rx.store.logs();
    let nc: Vec<&GotLog> = logs
        .iter()
        .filter(|l| {
            l.resource.get("k8s.container.name").map(String::as_str) == Some("client")
                && l.attrs.get("process.command_args").map(String::as_str)
                    == Some("nc 127.0.0.1 7000")
        })
        .collect();
    assert_eq!(nc.len(), N, "{nc:#?}");
    for l in &nc {
        assert_eq!(l.record.event_name, "exec");
        assert_eq!(l.record.severity_text, "INFO");
        let body = value(&l.record.body);
        assert!(
            body.contains(" exec: ") && body.contains("nc 127.0.0.1 7000 [ppid "),
            "{body}"
        );
        assert_eq!(l.resource["k8s.namespace.name"], ns);
        assert_eq!(
            l.headers.get("x-podscope-test").map(String::as_str),
            Some("grpc")
        );
    }

    let (produced, exported, failed, dropped, _) = report(&stderr, "spans");
    assert_eq!(produced as usize, spans.len(), "{stderr}");
    assert_eq!((exported, failed, dropped), (produced, 0, 0), "{stderr}");
    let (lp, le, lf, ld, _) = report(&stderr, "logs");
    assert_eq!((le, lf, ld), (lp, 0, 0), "{stderr}");
    assert_eq!(lp as usize, logs.len(), "{stderr}");
}

/// `trace http` with OTLP: one SERVER span per request a busybox httpd pod
/// answered and one CLIENT span per request a wget pod sent, named and
/// attributed as OpenTelemetry's HTTP conventions say; the client's own
/// exit statuses are the witness for the counts.
#[test]
fn grpc_receiver_gets_one_span_per_http_request() {
    const OK: usize = 4;
    const MISSING: usize = 2;
    let ns = format!("otlp-http-{}", suffix());
    let api = common::pod(
        "api",
        &ns,
        &[],
        &[(
            "httpd",
            "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
        )],
    );
    let ip = api.pod.ip.clone().expect("the api pod has an address");
    let client = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.2; done; ok=0; bad=0; \
         i=0; while [ $i -lt {OK} ]; do wget -q -O /dev/null 'http://{ip}:8080/index.html?token=s3cret' && ok=$((ok+1)); i=$((i+1)); done; \
         i=0; while [ $i -lt {MISSING} ]; do wget -q -O /dev/null http://{ip}:8080/missing || bad=$((bad+1)); i=$((i+1)); done; \
         echo \"$ok $bad\" > /tmp/result; mkdir /tmp/done; sleep 3600"
    );
    let web = common::pod("web", &ns, &[], &[("client", &client)]);
    let mut rx = GrpcReceiver::start(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let ps = start_podscope(
        &[
            "http",
            "-n",
            &ns,
            "--otlp-endpoint",
            &rx.url(),
            "--otlp-protocol",
            "grpc",
            "--capture-headers",
            "--capture-body",
            "64",
        ],
        &[],
    );
    let before = wall_ns();
    std::fs::write(web.path_in("client", "/tmp/go"), "").unwrap();
    let done = web.path_in("client", "/tmp/done");
    wait_for("the client to finish", Duration::from_secs(60), || {
        done.is_dir()
    });
    let result = std::fs::read_to_string(web.path_in("client", "/tmp/result")).unwrap();
    assert_eq!(result.trim(), format!("{OK} {MISSING}"), "wget's own view");
    let of = |spans: &[Got], pod: &str, kind: SpanKind| -> Vec<Got> {
        spans
            .iter()
            .filter(|g| {
                g.resource.get("k8s.namespace.name").map(String::as_str) == Some(ns.as_str())
                    && g.resource.get("k8s.pod.name").map(String::as_str) == Some(pod)
                    && g.span.kind == kind as i32
            })
            .cloned()
            .collect()
    };
    let total = OK + MISSING;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = rx.store.spans();
        let (server, client) = (
            of(&s, "api", SpanKind::Server).len(),
            of(&s, "web", SpanKind::Client).len(),
        );
        if server >= total && client >= total {
            break;
        }
        if Instant::now() > deadline {
            // Say what did arrive, and what podscope said about its export.
            let said = ps.stop();
            panic!(
                "timed out after 30s waiting for a span per request on each side: {server} SERVER \
                 spans of api and {client} CLIENT spans of web of {total} each, {} spans in all; \
                 podscope said:\n{said}",
                s.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stderr = ps.stop();
    let after = wall_ns();
    rx.stop();
    let spans = rx.store.spans();
    let servers = of(&spans, "api", SpanKind::Server);
    let clients = of(&spans, "web", SpanKind::Client);
    assert_eq!(servers.len(), total, "{servers:#?}");
    assert_eq!(clients.len(), total, "{clients:#?}");
    for (side, list) in [("server", &servers), ("client", &clients)] {
        let by = |path: &str, status: &str| {
            list.iter()
                .filter(|g| {
                    g.attrs.get("url.path").map(String::as_str) == Some(path)
                        && g.attrs.get("http.response.status_code").map(String::as_str)
                            == Some(status)
                })
                .count()
        };
        assert_eq!(by("/index.html", "200"), OK, "{side}: {list:#?}");
        assert_eq!(by("/missing", "404"), MISSING, "{side}: {list:#?}");
        for g in list.iter() {
            assert_eq!(g.span.name, "GET");
            assert_eq!(g.attrs["http.request.method"], "GET");
            assert_eq!(g.attrs["network.protocol.version"], "1.1");
            assert!(
                g.span.start_time_unix_nano >= before
                    && g.span.end_time_unix_nano <= after
                    && g.span.end_time_unix_nano > g.span.start_time_unix_nano,
                "{g:#?}"
            );
            assert!(
                !format!("{:?}", g.span).contains("s3cret"),
                "query values never leave podscope: {g:#?}"
            );
            if g.attrs["url.path"] == "/index.html" {
                assert_eq!(g.attrs["url.query"], "token=?");
                // --capture-headers / --capture-body, as the conventions
                // name headers (http.request.header.<name>).
                // busybox httpd sends files with sendfile (not copied: no
                // body on its side); wget reads them.
                if side == "client" {
                    assert_eq!(g.attrs["podscope.http.response.body"], "hello\n", "{g:#?}");
                } else {
                    assert!(
                        !g.attrs.contains_key("podscope.http.response.body"),
                        "{g:#?}"
                    );
                }
                assert!(
                    !g.attrs.contains_key("podscope.http.request.body"),
                    "a GET: {g:#?}"
                );
            }
            assert_eq!(
                g.attrs["http.request.header.host"],
                format!("{ip}:8080"),
                "{g:#?}"
            );
            assert!(
                g.attrs.contains_key("http.response.header.content-type"),
                "{g:#?}"
            );
            let error = g.span.status.as_ref().is_some_and(|s| s.code == 2);
            let missing = g.attrs["url.path"] == "/missing";
            // A 404 is an error for the client, not for the server.
            assert_eq!(error, missing && side == "client", "{g:#?}");
        }
    }
    for g in &clients {
        assert_eq!(g.attrs["server.port"], "8080");
        assert_eq!(g.attrs["network.peer.address"], ip);
        assert_eq!(g.attrs["podscope.peer.k8s.pod.name"], "api", "{g:#?}");
        assert_eq!(g.attrs["podscope.peer.k8s.namespace.name"], ns);
        assert_eq!(g.resource["k8s.container.name"], "client");
    }
    for g in &servers {
        assert_eq!(g.attrs["client.address"], web.pod.ip.clone().unwrap());
        assert_eq!(g.resource["k8s.container.name"], "httpd");
    }
    let (produced, exported, failed, dropped, _) = report(&stderr, "spans");
    assert_eq!(produced as usize, spans.len(), "{stderr}");
    assert_eq!((exported, failed, dropped), (produced, 0, 0), "{stderr}");
}

/// An https:// collector: spans arrive over TLS when its CA is given with
/// --otlp-ca; with another CA the failure is reported with the reason, the
/// spans are counted as failed, and the exit status says so.
#[test]
fn tls_collector_with_otlp_ca() {
    let dir = common::make_certs("otlp");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let port = free_port();
    let mut rx = GrpcReceiver::start_with(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Some((read("hub.pem"), read("hub.key"))),
    );
    let url = format!("https://127.0.0.1:{port}");
    let ca = dir.join("ca.pem").to_str().unwrap().to_string();
    let ns = format!("otlp-tls-{}", suffix());
    let p = connection_pod(&ns, &[3]);
    let ps = start_podscope(
        &[
            "tcp",
            "-n",
            &ns,
            "--otlp-endpoint",
            &url,
            "--otlp-protocol",
            "grpc",
            "--otlp-ca",
            &ca,
        ],
        &[],
    );
    p.run_phase(1);
    wait_for("3 client spans over TLS", Duration::from_secs(30), || {
        in_pod(&rx.store.spans(), &ns, "client", SpanKind::Client).len() >= 3
    });
    let stderr = ps.stop();
    let (produced, exported, failed, dropped, _) = report(&stderr, "spans");
    assert_eq!((exported, failed, dropped), (produced, 0, 0), "{stderr}");
    assert!(produced >= 7, "3 per side and the session span: {stderr}");

    // Trusting another CA: nothing arrives, and podscope says why.
    let before = rx.store.spans().len();
    let other = dir.join("other-ca.pem").to_str().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args(["trace", "exec", "--all", "--duration", "2s", "-o", "none"])
        .args([
            "--otlp-endpoint",
            &url,
            "--otlp-protocol",
            "grpc",
            "--otlp-ca",
            &other,
        ])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    rx.stop();
    assert_eq!(rx.store.spans().len(), before, "{err}");
    let (produced, exported, failed, dropped, _) = report(&err, "spans");
    assert!(
        produced >= 1 && exported == 0 && failed + dropped == produced,
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "the failure names the certificate problem: {err}"
    );
    assert!(
        !out.status.success(),
        "a failed export is a failed exit: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn receiver_outage_loses_nothing_silently_and_the_backlog_arrives() {
    const PHASES: [usize; 3] = [3, 6, 2];
    let ns = format!("otlp-down-{}", suffix());
    let p = connection_pod(&ns, &PHASES);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut rx = GrpcReceiver::start(addr);
    let common = |tag: &'static str| {
        vec![
            "tcp".to_string(),
            "-n".into(),
            ns.clone(),
            "--otlp-endpoint".into(),
            format!("http://{addr}"),
            "--otlp-protocol".into(),
            "grpc".into(),
            "--otlp-header".into(),
            format!("x-podscope-test={tag}"),
        ]
    };
    // Two podscopes at once: one with the default queue (the backlog fits and
    // must all arrive), one with a 3-span queue (it must drop, and say so).
    let big_args = common("big");
    let big = start_podscope(
        &big_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let mut small_args = common("small");
    small_args.extend(["--otlp-queue-size".into(), "3".into()]);
    let small = start_podscope(
        &small_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let from = |spans: &[Got], tag: &str| -> usize {
        spans
            .iter()
            .filter(|g| {
                g.headers.get("x-podscope-test").map(String::as_str) == Some(tag)
                    && g.resource.get("k8s.pod.name").map(String::as_str) == Some("busy")
            })
            .count()
    };

    p.run_phase(1);
    let n1 = 2 * PHASES[0];
    // The 3-span queue may already drop part of a burst: some spans suffice.
    wait_for("phase 1's spans", Duration::from_secs(30), || {
        let s = rx.store.spans();
        from(&s, "big") >= n1 && from(&s, "small") >= 1
    });
    // What it received is read once it has stopped: a batch that arrived
    // between a look and the stop is exported for podscope (CI once saw 2).
    rx.stop();
    let first = rx.store.spans();

    // The outage: connections while nobody listens.
    p.run_phase(2);
    std::thread::sleep(Duration::from_secs(3));

    let rx2 = GrpcReceiver::start(addr);
    let phase3_start = wall_ns();
    p.run_phase(3);
    let n3 = 2 * PHASES[2];
    let after_restart = |spans: &[Got], tag: &str| {
        spans
            .iter()
            .filter(|g| {
                g.headers.get("x-podscope-test").map(String::as_str) == Some(tag)
                    && g.resource.get("k8s.pod.name").map(String::as_str) == Some("busy")
                    && g.span.start_time_unix_nano >= phase3_start
            })
            .count()
    };
    wait_for(
        "spans made after the restart",
        Duration::from_secs(40),
        || {
            let s = rx2.store.spans();
            after_restart(&s, "big") >= n3 && after_restart(&s, "small") >= 1
        },
    );
    let big_err = big.stop();
    let small_err = small.stop();
    let second = rx2.store.spans();
    let all: Vec<Got> = first.into_iter().chain(second).collect();
    eprintln!("big:\n{big_err}\nsmall:\n{small_err}");

    let connections: usize = PHASES.iter().sum();
    for (tag, stderr) in [("big", &big_err), ("small", &small_err)] {
        let (produced, exported, failed, dropped, failed_requests) = report(stderr, "spans");
        let received = unique_ids(&all, Some(("x-podscope-test", tag))).len() as u64;
        // Both ends of every connection, plus the session span.
        assert_eq!(produced as usize, 2 * connections + 1, "{tag}: {stderr}");
        assert_eq!(
            produced,
            exported + failed + dropped,
            "{tag}: every span accounted for"
        );
        assert!(
            produced - received <= failed + dropped,
            "{tag}: {} spans never arrived but only {failed} failed + {dropped} dropped were reported",
            produced - received
        );
        assert!(
            received >= exported,
            "{tag}: exported {exported}, received {received}"
        );
        assert!(failed_requests > 0, "{tag}: the outage made requests fail");
        assert!(
            stderr.contains(&format!("OTLP spans export to http://{addr} failed:")),
            "{tag}: the failure is logged: {stderr}"
        );
        let lines = stderr.matches("export to http://").count();
        assert!(
            lines <= 4,
            "{tag}: failures logged at a bounded rate: {stderr}"
        );
    }
    let (produced, exported, failed, dropped, _) = report(&big_err, "spans");
    assert_eq!(
        (exported, failed, dropped),
        (produced, 0, 0),
        "the default queue holds the backlog until the receiver is back"
    );
    assert!(big_err.contains("works again"), "{big_err}");
    let (_, _, _, small_dropped, _) = report(&small_err, "spans");
    assert!(
        small_dropped > 0,
        "a 3-span queue overflows during the outage"
    );
}

#[test]
fn http_protobuf_and_environment_variables() {
    const N: usize = 3;
    let ns = format!("otlp-http-{}", suffix());
    let p = connection_pod(&ns, &[N]);
    let rx = HttpReceiver::start();
    let base = format!("http://{}", rx.addr);
    // Everything from the standard variables: endpoint, protocol, headers, service name.
    let ps = start_podscope(
        &["tcp,exec", "-n", &ns, "--otlp", "--otlp-logs", "exec"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &base),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-podscope-test=http%20env"),
            ("OTEL_SERVICE_NAME", "podscope-test"),
        ],
    );
    let before = wall_ns();
    p.run_phase(1);
    wait_for("N spans each side", Duration::from_secs(30), || {
        let s = rx.store.spans();
        in_pod(&s, &ns, "client", SpanKind::Client).len() >= N
            && in_pod(&s, &ns, "server", SpanKind::Server).len() >= N
    });
    let stderr = ps.stop();
    let after = wall_ns();
    let spans = rx.store.spans();
    check_connection_spans(&spans, &p, &ns, N, (before, after));
    assert!(spans
        .iter()
        .all(|g| g.headers.get("x-podscope-test").map(String::as_str) == Some("http env")));
    assert_eq!(
        session_span(&spans).resource["service.name"],
        "podscope-test"
    );
    assert_eq!(
        *rx.content_types.lock().unwrap(),
        BTreeSet::from(["application/x-protobuf".to_string()])
    );
    let nc = rx
        .store
        .logs()
        .into_iter()
        .filter(|l| {
            l.attrs.get("process.command_args").map(String::as_str) == Some("nc 127.0.0.1 7000")
        })
        .count();
    assert_eq!(nc, N);
    let (produced, exported, failed, dropped, _) = report(&stderr, "spans");
    assert_eq!((exported, failed, dropped), (produced, 0, 0), "{stderr}");
    assert_eq!(produced as usize, spans.len());
}

/// No root needed: synthetic events through the exporter into the in-test
/// gRPC receiver. Prints the hot-path cost, the sustained export rate and the
/// memory a full queue holds (docs/otlp.md quotes these).
#[test]
fn exporter_throughput_and_bounded_queue() {
    use podscope_export::otlp::{Otlp, OtlpConfig, OtlpFlags, SessionInfo};
    use podscope_model::{Event, EventData, Identity, TcpEvent, TcpKind, Timestamp};

    fn close(i: u64) -> Event {
        Event {
            timestamp: Timestamp(wall_ns()),
            identity: Identity {
                node: "node-1".into(),
                namespace: "bench".into(),
                pod: format!("pod-{}", i % 20),
                pod_uid: format!("uid-{}", i % 20),
                container: "app".into(),
                container_id: format!("cid-{}", i % 20),
                image: "localhost/busybox:latest".into(),
            },
            pid: 1000 + (i % 50) as u32,
            tid: 1000,
            uid: 0,
            comm: "client".into(),
            cgroup_id: 10 + i % 20,
            data: EventData::Tcp(TcpEvent {
                dialed_addr: Box::default(),
                dialed_port: 0,
                kind: TcpKind::Close,
                role: "client".into(),
                family: "ipv4".into(),
                saddr: "10.0.0.1".into(),
                daddr: "10.0.0.2".into(),
                sport: (i % 60000) as u16,
                dport: 80,
                state: "FIN_WAIT1".into(),
                duration_ns: Some(1_000_000),
                tx_bytes: Some(100),
                rx_bytes: Some(2000),
                retransmits: Some(0),
                error: None,
            }),
        }
    }
    let grpc = |url: &str, queue: usize| {
        let flags = OtlpFlags {
            endpoint: Some(url.into()),
            protocol: Some("grpc".into()),
            queue_size: Some(queue),
            ..Default::default()
        };
        OtlpConfig::resolve(&flags, "node-1", &|_| None).unwrap()
    };

    // Backend down: the queue (default size) stays bounded, overflow is
    // dropped and counted, and the memory it holds is what docs/otlp.md says.
    const QUEUE: usize = podscope_export::otlp::DEFAULT_QUEUE_SIZE;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let otlp = Otlp::start(grpc(&dead, QUEUE), None).unwrap();
    let obs = otlp.observer();
    let events: Vec<Event> = (0..3 * QUEUE as u64).map(close).collect();
    // First in this test, so the heap has no freed memory to reuse yet (run
    // alone, e.g. `-- exporter_throughput --test-threads 1`, for a clean figure).
    let rss0 = rss_bytes();
    for ev in &events {
        obs.observe(ev);
    }
    let grown = rss_bytes().saturating_sub(rss0);
    let s = otlp.stats().spans;
    eprintln!(
        "otlp: backend down, {} spans in: {} queued, {} dropped; RSS grew {:.1} MiB ({} bytes per queued span at most)",
        events.len(),
        s.queued,
        s.dropped,
        grown as f64 / (1 << 20) as f64,
        grown / QUEUE as u64
    );
    assert!(s.queued <= QUEUE as u64, "{s:?}");
    assert!(s.dropped >= (2 * QUEUE - 512) as u64, "{s:?}");
    let t = Instant::now();
    let s = otlp.finish(&SessionInfo::default(), 0, 0).spans;
    eprintln!(
        "otlp: backend down at exit: {s:?}, exit took {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(s.produced, 3 * QUEUE as u64 + 1);
    assert_eq!(s.exported, 0);
    assert_eq!(s.produced, s.failed + s.dropped);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "exit is bounded by the 5 s deadline"
    );

    // Sustained rate into a live receiver: the producer only waits when the
    // queue is nearly full, so the rate is the exporter's.
    const TOTAL: u64 = 100_000;
    let rx = GrpcReceiver::start(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let otlp = Otlp::start(grpc(&rx.url(), 8192), None).unwrap();
    let obs = otlp.observer();
    let start = Instant::now();
    let mut hot = Duration::ZERO;
    for i in 0..TOTAL {
        let ev = close(i);
        let t = Instant::now();
        obs.observe(&ev);
        hot += t.elapsed();
        if i % 512 == 0 {
            while otlp.stats().spans.queued > 6000 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    wait_for("the backlog to drain", Duration::from_secs(120), || {
        otlp.stats().spans.exported >= TOTAL
    });
    let elapsed = start.elapsed();
    let stats = otlp.finish(&SessionInfo::default(), TOTAL, 0);
    let received = rx.store.spans().len() as u64;
    eprintln!(
        "otlp throughput: {TOTAL} spans in {:.2}s = {:.0} spans/s exported over gRPC to an in-process receiver; \
         hot path {:.2} us/event; {} requests",
        elapsed.as_secs_f64(),
        TOTAL as f64 / elapsed.as_secs_f64(),
        hot.as_secs_f64() * 1e6 / TOTAL as f64,
        stats.spans.requests
    );
    assert_eq!(stats.spans.produced, TOTAL + 1, "plus the session span");
    assert_eq!(stats.spans.exported, TOTAL + 1);
    assert_eq!(received, TOTAL + 1);
    let sample = rx.store.traces.lock().unwrap()[0].1.resource_spans[0].scope_spans[0].spans[0]
        .encoded_len();
    eprintln!("otlp: one connection span is {sample} bytes encoded");
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn bad_otlp_settings_fail_before_the_probes_load() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_podscope"));
        cmd.args(["trace", "tcp", "--all", "-d", "1s"])
            .args(args)
            .args(["--runtime-endpoint", &endpoint()]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("probes attached"), "{err}");
        err
    };
    let err = run(&["--otlp-endpoint", "notaurl"], &[]);
    assert!(
        err.contains("'notaurl' is not a URL") && err.contains("http://notaurl:4317"),
        "{err}"
    );
    let err = run(
        &[
            "--otlp-endpoint",
            "https://127.0.0.1:4317",
            "--otlp-ca",
            "/nonexistent.pem",
        ],
        &[],
    );
    assert!(
        err.contains("--otlp-ca /nonexistent.pem: cannot read it"),
        "{err}"
    );
    let err = run(
        &[
            "--otlp-endpoint",
            "https://127.0.0.1:4317",
            "--otlp-ca",
            "/etc/hostname",
        ],
        &[],
    );
    assert!(
        err.contains("--otlp-ca /etc/hostname") && err.contains("expected PEM CA certificates"),
        "{err}"
    );
    let err = run(&["--otlp-logs", "open"], &[]);
    assert!(
        err.contains("--otlp-logs open: the open probe is not traced"),
        "{err}"
    );
    let err = run(&["--otlp"], &[("OTEL_EXPORTER_OTLP_HEADERS", "broken")]);
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_HEADERS: 'broken' is not KEY=VALUE"),
        "{err}"
    );
    // Request spans need a probe that sees requests.
    let err = run(&["--spans", "requests"], &[]);
    assert!(
        err.contains("--spans requests: request spans come from the http, grpc or tls probe")
            && err.contains("podscope trace tcp,http"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args(["trace", "http", "--all", "--spans", "everything"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'everything'") && err.contains("requests-with-context"),
        "{err}"
    );
}

/// Syscall and tracepoint records as OTLP log records (issue 13's "records
/// as logs"): a pod's N failing opens of one path, each one record with the
/// syscall's attributes, and its forks with the tracepoint's fields.
#[test]
fn syscall_and_tracepoint_records_become_log_records() {
    const N: usize = 6;
    let ns = format!("otsys-{}", suffix());
    let script = format!(
        "while [ ! -e /go ]; do sleep 0.1; done; for i in {}; do cat /otlp-missing 2>/dev/null; done; \
         : > /done; exec sleep 3600",
        (1..=N).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
    );
    let p = common::pod("sys", &ns, &[], &[("app", &script)]);
    let mut rx = GrpcReceiver::start(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let ps = start_podscope(
        &[
            "syscalls,tp:sched:sched_process_fork",
            "-n",
            &ns,
            "--syscall",
            "openat",
            "--errors-only",
            "--otlp-endpoint",
            &rx.url(),
            "--otlp-protocol",
            "grpc",
            "--otlp-logs",
            "syscalls,tracepoint",
        ],
        &[],
    );
    std::fs::write(p.path_in("app", "/go"), "").unwrap();
    wait_for("the opens", Duration::from_secs(10), || {
        p.path_in("app", "/done").exists()
    });
    let stderr = ps.stop();
    rx.stop();
    let logs = rx.store.logs();
    let opens: Vec<&GotLog> = logs
        .iter()
        .filter(|l| l.record.event_name == "call")
        .collect();
    let missing = opens
        .iter()
        .filter(|l| {
            l.attrs
                .get("podscope.syscall.args")
                .is_some_and(|a| a.contains("/otlp-missing"))
        })
        .count();
    assert_eq!(missing, N, "{opens:#?}\n{stderr}");
    for l in &opens {
        assert_eq!(l.attrs["podscope.syscall.name"], "openat", "{l:?}");
        assert_eq!(l.attrs["error.type"], "ENOENT", "{l:?}");
        assert_eq!(l.attrs["podscope.syscall.ret"], "-2", "{l:?}");
        assert_eq!(l.record.severity_text, "WARN");
        assert_eq!(l.resource["k8s.pod.name"], "sys");
    }
    let forks: Vec<&GotLog> = logs
        .iter()
        .filter(|l| {
            l.attrs.get("podscope.tracepoint").map(String::as_str)
                == Some("sched:sched_process_fork")
        })
        .collect();
    assert!(forks.len() >= N, "one fork per cat at least: {forks:#?}");
    for l in &forks {
        let parent: u32 = l.attrs["podscope.tp.parent_pid"].parse().unwrap();
        assert_eq!(l.attrs["process.pid"], parent.to_string(), "{l:?}");
        assert!(l.attrs.contains_key("podscope.tp.child_pid"), "{l:?}");
    }
}

/// `Tcp:` RetransSegs of the network namespace `pid` is in (the kernel's
/// own count of retransmitted segments).
fn retrans_segs(pid: u32) -> u64 {
    let snmp = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).unwrap();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Retransmits during a request as a count on its span (docs/otlp.md,
/// "Request traces", rule 3): busybox httpd in one pod sends a 256 KiB
/// file to wget in another, while an iptables rule in the client's network
/// namespace drops a twentieth of what the server sends (not its SYN-ACKs: a SYN-ACK
/// retransmit is not a `tcp_retransmit_skb`, and the probe does not report
/// it, while the socket's total_retrans counts it; and the server's device
/// sends one segment per packet, so the kernel's segment counts are numbers
/// of retransmits). Each server socket's total_retrans and the server
/// namespace's RetransSegs are the witnesses of the tcp probe's retransmit
/// events (each a `tcp.retransmit` event on the server's connection span);
/// each CLIENT span's
/// `podscope.tcp.retransmits` is the number of those events on its
/// connection within its start and end.
#[test]
fn retransmits_during_a_request_are_counted_on_its_span() {
    const REQUESTS: usize = 4;
    let ns = format!("otlp-rtx-{}", suffix());
    let api = common::pod(
        "api",
        &ns,
        &[],
        &[(
            "httpd",
            "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1024 count=256 2>/dev/null && exec httpd -f -p 8080 -h /www",
        )],
    );
    let ip = api.pod.ip.clone().expect("the api pod has an address");
    let client = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.2; done; ok=0; \
         i=0; while [ $i -lt {REQUESTS} ]; do wget -q -O /dev/null http://{ip}:8080/big && ok=$((ok+1)); i=$((i+1)); done; \
         echo $ok > /tmp/result; mkdir /tmp/done; sleep 3600"
    );
    let web = common::pod("web", &ns, &[], &[("client", &client)]);
    let srv = api.container("httpd").pid.unwrap().to_string();
    let in_srv = |args: &[&str]| {
        let st = Command::new("nsenter")
            .args(["-t", &srv, "-n"])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "in the server's netns: {args:?}");
    };
    in_srv(&["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"]);
    // The loss is on the way: the client's namespace drops what arrives
    // (a drop in the server's own output would be reported to its TCP).
    let cli = web.container("client").pid.unwrap().to_string();
    let rule = "-A INPUT -p tcp --sport 8080 ! --tcp-flags SYN SYN -m statistic --mode random --probability 0.05 -j DROP";
    let st = Command::new("nsenter")
        .args(["-t", &cli, "-n", "iptables"])
        .args(rule.split(' '))
        .status()
        .unwrap();
    assert!(st.success(), "in the client's netns: iptables {rule}");
    let mut rx = GrpcReceiver::start(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let ps = start_podscope(
        &[
            "http,tcp",
            "-n",
            &ns,
            "--otlp-endpoint",
            &rx.url(),
            "--otlp-protocol",
            "grpc",
        ],
        &[],
    );
    let segs_before = retrans_segs(srv.parse().unwrap());
    std::fs::write(web.path_in("client", "/tmp/go"), "").unwrap();
    let done = web.path_in("client", "/tmp/done");
    wait_for("the client to finish", Duration::from_secs(120), || {
        done.is_dir()
    });
    let result = std::fs::read_to_string(web.path_in("client", "/tmp/result")).unwrap();
    assert_eq!(result.trim(), REQUESTS.to_string(), "wget's own count");
    let of_kind = |spans: &[Got], pod: &str, kind: SpanKind, http: bool| -> Vec<Got> {
        spans
            .iter()
            .filter(|g| {
                g.resource.get("k8s.namespace.name").map(String::as_str) == Some(ns.as_str())
                    && g.resource.get("k8s.pod.name").map(String::as_str) == Some(pod)
                    && g.span.kind == kind as i32
                    && g.attrs.contains_key("http.request.method") == http
            })
            .cloned()
            .collect()
    };
    // Connection spans come when the kernel destroys the sockets: after
    // the last retransmit (a FIN's may come after wget is done).
    wait_for(
        "the request and connection spans",
        Duration::from_secs(30),
        || {
            let s = rx.store.spans();
            of_kind(&s, "web", SpanKind::Client, true).len() == REQUESTS
                && of_kind(&s, "api", SpanKind::Server, false).len() == REQUESTS
        },
    );
    let segs = retrans_segs(srv.parse().unwrap()) - segs_before;
    let stderr = ps.stop();
    rx.stop();
    let spans = rx.store.spans();
    let clients = of_kind(&spans, "web", SpanKind::Client, true);
    // The server's connection spans (SERVER: it accepted them).
    let conns = of_kind(&spans, "api", SpanKind::Server, false);
    assert_eq!(clients.len(), REQUESTS, "{clients:#?}");
    assert_eq!(
        conns.len(),
        REQUESTS,
        "one connection per wget: {conns:#?}\n{stderr}"
    );
    let retransmit_times = |c: &Got| -> Vec<u64> {
        c.span
            .events
            .iter()
            .filter(|e| e.name == "tcp.retransmit")
            .map(|e| e.time_unix_nano)
            .collect()
    };
    // The witnesses: each socket's own count (total_retrans at close) and
    // the namespace's RetransSegs (segments: one per packet here).
    let mut kernel = 0u64;
    for c in &conns {
        let own: u64 = c.attrs["podscope.tcp.retransmits"].parse().unwrap();
        let seen = retransmit_times(c).len() as u64;
        assert_eq!(
            seen, own,
            "the probe's retransmit events against the socket's own count: {c:#?}"
        );
        kernel += own;
    }
    let events: usize = conns.iter().map(|c| retransmit_times(c).len()).sum();
    assert!(
        events > 0,
        "a twentieth of the segments lost: some retransmits"
    );
    assert_eq!(
        kernel, segs,
        "the sockets' counts add up to the namespace's RetransSegs"
    );
    let mut counted = 0;
    for c in &clients {
        let port = &c.attrs["network.local.port"];
        let conn = conns
            .iter()
            .find(|s| s.attrs.get("network.peer.port") == Some(port))
            .unwrap_or_else(|| panic!("no server connection for client port {port}: {conns:#?}"));
        let during = retransmit_times(conn)
            .into_iter()
            .filter(|t| *t >= c.span.start_time_unix_nano && *t <= c.span.end_time_unix_nano)
            .count();
        let got: usize = c
            .attrs
            .get("podscope.tcp.retransmits")
            .map_or(0, |v| v.parse().unwrap());
        assert_eq!(got, during, "{c:#?}\n{conn:#?}");
        counted += got;
    }
    assert!(
        counted > 0,
        "the retransmits happen while wget reads: {clients:#?}"
    );
}
