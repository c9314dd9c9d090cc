//! `podscope trace syscalls` against a C workload in a cgroup of its own that
//! makes exactly N getppid, M failing openat (ENOENT) and K refused connect
//! calls: the stream shows each with its decoded arguments and errno, the
//! summary counts them exactly, `strace -c -f` of the same workload agrees,
//! and a second workload in another cgroup never shows up.
//! Needs root (BPF), a C compiler with static libc (libc6-dev) and strace
//! (scripts/setup.sh).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Cgroup;
use serde_json::Value;

const N_GETPPID: u64 = 37;
const M_OPENAT: u64 = 23;
const K_CONNECT: u64 = 11;
/// Loopback, in the project's test range, with nothing listening.
const CLOSED_PORT: u16 = 18371;

/// Exactly these calls and nothing else of the three kinds (a static
/// binary: no dynamic loader opening libraries).
const WORKLOAD_C: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]), m = atol(argv[2]), k = atol(argv[3]);
    const char *path = argv[4];
    int port = atoi(argv[5]);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    for (long i = 0; i < m; i++) syscall(SYS_openat, AT_FDCWD, path, O_RDONLY, 0);
    for (long i = 0; i < k; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        syscall(SYS_connect, s, &a, sizeof(a));
        close(s);
    }
    return 0;
}
"#;

fn ready() -> bool {
    if !common::root_or_skip() {
        return false;
    }
    let ok = Command::new("strace").arg("-V").output().is_ok();
    assert!(ok, "strace is needed (bash scripts/setup.sh installs it)");
    true
}

/// Compiles the workload once per test into its own directory.
fn workload(tag: &str) -> PathBuf {
    common::compile_c(&format!("sys-{tag}"), WORKLOAD_C, "w")
}

fn missing_path(tag: &str) -> String {
    format!("/nonexistent-podscope-{tag}-{}", std::process::id())
}

fn run_in(cg: &Cgroup, bin: &Path, n: u64, m: u64, k: u64, path: &str) -> u32 {
    let mut child = cg
        .command(&[
            bin.to_str().unwrap(),
            &n.to_string(),
            &m.to_string(),
            &k.to_string(),
            path,
            &CLOSED_PORT.to_string(),
        ])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

fn cgroup_id(cg: &Cgroup) -> u64 {
    std::fs::metadata(&cg.0).unwrap().ino()
}

/// `podscope trace syscalls --cgroup CG -o json EXTRA...`.
struct Trace(common::JsonTrace);

impl Trace {
    fn start(cg: &Cgroup, extra: &[&str]) -> Trace {
        let cg = cg.0.to_str().expect("a UTF-8 cgroup path");
        let mut args = vec!["syscalls", "--cgroup", cg];
        args.extend_from_slice(extra);
        Trace(common::JsonTrace::start(&args))
    }

    fn stop(self) -> (Vec<Value>, String) {
        self.0.stop()
    }
}

fn calls<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "call" && e["syscall"] == name)
        .collect()
}

/// `strace -c -f` of the same workload: (calls, errors) per syscall.
fn strace_counts(bin: &Path, path: &str) -> std::collections::HashMap<String, (u64, u64)> {
    let out = std::env::temp_dir().join(format!("podscope-sys-strace-{}", std::process::id()));
    let ok = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(&out)
        .args(["-e", "trace=getppid,openat,connect"])
        .arg(bin)
        .args([
            &N_GETPPID.to_string(),
            &M_OPENAT.to_string(),
            &K_CONNECT.to_string(),
            path,
            &CLOSED_PORT.to_string(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "strace failed");
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let mut counts = std::collections::HashMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if w.len() < 5 || w[0].starts_with('-') || w[0] == "%" || w.last() == Some(&"total") {
            continue;
        }
        let calls: u64 = w[3].parse().unwrap();
        let errors: u64 = if w.len() == 6 {
            w[4].parse().unwrap()
        } else {
            0
        };
        counts.insert(w.last().unwrap().to_string(), (calls, errors));
    }
    counts
}

#[test]
fn stream_shows_each_call_with_arguments_and_errno() {
    if !ready() {
        return;
    }
    let bin = workload("stream");
    let ours = Cgroup::new("sys-ours");
    let other = Cgroup::new("sys-other");
    let path = missing_path("ours");
    let other_path = missing_path("other");
    let trace = Trace::start(&ours, &["--syscall", "getppid,openat,connect"]);
    let other_pid = run_in(&other, &bin, N_GETPPID, M_OPENAT, K_CONNECT, &other_path);
    let pid = run_in(&ours, &bin, N_GETPPID, M_OPENAT, K_CONNECT, &path);
    std::thread::sleep(Duration::from_millis(500));
    let (events, err) = trace.stop();

    let id = cgroup_id(&ours);
    assert!(
        events
            .iter()
            .filter(|e| e["kind"] == "call")
            .all(|e| e["cgroup_id"] == id && e["pid"] != other_pid),
        "a call from outside the traced cgroup: {err}"
    );
    assert!(!events.iter().any(|e| e.to_string().contains(&other_path)));
    // The shell that joins the cgroup and execs the workload makes no
    // getppid, openat or connect of its own after joining: all are the workload's.
    let getppid = calls(&events, "getppid");
    assert_eq!(getppid.len() as u64, N_GETPPID, "getppid: {err}");
    for e in &getppid {
        assert_eq!(e["pid"], pid);
        assert_eq!(e["tid"], pid);
        assert_eq!(e["decoded"], "");
        assert!(e["ret"].as_i64().unwrap() > 1, "{e}");
        assert!(e.get("error").is_none(), "{e}");
        assert_eq!(e["args"].as_array().unwrap().len(), 6);
    }
    let openat: Vec<_> = calls(&events, "openat")
        .into_iter()
        .filter(|e| e["pid"] == pid)
        .collect();
    assert_eq!(openat.len() as u64, M_OPENAT, "openat: {openat:?}");
    for e in &openat {
        assert_eq!(
            e["decoded"],
            format!("AT_FDCWD, {path:?}, O_RDONLY, 00"),
            "{e}"
        );
        // The register as the kernel saw it: glibc's syscall() passes the
        // int AT_FDCWD (-100) without sign extension; the kernel (and the
        // decoder) read it as an int.
        assert_eq!(e["args"][0], "0xffffff9c");
        assert_eq!(e["args"][2], "0x0");
        assert_eq!(e["ret"], -2);
        assert_eq!(e["errno"], 2);
        assert_eq!(e["error"], "ENOENT");
    }
    let connect = calls(&events, "connect");
    assert_eq!(connect.len() as u64, K_CONNECT, "connect: {connect:?}");
    for e in &connect {
        let fd = e["args"][0].as_str().unwrap();
        let fd = i64::from_str_radix(fd.trim_start_matches("0x"), 16).unwrap();
        assert_eq!(
            e["decoded"],
            format!("{fd}, 127.0.0.1:{CLOSED_PORT}, 16"),
            "{e}"
        );
        assert_eq!(e["error"], "ECONNREFUSED", "{e}");
        assert_eq!(e["errno"], 111);
    }
    // --syscall: nothing else reached user space.
    assert!(events
        .iter()
        .filter(|e| e["kind"] == "call")
        .all(|e| ["getppid", "openat", "connect"].contains(&e["syscall"].as_str().unwrap())));
}

#[test]
fn errors_only_keeps_the_failed_calls() {
    if !ready() {
        return;
    }
    let bin = workload("errors");
    let ours = Cgroup::new("sys-errors");
    let path = missing_path("errors");
    let trace = Trace::start(&ours, &["--errors-only"]);
    let pid = run_in(&ours, &bin, N_GETPPID, M_OPENAT, K_CONNECT, &path);
    std::thread::sleep(Duration::from_millis(500));
    let (events, err) = trace.stop();
    assert!(calls(&events, "getppid").is_empty(), "{err}");
    let failed: Vec<_> = events.iter().filter(|e| e["kind"] == "call").collect();
    assert!(failed.iter().all(|e| e["error"].is_string()), "{failed:?}");
    let openat = failed
        .iter()
        .filter(|e| e["syscall"] == "openat" && e["pid"] == pid)
        .count() as u64;
    assert_eq!(openat, M_OPENAT);
    assert_eq!(calls(&events, "connect").len() as u64, K_CONNECT);
}

#[test]
fn summary_counts_match_strace() {
    if !ready() {
        return;
    }
    let bin = workload("summary");
    let ours = Cgroup::new("sys-sum");
    let other = Cgroup::new("sys-sum-other");
    let path = missing_path("sum");
    let trace = Trace::start(&ours, &["--summary", "--interval", "1s"]);
    run_in(&other, &bin, 5, 5, 5, &missing_path("sum-other"));
    run_in(&ours, &bin, N_GETPPID, M_OPENAT, K_CONNECT, &path);
    // A report after the workload ended.
    std::thread::sleep(Duration::from_millis(2500));
    let (events, err) = trace.stop();
    assert!(
        !events.iter().any(|e| e["kind"] == "call"),
        "no per-call events in summary mode"
    );
    let id = cgroup_id(&ours);
    let rows: Vec<&Value> = events.iter().filter(|e| e["kind"] == "totals").collect();
    assert!(!rows.is_empty(), "no summary: {err}");
    assert!(rows.iter().all(|e| e["cgroup_id"] == id), "{rows:?}");
    // Totals since start: the last report of each syscall.
    let last = |name: &str| {
        rows.iter()
            .rev()
            .find(|e| e["syscall"] == name)
            .unwrap_or_else(|| panic!("no {name} row: {rows:?}"))
    };
    let witness = strace_counts(&bin, &path);
    eprintln!("strace -c: {witness:?}");
    for (name, n, errors) in [
        ("getppid", N_GETPPID, 0),
        ("openat", M_OPENAT, M_OPENAT),
        ("connect", K_CONNECT, K_CONNECT),
    ] {
        let row = last(name);
        eprintln!("podscope: {row}");
        assert_eq!(row["calls"], n, "{name}: {row}");
        assert_eq!(row["errors"], errors, "{name}: {row}");
        assert_eq!(witness.get(name), Some(&(n, errors)), "strace {name}");
        let hist: u64 = row["hist"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(hist, n, "{name}: histogram sums to the calls");
        assert!(row["total_ns"].as_u64().unwrap() > 0);
    }
    // Every call of the workload is counted; the shell's own calls after
    // joining (its write to cgroup.procs returns, then execve) are there too.
    let execve = last("execve");
    assert_eq!(execve["calls"], 1, "{execve}");
}
