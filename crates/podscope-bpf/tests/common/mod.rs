//! Helpers for tests that load real probes: root checks, scratch cgroups,
//! unique programs to exec, and polling until an expected event shows up.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use podscope_bpf::{TraceOptions, Tracer};
use podscope_model::Event;

/// Root tests need CAP_BPF/CAP_PERFMON. CI runs as root; elsewhere they fail
/// loudly unless PODSCOPE_SKIP_ROOT_TESTS=1 says to skip (and says so).
pub fn require_root() -> bool {
    if podscope_bpf::check_privileges().is_ok() {
        return true;
    }
    if std::env::var_os("PODSCOPE_SKIP_ROOT_TESTS").is_some() {
        eprintln!("SKIPPED: needs root (PODSCOPE_SKIP_ROOT_TESTS is set)");
        return false;
    }
    panic!("this test loads BPF programs and needs root; run as root or set PODSCOPE_SKIP_ROOT_TESTS=1 to skip");
}

pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A copy of /bin/true under a unique name, so its exec is unmistakable.
pub fn unique_program(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("podscope-test-"));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join(unique(tag));
    std::fs::copy("/bin/true", &prog).unwrap();
    prog
}

/// Where cgroup v2 is mounted (pure v2 or hybrid).
pub fn v2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup v2 mount")
}

/// A fresh cgroup v2 directory, removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new() -> TestCgroup {
        let path = v2_root().join(unique("podscope-test-"));
        std::fs::create_dir(&path).unwrap();
        TestCgroup { path }
    }

    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().ino()
    }

    /// `sh -c SCRIPT` started inside this cgroup (the shell joins, then runs SCRIPT).
    pub fn run(&self, script: &str) -> std::process::ExitStatus {
        run_in(Some(&self.path), script)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes have exited by now; an empty cgroup can be removed.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `sh -c SCRIPT`, first moving the shell into `cgroup` when given.
pub fn run_in(cgroup: Option<&Path>, script: &str) -> std::process::ExitStatus {
    let full = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && {script}", cg.display()),
        None => script.to_string(),
    };
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(full)
        .status()
        .unwrap()
}

pub fn tracer(opts: TraceOptions) -> Tracer {
    Tracer::new(&opts).unwrap_or_else(|e| panic!("loading probes: {e}"))
}

/// Polls until `pred` has matched `want` events or `timeout` passes; returns all events seen.
pub fn collect_until(
    tracer: &mut Tracer,
    timeout: Duration,
    want: usize,
    pred: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let start = Instant::now();
    let mut all = Vec::new();
    while start.elapsed() < timeout {
        tracer.poll(Duration::from_millis(50), &mut all).unwrap();
        if all.iter().filter(|e| pred(e)).count() >= want {
            break;
        }
    }
    all
}
