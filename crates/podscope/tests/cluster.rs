//! Cluster mode with real processes: a hub and two agents, each agent on its
//! own real containerd (two "nodes" on one machine: the test bed at
//! PODBED_SOCKET and a second one this test starts), real pods, real probes.
//! Needs root and PODBED_SOCKET (testbed/podbed.sh up).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{socket, IMAGE};
use podscope_cluster::auth::Bearer;
use podscope_cluster::http::request;
use podscope_runtime::blocking::BlockingCriClient;
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use podscope_runtime::Pod;
use serde_json::{json, Value};

const TOKEN: &str = "test-token-4f1c";

/// The second "node": its own containerd, bridge and subnet; `down` on drop.
/// One test at a time has it (they share its directory and bridge).
struct Node2 {
    socket: PathBuf,
    _one: std::sync::MutexGuard<'static, ()>,
}

static NODE2: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The second test bed's settings for podbed.sh, each overridable so that
/// two checkouts can run this test at once (each with its own PODBED_* for
/// the first bed, too): PODSCOPE_TEST_NODE2_DIR, _BRIDGE and _SUBNET.
const NODE2_ENV: [(&str, &str, &str); 3] = [
    (
        "PODBED_DIR",
        "PODSCOPE_TEST_NODE2_DIR",
        "/run/podscope-node2",
    ),
    ("PODBED_BRIDGE", "PODSCOPE_TEST_NODE2_BRIDGE", "podbed2"),
    (
        "PODBED_SUBNET",
        "PODSCOPE_TEST_NODE2_SUBNET",
        "10.88.79.0/24",
    ),
];

fn podbed() -> Command {
    let mut c = Command::new("bash");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testbed/podbed.sh"
    ));
    for (var, over, default) in NODE2_ENV {
        c.env(var, std::env::var(over).unwrap_or_else(|_| default.into()));
    }
    c
}

impl Node2 {
    fn up() -> Node2 {
        let one = NODE2
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = podbed()
            .arg("up")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starting the second containerd failed"
        );
        let socket = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .lines()
            .last()
            .unwrap()
            .to_string();
        Node2 {
            socket: PathBuf::from(socket),
            _one: one,
        }
    }
}

impl Drop for Node2 {
    fn drop(&mut self) {
        let _ = podbed().arg("down").stdout(Stdio::null()).status();
    }
}

fn suffix() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:x}",
        (std::process::id() as u64 * 7919 + n as u64) % 0xfffff
    )
}

struct PodGuard {
    socket: PathBuf,
    pod: Pod,
    cgroup: String,
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = BlockingCriClient::connect(&self.socket) {
            let _ = c.remove_pod(self.pod.sandbox_id.as_deref().unwrap(), Some(&self.cgroup));
        }
    }
}

fn pod(socket: &Path, name: &str, ns: &str, script: &str) -> PodGuard {
    let spec = PodSpec::new(name, ns).unwrap().label("app", "web");
    let cs = vec![ContainerSpec::new("main", IMAGE, &["sh", "-c", script])];
    let mut client = BlockingCriClient::connect(socket).unwrap();
    let pod = client
        .run_pod(&spec, &cs)
        .unwrap_or_else(|e| panic!("creating pod {ns}/{name}: {e}"));
    PodGuard {
        socket: socket.to_path_buf(),
        pod,
        cgroup: spec.cgroup_parent(),
    }
}

/// A process killed on drop (by its own pid).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token_file() -> PathBuf {
    let p = std::env::temp_dir().join(format!("podscope-cluster-token-{}", std::process::id()));
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

fn hub(port: u16, extra: &[&str]) -> Proc {
    let child = bin()
        .args([
            "hub",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token-file",
        ])
        .arg(token_file())
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_for(Duration::from_secs(10), "the hub to listen", || {
        request(&url(port), "GET", "/healthz", None, None, &[]).is_ok_and(|r| r.status == 200)
    });
    p
}

fn agent(port: u16, node: &str, socket: &Path, token: &Path, extra: &[&str]) -> Proc {
    let child = bin()
        .args([
            "agent",
            "--hub",
            &url(port),
            "--node",
            node,
            "--runtime-endpoint",
        ])
        .arg(format!("unix://{}", socket.display()))
        .arg("--token-file")
        .arg(token)
        .args(["--pod-refresh", "500ms"])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A hub, its agent `{prefix}-node`, and one pod `{prefix}-N` in namespace
/// `{prefix}-N` that the hub already lists: the set-up of the tests that
/// need one node with one pod.
struct OnePod {
    port: u16,
    ns: String,
    name: String,
    _pod: PodGuard,
    _agent: Proc,
    _hub: Proc,
}

impl OnePod {
    fn up(prefix: &str) -> OnePod {
        let sock = socket();
        let tok = token_file();
        let port = common::free_port();
        let hub = hub(port, &[]);
        let agent = agent(port, &format!("{prefix}-node"), &sock, &tok, &[]);
        let sfx = suffix();
        let ns = format!("{prefix}-{sfx}");
        let name = format!("{prefix}-{sfx}");
        let pod = pod(&sock, &name, &ns, "while true; do sleep 0.3; done");
        wait_for(Duration::from_secs(30), "the hub to know the pod", || {
            let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
            v.as_array().is_some_and(|a| !a.is_empty())
        });
        OnePod {
            port,
            ns,
            name,
            _pod: pod,
            _agent: agent,
            _hub: hub,
        }
    }
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn api(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let b = body.map(|b| b.to_string());
    let r = request(&url(port), method, path, Some(TOKEN), b.as_deref(), &[]).unwrap();
    let status = r.status;
    (status, r.json().unwrap_or(Value::Null))
}

fn nodes_up(port: u16) -> Vec<String> {
    let (_, v) = api(port, "GET", "/v1/nodes", None);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "up")
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect()
}

/// Streams a session's NDJSON records into a channel, from a thread.
fn stream(port: u16, id: &str) -> mpsc::Receiver<Value> {
    let r = request(
        &url(port),
        "GET",
        &format!("/v1/sessions/{id}/events"),
        Some(TOKEN),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
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

/// Every record until `end`/`interrupted` or the stream closes.
fn collect(rx: &mpsc::Receiver<Value>, limit: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let t = Instant::now();
    while let Ok(v) = rx.recv_timeout(limit.saturating_sub(t.elapsed())) {
        let k = v["kind"].as_str().unwrap_or("").to_string();
        out.push(v);
        if k == "end" || k == "interrupted" {
            break;
        }
    }
    out
}

/// Creates a session on one node, opens its stream, waits until it runs.
fn start_session(port: u16, body: Value) -> (String, mpsc::Receiver<Value>) {
    let (st, s) = api(port, "POST", "/v1/sessions", Some(body));
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    let rx = stream(port, &id);
    wait_for(Duration::from_secs(20), "the session to run", || {
        all_running(port, &id, 1)
    });
    (id, rx)
}

/// Stops a session; its records up to its `end`.
fn stop_session(port: u16, id: &str, rx: &mpsc::Receiver<Value>) -> Vec<Value> {
    let (st, _) = api(
        port,
        "PUT",
        &format!("/v1/sessions/{id}"),
        Some(json!({"state": "stopped"})),
    );
    assert_eq!(st, 200);
    let recs = collect(rx, Duration::from_secs(20));
    assert_eq!(recs.last().unwrap()["kind"], "end", "{recs:?}");
    recs
}

fn all_running(port: u16, id: &str, nodes: usize) -> bool {
    let (_, s) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    let n = s["nodes"].as_object().cloned().unwrap_or_default();
    n.len() == nodes && n.values().all(|x| x["state"] == "running")
}

/// Hop joins across nodes (docs/otlp.md, "Across nodes"): a client pod on
/// node 1 (the test bed) calls a busybox httpd pod on node 2 (a second
/// containerd; the hosts' bridges route between the two pod subnets, as a
/// cluster's pod network does), PLAIN requests without trace context and
/// WITH requests with a `traceparent` of their own. Each agent exports the
/// hub session over OTLP itself; node 1 hands its CLIENT spans to the hub,
/// which hands them to node 2, whose SERVER span of the same request is
/// then parented to its CLIENT span: one trace per request with both hops,
/// parented hop by hop. wget's own count is the witness of the requests.
#[test]
fn a_request_across_nodes_is_one_trace_with_both_hops() {
    const PLAIN: usize = 6;
    const WITH: usize = 6;
    let sock1 = socket();
    let node2 = Node2::up();
    let tok = token_file();
    let port = common::free_port();
    let mut rx = common::otlp::GrpcReceiver::start(
        format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap(),
    );
    let _hub = hub(port, &[]);
    let export = [
        "--otlp-endpoint",
        &rx.url(),
        "--otlp-protocol",
        "grpc",
        "--metrics-probes",
        "exec",
    ];
    let _a1 = agent(port, "hop-node-1", &sock1, &tok, &export);
    let _a2 = agent(port, "hop-node-2", &node2.socket, &tok, &export);
    let sfx = suffix();
    let ns = format!("hop-{sfx}");
    let (srv_name, cli_name) = (format!("hop-api-{sfx}"), format!("hop-web-{sfx}"));
    let srv = pod(
        &node2.socket,
        &srv_name,
        &ns,
        "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    let ip = srv.pod.ip.clone().expect("the server pod's address");
    let sent: Vec<(String, String)> = (0..WITH)
        .map(|i| {
            (
                format!("{:032x}", 0x5eed_0000_u128 + ((i as u128 + 1) << 64)),
                format!("{:016x}", 0xca11_0000_u64 + i as u64),
            )
        })
        .collect();
    let mut script = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.2; done; ok=0; \
         i=0; while [ $i -lt {PLAIN} ]; do wget -q -O /dev/null http://{ip}:8080/index.html && ok=$((ok+1)); i=$((i+1)); done; "
    );
    for (t, s) in &sent {
        script.push_str(&format!(
            "wget -q -O /dev/null --header 'traceparent: 00-{t}-{s}-01' http://{ip}:8080/index.html && ok=$((ok+1)); "
        ));
    }
    script.push_str("echo $ok > /tmp/result; mkdir /tmp/done; sleep 3600");
    let web = pod(&sock1, &cli_name, &ns, &script);
    let web_pid = web.pod.containers[0].pid.expect("the client's pid");
    route_between(&web, &srv);
    wait_for(Duration::from_secs(15), "the hub to know both pods", || {
        let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
        v.as_array().is_some_and(|a| a.len() == 2)
    });
    let (st, v) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "probes": ["http"], "otlp": true})),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    wait_for(
        Duration::from_secs(20),
        "the session to run on both nodes",
        || all_running(port, &id, 2),
    );
    std::fs::write(format!("/proc/{web_pid}/root/tmp/go"), "").unwrap();
    let done = PathBuf::from(format!("/proc/{web_pid}/root/tmp/done"));
    wait_for(Duration::from_secs(60), "the client to finish", || {
        done.is_dir()
    });
    let result = std::fs::read_to_string(format!("/proc/{web_pid}/root/tmp/result")).unwrap();
    assert_eq!(
        result.trim(),
        (PLAIN + WITH).to_string(),
        "wget's own count of answered requests (is node 2's pod reachable from node 1's?)"
    );
    let requests = |spans: &[common::otlp::Got], pod: &str, kind: i32| -> Vec<common::otlp::Got> {
        spans
            .iter()
            .filter(|g| {
                g.span.kind == kind
                    && g.resource.get("k8s.pod.name").map(String::as_str) == Some(pod)
                    && g.attrs.contains_key("http.request.method")
            })
            .cloned()
            .collect()
    };
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    // The SERVER spans wait for their CLIENT spans from node 1 (at most
    // their hold and the remote hold, 4 s).
    wait_for(
        Duration::from_secs(30),
        "both ends of every request",
        || {
            let spans = rx.store.spans();
            requests(&spans, &cli_name, CLIENT).len() == PLAIN + WITH
                && requests(&spans, &srv_name, SERVER).len() == PLAIN + WITH
        },
    );
    let (st, v) = api(port, "DELETE", &format!("/v1/sessions/{id}"), None);
    assert_eq!(st, 200, "{v}");
    let session_span = |spans: &[common::otlp::Got], node: &str| {
        spans
            .iter()
            .find(|g| {
                g.attrs.get("podscope.session.id") == Some(&id)
                    && g.attrs.get("k8s.node.name").map(String::as_str) == Some(node)
            })
            .cloned()
    };
    wait_for(Duration::from_secs(15), "both nodes' session spans", || {
        let spans = rx.store.spans();
        session_span(&spans, "hop-node-1").is_some() && session_span(&spans, "hop-node-2").is_some()
    });
    rx.stop();
    let spans = rx.store.spans();
    let clients = requests(&spans, &cli_name, CLIENT);
    let servers = requests(&spans, &srv_name, SERVER);
    assert_eq!(clients.len(), PLAIN + WITH, "{clients:#?}");
    assert_eq!(servers.len(), PLAIN + WITH, "{servers:#?}");
    let mut parents = std::collections::BTreeSet::new();
    for s in &servers {
        assert_eq!(s.resource["k8s.node.name"], "hop-node-2", "{s:?}");
        assert_eq!(
            s.attrs["podscope.trace.parent"], "hop",
            "parented through the hub: {s:?}"
        );
        let c = clients
            .iter()
            .find(|c| c.span.span_id == s.span.parent_span_id)
            .unwrap_or_else(|| {
                panic!("no CLIENT span is this SERVER span's parent: {s:?}\n{clients:#?}")
            });
        assert_eq!(c.span.trace_id, s.span.trace_id, "one trace: {c:?} {s:?}");
        assert_eq!(c.resource["k8s.node.name"], "hop-node-1", "{c:?}");
        assert!(
            parents.insert(c.span.span_id.clone()),
            "one SERVER span per CLIENT span: {c:?}"
        );
    }
    // The requests with context are in their callers' traces, under the
    // span id on the wire; the others start traces of their own.
    let hexs = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for (t, sp) in &sent {
        let c = clients
            .iter()
            .find(|c| hexs(&c.span.trace_id) == *t)
            .unwrap_or_else(|| panic!("no CLIENT span in trace {t}: {clients:#?}"));
        assert_eq!(hexs(&c.span.parent_span_id), *sp, "{c:?}");
    }
    let own = clients
        .iter()
        .filter(|c| c.span.parent_span_id.is_empty())
        .count();
    assert_eq!(
        own, PLAIN,
        "the requests without context are roots: {clients:#?}"
    );
    let n1 = session_span(&spans, "hop-node-1").unwrap();
    let n2 = session_span(&spans, "hop-node-2").unwrap();
    let n = (PLAIN + WITH).to_string();
    assert_eq!(n1.attrs["podscope.requests.hops_out"], n, "{n1:?}");
    assert_eq!(n2.attrs["podscope.requests.hops_in"], n, "{n2:?}");
    assert_eq!(n2.attrs["podscope.requests.server_hop_remote"], n, "{n2:?}");
    assert_eq!(
        n2.attrs["podscope.requests.hops_in_unmatched"], "0",
        "{n2:?}"
    );
}

/// A pod network between two test beds, as a cluster's CNI makes one: the
/// host forwards, and each pod routes the other's address through its
/// bridge (a bed's pods only have their own subnet's route).
fn route_between(a: &PodGuard, b: &PodGuard) {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    for (from, to) in [(a, b), (b, a)] {
        let (ip, peer) = (from.pod.ip.clone().unwrap(), to.pod.ip.clone().unwrap());
        // The host's address on the pod's bridge is the pod's gateway.
        let out = Command::new("ip")
            .args(["-4", "-o", "route", "get", &ip])
            .output()
            .unwrap();
        let route = String::from_utf8_lossy(&out.stdout).to_string();
        let gw = route
            .split_whitespace()
            .skip_while(|w| *w != "src")
            .nth(1)
            .unwrap_or_else(|| panic!("no host address towards {ip}: {route}"))
            .to_string();
        let pid = from.pod.containers[0].pid.unwrap().to_string();
        let st = Command::new("nsenter")
            .args([
                "-t",
                &pid,
                "-n",
                "ip",
                "route",
                "add",
                &format!("{peer}/32"),
                "via",
                &gw,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "routing {ip} -> {peer} via {gw}");
    }
}

#[test]
fn two_nodes_through_the_hub() {
    let sock1 = socket();
    let node2 = Node2::up();
    let tok = token_file();
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let a1 = agent(port, "node-1", &sock1, &tok, &[]);
    let a2 = agent(port, "node-2", &node2.socket, &tok, &[]);
    wait_for(Duration::from_secs(10), "both agents to register", || {
        nodes_up(port).len() == 2
    });

    let sfx = suffix();
    let ns = format!("cl-{sfx}");
    let script = |tag: &str| format!("while true; do cat /{tag} 2>/dev/null; sleep 0.2; done");
    let _w1 = pod(&sock1, &format!("web-a-{sfx}"), &ns, &script("tag-web-a"));
    let _w2 = pod(
        &node2.socket,
        &format!("web-b-{sfx}"),
        &ns,
        &script("tag-web-b"),
    );
    let _o1 = pod(&sock1, &format!("other-{sfx}"), &ns, &script("tag-other"));

    // ps -A through the hub: both nodes' pods, each with its NODE.
    let tokf = tok.to_str().unwrap();
    wait_for(
        Duration::from_secs(10),
        "the new pods to reach the hub",
        || {
            let out = bin()
                .args([
                    "--hub",
                    &url(port),
                    "--token-file",
                    tokf,
                    "ps",
                    "-A",
                    "-o",
                    "json",
                ])
                .output()
                .unwrap();
            let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let node_of = |p: &str| {
                rows.iter()
                    .find(|r| r["pod"] == p)
                    .map(|r| r["node"].clone())
            };
            node_of(&format!("web-a-{sfx}")) == Some(json!("node-1"))
                && node_of(&format!("web-b-{sfx}")) == Some(json!("node-2"))
                && node_of(&format!("other-{sfx}")) == Some(json!("node-1"))
        },
    );
    let out = bin()
        .args(["--hub", &url(port), "--token-file", tokf, "ps", "-n", &ns])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NODE"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("node-2") && l.contains(&format!("web-b-{sfx}"))),
        "{text}"
    );

    // A REST session by selector: events from web-a (node-1) and web-b (node-2), nothing else.
    let (st, s) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(
            json!({"namespace": ns, "pod": "web-*", "container": "*", "probes": ["exec"], "start": false}),
        ),
    );
    assert_eq!(st, 201, "{s}");
    assert_eq!(s["state"], "created");
    let id = s["id"].as_str().unwrap().to_string();
    let rx = stream(port, &id);
    let (st, _) = api(
        port,
        "PUT",
        &format!("/v1/sessions/{id}"),
        Some(json!({"state": "running"})),
    );
    assert_eq!(st, 200);
    wait_for(
        Duration::from_secs(20),
        "both nodes' traces to attach",
        || all_running(port, &id, 2),
    );
    std::thread::sleep(Duration::from_secs(2));
    // List with wildcards.
    let (_, l) = api(port, "GET", "/v1/sessions?pod=web-*&state=running", None);
    assert!(l.as_array().unwrap().iter().any(|x| x["id"] == id.as_str()));
    let (_, l) = api(port, "GET", "/v1/sessions?pod=api-*", None);
    assert!(!l.as_array().unwrap().iter().any(|x| x["id"] == id.as_str()));
    let (st, _) = api(
        port,
        "PUT",
        &format!("/v1/sessions/{id}"),
        Some(json!({"state": "stopped"})),
    );
    assert_eq!(st, 200);
    let recs = collect(&rx, Duration::from_secs(20));
    let events: Vec<&Value> = recs.iter().filter(|r| r.get("pid").is_some()).collect();
    assert_eq!(recs.last().unwrap()["kind"], "end", "{recs:?}");
    let from = |node: &str, pod: &str| {
        events
            .iter()
            .filter(|e| e["node"] == node && e["pod"] == pod)
            .count()
    };
    assert!(
        from("node-1", &format!("web-a-{sfx}")) > 0,
        "no events from web-a on node-1"
    );
    assert!(
        from("node-2", &format!("web-b-{sfx}")) > 0,
        "no events from web-b on node-2"
    );
    for e in &events {
        let pod = e["pod"].as_str().unwrap_or("");
        assert!(
            pod.starts_with("web-"),
            "event from outside the selection: {e}"
        );
        assert_eq!(e["namespace"], ns.as_str());
        let want = if pod.starts_with("web-a") {
            "node-1"
        } else {
            "node-2"
        };
        assert_eq!(e["node"], want, "{e}");
    }
    let summaries: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "summary").collect();
    assert_eq!(summaries.len(), 2, "one summary per node: {recs:?}");
    let produced: u64 = summaries
        .iter()
        .map(|s| s["emitted"].as_u64().unwrap())
        .sum();
    assert_eq!(
        produced,
        events.len() as u64,
        "every produced event delivered"
    );
    let (_, s) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["events"].as_u64().unwrap(), events.len() as u64);
    assert_eq!(s["nodes"]["node-1"]["state"], "finished");

    // Routing: a session starts only on nodes with a matching pod, and on a
    // node where one appears while it runs.
    let (_, s) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "pod": "other-*", "probes": ["exec"]})),
    );
    let rid = s["id"].as_str().unwrap().to_string();
    let rrx = stream(port, &rid);
    wait_for(
        Duration::from_secs(20),
        "the session to run on node-1",
        || all_running(port, &rid, 1),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (_, v) = api(port, "GET", &format!("/v1/sessions/{rid}"), None);
    assert!(
        v["nodes"].get("node-2").is_none(),
        "node-2 has no other-* pod, so no part in the session: {v}"
    );
    let late = format!("other-late-{sfx}");
    let _o2 = pod(&node2.socket, &late, &ns, &script("tag-other-late"));
    let t = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "node-2 to join when its matching pod appears",
        || all_running(port, &rid, 2),
    );
    eprintln!("node-2 joined {:?} after its pod was created", t.elapsed());
    let mut from_late = 0;
    while let Ok(v) = rrx.recv_timeout(Duration::from_secs(15).saturating_sub(t.elapsed())) {
        if v.get("pid").is_some() {
            assert!(
                v["pod"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no pod: {v}"))
                    .starts_with("other-"),
                "{v}"
            );
            if v["node"] == "node-2" && v["pod"] == late.as_str() {
                from_late += 1;
                if from_late >= 3 {
                    break;
                }
            }
        }
    }
    assert!(from_late >= 3, "events from the late pod on node-2");
    let (st, _) = api(port, "DELETE", &format!("/v1/sessions/{rid}"), None);
    assert_eq!(st, 200);

    // Delete all.
    let (_, s2) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "pod": "other-*", "probes": ["tcp"], "start": false})),
    );
    let (st, d) = api(port, "DELETE", "/v1/sessions", None);
    assert_eq!(st, 200);
    assert_eq!(d["deleted"].as_array().unwrap().len(), 2, "{d}");
    let (st, _) = api(
        port,
        "GET",
        &format!("/v1/sessions/{}", s2["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(st, 404);

    // The CLI through the hub: the same JSON as a local trace, from both nodes.
    let out = bin()
        .args([
            "--hub",
            &url(port),
            "--token-file",
            tokf,
            "trace",
            "exec",
            "--pod",
            "web-*",
            "-n",
            &ns,
            "-o",
            "json",
            "--duration",
            "4s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|e| e["node"] == "node-2" && e["probe"] == "exec"));
    assert!(lines
        .iter()
        .any(|e| e["node"] == "node-1" && e["probe"] == "exec"));
    assert_eq!(lines.last().unwrap()["kind"], "end");
    let (_, l) = api(port, "GET", "/v1/sessions", None);
    assert!(
        l.as_array().unwrap().is_empty(),
        "the CLI deletes its session: {l}"
    );

    // Kill the hub mid-session and restart it: the agents keep their traces,
    // re-register, and the new hub resumes the session; clients reconnect.
    let (_, s) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "pod": "web-*", "probes": ["exec"]})),
    );
    let id = s["id"].as_str().unwrap().to_string();
    let mut cli = bin()
        .args([
            "--hub",
            &url(port),
            "--token-file",
            tokf,
            "trace",
            "exec",
            "--pod",
            "web-*",
            "-n",
            &ns,
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = stream(port, &id);
    wait_for(Duration::from_secs(20), "the session to run", || {
        all_running(port, &id, 2)
    });
    wait_for(Duration::from_secs(10), "the CLI's session to run", || {
        let (_, l) = api(port, "GET", "/v1/sessions?state=running", None);
        l.as_array().is_some_and(|a| a.len() == 2)
    });
    drop(_hub); // SIGKILL
    let recs = collect(&rx, Duration::from_secs(3));
    assert!(
        !recs.iter().any(|r| r["kind"] == "end"),
        "a killed hub cannot say end"
    );
    let restarted_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let _hub = hub(port, &[]);
    let t = Instant::now();
    wait_for(Duration::from_secs(8), "agents to re-register", || {
        nodes_up(port).len() == 2
    });
    eprintln!(
        "agents re-registered {:?} after the hub restarted",
        t.elapsed()
    );
    wait_for(Duration::from_secs(5), "the session to be resumed", || {
        let (st, v) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
        st == 200 && v["resumed"] == true && all_running(port, &id, 2)
    });
    // Events from both nodes after the restart, on a reconnected stream.
    let rx = stream(port, &id);
    let mut after: std::collections::BTreeSet<String> = Default::default();
    let t = Instant::now();
    while after.len() < 2 {
        let Ok(v) = rx.recv_timeout(Duration::from_secs(15).saturating_sub(t.elapsed())) else {
            break;
        };
        if v.get("pid").is_some() {
            after.insert(v["node"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(after.len(), 2, "events from both nodes after the restart");
    // The CLI reconnects by itself (it retries every 300 ms, independently
    // of the stream above): wait until it has printed an event from after
    // the restart, then stopping its session ends it cleanly.
    let cli_out = cli.stdout.take().unwrap();
    let (cli_tx, cli_rx) = mpsc::channel::<String>();
    let cli_reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = Vec::new();
        for l in std::io::BufReader::new(cli_out).lines() {
            let Ok(l) = l else { break };
            let _ = cli_tx.send(l.clone());
            all.push(l);
        }
        all
    });
    let after_restart = |l: &str| {
        serde_json::from_str::<Value>(l).is_ok_and(|e| {
            e.get("pid").is_some() && e["timestamp"].as_str().unwrap_or("") > restarted_at.as_str()
        })
    };
    let t = Instant::now();
    let mut cli_seen = false;
    while !cli_seen {
        let Ok(l) = cli_rx.recv_timeout(Duration::from_secs(15).saturating_sub(t.elapsed())) else {
            break;
        };
        cli_seen = after_restart(&l);
    }
    assert!(
        cli_seen,
        "the CLI printed no event from after the restart within 15 s"
    );
    eprintln!(
        "the CLI printed an event from after the restart {:?} after the hub's stream did",
        t.elapsed()
    );
    let (_, l) = api(port, "GET", "/v1/sessions", None);
    let cli_id = l
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .find(|x| *x != id)
        .expect("the CLI's session, resumed");
    api(
        port,
        "PUT",
        &format!("/v1/sessions/{cli_id}"),
        Some(json!({"state": "stopped"})),
    );
    let status = cli.wait().unwrap();
    let out = cli_reader.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["kind"], "end", "{out}");
    assert!(
        out.lines().any(after_restart),
        "the CLI's output holds the events from after the restart"
    );

    // A hub stopped with SIGTERM (a rolling update) tells its clients to
    // reconnect, and the next hub resumes the session again.
    let rx = stream(port, &id);
    let _ = Command::new("kill")
        .args(["-TERM", &_hub.0.id().to_string()])
        .status();
    let recs = collect(&rx, Duration::from_secs(5));
    assert_eq!(recs.last().unwrap()["kind"], "reconnect", "{recs:?}");
    drop(_hub);
    let _hub = hub(port, &[]);
    wait_for(Duration::from_secs(8), "agents to re-register", || {
        nodes_up(port).len() == 2
    });
    wait_for(
        Duration::from_secs(5),
        "the session to be resumed again",
        || all_running(port, &id, 2),
    );
    let (st, _) = api(port, "DELETE", "/v1/sessions", None);
    assert_eq!(st, 200);

    // Kill an agent: its node goes down and the session names it.
    let (_, s) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "pod": "web-*", "probes": ["exec"]})),
    );
    let id = s["id"].as_str().unwrap().to_string();
    let rx = stream(port, &id);
    wait_for(Duration::from_secs(20), "the session to run", || {
        all_running(port, &id, 2)
    });
    drop(a2);
    wait_for(Duration::from_secs(5), "node-2 to go down", || {
        nodes_up(port) == ["node-1"]
    });
    let (_, n) = api(port, "GET", "/v1/nodes", None);
    assert!(n
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["node"] == "node-2" && x["state"] == "down"));
    let (_, s) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(s["nodes"]["node-2"]["state"], "lost");
    assert!(s["nodes"]["node-2"]["error"]
        .as_str()
        .unwrap()
        .contains("node-2"));
    let mut lost = false;
    let t = Instant::now();
    while let Ok(v) = rx.recv_timeout(Duration::from_secs(5).saturating_sub(t.elapsed())) {
        if v["kind"] == "node_lost" && v["node"] == "node-2" {
            lost = true;
            break;
        }
    }
    assert!(lost, "the stream says which node it lost");
    drop(a1);
}

/// A gRPC channel to `url` (the hub's or an agent's API), connected.
async fn grpc_channel(url: impl Into<String>) -> tonic::transport::Channel {
    let url = url.into();
    tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Says Hello to the hub as an agent from before typed events would (no
/// `link_version`); the hub's answer.
fn old_link_agent(port: u16) -> tonic::Status {
    use podscope_cluster::proto::hub_client::HubClient;
    use podscope_cluster::proto::{agent_message, AgentMessage, Hello};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = grpc_channel(url(port)).await;
        let mut c = HubClient::with_interceptor(
            channel,
            podscope_cluster::auth::Bearer::new(TOKEN).unwrap(),
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(4);
        tx.send(AgentMessage {
            msg: Some(agent_message::Msg::Hello(Hello {
                node: "old-agent".into(),
                version: "0.1.0".into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let r = c
            .connect(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
                rx,
            ))
            .await;
        match r {
            Err(st) => st,
            Ok(resp) => {
                let mut s = resp.into_inner();
                let refusal = async {
                    loop {
                        match s.message().await {
                            Err(st) => break st,
                            Ok(None) => break tonic::Status::ok("the hub closed the stream"),
                            Ok(Some(_)) => continue,
                        }
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), refusal)
                    .await
                    .unwrap_or_else(|_| tonic::Status::ok("the hub took the old agent on"))
            }
        }
    })
}

#[test]
fn auth_and_validation() {
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let paths = [
        ("GET", "/v1/nodes"),
        ("GET", "/v1/pods"),
        ("GET", "/v1/probes"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions"),
        ("DELETE", "/v1/sessions"),
        ("GET", "/v1/sessions/x-1"),
        ("PUT", "/v1/sessions/x-1"),
        ("DELETE", "/v1/sessions/x-1"),
        ("GET", "/v1/sessions/x-1/events"),
        ("POST", "/v1/exec"),
    ];
    let body = json!({"pod": "web-*", "probes": ["exec"]}).to_string();
    for (m, p) in paths {
        for tok in [None, Some("wrong")] {
            let r = request(&url(port), m, p, tok, Some(&body), &[]).unwrap();
            assert_eq!(r.status, 401, "{m} {p} with token {tok:?}");
        }
    }
    // Nothing happened: no session was created.
    let (_, l) = api(port, "GET", "/v1/sessions", None);
    assert_eq!(l, json!([]));
    // An agent with a wrong token cannot register.
    let bad =
        std::env::temp_dir().join(format!("podscope-cluster-badtoken-{}", std::process::id()));
    std::fs::write(&bad, "nope").unwrap();
    let _a = agent(port, "intruder", Path::new("/nonexistent.sock"), &bad, &[]);
    std::thread::sleep(Duration::from_secs(2));
    // (Only the intruder is looked for: tests run at once, and another
    // test's agent whose hub has gone may retry on this recycled port with
    // the shared token, as CI once saw.)
    let (_, n) = api(port, "GET", "/v1/nodes", None);
    let names: Vec<&str> = n
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["node"].as_str())
        .collect();
    assert!(!names.contains(&"intruder"), "{n}");
    // Exec is refused unless enabled.
    let (st, e) = api(port, "POST", "/v1/exec", Some(json!({})));
    assert_eq!(st, 403);
    assert!(e["error"].as_str().unwrap().contains("--enable-exec"));
    // Validation: 400 with a message naming what is wrong.
    for (body, want) in [
        ("{not json", "malformed"),
        (r#"{"probes":["tpc"]}"#, "did you mean 'tcp'"),
        (r#"{"probes":["exec"],"pod":"web/0"}"#, "pod 'web/0'"),
        (
            r#"{"probes":["exec"],"selector":"app in (a"}"#,
            "label selector",
        ),
        (r#"{"probes":["exec"],"duration":"0s"}"#, "more than zero"),
        (r#"{"probes":["exec"],"duration":"48h"}"#, "24h"),
    ] {
        let r = request(
            &url(port),
            "POST",
            "/v1/sessions",
            Some(TOKEN),
            Some(body),
            &[],
        )
        .unwrap();
        assert_eq!(r.status, 400, "{body}");
        let v = r.json().unwrap();
        assert!(v["error"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let (st, v) = api(port, "GET", "/openapi.json", None);
    assert_eq!(st, 200);
    assert!(v["paths"]["/v1/sessions/{id}/events"].is_object());
    // An agent of the JSON-lines era (link version 0) is refused, naming
    // both versions, not taken on to have its events ignored.
    let refused = old_link_agent(port);
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("node old-agent")
            && refused.message().contains("link version 0")
            && refused.message().contains("link version 2"),
        "{}",
        refused.message()
    );
    let (_, n) = api(port, "GET", "/v1/nodes", None);
    assert_eq!(n, json!([]), "the refused agent is not a node");
    assert!(
        request(&url(port), "GET", "/healthz", None, None, &[])
            .unwrap()
            .status
            == 200
    );
}

#[test]
fn slow_consumer_gaps_add_up() {
    let sock1 = socket();
    let tok = token_file();
    let port = common::free_port();
    let _hub = hub(port, &["--client-queue", "4"]);
    let _a = agent(port, "node-1", &sock1, &tok, &["--queue-size", "2"]);
    wait_for(Duration::from_secs(10), "the agent to register", || {
        nodes_up(port).len() == 1
    });
    let sfx = suffix();
    let ns = format!("slow-{sfx}");
    // A storm of execs: far more than a 2-event queue can pass.
    let _p = pod(
        &sock1,
        &format!("storm-{sfx}"),
        &ns,
        "while true; do for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done; sleep 0.01; done",
    );
    let (_, s) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "probes": ["exec"], "start": false})),
    );
    let id = s["id"].as_str().unwrap().to_string();
    let r = request(
        &url(port),
        "GET",
        &format!("/v1/sessions/{id}/events"),
        Some(TOKEN),
        None,
        &[],
    )
    .unwrap();
    api(
        port,
        "PUT",
        &format!("/v1/sessions/{id}"),
        Some(json!({"state": "running"})),
    );
    wait_for(Duration::from_secs(20), "the trace to attach", || {
        all_running(port, &id, 1)
    });
    std::thread::sleep(Duration::from_secs(3));
    api(
        port,
        "PUT",
        &format!("/v1/sessions/{id}"),
        Some(json!({"state": "stopped"})),
    );
    // Read slowly at first, then the rest.
    let mut delivered = 0u64;
    let mut gaps = 0u64;
    let mut produced = None;
    for (i, l) in r.lines().enumerate() {
        let v: Value = serde_json::from_str(&l.unwrap()).unwrap();
        if i < 20 {
            std::thread::sleep(Duration::from_millis(20));
        }
        if v.get("pid").is_some() {
            delivered += 1;
        } else if v["kind"] == "gap" {
            gaps += v["gap"].as_u64().unwrap();
        } else if v["kind"] == "summary" {
            produced = v["emitted"].as_u64();
            assert!(v["emitted"].as_u64() <= v["events"].as_u64(), "{v}");
        }
    }
    let produced = produced.expect("a summary");
    let (_, view) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    eprintln!(
        "slow consumer: produced {produced}, delivered {delivered}, gaps {gaps}; hub: events {} gaps {}",
        view["events"], view["gaps"]
    );
    assert!(
        gaps > 0,
        "a 2-event queue under an exec storm must overflow"
    );
    assert_eq!(delivered + gaps, produced);
    let (_, s) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(
        s["gaps"].as_u64().unwrap() + s["events"].as_u64().unwrap(),
        produced
    );
}

#[test]
fn agent_serves_always_on_pod_metrics() {
    let sock1 = socket();
    let tok = token_file();
    let metrics_port = common::free_port();
    // Nothing may answer there before this agent starts (e.g. a leftover).
    assert!(
        request(
            &format!("http://127.0.0.1:{metrics_port}"),
            "GET",
            "/metrics",
            None,
            None,
            &[]
        )
        .is_err(),
        "port {metrics_port} is already serving"
    );
    // No hub is needed for the metrics: the agent keeps trying to dial one.
    let a = agent(
        common::free_port(),
        "node-m",
        &sock1,
        &tok,
        &[
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--metrics-probes",
            "exec",
        ],
    );
    let sfx = suffix();
    let ns = format!("metrics-{sfx}");
    let name = format!("busy-{sfx}");
    let _p = pod(
        &sock1,
        &name,
        &ns,
        "while true; do /bin/true; sleep 0.2; done",
    );
    let want = format!("pod=\"{name}\"");
    wait_for(
        Duration::from_secs(30),
        "the pod's exec counter on the agent's /metrics",
        || {
            request(
                &format!("http://127.0.0.1:{metrics_port}"),
                "GET",
                "/metrics",
                None,
                None,
                &[],
            )
            .ok()
            .and_then(|r| r.text().ok())
            .is_some_and(|text| {
                text.lines().any(|l| {
                    l.starts_with("podscope_execs_total{")
                        && l.contains(&want)
                        && l.contains(&format!("namespace=\"{ns}\""))
                        && l.rsplit(' ')
                            .next()
                            .and_then(|v| v.parse::<f64>().ok())
                            .is_some_and(|v| v >= 1.0)
                })
            })
        },
    );
    // The always-on session runs in the agent's own tracer: no children.
    let kids = children(a.0.id());
    assert!(kids.is_empty(), "the agent runs child processes: {kids:?}");
}
/// The agent's own API (--listen): health endpoints, gRPC ListPods, Trace,
/// Exec and Health with its token; and exec through the hub, which needs
/// --enable-exec on both the hub and the agent.
#[test]
fn agent_api_and_exec_through_the_hub() {
    use podscope_cluster::proto::agent_client::AgentClient;
    use podscope_cluster::proto::{ExecRequest, HealthRequest, ListPodsRequest, StartSession};

    let sock = socket();
    let tok = token_file();
    let tokf = tok.to_str().unwrap().to_string();
    let (port, api_port) = (common::free_port(), common::free_port());
    let api_url = format!("http://127.0.0.1:{api_port}");
    // The agent first: alive, but not ready until it is linked to a hub.
    let _agent = agent(
        port,
        "exec-node",
        &sock,
        &tok,
        &[
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--enable-exec",
            "--resume-grace",
            "1s",
        ],
    );
    wait_for(Duration::from_secs(10), "the agent API to listen", || {
        request(&api_url, "GET", "/healthz", None, None, &[]).is_ok_and(|r| r.status == 200)
    });
    let r = request(&api_url, "GET", "/readyz", None, None, &[]).unwrap();
    assert_eq!(r.status, 503, "not ready without a hub");
    let _hub = hub(port, &["--enable-exec"]);
    wait_for(Duration::from_secs(10), "the agent to be ready", || {
        request(&api_url, "GET", "/readyz", None, None, &[]).is_ok_and(|r| r.status == 200)
    });

    let sfx = suffix();
    let ns = format!("ex-{sfx}");
    let name = format!("box-{sfx}");
    let _p = pod(
        &sock,
        &name,
        &ns,
        "while true; do cat /dev/null; sleep 0.2; done",
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = grpc_channel(api_url.clone()).await;
        // Without the token: refused.
        let mut anon = AgentClient::new(channel.clone());
        let e = anon.health(HealthRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let mut c = AgentClient::with_interceptor(channel, Bearer::new(TOKEN).unwrap());
        let h = c.health(HealthRequest {}).await.unwrap().into_inner();
        assert_eq!(h.node, "exec-node");
        assert!(h.linked && h.exec_enabled, "{h:?}");

        // ListPods: the pod, with its IP.
        let mut ip = String::new();
        for _ in 0..50 {
            let pods = c
                .list_pods(ListPodsRequest {})
                .await
                .unwrap()
                .into_inner()
                .pods;
            if let Some(p) = pods.iter().find(|p| p.name == name) {
                ip = p.ip.clone().unwrap_or_default();
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!ip.is_empty(), "ListPods has the pod and its IP");

        // Trace: exec events of that pod stream; hanging up stops the trace.
        let mut stream = c
            .trace(StartSession {
                probes: vec!["exec".into()],
                namespace: ns.clone(),
                pod: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while events < 3 && Instant::now() < deadline {
            let Ok(Ok(Some(b))) =
                tokio::time::timeout(Duration::from_secs(20), stream.message()).await
            else {
                break;
            };
            // Typed events: no JSON inside the protobuf.
            for r in &b.records {
                let Some(podscope_cluster::proto::record::Kind::Event(e)) = &r.kind else {
                    continue;
                };
                assert_eq!(e.pod, name.as_str(), "{e:?}");
                assert_eq!(e.node, "exec-node");
                assert!(
                    matches!(e.data, Some(podscope_cluster::proto::event::Data::Exec(_))),
                    "{e:?}"
                );
                events += 1;
            }
        }
        assert!(events >= 3, "exec events through the agent's Trace call");
        drop(stream);
        let mut traces = u64::MAX;
        for _ in 0..50 {
            traces = c
                .health(HealthRequest {})
                .await
                .unwrap()
                .into_inner()
                .traces;
            if traces == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(traces, 0, "the trace stops when its caller hangs up");

        // Exec on the agent: a host tool in the pod's network namespace.
        let r = c
            .exec(ExecRequest {
                namespace: ns.clone(),
                pod: name.clone(),
                command: vec!["ip".into(), "-o".into(), "addr".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.exit_code, 0, "{r:?}");
        assert!(String::from_utf8_lossy(&r.stdout).contains(&ip), "{r:?}");
        let e = c
            .exec(ExecRequest {
                namespace: ns.clone(),
                pod: "box-*".into(),
                command: vec!["true".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("exact name"), "{}", e.message());
    });

    // Exec through the hub: REST, then the CLI.
    wait_for(Duration::from_secs(10), "the hub to know the pod", || {
        let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
        v.as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == name.as_str()))
    });
    let (st, v) = api(
        port,
        "POST",
        "/v1/exec",
        Some(
            json!({"namespace": ns, "pod": name, "command": ["ip", "-o", "addr"], "timeout": "20s"}),
        ),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["node"], "exec-node");
    assert_eq!(v["exit_code"], 0);
    let (_, pods) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
    let ip = pods[0]["ip"].as_str().unwrap().to_string();
    assert!(v["stdout"].as_str().unwrap().contains(&ip), "{v}");
    let (st, v) = api(
        port,
        "POST",
        "/v1/exec",
        Some(json!({"namespace": ns, "pod": "box-nope", "command": ["true"]})),
    );
    assert_eq!(st, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("did you mean {ns}/{name}")),
        "{v}"
    );
    for bad in [
        json!({"namespace": ns, "pod": name, "command": []}),
        json!({"namespace": ns, "pod": "box-*", "command": ["true"]}),
        json!({"namespace": ns, "pod": name, "command": ["true"], "timeout": "2h"}),
        json!({"namespace": ns, "pod": name, "command": ["true"], "namespaces": ["net", "time"]}),
        json!({"namespace": ns, "pod": name, "cmd": ["true"]}),
    ] {
        let (st, v) = api(port, "POST", "/v1/exec", Some(bad.clone()));
        assert_eq!(st, 400, "{bad} -> {v}");
    }
    let out = bin()
        .args([
            "--hub",
            &url(port),
            "--token-file",
            &tokf,
            "exec",
            "--pod",
            &name,
            "-n",
            &ns,
        ])
        .args(["--", "sh", "-c", "ip -o addr; exit 7"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ip));

    // A hub that allows exec in front of an agent that does not: refused, naming the node.
    let (port2, api2) = (common::free_port(), common::free_port());
    let _hub2 = hub(port2, &["--enable-exec"]);
    let _agent2 = agent(
        port2,
        "no-exec-node",
        &sock,
        &tok,
        &["--listen", &format!("127.0.0.1:{api2}")],
    );
    wait_for(
        Duration::from_secs(10),
        "the second agent to report the pod",
        || {
            let (_, v) = api(port2, "GET", &format!("/v1/pods?namespace={ns}"), None);
            v.as_array().is_some_and(|a| !a.is_empty())
        },
    );
    let (st, v) = api(
        port2,
        "POST",
        "/v1/exec",
        Some(json!({"namespace": ns, "pod": name, "command": ["true"]})),
    );
    assert_eq!(st, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no-exec-node"), "{v}");
    rt.block_on(async {
        let channel = grpc_channel(format!("http://127.0.0.1:{api2}")).await;
        let mut c = AgentClient::with_interceptor(channel, Bearer::new(TOKEN).unwrap());
        let e = c
            .exec(ExecRequest {
                namespace: ns.clone(),
                pod: name.clone(),
                command: vec!["true".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    });

    // No hub comes back within --resume-grace (1s here): the agent stops
    // the hub session's trace.
    let (st, v) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "pod": name, "probes": ["exec"]})),
    );
    assert_eq!(st, 201, "{v}");
    let traces = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let channel = grpc_channel(api_url.clone()).await;
            let mut c = AgentClient::with_interceptor(channel, Bearer::new(TOKEN).unwrap());
            c.health(HealthRequest {})
                .await
                .unwrap()
                .into_inner()
                .traces
        })
    };
    wait_for(
        Duration::from_secs(10),
        "the session's trace on the agent",
        || traces(&rt) == 1,
    );
    drop(_hub);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(traces(&rt), 1, "kept through the grace");
    wait_for(
        Duration::from_secs(5),
        "the trace to stop after the grace",
        || traces(&rt) == 0,
    );
}

/// The hub's operations over gRPC (service HubApi), typed: directly with a
/// gRPC client, compared with the REST answers of the same operations (the
/// same typed objects, the same error words with the matching code), and
/// as the CLI's transport (`--hub-api grpc`).
#[test]
fn grpc_api_does_what_rest_does() {
    use podscope_cluster::api::{NodePod, NodeView, ProbeView, SessionView};
    use podscope_cluster::proto::hub_api_client::HubApiClient;
    use podscope_cluster::proto::{
        CreateSessionRequest, ListNodesRequest, ListProbesRequest, PodQuery, SessionId,
        SessionQuery, SessionUpdate,
    };

    let sock = socket();
    let tok = token_file();
    let tokf = tok.to_str().unwrap().to_string();
    let port = common::free_port();
    let _hub = hub(port, &["--enable-exec"]);
    let _agent = agent(port, "grpc-node", &sock, &tok, &["--enable-exec"]);
    let sfx = suffix();
    let ns = format!("gr-{sfx}");
    let name = format!("g-{sfx}");
    let _p = pod(
        &sock,
        &name,
        &ns,
        "while true; do cat /dev/null; sleep 0.2; done",
    );
    wait_for(Duration::from_secs(10), "the hub to know the pod", || {
        let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
        v.as_array().is_some_and(|a| !a.is_empty())
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = grpc_channel(url(port)).await;
        let e = HubApiClient::new(channel.clone())
            .list_nodes(ListNodesRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let mut c = HubApiClient::with_interceptor(channel, Bearer::new(TOKEN).unwrap());

        // Nodes: the same objects (last_seen moves between the two calls).
        let nodes: Vec<NodeView> = c
            .list_nodes(ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes
            .into_iter()
            .map(Into::into)
            .collect();
        let (_, rest_nodes) = api(port, "GET", "/v1/nodes", None);
        let mut g = js(&nodes);
        let mut r = rest_nodes.clone();
        for v in [&mut g, &mut r] {
            for n in v.as_array_mut().unwrap() {
                n["last_seen"] = Value::Null;
            }
        }
        assert_eq!(g, r, "ListNodes = GET /v1/nodes");
        assert!(nodes.iter().any(|n| n.node == "grpc-node"));

        // Pods: typed (every field of the pod model), equal to REST's.
        let pods: Vec<NodePod> = c
            .list_pods(PodQuery {
                namespace: Some(ns.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .pods
            .into_iter()
            .map(|p| NodePod::try_from(p).unwrap())
            .collect();
        assert_eq!(pods[0].pod.name, name);
        let (_, rest_pods) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
        assert_eq!(js(&pods), rest_pods, "ListPods = GET /v1/pods");

        let probes: Vec<ProbeView> = c
            .list_probes(ListProbesRequest {})
            .await
            .unwrap()
            .into_inner()
            .probes
            .into_iter()
            .map(Into::into)
            .collect();
        assert_eq!(js(&probes), api(port, "GET", "/v1/probes", None).1);
        let hooks: Vec<podscope_cluster::api::HookView> = c
            .list_hooks(podscope_cluster::proto::ListHooksRequest {})
            .await
            .unwrap()
            .into_inner()
            .hooks
            .into_iter()
            .map(Into::into)
            .collect();
        assert!(hooks.len() >= 3, "{hooks:?}");
        assert_eq!(
            js(&hooks),
            api(port, "GET", "/v1/hooks", None).1,
            "ListHooks = GET /v1/hooks"
        );

        // Errors: the same words as REST, with the matching code.
        for (body, code) in [
            (
                json!({"probes": ["tpc"]}),
                (tonic::Code::InvalidArgument, 400),
            ),
            (
                json!({"probes": ["exec"], "duration": "0s"}),
                (tonic::Code::InvalidArgument, 400),
            ),
            (
                json!({"probes": ["exec"], "namespace": ns, "pod": "nosuch", "wait": false}),
                (tonic::Code::NotFound, 404),
            ),
        ] {
            let req: podscope_cluster::api::CreateSession =
                serde_json::from_value(body.clone()).unwrap();
            let e = c
                .create_session(CreateSessionRequest::from(req))
                .await
                .unwrap_err();
            let (st, v) = api(port, "POST", "/v1/sessions", Some(body.clone()));
            assert_eq!((e.code(), st), code, "{body}");
            assert_eq!(e.message(), v["error"].as_str().unwrap(), "{body}");
        }
        let e = c
            .get_session(SessionId {
                id: "nosuch".into(),
            })
            .await
            .unwrap_err();
        let (st, v) = api(port, "GET", "/v1/sessions/nosuch", None);
        assert_eq!((e.code(), st), (tonic::Code::NotFound, 404));
        assert_eq!(e.message(), v["error"].as_str().unwrap());
        let e = c
            .update_session(SessionUpdate {
                id: "nosuch".into(),
                state: "paused".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);

        // Create stopped, stream, start, stop: the records as over NDJSON.
        let s: SessionView = c
            .create_session(CreateSessionRequest {
                namespace: Some(ns.clone()),
                pod: Some("g-*".into()),
                probes: vec!["exec".into()],
                start: Some(false),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .into();
        let id = s.id.clone();
        assert_eq!(s.state, "created");
        assert_eq!(
            js(&s),
            api(port, "GET", &format!("/v1/sessions/{id}"), None).1
        );
        let mut stream = c
            .stream_events(SessionId { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        let e = c
            .update_session(SessionUpdate {
                id: id.clone(),
                state: "paused".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("not one of running, stopped"),
            "{}",
            e.message()
        );
        c.update_session(SessionUpdate {
            id: id.clone(),
            state: "running".into(),
        })
        .await
        .unwrap();
        let mut events = 0u64;
        let mut stopped = false;
        let mut last = Value::Null;
        let t = Instant::now();
        'read: while let Ok(Ok(Some(m))) =
            tokio::time::timeout(Duration::from_secs(20), stream.message()).await
        {
            for rec in &m.records {
                let v: Value =
                    serde_json::from_str(&podscope_cluster::records::to_json(rec)).unwrap();
                if matches!(
                    rec.kind,
                    Some(podscope_cluster::proto::record::Kind::Event(_))
                ) {
                    assert_eq!(v["pod"], name.as_str());
                    events += 1;
                }
                if events >= 5 && !stopped {
                    stopped = true;
                    c.update_session(SessionUpdate {
                        id: id.clone(),
                        state: "stopped".into(),
                    })
                    .await
                    .unwrap();
                }
                last = v;
                if last["kind"] == "end" || t.elapsed() > Duration::from_secs(40) {
                    break 'read;
                }
            }
        }
        assert_eq!(last["kind"], "end", "the stream ends after the stop");
        let got: SessionView = c
            .get_session(SessionId { id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .into();
        assert_eq!(got.state, "stopped");
        assert_eq!(got.events, events, "{got:?}");
        // The node's summary is typed too, and what REST shows.
        let node = &got.nodes["grpc-node"];
        let summary = node.summary.as_ref().expect("the node's summary");
        assert_eq!(summary.node.as_deref(), Some("grpc-node"));
        assert_eq!(summary.probes[0].probe, "exec");
        assert_eq!(
            js(&got),
            api(port, "GET", &format!("/v1/sessions/{id}"), None).1
        );
        let l: Vec<SessionView> = c
            .list_sessions(SessionQuery {
                pod: Some("g-*".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .sessions
            .into_iter()
            .map(Into::into)
            .collect();
        assert!(l.iter().any(|x| x.id == id));
        assert_eq!(js(&l), api(port, "GET", "/v1/sessions?pod=g-*", None).1);
        let d = c
            .delete_session(SessionId { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.deleted, vec![id.clone()]);
        let e = c
            .get_session(SessionId { id: id.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        c.delete_sessions(SessionQuery::default()).await.unwrap();
    });

    // The CLI over gRPC: ps, trace and exec.
    let cli = |args: &[&str]| {
        bin()
            .args([
                "--hub",
                &url(port),
                "--token-file",
                &tokf,
                "--hub-api",
                "grpc",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["ps", "-n", &ns, "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&name) && text.contains("grpc-node"), "{text}");
    let out = cli(&[
        "trace",
        "exec",
        "--pod",
        &name,
        "-n",
        &ns,
        "--duration",
        "4s",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|e| e["probe"] == "exec" && e["pod"] == name.as_str()));
    assert_eq!(lines.last().unwrap()["kind"], "end");
    let out = cli(&[
        "exec", "--pod", &name, "-n", &ns, "--", "sh", "-c", "exit 5",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["exec", "--pod", "nope", "-n", &ns, "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Over kube:// the API server's proxy cannot carry gRPC: said so.
    let out = cli(&["ps", "--hub", "kube://podscope/podscope-hub:7700"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP/1.1 only"));
}

/// Through `--hub`, a misspelt pod or a forgotten `-n` used to give a silent
/// session that ended with exit 0; a container that no chosen pod has gave a
/// silent trace, locally too. Now each is an error with exit 1 that says what
/// there is, as a local trace says it; `--wait` still waits.
#[test]
fn remote_selection_mistakes_are_explained() {
    let sock = socket();
    let tok = token_file();
    let tokf = tok.to_str().unwrap().to_string();
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let _agent = agent(port, "sel-node", &sock, &tok, &[]);
    let sfx = suffix();
    let ns = format!("sel-{sfx}");
    let name = format!("api-{sfx}");
    let _p = pod(&sock, &name, &ns, "while true; do sleep 0.5; done");
    // The pod and its container: the sandbox is listed before its
    // container exists, and the container mistake below names the
    // containers there are (on a busy machine the gap was long enough).
    wait_for(
        Duration::from_secs(10),
        "the hub to know the pod and its container",
        || {
            let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
            v[0]["containers"][0]["name"] == "main"
        },
    );
    let remote = |api_kind: &str, args: &[&str]| {
        let t = Instant::now();
        let o = bin()
            .args([
                "--hub",
                &url(port),
                "--token-file",
                &tokf,
                "--hub-api",
                api_kind,
            ])
            .args(["trace", "exec"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (o, t.elapsed())
    };
    let misspelt = format!("{}O", &name[..name.len() - 1]);
    let qualified = format!("{ns}/{name}");
    for api_kind in ["rest", "grpc"] {
        // A misspelt pod; no --duration: it must not wait for ever.
        let (o, took) = remote(api_kind, &["--pod", &misspelt, "-n", &ns]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{api_kind}: {e}");
        assert!(took < Duration::from_secs(10), "{api_kind}: {took:?}");
        assert!(
            e.contains(&format!("no pod {misspelt} in namespace {ns} on any node")),
            "{e}"
        );
        assert!(e.contains(&format!("did you mean {qualified}?")), "{e}");
        assert!(e.contains("--wait"), "{e}");
        // A forgotten -n.
        let (o, _) = remote(api_kind, &["--pod", &name, "--duration", "3s"]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{api_kind}: {e}");
        assert!(
            e.contains(&format!("no pod {name} in namespace default")),
            "{e}"
        );
        assert!(e.contains(&format!("did you mean {qualified}?")), "{e}");
        assert!(e.contains("-A"), "{e}");
        // A container that the chosen pod does not have.
        let (o, _) = remote(
            api_kind,
            &["--pod", &name, "-n", &ns, "--container", "nosuch"],
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{api_kind}: {e}");
        assert!(
            e.contains("containers in the matching pods: main (not nosuch)"),
            "{e}"
        );
    }
    let (_, l) = api(port, "GET", "/v1/sessions", None);
    assert_eq!(l, json!([]), "no session was left behind");
    // --wait is the explicit way to wait for a pod that does not exist yet.
    let (o, _) = remote(
        "rest",
        &[
            "--pod",
            &misspelt,
            "-n",
            &ns,
            "--wait",
            "--duration",
            "2s",
            "-o",
            "json",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.lines().last().unwrap_or("").contains(r#""kind":"end""#),
        "{out}"
    );
    // Locally, a container that matches nothing is an error too.
    let o = bin()
        .args([
            "trace",
            "exec",
            "--pod",
            &name,
            "-n",
            &ns,
            "--container",
            "nosuch",
        ])
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", sock.display()))
        .args(["--duration", "2s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("containers in the matching pods: main (not nosuch)"),
        "{e}"
    );
    assert!(e.contains("add --wait"), "{e}");
}

/// The CLI's summary used to disagree with what it printed (`--max-events 5`
/// printed 5 and reported 6; after an agent was killed, 32 printed and 20
/// summarised): now the total is the lines printed, and per node printed +
/// after --max-events + not delivered = what the trace wrote.
#[test]
fn the_cli_summary_agrees_with_what_it_printed() {
    let sock = socket();
    let tok = token_file();
    let tokf = tok.to_str().unwrap().to_string();
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let _a = agent(port, "count-a", &sock, &tok, &[]);
    // A second agent on the same runtime: it traces the same pod as another node.
    let b = agent(port, "count-b", &sock, &tok, &[]);
    let sfx = suffix();
    let ns = format!("count-{sfx}");
    let _p = pod(
        &sock,
        &format!("storm-{sfx}"),
        &ns,
        "while true; do /bin/true; sleep 0.05; done",
    );
    wait_for(
        Duration::from_secs(10),
        "both nodes to report the pod",
        || {
            let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
            v.as_array().is_some_and(|a| a.len() == 2)
        },
    );
    let events_printed = |stdout: &str| stdout.lines().filter(|l| l.contains(r#""pid":"#)).count();

    // --max-events 5: five lines, and a summary that says five.
    let o = bin()
        .args(["--hub", &url(port), "--token-file", &tokf])
        .args([
            "trace",
            "exec",
            "-n",
            &ns,
            "--max-events",
            "5",
            "-o",
            "json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(events_printed(&out), 5, "{out}");
    assert!(err.contains("podscope: 5 events printed"), "{err}");
    // Per node: printed + after --max-events + not delivered = the trace's `emitted`.
    for node in ["count-a", "count-b"] {
        let summary: Value = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["kind"] == "summary" && v["node"] == node)
            .unwrap_or_else(|| panic!("no summary from {node}: {out}"));
        let emitted = summary["emitted"].as_u64().unwrap();
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("podscope: node {node}: ")))
            .unwrap_or_else(|| panic!("no line for {node}: {err}"));
        assert!(
            line.contains(&format!("= {emitted} the trace wrote")),
            "{line}"
        );
        // The number just before a word of the line, 0 when the word is not there.
        let num = |what: &str| -> u64 {
            line.find(&format!(" {what}")).map_or(0, |i| {
                line[..i]
                    .rsplit(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
        };
        let printed = out
            .lines()
            .filter(|l| l.contains(r#""pid":"#) && l.contains(&format!(r#""node":"{node}""#)))
            .count() as u64;
        assert_eq!(num("printed"), printed, "{line}");
        assert_eq!(
            printed + num("after --max-events") + num("not delivered"),
            emitted,
            "{line}"
        );
    }

    // An agent killed mid-session: what it sent was printed and counts.
    let mut cli = bin()
        .args(["--hub", &url(port), "--token-file", &tokf])
        .args(["trace", "exec", "-n", &ns, "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = cli.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut until = |what: &str, f: &dyn Fn(&[String]) -> bool| {
        let t = Instant::now();
        while !f(&lines) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                lines.push(l);
            }
        }
    };
    until("events from both nodes", &|ls| {
        ["count-a", "count-b"].iter().all(|n| {
            ls.iter()
                .any(|l| l.contains(r#""pid":"#) && l.contains(&format!(r#""node":"{n}""#)))
        })
    });
    drop(b);
    until("node_lost", &|ls| {
        ls.iter().any(|l| l.contains(r#""kind":"node_lost""#))
    });
    let _ = Command::new("kill")
        .args(["-INT", &cli.id().to_string()])
        .status();
    let mut err = String::new();
    use std::io::Read;
    cli.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(cli.wait().unwrap().success(), "{err}");
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let printed = lines.iter().filter(|l| l.contains(r#""pid":"#)).count();
    let from_b = lines
        .iter()
        .filter(|l| l.contains(r#""pid":"#) && l.contains(r#""node":"count-b""#))
        .count();
    assert!(
        err.contains(&format!("podscope: {printed} events printed")),
        "{printed}: {err}"
    );
    assert!(
        err.contains(&format!(
            "podscope: node count-b: {from_b} printed; no summary from its trace (the node was lost)"
        )),
        "{from_b}: {err}"
    );
}

/// The BPF programs (by name) and maps (id -> name) a process holds, read
/// from its own file descriptors (/proc/PID/fdinfo), named by bpftool: an
/// independent view of what the agent loaded.
fn bpf_objects(pid: u32) -> (Vec<String>, Vec<(u64, String)>) {
    let mut prog_ids = std::collections::BTreeSet::new();
    let mut map_ids = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some(v) = line.strip_prefix("prog_id:") {
                prog_ids.insert(v.trim().parse::<u64>().unwrap());
            } else if let Some(v) = line.strip_prefix("map_id:") {
                map_ids.insert(v.trim().parse::<u64>().unwrap());
            }
        }
    }
    let show = |what: &str| -> Vec<Value> {
        let out = Command::new("bpftool")
            .args([what, "show", "-j"])
            .output()
            .expect("bpftool (scripts/setup.sh installs it)");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let progs = show("prog")
        .into_iter()
        .filter(|p| prog_ids.contains(&p["id"].as_u64().unwrap()))
        .map(|p| p["name"].as_str().unwrap_or("").to_string())
        .collect();
    let maps = show("map")
        .into_iter()
        .filter(|m| map_ids.contains(&m["id"].as_u64().unwrap()))
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (progs, maps)
}

/// The cgroup ids in a filter map, from bpftool's dump (keys are u64s).
fn filter_keys(map_id: u64) -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["map", "dump", "id", &map_id.to_string(), "-j"])
        .output()
        .unwrap();
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.iter()
        .map(|e| {
            let bytes: Vec<u8> = e["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                })
                .collect();
            u64::from_le_bytes(bytes.try_into().unwrap())
        })
        .collect()
}

/// The agent's one kernel filter map (the probes share it).
fn agent_filter(pid: u32) -> Option<Vec<u64>> {
    let (_, maps) = bpf_objects(pid);
    let ids: Vec<u64> = maps
        .iter()
        .filter(|(_, n)| n == "filter_cgroups")
        .map(|(id, _)| *id)
        .collect();
    assert!(ids.len() <= 1, "more than one filter map: {maps:?}");
    ids.first().map(|id| filter_keys(*id))
}

fn pod_cgroup_id(p: &PodGuard) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let root = podscope_pipeline::cgroup::v2_mount().unwrap();
    std::fs::metadata(format!("{}{}", root.display(), p.cgroup))
        .unwrap()
        .ino()
}

/// Processes whose parent is `pid`, with their command lines.
fn children(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            out.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    out
}

#[test]
fn one_node_tracer_serves_overlapping_sessions() {
    let sock = socket();
    let tok = token_file();
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let agent = agent(port, "node-1", &sock, &tok, &[]);
    let apid = agent.0.id();
    wait_for(Duration::from_secs(10), "the agent to register", || {
        nodes_up(port).len() == 1
    });
    let sfx = suffix();
    let ns = format!("nt-{sfx}");
    let script = |tag: &str| format!("while true; do cat /{tag} 2>/dev/null; sleep 0.2; done");
    let one = pod(&sock, &format!("one-{sfx}"), &ns, &script("tag-one"));
    let two = pod(&sock, &format!("two-{sfx}"), &ns, &script("tag-two"));
    let three = pod(&sock, &format!("three-{sfx}"), &ns, &script("tag-three"));
    let (c1, c2, c3) = (
        pod_cgroup_id(&one),
        pod_cgroup_id(&two),
        pod_cgroup_id(&three),
    );
    wait_for(Duration::from_secs(10), "the pods to reach the hub", || {
        let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
        v.as_array().is_some_and(|a| a.len() == 3)
    });
    let exec_progs = |progs: &[String]| {
        let mut v: Vec<String> = progs
            .iter()
            .filter(|n| n.starts_with("exec"))
            .cloned()
            .collect();
        v.sort();
        v
    };
    assert!(
        exec_progs(&bpf_objects(apid).0).is_empty(),
        "the agent loaded exec before any session"
    );

    let start = |body: Value| start_session(port, body);
    let stop = |id: &str, rx: &mpsc::Receiver<Value>| stop_session(port, id, rx);

    let (s1, rx1) = start(json!({"namespace": ns, "pod": "one-*", "probes": ["exec"]}));
    let single = exec_progs(&bpf_objects(apid).0);
    assert!(!single.is_empty(), "no exec programs in the agent");
    let mut dedup = single.clone();
    dedup.dedup();
    assert_eq!(dedup, single, "a program loaded twice for one session");
    let (s2, rx2) = start(json!({"namespace": ns, "pod": "t*", "probes": ["exec"]}));
    let (s3, rx3) = start(json!({"namespace": ns, "probes": ["exec"]}));
    assert_eq!(
        exec_progs(&bpf_objects(apid).0),
        single,
        "three sessions must share one copy of the exec programs"
    );
    let kids = children(apid);
    assert!(
        !kids.iter().any(|c| c.contains(" trace ")),
        "the agent runs trace children: {kids:?}"
    );
    let keys = agent_filter(apid).expect("a filter map while sessions run");
    for (name, id) in [("one", c1), ("two", c2), ("three", c3)] {
        assert!(
            keys.contains(&id),
            "pod {name} ({id}) not in the kernel filter {keys:?}"
        );
    }
    // Let each pod exec its marker a few times while all three sessions run.
    std::thread::sleep(Duration::from_millis(1500));

    let pods_and_markers = |recs: &[Value]| {
        let mut pods = std::collections::BTreeSet::new();
        let mut markers = std::collections::BTreeSet::new();
        for e in recs.iter().filter(|r| r.get("pid").is_some()) {
            pods.insert(e["pod"].as_str().unwrap().to_string());
            let args = e["args"].to_string();
            for tag in ["tag-one", "tag-two", "tag-three"] {
                if args.contains(tag) {
                    markers.insert(tag.to_string());
                }
            }
        }
        (pods, markers)
    };
    let set = |v: &[&str]| -> std::collections::BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    };

    // The namespace-wide session ends: the others still hold every pod.
    let r3 = stop(&s3, &rx3);
    let keys = agent_filter(apid).unwrap();
    assert!(
        keys.contains(&c1) && keys.contains(&c2) && keys.contains(&c3),
        "{keys:?}"
    );
    // The session of pod one ends: pod one leaves the kernel filter.
    let r1 = stop(&s1, &rx1);
    let keys = agent_filter(apid).unwrap();
    assert!(
        !keys.contains(&c1),
        "pod one stayed in the filter: {keys:?}"
    );
    assert!(keys.contains(&c2) && keys.contains(&c3), "{keys:?}");
    let r2 = stop(&s2, &rx2);
    wait_for(Duration::from_secs(5), "the probes to unload", || {
        exec_progs(&bpf_objects(apid).0).is_empty() && agent_filter(apid).is_none()
    });

    let (p1, m1) = pods_and_markers(&r1);
    assert_eq!(
        p1,
        set(&[&format!("one-{sfx}")]),
        "session 1 saw other pods"
    );
    assert_eq!(m1, set(&["tag-one"]));
    let (p2, m2) = pods_and_markers(&r2);
    assert_eq!(
        p2,
        set(&[&format!("two-{sfx}"), &format!("three-{sfx}")]),
        "session 2"
    );
    assert_eq!(m2, set(&["tag-two", "tag-three"]));
    let (p3, m3) = pods_and_markers(&r3);
    assert_eq!(
        p3,
        set(&[
            &format!("one-{sfx}"),
            &format!("two-{sfx}"),
            &format!("three-{sfx}")
        ]),
        "session 3"
    );
    assert_eq!(m3, set(&["tag-one", "tag-two", "tag-three"]));
    // Each session's accounting adds up on its own.
    for recs in [&r1, &r2, &r3] {
        let events = recs.iter().filter(|r| r.get("pid").is_some()).count() as u64;
        let emitted: u64 = recs
            .iter()
            .filter(|r| r["kind"] == "summary")
            .map(|r| r["emitted"].as_u64().unwrap())
            .sum();
        assert_eq!(emitted, events, "delivered != emitted");
    }
}

/// A typed API value as the JSON REST gives for it.
fn js<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

/// A request that must fail: method, path, the document's path, body,
/// headers, whether with the token, and the status it gets.
type ErrorCase<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a [(&'a str, &'a str)],
    bool,
    u16,
);

/// Checks `v` against an OpenAPI 3.0 schema of the hub's document (the
/// subset schemars writes: $ref, type, nullable, properties, required,
/// additionalProperties, items, enum, anyOf/oneOf/allOf). Strict about
/// fields: a property the schema does not list is a difference too, so an
/// answer that grew a field the document lacks fails.
fn check_schema(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "{at}: no schema {name}");
        return check_schema(doc, target, v, at, errs);
    }
    if v.is_null() && schema["nullable"] == true {
        return;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = schema[key].as_array() {
            let ok = alts.iter().any(|s| {
                let mut e = Vec::new();
                check_schema(doc, s, v, at, &mut e);
                e.is_empty()
            });
            if !ok {
                errs.push(format!("{at}: {v} matches none of {key}"));
            }
            return;
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check_schema(doc, s, v, at, errs);
        }
        return;
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} is not one of {e:?}"));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "" => true,
        other => panic!("{at}: schema type {other} not handled"),
    };
    if !ok {
        errs.push(format!("{at}: {v} is not {ty}"));
        return;
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            check_schema(doc, items, x, &format!("{at}[{i}]"), errs);
        }
    }
    if let Some(o) = v.as_object() {
        let props = schema["properties"].as_object();
        for r in schema["required"].as_array().into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{at}: required field {r} missing"));
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check_schema(doc, s, x, &format!("{at}.{k}"), errs),
                None => match schema.get("additionalProperties") {
                    Some(s) if s.is_object() => check_schema(doc, s, x, &format!("{at}.{k}"), errs),
                    _ => errs.push(format!("{at}: field {k} is not in the document")),
                },
            }
        }
    }
}

/// The hub's /openapi.json is generated from the handlers' types: every
/// live answer of every operation, successes and errors, matches the schema
/// the document gives for its status, and every status seen is documented.
#[test]
fn openapi_describes_every_live_answer() {
    let bed = OnePod::up("oa");
    let (port, ns, name) = (bed.port, bed.ns.clone(), bed.name.clone());
    let (st, doc) = api(port, "GET", "/openapi.json", None);
    assert_eq!(st, 200);
    let mut seen = 0;
    let mut check = |method: &str,
                     path: &str,
                     tmpl: &str,
                     body: Option<&str>,
                     hdr: &[(&str, &str)],
                     token: bool| {
        let r = request(&url(port), method, path, token.then_some(TOKEN), body, hdr).unwrap();
        let status = r.status;
        let v = r.json().unwrap_or(Value::Null);
        let op = &doc["paths"][tmpl][method.to_lowercase()];
        assert!(op.is_object(), "{method} {tmpl} is not in the document");
        let resp = &op["responses"][status.to_string()];
        assert!(
            resp.is_object(),
            "{method} {path} answered {status}, which the document does not list: {v}"
        );
        let schema = &resp["content"]["application/json"]["schema"];
        let mut errs = Vec::new();
        check_schema(
            &doc,
            schema,
            &v,
            &format!("{method} {path} {status}"),
            &mut errs,
        );
        assert!(errs.is_empty(), "{errs:#?}");
        seen += 1;
        (status, v)
    };
    // Successes.
    check("GET", "/v1/nodes", "/v1/nodes", None, &[], true);
    let (_, pods) = check(
        "GET",
        &format!("/v1/pods?namespace={ns}"),
        "/v1/pods",
        None,
        &[],
        true,
    );
    assert_eq!(
        pods[0]["name"],
        name.as_str(),
        "the pod's own fields are checked"
    );
    let (_, pods) = check(
        "GET",
        &format!("/v1/pods?namespace={ns}&usage=true"),
        "/v1/pods",
        None,
        &[],
        true,
    );
    assert!(pods[0]["usage"].is_array(), "{pods}");
    check("GET", "/v1/probes", "/v1/probes", None, &[], true);
    // The hook catalogue: every kind `podscope hooks` lists, with its arguments.
    let (_, hooks) = check("GET", "/v1/hooks", "/v1/hooks", None, &[], true);
    let kinds: Vec<&str> = hooks
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"syscalls") && kinds.contains(&"tracepoint") && kinds.contains(&"exec"),
        "{kinds:?}"
    );
    let tp = hooks
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == "tracepoint")
        .unwrap();
    assert!(
        tp["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "filter" && a["type"] == "string"),
        "{tp}"
    );
    let body =
        json!({"namespace": ns, "pod": "oa-*", "probes": ["exec"], "duration": "30s"}).to_string();
    let (st, s) = check(
        "POST",
        "/v1/sessions",
        "/v1/sessions",
        Some(&body),
        &[],
        true,
    );
    assert_eq!(st, 201);
    let id = s["id"].as_str().unwrap().to_string();
    let one = format!("/v1/sessions/{id}");
    // Once the node ran it and stopped: its summary is part of the view.
    check(
        "PUT",
        &one,
        "/v1/sessions/{id}",
        Some(r#"{"state":"stopped"}"#),
        &[],
        true,
    );
    wait_for(Duration::from_secs(30), "the session to stop", || {
        api(port, "GET", &one, None).1["state"] == "stopped"
    });
    let (_, v) = check("GET", &one, "/v1/sessions/{id}", None, &[], true);
    assert!(v["nodes"]["oa-node"]["summary"].is_object(), "{v}");
    check(
        "GET",
        "/v1/sessions?pod=oa-*",
        "/v1/sessions",
        None,
        &[],
        true,
    );
    // Errors, each in the documented shape.
    let big = format!("{{\"probes\":[\"{}\"]}}", "x".repeat(3 << 20));
    let nomatch =
        json!({"namespace": ns, "pod": "nosuch", "probes": ["exec"], "wait": false}).to_string();
    let events = format!("{one}/events");
    let text_plain = [("Content-Type", "text/plain")];
    let (id_path, events_path) = ("/v1/sessions/{id}", "/v1/sessions/{id}/events");
    #[rustfmt::skip]
    let errors: [ErrorCase; 12] = [
        ("GET", &events, events_path, None, &[], true, 409),
        ("PUT", &one, id_path, Some(r#"{"state":"paused"}"#), &[], true, 400),
        ("PUT", "/v1/sessions/nosuch", id_path, Some(r#"{"state":"running"}"#), &[], true, 404),
        ("GET", "/v1/sessions/nosuch", id_path, None, &[], true, 404),
        ("GET", "/v1/sessions/nosuch/events", events_path, None, &[], true, 404),
        ("GET", "/v1/nodes", "/v1/nodes", None, &[], false, 401),
        ("POST", "/v1/sessions", "/v1/sessions", Some("{}"), &text_plain, true, 415),
        ("POST", "/v1/sessions", "/v1/sessions", Some(&big), &[], true, 413),
        ("POST", "/v1/sessions", "/v1/sessions", Some(r#"{"probes":["tpc"]}"#), &[], true, 400),
        ("POST", "/v1/sessions", "/v1/sessions", Some(&nomatch), &[], true, 404),
        ("GET", "/v1/pods?colour=red", "/v1/pods", None, &[], true, 400),
        ("DELETE", "/v1/sessions/nosuch", id_path, None, &[], true, 404),
    ];
    for (method, path, tmpl, body, hdr, token, want) in errors {
        let (st, _) = check(method, path, tmpl, body, hdr, token);
        assert_eq!(st, want, "{method} {path}");
    }
    let exec = json!({"namespace": ns, "pod": name, "command": ["true"]}).to_string();
    let (st, _) = check("POST", "/v1/exec", "/v1/exec", Some(&exec), &[], true);
    assert_eq!(st, 403, "exec is off on this hub");
    let (st, d) = check("DELETE", &one, "/v1/sessions/{id}", None, &[], true);
    assert_eq!((st, d["deleted"][0].as_str()), (200, Some(id.as_str())));
    let (st, _) = check("DELETE", &one, "/v1/sessions/{id}", None, &[], true);
    assert_eq!(st, 404);
    check("DELETE", "/v1/sessions", "/v1/sessions", None, &[], true);
    eprintln!("{seen} live answers match the document");
    // The check can fail: an answer with a field the document lacks, or a
    // field of the wrong type, does not pass.
    let schema = json!({"$ref": "#/components/schemas/SessionView"});
    let mut bad = v.clone();
    bad["colour"] = json!("red");
    bad["run"] = json!("one");
    let mut errs = Vec::new();
    check_schema(&doc, &schema, &bad, "doctored", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
}

/// Request tracing through the hub: `podscope --hub URL trace http` gets one
/// event per request on both sides, exactly the requests wget made (its own
/// count is the witness), with the server pod named as the client's peer;
/// and the agent's always-on RED metrics (`--metrics-probes exec,http`)
/// count the same requests per pod and per edge.
#[test]
fn http_requests_through_the_hub_and_the_agents_red_metrics() {
    const OK: usize = 5;
    const MISSING: usize = 2;
    let sock = socket();
    let tok = token_file();
    let tokf = tok.to_str().unwrap().to_string();
    let port = common::free_port();
    let metrics_port = common::free_port();
    let _hub = hub(port, &[]);
    let _agent = agent(
        port,
        "red-node",
        &sock,
        &tok,
        &[
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--metrics-probes",
            "exec,http",
        ],
    );
    let sfx = suffix();
    let ns = format!("hh-{sfx}");
    // Names of their own: other tests' "did you mean" lists every pod of the bed.
    let (api_name, web_name) = (format!("hh-api-{sfx}"), format!("hh-web-{sfx}"));
    let api_pod = pod(
        &sock,
        &api_name,
        &ns,
        "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    let ip = api_pod.pod.ip.clone().expect("the api pod's address");
    let client = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.2; done; ok=0; bad=0; \
         i=0; while [ $i -lt {OK} ]; do wget -q -O /dev/null http://{ip}:8080/index.html && ok=$((ok+1)); i=$((i+1)); done; \
         i=0; while [ $i -lt {MISSING} ]; do wget -q -O /dev/null http://{ip}:8080/missing || bad=$((bad+1)); i=$((i+1)); done; \
         echo \"$ok $bad\" > /tmp/result; mkdir /tmp/done; sleep 3600"
    );
    let web = pod(&sock, &web_name, &ns, &client);
    let web_pid = web.pod.containers[0].pid.expect("the client's pid");
    wait_for(Duration::from_secs(10), "the hub to know both pods", || {
        let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
        v.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|p| p["containers"][0]["name"] == "main"))
    });
    let mut cli = Proc(
        bin()
            .args(["--hub", &url(port), "--token-file", &tokf])
            .args(["trace", "http", "-n", &ns, "-o", "json"])
            // Headers and bodies are kept on the node (redacted there).
            .args(["--capture-headers", "--capture-body", "64"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = cli.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    // Running on the node: the session's node state says so.
    wait_for(
        Duration::from_secs(20),
        "the session to run on the node",
        || {
            let (_, l) = api(port, "GET", "/v1/sessions", None);
            l[0]["nodes"]["red-node"]["state"] == "running"
        },
    );
    std::fs::write(format!("/proc/{web_pid}/root/tmp/go"), "").unwrap();
    let done = PathBuf::from(format!("/proc/{web_pid}/root/tmp/done"));
    wait_for(Duration::from_secs(60), "the client to finish", || {
        done.is_dir()
    });
    let result = std::fs::read_to_string(format!("/proc/{web_pid}/root/tmp/result")).unwrap();
    assert_eq!(result.trim(), format!("{OK} {MISSING}"), "wget's own count");
    // Collect until both sides of every request arrived (or 30 s).
    let want = 2 * (OK + MISSING);
    let mut reqs: Vec<Value> = Vec::new();
    // Every record that is not an event: lost, gap, summary, end.
    let mut others: Vec<Value> = Vec::new();
    let mut take = |v: Value, reqs: &mut Vec<Value>| {
        if v["probe"] == "http" && v["kind"] == "request" {
            reqs.push(v);
        } else if v.get("pid").is_none() {
            others.push(v);
        }
    };
    let t = Instant::now();
    while reqs.len() < want && t.elapsed() < Duration::from_secs(30) {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(500)) {
            take(v, &mut reqs);
        }
    }
    // A little longer: nothing more may come.
    while let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) {
        take(v, &mut reqs);
    }
    if reqs.len() != want {
        // Say where the missing ones went: stop the trace and show its
        // lost, gap and summary records with the requests that came.
        let _ = Command::new("kill")
            .args(["-INT", &cli.0.id().to_string()])
            .status();
        while let Ok(v) = rx.recv_timeout(Duration::from_secs(5)) {
            take(v, &mut reqs);
        }
        panic!(
            "{} request events, want {want}: {reqs:#?}\nthe other records: {others:#?}",
            reqs.len()
        );
    }
    let count = |role: &str, pod: &str, status: u64, path: &str| {
        reqs.iter()
            .filter(|r| {
                r["role"] == role
                    && r["pod"] == pod
                    && r["status"] == status
                    && r["path"] == path
                    && r["node"] == "red-node"
                    && r["namespace"] == ns.as_str()
            })
            .count()
    };
    assert_eq!(reqs.len(), want, "{reqs:#?}");
    let (_, l) = api(port, "GET", "/v1/sessions", None);
    assert_eq!(l[0]["capture"], json!({"headers": true, "body": 64}), "{l}");
    for r in &reqs {
        let host = r["capture"]["request_headers"]
            .as_array()
            .and_then(|h| h.iter().find(|p| p[0] == "host"))
            .unwrap_or_else(|| panic!("no host header kept: {r}"));
        assert_eq!(host[1], format!("{ip}:8080"), "{r}");
        // wget reads the file; busybox httpd sends it with sendfile (not
        // copied, so the server side has no body).
        if r["role"] == "client" && r["status"] == 200 {
            assert_eq!(r["capture"]["response_body"], "hello\n", "{r}");
        }
    }
    assert_eq!(
        count("server", &api_name, 200, "/index.html"),
        OK,
        "{reqs:#?}"
    );
    assert_eq!(
        count("server", &api_name, 404, "/missing"),
        MISSING,
        "{reqs:#?}"
    );
    assert_eq!(
        count("client", &web_name, 200, "/index.html"),
        OK,
        "{reqs:#?}"
    );
    assert_eq!(
        count("client", &web_name, 404, "/missing"),
        MISSING,
        "{reqs:#?}"
    );
    assert!(
        reqs.iter()
            .filter(|r| r["role"] == "client")
            .all(|r| r["peer_pod"] == api_name.as_str() && r["peer_namespace"] == ns.as_str()),
        "the client's peer is the api pod: {reqs:#?}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &cli.0.id().to_string()])
        .status();
    let status = cli.0.wait().unwrap();
    assert!(status.success(), "the remote trace ends cleanly on Ctrl-C");

    // The agent's RED series: per pod and per edge, the same counts.
    let metric = |text: &str, name: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let nsl = format!("namespace=\"{ns}\"");
    let (api_l, web_l) = (format!("pod=\"{api_name}\""), format!("pod=\"{web_name}\""));
    let peer_l = format!("peer_pod=\"{api_name}\"");
    let mut text = String::new();
    wait_for(Duration::from_secs(20), "the agent's RED series", || {
        text = request(
            &format!("http://127.0.0.1:{metrics_port}"),
            "GET",
            "/metrics",
            None,
            None,
            &[],
        )
        .ok()
        .and_then(|r| r.text().ok())
        .unwrap_or_default();
        metric(
            &text,
            "podscope_http_client_requests_total",
            &[&nsl, &peer_l],
        ) >= (OK + MISSING) as f64
    });
    let server = |class: &str| {
        metric(
            &text,
            "podscope_http_server_requests_total",
            &[&nsl, &api_l, &format!("status_class=\"{class}\"")],
        )
    };
    let edge = |class: &str| {
        metric(
            &text,
            "podscope_http_client_requests_total",
            &[&nsl, &web_l, &peer_l, &format!("status_class=\"{class}\"")],
        )
    };
    assert_eq!(
        (server("2xx"), server("4xx")),
        (OK as f64, MISSING as f64),
        "{text}"
    );
    assert_eq!(
        (edge("2xx"), edge("4xx")),
        (OK as f64, MISSING as f64),
        "{text}"
    );
    drop(web);
    drop(api_pod);
}

/// `podscope --hub URL top --once -o json`: the rows of every node's pods
/// with their NODE, counting exactly what a pod's known workload did,
/// through a real hub and agent (no CPU or memory: those are the node's
/// cgroups).
#[test]
fn top_through_the_hub_counts_each_pods_workload() {
    const EXECS: usize = 6;
    let sock = socket();
    let tok = token_file();
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let _a = agent(port, "top-node", &sock, &tok, &[]);
    let sfx = suffix();
    let ns = format!("top-hub-{sfx}");
    // A FIFO to wait on (no exec while waiting, unlike a sleep loop), EXECS
    // /bin/true, a file made by the shell, and the final exec of sleep:
    // EXECS + 1 execs.
    let busy = pod(
        &sock,
        "busy",
        &ns,
        &format!(
            "mkfifo /tmp/go; read x < /tmp/go; i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done; : > /tmp/done; exec sleep 3600"
        ),
    );
    let idle = pod(&sock, "idle", &ns, "exec sleep 3600");
    // A busy loop: about one CPU (less on a loaded 2-core machine).
    let _spin = pod(&sock, "spin", &ns, "while :; do :; done");
    wait_for(
        Duration::from_secs(10),
        "the node to report the pods",
        || {
            let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
            v.as_array().is_some_and(|a| a.len() == 3)
        },
    );
    let pid = busy.pod.containers[0].pid.unwrap();
    let Remote {
        cli: mut top,
        // Kept open: top writes its summary to stderr at the end.
        err: _err,
        said,
        id,
    } = remote_run(
        port,
        &tok,
        &[
            "top",
            "-n",
            &ns,
            "--once",
            "-o",
            "json",
            "--interval",
            "15s",
        ],
        pid,
    );
    let mut out = String::new();
    std::io::Read::read_to_string(top.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let status = top.0.wait().unwrap();
    assert!(status.success(), "{said}");
    let snap: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let row = |name: &str| -> Value {
        snap["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pod"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} row: {snap}"))
    };
    let b = row("busy");
    assert_eq!(b["node"], "top-node", "{b}");
    assert_eq!(b["namespace"], ns.as_str(), "{b}");
    assert_eq!(b["totals"]["execs"], (EXECS + 1) as u64, "{b}");
    let i = row("idle");
    assert_eq!(i["node"], "top-node", "{i}");
    assert_eq!(i["totals"]["execs"], 0, "{i}");
    // CPU and memory come from the node's usage reports (its cgroups).
    // Witnesses: the loop takes a good part of a CPU, the sleeping pod next
    // to none, and the sleeping pod's memory is what its cgroup says (a
    // sleeping process's working set does not move; the kernel charges
    // memory in per-CPU batches, hence the slack).
    let spin = row("spin")["cpu_percent"].as_f64().unwrap_or(0.0);
    let still = i["cpu_percent"]
        .as_f64()
        .unwrap_or_else(|| panic!("no CPU for the idle pod: {i}"));
    assert!(
        (20.0..=110.0).contains(&spin),
        "the loop at {spin}% CPU: {snap}"
    );
    assert!(still < 5.0, "a sleeping pod at {still}% CPU");
    let cg = idle.pod.containers[0].cgroup_path.clone().unwrap();
    let witness = common::cgroup_working_set(&cg) as f64;
    let shown = i["memory_bytes"].as_f64().unwrap();
    assert!(
        (shown - witness).abs() <= witness * 0.1 + 65536.0,
        "memory {shown} shown, {witness} in the cgroup"
    );
    // The listing behind it: ?usage=true, per container, over REST; its CPU
    // seconds never more than the cgroup has counted by now.
    let (status, v) = api(
        port,
        "GET",
        &format!("/v1/pods?namespace={ns}&usage=true"),
        None,
    );
    assert_eq!(status, 200, "{v}");
    let listed = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "idle")
        .cloned()
        .unwrap();
    let u = &listed["usage"][0];
    assert_eq!(u["container"], "main", "{listed}");
    let cpu_s = u["cpu_seconds"].as_f64().unwrap();
    let used = common::cgroup_cpu_seconds(&cg);
    assert!(
        cpu_s <= used + 1e-6,
        "{cpu_s} s reported, {used} s in the cgroup since"
    );
    // Without it, the listing is as before: no usage.
    let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("usage").is_none()),
        "{v}"
    );
    // The session is gone from the hub once top is done.
    wait_for(Duration::from_secs(10), "the session to be deleted", || {
        api(port, "GET", &format!("/v1/sessions/{id}"), None).0 == 404
    });
}

/// The kernel-side switches of the agent's syscalls probe (its `.bss`):
/// (filter_syscalls, errors_only), or None while it is not loaded.
fn syscalls_switches(pid: u32) -> Option<(bool, bool)> {
    let (_, maps) = bpf_objects(pid);
    let (id, _) = maps.iter().find(|(_, n)| n.ends_with(".bss"))?;
    let out = Command::new("bpftool")
        .args(["map", "dump", "id", &id.to_string(), "-j"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let vars = &v[0]["formatted"]["value"][".bss"];
    let get = |name: &str| -> bool {
        vars.as_array()
            .into_iter()
            .flatten()
            .find_map(|d| d.get(name))
            .and_then(|b| b.as_bool().or_else(|| b.as_u64().map(|n| n != 0)))
            .unwrap_or_else(|| panic!("no {name} in the .bss dump {}", v[0]["formatted"]))
    };
    Some((get("filter_syscalls"), get("errors_only")))
}

/// Hub sessions carry hook settings (issue 13): two syscalls sessions with
/// different settings and a tracepoint session share one node tracer, the
/// kernel runs their union (read from the probe's .bss), each session gets
/// only what its own settings choose (exact counts against the workload's
/// own loop count), a summary session conflicting with stream sessions is
/// refused with why, and summary totals count from each session's start.
#[test]
fn hub_sessions_run_with_their_own_hook_settings() {
    const N: usize = 17;
    let sock = socket();
    let tok = token_file();
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let agent = agent(port, "node-1", &sock, &tok, &[]);
    let apid = agent.0.id();
    wait_for(Duration::from_secs(10), "the agent to register", || {
        nodes_up(port).len() == 1
    });
    let sfx = suffix();
    let ns = format!("hk-{sfx}");
    // A steady successful open and fork every 0.1 s; on each /hk-go, exactly
    // N failing opens of /hk-burst, then /hk-done-K.
    let script = format!(
        "k=0; while true; do if [ -e /hk-go ]; then rm /hk-go; k=$((k+1)); \
         for i in {}; do cat /hk-burst 2>/dev/null; done; echo ok > /hk-done-$k; fi; \
         cat /podbed-marker >/dev/null; (true); sleep 0.1; done",
        (1..=N).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
    );
    let p = pod(&sock, &format!("hk-{sfx}"), &ns, &script);
    let pid = p.pod.containers[0].pid.expect("the container's pid");
    let root = format!("/proc/{pid}/root");
    let burst = |k: u32| {
        std::fs::write(format!("{root}/hk-go"), "go").unwrap();
        wait_for(Duration::from_secs(10), "the burst to finish", || {
            Path::new(&format!("{root}/hk-done-{k}")).exists()
        });
    };
    wait_for(Duration::from_secs(10), "the pod to reach the hub", || {
        let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
        v.as_array().is_some_and(|a| a.len() == 1)
    });
    let start = |body: Value| start_session(port, body);
    let stop = |id: &str, rx: &mpsc::Receiver<Value>| stop_session(port, id, rx);

    // Bad hook arguments are the hub's 400s, naming what would be right.
    for (hook, want) in [
        (
            json!({"kind": "syscalls", "args": {"syscalls": ["openat"]}}),
            "its arguments are syscall, errors_only, summary, interval",
        ),
        (
            json!({"kind": "tracepoint", "args": {"name": ["sched_process_fork"]}}),
            "is not SUBSYSTEM:EVENT",
        ),
    ] {
        let body = json!({"namespace": ns, "hook": hook});
        let (st, e) = api(port, "POST", "/v1/sessions", Some(body));
        assert_eq!(st, 400, "{e}");
        assert!(e["error"].as_str().unwrap().contains(want), "{e}");
    }

    // A: failing openat only (a generic hook); B: every openat (typed);
    // C: forks (a tracepoint hook).
    let (a, rxa) = start(json!({"namespace": ns,
        "hook": {"kind": "syscalls", "args": {"syscall": ["openat"], "errors_only": true}}}));
    assert_eq!(syscalls_switches(apid), Some((true, true)), "A alone");
    let (b, rxb) = start(json!({"namespace": ns, "syscalls": {"syscall": ["openat"]}}));
    assert_eq!(
        syscalls_switches(apid),
        Some((true, false)),
        "with B the kernel must report successes too"
    );
    let (c, rxc) = start(json!({"namespace": ns,
        "hook": {"kind": "tracepoint", "args": {"name": ["sched:sched_process_fork"]}}}));
    let (view, _) = (api(port, "GET", &format!("/v1/sessions/{a}"), None).1, ());
    assert_eq!(view["syscalls"]["syscall"], json!(["openat"]), "{view}");
    assert_eq!(view["syscalls"]["errors_only"], true, "{view}");
    assert_eq!(view["probes"], json!(["syscalls"]), "{view}");

    // A summary session cannot share the stream-mode probe: the node says why.
    let (st, d) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "syscalls": {"summary": true}})),
    );
    assert_eq!(st, 201, "{d}");
    let d = d["id"].as_str().unwrap().to_string();
    wait_for(
        Duration::from_secs(20),
        "the summary session to fail",
        || {
            let (_, s) = api(port, "GET", &format!("/v1/sessions/{d}"), None);
            s["nodes"]["node-1"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("runs in stream mode") && e.contains("summary session"))
        },
    );
    api(port, "DELETE", &format!("/v1/sessions/{d}"), None);

    burst(1);
    let ra = stop(&a, &rxa);
    // B alone: the kernel filter narrows back.
    assert_eq!(syscalls_switches(apid), Some((true, false)));
    let rb = stop(&b, &rxb);
    let rc = stop(&c, &rxc);
    let events = |r: &[Value]| -> Vec<Value> {
        r.iter()
            .filter(|x| x.get("pid").is_some())
            .cloned()
            .collect()
    };
    let opens_of = |r: &[Value], path: &str| {
        events(r)
            .iter()
            .filter(|e| e["decoded"].as_str().is_some_and(|d| d.contains(path)))
            .count()
    };
    let (ea, eb, ec) = (events(&ra), events(&rb), events(&rc));
    assert!(
        ea.iter()
            .all(|e| e["syscall"] == "openat" && e["error"] == "ENOENT"),
        "A got more than failing openat: {ea:?}"
    );
    assert_eq!(opens_of(&ra, "/hk-burst"), N, "A's burst");
    assert_eq!(opens_of(&ra, "/podbed-marker"), 0, "A got successful opens");
    assert!(eb.iter().all(|e| e["syscall"] == "openat"), "B: {eb:?}");
    assert_eq!(opens_of(&rb, "/hk-burst"), N, "B's burst");
    assert!(
        opens_of(&rb, "/podbed-marker") > 0,
        "B got no successful open"
    );
    assert!(!ec.is_empty(), "C got no fork");
    assert!(
        ec.iter()
            .all(|e| e["tracepoint"] == "sched:sched_process_fork" && e["pod"] == p.pod.name),
        "C: {ec:?}"
    );
    wait_for(Duration::from_secs(5), "the probes to unload", || {
        syscalls_switches(apid).is_none()
    });

    // Summary totals from each session's own start: E sees two bursts, F
    // (joining E's running probe) one; F runs through the CLI.
    let totals = |r: &[Value]| -> (u64, u64) {
        let last_ts = r
            .iter()
            .filter(|x| x["kind"] == "totals")
            .map(|x| x["timestamp"].as_str().unwrap().to_string())
            .max()
            .expect("no totals");
        r.iter()
            .filter(|x| x["kind"] == "totals" && x["timestamp"].as_str() == Some(&last_ts))
            .filter(|x| x["syscall"] == "openat")
            .fold((0, 0), |(c, e), x| {
                (
                    c + x["calls"].as_u64().unwrap(),
                    e + x["errors"].as_u64().unwrap(),
                )
            })
    };
    let (e, rxe) = start(json!({"namespace": ns,
        "hook": {"kind": "syscalls", "args": {"syscall": ["openat"], "summary": true, "interval": "2s"}}}));
    burst(2);
    let cli = bin()
        .args(["--hub", &url(port), "--token-file"])
        .arg(&tok)
        .args([
            "trace",
            "syscalls",
            "--summary",
            "--syscall",
            "openat,getppid",
            "-n",
            &ns,
        ])
        .args(["--duration", "6s", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the CLI's session to run", || {
        let (_, v) = api(port, "GET", "/v1/sessions", None);
        v.as_array().is_some_and(|a| {
            a.iter().any(|s| {
                s["id"] != e.as_str()
                    && s["state"] == "running"
                    && all_running(port, s["id"].as_str().unwrap(), 1)
            })
        })
    });
    burst(3);
    let out = cli.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rf: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let re = stop(&e, &rxe);
    let ((_, e_err), (_, f_err)) = (totals(&re), totals(&rf));
    assert_eq!(e_err, 2 * N as u64, "E's failing openat since its start");
    assert_eq!(f_err, N as u64, "F's failing openat since its start");
    // E's reports come every 2 s, not every second.
    let stamps: std::collections::BTreeSet<String> = re
        .iter()
        .filter(|x| x["kind"] == "totals")
        .map(|x| x["timestamp"].as_str().unwrap().to_string())
        .collect();
    let elapsed = re
        .iter()
        .filter(|x| x["kind"] == "totals")
        .map(|x| x["elapsed_ns"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        (stamps.len() as u64) <= elapsed / 2_000_000_000 + 2,
        "{} reports in {elapsed} ns with a 2 s interval",
        stamps.len()
    );
}

/// container-tracer's REST surface on the hub (issue 13): its hook list, a
/// session made by globs with `trace_syscalls` and `-s openat -e`, run,
/// records read, stopped, `DELETE all`; in its JSON shapes.
#[test]
fn container_tracer_surface_on_the_hub() {
    let sock = socket();
    let tok = token_file();
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let _agent = agent(port, "node-1", &sock, &tok, &[]);
    wait_for(Duration::from_secs(10), "the agent to register", || {
        nodes_up(port).len() == 1
    });
    let sfx = suffix();
    let ns = format!("ct-{sfx}");
    let name = format!("ctpod-{sfx}");
    let p = pod(
        &sock,
        &name,
        &ns,
        "while true; do cat /ct-missing 2>/dev/null; cat /podbed-marker >/dev/null; sleep 0.1; done",
    );
    wait_for(Duration::from_secs(10), "the pod to reach the hub", || {
        let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
        v.as_array().is_some_and(|a| a.len() == 1)
    });

    let (st, hooks) = api(port, "GET", "/v1/trace-hooks", None);
    assert_eq!(st, 200);
    let sys = &hooks[0]["podscope"]["Tracers"]["trace_syscalls"];
    assert_eq!(sys["Name"], "trace_syscalls", "{hooks}");
    assert!(
        sys["Description"].to_string().contains("-s, --syscall"),
        "{sys}"
    );
    let (st, e) = api(
        port,
        "POST",
        "/v1/trace-session",
        Some(json!({"pod": "ctpod-*", "trace-hook": "trace_sycalls"})),
    );
    assert_eq!(st, 400);
    assert!(
        e["error"].as_str().unwrap().contains("trace_syscalls"),
        "{e}"
    );

    let (st, created) = api(
        port,
        "POST",
        "/v1/trace-session",
        Some(json!({"pod": format!("ctpod-{sfx}"), "container": "*",
            "trace-hook": "trace_syscalls", "trace-arguments": "-s openat -e",
            "trace-user-context": "test"})),
    );
    assert_eq!(st, 200, "{created}");
    let (id, s) = created.as_object().unwrap().iter().next().unwrap();
    let id = id.clone();
    assert_eq!(s["Running"], false, "{s}");
    assert_eq!(s["Context"], "test");
    assert_eq!(s["TraceHook"], "trace_syscalls");
    assert_eq!(s["TraceParams"], json!(["-s", "openat", "-e"]));
    assert_eq!(s["Containers"], json!({name.clone(): ["main"]}), "{s}");
    assert_eq!(s["Output"], format!("/v1/sessions/{id}/events"));
    // It is a podscope session too.
    let (_, view) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(view["syscalls"]["errors_only"], true, "{view}");
    assert_eq!(view["all_namespaces"], true, "{view}");

    let rx = stream(port, &id);
    let (st, r) = api(
        port,
        "PUT",
        &format!("/v1/trace-session/{id}"),
        Some(json!({"Run": true})),
    );
    assert_eq!((st, r), (200, json!({})));
    wait_for(Duration::from_secs(20), "the session to run", || {
        all_running(port, &id, 1)
    });
    let (_, got) = api(port, "GET", &format!("/v1/trace-session/{id}"), None);
    assert_eq!(got[&id]["Running"], true, "{got}");
    assert_eq!(got[&id]["Node"], "node-1", "{got}");
    // Records as they come: wait for a few failing opens.
    let mut recs = Vec::new();
    let t = Instant::now();
    while recs
        .iter()
        .filter(|r: &&Value| r.get("pid").is_some())
        .count()
        < 3
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no records: {recs:?}"
        );
        if let Ok(v) = rx.recv_timeout(Duration::from_secs(1)) {
            recs.push(v);
        }
    }
    let (st, r) = api(
        port,
        "PUT",
        &format!("/v1/trace-session/{id}"),
        Some(json!({"Run": false})),
    );
    assert_eq!((st, r), (200, json!({})));
    recs.extend(collect(&rx, Duration::from_secs(20)));
    assert_eq!(recs.last().unwrap()["kind"], "end", "{recs:?}");
    let events: Vec<&Value> = recs.iter().filter(|r| r.get("pid").is_some()).collect();
    assert!(
        events.iter().all(|e| e["syscall"] == "openat"
            && e["error"] == "ENOENT"
            && e["pod"] == name.as_str()
            && e["decoded"]
                .as_str()
                .is_some_and(|d| d.contains("/ct-missing"))),
        "{events:?}"
    );
    let (st, r) = api(port, "DELETE", "/v1/trace-session/all", None);
    assert_eq!((st, r), (200, json!({})));
    let (st, all) = api(port, "GET", "/v1/trace-session/all", None);
    assert_eq!((st, all), (200, json!({})));
    drop(p);
}

/// A stop that reaches the agent while the session's probes still load
/// (the node tracer does not know the session yet) is not lost: the
/// session stops once it has started, not at its --duration. Five rounds,
/// each stopped right after it was created. (The window is the moment
/// between the agent taking the start and its task handing it to the node
/// thread: a quiet machine rarely hits it; a busy CI run did, and with three
/// CPU-bound loops running this test failed 2 of 2 times without the fix.)
#[test]
fn a_session_stopped_while_it_starts_stops() {
    let bed = OnePod::up("race");
    let (port, ns) = (bed.port, bed.ns.clone());
    for round in 0..5 {
        let (st, s) = api(
            port,
            "POST",
            "/v1/sessions",
            Some(
                json!({"namespace": ns, "pod": "race-*", "probes": ["exec", "tcp", "open"], "duration": "120s"}),
            ),
        );
        assert_eq!(st, 201, "{s}");
        let one = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
        let (st, v) = api(port, "PUT", &one, Some(json!({"state": "stopped"})));
        assert_eq!(st, 200, "{v}");
        wait_for(
            Duration::from_secs(20),
            &format!("round {round}'s session to end on its node"),
            || {
                let v = api(port, "GET", &one, None).1;
                v["state"] == "stopped" && v["nodes"]["race-node"]["summary"].is_object()
            },
        );
        let (st, _) = api(port, "DELETE", &one, None);
        assert_eq!(st, 200);
    }
}

/// Creates the session `body` (the hub takes it: 201), waits until it has
/// failed on `node`, and returns the node's reason.
fn fails_on_node(port: u16, node: &str, body: Value) -> String {
    let (st, v) = api(port, "POST", "/v1/sessions", Some(body));
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    wait_for(
        Duration::from_secs(10),
        "the session to fail on the node",
        || {
            let (_, s) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
            s["nodes"][node]["state"] == "failed"
        },
    );
    let (_, s) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    s["nodes"][node]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error on {node}: {s}"))
        .to_string()
}

/// A pod `forker` in `ns` whose shell forks `/bin/true` `forks` times once
/// /tmp/go is written, then writes /tmp/done; returned when the node reports it.
/// With `inner`, each round its shell also forks a shell of its own that
/// notes itself in /tmp/inner and forks `/bin/true` once more (not its last
/// command, so it is forked, not exec'd).
fn forker_pod(port: u16, sock: &Path, ns: &str, forks: usize, inner: bool) -> PodGuard {
    let more = if inner {
        "sh -c 'echo x >> /tmp/inner; /bin/true; :'; "
    } else {
        ""
    };
    let p = pod(
        sock,
        "forker",
        ns,
        &format!(
            "mkfifo /tmp/go; read x < /tmp/go; i=0; while [ $i -lt {forks} ]; do /bin/true; {more}i=$((i+1)); done; : > /tmp/done; exec sleep 3600"
        ),
    );
    wait_for(
        Duration::from_secs(10),
        "the node to report the pod",
        || {
            let (_, v) = api(port, "GET", &format!("/v1/pods?namespace={ns}"), None);
            v.as_array().is_some_and(|a| a.len() == 1)
        },
    );
    p
}

/// Ctrl-C to the CLI through the hub: its session stops, the node reads
/// what is left, then the summary. Returns its stdout and all its stderr;
/// it must have exited 0.
fn interrupt(
    mut cli: Proc,
    mut err: std::io::BufReader<std::process::ChildStderr>,
    mut said: String,
) -> (String, String) {
    let ok = Command::new("kill")
        .args(["-INT", &cli.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut out = String::new();
    std::io::Read::read_to_string(cli.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    said.push_str(&rest);
    assert!(cli.0.wait().unwrap().success(), "{said}");
    (out, said)
}

/// The CLI through the hub (`podscope --hub URL ARGS`), its stderr so far.
struct Remote {
    cli: Proc,
    err: std::io::BufReader<std::process::ChildStderr>,
    said: String,
    /// Its session on the hub.
    id: String,
}

/// Starts the CLI through the hub at `port`, waits until its session runs on
/// the node, then lets the pod's workload go (its shell, `pid`, waits on the
/// FIFO /tmp/go) and waits until it is done (/tmp/done).
fn remote_run(port: u16, tok: &Path, args: &[&str], pid: u32) -> Remote {
    let mut cli = Proc(
        bin()
            .args(["--hub", &url(port), "--token-file"])
            .arg(tok)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = std::io::BufReader::new(cli.0.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("Ctrl-C to stop") {
        let mut l = String::new();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut l).unwrap() > 0,
            "{args:?} ended before its session started: {said}"
        );
        said.push_str(&l);
    }
    let id = said
        .split("session ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    wait_for(
        Duration::from_secs(15),
        "the session to run on the node",
        || all_running(port, &id, 1),
    );
    std::fs::write(format!("/proc/{pid}/root/tmp/go"), "").unwrap();
    wait_for(Duration::from_secs(10), "the workload", || {
        Path::new(&format!("/proc/{pid}/root/tmp/done")).exists()
    });
    Remote { cli, err, said, id }
}

/// A session of `ftrace:` tracepoints through the hub (container-tracer's
/// model: the agent runs it in a tracefs instance of its own, no BPF): the
/// CLI's `trace ftrace:sched:sched_process_fork --filter 'parent_pid == SH'`
/// on a pod prints exactly the forks of the pod's shell (N runs of /bin/true
/// and N inner shells), with the pod's identity, and none of the N forks
/// the inner shells make (cut by the node's ftrace filter); its summary
/// adds up; mixing ftrace with other probes is refused.
#[test]
fn ftrace_sessions_run_through_the_hub() {
    const FORKS: usize = 5;
    let sock = socket();
    let tok = token_file();
    let port = common::free_port();
    let _hub = hub(port, &[]);
    let a = agent(port, "ft-node", &sock, &tok, &[]);
    let ns = format!("ft-hub-{}", suffix());
    let forker = forker_pod(port, &sock, &ns, FORKS, true);
    let (st, v) = api(
        port,
        "POST",
        "/v1/sessions",
        Some(json!({"namespace": ns, "probes": ["ftrace:sched:sched_process_fork", "exec"]})),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("runs alone"), "{v}");
    // A buffer size is the ftrace instance's: refused without ftrace, and a
    // size that is not one is named.
    for (body, says) in [
        (
            json!({"namespace": ns, "probes": ["exec"], "ftrace_buffer_size": "4M"}),
            "has none",
        ),
        (
            json!({"namespace": ns, "hooks": [{"kind": "ftrace", "args": {
                "name": ["sched:sched_process_fork"], "buffer_size": "3M"}}]}),
            "ftrace buffer_size '3M': ring buffer size 3145728 must be a power of two",
        ),
    ] {
        let (st, v) = api(port, "POST", "/v1/sessions", Some(body));
        assert_eq!(st, 400, "{v}");
        assert!(v.to_string().contains(says), "{v}");
    }
    // This agent has no --otlp-endpoint: a session that asks for OTLP fails
    // on it, with the reason.
    let why = fails_on_node(
        port,
        "ft-node",
        json!({"namespace": ns, "probes": ["exec"], "otlp": true}),
    );
    assert!(why.contains("--otlp-endpoint URL"), "{why}");
    // An ftrace filter reaches the node's instance: a field the event lacks
    // fails the session there, naming the fields it has.
    let why = fails_on_node(
        port,
        "ft-node",
        json!({"namespace": ns, "hooks": [{"kind": "ftrace", "args": {
            "name": ["sched:sched_process_fork"], "filter": "nosuch == 1"}}]}),
    );
    assert!(
        why.contains("'nosuch'") && why.contains("child_pid"),
        "{why}"
    );
    let sh = forker.pod.containers[0].pid.unwrap();
    // The filter travels to the node's ftrace instance and cuts there: the
    // inner shells' forks (parent_pid theirs) never leave the kernel.
    let filter = format!("parent_pid == {sh} && child_pid > 0");
    let Remote { cli, err, said, id } = remote_run(
        port,
        &tok,
        &[
            "trace",
            "ftrace:sched:sched_process_fork",
            "-n",
            &ns,
            "--pod",
            "forker",
            "--filter",
            &filter,
            "--ring-buffer-size",
            "4M",
            "-o",
            "json",
        ],
        sh,
    );
    let (_, v) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(v["tracepoint"]["filter"], filter.as_str(), "{v}");
    assert_eq!(v["ftrace_buffer_bytes"], 4 << 20, "{v}");
    // The agent's instance has that buffer (ftrace rounds up to pages of
    // its own: 4099 KiB on x86_64 6.x).
    let prefix = format!("podscope-{}-", a.0.id());
    let inst: Vec<PathBuf> = std::fs::read_dir("/sys/kernel/tracing/instances")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    assert_eq!(inst.len(), 1, "the agent's instance: {inst:?}");
    let kb: u64 = std::fs::read_to_string(inst[0].join("buffer_size_kb"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((4096..4096 + 64).contains(&kb), "{kb} KiB");
    // Ctrl-C: the session stops, the node reads what is left, then the summary.
    let (out, said) = interrupt(cli, err, said);
    let forks: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["tracepoint"] == "sched:sched_process_fork")
        .collect();
    // The witness that there was something to cut: each inner shell ran
    // (and forked its /bin/true).
    let inner = std::fs::read_to_string(format!("/proc/{sh}/root/tmp/inner")).unwrap();
    assert_eq!(inner.lines().count(), FORKS, "{inner}");
    assert_eq!(forks.len(), 2 * FORKS, "{out}\n{said}");
    let mut children = std::collections::BTreeSet::new();
    for f in &forks {
        assert_eq!(f["fields"]["parent_pid"].as_u64(), Some(sh as u64), "{f}");
        assert_eq!(
            (f["namespace"].as_str(), f["pod"].as_str()),
            (Some(ns.as_str()), Some("forker")),
            "{f}"
        );
        assert_eq!(f["node"], "ft-node", "{f}");
        children.insert(f["fields"]["child_pid"].as_u64().unwrap());
    }
    assert_eq!(children.len(), 2 * FORKS, "{out}");
    let n = 2 * FORKS;
    assert!(
        said.contains(&format!("{n} printed = {n} the trace wrote")),
        "{said}"
    );
}

/// `podscope --hub URL trace ... --otlp` (REST `"otlp": true`): the agent
/// exports the hub's session to its own --otlp-endpoint (a real OTLP/gRPC
/// receiver here, tests/common/otlp.rs): one session span with the session's
/// id and node, and each of the pod's forks exactly once as a log record in
/// that span's context, with the pod's resource (container-tracer's span per
/// session, its trace lines under it).
#[test]
fn hub_sessions_export_over_otlp_from_the_agent() {
    const FORKS: usize = 4;
    let sock = socket();
    let tok = token_file();
    let port = common::free_port();
    let mut rx = common::otlp::GrpcReceiver::start(
        format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap(),
    );
    let _hub = hub(port, &[]);
    let _a = agent(
        port,
        "otlp-node",
        &sock,
        &tok,
        &[
            "--otlp-endpoint",
            &rx.url(),
            "--otlp-protocol",
            "grpc",
            "--metrics-probes",
            "exec",
        ],
    );
    let ns = format!("otlp-hub-{}", suffix());
    let forker = forker_pod(port, &sock, &ns, FORKS, false);
    let sh = forker.pod.containers[0].pid.unwrap();
    let Remote { cli, err, said, id } = remote_run(
        port,
        &tok,
        &[
            "trace",
            "tp:sched:sched_process_fork",
            "-n",
            &ns,
            "--pod",
            "forker",
            "--otlp",
            "-o",
            "json",
        ],
        sh,
    );
    let (_, v) = api(port, "GET", &format!("/v1/sessions/{id}"), None);
    assert_eq!(v["otlp"], true, "the session says it exports: {v}");
    let (out, said) = interrupt(cli, err, said);
    let printed = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["tracepoint"] == "sched:sched_process_fork")
        .count();
    assert_eq!(printed, FORKS, "the stream still has them: {out}\n{said}");
    // The node sends the session span when the session ends (before it
    // reports it finished).
    let session = |spans: &[common::otlp::Got]| -> Option<common::otlp::Got> {
        spans
            .iter()
            .find(|g| g.attrs.get("podscope.session.id") == Some(&id))
            .cloned()
    };
    wait_for(Duration::from_secs(15), "the session span", || {
        session(&rx.store.spans()).is_some()
    });
    rx.stop();
    let spans = rx.store.spans();
    let s = session(&spans).unwrap();
    assert_eq!(s.span.name, "podscope trace", "{s:?}");
    assert_eq!(s.attrs["k8s.node.name"], "otlp-node", "{s:?}");
    assert_eq!(s.attrs["podscope.events"], FORKS.to_string(), "{s:?}");
    assert!(s.attrs["podscope.scope"].contains(&ns), "{s:?}");
    let forks: Vec<common::otlp::GotLog> = rx
        .store
        .logs()
        .into_iter()
        .filter(|l| {
            l.attrs.get("podscope.tracepoint").map(String::as_str)
                == Some("sched:sched_process_fork")
        })
        .collect();
    assert_eq!(forks.len(), FORKS, "{forks:#?}");
    let mut children = std::collections::BTreeSet::new();
    for l in &forks {
        assert_eq!(
            l.record.trace_id, s.span.trace_id,
            "in the session's trace: {l:?}"
        );
        assert_eq!(
            l.record.span_id, s.span.span_id,
            "under the session span: {l:?}"
        );
        assert_eq!(l.resource["k8s.pod.name"], "forker", "{l:?}");
        assert_eq!(l.resource["k8s.namespace.name"], ns.as_str(), "{l:?}");
        assert_eq!(l.attrs["podscope.tp.parent_pid"], sh.to_string(), "{l:?}");
        children.insert(l.attrs["podscope.tp.child_pid"].clone());
    }
    assert_eq!(children.len(), FORKS);
}
