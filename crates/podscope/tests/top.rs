//! `podscope top` against real pods on the containerd test bed: the JSON
//! snapshot's counts equal the known workloads, and the terminal view,
//! driven in tmux (send-keys, capture-pane), lists, sorts, filters, opens a
//! pod's live events, and gives the terminal back after `q`, Ctrl-C and
//! SIGINT.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{endpoint, pod, root_or_skip, suffix, wait_for};
use serde_json::Value;

fn podscope() -> &'static str {
    env!("CARGO_BIN_EXE_podscope")
}

/// The rows of a snapshot, by pod/container.
fn row<'a>(snap: &'a Value, pod: &str, container: &str) -> &'a Value {
    snap["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pod"] == pod && r["container"] == container)
        .unwrap_or_else(|| panic!("no row {pod}/{container} in {snap}"))
}

/// `podscope top ARGS --once -o json --interval 12s` on the test bed,
/// started: its stderr up to "probes attached", and the rest of it.
fn started_top(
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    String,
) {
    let mut top = Command::new(podscope())
        .arg("top")
        .args(args)
        .args(["--once", "-o", "json", "--interval", "12s"])
        .args(["--runtime-endpoint", &endpoint()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(top.stderr.take().unwrap());
    let said = common::wait_attached(&mut err);
    (top, err, said)
}

#[test]
fn once_json_counts_each_containers_workload_exactly() {
    if !root_or_skip() {
        return;
    }
    const EXECS: usize = 6;
    const CONNECTIONS: usize = 4;
    let s = suffix();
    let ns = format!("top-json-{s}");
    // The client blocks on a FIFO until the test writes it (no exec while
    // waiting: a sleep loop would exec sleep), then runs EXECS /bin/true and
    // CONNECTIONS nc (one exec each) to the server container, and says it is
    // done by making a file with the shell (no exec), then stays blocked on
    // another FIFO (no exec: an `exec sleep` after the done file could come
    // after top's snapshot, which CI once caught as one exec short). The
    // server's nc -e runs `true` once per connection (one exec each).
    let client = format!(
        "mkfifo /tmp/go /tmp/stay; read x < /tmp/go; \
         i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done; \
         i=0; while [ $i -lt {CONNECTIONS} ]; do nc 127.0.0.1 7000 </dev/null; i=$((i+1)); done; \
         : > /tmp/done; read y < /tmp/stay"
    );
    let busy = pod(
        "busy",
        &ns,
        &[],
        &[
            ("server", "exec nc -ll -p 7000 -e true"),
            ("client", &client),
        ],
    );
    let idle = pod("idle", &ns, &[], &[("main", "exec sleep 3600")]);
    let (mut top, mut err, said) = started_top(&["-n", &ns, "--containers"]);
    assert!(said.contains("first snapshot in 12s"), "{said}");
    let began = Instant::now();
    std::fs::write(busy.path_in("client", "/tmp/go"), "").unwrap();
    let done = busy.path_in("client", "/tmp/done");
    wait_for("the client to finish", Duration::from_secs(10), || {
        done.exists()
    });
    // Every exec came before the done file, and top has not taken its
    // snapshot yet: the whole workload is inside the interval.
    assert!(
        top.try_wait().unwrap().is_none(),
        "the workload must end inside the interval: top already took its snapshot"
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "the workload must end inside the interval"
    );
    let mut out = String::new();
    top.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = top.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "top failed: {said}{rest}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "--once prints one snapshot: {out}");
    let snap: Value = serde_json::from_str(lines[0]).unwrap();
    assert!(snap["interval_s"].as_f64().unwrap() >= 12.0, "{snap}");

    let c = row(&snap, "busy", "client");
    assert_eq!(c["namespace"], ns.as_str());
    assert_eq!(c["totals"]["execs"], (EXECS + CONNECTIONS) as u64, "{c}");
    assert_eq!(c["totals"]["tcp_connects"], CONNECTIONS as u64, "{c}");
    assert_eq!(c["totals"]["tcp_accepts"], 0, "{c}");
    let sv = row(&snap, "busy", "server");
    assert_eq!(sv["totals"]["tcp_accepts"], CONNECTIONS as u64, "{sv}");
    assert_eq!(sv["totals"]["execs"], CONNECTIONS as u64, "{sv}");
    // The rates are the same counts over the interval.
    let secs = snap["interval_s"].as_f64().unwrap();
    let rate = c["execs_per_s"].as_f64().unwrap();
    assert!(
        (rate * secs - (EXECS + CONNECTIONS) as f64).abs() < 1e-6,
        "{rate} * {secs}"
    );
    // The idle pod has a row with nothing counted, and its cgroup's memory.
    let i = row(&snap, "idle", "main");
    assert_eq!(i["totals"]["execs"], 0, "{i}");
    assert_eq!(i["execs_per_s"], 0.0, "{i}");
    assert!(i["memory_bytes"].as_u64().unwrap() > 0, "{i}");
    assert!(i["cpu_percent"].as_f64().is_some(), "{i}");
    // Nothing lost, and the probes' own counts cover what the rows show.
    assert!(
        snap["lost"].as_object().unwrap().values().all(|v| v == 0),
        "{snap}"
    );
    assert!(
        snap["events"]["exec"].as_u64().unwrap() >= (EXECS + 2 * CONNECTIONS) as u64,
        "{snap}"
    );
    drop(idle);
}

#[test]
fn once_json_counts_requests_served_and_made() {
    if !root_or_skip() {
        return;
    }
    const OK: usize = 5;
    const MISSING: usize = 3;
    let s = suffix();
    let ns = format!("top-http-{s}");
    let api = pod(
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
         i=0; while [ $i -lt {OK} ]; do wget -q -O /dev/null http://{ip}:8080/index.html && ok=$((ok+1)); i=$((i+1)); done; \
         i=0; while [ $i -lt {MISSING} ]; do wget -q -O /dev/null http://{ip}:8080/missing || bad=$((bad+1)); i=$((i+1)); done; \
         echo \"$ok $bad\" > /tmp/result; : > /tmp/done; exec sleep 3600"
    );
    let web = pod("web", &ns, &[], &[("client", &client)]);
    let (mut top, _err, said) = started_top(&["-n", &ns, "--probes", "http,tcp"]);
    std::fs::write(web.path_in("client", "/tmp/go"), "").unwrap();
    let done = web.path_in("client", "/tmp/done");
    wait_for("the client to finish", Duration::from_secs(10), || {
        done.exists()
    });
    let result = std::fs::read_to_string(web.path_in("client", "/tmp/result")).unwrap();
    assert_eq!(result.trim(), format!("{OK} {MISSING}"), "wget's own view");
    let mut out = String::new();
    top.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = top.wait().unwrap();
    assert!(status.success(), "top failed: {said}");
    let snap: Value = serde_json::from_str(out.trim()).unwrap();
    let served = snap["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pod"] == "api")
        .unwrap_or_else(|| panic!("no api row: {snap}"));
    let total = (OK + MISSING) as u64;
    assert_eq!(served["totals"]["requests_served"], total, "{served}");
    // 404s are the client's problem, not a failure of the server.
    assert_eq!(served["totals"]["requests_failed"], 0, "{served}");
    assert_eq!(served["error_percent"], 0.0, "{served}");
    assert!(served["request_p99_s"].as_f64().is_some(), "{served}");
    let secs = snap["interval_s"].as_f64().unwrap();
    let rate = served["requests_per_s"].as_f64().unwrap();
    assert!((rate * secs - total as f64).abs() < 1e-6, "{rate} * {secs}");
    let made = snap["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pod"] == "web")
        .unwrap();
    assert_eq!(made["totals"]["requests_made"], total, "{made}");
    assert_eq!(made["totals"]["requests_served"], 0, "{made}");
    assert_eq!(made["totals"]["tcp_connects"], total, "{made}");
}

/// A tmux session running one command, on a private server socket.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str, command: &str) -> Tmux {
        let socket = format!("podscope-top-{tag}");
        let t = Tmux { socket };
        let ok = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "30",
            ])
            .arg(command)
            .status()
            .expect("tmux is needed for this test (scripts/setup.sh installs it)");
        assert!(ok.success());
        t
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "0"])
            .args(keys)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn resize(&self, w: u16, h: u16) {
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "resize-window", "-t", "0"])
            .args(["-x", &w.to_string(), "-y", &h.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits for the screen to satisfy `ok`; the last screen on timeout.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The line of the table naming `pod`, and its index among the rows.
fn line_of(screen: &str, pod: &str) -> Option<usize> {
    screen
        .lines()
        .position(|l| l.split_whitespace().nth(1) == Some(pod))
}

/// `podscope top` in tmux, then the shell says how it ended and whether the
/// terminal is back in cooked mode.
fn top_in_tmux(tag: &str, ns: &str) -> Tmux {
    let cmd = format!(
        "sh -c '{} top -n {ns} --runtime-endpoint {}; echo TOP-EXITED rc=$?; printf \"MODES: \"; stty -a | tr -s \" ;\" \"\\n\\n\" | grep -x -e -icanon -e icanon -e -echo -e echo | tr \"\\n\" \" \"; echo MODES-END; sleep 600'",
        podscope(),
        endpoint()
    );
    Tmux::start(tag, &cmd)
}

fn assert_restored(t: &Tmux, how: &str) {
    let s = t.wait(&format!("top to exit after {how}"), |s| {
        s.contains("MODES-END")
    });
    assert!(s.contains("TOP-EXITED rc=0"), "after {how}:\n{s}");
    let modes = s
        .lines()
        .find(|l| l.starts_with("MODES: "))
        .unwrap_or_default()
        .to_string();
    assert!(
        modes.split_whitespace().any(|w| w == "icanon")
            && modes.split_whitespace().any(|w| w == "echo"),
        "the terminal is not back in cooked mode with echo after {how}: {modes:?}\n{s}"
    );
    // The alternate screen is gone: no table header on the shell's screen.
    assert!(
        !s.contains("EXEC/s"),
        "the table is still on screen after {how}:\n{s}"
    );
}

#[test]
fn the_terminal_view_lists_sorts_filters_and_opens_a_pod() {
    if !root_or_skip() {
        return;
    }
    let s = suffix();
    let ns = format!("top-tui-{s}");
    let marker = format!("marker-{s}");
    // alpha execs several programs a second, and a marker program when a
    // file appears; beta does nothing.
    let alpha_script = format!(
        "while true; do if [ -e /tmp/mark ]; then /bin/echo {marker} >/dev/null; rm /tmp/mark; fi; \
         /bin/true; sleep 0.2; done"
    );
    let alpha = pod("alpha", &ns, &[], &[("main", &alpha_script)]);
    let _beta = pod("beta", &ns, &[], &[("main", "exec sleep 3600")]);
    let t = top_in_tmux(&format!("view-{s}"), &ns);
    let screen = t.wait("both pods with alpha's execs", |s| {
        s.contains("EXEC/s")
            && line_of(s, "beta").is_some()
            && line_of(s, "alpha").is_some_and(|i| {
                // alpha's EXEC/s cell is a non-zero number.
                let l = s.lines().nth(i).unwrap();
                l.split_whitespace()
                    .nth(4)
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
    });
    assert!(screen.contains(&ns), "{screen}");
    // Sort by EXEC/s (two columns right of the default, CPU%): alpha first.
    t.keys(&[">", ">"]);
    let sorted = t.wait("the EXEC/s sort", |s| s.contains("EXEC/sv"));
    let (a, b) = (
        line_of(&sorted, "alpha").unwrap(),
        line_of(&sorted, "beta").unwrap(),
    );
    assert!(a < b, "alpha (busier) is not first:\n{sorted}");
    t.keys(&["r"]);
    let rev = t.wait("the reversed sort", |s| s.contains("EXEC/s^"));
    let (a, b) = (
        line_of(&rev, "alpha").unwrap(),
        line_of(&rev, "beta").unwrap(),
    );
    assert!(a > b, "reversed, beta comes first:\n{rev}");
    t.keys(&["r"]);
    // Filter: only beta.
    t.keys(&["/", "b", "e", "t", "Enter"]);
    let filtered = t.wait("the filter", |s| s.contains("[filter: bet]"));
    assert!(line_of(&filtered, "beta").is_some(), "{filtered}");
    assert!(line_of(&filtered, "alpha").is_none(), "{filtered}");
    t.keys(&["Escape"]);
    t.wait("the filter cleared", |s| line_of(s, "alpha").is_some());
    // Open alpha (the first row sorted by EXEC/s) and make its marker exec.
    t.keys(&["Home"]);
    let top_row = t.screen();
    let first = line_of(&top_row, "alpha").unwrap();
    assert!(first < line_of(&top_row, "beta").unwrap(), "{top_row}");
    t.keys(&["Up", "Up", "Up", "Enter"]);
    t.wait("the pod view", |s| {
        s.contains(&format!("{ns}/alpha")) && s.contains("top talkers")
    });
    std::fs::write(alpha.path_in("main", "/tmp/mark"), "").unwrap();
    let shown = t.wait("the marker exec in alpha's stream", |s| s.contains(&marker));
    assert!(shown.contains("/bin/echo"), "{shown}");
    assert!(
        !shown.contains("beta"),
        "beta's events are not alpha's:\n{shown}"
    );
    // Back to the table.
    t.keys(&["Escape"]);
    t.wait("the table again", |s| s.contains("EXEC/s"));
    // Shrunk to 80x24 the table adapts: the pods and the sort column stay,
    // the columns that no longer fit are left out and counted.
    t.resize(80, 24);
    // Waited for whole: right after the resize tmux still shows what it kept
    // of the old screen (CI once caught the footer alone) until the view
    // has drawn the new size.
    let small = t.wait("the 80x24 table", |s| {
        s.contains("cols hidden")
            && s.lines().all(|l| l.chars().count() <= 80)
            && line_of(s, "alpha").is_some()
            && line_of(s, "beta").is_some()
            && s.contains("EXEC/s")
    });
    assert!(small.lines().all(|l| l.chars().count() <= 80), "{small}");
    assert!(
        line_of(&small, "alpha").is_some() && line_of(&small, "beta").is_some(),
        "{small}"
    );
    assert!(
        small.contains("EXEC/sv"),
        "the sort column is kept:\n{small}"
    );
    t.keys(&["q"]);
    assert_restored(&t, "q");
}

#[test]
fn ctrl_c_and_sigint_give_the_terminal_back() {
    if !root_or_skip() {
        return;
    }
    let s = suffix();
    let ns = format!("top-sig-{s}");
    let _p = pod("gamma", &ns, &[], &[("main", "exec sleep 3600")]);
    // Ctrl-C on the keyboard (in raw mode a key, not a signal).
    let t = top_in_tmux(&format!("ctrlc-{s}"), &ns);
    t.wait("the table", |s| line_of(s, "gamma").is_some());
    t.keys(&["C-c"]);
    assert_restored(&t, "Ctrl-C");
    drop(t);
    // SIGINT from outside (kill -INT), as a supervisor would stop it.
    let t = top_in_tmux(&format!("sigint-{s}"), &ns);
    t.wait("the table", |s| line_of(s, "gamma").is_some());
    let pids = Command::new("pgrep")
        .args(["-f", &format!("podscope top -n {ns} ")])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).into_owned();
    let pid = pids
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "podscope")
        })
        .unwrap_or_else(|| panic!("no podscope top process: {pids:?}"));
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert_restored(&t, "SIGINT");
}

#[test]
fn top_refuses_without_a_terminal_and_names_the_way_out() {
    let out = Command::new(podscope())
        .args(["top", "-A"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("draws on a terminal") && err.contains("--once"),
        "{err}"
    );
}
