//! The CLI through a hub, with real processes and sockets but no agent that
//! traces: what `podscope --hub URL ...` refuses and how it fails (flags that
//! only work on a node, hubs that do not answer, things that are not a hub),
//! and the hub's REST error answers. Needs no root and no pods.

mod common;

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
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
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
    let port = free_port();
    let child = bin()
        .args([
            "hub",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token-file",
        ])
        .arg(token_file())
        .stderr(Stdio::null())
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
    let cases: [(&[&str], &str, &str); 14] = [
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
        (
            &["--otlp"],
            "--otlp is not supported through --hub",
            "--otlp-endpoint",
        ),
        (
            &["--otlp-endpoint", "http://127.0.0.1:9"],
            "--otlp-endpoint is not supported",
            "podscope agent --otlp-endpoint",
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
