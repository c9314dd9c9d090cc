//! `podscope trace --metrics-listen` scraped by a real Prometheus server
//! (Debian package `prometheus`), against real containerd CRI pods (the test
//! bed: testbed/podbed.sh). Needs root, PODBED_SOCKET and the `prometheus`
//! and `promtool` binaries; without them these tests fail and say what to set up.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prom::{MetricsTrace as Podscope, Prometheus};
use common::{endpoint, suffix, wait_for, PodGuard};
use serde_json::Value;

/// A busybox pod whose containers run `sh -c SCRIPT`.
fn pod(name: &str, ns: &str, containers: &[(&str, &str)]) -> PodGuard {
    common::pod(name, ns, &[], containers)
}

#[test]
fn prometheus_sees_exactly_the_connections_and_opens_of_each_pod() {
    const CONNECTIONS: usize = 7;
    const OPENS: usize = 5;
    let s = suffix();
    let ns = format!("metrics-{s}");
    let marker = format!("/marker-{s}");
    // The client waits for a go file (a stat, not an open), then makes exactly
    // OPENS opens (cat /marker: one failed openat each) and CONNECTIONS
    // connections to the server container over the pod's loopback, and says
    // it is done with mkdir (no open).
    let client = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.2; done; \
         i=0; while [ $i -lt {OPENS} ]; do cat {marker}; i=$((i+1)); done; \
         i=0; while [ $i -lt {CONNECTIONS} ]; do nc 127.0.0.1 7000; i=$((i+1)); done; \
         mkdir /tmp/done; sleep 3600"
    );
    let busy = pod(
        "busy",
        &ns,
        &[("server", "nc -ll -p 7000 -e true"), ("client", &client)],
    );
    let idle = pod("idle", &ns, &[("main", "sleep 3600")]);

    let podscope = Podscope::start(&["tcp,open,exec", "-n", &ns]);
    let prom = Prometheus::start(podscope.addr);
    wait_for("the first scrape", Duration::from_secs(20), || {
        prom.scalar("up{job=\"podscope\"}") == Some(1.0)
    });

    std::fs::write(busy.path_in("client", "/tmp/go"), "").unwrap();
    let done = busy.path_in("client", "/tmp/done");
    wait_for("the client to finish", Duration::from_secs(60), || {
        done.is_dir()
    });

    let sel = |c: &str| format!("namespace=\"{ns}\",pod=\"busy\",container=\"{c}\"");
    let connects = format!("sum(podscope_tcp_connects_total{{{}}})", sel("client"));
    let opens = format!("sum(podscope_file_opens_total{{{}}})", sel("client"));
    let failed = format!(
        "sum(podscope_file_open_failures_total{{{}}})",
        sel("client")
    );
    let accepts = format!("sum(podscope_tcp_accepts_total{{{}}})", sel("server"));
    let timeout = Duration::from_secs(30);
    assert_eq!(
        prom.wait_value(&connects, CONNECTIONS as f64, timeout),
        Some(CONNECTIONS as f64)
    );
    assert_eq!(
        prom.wait_value(&opens, OPENS as f64, timeout),
        Some(OPENS as f64)
    );
    assert_eq!(
        prom.wait_value(&accepts, CONNECTIONS as f64, timeout),
        Some(CONNECTIONS as f64)
    );
    // A few more scrapes: the counts stay exact (nothing counted twice, nothing late).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(prom.scalar(&connects), Some(CONNECTIONS as f64));
    assert_eq!(prom.scalar(&opens), Some(OPENS as f64));
    assert_eq!(
        prom.scalar(&failed),
        Some(OPENS as f64),
        "cat of a missing file fails"
    );
    assert_eq!(prom.scalar(&accepts), Some(CONNECTIONS as f64));
    assert_eq!(
        prom.scalar(&format!(
            "sum(podscope_tcp_closes_total{{namespace=\"{ns}\",pod=\"busy\"}})"
        )),
        Some(2.0 * CONNECTIONS as f64),
        "both ends of every connection closed"
    );
    assert_eq!(
        prom.scalar(&format!(
            "sum(podscope_tcp_active_connections{{namespace=\"{ns}\",pod=\"busy\"}})"
        )),
        Some(0.0)
    );
    assert_eq!(
        prom.scalar(&format!(
            "sum(podscope_tcp_connection_duration_seconds_count{{namespace=\"{ns}\",pod=\"busy\"}})"
        )),
        Some(2.0 * CONNECTIONS as f64)
    );
    assert_eq!(
        prom.scalar(&format!(
            "sum(podscope_execs_total{{{}}}) >= {CONNECTIONS}",
            sel("client")
        ))
        .map(|_| ()),
        Some(()),
        "one nc exec per connection at least"
    );

    // The pod that did nothing has no probe series at all, only resource usage.
    let idle_probe = format!(
        "{{__name__=~\"podscope_(tcp|file|exec|block_io|page_cache)_.*\",namespace=\"{ns}\",pod=\"idle\"}}"
    );
    assert_eq!(prom.query(&idle_probe), Vec::<Value>::new());
    assert!(
        prom.scalar(&format!(
            "podscope_container_memory_usage_bytes{{namespace=\"{ns}\",pod=\"idle\"}}"
        ))
        .is_some_and(|v| v > 0.0),
        "the idle pod's resource usage is there"
    );
    assert!(prom.scalar(&format!(
        "sum(podscope_pod_network_receive_packets_total{{namespace=\"{ns}\",pod=\"busy\",interface=\"lo\"}})"
    )).is_some_and(|v| v >= 4.0 * CONNECTIONS as f64), "loopback traffic of the pod");
    // No pid label anywhere, ever.
    assert_eq!(
        prom.query("{job=\"podscope\",pid!=\"\"}"),
        Vec::<Value>::new()
    );

    // The Prometheus text format passes promtool's linter, and OpenMetrics is negotiated.
    let text = podscope.metrics(None);
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let om = podscope.metrics(Some("application/openmetrics-text;version=1.0.0"));
    assert!(om.ends_with("# EOF\n"));

    // Every query of the Grafana dashboard is valid PromQL for this server.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/grafana/podscope-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("$namespace", &ns)
                .replace("$pod", ".*")
                .replace("$node", ".*")
                .replace("$job", "podscope");
            prom.query(&expr);
            n += 1;
        }
    }
    assert!(n > 20);
    drop(idle);
}

/// Where a controller's file of a container is: cgroup v2 when the container's
/// v2 cgroup has the controller, else the controller's v1 hierarchy.
/// RED metrics of HTTP between two real pods: a busybox httpd pod and a
/// client pod fetching with busybox wget over the pod network. The client's
/// own exit statuses are the witness: Prometheus must hold exactly as many
/// requests per status class on the server's series and on the client's
/// edge series (client pod -> server pod) as the client made.
#[test]
fn prometheus_sees_each_http_edge_exactly() {
    const OK: usize = 6;
    const MISSING: usize = 3;
    let s = suffix();
    let ns = format!("red-{s}");
    let api = pod(
        "api",
        &ns,
        &[(
            "httpd",
            "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
        )],
    );
    let api_ip = api.pod.ip.clone().expect("the api pod has an address");
    // The client waits for a go file, makes OK good and MISSING missing
    // fetches, and writes what wget said about each (its exit status).
    let client = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.2; done; ok=0; bad=0; \
         i=0; while [ $i -lt {OK} ]; do wget -q -O /dev/null http://{api_ip}:8080/index.html && ok=$((ok+1)); i=$((i+1)); done; \
         i=0; while [ $i -lt {MISSING} ]; do wget -q -O /dev/null http://{api_ip}:8080/missing || bad=$((bad+1)); i=$((i+1)); done; \
         echo \"$ok $bad\" > /tmp/result; mkdir /tmp/done; sleep 3600"
    );
    let web = pod("web", &ns, &[("client", &client)]);
    let podscope = Podscope::start(&["http", "-n", &ns]);
    let prom = Prometheus::start(podscope.addr);
    wait_for("the first scrape", Duration::from_secs(20), || {
        prom.scalar("up{job=\"podscope\"}") == Some(1.0)
    });
    std::fs::write(web.path_in("client", "/tmp/go"), "").unwrap();
    let done = web.path_in("client", "/tmp/done");
    wait_for("the client to finish", Duration::from_secs(60), || {
        done.is_dir()
    });
    let result = std::fs::read_to_string(web.path_in("client", "/tmp/result")).unwrap();
    assert_eq!(
        result.trim(),
        format!("{OK} {MISSING}"),
        "wget's own view of the requests"
    );

    let timeout = Duration::from_secs(30);
    let server = |class: &str| {
        format!(
            "sum(podscope_http_server_requests_total{{namespace=\"{ns}\",pod=\"api\",method=\"GET\",status_class=\"{class}\"}})"
        )
    };
    let edge = |class: &str| {
        format!(
            "sum(podscope_http_client_requests_total{{namespace=\"{ns}\",pod=\"web\",peer_namespace=\"{ns}\",peer_pod=\"api\",method=\"GET\",status_class=\"{class}\"}})"
        )
    };
    assert_eq!(
        prom.wait_value(&server("2xx"), OK as f64, timeout),
        Some(OK as f64)
    );
    assert_eq!(
        prom.wait_value(&server("4xx"), MISSING as f64, timeout),
        Some(MISSING as f64)
    );
    assert_eq!(
        prom.wait_value(&edge("2xx"), OK as f64, timeout),
        Some(OK as f64)
    );
    assert_eq!(
        prom.wait_value(&edge("4xx"), MISSING as f64, timeout),
        Some(MISSING as f64)
    );
    // More scrapes: still exact, and nothing else was counted in the namespace.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        prom.scalar(&format!(
            "sum(podscope_http_server_requests_total{{namespace=\"{ns}\"}})"
        )),
        Some((OK + MISSING) as f64)
    );
    assert_eq!(
        prom.scalar(&format!(
            "sum(podscope_http_client_requests_total{{namespace=\"{ns}\"}})"
        )),
        Some((OK + MISSING) as f64),
        "every request the client made names the server pod"
    );
    assert_eq!(
        prom.scalar(&format!(
            "sum(podscope_http_server_request_duration_seconds_count{{namespace=\"{ns}\",pod=\"api\"}})"
        )),
        Some((OK + MISSING) as f64)
    );
    assert_eq!(
        prom.scalar(&format!(
            "sum(podscope_http_client_request_duration_seconds_count{{namespace=\"{ns}\",pod=\"web\"}})"
        )),
        Some((OK + MISSING) as f64)
    );
    drop(prom);
    drop(podscope);
}

fn cgroup_file(cgroup_path: &str, controller: &str, v2_file: &str, v1_file: &str) -> PathBuf {
    let mounts = podscope_runtime::cgroup::cgroup_mounts().unwrap();
    let v2 = podscope_runtime::cgroup::pick_cgroup2(&mounts).unwrap();
    let v2_dir = v2.dir_of(cgroup_path);
    let controllers =
        std::fs::read_to_string(v2_dir.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == controller) {
        return v2_dir.join(v2_file);
    }
    let v1 = mounts
        .iter()
        .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
        .unwrap_or_else(|| panic!("no cgroup hierarchy has the {controller} controller"));
    v1.dir_of(cgroup_path).join(v1_file)
}

/// utime + stime (+ waited-for children) of a process, in seconds.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // After the comm: state is 0, utime 11, stime 12, cutime 13, cstime 14 (USER_HZ = 100).
    ((f[11] + f[13]) / 100.0, (f[12] + f[14]) / 100.0)
}

/// Anonymous memory of every process in a cgroup (v2 cgroup.procs).
fn anon_bytes(cgroup_path: &str) -> u64 {
    let v2 = podscope_runtime::cgroup::cgroup2_mount().unwrap();
    let procs = std::fs::read_to_string(v2.dir_of(cgroup_path).join("cgroup.procs")).unwrap();
    procs
        .split_whitespace()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .sum()
}

#[test]
fn container_cpu_and_memory_match_what_the_processes_used() {
    const MIB: u64 = 1 << 20;
    const HELD: u64 = 64 * MIB;
    let s = suffix();
    let ns = format!("usage-{s}");
    // ~2 s of pure shell arithmetic once told to go; the shell then idles, so
    // its own CPU time in /proc is the truth to compare with.
    let burn = "while [ ! -e /tmp/go ]; do sleep 0.2; done; \
                i=0; while [ $i -lt 1800000 ]; do i=$((i+1)); done; mkdir /tmp/done; sleep 3600";
    // dd fills a 64 MiB buffer from /dev/zero, then blocks writing it into a
    // pipe nobody reads: 64 MiB of anonymous memory held for good.
    let hold = format!("dd if=/dev/zero bs={HELD} count=1 | sleep 3600");
    let p = pod("usage", &ns, &[("burn", burn), ("hold", &hold)]);
    let burn_c = p.container("burn").clone();
    let hold_c = p.container("hold").clone();
    let burn_cg = burn_c.cgroup_path.clone().unwrap();
    let hold_cg = hold_c.cgroup_path.clone().unwrap();

    // Real limits, so limit and throttling series carry real values.
    std::fs::write(
        cgroup_file(&hold_cg, "memory", "memory.max", "memory.limit_in_bytes"),
        format!("{}", 256 * MIB),
    )
    .unwrap();
    let quota = cgroup_file(&burn_cg, "cpu", "cpu.max", "cpu.cfs_quota_us");
    let quota_text = if quota.ends_with("cpu.max") {
        "50000 100000"
    } else {
        "50000"
    };
    std::fs::write(&quota, quota_text).unwrap();

    let podscope = Podscope::start(&["exec", "-n", &ns]);
    let prom = Prometheus::start(podscope.addr);
    wait_for("the first scrape", Duration::from_secs(20), || {
        prom.scalar("up{job=\"podscope\"}") == Some(1.0)
    });
    std::fs::write(p.path_in("burn", "/tmp/go"), "").unwrap();
    let done = p.path_in("burn", "/tmp/done");
    wait_for("the CPU burn", Duration::from_secs(60), || done.is_dir());
    let (user, system) = cpu_seconds(burn_c.pid.unwrap());
    let truth = user + system;
    assert!(truth > 1.0, "the loop burnt {truth} s");

    let who = |c: &str| format!("{{namespace=\"{ns}\",pod=\"usage\",container=\"{c}\"}}");
    // Wait for a scrape after the burn: the value stops moving.
    let cpu_q = format!("podscope_container_cpu_usage_seconds_total{}", who("burn"));
    let mut last = -1.0;
    wait_for("the CPU counter to settle", Duration::from_secs(20), || {
        let v = prom.scalar(&cpu_q).unwrap_or(0.0);
        let settled = v >= truth * 0.9 && (v - last).abs() < 0.02;
        last = v;
        std::thread::sleep(Duration::from_millis(1100));
        settled
    });
    let cpu = prom.scalar(&cpu_q).unwrap();
    let cpu_user = prom
        .scalar(&format!(
            "podscope_container_cpu_user_seconds_total{}",
            who("burn")
        ))
        .unwrap();
    eprintln!("cpu: truth {truth:.3} s (user {user:.2}, system {system:.2}); podscope {cpu:.3} s (user {cpu_user:.3})");
    assert!(
        (cpu - truth).abs() <= 0.1 * truth,
        "container CPU {cpu:.3} s vs the shell's own {truth:.3} s"
    );
    assert!(
        (cpu_user - user).abs() <= 0.1 * user + 0.05,
        "user CPU {cpu_user:.3} s vs {user:.3} s"
    );
    let throttled = prom
        .scalar(&format!(
            "podscope_container_cpu_cfs_throttled_periods_total{}",
            who("burn")
        ))
        .unwrap();
    let periods = prom
        .scalar(&format!(
            "podscope_container_cpu_cfs_periods_total{}",
            who("burn")
        ))
        .unwrap();
    eprintln!("cfs: {throttled} of {periods} periods throttled at a 50% quota");
    assert!(
        throttled > 0.0 && periods >= throttled,
        "a 50% quota throttles a busy loop"
    );

    let anon = anon_bytes(&hold_cg);
    assert!(anon >= HELD, "dd holds {anon} bytes of anonymous memory");
    let usage = prom
        .scalar(&format!(
            "podscope_container_memory_usage_bytes{}",
            who("hold")
        ))
        .unwrap();
    let ws = prom
        .scalar(&format!(
            "podscope_container_memory_working_set_bytes{}",
            who("hold")
        ))
        .unwrap();
    let limit = prom
        .scalar(&format!(
            "podscope_container_memory_limit_bytes{}",
            who("hold")
        ))
        .unwrap();
    eprintln!(
        "memory: processes' anonymous memory {:.1} MiB; podscope usage {:.1} MiB, working set {:.1} MiB, limit {:.0} MiB",
        anon as f64 / MIB as f64,
        usage / MIB as f64,
        ws / MIB as f64,
        limit / MIB as f64
    );
    for (what, v) in [("usage", usage), ("working set", ws)] {
        assert!(
            v >= HELD as f64 && v <= anon as f64 * 1.1,
            "memory {what} {v} vs {anon} bytes held"
        );
    }
    assert_eq!(limit, (256 * MIB) as f64);
    assert_eq!(
        prom.scalar(&format!(
            "podscope_container_oom_kills_total{}",
            who("hold")
        )),
        Some(0.0)
    );
}

#[test]
fn series_of_a_deleted_pod_are_removed_after_the_grace_period() {
    let s = suffix();
    let ns = format!("grace-{s}");
    let keep = pod(
        "keep",
        &ns,
        &[("c", "while true; do cat /k; sleep 0.5; done")],
    );
    let gone = pod(
        "gone",
        &ns,
        &[("c", "while true; do cat /g; sleep 0.5; done")],
    );
    let podscope = Podscope::start(&["open", "-n", &ns, "--metrics-grace", "2s"]);
    let has = |pod: &str, name: &str| {
        podscope
            .metrics(None)
            .lines()
            .any(|l| l.starts_with(name) && l.contains(&format!("pod=\"{pod}\"")))
    };
    wait_for("both pods' series", Duration::from_secs(20), || {
        has("gone", "podscope_file_opens_total") && has("keep", "podscope_file_opens_total")
    });
    assert!(has("gone", "podscope_container_cpu_usage_seconds_total"));
    gone.remove();
    let removed = Instant::now();
    // Gone within grace (2 s) + one pod-list refresh (5 s) + slack.
    wait_for(
        "the deleted pod's series to go",
        Duration::from_secs(15),
        || !has("gone", "podscope_"),
    );
    eprintln!("series removed {:?} after the pod", removed.elapsed());
    assert!(
        has("keep", "podscope_file_opens_total"),
        "the other pod keeps its series"
    );
    let text = podscope.metrics(None);
    assert!(
        text.lines()
            .any(|l| l.starts_with("podscope_pod_series_removals_total 1")),
        "{text}"
    );
    drop(keep);
}

#[test]
fn metrics_listen_on_a_busy_port_fails_before_loading_probes() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args([
            "trace",
            "exec",
            "--all",
            "--metrics-listen",
            &addr.to_string(),
        ])
        .args(["--runtime-endpoint", &endpoint()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen for metrics on {addr}")),
        "{err}"
    );
    assert!(!err.contains("probes attached"), "{err}");
}
