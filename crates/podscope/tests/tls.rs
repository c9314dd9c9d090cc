//! Cluster mode over TLS with real processes and real sockets: a hub with
//! `--tls-cert/--tls-key` (a throwaway CA and certificate made with the
//! openssl CLI), the CLI and an agent with `--tls-ca`, and the mistakes a
//! user makes (no `--tls-ca`, http:// to the TLS port, https:// to a plain
//! hub, a certificate without its key), each with a clear error and no hang.
//! No pods are needed: an agent without a container runtime still registers.
//! With PODBED_SOCKET (the containerd test bed) and root, a real pod's exec
//! events are also traced through the TLS hub.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, wait_for};
use podscope_cluster::auth::Bearer;
use podscope_cluster::http::{request, request_with, Response};
use podscope_cluster::tls::ClientTls;
use serde_json::{json, Value};

const TOKEN: &str = "tls-test-token-9d2e";

/// A throwaway CA and a hub certificate for 127.0.0.1 and localhost, in a
/// temporary directory removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new() -> Certs {
        let c = Certs {
            dir: common::make_certs("tls"),
        };
        std::fs::write(c.path("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(c.path("bad-token"), "not-the-token\n").unwrap();
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    fn trust(&self) -> ClientTls {
        ClientTls::new(Some(&self.path("ca.pem"))).unwrap()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process killed on drop (by its own pid); its stderr collected by a thread.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, buf) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines() {
                let Ok(l) = l else { break };
                let mut b = buf.lock().unwrap();
                b.push_str(&l);
                b.push('\n');
            }
        });
        Proc { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podscope"))
}

/// Runs podscope to the end, failing the test if it takes over 20 s (a hang).
fn run(args: &[&str]) -> Output {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("podscope {args:?} hung for 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tls_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

fn plain_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A hub on 127.0.0.1:port, with TLS when `cert` names a certificate (NAME.pem, NAME.key).
fn hub(c: &Certs, port: u16, cert: Option<&str>) -> Proc {
    let mut cmd = bin();
    cmd.args(["hub", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--token-file", &c.s("token")]);
    if let Some(name) = cert {
        cmd.args(["--tls-cert", &c.s(&format!("{name}.pem"))])
            .args(["--tls-key", &c.s(&format!("{name}.key"))]);
    }
    let p = Proc::spawn(&mut cmd);
    wait_for("the hub to listen", Duration::from_secs(10), || {
        p.stderr().contains("listening on")
    });
    p
}

fn agent(c: &Certs, url: &str, node: &str, runtime: &str, extra: &[&str]) -> Proc {
    Proc::spawn(
        bin()
            .args(["agent", "--hub", url, "--node", node])
            .args(["--token-file", &c.s("token")])
            .args(["--runtime-endpoint", runtime, "--pod-refresh", "500ms"])
            .args(extra),
    )
}

fn api(c: &Certs, port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let b = body.map(|b| b.to_string());
    let r = request_with(
        Some(&c.trust()),
        &tls_url(port),
        method,
        path,
        Some(TOKEN),
        b.as_deref(),
        &[],
    )
    .unwrap();
    let status = r.status;
    (status, r.json().unwrap_or(Value::Null))
}

fn nodes_up(c: &Certs, port: u16) -> Vec<String> {
    let (_, v) = api(c, port, "GET", "/v1/nodes", None);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "up")
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect()
}

/// A session's NDJSON records, streamed over TLS into a channel by a thread.
fn stream(c: &Certs, port: u16, id: &str) -> mpsc::Receiver<Value> {
    let r: Response = request_with(
        Some(&c.trust()),
        &tls_url(port),
        "GET",
        &format!("/v1/sessions/{id}/events"),
        Some(TOKEN),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in r.lines() {
            let Ok(l) = l else { break };
            if tx.send(serde_json::from_str::<Value>(&l).unwrap()).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn cli_through_a_tls_hub() {
    let c = Certs::new();
    let port = free_port();
    let _hub = hub(&c, port, Some("hub"));
    let (url, ca, tok) = (tls_url(port), c.s("ca.pem"), c.s("token"));

    // ps -A over TLS with the CA: works (no agents, so just the header).
    let out = run(&[
        "--hub",
        &url,
        "--tls-ca",
        &ca,
        "--token-file",
        &tok,
        "ps",
        "-A",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NODE"));
    // By name too: the certificate has DNS:localhost.
    let local = format!("https://localhost:{port}");
    let out = run(&[
        "--hub",
        &local,
        "--tls-ca",
        &ca,
        "--token-file",
        &tok,
        "ps",
        "-A",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));

    // Without --tls-ca the system's CAs do not know ours: "not trusted", and what to do.
    let out = run(&["--hub", &url, "--token-file", &tok, "ps", "-A"]);
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(e.contains("not trusted") && e.contains("--tls-ca"), "{e}");
    // Another CA is no better, and the message names the file.
    let other = c.s("other-ca.pem");
    let out = run(&[
        "--hub",
        &url,
        "--tls-ca",
        &other,
        "--token-file",
        &tok,
        "ps",
        "-A",
    ]);
    let e = stderr_of(&out);
    assert!(!out.status.success());
    assert!(
        e.contains("not trusted") && e.contains("other-ca.pem"),
        "{e}"
    );
    // A hub whose certificate is for another name: not trusted, and why.
    let port2 = free_port();
    let _elsewhere = hub(&c, port2, Some("elsewhere"));
    let out = run(&[
        "--hub",
        &tls_url(port2),
        "--tls-ca",
        &ca,
        "--token-file",
        &tok,
        "ps",
    ]);
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(
        e.contains("not trusted") && e.contains("not valid for") && e.contains("elsewhere.example"),
        "{e}"
    );

    // The bearer token still counts over TLS: 401, nothing else.
    let out = run(&[
        "--hub",
        &url,
        "--tls-ca",
        &ca,
        "--token-file",
        &c.s("bad-token"),
        "ps",
        "-A",
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("401"), "{}", stderr_of(&out));
    let trust = c.trust();
    for (path, tok, want) in [
        ("/v1/nodes", None, 401),
        ("/v1/nodes", Some("wrong"), 401),
        ("/v1/nodes", Some(TOKEN), 200),
        ("/healthz", None, 200),
        ("/readyz", None, 200),
    ] {
        let r = request_with(Some(&trust), &url, "GET", path, tok, None, &[]).unwrap();
        assert_eq!(r.status, want, "GET {path} with token {tok:?}");
    }

    // http:// to the TLS port: a clear 400 saying to use https://, not a hang.
    let out = run(&["--hub", &plain_url(port), "--token-file", &tok, "ps", "-A"]);
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(e.contains("TLS only") && e.contains("https://"), "{e}");
    let r = request(&plain_url(port), "GET", "/healthz", None, None, &[]).unwrap();
    assert_eq!(r.status, 400);
    // --tls-ca with an http:// URL is refused rather than quietly unencrypted.
    let out = run(&[
        "--hub",
        &plain_url(port),
        "--tls-ca",
        &ca,
        "--token-file",
        &tok,
        "ps",
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("https://"), "{}", stderr_of(&out));
    // An unreadable --tls-ca is named.
    let out = run(&[
        "--hub",
        &url,
        "--tls-ca",
        "/nonexistent/ca.pem",
        "--token-file",
        &tok,
        "ps",
    ]);
    assert!(
        stderr_of(&out).contains("/nonexistent/ca.pem"),
        "{}",
        stderr_of(&out)
    );
}

/// A hub given its CA's own certificate used to make the CLI say
/// `invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`.
#[test]
fn a_ca_certificate_on_the_hub_is_explained() {
    let c = Certs::new();
    let port = free_port();
    let _hub = hub(&c, port, Some("ca"));
    let (ca, tok) = (c.s("ca.pem"), c.s("token"));
    let out = run(&[
        "--hub",
        &tls_url(port),
        "--tls-ca",
        &ca,
        "--token-file",
        &tok,
        "ps",
        "-A",
    ]);
    let e = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("it is a CA certificate (basicConstraints CA:TRUE), not a server certificate")
            && e.contains("Making a certificate"),
        "{e}"
    );
    assert!(!e.contains("OtherError"), "{e}");
}

#[test]
fn https_url_to_a_plain_hub() {
    let c = Certs::new();
    let port = free_port();
    let _hub = hub(&c, port, None);
    let tok = c.s("token");
    let out = run(&[
        "--hub",
        &tls_url(port),
        "--tls-ca",
        &c.s("ca.pem"),
        "--token-file",
        &tok,
        "ps",
        "-A",
    ]);
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(e.contains("plain HTTP") && e.contains("http://"), "{e}");
    // The agent says the same, and keeps retrying.
    let a = agent(
        &c,
        &tls_url(port),
        "node-tls",
        "unix:///nonexistent.sock",
        &["--tls-ca", &c.s("ca.pem")],
    );
    wait_for("the agent's error", Duration::from_secs(10), || {
        a.stderr().contains("plain HTTP")
    });
}

#[test]
fn hub_certificate_flags() {
    let c = Certs::new();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let tok = c.s("token");
    let hub = |flags: &[&str]| {
        let mut a = vec!["hub", "--listen", &listen, "--token-file", &tok];
        a.extend(flags);
        let out = run(&a);
        assert!(
            !out.status.success(),
            "the hub must not start with {flags:?}"
        );
        stderr_of(&out)
    };
    let (cert, key) = (c.s("hub.pem"), c.s("hub.key"));
    let e = hub(&["--tls-cert", &cert]);
    assert!(e.contains("--tls-cert needs --tls-key"), "{e}");
    let e = hub(&["--tls-key", &key]);
    assert!(e.contains("--tls-key needs --tls-cert"), "{e}");
    let e = hub(&["--tls-cert", "/nonexistent/hub.pem", "--tls-key", &key]);
    assert!(
        e.contains("/nonexistent/hub.pem") && e.contains("cannot read"),
        "{e}"
    );
    // Files swapped: neither holds what its flag wants, and the message says so.
    let e = hub(&["--tls-cert", &key, "--tls-key", &key]);
    assert!(e.contains(&key) && e.contains("no certificate"), "{e}");
    let e = hub(&["--tls-cert", &cert, "--tls-key", &cert]);
    assert!(e.contains(&cert) && e.contains("no private key"), "{e}");
    let e = hub(&["--tls-cert", &cert, "--tls-key", &c.s("ca.key")]);
    assert!(e.contains("does not belong"), "{e}");
}

#[test]
fn agent_through_a_tls_hub() {
    let c = Certs::new();
    let port = free_port();
    let mut hub_proc = hub(&c, port, Some("hub"));
    let (url, ca) = (tls_url(port), c.s("ca.pem"));
    // With PODBED_SOCKET and root a real pod is traced; else the agent has no
    // container runtime, which is enough to register and run a session.
    let podbed = std::env::var_os("PODBED_SOCKET").is_some() && is_root();
    let runtime = if podbed {
        common::endpoint()
    } else {
        eprintln!("tls: PODBED_SOCKET unset or not root: the agent runs without pods, so no events are traced over TLS (only registration, the session and its end)");
        "unix:///nonexistent.sock".to_string()
    };
    let _good = agent(&c, &url, "node-tls", &runtime, &["--tls-ca", &ca]);
    let untrusting = agent(&c, &url, "node-no-ca", &runtime, &[]);
    let plain = agent(&c, &plain_url(port), "node-plain", &runtime, &[]);
    wait_for(
        "the agent with --tls-ca to register",
        Duration::from_secs(10),
        || nodes_up(&c, port) == ["node-tls"],
    );
    wait_for("the other agents' errors", Duration::from_secs(10), || {
        untrusting.stderr().contains("not trusted") && plain.stderr().contains("TLS only")
    });
    assert!(
        untrusting.stderr().contains("--tls-ca"),
        "{}",
        untrusting.stderr()
    );
    assert!(
        hub_proc.stderr().contains("does not trust"),
        "{}",
        hub_proc.stderr()
    );
    assert_eq!(nodes_up(&c, port), ["node-tls"]);

    // A trace through the hub over TLS: gRPC (h2) from the agent, the NDJSON
    // stream (HTTP/1.1, chunked) to the CLI.
    let sfx = common::suffix();
    let ns = format!("tls-{sfx}");
    let _pod = podbed.then(|| {
        common::pod(
            &format!("web-{sfx}"),
            &ns,
            &[],
            &[(
                "main",
                "while true; do cat /etc/hostname >/dev/null; sleep 0.1; done",
            )],
        )
    });
    // --wait: the agent may not have reported the new pod yet (and without
    // the test bed there may be no pod at all).
    let sel: Vec<&str> = if podbed {
        vec!["-n", &ns, "--wait"]
    } else {
        vec!["-A", "--wait"]
    };
    let mut args = vec!["--hub", &url, "--tls-ca", &ca, "--token-file"];
    let tok = c.s("token");
    args.extend([tok.as_str(), "trace", "exec"]);
    args.extend(&sel);
    args.extend(["-o", "json", "--duration", "4s"]);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.last().unwrap()["kind"], "end", "{recs:?}");
    if podbed {
        let events = recs
            .iter()
            .filter(|r| r["probe"] == "exec" && r["node"] == "node-tls")
            .count();
        assert!(events > 0, "no exec events over TLS: {recs:?}");
    }

    // SIGTERM: streaming clients over TLS are told to reconnect (the next hub
    // resumes the session), and the hub exits.
    let (st, s) = api(
        &c,
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"all_namespaces": true, "probes": ["exec"]})),
    );
    assert_eq!(st, 201, "{s}");
    let rx = stream(&c, port, s["id"].as_str().unwrap());
    let _ = Command::new("kill")
        .args(["-TERM", &hub_proc.child.id().to_string()])
        .status();
    let t = Instant::now();
    let mut last = Value::Null;
    while let Ok(v) = rx.recv_timeout(Duration::from_secs(5).saturating_sub(t.elapsed())) {
        last = v;
        if last["kind"] == "reconnect" {
            break;
        }
    }
    assert_eq!(last["kind"], "reconnect", "{last}");
    wait_for("the hub to exit", Duration::from_secs(5), || {
        hub_proc.child.try_wait().unwrap().is_some()
    });
}

fn is_root() -> bool {
    // The effective uid from /proc/self/status: no unsafe, no extra dependency.
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// The agent's own API (`--listen`) with `--listen-tls-cert/-key`: health
/// and the gRPC service over TLS; plain HTTP to it is told to use TLS.
#[test]
fn agent_api_over_tls() {
    use podscope_cluster::proto::agent_client::AgentClient;
    use podscope_cluster::proto::HealthRequest;

    let c = Certs::new();
    let (hub_port, api_port) = (free_port(), free_port());
    let _agent = agent(
        &c,
        &plain_url(hub_port),
        "node-api-tls",
        "unix:///nonexistent.sock",
        &[
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--listen-tls-cert",
            &c.s("hub.pem"),
            "--listen-tls-key",
            &c.s("hub.key"),
        ],
    );
    let get = |path: &str| {
        request_with(
            Some(&c.trust()),
            &tls_url(api_port),
            "GET",
            path,
            None,
            None,
            &[],
        )
    };
    wait_for("the agent API over TLS", Duration::from_secs(10), || {
        get("/healthz").is_ok_and(|r| r.status == 200)
    });
    assert_eq!(get("/readyz").unwrap().status, 503, "no hub: not ready");
    let r =
        podscope_cluster::http::request(&plain_url(api_port), "GET", "/healthz", None, None, &[])
            .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().unwrap().contains("TLS only"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(tls_url(api_port))
            .unwrap()
            .tls_config(c.trust().tonic_config())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = AgentClient::with_interceptor(channel, Bearer::new(TOKEN).unwrap());
        let h = client.health(HealthRequest {}).await.unwrap().into_inner();
        assert_eq!(h.node, "node-api-tls");
        assert!(!h.linked);
    });
}
