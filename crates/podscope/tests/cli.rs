//! The podscope binary as a user runs it: errors they can act on, and a live
//! trace of real kernel events through the whole pipeline to JSON.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn podscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podscope"))
}

fn is_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root && std::env::var_os("PODSCOPE_SKIP_ROOT_TESTS").is_some() {
        eprintln!("SKIPPED: needs root (PODSCOPE_SKIP_ROOT_TESTS is set)");
        return false;
    }
    assert!(
        root,
        "this test needs root; set PODSCOPE_SKIP_ROOT_TESTS=1 to skip"
    );
    true
}

/// podscope as nobody with no capabilities (setpriv is util-linux).
fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_podscope"))
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = podscope().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_probe_names_it_and_lists_valid_ones() {
    let (code, _, err) = run(&["trace", "exec,tpc", "--all"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown probe 'tpc'"), "{err}");
    assert!(err.contains("did you mean 'tcp'"), "{err}");
    assert!(err.contains("exec, exit, tcp, bio, cache, open"), "{err}");
}

#[test]
fn missing_cgroup_is_named() {
    let (code, _, err) = run(&[
        "trace",
        "exec",
        "--cgroup",
        "/sys/fs/cgroup/no-such-podscope-cg",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cgroup path /sys/fs/cgroup/no-such-podscope-cg does not exist"),
        "{err}"
    );
}

#[test]
fn no_selection_asks_for_one() {
    let (code, _, err) = run(&["trace", "exec"]);
    assert_eq!(code, 1);
    assert!(err.contains("--all"), "{err}");
    assert!(err.contains("--pid"), "{err}");
}

#[test]
fn bad_duration_and_ring_size_are_explained() {
    let (code, _, err) = run(&["trace", "exec", "--all", "--duration", "soon"]);
    assert_eq!(code, 2);
    assert!(err.contains("'soon' is not a duration"), "{err}");
    let (code, _, err) = run(&["trace", "exec", "--all", "--ring-buffer-size", "5000"]);
    assert_eq!(code, 2);
    assert!(err.contains("power of two"), "{err}");
}

#[test]
fn capture_flags_name_what_is_wrong() {
    let (code, _, err) = run(&["trace", "exec", "--all", "--capture-headers"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("settings of the request probes: add http"),
        "{err}"
    );
    let (code, _, err) = run(&["trace", "http", "--all", "--capture-body", "32K"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("between 1 and 16K"), "{err}");
    let (code, _, err) = run(&["trace", "http", "--all", "--redact-header", "x tenant"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("'x tenant' is not a header name"), "{err}");
}

#[test]
fn probes_lists_every_probe_as_supported_here() {
    if !is_root() {
        return;
    }
    let (code, out, err) = run(&["probes", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r["probe"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "exec", "exit", "tcp", "bio", "cache", "open", "http", "dns", "tls", "grpc",
            "syscalls", "drop", "net"
        ]
    );
    for r in &rows {
        assert_eq!(r["supported"], true, "{r}");
    }
}

#[test]
fn json_trace_of_a_real_exec_with_summary() {
    if !is_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("podscope-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("cli-uniq-prog");
    std::fs::copy("/bin/true", &prog).unwrap();

    let mut child = podscope()
        .args([
            "trace",
            "exec,exit",
            "--all",
            "-o",
            "json",
            "--duration",
            "4s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until probes are attached (the banner on stderr), then act.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(banner.contains("probes attached"), "{banner}");
    let st = Command::new(&prog)
        .args(["hello", "world"])
        .status()
        .unwrap();
    assert!(st.success());

    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect();
    let prog_s = prog.to_str().unwrap();
    let exec = lines
        .iter()
        .find(|l| l["probe"] == "exec" && l["filename"] == prog_s)
        .expect("the exec event");
    assert_eq!(exec["args"], serde_json::json!([prog_s, "hello", "world"]));
    assert_eq!(exec["kind"], "exec");
    for key in ["timestamp", "pid", "comm", "cgroup_id", "node", "ppid"] {
        assert!(exec.get(key).is_some(), "{key} missing in {exec}");
    }
    let ts = exec["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == 30,
        "RFC 3339 with ns: {ts}"
    );
    let pid = exec["pid"].as_u64().unwrap();
    let exit = lines
        .iter()
        .find(|l| l["probe"] == "exit" && l["pid"].as_u64() == Some(pid))
        .expect("the exit event of the same process");
    assert_eq!(exit["exit_code"], 0);

    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    let probes = summary["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2);
    let counted: u64 = probes.iter().map(|p| p["events"].as_u64().unwrap()).sum();
    assert_eq!(
        counted as usize,
        lines.len() - 1,
        "summary counts every event line"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn max_events_stops_early() {
    if !is_root() {
        return;
    }
    let mut child = podscope()
        .args([
            "trace",
            "open",
            "--all",
            "-o",
            "json",
            "--max-events",
            "3",
            "--duration",
            "20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Make sure there is something to open meanwhile.
    let start = std::time::Instant::now();
    loop {
        let _ = std::fs::read("/etc/hostname");
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "--max-events did not stop the trace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events = lines.iter().filter(|l| l["kind"] == "open").count();
    assert_eq!(events, 3, "{text}");
    assert_eq!(lines.last().unwrap()["kind"], "summary", "{text}");
}

#[test]
fn without_privileges_the_missing_capabilities_are_named() {
    if !is_root() {
        return;
    }
    let out = as_nobody(&["trace", "exec", "--all", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
    assert!(err.contains("run it as root"), "{err}");
}

#[test]
fn empty_probe_names_and_zero_max_events_are_refused() {
    let (code, _, err) = run(&["trace", "exec,,tcp", "--all"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("an empty probe name"), "{err}");
    let (code, _, err) = run(&["trace", "exec", "--all", "--max-events", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--max-events"), "{err}");
}

/// Start-up robustness (issue 15): one probe the kernel refuses must not stop
/// the others. PODSCOPE_TEST_BREAK_PROBE makes the kernel really refuse the
/// named probe (a ring size it does not accept).
#[test]
fn a_probe_that_cannot_load_does_not_stop_the_others() {
    if !is_root() {
        return;
    }
    let marker = std::env::temp_dir().join(format!("podscope-broken-{}", std::process::id()));
    std::fs::copy("/bin/true", &marker).unwrap();
    let mut child = podscope()
        .args([
            "trace",
            "exec,tcp",
            "--all",
            "-o",
            "json",
            "--duration",
            "20s",
        ])
        .env("PODSCOPE_TEST_BREAK_PROBE", "tcp")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut err_lines = BufReader::new(stderr).lines();
    let mut banner = Vec::new();
    for line in err_lines.by_ref() {
        let line = line.unwrap();
        banner.push(line.clone());
        if line.contains("probes attached") {
            break;
        }
    }
    let text = banner.join("\n");
    assert!(text.contains("warning: not tracing tcp"), "{text}");
    assert!(text.contains("tracing exec ("), "only exec runs: {text}");
    // A marker exec comes through the probe that did load.
    let stdout = child.stdout.take().unwrap();
    let m = marker.clone();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains(m.to_str().unwrap()))
    });
    assert!(Command::new(&marker).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    unsafe_kill(child.id());
    let status = child.wait().unwrap();
    assert!(reader.join().unwrap(), "the exec probe traced the marker");
    assert!(
        status.success(),
        "exit 0: a probe the user asked for traced"
    );
    std::fs::remove_file(&marker).ok();

    // Nothing that was asked for loads: an error, not a silent trace.
    let out = podscope()
        .args(["trace", "tcp", "--all", "--duration", "1s"])
        .env("PODSCOPE_TEST_BREAK_PROBE", "tcp")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("probe 'tcp' could not be"), "{err}");
}

/// SIGINT, as Ctrl-C would.
fn unsafe_kill(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Regression (issue 15): without privileges `podscope probes` blamed tracefs
/// and exited 0. It must name the missing privilege and exit non-zero.
#[test]
fn probes_without_privileges_names_them_not_tracefs() {
    if !is_root() {
        return;
    }
    let out = as_nobody(&["probes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("run it as root"),
        "{err}"
    );
    assert!(
        !stdout.contains("tracefs") && !err.contains("tracefs"),
        "{stdout}{err}"
    );
    assert!(
        stdout.contains("exec"),
        "the catalogue is still listed: {stdout}"
    );
}
