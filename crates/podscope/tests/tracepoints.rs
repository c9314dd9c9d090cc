//! `podscope trace tp:SUBSYSTEM:EVENT` against workloads whose own output is
//! the witness: a C program in a cgroup of its own forks N children, each of
//! which forks one grandchild, and prints every (parent, child) pid pair;
//! `tp:sched:sched_process_fork` must report exactly those 2N pairs (and the
//! comm, a `__data_loc` or `char[]` string depending on the kernel), and
//! `--filter` must cut the parent's N in the kernel (the probe's seen and
//! filtered counters). `tp:net:net_dev_xmit` must decode `name` and `len` of
//! UDP datagrams of known sizes sent over a veth pair of the test's own, as
//! many and as long as the interface's tx counters say. Unknown tracepoints
//! and fields are errors with close matches.
//! Needs root (BPF), a C compiler with static libc (libc6-dev) and iproute2.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Cgroup;
use serde_json::Value;

/// Forks: `W` forks N children; each child forks one grandchild. Every fork
/// prints `PARENT CHILD` (one write each, so lines never interleave). It
/// waits for a line on stdin first, so the trace can attach (and the test
/// can learn its pid) before any fork.
const FORKS_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    char go[8];
    dprintf(1, "pid %d\n", getpid());
    if (read(0, go, sizeof(go)) <= 0) return 2;
    for (int i = 0; i < n; i++) {
        pid_t c = fork();
        if (c == 0) {
            pid_t g = fork();
            if (g == 0) _exit(0);
            dprintf(1, "%d %d\n", getpid(), g);
            waitpid(g, NULL, 0);
            _exit(0);
        }
        dprintf(1, "%d %d\n", getpid(), c);
        waitpid(c, NULL, 0);
    }
    return 0;
}
"#;

/// Sends one UDP datagram per size argument out of an interface.
const SEND_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, argv[1], strlen(argv[1]))) return 3;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    static char buf[65536];
    for (int i = 4; i < argc; i++)
        if (sendto(s, buf, atoi(argv[i]), 0, (struct sockaddr *)&a, sizeof(a)) < 0) return 4;
    return 0;
}
"#;

const N_FORKS: usize = 7;

fn compile(tag: &str, src: &str, name: &str) -> PathBuf {
    common::compile_c(&format!("tp-{tag}"), src, name)
}

/// A tracepoint trace: its `record` lines and its stderr.
struct Trace(common::JsonTrace);

impl Trace {
    fn start(args: &[&str]) -> Trace {
        Trace(common::JsonTrace::start(args))
    }

    fn stop(self) -> (Vec<Value>, String) {
        let (lines, err) = self.0.stop();
        let records = lines
            .into_iter()
            .filter(|e| e["kind"] == "record")
            .collect();
        (records, err)
    }
}

/// The ftrace tests run one at a time: each ftrace trace removes the
/// instances of podscope processes that no longer run, and the killed-trace
/// test must be the one that removes its own.
fn ftrace_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The numbers of the end-of-trace line `podscope: tracepoint: S records
/// passed the pod filter, F of them cut by --filter in the kernel, D sent`.
fn counters(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("podscope: tracepoint:"))
        .unwrap_or_else(|| panic!("no tracepoint summary in: {stderr}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1], nums[2])
}

/// Runs `args` in `cg` (a workload that prints `pid N`, then waits for a
/// line on stdin) under a trace started by `start` (given the workload's
/// pid); returns the trace, the rest of what it printed, and its pid.
fn run_after_go(
    cg: &Cgroup,
    args: &[&str],
    start: impl FnOnce(u32) -> Trace,
) -> (Trace, String, i64) {
    let mut w = cg
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(w.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let pid: i64 = first.trim().strip_prefix("pid ").unwrap().parse().unwrap();
    let trace = start(pid as u32);
    w.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(w.wait().unwrap().success());
    (trace, rest, pid)
}

/// Runs the fork workload in `cg` under a trace started by `start` (given
/// the workload's pid); returns the (parent, child) pairs it printed.
fn run_forks(
    cg: &Cgroup,
    bin: &Path,
    start: impl FnOnce(u32) -> Trace,
) -> (Trace, Vec<(i64, i64)>, i64) {
    let (trace, rest, pid) =
        run_after_go(cg, &[bin.to_str().unwrap(), &N_FORKS.to_string()], start);
    let pairs = rest
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    (trace, pairs, pid)
}

fn fork_pairs(events: &[Value]) -> BTreeSet<(i64, i64)> {
    events
        .iter()
        .filter(|e| e["tracepoint"] == "sched:sched_process_fork")
        .map(|e| {
            (
                e["fields"]["parent_pid"].as_i64().unwrap(),
                e["fields"]["child_pid"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn fork_records_are_exactly_the_workloads_forks() {
    if !common::root_or_skip() {
        return;
    }
    let bin = compile("fork", FORKS_C, "tpforks");
    let cg = Cgroup::new("tp-fork");
    let cgroup = cg.0.to_str().unwrap().to_string();
    let (trace, pairs, pid) = run_forks(&cg, &bin, |_| {
        Trace::start(&["tp:sched:sched_process_fork", "--cgroup", &cgroup])
    });
    let (events, err) = trace.stop();
    assert_eq!(pairs.len(), 2 * N_FORKS, "the workload's own lines");
    assert_eq!(
        events.len(),
        2 * N_FORKS,
        "one record per fork, nothing else in the cgroup: {events:?}\n{err}"
    );
    let want: BTreeSet<(i64, i64)> = pairs.iter().copied().collect();
    assert_eq!(fork_pairs(&events), want);
    assert_eq!(
        pairs.iter().filter(|(p, _)| *p == pid).count(),
        N_FORKS,
        "N forks by the workload itself"
    );
    for e in &events {
        // A __data_loc string on recent kernels, char[16] on older ones.
        assert_eq!(e["fields"]["parent_comm"], "tpforks", "{e}");
        assert_eq!(e["fields"]["child_comm"], "tpforks", "{e}");
        assert_eq!(e["probe"], "tracepoint");
        assert_eq!(e["pid"].as_i64(), e["fields"]["parent_pid"].as_i64(), "{e}");
    }
    let (seen, filtered, sent) = counters(&err);
    assert_eq!(
        (seen, filtered, sent),
        (2 * N_FORKS as u64, 0, 2 * N_FORKS as u64),
        "{err}"
    );
}

#[test]
fn filter_cuts_forks_in_the_kernel() {
    if !common::root_or_skip() {
        return;
    }
    let bin = compile("filter", FORKS_C, "tpforks");
    let cg = Cgroup::new("tp-filter");
    let cgroup = cg.0.to_str().unwrap().to_string();
    let (trace, pairs, pid) = run_forks(&cg, &bin, |pid| {
        Trace::start(&[
            "tp:sched:sched_process_fork",
            "--cgroup",
            &cgroup,
            "--filter",
            &format!("parent_pid != {pid} && child_pid > 0"),
        ])
    });
    let (events, err) = trace.stop();
    // Only the grandchildren's forks (parent: a child) pass.
    let want: BTreeSet<(i64, i64)> = pairs.iter().copied().filter(|(p, _)| *p != pid).collect();
    assert_eq!(want.len(), N_FORKS);
    assert_eq!(fork_pairs(&events), want, "{err}");
    assert_eq!(events.len(), N_FORKS);
    // The workload's own N forks never reached user space.
    let (seen, filtered, sent) = counters(&err);
    assert_eq!(
        (seen, filtered, sent),
        (2 * N_FORKS as u64, N_FORKS as u64, N_FORKS as u64),
        "{err}"
    );
}

/// `||` in the kernel: `&&` binds tighter, and a record passes when every
/// comparison of one alternative holds. Two runs: the first alternative
/// holds (the workload's own forks), then only a middle one does (its
/// children's forks); the other records are cut in the kernel.
#[test]
fn filter_alternatives_cut_forks_in_the_kernel() {
    if !common::root_or_skip() {
        return;
    }
    let bin = compile("or", FORKS_C, "tpforks");
    let cg = Cgroup::new("tp-or");
    let cgroup = cg.0.to_str().unwrap().to_string();
    for (filter, own) in [
        ("parent_pid == {pid} || child_pid < 0", true),
        (
            "parent_pid == 0 || parent_pid != {pid} && child_pid > 0 || child_pid < 0",
            false,
        ),
    ] {
        let (trace, pairs, pid) = run_forks(&cg, &bin, |pid| {
            Trace::start(&[
                "tp:sched:sched_process_fork",
                "--cgroup",
                &cgroup,
                "--filter",
                &filter.replace("{pid}", &pid.to_string()),
            ])
        });
        let (events, err) = trace.stop();
        let want: BTreeSet<(i64, i64)> = pairs
            .iter()
            .copied()
            .filter(|(p, _)| (*p == pid) == own)
            .collect();
        assert_eq!(want.len(), N_FORKS);
        assert_eq!(fork_pairs(&events), want, "{filter}\n{err}");
        assert_eq!(events.len(), N_FORKS, "{filter}");
        let (seen, filtered, sent) = counters(&err);
        assert_eq!(
            (seen, filtered, sent),
            (2 * N_FORKS as u64, N_FORKS as u64, N_FORKS as u64),
            "{filter}\n{err}"
        );
    }
}

/// A clause for one tracepoint (`sched_process_fork: ...`) filters that
/// tracepoint only, in the kernel: the workload's own N forks are cut, and
/// every exit (2N + 1: the children, the grandchildren, the workload) of the
/// other tracepoint traced alongside still arrives.
#[test]
fn a_filter_clause_applies_to_its_tracepoint_only() {
    if !common::root_or_skip() {
        return;
    }
    let bin = compile("clause", FORKS_C, "tpforks");
    let cg = Cgroup::new("tp-clause");
    let cgroup = cg.0.to_str().unwrap().to_string();
    let (trace, pairs, pid) = run_forks(&cg, &bin, |pid| {
        Trace::start(&[
            "tp:sched:sched_process_fork,tp:sched:sched_process_exit",
            "--cgroup",
            &cgroup,
            "--filter",
            &format!("sched_process_fork: parent_pid != {pid}"),
        ])
    });
    let (events, err) = trace.stop();
    let want: BTreeSet<(i64, i64)> = pairs.iter().copied().filter(|(p, _)| *p != pid).collect();
    assert_eq!(want.len(), N_FORKS);
    assert_eq!(fork_pairs(&events), want, "{err}");
    let exits: BTreeSet<i64> = events
        .iter()
        .filter(|e| e["tracepoint"] == "sched:sched_process_exit")
        .map(|e| e["fields"]["pid"].as_i64().unwrap())
        .collect();
    let mut tasks: BTreeSet<i64> = pairs.iter().map(|(_, c)| *c).collect();
    tasks.insert(pid);
    assert_eq!(exits, tasks, "{err}");
    assert_eq!(events.len(), N_FORKS + 2 * N_FORKS + 1, "{err}");
    let (seen, filtered, sent) = counters(&err);
    assert_eq!(
        (seen, filtered, sent),
        (
            4 * N_FORKS as u64 + 1,
            N_FORKS as u64,
            3 * N_FORKS as u64 + 1
        ),
        "{err}"
    );
}

/// Closes fds that are not open: `close(BASE + i)` for i < N, then the same
/// for N decoys at DECOY + i, after a line on stdin (so the trace attaches
/// first); prints each fd it asked to close that is not a decoy.
const CLOSES_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    char go[8];
    dprintf(1, "pid %d\n", getpid());
    if (read(0, go, sizeof(go)) <= 0) return 2;
    for (int i = 0; i < n; i++) {
        close(777000 + i);
        dprintf(1, "%d\n", 777000 + i);
    }
    for (int i = 0; i < n; i++) close(888000 + i);
    return 0;
}
"#;

/// `--filter` on an array element (`raw_syscalls:sys_enter`'s `unsigned
/// long args[6]`) is applied in the kernel: of the workload's closes, only
/// the ones whose first argument is in the range reach user space, and they
/// are exactly the fds the workload printed.
#[test]
fn filter_on_an_array_element_cuts_in_the_kernel() {
    if !common::root_or_skip() {
        return;
    }
    const N: usize = 9;
    let bin = compile("array", CLOSES_C, "tpcloses");
    let cg = Cgroup::new("tp-array");
    let cgroup = cg.0.to_str().unwrap().to_string();
    let (trace, rest, _) = run_after_go(&cg, &[bin.to_str().unwrap(), &N.to_string()], |_| {
        Trace::start(&[
            "tp:raw_syscalls:sys_enter",
            "--cgroup",
            &cgroup,
            "--filter",
            "args[0] >= 777000 && args[0] < 778000",
        ])
    });
    let (events, err) = trace.stop();
    let want: BTreeSet<u64> = rest.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(want.len(), N);
    let got: BTreeSet<u64> = events
        .iter()
        .map(|e| e["fields"]["args"][0].as_u64().unwrap())
        .collect();
    assert_eq!(got, want, "{err}");
    assert_eq!(events.len(), N, "{err}");
    // Everything else the workload did (its decoy closes, its writes) was
    // cut in the kernel, not in user space.
    let (seen, filtered, sent) = counters(&err);
    assert_eq!(sent, N as u64, "{err}");
    assert_eq!(seen - filtered, N as u64, "{err}");
    assert!(filtered >= N as u64, "the {N} decoys were not cut: {err}");
}

/// A veth pair of the test's own, IPv6 off and a static neighbour, so
/// nothing but the test's datagrams leaves it; removed on drop.
struct Veth {
    name: String,
}

impl Veth {
    fn new(tag: &str) -> Veth {
        let name = format!("ph{tag}{}", std::process::id() % 10000);
        let peer = format!("{name}p");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["link", "del", &name]).output();
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        let v = Veth { name: name.clone() };
        for n in [&name, &peer] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{n}/disable_ipv6"), "1");
        }
        ip(&["addr", "add", "10.93.77.1/30", "dev", &name]);
        ip(&["link", "set", &name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        ip(&[
            "neigh",
            "replace",
            "10.93.77.2",
            "lladdr",
            "02:00:00:93:77:02",
            "dev",
            &name,
            "nud",
            "permanent",
        ]);
        v
    }

    fn tx(&self) -> (u64, u64) {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{f}", self.name))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        (read("tx_packets"), read("tx_bytes"))
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

const SIZES: [u32; 5] = [100, 333, 700, 1200, 1400];

#[test]
fn net_dev_xmit_decodes_name_and_len() {
    if !common::root_or_skip() {
        return;
    }
    let send = compile("xmit", SEND_C, "tpsend");
    let veth = Veth::new("x");
    let before = veth.tx();
    // Node-wide (net_dev_xmit may run outside the sender's context), cut to
    // this interface by a string comparison in the kernel.
    let trace = Trace::start(&[
        "tp:net:net_dev_xmit",
        "--all",
        "--filter",
        &format!("name == \"{}\"", veth.name),
    ]);
    let sizes: Vec<String> = SIZES.iter().map(|s| s.to_string()).collect();
    let mut args = vec![veth.name.as_str(), "10.93.77.2", "19093"];
    args.extend(sizes.iter().map(String::as_str));
    assert!(Command::new(&send).args(&args).status().unwrap().success());
    let after = veth.tx();
    let (events, err) = trace.stop();
    assert_eq!(veth.tx(), after, "nothing else left the interface");
    let (packets, bytes) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(packets, SIZES.len() as u64, "the interface's own count");
    assert_eq!(events.len() as u64, packets, "{events:?}\n{err}");
    let lens: Vec<u64> = events
        .iter()
        .map(|e| e["fields"]["len"].as_u64().unwrap())
        .collect();
    assert_eq!(lens.iter().sum::<u64>(), bytes, "len adds up to tx_bytes");
    // Ethernet (14) + IPv4 (20) + UDP (8) + payload.
    let want: Vec<u64> = SIZES.iter().map(|s| *s as u64 + 42).collect();
    assert_eq!(lens, want);
    for e in &events {
        assert_eq!(e["fields"]["name"], veth.name.as_str(), "{e}");
        assert_eq!(e["fields"]["rc"], 0, "{e}");
        assert!(
            e["fields"]["skbaddr"].as_str().unwrap().starts_with("0x"),
            "{e}"
        );
    }
}

fn podscope_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "podscope {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_tracepoints_and_fields_name_close_matches() {
    if !common::root_or_skip() {
        return;
    }
    let err = podscope_fails(&["trace", "tp:sched:sched_proces_fork", "--all"]);
    assert!(
        err.contains("unknown tracepoint 'sched:sched_proces_fork'")
            && err.contains("sched:sched_process_fork"),
        "{err}"
    );
    let err = podscope_fails(&[
        "trace",
        "tp:sched:sched_process_fork",
        "--all",
        "--filter",
        "child_pidd == 3",
    ]);
    assert!(
        err.contains("field 'child_pidd'") && err.contains("did you mean child_pid"),
        "{err}"
    );
    let err = podscope_fails(&[
        "trace",
        "tp:sched:sched_process_fork",
        "--all",
        "--filter",
        "child_comm > \"a\"",
    ]);
    assert!(err.contains("== and != only"), "{err}");
    // A clause for a tracepoint that is not traced, or a field it lacks
    // (that another traced tracepoint has).
    let err = podscope_fails(&[
        "trace",
        "tp:sched:sched_process_fork",
        "--all",
        "--filter",
        "sched_process_exit: pid == 3",
    ]);
    assert!(
        err.contains(
            "'sched_process_exit:' names no traced tracepoint (traced: sched:sched_process_fork)"
        ),
        "{err}"
    );
    let err = podscope_fails(&[
        "trace",
        "tp:sched:sched_process_fork,tp:sched:sched_process_exit",
        "--all",
        "--filter",
        "sched_process_exit: child_pid == 3",
    ]);
    assert!(
        err.contains("sched_process_exit has no field 'child_pid'") && !err.contains("parent_comm"),
        "{err}"
    );
    let err = podscope_fails(&["trace", "tp:sched", "--all"]);
    assert!(err.contains("tp:SUBSYSTEM:EVENT"), "{err}");
    let err = podscope_fails(&["trace", "exec", "--all", "--filter", "len > 1"]);
    assert!(err.contains("add a tracepoint"), "{err}");
    // The listing has the fields the decoder uses.
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args([
            "probes",
            "--tracepoints",
            "sched:sched_process_fork",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let row: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = row["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["parent_comm", "parent_pid", "child_comm", "child_pid"]
    );
}

/// The instance directory an ftrace trace names on stderr.
fn ftrace_instance(stderr: &str) -> PathBuf {
    let at = stderr
        .find("in the tracefs instance ")
        .unwrap_or_else(|| panic!("no instance named: {stderr}"));
    let rest = &stderr[at + "in the tracefs instance ".len()..];
    PathBuf::from(rest.split_whitespace().next().unwrap())
}

/// The ftrace hook (no BPF): the same fork workload gives exactly the
/// records the BPF hook gives (each checked against the workload's own
/// lines), and the trace's tracefs instance is gone after it stops.
#[test]
fn ftrace_hook_reports_what_the_bpf_hook_reports() {
    if !common::root_or_skip() {
        return;
    }
    let _one_at_a_time = ftrace_lock();
    let bin = compile("ftrace", FORKS_C, "tpforks");
    let cg = Cgroup::new("tp-ftrace");
    let cgroup = cg.0.to_str().unwrap().to_string();
    let mut seen = Vec::new();
    for probe in [
        "tp:sched:sched_process_fork",
        "ftrace:sched:sched_process_fork",
    ] {
        let (trace, pairs, pid) =
            run_forks(&cg, &bin, |_| Trace::start(&[probe, "--cgroup", &cgroup]));
        let (events, err) = trace.stop();
        assert_eq!(pairs.len(), 2 * N_FORKS, "the workload's own lines");
        let want: BTreeSet<(i64, i64)> = pairs.iter().copied().collect();
        assert_eq!(fork_pairs(&events), want, "{probe}: {err}");
        assert_eq!(events.len(), 2 * N_FORKS, "{probe}: {events:?}");
        for e in &events {
            assert_eq!(e["fields"]["parent_comm"], "tpforks", "{probe}: {e}");
            assert_eq!(e["fields"]["child_comm"], "tpforks", "{probe}: {e}");
            assert_eq!(e["tracepoint"], "sched:sched_process_fork");
            assert_eq!(e["probe"], "tracepoint");
            assert_eq!(e["pid"].as_i64(), e["fields"]["parent_pid"].as_i64(), "{e}");
        }
        assert_eq!(
            pairs.iter().filter(|(p, _)| *p == pid).count(),
            N_FORKS,
            "N forks by the workload itself"
        );
        // The same field names and value types from both hooks.
        let shape = |e: &Value| -> Vec<(String, bool)> {
            e["fields"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.is_number()))
                .collect()
        };
        seen.push(shape(&events[0]));
        if probe.starts_with("ftrace:") {
            let dir = ftrace_instance(&err);
            assert!(!dir.exists(), "{} left behind", dir.display());
            assert!(err.contains("no BPF"), "{err}");
        }
    }
    assert_eq!(seen[0], seen[1], "BPF and ftrace records differ in shape");
}

/// `--filter` with `ftrace:` goes to the events' own ftrace `filter` files
/// (in ftrace's syntax), checked first as for the BPF hook: exactly the
/// workload's children's forks are traced; an unknown field is refused
/// with the fields there are.
#[test]
fn ftrace_filter_is_applied_by_ftrace() {
    if !common::root_or_skip() {
        return;
    }
    let _one_at_a_time = ftrace_lock();
    let bin = compile("ftfilter", FORKS_C, "tpforks");
    let cg = Cgroup::new("tp-ftfilter");
    let cgroup = cg.0.to_str().unwrap().to_string();
    let (trace, pairs, pid) = run_forks(&cg, &bin, |pid| {
        Trace::start(&[
            "ftrace:sched:sched_process_fork",
            "--cgroup",
            &cgroup,
            "--filter",
            &format!("parent_pid == 0 || parent_pid != {pid} && child_pid > 0"),
        ])
    });
    let (events, err) = trace.stop();
    let want: BTreeSet<(i64, i64)> = pairs.iter().copied().filter(|(p, _)| *p != pid).collect();
    assert_eq!(want.len(), N_FORKS);
    assert_eq!(fork_pairs(&events), want, "{err}");
    assert_eq!(events.len(), N_FORKS, "{err}");
    let dir = ftrace_instance(&err);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let out = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args([
            "trace",
            "ftrace:sched:sched_process_fork",
            "--all",
            "--filter",
            "nosuch == 1",
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("'nosuch'") && e.contains("parent_pid"), "{e}");
}

/// `--ring-buffer-size` with `ftrace:` sizes the instance's own buffer (per
/// CPU, `buffer_size_kb`), as ftrace itself reports it while the trace runs.
#[test]
fn ftrace_buffer_size_is_the_instances() {
    if !common::root_or_skip() {
        return;
    }
    let _one_at_a_time = ftrace_lock();
    let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args([
            "trace",
            "ftrace:sched:sched_process_exit",
            "--all",
            "--ring-buffer-size",
            "4M",
            "-o",
            "none",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let seen = common::wait_attached(&mut stderr);
    let dir = ftrace_instance(&seen);
    let kb = std::fs::read_to_string(dir.join("buffer_size_kb")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    // ftrace rounds up to whole pages of its own (4099 KiB for 4 MiB on
    // x86_64 6.x); the trace says what it got.
    let kb: u64 = kb.trim().parse().unwrap();
    assert!((4096..4096 + 64).contains(&kb), "{kb} KiB: {seen}");
    assert!(
        seen.contains(&format!("buffer is {kb} KiB per CPU (asked for 4096 KiB")),
        "{seen}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// `ftrace:` with `--otlp`: each record is one OTLP log record with the
/// tracepoint's fields, in the context of the trace's session span, which
/// counts them; the terminal still gets them all.
#[test]
fn ftrace_records_are_exported_as_otlp_log_records() {
    if !common::root_or_skip() {
        return;
    }
    let _one_at_a_time = ftrace_lock();
    let bin = compile("ftotlp", FORKS_C, "tpforks");
    let cg = Cgroup::new("tp-ftotlp");
    let cgroup = cg.0.to_str().unwrap().to_string();
    let mut rx = common::otlp::GrpcReceiver::start(
        format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap(),
    );
    let url = rx.url();
    let (trace, pairs, _) = run_forks(&cg, &bin, |_| {
        Trace::start(&[
            "ftrace:sched:sched_process_fork",
            "--cgroup",
            &cgroup,
            "--otlp-endpoint",
            &url,
            "--otlp-protocol",
            "grpc",
        ])
    });
    let (events, err) = trace.stop();
    rx.stop();
    let want: BTreeSet<(i64, i64)> = pairs.iter().copied().collect();
    assert_eq!(want.len(), 2 * N_FORKS, "the workload's own lines");
    assert_eq!(fork_pairs(&events), want, "the terminal's: {err}");
    let logs = rx.store.logs();
    let got: Vec<(i64, i64)> = logs
        .iter()
        .map(|l| {
            assert_eq!(
                l.attrs["podscope.tracepoint"], "sched:sched_process_fork",
                "{l:?}"
            );
            (
                l.attrs["podscope.tp.parent_pid"].parse().unwrap(),
                l.attrs["podscope.tp.child_pid"].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got.len(),
        2 * N_FORKS,
        "one log record per record: {logs:#?}\n{err}"
    );
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want, "{err}");
    let spans = rx.store.spans();
    assert_eq!(spans.len(), 1, "the session span only: {spans:#?}");
    let session = &spans[0];
    assert_eq!(session.span.name, "podscope trace");
    assert_eq!(
        session.attrs["podscope.probes"],
        "ftrace:sched:sched_process_fork"
    );
    assert_eq!(session.attrs["podscope.events"], (2 * N_FORKS).to_string());
    for l in &logs {
        assert_eq!(
            l.record.trace_id, session.span.trace_id,
            "under the session: {l:?}"
        );
        assert_eq!(
            l.record.span_id, session.span.span_id,
            "under the session: {l:?}"
        );
    }
    let n = 2 * N_FORKS;
    assert!(
        err.contains(&format!(
            "OTLP logs: {n} produced, {n} exported, 0 failed, 0 dropped"
        )),
        "the export's report: {err}"
    );
}

/// A killed ftrace trace leaves its instance tracing; the next ftrace trace
/// removes it, saying so.
#[test]
fn ftrace_instances_of_a_killed_trace_are_removed_on_restart() {
    if !common::root_or_skip() {
        return;
    }
    let _one_at_a_time = ftrace_lock();
    let mut child = Command::new(env!("CARGO_BIN_EXE_podscope"))
        .args([
            "trace",
            "ftrace:sched:sched_process_exit",
            "--all",
            "-o",
            "none",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let seen = common::wait_attached(&mut stderr);
    let dir = ftrace_instance(&seen);
    assert!(dir.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        dir.exists(),
        "SIGKILL cannot clean up: the instance must still be there"
    );
    let trace = Trace::start(&["ftrace:sched:sched_process_exit", "--all"]);
    let (_, err) = trace.stop();
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(&format!(
            "removed the tracefs instance {name} of a podscope that no longer runs"
        )),
        "{err}"
    );
    assert!(!dir.exists(), "{} still there", dir.display());
}
