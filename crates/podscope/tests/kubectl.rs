//! `kubectl podscope`: the real kubectl runs this binary as its plugin
//! (`kubectl-podscope` on PATH), which reads a kubeconfig with kube-rs and
//! reaches a real hub, with a real agent and a real containerd pod behind
//! it, through the API server's service proxy.
//!
//! The API server is a STAND-IN (nothing can run a real kube-apiserver on
//! our machines): `FakeApiServer` below answers the three things the plugin
//! uses (GET a Service, GET a Secret, and /api/v1/namespaces/NS/services/
//! NAME:PORT/proxy/...), checks the kubeconfig's bearer token, and, like the
//! real one, drops the Authorization header before it proxies to the hub.
//! Everything behind it is real. Needs root and PODBED_SOCKET.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const HUB_TOKEN: &str = "kube-test-token-7d2e";
/// base64 of HUB_TOKEN, as a Secret's data holds it.
const HUB_TOKEN_B64: &str = "a3ViZS10ZXN0LXRva2VuLTdkMmU=";
const API_TOKEN: &str = "api-server-token-19ab";

/// One request as the stand-in API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    api_token_ok: bool,
    hub_token_header: bool,
}

struct FakeApiServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApiServer {
    fn start(hub_port: u16) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let log = log.clone();
                std::thread::spawn(move || serve(conn, hub_port, &log));
            }
        });
        FakeApiServer { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn status_json(code: u16, reason: &str, msg: &str) -> String {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": msg, "reason": reason, "code": code})
    .to_string()
}

fn reply(conn: &mut TcpStream, code: u16, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// One request per connection (answers say `connection: close`).
fn serve(mut conn: TcpStream, hub_port: u16, log: &Mutex<Vec<Seen>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let api_token_ok = header("authorization") == Some(&format!("Bearer {API_TOKEN}"));
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        api_token_ok,
        hub_token_header: header("x-podscope-authorization").is_some(),
    });
    if !api_token_ok {
        return reply(
            &mut conn,
            401,
            &status_json(401, "Unauthorized", "Unauthorized"),
        );
    }
    let proxy = "/api/v1/namespaces/podscope/services/podscope-hub:7700/proxy";
    if let Some(rest) = path.strip_prefix(proxy) {
        // The real API server authenticates, removes Authorization, and
        // proxies the rest to the Service's endpoint.
        let mut hub = TcpStream::connect(("127.0.0.1", hub_port)).unwrap();
        let rest = if rest.is_empty() { "/" } else { rest };
        let mut out = format!(
            "{method} {rest} HTTP/1.1\r\nhost: 127.0.0.1:{hub_port}\r\nconnection: close\r\n"
        );
        for (k, v) in &headers {
            if !matches!(k.as_str(), "authorization" | "host" | "connection") {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("\r\n");
        hub.write_all(out.as_bytes()).unwrap();
        hub.write_all(&body).unwrap();
        // Streams the answer (chunked NDJSON included) as it comes.
        let _ = std::io::copy(&mut hub, &mut conn);
        return;
    }
    match (method.as_str(), path.split('?').next().unwrap_or("")) {
        ("GET", "/api/v1/namespaces/podscope/services/podscope-hub") => reply(
            &mut conn,
            200,
            &serde_json::json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "podscope-hub", "namespace": "podscope"},
                "spec": {"ports": [{"name": "http", "port": 7700, "targetPort": 7700}]}})
            .to_string(),
        ),
        ("GET", "/api/v1/namespaces/podscope/secrets/podscope-token") => reply(
            &mut conn,
            200,
            &serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "podscope-token", "namespace": "podscope"},
                "data": {"token": HUB_TOKEN_B64}})
            .to_string(),
        ),
        (_, p) => reply(
            &mut conn,
            404,
            &status_json(404, "NotFound", &format!("{p} not found")),
        ),
    }
}

fn kubeconfig(dir: &Path, api_port: u16, namespace: &str, token: &str) -> PathBuf {
    let p = dir.join(format!("kubeconfig-{token}"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: stand-in
  cluster:
    server: http://127.0.0.1:{api_port}
users:
- name: tester
  user:
    token: {token}
contexts:
- name: stand-in
  context:
    cluster: stand-in
    user: tester
    namespace: {namespace}
- name: elsewhere
  context:
    cluster: stand-in
    user: tester
current-context: stand-in
"
        ),
    )
    .unwrap();
    p
}

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubectl ARGS` with a PATH where kubectl finds this binary as its plugin.
fn kubectl(plugins: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("kubectl")
        .args(args)
        .env("PATH", path)
        .env_remove("PODSCOPE_TOKEN")
        .env_remove("KUBECONFIG")
        .output()
        .expect("running kubectl (installed by scripts/setup.sh)")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn kubectl_plugin_through_the_api_server() {
    let socket = common::socket();
    let dir = std::env::temp_dir().join(format!("podscope-kubectl-{}", common::suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_podscope"), dir.join("kubectl-podscope"))
        .unwrap();
    let token = dir.join("hub-token");
    std::fs::write(&token, format!("{HUB_TOKEN}\n")).unwrap();

    // The real hub and agent.
    let hub_port = common::free_port();
    let bin = env!("CARGO_BIN_EXE_podscope");
    let _hub = Proc(
        Command::new(bin)
            .args([
                "hub",
                "--listen",
                &format!("127.0.0.1:{hub_port}"),
                "--enable-exec",
            ])
            .arg("--token-file")
            .arg(&token)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _agent = Proc(
        Command::new(bin)
            .args(["agent", "--hub", &format!("http://127.0.0.1:{hub_port}")])
            .args([
                "--node",
                "kube-node-1",
                "--pod-refresh",
                "500ms",
                "--enable-exec",
            ])
            .arg("--runtime-endpoint")
            .arg(format!("unix://{}", socket.display()))
            .arg("--token-file")
            .arg(&token)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // A real pod that execs `cat` every 300 ms, in the context's namespace.
    let ns = format!("kctl-{}", common::suffix());
    let pod_name = "api-0";
    let pod = common::pod(
        pod_name,
        &ns,
        &[("app", "api")],
        &[("main", "while true; do cat /dev/null; sleep 0.3; done")],
    );

    let api = FakeApiServer::start(hub_port);
    let kc = kubeconfig(&dir, api.port, &ns, API_TOKEN);
    let kc_s = kc.to_str().unwrap();

    // ps: no -n, so kubectl's rule applies: the context's namespace. No token
    // flag or variable, so the token comes from the Secret.
    let t = Instant::now();
    let mut listed = None;
    while t.elapsed() < Duration::from_secs(20) {
        let o = kubectl(
            &dir,
            &["podscope", "ps", "--kubeconfig", kc_s, "-o", "json"],
        );
        let (out, err) = text(&o);
        if o.status.success() {
            let rows: Vec<Value> = out
                .lines()
                .filter(|l| !l.trim().is_empty())
                .flat_map(|l| match serde_json::from_str::<Value>(l).unwrap() {
                    Value::Array(a) => a,
                    v => vec![v],
                })
                .collect();
            if rows.iter().any(|r| r["pod"] == pod_name) {
                listed = Some(rows);
                break;
            }
        } else {
            eprintln!("kubectl podscope ps: {err}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let rows = listed.expect("kubectl podscope ps never listed the pod");
    assert!(
        rows.iter()
            .all(|r| r["namespace"] == ns.as_str() && r["node"] == "kube-node-1"),
        "only the context namespace's pods, with their node: {rows:?}"
    );
    let seen = api.seen();
    assert!(seen.iter().all(|s| s.api_token_ok), "{seen:?}");
    assert!(seen.iter().any(
        |s| s.method == "GET" && s.path == "/api/v1/namespaces/podscope/secrets/podscope-token"
    ));
    let proxied: Vec<&Seen> = seen.iter().filter(|s| s.path.contains("/proxy/")).collect();
    assert!(
        proxied
            .iter()
            .any(|s| s.path.starts_with("/api/v1/namespaces/podscope/services/podscope-hub:7700/proxy/v1/pods")
                && s.hub_token_header),
        "the hub was reached through the service proxy with its token in X-Podscope-Authorization: {seen:?}"
    );

    // trace, kubectl style: -n and --pod, events from the real kernel.
    let o = kubectl(
        &dir,
        &[
            "podscope",
            "trace",
            "exec",
            "-n",
            &ns,
            "--pod",
            pod_name,
            "--kubeconfig",
            kc_s,
            "--duration",
            "6s",
            "-o",
            "json",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "kubectl podscope trace failed: {err}");
    let execs: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["probe"] == "exec")
        .collect();
    assert!(
        !execs.is_empty(),
        "no exec events through the API server: {out}\n{err}"
    );
    for e in &execs {
        assert_eq!(e["pod"], pod_name, "{e}");
        assert_eq!(e["namespace"], ns.as_str(), "{e}");
        assert_eq!(e["node"], "kube-node-1", "{e}");
    }

    // exec by pod name through the API server (podtracer's job, from kubectl):
    // a host tool in the pod's network namespace on its node.
    let o = kubectl(
        &dir,
        &[
            "podscope",
            "exec",
            "-n",
            &ns,
            "--pod",
            pod_name,
            "--kubeconfig",
            kc_s,
            "--",
            "ip",
            "-o",
            "addr",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "kubectl podscope exec failed: {err}");
    let ip = pod.pod.ip.clone().expect("the pod's IP");
    assert!(out.contains(&ip), "the pod's address {ip} in: {out}");

    // --token-file instead of the Secret: the Secret is not read.
    let secret_reads = |s: &[Seen]| s.iter().filter(|x| x.path.contains("/secrets/")).count();
    let before = secret_reads(&api.seen());
    let o = kubectl(
        &dir,
        &[
            "podscope",
            "ps",
            "-A",
            "--kubeconfig",
            kc_s,
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.contains(pod_name));
    assert_eq!(secret_reads(&api.seen()), before);

    // Errors that name what is wrong.
    let o = kubectl(
        &dir,
        &["podscope", "ps", "--kubeconfig", kc_s, "--context", "nope"],
    );
    let err = text(&o).1;
    assert!(!o.status.success());
    assert!(
        err.contains("no context \"nope\"") && err.contains("stand-in, elsewhere"),
        "{err}"
    );
    let o = kubectl(
        &dir,
        &[
            "podscope",
            "ps",
            "--kubeconfig",
            kc_s,
            "--hub",
            "kube://podscope/missing:7700",
        ],
    );
    let err = text(&o).1;
    assert!(!o.status.success());
    assert!(err.contains("no Service podscope/missing"), "{err}");
    let bad = kubeconfig(&dir, api.port, &ns, "wrong-api-token");
    let o = kubectl(
        &dir,
        &["podscope", "ps", "--kubeconfig", bad.to_str().unwrap()],
    );
    let err = text(&o).1;
    assert!(!o.status.success());
    assert!(
        err.contains("refused") && err.contains("Unauthorized"),
        "{err}"
    );

    // `kubectl podscope ui`: the forwarder runs until Ctrl-C and prints a
    // link that logs in with the Secret's token; the page, its cookie and
    // its API all work through the API server's service proxy.
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ui = Proc(
        Command::new("kubectl")
            .args(["podscope", "ui", "--kubeconfig", kc_s])
            .env("PATH", &path)
            .env_remove("PODSCOPE_TOKEN")
            .env_remove("KUBECONFIG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(ui.0.stderr.take().unwrap());
    let mut link = String::new();
    let mut said = String::new();
    while link.is_empty() {
        let mut l = String::new();
        assert!(
            err.read_line(&mut l).unwrap() > 0,
            "kubectl podscope ui ended: {said}"
        );
        said.push_str(&l);
        if let Some(u) = l
            .split_whitespace()
            .find(|w| w.contains("/ui/login?token="))
        {
            link = u.to_string();
        }
    }
    assert!(
        link.ends_with(&format!("/ui/login?token={HUB_TOKEN}")),
        "{link}"
    );
    let (base, login) = link.split_once("/ui/").unwrap();
    let r = podscope_cluster::http::request(base, "GET", &format!("/ui/{login}"), None, None, &[])
        .unwrap();
    assert_eq!(r.status, 303, "the link logs in");
    let cookie = r
        .header("set-cookie")
        .expect("a session cookie through the proxy")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let with = [("cookie", cookie.as_str())];
    let r = podscope_cluster::http::request(base, "GET", "/ui/", None, None, &with).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().unwrap().contains("app.js"));
    let t = Instant::now();
    loop {
        let r = podscope_cluster::http::request(base, "GET", "/ui/api/snapshot", None, None, &with)
            .unwrap();
        assert_eq!(r.status, 200);
        let snap = r.json().unwrap();
        let pods = snap["pods"].as_array().cloned().unwrap_or_default();
        if pods
            .iter()
            .any(|p| p["pod"] == pod_name && p["node"] == "kube-node-1")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the view through the proxy never listed the pod: {snap}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        api.seen()
            .iter()
            .any(|s| s.path.ends_with("/proxy/ui/api/snapshot") && s.api_token_ok),
        "the view's calls went through the API server"
    );
    drop(ui);

    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}
