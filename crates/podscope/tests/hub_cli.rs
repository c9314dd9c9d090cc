//! The CLI through a hub, with real processes and sockets but no agent that
//! traces: what `podscope --hub URL ...` refuses and how it fails (flags that
//! only work on a node, hubs that do not answer, things that are not a hub),
//! and the hub's REST error answers. Needs no root and no pods.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use podscope_cluster::http::request;
use serde_json::Value;

const TOKEN: &str = "hub-cli-token-93ab";

/// A process killed on drop (by its own pid).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token_file() -> PathBuf {
    let p = std::env::temp_dir().join(format!("podscope-hub-cli-token-{}", std::process::id()));
    // Written whole and renamed into place: tests run in parallel, and a
    // rewrite in place let another test's podscope read an empty file.
    let tmp =
        p.with_extension(format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::write(&tmp, format!("{TOKEN}\n")).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podscope"))
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A hub on a free port, answering /healthz.
fn hub() -> (Proc, u16) {
    hub_logging_to(None)
}

/// [`hub`], its stderr in `log`.
fn hub_logging_to(log: Option<&std::path::Path>) -> (Proc, u16) {
    let port = free_port();
    let child = bin()
        .args([
            "hub",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token-file",
        ])
        .arg(token_file())
        .stderr(match log {
            Some(l) => Stdio::from(std::fs::File::create(l).unwrap()),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let p = Proc(child);
    common::wait_for("the hub to listen", Duration::from_secs(10), || {
        request(&url(port), "GET", "/healthz", None, None, &[]).is_ok_and(|r| r.status == 200)
    });
    (p, port)
}

/// `podscope --hub URL --token-file T ARGS...`, run to its end.
fn cli(hub: &str, args: &[&str]) -> Output {
    bin()
        .args(["--hub", hub, "--token-file"])
        .arg(token_file())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sessions(port: u16) -> Value {
    request(&url(port), "GET", "/v1/sessions", Some(TOKEN), None, &[])
        .unwrap()
        .json()
        .unwrap()
}

/// `podscope --hub URL trace exec --pid 1` used to start a session of every
/// pod in `default` and print other processes' events, exit 0: every flag
/// the hub path does not honour is refused, naming the flag and what to do.
#[test]
fn node_only_trace_flags_are_refused_through_the_hub() {
    let (_hub, port) = hub();
    let hub_url = url(port);
    let cases: [(&[&str], &str, &str); 15] = [
        (
            &["--pid", "1"],
            "--pid is not supported through --hub",
            "--pod/-l/-n",
        ),
        (
            &["--comm", "sh"],
            "--comm is not supported through --hub",
            "on the node",
        ),
        (
            &["--cgroup", "/sys/fs/cgroup"],
            "--cgroup is not supported",
            "--pod/-l/-n",
        ),
        (&["--all"], "--all is not supported through --hub", "-A"),
        (
            &["--metrics-listen", "127.0.0.1:9"],
            "--metrics-listen is not supported through --hub",
            "podscope agent --metrics-listen",
        ),
        (
            &["--metrics-grace", "1m"],
            "--metrics-grace is not supported",
            "agent",
        ),
        // (--otlp alone is taken: the agents export the session.)
        (
            &["--otlp-endpoint", "http://127.0.0.1:9"],
            "--otlp-endpoint is not supported",
            "podscope agent --otlp-endpoint",
        ),
        (
            &["--otlp-protocol", "grpc"],
            "--otlp-protocol is not supported",
            "trace ... --otlp` asks them to export this session",
        ),
        (
            &["--otlp-logs", "exec"],
            "--otlp-logs is not supported",
            "agent",
        ),
        (
            &["--otlp-session-events", "5"],
            "--otlp-session-events is not supported",
            "agent",
        ),
        (
            &["--spans", "requests"],
            "--spans is not supported",
            "podscope agent --otlp-endpoint",
        ),
        (
            &["--ring-buffer-size", "8M"],
            "--ring-buffer-size is not supported",
            "on the node",
        ),
        (
            &["--interval", "2s"],
            "--interval is not supported",
            "on the node",
        ),
        (
            &["--runtime-endpoint", "unix:///x.sock"],
            "--runtime-endpoint is not supported",
            "podscope agent --runtime-endpoint",
        ),
        // Even a value equal to the default: given is given.
        (
            &["--ring-buffer-size", "1M"],
            "--ring-buffer-size is not supported",
            "on the node",
        ),
    ];
    for (flags, want, hint) in cases {
        let mut args = vec!["trace", "exec", "--duration", "2s", "-o", "json"];
        args.extend_from_slice(flags);
        let t = Instant::now();
        let o = cli(&hub_url, &args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {e}");
        assert!(e.contains(want) && e.contains(hint), "{flags:?}: {e}");
        assert!(o.stdout.is_empty(), "{flags:?}: printed events");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{flags:?}: refused late"
        );
    }
    // Hook settings travel to the hub, checked here first as a local trace
    // checks them.
    for (args, want) in [
        (
            &["trace", "exec", "--filter", "len > 1", "-A"][..],
            "--filter compares tracepoint fields",
        ),
        (
            &["trace", "exec", "--syscall", "openat", "-A"][..],
            "settings of the syscalls probe",
        ),
        (
            &["trace", "tp:net:net_dev_xmit", "--filter", "len >", "-A"][..],
            "no value after '>'",
        ),
    ] {
        let o = cli(&hub_url, args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // ps and exec too.
    let o = cli(
        &hub_url,
        &["ps", "-A", "--runtime-endpoint", "unix:///x.sock"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--runtime-endpoint is not supported through --hub"));
    let o = cli(
        &hub_url,
        &["exec", "--pod", "a", "--output-dir", "/tmp", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--output-dir works on the node only"));
    // ui's flags set up the local view; with --hub they are refused.
    let o = cli(&hub_url, &["ui", "--listen", "0.0.0.0:7701"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--listen sets up the local web view"),
        "{}",
        stderr(&o)
    );
    // Nothing reached the hub.
    assert_eq!(sessions(port), serde_json::json!([]));
    // The flags that do work through the hub are still accepted.
    let o = cli(
        &hub_url,
        &[
            "trace",
            "exec",
            "-A",
            "--wait",
            "--duration",
            "1s",
            "--max-events",
            "3",
            "-o",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A real TCP listener that accepts every connection, reads the request and
/// never answers: a hub that hangs.
fn silent_listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut b = [0u8; 4096];
            let _ = s.read(&mut b);
            held.push(s);
        }
    });
    port
}

/// A real HTTP server that answers every request `404 page not found`, as
/// many a web server or proxy does.
fn not_a_hub() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut b = [0u8; 4096];
            let _ = s.read(&mut b);
            use std::io::Write;
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 19\r\n\r\n404 page not found\n",
            );
        }
    });
    port
}

/// `--hub` at something that is not a hub used to say `the hub answered 404
/// to GET /v1/pods?all_namespaces=true: null`.
#[test]
fn a_url_that_is_not_a_hub_is_named() {
    let port = not_a_hub();
    for args in [
        &["ps", "-A"][..],
        &["trace", "exec", "-A", "--duration", "2s"][..],
    ] {
        let o = cli(&url(port), args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(
            e.contains(&format!("{} does not look like a podscope hub", url(port)))
                && e.contains(r#"with "404 page not found""#)
                && e.contains("check --hub"),
            "{args:?}: {e}"
        );
        assert!(!e.contains("null"), "{e}");
    }
    // gRPC with https:// to a plain hub: rustls's InvalidContentType used to
    // be repeated three times; it is explained, once.
    let (_hub, port) = hub();
    let o = cli(
        &format!("https://127.0.0.1:{port}"),
        &["--hub-api", "grpc", "ps", "-A"],
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("did not answer in TLS") && e.contains("use an http:// URL"),
        "{e}"
    );
    assert!(e.matches("InvalidContentType").count() <= 1, "{e}");
}

/// `ps -A` used to hang for ever and `trace --duration 3s` for 20 s on a hub
/// that accepts and never answers: both fail on time, naming the hub and
/// what timed out.
#[test]
fn a_hub_that_never_answers_fails_on_time() {
    let port = silent_listener();
    let hub_url = url(port);
    let t = Instant::now();
    let o = cli(&hub_url, &["ps", "-A"]);
    let took = t.elapsed();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(took < Duration::from_secs(15), "ps took {took:?}");
    assert!(e.contains(&hub_url), "{e}");
    assert!(
        e.contains("GET /v1/pods") && e.contains("no response headers within 10s"),
        "{e}"
    );

    // The same over gRPC.
    let t = Instant::now();
    let o = cli(&hub_url, &["--hub-api", "grpc", "ps", "-A"]);
    let took = t.elapsed();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(took < Duration::from_secs(15), "ps over gRPC took {took:?}");
    // The response limit and the channel's keep-alive (5 s + 5 s) are both
    // 10 s: on a loaded machine either can say it first.
    assert!(
        e.contains(&hub_url)
            && (e.contains("GET /v1/pods: no answer within 10s")
                || e.contains("keep-alive timed out")),
        "{e}"
    );

    // --duration 3s: over within the duration and the 5 s grace.
    let t = Instant::now();
    let o = cli(
        &hub_url,
        &["trace", "exec", "-A", "--wait", "--duration", "3s"],
    );
    let took = t.elapsed();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        took < Duration::from_secs(10),
        "trace --duration 3s took {took:?}: {e}"
    );
    assert!(e.contains(&hub_url), "{e}");
    assert!(e.contains("POST /v1/sessions: no response headers"), "{e}");
    // Over gRPC too.
    let t = Instant::now();
    let o = cli(
        &hub_url,
        &[
            "--hub-api",
            "grpc",
            "trace",
            "exec",
            "-A",
            "--wait",
            "--duration",
            "3s",
        ],
    );
    let took = t.elapsed();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        took < Duration::from_secs(10),
        "gRPC trace --duration 3s took {took:?}: {e}"
    );
    assert!(
        e.contains(&hub_url) && e.contains("POST /v1/sessions: no answer within"),
        "{e}"
    );
}

/// What lets the CLI tell a quiet session from a stuck hub: with
/// `?keepalive=N` the event stream sends an empty line after N s of silence.
#[test]
fn the_event_stream_keeps_alive_when_asked() {
    let (_hub, port) = hub();
    let created = request(
        &url(port),
        "POST",
        "/v1/sessions",
        Some(TOKEN),
        Some(r#"{"all_namespaces":true,"probes":["exec"],"start":false}"#),
        &[],
    )
    .unwrap()
    .json()
    .unwrap();
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}/events");
    let bad = request(
        &url(port),
        "GET",
        &format!("{path}?keepalive=0"),
        Some(TOKEN),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.json().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("1 to 300"));
    let r = request(
        &url(port),
        "GET",
        &format!("{path}?keepalive=1"),
        Some(TOKEN),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let t = Instant::now();
    let mut lines = r.lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["kind"], "session");
    assert_eq!(lines.next().unwrap().unwrap(), "");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// An agent whose stderr goes to a file, read while it runs.
struct Agent {
    _p: Proc,
    log: PathBuf,
}

impl Agent {
    fn start(port: u16, node: &str, tag: &str) -> Agent {
        let log = std::env::temp_dir().join(format!(
            "podscope-hub-cli-agent-{}-{tag}.log",
            std::process::id()
        ));
        let child = bin()
            .args(["agent", "--hub", &url(port), "--node", node, "--token-file"])
            .arg(token_file())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            _p: Proc(child),
            log,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

fn node_view(port: u16, node: &str) -> Option<Value> {
    let v = request(&url(port), "GET", "/v1/nodes", Some(TOKEN), None, &[])
        .ok()?
        .json()
        .ok()?;
    v.as_array()?.iter().find(|n| n["node"] == node).cloned()
}

/// Two agents started with the same --node used to take the link from each
/// other in a loop: the second is refused, naming the node, and keeps being
/// refused while the first keeps its link.
#[test]
fn a_second_agent_with_the_same_node_is_refused() {
    let hub_log =
        std::env::temp_dir().join(format!("podscope-hub-cli-hub-{}.log", std::process::id()));
    let (_hub, port) = hub_logging_to(Some(&hub_log));
    let first = Agent::start(port, "dup-node", "first");
    common::wait_for(
        "the first agent to register",
        Duration::from_secs(15),
        || node_view(port, "dup-node").is_some_and(|n| n["state"] == "up"),
    );
    let registered = node_view(port, "dup-node").unwrap()["registered"].clone();
    let second = Agent::start(port, "dup-node", "second");
    // Refused, and refused again when it re-dials (not a one-off).
    common::wait_for(
        "the second agent to be refused twice",
        Duration::from_secs(20),
        || {
            second
                .stderr()
                .matches("the hub refused this agent")
                .count()
                >= 2
        },
    );
    let e = second.stderr();
    assert!(
        e.contains("node dup-node is already connected from another agent")
            && e.contains("give this agent its own --node"),
        "{e}"
    );
    assert!(!e.contains("registered with the hub"), "{e}");
    // The first one was never displaced.
    let n = node_view(port, "dup-node").unwrap();
    assert_eq!(n["state"], "up");
    assert_eq!(
        n["registered"], registered,
        "the first agent's link was replaced"
    );
    assert_eq!(
        first.stderr().matches("registered with the hub").count(),
        1,
        "{}",
        first.stderr()
    );
    // Once the first is gone, the node name is free again.
    drop(first);
    common::wait_for(
        "the second agent to take the node",
        Duration::from_secs(20),
        || second.stderr().contains("registered with the hub"),
    );
}

/// The hub's REST errors used to come in axum's plain text for 404, 405 and
/// 413, and a JSON body sent as another content type was read anyway: every
/// error is now `{"error": "..."}`, and such a body gets 415.
#[test]
fn rest_errors_have_the_documented_shape() {
    let (_hub, port) = hub();
    let base = url(port);
    let error_of = |r: podscope_cluster::http::Response| -> (u16, Option<String>, String) {
        let status = r.status;
        let ct = r.header("content-type").map(str::to_string);
        let v: Value = r.json().unwrap_or(Value::Null);
        (status, ct, v["error"].as_str().unwrap_or("").to_string())
    };
    let body = r#"{"all_namespaces":true,"probes":["exec"],"start":false}"#;
    // 404: a path the API does not have (with and without a token).
    for tok in [Some(TOKEN), None] {
        let (st, ct, e) = error_of(request(&base, "GET", "/v1/nosuch", tok, None, &[]).unwrap());
        assert_eq!(st, 404);
        assert_eq!(ct.as_deref(), Some("application/json"));
        assert!(
            e.contains("no such path: GET /v1/nosuch") && e.contains("/openapi.json"),
            "{e}"
        );
    }
    // 405: a method a path does not take.
    let (st, ct, e) =
        error_of(request(&base, "PATCH", "/v1/sessions", Some(TOKEN), Some(body), &[]).unwrap());
    assert_eq!(st, 405);
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert!(
        e.contains("PATCH is not allowed on /v1/sessions; it takes GET, POST, DELETE"),
        "{e}"
    );
    // 413: a body over the limit.
    let big = format!(r#"{{"probes":["exec"],"pod":"{}"}}"#, "a".repeat(3 << 20));
    let (st, ct, e) =
        error_of(request(&base, "POST", "/v1/sessions", Some(TOKEN), Some(&big), &[]).unwrap());
    assert_eq!(st, 413);
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert!(e.contains("too large: at most 2 MiB"), "{e}");
    // 415: JSON sent as another content type.
    for ct_sent in ["text/plain", "application/x-www-form-urlencoded"] {
        let (st, ct, e) = error_of(
            request(
                &base,
                "POST",
                "/v1/sessions",
                Some(TOKEN),
                Some(body),
                &[("Content-Type", ct_sent)],
            )
            .unwrap(),
        );
        assert_eq!(st, 415, "{ct_sent}");
        assert_eq!(ct.as_deref(), Some("application/json"));
        assert!(
            e.contains("send 'Content-Type: application/json'") && e.contains(ct_sent),
            "{e}"
        );
    }
    assert_eq!(sessions(port), serde_json::json!([]), "nothing was created");
    // application/json (with parameters) is still read.
    let r = request(
        &base,
        "POST",
        "/v1/sessions",
        Some(TOKEN),
        Some(body),
        &[("Content-Type", "application/json; charset=utf-8")],
    )
    .unwrap();
    assert_eq!(r.status, 201);
}

/// A hub that stops answering in the middle of a session (SIGSTOP: its
/// socket stays open, nothing comes): `trace --duration 3s` still ends by
/// the duration and its 5 s grace, over REST and gRPC, and says why.
#[test]
fn a_hub_that_freezes_mid_session_ends_the_trace_on_time() {
    for api_kind in ["rest", "grpc"] {
        let (hub, port) = hub();
        let (mut child, rx, mut err) = started_cli(
            &url(port),
            api_kind,
            &["trace", "exec", "-A", "--wait", "--duration", "3s"],
        );
        let t = Instant::now();
        let status = Command::new("kill")
            .args(["-STOP", &hub.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = child.0.wait().unwrap().code();
        let took = t.elapsed();
        err.extend(rx.iter());
        let err = err.join("\n");
        assert_eq!(code, Some(1), "{api_kind}: {err}");
        assert!(
            took < Duration::from_secs(10),
            "{api_kind}: took {took:?}: {err}"
        );
        assert!(
            err.contains("did not end within 5s after --duration") && err.contains(&url(port)),
            "{api_kind}: {err}"
        );
        let _ = Command::new("kill")
            .args(["-CONT", &hub.0.id().to_string()])
            .status();
    }
}

/// A trace without --duration whose hub freezes (SIGSTOP) mid-session used
/// to wait for ever over gRPC: the stream had no keep-alive. Now the
/// channel's HTTP/2 pings go unanswered, the stream breaks, and after the
/// CLI's reconnect window (it rides through hub restarts) it fails, naming
/// the hub; REST finds it through the stream's keep-alive lines. Both APIs
/// run at once.
#[test]
fn a_frozen_hub_ends_a_trace_without_duration() {
    let runs: Vec<_> = ["rest", "grpc"]
        .into_iter()
        .map(|api_kind| {
            std::thread::spawn(move || {
                let (hub, port) = hub();
                let (mut child, rx, mut err) =
                    started_cli(&url(port), api_kind, &["trace", "exec", "-A", "--wait"]);
                let pid = hub.0.id().to_string();
                assert!(Command::new("kill")
                    .args(["-STOP", &pid])
                    .status()
                    .unwrap()
                    .success());
                let t = Instant::now();
                // Bounded: keep-alive (about 15 s) + the reconnect window (45 s).
                let mut code = None;
                while t.elapsed() < Duration::from_secs(90) {
                    if let Some(s) = child.0.try_wait().unwrap() {
                        code = s.code();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let took = t.elapsed();
                drop(child);
                let _ = Command::new("kill").args(["-CONT", &pid]).status();
                err.extend(rx.try_iter());
                (api_kind, code, took, err.join("\n"), url(port))
            })
        })
        .collect();
    for r in runs {
        let (api_kind, code, took, err, hub_url) = r.join().unwrap();
        eprintln!("{api_kind}: the trace ended {took:?} after the hub froze");
        assert_eq!(
            code,
            Some(1),
            "{api_kind}: still running after {took:?}: {err}"
        );
        assert!(
            err.contains(&format!("the hub at {hub_url} stopped answering")),
            "{api_kind}: {err}"
        );
    }
}

/// A CLI through the hub `hub_url` with `--hub-api api_kind` and `args`,
/// running, with its stderr lines coming through the receiver; returns once
/// it says its session started ("Ctrl-C to stop"), with the lines so far.
fn started_cli(
    hub_url: &str,
    api_kind: &str,
    args: &[&str],
) -> (Proc, std::sync::mpsc::Receiver<String>, Vec<String>) {
    let mut child = Proc(
        bin()
            .args(["--hub", hub_url, "--token-file"])
            .arg(token_file())
            .args(["--hub-api", api_kind])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut err = Vec::new();
    while !err.iter().any(|l: &String| l.contains("Ctrl-C to stop")) {
        err.push(
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("the session to start: {err:?}")),
        );
    }
    (child, rx, err)
}
